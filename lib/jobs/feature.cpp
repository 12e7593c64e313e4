#include "jobs/feature.hpp"

#include "base/strings.hpp"
#include "base/time.hpp"
#include "log/log.hpp"

namespace iot::jobs {
namespace {
const char* const kComp = "jobs";
}  // namespace

api::Details status_details(const RunResult& r, bool include_stdout) {
    api::Details d{{"reason", r.reason}};
    if (include_stdout) d.emplace_back("stdout", r.stdout_tail);
    d.emplace_back("stderr", r.stderr_tail);  // empty values are dropped on the way out
    return d;
}

const char* final_status(const RunResult& r) {
    return r.outcome == RunResult::Outcome::Succeeded ? "SUCCEEDED" : "FAILED";
}

JobsFeature::JobsFeature(EventLoop& loop, mqtt::Client& client, FeatureOptions options)
    : loop_(loop),
      client_(client),
      options_(std::move(options)),
      topics_(options_.thing),
      store_(options_.state_file),
      runner_(loop, options_.runner),
      outbox_backoff_(options_.retry_min_ms, options_.retry_max_ms) {}

JobsFeature::~JobsFeature() {
    loop_.cancel_timer(outbox_timer_);
    loop_.cancel_timer(cloud_timeout_timer_);
}

Status JobsFeature::start() {
    Status loaded = store_.load();
    if (!loaded) LOG_WARN(kComp, "%s", loaded.error().c_str());
    // notify-next says which execution is next whenever that changes; the answers to our own
    // requests are routed by the request helper (subscribed with wildcards, within AWS's limits).
    client_.subscribe(topics_.notify_next(), 1, [this](const mqtt::Message& m) {
        auto e = api::parse_execution(m.payload);
        if (!e) {
            LOG_WARN(kComp, "ignoring notify-next: %s", e.error().c_str());
            return;
        }
        on_execution(*e, "notify-next");
    });
    client_.subscribe(topics_.any_update("accepted"), 1, nullptr);
    client_.subscribe(topics_.any_update("rejected"), 1, nullptr);
    client_.subscribe(api::Topics::accepted(topics_.start_next()), 1, nullptr);
    client_.subscribe(api::Topics::rejected(topics_.start_next()), 1, nullptr);
    client_.on_connection([this](bool up, const std::string&) {
        if (up) on_connected();
    });
    if (store_.current()) {
        const CurrentJob& cur = *store_.current();
        auto doc = parse_document(cur.document);
        if (!doc) {
            // Cannot happen unless the file was edited: report it rather than loop on it.
            LOG_ERROR(kComp, "job %s in %s has an unreadable document: %s", cur.job_id.c_str(), store_.path().c_str(),
                      doc.error().c_str());
            StatusUpdate u{cur.job_id, cur.execution_number, "FAILED", {{"reason", "job state lost: " + doc.error()}}, 0};
            (void)store_.finish_current(u);
        } else {
            document_ = doc.take();
            size_t first = cur.next_step;
            if (!cur.reboot_boot_id.empty()) {
                bool rebooted = cur.reboot_boot_id != boot_id();
                LOG_INFO(kComp, "job %s: %s", cur.job_id.c_str(),
                         rebooted ? "the device rebooted: reboot step done" : "reboot step did not reboot: running it again");
                CurrentJob next = cur;
                next.reboot_boot_id.clear();
                next.next_step = rebooted ? cur.reboot_step + 1 : cur.reboot_step;
                (void)store_.set_current(next);
                first = next.next_step;
            }
            LOG_INFO(kComp, "resuming job %s (execution %lld) at step %zu", cur.job_id.c_str(), cur.execution_number,
                     first + 1);
            run_current(first);
        }
    }
    return {};
}

std::string JobsFeature::status_line() const {
    if (!runner_.running() || !store_.current()) return format("idle, %zu status update(s) queued", store_.outbox().size());
    return format("job %s step %zu/%zu (%s), %zu status update(s) queued", store_.current()->job_id.c_str(),
                  current_step_ + 1, document_.steps.size() + (document_.final_step ? 1 : 0),
                  current_step_name_.c_str(), store_.outbox().size());
}

void JobsFeature::on_connected() {
    outbox_in_flight_ = false;  // answers to requests on the old connection are not coming
    asking_ = false;
    flush_outbox();
    ask_next();
}

void JobsFeature::ask_next() {
    if (asking_) {
        ask_again_ = true;
        return;
    }
    // Sent together with a pending final status rather than after its answer: a round trip
    // saved per job. If start-next overtakes the status and hands back the job just finished,
    // the done set ignores it and we ask again once the status is accepted.
    asking_ = true;
    mqtt::Request r;
    r.client_token = random_token(16);
    r.topic = topics_.start_next();
    r.payload = api::start_next_request(r.client_token);
    r.accepted = api::Topics::accepted(r.topic);
    r.rejected = api::Topics::rejected(r.topic);
    r.timeout_ms = options_.request_timeout_ms;
    client_.request(std::move(r), [this](const mqtt::Response& resp) {
        asking_ = false;
        if (resp.outcome == mqtt::Response::Outcome::Accepted) {
            auto e = api::parse_execution(resp.payload);
            if (e)
                on_execution(*e, "start-next");
            else
                LOG_WARN(kComp, "start-next answer: %s", e.error().c_str());
        } else if (resp.outcome == mqtt::Response::Outcome::Rejected) {
            auto rej = api::parse_rejection(resp.payload);
            LOG_ERROR(kComp, "start-next rejected: %s (does the IoT policy allow iot:Publish on %s and iot:Receive on "
                      "its answers?)", rej ? (rej->code + ": " + rej->message).c_str() : resp.payload.c_str(),
                      topics_.start_next().c_str());
        } else if (client_.connected()) {
            LOG_WARN(kComp, "no answer to start-next within %lld s; asking again on the next connect or notification",
                     static_cast<long long>(options_.request_timeout_ms / 1000));
        }
        if (ask_again_) {
            ask_again_ = false;
            ask_next();
        }
    });
}

void JobsFeature::on_execution(const std::optional<api::Execution>& execution, const char* source) {
    const auto& cur = store_.current();
    if (runner_.running() && cur) {
        bool same = execution && execution->job_id == cur->job_id && execution->execution_number == cur->execution_number;
        // Ours is IN_PROGRESS, so it stays next until it leaves the pending list: if something
        // else is next, the cloud canceled, removed or timed out our job.
        if (!same) stop_job_cloud_side(format("no longer pending in the cloud (%s)", source));
        return;
    }
    if (!execution) {
        LOG_DEBUG(kComp, "no pending job (%s)", source);
        return;
    }
    if (store_.is_done(execution->job_id, execution->execution_number)) {
        LOG_DEBUG(kComp, "job %s execution %lld already done here; its status is on its way", execution->job_id.c_str(),
                  execution->execution_number);
        return;
    }
    if (execution->status != "IN_PROGRESS" || execution->document.empty()) {
        ask_next();  // QUEUED: start-next moves it to IN_PROGRESS and hands it over with its document
        return;
    }
    begin(*execution);
}

void JobsFeature::begin(const api::Execution& e) {
    LOG_INFO(kComp, "job %s (execution %lld, version %lld) received", e.job_id.c_str(), e.execution_number, e.version);
    auto doc = parse_document(e.document);
    if (!doc) {
        LOG_WARN(kComp, "job %s rejected: %s", e.job_id.c_str(), doc.error().c_str());
        StatusUpdate u{e.job_id, e.execution_number, "REJECTED", {{"reason", "invalid job document: " + doc.error()}}, e.version};
        Status st = store_.reject(u);
        if (!st) LOG_ERROR(kComp, "%s", st.error().c_str());
        flush_outbox();
        return;
    }
    document_ = doc.take();
    CurrentJob cur;
    cur.job_id = e.job_id;
    cur.execution_number = e.execution_number;
    cur.version = e.version;
    cur.document = e.document;
    Status st = store_.set_current(cur);
    if (!st) LOG_ERROR(kComp, "cannot record job %s: %s (running it anyway)", e.job_id.c_str(), st.error().c_str());
    loop_.cancel_timer(cloud_timeout_timer_);
    cloud_timeout_timer_ = 0;
    if (e.seconds_before_timeout && *e.seconds_before_timeout > 0) {
        // The cloud times the step out by itself; stop the work then, even if offline.
        cloud_timeout_timer_ = loop_.add_timer(*e.seconds_before_timeout * 1000, [this] {
            cloud_timeout_timer_ = 0;
            stop_job_cloud_side("step timeout reached (the cloud marks it TIMED_OUT)");
        });
    }
    run_current(0);
}

void JobsFeature::run_current(size_t first_step) {
    JobRunner::Callbacks cb;
    cb.step_started = [this](size_t index, const Action& action) {
        current_step_ = index;
        current_step_name_ = action.name;
    };
    cb.step_finished = [this](const StepResult& r) {
        // After the last step the job ends at once and finish_current records that: one write.
        bool last = r.index + 1 >= document_.steps.size() + (document_.final_step ? 1 : 0);
        if (!store_.current() || last) return;
        CurrentJob next = *store_.current();
        next.next_step = r.index + 1;
        next.reboot_boot_id.clear();
        Status st = store_.set_current(next);
        if (!st) LOG_ERROR(kComp, "cannot record progress: %s", st.error().c_str());
    };
    cb.rebooting = [this](size_t index) {
        if (!store_.current()) return;
        CurrentJob next = *store_.current();
        next.reboot_boot_id = boot_id();
        next.reboot_step = index;
        Status st = store_.set_current(next);
        if (!st) LOG_ERROR(kComp, "cannot record the reboot: %s", st.error().c_str());
    };
    cb.done = [this](const RunResult& r) { job_done(r); };
    runner_.start(document_, first_step, std::move(cb));
}

void JobsFeature::job_done(const RunResult& r) {
    loop_.cancel_timer(cloud_timeout_timer_);
    cloud_timeout_timer_ = 0;
    if (!store_.current()) return;
    const CurrentJob cur = *store_.current();
    std::optional<StatusUpdate> final;
    if (r.outcome == RunResult::Outcome::Canceled) {
        LOG_INFO(kComp, "job %s stopped: %s; nothing reported", cur.job_id.c_str(), r.reason.c_str());
    } else {
        const char* status = final_status(r);
        LOG_INFO(kComp, "job %s %s: %s", cur.job_id.c_str(), status, r.reason.c_str());
        final = StatusUpdate{cur.job_id, cur.execution_number, status, status_details(r, document_.include_stdout), cur.version};
    }
    Status st = store_.finish_current(final);
    if (!st) LOG_ERROR(kComp, "cannot record the end of job %s: %s", cur.job_id.c_str(), st.error().c_str());
    flush_outbox();
    ask_next();
}

void JobsFeature::stop_job_cloud_side(const std::string& why) {
    if (!runner_.running()) return;
    LOG_WARN(kComp, "job %s %s: stopping it", store_.current() ? store_.current()->job_id.c_str() : "?", why.c_str());
    runner_.cancel(why);
}

void JobsFeature::flush_outbox() {
    if (outbox_in_flight_ || store_.outbox().empty() || !client_.connected() || outbox_timer_) return;
    const StatusUpdate& u = store_.outbox().front();
    outbox_in_flight_ = true;
    mqtt::Request r;
    r.client_token = random_token(16);
    r.topic = topics_.update(u.job_id);
    r.payload = api::update_request(u.status, u.details, u.expected_version, u.execution_number, r.client_token);
    r.accepted = api::Topics::accepted(r.topic);
    r.rejected = api::Topics::rejected(r.topic);
    r.timeout_ms = options_.request_timeout_ms;
    LOG_DEBUG(kComp, "sending %s for job %s", u.status.c_str(), u.job_id.c_str());
    client_.request(std::move(r), [this](const mqtt::Response& resp) { outbox_answer(resp); });
}

void JobsFeature::outbox_answer(const mqtt::Response& resp) {
    outbox_in_flight_ = false;
    if (store_.outbox().empty()) return;
    StatusUpdate u = store_.outbox().front();
    bool delivered = false;
    if (resp.outcome == mqtt::Response::Outcome::Accepted) {
        LOG_INFO(kComp, "job %s: %s accepted by the cloud", u.job_id.c_str(), u.status.c_str());
        delivered = true;
    } else if (resp.outcome == mqtt::Response::Outcome::Timeout) {
        LOG_WARN(kComp, "job %s: no answer to %s; retrying", u.job_id.c_str(), u.status.c_str());
        retry_outbox_later();
        return;
    } else {
        auto rej = api::parse_rejection(resp.payload);
        std::string code = rej ? rej->code : "unparsable rejection";
        if (code == "RequestThrottled" || code == "InternalError" || code == "ServiceUnavailable") {
            LOG_WARN(kComp, "job %s: %s rejected with %s; retrying", u.job_id.c_str(), u.status.c_str(), code.c_str());
            retry_outbox_later();
            return;
        }
        if (code == "VersionMismatch" && rej->state_status && !api::is_terminal(*rej->state_status) &&
            *rej->state_status != u.status) {
            // Someone else moved the execution on (a newer version): send ours against it.
            LOG_WARN(kComp, "job %s: version mismatch (cloud has version %lld, %s); resending", u.job_id.c_str(),
                     rej->state_version.value_or(0), rej->state_status->c_str());
            u.expected_version = rej->state_version.value_or(0);
            (void)store_.update_outbox_front(u);
            retry_outbox_later();
            return;
        }
        if ((code == "VersionMismatch" || code == "InvalidStateTransition") && rej->state_status) {
            // The cloud already holds a status for this execution: ours was delivered before
            // (a lost answer) or the cloud ended it (cancel, timeout). Either way it is settled.
            LOG_INFO(kComp, "job %s: cloud already has %s (%s); %s settled", u.job_id.c_str(), rej->state_status->c_str(),
                     code.c_str(), u.status.c_str());
            delivered = true;
        } else {
            LOG_ERROR(kComp, "job %s: %s rejected: %s %s (not retried; does the IoT policy allow iot:Publish on %s?)",
                      u.job_id.c_str(), u.status.c_str(), code.c_str(), rej ? rej->message.c_str() : "",
                      topics_.update(u.job_id).c_str());
            delivered = true;  // retrying cannot help; keeping it would block every later status
        }
    }
    if (delivered) {
        outbox_backoff_.reset();
        Status st = store_.pop_outbox();
        if (!st) LOG_ERROR(kComp, "%s", st.error().c_str());
        if (!store_.outbox().empty())
            flush_outbox();
        else if (!runner_.running())
            ask_next();
    }
}

void JobsFeature::retry_outbox_later() {
    if (outbox_timer_) return;
    int64_t delay = outbox_backoff_.next();
    outbox_timer_ = loop_.add_timer(delay, [this] {
        outbox_timer_ = 0;
        flush_outbox();
    });
}

}  // namespace iot::jobs
