// iotd: the device daemon. One thread, one event loop, one MQTT connection that survives broker
// restarts and network cuts; features (jobs, metrics, tunnels, provisioning) register on it as
// they land. Stops cleanly on SIGTERM/SIGINT, reopens its log on SIGHUP.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <memory>

#include "applet.hpp"
#include "config/config.hpp"
#include "fs/fs.hpp"
#include "log/log.hpp"
#include "loop/loop.hpp"
#include "mqtt/client.hpp"
#if IOTBOX_FEATURE_JOBS
#include "jobs/feature.hpp"
#endif

namespace {
const char* const kName = "iotd";
const int64_t kStopGraceMs = 3000;

// Where the single-instance lock goes: the lock-file key (LOCK_FILE_PATH honoured by config).
iot::Result<iot::fs::LockFile> take_lock(const iot::config::Config& cfg) {
    std::string path = cfg.path("lock-file");
    return iot::fs::LockFile::acquire(path, cfg.str("thing-name"));
}

iot::mqtt::Options mqtt_options(const iot::config::Config& cfg) {
    iot::mqtt::Options o;
    o.host = cfg.str("endpoint");
    o.port = static_cast<int>(cfg.num("port"));
    o.client_id = cfg.str("thing-name");
    std::string ca = cfg.path("root-ca");
    // A configured root CA that does not exist falls back to the system store (Device Client
    // behaviour); check_permissions has already warned about it.
    o.ca_file = !ca.empty() && iot::fs::exists(ca) ? ca : "";
    o.cert_file = cfg.path("cert");
    o.key_file = cfg.path("key");
    o.keepalive_s = static_cast<int>(cfg.num("mqtt.keepalive"));
    o.clean_session = cfg.flag("clean-session");
    o.reconnect_min_ms = cfg.num("mqtt.reconnect-min") * 1000;
    o.reconnect_max_ms = cfg.num("mqtt.reconnect-max") * 1000;
    o.connect_timeout_ms = cfg.num("mqtt.connect-timeout") * 1000;
    return o;
}

iot::Status setup_logging(const iot::config::Config& cfg) {
    auto level = iot::log::parse_level(cfg.str("logging.level"));
    auto sink = iot::log::parse_sink(cfg.str("logging.type"));
    if (!level) return level.err();
    if (!sink) return sink.err();
    std::string target = *sink == iot::log::Sink::File ? cfg.path("logging.file") : std::string(kName);
    if (*sink == iot::log::Sink::File) {
        iot::Status dir = iot::fs::make_dirs(iot::fs::dirname(target), 0745);
        if (!dir) return dir;
    }
    return iot::log::configure(*level, *sink, target);
}
}  // namespace

void iotd_help() {
    printf("Usage: iotd [OPTIONS]\n\n"
           "The iotbox device daemon: connects to AWS IoT Core (or any MQTT broker that authenticates\n"
           "devices by X.509 certificate) over mutual TLS and keeps the connection up, reconnecting\n"
           "with jittered backoff after any loss. Accepts the AWS IoT Device Client's config file,\n"
           "flags and environment unchanged.\n\n"
           "Signals: SIGTERM/SIGINT stop cleanly (exit 0), SIGHUP reopens the log file.\n"
           "Exit codes: 0 stopped by a signal, 1 could not start, 2 usage or configuration error.\n\n%s",
           iot::config::help_text().c_str());
}

int iotd_main(int argc, char** argv) {
    auto loaded = iot::config::load(argc - 1, argv + 1);
    if (!loaded) return iot::fail(kName, iot::kExitUsage, "%s", loaded.error().c_str());
    if (loaded->help) {
        iotd_help();
        return iot::kExitOk;
    }
    if (loaded->version) {
        iot::print_version();
        return iot::kExitOk;
    }
    const iot::config::Config& cfg = loaded->config;
    if (!loaded->export_path.empty()) {
        iot::Status st = iot::fs::write_atomic(loaded->export_path, iot::config::export_defaults(), 0640);
        if (!st) return iot::fail(kName, iot::kExitFailed, "%s", st.error().c_str());
    }
    iot::Status logging = setup_logging(cfg);
    if (!logging) return iot::fail(kName, iot::kExitUsage, "%s", logging.error().c_str());
    for (const auto& w : loaded->warnings) LOG_WARN("config", "%s", w.c_str());

    iot::Status required = iot::config::check_required(cfg);
    if (!required) return iot::fail(kName, iot::kExitUsage, "%s", required.error().c_str());
    auto perms = iot::config::check_permissions(cfg);
    for (const auto& w : perms.warnings) LOG_WARN("config", "%s", w.c_str());
    if (!perms.errors.empty()) {
        for (const auto& e : perms.errors) fprintf(stderr, "%s: %s\n", kName, e.c_str());
        return iot::kExitUsage;
    }

    auto lock = take_lock(cfg);
    if (!lock) return iot::fail(kName, iot::kExitFailed, "%s", lock.error().c_str());

    iot::EventLoop loop;
    iot::mqtt::Client client(loop, mqtt_options(cfg));
    bool stopping = false;
    auto stop = [&] {
        if (stopping) return;
        stopping = true;
        LOG_INFO(kName, "stopping");
        // Bounded: a broker that does not answer must not keep the daemon from exiting.
        loop.add_timer(kStopGraceMs, [&] { loop.stop(); });
        client.stop([&] { loop.stop(); });
    };
    (void)loop.on_signal(SIGTERM, stop);
    (void)loop.on_signal(SIGINT, stop);
    (void)loop.on_signal(SIGHUP, [] {
        iot::Status st = iot::log::reopen();
        LOG_INFO(kName, "SIGHUP: log reopened%s%s", st ? "" : ": ", st ? "" : st.error().c_str());
    });
    ::signal(SIGPIPE, SIG_IGN);

    client.on_connection([](bool up, const std::string& reason) {
        if (up) LOG_INFO(kName, "online");
        else LOG_DEBUG(kName, "offline: %s", reason.c_str());
    });
#if IOTBOX_FEATURE_JOBS
    std::unique_ptr<iot::jobs::JobsFeature> jobs;
    if (cfg.flag("jobs.enabled")) {
        iot::Status dir = iot::fs::make_dirs(cfg.path("state-directory"), 0700);
        if (!dir) return iot::fail(kName, iot::kExitFailed, "state directory: %s", dir.error().c_str());
        jobs = std::make_unique<iot::jobs::JobsFeature>(loop, client, iot::jobs::feature_options(cfg));
        iot::Status st = jobs->start();
        if (!st) return iot::fail(kName, iot::kExitFailed, "jobs: %s", st.error().c_str());
    }
#endif
    (void)loop.on_signal(SIGUSR1, [&] {
        LOG_INFO(kName, "status: %s to %s:%d (%d connects, %d losses)%s%s",
                 client.connected() ? "connected" : "not connected", client.options().host.c_str(),
                 client.options().port, client.stats().connects, client.stats().connection_losses,
                 client.connected() ? "" : ", last error: ", client.connected() ? "" : client.last_error().c_str());
#if IOTBOX_FEATURE_JOBS
        if (jobs) LOG_INFO(kName, "status: jobs: %s", jobs->status_line().c_str());
#endif
    });
    iot::Status started = client.start();
    if (!started) return iot::fail(kName, iot::kExitFailed, "%s", started.error().c_str());
    LOG_INFO(kName, "started (pid %d), connecting to %s:%lld as %s", getpid(), cfg.str("endpoint").c_str(),
             cfg.num("port"), cfg.str("thing-name").c_str());
    loop.run();
    LOG_INFO(kName, "stopped");
    return iot::kExitOk;
}
