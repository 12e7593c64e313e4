// The AWS IoT fleet provisioning MQTT API codec (CreateKeysAndCertificate, CreateCertificateFromCsr,
// RegisterThing): every topic built here and every payload parsed here, with clear errors. JSON
// only, as the Device Client speaks it. The API has no clientToken: answers are paired with
// requests by topic, one request of each kind at a time.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.hpp"

namespace iot::provision::api {

// Topics of one API call: publish to request(), answers arrive on accepted() or rejected().
struct Call {
    std::string request;
    std::string accepted() const { return request + "/accepted"; }
    std::string rejected() const { return request + "/rejected"; }
};
Call create_keys_and_certificate();
Call create_certificate_from_csr();
// The template name must already be checked (check_template_name).
Call register_thing(const std::string& template_name);

// 1 to 36 characters of [0-9A-Za-z_-] (AWS's rule; anything else could also break the topic).
Status check_template_name(std::string_view name);

// Template parameters: a flat string->string map. Numbers and booleans are taken as their text
// (people write {"Port": 8080}); nested objects, arrays and null are refused, naming the key.
using Parameters = std::map<std::string, std::string>;
// From JSON text; a syntax error names the line and column.
Result<Parameters> parse_parameters(std::string_view json_text);

// Request payloads.
std::string create_keys_request();  // "{}" (AWS accepts it, as the Python SDK sends it)
std::string create_from_csr_request(const std::string& csr_pem);
std::string register_thing_request(const std::string& ownership_token, const Parameters& parameters);

// The accepted answer of either create call. private_key is empty for CreateCertificateFromCsr.
// It and the ownership token are secrets: never log them.
struct NewCertificate {
    std::string certificate_id;
    std::string certificate_pem;
    std::string private_key;
    std::string ownership_token;
};
// with_private_key: CreateKeysAndCertificate (the key is required in its answer).
Result<NewCertificate> parse_create_accepted(std::string_view payload, bool with_private_key);

struct Registration {
    std::string thing_name;            // may be empty (a template without a thing resource)
    std::string device_configuration;  // the deviceConfiguration object as compact JSON, "{}" if absent
};
Result<Registration> parse_register_accepted(std::string_view payload);

// {"statusCode": 400, "errorCode": "...", "errorMessage": "..."}
struct Rejection {
    int status_code = 0;
    std::string error_code;
    std::string error_message;
    // "InvalidCertificateOwnershipToken (400): Certificate ownership token cannot be empty."
    std::string text() const;
};
// Never fails: a payload that is not the documented shape becomes a Rejection saying so, with
// the start of the payload, because the person needs whatever the cloud said.
Rejection parse_rejection(std::string_view payload);

}  // namespace iot::provision::api
