// The fleet provisioning codec: topics, request payloads, and every answer shape AWS documents.
#include <gtest/gtest.h>

#include "json/json.hpp"
#include "provision/api.hpp"

using namespace iot;
using namespace iot::provision;

TEST(ProvisionApi, TopicsAreAwsOwn) {
    EXPECT_EQ(api::create_keys_and_certificate().request, "$aws/certificates/create/json");
    EXPECT_EQ(api::create_keys_and_certificate().accepted(), "$aws/certificates/create/json/accepted");
    EXPECT_EQ(api::create_certificate_from_csr().rejected(), "$aws/certificates/create-from-csr/json/rejected");
    EXPECT_EQ(api::register_thing("FleetTemplate_1").request, "$aws/provisioning-templates/FleetTemplate_1/provision/json");
    EXPECT_EQ(api::register_thing("t").accepted(), "$aws/provisioning-templates/t/provision/json/accepted");
}

TEST(ProvisionApi, TemplateNameRule) {
    EXPECT_TRUE(api::check_template_name("My-Template_2"));
    EXPECT_TRUE(api::check_template_name(std::string(36, 'a')));
    EXPECT_FALSE(api::check_template_name(std::string(37, 'a')));
    EXPECT_FALSE(api::check_template_name(""));
    auto st = api::check_template_name("a/+");
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().find("'/'"), std::string::npos) << st.error();
}

TEST(ProvisionApi, ParametersAreAFlatStringMap) {
    auto p = api::parse_parameters(R"({"ThingName": "dev-1", "Port": 8080, "On": true, "Ratio": 0.5})");
    ASSERT_TRUE(p) << p.error();
    EXPECT_EQ(p->at("ThingName"), "dev-1");
    EXPECT_EQ(p->at("Port"), "8080");
    EXPECT_EQ(p->at("On"), "true");
    EXPECT_EQ(p->at("Ratio"), "0.5");
    auto nested = api::parse_parameters(R"({"a": {"b": "c"}})");
    ASSERT_FALSE(nested);
    EXPECT_NE(nested.error().find("\"a\" is an object"), std::string::npos) << nested.error();
    auto bad = api::parse_parameters("{\"ThingName\": \"x\",\n \"Serial\" 42}");
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.error().find("line 2, column"), std::string::npos) << bad.error();
    EXPECT_FALSE(api::parse_parameters("[1]"));
}

TEST(ProvisionApi, RequestsAreValidJson) {
    EXPECT_EQ(api::create_keys_request(), "{}");
    std::string csr = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n";
    auto doc = json::parse(api::create_from_csr_request(csr));
    ASSERT_TRUE(doc);
    EXPECT_EQ(json::string_or(doc->get(), "certificateSigningRequest", ""), csr);
    auto reg = json::parse(api::register_thing_request("tok\"en", {{"ThingName", "d\\1"}, {"Serial", "42"}}));
    ASSERT_TRUE(reg);
    EXPECT_EQ(json::string_or(reg->get(), "certificateOwnershipToken", ""), "tok\"en");
    const cJSON* params = json::get(reg->get(), "parameters");
    EXPECT_EQ(json::string_or(params, "ThingName", ""), "d\\1");
    EXPECT_EQ(json::string_or(params, "Serial", ""), "42");
    auto empty = json::parse(api::register_thing_request("t", {}));
    ASSERT_TRUE(empty);
    EXPECT_TRUE(cJSON_IsObject(json::get(empty->get(), "parameters")));
}

TEST(ProvisionApi, CreateAnswers) {
    std::string id(64, 'a');
    std::string keys = R"({"certificateId":")" + id + R"(","certificatePem":"PEM","privateKey":"KEY","certificateOwnershipToken":"TOK"})";
    auto c = api::parse_create_accepted(keys, true);
    ASSERT_TRUE(c) << c.error();
    EXPECT_EQ(c->certificate_id, id);
    EXPECT_EQ(c->certificate_pem, "PEM");
    EXPECT_EQ(c->private_key, "KEY");
    EXPECT_EQ(c->ownership_token, "TOK");

    std::string csr = R"({"certificateOwnershipToken":"TOK","certificateId":")" + id + R"(","certificatePem":"PEM"})";
    auto d = api::parse_create_accepted(csr, false);
    ASSERT_TRUE(d) << d.error();
    EXPECT_TRUE(d->private_key.empty());
    auto missing_key = api::parse_create_accepted(csr, true);
    ASSERT_FALSE(missing_key);
    EXPECT_NE(missing_key.error().find("privateKey"), std::string::npos) << missing_key.error();

    auto no_token = api::parse_create_accepted(R"({"certificateId":")" + id + R"(","certificatePem":"P"})", false);
    ASSERT_FALSE(no_token);
    EXPECT_NE(no_token.error().find("certificateOwnershipToken"), std::string::npos);
    // The id names files: no path may be smuggled through it.
    auto evil = api::parse_create_accepted(R"({"certificateId":"../../etc/x","certificatePem":"P","certificateOwnershipToken":"T"})", false);
    ASSERT_FALSE(evil);
    EXPECT_NE(evil.error().find("not hexadecimal"), std::string::npos);
    auto wrong_type = api::parse_create_accepted(R"({"certificateId":5})", false);
    ASSERT_FALSE(wrong_type);
    EXPECT_NE(wrong_type.error().find("certificateId"), std::string::npos) << wrong_type.error();
    EXPECT_FALSE(api::parse_create_accepted("not json", false));
}

TEST(ProvisionApi, RegisterAnswers) {
    auto r = api::parse_register_accepted(
        R"({"deviceConfiguration":{"Foo":"Bar","FallbackUrl":"https://www.example.com/test-site"},"thingName":"fp_demo_ABC123"})");
    ASSERT_TRUE(r) << r.error();
    EXPECT_EQ(r->thing_name, "fp_demo_ABC123");
    auto dc = json::parse(r->device_configuration);
    ASSERT_TRUE(dc);
    EXPECT_EQ(json::string_or(dc->get(), "Foo", ""), "Bar");
    // A template without a thing resource may name none.
    auto none = api::parse_register_accepted("{}");
    ASSERT_TRUE(none);
    EXPECT_EQ(none->thing_name, "");
    EXPECT_EQ(none->device_configuration, "{}");
    EXPECT_FALSE(api::parse_register_accepted(R"({"deviceConfiguration":[1]})"));
}

TEST(ProvisionApi, Rejections) {
    auto r = api::parse_rejection(
        R"({"statusCode":400,"errorCode":"InvalidCertificateOwnershipToken","errorMessage":"Certificate ownership token cannot be empty."})");
    EXPECT_EQ(r.status_code, 400);
    EXPECT_EQ(r.error_code, "InvalidCertificateOwnershipToken");
    EXPECT_EQ(r.text(), "InvalidCertificateOwnershipToken (400): Certificate ownership token cannot be empty.");
    auto odd = api::parse_rejection("<html>");
    EXPECT_NE(odd.text().find("unreadable rejection: <html>"), std::string::npos) << odd.text();
    auto bare = api::parse_rejection(R"({"statusCode":403})");
    EXPECT_NE(bare.text().find("403"), std::string::npos);
}
