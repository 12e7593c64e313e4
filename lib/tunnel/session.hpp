// One end of a tunnel. A TunnelSession speaks the tunnel protocol (V1, V2 or V3, reference §6-§7)
// over a Transport (the WebSocket; a script in tests) and carries local TCP connections as streams
// (V1, V2) or connections of a stream (V3):
// - at the destination (the device) it connects each stream or connection the source opens to the
//   local endpoint its service is mapped to — only mapped endpoints, whatever the peer asks for;
// - at the source (the operator) it is handed sockets accepted on the service's local port
//   (accept_local) and starts a stream or connection for each.
// Both ends share everything after the start: DATA each way, resets, close and back-pressure.
//
// Memory stays bounded both ways: bytes for a local socket that is slow to take them are held up
// to connection_buffer, beyond which the session stops reading the WebSocket; bytes read from
// local sockets go out only while the transport has room, otherwise the sockets are not read.
#pragma once
#include <cjson/cJSON.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/fd.hpp"
#include "base/result.hpp"
#include "loop/loop.hpp"
#include "tunnel/net.hpp"
#include "tunnel/protocol.hpp"

namespace iot::tunnel {

struct ServiceEndpoint {
    std::string name;  // the tunnel's service id ("SSH", "ssh1")
    std::string host;
    int port = 0;
};
// "SSH=127.0.0.1:22,VNC=5900" (a bare port means localhost). Names are unique; at most 3, the
// service's limit per tunnel, is not enforced here (the notification says what a tunnel has).
// min_port 0: listening ports, where 0 asks for any free one.
Result<std::vector<ServiceEndpoint>> parse_service_map(std::string_view text, int min_port = 1);
// The tunneling.services config object: {"SSH": "127.0.0.1:22", "VNC": 5900}.
Result<std::vector<ServiceEndpoint>> parse_service_map_json(const cJSON* object);
// The Device Client's defaults: SSH to port 22, VNC to port 5900 on localhost.
std::vector<ServiceEndpoint> default_service_map();

// What the session sends through and can slow down.
class Transport {
public:
    virtual ~Transport() = default;
    // Room for one frame of `len` bytes now; when false, the transport owes an on_writable().
    virtual bool writable(size_t len) = 0;
    // One binary frame holding whole tunnel messages.
    virtual Status send(const uint8_t* data, size_t len) = 0;
    virtual void pause_reading(bool paused) = 0;
    // One frame built in place, so that what is read from a local socket is not copied on its way
    // out: reserve(max) gives room for up to `max` bytes (nullptr: none now, as writable() false),
    // commit(frame, len) sends the `len` bytes at `frame`, inside that room. Nothing else is sent in
    // between. By default a scratch buffer and send().
    virtual uint8_t* reserve(size_t max) {
        scratch_.resize(max);
        return scratch_.data();
    }
    virtual Status commit(const uint8_t* frame, size_t len) { return send(frame, len); }

private:
    std::vector<uint8_t> scratch_;
};

enum class Role { Destination, Source };

struct SessionOptions {
    Role role = Role::Destination;
    // Destination: where each service connects. Source: the service names (an empty name binds
    // to the tunnel's only service, whatever it is called); host and port are the listener's.
    std::vector<ServiceEndpoint> services;
    size_t connection_buffer = 256 * 1024;  // bytes held for one local socket before back-pressure
    int64_t connect_timeout_ms = 10000;     // local TCP connect
    int64_t drain_timeout_ms = 10000;       // a reset connection may flush this long before it is cut
    size_t max_connections = 64;            // local sockets of one tunnel at once
};

class TunnelSession {
public:
    TunnelSession(EventLoop& loop, Transport& transport, SessionOptions options);
    ~TunnelSession();
    TunnelSession(const TunnelSession&) = delete;
    TunnelSession& operator=(const TunnelSession&) = delete;

