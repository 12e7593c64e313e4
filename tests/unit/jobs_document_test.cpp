#include <gtest/gtest.h>

#include <string>

#include "base/strings.hpp"
#include "fs/fs.hpp"
#include "jobs/document.hpp"
#include "json/json.hpp"

using namespace iot;
using namespace iot::jobs;

namespace {

std::string fixture(const std::string& name) {
#ifdef IOT_SOURCE_DIR
    std::string dir = std::string(IOT_SOURCE_DIR) + "/tests/unit";
#else
    std::string dir = fs::dirname(__FILE__);  // compiled from the source tree without CMake
#endif
    auto text = fs::read_file(dir + "/data/jobs/" + name);
    EXPECT_TRUE(text.ok()) << text.error();
    return text ? *text : std::string();
}

// The error of parsing `text`, or "parsed" when it was accepted.
std::string error_of(const std::string& text) {
    auto doc = parse_document(text);
    return doc ? "parsed" : doc.error();
}

// A new-schema document with one step whose action is `action` (JSON text).
std::string with_action(const std::string& action) {
    return R"({"version": "1.0", "steps": [{"action": )" + action + "}]}";
}

Document parse_ok(const std::string& text) {
    auto doc = parse_document(text);
    EXPECT_TRUE(doc.ok()) << doc.error();
    return doc ? doc.take() : Document();
}

}  // namespace

TEST(JobsDocument, OldSchemaBecomesOneRunHandlerStep) {
    Document doc = parse_ok(fixture("old-install-packages.json"));
    EXPECT_TRUE(doc.old_schema);
    EXPECT_EQ(doc.version, "0.0");
    EXPECT_TRUE(doc.include_stdout);
    ASSERT_EQ(doc.steps.size(), 1u);
    const Action& a = doc.steps[0];
    EXPECT_EQ(a.type, ActionType::RunHandler);
    EXPECT_EQ(a.name, "install-packages.sh");
    EXPECT_EQ(a.handler, "install-packages.sh");
    EXPECT_EQ(a.args, (std::vector<std::string>{"lftp", "dos2unix"}));
    EXPECT_EQ(a.path, std::optional<std::string>("default"));
    EXPECT_EQ(a.allow_stderr, std::optional<long long>(8));
    EXPECT_EQ(a.run_as_user, "");
    EXPECT_FALSE(doc.final_step);
}

TEST(JobsDocument, OldSchemaMinimal) {
    Document doc = parse_ok(R"({"operation": "health-check.sh"})");
    ASSERT_EQ(doc.steps.size(), 1u);
    EXPECT_EQ(doc.steps[0].handler, "health-check.sh");
    EXPECT_TRUE(doc.steps[0].args.empty());
    EXPECT_FALSE(doc.steps[0].path);
    EXPECT_FALSE(doc.steps[0].allow_stderr);
    EXPECT_FALSE(doc.include_stdout);
}

TEST(JobsDocument, NewSchemaWithStepsAndFinalStep) {
    Document doc = parse_ok(fixture("new-install-packages.json"));
    EXPECT_FALSE(doc.old_schema);
    EXPECT_EQ(doc.version, "1.0");
    EXPECT_TRUE(doc.include_stdout);  // "true" as a string
    ASSERT_EQ(doc.steps.size(), 2u);

    const Action& install = doc.steps[0];
    EXPECT_EQ(install.name, "Install-Packages");
    EXPECT_EQ(install.type, ActionType::RunHandler);
    EXPECT_EQ(install.handler, "install-packages.sh");
    EXPECT_EQ(install.args, (std::vector<std::string>{"lftp", "dos2unix"}));
    EXPECT_EQ(install.path, std::optional<std::string>("default"));
    EXPECT_EQ(install.run_as_user, "root");
    EXPECT_EQ(install.allow_stderr, std::optional<long long>(8));  // a number
    EXPECT_TRUE(install.ignore_step_failure);                      // "true" as a string
    EXPECT_EQ(install.timeout_s, 0);

    const Action& hello = doc.steps[1];
    EXPECT_EQ(hello.type, ActionType::RunCommand);
    EXPECT_EQ(hello.command, (std::vector<std::string>{"echo", "Hello, world"}));  // escaped comma
    EXPECT_EQ(hello.allow_stderr, std::optional<long long>(2));                    // a numeric string
    EXPECT_TRUE(hello.ignore_step_failure);                                        // a JSON boolean
    EXPECT_EQ(hello.run_as_user, "");

    ASSERT_TRUE(doc.final_step);
    EXPECT_EQ(doc.final_step->name, "Verify-Packages");
    EXPECT_EQ(doc.final_step->handler, "verify-packages-installed.sh");
    EXPECT_FALSE(doc.final_step->path);                 // search PATH
    EXPECT_FALSE(doc.final_step->ignore_step_failure);  // "FALSE": any case
    EXPECT_FALSE(doc.final_step->allow_stderr);
}

