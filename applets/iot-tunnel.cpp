// iot-tunnel: one secure tunnel from a shell. --destination is the device end (what iotd does for
// each notification, here for one token given by hand); --source is the operator's end, listening
// on a local port per service (what the AWS local proxy does in source mode).
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
#include "tunnel/tunnel_client.hpp"
#include "tunnel/feature.hpp"
#include "tunnel/net.hpp"

namespace {
const char* const kName = "iot-tunnel";
// After SIGINT/SIGTERM: this long for the close handshake with the service.
const int64_t kStopGraceMs = 3000;

struct Options {
    bool destination = false, source = false;
    std::string services, region, endpoint, client_type;
    bool have_services = false;
    std::vector<const char*> config_args;
};


std::vector<std::string> names_of(const std::vector<iot::tunnel::ServiceEndpoint>& services) {
    std::vector<std::string> out;
    for (const auto& s : services) out.push_back(s.name);
    return out;
}

int run_tunnel(iot::tunnel::TunnelOptions options) {
    iot::EventLoop loop;
    bool ended = false, stopped = false;
    std::string reason;
    iot::tunnel::TunnelClient tunnel(loop, std::move(options), [&](const std::string& why) {
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
    for (auto& [service, where] : tunnel.listening())
        fprintf(stderr, "%s: %s%s listens on %s\n", kName, service.empty() ? "the tunnel's service" : "service ",
                service.c_str(), where.c_str());
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
        "                  [--region R | --endpoint HOST[:PORT]] [CONFIG OPTIONS]\n"
        "       iot-tunnel --source --services SSH=2222[,WEB=8080] | --services PORT\n"
        "                  [--region R | --endpoint HOST[:PORT]] [--destination-client-type V1|V2]\n\n"
        "One end of an AWS IoT secure tunnel. It reconnects after a network loss (same client\n"
        "token) and runs until the tunnel is closed or SIGINT/SIGTERM.\n\n"
        "--destination is the device end, for one tunnel opened by hand (iotd opens one for each\n"
        "notification it receives): each connection the source opens is carried to the local\n"
        "endpoint of its service, with V1, V2 and V3 sources (several connections per service\n"
        "with V3).\n"
        "--source is the operator's end (the AWS local proxy's source mode): it listens on a\n"
        "local port per service and carries each accepted connection through the tunnel, as a\n"
        "connection of the service's stream with V3 (any number at once) or as the service's one\n"
        "stream with V2 and V1. Connections made before the tunnel is ready wait for it.\n\n"
        "The access token of this end is read from AWSIOT_TUNNEL_ACCESS_TOKEN, never from the\n"
        "command line: a command line is visible to every user of the machine (ps,\n"
        "/proc/<pid>/cmdline) and is kept in shell history. It is never logged.\n\n"
        "  --destination    be the device end of the tunnel\n"
        "  --source         be the operator's end of the tunnel\n"
        "  --services MAP   NAME=HOST:PORT or NAME=PORT (on localhost), comma-separated: where\n"
        "                   each service connects (destination; default: tunneling.services of\n"
        "                   the configuration, SSH=localhost:22,VNC=localhost:5900), or where it\n"
        "                   listens (source; port 0 picks a free one). A bare PORT (source)\n"
        "                   binds the tunnel's only service, whatever its name.\n"
        "  --region R       the tunnel's region: data.tunneling.iot.R.amazonaws.com:443\n"
        "  --endpoint H[:P] another endpoint (tunneling.endpoint); port 443 when left out\n"
        "  --destination-client-type V1|V2\n"
        "                   (source) the device runs an older agent: V1 (the Device Client,\n"
        "                   older SDKs: one connection at a time, no service ids) or V2\n"
        "The root CA is root-ca of the configuration (--root-ca), else the system trust store; a\n"
        "proxy comes from --http-proxy-config or HTTPS_PROXY. Any iotd option is accepted.\n\n"
        "Exit codes: 0 the tunnel was closed, or stopped by a signal; 1 the tunnel was refused\n"
        "(a 4xx answer: a spent, rotated or unknown token), could not be opened, or a port\n"
        "could not be listened on; 2 bad usage or configuration.\n");
}

int iot_tunnel_main(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const char* a = argv[i];
        if (strcmp(a, "--destination") == 0) {
            o.destination = true;
        } else if (strcmp(a, "--source") == 0) {
            o.source = true;
        } else if (iot::is_option(a, "--services") || iot::is_option(a, "--region") || iot::is_option(a, "--endpoint") ||
                   iot::is_option(a, "--destination-client-type")) {
            std::string name(a, strcspn(a, "="));
            const char* v = iot::option_value(argc, argv, i, name.c_str());
            if (!v || !*v) return iot::fail(kName, iot::kExitUsage, "%s needs a value", name.c_str());
            if (name == "--services") {
                o.services = v;
                o.have_services = true;
            } else if (name == "--destination-client-type") {
                o.client_type = v;
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
    if (o.source == o.destination)
        return iot::fail(kName, iot::kExitUsage, "say --source (the operator's end) or --destination (the device's end)");
    if (!o.client_type.empty() && (!o.source || (o.client_type != "V1" && o.client_type != "V2" && o.client_type != "V3")))
        return iot::fail(kName, iot::kExitUsage, "--destination-client-type: expected V1, V2 or V3 (with --source)");
    if (o.source && !o.have_services)
        return iot::fail(kName, iot::kExitUsage, "--source needs --services NAME=PORT[,NAME=PORT] (the local ports to listen on)");
    const iot::config::Config& cfg = loaded->config;
    auto level = iot::log::parse_level(cfg.is_set("logging.level") ? cfg.str("logging.level") : "INFO");
    (void)iot::log::configure(level ? *level : iot::log::Level::Info, iot::log::Sink::Stderr);
    for (const auto& w : loaded->warnings) fprintf(stderr, "%s: warning: %s\n", kName, w.c_str());

    auto fo = iot::tunnel::feature_options(cfg);
    if (!fo) return iot::fail(kName, iot::kExitUsage, "%s", fo.error().c_str());
    std::vector<std::string> services;
    if (o.have_services) {
        // One bare port (the local proxy's "-s 2222"): a source port bound to the tunnel's only service.
        bool unnamed = o.source && iot::parse_int(o.services).has_value();
        auto map = iot::tunnel::parse_service_map(unnamed ? "_=" + o.services : o.services, o.source ? 0 : 1);
        if (!map) return iot::fail(kName, iot::kExitUsage, "--services: %s", map.error().c_str());
        if (unnamed) (*map)[0].name.clear();
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
                         "no access token: set AWSIOT_TUNNEL_ACCESS_TOKEN to the %s token (never on the "
                         "command line)",
                         o.source ? "source" : "destination");
    auto d = iot::tunnel::tunnel_options(*fo, token, region, services);
    if (!d) return iot::fail(kName, iot::kExitUsage, "%s", d.error().c_str());
    if (o.source) {
        d->role = iot::tunnel::Role::Source;
        // For a V1 destination (the Device Client, older SDKs): messages without service or
        // connection ids, one connection at a time; V2 without connection ids.
        if (o.client_type == "V1") d->versions = {iot::tunnel::ProtocolVersion::V1};
        if (o.client_type == "V2") d->versions = {iot::tunnel::ProtocolVersion::V2, iot::tunnel::ProtocolVersion::V1};
        if (o.client_type == "V1" && d->services.size() > 1)
            return iot::fail(kName, iot::kExitUsage, "a V1 destination takes one service, not %zu", d->services.size());
    }
    fprintf(stderr, "%s: %s for %s through %s\n", kName, o.source ? "source" : "destination",
            services.size() == 1 && services[0].empty() ? "the tunnel's service" : iot::join(services, ", ").c_str(),
            d->endpoint.c_str());
    ::signal(SIGPIPE, SIG_IGN);
    return run_tunnel(d.take());
}
