// JobRunner with real child processes on a real event loop.
#include <gtest/gtest.h>

#include <signal.h>
#include <unistd.h>

#include <cstdlib>

#include "base/strings.hpp"
#include "base/time.hpp"
#include "fs/fs.hpp"
#include "jobs/runner.hpp"

using namespace iot;
using namespace iot::jobs;

namespace {

Action command(const std::string& name, std::vector<std::string> argv) {
    Action a;
    a.name = name;
    a.type = ActionType::RunCommand;
    a.command = std::move(argv);
    return a;
}

RunnerOptions options() {
    RunnerOptions o;
    o.resolve.search_path = "/usr/bin:/bin";
    o.resolve.daemon_uid = geteuid();
    o.env = {"PATH=/usr/bin:/bin", "HOME=/", "LANG=C"};
    o.kill_grace_ms = 300;
    return o;
}

struct Run {
    RunResult result;
    std::vector<StepResult> steps;
    int64_t ms = 0;
};

Run run(Document doc, RunnerOptions o = options(), size_t first = 0,
        std::function<void(JobRunner&, EventLoop&)> during = nullptr) {
    EventLoop loop;
    JobRunner runner(loop, o);
    Run out;
    bool done = false;
    JobRunner::Callbacks cb;
    cb.step_finished = [&](const StepResult& r) { out.steps.push_back(r); };
    cb.done = [&](const RunResult& r) {
        out.result = r;
        done = true;
    };
    int64_t t0 = monotonic_ms();
    runner.start(doc, first, cb);
    if (during) during(runner, loop);
    while (!done && monotonic_ms() - t0 < 30000) loop.run_once(100);
    out.ms = monotonic_ms() - t0;
    EXPECT_TRUE(done) << "the runner never finished";
    return out;
}

Document doc_of(std::vector<Action> steps) {
    Document d;
    d.version = "1.0";
    d.steps = std::move(steps);
    return d;
}

}  // namespace

TEST(JobsRunner, ExitStatusIsReportedExactly) {
    auto r = run(doc_of({command("three", {"sh", "-c", "exit 3"})}));
    EXPECT_EQ(r.result.outcome, RunResult::Outcome::Failed);
    EXPECT_EQ(r.result.reason, "step three: exit status 3") << "not 'killed by signal 3' as the Device Client said";
}

TEST(JobsRunner, DeathBySignalIsReportedWithItsName) {
    auto r = run(doc_of({command("killed", {"sh", "-c", "kill -KILL $$"})}));
    EXPECT_EQ(r.result.outcome, RunResult::Outcome::Failed);
    EXPECT_EQ(r.result.reason, "step killed: killed by signal SIGKILL");
}

TEST(JobsRunner, HugeOutputOnBothStreamsNeitherBlocksNorKillsTheChild) {
    // 10 MB on stdout and 1 MB on stderr, stderr first: the Device Client hung or cut this.
    auto r = run(doc_of({command("chatty", {"sh", "-c",
                                             "head -c 1048576 /dev/zero | tr '\\0' e >&2; "
                                             "head -c 10485760 /dev/zero | tr '\\0' o; echo; echo END-OF-OUT; exit 0"})}));
    ASSERT_EQ(r.result.outcome, RunResult::Outcome::Succeeded) << r.result.reason;
    EXPECT_EQ(r.result.reason, "exit status 0");
    EXPECT_EQ(r.result.stdout_tail.size(), 1024u);
    EXPECT_NE(r.result.stdout_tail.find("END-OF-OUT"), std::string::npos) << "the tail keeps the END of the output";
    EXPECT_EQ(r.result.stderr_tail, std::string(1024, 'e'));
}

