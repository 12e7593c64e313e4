// Starting child processes the safe way for a daemon: no shell, every other descriptor closed, a
// clean environment, its own process group (so a timeout or cancel stops the whole tree), an
// optional switch of user and groups when running as root, and exec failures reported to the
// parent with their errno instead of a mystery exit code.
#pragma once
#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "base/fd.hpp"
#include "base/result.hpp"

namespace iot {

struct UserIdentity {
    std::string name;
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups;  // supplementary groups (getgrouplist)
    std::string home;
    std::string shell;
};
// Look up a user by name (or numeric id) in /etc/passwd, with the supplementary groups from
// /etc/group; the error names the user.
Result<UserIdentity> lookup_user(const std::string& name_or_id);
// Other files than /etc/passwd and /etc/group (tests, and images with another layout).
void set_user_database(const std::string& passwd_file, const std::string& group_file);

struct SpawnOptions {
    std::vector<std::string> argv;     // argv[0] is the program: a path, or a name searched in `search_path`
    std::vector<std::string> env;      // the whole environment, "NAME=value"
    std::string search_path;           // colon-separated directories for a bare argv[0]; empty: argv[0] must be a path
    std::string cwd;                   // empty: inherit
    std::optional<UserIdentity> user;  // switch to this user (setgroups, setgid, setuid) before exec; needs root
    bool new_process_group = true;
    bool capture_output = true;  // stdout and stderr to pipes (non-blocking, close-on-exec on our side);
                                 // false: the child inherits our stdout and stderr
};

struct ChildProcess {
    pid_t pid = -1;
    Fd out;  // read ends, when capture_output
    Fd err;
};

// fork + exec. The child never returns into our code: on any failure before exec it writes errno
// to a close-on-exec pipe and _exits(127), and spawn() reaps it and returns "cannot execute <prog>:
// <why>". A child that did exec is never reaped here (the event loop does that).
Result<ChildProcess> spawn(const SpawnOptions& options);

// Resolve a bare program name against a colon-separated search path (executable regular files
// only); empty result when not found.
std::string find_in_path(const std::string& name, const std::string& search_path);

// "exit status 3" / "killed by signal SIGKILL" from a wait status.
std::string describe_wait_status(int wait_status);
// "SIGTERM" for 15; "signal 64" for numbers without a name.
std::string signal_name(int sig);

}  // namespace iot
