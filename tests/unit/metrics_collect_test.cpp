// Metrics collection on captured /proc files (tests/unit/data/proc, made by make_captures.py
// there): the same sockets as an x86 and a big-endian kernel print them, a /proc/net/dev with a
// counter reset, and a generated table of many sockets.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstdlib>

#include "base/strings.hpp"
#include "fs/fs.hpp"
#include "metrics/collect.hpp"
#include "support/tempdir.hpp"

using namespace iot;
using namespace iot::metrics;

namespace {

using testsupport::TempDir;

std::string proc_dir(const std::string& name) {
    return std::string(IOT_SOURCE_DIR) + "/tests/unit/data/proc/" + name;
}

InterfaceAddress address(const char* name, const char* text) {
    InterfaceAddress a;
    a.name = name;
    a.family = strchr(text, ':') ? AF_INET6 : AF_INET;
    EXPECT_EQ(inet_pton(a.family, text, a.addr), 1) << text;
    return a;
}

// The machine the captures were taken on.
Interfaces device() {
    Interfaces i;
    i.addresses = {address("lo", "127.0.0.1"), address("lo", "::1"), address("eth0", "192.0.2.2"),
                   address("eth0", "fd00::2")};
    i.loopback = {"lo"};
    return i;
}

Metrics collect_from(const std::string& name, ByteOrder order, size_t cap = 50) {
    CollectOptions o;
    o.proc.root = proc_dir(name);
    o.proc.order = order;
    o.max_list_size = cap;
    return collect(o, device(), nullptr);
}

std::string ports_text(const PortList& l) {
    std::vector<std::string> parts;
    for (const auto& p : l.ports)
        parts.push_back(format("%u/%s", p.port, p.interface.empty() ? "*" : p.interface.c_str()));
    return join(parts, " ");
}

std::string connections_text(const ConnectionList& l) {
    std::vector<std::string> parts;
    for (const auto& c : l.connections)
        parts.push_back(format("%u/%s>%s", c.local_port, c.local_interface.c_str(), c.remote_addr.c_str()));
    return join(parts, " ");
}

const char* const kTcpPorts = "22/* 443/eth0 631/lo 8080/eth0 9999/*";
const char* const kUdpPorts = "68/* 323/lo 5353/*";
const char* const kConnections =
    "22/eth0>198.51.100.7:51000 443/eth0>[2001:db8::5]:40000 8080/eth0>198.51.100.9:5555 40000/lo>127.0.0.1:631";

}  // namespace

TEST(MetricsCollect, LittleEndianCapture) {
    Metrics m = collect_from("le", ByteOrder::Little);
    EXPECT_TRUE(m.errors.empty()) << join(m.errors, "\n");
    ASSERT_TRUE(m.have_tcp && m.have_udp && m.have_network);
    // 0.0.0.0:22 and :::22 are one entry; TIME_WAIT is not listed; 10.9.9.9 has no interface.
    EXPECT_EQ(ports_text(m.tcp_ports), kTcpPorts);
    EXPECT_EQ(m.tcp_ports.total, 5u);
    // Bound unconnected UDP sockets (state 07, no peer); the connected one and port 0 are not.
    EXPECT_EQ(ports_text(m.udp_ports), kUdpPorts);
    EXPECT_EQ(m.udp_ports.total, 3u);
    // IPv6 as [addr]:port; an IPv4-mapped peer as plain IPv4; loopback connections are listed.
    EXPECT_EQ(connections_text(m.connections), kConnections);
    EXPECT_EQ(m.connections.total, 4u);
}

TEST(MetricsCollect, BigEndianCaptureReadsTheSame) {
    Metrics m = collect_from("be", ByteOrder::Big);
    EXPECT_EQ(ports_text(m.tcp_ports), kTcpPorts);
    EXPECT_EQ(ports_text(m.udp_ports), kUdpPorts);
    EXPECT_EQ(connections_text(m.connections), kConnections);
    // Read with the wrong order, the same file names other addresses: the order matters.
    Metrics wrong = collect_from("be", ByteOrder::Little);
    EXPECT_NE(connections_text(wrong.connections), kConnections);
}

TEST(MetricsCollect, HostOrderIsTheMachinesOwn) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    const char* own = "be";
#else
    const char* own = "le";
#endif
    EXPECT_EQ(connections_text(collect_from(own, ByteOrder::Host).connections), kConnections);
}

TEST(MetricsCollect, ParsesRowsAndSkipsJunk) {
    std::string text =
        "  sl  local_address rem_address   st\n"
        "   0: 0100007F:0050 00000000:0000 0A 00000000:00000000\n"
        "garbage line\n"
        "   1: 0100007G:0050 00000000:0000 0A\n"  // not hex
        "   2: 0100007F:0051 0200007F:1F90 01";   // cut at the end of a read, no newline
    auto rows = parse_sockets(text, AF_INET, ByteOrder::Little);
    ASSERT_EQ(rows.size(), 2u);
    EXPECT_EQ(rows[0].local_port, 80);
    EXPECT_EQ(rows[0].state, 0x0Au);
    EXPECT_EQ(format_endpoint(AF_INET, rows[1].remote, rows[1].remote_port), "127.0.0.2:8080");
}

TEST(MetricsCollect, CapsListsButKeepsExactTotals) {
    Metrics m = collect_from("le", ByteOrder::Little, 2);
    EXPECT_EQ(ports_text(m.tcp_ports), "22/* 443/eth0");
    EXPECT_EQ(m.tcp_ports.total, 5u);
    EXPECT_EQ(m.connections.connections.size(), 2u);
    EXPECT_EQ(m.connections.total, 4u);
}

