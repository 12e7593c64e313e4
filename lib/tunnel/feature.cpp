#include "tunnel/feature.hpp"

#include <cstdlib>

#include "base/strings.hpp"
#include "config/config.hpp"
#include "fs/fs.hpp"
#include "json/json.hpp"
#include "log/log.hpp"

namespace iot::tunnel {
namespace {
const char* const kComp = "tunnel";
// Tokens remembered to drop a repeated notification (QoS 1 redelivery after a reconnect).
const size_t kRecentTokens = 32;

std::vector<std::string> names_of(const std::vector<ServiceEndpoint>& services) {
    std::vector<std::string> out;
    for (const auto& s : services) out.push_back(s.name);
    return out;
}
}  // namespace

std::string notify_topic(const std::string& thing) {
    return "$aws/things/" + thing + "/tunnels/notify";
}

Result<Notification> parse_notification(std::string_view payload) {
    auto doc = json::parse(payload);
    if (!doc) return doc.err().wrap("not JSON");
    const cJSON* root = doc->get();
    if (!cJSON_IsObject(root)) return Error(format("expected a JSON object, got %s", json::type_name(root)));
    Notification n;
    struct Field {
        const char* name;
        std::string* out;
    };
    for (Field f :
         {Field{"clientAccessToken", &n.access_token}, Field{"clientMode", &n.mode}, Field{"region", &n.region}}) {
        auto v = json::get_string(root, f.name);
        if (!v) return v.err();
        if (!*v || (*v)->empty()) return Error(format("'%s' is missing or empty", f.name));
        *f.out = **v;
    }
    const cJSON* services = json::get(root, "services");
    if (!cJSON_IsArray(services))
        return Error(format("'services' must be an array of service names, not %s",
                            services ? json::type_name(services) : "missing"));
    for (const cJSON* s = services->child; s; s = s->next) {
        if (!cJSON_IsString(s) || !*s->valuestring)
            return Error(format("'services' must hold non-empty strings, not %s", json::type_name(s)));
        n.services.emplace_back(s->valuestring);
    }
    if (n.services.empty()) return Error("'services' is empty");
    return n;
}

Result<FeatureOptions> feature_options(const config::Config& cfg) {
    FeatureOptions o;
    o.thing = cfg.str("thing-name");
    o.endpoint = cfg.str("tunneling.endpoint");
    std::string ca = cfg.path("root-ca");
    // As for MQTT: a configured root CA that does not exist means the system store.
    o.ca_file = !ca.empty() && fs::exists(ca) ? ca : "";
    json::Json map = cfg.json_value("tunneling.services");
    if (map) {
        auto services = parse_service_map_json(map.get());
        if (!services)
            return Error(format("tunneling.services (%s): %s", cfg.location("tunneling.services").c_str(),
                                services.error().c_str()));
        o.services = services.take();
    }
    if (cfg.flag("http-proxy-enabled")) {
        o.proxy.host = cfg.str("http-proxy-host");
        o.proxy.port = static_cast<int>(cfg.num("http-proxy-port"));
        if (cfg.str("http-proxy-auth-method") == "UserNameAndPassword") {
            o.proxy.user = cfg.str("http-proxy-username");
            o.proxy.password = cfg.str("http-proxy-password");
        }
    } else {
        const char* env = getenv("HTTPS_PROXY");
        if (!env || !*env) env = getenv("https_proxy");
        if (env && *env) {
            auto proxy = parse_proxy_url(env);
            if (!proxy) return proxy.err().wrap("HTTPS_PROXY");
            o.proxy = proxy.take();
        }
    }
    o.notifications = !cfg.flag("tunneling.disable-notification");
    if (!o.notifications) {
        o.access_token = cfg.str("tunneling.access-token");
        o.region = cfg.str("tunneling.region");
        o.service = cfg.str("tunneling.service");
        if (o.access_token.empty())
            return Error("--tunneling-disable-notification needs the destination token in AWSIOT_TUNNEL_ACCESS_TOKEN");
        if (o.region.empty() && o.endpoint.empty())
            return Error("--tunneling-disable-notification needs --tunneling-region (or tunneling.endpoint)");
        if (o.service.empty()) return Error("--tunneling-disable-notification needs --tunneling-service SSH|VNC");
    }
    // --tunneling-service: the Device Client's fixed ports, unless the service map says otherwise.
    std::string named = cfg.str("tunneling.service");
    bool mapped = false;
    for (const auto& s : o.services) mapped = mapped || s.name == named;
    if (!named.empty() && !mapped)
        for (const auto& s : default_service_map())
            if (s.name == named) o.services.push_back(s);
    return o;
}

Result<TunnelOptions> tunnel_options(const FeatureOptions& options, const std::string& access_token,
                                          const std::string& region, const std::vector<std::string>& services) {
    TunnelOptions d;
    std::vector<std::string> missing;
    for (const auto& name : services) {
        const ServiceEndpoint* found = nullptr;
        for (const auto& s : options.services)
            if (s.name == name) found = &s;
        if (found)
            d.services.push_back(*found);
        else
            missing.push_back(name);
    }
    if (!missing.empty())
        return Error(format("no local endpoint for %s %s in tunneling.services (it has %s; add \"%s\": \"host:port\")",
                            missing.size() == 1 ? "service" : "services", join(missing, ", ").c_str(),
                            options.services.empty() ? "none" : join(names_of(options.services), ", ").c_str(),
                            missing[0].c_str()));
    if (options.endpoint.empty() && region.empty()) return Error("no region to find the tunneling endpoint");
    d.endpoint = options.endpoint.empty() ? endpoint_for_region(region) : options.endpoint;
    d.access_token = access_token;
    d.ca_file = options.ca_file;
    d.proxy_host = options.proxy.host;
    d.proxy_port = options.proxy.port;
    d.proxy_user = options.proxy.user;
    d.proxy_password = options.proxy.password;
    return d;
}

TunnelFeature::TunnelFeature(EventLoop& loop, mqtt::Client& client, FeatureOptions options)
    : loop_(loop), client_(client), options_(std::move(options)) {}

TunnelFeature::~TunnelFeature() {
    tunnels_.clear();  // while alive_ (declared last, destroyed first) still guards their callbacks
}

Status TunnelFeature::start() {
    if (!options_.notifications) {
        LOG_INFO(kComp, "notifications disabled: opening the tunnel of AWSIOT_TUNNEL_ACCESS_TOKEN for %s",
                 options_.service.c_str());
        return open(options_.access_token, options_.region, {options_.service});
    }
    std::weak_ptr<bool> alive = alive_;
    client_.subscribe(notify_topic(options_.thing), 1, [this, alive](const mqtt::Message& m) {
        if (!alive.expired()) on_notification(m);
    });
    LOG_INFO(kComp, "waiting for tunnels on %s (services: %s)", notify_topic(options_.thing).c_str(),
             options_.services.empty() ? "none" : join(names_of(options_.services), ", ").c_str());
    return {};
}

bool TunnelFeature::seen(const std::string& access_token) const {
    for (const auto& t : recent_tokens_)
        if (t == access_token) return true;
    for (const auto& [id, t] : tunnels_)
        if (t.access_token == access_token) return true;
    return false;
}

void TunnelFeature::on_notification(const mqtt::Message& message) {
    ++notifications_;
    auto n = parse_notification(message.payload);
    if (!n) {
        ++refused_;
        LOG_ERROR(kComp, "tunnel notification refused: unreadable: %s", n.error().c_str());
        return;
    }
    log::add_secret(n->access_token);
    if (seen(n->access_token)) {
        ++duplicates_;
        LOG_INFO(kComp, "tunnel notification for %s ignored: a duplicate (its token was already seen)",
                 join(n->services, ", ").c_str());
        return;
    }
    if (stopping_) return;
    if (tunnels_.size() >= options_.max_tunnels) {
        // Not remembered: the same notification, delivered again once a tunnel is free, opens.
        ++refused_;
        LOG_ERROR(kComp, "tunnel notification for %s refused: %zu tunnels are open, the most at once",
                  join(n->services, ", ").c_str(), tunnels_.size());
        return;
    }
    recent_tokens_.push_back(n->access_token);
    if (recent_tokens_.size() > kRecentTokens) recent_tokens_.pop_front();
    if (n->mode != "destination") {
        ++refused_;
        LOG_ERROR(kComp, "tunnel notification refused: clientMode is '%s', a device can only be the destination",
                  n->mode.c_str());
        return;
    }
    Status st = open(n->access_token, n->region, n->services);
    if (!st) {
        ++refused_;
        LOG_ERROR(kComp, "tunnel notification for %s refused: %s", join(n->services, ", ").c_str(), st.error().c_str());
    }
}

Status TunnelFeature::open(const std::string& access_token, const std::string& region,
                           const std::vector<std::string>& services) {
    auto d = tunnel_options(options_, access_token, region, services);
    if (!d) return d.err();
    int id = next_id_++;
    std::string endpoint = d->endpoint;
    std::weak_ptr<bool> alive = alive_;
    Open& t = tunnels_[id];
    t.id = id;
    t.services = services;
    t.access_token = access_token;
    t.tunnel = std::make_unique<TunnelClient>(loop_, d.take(), [this, alive, id](const std::string& reason) {
        if (!alive.expired()) ended(id, reason);
    });
    LOG_INFO(kComp, "tunnel %d: opening for %s through %s", id, join(services, ", ").c_str(), endpoint.c_str());
    Status st = t.tunnel->start();
    if (!st) {
        tunnels_.erase(id);
        return st;
    }
    ++opened_;
    return {};
}

void TunnelFeature::ended(int id, const std::string& reason) {
    auto it = tunnels_.find(id);
    if (it == tunnels_.end() || it->second.ended) return;
    it->second.ended = true;
    LOG_INFO(kComp, "tunnel %d (%s) is over (%s): removed", id, join(it->second.services, ", ").c_str(),
             reason.c_str());
    // Not from inside the tunnel's own callback: it is still on the stack.
    std::weak_ptr<bool> alive = alive_;
    loop_.add_timer(0, [this, alive, id] {
        if (alive.expired()) return;
        tunnels_.erase(id);
        if (stopping_ && tunnels_.empty() && stopped_) {
            auto done = std::move(stopped_);
            stopped_ = nullptr;
            done();
        }
    });
}

void TunnelFeature::stop(std::function<void()> done) {
    stopping_ = true;
    if (tunnels_.empty()) {
        if (done) done();
        return;
    }
    stopped_ = std::move(done);
    LOG_INFO(kComp, "closing %zu tunnel%s", tunnels_.size(), tunnels_.size() == 1 ? "" : "s");
    // ended() follows each stop(), and erases the tunnel from a timer: the map holds still here.
    for (auto& [id, t] : tunnels_)
        if (!t.ended) t.tunnel->stop();
}

std::string TunnelFeature::status_line() const {
    std::vector<std::string> each;
    for (const auto& [id, t] : tunnels_) {
        std::string state = t.ended ? "ended" : t.tunnel->connected() ? "connected" : "connecting";
        each.push_back(format("%d: %s %s, %zu connections", id, join(t.services, ", ").c_str(), state.c_str(),
                              t.tunnel->session().open_connections()));
    }
    std::string open = each.empty() ? "none open" : format("%zu open (%s)", each.size(), join(each, "; ").c_str());
    if (!options_.notifications) return open + "; notifications disabled";
    return format("%s; %d notifications, %d opened, %d refused, %d duplicate", open.c_str(), notifications_, opened_,
                  refused_, duplicates_);
}

}  // namespace iot::tunnel
