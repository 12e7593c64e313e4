// The secure-tunneling message layer: protobuf-lite Messages (tunnel.proto) in a byte stream of
// [2-byte big-endian length][message] frames that runs across WebSocket frames, with no regard
// for their boundaries; and the protocol versions, which decide which fields a peer may be sent.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.hpp"

namespace iot::tunnel {

enum class MessageType : int {
    Unknown = 0,
    Data = 1,
    StreamStart = 2,
    StreamReset = 3,
    SessionReset = 4,
    ServiceIds = 5,       // V2
    ConnectionStart = 6,  // V3
    ConnectionReset = 7,  // V3
};
// "DATA", "STREAM_START", ... ("type 9" for others).
std::string message_type_name(MessageType type);

// The WebSocket subprotocol the service chose decides the version: 1.0, 2.0 or 3.0.
enum class ProtocolVersion { V1 = 1, V2 = 2, V3 = 3 };
std::optional<ProtocolVersion> version_for_subprotocol(std::string_view subprotocol);
const char* subprotocol_name(ProtocolVersion version);  // "aws.iot.securetunneling-3.0"

struct TunnelMessage {
    MessageType type = MessageType::Unknown;
    int32_t stream_id = 0;
    bool ignorable = false;
    std::string payload;
    std::string service_id;                          // V2+
    std::vector<std::string> available_service_ids;  // V2+
    uint32_t connection_id = 0;                      // V3
};

constexpr size_t kMaxMessageSize = 65535;  // what the 2-byte length prefix can say
constexpr size_t kMaxPayload = 64512;      // the service's limit on a message's payload (63 KiB)
constexpr size_t kDataChunk = 32768;       // what we put in one DATA message
// Room a DATA message needs besides its payload: prefix, tags, ids and a 63-character service id.
constexpr size_t kDataOverhead = 96;

// Append one length-prefixed message to `out`, leaving out the fields `version` does not know
// (V1: service ids and connection id; V2: connection id): the service closes the WebSocket when a
// message carries a field outside the peer's schema. (libprotobuf-lite: control messages.)
Status append_message(std::string& out, const TunnelMessage& message, ProtocolVersion version);
// A DATA message straight from a buffer, encoded by hand (DataEncoder): no TunnelMessage in between.
Status append_data(std::string& out, std::string_view service_id, int32_t stream_id, uint32_t connection_id,
                   const uint8_t* payload, size_t len, ProtocolVersion version);
// One message without its length prefix, copied into a TunnelMessage (libprotobuf-lite).
Result<TunnelMessage> parse_message(const uint8_t* data, size_t len);

// The hot path. A message read in place: the payload and the strings point into the bytes parsed,
// which must outlive the view. parse_view decodes by hand with libprotobuf's rules exactly (what it
// accepts and what it makes of it, tunnel_protocol_codec_test cross-checks): proto3 wire format,
// int32 and uint32 from a varint of up to 10 bytes cut to 32 bits (a negative int32 is 10 bytes),
// a non-repeated field seen twice keeps the last value, unknown fields and known ones of another
// wire type skipped by their wire type (0, 1, 2, 5, and groups), serviceId and availableServiceIds
// checked to be UTF-8. A malformed message is an error saying what is wrong and where; nothing is
// read outside [data, data + len).
struct MessageView {
    MessageType type = MessageType::Unknown;
    int32_t stream_id = 0;
    bool ignorable = false;
    const uint8_t* payload = nullptr;  // payload_len bytes inside the message (nullptr when empty)
    size_t payload_len = 0;
    std::string_view service_id;
    uint32_t connection_id = 0;
    size_t available_service_id_count = 0;
    const uint8_t* message = nullptr;  // what was parsed
    size_t message_len = 0;
    // availableServiceIds in order (SERVICE_IDS: rare, so they are found again when asked for).
    std::vector<std::string_view> available_service_ids() const;
    // A copy that owns its bytes (for control messages).
    TunnelMessage to_message() const;
};
Result<MessageView> parse_view(const uint8_t* data, size_t len);

// A DATA message encoded around its payload, byte for byte what libprotobuf writes for it (fields
// in number order, zero values and the fields `version` does not know left out):
//
//   [2-byte length][08 01][10 streamId][22 payload length] payload [2a serviceId][38 connectionId]
//   `---------------- header: depends on the payload length -----'         `- trailer: does not -'
//
// so the payload can be read straight into its place in an output buffer: give the header the room
// it needs for the largest read, read into out + room, then write the (possibly shorter) header so
// that it ends where the payload begins:
//
//   DataEncoder enc(service_id, stream_id, connection_id, version);
//   size_t room = enc.header_size(kDataChunk);       // <= kMaxDataHeader
//   uint8_t* buf = <room + kDataChunk + enc.trailer_size() bytes>;
//   ssize_t n = recv(fd, buf + room, kDataChunk, 0);  // n > 0
//   uint8_t* message = buf + room - enc.header_size(n);
//   enc.write_header(message, n);
//   enc.write_trailer(buf + room + n);                // the message is enc.size(n) bytes from `message`
class DataEncoder {
public:
    DataEncoder(std::string_view service_id, int32_t stream_id, uint32_t connection_id, ProtocolVersion version);
    size_t header_size(size_t payload_len) const;
    size_t trailer_size() const { return trailer_size_; }
    // The whole message with its length prefix.
    size_t size(size_t payload_len) const { return header_size(payload_len) + payload_len + trailer_size_; }
    // The service's payload limit and the length prefix's (what append_data refuses).
    Status check(size_t payload_len) const;
    // Both return the bytes written: header_size(payload_len), trailer_size().
    size_t write_header(uint8_t* out, size_t payload_len) const;
    size_t write_trailer(uint8_t* out) const;

private:
    std::string_view service_id_;  // empty when left out
    int32_t stream_id_;
    uint32_t connection_id_;  // 0 when left out
    size_t trailer_size_;
};
// The longest header: prefix, type, a negative streamId (10-byte varint), payload tag and length.
constexpr size_t kMaxDataHeader = 2 + 2 + 11 + 4;

// Reassembles the message stream from arbitrary pieces (several messages in one piece, one message
// over many, a length prefix split in two). Holds at most one incomplete message.
class MessageReader {
public:
    // Calls `on_message(data, len)` for each complete message in order; stops early when it returns
    // false (its owner went away, or wants no more). Complete messages are passed straight from
    // `data` when they lie whole in it.
    template <class F>
    Status feed(const uint8_t* data, size_t len, F&& on_message);
    size_t buffered() const { return partial_.size(); }
    void reset() { partial_.clear(); }

private:
    std::string partial_;  // an incomplete frame: its prefix and what has come of its body
};

template <class F>
Status MessageReader::feed(const uint8_t* data, size_t len, F&& on_message) {
    // Complete the frame left over from an earlier piece.
    while (!partial_.empty() && len) {
        if (partial_.size() < 2) {
            partial_.push_back(static_cast<char>(*data++));
            --len;
            continue;
        }
        size_t want = 2 + ((static_cast<uint8_t>(partial_[0]) << 8) | static_cast<uint8_t>(partial_[1]));
        size_t take = want - partial_.size() < len ? want - partial_.size() : len;
        partial_.append(reinterpret_cast<const char*>(data), take);
        data += take;
        len -= take;
        if (partial_.size() == want) {
            std::string whole;
            whole.swap(partial_);
            if (!on_message(reinterpret_cast<const uint8_t*>(whole.data()) + 2, whole.size() - 2)) return {};
        }
    }
    while (len >= 2) {
        size_t body = (size_t(data[0]) << 8) | data[1];
        if (len < 2 + body) break;
        if (!on_message(data + 2, body)) return {};
        data += 2 + body;
        len -= 2 + body;
    }
    if (len) partial_.assign(reinterpret_cast<const char*>(data), len);
    return {};
}

}  // namespace iot::tunnel
