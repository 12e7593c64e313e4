// The hand codec of the hot path (parse_view, DataEncoder, append_data) against libprotobuf itself,
// both ways: the same bytes out for every DATA message, and the same verdict and values on every
// input, from well-formed messages with any mix of fields to mutated and truncated garbage.
#include <google/protobuf/stubs/logging.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "tunnel/protocol.hpp"
#include "tunnel/tunnel.pb.h"

using namespace iot;
using namespace iot::tunnel;

namespace {
using Pb = com::amazonaws::iot::securedtunneling::Message;

std::string pb_data(std::string_view service_id, int32_t stream_id, uint32_t connection_id, const std::string& payload,
                    ProtocolVersion version) {
    Pb pb;
    pb.set_type(Pb::DATA);
    pb.set_streamid(stream_id);
    pb.set_payload(payload);
    if (version >= ProtocolVersion::V2 && !service_id.empty()) pb.set_serviceid(std::string(service_id));
    if (version >= ProtocolVersion::V3 && connection_id) pb.set_connectionid(connection_id);
    std::string body = pb.SerializeAsString();
    std::string out;
    out += static_cast<char>(body.size() >> 8);
    out += static_cast<char>(body.size() & 0xFF);
    return out + body;
}

// Builds wire bytes by hand, including what libprotobuf would never write: redundant varint
// bytes, unknown fields of every wire type, groups, repeated fields, known fields of the wrong type.
struct Wire {
    std::string b;
    // `pad` continuation bytes more than needed (a longer, still valid encoding).
    Wire& varint(uint64_t v, int pad = 0) {
        std::string tmp;
        do {
            tmp += static_cast<char>((v & 0x7F) | 0x80);
            v >>= 7;
        } while (v);
        for (int i = 0; i < pad; ++i) tmp += static_cast<char>(0x80);
        tmp.back() = static_cast<char>(tmp.back() & 0x7F);
        b += tmp;
        return *this;
    }
    Wire& tag(uint32_t field, uint32_t wire, int pad = 0) { return varint((uint64_t(field) << 3) | wire, pad); }
    Wire& var(uint32_t field, uint64_t v, int pad = 0) {
        tag(field, 0);
        return varint(v, pad);
    }
    Wire& bytes(uint32_t field, const std::string& s) {
        tag(field, 2);
        varint(s.size());
        b += s;
        return *this;
    }
    Wire& fixed(uint32_t field, int size) {
        tag(field, size == 8 ? 1 : 5);
        b += std::string(static_cast<size_t>(size), '\x5a');
        return *this;
    }
    Wire& group(uint32_t field, const Wire& inner) {
        tag(field, 3);
        b += inner.b;
        return tag(field, 4);
    }
};

struct Verdict {
    bool ok = false;
    int32_t type = 0, stream_id = 0;
    bool ignorable = false;
    std::string payload, service_id;
    std::vector<std::string> ids;
    uint32_t connection_id = 0;
    bool operator==(const Verdict& o) const {
        return ok == o.ok && (!ok || (type == o.type && stream_id == o.stream_id && ignorable == o.ignorable &&
                                      payload == o.payload && service_id == o.service_id && ids == o.ids &&
                                      connection_id == o.connection_id));
    }
};

std::ostream& operator<<(std::ostream& os, const Verdict& v) {
    if (!v.ok) return os << "(refused)";
    os << "type " << v.type << " stream " << v.stream_id << " ignorable " << v.ignorable << " payload "
       << v.payload.size() << " bytes service '" << v.service_id << "' ids " << v.ids.size() << " connection "
       << v.connection_id;
    return os;
}

// What libprotobuf makes of the bytes; parse_view additionally refuses a message without a type.
Verdict by_libprotobuf(const std::string& in) {
    google::protobuf::LogSilencer quiet;  // it logs invalid UTF-8
    Verdict v;
    Pb pb;
    v.ok = pb.ParseFromArray(in.data(), static_cast<int>(in.size())) && pb.type() != 0;
    if (!v.ok) return v;
    v.type = pb.type();
    v.stream_id = pb.streamid();
    v.ignorable = pb.ignorable();
    v.payload = pb.payload();
    v.service_id = pb.serviceid();
    for (auto& id : pb.availableserviceids()) v.ids.push_back(id);
    v.connection_id = pb.connectionid();
    return v;
}

Verdict by_hand(const std::string& in) {
    // An exact-size heap copy: a read past the end is a read past the allocation (ASan sees it).
    std::vector<uint8_t> exact(in.begin(), in.end());
    Verdict v;
    auto m = parse_view(exact.empty() ? nullptr : exact.data(), exact.size());
    v.ok = m.ok();
    if (!v.ok) {
        EXPECT_FALSE(m.error().empty());
        return v;
    }
    v.type = static_cast<int32_t>(m->type);
    v.stream_id = m->stream_id;
    v.ignorable = m->ignorable;
    if (m->payload_len) v.payload.assign(reinterpret_cast<const char*>(m->payload), m->payload_len);
    v.service_id = std::string(m->service_id);
    for (auto id : m->available_service_ids()) v.ids.emplace_back(id);
    EXPECT_EQ(m->available_service_id_count, v.ids.size());
    v.connection_id = m->connection_id;
    return v;
}

std::string hex(const std::string& s) {
    static const char* d = "0123456789abcdef";
    std::string out;
    for (unsigned char c : s) {
        out += d[c >> 4];
        out += d[c & 15];
    }
    return out;
}

struct Gen {
    std::mt19937_64 rng{20240601};
    uint64_t below(uint64_t n) { return n ? rng() % n : 0; }
    bool chance(int percent) { return below(100) < static_cast<uint64_t>(percent); }

