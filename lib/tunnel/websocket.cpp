#include "tunnel/websocket.hpp"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/strings.hpp"
#include "base/time.hpp"
#include "log/log.hpp"
#include "tls/pki.hpp"

namespace iot::tunnel {
namespace {
const char* const kComp = "websocket";
constexpr size_t kMaxHttpHeader = 8192;
constexpr size_t kMaxRequest = 4096;  // the tunneling service's limit on the whole upgrade request
// Received bytes are read in at least this much room (a TLS record's plaintext); a partial frame
// is moved to the buffer's start only when less is left.
constexpr size_t kMinReadRoom = 16384;
// OpenSSL reads ahead this much from the socket in one read(): several TLS records.
constexpr int kTlsReadBuffer = 64 * 1024;
enum Opcode : uint8_t { kCont = 0x0, kText = 0x1, kBinary = 0x2, kClose = 0x8, kPing = 0x9, kPong = 0xA };

std::string base64(const unsigned char* data, size_t len) {
    std::string out(4 * ((len + 2) / 3) + 1, '\0');
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, static_cast<int>(len));
    out.resize(static_cast<size_t>(n));
    return out;
}

bool is_ip_literal(const std::string& host) {
    unsigned char buf[16];
    return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// Frame header (with the masking key) for a payload of `len` bytes.
size_t frame_header_size(size_t len) {
    return (len < 126 ? 2 : len <= 0xFFFF ? 4 : 10) + 4;
}

size_t write_frame_header(uint8_t* p, uint8_t opcode, size_t len, const uint8_t key[4]) {
    size_t h = 0;
    p[h++] = static_cast<uint8_t>(0x80 | opcode);
    if (len < 126) {
        p[h++] = static_cast<uint8_t>(0x80 | len);
    } else if (len <= 0xFFFF) {
        p[h++] = 0x80 | 126;
        p[h++] = static_cast<uint8_t>(len >> 8);
        p[h++] = static_cast<uint8_t>(len);
    } else {
        p[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; --i) p[h++] = static_cast<uint8_t>(uint64_t(len) >> (8 * i));
    }
    memcpy(p + h, key, 4);
    return h + 4;
}

// XOR `len` bytes from `src` into `dst` (the same place or apart) with the 4-byte mask, a word at a time.
void mask_copy(uint8_t* dst, const uint8_t* src, size_t len, const uint8_t key[4]) {
    uint64_t k;
    uint8_t k8[8] = {key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]};
    memcpy(&k, k8, 8);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, src + i, 8);
        w ^= k;
        memcpy(dst + i, &w, 8);
    }
    for (; i < len; ++i) dst[i] = src[i] ^ key[i & 3];
}

struct HttpAnswer {
    int status = 0;
    std::string reason;
    std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
    const std::string* get(const char* name) const {
        for (auto& [n, v] : headers)
            if (n == name) return &v;
        return nullptr;
    }
};

// Parses "HTTP/1.1 101 Switching Protocols\r\nname: value\r\n..." (the blank line excluded).
Result<HttpAnswer> parse_http_answer(std::string_view text) {
    HttpAnswer a;
    auto lines = split(text, '\n');
    if (lines.empty()) return Error("empty answer");
    std::string_view status = trim(lines[0]);
    if (!starts_with(status, "HTTP/1.")) return Error("not an HTTP answer");
    size_t sp = status.find(' ');
    if (sp == std::string_view::npos) return Error("malformed HTTP status line");
    std::string_view rest = status.substr(sp + 1);
    auto code = parse_int(rest.substr(0, 3));
    if (!code) return Error("malformed HTTP status line");
    a.status = static_cast<int>(*code);
    a.reason = std::string(trim(rest.size() > 3 ? rest.substr(3) : std::string_view()));
    for (size_t i = 1; i < lines.size(); ++i) {
        std::string_view line = trim(lines[i]);
        if (line.empty()) continue;
        size_t colon = line.find(':');
        if (colon == std::string_view::npos) continue;
        a.headers.emplace_back(to_lower(trim(line.substr(0, colon))), std::string(trim(line.substr(colon + 1))));
    }
    return a;
}