TEST(JobsRunner, StepsRunInOrderAndTheFirstFailureStopsTheChain) {
    Document d = doc_of({command("a", {"echo", "A"}), command("b", {"false"}), command("c", {"echo", "C"})});
    d.final_step = command("final", {"echo", "F"});
    auto r = run(d);
    ASSERT_EQ(r.steps.size(), 2u);
    EXPECT_EQ(r.steps[0].stdout_tail, "A\n");
    EXPECT_EQ(r.result.reason, "step b: exit status 1");
}

TEST(JobsRunner, IgnoredFailuresContinueAndTheSummaryIsHonest) {
    Action b = command("b", {"false"});
    b.ignore_step_failure = true;
    Document d = doc_of({command("a", {"true"}), b});
    d.final_step = command("final", {"true"});
    auto r = run(d);
    EXPECT_EQ(r.result.outcome, RunResult::Outcome::Succeeded);
    EXPECT_EQ(r.result.reason, "1 of 2 steps succeeded, 1 failure(s) ignored, final step succeeded");
    EXPECT_EQ(r.steps.size(), 3u);
}

TEST(JobsRunner, AllowStdErrCountsLines) {
    Action tolerant = command("two-lines", {"sh", "-c", "echo a >&2; echo b >&2"});
    tolerant.allow_stderr = 2;
    EXPECT_EQ(run(doc_of({tolerant})).result.outcome, RunResult::Outcome::Succeeded);
    tolerant.allow_stderr = 1;
    auto r = run(doc_of({tolerant}));
    EXPECT_EQ(r.result.outcome, RunResult::Outcome::Failed);
    EXPECT_NE(r.result.reason.find("2 lines on stderr, more than allowStdErr 1"), std::string::npos) << r.result.reason;
    // Without allowStdErr, stderr alone never fails a step; a non-zero exit always does.
    EXPECT_EQ(run(doc_of({command("warns", {"sh", "-c", "echo w >&2"})})).result.outcome, RunResult::Outcome::Succeeded);
    Action nonzero = command("nonzero", {"sh", "-c", "exit 2"});
    nonzero.allow_stderr = 100;
    EXPECT_EQ(run(doc_of({nonzero})).result.outcome, RunResult::Outcome::Failed);
}

TEST(JobsRunner, StepLimitTerminatesThenKillsTheWholeGroup) {
    // The handler ignores SIGTERM and leaves a grandchild: both must go.
    char tmpl[] = "/tmp/iotjob-XXXXXX";
    std::string dir = mkdtemp(tmpl);
    std::string pidfile = dir + "/grandchild";
    Action stubborn = command("stubborn", {"sh", "-c", "trap '' TERM; sleep 60 & echo $! > " + pidfile + "; wait"});
    stubborn.timeout_s = 1;
    auto r = run(doc_of({stubborn}));
    EXPECT_EQ(r.result.outcome, RunResult::Outcome::Failed);
    EXPECT_EQ(r.result.reason, "step stubborn: timed out after 1 s (killed by signal SIGKILL)");
    EXPECT_TRUE(r.steps.at(0).timed_out);
    EXPECT_LT(r.ms, 5000);
    auto text = fs::read_file(pidfile);
    ASSERT_TRUE(text) << text.error();
    auto pid = parse_int(*text);
    ASSERT_TRUE(pid);
    usleep(100000);
    // Dead, or a zombie waiting for init to reap it.
    auto stat = fs::read_file("/proc/" + std::to_string(*pid) + "/stat");
    bool alive = stat && stat->find(") Z ") == std::string::npos;
    EXPECT_FALSE(alive) << "the grandchild survived: " << (stat ? *stat : "");
    std::system(("rm -rf " + dir).c_str());
}

TEST(JobsRunner, GrandchildHoldingThePipeDoesNotKeepTheJobAlive) {
    auto r = run(doc_of({command("daemonish", {"sh", "-c", "sleep 30 & echo started"})}));
    EXPECT_EQ(r.result.outcome, RunResult::Outcome::Succeeded);
    EXPECT_LT(r.ms, 5000);
}

