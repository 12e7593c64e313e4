#include "base/process.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <set>

#include "base/strings.hpp"
#include "support/tempdir.hpp"

using namespace iot;

namespace {

const char* kPath = "/usr/bin:/bin";

using testsupport::TempDir;

struct Finished {
    std::string out, err;
    int status = -1;
};

// Drain both pipes until both are closed, then reap: what the event loop does, in miniature.
Finished wait_for(ChildProcess& child) {
    Finished f;
    pollfd fds[2] = {{child.out.get(), POLLIN, 0}, {child.err.get(), POLLIN, 0}};
    std::string* sinks[2] = {&f.out, &f.err};
    int open_count = 2;
    while (open_count > 0) {
        int ready = poll(fds, 2, 30000);
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) break;
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd < 0 || !fds[i].revents) continue;
            char buf[4096];
            ssize_t n = read(fds[i].fd, buf, sizeof buf);
            if (n > 0) {
                sinks[i]->append(buf, static_cast<size_t>(n));
            } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                fds[i].fd = -1;
                --open_count;
            }
        }
    }
    waitpid(child.pid, &f.status, 0);
    return f;
}

SpawnOptions options(std::vector<std::string> argv) {
    SpawnOptions o;
    o.argv = std::move(argv);
    o.env = {"PATH=/usr/bin:/bin"};
    o.search_path = kPath;
    return o;
}

Finished run(const SpawnOptions& o) {
    auto child = spawn(o);
    EXPECT_TRUE(child.ok()) << child.error();
    if (!child) return {};
    return wait_for(*child);
}

Finished sh(const std::string& script) {
    return run(options({"sh", "-c", script}));
}

}  // namespace

TEST(Process, CapturesStdoutAndStderrSeparately) {
    Finished f = sh("echo to-out; echo to-err >&2; echo more-out");
    EXPECT_EQ(f.out, "to-out\nmore-out\n");
    EXPECT_EQ(f.err, "to-err\n");
    EXPECT_EQ(describe_wait_status(f.status), "exit status 0");
}

TEST(Process, DescribesExitStatusExactly) {
    EXPECT_EQ(describe_wait_status(sh("exit 3").status), "exit status 3");
    EXPECT_EQ(describe_wait_status(sh("exit 255").status), "exit status 255");
}

TEST(Process, DescribesSignalsExactly) {
    EXPECT_EQ(describe_wait_status(sh("kill -KILL $$").status), "killed by signal SIGKILL");
    EXPECT_EQ(describe_wait_status(sh("kill -TERM $$").status), "killed by signal SIGTERM");
    EXPECT_EQ(signal_name(SIGSEGV), "SIGSEGV");
    EXPECT_EQ(signal_name(SIGHUP), "SIGHUP");
    EXPECT_EQ(signal_name(64), "signal 64");
    EXPECT_EQ(describe_wait_status(SIGRTMIN + 1), format("killed by signal signal %d", SIGRTMIN + 1));
}

TEST(Process, EnvironmentIsExactlyWhatWasGiven) {
    SpawnOptions o = options({"/usr/bin/env"});
    o.env = {"A=1", "B=two words", "EMPTY="};
    Finished f = run(o);
    EXPECT_EQ(f.out, "A=1\nB=two words\nEMPTY=\n");

    o.env.clear();
    EXPECT_EQ(run(o).out, "");
}

TEST(Process, OtherDescriptorsAreClosedInTheChild) {
    // Descriptors the parent forgot to mark close-on-exec, low and high.
    int leaked_low = open("/dev/null", O_RDONLY);
    ASSERT_GE(leaked_low, 3);
    int leaked_high = fcntl(leaked_low, F_DUPFD, 200);
    ASSERT_EQ(leaked_high, 200);

    Finished f = run(options({"ls", "/proc/self/fd"}));
    close(leaked_low);
    close(leaked_high);
    // 0-2 are ours; ls opens one descriptor (3) to read the directory itself.
    std::set<std::string> seen;
    for (const std::string& line : split(f.out, '\n'))
        if (!line.empty()) seen.insert(line);
    EXPECT_EQ(seen, (std::set<std::string>{"0", "1", "2", "3"})) << f.out;
}