std::string explain_status(int status) {
    switch (status) {
        case 400:
            return "the service refused the request (path, mode or subprotocol)";
        case 401:
        case 403:
            return "the service refused the access token (expired or closed tunnel, wrong mode or region, or a "
                   "token already used without a client token)";
        case 404:
            return "not found (check the tunneling endpoint and region)";
        case 408:
            return "the service timed out the request";
        case 429:
            return "too many requests";
        default:
            if (status >= 500) return "service error";
            return "upgrade refused";
    }
}

bool header_has_token(const std::string& value, const char* token) {
    for (auto& part : split(value, ','))
        if (iequals(trim(part), token)) return true;
    return false;
}
}  // namespace

std::string WebSocket::accept_for(const std::string& key) {
    std::string text = key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
    return base64(digest, sizeof digest);
}

uint8_t* SendRing::reserve(size_t n) {
    if (!wrap_) {
        if (head_ == tail_) head_ = tail_ = 0;
        if (cap_ - tail_ >= n) return buf_.get() + tail_;
        if (head_ >= n) {  // start again at the bottom; the top's rest stays unused
            wrap_ = tail_;
            tail_ = 0;
            return buf_.get();
        }
    } else if (head_ - tail_ >= n) {
        return buf_.get() + tail_;
    }
    // No room in one piece: a bigger ring, what is queued moved to its start (OpenSSL is told that a
    // write it must retry may come from another place: SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER).
    size_t used = size();
    size_t cap = std::max({min_capacity, cap_ + cap_ / 2, used + n});
    std::unique_ptr<uint8_t[]> buf(new uint8_t[cap]);
    size_t at = 0;
    if (wrap_) {
        memcpy(buf.get(), buf_.get() + head_, wrap_ - head_);
        at = wrap_ - head_;
        memcpy(buf.get() + at, buf_.get(), tail_);
        at += tail_;
    } else if (used) {
        memcpy(buf.get(), buf_.get() + head_, used);
        at = used;
    }
    buf_ = std::move(buf);
    cap_ = cap;
    head_ = wrap_ = 0;
    tail_ = at;
    return buf_.get() + tail_;
}

void SendRing::append(const void* data, size_t n) {
    memcpy(reserve(n), data, n);
    commit(n);
}

const uint8_t* SendRing::front(size_t& len) const {
    len = (wrap_ ? wrap_ : tail_) - head_;
    return buf_.get() + head_;
}

void SendRing::consume(size_t n) {
    head_ += n;
    if (wrap_ && head_ == wrap_) head_ = wrap_ = 0;
    if (!wrap_ && head_ == tail_) head_ = tail_ = 0;
}

WebSocket::WebSocket(EventLoop& loop, WebSocketOptions options, Handlers handlers)
    : loop_(loop), options_(std::move(options)), handlers_(std::move(handlers)) {}

WebSocket::~WebSocket() {
    *alive_ = false;
    teardown();
}

