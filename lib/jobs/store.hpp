// JobStore: the jobs feature's state on disk, one JSON file written atomically on every change, so
// that each transition (a step done, a job finished with its status queued, a status delivered)
// is all-or-nothing across a crash or power cut:
//   - the outbox of status updates not yet accepted by the cloud, in order;
//   - the job in progress: its document and the next step to run (and a pending reboot);
//   - the recently finished executions, to ignore duplicates across restarts.
#pragma once
#include <deque>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/result.hpp"
#include "jobs/api.hpp"

namespace iot::jobs {

struct StatusUpdate {
    std::string job_id;
    long long execution_number = 0;
    std::string status;
    api::Details details;
    long long expected_version = 0;  // 0: do not send one
};

struct CurrentJob {
    std::string job_id;
    long long execution_number = 0;
    long long version = 0;
    std::string document;  // jobDocument as JSON text
    size_t next_step = 0;
    // Set while a reboot step runs: the boot it was started in and its index.
    std::string reboot_boot_id;
    size_t reboot_step = 0;
};

class JobStore {
public:
    // `path` is the state file (<state-directory>/jobs.json). Nothing is read until load().
    explicit JobStore(std::string path) : path_(std::move(path)) {}

    // Read the file; a missing file is an empty store. A corrupt file is renamed aside (kept for
    // a person to look at) and the store starts empty, with the error returned as a warning.
    Status load();
    const std::string& path() const { return path_; }

    const std::deque<StatusUpdate>& outbox() const { return outbox_; }
    const std::optional<CurrentJob>& current() const { return current_; }
    bool is_done(const std::string& job_id, long long execution_number) const;

    // Each mutation below is one atomic write.
    Status set_current(const CurrentJob& job);
    // The job ended: optionally queue its final status, forget it, remember it as done.
    Status finish_current(const std::optional<StatusUpdate>& final_status);
    // A job that never ran (a REJECTED document): queue its status and remember it as done.
    Status reject(const StatusUpdate& status);
    Status pop_outbox();
    Status update_outbox_front(const StatusUpdate& status);

private:
    Status save();
    void remember_done(const std::string& job_id, long long execution_number);

    std::string path_;
    std::deque<StatusUpdate> outbox_;
    std::optional<CurrentJob> current_;
    std::deque<std::pair<std::string, long long>> done_;  // newest last, bounded
};

// This boot's id (/proc/sys/kernel/random/boot_id, or the file named by IOTBOX_BOOT_ID_FILE), ""
// when unknown.
std::string boot_id();

}  // namespace iot::jobs
