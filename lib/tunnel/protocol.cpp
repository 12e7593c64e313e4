#include "tunnel/protocol.hpp"

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
}  // namespace

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

Status append_data(std::string& out, const std::string& service_id, int32_t stream_id, uint32_t connection_id,
                   const uint8_t* payload, size_t len, ProtocolVersion version) {
    if (len > kMaxPayload)
        return Error(format("a %zu-byte payload is over the service's %zu-byte limit", len, kMaxPayload));
    Pb pb;
    pb.set_type(Pb::DATA);
    pb.set_streamid(stream_id);
    pb.set_payload(payload, len);
    set_ids(pb, service_id, connection_id, version);
    return append_pb(out, pb);
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