TEST(MetricsCollect, MissingIpv6FilesAreNoError) {
    TempDir tmp;
    const std::string& root = tmp.path;
    ASSERT_TRUE(fs::make_dirs(root + "/net"));
    for (const char* f : {"tcp", "udp", "dev"})
        ASSERT_TRUE(fs::write_atomic(root + "/net/" + f, *fs::read_file(proc_dir("le") + "/net/" + f)));
    CollectOptions o;
    o.proc.root = root;
    o.proc.order = ByteOrder::Little;
    Metrics m = collect(o, device(), nullptr);
    EXPECT_TRUE(m.errors.empty()) << join(m.errors, "\n");
    EXPECT_EQ(ports_text(m.tcp_ports), "22/* 631/lo 8080/eth0 9999/*");
    // Without /proc/net/dev there are no network stats, and the error says which file.
    ::unlink((root + "/net/dev").c_str());
    m = collect(o, device(), nullptr);
    EXPECT_FALSE(m.have_network);
    ASSERT_EQ(m.errors.size(), 1u);
    EXPECT_NE(m.errors[0].find("/net/dev"), std::string::npos);
    EXPECT_TRUE(m.have_tcp);
}

TEST(MetricsCollect, ManySockets) {
    // 5000 established connections and 1000 listening ports in one table, read in chunks.
    TempDir tmp;
    const std::string& root = tmp.path;
    ASSERT_TRUE(fs::make_dirs(root + "/net"));
    std::string tcp = "  sl  local_address rem_address   st tx_queue rx_queue\n";
    for (int i = 0; i < 6000; ++i) {
        bool listen = i < 1000;
        tcp += format(
            "%5d: 020200C0:%04X %s %s 00000000:00000000 00:00000000 00000000  1000        0 %d 1 "
            "0000000000000000 100 0 0 10 0\n",
            i, listen ? 10000 + i : 443, listen ? "00000000:0000" : format("0A00000A:%04X", 1024 + i).c_str(),
            listen ? "0A" : "01", 100000 + i);
    }
    ASSERT_TRUE(fs::write_atomic(root + "/net/tcp", tcp));
    CollectOptions o;
    o.proc.root = root;
    o.proc.order = ByteOrder::Little;
    Metrics m = collect(o, device(), nullptr);
    EXPECT_EQ(m.tcp_ports.total, 1000u);
    EXPECT_EQ(m.tcp_ports.ports.size(), 50u);
    EXPECT_EQ(m.tcp_ports.ports[0].port, 10000);
    EXPECT_EQ(m.tcp_ports.ports[0].interface, "eth0");
    EXPECT_EQ(m.connections.total, 5000u);
    EXPECT_EQ(m.connections.connections.size(), 50u);
    EXPECT_EQ(m.connections.connections[0].remote_addr, "10.0.0.10:2024");
}

TEST(MetricsCollect, NetworkDeltasHandleResetsAndNewInterfaces) {
    auto previous = parse_net_dev(*fs::read_file(proc_dir("dev") + "/previous"));
    auto current = parse_net_dev(*fs::read_file(proc_dir("dev") + "/current"));
    ASSERT_EQ(current.size(), 4u);
    EXPECT_EQ(current["eth0"].bytes_in, 1000000u);
    EXPECT_EQ(current["eth0"].packets_in, 10000u);
    EXPECT_EQ(current["eth0"].bytes_out, 2000000u);
    EXPECT_EQ(current["eth0"].packets_out, 20000u);
    // eth0 grew; wlan0's receive counters went back (reset: counted from 0), its transmit grew;
    // usb0 is new (from 0); ppp0 went away; lo is left out.
    Counters d = network_delta(previous, current, device(), false);
    EXPECT_EQ(d.bytes_in, 100000u + 300u + 70u);
    EXPECT_EQ(d.bytes_out, 500000u + 300u + 80u);
    EXPECT_EQ(d.packets_in, 1000u + 3u + 1u);
    EXPECT_EQ(d.packets_out, 5000u + 3u + 2u);
    Counters with_lo = network_delta(previous, current, device(), true);
    EXPECT_EQ(with_lo.bytes_in, d.bytes_in + 100000u);
    EXPECT_EQ(with_lo.packets_out, d.packets_out + 1000u);
}

TEST(MetricsCollect, FirstCollectionIsABaseline) {
    Metrics m = collect_from("le", ByteOrder::Little);
    EXPECT_EQ(m.network.bytes_in, 0u);
    EXPECT_EQ(m.network.packets_out, 0u);
    EXPECT_EQ(m.counters.size(), 3u);
    CounterMap none;  // after a reboot: every counter counts from 0
    CollectOptions o;
    o.proc.root = proc_dir("le");
    Metrics after_reboot = collect(o, device(), &none);
    EXPECT_EQ(after_reboot.network.bytes_in, 1000300u);
    EXPECT_EQ(after_reboot.network.bytes_out, 2000400u);
}

TEST(MetricsCollect, BootId) {
    ProcSource p;
    p.root = proc_dir("le");
    EXPECT_EQ(boot_id(p), "11111111-2222-3333-4444-555555555555");
    p.root = "/nonexistent";
    EXPECT_EQ(boot_id(p), "");
}

TEST(MetricsCollect, SystemInterfacesHaveLoopback) {
    Interfaces i = Interfaces::system();
    EXPECT_TRUE(i.is_loopback("lo"));
    unsigned char localhost[4] = {127, 0, 0, 1};
    EXPECT_EQ(i.owner(AF_INET, localhost), "lo");
}

TEST(MetricsCollect, RealProcReadsWithoutErrors) {
    Metrics m = collect(CollectOptions{}, Interfaces::system(), nullptr);
    EXPECT_TRUE(m.errors.empty()) << join(m.errors, "\n");
    EXPECT_TRUE(m.have_tcp && m.have_udp && m.have_network);
}
