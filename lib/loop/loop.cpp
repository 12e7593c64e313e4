#include "loop/loop.hpp"

#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>

#include <cerrno>

#include "base/strings.hpp"
#include "base/time.hpp"

namespace iot {

EventLoop::EventLoop() = default;

EventLoop::~EventLoop() {
    // Give the signals back to their default disposition for whatever runs after the loop.
    if (!signal_handlers_.empty()) {
        sigset_t set;
        sigemptyset(&set);
        for (auto& [sig, cb] : signal_handlers_) sigaddset(&set, sig);
        sigprocmask(SIG_UNBLOCK, &set, nullptr);
    }
}

EventLoop::WatchId EventLoop::watch(int fd, short events, FdCallback cb) {
    WatchId id = next_id_++;
    watches_[id] = Watch{fd, events, std::move(cb)};
    return id;
}

void EventLoop::set_events(WatchId id, short events) {
    auto it = watches_.find(id);
    if (it != watches_.end()) it->second.events = events;
}

void EventLoop::unwatch(WatchId id) { watches_.erase(id); }

EventLoop::TimerId EventLoop::add_timer(int64_t delay_ms, Callback cb, int64_t repeat_ms) {
    TimerId id = next_id_++;
    timers_[id] = Timer{monotonic_ms() + (delay_ms < 0 ? 0 : delay_ms), repeat_ms, std::move(cb)};
    return id;
}

void EventLoop::cancel_timer(TimerId id) { timers_.erase(id); }

Status EventLoop::on_signal(int sig, Callback cb) {
    signal_handlers_[sig] = std::move(cb);
    sigset_t set;
    sigemptyset(&set);
    for (auto& [s, unused] : signal_handlers_) sigaddset(&set, s);
    if (sigprocmask(SIG_BLOCK, &set, nullptr) != 0)
        return Error(format("sigprocmask: %s", errno_text(errno).c_str()));
    int fd = signalfd(signal_fd_.valid() ? signal_fd_.get() : -1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) return Error(format("signalfd: %s", errno_text(errno).c_str()));
    if (!signal_fd_.valid()) signal_fd_.reset(fd);
    return {};
}

void EventLoop::watch_child(pid_t pid, ChildCallback cb) {
    children_[pid] = std::move(cb);
    if (!signal_handlers_.count(SIGCHLD)) (void)on_signal(SIGCHLD, [] {});
    // The child may have exited before we started watching it.
    reap_children();
}

EventLoop::PrepareId EventLoop::add_prepare(Callback cb) {
    PrepareId id = next_id_++;
    prepare_[id] = std::move(cb);
    return id;
}

void EventLoop::remove_prepare(PrepareId id) { prepare_.erase(id); }

void EventLoop::dispatch_signals() {
    signalfd_siginfo info;
    while (::read(signal_fd_.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
        int sig = static_cast<int>(info.ssi_signo);
        if (sig == SIGCHLD) reap_children();
        auto it = signal_handlers_.find(sig);
        if (it != signal_handlers_.end() && it->second) {
            Callback cb = it->second;  // the handler may replace itself
            cb();
        }
    }
}

void EventLoop::reap_children() {
    // SIGCHLD coalesces: check every registered child, not one per signal.
    for (auto it = children_.begin(); it != children_.end();) {
        int status = 0;
        pid_t r = ::waitpid(it->first, &status, WNOHANG);
        if (r == it->first || (r < 0 && errno == ECHILD)) {
            ChildCallback cb = std::move(it->second);
            it = children_.erase(it);
            if (cb) cb(r < 0 ? -1 : status);
        } else {
            ++it;
        }
    }
}

int64_t EventLoop::next_timeout(int64_t max_wait_ms) const {
    int64_t wait = max_wait_ms;
    int64_t now = monotonic_ms();
    for (auto& [id, t] : timers_) {
        int64_t d = t.due - now;
        if (d < 0) d = 0;
        if (wait < 0 || d < wait) wait = d;
    }
    return wait;
}

void EventLoop::run_timers() {
    int64_t now = monotonic_ms();
    // Collect first: callbacks may add or cancel timers.
    std::vector<TimerId> due;
    for (auto& [id, t] : timers_)
        if (t.due <= now) due.push_back(id);
    for (TimerId id : due) {
        auto it = timers_.find(id);
        if (it == timers_.end()) continue;
        Callback cb = it->second.cb;
        if (it->second.repeat > 0)
            it->second.due = now + it->second.repeat;
        else
            timers_.erase(it);
        cb();
        if (stopping_) return;
    }
}

void EventLoop::run_once(int64_t max_wait_ms) {
    // By id: a hook may remove itself or another one (its owner destroyed) on the way.
    std::vector<PrepareId> hooks;
    hooks.reserve(prepare_.size());
    for (auto& [id, cb] : prepare_) hooks.push_back(id);
    for (PrepareId id : hooks) {
        auto it = prepare_.find(id);
        if (it == prepare_.end()) continue;
        Callback cb = it->second;
        cb();
    }
    std::vector<pollfd> fds;
    std::vector<WatchId> ids;
    fds.reserve(watches_.size() + 1);
    if (signal_fd_.valid()) {
        fds.push_back(pollfd{signal_fd_.get(), POLLIN, 0});
        ids.push_back(0);
    }
    for (auto& [id, w] : watches_) {
        if (w.fd < 0) continue;
        fds.push_back(pollfd{w.fd, w.events, 0});
        ids.push_back(id);
    }
    int64_t timeout = next_timeout(max_wait_ms);
    int n = ::poll(fds.data(), fds.size(), timeout > 0x7fffffff ? 0x7fffffff : static_cast<int>(timeout));
    if (n > 0) {
        for (size_t i = 0; i < fds.size(); ++i) {
            if (!fds[i].revents) continue;
            if (ids[i] == 0) {
                dispatch_signals();
                continue;
            }
            auto it = watches_.find(ids[i]);
            // Skip watches removed or re-pointed by an earlier callback in this round.
            if (it == watches_.end() || it->second.fd != fds[i].fd) continue;
            FdCallback cb = it->second.cb;
            cb(fds[i].revents);
            if (stopping_) return;
        }
    }
    run_timers();
}

void EventLoop::run() {
    while (!stopping_) run_once();
}

}  // namespace iot
