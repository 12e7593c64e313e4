// The iotd secure-tunneling feature: listens on $aws/things/<thing>/tunnels/notify and opens a
// TunnelClient for each notification it accepts (mode "destination", every service in the
// local map tunneling.services, not a token already seen), several at once up to a cap, and
// forgets each tunnel once it has ended. With --tunneling-disable-notification (the Device
// Client's way) it opens one tunnel at start from AWSIOT_TUNNEL_ACCESS_TOKEN instead.
//
// The notification is refused, never trusted: its services only select entries of the local map,
// so the cloud cannot make the device connect anywhere the owner did not list. Access tokens are
// secrets: they are kept to spot duplicates and handed to the tunnel, never put in a message.
#pragma once
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.hpp"
#include "loop/loop.hpp"
#include "mqtt/client.hpp"
#include "tunnel/session.hpp"
#include "tunnel/tunnel_client.hpp"
#include "tunnel/net.hpp"

namespace iot::config {
class Config;
}

namespace iot::tunnel {

// $aws/things/<thing>/tunnels/notify
std::string notify_topic(const std::string& thing);

// The notify payload (aws-iot-mqtt-api.md §5.1).
struct Notification {
    std::string access_token;  // clientAccessToken: a secret
    std::string mode;          // clientMode
    std::string region;
    std::vector<std::string> services;
};
// Errors name the field: "services: expected an array of strings, got a string".
Result<Notification> parse_notification(std::string_view payload);

struct FeatureOptions {
    std::string thing;
    std::string endpoint;                   // tunneling.endpoint, host[:port]; empty: the notification's region
    std::string ca_file;                    // empty: the system trust store
    std::vector<ServiceEndpoint> services;  // tunneling.services
    ProxySettings proxy;                    // host empty: no proxy
    size_t max_tunnels = 8;
    // --tunneling-disable-notification: one tunnel at start with this token, region and service.
    bool notifications = true;
    std::string access_token, region, service;
};

// tunneling.*, root-ca, thing-name and the HTTP proxy (the proxy file's http-proxy-* keys, else
// HTTPS_PROXY). Fails on an invalid service map or proxy, or a --tunneling-disable-notification
// start without its token, region or service.
Result<FeatureOptions> feature_options(const config::Config& cfg);

// One tunnel's options: the endpoint (configured, else the region's), and the local endpoints of
// `services`; an error names the services the local map lacks.
Result<TunnelOptions> tunnel_options(const FeatureOptions& options, const std::string& access_token,
                                          const std::string& region, const std::vector<std::string>& services);

class TunnelFeature {
public:
    TunnelFeature(EventLoop& loop, mqtt::Client& client, FeatureOptions options);
    ~TunnelFeature();
    TunnelFeature(const TunnelFeature&) = delete;
    TunnelFeature& operator=(const TunnelFeature&) = delete;

    // Subscribe to the notifications (call before the client connects), or open the one tunnel
    // of --tunneling-disable-notification.
    Status start();
    size_t open_tunnels() const { return tunnels_.size(); }
    // Shutdown: close every tunnel with the WebSocket close handshake; `done` runs once all have
    // ended (at once when none is open). No tunnel is opened after this.
    void stop(std::function<void()> done);
    // "2 open (1: SSH connected, 2 connections; 2: WEB connecting); 3 notifications, 1 refused, 0 duplicate"
    std::string status_line() const;

private:
    struct Open {
        int id = 0;
        std::vector<std::string> services;
        std::unique_ptr<TunnelClient> tunnel;
        std::string access_token;  // for duplicate detection while it is open
        bool ended = false;
    };

    void on_notification(const mqtt::Message& message);
    // Log lines name the tunnel by number and services, never by token.
    Status open(const std::string& access_token, const std::string& region, const std::vector<std::string>& services);
    void ended(int id, const std::string& reason);
    bool seen(const std::string& access_token) const;

    EventLoop& loop_;
    mqtt::Client& client_;
    FeatureOptions options_;
    std::map<int, Open> tunnels_;
    std::deque<std::string> recent_tokens_;  // the last few accepted or refused, to drop repeats
    std::function<void()> stopped_;           // stop()'s `done`, until the last tunnel has ended
    bool stopping_ = false;
    int next_id_ = 1;
    int notifications_ = 0, refused_ = 0, duplicates_ = 0, opened_ = 0;
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace iot::tunnel