TEST(JobsDocument, IotboxExtensionsAndBooleanIncludeStdOut) {
    Document doc = parse_ok(fixture("new-health-check.json"));
    EXPECT_TRUE(doc.include_stdout);  // a JSON boolean, which the Device Client would ignore
    ASSERT_EQ(doc.steps.size(), 2u);
    EXPECT_EQ(doc.steps[0].path, std::optional<std::string>("/opt/iot/handlers"));
    EXPECT_EQ(doc.steps[0].timeout_s, 30);
    EXPECT_EQ(doc.steps[1].type, ActionType::Reboot);
    EXPECT_EQ(doc.steps[1].name, "Reboot");
}

TEST(JobsDocument, IncludeStdOutBothWays) {
    const std::string steps = R"("steps": [{"action": {"name": "a", "type": "reboot"}}])";
    EXPECT_TRUE(parse_ok(R"({"version": "1.0", "includeStdOut": "TRUE", )" + steps + "}").include_stdout);
    EXPECT_TRUE(parse_ok(R"({"version": "1.0", "includeStdOut": true, )" + steps + "}").include_stdout);
    EXPECT_FALSE(parse_ok(R"({"version": "1.0", "includeStdOut": "false", )" + steps + "}").include_stdout);
    EXPECT_FALSE(parse_ok(R"({"version": "1.0", "includeStdOut": false, )" + steps + "}").include_stdout);
    EXPECT_FALSE(parse_ok(R"({"version": "2.5", )" + steps + "}").include_stdout);
    EXPECT_EQ(error_of(R"({"version": "1.0", "includeStdOut": "yes", )" + steps + "}"),
              R"(includeStdOut: expected true or false, got "yes")");
}

TEST(JobsDocument, UnknownFieldsNullsAndConditionsAreIgnored) {
    Document doc = parse_ok(R"({"version": "1.0", "comment": 1, "conditions": "anything",
        "finalStep": null,
        "steps": [{"action": {"name": "a", "type": "runHandler", "extra": [1],
                   "input": {"handler": "h.sh", "path": "", "args": null}, "runAsUser": null}}]})");
    ASSERT_EQ(doc.steps.size(), 1u);
    EXPECT_FALSE(doc.steps[0].path);  // "" means search PATH, as in the Device Client
    EXPECT_TRUE(doc.steps[0].args.empty());
    EXPECT_FALSE(doc.final_step);
}

TEST(JobsDocument, SplitCommand) {
    using V = std::vector<std::string>;
    EXPECT_EQ(*split_command("echo,Hello\\, world"), (V{"echo", "Hello, world"}));
    EXPECT_EQ(*split_command(" ls , -l ,  /tmp "), (V{"ls", "-l", "/tmp"}));
    EXPECT_EQ(*split_command("touch"), (V{"touch"}));
    EXPECT_EQ(*split_command("printf,a\\b\\,c"), (V{"printf", "a\\b,c"}));  // other backslashes stay
    EXPECT_EQ(*split_command("echo,\\,"), (V{"echo", ","}));

    EXPECT_EQ(split_command("").error(), "the command is empty");
    EXPECT_EQ(split_command("   ").error(), "the command is empty");
    EXPECT_EQ(split_command("echo,,x").error(), "argument 2 is empty (two commas in a row or a trailing comma?)");
    EXPECT_EQ(split_command("echo,x,").error(), "argument 3 is empty (two commas in a row or a trailing comma?)");
    EXPECT_EQ(split_command("echo hello,x").error(),
              R"(the program name "echo hello" contains whitespace (arguments are separated by commas))");
}

