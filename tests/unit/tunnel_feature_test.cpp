// The secure-tunneling feature's pure parts: the notify payload (aws-iot-mqtt-api.md §5.1), the
// options a config gives it, and the per-tunnel options a notification selects from them. The
// notification is a cloud message and the service map is the owner's: a bad one gets an error
// naming the field, never a tunnel to somewhere unlisted.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "config/config.hpp"
#include "tunnel/feature.hpp"
#include "tunnel/tunnel_client.hpp"

using namespace iot;
using namespace iot::tunnel;

namespace {
std::string error_of(std::string_view payload) {
    auto n = parse_notification(payload);
    EXPECT_FALSE(n) << payload;
    return n ? std::string() : n.error();
}

FeatureOptions two_services() {
    FeatureOptions o;
    o.services = {{"SSH", "localhost", 22}, {"WEB", "10.0.0.5", 8080}};
    o.ca_file = "/etc/ca.pem";
    return o;
}
}  // namespace

TEST(TunnelNotification, ParsesTheDocumentedPayload) {
    auto n = parse_notification(
        R"({"clientAccessToken":"AQGAAXi-token","clientMode":"destination","region":"eu-west-1",)"
        R"("services":["SSH","WEB"],"somethingNew":1})");
    ASSERT_TRUE(n) << n.error();
    EXPECT_EQ(n->access_token, "AQGAAXi-token");
    EXPECT_EQ(n->mode, "destination");
    EXPECT_EQ(n->region, "eu-west-1");
    EXPECT_EQ(n->services, (std::vector<std::string>{"SSH", "WEB"}));
}

TEST(TunnelNotification, BadPayloadsNameTheField) {
    EXPECT_NE(error_of("not json").find("not JSON"), std::string::npos);
    EXPECT_NE(error_of("[1]").find("expected a JSON object"), std::string::npos);
    const char* base = R"("clientMode":"destination","region":"r","services":["SSH"])";
    EXPECT_NE(error_of(std::string("{") + base + "}").find("clientAccessToken"), std::string::npos);
    EXPECT_NE(error_of(R"({"clientAccessToken":"","clientMode":"destination","region":"r","services":["SSH"]})")
                  .find("clientAccessToken"),
              std::string::npos);
    EXPECT_NE(error_of(R"({"clientAccessToken":5,"clientMode":"destination","region":"r","services":["SSH"]})")
                  .find("clientAccessToken"),
              std::string::npos);
    EXPECT_NE(error_of(R"({"clientAccessToken":"t","region":"r","services":["SSH"]})").find("clientMode"),
              std::string::npos);
    EXPECT_NE(error_of(R"({"clientAccessToken":"t","clientMode":"destination","services":["SSH"]})").find("region"),
              std::string::npos);
    EXPECT_NE(error_of(R"({"clientAccessToken":"t","clientMode":"destination","region":"r","services":"SSH"})")
                  .find("'services' must be an array"),
              std::string::npos);
    EXPECT_NE(error_of(R"({"clientAccessToken":"t","clientMode":"destination","region":"r","services":[]})")
                  .find("'services' is empty"),
              std::string::npos);
    EXPECT_NE(error_of(R"({"clientAccessToken":"t","clientMode":"destination","region":"r","services":["SSH",7]})")
                  .find("non-empty strings"),
              std::string::npos);
    EXPECT_NE(error_of(R"({"clientAccessToken":"t","clientMode":"destination","region":"r","services":[""]})")
                  .find("non-empty strings"),
              std::string::npos);
}

TEST(TunnelNotification, ErrorsNeverCarryTheToken) {
    auto n = parse_notification(R"({"clientAccessToken":"AQGAAXsecret-token-value","clientMode":"destination",)"
                                R"("region":"r","services":{"SSH":1}})");
    ASSERT_FALSE(n);
    EXPECT_EQ(n.error().find("secret-token-value"), std::string::npos) << n.error();
}

TEST(TunnelOptionsForANotification, SelectsOnlyMappedServices) {
    auto d = tunnel_options(two_services(), "tok", "us-east-1", {"WEB"});
    ASSERT_TRUE(d) << d.error();
    ASSERT_EQ(d->services.size(), 1u);
    EXPECT_EQ(d->services[0].host, "10.0.0.5");
    EXPECT_EQ(d->services[0].port, 8080);
    EXPECT_EQ(d->endpoint, "data.tunneling.iot.us-east-1.amazonaws.com");
    EXPECT_EQ(d->access_token, "tok");
    EXPECT_EQ(d->ca_file, "/etc/ca.pem");
    EXPECT_EQ(d->role, Role::Destination);
    // A service the owner did not map is refused, naming what is missing and what exists.
    auto refused = tunnel_options(two_services(), "tok", "us-east-1", {"SSH", "RDP", "DB"});
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().find("services RDP, DB"), std::string::npos) << refused.error();
    EXPECT_NE(refused.error().find("it has SSH, WEB"), std::string::npos) << refused.error();
}

TEST(TunnelOptionsForANotification, EndpointFromRegionOrOverride) {
    EXPECT_EQ(endpoint_for_region("cn-north-1"), "data.tunneling.iot.cn-north-1.amazonaws.com.cn");
    EXPECT_EQ(endpoint_for_region("eu-central-1"), "data.tunneling.iot.eu-central-1.amazonaws.com");
    auto o = two_services();
    o.endpoint = "tunnel.example:8443";
    auto d = tunnel_options(o, "tok", "us-east-1", {"SSH"});
    ASSERT_TRUE(d) << d.error();
    EXPECT_EQ(d->endpoint, "tunnel.example:8443");
    auto none = tunnel_options(two_services(), "tok", "", {"SSH"});
    ASSERT_FALSE(none);
    EXPECT_NE(none.error().find("no region"), std::string::npos);
}

TEST(TunnelFeatureOptions, FromConfig) {
    config::Config c;
    ASSERT_TRUE(c.set("tunneling.services", R"({"SSH": "127.0.0.1:2022"})", "test"));
    ASSERT_TRUE(c.set("tunneling.endpoint", "localhost:9443", "test"));
    ASSERT_TRUE(c.set("thing-name", "dev1", "test"));
    auto o = feature_options(c);
    ASSERT_TRUE(o) << o.error();
    EXPECT_EQ(o->thing, "dev1");
    EXPECT_EQ(o->endpoint, "localhost:9443");
    ASSERT_EQ(o->services.size(), 1u);
    EXPECT_EQ(o->services[0].port, 2022);
    EXPECT_TRUE(o->notifications);
    // --tunneling-service VNC without a map entry: the Device Client's fixed port is added.
    ASSERT_TRUE(c.set("tunneling.service", "VNC", "test"));
    o = feature_options(c);
    ASSERT_TRUE(o) << o.error();
    ASSERT_EQ(o->services.size(), 2u);
    EXPECT_EQ(o->services[1].port, 5900);
    // Notifications disabled needs the token, the region and the service.
    ASSERT_TRUE(c.set("tunneling.disable-notification", "true", "test"));
    auto missing = feature_options(c);
    if (getenv("AWSIOT_TUNNEL_ACCESS_TOKEN") == nullptr) {
        ASSERT_FALSE(missing);
        EXPECT_NE(missing.error().find("AWSIOT_TUNNEL_ACCESS_TOKEN"), std::string::npos) << missing.error();
    }
    config::Config bad;
    ASSERT_TRUE(bad.set("tunneling.services", R"({"SSH": "host-without-port"})", "test"));
    auto err = feature_options(bad);
    ASSERT_FALSE(err);
    EXPECT_NE(err.error().find("tunneling.services"), std::string::npos) << err.error();
}
