#include <gtest/gtest.h>

#include "json/json.hpp"

using namespace iot;

TEST(Json, ParseErrorNamesLineColumnAndText) {
    auto r = json::parse("{\n  \"a\": 1,\n  \"slot\": replace_me,\n}");
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().find("line 3"), std::string::npos) << r.error();
    EXPECT_NE(r.error().find("replace_me"), std::string::npos) << r.error();
    auto pe = json::last_parse_error();
    ASSERT_TRUE(pe);
    EXPECT_EQ(pe->line, 3);
}

TEST(Json, TrailingGarbageAndEmptyAreErrors) {
    EXPECT_FALSE(json::parse("{} {}"));
    auto empty = json::parse("  \n");
    ASSERT_FALSE(empty);
    EXPECT_NE(empty.error().find("empty"), std::string::npos);
    auto cut = json::parse("{\"a\": ");
    ASSERT_FALSE(cut);
}

TEST(Json, TypedGetters) {
    auto r = json::parse(R"({"s":"x","n":3,"f":1.5,"b":true})");
    ASSERT_TRUE(r);
    auto s = json::get_string(r->get(), "s");
    ASSERT_TRUE(s && *s);
    EXPECT_EQ(**s, "x");
    auto wrong = json::get_string(r->get(), "n");
    ASSERT_FALSE(wrong);
    EXPECT_EQ(wrong.error(), "'n' must be a string, not a number");
    EXPECT_EQ(json::integer(r->get(), "n"), 3);
    EXPECT_FALSE(json::integer(r->get(), "f"));
    EXPECT_EQ(json::string_or(r->get(), "missing", "d"), "d");
}

TEST(Json, QuoteEscapes) { EXPECT_EQ(json::quote("a\"b\\c\n\x01"), "\"a\\\"b\\\\c\\n\\u0001\""); }

TEST(Json, LineOfDottedKey) {
    std::string text = "{\n \"logging\": {\n  \"type\": \"FILE\",\n  \"level\": \"X\"\n },\n \"level\": 1\n}";
    EXPECT_EQ(json::line_of(text, "logging.level"), 4);
    EXPECT_EQ(json::line_of(text, "logging"), 2);
    EXPECT_EQ(json::line_of(text, "nothing.here"), 0);
}
