// An RFC 6455 WebSocket client over TLS, driven by the EventLoop: non-blocking TCP connect, TLS 1.2+
// with the peer and host name verified (tls::make_client_context), the HTTP upgrade the tunneling
// service wants (path, access-token and client-token headers, subprotocols offered and the chosen
// one required), masked binary frames, fragments, ping/pong, the close handshake.
//
// Memory is bounded: one received frame at a time (at most max_frame bytes of payload, larger is an
// error) and a send buffer the user keeps within its limit: send() refuses what would overflow it,
// writable() says whether there is room, and on_writable runs when a full buffer has drained. The
// user can pause reading (back-pressure towards the peer: TCP fills up, the server slows down).
#pragma once
#include <openssl/ssl.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "base/fd.hpp"
#include "base/result.hpp"
#include "loop/loop.hpp"
#include "tls/context.hpp"
#include "tunnel/net.hpp"

namespace iot::tunnel {

struct WebSocketOptions {
    std::string host;
    int port = 443;
    std::string path = "/";
    std::string ca_file;                 // empty: the system trust store
    std::vector<std::string> protocols;  // Sec-WebSocket-Protocol offers; one must be chosen if any
    // Extra request headers (access-token, client-token). Values are never logged.
    std::vector<std::pair<std::string, std::string>> headers;
    std::string user_agent = "iotbox";
    int64_t connect_timeout_ms = 30000;  // TCP + TLS + upgrade
    int64_t ping_interval_ms = 20000;    // the service's load balancer drops idle sockets after ~60 s
    int64_t close_timeout_ms = 3000;     // how long to wait for the peer's close frame and TCP close
    size_t max_frame = 131076;           // received payload limit; sent frames never exceed it either
    size_t send_buffer = 256 * 1024;     // bytes queued for the socket, frame headers included
    // HTTP CONNECT proxy (empty host: direct). Credentials, if any, go as Basic auth.
    std::string proxy_host;
    int proxy_port = 0;
    std::string proxy_user, proxy_password;
};

// Why the connection ended (or never opened).
struct WebSocketClosed {
    bool opened = false;     // the upgrade had succeeded
    int http_status = 0;     // non-101 upgrade answer, 0 if none came
    int close_code = 0;      // the peer's close code (1005 none given), 0 if no close frame
    bool retry = true;       // worth reconnecting (network trouble, 5xx); false for 4xx and our own close
    std::string reason;      // a person's explanation
    std::string channel_id;  // the service's channel-id, for AWS support
};

// The bytes a WebSocket has queued for its socket: a ring in which every frame lies in one piece
// (one that does not fit at the top starts again at the bottom, the top's rest left unused), so
// frames are built where they will be sent from and nothing queued is ever moved. It grows, moving
// what it holds once, only when a frame finds no room (more than the send buffer queued: pongs, a
// close).
class SendRing {
public:
    size_t size() const { return wrap_ ? wrap_ - head_ + tail_ : tail_ - head_; }
    size_t capacity() const { return cap_; }
    // `n` contiguous bytes after the queued ones, not queued yet.
    uint8_t* reserve(size_t n);
    // The first `n` bytes of the last reservation join the queue.
    void commit(size_t n) { tail_ += n; }
    void append(const void* data, size_t n);
    // The first contiguous run of queued bytes, and `n` of it gone to the socket.
    const uint8_t* front(size_t& len) const;
    void consume(size_t n);
    void clear() { head_ = tail_ = wrap_ = 0; }
    size_t min_capacity = 0;  // the first allocation's size

private:
    std::unique_ptr<uint8_t[]> buf_;
    size_t cap_ = 0;
    // Queued: [head_, tail_), or when wrapped (wrap_ != 0) [head_, wrap_) then [0, tail_).
    size_t head_ = 0, tail_ = 0, wrap_ = 0;
};

class WebSocket {
public:
    struct Handlers {
        std::function<void(const std::string& protocol)> on_open;
        // Payload of each binary data frame (fragments as they come): a byte stream.
        std::function<void(const uint8_t* data, size_t len)> on_data;
        std::function<void()> on_writable;
        std::function<void(const WebSocketClosed&)> on_closed;
    };
    enum class State { Idle, Connecting, Open, Closing, Closed };

    WebSocket(EventLoop& loop, WebSocketOptions options, Handlers handlers);
    ~WebSocket();
    WebSocket(const WebSocket&) = delete;
    WebSocket& operator=(const WebSocket&) = delete;

