// iot-metrics: print the device-side metrics a Device Defender report would carry (a table on a
// terminal, JSON or CBOR otherwise), or publish reports with iotd's engine and wait for the answer.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "applet.hpp"
#include "base/strings.hpp"
#include "base/time.hpp"
#include "config/config.hpp"
#include "fs/fs.hpp"
#include "log/log.hpp"
#include "loop/loop.hpp"
#include "metrics/feature.hpp"
#include "mqtt/client.hpp"

namespace {
const char* const kName = "iot-metrics";

struct Options {
    std::string format;  // json | cbor | "" (table on a terminal, else json)
    bool publish = false;
    long long interval_s = 0;
    std::vector<std::string> storage;  // backing for config_args built here
    std::vector<const char*> config_args;
};

std::string list_text(const iot::metrics::CustomValue& v) {
    using iot::metrics::CustomType;
    if (v.type == CustomType::Number) return iot::format("%.15g", v.number);
    std::vector<std::string> parts;
    if (v.type == CustomType::NumberList)
        for (double d : v.numbers) parts.push_back(iot::format("%.15g", d));
    else
        parts = v.strings;
    return parts.empty() ? "(empty)" : iot::join(parts, ", ");
}

std::string count_text(size_t shown, size_t total) {
    return shown == total ? iot::format("%zu", total) : iot::format("%zu, showing %zu", total, shown);
}

void print_ports(const char* title, bool have, const iot::metrics::PortList& list) {
    if (!have) return;
    printf("%s (%s)\n", title, count_text(list.ports.size(), list.total).c_str());
    if (!list.ports.empty()) printf("  %-6s %s\n", "PORT", "INTERFACE");
    for (const auto& p : list.ports) printf("  %-6u %s\n", p.port, p.interface.empty() ? "all" : p.interface.c_str());
}

void print_table(const iot::metrics::Report& r, bool have_previous) {
    const iot::metrics::Metrics& m = r.metrics;
    printf("report %llu (schema 1.0, %zu bytes)\n\n", static_cast<unsigned long long>(r.id), r.payload.size());
    print_ports("listening TCP ports", m.have_tcp, m.tcp_ports);
    print_ports("listening UDP ports", m.have_udp, m.udp_ports);
    if (m.have_tcp) {
        const auto& c = m.connections;
        printf("established TCP connections (%s)\n", count_text(c.connections.size(), c.total).c_str());
        if (!c.connections.empty()) printf("  %-6s %-10s %s\n", "PORT", "INTERFACE", "REMOTE");
        for (const auto& e : c.connections)
            printf("  %-6u %-10s %s\n", e.local_port, e.local_interface.empty() ? "-" : e.local_interface.c_str(),
                   e.remote_addr.c_str());
    }
    if (m.have_network) {
        if (have_previous)
            printf("network since the last report: %llu bytes in, %llu bytes out, %llu packets in, %llu packets out\n",
                   static_cast<unsigned long long>(m.network.bytes_in),
                   static_cast<unsigned long long>(m.network.bytes_out),
                   static_cast<unsigned long long>(m.network.packets_in),
                   static_cast<unsigned long long>(m.network.packets_out));
        else
            printf("network: no previous report, so the deltas are 0 (they start at the first published report)\n");
    }
    if (!r.custom.values.empty()) {
        printf("custom metrics (%zu)\n", r.custom.values.size());
        for (const auto& v : r.custom.values)
            printf("  %-20s %-12s %s\n", v.name.c_str(), iot::metrics::custom_type_name(v.type), list_text(v).c_str());
    }
}

void print_report(const Options& o, const iot::metrics::Report& r, bool have_previous) {
    bool tty = isatty(STDOUT_FILENO);
    if (o.format.empty() && tty) {
        print_table(r, have_previous);
    } else if (o.format == "cbor") {
        if (tty)
            printf("%s\n",
                   iot::to_hex(reinterpret_cast<const unsigned char*>(r.payload.data()), r.payload.size()).c_str());
        else
            fwrite(r.payload.data(), 1, r.payload.size(), stdout);
    } else {
        printf("%s\n", iot::json::print(r.tree.get(), tty).c_str());
    }
    fflush(stdout);
}

// One report, collected on the loop (custom metric commands run there).
iot::metrics::Report make_report(iot::EventLoop& loop, iot::metrics::ReportMaker& maker) {
    iot::metrics::Report out;
    bool done = false;
    maker.make([&](iot::metrics::Report& r) {
        out = std::move(r);
        done = true;
    });
    while (!done) loop.run_once();
    for (const auto& e : out.errors) fprintf(stderr, "%s: %s\n", kName, e.c_str());
    return out;
}

int print_once(const Options& o, const iot::metrics::FeatureOptions& fo) {
    iot::EventLoop loop;
    iot::metrics::ReportMaker maker(loop, fo);
    // Deltas since the last report sent (by iotd or --publish) when its state is readable; this
    // run sends nothing, so it moves neither the report id nor the counters.
    auto state = iot::metrics::load_state(fo.state_file);
    bool have_previous = state && state->have_counters;
    auto r = make_report(loop, maker);
    print_report(o, r, have_previous);
    return r.errors.empty() ? iot::kExitOk : iot::kExitFailed;
}

iot::mqtt::Options mqtt_options(const iot::config::Config& cfg) {
    iot::mqtt::Options mo = iot::mqtt::options_from_config(cfg);
    mo.clean_session = true;  // a one-shot client must not take over the daemon's session
    return mo;
}

// Publish one report and wait for its answer (or, on a custom topic, for the broker's PUBACK).
// Returns true when accepted.
bool publish_one(iot::EventLoop& loop, iot::mqtt::Client& client, iot::metrics::ReportMaker& maker,
                 const iot::metrics::FeatureOptions& fo) {
    auto r = make_report(loop, maker);
    unsigned long long id = static_cast<unsigned long long>(r.id);
    auto topics = iot::metrics::defender_topics(fo.thing, fo.format);
    int64_t deadline = iot::monotonic_ms() + fo.answer_timeout_ms;
    // The connection first: a report is never queued for later.
    while (!client.connected() && iot::monotonic_ms() < deadline) loop.run_once(100);
    if (!client.connected()) {
        fprintf(stderr, "%s: report %llu not sent: not connected: %s\n", kName, id, client.last_error().c_str());
        return false;
    }
    if (!fo.topic.empty()) {
        int acked = -1;
        client.on_published([&](int mid) { acked = mid; });
        auto mid = client.publish(fo.topic, r.payload, 1);
        if (!mid) {
            fprintf(stderr, "%s: report %llu: %s\n", kName, id, mid.error().c_str());
            return false;
        }
        while (acked != *mid && client.connected() && iot::monotonic_ms() < deadline) loop.run_once(100);
        if (acked != *mid) {
            fprintf(stderr, "%s: report %llu: no PUBACK from the broker\n", kName, id);
            return false;
        }
        (void)maker.commit(r);
        fprintf(stderr, "%s: report %llu published to %s (%zu bytes)\n", kName, id, fo.topic.c_str(), r.payload.size());
        return true;
    }
    iot::mqtt::Request req;
    req.topic = topics.publish;
    req.payload = r.payload;
    req.accepted = topics.accepted;
    req.rejected = topics.rejected;
    req.timeout_ms = fo.answer_timeout_ms;
    iot::mqtt::Response resp{iot::mqtt::Response::Outcome::Timeout, {}, {}};
    bool answered = false;
    client.request(std::move(req), [&](const iot::mqtt::Response& a) {
        resp = a;
        answered = true;
    });
    while (!answered) loop.run_once();
    if (resp.outcome == iot::mqtt::Response::Outcome::Timeout) {
        // It may have reached the cloud: the id and counters move on all the same.
        (void)maker.commit(r);
        fprintf(stderr, "%s: report %llu: no answer on %s within %lld s\n", kName, id, topics.accepted.c_str(),
                static_cast<long long>(fo.answer_timeout_ms / 1000));
        return false;
    }
    iot::Status saved = maker.commit(r);
    if (!saved) fprintf(stderr, "%s: %s\n", kName, saved.error().c_str());
    auto answer = iot::metrics::parse_answer(resp.payload, resp.outcome == iot::mqtt::Response::Outcome::Rejected);
    if (!answer) {
        fprintf(stderr, "%s: report %llu: unreadable answer on %s: %s\n", kName, id, resp.topic.c_str(),
                answer.error().c_str());
        return false;
    }
    if (!answer->accepted) {
        fprintf(stderr, "%s: report %llu rejected: %s: %s\n", kName, id,
                answer->error_code.empty() ? "(no code)" : answer->error_code.c_str(), answer->error_message.c_str());
        return false;
    }
    fprintf(stderr, "%s: report %llu accepted (%zu bytes to %s)\n", kName, id, r.payload.size(),
            topics.publish.c_str());
    return true;
}

int publish(const Options& o, const iot::config::Config& cfg, const iot::metrics::FeatureOptions& fo) {
    iot::Status required = iot::config::check_required(cfg);
    if (!required) return iot::fail(kName, iot::kExitUsage, "%s", required.error().c_str());
    if (!fo.state_file.empty()) (void)iot::fs::make_dirs(iot::fs::dirname(fo.state_file), 0700);
    iot::EventLoop loop;
    iot::mqtt::Client client(loop, mqtt_options(cfg));
    iot::Status st = client.start();
    if (!st) return iot::fail(kName, iot::kExitFailed, "%s", st.error().c_str());
    iot::metrics::ReportMaker maker(loop, fo);
    bool stop = false;
    (void)loop.on_signal(SIGINT, [&] { stop = true; });
    (void)loop.on_signal(SIGTERM, [&] { stop = true; });
    bool ok = publish_one(loop, client, maker, fo);
    if (o.interval_s > 0) {
        if (o.interval_s < iot::metrics::kMinAdvisedIntervalS)
            fprintf(stderr, "%s: warning: AWS IoT throttles device metrics to one report per %lld s\n", kName,
                    static_cast<long long>(iot::metrics::kMinAdvisedIntervalS));
        // Until a signal; the exit code is that of the last report.
        while (!stop) {
            int64_t next = iot::monotonic_ms() + o.interval_s * 1000;
            while (!stop && iot::monotonic_ms() < next) loop.run_once(next - iot::monotonic_ms());
            if (!stop) ok = publish_one(loop, client, maker, fo);
        }
    }
    bool stopped = false;
    client.stop([&] { stopped = true; });
    int64_t deadline = iot::monotonic_ms() + 3000;
    while (!stopped && iot::monotonic_ms() < deadline) loop.run_once(100);
    return ok ? iot::kExitOk : iot::kExitFailed;
}

}  // namespace

