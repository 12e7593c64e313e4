#include "base/process.hpp"

#include <errno.h>
#include <cstdio>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/strings.hpp"

namespace iot {
namespace {

// What the child was doing when it failed, sent with errno through the close-on-exec pipe so
// the parent can say more than "exit status 127".
enum class ChildStage : int { Exec, Stdio, ProcessGroup, Setgroups, Setgid, Setuid, Chdir };

struct ChildFailure {
    ChildStage stage;
    int err;
};

// A descriptor at 0..2 would be overwritten by the child's own dup2 onto stdin/stdout/stderr
// before it is used (the parent may run with a standard stream closed), so keep ours above.
Result<Fd> above_stdio(Fd fd) {
    if (fd.get() > 2) return fd;
    int moved = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 3);
    if (moved < 0) return Error(format("fcntl: %s", errno_text(errno).c_str()));
    return Fd(moved);
}

struct Pipe {
    Fd read, write;
};

Result<Pipe> make_pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return Error(format("pipe: %s", errno_text(errno).c_str()));
    Fd r(fds[0]), w(fds[1]);
    auto rr = above_stdio(std::move(r));
    if (!rr) return rr.err();
    auto ww = above_stdio(std::move(w));
    if (!ww) return ww.err();
    return Pipe{rr.take(), ww.take()};
}

// Everything the child touches is prepared here, before fork: after fork only async-signal-safe
// calls are allowed (another thread may have held the malloc lock at the moment of fork).
struct ChildPlan {
    const char* path = nullptr;
    std::vector<char*> argv;
    std::vector<char*> envp;
    const char* cwd = nullptr;
    const UserIdentity* user = nullptr;
    bool new_process_group = true;
    int stdin_fd = -1;
    int stdout_fd = -1;  // -1: inherit
    int stderr_fd = -1;
    int report_fd = -1;
    int fd_limit = 1024;
    sigset_t empty_mask;
};

std::vector<char*> c_array(const std::vector<std::string>& strings) {
    std::vector<char*> out;
    out.reserve(strings.size() + 1);
    for (const std::string& s : strings) out.push_back(const_cast<char*>(s.c_str()));
    out.push_back(nullptr);
    return out;
}

[[noreturn]] void child_fail(const ChildPlan& plan, ChildStage stage) {
    ChildFailure failure{stage, errno};
    ssize_t ignored = ::write(plan.report_fd, &failure, sizeof failure);
    (void)ignored;
    _exit(127);
}

void close_other_fds(const ChildPlan& plan) {
    // The report pipe must stay open until exec (it is close-on-exec); everything else above
    // stderr goes, whether or not the parent remembered O_CLOEXEC.
    const int keep = plan.report_fd;
#ifdef SYS_close_range
    // keep is above stderr, so the first range is empty only when keep is 3.
    if ((keep == 3 || ::syscall(SYS_close_range, 3U, static_cast<unsigned>(keep - 1), 0U) == 0) &&
        ::syscall(SYS_close_range, static_cast<unsigned>(keep + 1), ~0U, 0U) == 0)
        return;
#endif
    // Kernels before 5.9: close every possible descriptor up to the limit read before fork.
    for (int fd = 3; fd < plan.fd_limit; ++fd)
        if (fd != keep) ::close(fd);
}

