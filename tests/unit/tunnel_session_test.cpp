// Both ends of a tunnel against a scripted peer (a Transport that records what the session sends)
// and real local sockets on the loop. Destination: streams and connections for V1, V2 and V3
// sources, the local proxy's quirks, refusals, resets, and back-pressure that keeps buffers bounded
// both ways. Source: the streams and connections it starts for accepted sockets, per version.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/strings.hpp"
#include "base/time.hpp"
#include "config/config.hpp"
#include "json/json.hpp"
#include "loop/loop.hpp"
#include "tunnel/session.hpp"
#include "unit/tunnel_test_support.hpp"

using namespace iot;
using namespace iot::tunnel;
using tunneltest::LocalServer;
using tunneltest::run_until;

namespace {

// The peer's side of the transport: records frames, can be "full", remembers pauses.
struct ScriptTransport : Transport {
    std::string sent;
    size_t unacked = 0;       // bytes "in the socket" until drain()
    size_t limit = SIZE_MAX;  // writable() while unacked + len <= limit
    size_t max_unacked = 0;
    bool paused = false;
    int pauses = 0;
    bool writable(size_t len) override { return unacked + len <= limit; }
    Status send(const uint8_t* d, size_t n) override {
        if (!writable(n)) return Error("full");
        sent.append(reinterpret_cast<const char*>(d), n);
        unacked += n;
        max_unacked = std::max(max_unacked, unacked);
        return {};
    }
    void pause_reading(bool p) override {
        if (p && !paused) ++pauses;
        paused = p;
    }
    std::vector<TunnelMessage> messages() {
        std::vector<TunnelMessage> out;
        MessageReader r;
        (void)r.feed(reinterpret_cast<const uint8_t*>(sent.data()), sent.size(), [&](const uint8_t* d, size_t n) {
            auto m = parse_message(d, n);
            if (m) out.push_back(m.take());
            return true;
        });
        return out;
    }
    std::vector<TunnelMessage> of_type(MessageType t) {
        std::vector<TunnelMessage> out;
        for (auto& m : messages())
            if (m.type == t) out.push_back(m);
        return out;
    }
    // Payload sent for one connection (all DATA messages concatenated).
    std::string data_for(uint32_t connection) {
        std::string out;
        for (auto& m : messages())
            if (m.type == MessageType::Data && m.connection_id == connection) out += m.payload;
        return out;
    }
};

TunnelMessage msg(MessageType type, const std::string& service, int32_t stream, uint32_t connection = 0,
                  std::string payload = {}) {
    TunnelMessage m;
    m.type = type;
    m.service_id = service;
    m.stream_id = stream;
    m.connection_id = connection;
    m.payload = std::move(payload);
    return m;
}

struct Fixture {
    EventLoop loop;
    ScriptTransport transport;
    std::unique_ptr<TunnelSession> session;
    void start(std::vector<ServiceEndpoint> services, ProtocolVersion v = ProtocolVersion::V3,
               size_t connection_buffer = 256 * 1024, Role role = Role::Destination) {
        SessionOptions o;
        o.role = role;
        o.services = std::move(services);
        o.connection_buffer = connection_buffer;
        o.connect_timeout_ms = 2000;
        session = std::make_unique<TunnelSession>(loop, transport, o);
        session->start(v);
    }
    void peer(const TunnelMessage& m) {
        std::string bytes;
        ASSERT_TRUE(append_message(bytes, m, ProtocolVersion::V3));  // the peer's fields as they come
        auto ok = session->on_bytes(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
        ASSERT_TRUE(ok) << ok.error();
    }
    void service_ids(std::vector<std::string> ids) {
        TunnelMessage m;
        m.type = MessageType::ServiceIds;
        m.available_service_ids = std::move(ids);
        peer(m);
    }
    bool wait(const std::function<bool()>& done, int64_t ms = 5000) { return run_until(loop, done, ms); }
};

}  // namespace

TEST(TunnelServiceMap, Parse) {
    auto m = parse_service_map("SSH=127.0.0.1:22, VNC=5900,web=[::1]:8080");
    ASSERT_TRUE(m) << m.error();
    ASSERT_EQ(m->size(), 3u);
    EXPECT_EQ((*m)[0].name, "SSH");
    EXPECT_EQ((*m)[0].host, "127.0.0.1");
    EXPECT_EQ((*m)[0].port, 22);
    EXPECT_EQ((*m)[1].host, "localhost");
    EXPECT_EQ((*m)[1].port, 5900);
    EXPECT_EQ((*m)[2].host, "::1");
    EXPECT_EQ((*m)[2].port, 8080);
    EXPECT_FALSE(parse_service_map("SSH"));
    EXPECT_FALSE(parse_service_map("SSH=host"));
    EXPECT_FALSE(parse_service_map("SSH=1,SSH=2"));
    EXPECT_FALSE(parse_service_map("SSH=70000"));
    EXPECT_FALSE(parse_service_map(""));
}

TEST(TunnelServiceMap, FromConfig) {
    config::Config c;
    auto def = parse_service_map_json(c.json_value("tunneling.services").get());
    ASSERT_TRUE(def) << def.error();
    ASSERT_EQ(def->size(), 2u);
    EXPECT_EQ((*def)[0].name, "SSH");
    EXPECT_EQ((*def)[0].port, 22);
    EXPECT_EQ((*def)[1].name, "VNC");
    EXPECT_EQ((*def)[1].port, 5900);
    auto doc = json::parse(R"({"ssh1": "10.0.0.2:2222", "web": 8080})");
    auto m = parse_service_map_json(doc->get());
    ASSERT_TRUE(m) << m.error();
    EXPECT_EQ((*m)[0].host, "10.0.0.2");
    EXPECT_EQ((*m)[0].port, 2222);
    EXPECT_EQ((*m)[1].host, "localhost");
    auto bad = json::parse(R"({"ssh": true})");
    EXPECT_FALSE(parse_service_map_json(bad->get()));
}

TEST(TunnelDestination, V3StreamDataBothWays) {
    Fixture f;
    LocalServer echo(f.loop, LocalServer::Mode::Echo);
    f.start({{"SSH", "127.0.0.1", echo.port}});
    f.service_ids({"SSH"});
    f.peer(msg(MessageType::StreamStart, "SSH", 1, 1));
    ASSERT_TRUE(f.wait([&] { return echo.accepted == 1; }));
    f.peer(msg(MessageType::Data, "SSH", 1, 1, "hello"));
    ASSERT_TRUE(f.wait([&] { return f.transport.data_for(1) == "hello"; }));
    auto data = f.transport.of_type(MessageType::Data);
    ASSERT_EQ(data.size(), 1u);
    EXPECT_EQ(data[0].service_id, "SSH");
    EXPECT_EQ(data[0].stream_id, 1);
    EXPECT_EQ(data[0].connection_id, 1u);
    // No reply to STREAM_START, and never a message type a destination must not send.
    for (auto& m : f.transport.messages()) EXPECT_EQ(m.type, MessageType::Data);
    EXPECT_EQ(f.session->received_service_ids(), std::vector<std::string>{"SSH"});
}

TEST(TunnelDestination, LargeTransferChunkedBothWays) {
    Fixture f;
    LocalServer echo(f.loop, LocalServer::Mode::Echo);
    f.start({{"SSH", "127.0.0.1", echo.port}});
    f.service_ids({"SSH"});
    f.peer(msg(MessageType::StreamStart, "SSH", 1, 1));
    std::string payload;
    for (int i = 0; i < 40; ++i) {
        std::string chunk(kMaxPayload, static_cast<char>('a' + i % 26));
        payload += chunk;
        f.peer(msg(MessageType::Data, "SSH", 1, 1, chunk));
        f.loop.run_once(0);
        f.transport.unacked = 0;
    }
    ASSERT_TRUE(f.wait([&] {
        f.transport.unacked = 0;
        f.session->on_writable();
        return f.transport.data_for(1).size() == payload.size();
    }));
    EXPECT_EQ(f.transport.data_for(1), payload);
    for (auto& m : f.transport.of_type(MessageType::Data)) EXPECT_LE(m.payload.size(), kDataChunk);
}

TEST(TunnelDestination, V2PeerGetsNoConnectionIds) {
    Fixture f;
    LocalServer echo(f.loop, LocalServer::Mode::Echo);
    f.start({{"SSH", "127.0.0.1", echo.port}});
    f.service_ids({"SSH"});
    f.peer(msg(MessageType::StreamStart, "SSH", 7));  // no connection id: a V2-format peer
    ASSERT_TRUE(f.wait([&] { return echo.accepted == 1; }));
    f.peer(msg(MessageType::Data, "SSH", 7, 0, "abc"));
    ASSERT_TRUE(f.wait([&] { return f.transport.data_for(0) == "abc"; }));
    // The local side closes: a V2 peer hears STREAM_RESET, without a connection id.
    f.peer(msg(MessageType::ConnectionReset, "SSH", 7, 0));
    ASSERT_TRUE(f.wait([&] { return echo.closed == 1; }));
    EXPECT_EQ(f.session->open_connections(), 0u);
}

TEST(TunnelDestination, TeardownClosesSocketsAndSendsNothing) {
    for (bool v3 : {true, false}) {
        Fixture f;
        LocalServer firehose(f.loop, LocalServer::Mode::Firehose);  // stands in for any local service
        // A service that accepts and closes: the echo server's peer closing is the same event.
        f.start({{"SSH", "127.0.0.1", firehose.port}});
        f.service_ids({"SSH"});
        f.peer(msg(MessageType::StreamStart, "SSH", 3, v3 ? 1 : 0));
        ASSERT_TRUE(f.wait([&] { return firehose.accepted == 1; }));
        f.transport.limit = 0;  // nothing more goes out, so the firehose cannot hide the reset
        f.transport.sent.clear();
        f.session.reset();  // torn down: sockets closed, nothing sent
        EXPECT_TRUE(f.transport.sent.empty());
        ASSERT_TRUE(f.wait([&] { return firehose.closed == 1; }));
    }
}

TEST(TunnelDestination, LocalEofResetsConnectionOrStream) {
    for (bool v3 : {true, false}) {
        Fixture f;
        // A local service that closes at once: listen, accept, close.
        Fd listener(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        bind(listener.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
        listen(listener.get(), 4);
        socklen_t len = sizeof a;
        getsockname(listener.get(), reinterpret_cast<sockaddr*>(&a), &len);
        auto w =
            f.loop.watch(listener.get(), POLLIN, [&](short) { ::close(::accept(listener.get(), nullptr, nullptr)); });
        f.start({{"SSH", "127.0.0.1", ntohs(a.sin_port)}});
        f.service_ids({"SSH"});
        f.peer(msg(MessageType::StreamStart, "SSH", 3, v3 ? 1 : 0));
        MessageType expect = v3 ? MessageType::ConnectionReset : MessageType::StreamReset;
        ASSERT_TRUE(f.wait([&] { return !f.transport.of_type(expect).empty(); })) << "v3 " << v3;
        auto r = f.transport.of_type(expect)[0];
        EXPECT_EQ(r.service_id, "SSH");
        EXPECT_EQ(r.stream_id, 3);
        EXPECT_EQ(r.connection_id, v3 ? 1u : 0u);
        f.loop.unwatch(w);
    }
}

TEST(TunnelDestination, V1StreamWithoutServiceIds) {
    Fixture f;
    LocalServer echo(f.loop, LocalServer::Mode::Echo);
    f.start({{"SSH", "127.0.0.1", echo.port}}, ProtocolVersion::V1);
    f.peer(msg(MessageType::StreamStart, "", 1));
    ASSERT_TRUE(f.wait([&] { return echo.accepted == 1; }));
    f.peer(msg(MessageType::Data, "", 1, 0, "v1"));
    ASSERT_TRUE(f.wait([&] { return f.transport.data_for(0) == "v1"; }));
    auto data = f.transport.of_type(MessageType::Data);
    EXPECT_EQ(data[0].service_id, "");
    // Not even a serviceId field on the wire: V1 bytes are type, stream and payload only.
    EXPECT_EQ(f.transport.sent.find("SSH"), std::string::npos);
}

TEST(TunnelDestination, StreamStartWithoutServiceIdMapsTheOnlyService) {
    Fixture f;
    LocalServer echo(f.loop, LocalServer::Mode::Echo);
    f.start({{"SSH", "127.0.0.1", echo.port}}, ProtocolVersion::V3);
    f.service_ids({"SSH"});
    f.peer(msg(MessageType::StreamStart, "", 1));  // the browser console's V1 source
    ASSERT_TRUE(f.wait([&] { return echo.accepted == 1; }));
    f.peer(msg(MessageType::Data, "", 1, 0, "x"));
    ASSERT_TRUE(f.wait([&] { return f.transport.data_for(0) == "x"; }));
    EXPECT_EQ(f.transport.of_type(MessageType::Data)[0].service_id, "");
}

TEST(TunnelDestination, UnmappedServiceRefused) {
    Fixture f;
    LocalServer echo(f.loop, LocalServer::Mode::Echo);
    f.start({{"SSH", "127.0.0.1", echo.port}});
    f.service_ids({"SSH", "FTP"});
    f.peer(msg(MessageType::StreamStart, "FTP", 1, 1));
    auto resets = f.transport.of_type(MessageType::StreamReset);
    ASSERT_EQ(resets.size(), 1u);
    EXPECT_EQ(resets[0].service_id, "FTP");
    EXPECT_EQ(resets[0].stream_id, 1);
    f.peer(msg(MessageType::Data, "FTP", 1, 1, "nope"));
    f.wait([] { return false; }, 100);
    EXPECT_EQ(echo.accepted, 0);
    EXPECT_EQ(f.session->open_connections(), 0u);
    EXPECT_EQ(f.session->stats().connections_refused, 1u);
    // Two services configured and no service id: ambiguous, refused too.
    Fixture g;
    g.start({{"SSH", "127.0.0.1", echo.port}, {"WEB", "127.0.0.1", echo.port}});
    g.service_ids({"SSH", "WEB"});
    g.peer(msg(MessageType::StreamStart, "", 1));
    EXPECT_EQ(g.transport.of_type(MessageType::StreamReset).size(), 1u);
}

TEST(TunnelDestination, StreamResetWithStaleConnectionIdClosesTheStream) {
    Fixture f;
    LocalServer echo(f.loop, LocalServer::Mode::Echo);
    f.start({{"web1", "127.0.0.1", echo.port}});
    f.service_ids({"web1"});
    f.peer(msg(MessageType::StreamStart, "web1", 1, 1));
    ASSERT_TRUE(f.wait([&] { return echo.accepted == 1; }));
    // A reset for another stream is stale: ignored.
    f.peer(msg(MessageType::StreamReset, "web1", 2));
    f.peer(msg(MessageType::Data, "web1", 2, 1, "stale"));
    f.wait([] { return false; }, 50);
    EXPECT_EQ(f.session->open_connections(), 1u);
    EXPECT_EQ(echo.received, "");
    // The local proxy's quirk: STREAM_RESET carrying a leftover connection id 3.
    f.peer(msg(MessageType::StreamReset, "web1", 1, 3));
    ASSERT_TRUE(f.wait([&] { return echo.closed == 1; }));
    EXPECT_EQ(f.session->open_connections(), 0u);
    EXPECT_TRUE(f.transport.of_type(MessageType::StreamReset).empty());  // not echoed
}

TEST(TunnelDestination, ManyConnectionsAndServices) {
    Fixture f;
    LocalServer ssh(f.loop, LocalServer::Mode::Echo);
    LocalServer web(f.loop, LocalServer::Mode::Echo);
    f.start({{"SSH", "127.0.0.1", ssh.port}, {"WEB", "127.0.0.1", web.port}});
    f.service_ids({"SSH", "WEB"});
    f.peer(msg(MessageType::StreamStart, "SSH", 1, 1));
    f.peer(msg(MessageType::ConnectionStart, "SSH", 1, 2));
    f.peer(msg(MessageType::ConnectionStart, "SSH", 1, 3));
    f.peer(msg(MessageType::StreamStart, "WEB", 5, 1));
    ASSERT_TRUE(f.wait([&] { return ssh.accepted == 3 && web.accepted == 1; }));
    EXPECT_EQ(f.session->open_connections(), 4u);
    for (uint32_t c = 1; c <= 3; ++c) f.peer(msg(MessageType::Data, "SSH", 1, c, format("ssh-%u;", c)));
    f.peer(msg(MessageType::Data, "WEB", 5, 1, "web;"));
    ASSERT_TRUE(f.wait([&] { return f.transport.of_type(MessageType::Data).size() == 4; }));
    for (auto& m : f.transport.of_type(MessageType::Data)) {
        if (m.service_id == "SSH")
            EXPECT_EQ(m.payload, format("ssh-%u;", m.connection_id));
        else
            EXPECT_EQ(m.payload, "web;");
    }
    // One connection closed by the source: the others and the stream stay.
    f.peer(msg(MessageType::ConnectionReset, "SSH", 1, 2));
    ASSERT_TRUE(f.wait([&] { return ssh.closed == 1; }));
    EXPECT_EQ(f.session->open_connections(), 3u);
    // A connection id already in use is refused with CONNECTION_RESET.
    f.peer(msg(MessageType::ConnectionStart, "SSH", 1, 3));
    ASSERT_EQ(f.transport.of_type(MessageType::ConnectionReset).size(), 1u);
    // The service resets the session: everything closes.
    f.peer(msg(MessageType::SessionReset, "", 0));
    ASSERT_TRUE(f.wait([&] { return ssh.closed == 3 && web.closed == 1; }));
    EXPECT_EQ(f.session->open_connections(), 0u);
}

TEST(TunnelDestination, ConnectFailureResetsTheStream) {
    Fixture f;
    int port;
    {
        LocalServer gone(f.loop, LocalServer::Mode::Echo);
        port = gone.port;
    }
    f.start({{"SSH", "127.0.0.1", port}});
    f.service_ids({"SSH"});
    f.peer(msg(MessageType::StreamStart, "SSH", 1, 1));
    ASSERT_TRUE(f.wait([&] { return !f.transport.of_type(MessageType::StreamReset).empty(); }));
    auto r = f.transport.of_type(MessageType::StreamReset)[0];
    EXPECT_EQ(r.service_id, "SSH");
    EXPECT_EQ(r.stream_id, 1);
    EXPECT_EQ(r.connection_id, 0u);  // clean: no leftover connection id
}

TEST(TunnelDestination, BackPressureTowardsLocalKeepsBuffersBounded) {
    Fixture f;
    LocalServer sink(f.loop, LocalServer::Mode::Silent);
    const size_t limit = 128 * 1024;
    f.start({{"SSH", "127.0.0.1", sink.port}}, ProtocolVersion::V3, limit);
    f.service_ids({"SSH"});
    f.peer(msg(MessageType::StreamStart, "SSH", 1, 1));
    ASSERT_TRUE(f.wait([&] { return sink.accepted == 1; }));
    std::string chunk(kMaxPayload, 'p');
    size_t fed = 0, max_buffered = 0;
    // Feed as the WebSocket would: only while the session has not paused reading.
    for (int i = 0; i < 400; ++i) {
        if (f.transport.paused) {
            f.loop.run_once(1);
            continue;
        }
        f.peer(msg(MessageType::Data, "SSH", 1, 1, chunk));
        fed += chunk.size();
        max_buffered = std::max(max_buffered, f.session->buffered_to_local());
        f.loop.run_once(0);
    }
    EXPECT_TRUE(f.transport.paused);
    EXPECT_GE(f.transport.pauses, 1);
    // The kernel took some; the session holds at most its limit plus the message that crossed it.
    EXPECT_LE(max_buffered, limit + kMaxPayload);
    EXPECT_LT(fed, 400 * chunk.size());
}

TEST(TunnelDestination, BackPressureTowardsTheTunnelStopsLocalReads) {
    Fixture f;
    LocalServer firehose(f.loop, LocalServer::Mode::Firehose);
    f.start({{"SSH", "127.0.0.1", firehose.port}});
    f.service_ids({"SSH"});
    f.transport.limit = 200 * 1024;
    f.peer(msg(MessageType::StreamStart, "SSH", 1, 1));
    ASSERT_TRUE(f.wait([&] { return firehose.accepted == 1; }));
    // The transport fills and is not drained: the session stops reading the local socket.
    f.wait([] { return false; }, 300);
    EXPECT_LE(f.transport.unacked, f.transport.limit);
    size_t before = f.transport.sent.size();
    f.wait([] { return false; }, 100);
    EXPECT_EQ(f.transport.sent.size(), before);
    // Drained: reading resumes.
    f.transport.unacked = 0;
    f.session->on_writable();
    ASSERT_TRUE(f.wait([&] { return f.transport.sent.size() > before; }));
    EXPECT_LE(f.transport.max_unacked, f.transport.limit);
}

TEST(TunnelDestination, MalformedMessageIsAnError) {
    Fixture f;
    f.start({{"SSH", "127.0.0.1", 22}});
    const uint8_t junk[] = {0x00, 0x03, 0xff, 0xff, 0xff};
    auto r = f.session->on_bytes(junk, sizeof junk);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().find("cannot decode"), std::string::npos) << r.error();
}

namespace {
// A connected socket pair: `local` goes to the session (as if accepted), `app` is the operator's
// program (ssh) at the other end.
struct Accepted {
    Fd local, app;
    Accepted() {
        int sv[2];
        EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
        local.reset(sv[0]);
        app.reset(sv[1]);
    }
    std::string read_app() {
        std::string out;
        char buf[65536];
        ssize_t n;
        while ((n = ::recv(app.get(), buf, sizeof buf, 0)) > 0) out.append(buf, static_cast<size_t>(n));
        return out;
    }
};

void source_start(Fixture& f, std::vector<ServiceEndpoint> services, ProtocolVersion v) {
    f.start(std::move(services), v, 256 * 1024, Role::Source);
}
}  // namespace

TEST(TunnelSource, V3StartsAStreamThenConnectionsAndCarriesDataBothWays) {
    Fixture f;
    source_start(f, {{"SSH", "127.0.0.1", 2222}}, ProtocolVersion::V3);
    Accepted a, b;
    // V3 waits for SERVICE_IDS before it carries anything.
    EXPECT_FALSE(f.session->ready());
    EXPECT_FALSE(f.session->accept_local(0, std::move(a.local)));
    Accepted a2;
    f.service_ids({"SSH"});
    EXPECT_TRUE(f.session->ready());
    ASSERT_TRUE(f.session->accept_local(0, std::move(a2.local)));
    ASSERT_TRUE(f.session->accept_local(0, std::move(b.local)));
    auto starts = f.transport.of_type(MessageType::StreamStart);
    ASSERT_EQ(starts.size(), 1u);
    EXPECT_EQ(starts[0].service_id, "SSH");
    EXPECT_EQ(starts[0].stream_id, 1);
    EXPECT_EQ(starts[0].connection_id, 1u);
    auto more = f.transport.of_type(MessageType::ConnectionStart);
    ASSERT_EQ(more.size(), 1u);
    EXPECT_EQ(more[0].stream_id, 1);
    EXPECT_EQ(more[0].connection_id, 2u);
    // The operator's program writes: DATA for its connection.
    ASSERT_EQ(::send(b.app.get(), "ls\n", 3, 0), 3);
    ASSERT_TRUE(f.wait([&] { return f.transport.data_for(2) == "ls\n"; }));
    // The destination answers on connection 1 and 2.
    f.peer(msg(MessageType::Data, "SSH", 1, 1, "one"));
    f.peer(msg(MessageType::Data, "SSH", 1, 2, "two"));
    std::string got1, got2;
    ASSERT_TRUE(f.wait([&] {
        got1 += a2.read_app();
        got2 += b.read_app();
        return got1 == "one" && got2 == "two";
    }));
    // Closing one program's socket resets its connection only; the stream goes on.
    b.app.reset();
    ASSERT_TRUE(f.wait([&] { return f.transport.of_type(MessageType::ConnectionReset).size() == 1; }));
    EXPECT_EQ(f.transport.of_type(MessageType::ConnectionReset)[0].connection_id, 2u);
    EXPECT_TRUE(f.transport.of_type(MessageType::StreamReset).empty());
    EXPECT_EQ(f.session->open_connections(), 1u);
    // The destination resets connection 1: its socket is closed.
    f.peer(msg(MessageType::ConnectionReset, "SSH", 1, 1));
    ASSERT_TRUE(f.wait([&] {
        char c;
        return ::recv(a2.app.get(), &c, 1, 0) == 0;
    }));
    EXPECT_EQ(f.session->open_connections(), 0u);
}

TEST(TunnelSource, V2OneConnectionPerServiceAndNewStreamIds) {
    Fixture f;
    source_start(f, {{"SSH", "127.0.0.1", 2222}, {"WEB", "127.0.0.1", 8080}}, ProtocolVersion::V2);
    f.service_ids({"SSH", "WEB"});
    Accepted a, b, c, w;
    ASSERT_TRUE(f.session->accept_local(0, std::move(a.local)));
    auto refused = f.session->accept_local(0, std::move(b.local));
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().find("one connection per service"), std::string::npos) << refused.error();
    // Another service has its own stream.
    ASSERT_TRUE(f.session->accept_local(1, std::move(w.local)));
    // The first closes: STREAM_RESET, and the next connection is stream 2.
    a.app.reset();
    ASSERT_TRUE(f.wait([&] { return f.transport.of_type(MessageType::StreamReset).size() == 1; }));
    ASSERT_TRUE(f.session->accept_local(0, std::move(c.local)));
    std::vector<int32_t> ssh_streams;
    for (auto& m : f.transport.of_type(MessageType::StreamStart))
        if (m.service_id == "SSH") ssh_streams.push_back(m.stream_id);
    EXPECT_EQ(ssh_streams, (std::vector<int32_t>{1, 2}));
    // A V2 peer is never sent a connection id.
    for (auto& m : f.transport.messages()) EXPECT_EQ(m.connection_id, 0u) << message_type_name(m.type);
    EXPECT_TRUE(f.transport.of_type(MessageType::ConnectionStart).empty());
}

TEST(TunnelSource, V1IsReadyAtOnceAndSendsNoIds) {
    Fixture f;
    source_start(f, {{"", "127.0.0.1", 2222}}, ProtocolVersion::V1);
    EXPECT_TRUE(f.session->ready());
    Accepted a;
    ASSERT_TRUE(f.session->accept_local(0, std::move(a.local)));
    ASSERT_EQ(::send(a.app.get(), "x", 1, 0), 1);
    ASSERT_TRUE(f.wait([&] { return f.transport.of_type(MessageType::Data).size() == 1; }));
    for (auto& m : f.transport.messages()) {
        EXPECT_TRUE(m.service_id.empty());
        EXPECT_EQ(m.connection_id, 0u);
    }
    // Data back without a service id reaches the one service's connection.
    f.peer(msg(MessageType::Data, "", 1, 0, "back"));
    std::string got;
    ASSERT_TRUE(f.wait([&] { return (got += a.read_app()) == "back"; }));
}

TEST(TunnelSource, ServicesTheTunnelLacksAreRefusedAndAnUnnamedPortBindsTheOnlyService) {
    {
        Fixture f;
        source_start(f, {{"SSH", "127.0.0.1", 2222}, {"VNC", "127.0.0.1", 5900}}, ProtocolVersion::V3);
        f.service_ids({"ssh"});  // names compare case-insensitively, and go out as the tunnel spells them
        Accepted a, b;
        ASSERT_TRUE(f.session->accept_local(0, std::move(a.local)));
        EXPECT_EQ(f.transport.of_type(MessageType::StreamStart).at(0).service_id, "ssh");
        auto refused = f.session->accept_local(1, std::move(b.local));
        ASSERT_FALSE(refused);
        EXPECT_NE(refused.error().find("no service VNC"), std::string::npos) << refused.error();
    }
    {
        Fixture f;
        source_start(f, {{"", "127.0.0.1", 2222}}, ProtocolVersion::V3);
        f.service_ids({"RemoteDesktop"});
        Accepted a;
        ASSERT_TRUE(f.session->accept_local(0, std::move(a.local)));
        EXPECT_EQ(f.transport.of_type(MessageType::StreamStart).at(0).service_id, "RemoteDesktop");
        f.peer(msg(MessageType::Data, "RemoteDesktop", 1, 1, "hi"));
        std::string got;
        ASSERT_TRUE(f.wait([&] { return (got += a.read_app()) == "hi"; }));
    }
}

TEST(TunnelSource, IgnoresStreamStartsFromTheDestinationAndStreamIdsSurviveReconnects) {
    Fixture f;
    source_start(f, {{"SSH", "127.0.0.1", 2222}}, ProtocolVersion::V3);
    f.service_ids({"SSH"});
    f.peer(msg(MessageType::StreamStart, "SSH", 7, 1));
    f.peer(msg(MessageType::ConnectionStart, "SSH", 7, 2));
    EXPECT_EQ(f.session->open_connections(), 0u);
    EXPECT_TRUE(f.transport.sent.empty());
    Accepted a;
    ASSERT_TRUE(f.session->accept_local(0, std::move(a.local)));
    // The WebSocket is lost and made again: the next stream gets a new id, so the destination
    // cannot take it for the old one.
    f.session->stop();
    f.session->start(ProtocolVersion::V3);
    f.service_ids({"SSH"});
    Accepted b;
    ASSERT_TRUE(f.session->accept_local(0, std::move(b.local)));
    auto starts = f.transport.of_type(MessageType::StreamStart);
    ASSERT_EQ(starts.size(), 2u);
    EXPECT_EQ(starts[0].stream_id, 1);
    EXPECT_EQ(starts[1].stream_id, 2);
}
