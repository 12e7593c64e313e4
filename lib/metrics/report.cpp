#include "metrics/report.hpp"

#include <cmath>

#include "base/strings.hpp"
#include "fs/fs.hpp"
#include "metrics/cbor.hpp"

namespace iot::metrics {
namespace {

// Every key of the report, long and short (defender.h's DEFENDER_REPORT_SELECT_KEY pairs).
enum Key {
    kHeader,
    kReportId,
    kVersion,
    kMetrics,
    kCustomMetrics,
    kTcpPorts,
    kUdpPorts,
    kPorts,
    kPort,
    kInterface,
    kTotal,
    kNetworkStats,
    kBytesIn,
    kBytesOut,
    kPacketsIn,
    kPacketsOut,
    kTcpConnections,
    kEstablished,
    kConnections,
    kRemoteAddr,
    kLocalPort,
    kLocalInterface,
};
const char* const kNames[][2] = {
    {"header", "hed"},
    {"report_id", "rid"},
    {"version", "v"},
    {"metrics", "met"},
    {"custom_metrics", "cmet"},
    {"listening_tcp_ports", "tp"},
    {"listening_udp_ports", "up"},
    {"ports", "pts"},
    {"port", "pt"},
    {"interface", "if"},
    {"total", "t"},
    {"network_stats", "ns"},
    {"bytes_in", "bi"},
    {"bytes_out", "bo"},
    {"packets_in", "pi"},
    {"packets_out", "po"},
    {"tcp_connections", "tc"},
    {"established_connections", "ec"},
    {"connections", "cs"},
    {"remote_addr", "rad"},
    {"local_port", "lp"},
    {"local_interface", "li"},
};

class Builder {
public:
    explicit Builder(Names n) : short_(n == Names::Short) {}
    const char* name(Key k) const { return kNames[k][short_ ? 1 : 0]; }
    cJSON* object(cJSON* parent, Key k) {
        cJSON* o = cJSON_CreateObject();
        cJSON_AddItemToObject(parent, name(k), o);
        return o;
    }
    cJSON* array(cJSON* parent, Key k) {
        cJSON* a = cJSON_CreateArray();
        cJSON_AddItemToObject(parent, name(k), a);
        return a;
    }
    void number(cJSON* parent, Key k, double v) { cJSON_AddNumberToObject(parent, name(k), v); }
    void text(cJSON* parent, Key k, const std::string& v) { cJSON_AddStringToObject(parent, name(k), v.c_str()); }

