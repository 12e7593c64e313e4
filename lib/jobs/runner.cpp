#include "jobs/runner.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include "base/strings.hpp"
#include "log/log.hpp"

namespace iot::jobs {
namespace {
const char* const kComp = "jobs";
// A reboot that has not taken the device down by then has failed.
const int64_t kRebootWaitMs = 300000;
}  // namespace

void OutputTail::append(const char* data, size_t size) {
    total_ += size;
    for (size_t i = 0; i < size; ++i)
        if (data[i] == '\n') ++lines_;
    if (size) partial_line_ = data[size - 1] != '\n';
    if (size >= capacity_) {
        buf_.assign(data + size - capacity_, capacity_);
    } else {
        buf_.append(data, size);
        if (buf_.size() > capacity_) buf_.erase(0, buf_.size() - capacity_);
    }
}

std::string OutputTail::text() const {
    // Skip UTF-8 continuation bytes left at the front by the cut.
    size_t start = 0;
    while (start < buf_.size() && start < 4 && (static_cast<unsigned char>(buf_[start]) & 0xC0) == 0x80) ++start;
    return buf_.substr(start);
}

struct JobRunner::Step {
    size_t index = 0;
    const Action* action = nullptr;
    pid_t pid = -1;
    Fd out, err;
    EventLoop::WatchId out_watch = 0, err_watch = 0;
    EventLoop::TimerId limit_timer = 0, kill_timer = 0;
    OutputTail out_tail, err_tail;
    bool exited = false;
    int wait_status = 0;
    bool timed_out = false;
    std::string stop_reason;
};

JobRunner::JobRunner(EventLoop& loop, RunnerOptions options) : loop_(loop), options_(std::move(options)) {}

JobRunner::~JobRunner() {
    loop_.cancel_timer(next_timer_);
    loop_.cancel_timer(reboot_timer_);
    if (step_) {
        // The daemon is going away: let the step's process group end gracefully. After a restart
        // the job resumes at this step.
        if (step_->pid > 0 && !step_->exited) ::kill(-step_->pid, SIGTERM);
        if (step_->out_watch) loop_.unwatch(step_->out_watch);
        if (step_->err_watch) loop_.unwatch(step_->err_watch);
        loop_.cancel_timer(step_->limit_timer);
        loop_.cancel_timer(step_->kill_timer);
    }
}

void JobRunner::start(const Document& document, size_t first_step, Callbacks callbacks) {
    document_ = document;
    callbacks_ = std::move(callbacks);
    result_ = RunResult{};
    running_ = true;
    canceling_ = false;
    run_step(first_step);
}

void JobRunner::run_step(size_t index) {
    size_t n = document_.steps.size();
    bool final = index == n && document_.final_step;
    if (index > n || (index == n && !final)) {
        end(RunResult::Outcome::Succeeded, n == 1 && result_.steps.size() == 1 && result_.steps[0].ok
                                               ? result_.steps[0].reason
                                               : steps_summary());
        return;
    }
    const Action& action = final ? *document_.final_step : document_.steps[index];
    step_ = std::make_unique<Step>();
    step_->index = index;
    step_->action = &action;
    if (callbacks_.step_started) callbacks_.step_started(index, action);

    SpawnOptions spawn_options;
    spawn_options.env = options_.env;
    if (action.type == ActionType::Reboot) {
        if (callbacks_.rebooting) callbacks_.rebooting(index);
        spawn_options.argv = options_.reboot_command;
        spawn_options.search_path = options_.resolve.search_path;
    } else {
        auto argv = resolve_argv(action, options_.resolve);
        if (!argv) {
            step_->stop_reason = argv.error();
            step_->exited = true;
            finish_step();
            return;
        }
        spawn_options.argv = argv.take();
    }
    if (!action.run_as_user.empty()) {
        if (geteuid() != 0) {
            step_->stop_reason = format("runAsUser %s: the daemon is not running as root, so it cannot switch user",
                                        action.run_as_user.c_str());
            step_->exited = true;
            finish_step();
            return;
        }
        auto user = lookup_user(action.run_as_user);
        if (!user) {
            step_->stop_reason = "runAsUser: " + user.error();
            step_->exited = true;
            finish_step();
            return;
        }
        spawn_options.user = user.take();
        // The step runs with the user's home, as it would after a login.
        for (auto& e : spawn_options.env)
            if (starts_with(e, "HOME=")) e = "HOME=" + spawn_options.user->home;
    }
    auto child = spawn(spawn_options);
    if (!child) {
        step_->stop_reason = child.error();
        step_->exited = true;
        finish_step();
        return;
    }
    step_->pid = child->pid;
    step_->out = std::move(child->out);
    step_->err = std::move(child->err);
    LOG_INFO(kComp, "step %zu (%s) started: pid %d", index + 1, action.name.c_str(), step_->pid);
    step_->out_watch = loop_.watch(step_->out.get(), POLLIN, [this](short) { read_stream(false); });
    step_->err_watch = loop_.watch(step_->err.get(), POLLIN, [this](short) { read_stream(true); });
    loop_.watch_child(step_->pid, [this](int status) { step_exited(status); });
    int64_t limit = action.timeout_s > 0 ? action.timeout_s * 1000 : options_.step_limit_ms;
    if (action.type == ActionType::Reboot) limit = 0;
    if (limit > 0) {
        step_->limit_timer = loop_.add_timer(limit, [this, limit] {
            step_->limit_timer = 0;
            stop_process(format("timed out after %lld s", static_cast<long long>(limit / 1000)), true);
        });
    }
}

void JobRunner::read_stream(bool is_stderr) {
    if (!step_) return;
    Fd& fd = is_stderr ? step_->err : step_->out;
    EventLoop::WatchId& watch = is_stderr ? step_->err_watch : step_->out_watch;
    OutputTail& tail = is_stderr ? step_->err_tail : step_->out_tail;
    char buf[16384];
    // Bounded per wake-up so one chatty stream cannot starve the rest of the loop.
    for (int rounds = 0; rounds < 16; ++rounds) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n > 0) {
            tail.append(buf, static_cast<size_t>(n));
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        // EOF or error: this stream is finished.
        loop_.unwatch(watch);
        watch = 0;
        fd.reset();
        if (step_->exited && !step_->out_watch && !step_->err_watch) finish_step();
        return;
    }
}