TEST(JobsDocument, HandlerNames) {
    EXPECT_TRUE(check_handler_name("install-packages.sh").ok());
    EXPECT_TRUE(check_handler_name(".hidden").ok());
    EXPECT_EQ(check_handler_name("").error(), "the handler name is empty");
    EXPECT_EQ(check_handler_name(".").error(), R"("." is not a plain file name)");
    EXPECT_EQ(check_handler_name("..").error(), R"(".." is not a plain file name)");
    EXPECT_EQ(check_handler_name("../x").error(), R"("../x" is not a plain file name)");
    EXPECT_EQ(check_handler_name("/bin/sh").error(), R"("/bin/sh" is not a plain file name)");
    EXPECT_EQ(check_handler_name("a..b").error(), R"("a..b" is not a plain file name)");
    EXPECT_EQ(check_handler_name("sub/x.sh").error(), R"("sub/x.sh" is not a plain file name)");
}

TEST(JobsDocument, DocumentLevelErrors) {
    EXPECT_EQ(error_of("[1, 2]"), "the job document is not a JSON object");
    EXPECT_EQ(error_of("\"text\""), "the job document is not a JSON object");
    EXPECT_EQ(error_of("{\"version\": \"1.0\",\n \"steps\": [}"),
              "the job document is not valid JSON: line 2, column 12: invalid JSON near '}'");
    EXPECT_EQ(error_of("{}"), R"(the job document has neither "version" (new schema) nor "operation" (old schema))");
    EXPECT_EQ(error_of(R"({"version": ""})"), R"(version: expected a non-empty string, got "")");
    EXPECT_EQ(error_of(R"({"version": 1.0})"), "version: expected a non-empty string, got 1");
    EXPECT_EQ(error_of(R"({"version": "1.0"})"), "steps: must be a non-empty array");
    EXPECT_EQ(error_of(R"({"version": "1.0", "steps": []})"), "steps: must be a non-empty array");
    EXPECT_EQ(error_of(R"({"version": "1.0", "steps": {"action": {}}})"), "steps: must be a non-empty array");
    EXPECT_EQ(parse_document(static_cast<const cJSON*>(nullptr)).error(), "the job document is not a JSON object");
}

TEST(JobsDocument, StepErrorsNameThePath) {
    EXPECT_EQ(error_of(R"({"version": "1.0", "steps": ["run"]})"),
              R"(steps[0]: expected an object with an "action", got "run")");
    EXPECT_EQ(error_of(R"({"version": "1.0", "steps": [{"act": {}}]})"),
              "steps[0].action: expected an object, got nothing");
    EXPECT_EQ(error_of(with_action(R"({"type": "reboot"})")),
              "steps[0].action.name: expected a non-empty string, got nothing");
    EXPECT_EQ(error_of(with_action(R"({"name": 7, "type": "reboot"})")),
              "steps[0].action.name: expected a non-empty string, got 7");
    EXPECT_EQ(error_of(R"({"version": "1.0", "steps": [{"action": {"name": "a", "type": "reboot"}},
                          {"action": {"name": "b", "type": "runScript"}}]})"),
              R"(steps[1].action.type: expected "runHandler", "runCommand" or "reboot", got "runScript")");
    EXPECT_EQ(error_of(with_action(R"({"name": "a"})")),
              R"(steps[0].action.type: expected "runHandler", "runCommand" or "reboot", got nothing)");
    EXPECT_EQ(error_of(with_action(R"({"name": "a", "type": "runHandler"})")),
              "steps[0].action.input: expected an object, got nothing");
    EXPECT_EQ(error_of(with_action(R"({"name": "a", "type": "runHandler", "input": {}})")),
              "steps[0].action.input.handler: expected a non-empty string, got nothing");
    EXPECT_EQ(error_of(with_action(R"({"name": "a", "type": "runHandler", "input": {"handler": "../x"}})")),
              R"(steps[0].action.input.handler: "../x" is not a plain file name)");
    EXPECT_EQ(error_of(with_action(R"({"name": "a", "type": "runHandler", "input": {"handler": "h", "args": "x"}})")),
              R"(steps[0].action.input.args: expected an array of strings, got "x")");
    EXPECT_EQ(
        error_of(with_action(R"({"name": "a", "type": "runHandler", "input": {"handler": "h", "args": ["x", 2]}})")),
        "steps[0].action.input.args[1]: expected a string, got 2");
    EXPECT_EQ(
        error_of(with_action(R"({"name": "a", "type": "runHandler", "input": {"handler": "h", "path": ["/x"]}})")),
        "steps[0].action.input.path: expected a string, got an array");
    EXPECT_EQ(error_of(with_action(R"({"name": "a", "type": "runCommand", "input": {"command": ["ls"]}})")),
              "steps[0].action.input.command: expected a string, got an array");
    EXPECT_EQ(error_of(with_action(R"({"name": "a", "type": "runCommand", "input": {"command": "ls,,-l"}})")),
              "steps[0].action.input.command: argument 2 is empty (two commas in a row or a trailing comma?)");
}

