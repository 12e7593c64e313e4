#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include "base/strings.hpp"
#include "jobs/handlers.hpp"

using namespace iot;
using namespace iot::jobs;

namespace {

using Argv = std::vector<std::string>;

// A handler directory laid out as the rules want it (0700, ours), in a scratch directory that
// also holds other directories for the path and PATH cases.
class JobsHandlers : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/iothandlers-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        root_ = tmpl;
        dir_ = root_ + "/jobs";
        ASSERT_EQ(mkdir(dir_.c_str(), 0700), 0);
        context_.handler_dir = dir_;
        context_.search_path = "/usr/bin:/bin";
        context_.daemon_uid = geteuid();
    }
    void TearDown() override { std::system(("rm -rf " + root_).c_str()); }

    std::string write_script(const std::string& path, mode_t mode) {
        std::string text = "#!/bin/sh\necho hi\n";
        FILE* f = fopen(path.c_str(), "w");
        EXPECT_NE(f, nullptr);
        if (f) {
            fwrite(text.data(), 1, text.size(), f);
            fclose(f);
        }
        EXPECT_EQ(chmod(path.c_str(), mode), 0);
        return path;
    }

    static Action handler(const std::string& name, std::optional<std::string> path, Argv args = {}) {
        Action a;
        a.name = "step";
        a.type = ActionType::RunHandler;
        a.handler = name;
        a.path = std::move(path);
        a.args = std::move(args);
        return a;
    }

    std::string error_of(const Action& a) {
        auto argv = resolve_argv(a, context_);
        return argv ? "resolved to " + join(*argv, " ") : argv.error();
    }

    std::string root_, dir_;
    ResolveContext context_;
};

}  // namespace

TEST_F(JobsHandlers, DefaultPathIsTheHandlerDirectory) {
    write_script(dir_ + "/install.sh", 0700);
    auto argv = resolve_argv(handler("install.sh", "default", {"lftp", "dos2unix"}), context_);
    ASSERT_TRUE(argv.ok()) << argv.error();
    EXPECT_EQ(*argv, (Argv{dir_ + "/install.sh", "", "lftp", "dos2unix"}));

    context_.handler_dir = dir_ + "/";  // as configured, with a slash
    argv = resolve_argv(handler("install.sh", "default"), context_);
    ASSERT_TRUE(argv.ok()) << argv.error();
    EXPECT_EQ((*argv)[0], dir_ + "/install.sh");
}

TEST_F(JobsHandlers, UserIsAlwaysArgvOne) {
    write_script(dir_ + "/h.sh", 0700);
    Action a = handler("h.sh", "default", {"x"});
    a.run_as_user = "nobody";
    auto argv = resolve_argv(a, context_);
    ASSERT_TRUE(argv.ok()) << argv.error();
    EXPECT_EQ(*argv, (Argv{dir_ + "/h.sh", "nobody", "x"}));

    a.run_as_user.clear();
    a.args.clear();
    argv = resolve_argv(a, context_);
    ASSERT_TRUE(argv.ok()) << argv.error();
    EXPECT_EQ(*argv, (Argv{dir_ + "/h.sh", ""}));  // still there, empty
}

TEST_F(JobsHandlers, MissingHandler) {
    EXPECT_EQ(error_of(handler("install.sh", "default")), "handler install.sh not found in " + dir_);
}

TEST_F(JobsHandlers, HandlerModeMustBe0700OrStricter) {
    std::string file = write_script(dir_ + "/install.sh", 0755);
    EXPECT_EQ(error_of(handler("install.sh", "default")),
              "handler install.sh: " + file + " has mode 0755, must be 0700 or stricter (chmod 700 " + file + ")");
    chmod(file.c_str(), 0500);
    EXPECT_EQ(error_of(handler("install.sh", "default")), "resolved to " + file + " ");
    chmod(file.c_str(), 0710);
    EXPECT_NE(error_of(handler("install.sh", "default")).find("has mode 0710, must be 0700"), std::string::npos);
}

TEST_F(JobsHandlers, DirectoryModeMustBe0700OrStricter) {
    write_script(dir_ + "/install.sh", 0700);
    chmod(dir_.c_str(), 0755);
    EXPECT_EQ(error_of(handler("install.sh", "default")),
              "handler install.sh: " + dir_ + " has mode 0755, must be 0700 or stricter (chmod 700 " + dir_ + ")");
    chmod(dir_.c_str(), 0500);
    EXPECT_EQ(error_of(handler("install.sh", "default")), "resolved to " + dir_ + "/install.sh ");
}

TEST_F(JobsHandlers, HandlerMustBeARegularFile) {
    ASSERT_EQ(mkdir((dir_ + "/sub.sh").c_str(), 0700), 0);
    EXPECT_EQ(error_of(handler("sub.sh", "default")), "handler sub.sh: " + dir_ + "/sub.sh is not a regular file");
}

TEST_F(JobsHandlers, WrongOwnerIsRefused) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to chown";
    std::string file = write_script(dir_ + "/install.sh", 0700);
    ASSERT_EQ(chown(file.c_str(), 65534, 65534), 0);
    EXPECT_EQ(error_of(handler("install.sh", "default")),
              "handler install.sh: " + file + " is owned by uid 65534, must be owned by root");
    // The daemon's own user is as good as root.
    context_.daemon_uid = 65534;
    EXPECT_EQ(error_of(handler("install.sh", "default")), "resolved to " + file + " ");
    context_.daemon_uid = 1000;
    EXPECT_EQ(error_of(handler("install.sh", "default")),
              "handler install.sh: " + file + " is owned by uid 65534, must be owned by uid 1000 or root");

    ASSERT_EQ(chown(file.c_str(), 0, 0), 0);
    ASSERT_EQ(chown(dir_.c_str(), 65534, 65534), 0);
    context_.daemon_uid = 0;
    EXPECT_EQ(error_of(handler("install.sh", "default")),
              "handler install.sh: " + dir_ + " is owned by uid 65534, must be owned by root");
}