    std::string text(size_t max) {
        static const std::string utf8[] = {"ssh", "SSH1", "é", "服务", "🙂", "a-b_c", "", "x"};
        static const std::string bad[] = {"\xff",     "\xc0\xaf", "\xed\xa0\x80",        "\xf4\x90\x80\x80",
                                          "\xe2\x82", "\x80",     "\xf8\x88\x80\x80\x80"};
        std::string s;
        size_t n = below(max + 1);
        while (s.size() < n) s += chance(97) ? utf8[below(8)] : bad[below(7)];
        return s;
    }
    std::string blob(size_t n) {
        std::string s(n + 8, '\0');
        for (size_t i = 0; i < n; i += 8) {
            uint64_t r = rng();
            memcpy(&s[i], &r, 8);
        }
        s.resize(n);
        return s;
    }
    uint64_t value() {
        switch (below(6)) {
            case 0:
                return below(128);
            case 1:
                return below(1u << 14);
            case 2:
                return rng() & 0xFFFFFFFFu;
            case 3:
                return static_cast<uint64_t>(-static_cast<int64_t>(below(1000) + 1));  // a negative int32/int64
            case 4:
                return rng();  // bits past 32 (cut by libprotobuf for 32-bit fields)
            default:
                return below(8);
        }
    }
    int pad(uint64_t v, int max_total) {  // redundant bytes, the total staying valid
        size_t need = 1;
        for (uint64_t x = v; x >= 0x80; x >>= 7) ++need;
        int room = max_total - static_cast<int>(need);
        return chance(85) || room <= 0 ? 0 : static_cast<int>(below(static_cast<uint64_t>(room) + 1));
    }

    Wire unknown_group(int depth) {
        Wire g;
        int n = static_cast<int>(below(3));
        for (int i = 0; i < n; ++i) {
            uint32_t f = static_cast<uint32_t>(1 + below(20));
            switch (below(depth < 3 ? 5 : 4)) {
                case 0:
                    g.var(f, value());
                    break;
                case 1:
                    g.bytes(f, blob(below(10)));
                    break;
                case 2:
                    g.fixed(f, 4);
                    break;
                case 3:
                    g.fixed(f, 8);
                    break;
                default:
                    g.group(f, unknown_group(depth + 1));
            }
        }
        return g;
    }

