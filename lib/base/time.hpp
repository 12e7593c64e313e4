// Clocks: monotonic milliseconds for timers and timeouts, wall-clock for logs and payloads.
#pragma once
#include <cstdint>
#include <string>

namespace iot {

int64_t monotonic_ms();
int64_t wall_ms();
// "2026-11-22T13:50:56.123Z"
std::string iso8601_utc(int64_t wall_milliseconds);
// A uniformly random integer in [lo, hi] from the kernel's CSPRNG-seeded generator.
uint64_t random_between(uint64_t lo, uint64_t hi);
// Random token of [A-Za-z0-9], e.g. for MQTT clientTokens.
std::string random_token(size_t length);

}  // namespace iot
