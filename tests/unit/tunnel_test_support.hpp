// Shared by the tunnel tests: a local TCP server on the loop and a loop runner.
#pragma once
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/fd.hpp"
#include "base/time.hpp"
#include "loop/loop.hpp"

namespace tunneltest {
using iot::EventLoop;
using iot::Fd;

// A local TCP server on the loop: echoes, or accepts and never reads, or sends forever.
class LocalServer {
public:
    enum class Mode { Echo, Silent, Firehose };
    LocalServer(EventLoop& loop, Mode mode) : loop_(loop), mode_(mode) {
        listener_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
        int one = 1;
        setsockopt(listener_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        bind(listener_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
        listen(listener_.get(), 16);
        socklen_t len = sizeof a;
        getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&a), &len);
        port = ntohs(a.sin_port);
        watch_ = loop_.watch(listener_.get(), POLLIN, [this](short) { accept_one(); });
    }
    ~LocalServer() {
        loop_.unwatch(watch_);
        for (auto& c : conns_)
            if (c->watch) loop_.unwatch(c->watch);
    }
    int port = 0;
    int accepted = 0, closed = 0;
    size_t sent_bytes = 0;
    std::string received;

private:
    struct Conn {
        Fd fd;
        EventLoop::WatchId watch = 0;
        std::string pending;
    };
    void accept_one() {
        int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK);
        if (fd < 0) return;
        ++accepted;
        auto c = std::make_unique<Conn>();
        c->fd.reset(fd);
        Conn* raw = c.get();
        short ev = mode_ == Mode::Firehose ? POLLOUT : mode_ == Mode::Echo ? POLLIN : 0;
        c->watch = loop_.watch(fd, ev, [this, raw](short revents) { on_event(*raw, revents); });
        conns_.push_back(std::move(c));
    }
    void on_event(Conn& c, short revents) {
        if (mode_ == Mode::Firehose) {
            static const std::string chunk(65536, 'F');
            ssize_t n = ::send(c.fd.get(), chunk.data(), chunk.size(), MSG_NOSIGNAL);
            if (n > 0) sent_bytes += static_cast<size_t>(n);
            if (n < 0 && errno != EAGAIN) drop(c);
            return;
        }
        if (revents & (POLLIN | POLLHUP | POLLERR)) {
            char buf[65536];
            ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, 0);
            if (n == 0 || (n < 0 && errno != EAGAIN)) {
                drop(c);
                return;
            }
            if (n > 0) {
                received.append(buf, static_cast<size_t>(n));
                c.pending.append(buf, static_cast<size_t>(n));
            }
        }
        while (!c.pending.empty()) {
            ssize_t n = ::send(c.fd.get(), c.pending.data(), c.pending.size(), MSG_NOSIGNAL);
            if (n <= 0) break;
            c.pending.erase(0, static_cast<size_t>(n));
        }
        loop_.set_events(c.watch, static_cast<short>(POLLIN | (c.pending.empty() ? 0 : POLLOUT)));
    }
    void drop(Conn& c) {
        loop_.unwatch(c.watch);
        c.watch = 0;
        c.fd.reset();
        ++closed;
    }
    EventLoop& loop_;
    Mode mode_;
    Fd listener_;
    EventLoop::WatchId watch_ = 0;
    std::vector<std::unique_ptr<Conn>> conns_;
};

inline bool run_until(EventLoop& loop, const std::function<bool()>& done, int64_t timeout_ms = 5000) {
    int64_t end = iot::monotonic_ms() + timeout_ms;
    while (!done() && iot::monotonic_ms() < end) loop.run_once(10);
    return done();
}

}  // namespace tunneltest