    // A message with any mix of fields, in any order, some repeated, some unknown.
    std::string message() {
        Wire w;
        int fields = static_cast<int>(below(9));
        if (chance(90)) w.var(1, chance(80) ? 1 + below(7) : value(), 0);
        for (int i = 0; i < fields; ++i) {
            uint32_t f = static_cast<uint32_t>(chance(80) ? 1 + below(7) : 8 + below(3000));
            int kind = static_cast<int>(below(100));
            if (kind < 8 && f <= 7) {  // a known field with another wire type: skipped as unknown
                if (f == 4 || f == 5 || f == 6)
                    w.var(f, value());
                else
                    w.bytes(f, blob(below(6)));
                continue;
            }
            if (kind < 12) {
                w.group(f, unknown_group(0));
                continue;
            }
            if (kind < 16) {
                w.fixed(f, chance(50) ? 4 : 8);
                continue;
            }
            switch (f) {
                case 1:
                case 2:
                case 3:
                case 7: {
                    uint64_t v = value();
                    w.tag(f, 0, chance(10) ? 1 : 0).varint(v, pad(v, 10));
                    break;
                }
                case 4: {
                    static const size_t sizes[] = {0, 1, 127, 128, 16383, 16384, 32768, 64512};
                    size_t n = chance(20) ? sizes[below(8)] : below(300);
                    w.bytes(f, blob(n));
                    break;
                }
                case 5:
                case 6:
                    w.bytes(f, text(12));
                    break;
                default:
                    if (chance(50))
                        w.var(f, value());
                    else
                        w.bytes(f, blob(below(20)));
            }
        }
        return w.b;
    }

    std::string mutate(std::string s) {
        int n = 1 + static_cast<int>(below(3));
        for (int i = 0; i < n; ++i) {
            switch (below(5)) {
                case 0:
                    if (!s.empty()) s[below(s.size())] = static_cast<char>(rng());
                    break;
                case 1:
                    if (!s.empty()) s.resize(below(s.size()));
                    break;
                case 2:
                    s.insert(below(s.size() + 1), 1, static_cast<char>(rng()));
                    break;
                case 3:
                    if (!s.empty()) s[below(s.size())] ^= static_cast<char>(1u << below(8));
                    break;
                default:
                    if (!s.empty()) s.erase(below(s.size()), 1);
            }
        }
        return s;
    }
};

struct Tally {
    int accepted = 0, refused = 0;
};

void expect_same(const std::string& in, Tally* tally = nullptr) {
    Verdict lib = by_libprotobuf(in), hand = by_hand(in);
    ASSERT_EQ(hand, lib) << "input " << (in.size() > 200 ? hex(in.substr(0, 200)) + "..." : hex(in));
    if (tally) ++(lib.ok ? tally->accepted : tally->refused);
}
}  // namespace

