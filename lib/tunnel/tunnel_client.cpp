#include "tunnel/tunnel_client.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>

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

TunnelClient::TunnelClient(EventLoop& loop, TunnelOptions options,
                                     std::function<void(const std::string&)> on_ended)
    : loop_(loop),
      options_(std::move(options)),
      on_ended_(std::move(on_ended)),
      backoff_(options_.reconnect_min_ms, options_.reconnect_max_ms) {
    if (options_.client_token.empty()) options_.client_token = random_token(36);
    log::add_secret(options_.access_token);
    log::add_secret(options_.proxy_password);
    SessionOptions s = options_.session;
    s.role = options_.role;
    s.services = options_.services;
    Transport& transport = *this;
    session_ = std::make_unique<TunnelSession>(loop_, transport, s);
}

TunnelClient::~TunnelClient() {
    *alive_ = false;
    loop_.cancel_timer(reconnect_timer_);
    for (auto& l : listeners_) loop_.unwatch(l.watch);
    session_.reset();  // before the WebSocket it sends through
    ws_.reset();
}

Status TunnelClient::start() {
    auto hp = parse_host_port(options_.endpoint, 443);
    if (!hp) return hp.err().wrap("tunneling endpoint");
    if (options_.access_token.empty()) return Error("no tunnel access token");
    if (options_.services.empty()) return Error("no services to connect the tunnel to");
    bool source = options_.role == Role::Source;
    if (source) {
        auto ok = listen();
        if (!ok) return ok;
    }
    WebSocketOptions o;
    o.host = hp->host;
    o.port = hp->port;
    o.path = source ? "/tunnel?local-proxy-mode=source" : "/tunnel?local-proxy-mode=destination";
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

void TunnelClient::connect() {
    reconnect_timer_ = 0;
    if (stopping_) return;
    reconnect_after_close_ = false;
    auto ok = ws_->connect();
    if (!ok) {
        // A local problem (unreadable root CA, a request too long): retrying will not help.
        end(ok.error());
    }
}

void TunnelClient::on_open(const std::string& protocol) {
    auto version = version_for_subprotocol(protocol);
    ++connects_;
    opened_at_ = monotonic_ms();
    LOG_INFO(kComp, "tunnel connected (%s)", protocol.c_str());
    session_->start(version ? *version : ProtocolVersion::V1);
    update_listeners();
}

void TunnelClient::on_data(const uint8_t* data, size_t len) {
    auto ok = session_->on_bytes(data, len);
    if (!ok) {
        // The message stream cannot be followed any more: start again on a new WebSocket.
        LOG_WARN(kComp, "tunnel: %s: reconnecting", ok.error().c_str());
        reconnect_after_close_ = true;
        session_->stop();
        ws_->close(1008, "malformed tunnel message");
    }
    if (accepting_ != session_->ready()) update_listeners();
}

void TunnelClient::on_closed(const WebSocketClosed& closed) {
    session_->stop();
    update_listeners();
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

void TunnelClient::stop() {
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

void TunnelClient::end(const std::string& reason) {
    if (ended_) return;
    ended_ = true;
    loop_.cancel_timer(reconnect_timer_);
    reconnect_timer_ = 0;
    LOG_INFO(kComp, "tunnel ended: %s", reason.c_str());
    for (auto& l : listeners_) loop_.unwatch(l.watch);
    listeners_.clear();
    if (on_ended_) {
        auto cb = on_ended_;
        cb(reason);  // may destroy this tunnel
    }
}

Status TunnelClient::listen() {
    for (size_t i = 0; i < options_.services.size(); ++i) {
        const ServiceEndpoint& svc = options_.services[i];
        std::string name = svc.name.empty() ? "the tunnel's service" : "service " + svc.name;
        auto addresses = resolve(svc.host, svc.port);
        if (!addresses) return addresses.err().wrap(name);
        int port = svc.port;  // port 0: the first address picks one, the others take the same
        std::string last_error;
        size_t bound = 0;
        for (auto& a : *addresses) {
            set_address_port(a, port);
            Fd fd(::socket(a.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
            int one = 1;
            if (fd.valid()) {
                (void)setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
                if (a.addr.ss_family == AF_INET6) (void)setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
            }
            if (!fd.valid() || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a.addr), a.len) != 0 ||
                ::listen(fd.get(), 64) != 0) {
                last_error = format("cannot listen on %s: %s", address_text(a).c_str(), errno_text(errno).c_str());
                continue;
            }
            Address actual;
            actual.len = sizeof actual.addr;
            (void)getsockname(fd.get(), reinterpret_cast<sockaddr*>(&actual.addr), &actual.len);
            if (port == 0) port = address_port(actual);
            Listener l;
            l.service = i;
            l.address = address_text(actual);
            l.fd = std::move(fd);
            l.watch = loop_.watch(l.fd.get(), 0, [this, i, raw = l.fd.get()](short) { on_accept(i, raw); });
            listeners_.push_back(std::move(l));
            ++bound;
        }
        if (!bound) return Error(format("%s: %s", name.c_str(), last_error.c_str()));
    }
    return {};
}

std::vector<std::pair<std::string, std::string>> TunnelClient::listening() const {
    std::vector<std::pair<std::string, std::string>> out;
    for (auto& l : listeners_) out.emplace_back(options_.services[l.service].name, l.address);
    return out;
}

void TunnelClient::update_listeners() {
    accepting_ = session_->ready() && !stopping_;
    for (auto& l : listeners_) loop_.set_events(l.watch, accepting_ ? POLLIN : 0);
}

void TunnelClient::on_accept(size_t service, int listen_fd) {
    for (int i = 0; i < 16; ++i) {
        Address peer;
        peer.len = sizeof peer.addr;
        int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&peer.addr), &peer.len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
                LOG_WARN(kComp, "accept: %s", errno_text(errno).c_str());
            return;
        }
        int one = 1;  // interactive traffic (ssh keystrokes) goes out at once, as at the destination
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        auto ok = session_->accept_local(service, Fd(fd));
        if (!ok) {
            const std::string& name = options_.services[service].name;
            LOG_WARN(kComp, "%s%s: refused a connection from %s: %s", name.empty() ? "port " : "service ",
                     name.empty() ? std::to_string(options_.services[service].port).c_str() : name.c_str(),
                     address_text(peer).c_str(), ok.error().c_str());
        }
    }
}

}  // namespace iot::tunnel
