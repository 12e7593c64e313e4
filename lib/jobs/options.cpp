#include <unistd.h>

#include "base/strings.hpp"
#include "config/config.hpp"
#include "fs/fs.hpp"
#include "jobs/feature.hpp"

namespace iot::jobs {

RunnerOptions runner_options(const config::Config& cfg) {
    RunnerOptions o;
    std::string handler_dir = cfg.path("jobs.handler-directory");
    while (handler_dir.size() > 1 && handler_dir.back() == '/') handler_dir.pop_back();
    o.resolve.handler_dir = handler_dir;
    // Like the Device Client, handlers without a "path" are also looked up in the handler
    // directory (it appended that directory to PATH), after the system directories.
    o.resolve.search_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:" + handler_dir;
    o.resolve.daemon_uid = geteuid();
    const char* home = getenv("HOME");
    o.env = {"PATH=" + o.resolve.search_path, std::string("HOME=") + (home && *home ? home : "/"), "LANG=C.UTF-8",
             "IOTBOX_THING_NAME=" + cfg.str("thing-name"), "IOTBOX_STATE_DIR=" + cfg.path("state-directory")};
    o.step_limit_ms = cfg.num("jobs.step-timeout") * 1000;
    o.kill_grace_ms = cfg.num("jobs.kill-grace") * 1000;
    auto reboot = split_command(cfg.str("jobs.reboot-command"));
    if (reboot && !reboot->empty()) o.reboot_command = reboot.take();
    return o;
}

FeatureOptions feature_options(const config::Config& cfg) {
    FeatureOptions o;
    o.thing = cfg.str("thing-name");
    o.state_file = cfg.path("state-directory") + "/jobs.json";
    o.runner = runner_options(cfg);
    return o;
}

}  // namespace iot::jobs