TEST(TunnelProtocolCodec, DataBytesAreLibprotobufs) {
    Gen g;
    const int32_t streams[] = {1, 2, 127, 128, 300, INT32_MAX, -1, -2, INT32_MIN, 0};
    const uint32_t connections[] = {0, 1, 127, 128, 65535, 1u << 28, UINT32_MAX};
    const size_t sizes[] = {0, 1, 2, 127, 128, 129, 16383, 16384, 16385, 32768, 64511, 64512};
    const std::string services[] = {"", "SSH", "ssh1", std::string(63, 's'), std::string(200, 'w'), "服务"};
    for (int i = 0; i < 3000; ++i) {
        int32_t stream = i < 200 ? streams[i % 10] : static_cast<int32_t>(g.value());
        uint32_t conn = i < 200 ? connections[i % 7] : static_cast<uint32_t>(g.value());
        size_t n = i % 3 ? sizes[g.below(12)] : g.below(2000);
        std::string service = services[g.below(6)];
        auto version = static_cast<ProtocolVersion>(1 + i % 3);
        std::string payload = g.blob(n);
        std::string ours;
        ASSERT_TRUE(append_data(ours, service, stream, conn, reinterpret_cast<const uint8_t*>(payload.data()),
                                payload.size(), version));
        std::string theirs = pb_data(service, stream, conn, payload, version);
        ASSERT_EQ(ours.size(), theirs.size()) << "stream " << stream << " connection " << conn << " payload " << n;
        ASSERT_TRUE(ours == theirs) << "stream " << stream << " connection " << conn << " payload " << n;
        // And it decodes, by both, to what went in.
        Pb pb;
        ASSERT_TRUE(pb.ParseFromArray(ours.data() + 2, static_cast<int>(ours.size() - 2)));
        EXPECT_EQ(pb.payload(), payload);
        auto view = parse_view(reinterpret_cast<const uint8_t*>(ours.data()) + 2, ours.size() - 2);
        ASSERT_TRUE(view) << view.error();
        EXPECT_EQ(view->type, MessageType::Data);
        EXPECT_EQ(view->stream_id, stream);
        EXPECT_EQ(view->payload_len, n);
        EXPECT_EQ(view->connection_id, version == ProtocolVersion::V3 ? conn : 0u);
        EXPECT_EQ(view->service_id, version == ProtocolVersion::V1 ? std::string_view() : service);
    }
}

TEST(TunnelProtocolCodec, DataEncodedInPlaceAroundAReadPayload) {
    Gen g;
    for (int32_t stream : {1, 300, -7}) {
        for (auto version : {ProtocolVersion::V1, ProtocolVersion::V3}) {
            DataEncoder enc("SSH", stream, 5, version);
            size_t room = enc.header_size(kDataChunk);
            EXPECT_LE(room, kMaxDataHeader);
            for (size_t n : {size_t(1), size_t(100), size_t(127), size_t(128), size_t(16383), size_t(16384),
                             kDataChunk - 1, kDataChunk}) {
                std::vector<uint8_t> buf(room + kDataChunk + enc.trailer_size(), 0xEE);
                std::string payload = g.blob(n);
                memcpy(buf.data() + room, payload.data(), n);  // what recv() would do
                ASSERT_LE(enc.header_size(n), room);
                uint8_t* message = buf.data() + room - enc.header_size(n);
                EXPECT_EQ(enc.write_header(message, n), enc.header_size(n));
                EXPECT_EQ(enc.write_trailer(buf.data() + room + n), enc.trailer_size());
                EXPECT_EQ(message == buf.data(), n == kDataChunk || enc.header_size(n) == room);
                std::string built(reinterpret_cast<char*>(message), enc.size(n));
                std::string want;
                ASSERT_TRUE(
                    append_data(want, "SSH", stream, 5, reinterpret_cast<const uint8_t*>(payload.data()), n, version));
                ASSERT_EQ(hex(built), hex(want)) << n;
            }
        }
    }
    // Limits: as append_data always had them.
    DataEncoder enc("SSH", 1, 1, ProtocolVersion::V3);
    EXPECT_TRUE(enc.check(kMaxPayload));
    auto r = enc.check(kMaxPayload + 1);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().find("64512"), std::string::npos);
    DataEncoder long_id(std::string(2000, 'x'), 1, 1, ProtocolVersion::V3);
    auto too_long = long_id.check(kMaxPayload);
    ASSERT_FALSE(too_long);
    EXPECT_NE(too_long.error().find("over the 65535-byte limit"), std::string::npos);
}

TEST(TunnelProtocolCodec, ParseViewAgreesWithLibprotobufOnGeneratedMessages) {
    Gen g;
    Tally tally;
    for (int i = 0; i < 40000; ++i) {
        std::string m = g.message();
        expect_same(m, &tally);
        if (HasFatalFailure()) return;
    }
    // Both verdicts came up often (not a generator that only makes one kind).
    EXPECT_GT(tally.accepted, 20000) << tally.refused;
    EXPECT_GT(tally.refused, 2000) << tally.accepted;
}