void iot_metrics_help() {
    printf(
        "Usage: iot-metrics [--format json|cbor] [--names long|short] [CONFIG OPTIONS]\n"
        "       iot-metrics --publish [--interval N] [CONFIG OPTIONS]\n\n"
        "Prints the device-side metrics of a Device Defender report (schema 1.0): listening TCP and\n"
        "UDP ports, established TCP connections, network traffic since the last report and the\n"
        "custom metrics of device-defender.custom-metrics.\n\n"
        "  --format F    json or cbor. Default: a table on a terminal, JSON otherwise. CBOR is\n"
        "                written as hex on a terminal, as raw bytes otherwise.\n"
        "  --names N     long (default, as the AWS IoT Device Client) or short key names\n"
        "  --publish     connect with the configuration (as iotd), publish one report to\n"
        "                $aws/things/<thing>/defender/metrics/<format> (or device-defender.topic)\n"
        "                and wait for accepted or rejected\n"
        "  --interval N  with --publish: publish every N seconds until SIGINT/SIGTERM\n"
        "Any iotd option (--config-file, --state-dir, --device-defender-max-list-size, ...) is\n"
        "accepted too.\n\n"
        "network_stats are deltas since the last report published (by iotd or --publish), read\n"
        "from <state-directory>/metrics.json; printing does not move them. With no report yet they\n"
        "are 0. After a reboot they count from 0 (the interface counters restarted).\n\n"
        "Exit codes: 0 printed (every source read) or accepted; 1 a metric source failed (the\n"
        "rest is printed) or the report was rejected or unanswered; 2 bad usage or configuration.\n");
}

