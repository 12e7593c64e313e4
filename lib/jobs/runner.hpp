// JobRunner: runs the steps of one job document as child processes on the event loop. Output is
// drained as it comes (never blocking, never killing a chatty child), the last 1024 characters of
// each stream are kept, results are exact ("exit status 3", "killed by signal SIGKILL"), a step
// limit stops the process group with SIGTERM then SIGKILL, and cancel() does the same from outside.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/process.hpp"
#include "jobs/document.hpp"
#include "jobs/handlers.hpp"
#include "loop/loop.hpp"

namespace iot::jobs {

// Keeps the last `capacity` bytes of a stream, cut on a UTF-8 boundary, and counts its lines.
class OutputTail {
public:
    explicit OutputTail(size_t capacity = 1024) : capacity_(capacity) {}
    void append(const char* data, size_t size);
    // The tail, starting at a UTF-8 character boundary.
    std::string text() const;
    size_t lines() const { return lines_ + (partial_line_ ? 1 : 0); }
    uint64_t total_bytes() const { return total_; }

private:
    size_t capacity_;
    std::string buf_;
    size_t lines_ = 0;
    bool partial_line_ = false;
    uint64_t total_ = 0;
};

struct StepResult {
    size_t index = 0;  // position in steps; steps.size() for the final step
    std::string name;
    bool ok = false;
    bool timed_out = false;
    std::string reason;  // "exit status 0", "killed by signal SIGKILL", "handler x not found in ..."
    std::string stdout_tail, stderr_tail;
};

struct RunResult {
    enum class Outcome { Succeeded, Failed, Canceled } outcome = Outcome::Failed;
    std::string reason;
    std::string stdout_tail, stderr_tail;  // of the last step that ran
    std::vector<StepResult> steps;
};

struct RunnerOptions {
    ResolveContext resolve;
    std::vector<std::string> env;       // the whole environment of every step
    int64_t step_limit_ms = 0;          // local limit per step (0 = none); an action's timeoutSeconds wins
    int64_t kill_grace_ms = 5000;       // SIGTERM, then SIGKILL after this
    std::vector<std::string> reboot_command = {"/sbin/reboot"};
};

class JobRunner {
public:
    struct Callbacks {
        std::function<void(size_t index, const Action&)> step_started;
        // Called when a step ended, before the next one starts: persist progress here.
        std::function<void(const StepResult&)> step_finished;
        // A reboot step is about to run its command: persist "rebooting in step i" here.
        std::function<void(size_t index)> rebooting;
        std::function<void(const RunResult&)> done;
    };

    JobRunner(EventLoop& loop, RunnerOptions options);
    ~JobRunner();
    JobRunner(const JobRunner&) = delete;
    JobRunner& operator=(const JobRunner&) = delete;

    // Run `document` from step `first_step` (steps already done are skipped after a restart).
    // `done` is called exactly once, unless the runner is destroyed first.
    void start(const Document& document, size_t first_step, Callbacks callbacks);
    // Stop the running step's process group (SIGTERM, SIGKILL after the grace) and finish with
    // Outcome::Canceled and `reason`.
    void cancel(const std::string& reason);
    bool running() const { return running_; }

private:
    struct Step;
    void run_step(size_t index);
    void step_exited(int wait_status);
    void finish_step();
    void read_stream(bool is_stderr);
    void stop_process(const std::string& why, bool timed_out);
    void end(RunResult::Outcome outcome, const std::string& reason);
    std::string steps_summary() const;

    EventLoop& loop_;
    RunnerOptions options_;
    Document document_;
    Callbacks callbacks_;
    RunResult result_;
    std::unique_ptr<Step> step_;
    bool running_ = false;
    bool canceling_ = false;
    EventLoop::TimerId next_timer_ = 0, reboot_timer_ = 0;
    std::string cancel_reason_;
};

}  // namespace iot::jobs
