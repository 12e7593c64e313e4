#include "base/time.hpp"

#include <sys/random.h>

#include <cstdio>
#include <ctime>

namespace iot {

int64_t monotonic_ms() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

int64_t wall_ms() {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

std::string iso8601_utc(int64_t ms) {
    time_t secs = static_cast<time_t>(ms / 1000);
    tm t;
    gmtime_r(&secs, &t);
    char buf[64];
    snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", t.tm_year + 1900, t.tm_mon + 1,
             t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, static_cast<int>(ms % 1000));
    return buf;
}

namespace {
// xorshift64*, seeded once from getrandom(): good enough for jitter and tokens, never for keys.
uint64_t next_random() {
    static uint64_t state = 0;
    if (state == 0) {
        if (getrandom(&state, sizeof state, 0) != sizeof state || state == 0)
            state = static_cast<uint64_t>(monotonic_ms()) | 1;
    }
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 2685821657736338717ULL;
}
}  // namespace

uint64_t random_between(uint64_t lo, uint64_t hi) {
    if (hi <= lo) return lo;
    uint64_t span = hi - lo + 1;
    return lo + (span == 0 ? next_random() : next_random() % span);
}

std::string random_token(size_t length) {
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    std::string out;
    out.reserve(length);
    for (size_t i = 0; i < length; ++i) out += alphabet[next_random() % (sizeof alphabet - 1)];
    return out;
}

}  // namespace iot
