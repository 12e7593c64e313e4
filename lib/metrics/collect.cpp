#include "metrics/collect.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <set>

#include "base/fd.hpp"
#include "base/strings.hpp"
#include "fs/fs.hpp"

namespace iot::metrics {
namespace {

// Kernel TCP states (include/net/tcp_states.h).
constexpr unsigned kEstablished = 0x01, kClose = 0x07, kListen = 0x0A;

bool host_is_big_endian() {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return true;
#else
    return false;
#endif
}

int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

// `n` hex digits at p as a number; false on a non-hex character.
bool hex_value(const char* p, int n, uint32_t& out) {
    uint32_t v = 0;
    for (int i = 0; i < n; ++i) {
        int d = hex_digit(p[i]);
        if (d < 0) return false;
        v = (v << 4) | static_cast<uint32_t>(d);
    }
    out = v;
    return true;
}

// An address of `words` host-order 32-bit words into network-order bytes.
bool decode_address(const char* p, int words, bool big_endian, unsigned char* out) {
    for (int w = 0; w < words; ++w) {
        uint32_t v;
        if (!hex_value(p + 8 * w, 8, v)) return false;
        unsigned char* b = out + 4 * w;
        if (big_endian) {
            b[0] = static_cast<unsigned char>(v >> 24), b[1] = static_cast<unsigned char>(v >> 16);
            b[2] = static_cast<unsigned char>(v >> 8), b[3] = static_cast<unsigned char>(v);
        } else {
            b[0] = static_cast<unsigned char>(v), b[1] = static_cast<unsigned char>(v >> 8);
            b[2] = static_cast<unsigned char>(v >> 16), b[3] = static_cast<unsigned char>(v >> 24);
        }
    }
    return true;
}

// "ADDR:PORT" at p (ADDR of 8 or 32 hex digits); advances p past it.
bool parse_endpoint(const char*& p, const char* end, int words, bool big_endian, unsigned char* addr, uint16_t& port) {
    int len = 8 * words;
    if (end - p < len + 5 || p[len] != ':') return false;
    if (!decode_address(p, words, big_endian, addr)) return false;
    uint32_t v;
    if (!hex_value(p + len + 1, 4, v)) return false;
    port = static_cast<uint16_t>(v);
    p += len + 5;
    return true;
}

bool parse_row(const char* p, const char* end, int family, bool big_endian, SocketRow& row) {
    int words = family == AF_INET6 ? 4 : 1;
    while (p < end && *p == ' ') ++p;
    while (p < end && *p != ':') ++p;  // "sl:"
    if (p >= end) return false;
    ++p;
    while (p < end && *p == ' ') ++p;
    row.family = family;
    if (!parse_endpoint(p, end, words, big_endian, row.local, row.local_port)) return false;
    if (p >= end || *p != ' ') return false;
    ++p;
    if (!parse_endpoint(p, end, words, big_endian, row.remote, row.remote_port)) return false;
    if (end - p < 3 || *p != ' ') return false;
    uint32_t st;
    if (!hex_value(p + 1, 2, st)) return false;
    row.state = st;
    return true;
}

bool resolve_big_endian(ByteOrder order) {
    return order == ByteOrder::Host ? host_is_big_endian() : order == ByteOrder::Big;
}

// Calls `row_cb` for every row of `text` after the header line.
void for_each_row(const char* begin, const char* end, int family, bool big_endian, bool& header_seen,
                  const std::function<void(const SocketRow&)>& row_cb) {
    const char* line = begin;
    while (line < end) {
        const char* nl = static_cast<const char*>(memchr(line, '\n', static_cast<size_t>(end - line)));
        const char* stop = nl ? nl : end;
        if (!header_seen) {
            header_seen = true;
        } else {
            SocketRow row;
            if (parse_row(line, stop, family, big_endian, row)) row_cb(row);
        }
        line = stop + 1;
    }
}

// Read a /proc/net file in bounded chunks, whole lines at a time: 10,000 sockets are 1.5 MB of
// text that never needs to be in memory at once. A missing file (no IPv6 in the kernel) is not an
// error: it has no sockets.
Status read_socket_file(const std::string& path, int family, bool big_endian,
                        const std::function<void(const SocketRow&)>& row_cb) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) {
        if (errno == ENOENT) return {};
        return Error(format("cannot read %s: %s", path.c_str(), errno_text(errno).c_str()));
    }
    std::string buf(64 * 1024, '\0');
    size_t have = 0;
    bool header_seen = false;
    for (;;) {
        ssize_t n = ::read(fd.get(), &buf[have], buf.size() - have);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return Error(format("cannot read %s: %s", path.c_str(), errno_text(errno).c_str()));
        have += static_cast<size_t>(n);
        const char* data = buf.data();
        const char* last_nl = nullptr;
        for (size_t i = have; i > 0; --i)
            if (data[i - 1] == '\n') {
                last_nl = data + i - 1;
                break;
            }
        if (n == 0) {
            for_each_row(data, data + have, family, big_endian, header_seen, row_cb);
            return {};
        }
        if (!last_nl) {
            if (have == buf.size()) return Error(format("%s: a line longer than %zu bytes", path.c_str(), buf.size()));
            continue;
        }
        for_each_row(data, last_nl, family, big_endian, header_seen, row_cb);
        size_t used = static_cast<size_t>(last_nl + 1 - data);
        memmove(&buf[0], data + used, have - used);
        have -= used;
    }
}