void JobRunner::step_exited(int wait_status) {
    if (!step_) return;
    step_->exited = true;
    step_->wait_status = wait_status;
    loop_.cancel_timer(step_->limit_timer);
    loop_.cancel_timer(step_->kill_timer);
    step_->limit_timer = step_->kill_timer = 0;
    // Kill what the handler left behind in its group, then drain the pipes to EOF. A grandchild
    // holding the pipe open must not keep the job running forever.
    ::kill(-step_->pid, SIGKILL);
    if (step_->out_watch) read_stream(false);
    if (step_ && step_->err_watch) read_stream(true);
    if (step_ && !step_->out_watch && !step_->err_watch) finish_step();
}

void JobRunner::stop_process(const std::string& why, bool timed_out) {
    if (!step_ || step_->exited || step_->pid <= 0) return;
    if (step_->stop_reason.empty()) step_->stop_reason = why;
    step_->timed_out = step_->timed_out || timed_out;
    LOG_WARN(kComp, "step %zu (%s): %s: stopping process group %d", step_->index + 1, step_->action->name.c_str(),
             why.c_str(), step_->pid);
    ::kill(-step_->pid, SIGTERM);
    if (!step_->kill_timer)
        step_->kill_timer = loop_.add_timer(options_.kill_grace_ms, [this] {
            step_->kill_timer = 0;
            if (step_ && !step_->exited) ::kill(-step_->pid, SIGKILL);
        });
}