    void ports(cJSON* metrics, Key k, const PortList& list) {
        cJSON* o = object(metrics, k);
        cJSON* arr = array(o, kPorts);
        for (const Port& p : list.ports) {
            cJSON* e = cJSON_CreateObject();
            if (!p.interface.empty()) text(e, kInterface, p.interface);
            number(e, kPort, p.port);
            cJSON_AddItemToArray(arr, e);
        }
        number(o, kTotal, static_cast<double>(list.total));
    }

private:
    bool short_;
};

uint64_t u64(const cJSON* item) {
    return cJSON_IsNumber(item) && item->valuedouble >= 0 ? static_cast<uint64_t>(item->valuedouble) : 0;
}

}  // namespace

const char* format_name(Format f) {
    return f == Format::Cbor ? "cbor" : "json";
}

json::Json build_report(const Metrics& m, const CustomResult* custom, uint64_t report_id, Names names) {
    Builder b(names);
    json::Json root = json::make_object();
    cJSON* header = b.object(root.get(), kHeader);
    b.number(header, kReportId, static_cast<double>(report_id));
    b.text(header, kVersion, "1.0");

    cJSON* met = b.object(root.get(), kMetrics);
    if (m.have_tcp) b.ports(met, kTcpPorts, m.tcp_ports);
    if (m.have_udp) b.ports(met, kUdpPorts, m.udp_ports);
    if (m.have_network) {
        cJSON* ns = b.object(met, kNetworkStats);
        b.number(ns, kBytesIn, static_cast<double>(m.network.bytes_in));
        b.number(ns, kBytesOut, static_cast<double>(m.network.bytes_out));
        b.number(ns, kPacketsIn, static_cast<double>(m.network.packets_in));
        b.number(ns, kPacketsOut, static_cast<double>(m.network.packets_out));
    }
    if (m.have_tcp) {
        cJSON* ec = b.object(b.object(met, kTcpConnections), kEstablished);
        cJSON* arr = b.array(ec, kConnections);
        for (const Connection& c : m.connections.connections) {
            cJSON* e = cJSON_CreateObject();
            if (!c.local_interface.empty()) b.text(e, kLocalInterface, c.local_interface);
            b.number(e, kLocalPort, c.local_port);
            b.text(e, kRemoteAddr, c.remote_addr);
            cJSON_AddItemToArray(arr, e);
        }
        b.number(ec, kTotal, static_cast<double>(m.connections.total));
    }

    if (custom && !custom->values.empty()) {
        cJSON* cmet = b.object(root.get(), kCustomMetrics);
        for (const CustomValue& v : custom->values) {
            // Always an array holding one object: a bare object is "Malformed metrics report".
            cJSON* arr = cJSON_CreateArray();
            cJSON* one = cJSON_CreateObject();
            const char* key = custom_report_key(v.type);
            switch (v.type) {
                case CustomType::Number:
                    cJSON_AddNumberToObject(one, key, v.number);
                    break;
                case CustomType::NumberList: {
                    cJSON* list = cJSON_AddArrayToObject(one, key);
                    for (double d : v.numbers) cJSON_AddItemToArray(list, cJSON_CreateNumber(d));
                    break;
                }
                case CustomType::StringList:
                case CustomType::IpList: {
                    cJSON* list = cJSON_AddArrayToObject(one, key);
                    for (const auto& s : v.strings) cJSON_AddItemToArray(list, cJSON_CreateString(s.c_str()));
                    break;
                }
            }
            cJSON_AddItemToArray(arr, one);
            cJSON_AddItemToObject(cmet, v.name.c_str(), arr);
        }
    }
    return root;
}

std::string encode(const cJSON* report, Format format) {
    return format == Format::Cbor ? cbor::encode(report) : json::print(report);
}

Topics defender_topics(const std::string& thing, Format format) {
    Topics t;
    t.publish = "$aws/things/" + thing + "/defender/metrics/" + format_name(format);
    t.accepted = t.publish + "/accepted";
    t.rejected = t.publish + "/rejected";
    return t;
}

Result<Answer> parse_answer(std::string_view payload, bool rejected_topic) {
    // The answer comes in the report's format; look at the first byte rather than trust that.
    bool looks_json = !payload.empty() && (payload[0] == '{' || payload[0] == ' ' || payload[0] == '\n');
    auto doc = looks_json ? json::parse(payload) : cbor::decode(payload);
    if (!doc) return doc.err();
    const cJSON* root = doc->get();
    if (!cJSON_IsObject(root)) return Error(format("expected an object, got %s", json::type_name(root)));
    Answer a;
    std::string status = json::string_or(root, "status", rejected_topic ? "REJECTED" : "ACCEPTED");
    a.accepted = !rejected_topic && status == "ACCEPTED";
    a.report_id = u64(json::get(root, "reportId"));
    const cJSON* details = json::get(root, "statusDetails");
    a.error_code = json::string_or(details, "ErrorCode", "");
    a.error_message = json::string_or(details, "ErrorMessage", "");
    if (!a.accepted && a.error_code.empty() && a.error_message.empty()) a.error_message = "status " + status;
    return a;
}

Result<State> load_state(const std::string& path) {
    State s;
    if (!fs::exists(path)) return s;
    auto text = fs::read_file(path, 1024 * 1024);
    if (!text) return text.err();
    auto doc = json::parse(*text);
    if (!doc || !cJSON_IsObject(doc->get())) return Error(path + ": not a metrics state file; starting afresh");
    const cJSON* root = doc->get();
    s.last_report_id = u64(json::get(root, "last_report_id"));
    s.boot_id = json::string_or(root, "boot_id", "");
    const cJSON* counters = json::get(root, "counters");
    if (cJSON_IsObject(counters)) {
        s.have_counters = true;
        for (const cJSON* c = counters->child; c; c = c->next) {
            if (!cJSON_IsArray(c) || cJSON_GetArraySize(c) != 4) continue;
            s.counters[c->string] = Counters{u64(cJSON_GetArrayItem(c, 0)), u64(cJSON_GetArrayItem(c, 1)),
                                             u64(cJSON_GetArrayItem(c, 2)), u64(cJSON_GetArrayItem(c, 3))};
        }
    }
    return s;
}

Status save_state(const std::string& path, const State& s) {
    // Written by hand rather than through cJSON, whose doubles would print large counters in
    // exponent form; read back exactly up to 2^53 bytes (9 PB), beyond any interface's counter.
    std::string out = format("{\n  \"last_report_id\": %llu,\n  \"boot_id\": %s",
                             static_cast<unsigned long long>(s.last_report_id), json::quote(s.boot_id).c_str());
    if (s.have_counters) {
        out += ",\n  \"counters\": {";
        bool first = true;
        for (const auto& [name, c] : s.counters) {
            out +=
                format("%s\n    %s: [%llu, %llu, %llu, %llu]", first ? "" : ",", json::quote(name).c_str(),
                       static_cast<unsigned long long>(c.bytes_in), static_cast<unsigned long long>(c.bytes_out),
                       static_cast<unsigned long long>(c.packets_in), static_cast<unsigned long long>(c.packets_out));
            first = false;
        }
        out += "\n  }";
    }
    out += "\n}\n";
    return fs::write_atomic(path, out, 0600);
}

uint64_t next_report_id(uint64_t last, int64_t now_s) {
    uint64_t now = now_s > 0 ? static_cast<uint64_t>(now_s) : 0;
    return last + 1 > now ? last + 1 : now;
}

const CounterMap* previous_counters(const State& state, const std::string& current_boot_id, CounterMap& zeros) {
    if (!state.have_counters) return nullptr;
    if (!state.boot_id.empty() && !current_boot_id.empty() && state.boot_id != current_boot_id) {
        zeros.clear();
        return &zeros;
    }
    return &state.counters;
}

}  // namespace iot::metrics