int iot_metrics_main(int argc, char** argv) {
    Options o;
    o.storage.reserve(static_cast<size_t>(argc));
    for (int i = 1; i < argc; ++i) {
        const char* a = argv[i];
        if (strcmp(a, "--publish") == 0) {
            o.publish = true;
        } else if (iot::is_option(a, "--format")) {
            const char* v = iot::option_value(argc, argv, i, "--format");
            if (!v || (strcmp(v, "json") != 0 && strcmp(v, "cbor") != 0))
                return iot::fail(kName, iot::kExitUsage, "--format: expected json or cbor");
            o.format = v;
            o.storage.push_back(std::string("--device-defender-format=") + v);
            o.config_args.push_back(o.storage.back().c_str());
        } else if (iot::is_option(a, "--names")) {
            const char* v = iot::option_value(argc, argv, i, "--names");
            if (!v || (strcmp(v, "long") != 0 && strcmp(v, "short") != 0))
                return iot::fail(kName, iot::kExitUsage, "--names: expected long or short");
            o.storage.push_back(std::string("--device-defender-names=") + v);
            o.config_args.push_back(o.storage.back().c_str());
        } else if (iot::is_option(a, "--interval")) {
            const char* v = iot::option_value(argc, argv, i, "--interval");
            long long n = v ? iot::parse_int(v).value_or(0) : 0;
            if (n < 1) return iot::fail(kName, iot::kExitUsage, "--interval: expected a number of seconds >= 1");
            o.interval_s = n;
        } else {
            o.config_args.push_back(a);
            const iot::config::Key* key = iot::config::find_flag(a);
            if (key && !(key->flags & iot::config::kNoArg) && i + 1 < argc) o.config_args.push_back(argv[++i]);
        }
    }
    if (o.interval_s && !o.publish) return iot::fail(kName, iot::kExitUsage, "--interval needs --publish");
    auto loaded = iot::config::load(static_cast<int>(o.config_args.size()), o.config_args.data());
    if (!loaded) return iot::fail(kName, iot::kExitUsage, "%s", loaded.error().c_str());
    if (loaded->help) {
        iot_metrics_help();
        return iot::kExitOk;
    }
    const iot::config::Config& cfg = loaded->config;
    auto level = iot::log::parse_level(cfg.is_set("logging.level") ? cfg.str("logging.level") : "WARN");
    (void)iot::log::configure(level ? *level : iot::log::Level::Warn, iot::log::Sink::Stderr);
    for (const auto& w : loaded->warnings) fprintf(stderr, "%s: warning: %s\n", kName, w.c_str());
    auto fo = iot::metrics::feature_options(cfg);
    if (!fo) return iot::fail(kName, iot::kExitUsage, "%s", fo.error().c_str());
    ::signal(SIGPIPE, SIG_IGN);
    return o.publish ? publish(o, cfg, *fo) : print_once(o, *fo);
}
