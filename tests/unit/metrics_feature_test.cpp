// MetricsFeature on a real event loop against the TLS test broker and the fakecloud's Defender
// API: periodic reports accepted, none queued while the broker is down, one soon after it is back.
#include <gtest/gtest.h>

#include <cstdlib>

#include "base/strings.hpp"
#include "base/time.hpp"
#include "fs/fs.hpp"
#include "metrics/feature.hpp"
#include "support/testbed.hpp"
#include "support/tempdir.hpp"

using namespace iot;
using testsupport::FakeCloud;
using testsupport::Testbed;

namespace {

using testsupport::TempDir;

// Number of reports the fakecloud stored for `thing` with "accepted": true.
int accepted_reports(FakeCloud& cloud, const std::string& thing) {
    std::string line = cloud.command("{\"cmd\":\"defender_reports\",\"thing\":\"" + thing + "\"}");
    auto doc = json::parse(line);
    if (!doc) return -1;
    int n = 0;
    const cJSON* reports = json::get(doc->get(), "reports");
    for (const cJSON* r = reports ? reports->child : nullptr; r; r = r->next)
        n += cJSON_IsTrue(json::get(r, "accepted"));
    return n;
}

bool run_until(EventLoop& loop, int64_t timeout_ms, const std::function<bool()>& done) {
    int64_t deadline = monotonic_ms() + timeout_ms;
    while (!done()) {
        if (monotonic_ms() > deadline) return false;
        loop.run_once(50);
    }
    return true;
}

}  // namespace

TEST(MetricsFeature, ReportsEveryIntervalAndSkipsWhileOffline) {
    Testbed tb("metrics-feature");
    FakeCloud cloud(tb);
    auto id = tb.thing("mdev");
    TempDir state;
    EventLoop loop;
    mqtt::Options mo;
    mo.host = "localhost";
    mo.port = tb.port();
    mo.client_id = "mdev";
    mo.ca_file = tb.ca();
    mo.cert_file = id.cert;
    mo.key_file = id.key;
    mo.reconnect_min_ms = 100;
    mo.reconnect_max_ms = 300;
    mqtt::Client client(loop, mo);
    metrics::FeatureOptions fo;
    fo.thing = "mdev";
    fo.state_file = state.path + "/metrics.json";
    fo.interval_ms = 1000;
    fo.format = metrics::Format::Cbor;
    fo.names = metrics::Names::Short;
    metrics::MetricsFeature feature(loop, client, fo);
    ASSERT_TRUE(feature.start());
    ASSERT_TRUE(client.start());
    ASSERT_TRUE(run_until(loop, 15000, [&] { return accepted_reports(cloud, "mdev") >= 2; }));
    EXPECT_NE(feature.status_line().find("accepted"), std::string::npos) << feature.status_line();
    EXPECT_TRUE(fs::exists(fo.state_file));

    tb.stop();
    ASSERT_TRUE(run_until(loop, 10000, [&] {
        return feature.status_line().find("1 skipped offline") != std::string::npos ||
               feature.status_line().find("2 skipped offline") != std::string::npos;
    })) << feature.status_line();
    int before = accepted_reports(cloud, "mdev");
    tb.start();
    // Not a backlog: one report soon after the reconnect, then the interval again.
    ASSERT_TRUE(run_until(loop, 15000, [&] { return accepted_reports(cloud, "mdev") > before; }))
        << feature.status_line();
}
