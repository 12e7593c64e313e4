// Metrics: one collection on a device with 10,000 open sockets (goal: 10 ms or less), one on this
// machine, and the size of a report in JSON with long names, JSON with short names and CBOR.
//
// The 10,000 sockets are a synthetic /proc written once at start (a temporary directory): 200
// listening TCP ports, 9,600 established connections (IPv4 and IPv6), 200 bound UDP ports.
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>

#include "base/strings.hpp"
#include "fs/fs.hpp"
#include "metrics/collect.hpp"
#include "metrics/report.hpp"

namespace {

using namespace iot;
using namespace iot::metrics;

const char* const kRowTail =
    " 00000000:00000000 00:00000000 00000000  1000        0 %d 1 0000000000000000 100 0 0 10 0\n";

std::string make_proc() {
    char tmpl[] = "/tmp/metrics-bench-XXXXXX";
    std::string root = mkdtemp(tmpl);
    (void)fs::make_dirs(root + "/net");
    std::string tcp =
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
    std::string tcp6 =
        "  sl  local_address                         remote_address                        st tx_queue\n";
    std::string udp =
        "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
    int row = 0;
    for (int i = 0; i < 200; ++i, ++row)
        tcp += format("%5d: 020200C0:%04X 00000000:0000 0A", i, 2000 + i) + format(kRowTail, row);
    for (int i = 0; i < 4800; ++i, ++row)
        tcp += format("%5d: 020200C0:%04X %08X:%04X 01", 200 + i, 2000 + i % 200, 0x0A000000 + i, 30000 + i) +
               format(kRowTail, row);
    for (int i = 0; i < 4800; ++i, ++row)
        tcp6 += format("%5d: 000000FD000000000000000002000000:01BB B80D01200000000000000000%08X:%04X 01", i, i,
                       40000 + i % 20000) +
                format(kRowTail, row);
    for (int i = 0; i < 200; ++i, ++row)
        udp += format("%5d: 00000000:%04X 00000000:0000 07", i, 5000 + i) + format(kRowTail, row);
    (void)fs::write_atomic(root + "/net/tcp", tcp);
    (void)fs::write_atomic(root + "/net/tcp6", tcp6);
    (void)fs::write_atomic(root + "/net/udp", udp);
    (void)fs::write_atomic(root + "/net/udp6", "  sl  local_address remote_address st\n");
    (void)fs::write_atomic(root + "/net/dev",
                           "Inter-|   Receive |  Transmit\n face |bytes packets|bytes packets\n"
                           "    lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n"
                           "  eth0: 123456789 98765 0 0 0 0 0 0 23456789 8765 0 0 0 0 0 0\n");
    return root;
}

// Removed when the benchmarks exit: `make bench` leaves no file behind.
struct ProcDir {
    std::string root = make_proc();
    ~ProcDir() {
        for (const char* f : {"tcp", "tcp6", "udp", "udp6", "dev"}) ::unlink((root + "/net/" + f).c_str());
        ::rmdir((root + "/net").c_str());
        ::rmdir(root.c_str());
    }
};

const std::string& proc_root() {
    static const ProcDir dir;
    return dir.root;
}

Interfaces bench_interfaces() {
    Interfaces i;
    InterfaceAddress eth4{"eth0", AF_INET, {}};
    inet_pton(AF_INET, "192.0.2.2", eth4.addr);
    InterfaceAddress eth6{"eth0", AF_INET6, {}};
    inet_pton(AF_INET6, "fd00::2", eth6.addr);
    i.addresses = {eth4, eth6};
    i.loopback = {"lo"};
    return i;
}

void BM_Collect10000Sockets(benchmark::State& state) {
    CollectOptions o;
    o.proc.root = proc_root();
    o.proc.order = ByteOrder::Little;
    Interfaces ifs = bench_interfaces();
    CounterMap previous;
    size_t total = 0;
    for (auto _ : state) {
        Metrics m = collect(o, ifs, &previous);
        total = m.connections.total + m.tcp_ports.total + m.udp_ports.total;
        benchmark::DoNotOptimize(m);
    }
    state.counters["sockets"] = static_cast<double>(total);
}
BENCHMARK(BM_Collect10000Sockets)->Unit(benchmark::kMillisecond);

void BM_CollectThisMachine(benchmark::State& state) {
    CollectOptions o;
    size_t total = 0;
    for (auto _ : state) {
        Metrics m = collect(o, Interfaces::system(), nullptr);
        total = m.connections.total + m.tcp_ports.total + m.udp_ports.total;
        benchmark::DoNotOptimize(m);
    }
    state.counters["sockets"] = static_cast<double>(total);
}
BENCHMARK(BM_CollectThisMachine)->Unit(benchmark::kMillisecond);

// Encoding a report, with its size in each form as counters: `full` is the 10,000-socket device
// (every list at the default cap of 50), `small` a device with 3 ports and 2 connections.
void report_sizes(benchmark::State& state, bool full) {
    Metrics m;
    if (full) {
        CollectOptions o;
        o.proc.root = proc_root();
        o.proc.order = ByteOrder::Little;
        m = collect(o, bench_interfaces(), nullptr);
    } else {
        m.have_tcp = m.have_udp = m.have_network = true;
        m.tcp_ports = {{{22, ""}, {443, "eth0"}}, 2};
        m.udp_ports = {{{68, ""}}, 1};
        m.connections = {{{"198.51.100.7:51000", 22, "eth0"}, {"[2001:db8::5]:443", 40000, "eth0"}}, 2};
        m.network = {123456, 65432, 321, 123};
    }
    CustomResult custom;
    CustomValue temp;
    temp.name = "cpu_temp";
    temp.number = 41.5;
    custom.values = {temp};
    json::Json long_tree = build_report(m, &custom, 1795358371, Names::Long);
    json::Json short_tree = build_report(m, &custom, 1795358371, Names::Short);
    size_t bytes = 0;
    for (auto _ : state) {
        std::string c = encode(short_tree.get(), Format::Cbor);
        bytes = c.size();
        benchmark::DoNotOptimize(c);
    }
    state.counters["json_long_bytes"] = static_cast<double>(encode(long_tree.get(), Format::Json).size());
    state.counters["json_short_bytes"] = static_cast<double>(encode(short_tree.get(), Format::Json).size());
    state.counters["cbor_short_bytes"] = static_cast<double>(bytes);
    state.counters["cbor_long_bytes"] = static_cast<double>(encode(long_tree.get(), Format::Cbor).size());
}
void BM_ReportSizesFullLists(benchmark::State& state) {
    report_sizes(state, true);
}
void BM_ReportSizesSmallDevice(benchmark::State& state) {
    report_sizes(state, false);
}
BENCHMARK(BM_ReportSizesFullLists);
BENCHMARK(BM_ReportSizesSmallDevice);

}  // namespace
