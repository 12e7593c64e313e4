// DATA messages built in place in the WebSocket's send buffer (DataEncoder + reserve_frame and
// commit_frame: the payload read straight into the frame that goes out), through the fakecloud's
// tunneling service, which unmasks every frame and refuses any message outside the schema: every
// payload size class, short payloads (moved down under a shorter header), a payload placed further
// in, reservations given up, and a long mixed stream that wraps the send ring many times.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "base/strings.hpp"
#include "base/time.hpp"
#include "json/json.hpp"
#include "support/testbed.hpp"
#include "tunnel/net.hpp"
#include "tunnel/protocol.hpp"
#include "tunnel/websocket.hpp"
#include "unit/tunnel_test_support.hpp"

using namespace iot;
using namespace iot::tunnel;
using testsupport::FakeCloud;
using testsupport::Testbed;
using tunneltest::run_until;

namespace {

std::string field(const std::string& answer, const char* name) {
    auto doc = json::parse(answer);
    if (!doc) return {};
    const cJSON* root = doc->get();
    const cJSON* body = json::get(root, "result") ? json::get(root, "result") : root;
    return json::string_or(body, name, "");
}

// One end of the tunnel: a WebSocket and what it received, parsed with parse_view.
struct End {
    std::unique_ptr<WebSocket> ws;
    MessageReader reader;
    std::string data;  // DATA payloads received, in order
    std::vector<MessageType> types;
    std::string error;
    bool open = false, closed = false;
    End(EventLoop& loop, const Testbed& tb, const std::string& endpoint, const char* mode, const std::string& token) {
        auto hp = parse_host_port(endpoint);
        WebSocketOptions o;
        o.host = hp->host;
        o.port = hp->port;
        o.path = std::string("/tunnel?local-proxy-mode=") + mode;
        o.ca_file = tb.ca();
        o.protocols = {"aws.iot.securetunneling-3.0"};
        o.headers = {{"access-token", token}, {"client-token", random_token(36)}};
        WebSocket::Handlers h;
        h.on_open = [this](const std::string&) { open = true; };
        h.on_data = [this](const uint8_t* d, size_t n) {
            (void)reader.feed(d, n, [this](const uint8_t* m, size_t len) {
                auto v = parse_view(m, len);
                if (!v) {
                    error = v.error();
                    return false;
                }
                types.push_back(v->type);
                if (v->type == MessageType::Data && v->payload_len)
                    data.append(reinterpret_cast<const char*>(v->payload), v->payload_len);
                return true;
            });
        };
        h.on_closed = [this](const WebSocketClosed& c) {
            closed = true;
            error += c.reason;
        };
        ws = std::make_unique<WebSocket>(loop, o, h);
        if (!ws->connect()) throw std::runtime_error("connect");
    }
};

// Sends `payload` as one DATA message built in place: read into the room left for the largest
// header (as a recv() would), the real header written in front of it. `offset` places the message
// further into the reserved room (commit_frame must move it).
Status send_in_place(WebSocket& ws, const std::string& payload, size_t offset = 0) {
    DataEncoder enc("SSH", 1, 1, ProtocolVersion::V3);
    size_t room = enc.header_size(kDataChunk);
    uint8_t* frame = ws.reserve_frame(offset + room + kDataChunk + enc.trailer_size());
    if (!frame) return Error("no room");
    uint8_t* at = frame + offset + room;
    memcpy(at, payload.data(), payload.size());
    uint8_t* message = at - enc.header_size(payload.size());
    enc.write_header(message, payload.size());
    enc.write_trailer(at + payload.size());
    return ws.commit_frame(message, enc.size(payload.size()));
}

}  // namespace

