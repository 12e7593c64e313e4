// One end of a tunnel: the WebSocket to the tunneling service in destination mode (the device) or
// source mode (the operator), the TunnelSession on it, and reconnection. A lost WebSocket closes
// every local connection and is made again with backoff and the same client token (5xx and
// network trouble retried); a 4xx answer ends the tunnel (its token is spent, rotated or closed: a
// new notification brings a new one) and everything it held is freed.
//
// In source mode the client also listens on each service's local port, from start() to the end,
// and hands each accepted socket to the session. While the tunnel is not ready (connecting, or
// waiting for SERVICE_IDS) the listeners are not polled: clients wait in the backlog rather than
// being refused, so an `ssh -p 2222 localhost` started with the tunnel goes through.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "base/result.hpp"
#include "loop/loop.hpp"
#include "mqtt/topic.hpp"
#include "tunnel/session.hpp"
#include "tunnel/websocket.hpp"

namespace iot::tunnel {

// data.tunneling.iot.<region>.amazonaws.com (.com.cn for the China regions).
std::string endpoint_for_region(const std::string& region);

struct TunnelOptions {
    Role role = Role::Destination;
    std::string endpoint;      // host[:port] (port 443 when left out)
    std::string access_token;  // the token of this end: a secret, never logged
    std::string client_token;  // empty: one is made and kept for every reconnect
    std::string ca_file;       // empty: the system trust store
    // Destination: where each service connects. Source: the address and port each listens on.
    std::vector<ServiceEndpoint> services;
    SessionOptions session;  // role and services are taken from above
    int64_t reconnect_min_ms = 1000;
    int64_t reconnect_max_ms = 120000;
    int64_t stable_after_ms = 10000;  // a connection this old resets the backoff
    std::string proxy_host;           // HTTP CONNECT proxy
    int proxy_port = 0;
    std::string proxy_user, proxy_password;
    // Subprotocols offered, best first.
    std::vector<ProtocolVersion> versions = {ProtocolVersion::V3, ProtocolVersion::V2, ProtocolVersion::V1};
};

class TunnelClient : private Transport {
public:
    // `on_ended(reason)` runs once when the tunnel is over for good (4xx, or stop()); the owner may
    // destroy the tunnel from inside it.
    TunnelClient(EventLoop& loop, TunnelOptions options, std::function<void(const std::string&)> on_ended);
    ~TunnelClient() override;
    TunnelClient(const TunnelClient&) = delete;
    TunnelClient& operator=(const TunnelClient&) = delete;

    // Source: binds every listener first (an error names the port that could not be had).
    Status start();
    // Close the WebSocket cleanly; on_ended follows.
    void stop();
    bool connected() const { return ws_ && ws_->state() == WebSocket::State::Open; }
    const TunnelSession& session() const { return *session_; }
    const std::string& client_token() const { return options_.client_token; }
    int connects() const { return connects_; }
    // Source: each service's name and an address it listens on ("127.0.0.1:2222"), once start()
    // succeeded; a name resolving to IPv4 and IPv6 addresses ("localhost") has one of each.
    std::vector<std::pair<std::string, std::string>> listening() const;

private:
    bool writable(size_t len) override { return ws_ && ws_->writable(len); }
    Status send(const uint8_t* data, size_t len) override {
        return ws_ ? ws_->send(data, len) : Status(Error("the tunnel is not connected"));
    }
    uint8_t* reserve(size_t max) override { return ws_ ? ws_->reserve_frame(max) : nullptr; }
    Status commit(const uint8_t* frame, size_t len) override {
        return ws_ ? ws_->commit_frame(frame, len) : Status(Error("the tunnel is not connected"));
    }
    void pause_reading(bool paused) override {
        if (ws_) ws_->pause_reading(paused);
    }
    void connect();
    void on_open(const std::string& protocol);
    void on_data(const uint8_t* data, size_t len);
    void on_closed(const WebSocketClosed& closed);
    void end(const std::string& reason);
    Status listen();
    void update_listeners();
    void on_accept(size_t service, int fd);

    struct Listener {
        size_t service = 0;
        Fd fd;
        EventLoop::WatchId watch = 0;
        std::string address;
    };

    EventLoop& loop_;
    TunnelOptions options_;
    std::function<void(const std::string&)> on_ended_;
    std::unique_ptr<WebSocket> ws_;
    std::unique_ptr<TunnelSession> session_;
    std::vector<Listener> listeners_;
    bool accepting_ = false;
    mqtt::Backoff backoff_;
    EventLoop::TimerId reconnect_timer_ = 0;
    int64_t opened_at_ = 0;
    int connects_ = 0;
    bool stopping_ = false, ended_ = false, reconnect_after_close_ = false;
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace iot::tunnel
