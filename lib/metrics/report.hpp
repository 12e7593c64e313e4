// Device Defender reports (schema version "1.0"): built from collected metrics with long names
// (the Device Client's) or short names (never mixed), encoded as JSON or deterministic CBOR; the
// Defender topics; the answers; and the state that survives restarts (the last report id and the
// interface counters the next network_stats delta is taken from).
#pragma once
#include <cstdint>
#include <string>

#include "base/result.hpp"
#include "json/json.hpp"
#include "metrics/collect.hpp"
#include "metrics/custom.hpp"

namespace iot::metrics {

enum class Names { Long, Short };
enum class Format { Json, Cbor };
const char* format_name(Format f);  // "json" | "cbor"

// The report as a JSON tree. custom may be null; custom_metrics appears only with at least one
// value (an empty object is not a metric).
json::Json build_report(const Metrics& m, const CustomResult* custom, uint64_t report_id, Names names);
std::string encode(const cJSON* report, Format format);

// $aws/things/<thing>/defender/metrics/<fmt> and its /accepted and /rejected.
struct Topics {
    std::string publish, accepted, rejected;
};
Topics defender_topics(const std::string& thing, Format format);

// An answer on .../accepted or .../rejected, JSON or CBOR as the report was.
struct Answer {
    bool accepted = false;
    uint64_t report_id = 0;  // 0 when the service could not read it
    std::string error_code, error_message;
};
Result<Answer> parse_answer(std::string_view payload, bool rejected_topic);

// <state-directory>/metrics.json
struct State {
    uint64_t last_report_id = 0;
    std::string boot_id;  // of the counters below
    bool have_counters = false;
    CounterMap counters;
};
// A missing file is an empty state; an unreadable or corrupt one is an error (the caller logs it
// and starts from an empty state: epoch seconds keep the ids increasing anyway).
Result<State> load_state(const std::string& path);
Status save_state(const std::string& path, const State& state);
// Strictly greater than `last`, and epoch seconds when the clock is ahead (AWS's recommendation,
// which also keeps ids increasing if the state file is lost).
uint64_t next_report_id(uint64_t last, int64_t now_s);

// The counters a new delta is taken from: the saved ones if they are from this boot; after a
// reboot, zeros (every counter restarted at 0, so all of today's traffic is new); with no saved
// counters, none (the first report is a baseline).
const CounterMap* previous_counters(const State& state, const std::string& current_boot_id, CounterMap& zeros);

}  // namespace iot::metrics
