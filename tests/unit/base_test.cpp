#include <gtest/gtest.h>

#include <fcntl.h>

#include "base/fd.hpp"
#include "base/result.hpp"
#include "base/strings.hpp"
#include "base/time.hpp"

using namespace iot;

TEST(Base, ResultCarriesValueOrMessage) {
    Result<int> good = 42;
    ASSERT_TRUE(good);
    EXPECT_EQ(*good, 42);
    Result<int> bad = Error("disk on fire");
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error(), "disk on fire");
    EXPECT_EQ(bad.err().wrap("saving").message, "saving: disk on fire");
    Status ok;
    EXPECT_TRUE(ok);
    Status no = Error("x");
    EXPECT_FALSE(no);
}

TEST(Base, FormatHandlesLongOutput) {
    std::string big(1000, 'a');
    EXPECT_EQ(format("%s-%d", big.c_str(), 7), big + "-7");
}

TEST(Base, StringHelpers) {
    EXPECT_EQ(trim("  a b \n"), "a b");
    EXPECT_EQ(trim("   "), "");
    EXPECT_EQ(split("a,,b", ','), (std::vector<std::string>{"a", "", "b"}));
    EXPECT_EQ(join({"a", "b"}, ", "), "a, b");
    EXPECT_TRUE(iequals("Debug", "DEBUG"));
    EXPECT_EQ(parse_int(" 12 "), 12);
    EXPECT_FALSE(parse_int("12x"));
    EXPECT_FALSE(parse_int(""));
    EXPECT_FALSE(parse_int("99999999999999999999999"));
    EXPECT_EQ(replace_all("a.b.c", ".", "::"), "a::b::c");
    const unsigned char bytes[] = {0x00, 0xab, 0xff};
    EXPECT_EQ(to_hex(bytes, 3), "00abff");
}

TEST(Base, RandomStaysInRangeAndVaries) {
    bool saw_lo = false, saw_hi = false;
    for (int i = 0; i < 2000; ++i) {
        uint64_t v = random_between(3, 6);
        ASSERT_GE(v, 3u);
        ASSERT_LE(v, 6u);
        saw_lo |= v == 3;
        saw_hi |= v == 6;
    }
    EXPECT_TRUE(saw_lo && saw_hi);
    std::string t = random_token(10);
    EXPECT_EQ(t.size(), 10u);
    EXPECT_NE(t, random_token(10));
}

TEST(Base, Iso8601) { EXPECT_EQ(iso8601_utc(1700000000123), "2023-11-14T22:13:20.123Z"); }

TEST(Base, FdClosesOnceAndMoves) {
    int raw = ::open("/dev/null", O_RDONLY);
    ASSERT_GE(raw, 0);
    {
        Fd a(raw);
        Fd b(std::move(a));
        EXPECT_FALSE(a.valid());
        EXPECT_EQ(b.get(), raw);
    }
    EXPECT_EQ(fcntl(raw, F_GETFD), -1);  // closed by b
}
