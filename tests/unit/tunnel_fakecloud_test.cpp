// A device-end tunnel (TunnelClient) against the fakecloud's tunneling service, with a
// source end made here from the same WebSocket client in source mode, and local echo servers:
// several services and connections, re-chunked and merged frames, a dropped WebSocket and the
// reconnect with the same client token, and a closed tunnel ending for good.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "base/strings.hpp"
#include "json/json.hpp"
#include "support/testbed.hpp"
#include "tunnel/tunnel_client.hpp"
#include "unit/tunnel_test_support.hpp"

using namespace iot;
using namespace iot::tunnel;
using testsupport::FakeCloud;
using testsupport::Testbed;
using tunneltest::LocalServer;
using tunneltest::run_until;

namespace {

struct OpenedTunnel {
    std::string id, source_token, destination_token, endpoint;
};

OpenedTunnel open_tunnel(FakeCloud& cloud, const std::string& services_json) {
    std::string answer = cloud.command(R"({"cmd": "open_tunnel", "notify": false, "services": )" + services_json + "}");
    auto doc = json::parse(answer);
    if (!doc) throw std::runtime_error("open_tunnel: " + answer);
    OpenedTunnel t;
    const cJSON* root = doc->get();
    const cJSON* body = json::get(root, "result") ? json::get(root, "result") : root;
    t.id = json::string_or(body, "tunnel_id", "");
    t.source_token = json::string_or(body, "source_token", "");
    t.destination_token = json::string_or(body, "destination_token", "");
    t.endpoint = json::string_or(body, "endpoint", "");
    if (t.id.empty()) throw std::runtime_error("open_tunnel: " + answer);
    return t;
}

// The operator's end, by hand: the WebSocket in source mode and messages built with protocol.hpp.
struct Source {
    std::unique_ptr<WebSocket> ws;
    MessageReader reader;
    std::vector<TunnelMessage> got;
    std::map<uint32_t, std::string> data;  // by connection id (service "SSH" or connection id + 100 for WEB)
    bool open = false, closed = false;
    Source(EventLoop& loop, const Testbed& tb, const OpenedTunnel& t) {
        auto hp = parse_host_port(t.endpoint);
        WebSocketOptions o;
        o.host = hp->host;
        o.port = hp->port;
        o.path = "/tunnel?local-proxy-mode=source";
        o.ca_file = tb.ca();
        o.protocols = {"aws.iot.securetunneling-3.0"};
        o.headers = {{"access-token", t.source_token}, {"client-token", random_token(36)}};
        WebSocket::Handlers h;
        h.on_open = [this](const std::string&) { open = true; };
        h.on_data = [this](const uint8_t* d, size_t n) {
            (void)reader.feed(d, n, [this](const uint8_t* m, size_t len) {
                auto msg = parse_message(m, len);
                if (!msg) return true;
                if (msg->type == MessageType::Data)
                    data[msg->connection_id + (msg->service_id == "WEB" ? 100 : 0)] += msg->payload;
                got.push_back(msg.take());
                return true;
            });
        };
        h.on_closed = [this](const WebSocketClosed&) { closed = true; };
        ws = std::make_unique<WebSocket>(loop, o, h);
        if (!ws->connect()) throw std::runtime_error("source connect");
    }
    void send(MessageType type, const std::string& service, uint32_t connection, const std::string& payload = {}) {
        TunnelMessage m;
        m.type = type;
        m.service_id = service;
        m.stream_id = 1;
        m.connection_id = connection;
        m.payload = payload;
        std::string bytes;
        ASSERT_TRUE(append_message(bytes, m, ProtocolVersion::V3));
        ASSERT_TRUE(ws->send(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
    }
    size_t count(MessageType t) const {
        size_t n = 0;
        for (auto& m : got) n += m.type == t;
        return n;
    }
};

}  // namespace

TEST(TunnelFakeCloud, DestinationEndToEnd) {
    Testbed tb("tunnel_e2e");
    FakeCloud cloud(tb);
    EventLoop loop;
    LocalServer ssh(loop, LocalServer::Mode::Echo), web(loop, LocalServer::Mode::Echo);
    OpenedTunnel t = open_tunnel(cloud, R"(["SSH", "WEB"])");

    TunnelOptions o;
    o.endpoint = t.endpoint;
    o.access_token = t.destination_token;
    o.ca_file = tb.ca();
    o.services = {{"SSH", "127.0.0.1", ssh.port}, {"WEB", "127.0.0.1", web.port}};
    o.reconnect_min_ms = 100;
    o.reconnect_max_ms = 500;
    std::string ended;
    TunnelClient device(loop, o, [&](const std::string& why) { ended = why.empty() ? "?" : why; });
    ASSERT_TRUE(device.start());
    ASSERT_TRUE(run_until(
        loop, [&] { return device.connected() || !ended.empty(); }, 10000))
        << ended;
    ASSERT_TRUE(device.connected()) << ended;

    Source source(loop, tb, t);
    ASSERT_TRUE(run_until(
        loop, [&] { return source.open || source.closed; }, 10000));
    ASSERT_TRUE(source.open);

    // Two services, three connections; tiny frames towards the device.
    cloud.command(R"({"cmd": "tunnel_hooks", "tunnel_id": ")" + t.id + R"(", "to": "destination", "rechunk": 5})");
    source.send(MessageType::StreamStart, "SSH", 1);
    source.send(MessageType::ConnectionStart, "SSH", 2);
    source.send(MessageType::StreamStart, "WEB", 1);
    ASSERT_TRUE(run_until(
        loop, [&] { return ssh.accepted == 2 && web.accepted == 1; }, 10000));
    source.send(MessageType::Data, "SSH", 1, "one");
    source.send(MessageType::Data, "SSH", 2, "two");
    source.send(MessageType::Data, "WEB", 1, "web");
    ASSERT_TRUE(run_until(
        loop, [&] { return source.data[1] == "one" && source.data[2] == "two" && source.data[101] == "web"; }, 10000));

    // A bigger transfer, merged frames towards the device, back-pressure respected at the source.
    cloud.command(R"({"cmd": "tunnel_hooks", "tunnel_id": ")" + t.id +
                  R"(", "to": "destination", "rechunk": 0, "merge": true})");
    std::string big;
    for (size_t i = 0; i < 3 * 1024 * 1024; ++i) big += static_cast<char>('A' + (i * 31) % 61);
    size_t at = 0;
    source.data[1].clear();
    ASSERT_TRUE(run_until(
        loop,
        [&] {
            while (at < big.size() && source.ws->writable(kDataChunk + kDataOverhead)) {
                size_t n = std::min(kDataChunk, big.size() - at);
                source.send(MessageType::Data, "SSH", 1, big.substr(at, n));
                at += n;
            }
            return source.data[1].size() >= big.size();
        },
        60000))
        << source.data[1].size();
    EXPECT_TRUE(source.data[1] == big);
    EXPECT_LE(device.session().buffered_to_local(), 512u * 1024);

