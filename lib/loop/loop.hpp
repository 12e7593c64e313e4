// The event loop iotd runs on: one thread, poll() over every descriptor (the MQTT socket, tunnel
// sockets, job pipes), timers, signals through a signalfd, and reaping of child processes.
// Callbacks run on the loop's thread and must not block.
#pragma once
#include <poll.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <vector>

#include "base/fd.hpp"
#include "base/result.hpp"

namespace iot {

class EventLoop {
public:
    using FdCallback = std::function<void(short revents)>;
    using Callback = std::function<void()>;
    using ChildCallback = std::function<void(int wait_status)>;
    using TimerId = uint64_t;
    using WatchId = uint64_t;

    EventLoop();
    ~EventLoop();
    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;

    // Watch `fd` for `events` (POLLIN/POLLOUT). The callback may unwatch or modify any watch.
    WatchId watch(int fd, short events, FdCallback cb);
    void set_events(WatchId id, short events);
    void unwatch(WatchId id);

    // Run `cb` after `delay_ms`, then every `repeat_ms` if non-zero. Cancelling twice is harmless.
    TimerId add_timer(int64_t delay_ms, Callback cb, int64_t repeat_ms = 0);
    void cancel_timer(TimerId id);
    bool timer_pending(TimerId id) const { return timers_.count(id) != 0; }

    // Deliver `sig` through the loop (blocked for the thread, read from a signalfd).
    Status on_signal(int sig, Callback cb);
    // Call `cb` with the wait status when child `pid` exits. Only registered children are reaped.
    void watch_child(pid_t pid, ChildCallback cb);

    // Called before every poll(): lets a client update what it waits for (libmosquitto's
    // want_write) or run periodic housekeeping. An object that goes away before the loop must
    // remove its hook.
    using PrepareId = uint64_t;
    PrepareId add_prepare(Callback cb);
    void remove_prepare(PrepareId id);

    // Wait up to `max_wait_ms` (-1: until the next timer) and dispatch what happened.
    void run_once(int64_t max_wait_ms = -1);
    // Run until stop().
    void run();
    void stop() { stopping_ = true; }
    bool stopping() const { return stopping_; }

private:
    struct Watch {
        int fd;
        short events;
        FdCallback cb;
    };
    struct Timer {
        int64_t due;
        int64_t repeat;
        Callback cb;
    };
    void dispatch_signals();
    void reap_children();
    int64_t next_timeout(int64_t max_wait_ms) const;
    void run_timers();

    std::map<WatchId, Watch> watches_;
    std::map<TimerId, Timer> timers_;
    std::map<int, Callback> signal_handlers_;
    std::map<pid_t, ChildCallback> children_;
    std::map<PrepareId, Callback> prepare_;
    Fd signal_fd_;
    uint64_t next_id_ = 1;
    bool stopping_ = false;
};

}  // namespace iot