    // Start connecting; the result comes through on_open or on_closed (never from inside connect()).
    Status connect();
    State state() const { return state_; }
    const std::string& protocol() const { return protocol_; }
    const std::string& channel_id() const { return channel_id_; }

    // Queue one binary frame (at most max_frame bytes). Refused, with nothing queued, when it would
    // take the send buffer past its limit or the socket is not open.
    Status send(const uint8_t* data, size_t len);
    // Room for a frame of `len` bytes now.
    bool writable(size_t len = 0) const;
    size_t buffered() const { return out_.size(); }

    // A binary frame built in place in the send buffer, so that its payload is never copied (e.g.
    // recv() straight into it): reserve_frame(max) returns where up to `max` payload bytes go, or
    // nullptr when send() would refuse a frame of `max` bytes now (not open, or no room: on_writable
    // follows as after writable() said no). commit_frame(payload, len) then masks the `len` bytes at
    // `payload`, which lie inside the reserved room (normally at its start), in place and queues them
    // as one frame; a payload that starts further in, or a frame short enough for a shorter header
    // (under 126 bytes when `max` was not), is moved down first (a copy of `len` bytes). Nothing may
    // be queued between the two calls: the WebSocket queuing anything itself (a pong, a close) or a
    // send() gives the reservation up, and commit_frame() then refuses.
    uint8_t* reserve_frame(size_t max);
    Status commit_frame(const uint8_t* payload, size_t len);

    // Stop or resume reading from the socket (and so delivering on_data).
    void pause_reading(bool paused);
    bool reading_paused() const { return paused_; }

    // Start the close handshake; on_closed follows once the peer answered or after close_timeout_ms.
    void close(uint16_t code = 1000, const std::string& reason = {});
    // Tear down at once without a close frame (no on_closed).
    void abort();

    // The RFC 6455 accept value for a key (exposed for tests).
    static std::string accept_for(const std::string& key);

private:
    struct SslFree {
        void operator()(SSL* p) const { SSL_free(p); }
    };
    enum class Phase { Tcp, ProxyConnect, Tls, Upgrade, Frames };

    void on_tcp(Result<Fd> fd);
    void begin_tls();
    void on_socket(short revents);
    void drive();
    bool do_handshake();
    bool do_proxy_answer();
    bool do_write();
    bool do_read();
    bool parse_upgrade();
    bool parse_frames();
    bool handle_frame(uint8_t opcode, bool fin, const uint8_t* payload, size_t len);
    void queue_frame(uint8_t opcode, const uint8_t* data, size_t len);
    void next_mask(uint8_t key[4]);
    void update_events();
    void fail(std::string reason, bool retry = true, int http_status = 0);
    void finish(WebSocketClosed closed);
    void teardown();
    void send_ping();
    void protocol_error(uint16_t code, const std::string& reason);
    void close_timed_out();

    EventLoop& loop_;
    WebSocketOptions options_;
    Handlers handlers_;
    State state_ = State::Idle;
    Phase phase_ = Phase::Tcp;
    std::unique_ptr<TcpConnector> connector_;
    Fd fd_;
    tls::Context ctx_;
    std::unique_ptr<SSL, SslFree> ssl_;
    EventLoop::WatchId watch_ = 0;
    EventLoop::TimerId connect_timer_ = 0, ping_timer_ = 0, close_timer_ = 0, resume_timer_ = 0;
    // Received bytes: [in_start_, in_len_) not parsed yet. A partial frame stays where it is until
    // the buffer's end is near (or it would not fit): then it is moved to the start.
    std::vector<uint8_t> in_;
    size_t in_start_ = 0, in_len_ = 0;
    SendRing out_;                 // queued frames
    uint8_t* reserved_ = nullptr;  // reserve_frame(): where the frame goes, nullptr when none
    size_t reserved_header_ = 0, reserved_max_ = 0;
    uint8_t masks_[256];  // masking keys from RAND_bytes, 64 frames' worth at a time
    size_t masks_used_ = sizeof masks_;
    bool paused_ = false, handshake_wants_write_ = false;
    mutable bool was_full_ = false;  // writable() said no: on_writable is owed
    bool write_wants_read_ = false, read_wants_write_ = false;
    bool in_message_ = false;  // a fragmented data message is in progress
    bool close_sent_ = false, close_received_ = false;
    int peer_close_code_ = 0;
    std::string key_, protocol_, channel_id_;
    std::string upgrade_request_;  // sent once TLS is up
    std::string close_reason_;     // set when the server started the close handshake
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace iot::tunnel
