// Job documents: the Device Client's two schemas (the old one with "operation", the new one with
// "version" and "steps"), parsed into one plan and validated with errors that say what is wrong
// and where ("steps[1].action.type: expected \"runHandler\", \"runCommand\" or \"reboot\", got
// \"runScript\""). "conditions" is accepted and ignored (the Device Client never evaluates it);
// unknown fields are ignored; a JSON null counts as an absent field.
#pragma once
#include <cjson/cJSON.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.hpp"

namespace iot::jobs {

enum class ActionType {
    RunHandler,  // a handler script from the handler directory, another directory or PATH
    RunCommand,  // a command line given as the Device Client's comma-separated string
    Reboot,      // iotbox extension: reboot, and complete the step when the device is back
};

struct Action {
    std::string name;
    ActionType type = ActionType::RunHandler;
    // RunHandler
    std::string handler;
    std::vector<std::string> args;
    // "default" (the configured handler directory), a directory, or unset (search PATH).
    std::optional<std::string> path;
    // RunCommand: the split tokens ("echo,Hello\\, world" -> {"echo", "Hello, world"}).
    std::vector<std::string> command;
    std::string run_as_user;  // "" = the daemon's user
    bool ignore_step_failure = false;
    // Device Client "allowStdErr": the number of stderr lines tolerated; unset = stderr never
    // fails a step. (Semantics written in README.)
    std::optional<long long> allow_stderr;
    // iotbox extension: local limit for this step in seconds (0 = none).
    long long timeout_s = 0;
};

struct Document {
    std::string version;  // "0.0" for the old schema, as the Device Client does internally
    bool old_schema = false;
    bool include_stdout = false;
    std::vector<Action> steps;
    std::optional<Action> final_step;
};

// Parse a job document (the JSON object under execution.jobDocument). Booleans are accepted as
// JSON booleans or the strings "true"/"false" (any case), integers as numbers or numeric strings.
// The text form is limited to 32768 bytes, the AWS IoT Jobs limit.
Result<Document> parse_document(const cJSON* document);
Result<Document> parse_document(std::string_view json_text);

// The Device Client's runCommand splitting: split on ',', "\\," is a literal comma, each token
// trimmed; the first token may not contain whitespace. An empty command and empty tokens (",,",
// a trailing comma) are errors. Errors say why.
Result<std::vector<std::string>> split_command(std::string_view command);

// A handler name must be a plain file name: no '/', not "." or "..", no "..", not empty.
Status check_handler_name(std::string_view handler);

}  // namespace iot::jobs