TEST(Process, StdinIsDevNull) {
    // Our own stdin is a pipe with data in it: the child must not inherit it (a daemon's stdin
    // may be a terminal or a pipe that never ends).
    int saved = dup(0);
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    ASSERT_EQ(write(p[1], "ours\n", 5), 5);
    close(p[1]);
    dup2(p[0], 0);
    close(p[0]);
    Finished link = run(options({"readlink", "/proc/self/fd/0"}));
    Finished cat = sh("cat; echo done");
    dup2(saved, 0);
    close(saved);
    EXPECT_EQ(link.out, "/dev/null\n");
    EXPECT_EQ(cat.out, "done\n");
}

TEST(Process, ParentEndsAreNonBlockingAndCloseOnExec) {
    auto child = spawn(options({"true"}));
    ASSERT_TRUE(child.ok()) << child.error();
    for (const Fd* fd : {&child->out, &child->err}) {
        ASSERT_TRUE(fd->valid());
        EXPECT_TRUE(fcntl(fd->get(), F_GETFL) & O_NONBLOCK);
        EXPECT_TRUE(fcntl(fd->get(), F_GETFD) & FD_CLOEXEC);
    }
    wait_for(*child);
}

TEST(Process, ChildHasItsOwnProcessGroup) {
    // Field 5 of /proc/<pid>/stat is the process group; comm "(sh)" has no spaces.
    const char* script = "read pid comm state ppid pgid rest < /proc/$$/stat; echo $pid $pgid";
    Finished f = sh(script);
    auto fields = split(trim(f.out), ' ');
    ASSERT_EQ(fields.size(), 2u) << f.out;
    EXPECT_EQ(fields[0], fields[1]);
    EXPECT_NE(fields[1], std::to_string(getpgrp()));

    SpawnOptions same = options({"sh", "-c", script});
    same.new_process_group = false;
    fields = split(trim(run(same).out), ' ');
    ASSERT_EQ(fields.size(), 2u);
    EXPECT_EQ(fields[1], std::to_string(getpgrp()));
}

TEST(Process, SignalsAreUnblockedAndDefaultInTheChild) {
    // As the daemon does for its signalfd, plus an ignored signal (ignoring survives exec).
    sigset_t block, old_mask;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGUSR1);
    sigaddset(&block, SIGCHLD);
    ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &block, &old_mask), 0);
    struct sigaction ignore = {}, old_pipe;
    ignore.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ignore, &old_pipe);

    Finished f = run(options({"grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"}));

    pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    sigaction(SIGPIPE, &old_pipe, nullptr);
    EXPECT_EQ(f.out, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
}

TEST(Process, NonExecutableFileIsAClearError) {
    TempDir dir;
    std::string file = dir.path + "/not-executable";
    std::system(("echo 'echo hi' > " + file + " && chmod 644 " + file).c_str());
    // Run as an unprivileged user too would give the same: root needs an x bit to exec.
    auto child = spawn(options({file}));
    ASSERT_FALSE(child.ok());
    EXPECT_EQ(child.error(), "cannot execute " + file + ": Permission denied");

    auto missing = spawn(options({dir.path + "/missing"}));
    ASSERT_FALSE(missing.ok());
    EXPECT_EQ(missing.error(), "cannot execute " + dir.path + "/missing: No such file or directory");

    // The failed child was reaped by spawn(): nothing is left to wait for.
    EXPECT_EQ(waitpid(-1, nullptr, WNOHANG), -1);
    EXPECT_EQ(errno, ECHILD);
}

TEST(Process, MissingProgramInPathIsAClearError) {
    auto child = spawn(options({"no-such-program-iotbox"}));
    ASSERT_FALSE(child.ok());
    EXPECT_EQ(child.error(), "cannot execute no-such-program-iotbox: not found in PATH (/usr/bin:/bin)");

    SpawnOptions no_path = options({"true"});
    no_path.search_path.clear();
    auto bare = spawn(no_path);
    ASSERT_FALSE(bare.ok());
    EXPECT_EQ(bare.error(), "cannot execute true: not a path and no PATH to search");
}

