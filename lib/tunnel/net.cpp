#include "tunnel/net.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <cerrno>
#include <cstring>

#include "base/strings.hpp"

namespace iot::tunnel {

Result<HostPort> parse_host_port(std::string_view text, int default_port, int min_port) {
    std::string_view t = trim(text);
    HostPort hp;
    std::string_view port_text;
    if (!t.empty() && t[0] == '[') {
        size_t close = t.find(']');
        if (close == std::string_view::npos) return Error(format("'%.*s': missing ']'", int(t.size()), t.data()));
        hp.host = std::string(t.substr(1, close - 1));
        std::string_view rest = t.substr(close + 1);
        if (!rest.empty()) {
            if (rest[0] != ':') return Error(format("'%.*s': expected ':' after ']'", int(t.size()), t.data()));
            port_text = rest.substr(1);
        }
    } else {
        size_t colon = t.rfind(':');
        if (colon != std::string_view::npos && t.find(':') == colon) {
            hp.host = std::string(t.substr(0, colon));
            port_text = t.substr(colon + 1);
        } else {
            hp.host = std::string(t);  // no port (or a bare IPv6 address)
        }
    }
    if (hp.host.empty()) return Error(format("'%.*s': no host", int(t.size()), t.data()));
    if (port_text.empty()) {
        if (!default_port) return Error(format("'%.*s': expected host:port", int(t.size()), t.data()));
        hp.port = default_port;
        return hp;
    }
    auto port = parse_int(port_text);
    if (!port || *port < min_port || *port > 65535)
        return Error(format("'%.*s': port must be %d to 65535", int(t.size()), t.data(), min_port));
    hp.port = static_cast<int>(*port);
    return hp;
}

Result<ProxySettings> parse_proxy_url(std::string_view url) {
    std::string_view u = trim(url);
    if (starts_with(u, "http://")) {
        u.remove_prefix(7);
    } else if (u.find("://") != std::string_view::npos) {
        return Error("only http:// proxies are supported (HTTP CONNECT)");
    }
    while (!u.empty() && u.back() == '/') u.remove_suffix(1);
    ProxySettings p;
    size_t at = u.rfind('@');
    if (at != std::string_view::npos) {
        std::string_view cred = u.substr(0, at);
        size_t colon = cred.find(':');
        p.user = std::string(cred.substr(0, colon));
        if (colon != std::string_view::npos) p.password = std::string(cred.substr(colon + 1));
        u = u.substr(at + 1);
    }
    auto hp = parse_host_port(u, 80);
    if (!hp) return hp.err().wrap("proxy");
    p.host = hp->host;
    p.port = hp->port;
    return p;
}

Result<std::vector<Address>> resolve(const std::string& host, int port) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    std::string service = std::to_string(port);
    addrinfo* list = nullptr;
    int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &list);
    if (rc != 0) {
        std::string why = rc == EAI_SYSTEM ? errno_text(errno) : gai_strerror(rc);
        return Error(format("cannot resolve %s: %s", host.c_str(), why.c_str()));
    }
    std::vector<Address> out;
    for (addrinfo* a = list; a; a = a->ai_next) {
        if (a->ai_addrlen > sizeof(sockaddr_storage)) continue;
        Address addr;
        memcpy(&addr.addr, a->ai_addr, a->ai_addrlen);
        addr.len = a->ai_addrlen;
        out.push_back(addr);
    }
    freeaddrinfo(list);
    if (out.empty()) return Error(format("cannot resolve %s: no address", host.c_str()));
    return out;
}

std::string address_text(const Address& a) {
    char buf[INET6_ADDRSTRLEN] = "?";
    if (a.addr.ss_family == AF_INET) {
        inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&a.addr)->sin_addr, buf, sizeof buf);
        return format("%s:%d", buf, address_port(a));
    }
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&a.addr)->sin6_addr, buf, sizeof buf);
    return format("[%s]:%d", buf, address_port(a));
}

int address_port(const Address& a) {
    if (a.addr.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&a.addr)->sin_port);
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&a.addr)->sin6_port);
}

void set_address_port(Address& a, int port) {
    if (a.addr.ss_family == AF_INET)
        reinterpret_cast<sockaddr_in*>(&a.addr)->sin_port = htons(static_cast<uint16_t>(port));
    else
        reinterpret_cast<sockaddr_in6*>(&a.addr)->sin6_port = htons(static_cast<uint16_t>(port));
}

TcpConnector::TcpConnector(EventLoop& loop, std::string host, int port, int64_t timeout_ms, Done done)
    : loop_(loop), host_(std::move(host)), port_(port), timeout_ms_(timeout_ms), done_(std::move(done)) {}

TcpConnector::~TcpConnector() {
    if (watch_) loop_.unwatch(watch_);
    loop_.cancel_timer(timer_);
    loop_.cancel_timer(kick_);
}

void TcpConnector::start() {
    auto addresses = resolve(host_, port_);
    if (!addresses) {
        last_error_ = addresses.error();
        // Report from the loop, never from inside start(): the caller may not be ready for it.
        kick_ = loop_.add_timer(0, [this] {
            kick_ = 0;
            finish(Error(last_error_));
        });
        return;
    }
    addresses_ = addresses.take();
    timer_ = loop_.add_timer(timeout_ms_, [this] {
        timer_ = 0;
        finish(Error(format("cannot connect to %s:%d: no answer within %lld s", host_.c_str(), port_,
                            static_cast<long long>(timeout_ms_ / 1000))));
    });
    kick_ = loop_.add_timer(0, [this] {
        kick_ = 0;
        try_next();
    });
}

void TcpConnector::try_next() {
    if (watch_) loop_.unwatch(watch_);
    watch_ = 0;
    fd_.reset();
    while (next_ < addresses_.size()) {
        const Address& a = addresses_[next_++];
        Fd fd(::socket(a.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP));
        if (!fd.valid()) {
            last_error_ = format("socket: %s", errno_text(errno).c_str());
            continue;
        }
        int one = 1;
        setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&a.addr), a.len) == 0 || errno == EINPROGRESS) {
            fd_ = std::move(fd);
            watch_ = loop_.watch(fd_.get(), POLLOUT, [this](short ev) { on_ready(ev); });
            return;
        }
        last_error_ =
            format("cannot connect to %s (%s): %s", host_.c_str(), address_text(a).c_str(), errno_text(errno).c_str());
    }
    finish(Error(last_error_.empty() ? format("cannot connect to %s:%d", host_.c_str(), port_) : last_error_));
}

void TcpConnector::on_ready(short) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err == 0) {
        finish(std::move(fd_));
        return;
    }
    const Address& a = addresses_[next_ - 1];
    last_error_ =
        format("cannot connect to %s (%s): %s", host_.c_str(), address_text(a).c_str(), errno_text(err).c_str());
    try_next();
}

void TcpConnector::finish(Result<Fd> result) {
    if (watch_) loop_.unwatch(watch_);
    watch_ = 0;
    loop_.cancel_timer(timer_);
    loop_.cancel_timer(kick_);
    timer_ = kick_ = 0;
    next_ = addresses_.size();
    if (done_) {
        Done done = std::move(done_);
        done_ = nullptr;
        done(std::move(result));  // may destroy this connector: nothing after this line
    }
}

}  // namespace iot::tunnel