    // The transport is up with this protocol version: a fresh session (SERVICE_IDS expected for V2+).
    void start(ProtocolVersion version);
    // Bytes received from the transport (any split). An error means the stream cannot be followed
    // (a malformed message): the owner should drop the transport and reconnect.
    Status on_bytes(const uint8_t* data, size_t len);
    // The transport has room again.
    void on_writable();
    // Source: ready for local connections (V1 at once; V2 and V3 once SERVICE_IDS came).
    bool ready() const;
    // Source: carry a socket accepted on services[index]'s port as a new stream (V1, V2: closes
    // the one it had) or a new connection of the service's stream (V3). Errors name the reason
    // (not ready, the tunnel has no such service, too many connections): the socket is closed.
    Status accept_local(size_t index, Fd fd);
    // The transport is gone: every local connection is closed, nothing is sent.
    void stop();

    struct Stats {
        uint64_t bytes_to_local = 0, bytes_from_local = 0;
        uint64_t connections_opened = 0, connections_refused = 0, messages_dropped = 0;
    };
    const Stats& stats() const { return stats_; }
    size_t open_connections() const;
    // Bytes held for local sockets (tests check they stay bounded).
    size_t buffered_to_local() const;
    std::vector<std::string> received_service_ids() const { return service_ids_; }

private:
    struct Service;
    struct Connection {
        Service* service = nullptr;
        uint32_t id = 0;
        bool from_stream_start = false;
        std::unique_ptr<TcpConnector> connector;
        Fd fd;
        EventLoop::WatchId watch = 0;
        std::string out;  // bytes for the local socket
        size_t out_pos = 0;
        bool congested = false;
        bool draining = false;  // reset by the peer: flush, then close
        EventLoop::TimerId drain_timer = 0;
        size_t pending() const { return out.size() - out_pos; }
    };
    struct Service {
        ServiceEndpoint endpoint;
        int32_t stream_id = 0;        // 0: no active stream
        std::string peer_service_id;  // as the source names it (empty: V1-style stream)
        bool connection_ids = false;  // the stream's STREAM_START carried a connection id (V3 format)
        int32_t last_stream_id = 0;   // source: stream ids count up per service from 1
        uint32_t last_connection_id = 0;
        std::map<uint32_t, std::unique_ptr<Connection>> connections;
    };

    void handle(TunnelMessage& m);
    void on_stream_start(const TunnelMessage& m);
    void on_connection_start(const TunnelMessage& m);
    void on_data(const MessageView& m);
    void on_connection_reset(const TunnelMessage& m);
    void on_stream_reset(const TunnelMessage& m);
    void on_service_ids(const TunnelMessage& m);
    Service* find_service(std::string_view id);
    std::string wire_service_id(const Service& s) const;  // source: the id its streams carry
    // A new connection of s's stream, registered and counted; its socket comes later.
    Connection& add_connection(Service& s, uint32_t id, bool from_stream_start);
    void attach(Connection& c, Fd fd);
    void open_connection(Service& s, uint32_t id, bool from_stream_start);
    void on_connected(Connection& c, Result<Fd> fd);
    void on_local_event(Connection& c, short revents);
    bool flush_local(Connection& c);  // false: the socket failed
    bool read_local(Connection& c);   // false: c is gone
    void local_closed(Connection& c, const std::string& why);
    void close_stream(Service& s, bool flush);
    void drain_or_close(std::unique_ptr<Connection> c);
    void destroy(Connection& c);
    void update_local_events(Connection& c);
    void update_congestion(Connection& c);
    void send_reset(Service& s, MessageType type, uint32_t connection_id);
    void queue_control(const TunnelMessage& m);
    bool flush_control();
    uint32_t wire_connection_id(const Service& s, uint32_t id) const { return s.connection_ids ? id : 0; }

    EventLoop& loop_;
    Transport& transport_;
    SessionOptions options_;
    ProtocolVersion version_ = ProtocolVersion::V3;
    std::vector<std::unique_ptr<Service>> services_;
    std::vector<std::string> service_ids_;
    bool have_service_ids_ = false;
    MessageReader reader_;
    std::string control_;  // control messages waiting for room in the transport (small)
    std::vector<std::unique_ptr<Connection>> draining_;
    size_t congested_ = 0;       // connections over their buffer: the transport is paused while > 0
    bool local_paused_ = false;  // the transport is full: local sockets are not read
    bool active_ = false;
    Stats stats_;
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace iot::tunnel