[[noreturn]] void run_child(const ChildPlan& plan) {
    // Dispositions first, then the mask: a signal unblocked while the parent's handler is still
    // installed would run the parent's code in the child. Ignored signals would also survive
    // exec, and the daemon blocks the signals its signalfd reads.
    // Straight to the kernel: glibc's sigaction refuses the two signals it keeps for itself (32
    // and 33), and a parent that inherited them ignored would pass that on. An all-zero kernel
    // sigaction is SIG_DFL with no flags and an empty mask on every architecture's layout.
    unsigned long dfl[8] = {};
    for (int sig = 1; sig < _NSIG; ++sig)
        if (sig != SIGKILL && sig != SIGSTOP) ::syscall(SYS_rt_sigaction, sig, dfl, nullptr, _NSIG / 8);
    ::sigprocmask(SIG_SETMASK, &plan.empty_mask, nullptr);

    if (plan.new_process_group && ::setpgid(0, 0) != 0) child_fail(plan, ChildStage::ProcessGroup);

    if (::dup2(plan.stdin_fd, 0) < 0) child_fail(plan, ChildStage::Stdio);
    if (plan.stdout_fd >= 0 && ::dup2(plan.stdout_fd, 1) < 0) child_fail(plan, ChildStage::Stdio);
    if (plan.stderr_fd >= 0 && ::dup2(plan.stderr_fd, 2) < 0) child_fail(plan, ChildStage::Stdio);
    close_other_fds(plan);

    if (plan.user) {
        // Groups before gid before uid: once the uid is dropped the others can no longer change.
        if (::setgroups(plan.user->groups.size(), plan.user->groups.data()) != 0)
            child_fail(plan, ChildStage::Setgroups);
        if (::setgid(plan.user->gid) != 0) child_fail(plan, ChildStage::Setgid);
        if (::setuid(plan.user->uid) != 0) child_fail(plan, ChildStage::Setuid);
    }
    if (plan.cwd && ::chdir(plan.cwd) != 0) child_fail(plan, ChildStage::Chdir);

    ::execve(plan.path, plan.argv.data(), plan.envp.data());
    child_fail(plan, ChildStage::Exec);
}

std::string failure_text(const ChildFailure& f, const SpawnOptions& options) {
    std::string why = errno_text(f.err);
    switch (f.stage) {
        case ChildStage::Exec:
            return why;
        case ChildStage::Stdio:
            return "cannot set up stdin/stdout/stderr: " + why;
        case ChildStage::ProcessGroup:
            return "cannot create a process group: " + why;
        case ChildStage::Setgroups:
        case ChildStage::Setgid:
        case ChildStage::Setuid: {
            const char* call = f.stage == ChildStage::Setgroups ? "setgroups"
                               : f.stage == ChildStage::Setgid  ? "setgid"
                                                                : "setuid";
            return format("cannot switch to user %s (%s): %s", options.user->name.c_str(), call, why.c_str());
        }
        case ChildStage::Chdir:
            return format("cannot change directory to %s: %s", options.cwd.c_str(), why.c_str());
    }
    return why;
}

bool is_executable_file(const std::string& path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

bool all_digits(const std::string& s) {
    if (s.empty()) return false;
    for (char c : s)
        if (c < '0' || c > '9') return false;
    return true;
}

}  // namespace

std::string find_in_path(const std::string& name, const std::string& search_path) {
    if (name.empty() || name.find('/') != std::string::npos) return {};
    for (const std::string& dir : split(search_path, ':')) {
        // An empty entry means "." to a shell; a daemon's current directory is no place to find
        // programs, so it is skipped.
        if (dir.empty()) continue;
        std::string candidate = dir.back() == '/' ? dir + name : dir + "/" + name;
        if (is_executable_file(candidate)) return candidate;
    }
    return {};
}

// /etc/passwd and /etc/group are read directly rather than through getpwnam: in a static glibc
// binary NSS may dlopen the device's libnss_*.so modules from another glibc (nsswitch.conf with
// "systemd" or "sss"), which crashes. Devices keep their users in these files.
namespace {
std::string g_passwd_file = "/etc/passwd";
std::string g_group_file = "/etc/group";

Result<std::vector<std::vector<std::string>>> read_colon_file(const std::string& path) {
    FILE* f = fopen(path.c_str(), "re");
    if (!f) return Error(format("%s: %s", path.c_str(), errno_text(errno).c_str()));
    std::string text;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
    fclose(f);
    std::vector<std::vector<std::string>> rows;
    for (const auto& line : split(text, '\n')) {
        if (line.empty() || line[0] == '#') continue;
        rows.push_back(split(line, ':'));
    }
    return rows;
}
}  // namespace