bool is_zero(const unsigned char* a, size_t n) {
    for (size_t i = 0; i < n; ++i)
        if (a[i]) return false;
    return true;
}

size_t address_size(int family) {
    return family == AF_INET6 ? 16 : 4;
}

// Accumulates rows into ports and connections, with interface names interned so 10,000
// connections do not hold 10,000 copies of "eth0".
class SocketTable {
public:
    SocketTable(const Interfaces& interfaces) : interfaces_(interfaces) {}

    void add_tcp(const SocketRow& r) {
        if (r.state == kListen)
            tcp_ports_.insert({r.local_port, interface_of(r)});
        else if (r.state == kEstablished)
            connections_.push_back({r, interface_of(r)});
    }
    void add_udp(const SocketRow& r) {
        // A bound, unconnected UDP socket: CLOSE state and no peer. (Not LISTEN: UDP has none,
        // the test in AWS's C demo never matches.) Connected UDP sockets show ESTABLISHED.
        if (r.state == kClose && r.remote_port == 0 && is_zero(r.remote, address_size(r.family)) && r.local_port)
            udp_ports_.insert({r.local_port, interface_of(r)});
    }

    void finish(Metrics& m, size_t cap) {
        fill(m.tcp_ports, tcp_ports_, cap);
        fill(m.udp_ports, udp_ports_, cap);
        m.connections.total = connections_.size();
        // Sort on the numbers and format only the entries that are kept.
        std::sort(connections_.begin(), connections_.end(), [](const Conn& a, const Conn& b) {
            if (a.row.local_port != b.row.local_port) return a.row.local_port < b.row.local_port;
            if (a.row.family != b.row.family) return a.row.family < b.row.family;
            int c = memcmp(a.row.remote, b.row.remote, 16);
            if (c != 0) return c < 0;
            return a.row.remote_port < b.row.remote_port;
        });
        size_t n = std::min(cap, connections_.size());
        m.connections.connections.reserve(n);
        for (size_t i = 0; i < n; ++i) {
            const SocketRow& r = connections_[i].row;
            m.connections.connections.push_back(
                {format_endpoint(r.family, r.remote, r.remote_port), r.local_port, names_[connections_[i].iface]});
        }
    }

private:
    struct Conn {
        SocketRow row;
        size_t iface;
    };
    // Index into names_; 0 is "" (wildcard or an address no interface holds).
    size_t interface_of(const SocketRow& r) {
        if (is_zero(r.local, address_size(r.family))) return 0;
        std::string name = interfaces_.owner(r.family, r.local);
        for (size_t i = 0; i < names_.size(); ++i)
            if (names_[i] == name) return i;
        names_.push_back(name);
        return names_.size() - 1;
    }
    void fill(PortList& out, const std::set<std::pair<uint16_t, size_t>>& set, size_t cap) {
        // The set orders by port, then by interface index; order by name instead so the output
        // does not depend on which socket was seen first.
        std::vector<Port> all;
        all.reserve(set.size());
        for (const auto& [port, iface] : set) all.push_back({port, names_[iface]});
        std::sort(all.begin(), all.end(), [](const Port& a, const Port& b) {
            return a.port != b.port ? a.port < b.port : a.interface < b.interface;
        });
        out.total = all.size();
        if (all.size() > cap) all.resize(cap);
        out.ports = std::move(all);
    }