Status WebSocket::connect() {
    if (state_ == State::Connecting || state_ == State::Open || state_ == State::Closing)
        return Error("the WebSocket is already connected");
    tls::init();
    tls::ClientOptions tls_options;
    tls_options.host = options_.host;
    tls_options.ca_file = options_.ca_file;
    auto ctx = tls::make_client_context(tls_options);
    if (!ctx) return ctx.err();
    ctx_ = ctx.take();

    unsigned char nonce[16];
    RAND_bytes(nonce, sizeof nonce);
    key_ = base64(nonce, sizeof nonce);
    std::string request = format(
        "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
        "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n",
        options_.path.c_str(), options_.host.c_str(), key_.c_str());
    if (!options_.protocols.empty()) request += "Sec-WebSocket-Protocol: " + join(options_.protocols, ", ") + "\r\n";
    for (auto& [name, value] : options_.headers) request += name + ": " + value + "\r\n";
    request += "User-Agent: " + options_.user_agent + "\r\n\r\n";
    if (request.size() > kMaxRequest)
        return Error(format("the upgrade request is %zu bytes, more than the service accepts (%zu)", request.size(),
                            kMaxRequest));

    in_.assign(std::max(options_.max_frame + 14, kMaxHttpHeader), 0);
    in_start_ = in_len_ = 0;
    out_.clear();
    out_.min_capacity = options_.send_buffer + 2 * 65536;
    reserved_ = nullptr;
    close_sent_ = close_received_ = in_message_ = false;
    close_reason_.clear();
    write_wants_read_ = read_wants_write_ = false;
    peer_close_code_ = 0;
    protocol_.clear();
    channel_id_.clear();
    state_ = State::Connecting;

    bool proxy = !options_.proxy_host.empty();
    if (proxy) {
        std::string target = format("%s:%d", options_.host.c_str(), options_.port);
        std::string connect = format("CONNECT %s HTTP/1.1\r\nHost: %s\r\n", target.c_str(), target.c_str());
        if (!options_.proxy_user.empty()) {
            std::string cred = options_.proxy_user + ":" + options_.proxy_password;
            connect += "Proxy-Authorization: Basic " +
                       base64(reinterpret_cast<const unsigned char*>(cred.data()), cred.size()) + "\r\n";
        }
        connect += "\r\n";
        out_.append(connect.data(), connect.size());
        phase_ = Phase::ProxyConnect;
    } else {
        phase_ = Phase::Tcp;
    }
    // The upgrade request goes out once TLS is up.
    upgrade_request_ = std::move(request);

    connect_timer_ = loop_.add_timer(options_.connect_timeout_ms, [this] {
        connect_timer_ = 0;
        fail(format("no WebSocket connection to %s:%d within %lld s", options_.host.c_str(), options_.port,
                    static_cast<long long>(options_.connect_timeout_ms / 1000)));
    });
    connector_ = std::make_unique<TcpConnector>(
        loop_, proxy ? options_.proxy_host : options_.host, proxy ? options_.proxy_port : options_.port,
        options_.connect_timeout_ms, [this](Result<Fd> fd) { on_tcp(std::move(fd)); });
    connector_->start();
    return {};
}

void WebSocket::on_tcp(Result<Fd> fd) {
    connector_.reset();  // safe: the connector calls us last, touching nothing after
    if (!fd) {
        fail(options_.proxy_host.empty() ? fd.error() : "HTTP proxy: " + fd.error());
        return;
    }
    fd_ = fd.take();
    watch_ = loop_.watch(fd_.get(), POLLIN, [this](short ev) { on_socket(ev); });
    if (phase_ == Phase::Tcp) begin_tls();
    drive();
}