void set_user_database(const std::string& passwd_file, const std::string& group_file) {
    g_passwd_file = passwd_file;
    g_group_file = group_file;
}

Result<UserIdentity> lookup_user(const std::string& name_or_id) {
    if (name_or_id.empty()) return Error("empty user name");
    auto passwd = read_colon_file(g_passwd_file);
    if (!passwd) return Error(format("cannot look up user '%s': %s", name_or_id.c_str(), passwd.error().c_str()));
    bool by_id = all_digits(name_or_id);
    const std::vector<std::string>* entry = nullptr;
    for (const auto& row : *passwd) {
        if (row.size() < 7) continue;
        if (by_id ? row[2] == name_or_id : row[0] == name_or_id) {
            entry = &row;
            break;
        }
    }
    if (!entry) return Error(format("no such user '%s'", name_or_id.c_str()));
    auto uid = parse_int((*entry)[2]);
    auto gid = parse_int((*entry)[3]);
    if (!uid || !gid || *uid < 0 || *gid < 0)
        return Error(format("user '%s': bad uid or gid in %s", name_or_id.c_str(), g_passwd_file.c_str()));
    UserIdentity user;
    user.name = (*entry)[0];
    user.uid = static_cast<uid_t>(*uid);
    user.gid = static_cast<gid_t>(*gid);
    user.home = (*entry)[5];
    user.shell = (*entry)[6];
    user.groups.push_back(user.gid);
    // Supplementary groups: every group that lists the user as a member. A missing group file
    // only means no supplementary groups.
    if (auto groups = read_colon_file(g_group_file)) {
        for (const auto& row : *groups) {
            if (row.size() < 4) continue;
            auto g = parse_int(row[2]);
            if (!g || *g < 0 || static_cast<gid_t>(*g) == user.gid) continue;
            for (const auto& member : split(row[3], ','))
                if (trim(member) == user.name) user.groups.push_back(static_cast<gid_t>(*g));
        }
    }
    return user;
}

Result<ChildProcess> spawn(const SpawnOptions& options) {
    if (options.argv.empty() || options.argv[0].empty()) return Error("cannot execute: no program given");
    const std::string& program = options.argv[0];
    std::string path = program;
    if (program.find('/') == std::string::npos) {
        if (options.search_path.empty())
            return Error(format("cannot execute %s: not a path and no PATH to search", program.c_str()));
        path = find_in_path(program, options.search_path);
        if (path.empty())
            return Error(
                format("cannot execute %s: not found in PATH (%s)", program.c_str(), options.search_path.c_str()));
    }
    auto fail = [&](const char* what) {
        return Error(format("cannot execute %s: %s: %s", path.c_str(), what, errno_text(errno).c_str()));
    };

    Fd dev_null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!dev_null.valid()) return fail("open /dev/null");
    auto stdin_fd = above_stdio(std::move(dev_null));
    if (!stdin_fd) return stdin_fd.err().wrap("cannot execute " + path);
    Pipe out, err;
    if (options.capture_output) {
        auto o = make_pipe();
        if (!o) return o.err().wrap("cannot execute " + path);
        auto e = make_pipe();
        if (!e) return e.err().wrap("cannot execute " + path);
        out = o.take();
        err = e.take();
    }
    auto report = make_pipe();
    if (!report) return report.err().wrap("cannot execute " + path);

    ChildPlan plan;
    plan.path = path.c_str();
    plan.argv = c_array(options.argv);
    plan.envp = c_array(options.env);
    plan.cwd = options.cwd.empty() ? nullptr : options.cwd.c_str();
    plan.user = options.user ? &*options.user : nullptr;
    plan.new_process_group = options.new_process_group;
    plan.stdin_fd = stdin_fd->get();
    plan.stdout_fd = out.write.get();
    plan.stderr_fd = err.write.get();
    plan.report_fd = report->write.get();
    struct rlimit rl;
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (1u << 20))
        plan.fd_limit = static_cast<int>(rl.rlim_cur);
    sigemptyset(&plan.empty_mask);

    pid_t pid = ::fork();
    if (pid < 0) return fail("fork");
    if (pid == 0) run_child(plan);

    // Also from this side, so that killing the group right after spawn() returns cannot miss a
    // child that has not run yet. EACCES (it already exec'd) is fine: it did it itself.
    if (options.new_process_group) ::setpgid(pid, pid);

    out.write.reset();
    err.write.reset();
    report->write.reset();
    ChildFailure failure;
    ssize_t n;
    do {
        n = ::read(report->read.get(), &failure, sizeof failure);
    } while (n < 0 && errno == EINTR);
    if (n == static_cast<ssize_t>(sizeof failure)) {
        // The child never ran the program, so no one else knows its pid: reap it here.
        while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
        }
        return Error(format("cannot execute %s: %s", path.c_str(), failure_text(failure, options).c_str()));
    }

    ChildProcess child;
    child.pid = pid;
    if (options.capture_output) {
        for (Fd* fd : {&out.read, &err.read}) {
            int flags = ::fcntl(fd->get(), F_GETFL);
            if (flags >= 0) ::fcntl(fd->get(), F_SETFL, flags | O_NONBLOCK);
        }
        child.out = std::move(out.read);
        child.err = std::move(err.read);
    }
    return child;
}

