// The tunnel's WebSocket client against a small TLS WebSocket server written here (blocking
// OpenSSL on a thread, one connection, a script per test): the upgrade and its checks, masking,
// fragments, ping/pong, the close handshake both ways, oversized and text frames, back-pressure.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "base/strings.hpp"
#include "base/time.hpp"
#include "fs/fs.hpp"
#include "loop/loop.hpp"
#include "support/tempdir.hpp"
#include "tls/pki.hpp"
#include "tunnel/websocket.hpp"

using namespace iot;
using namespace iot::tunnel;

namespace {

// A CA and a server certificate for "localhost", made once.
struct TestPki {
    testsupport::TempDir dir{"iot-ws"};
    std::string ca_file;
    tls::Key key;
    tls::Cert cert;
    TestPki() {
        auto ca_key = tls::generate_key(tls::KeyType::EcP256);
        auto ca = tls::make_ca(ca_key->get(), "ws test CA", 1);
        key = tls::generate_key(tls::KeyType::EcP256).take();
        tls::SignOptions opts;
        opts.days = 1;
        opts.dns_names = {"localhost"};
        cert = tls::sign_public_key(key.get(), "localhost", ca->get(), ca_key->get(), opts).take();
        ca_file = dir / "ca.pem";
        std::string pem = tls::certificate_pem(ca->get());
        FILE* f = fopen(ca_file.c_str(), "w");
        fwrite(pem.data(), 1, pem.size(), f);
        fclose(f);
    }
};
TestPki& pki() {
    static TestPki p;
    return p;
}

struct Frame {
    uint8_t opcode = 0;
    bool fin = false, masked = false;
    std::string payload;
};

class WsServer {
public:
    struct Options {
        int status = 101;
        const char* protocol = "aws.iot.securetunneling-3.0";  // nullptr: no header
        bool bad_accept = false;
        const char* channel_id = "chan-42";
    };
    using Script = std::function<void(WsServer&)>;

    WsServer(Options options, Script script) : options_(options), script_(std::move(script)) {
        listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a);
        listen(listener_, 4);
        socklen_t len = sizeof a;
        getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len);
        port = ntohs(a.sin_port);
        thread_ = std::thread([this] { serve(); });
    }
    ~WsServer() { join(); }
    void join() {
        if (thread_.joinable()) {
            ::shutdown(listener_, SHUT_RDWR);
            thread_.join();
        }
        if (ssl_) SSL_free(ssl_);
        ssl_ = nullptr;
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
        if (listener_ >= 0) ::close(listener_);
        listener_ = -1;
        if (ctx_) SSL_CTX_free(ctx_);
        ctx_ = nullptr;
    }

    int port = 0;
    std::string request;  // the upgrade request as received
    std::string failure;  // what went wrong on the server side (checked after join)
    std::atomic<bool> upgraded{false};

    // Script helpers (server thread).
    bool write_raw(const std::string& bytes) {
        size_t at = 0;
        while (at < bytes.size()) {
            int n = SSL_write(ssl_, bytes.data() + at, static_cast<int>(bytes.size() - at));
            if (n <= 0) return false;
            at += static_cast<size_t>(n);
        }
        return true;
    }
    static std::string frame(uint8_t byte0, const std::string& payload, uint64_t claimed = UINT64_MAX) {
        uint64_t len = claimed == UINT64_MAX ? payload.size() : claimed;
        std::string f(1, static_cast<char>(byte0));
        if (len < 126) {
            f += static_cast<char>(len);
        } else if (len <= 0xFFFF) {
            f += static_cast<char>(126);
            f += static_cast<char>(len >> 8);
            f += static_cast<char>(len & 0xFF);
        } else {
            f += static_cast<char>(127);
            for (int i = 7; i >= 0; --i) f += static_cast<char>((len >> (8 * i)) & 0xFF);
        }
        return f + payload;
    }
    bool send(uint8_t byte0, const std::string& payload) { return write_raw(frame(byte0, payload)); }
    bool read_exact(void* buf, size_t n) {
        auto* p = static_cast<char*>(buf);
        while (n) {
            int r = SSL_read(ssl_, p, static_cast<int>(n));
            if (r <= 0) return false;
            p += r;
            n -= static_cast<size_t>(r);
        }
        return true;
    }
    bool read_frame(Frame& f) {
        uint8_t h[2];
        if (!read_exact(h, 2)) return false;
        f.fin = h[0] & 0x80;
        f.opcode = h[0] & 0x0F;
        f.masked = h[1] & 0x80;
        uint64_t len = h[1] & 0x7F;
        if (len == 126) {
            uint8_t e[2];
            if (!read_exact(e, 2)) return false;
            len = (e[0] << 8) | e[1];
        } else if (len == 127) {
            uint8_t e[8];
            if (!read_exact(e, 8)) return false;
            len = 0;
            for (uint8_t b : e) len = (len << 8) | b;
        }
        uint8_t key[4] = {0, 0, 0, 0};
        if (f.masked && !read_exact(key, 4)) return false;
        f.payload.resize(len);
        if (len && !read_exact(f.payload.data(), len)) return false;
        for (size_t i = 0; i < len; ++i) f.payload[i] = static_cast<char>(f.payload[i] ^ key[i & 3]);
        return true;
    }
    // True when the client closed the connection (TLS close or TCP EOF) within the receive timeout.
    bool wait_eof() {
        char c;
        int r = SSL_read(ssl_, &c, 1);
        return r <= 0;
    }
    void close_tcp() { ::shutdown(fd_, SHUT_RDWR); }
    void fail(const std::string& what) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (failure.empty()) failure = what;
    }

