#include "jobs/api.hpp"

#include "base/strings.hpp"

namespace iot::jobs::api {
namespace {
const size_t kMaxDetailValue = 1024;

// Cut to the last `max` bytes without starting inside a UTF-8 sequence.
std::string tail_utf8(const std::string& s, size_t max) {
    if (s.size() <= max) return s;
    size_t start = s.size() - max;
    while (start < s.size() && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) ++start;
    return s.substr(start);
}
}  // namespace

Result<std::optional<Execution>> parse_execution(std::string_view payload) {
    auto doc = json::parse(payload);
    if (!doc) return Error("jobs message: " + doc.error());
    const cJSON* e = json::get(doc->get(), "execution");
    if (!e || cJSON_IsNull(e)) return std::optional<Execution>();
    if (!cJSON_IsObject(e)) return Error(std::string("jobs message: execution must be an object, not ") + json::type_name(e));
    Execution x;
    auto id = json::get_string(e, "jobId");
    if (!id || !*id || (*id)->empty()) return Error("jobs message: execution.jobId missing or not a string");
    x.job_id = **id;
    x.status = json::string_or(e, "status", "");
    x.version = json::integer(e, "versionNumber").value_or(0);
    x.execution_number = json::integer(e, "executionNumber").value_or(0);
    if (const cJSON* d = json::get(e, "jobDocument")) x.document = json::print(d);
    if (auto t = json::integer(e, "approximateSecondsBeforeTimedOut")) x.seconds_before_timeout = *t;
    return std::optional<Execution>(std::move(x));
}

Result<Rejection> parse_rejection(std::string_view payload) {
    auto doc = json::parse(payload);
    if (!doc) return Error("jobs rejection: " + doc.error());
    Rejection r;
    r.code = json::string_or(doc->get(), "code", "");
    r.message = json::string_or(doc->get(), "message", "");
    if (r.code.empty()) return Error("jobs rejection without a code");
    if (const cJSON* st = json::get(doc->get(), "executionState")) {
        if (const cJSON* s = json::get(st, "status"); cJSON_IsString(s)) r.state_status = s->valuestring;
        r.state_version = json::integer(st, "versionNumber");
    }
    return r;
}

Details clean_details(const Details& details) {
    Details out;
    for (const auto& [key, value] : details) {
        if (out.size() == 10) break;
        std::string k;
        for (char c : key)
            if (isalnum(static_cast<unsigned char>(c)) || c == ':' || c == '_' || c == '-') k += c;
        if (k.empty()) continue;
        if (k.size() > 128) k.resize(128);
        std::string v;
        v.reserve(value.size());
        for (char c : value) {
            unsigned char u = static_cast<unsigned char>(c);
            v += (u < 0x20 || u == 0x7f) ? ' ' : c;
        }
        v = std::string(trim(v));
        if (v.empty()) continue;
        out.emplace_back(k, tail_utf8(v, kMaxDetailValue));
    }
    return out;
}

namespace {
json::Json status_object(const std::string& status, const Details& details) {
    json::Json o = json::make_object();
    json::set(o.get(), "status", status);
    Details clean = clean_details(details);
    if (!clean.empty()) {
        cJSON* d = cJSON_AddObjectToObject(o.get(), "statusDetails");
        for (const auto& [k, v] : clean) json::set(d, k.c_str(), v);
    }
    return o;
}
}  // namespace

std::string status_payload(const std::string& status, const Details& details) {
    return json::print(status_object(status, details).get());
}

std::string update_request(const std::string& status, const Details& details, long long expected_version,
                           long long execution_number, const std::string& client_token) {
    json::Json o = status_object(status, details);
    if (expected_version > 0) json::set(o.get(), "expectedVersion", expected_version);
    if (execution_number > 0) json::set(o.get(), "executionNumber", execution_number);
    json::set_bool(o.get(), "includeJobExecutionState", true);
    json::set(o.get(), "clientToken", client_token);
    return json::print(o.get());
}

std::string start_next_request(const std::string& client_token) {
    return "{\"clientToken\":" + json::quote(client_token) + "}";
}

std::string describe_request(long long execution_number, const std::string& client_token) {
    json::Json o = json::make_object();
    if (execution_number > 0) json::set(o.get(), "executionNumber", execution_number);
    json::set_bool(o.get(), "includeJobDocument", false);
    json::set(o.get(), "clientToken", client_token);
    return json::print(o.get());
}

bool is_terminal(std::string_view s) {
    return s == "SUCCEEDED" || s == "FAILED" || s == "TIMED_OUT" || s == "REJECTED" || s == "REMOVED" || s == "CANCELED";
}

}  // namespace iot::jobs::api
