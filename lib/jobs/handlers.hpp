// Finding and checking the program a step runs: the handler directory rules the Device Client
// documents (handler and directory 700 or stricter, owned by us or root), PATH for bare names.
#pragma once
#include <sys/types.h>

#include <string>
#include <vector>

#include "base/result.hpp"
#include "jobs/document.hpp"

namespace iot::jobs {

struct ResolveContext {
    std::string handler_dir;  // jobs.handler-directory, expanded
    std::string search_path;  // PATH used for handlers without "path" and for runCommand
    uid_t daemon_uid = 0;     // files must be owned by this user or root
};

// The argv to execute for `action`: for RunHandler [<dir>/<handler>, <runAsUser>, args...] — the
// user is always argv[1], as the Device Client passes it, so its handlers work unchanged; for
// RunCommand the tokens with argv[0] resolved through search_path. Errors are the reason that
// goes into statusDetails ("handler install.sh: /etc/iotbox/jobs/install.sh has mode 0755, must
// be 0700 or stricter"). An explicit "path" must be absolute. The handler directory rules apply to
// "default" and to any path or PATH entry that is the handler directory.
Result<std::vector<std::string>> resolve_argv(const Action& action, const ResolveContext& context);

}  // namespace iot::jobs
