// iotd: the device daemon. One thread, one event loop, one MQTT connection that survives broker
// restarts and network cuts; features (jobs, metrics, tunnels, provisioning) register on it.
// Foreground by default (systemd, supervisors); -d forks for sysvinit. SIGTERM/SIGINT stop it
// cleanly, SIGHUP reloads the configuration and reopens the log, SIGUSR1 logs its status.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "applet.hpp"
#include "base/service.hpp"
#include "base/strings.hpp"
#include "config/config.hpp"
#include "fs/fs.hpp"
#include "log/log.hpp"
#include "loop/loop.hpp"
#include "mqtt/client.hpp"
#if IOTBOX_FEATURE_JOBS
#include "jobs/feature.hpp"
#endif
#if IOTBOX_FEATURE_DD
#include "metrics/feature.hpp"
#endif
#if IOTBOX_FEATURE_ST
#include "tunnel/feature.hpp"
#endif
#if IOTBOX_FEATURE_FP
#include "mqtt/topic.hpp"
#include "provision/feature.hpp"
#endif

namespace {
const char* const kName = "iotd";
// Stopping: this long for queued job statuses to reach the cloud, then DISCONNECT.
const int64_t kStopFlushMs = 3000;
const int64_t kStopGraceMs = 2000;

// What changes without a restart on SIGHUP; everything else is reported as needing one.
const char* const kLiveKeys[] = {"logging.level", "logging.type", "logging.file"};

// The log sink: as configured; when not configured, syslog for a daemon (-d) or a process that
// init started without a terminal, stdout otherwise (a terminal, systemd's journal).
iot::Status setup_logging(const iot::config::Config& cfg) {
    auto level = iot::log::parse_level(cfg.str("logging.level"));
    auto sink = iot::log::parse_sink(cfg.str("logging.type"));
    if (!level) return level.err();
    if (!sink) return sink.err();
    if (!cfg.is_set("logging.type")) {
        bool journal = getenv("JOURNAL_STREAM") != nullptr;
        bool init_started = getppid() == 1 && !isatty(STDOUT_FILENO);
        if (cfg.flag("daemon") || (init_started && !journal)) *sink = iot::log::Sink::Syslog;
    }
    std::string target = *sink == iot::log::Sink::File ? cfg.path("logging.file") : std::string(kName);
    if (*sink == iot::log::Sink::File) {
        iot::Status dir = iot::fs::make_dirs(iot::fs::dirname(target), 0745);
        if (!dir) return dir;
    }
    return iot::log::configure(*level, *sink, target);
}

// Fork into the background. The parent waits for the child to report that it is running (or why
// it is not), so sysvinit's start-stop-daemon gets a meaningful exit status.
struct Daemonized {
    bool is_parent = false;
    int exit_code = 0;
    int report_fd = -1;  // child: write "\n" when ready, or the error text
};

Daemonized daemonize() {
    Daemonized d;
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        d.is_parent = true;
        d.exit_code = iot::fail(kName, iot::kExitFailed, "cannot daemonize: %s", strerror(errno));
        return d;
    }
    pid_t pid = fork();
    if (pid < 0) {
        d.is_parent = true;
        d.exit_code = iot::fail(kName, iot::kExitFailed, "cannot fork: %s", strerror(errno));
        return d;
    }
    if (pid > 0) {
        close(pipefd[1]);
        std::string report;
        char buf[512];
        ssize_t n;
        while ((n = read(pipefd[0], buf, sizeof buf)) > 0) report.append(buf, static_cast<size_t>(n));
        close(pipefd[0]);
        d.is_parent = true;
        if (report == "\n") return d;
        fprintf(stderr, "%s: %s\n", kName, report.empty() ? "the daemon exited while starting" : report.c_str());
        d.exit_code = iot::kExitFailed;
        return d;
    }
    close(pipefd[0]);
    setsid();
    if (fork() > 0) _exit(0);  // not a session leader: can never get a controlling terminal
    umask(022);
    if (chdir("/") != 0) _exit(iot::kExitFailed);
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        if (null > STDERR_FILENO) close(null);
    }
    d.report_fd = pipefd[1];
    return d;
}

void report_start(int fd, const std::string& error) {
    if (fd < 0) return;
    std::string msg = error.empty() ? "\n" : error;
    ssize_t unused = write(fd, msg.data(), msg.size());
    (void)unused;
    close(fd);
}

