#include "base/service.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "base/fd.hpp"
#include "base/strings.hpp"

namespace iot::service {

bool notify(const std::string& state) {
    const char* path = getenv("NOTIFY_SOCKET");
    if (!path || !*path) return false;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    size_t len = strlen(path);
    if (len >= sizeof addr.sun_path) return false;
    memcpy(addr.sun_path, path, len);
    if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace
    Fd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return false;
    socklen_t addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);
    return ::sendto(fd.get(), state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr), addr_len) ==
           static_cast<ssize_t>(state.size());
}

int64_t watchdog_ms() {
    const char* usec = getenv("WATCHDOG_USEC");
    if (!usec) return 0;
    const char* pid = getenv("WATCHDOG_PID");
    if (pid && *pid) {
        auto p = parse_int(pid);
        if (!p || *p != getpid()) return 0;
    }
    auto v = parse_int(usec);
    return v && *v > 0 ? *v / 1000 : 0;
}

}  // namespace iot::service
