// Reports: long and short names never mixed, the custom metric shape, CBOR carrying the same
// content as JSON, answers, the state file and the report id rule.
#include <gtest/gtest.h>

#include <cstdlib>
#include <set>

#include "base/strings.hpp"
#include "fs/fs.hpp"
#include "metrics/cbor.hpp"
#include "metrics/report.hpp"
#include "support/tempdir.hpp"

using namespace iot;
using namespace iot::metrics;

namespace {

using testsupport::TempDir;

Metrics sample() {
    Metrics m;
    m.have_tcp = m.have_udp = m.have_network = true;
    m.tcp_ports = {{{22, ""}, {8080, "eth0"}}, 2};
    m.udp_ports = {{{68, ""}}, 1};
    m.connections = {{{"198.51.100.7:51000", 22, "eth0"}, {"[2001:db8::5]:40000", 443, "eth0"}}, 7};
    m.network = {100, 200, 3, 4};
    return m;
}

CustomResult custom_sample() {
    CustomResult c;
    CustomValue n;
    n.name = "temp";
    n.type = CustomType::Number;
    n.number = 42.5;
    CustomValue ips;
    ips.name = "peers";
    ips.type = CustomType::IpList;
    ips.strings = {"10.0.0.1", "::1"};
    CustomValue nums;
    nums.name = "loads";
    nums.type = CustomType::NumberList;
    nums.numbers = {1, 2.5};
    CustomValue strs;
    strs.name = "users";
    strs.type = CustomType::StringList;
    c.values = {n, ips, nums, strs};
    return c;
}

void collect_keys(const cJSON* item, std::set<std::string>& out, bool skip_custom = true) {
    for (const cJSON* c = item->child; c; c = c->next) {
        if (c->string) {
            out.insert(c->string);
            if (skip_custom && (std::string(c->string) == "custom_metrics" || std::string(c->string) == "cmet"))
                continue;
        }
        collect_keys(c, out, skip_custom);
    }
}

const std::set<std::string> kLong = {
    "header",      "report_id",  "version",         "metrics",         "listening_tcp_ports",     "listening_udp_ports",
    "ports",       "port",       "interface",       "total",           "network_stats",           "bytes_in",
    "bytes_out",   "packets_in", "packets_out",     "tcp_connections", "established_connections", "connections",
    "remote_addr", "local_port", "local_interface", "custom_metrics"};
const std::set<std::string> kShort = {"hed", "rid", "v",  "met", "tp", "up", "pts", "pt",  "if", "t",  "ns",
                                      "bi",  "bo",  "pi", "po",  "tc", "ec", "cs",  "rad", "lp", "li", "cmet"};

}  // namespace

TEST(MetricsReport, LongNames) {
    CustomResult c = custom_sample();
    json::Json r = build_report(sample(), &c, 1700000000, Names::Long);
    std::set<std::string> keys;
    collect_keys(r.get(), keys);
    EXPECT_EQ(keys, kLong);
    EXPECT_EQ(json::print(json::get(r.get(), "header")), "{\"report_id\":1700000000,\"version\":\"1.0\"}");
    const cJSON* tcp = json::get(json::get(r.get(), "metrics"), "listening_tcp_ports");
    // A wildcard port has no interface; totals are the true counts.
    EXPECT_EQ(json::print(tcp), "{\"ports\":[{\"port\":22},{\"interface\":\"eth0\",\"port\":8080}],\"total\":2}");
    const cJSON* ec = json::get(json::get(json::get(r.get(), "metrics"), "tcp_connections"), "established_connections");
    EXPECT_EQ(json::integer(ec, "total"), 7);
    EXPECT_EQ(json::print(json::get(json::get(r.get(), "metrics"), "network_stats")),
              "{\"bytes_in\":100,\"bytes_out\":200,\"packets_in\":3,\"packets_out\":4}");
    // Every custom metric is an array holding one object with the typed key.
    EXPECT_EQ(json::print(json::get(r.get(), "custom_metrics")),
              "{\"temp\":[{\"number\":42.5}],\"peers\":[{\"ip_list\":[\"10.0.0.1\",\"::1\"]}],"
              "\"loads\":[{\"number_list\":[1,2.5]}],\"users\":[{\"string_list\":[]}]}");
}

TEST(MetricsReport, ShortNamesNeverMixed) {
    CustomResult c = custom_sample();
    json::Json r = build_report(sample(), &c, 5, Names::Short);
    std::set<std::string> keys;
    collect_keys(r.get(), keys);
    EXPECT_EQ(keys, kShort);
    // The typed keys of custom metrics have no short names.
    EXPECT_EQ(json::print(json::get(json::get(r.get(), "cmet"), "temp")), "[{\"number\":42.5}]");
}

