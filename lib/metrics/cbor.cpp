#include "metrics/cbor.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "base/strings.hpp"

namespace iot::cbor {
namespace {

constexpr int kMaxDepth = 32;

// The IEEE half-precision bits of `v`, if `v` converts to half exactly.
bool to_half(double v, uint16_t& out) {
    if (std::isnan(v)) {
        out = 0x7e00;
        return true;
    }
    uint16_t sign = std::signbit(v) ? 0x8000 : 0;
    double a = std::fabs(v);
    if (std::isinf(v)) {
        out = sign | 0x7c00;
        return true;
    }
    if (a == 0) {
        out = sign;
        return true;
    }
    int exp;
    double mant = std::frexp(a, &exp);  // a = mant * 2^exp, mant in [0.5, 1)
    int e = exp - 1;                    // a = (2*mant) * 2^e
    if (e > 15) return false;
    if (e >= -14) {
        double frac = (2 * mant - 1) * 1024;  // 10 fraction bits
        if (frac != std::floor(frac)) return false;
        out = static_cast<uint16_t>(sign | ((e + 15) << 10) | static_cast<uint16_t>(frac));
        return true;
    }
    double sub = a * 16777216.0;  // subnormal: a = m * 2^-24, m < 1024
    if (sub != std::floor(sub) || sub >= 1024) return false;
    out = static_cast<uint16_t>(sign | static_cast<uint16_t>(sub));
    return true;
}

class Reader {
public:
    explicit Reader(std::string_view b) : b_(b) {}
    size_t pos() const { return pos_; }
    bool done() const { return pos_ == b_.size(); }

    Result<json::Json> item(int depth) {
        if (depth > kMaxDepth) return Error("nested deeper than 32 levels");
        if (pos_ >= b_.size()) return Error("truncated");
        uint8_t ib = static_cast<uint8_t>(b_[pos_++]);
        int major = ib >> 5, info = ib & 31;
        if (major == 7) return simple(info);
        uint64_t arg;
        if (!argument(info, arg)) return Error(format("bad or truncated head at byte %zu", pos_ - 1));
        switch (major) {
            case 0:
                return json::Json(cJSON_CreateNumber(static_cast<double>(arg)));
            case 1:
                return json::Json(cJSON_CreateNumber(-1.0 - static_cast<double>(arg)));
            case 2:
                return Error("byte strings are not JSON-shaped");
            case 3: {
                if (arg > b_.size() - pos_) return Error("truncated text string");
                std::string s(b_.substr(pos_, arg));
                pos_ += arg;
                return json::Json(cJSON_CreateString(s.c_str()));
            }
            case 4: {
                json::Json arr(cJSON_CreateArray());
                for (uint64_t i = 0; i < arg; ++i) {
                    auto v = item(depth + 1);
                    if (!v) return v;
                    cJSON_AddItemToArray(arr.get(), v->release());
                }
                return arr;
            }
            case 5: {
                json::Json obj(cJSON_CreateObject());
                for (uint64_t i = 0; i < arg; ++i) {
                    auto k = item(depth + 1);
                    if (!k) return k;
                    if (!cJSON_IsString(k->get())) return Error("map key is not a text string");
                    auto v = item(depth + 1);
                    if (!v) return v;
                    cJSON_AddItemToObject(obj.get(), k->get()->valuestring, v->release());
                }
                return obj;
            }
            default:
                return Error("tags are not supported");
        }
    }

private:
    bool argument(int info, uint64_t& out) {
        if (info < 24) {
            out = static_cast<uint64_t>(info);
            return true;
        }
        if (info > 27) return false;  // reserved or indefinite length
        size_t n = size_t(1) << (info - 24);
        if (b_.size() - pos_ < n) return false;
        uint64_t v = 0;
        for (size_t i = 0; i < n; ++i) v = (v << 8) | static_cast<uint8_t>(b_[pos_++]);
        out = v;
        return true;
    }