void WebSocket::begin_tls() {
    phase_ = Phase::Tls;
    tls::clear_verify_error(ctx_.get());
    ssl_.reset(SSL_new(ctx_.get()));
    if (!ssl_) {
        fail("cannot create a TLS session: " + tls::openssl_errors(), false);
        return;
    }
    SSL_set_fd(ssl_.get(), fd_.get());
    SSL_set_mode(ssl_.get(), SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    // Read what the socket has, several records per read() (the data kept inside OpenSSL is read
    // out before the loop waits again: do_read() reads until WANT_READ or pauses, and a resume
    // drives it from a timer).
    SSL_set_read_ahead(ssl_.get(), 1);
    SSL_set_default_read_buffer_len(ssl_.get(), kTlsReadBuffer);
    if (!is_ip_literal(options_.host)) SSL_set_tlsext_host_name(ssl_.get(), options_.host.c_str());
    SSL_set_connect_state(ssl_.get());
}

void WebSocket::on_socket(short) {
    drive();
}

// One pass over whatever the socket allows: handshake, writes, reads (and the frames they hold).
void WebSocket::drive() {
    auto alive = alive_;
    if (!fd_.valid()) return;
    if (phase_ == Phase::Tls && !do_handshake()) return;
    if (!do_write()) return;
    if (!do_read() || !*alive) return;
    if (!fd_.valid()) return;
    // Frames handled above may have queued answers (pong, close).
    if (!do_write()) return;
    update_events();
    if (was_full_ && state_ == State::Open && buffered() <= options_.send_buffer / 2) {
        was_full_ = false;
        if (handlers_.on_writable) handlers_.on_writable();
    }
}

bool WebSocket::do_handshake() {
    ERR_clear_error();
    int rc = SSL_do_handshake(ssl_.get());
    if (rc == 1) {
        LOG_DEBUG(kComp, "TLS up with %s (%s)", options_.host.c_str(), SSL_get_version(ssl_.get()));
        phase_ = Phase::Upgrade;
        out_.clear();
        out_.append(upgrade_request_.data(), upgrade_request_.size());
        upgrade_request_.clear();
        return true;
    }
    int err = SSL_get_error(ssl_.get(), rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        handshake_wants_write_ = err == SSL_ERROR_WANT_WRITE;
        update_events();
        return false;
    }
    std::string where = format("%s:%d", options_.host.c_str(), options_.port);
    long verify = tls::last_verify_error(ctx_.get());
    if (verify != 0) {
        fail(format("TLS with %s: %s", where.c_str(),
                    tls::explain_verify_error(verify, options_.host, options_.ca_file).c_str()));
    } else {
        std::string why = tls::openssl_errors();
        if (err == SSL_ERROR_SYSCALL) why = errno ? errno_text(errno) : "the server closed the connection";
        fail(format("TLS handshake with %s failed: %s", where.c_str(), why.c_str()));
    }
    return false;
}

bool WebSocket::do_write() {
    write_wants_read_ = false;
    for (;;) {
        size_t left;
        const uint8_t* data = out_.front(left);
        if (!left) break;
        ssize_t n;
        if (ssl_) {
            ERR_clear_error();
            int rc = SSL_write(ssl_.get(), data, static_cast<int>(std::min<size_t>(left, 1 << 20)));
            if (rc <= 0) {
                int err = SSL_get_error(ssl_.get(), rc);
                if (err == SSL_ERROR_WANT_WRITE) break;
                if (err == SSL_ERROR_WANT_READ) {
                    write_wants_read_ = true;
                    break;
                }
                fail(format(
                    "connection to %s lost while sending: %s", options_.host.c_str(),
                    err == SSL_ERROR_SYSCALL && errno ? errno_text(errno).c_str() : tls::openssl_errors().c_str()));
                return false;
            }
            n = rc;
        } else {
            n = ::send(fd_.get(), data, left, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
                fail(format("HTTP proxy %s: %s", options_.proxy_host.c_str(), errno_text(errno).c_str()));
                return false;
            }
        }
        out_.consume(static_cast<size_t>(n));
    }
    return true;
}

bool WebSocket::do_read() {
    auto alive = alive_;
    read_wants_write_ = false;
    // Frames already buffered first: reading may have been paused with some left over.
    if (phase_ == Phase::Frames && in_len_ > in_start_ && !parse_frames()) return false;
    if (!*alive || !fd_.valid()) return false;
    for (;;) {
        if (phase_ == Phase::Frames && paused_ && state_ == State::Open) break;
        if (phase_ == Phase::Tls) break;
        size_t room = in_.size() - in_len_;
        if (room == 0) break;  // parse_frames makes room or fails before this can happen
        ssize_t n;
        if (ssl_) {
            ERR_clear_error();
            int rc = SSL_read(ssl_.get(), in_.data() + in_len_, static_cast<int>(room));
            if (rc <= 0) {
                int err = SSL_get_error(ssl_.get(), rc);
                if (err == SSL_ERROR_WANT_READ) break;
                if (err == SSL_ERROR_WANT_WRITE) {
                    read_wants_write_ = true;
                    break;
                }
                bool eof = err == SSL_ERROR_ZERO_RETURN || (err == SSL_ERROR_SYSCALL && errno == 0) ||
                           ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
                std::string why = eof ? std::string("closed by the server")
                                      : (err == SSL_ERROR_SYSCALL ? errno_text(errno) : tls::openssl_errors());
                if (eof && close_sent_ && close_received_) {
                    WebSocketClosed c;
                    c.opened = true;
                    c.close_code = peer_close_code_;
                    c.retry = !close_reason_.empty();  // the server's idea: the owner may reconnect
                    c.reason = close_reason_.empty() ? "closed" : close_reason_;
                    finish(std::move(c));
                    return false;
                }
                if (phase_ == Phase::Upgrade)
                    fail(format("%s:%d closed the connection during the WebSocket upgrade (%s)", options_.host.c_str(),
                                options_.port, why.c_str()));
                else
                    fail(format("connection to %s lost: %s", options_.host.c_str(), why.c_str()));
                return false;
            }
            n = rc;
        } else {
            n = ::recv(fd_.get(), in_.data() + in_len_, room, 0);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) break;
            if (n <= 0) {
                fail(format("HTTP proxy %s closed the connection: %s", options_.proxy_host.c_str(),
                            n == 0 ? "end of stream" : errno_text(errno).c_str()));
                return false;
            }
        }
        in_len_ += static_cast<size_t>(n);
        bool ok = phase_ == Phase::Frames ? parse_frames() : parse_upgrade();
        if (!ok || !*alive || !fd_.valid()) return false;
    }
    return true;
}

