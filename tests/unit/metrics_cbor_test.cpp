// The CBOR encoder against the examples of RFC 8949 Appendix A, its deterministic map order, and
// the decoder on what the encoder writes.
#include <gtest/gtest.h>

#include <cmath>

#include "base/strings.hpp"
#include "metrics/cbor.hpp"

using namespace iot;

namespace {
std::string hex(const std::string& bytes) {
    return to_hex(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
}

std::string number(double v) {
    cbor::Writer w;
    w.number(v);
    return hex(w.bytes());
}

std::string of_json(const char* text) {
    auto doc = json::parse(text);
    EXPECT_TRUE(doc.ok()) << text;
    return hex(cbor::encode(doc->get()));
}
}  // namespace

TEST(MetricsCbor, IntegersFromAppendixA) {
    EXPECT_EQ(number(0), "00");
    EXPECT_EQ(number(1), "01");
    EXPECT_EQ(number(10), "0a");
    EXPECT_EQ(number(23), "17");
    EXPECT_EQ(number(24), "1818");
    EXPECT_EQ(number(25), "1819");
    EXPECT_EQ(number(100), "1864");
    EXPECT_EQ(number(1000), "1903e8");
    EXPECT_EQ(number(1000000), "1a000f4240");
    EXPECT_EQ(number(1000000000000.0), "1b000000e8d4a51000");
    EXPECT_EQ(number(-1), "20");
    EXPECT_EQ(number(-10), "29");
    EXPECT_EQ(number(-100), "3863");
    EXPECT_EQ(number(-1000), "3903e7");
    cbor::Writer w;
    w.unsigned_int(18446744073709551615ULL);
    EXPECT_EQ(hex(w.bytes()), "1bffffffffffffffff");
    cbor::Writer n;
    n.integer(INT64_MIN);
    EXPECT_EQ(hex(n.bytes()), "3b7fffffffffffffff");
}

TEST(MetricsCbor, FloatsInTheShortestExactForm) {
    EXPECT_EQ(number(1.5), "f93e00");
    EXPECT_EQ(number(-4.1), "fbc010666666666666");
    EXPECT_EQ(number(65504.5), "fa477fe080");  // not a half; exact as a single
    EXPECT_EQ(number(100000.5), "fa47c35040");
    EXPECT_EQ(number(1.1), "fb3ff199999999999a");
    EXPECT_EQ(number(1.0e300), "fb7e37e43c8800759c");
    EXPECT_EQ(number(5.960464477539063e-8), "f90001");  // smallest half subnormal
    EXPECT_EQ(number(0.00006103515625), "f90400");      // smallest half normal
    EXPECT_EQ(number(-0.0), "f98000");
    EXPECT_EQ(number(INFINITY), "f97c00");
    EXPECT_EQ(number(-INFINITY), "f9fc00");
    EXPECT_EQ(number(NAN), "f97e00");
    cbor::Writer w;
    w.floating(65504.0);
    EXPECT_EQ(hex(w.bytes()), "f97bff");
    cbor::Writer s;
    s.floating(3.4028234663852886e+38);
    EXPECT_EQ(hex(s.bytes()), "fa7f7fffff");
}

TEST(MetricsCbor, SimpleValuesStringsArraysMaps) {
    EXPECT_EQ(of_json("false"), "f4");
    EXPECT_EQ(of_json("true"), "f5");
    EXPECT_EQ(of_json("null"), "f6");
    EXPECT_EQ(of_json("\"\""), "60");
    EXPECT_EQ(of_json("\"a\""), "6161");
    EXPECT_EQ(of_json("\"IETF\""), "6449455446");
    EXPECT_EQ(of_json("\"\\\"\\\\\""), "62225c");
    EXPECT_EQ(of_json("\"\\u00fc\""), "62c3bc");
    EXPECT_EQ(of_json("\"\\u6c34\""), "63e6b0b4");
    EXPECT_EQ(of_json("[]"), "80");
    EXPECT_EQ(of_json("[1, 2, 3]"), "83010203");
    EXPECT_EQ(of_json("[1, [2, 3], [4, 5]]"), "8301820203820405");
    EXPECT_EQ(of_json("[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25]"),
              "98190102030405060708090a0b0c0d0e0f101112131415161718181819");
    EXPECT_EQ(of_json("{}"), "a0");
    EXPECT_EQ(of_json("{\"a\": 1, \"b\": [2, 3]}"), "a26161016162820203");
    EXPECT_EQ(of_json("[\"a\", {\"b\": \"c\"}]"), "826161a161626163");
    EXPECT_EQ(of_json("{\"a\": \"A\", \"b\": \"B\", \"c\": \"C\", \"d\": \"D\", \"e\": \"E\"}"),
              "a56161614161626142616361436164614461656145");
}

TEST(MetricsCbor, MapKeysInDeterministicOrder) {
    // Shorter keys first, then bytewise: the order RFC 8949 §4.2.1 gives for text keys.
    EXPECT_EQ(of_json("{\"bb\": 1, \"a\": 2, \"c\": 3, \"aa\": 4}"),
              of_json("{\"a\": 2, \"c\": 3, \"aa\": 4, \"bb\": 1}"));
    EXPECT_EQ(of_json("{\"bb\": 1, \"a\": 2}"), "a261610262626201");
    // A 24-byte key (two-byte head) sorts after every 23-byte one.
    std::string k23(23, 'z'), k24(24, 'a');
    std::string doc = "{\"" + k24 + "\": 1, \"" + k23 + "\": 2}";
    std::string out = of_json(doc.c_str());
    EXPECT_EQ(out.substr(0, 4), "a277");
}

TEST(MetricsCbor, DecodesWhatItEncodes) {
    const char* text =
        "{\"hed\":{\"rid\":1700000000,\"v\":\"1.0\"},\"met\":{\"tp\":{\"pts\":[{\"if\":\"eth0\",\"pt\":22}],\"t\":1},"
        "\"ns\":{\"bi\":4294967296,\"bo\":0}},\"cmet\":{\"x\":[{\"number\":-2.5}],\"y\":[{\"ip_list\":[\"::1\"]}]}}";
    auto doc = json::parse(text);
    ASSERT_TRUE(doc.ok());
    auto back = cbor::decode(cbor::encode(doc->get()));
    ASSERT_TRUE(back.ok()) << back.error();
    EXPECT_TRUE(cJSON_Compare(doc->get(), back->get(), true));
}

TEST(MetricsCbor, DecoderRefusesWhatIsNotJsonShaped) {
    EXPECT_FALSE(cbor::decode(std::string("\x5f", 1)).ok());                  // indefinite byte string
    EXPECT_FALSE(cbor::decode(std::string("\x43\x01\x02\x03", 4)).ok());      // byte string
    EXPECT_FALSE(cbor::decode(std::string("\xc1\x01", 2)).ok());              // tag
    EXPECT_FALSE(cbor::decode(std::string("\x82\x01", 2)).ok());              // truncated array
    EXPECT_FALSE(cbor::decode(std::string("\x01\x02", 2)).ok());              // trailing byte
    EXPECT_FALSE(cbor::decode(std::string("\x7a\xff\xff\xff\xff", 5)).ok());  // length past the end
    EXPECT_FALSE(cbor::decode(std::string(100, '\x81') + "\x01").ok());       // nested too deep
    EXPECT_FALSE(cbor::decode(std::string("\xa1\x01\x02", 3)).ok());          // integer map key
    auto half = cbor::decode(std::string("\xf9\x3c\x00", 3));
    ASSERT_TRUE(half.ok());
    EXPECT_EQ(half->get()->valuedouble, 1.0);
}