    Result<json::Json> simple(int info) {
        switch (info) {
            case 20:
                return json::Json(cJSON_CreateFalse());
            case 21:
                return json::Json(cJSON_CreateTrue());
            case 22:
                return json::Json(cJSON_CreateNull());
            case 25:
            case 26:
            case 27: {
                uint64_t bits;
                if (!argument(info, bits)) return Error("truncated float");
                double v;
                if (info == 25) {
                    int exp = (bits >> 10) & 0x1f;
                    double mant = static_cast<double>(bits & 0x3ff);
                    v = exp == 0    ? std::ldexp(mant, -24)
                        : exp == 31 ? (mant == 0 ? INFINITY : NAN)
                                    : std::ldexp(mant + 1024, exp - 25);
                    if (bits & 0x8000) v = -v;
                } else if (info == 26) {
                    uint32_t b32 = static_cast<uint32_t>(bits);
                    float f;
                    memcpy(&f, &b32, 4);
                    v = f;
                } else {
                    memcpy(&v, &bits, 8);
                }
                return json::Json(cJSON_CreateNumber(v));
            }
            default:
                return Error(format("unsupported simple value %d", info));
        }
    }

    std::string_view b_;
    size_t pos_ = 0;
};

}  // namespace

void Writer::head(int major, uint64_t arg) {
    auto put = [&](int info, int bytes) {
        out_ += static_cast<char>((major << 5) | info);
        for (int i = bytes - 1; i >= 0; --i) out_ += static_cast<char>((arg >> (8 * i)) & 0xff);
    };
    if (arg < 24)
        put(static_cast<int>(arg), 0);
    else if (arg <= 0xff)
        put(24, 1);
    else if (arg <= 0xffff)
        put(25, 2);
    else if (arg <= 0xffffffffULL)
        put(26, 4);
    else
        put(27, 8);
}

void Writer::integer(int64_t v) {
    if (v >= 0)
        head(0, static_cast<uint64_t>(v));
    else
        head(1, static_cast<uint64_t>(-(v + 1)));
}

void Writer::text(std::string_view s) {
    head(3, s.size());
    out_.append(s.data(), s.size());
}

void Writer::number(double v) {
    // ±2^63 are the limits of int64; doubles beyond 2^53 are integral but stay floats so that the
    // value decoded is the value JSON would carry.
    if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) <= 9007199254740992.0 && !(v == 0 && std::signbit(v))) {
        integer(static_cast<int64_t>(v));
        return;
    }
    floating(v);
}

void Writer::floating(double v) {
    uint16_t half;
    if (to_half(v, half)) {
        out_ += static_cast<char>(0xf9);
        out_ += static_cast<char>(half >> 8);
        out_ += static_cast<char>(half & 0xff);
        return;
    }
    float f = static_cast<float>(v);
    if (static_cast<double>(f) == v) {
        uint32_t bits;
        memcpy(&bits, &f, 4);
        out_ += static_cast<char>(0xfa);
        for (int i = 3; i >= 0; --i) out_ += static_cast<char>((bits >> (8 * i)) & 0xff);
        return;
    }
    uint64_t bits;
    memcpy(&bits, &v, 8);
    out_ += static_cast<char>(0xfb);
    for (int i = 7; i >= 0; --i) out_ += static_cast<char>((bits >> (8 * i)) & 0xff);
}

namespace {
void encode_into(Writer& w, const cJSON* item) {
    if (cJSON_IsObject(item)) {
        // Deterministic order: by the encoded key, i.e. shorter keys first, then bytewise.
        std::vector<std::pair<std::string, const cJSON*>> entries;
        for (const cJSON* c = item->child; c; c = c->next) {
            Writer k;
            k.text(c->string ? c->string : "");
            entries.emplace_back(k.take(), c);
        }
        std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
        w.map(entries.size());
        for (const auto& [key, value] : entries) {
            w.text(value->string ? value->string : "");
            encode_into(w, value);
        }
    } else if (cJSON_IsArray(item)) {
        w.array(static_cast<uint64_t>(cJSON_GetArraySize(item)));
        for (const cJSON* c = item->child; c; c = c->next) encode_into(w, c);
    } else if (cJSON_IsString(item)) {
        w.text(item->valuestring);
    } else if (cJSON_IsNumber(item)) {
        w.number(item->valuedouble);
    } else if (cJSON_IsBool(item)) {
        w.boolean(cJSON_IsTrue(item));
    } else {
        w.null();
    }
}
}  // namespace

std::string encode(const cJSON* item) {
    Writer w;
    encode_into(w, item);
    return w.take();
}

Result<json::Json> decode(std::string_view bytes) {
    Reader r(bytes);
    auto v = r.item(0);
    if (!v) return Error("invalid CBOR: " + v.error());
    if (!r.done()) return Error(format("invalid CBOR: %zu trailing bytes", bytes.size() - r.pos()));
    return v;
}

}  // namespace iot::cbor