TEST(TunnelProtocolCodec, ParseViewAgreesWithLibprotobufOnMutatedAndTruncatedInput) {
    Gen g;
    Tally tally;
    for (int i = 0; i < 40000; ++i) {
        std::string m = g.mutate(g.message());
        expect_same(m, &tally);
        if (HasFatalFailure()) return;
    }
    EXPECT_GT(tally.accepted, 4000) << tally.refused;
    EXPECT_GT(tally.refused, 4000) << tally.accepted;
    // Every prefix of a few messages (every truncation point).
    for (int i = 0; i < 200; ++i) {
        std::string m = g.message();
        for (size_t n = 0; n <= m.size() && n < 400; ++n) expect_same(m.substr(0, n));
        if (HasFatalFailure()) return;
    }
    // Short random garbage.
    for (int i = 0; i < 40000; ++i) expect_same(g.blob(g.below(24)));
}

TEST(TunnelProtocolCodec, ParseViewEdgeValues) {
    // A negative stream id (10-byte varint), the largest connection id, a 63 KiB payload, no payload.
    std::string payload(kMaxPayload, 'p');
    std::string wire;
    ASSERT_TRUE(append_data(wire, "ssh1", -5, UINT32_MAX, reinterpret_cast<const uint8_t*>(payload.data()),
                            payload.size(), ProtocolVersion::V3));
    auto v = parse_view(reinterpret_cast<const uint8_t*>(wire.data()) + 2, wire.size() - 2);
    ASSERT_TRUE(v) << v.error();
    EXPECT_EQ(v->stream_id, -5);
    EXPECT_EQ(v->connection_id, UINT32_MAX);
    EXPECT_EQ(v->payload_len, kMaxPayload);
    EXPECT_EQ(v->payload, reinterpret_cast<const uint8_t*>(wire.data()) + 2 + 2 + 11 + 4);
    EXPECT_EQ(v->service_id, "ssh1");
    expect_same(wire.substr(2));
    TunnelMessage copy = v->to_message();
    EXPECT_EQ(copy.payload, payload);
    EXPECT_EQ(copy.stream_id, -5);
    EXPECT_EQ(copy.service_id, "ssh1");
    EXPECT_EQ(copy.connection_id, UINT32_MAX);

    const uint8_t reset[] = {0x08, 0x03, 0x10, 0x01};
    auto r = parse_view(reset, sizeof reset);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->type, MessageType::StreamReset);
    EXPECT_EQ(r->payload, nullptr);
    EXPECT_EQ(r->payload_len, 0u);

    // SERVICE_IDS, the service's own bytes (reference §4).
    const uint8_t ids[] = {0x08, 0x05, 0x32, 0x04, 's', 's', 'h', '1', 0x32, 0x03, 'w', 'e', 'b'};
    auto s = parse_view(ids, sizeof ids);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->type, MessageType::ServiceIds);
    EXPECT_EQ(s->available_service_id_count, 2u);
    EXPECT_EQ(s->available_service_ids(), (std::vector<std::string_view>{"ssh1", "web"}));
    TunnelMessage owned = s->to_message();
    EXPECT_EQ(owned.type, MessageType::ServiceIds);
    EXPECT_EQ(owned.available_service_ids, (std::vector<std::string>{"ssh1", "web"}));
    auto lib = parse_message(ids, sizeof ids);
    ASSERT_TRUE(lib);
    EXPECT_EQ(lib->available_service_ids, owned.available_service_ids);

    // Repeated scalar fields: the last one wins, as with libprotobuf.
    std::string twice = Wire().var(1, 1).var(2, 7).bytes(4, "old").var(2, 9).bytes(4, "new").var(1, 3).b;
    auto t = parse_view(reinterpret_cast<const uint8_t*>(twice.data()), twice.size());
    ASSERT_TRUE(t);
    EXPECT_EQ(t->type, MessageType::StreamReset);
    EXPECT_EQ(t->stream_id, 9);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(t->payload), t->payload_len), "new");
    expect_same(twice);

    // A type from a later version parses; ignorable says whether it may be skipped.
    const uint8_t future[] = {0x08, 0x09, 0x18, 0x01};
    auto f = parse_view(future, sizeof future);
    ASSERT_TRUE(f);
    EXPECT_EQ(static_cast<int>(f->type), 9);
    EXPECT_TRUE(f->ignorable);
}

