// Custom metrics: definitions from the configuration, validation of each type's output, and real
// commands and files on a real event loop (a failing one does not stop the others).
#include <gtest/gtest.h>

#include <cstdlib>

#include "base/strings.hpp"
#include "base/time.hpp"
#include "fs/fs.hpp"
#include "metrics/custom.hpp"
#include "support/tempdir.hpp"

using namespace iot;
using namespace iot::metrics;

namespace {

using testsupport::TempDir;
Result<std::vector<CustomSpec>> specs(const char* text) {
    auto doc = json::parse(text);
    EXPECT_TRUE(doc.ok()) << text;
    return parse_custom_specs(doc->get());
}

CustomSpec spec(CustomType type) {
    CustomSpec s;
    s.name = "m";
    s.type = type;
    return s;
}
}  // namespace

TEST(MetricsCustom, Definitions) {
    auto ok = specs(R"({"a": {"type": "number", "file": "/tmp/x"},
                        "b": {"type": "ip-list", "command": ["/bin/echo", "1.2.3.4"], "timeout": 0.5},
                        "c": {"type": "string-list", "command": "echo  a b"},
                        "d": {"type": "ip-address-list", "file": "/tmp/y"}})");
    ASSERT_TRUE(ok.ok()) << ok.error();
    ASSERT_EQ(ok->size(), 4u);
    EXPECT_EQ((*ok)[0].file, "/tmp/x");
    EXPECT_EQ((*ok)[1].type, CustomType::IpList);
    EXPECT_EQ((*ok)[1].timeout_ms, 500);
    EXPECT_EQ(join((*ok)[2].command, "|"), "echo|a|b");
    EXPECT_EQ((*ok)[2].timeout_ms, 5000);
    EXPECT_EQ((*ok)[3].type, CustomType::IpList);
    auto none = parse_custom_specs(nullptr);
    ASSERT_TRUE(none.ok());
    EXPECT_TRUE(none->empty());
}

TEST(MetricsCustom, EveryBadDefinitionIsNamed) {
    auto bad = specs(R"({"no type": {"file": "/x"},
                         "t": {"type": "float", "file": "/x"},
                         "both": {"type": "number", "file": "/x", "command": ["y"]},
                         "neither": {"type": "number"},
                         "argv": {"type": "number", "command": [1]},
                         "slow": {"type": "number", "file": "/x", "timeout": 0},
                         "typo": {"type": "number", "file": "/x", "tiemout": 3},
                         "str": "number"})");
    ASSERT_FALSE(bad.ok());
    const std::string& e = bad.error();
    for (const char* expected :
         {"custom metric \"no type\": a name is",
          "custom metric \"t\": \"type\" must be one of number, number-list, "
          "string-list, ip-list (got \"float\")",
          "custom metric \"both\": give exactly one of", "custom metric \"neither\": give exactly one of",
          "custom metric \"argv\": \"command\" must be", "custom metric \"slow\": \"timeout\" must be",
          "custom metric \"typo\": unknown field \"tiemout\"", "custom metric \"str\": expected an object"})
        EXPECT_NE(e.find(expected), std::string::npos) << expected << "\nin: " << e;
    EXPECT_FALSE(specs("[]").ok());
}

TEST(MetricsCustom, OutputIsValidatedPerType) {
    auto n = parse_custom_output(spec(CustomType::Number), " 42.5\n", 50);
    ASSERT_TRUE(n.ok());
    EXPECT_EQ(n->number, 42.5);
    EXPECT_FALSE(parse_custom_output(spec(CustomType::Number), "", 50).ok());
    EXPECT_FALSE(parse_custom_output(spec(CustomType::Number), "1 2", 50).ok());
    EXPECT_FALSE(parse_custom_output(spec(CustomType::Number), "nan", 50).ok());
    EXPECT_FALSE(parse_custom_output(spec(CustomType::Number), "1e999", 50).ok());
    auto nl = parse_custom_output(spec(CustomType::NumberList), "1, 2\n-3.5\n", 50);
    ASSERT_TRUE(nl.ok());
    EXPECT_EQ(nl->numbers, (std::vector<double>{1, 2, -3.5}));
    auto empty = parse_custom_output(spec(CustomType::NumberList), "\n", 50);
    ASSERT_TRUE(empty.ok());  // an empty list is a valid value
    EXPECT_TRUE(empty->numbers.empty());
    EXPECT_FALSE(parse_custom_output(spec(CustomType::NumberList), "1 x", 50).ok());
    auto ips = parse_custom_output(spec(CustomType::IpList), "10.0.0.1\n2001:db8::1, ::ffff:1.2.3.4", 50);
    ASSERT_TRUE(ips.ok());
    EXPECT_EQ(ips->strings.size(), 3u);
    auto bad_ip = parse_custom_output(spec(CustomType::IpList), "10.0.0.1 300.1.1.1", 50);
    ASSERT_FALSE(bad_ip.ok());
    EXPECT_EQ(bad_ip.error(), "\"300.1.1.1\" is not an IPv4 or IPv6 address");
    auto strs = parse_custom_output(spec(CustomType::StringList), "a b\n\n  c \n", 50);
    ASSERT_TRUE(strs.ok());
    EXPECT_EQ(strs->strings, (std::vector<std::string>{"a b", "c"}));
    auto many = parse_custom_output(spec(CustomType::StringList), "a\nb\nc\n", 2);
    ASSERT_FALSE(many.ok());
    EXPECT_NE(many.error().find("3 values, more than device-defender.max-list-size (2)"), std::string::npos);
}