private:
    void serve() {
        fd_ = ::accept(listener_, nullptr, nullptr);
        if (fd_ < 0) return;
        timeval tv{5, 0};
        setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ctx_ = SSL_CTX_new(TLS_server_method());
        SSL_CTX_use_certificate(ctx_, pki().cert.get());
        SSL_CTX_use_PrivateKey(ctx_, pki().key.get());
        ssl_ = SSL_new(ctx_);
        SSL_set_fd(ssl_, fd_);
        if (SSL_accept(ssl_) != 1) {
            ERR_clear_error();
            return;  // the client refused us (the host-name test)
        }
        char c;
        while (request.find("\r\n\r\n") == std::string::npos && SSL_read(ssl_, &c, 1) == 1) request += c;
        std::string key;
        for (auto& line : split(request, '\n')) {
            auto t = trim(line);
            if (starts_with(to_lower(t), "sec-websocket-key:")) key = std::string(trim(t.substr(18)));
        }
        std::string answer;
        if (options_.status == 101) {
            answer = "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nupgrade: websocket\r\n";
            answer +=
                "sec-websocket-accept: " + (options_.bad_accept ? std::string("AAAA") : WebSocket::accept_for(key)) +
                "\r\n";
            if (options_.protocol) answer += std::string("sec-websocket-protocol: ") + options_.protocol + "\r\n";
        } else {
            answer = format("HTTP/1.1 %d Nope\r\ncontent-length: 0\r\n", options_.status);
        }
        if (options_.channel_id) answer += std::string("channel-id: ") + options_.channel_id + "\r\n";
        answer += "\r\n";
        write_raw(answer);
        upgraded = true;
        if (options_.status == 101 && script_) script_(*this);
    }

    Options options_;
    Script script_;
    int listener_ = -1, fd_ = -1;
    SSL_CTX* ctx_ = nullptr;
    SSL* ssl_ = nullptr;
    std::thread thread_;
    std::mutex mutex_;
};

struct Client {
    bool opened = false, closed = false;
    std::string protocol, data;
    int writable_calls = 0;
    WebSocketClosed info;
    WebSocket ws;
    Client(EventLoop& loop, WebSocketOptions o)
        : ws(loop, std::move(o),
             WebSocket::Handlers{
                 [this](const std::string& p) {
                     opened = true;
                     protocol = p;
                 },
                 [this](const uint8_t* d, size_t n) { data.append(reinterpret_cast<const char*>(d), n); },
                 [this] { ++writable_calls; },
                 [this](const WebSocketClosed& c) {
                     closed = true;
                     info = c;
                 }}) {}
};