TEST(TunnelProtocolCodec, MalformedInputIsAnErrorSayingWhat) {
    struct Case {
        std::string bytes, says;
    };
    std::string nested;
    for (int i = 0; i < 101; ++i) nested += "\x4b";  // field 9, start group
    std::string deep = "\x08\x01" + nested;
    const Case cases[] = {
        {"", "has no type"},
        {std::string("\x10\x01", 2), "has no type"},
        {std::string("\x08\x00", 2), "has no type"},
        {"\x08", "field 1 (type) is a truncated varint at byte 0"},
        {"\x08\x01\x10\xff\xff", "field 2 (streamId) is a truncated varint at byte 2"},
        {"\x08\x01\x38\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "field 7 (connectionId) is a varint longer"},
        {"\x08\x01\x22\x05\x61\x62\x63", "field 4 (payload) is 5 bytes long, past the end (3 bytes left) at byte 3"},
        {"\x08\x01\x22\xff\xff\xff\xff\x0f", "field 4 (payload) is 4294967295 bytes long, past the end"},
        {"\x08\x01\x22\xff\xff\xff\xff\xff\x01", "field 4 (payload): its length is longer than 5 bytes"},
        {"\x08\x01\x2a", "field 5 (serviceId): its length is truncated"},
        {"\x08\x01\x2a\x02\xc3\x28", "field 5 (serviceId) is not UTF-8 at byte 2"},
        {"\x08\x05\x32\x01\xff", "field 6 (availableServiceIds) is not UTF-8"},
        {"\x08\x01\x0e", "field 1 (type) has wire type 6 (there is none)"},
        {"\x08\x01\x7f", "field 15 has wire type 7"},
        {std::string("\x08\x01\x00", 3), "field number 0 (tag 0) at byte 2"},
        {"\x08\x01\x02\x00", "field number 0 (tag 2)"},
        {"\x08\x01\x4c", "an end-group tag of field 9 outside a group"},
        {"\x08\x01\x4b\x08\x01", "the group of field 9 is not closed"},
        {"\x08\x01\x4b\x54", "the group of field 9 is closed by an end-group tag of field 10"},
        {"\x08\x01\x49\x01\x02\x03", "field 9 (fixed64) runs past the end"},
        {"\x08\x01\x4d\x01\x02\x03", "field 9 (fixed32) runs past the end"},
        {"\x08\x01\xff\xff\xff\xff\xff\x01", "a tag longer than 5 bytes at byte 2"},
        {"\x08\x01\x80", "a truncated tag at byte 2"},
        {deep, "groups nested deeper than 100"},
    };
    for (auto& c : cases) {
        auto r = parse_view(reinterpret_cast<const uint8_t*>(c.bytes.data()), c.bytes.size());
        ASSERT_FALSE(r) << hex(c.bytes);
        EXPECT_NE(r.error().find(c.says), std::string::npos) << hex(c.bytes) << ": " << r.error();
        expect_same(c.bytes);  // libprotobuf refuses it too
    }
    // 100 nested groups are fine (libprotobuf's recursion limit), as is a group that holds anything.
    std::string ok = "\x08\x01";
    for (int i = 0; i < 100; ++i) ok += "\x4b";
    for (int i = 0; i < 100; ++i) ok += "\x4c";
    ok += Wire().group(12, Wire().var(1, 5).bytes(4, "x").fixed(3, 8)).b;
    auto r = parse_view(reinterpret_cast<const uint8_t*>(ok.data()), ok.size());
    ASSERT_TRUE(r) << r.error();
    EXPECT_EQ(r->type, MessageType::Data);  // the group's type 5 is not the message's
    expect_same(ok);
}
