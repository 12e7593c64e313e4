#include "metrics/feature.hpp"

#include <algorithm>

#include "base/strings.hpp"
#include "base/time.hpp"
#include "config/config.hpp"
#include "fs/fs.hpp"
#include "log/log.hpp"

namespace iot::metrics {
namespace {
const char* const kComp = "metrics";
// After a reconnect that missed a report: soon, but not in the same second as every other
// feature's start-up traffic.
const int64_t kAfterReconnectMinMs = 1000, kAfterReconnectMaxMs = 5000;
}  // namespace

Result<FeatureOptions> feature_options(const config::Config& cfg) {
    FeatureOptions o;
    o.thing = cfg.str("thing-name");
    std::string dir = cfg.path("state-directory");
    if (!dir.empty()) o.state_file = dir + "/metrics.json";
    o.collect.include_loopback = cfg.flag("device-defender.include-loopback");
    o.collect.max_list_size = static_cast<size_t>(cfg.num("device-defender.max-list-size"));
    o.names = cfg.str("device-defender.names") == "short" ? Names::Short : Names::Long;
    o.format = cfg.str("device-defender.format") == "cbor" ? Format::Cbor : Format::Json;
    o.topic = cfg.str("device-defender.topic");
    o.interval_ms = cfg.num("device-defender.interval") * 1000;
    json::Json custom = cfg.json_value("device-defender.custom-metrics");
    auto specs = parse_custom_specs(custom.get());
    if (!specs)
        return Error(format("device-defender.custom-metrics (%s): %s",
                            cfg.location("device-defender.custom-metrics").c_str(), specs.error().c_str()));
    o.custom = specs.take();
    return o;
}

// ---- ReportMaker

ReportMaker::ReportMaker(EventLoop& loop, const FeatureOptions& options)
    : loop_(loop), options_(options), custom_(loop) {}

State ReportMaker::current_state(std::vector<std::string>& errors) {
    if (options_.state_file.empty()) return memory_;
    auto loaded = load_state(options_.state_file);
    if (!loaded) {
        errors.push_back(loaded.error());
        return memory_;
    }
    // Another writer (iot-metrics --publish next to iotd) may have moved the id on; we may have
    // committed in memory what the file could not take.
    State s = loaded.take();
    if (memory_.last_report_id > s.last_report_id) s = memory_;
    return s;
}

void ReportMaker::make(std::function<void(Report&)> done) {
    auto report = std::make_shared<Report>();
    State state = current_state(report->errors);
    std::string boot = boot_id(options_.collect.proc);
    CounterMap zeros;
    // Interfaces come and go (a modem, a VPN): look again for every report.
    interfaces_ = Interfaces::system();
    report->metrics = collect(options_.collect, interfaces_, previous_counters(state, boot, zeros));
    for (const auto& e : report->metrics.errors) report->errors.push_back(e);
    report->id = next_report_id(state.last_report_id, wall_ms() / 1000);
    auto finish = [this, report, done = std::move(done)](CustomResult custom) {
        report->custom = std::move(custom);
        for (const auto& e : report->custom.errors) report->errors.push_back(e);
        report->tree = build_report(report->metrics, &report->custom, report->id, options_.names);
        report->payload = encode(report->tree.get(), options_.format);
        done(*report);
    };
    if (options_.custom.empty())
        finish(CustomResult{});
    else
        custom_.start(options_.custom, options_.collect.max_list_size, std::move(finish));
}

Status ReportMaker::commit(const Report& report) {
    memory_.last_report_id = report.id;
    memory_.boot_id = boot_id(options_.collect.proc);
    if (report.metrics.have_network) {
        memory_.have_counters = true;
        memory_.counters = report.metrics.counters;
    }
    if (options_.state_file.empty()) return {};
    return save_state(options_.state_file, memory_);
}

// ---- MetricsFeature

MetricsFeature::MetricsFeature(EventLoop& loop, mqtt::Client& client, FeatureOptions options)
    : loop_(loop),
      client_(client),
      options_(std::move(options)),
      topics_(defender_topics(options_.thing, options_.format)),
      maker_(loop, options_) {}

MetricsFeature::~MetricsFeature() {
    *alive_ = false;
    loop_.cancel_timer(timer_);
}

Status MetricsFeature::start() {
    int64_t interval_s = options_.interval_ms / 1000;
    if (interval_s < kMinAdvisedIntervalS)
        LOG_WARN(kComp,
                 "device-defender.interval is %lld s: AWS IoT throttles device metrics to one report per %lld s, "
                 "so reports may be dropped",
                 static_cast<long long>(interval_s), static_cast<long long>(kMinAdvisedIntervalS));
    if (!options_.state_file.empty()) {
        Status dir = fs::make_dirs(fs::dirname(options_.state_file), 0700);
        if (!dir) LOG_WARN(kComp, "%s; report ids and counters are kept in memory only", dir.error().c_str());
    }
    for (const auto& spec : options_.custom)
        LOG_DEBUG(kComp, "custom metric %s (%s) from %s", spec.name.c_str(), custom_type_name(spec.type),
                  spec.file.empty() ? join(spec.command, " ").c_str() : spec.file.c_str());
    if (options_.topic.empty()) {
        // Subscribed before the first report goes out, so no answer is missed.
        client_.subscribe(topics_.accepted, 1, nullptr);
        client_.subscribe(topics_.rejected, 1, nullptr);
    }
    std::weak_ptr<bool> alive = alive_;
    client_.on_connection([this, alive](bool up, const std::string&) {
        if (alive.expired() || !up || !missed_) return;
        missed_ = false;
        schedule(static_cast<int64_t>(random_between(kAfterReconnectMinMs, kAfterReconnectMaxMs)));
    });
    // The first report soon after start (its deltas reach back to the last report before the
    // restart), then every interval.
    schedule(std::min<int64_t>(options_.interval_ms,
                               static_cast<int64_t>(random_between(kAfterReconnectMinMs, kAfterReconnectMaxMs))));
    LOG_INFO(kComp, "reporting every %lld s (±10%%) to %s as %s with %s names", static_cast<long long>(interval_s),
             options_.topic.empty() ? topics_.publish.c_str() : options_.topic.c_str(), format_name(options_.format),
             options_.names == Names::Short ? "short" : "long");
    return {};
}

int64_t MetricsFeature::jittered_interval() const {
    int64_t spread = options_.interval_ms / 10;
    return options_.interval_ms - spread + static_cast<int64_t>(random_between(0, static_cast<uint64_t>(2 * spread)));
}

void MetricsFeature::schedule(int64_t delay_ms) {
    loop_.cancel_timer(timer_);
    next_due_ms_ = monotonic_ms() + delay_ms;
    timer_ = loop_.add_timer(delay_ms, [this] {
        timer_ = 0;
        due();
    });
}

void MetricsFeature::due() {
    schedule(jittered_interval());
    if (!client_.connected()) {
        // No backlog: the next report after the reconnect carries these deltas.
        ++skipped_;
        missed_ = true;
        LOG_DEBUG(kComp, "offline: report skipped; one follows the reconnect");
        return;
    }
    if (maker_.busy()) {
        LOG_WARN(kComp, "custom metrics of the previous report still running: report skipped");
        return;
    }
    std::weak_ptr<bool> alive = alive_;
    maker_.make([this, alive](Report& r) {
        if (!alive.expired()) send(r);
    });
}

void MetricsFeature::send(Report& report) {
    for (const auto& e : report.errors)
        LOG_WARN(kComp, "report %llu: %s", static_cast<unsigned long long>(report.id), e.c_str());
    if (!client_.connected()) {
        ++skipped_;
        missed_ = true;
        return;
    }
    const std::string& topic = options_.topic.empty() ? topics_.publish : options_.topic;
    if (!options_.topic.empty()) {
        auto mid = client_.publish(topic, report.payload, 1);
        if (!mid) {
            LOG_ERROR(kComp, "report %llu: %s", static_cast<unsigned long long>(report.id), mid.error().c_str());
            return;
        }
        last_outcome_ = "published";
    } else {
        mqtt::Request req;
        req.topic = topic;
        req.payload = report.payload;
        req.accepted = topics_.accepted;
        req.rejected = topics_.rejected;
        req.timeout_ms = options_.answer_timeout_ms;
        uint64_t id = report.id;
        std::weak_ptr<bool> alive = alive_;
        client_.request(std::move(req), [this, alive, id](const mqtt::Response& resp) {
            if (!alive.expired()) answered(id, resp);
        });
        last_outcome_ = "sent";
    }
    ++sent_;
    last_id_ = report.id;
    last_sent_ms_ = monotonic_ms();
    LOG_INFO(kComp, "report %llu: %zu bytes to %s", static_cast<unsigned long long>(report.id), report.payload.size(),
             topic.c_str());
    Status saved = maker_.commit(report);
    if (!saved) LOG_WARN(kComp, "%s; report ids and counters are kept in memory only", saved.error().c_str());
}

void MetricsFeature::answered(uint64_t id, const mqtt::Response& response) {
    if (response.outcome == mqtt::Response::Outcome::Timeout) {
        if (id == last_id_) last_outcome_ = "unanswered";
        LOG_WARN(kComp, "report %llu: no answer within %lld s", static_cast<unsigned long long>(id),
                 static_cast<long long>(options_.answer_timeout_ms / 1000));
        return;
    }
    bool rejected_topic = response.outcome == mqtt::Response::Outcome::Rejected;
    auto answer = parse_answer(response.payload, rejected_topic);
    if (!answer) {
        LOG_WARN(kComp, "report %llu: unreadable answer on %s: %s", static_cast<unsigned long long>(id),
                 response.topic.c_str(), answer.error().c_str());
        return;
    }
    if (answer->report_id && answer->report_id != id)
        LOG_DEBUG(kComp, "answer for report %llu while %llu was expected",
                  static_cast<unsigned long long>(answer->report_id), static_cast<unsigned long long>(id));
    if (answer->accepted) {
        ++accepted_;
        if (id == last_id_) last_outcome_ = "accepted";
        LOG_INFO(kComp, "report %llu accepted", static_cast<unsigned long long>(id));
    } else {
        ++rejected_;
        if (id == last_id_) last_outcome_ = "rejected (" + answer->error_code + ")";
        LOG_ERROR(kComp, "report %llu rejected: %s: %s", static_cast<unsigned long long>(id),
                  answer->error_code.empty() ? "(no code)" : answer->error_code.c_str(), answer->error_message.c_str());
    }
}

std::string MetricsFeature::status_line() const {
    int64_t now = monotonic_ms();
    std::string last = last_id_ ? format("report %llu %s %lld s ago", static_cast<unsigned long long>(last_id_),
                                         last_outcome_.c_str(), static_cast<long long>((now - last_sent_ms_) / 1000))
                                : std::string("no report sent yet");
    return format("%s, next in %lld s; %d sent, %d accepted, %d rejected, %d skipped offline", last.c_str(),
                  static_cast<long long>(std::max<int64_t>(0, next_due_ms_ - now) / 1000), sent_, accepted_, rejected_,
                  skipped_);
}

}  // namespace iot::metrics