TEST(JobsDocument, ActionOptionErrors) {
    const std::string base = R"("name": "a", "type": "reboot")";
    EXPECT_EQ(error_of(with_action("{" + base + R"(, "runAsUser": 0})")),
              "steps[0].action.runAsUser: expected a string, got 0");
    EXPECT_EQ(error_of(with_action("{" + base + R"(, "ignoreStepFailure": "yes"})")),
              R"(steps[0].action.ignoreStepFailure: expected true or false, got "yes")");
    EXPECT_EQ(error_of(with_action("{" + base + R"(, "ignoreStepFailure": 1})")),
              "steps[0].action.ignoreStepFailure: expected true or false, got 1");
    EXPECT_EQ(error_of(with_action("{" + base + R"(, "allowStdErr": "lots"})")),
              R"(steps[0].action.allowStdErr: expected a non-negative integer, got "lots")");
    EXPECT_EQ(error_of(with_action("{" + base + R"(, "allowStdErr": 1.5})")),
              "steps[0].action.allowStdErr: expected a non-negative integer, got 1.5");
    EXPECT_EQ(error_of(with_action("{" + base + R"(, "allowStdErr": -1})")),
              "steps[0].action.allowStdErr: expected a non-negative integer, got -1");
    EXPECT_EQ(error_of(with_action("{" + base + R"(, "timeoutSeconds": "-5"})")),
              R"(steps[0].action.timeoutSeconds: expected a non-negative integer, got "-5")");
    Document doc = parse_ok(with_action("{" + base + R"(, "timeoutSeconds": "90", "allowStdErr": 0})"));
    EXPECT_EQ(doc.steps[0].timeout_s, 90);
    EXPECT_EQ(doc.steps[0].allow_stderr, std::optional<long long>(0));
}

TEST(JobsDocument, FinalStepErrors) {
    const std::string steps = R"({"version": "1.0", "steps": [{"action": {"name": "a", "type": "reboot"}}], )";
    EXPECT_EQ(error_of(steps + R"("finalStep": {"action": {"name": "f", "type": "run"}}})"),
              R"(finalStep.action.type: expected "runHandler", "runCommand" or "reboot", got "run")");
    EXPECT_EQ(error_of(steps + R"("finalStep": "cleanup.sh"})"),
              R"(finalStep: expected an object with an "action", got "cleanup.sh")");
}

TEST(JobsDocument, OldSchemaErrors) {
    EXPECT_EQ(error_of(R"({"operation": ""})"), R"(operation: expected a non-empty string, got "")");
    EXPECT_EQ(error_of(R"({"operation": "../../bin/sh"})"), R"(operation: "../../bin/sh" is not a plain file name)");
    EXPECT_EQ(error_of(R"({"operation": "x.sh", "args": [true]})"), "args[0]: expected a string, got true");
    EXPECT_EQ(error_of(R"({"operation": "x.sh", "allowStdErr": "many"})"),
              R"(allowStdErr: expected a non-negative integer, got "many")");
    EXPECT_EQ(error_of(R"({"operation": "x.sh", "includeStdOut": 1})"), "includeStdOut: expected true or false, got 1");
}

TEST(JobsDocument, SizeLimitIsAwsLimit) {
    // Exactly 32768 bytes passes, one more fails, whatever the content.
    std::string head = R"({"operation": "x.sh", "pad": ")";
    std::string tail = "\"}";
    std::string doc = head + std::string(32768 - head.size() - tail.size(), 'p') + tail;
    ASSERT_EQ(doc.size(), 32768u);
    EXPECT_EQ(error_of(doc), "parsed");
    doc.insert(head.size(), "p");
    EXPECT_EQ(error_of(doc), "the job document is 32769 bytes, more than the 32768 bytes AWS IoT Jobs allows");
}

TEST(JobsDocument, ParsesFromCjsonToo) {
    auto root = json::parse(R"({"version": "1.0", "steps": [{"action": {"name": "a", "type": "runCommand",
                                 "input": {"command": "echo,hi"}}}]})");
    ASSERT_TRUE(root.ok());
    auto doc = parse_document(static_cast<const cJSON*>(root->get()));
    ASSERT_TRUE(doc.ok()) << doc.error();
    EXPECT_EQ(doc->steps[0].command, (std::vector<std::string>{"echo", "hi"}));
}
