// iot-tunnel: one secure tunnel from a shell. --destination is the device end (what iotd does for
// each notification, here for one token given by hand); --source, the operator's end, is not done.
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "applet.hpp"
#include "base/strings.hpp"
#include "config/config.hpp"
#include "log/log.hpp"
#include "loop/loop.hpp"
#include "tunnel/destination_tunnel.hpp"
#include "tunnel/feature.hpp"
#include "tunnel/net.hpp"

namespace {
const char* const kName = "iot-tunnel";
// After SIGINT/SIGTERM: this long for the close handshake with the service.
const int64_t kStopGraceMs = 3000;

struct Options {
    bool destination = false, source = false;
    std::string services, region, endpoint;
    bool have_services = false;
    std::vector<const char*> config_args;
};


std::vector<std::string> names_of(const std::vector<iot::tunnel::ServiceEndpoint>& services) {
    std::vector<std::string> out;
    for (const auto& s : services) out.push_back(s.name);
    return out;
}

int run_destination(iot::tunnel::DestinationOptions options) {
    iot::EventLoop loop;
    bool ended = false, stopped = false;
    std::string reason;
    iot::tunnel::DestinationTunnel tunnel(loop, std::move(options), [&](const std::string& why) {
        reason = why;
        ended = true;
        loop.stop();
    });
    auto stop = [&] {
        if (stopped) return;
        stopped = true;
        tunnel.stop();
        loop.add_timer(kStopGraceMs, [&] { loop.stop(); });
    };
    (void)loop.on_signal(SIGINT, stop);
    (void)loop.on_signal(SIGTERM, stop);
    iot::Status st = tunnel.start();
    if (!st) return iot::fail(kName, iot::kExitFailed, "%s", st.error().c_str());
    if (!ended) loop.run();
    if (stopped) return iot::kExitOk;
    // A tunnel that was up and is now refused was closed (or its token rotated): a clean end.
    // One that never came up was refused or could not be reached.
    if (tunnel.connects() > 0) {
        fprintf(stderr, "%s: the tunnel is closed: %s\n", kName, reason.c_str());
        return iot::kExitOk;
    }
    return iot::fail(kName, iot::kExitFailed, "the tunnel could not be opened: %s", reason.c_str());
}
}  // namespace

void iot_tunnel_help() {
    printf(
        "Usage: iot-tunnel --destination [--services SSH=localhost:22,WEB=8080]\n"
        "                  [--region R | --endpoint HOST[:PORT]] [CONFIG OPTIONS]\n\n"
        "The device end of an AWS IoT secure tunnel, for one tunnel opened by hand (iotd opens one\n"
        "for each notification it receives): connects to the tunneling service in destination\n"
        "mode and carries each connection the source opens to the local endpoint of its service,\n"
        "with V1, V2 and V3 sources (several connections per service with V3). It reconnects\n"
        "after a network loss and runs until the tunnel is closed or SIGINT/SIGTERM.\n\n"
        "The destination access token is read from AWSIOT_TUNNEL_ACCESS_TOKEN, never from the\n"
        "command line: a command line is visible to every user of the machine (ps,\n"
        "/proc/<pid>/cmdline) and is kept in shell history. It is never logged.\n\n"
        "  --destination    be the device end of the tunnel\n"
        "  --services MAP   the services the tunnel may reach, NAME=HOST:PORT or NAME=PORT (on\n"
        "                   localhost), comma-separated; default: tunneling.services of the\n"
        "                   configuration (SSH=localhost:22,VNC=localhost:5900)\n"
        "  --region R       the tunnel's region: data.tunneling.iot.R.amazonaws.com:443\n"
        "  --endpoint H[:P] another endpoint (tunneling.endpoint); port 443 when left out\n"
        "  --source         the operator's end: not available in this build yet\n"
        "The root CA is root-ca of the configuration (--root-ca), else the system trust store; a\n"
        "proxy comes from --http-proxy-config or HTTPS_PROXY. Any iotd option is accepted.\n\n"
        "Exit codes: 0 the tunnel was closed, or stopped by a signal; 1 the tunnel was refused\n"
        "(a 4xx answer: a spent, rotated or unknown token) or could not be opened; 2 bad usage\n"
        "or configuration.\n");
}