    const Interfaces& interfaces_;
    std::vector<std::string> names_{""};
    std::set<std::pair<uint16_t, size_t>> tcp_ports_, udp_ports_;
    std::vector<Conn> connections_;
};

bool parse_u64(const char*& p, const char* end, uint64_t& out) {
    while (p < end && (*p == ' ' || *p == '\t')) ++p;
    if (p >= end || *p < '0' || *p > '9') return false;
    uint64_t v = 0;
    while (p < end && *p >= '0' && *p <= '9') v = v * 10 + static_cast<uint64_t>(*p++ - '0');
    out = v;
    return true;
}

}  // namespace

Interfaces Interfaces::system() {
    Interfaces out;
    struct ifaddrs* list = nullptr;
    if (::getifaddrs(&list) != 0) return out;
    for (struct ifaddrs* i = list; i; i = i->ifa_next) {
        if (!i->ifa_name) continue;
        if ((i->ifa_flags & IFF_LOOPBACK) &&
            std::find(out.loopback.begin(), out.loopback.end(), i->ifa_name) == out.loopback.end())
            out.loopback.push_back(i->ifa_name);
        if (!i->ifa_addr) continue;
        InterfaceAddress a;
        a.name = i->ifa_name;
        a.family = i->ifa_addr->sa_family;
        if (a.family == AF_INET)
            memcpy(a.addr, &reinterpret_cast<const sockaddr_in*>(i->ifa_addr)->sin_addr, 4);
        else if (a.family == AF_INET6)
            memcpy(a.addr, &reinterpret_cast<const sockaddr_in6*>(i->ifa_addr)->sin6_addr, 16);
        else
            continue;
        out.addresses.push_back(a);
    }
    ::freeifaddrs(list);
    return out;
}

std::string Interfaces::owner(int family, const unsigned char* addr) const {
    static const unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (family == AF_INET6 && memcmp(addr, kMapped, 12) == 0) return owner(AF_INET, addr + 12);
    for (const auto& a : addresses)
        if (a.family == family && memcmp(a.addr, addr, address_size(family)) == 0) return a.name;
    // 127.0.0.0/8 is loopback whatever address lo was given.
    if (family == AF_INET && addr[0] == 127 && !loopback.empty()) return loopback.front();
    return {};
}

bool Interfaces::is_loopback(const std::string& name) const {
    if (std::find(loopback.begin(), loopback.end(), name) != loopback.end()) return true;
    return loopback.empty() && name == "lo";
}

std::vector<SocketRow> parse_sockets(const std::string& text, int family, ByteOrder order) {
    std::vector<SocketRow> rows;
    bool header_seen = false;
    for_each_row(text.data(), text.data() + text.size(), family, resolve_big_endian(order), header_seen,
                 [&](const SocketRow& r) { rows.push_back(r); });
    return rows;
}