void JobRunner::finish_step() {
    std::unique_ptr<Step> s = std::move(step_);
    StepResult r;
    r.index = s->index;
    r.name = s->action->name;
    r.stdout_tail = s->out_tail.text();
    r.stderr_tail = s->err_tail.text();
    r.timed_out = s->timed_out;
    const Action& action = *s->action;
    if (s->pid < 0) {
        r.reason = s->stop_reason;  // never started: the reason says why
    } else {
        std::string status = describe_wait_status(s->wait_status);
        r.reason = s->stop_reason.empty() ? status : s->stop_reason + " (" + status + ")";
        bool exit_ok = WIFEXITED(s->wait_status) && WEXITSTATUS(s->wait_status) == 0 && s->stop_reason.empty();
        r.ok = exit_ok;
        if (exit_ok && action.allow_stderr && s->err_tail.lines() > static_cast<size_t>(*action.allow_stderr)) {
            r.ok = false;
            r.reason = format("%zu lines on stderr, more than allowStdErr %lld", s->err_tail.lines(), *action.allow_stderr);
        }
    }
    if (action.type == ActionType::Reboot && r.ok) {
        // The reboot command returned: the device goes down any moment now. The step completes
        // when the daemon starts again on a new boot.
        LOG_INFO(kComp, "step %zu (%s): reboot requested", r.index + 1, r.name.c_str());
        reboot_timer_ = loop_.add_timer(kRebootWaitMs, [this, r]() mutable {
            reboot_timer_ = 0;
            r.ok = false;
            r.reason = format("reboot requested but the device did not restart within %lld s",
                              static_cast<long long>(kRebootWaitMs / 1000));
            result_.steps.push_back(r);
            result_.stdout_tail = r.stdout_tail;
            result_.stderr_tail = r.stderr_tail;
            end(RunResult::Outcome::Failed, "step " + r.name + ": " + r.reason);
        });
        return;
    }
    LOG_INFO(kComp, "step %zu (%s) %s: %s", r.index + 1, r.name.c_str(), r.ok ? "succeeded" : "failed", r.reason.c_str());
    result_.steps.push_back(r);
    result_.stdout_tail = r.stdout_tail;
    result_.stderr_tail = r.stderr_tail;
    if (callbacks_.step_finished) callbacks_.step_finished(r);
    if (canceling_) {
        end(RunResult::Outcome::Canceled, cancel_reason_);
        return;
    }
    bool final = r.index == document_.steps.size();
    if (!r.ok && !action.ignore_step_failure) {
        end(RunResult::Outcome::Failed, "step " + r.name + ": " + r.reason);
        return;
    }
    if (final) {
        end(r.ok ? RunResult::Outcome::Succeeded : RunResult::Outcome::Failed,
            r.ok ? steps_summary() + ", final step succeeded" : "final step " + r.name + ": " + r.reason);
        return;
    }
    // Defer to the loop: a long document must not recurse through every step.
    size_t next = r.index + 1;
    next_timer_ = loop_.add_timer(0, [this, next] {
        next_timer_ = 0;
        if (running_) run_step(next);
    });
}

std::string JobRunner::steps_summary() const {
    size_t n = document_.steps.size(), ok = 0, ran = 0;
    for (const auto& r : result_.steps)
        if (r.index < n) ++ran, ok += r.ok;
    if (ok == n) return format("all %zu steps succeeded", n);
    // Steps resumed after a restart ran in an earlier process: count them as done.
    return format("%zu of %zu steps succeeded, %zu failure(s) ignored", ok + (n - ran), n, ran - ok);
}

void JobRunner::cancel(const std::string& reason) {
    if (!running_) return;
    canceling_ = true;
    cancel_reason_ = reason;
    loop_.cancel_timer(next_timer_);
    loop_.cancel_timer(reboot_timer_);
    next_timer_ = reboot_timer_ = 0;
    if (step_ && step_->pid > 0 && !step_->exited) {
        stop_process(reason, false);
        return;  // finish_step ends the run once the group is gone
    }
    if (step_) {
        loop_.cancel_timer(step_->limit_timer);
        step_.reset();
    }
    end(RunResult::Outcome::Canceled, reason);
}

void JobRunner::end(RunResult::Outcome outcome, const std::string& reason) {
    if (!running_) return;
    running_ = false;
    result_.outcome = outcome;
    result_.reason = reason;
    if (callbacks_.done) {
        auto done = callbacks_.done;
        done(result_);
    }
}

}  // namespace iot::jobs
