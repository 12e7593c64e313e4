#include "jobs/document.hpp"

#include <cmath>

#include "base/strings.hpp"
#include "json/json.hpp"

namespace iot::jobs {
namespace {

// AWS IoT Jobs refuses larger documents, so anything bigger did not come from the cloud.
constexpr size_t kMaxDocumentBytes = 32768;

// What was found, for "expected X, got Y": strings and scalars by value (so a typo shows
// itself), containers by kind.
std::string describe(const cJSON* item) {
    if (cJSON_IsString(item)) {
        std::string_view s = item->valuestring;
        if (s.size() > 64) return json::quote(s.substr(0, 64)) + "...";
        return json::quote(s);
    }
    if (cJSON_IsNumber(item) || cJSON_IsBool(item) || cJSON_IsNull(item)) return json::print(item);
    return json::type_name(item);
}

Error expected(const std::string& where, const char* what, const cJSON* found) {
    return Error(format("%s: expected %s, got %s", where.c_str(), what, describe(found).c_str()));
}

// null is treated like an absent key: generators of job documents often emit it for "unset".
const cJSON* field(const cJSON* object, const char* key) {
    const cJSON* v = json::get(object, key);
    return cJSON_IsNull(v) ? nullptr : v;
}

Result<std::string> required_string(const cJSON* object, const char* key, const std::string& where) {
    const cJSON* v = field(object, key);
    if (!cJSON_IsString(v) || v->valuestring[0] == '\0') return expected(where, "a non-empty string", v);
    return std::string(v->valuestring);
}

Result<std::optional<std::string>> optional_string(const cJSON* object, const char* key, const std::string& where) {
    const cJSON* v = field(object, key);
    if (!v) return std::optional<std::string>();
    if (!cJSON_IsString(v)) return expected(where, "a string", v);
    return std::optional<std::string>(v->valuestring);
}

// The Device Client reads these as the strings "true"/"false" and ignores JSON booleans, while
// its README shows booleans; both are accepted here.
Result<std::optional<bool>> optional_bool(const cJSON* object, const char* key, const std::string& where) {
    const cJSON* v = field(object, key);
    if (!v) return std::optional<bool>();
    if (cJSON_IsBool(v)) return std::optional<bool>(cJSON_IsTrue(v));
    if (cJSON_IsString(v)) {
        if (iequals(v->valuestring, "true")) return std::optional<bool>(true);
        if (iequals(v->valuestring, "false")) return std::optional<bool>(false);
    }
    return expected(where, "true or false", v);
}

Result<std::optional<long long>> optional_count(const cJSON* object, const char* key, const std::string& where) {
    const cJSON* v = field(object, key);
    if (!v) return std::optional<long long>();
    std::optional<long long> n;
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (std::floor(d) == d && std::fabs(d) <= 9007199254740992.0) n = static_cast<long long>(d);
    } else if (cJSON_IsString(v)) {
        n = parse_int(v->valuestring);
    }
    if (!n || *n < 0) return expected(where, "a non-negative integer", v);
    return n;
}

Result<std::vector<std::string>> string_array(const cJSON* object, const char* key, const std::string& where) {
    const cJSON* v = field(object, key);
    std::vector<std::string> out;
    if (!v) return out;
    if (!cJSON_IsArray(v)) return expected(where, "an array of strings", v);
    int i = 0;
    for (const cJSON* e = v->child; e; e = e->next, ++i) {
        if (!cJSON_IsString(e)) return expected(format("%s[%d]", where.c_str(), i), "a string", e);
        out.emplace_back(e->valuestring);
    }
    return out;
}

// The fields a step shares with the old schema's single step: allowStdErr, and the handler's
// args and path.
Status parse_handler_input(const cJSON* input, const std::string& where, const char* handler_key, Action& action) {
    auto handler = required_string(input, handler_key, where + handler_key);
    if (!handler) return handler.err();
    if (auto ok = check_handler_name(*handler); !ok) return ok.err().wrap(where + handler_key);
    action.handler = handler.take();
    auto args = string_array(input, "args", where + "args");
    if (!args) return args.err();
    action.args = args.take();
    auto path = optional_string(input, "path", where + "path");
    if (!path) return path.err();
    // The Device Client treats an empty path like a missing one (search PATH).
    if (*path && !(*path)->empty()) action.path = path.take();
    return {};
}

Result<Action> parse_step(const cJSON* step, const std::string& where) {
    if (!cJSON_IsObject(step)) return expected(where, "an object with an \"action\"", step);
    const std::string at = where + ".action";
    const cJSON* a = field(step, "action");
    if (!cJSON_IsObject(a)) return expected(at, "an object", a);

    Action action;
    auto name = required_string(a, "name", at + ".name");
    if (!name) return name.err();
    action.name = name.take();

    const cJSON* type = field(a, "type");
    std::string_view type_text = cJSON_IsString(type) ? type->valuestring : "";
    if (type_text == "runHandler")
        action.type = ActionType::RunHandler;
    else if (type_text == "runCommand")
        action.type = ActionType::RunCommand;
    else if (type_text == "reboot")
        action.type = ActionType::Reboot;
    else
        return expected(at + ".type", "\"runHandler\", \"runCommand\" or \"reboot\"", type);

    if (action.type != ActionType::Reboot) {
        const cJSON* input = field(a, "input");
        if (!cJSON_IsObject(input)) return expected(at + ".input", "an object", input);
        if (action.type == ActionType::RunHandler) {
            if (auto ok = parse_handler_input(input, at + ".input.", "handler", action); !ok) return ok.err();
        } else {
            const cJSON* command = field(input, "command");
            if (!cJSON_IsString(command)) return expected(at + ".input.command", "a string", command);
            auto tokens = split_command(command->valuestring);
            if (!tokens) return tokens.err().wrap(at + ".input.command");
            action.command = tokens.take();
        }
    }

    auto user = optional_string(a, "runAsUser", at + ".runAsUser");
    if (!user) return user.err();
    action.run_as_user = user->value_or("");
    auto ignore = optional_bool(a, "ignoreStepFailure", at + ".ignoreStepFailure");
    if (!ignore) return ignore.err();
    action.ignore_step_failure = ignore->value_or(false);
    auto allow = optional_count(a, "allowStdErr", at + ".allowStdErr");
    if (!allow) return allow.err();
    action.allow_stderr = *allow;
    auto timeout = optional_count(a, "timeoutSeconds", at + ".timeoutSeconds");
    if (!timeout) return timeout.err();
    action.timeout_s = timeout->value_or(0);
    return action;
}

// Old schema: {"operation": "install-packages.sh", "args": [...], "path": ..., ...} is one
// runHandler step named after its operation.
Result<Document> parse_old_schema(const cJSON* root) {
    Document doc;
    doc.version = "0.0";
    doc.old_schema = true;
    Action action;
    action.type = ActionType::RunHandler;
    if (!field(root, "operation"))
        return Error("the job document has neither \"version\" (new schema) nor \"operation\" (old schema)");
    if (auto ok = parse_handler_input(root, "", "operation", action); !ok) return ok.err();
    action.name = action.handler;
    auto allow = optional_count(root, "allowStdErr", "allowStdErr");
    if (!allow) return allow.err();
    action.allow_stderr = *allow;
    auto include = optional_bool(root, "includeStdOut", "includeStdOut");
    if (!include) return include.err();
    doc.include_stdout = include->value_or(false);
    doc.steps.push_back(std::move(action));
    return doc;
}

}  // namespace