// The HTTP answer of the proxy (CONNECT) or of the service (upgrade).
bool WebSocket::parse_upgrade() {
    std::string_view text(reinterpret_cast<const char*>(in_.data()), in_len_);
    size_t end = text.find("\r\n\r\n");
    if (end == std::string_view::npos) {
        if (in_len_ > kMaxHttpHeader) {
            fail(format("%s sent an HTTP answer header over %zu bytes", options_.host.c_str(), kMaxHttpHeader), true);
            return false;
        }
        return true;
    }
    auto answer = parse_http_answer(text.substr(0, end));
    size_t used = end + 4;
    if (!answer) {
        fail(format("%s: %s", phase_ == Phase::ProxyConnect ? "HTTP proxy" : options_.host.c_str(),
                    answer.error().c_str()));
        return false;
    }
    if (phase_ == Phase::ProxyConnect) {
        if (answer->status / 100 != 2) {
            bool auth = answer->status == 407;
            fail(format("HTTP proxy %s:%d refused CONNECT: %d %s%s", options_.proxy_host.c_str(), options_.proxy_port,
                        answer->status, answer->reason.c_str(),
                        auth ? " (check http-proxy-username and http-proxy-password)" : ""),
                 !auth && answer->status >= 500, answer->status);
            return false;
        }
        LOG_DEBUG(kComp, "HTTP proxy %s:%d connected us to %s:%d", options_.proxy_host.c_str(), options_.proxy_port,
                  options_.host.c_str(), options_.port);
        in_len_ = 0;  // nothing may follow before our ClientHello
        begin_tls();
        return do_handshake() || fd_.valid();
    }
    if (const std::string* id = answer->get("channel-id")) channel_id_ = *id;
    if (answer->status != 101) {
        int s = answer->status;
        bool retry = s >= 500 || s == 408 || s == 429;
        fail(format("%s:%d answered the WebSocket upgrade with %d %s: %s%s%s", options_.host.c_str(), options_.port, s,
                    answer->reason.c_str(), explain_status(s).c_str(), channel_id_.empty() ? "" : ", channel-id ",
                    channel_id_.c_str()),
             retry, s);
        return false;
    }
    const std::string* upgrade = answer->get("upgrade");
    const std::string* connection = answer->get("connection");
    const std::string* accept = answer->get("sec-websocket-accept");
    const std::string* protocol = answer->get("sec-websocket-protocol");
    std::string problem;
    if (!upgrade || !iequals(*upgrade, "websocket"))
        problem = "no 'Upgrade: websocket' header";
    else if (!connection || !header_has_token(*connection, "upgrade"))
        problem = "no 'Connection: upgrade' header";
    else if (!accept || *accept != accept_for(key_))
        problem = "wrong Sec-WebSocket-Accept";
    else if (!options_.protocols.empty() && !protocol)
        problem = "no subprotocol chosen (Sec-WebSocket-Protocol missing)";
    else if (protocol &&
             std::find(options_.protocols.begin(), options_.protocols.end(), *protocol) == options_.protocols.end())
        problem = format("subprotocol '%s' was not offered", protocol->c_str());
    if (!problem.empty()) {
        fail(format("%s:%d: bad WebSocket upgrade answer: %s", options_.host.c_str(), options_.port, problem.c_str()));
        return false;
    }
    protocol_ = protocol ? *protocol : std::string();
    memmove(in_.data(), in_.data() + used, in_len_ - used);
    in_len_ -= used;
    phase_ = Phase::Frames;
    state_ = State::Open;
    loop_.cancel_timer(connect_timer_);
    connect_timer_ = 0;
    LOG_INFO(kComp, "connected to %s:%d, subprotocol %s, channel-id %s", options_.host.c_str(), options_.port,
             protocol_.empty() ? "(none)" : protocol_.c_str(), channel_id_.empty() ? "(none)" : channel_id_.c_str());
    if (options_.ping_interval_ms > 0)
        ping_timer_ = loop_.add_timer(
            options_.ping_interval_ms, [this] { send_ping(); }, options_.ping_interval_ms);
    auto alive = alive_;
    if (handlers_.on_open) handlers_.on_open(protocol_);
    if (!*alive || state_ != State::Open) return false;
    return in_len_ == 0 || parse_frames();
}