WebSocketOptions options_for(int port, const std::string& host = "localhost") {
    WebSocketOptions o;
    o.host = host;
    o.port = port;
    o.path = "/tunnel?local-proxy-mode=destination";
    o.ca_file = pki().ca_file;
    o.protocols = {"aws.iot.securetunneling-3.0", "aws.iot.securetunneling-2.0"};
    o.headers = {{"access-token", "secret-token-value"}, {"client-token", "0123456789abcdef0123456789abcdef"}};
    o.connect_timeout_ms = 5000;
    o.close_timeout_ms = 1000;
    return o;
}

bool run_until(EventLoop& loop, const std::function<bool()>& done, int64_t timeout_ms = 5000) {
    int64_t end = monotonic_ms() + timeout_ms;
    while (!done() && monotonic_ms() < end) loop.run_once(20);
    return done();
}

}  // namespace

TEST(TunnelWebSocket, UpgradeRequestAndAnswer) {
    WsServer server({}, [](WsServer& s) {
        Frame f;
        if (!s.read_frame(f) || f.opcode != 0x8) s.fail("expected the client's close frame");
        s.send(0x88, std::string("\x03\xe8", 2));
        s.close_tcp();
    });
    EventLoop loop;
    Client c(loop, options_for(server.port));
    ASSERT_TRUE(c.ws.connect());
    ASSERT_TRUE(run_until(loop, [&] { return c.opened || c.closed; })) << c.info.reason;
    ASSERT_TRUE(c.opened) << c.info.reason;
    EXPECT_EQ(c.protocol, "aws.iot.securetunneling-3.0");
    EXPECT_EQ(c.ws.channel_id(), "chan-42");
    c.ws.close();
    ASSERT_TRUE(run_until(loop, [&] { return c.closed; }));
    EXPECT_FALSE(c.info.retry);
    EXPECT_EQ(c.info.close_code, 1000);
    server.join();
    EXPECT_EQ(server.failure, "");

    const std::string& r = server.request;
    EXPECT_TRUE(starts_with(r, "GET /tunnel?local-proxy-mode=destination HTTP/1.1\r\n")) << r;
    EXPECT_NE(r.find("\r\nHost: localhost\r\n"), std::string::npos) << r;
    EXPECT_NE(r.find("\r\nUpgrade: websocket\r\n"), std::string::npos);
    EXPECT_NE(r.find("\r\nConnection: upgrade\r\n"), std::string::npos);
    EXPECT_NE(r.find("\r\nSec-WebSocket-Version: 13\r\n"), std::string::npos);
    EXPECT_NE(r.find("\r\nSec-WebSocket-Protocol: aws.iot.securetunneling-3.0, aws.iot.securetunneling-2.0\r\n"),
              std::string::npos);
    EXPECT_NE(r.find("\r\naccess-token: secret-token-value\r\n"), std::string::npos);
    EXPECT_NE(r.find("\r\nclient-token: 0123456789abcdef0123456789abcdef\r\n"), std::string::npos);
}