TEST_F(JobsHandlers, PathTraversalNamesAreRefused) {
    write_script(root_ + "/outside.sh", 0700);
    for (const char* name : {"../outside.sh", "..", ".", "/bin/sh", "a/../../outside.sh"})
        EXPECT_EQ(error_of(handler(name, "default")), format("handler: \"%s\" is not a plain file name", name));
    EXPECT_EQ(error_of(handler("", "default")), "handler: the handler name is empty");
}

TEST_F(JobsHandlers, SymlinkLeavingTheDirectoryIsRefused) {
    std::string outside = write_script(root_ + "/outside.sh", 0700);
    ASSERT_EQ(symlink(outside.c_str(), (dir_ + "/escape.sh").c_str()), 0);
    EXPECT_EQ(error_of(handler("escape.sh", "default")),
              "handler escape.sh: " + dir_ + "/escape.sh leads to " + outside + ", outside " + dir_);

    // A link to another handler in the same directory is fine, and that file is checked.
    std::string real = write_script(dir_ + "/real.sh", 0700);
    ASSERT_EQ(symlink("real.sh", (dir_ + "/alias.sh").c_str()), 0);
    EXPECT_EQ(error_of(handler("alias.sh", "default")), "resolved to " + dir_ + "/alias.sh ");
    chmod(real.c_str(), 0777);
    EXPECT_NE(error_of(handler("alias.sh", "default")).find("has mode 0777"), std::string::npos);
}

TEST_F(JobsHandlers, ExplicitPathDirectory) {
    std::string other = root_ + "/other";
    ASSERT_EQ(mkdir(other.c_str(), 0755), 0);
    write_script(other + "/tool.sh", 0755);  // not the handler directory: not checked
    auto argv = resolve_argv(handler("tool.sh", other, {"a"}), context_);
    ASSERT_TRUE(argv.ok()) << argv.error();
    EXPECT_EQ(*argv, (Argv{other + "/tool.sh", "", "a"}));

    EXPECT_EQ(error_of(handler("none.sh", other)), "handler none.sh not found in " + other);
    EXPECT_EQ(error_of(handler("tool.sh", "relative/dir")), "handler tool.sh: path \"relative/dir\" is not absolute");
}

TEST_F(JobsHandlers, NamingTheHandlerDirectoryDoesNotDodgeItsChecks) {
    write_script(dir_ + "/install.sh", 0755);
    EXPECT_NE(error_of(handler("install.sh", dir_)).find("has mode 0755"), std::string::npos);
    EXPECT_NE(error_of(handler("install.sh", root_ + "/./jobs/")).find("has mode 0755"), std::string::npos);
    context_.search_path = dir_;
    EXPECT_NE(error_of(handler("install.sh", std::nullopt)).find("has mode 0755"), std::string::npos);
}

TEST_F(JobsHandlers, NoPathSearchesPath) {
    std::string bin = root_ + "/bin";
    ASSERT_EQ(mkdir(bin.c_str(), 0755), 0);
    write_script(bin + "/check.sh", 0755);
    context_.search_path = "/usr/bin:" + bin;
    auto argv = resolve_argv(handler("check.sh", std::nullopt, {"x"}), context_);
    ASSERT_TRUE(argv.ok()) << argv.error();
    EXPECT_EQ(*argv, (Argv{bin + "/check.sh", "", "x"}));

    EXPECT_EQ(error_of(handler("missing.sh", std::nullopt)),
              "handler missing.sh not found in PATH (/usr/bin:" + bin + ")");
}

TEST_F(JobsHandlers, RunCommandResolvesArgv0) {
    Action a;
    a.name = "cmd";
    a.type = ActionType::RunCommand;
    a.command = {"echo", "Hello, world"};
    a.run_as_user = "nobody";  // not in argv: the engine switches user itself
    auto argv = resolve_argv(a, context_);
    ASSERT_TRUE(argv.ok()) << argv.error();
    std::string echo = access("/usr/bin/echo", X_OK) == 0 ? "/usr/bin/echo" : "/bin/echo";  // PATH order
    EXPECT_EQ(*argv, (Argv{echo, "Hello, world"}));

    a.command = {"/opt/none/tool", "x"};  // a path is used as it is; spawn reports if it is missing
    argv = resolve_argv(a, context_);
    ASSERT_TRUE(argv.ok()) << argv.error();
    EXPECT_EQ(*argv, (Argv{"/opt/none/tool", "x"}));

    a.command = {"no-such-cmd-iotbox"};
    EXPECT_EQ(error_of(a), "command no-such-cmd-iotbox not found in PATH (/usr/bin:/bin)");
    a.command.clear();
    EXPECT_EQ(error_of(a), "the command is empty");
}

TEST_F(JobsHandlers, RebootIsNotResolvedHere) {
    Action a;
    a.name = "reboot";
    a.type = ActionType::Reboot;
    EXPECT_EQ(error_of(a), "reboot steps are run by the engine");
}