// The keys whose values differ between two loads.
std::vector<std::string> changed_keys(const iot::config::Config& a, const iot::config::Config& b) {
    std::vector<std::string> out;
    for (const auto& key : iot::config::keys()) {
        if (key.flags & iot::config::kAction) continue;
        const auto* va = a.value(key.name);
        const auto* vb = b.value(key.name);
        if (va && vb && (va->present != vb->present || va->text != vb->text)) out.emplace_back(key.name);
    }
    return out;
}
}  // namespace

void iotd_help() {
    printf("Usage: iotd [-d] [OPTIONS]\n\n"
           "The iotbox device daemon: connects to AWS IoT Core (or any MQTT broker that authenticates\n"
           "devices by X.509 certificate) over mutual TLS and keeps the connection up, reconnecting\n"
           "with jittered backoff after any loss, and runs the jobs, Device Defender metrics and\n"
           "secure-tunneling features on it. Accepts the AWS IoT Device Client's config file, flags\n"
           "and environment unchanged.\n\n"
           "  -d, --daemon   fork into the background and write --pid-file (sysvinit); default: foreground\n\n"
           "Signals: SIGTERM/SIGINT stop cleanly (queued job statuses get 3 s to reach the cloud, then\n"
           "DISCONNECT; exit 0); SIGHUP reloads the configuration (logging changes apply at once, others\n"
           "are reported as needing a restart) and reopens the log file; SIGUSR1 logs a status summary.\n"
           "With $NOTIFY_SOCKET (systemd Type=notify) iotd reports READY, STATUS and WATCHDOG pings.\n"
           "Exit codes: 0 stopped by a signal, 1 could not start, 2 usage or configuration error.\n\n%s",
           iot::config::help_text().c_str());
}

