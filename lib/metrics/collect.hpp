// Device-side metrics from /proc and getifaddrs: listening TCP and UDP ports, established TCP
// connections and network traffic counters. Needs no root and only reads /proc, so it works under
// a read-only /proc and as the unprivileged user AWS recommends.
//
// Decisions a reader of a report should know:
// - Ports are listed once per (port, interface). A socket bound to a wildcard address (0.0.0.0 or
//   ::) means "every interface" and has no interface in the report; the same port on 0.0.0.0 and
//   :: (a dual-stack service) is therefore one entry, and so are SO_REUSEPORT siblings. `total`
//   counts these entries, so an uncapped list always has `total` entries.
// - Ports and connections on loopback addresses are listed (interface "lo"): a local-only
//   listener is still a fact about the device. include_loopback only affects network_stats.
// - Lists are sorted (ports ascending, connections by local port then remote address) and cut to
//   max_list_size; `total` stays exact, so a port beyond the cut still moves the count.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "base/result.hpp"

namespace iot::metrics {

// How the hex words of /proc/net/{tcp,udp}* are read. The kernel prints each 32-bit word of an
// address as a host-order integer, so the same socket reads 0100007F on x86 and 7F000001 on a
// big-endian MIPS or PowerPC. Host is right on the device itself; tests force the other order to
// read a capture taken on a machine of the other kind.
enum class ByteOrder { Host, Little, Big };

struct ProcSource {
    std::string root = "/proc";
    ByteOrder order = ByteOrder::Host;
};

// The device's addresses and which interface holds each, from getifaddrs (or given by a test).
struct InterfaceAddress {
    std::string name;
    int family = 0;               // AF_INET or AF_INET6
    unsigned char addr[16] = {};  // 4 bytes used for AF_INET
};
struct Interfaces {
    std::vector<InterfaceAddress> addresses;
    std::vector<std::string> loopback;  // names of interfaces flagged IFF_LOOPBACK
    static Interfaces system();
    // The interface holding this address ("" if none); IPv4-mapped IPv6 addresses match IPv4.
    std::string owner(int family, const unsigned char* addr) const;
    bool is_loopback(const std::string& name) const;
};

struct Port {
    uint16_t port = 0;
    std::string interface;  // empty: a wildcard address, every interface
};
struct PortList {
    std::vector<Port> ports;
    size_t total = 0;
};
struct Connection {
    std::string remote_addr;  // "1.2.3.4:443" or "[2001:db8::1]:443"
    uint16_t local_port = 0;
    std::string local_interface;
};
struct ConnectionList {
    std::vector<Connection> connections;
    size_t total = 0;
};

// Interface counters as /proc/net/dev has them.
struct Counters {
    uint64_t bytes_in = 0, bytes_out = 0, packets_in = 0, packets_out = 0;
};
using CounterMap = std::map<std::string, Counters>;

// One socket row of /proc/net/{tcp,tcp6,udp,udp6}.
struct SocketRow {
    int family = 0;
    unsigned char local[16] = {}, remote[16] = {};
    uint16_t local_port = 0, remote_port = 0;
    unsigned state = 0;
};

// Parse a whole /proc/net/tcp-style file. Malformed rows are skipped (the kernel never writes
// them; a truncated read can cut the last one).
std::vector<SocketRow> parse_sockets(const std::string& text, int family, ByteOrder order);
// "127.0.0.1:8080" / "[::1]:8080"
std::string format_endpoint(int family, const unsigned char* addr, uint16_t port);
// /proc/net/dev: counters per interface.
CounterMap parse_net_dev(const std::string& text);

// What changed since `previous`, summed over the interfaces that count. A counter that went
// backwards (driver reload, 32-bit wrap) is counted from 0: the delta is its current value, never
// negative. An interface that is new since `previous` is counted from 0 too.
Counters network_delta(const CounterMap& previous, const CounterMap& current, const Interfaces& interfaces,
                       bool include_loopback);

struct CollectOptions {
    ProcSource proc;
    bool include_loopback = false;
    size_t max_list_size = 50;
};

struct Metrics {
    bool have_tcp = false, have_udp = false, have_network = false;
    PortList tcp_ports, udp_ports;
    ConnectionList connections;
    Counters network;                 // delta since `previous` (see collect)
    CounterMap counters;              // the raw counters now, to be kept for the next delta
    std::vector<std::string> errors;  // one per source that could not be read
};

// Listening ports and established connections of these socket rows.
void add_sockets(Metrics& m, const std::vector<SocketRow>& tcp, const std::vector<SocketRow>& udp,
                 const Interfaces& interfaces, size_t max_list_size);

// Collect everything. `previous` holds the counters of the last report, or nullptr when there is
// none: then network_stats are 0 (a baseline, not the traffic since boot, which would look like
// a spike to Defender's anomaly detection).
Metrics collect(const CollectOptions& options, const Interfaces& interfaces, const CounterMap* previous);

// /proc/sys/kernel/random/boot_id, "" if unreadable: counters from another boot are not compared.
std::string boot_id(const ProcSource& proc);

}  // namespace iot::metrics