TEST(MetricsReport, NoCustomMetricsObjectWithoutValues) {
    CustomResult none;
    json::Json r = build_report(sample(), &none, 5, Names::Long);
    EXPECT_EQ(json::get(r.get(), "custom_metrics"), nullptr);
    Metrics empty;  // nothing could be read: still a valid report with an empty metrics object
    json::Json e = build_report(empty, nullptr, 6, Names::Long);
    EXPECT_EQ(json::print(e.get()), "{\"header\":{\"report_id\":6,\"version\":\"1.0\"},\"metrics\":{}}");
}

TEST(MetricsReport, CborCarriesTheSameReport) {
    CustomResult c = custom_sample();
    for (Names names : {Names::Long, Names::Short}) {
        json::Json r = build_report(sample(), &c, 1700000000, names);
        std::string bytes = encode(r.get(), Format::Cbor);
        auto back = cbor::decode(bytes);
        ASSERT_TRUE(back.ok()) << back.error();
        EXPECT_TRUE(cJSON_Compare(r.get(), back->get(), true));
        EXPECT_LT(bytes.size(), encode(r.get(), Format::Json).size());
    }
}

TEST(MetricsReport, Topics) {
    Topics t = defender_topics("dev-1", Format::Cbor);
    EXPECT_EQ(t.publish, "$aws/things/dev-1/defender/metrics/cbor");
    EXPECT_EQ(t.accepted, "$aws/things/dev-1/defender/metrics/cbor/accepted");
    EXPECT_EQ(t.rejected, "$aws/things/dev-1/defender/metrics/cbor/rejected");
}

TEST(MetricsReport, Answers) {
    auto ok =
        parse_answer(R"({"thingName":"t","reportId":12334567,"status":"ACCEPTED","timestamp":1635801636023})", false);
    ASSERT_TRUE(ok.ok());
    EXPECT_TRUE(ok->accepted);
    EXPECT_EQ(ok->report_id, 12334567u);
    auto no = parse_answer(R"({"thingName":"t","status":"REJECTED","statusDetails":{"ErrorCode":"InvalidPayload",
        "ErrorMessage":"Malformed metrics report"},"timestamp":1635802047699})",
                           true);
    ASSERT_TRUE(no.ok());
    EXPECT_FALSE(no->accepted);
    EXPECT_EQ(no->report_id, 0u);
    EXPECT_EQ(no->error_code, "InvalidPayload");
    EXPECT_EQ(no->error_message, "Malformed metrics report");
    // On the cbor topic the answer is CBOR.
    auto doc = json::parse(
        R"({"reportId":7,"status":"REJECTED","statusDetails":{"ErrorCode":"InvalidPayload","ErrorMessage":"x"}})");
    auto cb = parse_answer(cbor::encode(doc->get()), true);
    ASSERT_TRUE(cb.ok()) << cb.error();
    EXPECT_EQ(cb->report_id, 7u);
    EXPECT_EQ(cb->error_code, "InvalidPayload");
    EXPECT_FALSE(parse_answer("\xff", false).ok());
}

TEST(MetricsReport, ReportIdsOnlyIncrease) {
    EXPECT_EQ(next_report_id(0, 1700000000), 1700000000u);
    EXPECT_EQ(next_report_id(1700000000, 1700000000), 1700000001u);  // two in one second
    EXPECT_EQ(next_report_id(1800000000, 1700000000), 1800000001u);  // the clock went back
    EXPECT_EQ(next_report_id(5, -1), 6u);
}

TEST(MetricsReport, StateSurvivesARestart) {
    TempDir tmp;
    const std::string& dir = tmp.path;
    std::string path = dir + "/metrics.json";
    auto empty = load_state(path);
    ASSERT_TRUE(empty.ok());
    EXPECT_EQ(empty->last_report_id, 0u);
    EXPECT_FALSE(empty->have_counters);
    State s;
    s.last_report_id = 1700000123;
    s.boot_id = "b-1";
    s.have_counters = true;
    s.counters["eth0"] = {1ULL << 40, 2, 3, 4};
    s.counters["we\"ird"] = {5, 6, 7, 8};
    ASSERT_TRUE(save_state(path, s));
    auto back = load_state(path);
    ASSERT_TRUE(back.ok()) << back.error();
    EXPECT_EQ(back->last_report_id, 1700000123u);
    EXPECT_EQ(back->boot_id, "b-1");
    EXPECT_EQ(back->counters["eth0"].bytes_in, 1ULL << 40);
    EXPECT_EQ(back->counters["we\"ird"].packets_out, 8u);
    struct stat st;
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    // The same boot: the saved counters; another boot: from 0; none saved: a baseline.
    CounterMap zeros;
    EXPECT_EQ(previous_counters(*back, "b-1", zeros), &back->counters);
    const CounterMap* other = previous_counters(*back, "b-2", zeros);
    ASSERT_NE(other, nullptr);
    EXPECT_TRUE(other->empty());
    EXPECT_EQ(previous_counters(*empty, "b-1", zeros), nullptr);
    ASSERT_TRUE(fs::write_atomic(path, "not json"));
    EXPECT_FALSE(load_state(path).ok());
}