bool WebSocket::parse_frames() {
    auto alive = alive_;
    size_t pos = in_start_;
    size_t partial = 14;  // what the frame at pos needs in all (at most a header until it is known)
    bool ok = true;
    while (in_len_ - pos >= 2 && !(paused_ && state_ == State::Open)) {
        const uint8_t* p = in_.data() + pos;
        size_t avail = in_len_ - pos;
        bool fin = p[0] & 0x80;
        uint8_t opcode = p[0] & 0x0F;
        bool masked = p[1] & 0x80;
        uint64_t len = p[1] & 0x7F;
        size_t header = 2;
        if (len == 126) {
            if (avail < 4) break;
            len = (uint64_t(p[2]) << 8) | p[3];
            header = 4;
        } else if (len == 127) {
            if (avail < 10) break;
            len = 0;
            for (int i = 0; i < 8; ++i) len = (len << 8) | p[2 + i];
            header = 10;
        }
        if (p[0] & 0x70) {
            protocol_error(1002, "the server set reserved bits (no extension was negotiated)");
            return false;
        }
        if (masked) {
            protocol_error(1002, "the server sent a masked frame");
            return false;
        }
        if (len > options_.max_frame) {
            protocol_error(1009, format("the server sent a %llu-byte frame, more than %zu",
                                        static_cast<unsigned long long>(len), options_.max_frame));
            return false;
        }
        if (avail < header + len) {
            partial = header + static_cast<size_t>(len);
            break;
        }
        ok = handle_frame(opcode, fin, p + header, static_cast<size_t>(len));
        if (!*alive) return false;
        if (!ok || !fd_.valid()) return false;
        pos += header + static_cast<size_t>(len);
    }
    in_start_ = pos;
    if (in_start_ == in_len_) {
        in_start_ = in_len_ = 0;
    } else if (in_start_ && (in_start_ + partial > in_.size() || in_.size() - in_len_ < kMinReadRoom)) {
        // The rest cannot complete where it is, or little room is left to read into.
        memmove(in_.data(), in_.data() + in_start_, in_len_ - in_start_);
        in_len_ -= in_start_;
        in_start_ = 0;
    }
    return true;
}

bool WebSocket::handle_frame(uint8_t opcode, bool fin, const uint8_t* payload, size_t len) {
    switch (opcode) {
        case kText:
            protocol_error(1003, "the server sent a text frame (the tunnel protocol is binary only)");
            return false;
        case kBinary:
        case kCont:
            if (opcode == kBinary && in_message_) {
                protocol_error(1002, "the server started a new message inside a fragmented one");
                return false;
            }
            if (opcode == kCont && !in_message_) {
                protocol_error(1002, "the server sent a continuation frame outside a message");
                return false;
            }
            in_message_ = !fin;
            if (state_ == State::Open && len && handlers_.on_data) handlers_.on_data(payload, len);
            return true;
        case kPing:
        case kPong:
        case kClose:
            if (!fin || len > 125) {
                protocol_error(1002, "the server sent a fragmented or oversized control frame");
                return false;
            }
            break;
        default:
            protocol_error(1002, format("the server sent an unknown opcode %u", opcode));
            return false;
    }
    if (opcode == kPing) {
        // Answer every ping, but never let a ping flood grow the buffer.
        if (!close_sent_ && buffered() < options_.send_buffer + 65536) queue_frame(kPong, payload, len);
        return true;
    }
    if (opcode == kPong) {
        if (len == 8) {
            uint64_t sent = 0;
            for (size_t i = 0; i < 8; ++i) sent = (sent << 8) | payload[i];
            LOG_DEBUG(kComp, "pong after %lld ms", static_cast<long long>(monotonic_ms() - static_cast<int64_t>(sent)));
        }
        return true;
    }
    // Close.
    close_received_ = true;
    peer_close_code_ = len >= 2 ? (payload[0] << 8) | payload[1] : 1005;
    std::string why(reinterpret_cast<const char*>(payload) + (len >= 2 ? 2 : 0), len >= 2 ? len - 2 : 0);
    if (!close_sent_) {
        LOG_INFO(kComp, "the server closed the WebSocket (code %d%s%s)", peer_close_code_, why.empty() ? "" : ": ",
                 why.c_str());
        uint8_t echo[2] = {uint8_t(peer_close_code_ >> 8), uint8_t(peer_close_code_ & 0xFF)};
        queue_frame(kClose, echo, peer_close_code_ == 1005 ? 0 : 2);
        close_sent_ = true;
        state_ = State::Closing;
        close_reason_ = format("the server closed the WebSocket (code %d%s%s)", peer_close_code_,
                               why.empty() ? "" : ": ", why.c_str());
        loop_.cancel_timer(ping_timer_);
        ping_timer_ = 0;
        if (!close_timer_) close_timer_ = loop_.add_timer(options_.close_timeout_ms, [this] { close_timed_out(); });
    }
    // Both close frames exchanged: the server closes TCP next; the close timer covers one that does not.
    return true;
}