TEST(TunnelProtocolInPlace, DataBuiltInTheSendBufferReachesThePeerIntact) {
    Testbed tb("tunnel_inplace");
    FakeCloud cloud(tb);
    EventLoop loop;
    std::string answer = cloud.command(R"({"cmd": "open_tunnel", "notify": false, "services": ["SSH"]})");
    std::string id = field(answer, "tunnel_id"), endpoint = field(answer, "endpoint");
    ASSERT_FALSE(id.empty()) << answer;
    End device(loop, tb, endpoint, "destination", field(answer, "destination_token"));
    End source(loop, tb, endpoint, "source", field(answer, "source_token"));
    ASSERT_TRUE(run_until(loop, [&] { return (device.open && source.open) || device.closed || source.closed; }));
    ASSERT_TRUE(device.open && source.open) << device.error << source.error;

    // The source starts the stream; then the device may send DATA.
    std::string start;
    TunnelMessage m;
    m.type = MessageType::StreamStart;
    m.stream_id = 1;
    m.service_id = "SSH";
    m.connection_id = 1;
    ASSERT_TRUE(append_message(start, m, ProtocolVersion::V3));
    ASSERT_TRUE(source.ws->send(reinterpret_cast<const uint8_t*>(start.data()), start.size()));
    std::string log_answer;
    ASSERT_TRUE(run_until(loop, [&] {
        log_answer = cloud.command(R"({"cmd": "tunnel_log", "tunnel_id": ")" + id + R"(", "types": ["STREAM_START"]})");
        return log_answer.find("STREAM_START") != std::string::npos;
    }));

    std::mt19937 rng(7);
    auto blob = [&](size_t n) {
        std::string s(n, '\0');
        for (auto& c : s) c = static_cast<char>(rng());
        return s;
    };
    std::string want;
    // Every size class of both headers: 1-byte and 2-byte payload lengths (127/128), 3-byte ones
    // (16383/16384), WebSocket frames under 126 bytes (moved down), a full chunk.
    for (size_t n : {size_t(1), size_t(60), size_t(100), size_t(101), size_t(102), size_t(127), size_t(128),
                     size_t(1000), size_t(16383), size_t(16384), kDataChunk - 1, kDataChunk}) {
        std::string p = blob(n);
        ASSERT_TRUE(send_in_place(*device.ws, p)) << n;
        want += p;
    }
    // A message placed further into the room: moved down to where the frame starts.
    std::string p = blob(3000);
    ASSERT_TRUE(send_in_place(*device.ws, p, 57));
    want += p;
    // A reservation given up: by a send() in between (the frame sent is whole, the commit refused).
    ASSERT_NE(device.ws->reserve_frame(1000), nullptr);
    std::string plain;
    std::string q = blob(77);
    ASSERT_TRUE(
        append_data(plain, "SSH", 1, 1, reinterpret_cast<const uint8_t*>(q.data()), q.size(), ProtocolVersion::V3));
    ASSERT_TRUE(device.ws->send(reinterpret_cast<const uint8_t*>(plain.data()), plain.size()));
    want += q;
    const uint8_t dummy[4] = {};
    EXPECT_FALSE(device.ws->commit_frame(dummy, 4));
    // Outside the reserved room: refused, nothing queued.
    uint8_t* room = device.ws->reserve_frame(100);
    ASSERT_NE(room, nullptr);
    EXPECT_FALSE(device.ws->commit_frame(room + 50, 60));
    ASSERT_TRUE(run_until(
        loop, [&] { return source.data.size() >= want.size() || !source.error.empty(); }, 10000));
    ASSERT_EQ(source.data.size(), want.size()) << source.error;
    EXPECT_TRUE(source.data == want);

    // A long stream of mixed sizes, as fast as the send buffer takes it, while the peer stops
    // reading until the device's socket is full, twice: the socket takes part of what is queued.
    source.data.clear();
    want.clear();
    size_t sent = 0;
    int stalls = 0;
    int64_t full_since = 0, paused_at = 0;
    std::uniform_int_distribution<size_t> size(1, kDataChunk);
    ASSERT_TRUE(run_until(
        loop,
        [&] {
            int64_t now = monotonic_ms();
            if (source.ws->reading_paused()) {
                // Resumed once the device's socket took nothing for 100 ms (or after 2 s at most).
                bool full = !device.ws->writable(kDataChunk + kDataOverhead);
                full_since = !full ? 0 : full_since ? full_since : now;
                if ((full_since && now - full_since > 100) || now - paused_at > 2000 || sent >= 48u << 20) {
                    source.ws->pause_reading(false);
                    ++stalls;
                }
            } else if (stalls < 2 && sent > (stalls + 1) * (4u << 20)) {
                source.ws->pause_reading(true);
                paused_at = now;
                full_since = 0;
            }
            while (sent < 48u * 1024 * 1024 && device.ws->writable(kDataChunk + kDataOverhead)) {
                std::string piece = blob(rng() % 4 ? size(rng) : size(rng) % 200 + 1);
                if (!send_in_place(*device.ws, piece, rng() % 8 ? 0 : rng() % 16)) break;
                want += piece;
                sent += piece.size();
            }
            return source.data.size() >= 48u * 1024 * 1024 || !source.error.empty();
        },
        60000))
        << "received " << source.data.size() << " of " << sent << ", stalls " << stalls << ", source paused "
        << source.ws->reading_paused() << ", device queued " << device.ws->buffered() << " " << source.error;
    EXPECT_TRUE(source.data == want);
    EXPECT_EQ(stalls, 2);
    EXPECT_TRUE(source.error.empty()) << source.error;

    // The service, which unmasks and checks every message, found nothing to refuse.
    std::string tunnels = cloud.command(R"({"cmd": "tunnels", "tunnel_id": ")" + id + R"("})");
    EXPECT_NE(tunnels.find("\"violations\": []"), std::string::npos) << tunnels;
}

