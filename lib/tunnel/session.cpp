#include "tunnel/session.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/strings.hpp"
#include "log/log.hpp"

namespace iot::tunnel {
namespace {
const char* const kComp = "tunnel";
}

Result<std::vector<ServiceEndpoint>> parse_service_map(std::string_view text, int min_port) {
    std::vector<ServiceEndpoint> out;
    for (auto& item : split(text, ',')) {
        std::string_view entry = trim(item);
        if (entry.empty()) continue;
        size_t eq = entry.find('=');
        if (eq == std::string_view::npos || eq == 0)
            return Error(
                format("service '%.*s': expected NAME=host:port or NAME=port", int(entry.size()), entry.data()));
        ServiceEndpoint s;
        s.name = std::string(trim(entry.substr(0, eq)));
        std::string_view where = trim(entry.substr(eq + 1));
        if (parse_int(where)) {
            auto port = parse_int(where);
            if (*port < min_port || *port > 65535)
                return Error(format("service %s: port must be %d to 65535", s.name.c_str(), min_port));
            s.host = "localhost";
            s.port = static_cast<int>(*port);
        } else {
            auto hp = parse_host_port(where, 0, min_port);
            if (!hp) return hp.err().wrap("service " + s.name);
            s.host = hp->host;
            s.port = hp->port;
        }
        for (auto& other : out)
            if (other.name == s.name) return Error(format("service %s is mapped twice", s.name.c_str()));
        out.push_back(std::move(s));
    }
    if (out.empty()) return Error("no services (expected NAME=host:port[,NAME=host:port])");
    return out;
}

Result<std::vector<ServiceEndpoint>> parse_service_map_json(const cJSON* object) {
    if (!cJSON_IsObject(object)) return Error("expected an object of service name to \"host:port\"");
    std::string text;
    for (const cJSON* item = object->child; item; item = item->next) {
        if (!text.empty()) text += ',';
        if (cJSON_IsNumber(item))
            text += format("%s=%lld", item->string, static_cast<long long>(item->valuedouble));
        else if (cJSON_IsString(item))
            text += format("%s=%s", item->string, item->valuestring);
        else
            return Error(format("service %s: expected \"host:port\" or a port number", item->string));
        if (strchr(item->string, ',') || strchr(item->string, '=') || !*item->string)
            return Error(format("service name '%s' is not valid", item->string));
    }
    return parse_service_map(text);
}

std::vector<ServiceEndpoint> default_service_map() {
    return {{"SSH", "localhost", 22}, {"VNC", "localhost", 5900}};
}

TunnelSession::TunnelSession(EventLoop& loop, Transport& transport, SessionOptions options)
    : loop_(loop), transport_(transport), options_(std::move(options)) {
    for (auto& ep : options_.services) {
        auto s = std::make_unique<Service>();
        s->endpoint = ep;
        services_.push_back(std::move(s));
    }
}

TunnelSession::~TunnelSession() {
    *alive_ = false;
    stop();
}

void TunnelSession::start(ProtocolVersion version) {
    stop();
    version_ = version;
    active_ = true;
}

void TunnelSession::stop() {
    // No calls into the transport from here: it is gone (or going).
    congested_ = 0;
    for (auto& s : services_) {
        for (auto& [id, c] : s->connections) {
            c->congested = false;
            destroy(*c);
        }
        s->connections.clear();
        s->stream_id = 0;
        s->peer_service_id.clear();
        s->connection_ids = false;
    }
    for (auto& c : draining_) {
        c->congested = false;
        destroy(*c);
    }
    draining_.clear();
    local_paused_ = false;
    control_.clear();
    reader_.reset();
    service_ids_.clear();
    have_service_ids_ = false;
    active_ = false;
}

size_t TunnelSession::open_connections() const {
    size_t n = 0;
    for (auto& s : services_) n += s->connections.size();
    return n;
}

size_t TunnelSession::buffered_to_local() const {
    size_t n = 0;
    for (auto& s : services_)
        for (auto& [id, c] : s->connections) n += c->pending();
    for (auto& c : draining_) n += c->pending();
    return n;
}

Status TunnelSession::on_bytes(const uint8_t* data, size_t len) {
    if (!active_) return {};
    auto alive = alive_;
    std::string error;
    (void)reader_.feed(data, len, [&](const uint8_t* m, size_t n) {
        // Read in place: DATA goes from the transport's buffer to the local socket uncopied.
        auto view = parse_view(m, n);
        if (!view) {
            error = view.error();
            return false;
        }
        if (view->type == MessageType::Data) {
            on_data(*view);
        } else {
            TunnelMessage message = view->to_message();
            handle(message);
        }
        return *alive;
    });
    if (!error.empty()) return Error(error);
    return {};
}

void TunnelSession::handle(TunnelMessage& m) {
    LOG_DEBUG(kComp, "got %s service '%s' stream %d connection %u (%zu bytes)", message_type_name(m.type).c_str(),
              m.service_id.c_str(), m.stream_id, m.connection_id, m.payload.size());
    switch (m.type) {
        case MessageType::StreamStart:
        case MessageType::ConnectionStart:
            if (options_.role == Role::Source) {
                // Only the source starts streams: a destination that does is confused. Dropped.
                LOG_WARN(kComp, "ignoring %s from the destination (only a source starts streams)",
                         message_type_name(m.type).c_str());
                ++stats_.messages_dropped;
            } else if (m.type == MessageType::StreamStart) {
                on_stream_start(m);
            } else {
                on_connection_start(m);
            }
            return;
        case MessageType::StreamReset:
            on_stream_reset(m);
            return;
        case MessageType::ConnectionReset:
            on_connection_reset(m);
            return;
        case MessageType::ServiceIds:
            on_service_ids(m);
            return;
        case MessageType::SessionReset:
            LOG_INFO(kComp, "the service reset the session: closing every stream");
            for (auto& s : services_) close_stream(*s, true);
            return;
        default:
            // Newer message types: the peer marks what may be skipped. We skip the rest too rather
            // than drop every stream of the tunnel, but say so.
            if (!m.ignorable) LOG_WARN(kComp, "ignoring a message of unknown %s", message_type_name(m.type).c_str());
            ++stats_.messages_dropped;
            return;
    }
}

TunnelSession::Service* TunnelSession::find_service(std::string_view id) {
    if (!id.empty()) {
        for (auto& s : services_)
            if (s->endpoint.name == id) return s.get();
        for (auto& s : services_)
            if (iequals(s->endpoint.name, id)) return s.get();
        // A source's unnamed service, bound to the tunnel's only service id.
        for (auto& s : services_)
            if (s->stream_id && s->peer_service_id == id) return s.get();
        return nullptr;
    }
    // No service id (a V1 source, e.g. the browser console): only unambiguous with one service.
    if (services_.size() == 1) return services_[0].get();
    if (service_ids_.size() == 1) return find_service(service_ids_[0]);
    return nullptr;
}

void TunnelSession::on_service_ids(const TunnelMessage& m) {
    service_ids_ = m.available_service_ids;
    have_service_ids_ = true;
    LOG_INFO(kComp, "tunnel services: %s", join(service_ids_, ", ").c_str());
    if (options_.role == Role::Source) {
        for (auto& s : services_) {
            std::string wire = wire_service_id(*s);
            if (std::find(service_ids_.begin(), service_ids_.end(), wire) == service_ids_.end())
                LOG_WARN(kComp, "service %s (port %d) is not one of the tunnel's services: its connections will be refused",
                         s->endpoint.name.empty() ? "(unnamed)" : s->endpoint.name.c_str(), s->endpoint.port);
        }
        return;
    }
    for (auto& id : service_ids_)
        if (!find_service(id))
            LOG_WARN(kComp,
                     "the tunnel's service '%s' has no local endpoint (tunneling.services): its connections "
                     "will be refused",
                     id.c_str());
}

bool TunnelSession::ready() const {
    return active_ && (version_ == ProtocolVersion::V1 || have_service_ids_);
}

std::string TunnelSession::wire_service_id(const Service& s) const {
    if (version_ == ProtocolVersion::V1) return {};
    const std::string& name = s.endpoint.name;
    if (name.empty()) return service_ids_.size() == 1 ? service_ids_[0] : std::string();
    for (auto& id : service_ids_)
        if (id == name) return id;
    for (auto& id : service_ids_)
        if (iequals(id, name)) return id;
    return name;
}

Status TunnelSession::accept_local(size_t index, Fd fd) {
    if (options_.role != Role::Source || index >= services_.size()) return Error("no such local service");
    if (!ready()) return Error("the tunnel is not open yet");
    Service& s = *services_[index];
    std::string wire = wire_service_id(s);
    if (version_ >= ProtocolVersion::V2 &&
        std::find(service_ids_.begin(), service_ids_.end(), wire) == service_ids_.end())
        return Error(format("the tunnel has no service %s (it has %s)",
                            s.endpoint.name.empty() ? "to bind an unnamed port to" : s.endpoint.name.c_str(),
                            service_ids_.empty() ? "none" : join(service_ids_, ", ").c_str()));
    if (open_connections() >= options_.max_connections)
        return Error(format("%zu connections are open already", options_.max_connections));
    bool multiplex = version_ >= ProtocolVersion::V3;
    if (s.stream_id && !multiplex)
        return Error(format("the tunnel speaks %s: one connection per service at a time (V3 multiplexes)",
                            subprotocol_name(version_)));
    if (version_ == ProtocolVersion::V1)
        for (auto& other : services_)
            if (other->stream_id) return Error("a V1 tunnel carries one connection at a time");
    TunnelMessage start;
    uint32_t id = 1;
    if (s.stream_id == 0) {
        s.last_stream_id = s.last_stream_id == INT32_MAX ? 1 : s.last_stream_id + 1;
        s.stream_id = s.last_stream_id;
        s.peer_service_id = wire;
        s.connection_ids = multiplex;
        s.last_connection_id = 1;
        start.type = MessageType::StreamStart;
    } else {
        do {
            id = s.last_connection_id = s.last_connection_id == UINT32_MAX ? 1 : s.last_connection_id + 1;
        } while (s.connections.count(id));
        start.type = MessageType::ConnectionStart;
    }
    start.stream_id = s.stream_id;
    start.service_id = s.peer_service_id;
    start.connection_id = multiplex ? id : 0;
    queue_control(start);
    Connection& c = add_connection(s, id, start.type == MessageType::StreamStart);
    LOG_INFO(kComp, "service %s stream %d connection %u: opened", wire.empty() ? s.endpoint.name.c_str() : wire.c_str(),
             s.stream_id, id);
    attach(c, std::move(fd));
    return {};
}

TunnelSession::Connection& TunnelSession::add_connection(Service& s, uint32_t id, bool from_stream_start) {
    auto c = std::make_unique<Connection>();
    Connection& added = *c;
    c->service = &s;
    c->id = id;
    c->from_stream_start = from_stream_start;
    s.connections[id] = std::move(c);
    ++stats_.connections_opened;
    return added;
}

void TunnelSession::on_stream_start(const TunnelMessage& m) {
    Service* s = find_service(m.service_id);
    if (!s || m.stream_id == 0) {
        LOG_WARN(kComp, "refusing stream %d for service '%s': %s", m.stream_id, m.service_id.c_str(),
                 m.stream_id == 0 ? "no stream id" : "no local endpoint is mapped to it");
        ++stats_.connections_refused;
        TunnelMessage reset;
        reset.type = MessageType::StreamReset;
        reset.stream_id = m.stream_id;
        reset.service_id = m.service_id;
        if (m.stream_id) queue_control(reset);
        return;
    }
    if (s->stream_id != 0) {
        LOG_INFO(kComp, "service %s: stream %d replaces stream %d", s->endpoint.name.c_str(), m.stream_id,
                 s->stream_id);
        close_stream(*s, false);
    }
    s->stream_id = m.stream_id;
    s->peer_service_id = m.service_id;
    s->connection_ids = version_ >= ProtocolVersion::V3 && m.connection_id != 0;
    open_connection(*s, m.connection_id ? m.connection_id : 1, true);
}

void TunnelSession::on_connection_start(const TunnelMessage& m) {
    Service* s = find_service(m.service_id);
    if (!s || s->stream_id == 0 || s->stream_id != m.stream_id || m.connection_id == 0) {
        LOG_WARN(kComp, "refusing connection %u of stream %d for service '%s': %s", m.connection_id, m.stream_id,
                 m.service_id.c_str(), !s ? "no local endpoint is mapped to it" : "no such stream");
        ++stats_.connections_refused;
        TunnelMessage reset;
        reset.type = MessageType::ConnectionReset;
        reset.stream_id = m.stream_id;
        reset.service_id = m.service_id;
        reset.connection_id = m.connection_id;
        if (m.stream_id && m.connection_id) queue_control(reset);
        return;
    }
    auto it = s->connections.find(m.connection_id);
    if (it != s->connections.end()) {
        LOG_WARN(kComp, "service %s: connection %u started twice: resetting it", s->endpoint.name.c_str(),
                 m.connection_id);
        destroy(*it->second);
        s->connections.erase(it);
        send_reset(*s, MessageType::ConnectionReset, m.connection_id);
        return;
    }
    s->connection_ids = true;
    open_connection(*s, m.connection_id, false);
}

void TunnelSession::open_connection(Service& s, uint32_t id, bool from_stream_start) {
    if (open_connections() >= options_.max_connections) {
        LOG_WARN(kComp, "service %s: refusing connection %u: %zu local connections open already",
                 s.endpoint.name.c_str(), id, options_.max_connections);
        ++stats_.connections_refused;
        if (from_stream_start || !s.connection_ids) {
            send_reset(s, MessageType::StreamReset, 0);
            close_stream(s, true);
        } else {
            send_reset(s, MessageType::ConnectionReset, id);
        }
        return;
    }
    Connection* raw = &add_connection(s, id, from_stream_start);
    raw->connector =
        std::make_unique<TcpConnector>(loop_, s.endpoint.host, s.endpoint.port, options_.connect_timeout_ms,
                                       [this, raw](Result<Fd> fd) { on_connected(*raw, std::move(fd)); });
    LOG_INFO(kComp, "service %s stream %d connection %u: connecting to %s:%d", s.endpoint.name.c_str(), s.stream_id, id,
             s.endpoint.host.c_str(), s.endpoint.port);
    raw->connector->start();
}

void TunnelSession::on_connected(Connection& c, Result<Fd> fd) {
    c.connector.reset();  // it calls us last and touches nothing after
    if (!fd) {
        Service& s = *c.service;
        LOG_WARN(kComp, "service %s stream %d connection %u: %s", s.endpoint.name.c_str(), s.stream_id, c.id,
                 fd.error().c_str());
        bool stream_reset = !s.connection_ids || (c.from_stream_start && s.connections.size() == 1);
        uint32_t id = c.id;
        destroy(c);
        s.connections.erase(id);
        if (stream_reset) {
            send_reset(s, MessageType::StreamReset, 0);
            close_stream(s, true);
        } else {
            send_reset(s, MessageType::ConnectionReset, id);
        }
        return;
    }
    attach(c, fd.take());
}

void TunnelSession::attach(Connection& c, Fd fd) {
    c.fd = std::move(fd);
    Connection* raw = &c;
    c.watch = loop_.watch(c.fd.get(), POLLIN, [this, raw](short ev) { on_local_event(*raw, ev); });
    if (c.pending() && !flush_local(c)) {
        local_closed(c, errno_text(errno));
        return;
    }
    update_congestion(c);
    update_local_events(c);
}

void TunnelSession::on_data(const MessageView& m) {
    LOG_DEBUG(kComp, "got DATA service '%.*s' stream %d connection %u (%zu bytes)", static_cast<int>(m.service_id.size()),
              m.service_id.data(), m.stream_id, m.connection_id, m.payload_len);
    Service* s = find_service(m.service_id);
    if (!s || s->stream_id == 0 || m.stream_id != s->stream_id) {
        ++stats_.messages_dropped;  // stale: an old stream's data still in flight
        return;
    }
    auto it = s->connections.find(m.connection_id ? m.connection_id : 1);
    if (it == s->connections.end()) {
        ++stats_.messages_dropped;
        return;
    }
    Connection& c = *it->second;
    stats_.bytes_to_local += m.payload_len;
    const uint8_t* p = m.payload;
    size_t left = m.payload_len;
    if (c.fd.valid() && c.pending() == 0 && left) {
        // Nothing waits before it: straight to the socket; only what it does not take is kept.
        ssize_t n = ::send(c.fd.get(), p, left, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            local_closed(c, errno_text(errno));
            return;
        }
        if (n > 0) {
            p += n;
            left -= static_cast<size_t>(n);
        }
    }
    if (left) {
        if (c.pending() == 0) {
            c.out.clear();
            c.out_pos = 0;
        }
        c.out.append(reinterpret_cast<const char*>(p), left);
    }
    if (c.fd.valid() && c.pending() && !flush_local(c)) {
        local_closed(c, errno_text(errno));
        return;
    }
    update_congestion(c);
    update_local_events(c);
}

void TunnelSession::on_connection_reset(const TunnelMessage& m) {
    Service* s = find_service(m.service_id);
    if (!s) return;
    auto it = s->connections.find(m.connection_id ? m.connection_id : 1);
    if (it == s->connections.end()) return;
    LOG_INFO(kComp, "service %s stream %d connection %u: closed by the source", s->endpoint.name.c_str(), s->stream_id,
             it->first);
    std::unique_ptr<Connection> c = std::move(it->second);
    s->connections.erase(it);
    drain_or_close(std::move(c));
}

void TunnelSession::on_stream_reset(const TunnelMessage& m) {
    // The connection id is ignored: the real local proxy sends stale ones here.
    Service* s = find_service(m.service_id);
    if (!s || s->stream_id == 0 || m.stream_id != s->stream_id) return;
    LOG_INFO(kComp, "service %s stream %d: reset by the source", s->endpoint.name.c_str(), s->stream_id);
    close_stream(*s, true);
}

void TunnelSession::close_stream(Service& s, bool flush) {
    auto connections = std::move(s.connections);
    s.connections.clear();
    for (auto& [id, c] : connections) {
        if (flush)
            drain_or_close(std::move(c));
        else
            destroy(*c);
    }
    s.stream_id = 0;
    s.peer_service_id.clear();
    s.connection_ids = false;
}

void TunnelSession::drain_or_close(std::unique_ptr<Connection> c) {
    if (!c->fd.valid() || c->pending() == 0) {
        destroy(*c);
        return;
    }
    // What the source sent before its reset still reaches the local socket, within a time limit.
    c->draining = true;
    if (c->congested) {
        c->congested = false;
        if (--congested_ == 0) transport_.pause_reading(false);
    }
    Connection* raw = c.get();
    c->drain_timer = loop_.add_timer(options_.drain_timeout_ms, [this, raw] {
        raw->drain_timer = 0;
        local_closed(*raw, "the local socket did not take the rest in time");
    });
    draining_.push_back(std::move(c));
    update_local_events(*raw);
}

void TunnelSession::destroy(Connection& c) {
    if (c.watch) loop_.unwatch(c.watch);
    c.watch = 0;
    loop_.cancel_timer(c.drain_timer);
    c.drain_timer = 0;
    c.connector.reset();
    c.fd.reset();
    c.out.clear();
    c.out_pos = 0;
    if (c.congested) {
        c.congested = false;
        if (--congested_ == 0) transport_.pause_reading(false);
    }
}

bool TunnelSession::flush_local(Connection& c) {
    while (c.pending()) {
        ssize_t n = ::send(c.fd.get(), c.out.data() + c.out_pos, c.pending(), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
            return false;
        }
        c.out_pos += static_cast<size_t>(n);
    }
    if (c.out_pos == c.out.size()) {
        c.out.clear();
        c.out_pos = 0;
    } else if (c.out_pos >= 65536 && c.out_pos * 2 >= c.out.size()) {
        c.out.erase(0, c.out_pos);
        c.out_pos = 0;
    }
    return true;
}

void TunnelSession::update_congestion(Connection& c) {
    if (!c.congested && c.pending() > options_.connection_buffer) {
        c.congested = true;
        if (congested_++ == 0) transport_.pause_reading(true);
    } else if (c.congested && c.pending() <= options_.connection_buffer / 2) {
        c.congested = false;
        if (--congested_ == 0) transport_.pause_reading(false);
    }
}

void TunnelSession::update_local_events(Connection& c) {
    if (!c.watch) return;
    short events = 0;
    if (!c.draining && !local_paused_) events |= POLLIN;
    if (c.pending()) events |= POLLOUT;
    loop_.set_events(c.watch, events);
}

void TunnelSession::on_local_event(Connection& c, short revents) {
    if (c.pending() && (revents & (POLLOUT | POLLERR | POLLHUP))) {
        if (!flush_local(c)) {
            local_closed(c, errno_text(errno));
            return;
        }
        if (c.draining && c.pending() == 0) {
            local_closed(c, {});
            return;
        }
        update_congestion(c);
    }
    if (!c.draining && !local_paused_ && (revents & (POLLIN | POLLERR | POLLHUP))) {
        if (!read_local(c)) return;
    }
    update_local_events(c);
}

bool TunnelSession::read_local(Connection& c) {
    Service& s = *c.service;
    for (int round = 0; round < 4; ++round) {
        if (!flush_control() || !transport_.writable(kDataChunk + kDataOverhead)) {
            // The transport is full: no local socket is read until it drains.
            if (!local_paused_) {
                local_paused_ = true;
                for (auto& svc : services_)
                    for (auto& [id, other] : svc->connections) update_local_events(*other);
            }
            return true;
        }
        // The payload is read straight into the frame going out, after the room its header needs
        // for a full read; a shorter read gets a shorter header, written to end where it starts.
        DataEncoder enc(s.peer_service_id, s.stream_id, wire_connection_id(s, c.id), version_);
        size_t room = enc.header_size(kDataChunk);
        uint8_t* frame = transport_.reserve(room + kDataChunk + enc.trailer_size());
        if (!frame) {
            if (!local_paused_) {
                local_paused_ = true;
                for (auto& svc : services_)
                    for (auto& [id, other] : svc->connections) update_local_events(*other);
            }
            return true;
        }
        ssize_t n = ::recv(c.fd.get(), frame + room, kDataChunk, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return true;
        if (n <= 0) {
            local_closed(c, n == 0 ? std::string() : errno_text(errno));
            return false;
        }
        size_t len = static_cast<size_t>(n);
        uint8_t* message = frame + room - enc.header_size(len);
        enc.write_header(message, len);
        enc.write_trailer(frame + room + len);
        auto ok = enc.check(len);
        if (ok) ok = transport_.commit(message, enc.size(len));
        if (!ok) {
            // The bytes are read and cannot go: carrying on would leave a gap in the stream.
            local_closed(c, "cannot send what it sent: " + ok.error());
            return false;
        }
        stats_.bytes_from_local += static_cast<uint64_t>(n);
        if (len < kDataChunk) return true;
    }
    return true;
}

// The local socket closed (or failed, or finished draining): tell the source unless it started it.
void TunnelSession::local_closed(Connection& c, const std::string& why) {
    auto d = std::find_if(draining_.begin(), draining_.end(), [&](auto& p) { return p.get() == &c; });
    if (d != draining_.end()) {
        destroy(c);
        draining_.erase(d);
        return;
    }
    Service& s = *c.service;
    uint32_t id = c.id;
    LOG_INFO(kComp, "service %s stream %d connection %u: local socket closed%s%s", s.endpoint.name.c_str(), s.stream_id,
             id, why.empty() ? "" : ": ", why.c_str());
    destroy(c);
    s.connections.erase(id);
    if (s.connection_ids) {
        send_reset(s, MessageType::ConnectionReset, id);
    } else {
        send_reset(s, MessageType::StreamReset, 0);
        close_stream(s, true);
    }
}

void TunnelSession::send_reset(Service& s, MessageType type, uint32_t connection_id) {
    if (!s.stream_id) return;
    TunnelMessage m;
    m.type = type;
    m.stream_id = s.stream_id;
    m.service_id = s.peer_service_id;
    if (type == MessageType::ConnectionReset) m.connection_id = wire_connection_id(s, connection_id);
    queue_control(m);
}

void TunnelSession::queue_control(const TunnelMessage& m) {
    if (!active_) return;
    auto ok = append_message(control_, m, version_);
    if (!ok) LOG_WARN(kComp, "%s", ok.error().c_str());
    flush_control();
}

bool TunnelSession::flush_control() {
    if (control_.empty()) return true;
    if (!transport_.writable(control_.size())) return false;
    auto ok = transport_.send(reinterpret_cast<const uint8_t*>(control_.data()), control_.size());
    if (!ok) return false;
    control_.clear();
    return true;
}

void TunnelSession::on_writable() {
    if (!active_) return;
    if (!flush_control()) return;
    if (local_paused_ && transport_.writable(kDataChunk + kDataOverhead)) {
        local_paused_ = false;
        for (auto& s : services_)
            for (auto& [id, c] : s->connections) update_local_events(*c);
    }
}

}  // namespace iot::tunnel