int iot_tunnel_main(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const char* a = argv[i];
        if (strcmp(a, "--destination") == 0) {
            o.destination = true;
        } else if (strcmp(a, "--source") == 0) {
            o.source = true;
        } else if (iot::is_option(a, "--services") || iot::is_option(a, "--region") || iot::is_option(a, "--endpoint")) {
            std::string name(a, strcspn(a, "="));
            const char* v = iot::option_value(argc, argv, i, name.c_str());
            if (!v || !*v) return iot::fail(kName, iot::kExitUsage, "%s needs a value", name.c_str());
            if (name == "--services") {
                o.services = v;
                o.have_services = true;
            } else {
                (name == "--region" ? o.region : o.endpoint) = v;
            }
        } else {
            o.config_args.push_back(a);
            const iot::config::Key* key = iot::config::find_flag(a);
            if (key && !(key->flags & iot::config::kNoArg) && i + 1 < argc) o.config_args.push_back(argv[++i]);
        }
    }
    auto loaded = iot::config::load(static_cast<int>(o.config_args.size()), o.config_args.data());
    if (!loaded) return iot::fail(kName, iot::kExitUsage, "%s", loaded.error().c_str());
    if (loaded->help) {
        iot_tunnel_help();
        return iot::kExitOk;
    }
    if (loaded->version) {
        iot::print_version();
        return iot::kExitOk;
    }
    if (o.source) {
        fprintf(stderr, "iot-tunnel --source: not available in this build yet\n");
        return iot::kExitUsage;
    }
    if (!o.destination) return iot::fail(kName, iot::kExitUsage, "say --destination (see --help)");
    const iot::config::Config& cfg = loaded->config;
    auto level = iot::log::parse_level(cfg.is_set("logging.level") ? cfg.str("logging.level") : "INFO");
    (void)iot::log::configure(level ? *level : iot::log::Level::Info, iot::log::Sink::Stderr);
    for (const auto& w : loaded->warnings) fprintf(stderr, "%s: warning: %s\n", kName, w.c_str());

    auto fo = iot::tunnel::feature_options(cfg);
    if (!fo) return iot::fail(kName, iot::kExitUsage, "%s", fo.error().c_str());
    std::vector<std::string> services;
    if (o.have_services) {
        auto map = iot::tunnel::parse_service_map(o.services);
        if (!map) return iot::fail(kName, iot::kExitUsage, "--services: %s", map.error().c_str());
        fo->services = map.take();
        services = names_of(fo->services);
    } else if (cfg.is_set("tunneling.service")) {
        services = {cfg.str("tunneling.service")};  // the Device Client's --tunneling-service
    } else {
        services = names_of(fo->services);
    }
    if (!o.endpoint.empty()) {
        auto hp = iot::tunnel::parse_host_port(o.endpoint, 443);
        if (!hp) return iot::fail(kName, iot::kExitUsage, "--endpoint: %s", hp.error().c_str());
        fo->endpoint = o.endpoint;
    }
    std::string region = o.region.empty() ? cfg.str("tunneling.region") : o.region;
    if (region.empty() && fo->endpoint.empty())
        return iot::fail(kName, iot::kExitUsage, "--region or --endpoint is needed to find the tunneling service");
    std::string token = cfg.str("tunneling.access-token");
    if (token.empty())
        return iot::fail(kName, iot::kExitUsage,
                         "no access token: set AWSIOT_TUNNEL_ACCESS_TOKEN to the destination token (never on the "
                         "command line)");
    auto d = iot::tunnel::tunnel_options(*fo, token, region, services);
    if (!d) return iot::fail(kName, iot::kExitUsage, "%s", d.error().c_str());
    fprintf(stderr, "%s: destination for %s through %s\n", kName, iot::join(services, ", ").c_str(),
            d->endpoint.c_str());
    ::signal(SIGPIPE, SIG_IGN);
    return run_destination(d.take());
}
