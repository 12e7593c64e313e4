// The AWS IoT Jobs device API codec: every topic built here and every payload parsed here, with
// clear errors. Nothing else in iotbox spells a jobs topic.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/result.hpp"
#include "json/json.hpp"

namespace iot::jobs::api {

class Topics {
public:
    explicit Topics(std::string thing) : base_("$aws/things/" + thing + "/jobs/") {}
    std::string notify_next() const { return base_ + "notify-next"; }
    std::string start_next() const { return base_ + "start-next"; }
    std::string update(const std::string& job_id) const { return base_ + job_id + "/update"; }
    std::string describe(const std::string& job_id) const { return base_ + job_id + "/get"; }
    // Subscriptions covering every job's answers.
    std::string any_update(const char* outcome) const { return base_ + "+/update/" + outcome; }
    std::string any_describe(const char* outcome) const { return base_ + "+/get/" + outcome; }
    static std::string accepted(const std::string& t) { return t + "/accepted"; }
    static std::string rejected(const std::string& t) { return t + "/rejected"; }

private:
    std::string base_;
};

struct Execution {
    std::string job_id;
    std::string status;  // QUEUED, IN_PROGRESS, ...
    long long version = 0;
    long long execution_number = 0;
    std::string document;  // the jobDocument object as compact JSON ("" when not included)
    std::optional<long long> seconds_before_timeout;
};

// The "execution" of a start-next or describe answer or a notify-next push; nullopt when the
// message says nothing is pending. Errors name the field.
Result<std::optional<Execution>> parse_execution(std::string_view payload);

struct Rejection {
    std::string code;  // VersionMismatch, InvalidStateTransition, RequestThrottled, ...
    std::string message;
    std::optional<std::string> state_status;  // from executionState, when the service sent it
    std::optional<long long> state_version;
};
Result<Rejection> parse_rejection(std::string_view payload);

// AWS's statusDetails rules: at most 10 pairs, keys [a-zA-Z0-9:_-]{1,128}, values 1..1024
// characters without control characters. Control characters become spaces, empty values are
// dropped, long values keep their end (the interesting part of an output tail), cut on UTF-8.
using Details = std::vector<std::pair<std::string, std::string>>;
Details clean_details(const Details& details);

// {"status": ..., "statusDetails": {...}}: what a job's result looks like to the cloud.
std::string status_payload(const std::string& status, const Details& details);
std::string update_request(const std::string& status, const Details& details, long long expected_version,
                           long long execution_number, const std::string& client_token);
std::string start_next_request(const std::string& client_token);
std::string describe_request(long long execution_number, const std::string& client_token);

bool is_terminal(std::string_view status);

}  // namespace iot::jobs::api