std::string signal_name(int sig) {
    switch (sig) {
        case SIGHUP:
            return "SIGHUP";
        case SIGINT:
            return "SIGINT";
        case SIGQUIT:
            return "SIGQUIT";
        case SIGILL:
            return "SIGILL";
        case SIGTRAP:
            return "SIGTRAP";
        case SIGABRT:
            return "SIGABRT";
        case SIGBUS:
            return "SIGBUS";
        case SIGFPE:
            return "SIGFPE";
        case SIGKILL:
            return "SIGKILL";
        case SIGUSR1:
            return "SIGUSR1";
        case SIGSEGV:
            return "SIGSEGV";
        case SIGUSR2:
            return "SIGUSR2";
        case SIGPIPE:
            return "SIGPIPE";
        case SIGALRM:
            return "SIGALRM";
        case SIGTERM:
            return "SIGTERM";
        case SIGCHLD:
            return "SIGCHLD";
        case SIGCONT:
            return "SIGCONT";
        case SIGSTOP:
            return "SIGSTOP";
        case SIGTSTP:
            return "SIGTSTP";
        case SIGTTIN:
            return "SIGTTIN";
        case SIGTTOU:
            return "SIGTTOU";
        case SIGURG:
            return "SIGURG";
        case SIGXCPU:
            return "SIGXCPU";
        case SIGXFSZ:
            return "SIGXFSZ";
        case SIGVTALRM:
            return "SIGVTALRM";
        case SIGPROF:
            return "SIGPROF";
        case SIGWINCH:
            return "SIGWINCH";
        case SIGIO:
            return "SIGIO";
        case SIGPWR:
            return "SIGPWR";
        case SIGSYS:
            return "SIGSYS";
        default:
            return format("signal %d", sig);
    }
}

std::string describe_wait_status(int wait_status) {
    if (WIFEXITED(wait_status)) return format("exit status %d", WEXITSTATUS(wait_status));
    if (WIFSIGNALED(wait_status)) return "killed by signal " + signal_name(WTERMSIG(wait_status));
    if (WIFSTOPPED(wait_status)) return "stopped by signal " + signal_name(WSTOPSIG(wait_status));
    return format("unknown wait status 0x%x", static_cast<unsigned>(wait_status));
}

}  // namespace iot