TEST(TunnelWebSocket, AcceptValueOfTheRfc) {
    EXPECT_EQ(WebSocket::accept_for("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST(TunnelWebSocket, SubprotocolRequired) {
    WsServer::Options o;
    o.protocol = nullptr;
    WsServer server(o, nullptr);
    EventLoop loop;
    Client c(loop, options_for(server.port));
    ASSERT_TRUE(c.ws.connect());
    ASSERT_TRUE(run_until(loop, [&] { return c.closed; }));
    EXPECT_FALSE(c.opened);
    EXPECT_NE(c.info.reason.find("no subprotocol"), std::string::npos) << c.info.reason;
}

TEST(TunnelWebSocket, SubprotocolMustBeOneOffered) {
    WsServer::Options o;
    o.protocol = "aws.iot.securetunneling-1.0";
    WsServer server(o, nullptr);
    EventLoop loop;
    Client c(loop, options_for(server.port));
    ASSERT_TRUE(c.ws.connect());
    ASSERT_TRUE(run_until(loop, [&] { return c.closed; }));
    EXPECT_NE(c.info.reason.find("was not offered"), std::string::npos) << c.info.reason;
}

TEST(TunnelWebSocket, WrongAcceptRefused) {
    WsServer::Options o;
    o.bad_accept = true;
    WsServer server(o, nullptr);
    EventLoop loop;
    Client c(loop, options_for(server.port));
    ASSERT_TRUE(c.ws.connect());
    ASSERT_TRUE(run_until(loop, [&] { return c.closed; }));
    EXPECT_NE(c.info.reason.find("Sec-WebSocket-Accept"), std::string::npos) << c.info.reason;
}

TEST(TunnelWebSocket, ClientErrorIsFinalServerErrorIsRetried) {
    for (int status : {403, 503}) {
        WsServer::Options o;
        o.status = status;
        WsServer server(o, nullptr);
        EventLoop loop;
        Client c(loop, options_for(server.port));
        ASSERT_TRUE(c.ws.connect());
        ASSERT_TRUE(run_until(loop, [&] { return c.closed; }));
        EXPECT_EQ(c.info.http_status, status);
        EXPECT_EQ(c.info.retry, status >= 500);
        EXPECT_EQ(c.info.channel_id, "chan-42");
        EXPECT_NE(c.info.reason.find(std::to_string(status)), std::string::npos) << c.info.reason;
        if (status == 403) {
            EXPECT_NE(c.info.reason.find("access token"), std::string::npos) << c.info.reason;
        }
        // The token is never part of an error.
        EXPECT_EQ(c.info.reason.find("secret-token-value"), std::string::npos);
    }
}

TEST(TunnelWebSocket, HostNameVerified) {
    WsServer server({}, nullptr);
    EventLoop loop;
    Client c(loop, options_for(server.port, "127.0.0.1"));  // the certificate names localhost only
    ASSERT_TRUE(c.ws.connect());
    ASSERT_TRUE(run_until(loop, [&] { return c.closed; }));
    EXPECT_FALSE(c.opened);
    EXPECT_NE(c.info.reason.find("does not match"), std::string::npos) << c.info.reason;
}

TEST(TunnelWebSocket, ConnectionRefusedExplained) {
    int port;
    {
        WsServer server({}, nullptr);
        port = server.port;
    }
    EventLoop loop;
    Client c(loop, options_for(port, "127.0.0.1"));
    ASSERT_TRUE(c.ws.connect());
    ASSERT_TRUE(run_until(loop, [&] { return c.closed; }));
    EXPECT_TRUE(c.info.retry);
    EXPECT_NE(c.info.reason.find("refused"), std::string::npos) << c.info.reason;
}

TEST(TunnelWebSocket, MaskedFramesFragmentsAndPings) {
    std::string big(70000, '\0');
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7);
    std::atomic<bool> pong_ok{false};
    WsServer server({}, [&](WsServer& s) {
        Frame f;
        // Two binary frames from the client, masked, the second over 65535 bytes.
        if (!s.read_frame(f) || f.opcode != 0x2 || !f.fin || !f.masked || f.payload != "hello") s.fail("frame 1");
        if (!s.read_frame(f) || f.opcode != 0x2 || !f.masked || f.payload != big) s.fail("frame 2");
        // A fragmented message with a ping in the middle; then the client's pong.
        s.send(0x02, "ab");
        s.send(0x00, "cd");
        s.send(0x89, "ping!");
        s.send(0x80, "ef");
        if (!s.read_frame(f) || f.opcode != 0xA || f.payload != "ping!" || !f.masked) s.fail("pong");
        pong_ok = true;
        // Several frames in one write, one split over two writes.
        std::string two = WsServer::frame(0x82, "gh") + WsServer::frame(0x82, "ij");
        std::string split = WsServer::frame(0x82, "klmnop");
        s.write_raw(two + split.substr(0, 3));
        s.write_raw(split.substr(3));
        if (!s.read_frame(f) || f.opcode != 0x8) s.fail("close");
        s.send(0x88, std::string("\x03\xe8", 2));
        s.close_tcp();
    });
    EventLoop loop;
    Client c(loop, options_for(server.port));
    ASSERT_TRUE(c.ws.connect());
    ASSERT_TRUE(run_until(loop, [&] { return c.opened || c.closed; }));
    ASSERT_TRUE(c.opened) << c.info.reason;
    ASSERT_TRUE(c.ws.send(reinterpret_cast<const uint8_t*>("hello"), 5));
    ASSERT_TRUE(c.ws.send(reinterpret_cast<const uint8_t*>(big.data()), big.size()));
    ASSERT_TRUE(run_until(loop, [&] { return c.data.size() == 16; })) << c.data;
    EXPECT_EQ(c.data, "abcdefghijklmnop");
    EXPECT_TRUE(pong_ok);
    c.ws.close();
    ASSERT_TRUE(run_until(loop, [&] { return c.closed; }));
    server.join();
    EXPECT_EQ(server.failure, "");
}

TEST(TunnelWebSocket, PingEveryInterval) {
    WsServer server({}, [](WsServer& s) {
        Frame f;
        if (!s.read_frame(f) || f.opcode != 0x9 || f.payload.size() != 8 || !f.masked) s.fail("expected a ping");
        s.send(0x8A, f.payload);  // pong: the client logs the round trip
        if (!s.read_frame(f) || f.opcode != 0x9) s.fail("expected a second ping");
        s.close_tcp();
    });
    EventLoop loop;
    auto o = options_for(server.port);
    o.ping_interval_ms = 100;
    Client c(loop, o);
    ASSERT_TRUE(c.ws.connect());
    ASSERT_TRUE(run_until(loop, [&] { return c.closed; }));
    EXPECT_TRUE(c.opened);
    EXPECT_TRUE(c.info.retry);  // lost without a close frame
    EXPECT_NE(c.info.reason.find("lost"), std::string::npos) << c.info.reason;
    server.join();
    EXPECT_EQ(server.failure, "");
}

TEST(TunnelWebSocket, ServerClose) {
    std::atomic<int> echoed{0};
    WsServer server({}, [&](WsServer& s) {
        s.send(0x88, std::string("\x03\xe9", 2) + "going away");
        Frame f;
        if (s.read_frame(f) && f.opcode == 0x8 && f.payload.size() == 2)
            echoed = (uint8_t(f.payload[0]) << 8) | uint8_t(f.payload[1]);
        s.close_tcp();
    });
    EventLoop loop;
    Client c(loop, options_for(server.port));
    ASSERT_TRUE(c.ws.connect());
    ASSERT_TRUE(run_until(loop, [&] { return c.closed; }));
    EXPECT_TRUE(c.opened);
    EXPECT_EQ(c.info.close_code, 1001);
    EXPECT_NE(c.info.reason.find("going away"), std::string::npos) << c.info.reason;
    server.join();
    EXPECT_EQ(echoed, 1001);
}

TEST(TunnelWebSocket, TextFrameRefused) {
    std::atomic<int> code{0};
    WsServer server({}, [&](WsServer& s) {
        s.send(0x81, "text");
        Frame f;
        if (s.read_frame(f) && f.opcode == 0x8 && f.payload.size() >= 2)
            code = (uint8_t(f.payload[0]) << 8) | uint8_t(f.payload[1]);
    });
    EventLoop loop;
    Client c(loop, options_for(server.port));
    ASSERT_TRUE(c.ws.connect());
    ASSERT_TRUE(run_until(loop, [&] { return c.closed; }));
    EXPECT_NE(c.info.reason.find("text frame"), std::string::npos) << c.info.reason;
    EXPECT_TRUE(c.data.empty());
    server.join();
    EXPECT_EQ(code, 1003);
}

TEST(TunnelWebSocket, OversizedFrameRefused) {
    std::atomic<int> code{0};
    WsServer server({}, [&](WsServer& s) {
        s.send(0x82, std::string(131076, 'x'));  // the limit itself is fine
        s.write_raw(WsServer::frame(0x82, "", 131077));
        Frame f;
        if (s.read_frame(f) && f.opcode == 0x8 && f.payload.size() >= 2)
            code = (uint8_t(f.payload[0]) << 8) | uint8_t(f.payload[1]);
    });
    EventLoop loop;
    Client c(loop, options_for(server.port));
    ASSERT_TRUE(c.ws.connect());
    ASSERT_TRUE(run_until(loop, [&] { return c.closed; }));
    EXPECT_EQ(c.data.size(), 131076u);
    EXPECT_NE(c.info.reason.find("131077"), std::string::npos) << c.info.reason;
    server.join();
    EXPECT_EQ(code, 1009);
    // Nor does the client send one.
    EventLoop loop2;
    Client idle(loop2, options_for(1));
    std::string huge(131077, 'x');
    EXPECT_FALSE(idle.ws.send(reinterpret_cast<const uint8_t*>(huge.data()), huge.size()));
}

TEST(TunnelWebSocket, PausedReadingHoldsData) {
    std::atomic<bool> go{false};
    WsServer server({}, [&](WsServer& s) {
        s.send(0x82, "one");
        s.send(0x82, "two");
        while (!go) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        Frame f;
        s.read_frame(f);
        s.send(0x88, "");
        s.close_tcp();
    });
    EventLoop loop;
    Client c(loop, options_for(server.port));
    c.ws.pause_reading(false);
    ASSERT_TRUE(c.ws.connect());
    ASSERT_TRUE(run_until(loop, [&] { return c.opened || c.closed; }));
    ASSERT_TRUE(c.opened);
    ASSERT_TRUE(run_until(loop, [&] { return !c.data.empty(); }));
    c.ws.pause_reading(true);
    std::string seen = c.data;
    run_until(
        loop, [] { return false; }, 200);
    // At most the frame being handled when the pause came.
    EXPECT_TRUE(c.data == seen) << c.data;
    c.ws.pause_reading(false);
    ASSERT_TRUE(run_until(loop, [&] { return c.data == "onetwo"; })) << c.data;
    go = true;
    c.ws.close();
    ASSERT_TRUE(run_until(loop, [&] { return c.closed; }));
}

TEST(TunnelWebSocket, SendBufferBoundedAndDrains) {
    std::atomic<bool> go{false};
    std::atomic<size_t> received{0};
    WsServer server({}, [&](WsServer& s) {
        while (!go) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        Frame f;
        while (s.read_frame(f) && f.opcode == 0x2) received += f.payload.size();
        s.send(0x88, "");
        s.close_tcp();
    });
    EventLoop loop;
    auto o = options_for(server.port);
    o.send_buffer = 64 * 1024;
    Client c(loop, o);
    ASSERT_TRUE(c.ws.connect());
    ASSERT_TRUE(run_until(loop, [&] { return c.opened || c.closed; }));
    ASSERT_TRUE(c.opened);
    std::string chunk(16 * 1024, 'z');
    size_t sent = 0;
    // Fill until refused: the buffer holds no more than its limit, whatever the socket does.
    for (int i = 0; i < 1000 && c.ws.writable(chunk.size()); ++i) {
        ASSERT_TRUE(c.ws.send(reinterpret_cast<const uint8_t*>(chunk.data()), chunk.size()));
        sent += chunk.size();
        loop.run_once(0);
    }
    EXPECT_LE(c.ws.buffered(), o.send_buffer);
    EXPECT_FALSE(c.ws.send(reinterpret_cast<const uint8_t*>(chunk.data()), chunk.size()));
    go = true;
    ASSERT_TRUE(run_until(loop, [&] { return c.writable_calls > 0; }));
    ASSERT_TRUE(run_until(loop, [&] { return received == sent; })) << received << " of " << sent;
    c.ws.close();
    ASSERT_TRUE(run_until(loop, [&] { return c.closed; }));
}

namespace {
// A one-connection HTTP CONNECT proxy on a thread: checks the request, then relays both ways.
class ConnectProxy {
public:
    explicit ConnectProxy(int status) : status_(status) {
        listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a);
        listen(listener_, 1);
        socklen_t len = sizeof a;
        getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len);
        port = ntohs(a.sin_port);
        thread_ = std::thread([this] { serve(); });
    }
    ~ConnectProxy() {
        ::shutdown(listener_, SHUT_RDWR);
        thread_.join();
        ::close(listener_);
    }
    int port = 0;
    std::string request;

private:
    void serve() {
        int c = ::accept(listener_, nullptr, nullptr);
        if (c < 0) return;
        char ch;
        while (request.find("\r\n\r\n") == std::string::npos && ::recv(c, &ch, 1, 0) == 1) request += ch;
        if (status_ != 200) {
            std::string a = format("HTTP/1.1 %d No\r\n\r\n", status_);
            ::send(c, a.data(), a.size(), MSG_NOSIGNAL);
            ::close(c);
            return;
        }
        int target_port = std::atoi(request.substr(request.find(':') + 1).c_str());
        int t = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons(static_cast<uint16_t>(target_port));
        ::connect(t, reinterpret_cast<sockaddr*>(&a), sizeof a);
        std::string ok = "HTTP/1.1 200 Connection established\r\n\r\n";
        ::send(c, ok.data(), ok.size(), MSG_NOSIGNAL);
        pollfd fds[2] = {{c, POLLIN, 0}, {t, POLLIN, 0}};
        char buf[16384];
        for (;;) {
            if (::poll(fds, 2, 5000) <= 0) break;
            int from = fds[0].revents ? 0 : 1;
            ssize_t n = ::recv(fds[from].fd, buf, sizeof buf, 0);
            if (n <= 0) break;
            ::send(fds[1 - from].fd, buf, static_cast<size_t>(n), MSG_NOSIGNAL);
        }
        ::close(t);
        ::close(c);
    }
    int status_;
    int listener_ = -1;
    std::thread thread_;
};
}  // namespace