    // The source closes one connection: only that local socket goes.
    source.send(MessageType::ConnectionReset, "SSH", 2);
    ASSERT_TRUE(run_until(
        loop, [&] { return ssh.closed == 1; }, 10000));
    EXPECT_EQ(device.session().open_connections(), 2u);

    // The device's WebSocket is dropped: local sockets closed, reconnect with the same client token.
    cloud.command(R"({"cmd": "tunnel_hooks", "tunnel_id": ")" + t.id + R"(", "drop": "destination"})");
    ASSERT_TRUE(run_until(
        loop, [&] { return ssh.closed == 2 && web.closed == 1; }, 10000));
    ASSERT_TRUE(run_until(
        loop, [&] { return device.connects() == 2 && device.connected(); }, 10000))
        << ended;
    EXPECT_TRUE(ended.empty());

    // The service found nothing to refuse in what either end sent (strict checks are on).
    std::string tunnels = cloud.command(R"({"cmd": "tunnels", "tunnel_id": ")" + t.id + R"("})");
    EXPECT_NE(tunnels.find("\"violations\": []"), std::string::npos) << tunnels;

    // Closing the tunnel ends it: the reconnect is refused with 403 and not retried.
    cloud.command(R"({"cmd": "close_tunnel", "tunnel_id": ")" + t.id + R"("})");
    ASSERT_TRUE(run_until(
        loop, [&] { return !ended.empty(); }, 10000));
    EXPECT_NE(ended.find("403"), std::string::npos) << ended;
    EXPECT_EQ(ended.find(t.destination_token), std::string::npos);
}
