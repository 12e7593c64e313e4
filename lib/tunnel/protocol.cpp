#include "tunnel/protocol.hpp"

#include <cstring>

#include "base/strings.hpp"
#include "tunnel/tunnel.pb.h"

namespace iot::tunnel {
namespace {
using Pb = com::amazonaws::iot::securedtunneling::Message;

Status append_pb(std::string& out, const Pb& pb) {
    size_t size = pb.ByteSizeLong();
    if (size > kMaxMessageSize)
        return Error(format("a %zu-byte tunnel message is over the %zu-byte limit", size, kMaxMessageSize));
    size_t at = out.size();
    out.resize(at + 2 + size);
    out[at] = static_cast<char>(size >> 8);
    out[at + 1] = static_cast<char>(size & 0xFF);
    if (!pb.SerializeToArray(&out[at + 2], static_cast<int>(size))) {
        out.resize(at);
        return Error("cannot encode a tunnel message");
    }
    return {};
}

void set_ids(Pb& pb, const std::string& service_id, uint32_t connection_id, ProtocolVersion version) {
    if (version >= ProtocolVersion::V2 && !service_id.empty()) pb.set_serviceid(service_id);
    if (version >= ProtocolVersion::V3 && connection_id) pb.set_connectionid(connection_id);
}

// ---- the hand codec (hot path) ----

// Varints as libprotobuf 3.21 reads them: at most `max` bytes (10 for values, 5 for tags and
// lengths), the bits past 64 dropped; a caller wanting 32 bits cuts the value.
enum class VarintError { None, Truncated, TooLong };

inline const uint8_t* read_varint(const uint8_t* p, const uint8_t* end, unsigned max, uint64_t& value,
                                  VarintError& error) {
    if (p < end && *p < 0x80) {  // the common one-byte case
        value = *p;
        return p + 1;
    }
    uint64_t v = 0;
    for (unsigned i = 0; i < max; ++i) {
        if (p == end) {
            error = VarintError::Truncated;
            return nullptr;
        }
        uint8_t b = *p++;
        v |= uint64_t(b & 0x7F) << (7 * i);
        if (!(b & 0x80)) {
            value = v;
            return p;
        }
    }
    error = VarintError::TooLong;
    return nullptr;
}

constexpr size_t varint_size(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        ++n;
    }
    return n;
}

inline uint8_t* write_varint(uint8_t* p, uint64_t v) {
    while (v >= 0x80) {
        *p++ = static_cast<uint8_t>(v | 0x80);
        v >>= 7;
    }
    *p++ = static_cast<uint8_t>(v);
    return p;
}

// UTF-8 as libprotobuf checks proto3 strings: no overlong forms, no surrogates, nothing past U+10FFFF.
bool valid_utf8(const uint8_t* p, size_t len) {
    const uint8_t* end = p + len;
    while (p < end) {
        uint8_t c = *p;
        if (c < 0x80) {
            ++p;
            continue;
        }
        size_t n;
        uint8_t lo = 0x80, hi = 0xBF;  // the range of the second byte
        if (c >= 0xC2 && c <= 0xDF) {
            n = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 3;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 4;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else {
            return false;
        }
        if (size_t(end - p) < n || p[1] < lo || p[1] > hi) return false;
        for (size_t i = 2; i < n; ++i)
            if ((p[i] & 0xC0) != 0x80) return false;
        p += n;
    }
    return true;
}

const char* field_name(uint32_t field) {
    static const char* const names[] = {
        "", "type", "streamId", "ignorable", "payload", "serviceId", "availableServiceIds", "connectionId"};
    return field >= 1 && field <= 7 ? names[field] : nullptr;
}

std::string describe_field(uint32_t field) {
    const char* name = field_name(field);
    return name ? format("field %u (%s)", field, name) : format("field %u", field);
}

const char* varint_problem(VarintError e) {
    return e == VarintError::TooLong ? "is a varint longer than it may be" : "is a truncated varint";
}

// libprotobuf's limit on nested groups (its default recursion limit).
constexpr int kMaxGroupDepth = 100;

// Walks the top-level fields of a message, skipping groups (with what they hold) as libprotobuf does,
// and calls on_field(field, wire_type, value, bytes) for each: `value` is the varint (wire type 0) or
// the length (2, the field's bytes at `bytes`); fixed-size fields (1, 5) come with their bytes.
// Returns false with `error` set when the message is malformed.
template <class F>
bool walk_fields(const uint8_t* data, size_t len, F&& on_field, std::string& error) {
    const uint8_t* p = data;
    const uint8_t* end = data + len;
    uint32_t groups[kMaxGroupDepth];
    int depth = 0;
    VarintError verr = VarintError::None;
    auto fail = [&](const uint8_t* at, std::string what) {
        error = format("%s at byte %zu", what.c_str(), static_cast<size_t>(at - data));
        return false;
    };
    while (p < end || depth) {
        const uint8_t* at = p;
        if (p == end)
            return fail(at, format("the group of field %u is not closed (end of message)", groups[depth - 1]));
        uint64_t key;
        p = read_varint(p, end, 5, key, verr);
        if (!p) return fail(at, verr == VarintError::TooLong ? "a tag longer than 5 bytes" : "a truncated tag");
        uint32_t tag = static_cast<uint32_t>(key);
        uint32_t field = tag >> 3, wire = tag & 7;
        if (field == 0) return fail(at, format("field number 0 (tag %u)", tag));
        uint64_t value = 0;
        const uint8_t* bytes = nullptr;
        switch (wire) {
            case 0:
                p = read_varint(p, end, 10, value, verr);
                if (!p) return fail(at, describe_field(field) + " " + varint_problem(verr));
                break;
            case 1:
            case 5: {
                size_t n = wire == 1 ? 8 : 4;
                if (size_t(end - p) < n)
                    return fail(at, format("%s (fixed%zu) runs past the end", describe_field(field).c_str(), n * 8));
                bytes = p;
                p += n;
                break;
            }
            case 2: {
                const uint8_t* len_at = p;
                p = read_varint(p, end, 5, value, verr);
                if (!p)
                    return fail(at, describe_field(field) + ": its length " +
                                        (verr == VarintError::TooLong ? "is longer than 5 bytes" : "is truncated"));
                if (value > size_t(end - p))
                    return fail(len_at, format("%s is %llu bytes long, past the end (%zu bytes left)",
                                               describe_field(field).c_str(), static_cast<unsigned long long>(value),
                                               static_cast<size_t>(end - p)));
                bytes = p;
                p += value;
                break;
            }
            case 3:
                if (depth == kMaxGroupDepth) return fail(at, format("groups nested deeper than %d", kMaxGroupDepth));
                groups[depth++] = field;
                continue;
            case 4:
                if (!depth) return fail(at, format("an end-group tag of field %u outside a group", field));
                if (groups[depth - 1] != field)
                    return fail(at, format("the group of field %u is closed by an end-group tag of field %u",
                                           groups[depth - 1], field));
                --depth;
                continue;
            default:
                return fail(at, format("%s has wire type %u (there is none)", describe_field(field).c_str(), wire));
        }
        if (!depth && !on_field(field, wire, value, bytes, at)) return false;
    }
    return true;
}
}  // namespace

std::vector<std::string_view> MessageView::available_service_ids() const {
    std::vector<std::string_view> out;
    out.reserve(available_service_id_count);
    std::string error;
    (void)walk_fields(
        message, message_len,
        [&](uint32_t field, uint32_t wire, uint64_t value, const uint8_t* bytes, const uint8_t*) {
            if (field == 6 && wire == 2) out.emplace_back(reinterpret_cast<const char*>(bytes), value);
            return true;
        },
        error);
    return out;
}

TunnelMessage MessageView::to_message() const {
    TunnelMessage m;
    m.type = type;
    m.stream_id = stream_id;
    m.ignorable = ignorable;
    if (payload_len) m.payload.assign(reinterpret_cast<const char*>(payload), payload_len);
    m.service_id = std::string(service_id);
    if (available_service_id_count)
        for (auto id : available_service_ids()) m.available_service_ids.emplace_back(id);
    m.connection_id = connection_id;
    return m;
}

Result<MessageView> parse_view(const uint8_t* data, size_t len) {
    MessageView m;
    m.message = data;
    m.message_len = len;
    uint32_t type = 0;
    std::string error;
    bool ok = walk_fields(
        data, len,
        [&](uint32_t field, uint32_t wire, uint64_t value, const uint8_t* bytes, const uint8_t* at) {
            // A known field of another wire type is an unknown field to libprotobuf: skipped.
            switch (field) {
                case 1:
                    if (wire == 0) type = static_cast<uint32_t>(value);
                    break;
                case 2:
                    if (wire == 0) m.stream_id = static_cast<int32_t>(static_cast<uint32_t>(value));
                    break;
                case 3:
                    if (wire == 0) m.ignorable = value != 0;
                    break;
                case 4:
                    if (wire == 2) {
                        m.payload = value ? bytes : nullptr;
                        m.payload_len = value;
                    }
                    break;
                case 5:
                case 6:
                    if (wire != 2) break;
                    if (!valid_utf8(bytes, value)) {
                        error = format("%s is not UTF-8 at byte %zu", describe_field(field).c_str(),
                                       static_cast<size_t>(at - data));
                        return false;
                    }
                    if (field == 5)
                        m.service_id = std::string_view(reinterpret_cast<const char*>(bytes), value);
                    else
                        ++m.available_service_id_count;
                    break;
                case 7:
                    if (wire == 0) m.connection_id = static_cast<uint32_t>(value);
                    break;
                default:
                    break;
            }
            return true;
        },
        error);
    if (!ok) return Error(format("cannot decode a %zu-byte tunnel message: %s", len, error.c_str()));
    m.type = static_cast<MessageType>(static_cast<int32_t>(type));
    if (m.type == MessageType::Unknown) return Error(format("a %zu-byte tunnel message has no type", len));
    return m;
}

DataEncoder::DataEncoder(std::string_view service_id, int32_t stream_id, uint32_t connection_id,
                         ProtocolVersion version)
    : service_id_(version >= ProtocolVersion::V2 ? service_id : std::string_view()),
      stream_id_(stream_id),
      connection_id_(version >= ProtocolVersion::V3 ? connection_id : 0) {
    trailer_size_ = 0;
    if (!service_id_.empty()) trailer_size_ += 1 + varint_size(service_id_.size()) + service_id_.size();
    if (connection_id_) trailer_size_ += 1 + varint_size(connection_id_);
}

size_t DataEncoder::header_size(size_t payload_len) const {
    // An int32 goes out sign-extended to 64 bits: a negative one takes 10 bytes.
    size_t n = 2 + 2;
    if (stream_id_) n += 1 + varint_size(static_cast<uint64_t>(static_cast<int64_t>(stream_id_)));
    if (payload_len) n += 1 + varint_size(payload_len);
    return n;
}

Status DataEncoder::check(size_t payload_len) const {
    if (payload_len > kMaxPayload)
        return Error(format("a %zu-byte payload is over the service's %zu-byte limit", payload_len, kMaxPayload));
    size_t body = size(payload_len) - 2;
    if (body > kMaxMessageSize)
        return Error(format("a %zu-byte tunnel message is over the %zu-byte limit", body, kMaxMessageSize));
    return {};
}

size_t DataEncoder::write_header(uint8_t* out, size_t payload_len) const {
    size_t body = size(payload_len) - 2;
    uint8_t* p = out;
    *p++ = static_cast<uint8_t>(body >> 8);
    *p++ = static_cast<uint8_t>(body);
    *p++ = 0x08;  // type: DATA
    *p++ = 0x01;
    if (stream_id_) {
        *p++ = 0x10;
        p = write_varint(p, static_cast<uint64_t>(static_cast<int64_t>(stream_id_)));
    }
    if (payload_len) {
        *p++ = 0x22;
        p = write_varint(p, payload_len);
    }
    return static_cast<size_t>(p - out);
}

size_t DataEncoder::write_trailer(uint8_t* out) const {
    uint8_t* p = out;
    if (!service_id_.empty()) {
        *p++ = 0x2a;
        p = write_varint(p, service_id_.size());
        memcpy(p, service_id_.data(), service_id_.size());
        p += service_id_.size();
    }
    if (connection_id_) {
        *p++ = 0x38;
        p = write_varint(p, connection_id_);
    }
    return static_cast<size_t>(p - out);
}

std::string message_type_name(MessageType type) {
    switch (type) {
        case MessageType::Unknown:
            return "UNKNOWN";
        case MessageType::Data:
            return "DATA";
        case MessageType::StreamStart:
            return "STREAM_START";
        case MessageType::StreamReset:
            return "STREAM_RESET";
        case MessageType::SessionReset:
            return "SESSION_RESET";
        case MessageType::ServiceIds:
            return "SERVICE_IDS";
        case MessageType::ConnectionStart:
            return "CONNECTION_START";
        case MessageType::ConnectionReset:
            return "CONNECTION_RESET";
    }
    return format("type %d", static_cast<int>(type));
}

std::optional<ProtocolVersion> version_for_subprotocol(std::string_view subprotocol) {
    if (subprotocol == "aws.iot.securetunneling-1.0") return ProtocolVersion::V1;
    if (subprotocol == "aws.iot.securetunneling-2.0") return ProtocolVersion::V2;
    if (subprotocol == "aws.iot.securetunneling-3.0") return ProtocolVersion::V3;
    return std::nullopt;
}

const char* subprotocol_name(ProtocolVersion version) {
    switch (version) {
        case ProtocolVersion::V1:
            return "aws.iot.securetunneling-1.0";
        case ProtocolVersion::V2:
            return "aws.iot.securetunneling-2.0";
        case ProtocolVersion::V3:
            break;
    }
    return "aws.iot.securetunneling-3.0";
}

Status append_message(std::string& out, const TunnelMessage& m, ProtocolVersion version) {
    if (m.payload.size() > kMaxPayload)
        return Error(format("a %zu-byte payload is over the service's %zu-byte limit", m.payload.size(), kMaxPayload));
    Pb pb;
    pb.set_type(static_cast<Pb::Type>(m.type));
    pb.set_streamid(m.stream_id);
    pb.set_ignorable(m.ignorable);
    if (!m.payload.empty()) pb.set_payload(m.payload);
    set_ids(pb, m.service_id, m.connection_id, version);
    if (version >= ProtocolVersion::V2)
        for (auto& id : m.available_service_ids) pb.add_availableserviceids(id);
    return append_pb(out, pb);
}

Status append_data(std::string& out, std::string_view service_id, int32_t stream_id, uint32_t connection_id,
                   const uint8_t* payload, size_t len, ProtocolVersion version) {
    DataEncoder enc(service_id, stream_id, connection_id, version);
    auto ok = enc.check(len);
    if (!ok) return ok;
    size_t at = out.size();
    out.resize(at + enc.size(len));
    auto* p = reinterpret_cast<uint8_t*>(&out[at]);
    p += enc.write_header(p, len);
    if (len) memcpy(p, payload, len);
    enc.write_trailer(p + len);
    return {};
}

Result<TunnelMessage> parse_message(const uint8_t* data, size_t len) {
    Pb pb;
    if (!pb.ParseFromArray(data, static_cast<int>(len)))
        return Error(format("cannot decode a %zu-byte tunnel message (not a valid Message)", len));
    TunnelMessage m;
    m.type = static_cast<MessageType>(pb.type());
    if (m.type == MessageType::Unknown) return Error(format("a %zu-byte tunnel message has no type", len));
    m.stream_id = pb.streamid();
    m.ignorable = pb.ignorable();
    m.payload = std::move(*pb.mutable_payload());
    m.service_id = pb.serviceid();
    for (auto& id : pb.availableserviceids()) m.available_service_ids.push_back(id);
    m.connection_id = pb.connectionid();
    return m;
}

}  // namespace iot::tunnel
