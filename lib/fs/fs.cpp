#include "fs/fs.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "base/strings.hpp"
#include "base/time.hpp"

namespace iot::fs {
namespace {
StepHook g_hook = nullptr;
void step(WriteStep s) {
    if (g_hook) g_hook(s);
}

Status write_all(int fd, std::string_view data, const std::string& path) {
    const char* p = data.data();
    size_t left = data.size();
    while (left > 0) {
        ssize_t n = ::write(fd, p, left);
        if (n < 0) {
            if (errno == EINTR) continue;
            return Error(format("write %s: %s", path.c_str(), errno_text(errno).c_str()));
        }
        p += n;
        left -= static_cast<size_t>(n);
    }
    return {};
}
}  // namespace

void set_write_step_hook(StepHook hook) { g_hook = hook; }

Result<std::string> read_file(const std::string& path, size_t max_bytes) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return Error(format("cannot read %s: %s", path.c_str(), errno_text(errno).c_str()));
    std::string out;
    char buf[8192];
    for (;;) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            return Error(format("cannot read %s: %s", path.c_str(), errno_text(errno).c_str()));
        }
        if (n == 0) break;
        out.append(buf, static_cast<size_t>(n));
        if (out.size() > max_bytes)
            return Error(format("%s is larger than %zu bytes", path.c_str(), max_bytes));
    }
    return out;
}

bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

bool is_dir(const std::string& path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string dirname(const std::string& path) {
    size_t pos = path.find_last_of('/');
    if (pos == std::string::npos) return ".";
    if (pos == 0) return "/";
    return path.substr(0, pos);
}

std::string basename(const std::string& path) {
    size_t pos = path.find_last_of('/');
    return pos == std::string::npos ? path : path.substr(pos + 1);
}

std::string expand_home(const std::string& path) {
    if (path == "~" || starts_with(path, "~/")) {
        const char* home = getenv("HOME");
        if (home && *home) return std::string(home) + path.substr(1);
    }
    return path;
}

Status write_atomic(const std::string& path, std::string_view data, mode_t mode) {
    std::string dir = dirname(path);
    std::string tmp = format("%s/.%s.tmp-%d-%s", dir.c_str(), basename(path).c_str(), getpid(),
                             random_token(6).c_str());
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
    if (!fd.valid()) return Error(format("cannot create %s: %s", tmp.c_str(), errno_text(errno).c_str()));
    // A umask can only make the file stricter; widen back to what a public file asked for.
    if ((mode & 077) && ::fchmod(fd.get(), mode) != 0) {
        ::unlink(tmp.c_str());
        return Error(format("chmod %s: %s", tmp.c_str(), errno_text(errno).c_str()));
    }
    Status st = write_all(fd.get(), data, tmp);
    if (!st) {
        ::unlink(tmp.c_str());
        return st;
    }
    step(WriteStep::TempWritten);
    if (::fsync(fd.get()) != 0) {
        int e = errno;
        ::unlink(tmp.c_str());
        return Error(format("fsync %s: %s", tmp.c_str(), errno_text(e).c_str()));
    }
    fd.reset();
    step(WriteStep::TempSynced);
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        int e = errno;
        ::unlink(tmp.c_str());
        return Error(format("rename %s to %s: %s", tmp.c_str(), path.c_str(), errno_text(e).c_str()));
    }
    step(WriteStep::Renamed);
    Fd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dfd.valid()) ::fsync(dfd.get());
    step(WriteStep::DirSynced);
    return {};
}

Result<Fd> create_private(const std::string& path) {
    Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd.valid()) return Error(format("cannot create %s: %s", path.c_str(), errno_text(errno).c_str()));
    return fd;
}

Status make_dirs(const std::string& path, mode_t mode) {
    if (path.empty() || is_dir(path)) return {};
    std::string parent = dirname(path);
    if (parent != path) {
        Status st = make_dirs(parent, mode);
        if (!st) return st;
    }
    if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST)
        return Error(format("cannot create directory %s: %s", path.c_str(), errno_text(errno).c_str()));
    return {};
}

Status check_mode(const std::string& path, mode_t allowed) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return Error(format("%s: %s", path.c_str(), errno_text(errno).c_str()));
    mode_t actual = st.st_mode & 07777;
    if (mode_within(actual, allowed)) return {};
    return Error(format("%s has mode %04o, must be %04o or stricter (chmod %o %s)", path.c_str(),
                        static_cast<unsigned>(actual), static_cast<unsigned>(allowed),
                        static_cast<unsigned>(allowed), path.c_str()));
}

Result<LockFile> LockFile::acquire(const std::string& path, const std::string& name) {
    Fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (!fd.valid()) return Error(format("cannot open lock file %s: %s", path.c_str(), errno_text(errno).c_str()));
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK)
            return Error(format("cannot lock %s: %s", path.c_str(), errno_text(errno).c_str()));
        auto content = read_file(path, 4096);
        std::string holder = "another process";
        if (content) {
            auto lines = split(*content, '\n');
            if (lines.size() >= 2 && parse_int(lines[1])) holder = "pid " + std::string(trim(lines[1]));
        }
        return Error(format("already running: %s holds %s", holder.c_str(), path.c_str()));
    }
    // We hold the lock: whatever the file said before was stale.
    std::string content = format("%s\n%d\n", name.c_str(), getpid());
    if (::ftruncate(fd.get(), 0) != 0 || ::pwrite(fd.get(), content.data(), content.size(), 0) < 0)
        return Error(format("cannot write lock file %s: %s", path.c_str(), errno_text(errno).c_str()));
    return LockFile(path, std::move(fd));
}

LockFile::~LockFile() {
    if (fd_.valid()) ::unlink(path_.c_str());
}

}  // namespace iot::fs