TEST(Process, FindInPathTakesOnlyExecutableRegularFiles) {
    TempDir a, b;
    std::system(("mkdir " + a.path + "/tool && touch " + a.path + "/plain && printf '' > " + b.path +
                 "/tool && chmod 755 " + b.path + "/tool && cp " + b.path + "/tool " + b.path + "/plain")
                    .c_str());
    std::string path = a.path + "::" + b.path + "/";
    EXPECT_EQ(find_in_path("tool", path), b.path + "/tool");    // a's is a directory
    EXPECT_EQ(find_in_path("plain", path), b.path + "/plain");  // a's is not executable
    EXPECT_EQ(find_in_path("none", path), "");
    EXPECT_EQ(find_in_path("sh", kPath), access("/usr/bin/sh", X_OK) == 0 ? "/usr/bin/sh" : "/bin/sh");
    EXPECT_EQ(find_in_path("bin/sh", "/usr"), "");  // names with '/' are not searched
}

TEST(Process, WorkingDirectory) {
    TempDir dir;
    SpawnOptions o = options({"pwd"});
    o.cwd = dir.path;
    EXPECT_EQ(run(o).out, dir.path + "\n");

    o.cwd = dir.path + "/missing";
    auto child = spawn(o);
    ASSERT_FALSE(child.ok());
    EXPECT_EQ(child.error(), "cannot execute " + find_in_path("pwd", kPath) + ": cannot change directory to " +
                                 dir.path + "/missing: No such file or directory");
}

TEST(Process, SwitchesUserWhenRoot) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    auto nobody = lookup_user("nobody");
    ASSERT_TRUE(nobody.ok()) << nobody.error();
    SpawnOptions o = options({"id"});
    o.user = *nobody;
    o.argv = {"id", "-u"};
    EXPECT_EQ(run(o).out, "65534\n");
    o.argv = {"id", "-g"};
    EXPECT_EQ(run(o).out, format("%u\n", static_cast<unsigned>(nobody->gid)));
    // Supplementary groups are nobody's, not root's.
    o.argv = {"id", "-G"};
    std::string expected_groups;
    for (gid_t g : nobody->groups) expected_groups += (expected_groups.empty() ? "" : " ") + std::to_string(g);
    EXPECT_EQ(run(o).out, expected_groups + "\n");
}

TEST(Process, UserSwitchFailureIsReported) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to drop to nobody first";
    // nobody cannot become root: spawn from a child that already dropped privileges.
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        if (setgid(65534) != 0 || setuid(65534) != 0) _exit(2);
        UserIdentity root;
        root.name = "root";
        SpawnOptions o = options({"true"});
        o.user = root;
        auto child = spawn(o);
        _exit(!child.ok() && child.error() == "cannot execute " + find_in_path("true", kPath) +
                                                  ": cannot switch to user root (setgroups): "
                                                  "Operation not permitted"
                  ? 0
                  : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_EQ(describe_wait_status(status), "exit status 0");
}

TEST(Process, LookupUser) {
    auto root = lookup_user("root");
    ASSERT_TRUE(root.ok()) << root.error();
    EXPECT_EQ(root->uid, 0u);
    EXPECT_EQ(root->gid, 0u);
    EXPECT_EQ(root->home, "/root");
    ASSERT_FALSE(root->groups.empty());
    EXPECT_EQ(root->groups[0], 0u);

    auto by_id = lookup_user("65534");
    ASSERT_TRUE(by_id.ok()) << by_id.error();
    EXPECT_EQ(by_id->name, "nobody");

    auto bob = lookup_user("no-such-user-iotbox");
    ASSERT_FALSE(bob.ok());
    EXPECT_EQ(bob.error(), "no such user 'no-such-user-iotbox'");
    auto unknown_id = lookup_user("4000000");
    ASSERT_FALSE(unknown_id.ok());
    EXPECT_EQ(unknown_id.error(), "no such user '4000000'");
    auto empty = lookup_user("");
    ASSERT_FALSE(empty.ok());
    EXPECT_EQ(empty.error(), "empty user name");
}
