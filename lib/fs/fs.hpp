// Files the way a device agent must treat them: written atomically (never half-written after a
// crash or power cut), private files 0600 from the first byte, permission rules of the form
// "this mode or stricter", and a lock file that keeps one daemon per config.
#pragma once
#include <sys/types.h>

#include <string>
#include <string_view>

#include "base/fd.hpp"
#include "base/result.hpp"

namespace iot::fs {

Result<std::string> read_file(const std::string& path, size_t max_bytes = 16 * 1024 * 1024);
bool exists(const std::string& path);
bool is_dir(const std::string& path);
std::string dirname(const std::string& path);
std::string basename(const std::string& path);
// "~/x" -> "$HOME/x"; anything else unchanged.
std::string expand_home(const std::string& path);

// Write `data` to `path` atomically: a temporary file in the same directory is written, fsynced,
// renamed over `path`, and the directory fsynced. `mode` is applied at creation (0600 for private
// files, so the data is never readable by others even for an instant).
Status write_atomic(const std::string& path, std::string_view data, mode_t mode = 0644);
// Create a new private file (0600 from the first byte; fails if it exists).
Result<Fd> create_private(const std::string& path);
// mkdir -p, each created directory with `mode`.
Status make_dirs(const std::string& path, mode_t mode = 0755);

// Steps of write_atomic, for crash tests: a hook called after each step can _exit() the process.
enum class WriteStep { TempWritten, TempSynced, Renamed, DirSynced };
using StepHook = void (*)(WriteStep);
void set_write_step_hook(StepHook hook);

// "mode or stricter": true if `actual` grants nothing that `allowed` does not.
inline bool mode_within(mode_t actual, mode_t allowed) { return ((actual & 07777) & ~allowed) == 0; }
// Check a file or directory against a rule; the error says which bits are too open and the fix:
// "/etc/iotbox/key.pem has mode 0644, must be 0600 or stricter (chmod 600 /etc/iotbox/key.pem)".
Status check_mode(const std::string& path, mode_t allowed);

// Exclusive lock for single-instance daemons. The file holds "<name>\n<pid>\n". A lock held by a
// live process fails with a message naming its pid; a stale file (no lock held) is taken over.
class LockFile {
public:
    static Result<LockFile> acquire(const std::string& path, const std::string& name);
    LockFile(LockFile&&) = default;
    LockFile& operator=(LockFile&&) = default;
    ~LockFile();
    const std::string& path() const { return path_; }

private:
    LockFile(std::string path, Fd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
    std::string path_;
    Fd fd_;
};

}  // namespace iot::fs
