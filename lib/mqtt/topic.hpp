// MQTT topic filters and backoff: small pure pieces of the client, tested on their own.
#pragma once
#include <cstdint>
#include <string_view>

namespace iot::mqtt {

// MQTT 3.1.1 §4.7 matching: '+' one level, '#' the rest (including the parent level, so
// "a/#" matches "a"); wildcards never match a first level starting with '$'.
bool topic_matches(std::string_view filter, std::string_view topic);

// Exponential backoff with full jitter: attempt n waits a uniform random time in
// [min, min(max, min * 2^n)], so a fleet that lost its broker does not come back in lockstep.
class Backoff {
public:
    Backoff(int64_t min_ms, int64_t max_ms) : min_(min_ms), max_(max_ms < min_ms ? min_ms : max_ms) {}
    int64_t next();
    // The upper bound the next call can return (for logs and tests).
    int64_t ceiling() const;
    void reset() { attempt_ = 0; }
    int attempts() const { return attempt_; }

private:
    int64_t min_, max_;
    int attempt_ = 0;
};

}  // namespace iot::mqtt
