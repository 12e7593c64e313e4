#include <gtest/gtest.h>

#include "mqtt/topic.hpp"

using iot::mqtt::Backoff;
using iot::mqtt::topic_matches;

TEST(MqttTopic, Wildcards) {
    EXPECT_TRUE(topic_matches("$aws/things/t1/jobs/notify-next", "$aws/things/t1/jobs/notify-next"));
    EXPECT_TRUE(topic_matches("$aws/things/t1/jobs/+/update/accepted", "$aws/things/t1/jobs/j-7/update/accepted"));
    EXPECT_FALSE(topic_matches("$aws/things/t1/jobs/+/update/accepted", "$aws/things/t1/jobs/a/b/update/accepted"));
    EXPECT_TRUE(topic_matches("a/#", "a/b/c"));
    EXPECT_TRUE(topic_matches("a/#", "a"));
    EXPECT_TRUE(topic_matches("#", "a/b"));
    EXPECT_TRUE(topic_matches("a/+/c", "a//c"));
    EXPECT_FALSE(topic_matches("a/+", "a/b/c"));
    EXPECT_FALSE(topic_matches("a/b", "a/b/c"));
    EXPECT_FALSE(topic_matches("a/b/c", "a/b"));
    EXPECT_FALSE(topic_matches("#", "$aws/things/x")) << "wildcards never match $ topics at the first level";
    EXPECT_FALSE(topic_matches("+/things/x", "$aws/things/x"));
    EXPECT_FALSE(topic_matches("$aws/things/T1/#", "$aws/things/t1/jobs")) << "case-sensitive";
}

TEST(MqttBackoff, FullJitterWithinBoundsAndDoubling) {
    Backoff b(1000, 120000);
    int64_t expected_ceiling = 1000;
    for (int attempt = 0; attempt < 12; ++attempt) {
        EXPECT_EQ(b.ceiling(), expected_ceiling);
        int64_t d = b.next();
        EXPECT_GE(d, 1000);
        EXPECT_LE(d, expected_ceiling);
        expected_ceiling = std::min<int64_t>(expected_ceiling * 2, 120000);
    }
    EXPECT_EQ(b.ceiling(), 120000);
    b.reset();
    EXPECT_EQ(b.ceiling(), 1000);
}

TEST(MqttBackoff, JitterSpreadsAFleet) {
    Backoff b(1000, 120000);
    for (int i = 0; i < 7; ++i) b.next();
    int64_t lo = 1 << 30, hi = 0;
    for (int i = 0; i < 200; ++i) {
        Backoff c(1000, 120000);
        for (int j = 0; j < 7; ++j) c.next();
        int64_t d = c.next();
        lo = std::min(lo, d);
        hi = std::max(hi, d);
    }
    EXPECT_GT(hi - lo, 60000) << "200 devices at attempt 8 should spread over most of [1 s, 120 s]";
}