int iotd_main(int argc, char** argv) {
    // -d is the one short option (the Device Client had none; sysvinit scripts expect it).
    std::vector<char*> args(argv + 1, argv + argc);
    static char daemon_flag[] = "--daemon";
    for (auto& a : args)
        if (strcmp(a, "-d") == 0) a = daemon_flag;
    auto loaded = iot::config::load(static_cast<int>(args.size()), args.data());
    if (!loaded) return iot::fail(kName, iot::kExitUsage, "%s", loaded.error().c_str());
    if (loaded->help) {
        iotd_help();
        return iot::kExitOk;
    }
    if (loaded->version) {
        iot::print_version();
        return iot::kExitOk;
    }
    iot::config::Config cfg = loaded->config;
    if (!loaded->export_path.empty()) {
        iot::Status st = iot::fs::write_atomic(loaded->export_path, iot::config::export_defaults(), 0640);
        if (!st) return iot::fail(kName, iot::kExitFailed, "%s", st.error().c_str());
    }
    iot::Status required = iot::config::check_required(cfg);
    if (!required) return iot::fail(kName, iot::kExitUsage, "%s", required.error().c_str());
    auto perms = iot::config::check_permissions(cfg);
    if (!perms.errors.empty()) {
        for (const auto& e : perms.errors) fprintf(stderr, "%s: %s\n", kName, e.c_str());
        return iot::kExitUsage;
    }

    int report_fd = -1;
    if (cfg.flag("daemon")) {
        Daemonized d = daemonize();
        if (d.is_parent) return d.exit_code;
        report_fd = d.report_fd;
    }
    auto start_failed = [&](int code, const std::string& msg) {
        report_start(report_fd, msg);
        if (report_fd < 0) fprintf(stderr, "%s: %s\n", kName, msg.c_str());
        LOG_ERROR(kName, "%s", msg.c_str());
        return code;
    };

    iot::Status logging = setup_logging(cfg);
    if (!logging) return start_failed(iot::kExitUsage, logging.error());
    for (const auto& w : loaded->warnings) LOG_WARN("config", "%s", w.c_str());
    for (const auto& w : perms.warnings) LOG_WARN("config", "%s", w.c_str());

    auto lock = iot::fs::LockFile::acquire(cfg.path("lock-file"), cfg.str("thing-name"));
    if (!lock) return start_failed(iot::kExitFailed, lock.error());
#if IOTBOX_FEATURE_FP
    // Fleet provisioning before the first connection: the claim identity is exchanged for the
    // device's own, and the configuration is read again so it comes from the new runtime file.
    // The cloud saying no is retried with backoff; the daemon does not give up.
    if (cfg.flag("fleet-provisioning.enabled")) {
        iot::mqtt::Backoff backoff(cfg.num("mqtt.reconnect-min") * 1000, cfg.num("mqtt.reconnect-max") * 1000);
        for (;;) {
            auto done = iot::provision::provision_at_start(cfg, [](const std::string& step) {
                LOG_INFO("provision", "%s", step.c_str());
            });
            if (done) {
                if (*done) {
                    auto again = iot::config::load(static_cast<int>(args.size()), args.data());
                    if (!again) return start_failed(iot::kExitUsage, again.error());
                    cfg = again->config;
                    LOG_INFO("provision", "provisioned as %s", cfg.str("thing-name").c_str());
                }
                break;
            }
            int64_t delay = backoff.next();
            LOG_ERROR("provision", "%s; retrying in %lld s", done.error().c_str(), static_cast<long long>(delay / 1000));
            usleep(static_cast<useconds_t>(delay * 1000));
        }
    }
#endif
    std::string pid_file;
    if (cfg.flag("daemon")) {
        pid_file = cfg.path("pid-file");
        iot::Status st = iot::fs::write_atomic(pid_file, iot::format("%d\n", getpid()), 0644);
        if (!st) return start_failed(iot::kExitFailed, "pid file: " + st.error());
    }

    iot::EventLoop loop;
    iot::mqtt::Client client(loop, iot::mqtt::options_from_config(cfg));
#if IOTBOX_FEATURE_JOBS
    std::unique_ptr<iot::jobs::JobsFeature> jobs;
    if (cfg.flag("jobs.enabled")) {
        iot::Status dir = iot::fs::make_dirs(cfg.path("state-directory"), 0700);
        if (!dir) return start_failed(iot::kExitFailed, "state directory: " + dir.error());
        jobs = std::make_unique<iot::jobs::JobsFeature>(loop, client, iot::jobs::feature_options(cfg));
        iot::Status st = jobs->start();
        if (!st) return start_failed(iot::kExitFailed, "jobs: " + st.error());
    }
#endif
#if IOTBOX_FEATURE_DD
    std::unique_ptr<iot::metrics::MetricsFeature> metrics;
    if (cfg.flag("device-defender.enabled")) {
        auto mo = iot::metrics::feature_options(cfg);
        if (!mo) return start_failed(iot::kExitUsage, mo.error());
        metrics = std::make_unique<iot::metrics::MetricsFeature>(loop, client, mo.take());
        iot::Status st = metrics->start();
        if (!st) return start_failed(iot::kExitFailed, "metrics: " + st.error());
    }
#endif
#if IOTBOX_FEATURE_ST
    std::unique_ptr<iot::tunnel::TunnelFeature> tunnels;
    if (cfg.flag("tunneling.enabled")) {
        auto to = iot::tunnel::feature_options(cfg);
        if (!to) return start_failed(iot::kExitUsage, "tunneling: " + to.error());
        tunnels = std::make_unique<iot::tunnel::TunnelFeature>(loop, client, to.take());
        iot::Status st = tunnels->start();
        if (!st) return start_failed(iot::kExitFailed, "tunneling: " + st.error());
    }
#endif
#if IOTBOX_FEATURE_FP
    std::unique_ptr<iot::provision::RotationFeature> rotation;
    if (cfg.flag("fleet-provisioning.enabled")) {
        auto ro = iot::provision::rotation_options(cfg);
        if (!ro) return start_failed(iot::kExitUsage, ro.error());
        rotation = std::make_unique<iot::provision::RotationFeature>(
            loop, client, ro.take(), [&](const iot::provision::Outcome& o) {
                iot::Status st = client.set_identity(o.cert, o.key);
                if (!st) LOG_ERROR("provision", "rotated certificate %s cannot be loaded: %s", o.cert.c_str(), st.error().c_str());
            });
        iot::Status st = rotation->start();
        if (!st) return start_failed(iot::kExitFailed, "rotation: " + st.error());
    }
#endif
    auto outbox_empty = [&] {
#if IOTBOX_FEATURE_JOBS
        return !jobs || jobs->outbox_size() == 0;
#else
        return true;
#endif
    };

    bool stopping = false;
    auto stop = [&] {
        if (stopping) return;
        stopping = true;
        LOG_INFO(kName, "stopping");
        iot::service::notify("STOPPING=1");
        // Bounded at every stage: a broker that does not answer must not keep iotd from exiting.
        int64_t deadline = kStopFlushMs;
        if (!client.connected() || outbox_empty()) deadline = 0;
        // MQTT disconnects and every tunnel closes with its close handshake, at once; the loop
        // ends when both are done (or at the grace limit).
        auto disconnect = [&] {
            loop.add_timer(kStopGraceMs, [&] { loop.stop(); });
            auto pending = std::make_shared<int>(1);
            auto one_done = [&loop, pending] {
                if (--*pending == 0) loop.stop();
            };
#if IOTBOX_FEATURE_ST
            if (tunnels) {
                ++*pending;
                tunnels->stop(one_done);
            }
#endif
            client.stop(one_done);
        };
        if (deadline == 0) {
            disconnect();
            return;
        }
        LOG_INFO(kName, "waiting up to %lld s for queued job statuses", static_cast<long long>(deadline / 1000));
        int64_t waited = 0;
        std::shared_ptr<iot::EventLoop::TimerId> poll = std::make_shared<iot::EventLoop::TimerId>(0);
        *poll = loop.add_timer(50, [&, poll, waited]() mutable {
            waited += 50;
            if (outbox_empty() || waited >= deadline || !client.connected()) {
                loop.cancel_timer(*poll);
                disconnect();
            }
        }, 50);
    };
    (void)loop.on_signal(SIGTERM, stop);
    (void)loop.on_signal(SIGINT, stop);
    (void)loop.on_signal(SIGHUP, [&] {
        iot::Status reopened = iot::log::reopen();
        if (!reopened) LOG_WARN(kName, "SIGHUP: %s", reopened.error().c_str());
        auto again = iot::config::load(static_cast<int>(args.size()), args.data());
        if (!again) {
            LOG_ERROR(kName, "SIGHUP: configuration not reloaded, keeping the running one: %s", again.error().c_str());
            return;
        }
        std::vector<std::string> live, restart;
        for (const auto& key : changed_keys(cfg, again->config)) {
            bool is_live = false;
            for (const char* k : kLiveKeys) is_live = is_live || key == k;
            (is_live ? live : restart).push_back(key);
        }
        if (!live.empty()) {
            iot::Status st = setup_logging(again->config);
            if (!st) {
                LOG_ERROR(kName, "SIGHUP: logging not changed: %s", st.error().c_str());
            } else {
                for (const auto& k : live) cfg.set(k, again->config.str(k), again->config.source(k)).ok();
            }
        }
        LOG_INFO(kName, "SIGHUP: configuration reloaded%s%s%s%s", live.empty() ? "" : "; applied: ",
                 iot::join(live, ", ").c_str(), restart.empty() ? "" : "; needs a restart: ",
                 iot::join(restart, ", ").c_str());
    });
    (void)loop.on_signal(SIGUSR1, [&] {
        LOG_INFO(kName, "status: %s to %s:%d (%d connects, %d losses)%s%s",
                 client.connected() ? "connected" : "not connected", client.options().host.c_str(),
                 client.options().port, client.stats().connects, client.stats().connection_losses,
                 client.connected() ? "" : ", last error: ", client.connected() ? "" : client.last_error().c_str());
#if IOTBOX_FEATURE_JOBS
        if (jobs) LOG_INFO(kName, "status: jobs: %s", jobs->status_line().c_str());
#endif
#if IOTBOX_FEATURE_DD
        if (metrics) LOG_INFO(kName, "status: metrics: %s", metrics->status_line().c_str());
#endif
#if IOTBOX_FEATURE_ST
        if (tunnels) LOG_INFO(kName, "status: tunnels: %s", tunnels->status_line().c_str());
#endif
#if IOTBOX_FEATURE_FP
        if (rotation) LOG_INFO(kName, "status: certificate rotation: %s", rotation->status_line().c_str());
#endif
    });
    ::signal(SIGPIPE, SIG_IGN);

    client.on_connection([](bool up, const std::string& reason) {
        if (up) {
            LOG_INFO(kName, "online");
            iot::service::notify("STATUS=connected");
        } else {
            iot::service::notify("STATUS=offline: " + reason);
        }
    });
    iot::Status started = client.start();
    if (!started) return start_failed(iot::kExitFailed, started.error());
    // The loop itself pings the watchdog: a stuck loop stops the pings and the manager restarts us.
    if (int64_t wd = iot::service::watchdog_ms(); wd > 0)
        loop.add_timer(wd / 2, [] { iot::service::notify("WATCHDOG=1"); }, wd / 2);
    LOG_INFO(kName, "started (pid %d), connecting to %s:%lld as %s", getpid(), cfg.str("endpoint").c_str(),
             cfg.num("port"), cfg.str("thing-name").c_str());
    report_start(report_fd, "");
    iot::service::notify("READY=1\nSTATUS=connecting");
    loop.run();
    if (!pid_file.empty()) ::unlink(pid_file.c_str());
    LOG_INFO(kName, "stopped");
    return iot::kExitOk;
}
