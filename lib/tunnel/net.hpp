// Non-blocking TCP for the tunnel: name resolution (the one bounded blocking step the loop allows),
// a connect that tries each address in turn without blocking, and "host:port" parsing.
#pragma once
#include <sys/socket.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "base/fd.hpp"
#include "base/result.hpp"
#include "loop/loop.hpp"

namespace iot::tunnel {

struct HostPort {
    std::string host;
    int port = 0;
};
// "host:port", "[v6]:port"; `default_port` when the port is left out (0: the port is required);
// min_port 0 lets a listener ask for any free port.
Result<HostPort> parse_host_port(std::string_view text, int default_port = 0, int min_port = 1);

// An HTTP CONNECT proxy from a URL as HTTPS_PROXY holds it: "http://[user:password@]host[:port]"
// (scheme optional, port 80 when left out).
struct ProxySettings {
    std::string host;
    int port = 0;
    std::string user, password;
};
Result<ProxySettings> parse_proxy_url(std::string_view url);

// getaddrinfo, blocking: bounded by the resolver's own timeout and attempts (resolv.conf).
// Numeric addresses never touch the network.
struct Address {
    sockaddr_storage addr{};
    socklen_t len = 0;
};
Result<std::vector<Address>> resolve(const std::string& host, int port);
std::string address_text(const Address& a);
int address_port(const Address& a);
void set_address_port(Address& a, int port);

// Connects to the first address that answers, each attempt non-blocking on the loop, the whole
// within `timeout_ms`. `done` runs exactly once (never from inside start()) with the connected
// socket or why none could be reached. Destroying the connector cancels it.
class TcpConnector {
public:
    using Done = std::function<void(Result<Fd>)>;
    TcpConnector(EventLoop& loop, std::string host, int port, int64_t timeout_ms, Done done);
    ~TcpConnector();
    TcpConnector(const TcpConnector&) = delete;
    TcpConnector& operator=(const TcpConnector&) = delete;
    void start();

private:
    void try_next();
    void on_ready(short revents);
    void finish(Result<Fd> result);

    EventLoop& loop_;
    std::string host_;
    int port_;
    int64_t timeout_ms_;
    Done done_;
    std::vector<Address> addresses_;
    size_t next_ = 0;
    Fd fd_;
    std::string last_error_;
    EventLoop::WatchId watch_ = 0;
    EventLoop::TimerId timer_ = 0, kick_ = 0;
};

}  // namespace iot::tunnel
