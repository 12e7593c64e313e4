// The tunnel's message layer: wire bytes of the reference, version rules, and reassembly of the
// length-prefixed stream from any split.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "base/strings.hpp"
#include "tunnel/protocol.hpp"

using namespace iot;
using namespace iot::tunnel;

namespace {
std::string hex(const std::string& s) {
    return to_hex(reinterpret_cast<const unsigned char*>(s.data()), s.size());
}

std::string encode(const TunnelMessage& m, ProtocolVersion v = ProtocolVersion::V3) {
    std::string out;
    auto ok = append_message(out, m, v);
    EXPECT_TRUE(ok) << ok.error();
    return out;
}

// Feeds `stream` in pieces of `piece` bytes and returns the messages seen.
std::vector<TunnelMessage> reassemble(const std::string& stream, size_t piece) {
    MessageReader reader;
    std::vector<TunnelMessage> seen;
    for (size_t at = 0; at < stream.size(); at += piece) {
        size_t n = std::min(piece, stream.size() - at);
        auto ok =
            reader.feed(reinterpret_cast<const uint8_t*>(stream.data()) + at, n, [&](const uint8_t* d, size_t len) {
                auto m = parse_message(d, len);
                EXPECT_TRUE(m) << m.error();
                if (m) seen.push_back(m.take());
                return true;
            });
        EXPECT_TRUE(ok);
    }
    EXPECT_EQ(reader.buffered(), 0u);
    return seen;
}
}  // namespace

TEST(TunnelProtocol, WireBytesMatchTheReference) {
    TunnelMessage ids;
    ids.type = MessageType::ServiceIds;
    ids.available_service_ids = {"ssh1"};
    EXPECT_EQ(hex(encode(ids)), "00080805320473736831");

    TunnelMessage start;
    start.type = MessageType::StreamStart;
    start.stream_id = 1;
    start.service_id = "ssh1";
    start.connection_id = 1;
    EXPECT_EQ(hex(encode(start)), "000c080210012a04737368313801");
}

TEST(TunnelProtocol, FieldNumbers) {
    TunnelMessage m;
    m.type = MessageType::Data;
    m.stream_id = 2;
    m.ignorable = true;
    m.payload = "x";
    m.service_id = "s";
    m.connection_id = 3;
    // 08 type, 10 streamId, 18 ignorable, 22 payload, 2a serviceId, 38 connectionId
    EXPECT_EQ(hex(encode(m)),
              "000e"
              "0801"
              "1002"
              "1801"
              "220178"
              "2a0173"
              "3803");
}

TEST(TunnelProtocol, VersionRulesLeaveOutUnknownFields) {
    TunnelMessage m;
    m.type = MessageType::StreamReset;
    m.stream_id = 5;
    m.service_id = "SSH";
    m.connection_id = 2;
    EXPECT_EQ(hex(encode(m, ProtocolVersion::V1)), "000408031005");
    EXPECT_EQ(hex(encode(m, ProtocolVersion::V2)),
              "00090803100"
              "52a03535348");
    EXPECT_EQ(hex(encode(m, ProtocolVersion::V3)),
              "000b08031005"
              "2a035353483802");

    std::string out;
    const uint8_t payload[3] = {1, 2, 3};
    ASSERT_TRUE(append_data(out, "SSH", 1, 4, payload, 3, ProtocolVersion::V2));
    auto parsed = parse_message(reinterpret_cast<const uint8_t*>(out.data()) + 2, out.size() - 2);
    ASSERT_TRUE(parsed);
    EXPECT_EQ(parsed->type, MessageType::Data);
    EXPECT_EQ(parsed->service_id, "SSH");
    EXPECT_EQ(parsed->connection_id, 0u);
    EXPECT_EQ(parsed->payload, std::string("\1\2\3", 3));
}

TEST(TunnelProtocol, PayloadLimits) {
    std::string out;
    std::vector<uint8_t> big(kMaxPayload + 1);
    auto r = append_data(out, "SSH", 1, 1, big.data(), big.size(), ProtocolVersion::V3);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().find("64512"), std::string::npos);
    EXPECT_TRUE(out.empty());
    ASSERT_TRUE(append_data(out, "SSH", 1, 1, big.data(), kMaxPayload, ProtocolVersion::V3));
    EXPECT_LE(out.size(), kMaxPayload + kDataOverhead);
}

TEST(TunnelProtocol, ParseErrors) {
    const uint8_t junk[] = {0xff, 0xff, 0xff};
    auto r = parse_message(junk, sizeof junk);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().find("cannot decode"), std::string::npos);
    auto empty = parse_message(junk, 0);
    ASSERT_FALSE(empty);
    EXPECT_NE(empty.error().find("no type"), std::string::npos);
    // A type from a later version still parses; the session decides (ignorable).
    const uint8_t future[] = {0x08, 0x09, 0x18, 0x01};
    auto f = parse_message(future, sizeof future);
    ASSERT_TRUE(f);
    EXPECT_EQ(static_cast<int>(f->type), 9);
    EXPECT_TRUE(f->ignorable);
}

TEST(TunnelProtocol, ReassemblyFromAnySplit) {
    std::string stream;
    for (int i = 1; i <= 20; ++i) {
        TunnelMessage m;
        m.type = MessageType::Data;
        m.stream_id = 1;
        m.connection_id = static_cast<uint32_t>(i);
        m.payload.assign(static_cast<size_t>(i * 397), static_cast<char>('a' + i % 26));
        stream += encode(m);
    }
    // Merged (all in one piece), 1-byte pieces (every prefix split), and odd sizes in between.
    for (size_t piece : {stream.size(), size_t(1), size_t(2), size_t(3), size_t(7), size_t(1000), size_t(4097)}) {
        auto seen = reassemble(stream, piece);
        ASSERT_EQ(seen.size(), 20u) << "piece " << piece;
        for (int i = 1; i <= 20; ++i) {
            EXPECT_EQ(seen[i - 1].connection_id, static_cast<uint32_t>(i));
            EXPECT_EQ(seen[i - 1].payload.size(), static_cast<size_t>(i * 397));
        }
    }
}

TEST(TunnelProtocol, ReaderStopsWhenAsked) {
    std::string stream = encode(TunnelMessage{MessageType::SessionReset, 0, false, {}, {}, {}, 0});
    stream += stream;
    MessageReader reader;
    int calls = 0;
    ASSERT_TRUE(
        reader.feed(reinterpret_cast<const uint8_t*>(stream.data()), stream.size(), [&](const uint8_t*, size_t) {
            ++calls;
            return false;
        }));
    EXPECT_EQ(calls, 1);
}

TEST(TunnelProtocol, Subprotocols) {
    EXPECT_EQ(version_for_subprotocol("aws.iot.securetunneling-1.0"), ProtocolVersion::V1);
    EXPECT_EQ(version_for_subprotocol("aws.iot.securetunneling-2.0"), ProtocolVersion::V2);
    EXPECT_EQ(version_for_subprotocol("aws.iot.securetunneling-3.0"), ProtocolVersion::V3);
    EXPECT_FALSE(version_for_subprotocol("aws.iot.securetunneling-4.0"));
    EXPECT_STREQ(subprotocol_name(ProtocolVersion::V2), "aws.iot.securetunneling-2.0");
}