Status check_handler_name(std::string_view handler) {
    if (handler.empty()) return Error("the handler name is empty");
    // ".." anywhere, not just as a whole component: no legitimate handler needs it and it keeps
    // the rule obvious.
    if (handler.find('/') != std::string_view::npos || handler == "." || handler.find("..") != std::string_view::npos)
        return Error(format("%s is not a plain file name", json::quote(handler).c_str()));
    return {};
}

Result<std::vector<std::string>> split_command(std::string_view command) {
    // Split on unescaped commas; "\," is a comma inside a token and every other backslash is
    // kept as it is (the Device Client's rule, so its documents mean the same here).
    std::vector<std::string> raw(1);
    for (size_t i = 0; i < command.size(); ++i) {
        char c = command[i];
        if (c == '\\' && i + 1 < command.size() && command[i + 1] == ',') {
            raw.back() += ',';
            ++i;
        } else if (c == ',') {
            raw.emplace_back();
        } else {
            raw.back() += c;
        }
    }
    if (raw.size() == 1 && trim(raw[0]).empty()) return Error("the command is empty");
    std::vector<std::string> tokens;
    for (size_t i = 0; i < raw.size(); ++i) {
        std::string_view token = trim(raw[i]);
        // An empty token is a typo (",," or a trailing comma); running the command with an empty
        // argument, or silently without it, would both be guesses.
        if (token.empty())
            return Error(format("argument %zu is empty (two commas in a row or a trailing comma?)", i + 1));
        tokens.emplace_back(token);
    }
    if (tokens[0].find_first_of(" \t\r\n") != std::string::npos)
        return Error(format("the program name %s contains whitespace (arguments are separated by commas)",
                            json::quote(tokens[0]).c_str()));
    return tokens;
}

Result<Document> parse_document(const cJSON* root) {
    if (!cJSON_IsObject(root)) return Error("the job document is not a JSON object");
    if (!json::get(root, "version")) return parse_old_schema(root);

    Document doc;
    auto version = required_string(root, "version", "version");
    if (!version) return version.err();
    doc.version = version.take();
    auto include = optional_bool(root, "includeStdOut", "includeStdOut");
    if (!include) return include.err();
    doc.include_stdout = include->value_or(false);
    // "conditions" is accepted and ignored: the Device Client parses it but never evaluates it,
    // so documents written for it carry conditions that have never had an effect.

    const cJSON* steps = field(root, "steps");
    if (!cJSON_IsArray(steps) || !steps->child) return Error("steps: must be a non-empty array");
    int i = 0;
    for (const cJSON* s = steps->child; s; s = s->next, ++i) {
        auto step = parse_step(s, format("steps[%d]", i));
        if (!step) return step.err();
        doc.steps.push_back(step.take());
    }
    if (const cJSON* final_step = field(root, "finalStep")) {
        auto step = parse_step(final_step, "finalStep");
        if (!step) return step.err();
        doc.final_step = step.take();
    }
    return doc;
}

Result<Document> parse_document(std::string_view json_text) {
    if (json_text.size() > kMaxDocumentBytes)
        return Error(format("the job document is %zu bytes, more than the %zu bytes AWS IoT Jobs allows",
                            json_text.size(), kMaxDocumentBytes));
    auto root = json::parse(json_text);
    if (!root) return root.err().wrap("the job document is not valid JSON");
    return parse_document(root->get());
}

}  // namespace iot::jobs