TEST(JobsRunner, CancelStopsTheRunningStepAndReportsCanceled) {
    auto r = run(doc_of({command("long", {"sleep", "30"}), command("never", {"true"})}), options(), 0,
                 [](JobRunner& runner, EventLoop& loop) {
                     loop.add_timer(200, [&runner] { runner.cancel("canceled in the cloud"); });
                 });
    EXPECT_EQ(r.result.outcome, RunResult::Outcome::Canceled);
    EXPECT_EQ(r.result.reason, "canceled in the cloud");
    EXPECT_LT(r.ms, 5000);
    EXPECT_EQ(r.steps.size(), 1u);
}

TEST(JobsRunner, ResumesFromAGivenStep) {
    auto r = run(doc_of({command("done-before", {"false"}), command("second", {"echo", "2"})}), options(), 1);
    EXPECT_EQ(r.result.outcome, RunResult::Outcome::Succeeded);
    ASSERT_EQ(r.steps.size(), 1u);
    EXPECT_EQ(r.steps[0].name, "second");
}

TEST(JobsRunner, UnresolvableStepFailsWithTheReason) {
    auto r = run(doc_of({command("ghost", {"no-such-program-iotbox"})}));
    EXPECT_EQ(r.result.outcome, RunResult::Outcome::Failed);
    EXPECT_NE(r.result.reason.find("no-such-program-iotbox"), std::string::npos) << r.result.reason;
}

TEST(JobsRunner, EnvironmentIsExactlyTheConfiguredOne) {
    setenv("IOTBOX_SECRET_FROM_PARENT", "leak", 1);
    auto r = run(doc_of({command("env", {"env"})}));
    unsetenv("IOTBOX_SECRET_FROM_PARENT");
    EXPECT_EQ(r.steps.at(0).stdout_tail, "PATH=/usr/bin:/bin\nHOME=/\nLANG=C\n");
}

TEST(JobsRunner, RebootStepRecordsItselfAndRunsTheRebootCommand) {
    RunnerOptions o = options();
    char tmpl[] = "/tmp/iotreboot-XXXXXX";
    std::string dir = mkdtemp(tmpl);
    o.reboot_command = {"sh", "-c", "echo rebooting > " + dir + "/called; exit 1"};
    Action reboot;
    reboot.name = "reboot";
    reboot.type = ActionType::Reboot;
    EventLoop loop;
    JobRunner runner(loop, o);
    bool recorded = false, done = false;
    RunResult result;
    JobRunner::Callbacks cb;
    cb.rebooting = [&](size_t index) { recorded = index == 0; };
    cb.done = [&](const RunResult& r) {
        result = r;
        done = true;
    };
    runner.start(doc_of({reboot}), 0, cb);
    int64_t t0 = monotonic_ms();
    while (!done && monotonic_ms() - t0 < 5000) loop.run_once(100);
    EXPECT_TRUE(recorded) << "the step must be persisted before the reboot command runs";
    EXPECT_EQ(result.outcome, RunResult::Outcome::Failed) << "a failing reboot command fails the step";
    EXPECT_EQ(result.reason, "step reboot: exit status 1");
    EXPECT_EQ(system(("test -f " + dir + "/called").c_str()), 0);
    std::system(("rm -rf " + dir).c_str());
}

TEST(JobsOutputTail, KeepsTheLastBytesOnAUtf8Boundary) {
    OutputTail t(8);
    t.append("abc\n", 4);
    t.append("d\xc3\xa9\xc3\xa9\xc3\xa9z", 8);  // d é é é z: exactly 8 bytes
    EXPECT_EQ(t.text(), "d\xc3\xa9\xc3\xa9\xc3\xa9z");
    t.append("!!", 2);  // the window now starts inside the first é
    EXPECT_EQ(t.text(), "\xc3\xa9\xc3\xa9z!!") << "a tail never starts mid-character";
    EXPECT_EQ(t.lines(), 2u);
    EXPECT_EQ(t.total_bytes(), 14u);
}
