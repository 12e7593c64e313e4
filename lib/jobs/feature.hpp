// The iotd jobs feature: asks the cloud for the next job at start, after every (re)connect and
// after each job; runs one job at a time with JobRunner; keeps progress and every status update
// on disk (JobStore) so a restart or reboot resumes after the last completed step and no status is
// lost or sent twice; stops a job the cloud canceled, removed or timed out. A rejected request
// never stops the daemon: it logs what the policy probably lacks and retries.
#pragma once
#include <memory>
#include <string>

#include "jobs/api.hpp"
#include "jobs/runner.hpp"
#include "jobs/store.hpp"
#include "loop/loop.hpp"
#include "mqtt/client.hpp"

namespace iot::config {
class Config;
}

namespace iot::jobs {

struct FeatureOptions {
    std::string thing;
    std::string state_file;  // <state-directory>/jobs.json
    RunnerOptions runner;
    int64_t request_timeout_ms = 10000;
    int64_t retry_min_ms = 1000;
    int64_t retry_max_ms = 60000;
};

// Options from the configuration (jobs.*, state-directory, thing-name): one place for iotd and
// iot-job-run.
RunnerOptions runner_options(const config::Config& cfg);
FeatureOptions feature_options(const config::Config& cfg);
// What the cloud is told about a finished job: SUCCEEDED or FAILED, with reason, stderr and (when
// the document asks for includeStdOut) stdout.
api::Details status_details(const RunResult& r, bool include_stdout);
const char* final_status(const RunResult& r);

class JobsFeature {
public:
    JobsFeature(EventLoop& loop, mqtt::Client& client, FeatureOptions options);
    ~JobsFeature();

    // Load the state file, subscribe, and resume a job that was in progress. Call before the
    // client connects (subscriptions go out with the first connect).
    Status start();
    bool busy() const { return runner_.running(); }
    size_t outbox_size() const { return store_.outbox().size(); }
    // "job j-42 step 2/3 (install)" or "idle"
    std::string status_line() const;

private:
    void on_connected();
    void ask_next();
    void on_execution(const std::optional<api::Execution>& execution, const char* source);
    void begin(const api::Execution& execution);
    void run_current(size_t first_step);
    void job_done(const RunResult& result);
    void flush_outbox();
    void outbox_answer(const mqtt::Response& response);
    void retry_outbox_later();
    void stop_job_cloud_side(const std::string& why);

    EventLoop& loop_;
    mqtt::Client& client_;
    FeatureOptions options_;
    api::Topics topics_;
    JobStore store_;
    JobRunner runner_;
    Document document_;  // of the current job
    bool outbox_in_flight_ = false;
    bool asking_ = false;
    bool ask_again_ = false;
    mqtt::Backoff outbox_backoff_;
    EventLoop::TimerId outbox_timer_ = 0, cloud_timeout_timer_ = 0;
    size_t current_step_ = 0;
    std::string current_step_name_;
};

}  // namespace iot::jobs