void WebSocket::close_timed_out() {
    close_timer_ = 0;
    WebSocketClosed c;
    c.opened = true;
    c.close_code = peer_close_code_;
    c.retry = !close_reason_.empty();
    c.reason = close_reason_.empty() ? "closed (the server did not complete the close handshake)" : close_reason_;
    finish(std::move(c));
}

void WebSocket::next_mask(uint8_t key[4]) {
    // Each key is 4 fresh random bytes (RFC 6455 5.3), drawn 64 at a time: RAND_bytes checks the
    // pid (a getpid() call) every time it runs.
    if (masks_used_ + 4 > sizeof masks_) {
        RAND_bytes(masks_, sizeof masks_);
        masks_used_ = 0;
    }
    memcpy(key, masks_ + masks_used_, 4);
    masks_used_ += 4;
}

void WebSocket::queue_frame(uint8_t opcode, const uint8_t* data, size_t len) {
    reserved_ = nullptr;  // a frame reserved and not committed yet is given up
    uint8_t key[4];
    next_mask(key);
    size_t h = frame_header_size(len);
    uint8_t* p = out_.reserve(h + len);
    write_frame_header(p, opcode, len, key);
    if (len) mask_copy(p + h, data, len, key);
    out_.commit(h + len);
}

uint8_t* WebSocket::reserve_frame(size_t max) {
    reserved_ = nullptr;
    if (state_ != State::Open || close_sent_ || max > options_.max_frame || !writable(max)) return nullptr;
    reserved_header_ = frame_header_size(max);
    reserved_max_ = max;
    reserved_ = out_.reserve(reserved_header_ + max);
    return reserved_ + reserved_header_;
}

Status WebSocket::commit_frame(const uint8_t* payload, size_t len) {
    uint8_t* base = reserved_;
    reserved_ = nullptr;
    if (!base) return Error("no frame reserved (or the WebSocket queued something since)");
    if (state_ != State::Open || close_sent_) return Error("the WebSocket is not open");
    const uint8_t* room = base + reserved_header_;
    if (payload < room || len > reserved_max_ || payload - room > static_cast<ptrdiff_t>(reserved_max_ - len))
        return Error("the frame is not inside the reserved room");
    uint8_t key[4];
    next_mask(key);
    size_t h = frame_header_size(len);
    if (payload != base + h) memmove(base + h, payload, len);  // down: h <= reserved_header_
    write_frame_header(base, kBinary, len, key);
    mask_copy(base + h, base + h, len, key);
    out_.commit(h + len);
    update_events();
    return {};
}

bool WebSocket::writable(size_t len) const {
    bool ok = state_ == State::Open && !close_sent_ && buffered() + len + 14 <= options_.send_buffer;
    if (!ok && state_ == State::Open) was_full_ = true;
    return ok;
}

Status WebSocket::send(const uint8_t* data, size_t len) {
    if (state_ != State::Open || close_sent_) return Error("the WebSocket is not open");
    if (len > options_.max_frame)
        return Error(format("a %zu-byte frame is over the %zu-byte limit", len, options_.max_frame));
    if (!writable(len)) return Error("the WebSocket send buffer is full");
    queue_frame(kBinary, data, len);
    update_events();
    return {};
}

