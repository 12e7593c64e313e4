// Test-wide setup: the library logs at WARN unless IOT_TEST_DEBUG is set (then DEBUG), so a failing
// test's output shows what matters.
#include <gtest/gtest.h>

#include <cstdlib>

#include "log/log.hpp"

namespace {
struct LogLevelEnvironment : ::testing::Environment {
    void SetUp() override { iot::log::set_level(getenv("IOT_TEST_DEBUG") ? iot::log::Level::Debug : iot::log::Level::Warn); }
};
const auto* const kEnvironment = ::testing::AddGlobalTestEnvironment(new LogLevelEnvironment);
}  // namespace
