#include "tunnel/destination_tunnel.hpp"

#include "base/strings.hpp"
#include "base/time.hpp"
#include "log/log.hpp"

namespace iot::tunnel {
namespace {
const char* const kComp = "tunnel";
}

std::string endpoint_for_region(const std::string& region) {
    std::string host = "data.tunneling.iot." + region + ".amazonaws.com";
    if (starts_with(region, "cn-")) host += ".cn";
    return host;
}

DestinationTunnel::DestinationTunnel(EventLoop& loop, DestinationOptions options,
                                     std::function<void(const std::string&)> on_ended)
    : loop_(loop),
      options_(std::move(options)),
      on_ended_(std::move(on_ended)),
      backoff_(options_.reconnect_min_ms, options_.reconnect_max_ms) {
    if (options_.client_token.empty()) options_.client_token = random_token(36);
    log::add_secret(options_.access_token);
    log::add_secret(options_.proxy_password);
    SessionOptions s = options_.session;
    s.services = options_.services;
    Transport& transport = *this;
    session_ = std::make_unique<TunnelSession>(loop_, transport, s);
}

DestinationTunnel::~DestinationTunnel() {
    *alive_ = false;
    loop_.cancel_timer(reconnect_timer_);
    session_.reset();  // before the WebSocket it sends through
    ws_.reset();
}

Status DestinationTunnel::start() {
    auto hp = parse_host_port(options_.endpoint, 443);
    if (!hp) return hp.err().wrap("tunneling endpoint");
    if (options_.access_token.empty()) return Error("no tunnel access token");
    if (options_.services.empty()) return Error("no services to connect the tunnel to");
    WebSocketOptions o;
    o.host = hp->host;
    o.port = hp->port;
    o.path = "/tunnel?local-proxy-mode=destination";
    o.ca_file = options_.ca_file;
    for (auto v : options_.versions) o.protocols.push_back(subprotocol_name(v));
    o.headers = {{"access-token", options_.access_token}, {"client-token", options_.client_token}};
    o.user_agent = "iotbox/" IOTBOX_VERSION;
    o.proxy_host = options_.proxy_host;
    o.proxy_port = options_.proxy_port;
    o.proxy_user = options_.proxy_user;
    o.proxy_password = options_.proxy_password;
    WebSocket::Handlers h;
    h.on_open = [this](const std::string& p) { on_open(p); };
    h.on_data = [this](const uint8_t* d, size_t n) { on_data(d, n); };
    h.on_writable = [this] { session_->on_writable(); };
    h.on_closed = [this](const WebSocketClosed& c) { on_closed(c); };
    ws_ = std::make_unique<WebSocket>(loop_, std::move(o), std::move(h));
    connect();
    return {};
}

void DestinationTunnel::connect() {
    reconnect_timer_ = 0;
    if (stopping_) return;
    reconnect_after_close_ = false;
    auto ok = ws_->connect();
    if (!ok) {
        // A local problem (unreadable root CA, a request too long): retrying will not help.
        end(ok.error());
    }
}

void DestinationTunnel::on_open(const std::string& protocol) {
    auto version = version_for_subprotocol(protocol);
    ++connects_;
    opened_at_ = monotonic_ms();
    LOG_INFO(kComp, "tunnel connected (%s)", protocol.c_str());
    session_->start(version ? *version : ProtocolVersion::V1);
}

void DestinationTunnel::on_data(const uint8_t* data, size_t len) {
    auto ok = session_->on_bytes(data, len);
    if (!ok) {
        // The message stream cannot be followed any more: start again on a new WebSocket.
        LOG_WARN(kComp, "tunnel: %s: reconnecting", ok.error().c_str());
        reconnect_after_close_ = true;
        session_->stop();
        ws_->close(1008, "malformed tunnel message");
    }
}

void DestinationTunnel::on_closed(const WebSocketClosed& closed) {
    session_->stop();
    if (stopping_) {
        end("stopped");
        return;
    }
    bool retry = closed.retry || reconnect_after_close_;
    if (!retry) {
        end(closed.reason);
        return;
    }
    if (closed.opened && monotonic_ms() - opened_at_ >= options_.stable_after_ms) backoff_.reset();
    int64_t delay = backoff_.next();
    LOG_WARN(kComp, "tunnel: %s; reconnecting in %.1f s", closed.reason.c_str(), static_cast<double>(delay) / 1000.0);
    reconnect_timer_ = loop_.add_timer(delay, [this] { connect(); });
}

void DestinationTunnel::stop() {
    if (ended_) return;
    stopping_ = true;
    loop_.cancel_timer(reconnect_timer_);
    reconnect_timer_ = 0;
    if (ws_ && (ws_->state() == WebSocket::State::Open || ws_->state() == WebSocket::State::Closing)) {
        if (ws_->state() == WebSocket::State::Open) ws_->close(1000, "closed by the device");
        return;  // on_closed ends it
    }
    if (ws_) ws_->abort();
    session_->stop();
    end("stopped");
}

void DestinationTunnel::end(const std::string& reason) {
    if (ended_) return;
    ended_ = true;
    loop_.cancel_timer(reconnect_timer_);
    reconnect_timer_ = 0;
    LOG_INFO(kComp, "tunnel ended: %s", reason.c_str());
    if (on_ended_) {
        auto cb = on_ended_;
        cb(reason);  // may destroy this tunnel
    }
}

}  // namespace iot::tunnel
