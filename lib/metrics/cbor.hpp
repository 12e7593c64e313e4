// A small CBOR (RFC 8949) encoder and decoder for Defender reports and their answers: JSON-shaped
// data only (maps with text keys, arrays, text strings, integers, floats, true/false/null).
//
// Encoding is deterministic (§4.2.1): definite lengths, the shortest head for every integer and
// length, floats in the shortest of half/single/double precision that keeps the value, integral
// numbers as integers, and map keys sorted bytewise by their encoding. For text keys that order
// is "shorter first, then bytewise", the length-first order of RFC 7049 canonical CBOR, so both
// definitions give the same bytes.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "base/result.hpp"
#include "json/json.hpp"

namespace iot::cbor {

// Appends CBOR items to a byte string.
class Writer {
public:
    void unsigned_int(uint64_t v) { head(0, v); }
    void integer(int64_t v);
    void text(std::string_view s);
    void array(uint64_t count) { head(4, count); }
    void map(uint64_t count) { head(5, count); }
    void boolean(bool v) { out_ += static_cast<char>(v ? 0xf5 : 0xf4); }
    void null() { out_ += static_cast<char>(0xf6); }
    // A number: an integer when it is integral and fits, else the shortest exact float.
    void number(double v);
    void floating(double v);
    const std::string& bytes() const { return out_; }
    std::string take() { return std::move(out_); }

private:
    void head(int major, uint64_t arg);
    std::string out_;
};

// The JSON value as deterministic CBOR.
std::string encode(const cJSON* item);
// Decode one CBOR item that holds JSON-shaped data (byte strings and tags are refused, nesting is
// limited) into cJSON; trailing bytes are an error.
Result<json::Json> decode(std::string_view bytes);

}  // namespace iot::cbor
