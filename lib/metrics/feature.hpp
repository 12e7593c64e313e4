// Metrics reports for iotd and iot-metrics: ReportMaker collects one report (the /proc metrics at
// once, custom metrics on the event loop) with the next report id and the network deltas since
// the last report, and commits both to <state-directory>/metrics.json once the report is sent.
// MetricsFeature publishes one every device-defender.interval seconds (±10% so a fleet does not
// report in lockstep) to the Defender topic, whose answers it logs, or to a topic of the owner's.
// Reports are never queued while offline: a report due then is skipped and the first one after
// the reconnect carries the deltas of the whole gap. A rejection is logged and never stops iotd.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "loop/loop.hpp"
#include "metrics/collect.hpp"
#include "metrics/custom.hpp"
#include "metrics/report.hpp"
#include "mqtt/client.hpp"

namespace iot::config {
class Config;
}

namespace iot::metrics {

// AWS throttles device metrics to one report per 5 minutes.
constexpr int64_t kMinAdvisedIntervalS = 300;

struct FeatureOptions {
    std::string thing;
    std::string state_file;  // <state-directory>/metrics.json; empty: kept in memory only
    CollectOptions collect;
    Names names = Names::Long;
    Format format = Format::Json;
    std::string topic;  // empty: the Defender topic of `format`
    int64_t interval_ms = 300000;
    std::vector<CustomSpec> custom;
    int64_t answer_timeout_ms = 30000;
};

// device-defender.*, thing-name and state-directory. Fails on an invalid custom metric, naming it
// and where it was configured.
Result<FeatureOptions> feature_options(const config::Config& cfg);

struct Report {
    uint64_t id = 0;
    json::Json tree;
    std::string payload;  // encoded in the options' format
    Metrics metrics;
    CustomResult custom;
    std::vector<std::string> errors;  // sources that failed, the state file; the report goes out anyway
};

class ReportMaker {
public:
    ReportMaker(EventLoop& loop, const FeatureOptions& options);
    // Collect a report; `done` runs once (maybe before make returns, with no custom commands).
    void make(std::function<void(Report&)> done);
    bool busy() const { return custom_.running(); }
    // The report was sent: its id and counters are the base of the next one.
    Status commit(const Report& report);

private:
    State current_state(std::vector<std::string>& errors);

    EventLoop& loop_;
    const FeatureOptions& options_;
    CustomCollector custom_;
    State memory_;  // what was last committed, for when the state file cannot be read
    Interfaces interfaces_;
};

class MetricsFeature {
public:
    MetricsFeature(EventLoop& loop, mqtt::Client& client, FeatureOptions options);
    ~MetricsFeature();
    MetricsFeature(const MetricsFeature&) = delete;
    MetricsFeature& operator=(const MetricsFeature&) = delete;

    // Subscribe to the answers and schedule the first report (a few seconds after start). Call
    // before the client connects.
    Status start();
    // "report 1732283456 accepted 12 s ago, next in 288 s; 4 sent, 0 rejected, 1 skipped offline"
    std::string status_line() const;

private:
    void schedule(int64_t delay_ms);
    void due();
    void send(Report& report);
    void answered(uint64_t id, const mqtt::Response& response);
    int64_t jittered_interval() const;

    EventLoop& loop_;
    mqtt::Client& client_;
    FeatureOptions options_;
    Topics topics_;
    ReportMaker maker_;
    EventLoop::TimerId timer_ = 0;
    int64_t next_due_ms_ = 0;
    bool missed_ = false;  // a report fell due while offline: send one soon after the reconnect
    uint64_t last_id_ = 0;
    std::string last_outcome_ = "none sent yet";
    int64_t last_sent_ms_ = 0;
    int sent_ = 0, accepted_ = 0, rejected_ = 0, skipped_ = 0;
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace iot::metrics
