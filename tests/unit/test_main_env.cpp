#include <gtest/gtest.h>
#include "log/log.hpp"
struct DebugEnv : ::testing::Environment { void SetUp() override { if (getenv("IOT_TEST_DEBUG")) iot::log::set_level(iot::log::Level::Debug); } };
static auto* env = ::testing::AddGlobalTestEnvironment(new DebugEnv);