void WebSocket::send_ping() {
    if (state_ != State::Open || close_sent_ || buffered() > options_.send_buffer) return;
    uint64_t now = static_cast<uint64_t>(monotonic_ms());
    uint8_t payload[8];
    for (int i = 0; i < 8; ++i) payload[i] = static_cast<uint8_t>(now >> (8 * (7 - i)));
    queue_frame(kPing, payload, sizeof payload);
    update_events();
}

void WebSocket::pause_reading(bool paused) {
    if (paused_ == paused) return;
    paused_ = paused;
    if (!fd_.valid()) return;
    update_events();
    // Frames already read (or held inside the TLS layer) produce no POLLIN: process them from the loop.
    if (!paused && !resume_timer_)
        resume_timer_ = loop_.add_timer(0, [this] {
            resume_timer_ = 0;
            drive();
        });
}

void WebSocket::close(uint16_t code, const std::string& reason) {
    if (state_ != State::Open) {
        abort();
        return;
    }
    std::string payload;
    payload += static_cast<char>(code >> 8);
    payload += static_cast<char>(code & 0xFF);
    payload += reason.substr(0, 123);
    queue_frame(kClose, reinterpret_cast<const uint8_t*>(payload.data()), payload.size());
    close_sent_ = true;
    state_ = State::Closing;
    loop_.cancel_timer(ping_timer_);
    ping_timer_ = 0;
    close_timer_ = loop_.add_timer(options_.close_timeout_ms, [this] { close_timed_out(); });
    update_events();
}

void WebSocket::abort() {
    teardown();
    state_ = State::Closed;
}

void WebSocket::protocol_error(uint16_t code, const std::string& reason) {
    if (!close_sent_) {
        uint8_t c[2] = {uint8_t(code >> 8), uint8_t(code & 0xFF)};
        queue_frame(kClose, c, 2);
        close_sent_ = true;
        if (ssl_ && phase_ == Phase::Frames) {  // one attempt, errors ignored: the peer may learn why
            for (int piece = 0; piece < 2; ++piece) {
                size_t left;
                const uint8_t* data = out_.front(left);
                ERR_clear_error();
                int rc = left ? SSL_write(ssl_.get(), data, static_cast<int>(left)) : 0;
                ERR_clear_error();
                if (rc <= 0 || static_cast<size_t>(rc) != left) break;
                out_.consume(left);
            }
        }
    }
    if (fd_.valid()) fail(format("WebSocket to %s: %s", options_.host.c_str(), reason.c_str()));
}

void WebSocket::update_events() {
    if (!watch_) return;
    short events = 0;
    if (phase_ == Phase::Tls) {
        events = static_cast<short>(POLLIN | (handshake_wants_write_ ? POLLOUT : 0));
    } else {
        if (!(paused_ && state_ == State::Open && phase_ == Phase::Frames) || write_wants_read_) events |= POLLIN;
        if ((buffered() && !write_wants_read_) || read_wants_write_) events |= POLLOUT;
    }
    loop_.set_events(watch_, events);
}

void WebSocket::fail(std::string reason, bool retry, int http_status) {
    WebSocketClosed c;
    c.opened = state_ == State::Open || state_ == State::Closing;
    c.http_status = http_status;
    c.retry = retry;
    c.reason = std::move(reason);
    c.close_code = close_received_ ? peer_close_code_ : 0;
    finish(std::move(c));
}

void WebSocket::finish(WebSocketClosed closed) {
    if (state_ == State::Closed || state_ == State::Idle) return;
    teardown();
    state_ = State::Closed;
    closed.channel_id = channel_id_;
    LOG_DEBUG(kComp, "closed: %s", closed.reason.c_str());
    if (handlers_.on_closed) {
        auto cb = handlers_.on_closed;  // the handler may destroy this WebSocket
        cb(closed);
    }
}

void WebSocket::teardown() {
    if (watch_) loop_.unwatch(watch_);
    watch_ = 0;
    for (auto* t : {&connect_timer_, &ping_timer_, &close_timer_, &resume_timer_}) {
        loop_.cancel_timer(*t);
        *t = 0;
    }
    connector_.reset();
    if (ssl_ && close_sent_ && close_received_) SSL_shutdown(ssl_.get());
    ssl_.reset();
    fd_.reset();
    out_.clear();
    reserved_ = nullptr;
    in_start_ = in_len_ = 0;
    paused_ = false;
    was_full_ = false;
}

}  // namespace iot::tunnel
