#include "provision/api.hpp"

#include <cmath>

#include "base/strings.hpp"
#include "json/json.hpp"

namespace iot::provision::api {
namespace {
// Payload text for an error message: printable and short (answers hold no secrets when rejected).
std::string excerpt(std::string_view payload) {
    std::string out;
    for (char c : payload.substr(0, 120)) out += (static_cast<unsigned char>(c) < 0x20) ? ' ' : c;
    if (payload.size() > 120) out += "...";
    return out;
}

Result<std::string> required_string(const cJSON* doc, const char* key, const char* what) {
    auto v = json::get_string(doc, key);
    if (!v) return Error(format("%s answer: %s: %s", what, key, v.error().c_str()));
    if (!*v || (*v)->empty()) return Error(format("%s answer without %s", what, key));
    return **v;
}
}  // namespace

Call create_keys_and_certificate() { return Call{"$aws/certificates/create/json"}; }
Call create_certificate_from_csr() { return Call{"$aws/certificates/create-from-csr/json"}; }
Call register_thing(const std::string& template_name) {
    return Call{"$aws/provisioning-templates/" + template_name + "/provision/json"};
}

Status check_template_name(std::string_view name) {
    if (name.empty()) return Error("the provisioning template name is empty");
    if (name.size() > 36)
        return Error(format("provisioning template name '%.*s' is %zu characters long (at most 36)",
                            static_cast<int>(name.size()), name.data(), name.size()));
    for (char c : name)
        if (!isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-')
            return Error(format("provisioning template name '%.*s' has '%c' (only letters, digits, _ and - are allowed)",
                                static_cast<int>(name.size()), name.data(), c));
    return {};
}

Result<Parameters> parse_parameters(std::string_view json_text) {
    auto doc = json::parse(json_text);
    if (!doc) return Error("template parameters: " + doc.error());
    if (!cJSON_IsObject(doc->get()))
        return Error(std::string("template parameters: expected a JSON object, got ") + json::type_name(doc->get()));
    Parameters out;
    for (const cJSON* item = doc->get()->child; item; item = item->next) {
        std::string key = item->string ? item->string : "";
        if (key.empty()) return Error("template parameters: empty key");
        if (cJSON_IsString(item)) {
            out[key] = item->valuestring;
        } else if (cJSON_IsBool(item)) {
            out[key] = cJSON_IsTrue(item) ? "true" : "false";
        } else if (cJSON_IsNumber(item)) {
            double d = item->valuedouble;
            out[key] = (std::floor(d) == d && std::fabs(d) < 9e15) ? format("%lld", static_cast<long long>(d))
                                                                   : json::print(item);
        } else {
            return Error(format("template parameters: \"%s\" is %s; values must be strings (AWS takes a flat map "
                                "of strings)", key.c_str(), json::type_name(item)));
        }
    }
    return out;
}

std::string create_keys_request() { return "{}"; }

std::string create_from_csr_request(const std::string& csr_pem) {
    return "{\"certificateSigningRequest\":" + json::quote(csr_pem) + "}";
}

std::string register_thing_request(const std::string& ownership_token, const Parameters& parameters) {
    std::string out = "{\"certificateOwnershipToken\":" + json::quote(ownership_token) + ",\"parameters\":{";
    bool first = true;
    for (const auto& [k, v] : parameters) {
        if (!first) out += ',';
        first = false;
        out += json::quote(k) + ":" + json::quote(v);
    }
    return out + "}}";
}

Result<NewCertificate> parse_create_accepted(std::string_view payload, bool with_private_key) {
    const char* what = with_private_key ? "CreateKeysAndCertificate" : "CreateCertificateFromCsr";
    auto doc = json::parse(payload);
    if (!doc) return Error(format("%s answer: %s", what, doc.error().c_str()));
    if (!cJSON_IsObject(doc->get())) return Error(format("%s answer is not a JSON object", what));
    NewCertificate c;
    auto id = required_string(doc->get(), "certificateId", what);
    if (!id) return id.err();
    auto pem = required_string(doc->get(), "certificatePem", what);
    if (!pem) return pem.err();
    auto token = required_string(doc->get(), "certificateOwnershipToken", what);
    if (!token) return token.err();
    // The id names files: refuse anything but AWS's 64 hex characters (or a path could be smuggled).
    for (char ch : *id)
        if (!isxdigit(static_cast<unsigned char>(ch)))
            return Error(format("%s answer: certificateId '%s' is not hexadecimal", what, excerpt(*id).c_str()));
    if (id->size() < 8 || id->size() > 128)
        return Error(format("%s answer: certificateId '%s' has an unexpected length", what, id->c_str()));
    c.certificate_id = to_lower(*id);
    c.certificate_pem = pem.take();
    c.ownership_token = token.take();
    if (with_private_key) {
        auto key = required_string(doc->get(), "privateKey", what);
        if (!key) return key.err();
        c.private_key = key.take();
    }
    return c;
}

Result<Registration> parse_register_accepted(std::string_view payload) {
    auto doc = json::parse(payload);
    if (!doc) return Error("RegisterThing answer: " + doc.error());
    if (!cJSON_IsObject(doc->get())) return Error("RegisterThing answer is not a JSON object");
    Registration r;
    auto name = json::get_string(doc->get(), "thingName");
    if (!name) return Error("RegisterThing answer: thingName: " + name.error());
    if (*name) r.thing_name = **name;
    const cJSON* dc = json::get(doc->get(), "deviceConfiguration");
    if (dc && !cJSON_IsNull(dc) && !cJSON_IsObject(dc))
        return Error(std::string("RegisterThing answer: deviceConfiguration is ") + json::type_name(dc) +
                     ", expected an object");
    r.device_configuration = dc && cJSON_IsObject(dc) ? json::print(dc) : "{}";
    return r;
}

std::string Rejection::text() const {
    std::string out = error_code.empty() ? "rejected" : error_code;
    if (status_code) out += format(" (%d)", status_code);
    if (!error_message.empty()) out += ": " + error_message;
    return out;
}

Rejection parse_rejection(std::string_view payload) {
    Rejection r;
    auto doc = json::parse(payload);
    if (!doc || !cJSON_IsObject(doc->get())) {
        r.error_message = "unreadable rejection: " + excerpt(payload);
        return r;
    }
    r.status_code = static_cast<int>(json::integer(doc->get(), "statusCode").value_or(0));
    r.error_code = json::string_or(doc->get(), "errorCode", "");
    r.error_message = json::string_or(doc->get(), "errorMessage", "");
    if (r.error_code.empty() && r.error_message.empty()) r.error_message = "rejection without errorCode: " + excerpt(payload);
    return r;
}

}  // namespace iot::provision::api