// The send ring against a model (a plain byte queue): random reservations (some given up, some
// committed short), random partial consumption, the contents always equal, frames always whole.
TEST(TunnelProtocolInPlace, SendRingKeepsFramesWholeAndInOrder) {
    std::mt19937 rng(11);
    for (size_t min_capacity : {size_t(0), size_t(4096), size_t(64 * 1024)}) {
        SendRing ring;
        ring.min_capacity = min_capacity;
        std::string model;
        size_t wraps = 0, grows = 0, limit = min_capacity ? min_capacity / 2 : 3000;
        uint8_t next = 0;
        for (int step = 0; step < 60000; ++step) {
            if (rng() % 3 && ring.size() < limit) {
                size_t n = 1 + rng() % (limit / 4 + 1);
                size_t cap = ring.capacity();
                uint8_t* p = ring.reserve(n);
                grows += ring.capacity() != cap;
                ASSERT_NE(p, nullptr);
                // All of it writable; committed short now and then, given up now and then.
                size_t used = rng() % 5 ? n : rng() % (n + 1);
                for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(next + i);
                if (rng() % 10 == 0) continue;
                ring.commit(used);
                for (size_t i = 0; i < used; ++i) model += static_cast<char>(next + i);
                next = static_cast<uint8_t>(next + used);
            } else if (ring.size()) {
                size_t len;
                const uint8_t* p = ring.front(len);
                ASSERT_GT(len, 0u);
                ASSERT_LE(len, model.size());
                ASSERT_EQ(memcmp(p, model.data(), len), 0) << "step " << step;
                size_t take = rng() % 2 ? len : 1 + rng() % len;
                bool wrapped = len < ring.size();
                ring.consume(take);
                model.erase(0, take);
                wraps += wrapped && take == len;
            }
            ASSERT_EQ(ring.size(), model.size());
        }
        EXPECT_GT(wraps, 20u) << min_capacity;  // the top left unused, the bottom used
        if (min_capacity) {
            EXPECT_EQ(ring.capacity(), min_capacity);  // never outgrown at half full
            EXPECT_EQ(grows, 1u);                      // the first allocation
        } else {
            EXPECT_GT(grows, 1u);  // from nothing, as needed
        }
    }
}