std::string format_endpoint(int family, const unsigned char* addr, uint16_t port) {
    // An IPv4 peer of a dual-stack socket (::ffff:a.b.c.d) is an IPv4 peer.
    static const unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (family == AF_INET6 && memcmp(addr, kMapped, 12) == 0) return format_endpoint(AF_INET, addr + 12, port);
    char text[INET6_ADDRSTRLEN] = "";
    ::inet_ntop(family, addr, text, sizeof text);
    return family == AF_INET6 ? format("[%s]:%u", text, port) : format("%s:%u", text, port);
}

CounterMap parse_net_dev(const std::string& text) {
    CounterMap out;
    for (const std::string& line : split(text, '\n')) {
        size_t colon = line.find(':');
        if (colon == std::string::npos) continue;  // the two header lines have "|", not ":"
        std::string name(trim(std::string_view(line).substr(0, colon)));
        if (name.empty() || name.find('|') != std::string::npos) continue;
        const char* p = line.data() + colon + 1;
        const char* end = line.data() + line.size();
        uint64_t f[10];
        bool ok = true;
        for (int i = 0; i < 10 && ok; ++i) ok = parse_u64(p, end, f[i]);
        if (!ok) continue;
        // Receive: bytes packets errs drop fifo frame compressed multicast; transmit: bytes packets ...
        out[name] = Counters{f[0], f[8], f[1], f[9]};
    }
    return out;
}

Counters network_delta(const CounterMap& previous, const CounterMap& current, const Interfaces& interfaces,
                       bool include_loopback) {
    auto step = [](uint64_t before, uint64_t now) { return now >= before ? now - before : now; };
    Counters sum;
    for (const auto& [name, now] : current) {
        if (!include_loopback && interfaces.is_loopback(name)) continue;
        auto it = previous.find(name);
        Counters before = it == previous.end() ? Counters{} : it->second;
        sum.bytes_in += step(before.bytes_in, now.bytes_in);
        sum.bytes_out += step(before.bytes_out, now.bytes_out);
        sum.packets_in += step(before.packets_in, now.packets_in);
        sum.packets_out += step(before.packets_out, now.packets_out);
    }
    return sum;
}

void add_sockets(Metrics& m, const std::vector<SocketRow>& tcp, const std::vector<SocketRow>& udp,
                 const Interfaces& interfaces, size_t max_list_size) {
    SocketTable table(interfaces);
    for (const auto& r : tcp) table.add_tcp(r);
    for (const auto& r : udp) table.add_udp(r);
    m.have_tcp = m.have_udp = true;
    table.finish(m, max_list_size);
}

Metrics collect(const CollectOptions& options, const Interfaces& interfaces, const CounterMap* previous) {
    Metrics m;
    bool big = resolve_big_endian(options.proc.order);
    SocketTable table(interfaces);
    std::string net = options.proc.root + "/net/";
    auto read_family = [&](const char* v4, const char* v6, bool tcp) {
        bool ok = true;
        for (const auto& [file, family] : {std::make_pair(v4, AF_INET), std::make_pair(v6, AF_INET6)}) {
            Status st = read_socket_file(net + file, family, big, [&](const SocketRow& r) {
                if (tcp)
                    table.add_tcp(r);
                else
                    table.add_udp(r);
            });
            if (!st) {
                m.errors.push_back(st.error());
                ok = false;
            }
        }
        return ok;
    };
    m.have_tcp = read_family("tcp", "tcp6", true);
    m.have_udp = read_family("udp", "udp6", false);
    table.finish(m, options.max_list_size);

    auto dev = fs::read_file(net + "dev", 4 * 1024 * 1024);
    if (dev) {
        m.counters = parse_net_dev(*dev);
        m.have_network = true;
        m.network = previous ? network_delta(*previous, m.counters, interfaces, options.include_loopback) : Counters{};
    } else {
        m.errors.push_back(dev.error());
    }
    return m;
}

std::string boot_id(const ProcSource& proc) {
    auto text = fs::read_file(proc.root + "/sys/kernel/random/boot_id", 256);
    return text ? std::string(trim(*text)) : std::string();
}

}  // namespace iot::metrics