TEST(TunnelWebSocket, ThroughHttpConnectProxy) {
    WsServer server({}, [](WsServer& s) {
        Frame f;
        if (!s.read_frame(f) || f.payload != "via proxy") s.fail("data");
        s.send(0x82, "back");
        if (!s.read_frame(f) || f.opcode != 0x8) s.fail("close");
        s.send(0x88, "");
        s.close_tcp();
    });
    ConnectProxy proxy(200);
    EventLoop loop;
    auto o = options_for(server.port);
    o.proxy_host = "127.0.0.1";
    o.proxy_port = proxy.port;
    o.proxy_user = "me";
    o.proxy_password = "pw";
    Client c(loop, o);
    ASSERT_TRUE(c.ws.connect());
    ASSERT_TRUE(run_until(loop, [&] { return c.opened || c.closed; })) << c.info.reason;
    ASSERT_TRUE(c.opened) << c.info.reason;
    ASSERT_TRUE(c.ws.send(reinterpret_cast<const uint8_t*>("via proxy"), 9));
    ASSERT_TRUE(run_until(loop, [&] { return c.data == "back"; }));
    c.ws.close();
    ASSERT_TRUE(run_until(loop, [&] { return c.closed; }));
    server.join();
    EXPECT_EQ(server.failure, "");
    EXPECT_TRUE(starts_with(proxy.request, format("CONNECT localhost:%d HTTP/1.1\r\n", server.port))) << proxy.request;
    EXPECT_NE(proxy.request.find("Proxy-Authorization: Basic bWU6cHc=\r\n"), std::string::npos) << proxy.request;
}

TEST(TunnelWebSocket, ProxyRefusalExplained) {
    ConnectProxy proxy(407);
    EventLoop loop;
    auto o = options_for(1);
    o.proxy_host = "127.0.0.1";
    o.proxy_port = proxy.port;
    Client c(loop, o);
    ASSERT_TRUE(c.ws.connect());
    ASSERT_TRUE(run_until(loop, [&] { return c.closed; }));
    EXPECT_FALSE(c.info.retry);
    EXPECT_EQ(c.info.http_status, 407);
    EXPECT_NE(c.info.reason.find("http-proxy-username"), std::string::npos) << c.info.reason;
}

TEST(TunnelWebSocket, ProxyUrl) {
    auto p = parse_proxy_url("http://user:pa:ss@proxy.example:3128/");
    ASSERT_TRUE(p) << p.error();
    EXPECT_EQ(p->host, "proxy.example");
    EXPECT_EQ(p->port, 3128);
    EXPECT_EQ(p->user, "user");
    EXPECT_EQ(p->password, "pa:ss");
    auto q = parse_proxy_url("10.0.0.1");
    ASSERT_TRUE(q);
    EXPECT_EQ(q->port, 80);
    EXPECT_FALSE(parse_proxy_url("https://proxy:443"));
}
