#include "jobs/handlers.hpp"

#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "base/process.hpp"
#include "base/strings.hpp"
#include "fs/fs.hpp"

namespace iot::jobs {
namespace {

constexpr mode_t kHandlerMode = 0700;

std::string strip_trailing_slashes(std::string dir) {
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    return dir;
}

std::string join_path(const std::string& dir, const std::string& name) {
    return dir == "/" ? "/" + name : dir + "/" + name;
}

std::optional<std::string> real_path(const std::string& path) {
    char buf[PATH_MAX];
    if (!::realpath(path.c_str(), buf)) return std::nullopt;
    return std::string(buf);
}

Status check_owner(const struct stat& st, const std::string& path, uid_t daemon_uid) {
    if (st.st_uid == 0 || st.st_uid == daemon_uid) return {};
    if (daemon_uid == 0)
        return Error(
            format("%s is owned by uid %u, must be owned by root", path.c_str(), static_cast<unsigned>(st.st_uid)));
    return Error(format("%s is owned by uid %u, must be owned by uid %u or root", path.c_str(),
                        static_cast<unsigned>(st.st_uid), static_cast<unsigned>(daemon_uid)));
}

// The handler directory is where a job document can run anything by name, so the directory
// and the file must be writable by no one but us and root. Unlike the Device Client (exactly
// 700), a stricter mode such as 0500 passes.
Status check_handler_dir_file(const std::string& dir, const std::string& file, const ResolveContext& context) {
    struct stat st;
    if (::stat(dir.c_str(), &st) != 0) return Error(format("%s: %s", dir.c_str(), errno_text(errno).c_str()));
    if (!S_ISDIR(st.st_mode)) return Error(format("%s is not a directory", dir.c_str()));
    if (auto ok = fs::check_mode(dir, kHandlerMode); !ok) return ok;
    if (auto ok = check_owner(st, dir, context.daemon_uid); !ok) return ok;

    // A symlink may point to another handler in the directory, never out of it: the checks
    // below would otherwise apply to a file whose directory nobody checked.
    auto real_dir = real_path(dir);
    auto real_file = real_path(file);
    if (!real_dir) return Error(format("%s: %s", dir.c_str(), errno_text(errno).c_str()));
    if (!real_file) return Error(format("%s: %s", file.c_str(), errno_text(errno).c_str()));
    if (!starts_with(*real_file, *real_dir == "/" ? "/" : *real_dir + "/"))
        return Error(format("%s leads to %s, outside %s", file.c_str(), real_file->c_str(), dir.c_str()));

    if (::stat(real_file->c_str(), &st) != 0) return Error(format("%s: %s", file.c_str(), errno_text(errno).c_str()));
    if (!S_ISREG(st.st_mode)) return Error(format("%s is not a regular file", file.c_str()));
    if (auto ok = fs::check_mode(file, kHandlerMode); !ok) return ok;
    return check_owner(st, file, context.daemon_uid);
}

bool same_directory(const std::string& a, const std::string& b) {
    auto ra = real_path(a);
    auto rb = real_path(b);
    return ra && rb && *ra == *rb;
}

Result<std::string> resolve_handler(const Action& action, const ResolveContext& context) {
    const std::string& name = action.handler;
    if (auto ok = check_handler_name(name); !ok) return ok.err().wrap("handler");

    std::string dir;
    if (!action.path) {
        std::string found = find_in_path(name, context.search_path);
        if (found.empty())
            return Error(format("handler %s not found in PATH (%s)", name.c_str(), context.search_path.c_str()));
        dir = fs::dirname(found);
    } else {
        dir = *action.path == "default" ? context.handler_dir : *action.path;
        if (dir.empty()) return Error(format("handler %s: no handler directory configured", name.c_str()));
        // Relative to what? A daemon's working directory is "/" or wherever it was started.
        if (dir[0] != '/') return Error(format("handler %s: path \"%s\" is not absolute", name.c_str(), dir.c_str()));
        dir = strip_trailing_slashes(dir);
    }
    std::string file = join_path(dir, name);

    // Only the handler directory is checked, as in the Device Client; but a document must not
    // dodge the check by naming that directory as "path" or by having it found through PATH.
    bool in_handler_dir = (action.path && *action.path == "default") ||
                          (!context.handler_dir.empty() && same_directory(dir, context.handler_dir));
    struct stat st;
    if (::lstat(file.c_str(), &st) != 0) {
        if (errno == ENOENT) return Error(format("handler %s not found in %s", name.c_str(), dir.c_str()));
        return Error(format("handler %s: %s: %s", name.c_str(), file.c_str(), errno_text(errno).c_str()));
    }
    if (in_handler_dir) {
        if (auto ok = check_handler_dir_file(dir, file, context); !ok) return ok.err().wrap("handler " + name);
    } else if (::stat(file.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
        return Error(format("handler %s: %s is not a regular file", name.c_str(), file.c_str()));
    }
    return file;
}

}  // namespace

Result<std::vector<std::string>> resolve_argv(const Action& action, const ResolveContext& context) {
    switch (action.type) {
        case ActionType::RunHandler: {
            auto file = resolve_handler(action, context);
            if (!file) return file.err();
            std::vector<std::string> argv{file.take(), action.run_as_user};
            argv.insert(argv.end(), action.args.begin(), action.args.end());
            return argv;
        }
        case ActionType::RunCommand: {
            if (action.command.empty()) return Error("the command is empty");
            std::vector<std::string> argv = action.command;
            if (argv[0].find('/') == std::string::npos) {
                std::string found = find_in_path(argv[0], context.search_path);
                if (found.empty())
                    return Error(
                        format("command %s not found in PATH (%s)", argv[0].c_str(), context.search_path.c_str()));
                argv[0] = found;
            }
            return argv;
        }
        case ActionType::Reboot:
            return Error("reboot steps are run by the engine");
    }
    return Error("unknown action type");
}

}  // namespace iot::jobs