TEST(MetricsCustom, CommandsAndFilesOnTheLoop) {
    TempDir tmp;
    const std::string& dir = tmp.path;
    ASSERT_TRUE(fs::write_atomic(dir + "/temp", "41.5\n"));
    auto defs =
        specs(("{\"file_metric\": {\"type\": \"number\", \"file\": \"" + dir +
               "/temp\"},"
               "\"missing\": {\"type\": \"number\", \"file\": \"" +
               dir +
               "/nope\"},"
               "\"cmd\": {\"type\": \"number-list\", \"command\": [\"/bin/echo\", \"1 2 3\"]},"
               "\"search_path\": {\"type\": \"string-list\", \"command\": \"printf a\\\\nb\"},"
               "\"fails\": {\"type\": \"number\", \"command\": [\"/bin/sh\", \"-c\", \"echo oops >&2; exit 3\"]},"
               "\"no_such\": {\"type\": \"number\", \"command\": [\"/nonexistent/prog\"]},"
               "\"bad_output\": {\"type\": \"ip-list\", \"command\": [\"/bin/echo\", \"not-an-ip\"]},"
               "\"slow\": {\"type\": \"number\", \"command\": [\"/bin/sleep\", \"30\"], \"timeout\": 0.3},"
               "\"env\": {\"type\": \"string-list\", \"command\": [\"/usr/bin/env\"]}}")
                  .c_str());
    ASSERT_TRUE(defs.ok()) << defs.error();
    EventLoop loop;
    int64_t start = monotonic_ms();
    CustomResult r = collect_custom(loop, *defs, 50);
    int64_t took = monotonic_ms() - start;
    EXPECT_LT(took, 5000);  // the slow one was stopped at its timeout, not waited for
    std::vector<std::string> names;
    for (const auto& v : r.values) names.push_back(v.name);
    ASSERT_EQ(join(names, ","), "file_metric,cmd,search_path,env") << join(r.errors, "\n");
    EXPECT_EQ(r.values[0].number, 41.5);
    EXPECT_EQ(r.values[1].numbers, (std::vector<double>{1, 2, 3}));
    EXPECT_EQ(r.values[2].strings, (std::vector<std::string>{"a", "b"}));
    // A clean environment: no variable of ours leaks into the command.
    for (const auto& e : r.values[3].strings)
        EXPECT_TRUE(starts_with(e, "PATH=") || starts_with(e, "LANG=") || starts_with(e, "HOME=")) << e;
    std::string errors = join(r.errors, "\n");
    ASSERT_EQ(r.errors.size(), 5u) << errors;
    for (const char* expected :
         {"custom metric \"missing\": ", "/nope", "custom metric \"fails\": command /bin/sh: exit status 3: oops",
          "custom metric \"no_such\": cannot execute /nonexistent/prog",
          "custom metric \"bad_output\": command /bin/echo: \"not-an-ip\" is not an IPv4 or IPv6 address",
          "custom metric \"slow\": command /bin/sleep: no result within 0.3 s (killed)"})
        EXPECT_NE(errors.find(expected), std::string::npos) << expected << "\nin:\n" << errors;
}

TEST(MetricsCustom, CollectorCanBeDestroyedWhileCommandsRun) {
    auto defs = specs(R"({"slow": {"type": "number", "command": ["/bin/sleep", "30"]}})");
    ASSERT_TRUE(defs.ok());
    EventLoop loop;
    bool called = false;
    {
        CustomCollector c(loop);
        c.start(*defs, 50, [&](CustomResult) { called = true; });
        EXPECT_TRUE(c.running());
        loop.run_once(50);
    }
    // The child is killed; reaping it later must not touch the collector.
    for (int i = 0; i < 10; ++i) loop.run_once(20);
    EXPECT_FALSE(called);
}
