// The jobs state file and the Jobs API codec.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <cstdlib>

#include "fs/fs.hpp"
#include "jobs/api.hpp"
#include "jobs/store.hpp"
#include "support/tempdir.hpp"

using namespace iot;
using namespace iot::jobs;

namespace {
using testsupport::TempDir;
}  // namespace

TEST(JobsStore, SurvivesARestartWithOutboxCurrentJobAndDoneSet) {
    TempDir t;
    std::string file = t.path + "/jobs.json";
    {
        JobStore s(file);
        ASSERT_TRUE(s.load());
        CurrentJob j{"job-1", 1, 2, R"({"version":"1.0","steps":[]})", 0, "", 0};
        ASSERT_TRUE(s.set_current(j));
        j.next_step = 2;
        j.reboot_boot_id = "boot-a";
        j.reboot_step = 2;
        ASSERT_TRUE(s.set_current(j));
        ASSERT_TRUE(s.reject(StatusUpdate{"bad-doc", 1, "REJECTED", {{"reason", "invalid"}}, 1}));
    }
    JobStore s(file);
    ASSERT_TRUE(s.load());
    ASSERT_TRUE(s.current());
    EXPECT_EQ(s.current()->job_id, "job-1");
    EXPECT_EQ(s.current()->next_step, 2u);
    EXPECT_EQ(s.current()->reboot_boot_id, "boot-a");
    EXPECT_EQ(s.current()->document, R"({"version":"1.0","steps":[]})");
    ASSERT_EQ(s.outbox().size(), 1u);
    EXPECT_EQ(s.outbox()[0].details.at(0).second, "invalid");
    EXPECT_TRUE(s.is_done("bad-doc", 1));
    EXPECT_FALSE(s.is_done("bad-doc", 2));
    struct stat st;
    ASSERT_EQ(stat(file.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(JobsStore, FinishingAJobQueuesItsStatusAndForgetsItInOneWrite) {
    TempDir t;
    JobStore s(t.path + "/jobs.json");
    ASSERT_TRUE(s.load());
    ASSERT_TRUE(s.set_current(CurrentJob{"j", 3, 2, "{}", 1, "", 0}));
    ASSERT_TRUE(s.finish_current(StatusUpdate{"j", 3, "SUCCEEDED", {}, 2}));
    JobStore again(t.path + "/jobs.json");
    ASSERT_TRUE(again.load());
    EXPECT_FALSE(again.current());
    ASSERT_EQ(again.outbox().size(), 1u);
    EXPECT_EQ(again.outbox()[0].status, "SUCCEEDED");
    EXPECT_TRUE(again.is_done("j", 3));
    ASSERT_TRUE(again.pop_outbox());
    EXPECT_TRUE(again.outbox().empty());
}

TEST(JobsStore, CorruptFileIsMovedAsideNotTrusted) {
    TempDir t;
    std::string file = t.path + "/jobs.json";
    ASSERT_TRUE(fs::write_atomic(file, "{\"outbox\": [", 0600));
    JobStore s(file);
    auto st = s.load();
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().find("moved to"), std::string::npos) << st.error();
    EXPECT_FALSE(fs::exists(file));
    EXPECT_TRUE(s.outbox().empty());
}

TEST(JobsApi, ParsesExecutionsAndTheNothingPendingCase) {
    auto e = api::parse_execution(R"({"timestamp":1,"execution":{"jobId":"j1","status":"IN_PROGRESS",)"
                                  R"("versionNumber":2,"executionNumber":1,"approximateSecondsBeforeTimedOut":60,)"
                                  R"("jobDocument":{"operation":"x"}}})");
    ASSERT_TRUE(e && *e);
    EXPECT_EQ((*e)->job_id, "j1");
    EXPECT_EQ((*e)->version, 2);
    EXPECT_EQ((*e)->document, R"({"operation":"x"})");
    EXPECT_EQ((*e)->seconds_before_timeout, 60);
    auto none = api::parse_execution(R"({"timestamp":1})");
    ASSERT_TRUE(none);
    EXPECT_FALSE(*none);
    EXPECT_FALSE(api::parse_execution(R"({"execution":{"status":"QUEUED"}})"));
    EXPECT_FALSE(api::parse_execution("not json"));
}

TEST(JobsApi, ParsesRejectionsWithAndWithoutExecutionState) {
    auto r = api::parse_rejection(R"({"code":"VersionMismatch","message":"m","timestamp":1,)"
                                  R"("executionState":{"status":"SUCCEEDED","versionNumber":3}})");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->code, "VersionMismatch");
    EXPECT_EQ(r->state_status, "SUCCEEDED");
    EXPECT_EQ(r->state_version, 3);
    auto plain = api::parse_rejection(R"({"code":"RequestThrottled","message":"slow down"})");
    ASSERT_TRUE(plain);
    EXPECT_FALSE(plain->state_status);
}

TEST(JobsApi, StatusDetailsFollowAwsLimits) {
    api::Details in;
    for (int i = 0; i < 12; ++i) in.emplace_back("k" + std::to_string(i), "v");
    EXPECT_EQ(api::clean_details(in).size(), 10u);
    std::string long_value(3000, 'x');
    long_value += "\xc3\xa9-end";
    auto out = api::clean_details({{"stdout", "line1\nline2\ttab"}, {"empty", "  "}, {"bad key!", "v"}, {"long", long_value}});
    ASSERT_EQ(out.size(), 3u);
    EXPECT_EQ(out[0].second, "line1 line2 tab") << "control characters are not allowed in values";
    EXPECT_EQ(out[1].first, "badkey");
    EXPECT_LE(out[2].second.size(), 1024u);
    EXPECT_EQ(out[2].second.substr(out[2].second.size() - 4), "-end") << "the end of an output matters most";
}

TEST(JobsApi, UpdateRequestShape) {
    std::string p = api::update_request("SUCCEEDED", {{"reason", "exit status 0"}}, 2, 1, "tok");
    EXPECT_EQ(p, R"({"status":"SUCCEEDED","statusDetails":{"reason":"exit status 0"},"expectedVersion":2,)"
                 R"("executionNumber":1,"includeJobExecutionState":true,"clientToken":"tok"})");
    EXPECT_TRUE(api::is_terminal("CANCELED"));
    EXPECT_FALSE(api::is_terminal("IN_PROGRESS"));
    api::Topics t("dev-1");
    EXPECT_EQ(t.update("j9"), "$aws/things/dev-1/jobs/j9/update");
    EXPECT_EQ(api::Topics::accepted(t.start_next()), "$aws/things/dev-1/jobs/start-next/accepted");
    EXPECT_EQ(t.any_update("rejected"), "$aws/things/dev-1/jobs/+/update/rejected");
}
