#include <gtest/gtest.h>

#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

#include "fs/fs.hpp"
#include "support/tempdir.hpp"

using namespace iot;

namespace {
using testsupport::TempDir;

mode_t mode_of(const std::string& p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 ? (st.st_mode & 07777) : 0;
}

int count_entries(const std::string& dir) {
    int n = 0;
    DIR* d = opendir(dir.c_str());
    while (dirent* e = readdir(d))
        if (e->d_name[0] != '.' || (e->d_name[1] != '\0' && e->d_name[1] != '.')) ++n;
    closedir(d);
    return n;
}

fs::WriteStep g_crash_at;
void crash_hook(fs::WriteStep s) {
    if (s == g_crash_at) _exit(0);  // the power goes out right here
}
}  // namespace

TEST(Fs, AtomicWriteReplacesContentAndMode) {
    TempDir t;
    std::string p = t.path + "/a.json";
    ASSERT_TRUE(fs::write_atomic(p, "one", 0644));
    ASSERT_TRUE(fs::write_atomic(p, "two", 0644));
    EXPECT_EQ(*fs::read_file(p), "two");
    EXPECT_EQ(mode_of(p), 0644u);
    EXPECT_EQ(count_entries(t.path), 1) << "no temporary file left behind";
}

TEST(Fs, PrivateFilesArePrivateFromTheFirstByteEvenWithOpenUmask) {
    TempDir t;
    mode_t old = umask(0);
    ASSERT_TRUE(fs::write_atomic(t.path + "/k.pem", "secret", 0600));
    auto fd = fs::create_private(t.path + "/k2.pem");
    umask(old);
    ASSERT_TRUE(fd);
    EXPECT_EQ(mode_of(t.path + "/k.pem"), 0600u);
    EXPECT_EQ(mode_of(t.path + "/k2.pem"), 0600u);
    EXPECT_FALSE(fs::create_private(t.path + "/k2.pem")) << "never reuses an existing file";
}

// A crash between any two steps leaves the old content or the new content, whole, never a mix or
// an empty file.
TEST(Fs, CrashBetweenStepsNeverLeavesAHalfWrittenFile) {
    const fs::WriteStep steps[] = {fs::WriteStep::TempWritten, fs::WriteStep::TempSynced, fs::WriteStep::Renamed,
                                   fs::WriteStep::DirSynced};
    std::string big_new(200000, 'n');
    for (fs::WriteStep step : steps) {
        TempDir t;
        std::string p = t.path + "/state.json";
        ASSERT_TRUE(fs::write_atomic(p, "old content"));
        pid_t pid = fork();
        if (pid == 0) {
            g_crash_at = step;
            fs::set_write_step_hook(crash_hook);
            (void)fs::write_atomic(p, big_new);
            _exit(3);  // not reached: the hook "crashes" first
        }
        int status = 0;
        waitpid(pid, &status, 0);
        ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        auto content = fs::read_file(p);
        ASSERT_TRUE(content);
        if (step == fs::WriteStep::TempWritten || step == fs::WriteStep::TempSynced)
            EXPECT_EQ(*content, "old content") << "step " << static_cast<int>(step);
        else
            EXPECT_EQ(*content, big_new) << "step " << static_cast<int>(step);
        // The next write after a crash still works and cleans nothing it should not.
        ASSERT_TRUE(fs::write_atomic(p, "recovered"));
        EXPECT_EQ(*fs::read_file(p), "recovered");
    }
}

TEST(Fs, ModeRuleIsThisModeOrStricter) {
    EXPECT_TRUE(fs::mode_within(0400, 0600));
    EXPECT_TRUE(fs::mode_within(0600, 0600));
    EXPECT_FALSE(fs::mode_within(0640, 0600));
    EXPECT_TRUE(fs::mode_within(0700, 0700));
    EXPECT_FALSE(fs::mode_within(0701, 0700));
    TempDir t;
    std::string p = t.path + "/key.pem";
    ASSERT_TRUE(fs::write_atomic(p, "x", 0644));
    auto st = fs::check_mode(p, 0600);
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().find("mode 0644"), std::string::npos) << st.error();
    EXPECT_NE(st.error().find("chmod 600 " + p), std::string::npos) << st.error();
    ::chmod(p.c_str(), 0400);
    EXPECT_TRUE(fs::check_mode(p, 0600));
}

TEST(Fs, LockFileNamesTheHolderAndTakesOverStaleLocks) {
    TempDir t;
    std::string p = t.path + "/iotd.lock";
    // A stale file from a dead process does not block.
    ASSERT_TRUE(fs::write_atomic(p, "thing\n999999\n"));
    int ready[2], release[2];
    ASSERT_EQ(pipe(ready), 0);
    ASSERT_EQ(pipe(release), 0);
    pid_t pid = fork();
    if (pid == 0) {
        auto lock = fs::LockFile::acquire(p, "thing");
        char c = lock ? 'y' : 'n';
        (void)!write(ready[1], &c, 1);
        (void)!read(release[0], &c, 1);
        _exit(0);
    }
    char c = 0;
    ASSERT_EQ(read(ready[0], &c, 1), 1);
    ASSERT_EQ(c, 'y');
    auto second = fs::LockFile::acquire(p, "thing");
    ASSERT_FALSE(second);
    EXPECT_NE(second.error().find("pid " + std::to_string(pid)), std::string::npos) << second.error();
    (void)!write(release[1], "x", 1);
    int status;
    waitpid(pid, &status, 0);
    // The holder is gone (its lock died with it): we can take it.
    auto third = fs::LockFile::acquire(p, "thing");
    ASSERT_TRUE(third) << third.error();
    EXPECT_EQ(*fs::read_file(p), "thing\n" + std::to_string(getpid()) + "\n");
}

TEST(Fs, PathHelpers) {
    EXPECT_EQ(fs::dirname("/a/b/c"), "/a/b");
    EXPECT_EQ(fs::dirname("c"), ".");
    EXPECT_EQ(fs::dirname("/c"), "/");
    EXPECT_EQ(fs::basename("/a/b/c"), "c");
    setenv("HOME", "/home/dev", 1);
    EXPECT_EQ(fs::expand_home("~/.aws-iot-device-client/x"), "/home/dev/.aws-iot-device-client/x");
    EXPECT_EQ(fs::expand_home("/etc/~x"), "/etc/~x");
    TempDir t;
    ASSERT_TRUE(fs::make_dirs(t.path + "/x/y/z", 0700));
    EXPECT_TRUE(fs::is_dir(t.path + "/x/y/z"));
    EXPECT_EQ(mode_of(t.path + "/x/y"), 0700u);
}
