// Configuration: one table of keys (keys.def) drives the config file, the runtime file, the HTTP
// proxy file, the environment, the command line, --help, defaults and export. Drop-in compatible
// with the AWS IoT Device Client's files, flags and environment, with clear errors instead of its
// silent ones (file:line: key: expected ..., got ...).
//
// Precedence: defaults < config file < runtime file (and the proxy file) < environment < command line.
#pragma once
#include <sys/types.h>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.hpp"
#include "json/json.hpp"

namespace iot::config {

enum class Type { String, Path, Bool, Int, Enum, JsonText, Array, Object };
enum class Where { Main, Runtime, Proxy, Cli };

enum KeyFlags : unsigned {
    kSecret = 1u << 0,               // never printed; registered with log::add_secret
    kNoArg = 1u << 1,                // a flag that takes no value (sets true)
    kRequired = 1u << 2,             // required to connect (check_required)
    kNoEnv = 1u << 3,                // no IOTBOX_<NAME> variable
    kAction = 1u << 4,               // --help, --version, --export-default-settings: not a setting
    kClamp = 1u << 5,                // out-of-range ints are clamped with a warning, not refused
    kPermRequired = 1u << 6,         // mode rule: a violation is an error
    kPermRecommended = 1u << 7,      // mode rule: a violation is a warning
    kDirPrivate = 1u << 8,           // the file's directory should be 0700 (warning)
    kMissingWarns = 1u << 9,         // a missing file is a warning, not an error
    kEnvIsDir = 1u << 10,            // the extra env variable names the directory of the default's basename
    kNoEffect = 1u << 11,            // accepted for compatibility; setting it gives a note
    kUnlessSecureElement = 1u << 12, // not needed/checked when secure-element.enabled
};

struct Key {
    const char* name;     // dotted JSON path
    const char* flag;     // "--log-level" or nullptr
    Type type;
    const char* choices;  // Enum: "A|B|C"
    long long lo, hi;     // Int range
    const char* def;      // default as text, nullptr = unset
    Where where;
    unsigned flags;
    mode_t mode;          // permission rule, 0 = none
    const char* env;      // extra environment variable, nullptr = only IOTBOX_<NAME>
    const char* help;
};

// The table (keys.def).
const std::vector<Key>& keys();
const Key* find_key(std::string_view name);
const Key* find_flag(std::string_view flag);
// IOTBOX_LOGGING_LEVEL for "logging.level"; empty for kNoEnv keys.
std::string env_name(const Key& key);
// The key name a few edits away from a misspelt one ("logging.levl" -> "logging.level"), or "".
std::string closest_key(std::string_view name);
// Where a key of this kind is given: "the config file", "the HTTP proxy file (--http-proxy-config)", ...
const char* home_of(Where where);

class Config {
public:
    Config();  // every key at its default

    // Getters take the dotted name from keys.def. An unknown name is a programming error: it is
    // logged at ERROR and the getter returns an empty value.
    std::string str(std::string_view name) const;
    std::string path(std::string_view name) const;  // str() with a leading ~ expanded
    bool flag(std::string_view name) const;
    long long num(std::string_view name) const;
    // The JSON value of Object/Array/JsonText keys (parsed anew), nullptr when unset.
    json::Json json_value(std::string_view name) const;
    bool has(std::string_view name) const;     // has a value (default or set)
    bool is_set(std::string_view name) const;  // set by a file, the environment or the command line
    // "default" | "file <path>" | "runtime file <path>" | "env NAME" | "--flag"
    std::string source(std::string_view name) const;
    // Where to point a person: "<path>:<line>", "env NAME", "--flag" or "default".
    std::string location(std::string_view name) const;

    // Set from text as the command line would (converted and checked by type).
    Status set(std::string_view name, std::string_view text, const std::string& source);

    struct Value {
        bool present = false;
        std::string text;      // canonical text: "true", "42", enum spelling, compact JSON
        long long number = 0;  // Int and Bool
        std::string source = "default";
        std::string file;      // for file sources: the file and line
        int line = 0;
    };
    const Value* value(std::string_view name) const;
    Value* value_mut(std::string_view name);

private:
    std::vector<Value> values_;  // indexed like keys()
};

struct LoadOptions {
    // Collect arguments that are not flags (and everything after "--") into Loaded::positional;
    // otherwise they are an error.
    bool allow_positional = false;
    // The system config file looked for when neither --config-file nor IOTBOX_CONFIG is given.
    std::string system_config = "/etc/iotbox/iotbox.conf";
    // Look for the default config, runtime and HTTP proxy files when they are not named. Off for
    // `iot-config init`, which writes a new file from flags and answers, not from what is there.
    bool find_files = true;
};

struct Loaded {
    Config config;
    std::vector<std::string> warnings;  // for the caller to log once its logger is configured
    std::vector<std::string> positional;
    bool help = false;
    bool version = false;
    std::string export_path;  // --export-default-settings FILE (expanded); the caller writes it
};

// Load the configuration. argv holds the arguments only, WITHOUT the program name (pass argc - 1,
// argv + 1). --help and --version are looked for first; when present nothing else is read.
// Errors (all of them, one per line) name the file, line and key, the variable or the flag.
// Secret values are registered with the logger.
Result<Loaded> load(int argc, const char* const argv[], const LoadOptions& options = {});

// The main config file load() reads with these arguments: the one named by --config-file or the
// environment (existing or not), else the first default that exists; "" when there is none.
Result<std::string> config_file_path(int argc, const char* const argv[], const LoadOptions& options = {});

// `text` converted by the key's type as the command line converts it, with the same errors
// ("expected an integer from 1 to 65535, got 99999"); adjustments (clamping) are added to `notes`.
Result<Config::Value> parse_value(const Key& key, std::string_view text, std::vector<std::string>* notes = nullptr);

// Settings needed to connect: endpoint, cert, key (unless secure element), thing-name.
Status check_required(const Config& config);

struct PermissionReport {
    std::vector<std::string> errors;    // required rules broken, required files missing
    std::vector<std::string> warnings;  // recommended rules broken, fallbacks
};
// Mode rules of the Device Client ("this mode or stricter" rather than its exact match), for the
// files of enabled features.
PermissionReport check_permissions(const Config& config);

// Whether the value of `key` is used: its section is enabled ("jobs.enabled" for
// "jobs.handler-directory"), a log file is written, the key file is not replaced by a secure element.
bool in_use(const Config& config, const Key& key);

// --help text generated from the table, grouped by section.
std::string help_text();
// The whole configuration as valid JSON, nested like the config file; secrets as "***" unless
// include_secrets. With main_file_only, only what belongs in a config file (loadable as one).
std::string export_json(const Config& config, bool include_secrets = false, bool main_file_only = false);
// A config file (valid JSON, secrets included) with the config-file keys that are present and
// either required (check_required) or, for Changed, different from their default; for Set, set by
// a file, the environment or the command line.
enum class FileKeys { Changed, Set };
std::string export_file(const Config& config, FileKeys which);
// A config file holding every default (--export-default-settings); valid JSON.
std::string export_defaults();

// For tests: how many getter calls named a key that is not in the table.
size_t unknown_key_lookups();

}  // namespace iot::config
