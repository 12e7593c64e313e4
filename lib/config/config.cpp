// Loading, converting and checking configuration values; the key table itself is keys.def.
#include "config/config.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "base/strings.hpp"
#include "fs/fs.hpp"
#include "log/log.hpp"

namespace iot::config {
namespace {

constexpr size_t kMaxFileBytes = 1024 * 1024;
constexpr size_t kMaxSensors = 10;
size_t g_unknown_lookups = 0;

// Index of a key named by code. A miss is a bug in the caller, so it is loud but not fatal.
std::optional<size_t> lookup(std::string_view name) {
    const auto& ks = keys();
    for (size_t i = 0; i < ks.size(); ++i)
        if (name == ks[i].name) return i;
    ++g_unknown_lookups;
    LOG_ERROR("config", "unknown configuration key '%.*s' (a bug: it is not in lib/config/keys.def)",
              static_cast<int>(name.size()), name.data());
    return std::nullopt;
}

std::string choices_text(const Key& k) { return replace_all(k.choices, "|", ", "); }

// What a value of this key must look like, for "expected ..., got ...".
std::string expectation(const Key& k) {
    switch (k.type) {
        case Type::String: return "a string";
        case Type::Path: return "a path (a string)";
        case Type::Bool: return "true or false";
        case Type::Int: return format("an integer from %lld to %lld", k.lo, k.hi);
        case Type::Enum: return "one of " + choices_text(k);
        case Type::JsonText: return "a JSON object (or a string holding one)";
        case Type::Array: return "an array of objects";
        case Type::Object: return "an object";
    }
    return "a value";
}

// Shorter, for the hint after a JSON syntax error: what to write in place of the bad token.
std::string literal_hint(const Key& k) {
    switch (k.type) {
        case Type::Int: return "an integer";
        case Type::Bool: return "true or false";
        case Type::Enum: return "one of " + choices_text(k) + " in quotes";
        case Type::JsonText: return "a JSON object or a quoted string";
        case Type::Array: return "an array";
        case Type::Object: return "an object";
        default: return "a quoted string";
    }
}

std::string shown(std::string_view text) {
    std::string s = json::quote(text);
    return s.size() > 64 ? s.substr(0, 60) + "...\"" : s;
}

std::string shown(const cJSON* item) {
    std::string s = json::print(item);
    return s.size() > 64 ? s.substr(0, 60) + "..." : s;
}

size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diag = up;
        }
    }
    return row[b.size()];
}

// " (did you mean 'x'?)" for the closest candidate within a few edits, or "".
std::string suggestion(std::string_view wrong, const std::vector<std::string>& candidates) {
    size_t best = 4;
    std::string pick;
    for (const std::string& c : candidates) {
        size_t d = edit_distance(wrong, c);
        if (d < best) {
            best = d;
            pick = c;
        }
    }
    return pick.empty() ? std::string() : " (did you mean '" + pick + "'?)";
}

// A converted value plus warnings about it ("empty value ignored", "clamped").
struct Converted {
    Config::Value value;
    bool ignore = false;
    std::vector<std::string> notes;
};

Result<Converted> normalize_sensors(const cJSON* array);

Result<Converted> from_text(const Key& k, std::string_view text) {
    Converted c;
    c.value.present = true;
    switch (k.type) {
        case Type::String:
        case Type::Path:
            if (text.empty()) return Error("expected a non-empty value");
            c.value.text = std::string(text);
            return c;
        case Type::Bool:
            if (iequals(text, "true") || iequals(text, "false")) {
                c.value.number = iequals(text, "true");
                c.value.text = c.value.number ? "true" : "false";
                return c;
            }
            return Error("expected true or false, got " + shown(text));
        case Type::Int: {
            auto n = parse_int(trim(text));
            if (!n) return Error("expected " + expectation(k) + ", got " + shown(text));
            long long v = *n;
            if (v < k.lo || v > k.hi) {
                if (!(k.flags & kClamp)) return Error("expected " + expectation(k) + ", got " + std::to_string(v));
                long long clamped = std::clamp(v, k.lo, k.hi);
                c.notes.push_back(format("%lld is outside %lld..%lld; using %lld", v, k.lo, k.hi, clamped));
                v = clamped;
            }
            c.value.number = v;
            c.value.text = std::to_string(v);
            return c;
        }
        case Type::Enum:
            for (const std::string& choice : split(k.choices, '|')) {
                if (iequals(text, choice)) {
                    c.value.text = choice;
                    return c;
                }
            }
            return Error("expected " + expectation(k) + ", got " + shown(text));
        case Type::JsonText:
        case Type::Array:
        case Type::Object: {
            auto parsed = json::parse(text);
            if (!parsed) return Error("expected " + expectation(k) + ": " + parsed.error());
            if (k.type == Type::Array) {
                if (!cJSON_IsArray(parsed->get()))
                    return Error("expected " + expectation(k) + ", got " + json::type_name(parsed->get()));
                return normalize_sensors(parsed->get());
            }
            if (!cJSON_IsObject(parsed->get()))
                return Error("expected " + expectation(k) + ", got " + json::type_name(parsed->get()));
            c.value.text = json::print(parsed->get());
            return c;
        }
    }
    return Error("unsupported type");
}

// A value from a JSON file. Booleans and integers may also be strings ("true", "9999"): the
// Device Client writes the proxy port as a string and people quote booleans; it silently read
// "true" as false, iotbox reads it as true.
Result<Converted> from_json(const Key& k, const cJSON* item) {
    if (cJSON_IsNull(item) || (cJSON_IsString(item) && item->valuestring[0] == '\0')) {
        Converted c;
        c.ignore = true;
        c.notes.push_back("empty value ignored");
        return c;
    }
    auto wrong = [&] { return Error("expected " + expectation(k) + ", got " + shown(item)); };
    switch (k.type) {
        case Type::String:
        case Type::Path:
        case Type::Enum:
            if (!cJSON_IsString(item)) return wrong();
            return from_text(k, item->valuestring);
        case Type::Bool:
            if (cJSON_IsBool(item)) return from_text(k, cJSON_IsTrue(item) ? "true" : "false");
            if (cJSON_IsString(item)) return from_text(k, item->valuestring);
            return wrong();
        case Type::Int:
            if (cJSON_IsNumber(item)) {
                double d = item->valuedouble;
                if (d != static_cast<double>(static_cast<long long>(d))) return wrong();
                return from_text(k, std::to_string(static_cast<long long>(d)));
            }
            if (cJSON_IsString(item)) return from_text(k, item->valuestring);
            return wrong();
        case Type::JsonText:
            if (cJSON_IsString(item)) return from_text(k, item->valuestring);
            if (!cJSON_IsObject(item)) return wrong();
            return from_text(k, json::print(item));
        case Type::Array:
            if (!cJSON_IsArray(item)) return wrong();
            return normalize_sensors(item);
        case Type::Object:
            if (!cJSON_IsObject(item)) return wrong();
            return from_text(k, json::print(item));
    }
    return wrong();
}

// ---- sensor-publish.sensors: the fields of one entry, with the Device Client's defaults.
struct SensorField {
    const char* name;
    Type type;
    bool required;
    long long lo;
    const char* def;  // nullptr: none ("name" defaults to the 1-based index)
};
const SensorField kSensorFields[] = {
    {"enabled", Type::Bool, false, 0, "true"},
    {"name", Type::String, false, 0, nullptr},
    {"addr", Type::Path, true, 0, nullptr},
    {"addr_poll_sec", Type::Int, false, 0, "10"},
    {"buffer_time_ms", Type::Int, false, 0, "0"},
    {"buffer_size", Type::Int, false, 0, "0"},
    {"buffer_capacity", Type::Int, false, 1024, "128000"},
    {"eom_delimiter", Type::String, true, 0, nullptr},
    {"mqtt_topic", Type::String, true, 0, nullptr},
    {"mqtt_dead_letter_topic", Type::String, false, 0, nullptr},
    {"mqtt_heartbeat_topic", Type::String, false, 0, nullptr},
    {"heartbeat_time_sec", Type::Int, false, 0, "300"},
};

cJSON* sensor_item(const SensorField& f, const Config::Value& v) {
    if (f.type == Type::Bool) return cJSON_CreateBool(v.number != 0);
    if (f.type == Type::Int) return cJSON_CreateNumber(static_cast<double>(v.number));
    return cJSON_CreateString(v.text.c_str());
}

// Checks every entry and returns them with types normalised and defaults filled in, so the
// sensor feature reads plain values. As in the Device Client, a bad entry disables only that
// sensor (with a warning naming it) instead of refusing the whole file.
Result<Converted> normalize_sensors(const cJSON* array) {
    Converted c;
    json::Json out(cJSON_CreateArray());
    int index = 0;
    for (const cJSON* entry = array->child; entry; entry = entry->next) {
        ++index;
        if (static_cast<size_t>(index) > kMaxSensors) {
            c.notes.push_back(format("more than %zu sensors; only the first %zu are used", kMaxSensors, kMaxSensors));
            break;
        }
        if (!cJSON_IsObject(entry)) {
            c.notes.push_back(format("sensor %d: expected an object, got %s; ignored", index, shown(entry).c_str()));
            continue;
        }
        cJSON* sensor = cJSON_CreateObject();
        std::vector<std::string> problems;
        for (const SensorField& f : kSensorFields) {
            Key fk{f.name, nullptr, f.type, "", f.lo, LLONG_MAX, nullptr, Where::Main, 0, 0, nullptr, ""};
            const cJSON* item = json::get(entry, f.name);
            std::optional<Config::Value> v;
            if (item && !cJSON_IsNull(item) && !(cJSON_IsString(item) && !*item->valuestring)) {
                auto conv = from_json(fk, item);
                if (conv)
                    v = conv->value;
                else
                    problems.push_back(std::string(f.name) + ": " + conv.error());
            }
            if (!v && f.def) v = from_text(fk, f.def)->value;
            if (!v && strcmp(f.name, "name") == 0) v = from_text(fk, std::to_string(index))->value;
            if (!v && f.required && item == nullptr) problems.push_back(std::string(f.name) + " is required");
            if (v) cJSON_AddItemToObject(sensor, f.name, sensor_item(f, *v));
        }
        for (const cJSON* field = entry->child; field; field = field->next) {
            bool known = false;
            for (const SensorField& f : kSensorFields) known = known || strcmp(f.name, field->string) == 0;
            if (!known) c.notes.push_back(format("sensor %d: unknown field '%s' ignored", index, field->string));
        }
        if (!problems.empty() && cJSON_IsTrue(json::get(sensor, "enabled"))) {
            c.notes.push_back(format("sensor %d (%s): %s; this sensor is disabled", index,
                                     json::string_or(sensor, "name", "").c_str(), join(problems, "; ").c_str()));
            cJSON_ReplaceItemInObjectCaseSensitive(sensor, "enabled", cJSON_CreateBool(false));
        }
        cJSON_AddItemToArray(out.get(), sensor);
    }
    c.value.present = true;
    c.value.text = json::print(out.get());
    return c;
}

// The "section.enabled" key that gates `k`, if any (fleet-provisioning.enabled for
// fleet-provisioning.csr-file).
const Key* gate_of(const Key& k) {
    std::string_view name = k.name;
    size_t dot = name.rfind('.');
    if (dot == std::string_view::npos) return nullptr;
    const Key* gate = find_key(std::string(name.substr(0, dot)) + ".enabled");
    return gate == &k ? nullptr : gate;
}

bool is_section(std::string_view name) {
    std::string prefix = std::string(name) + ".";
    for (const Key& k : keys())
        if (starts_with(k.name, prefix)) return true;
    return false;
}

// Dotted path of the key written on `target_line`, from a light scan of text that may not be
// valid JSON (it is used to explain a syntax error).
std::string key_at_line(std::string_view text, int target_line) {
    std::vector<std::string> stack;
    std::string last_string, pending;
    bool after_string = false;
    int line = 1;
    for (size_t i = 0; i < text.size() && line <= target_line; ++i) {
        char c = text[i];
        if (c == '\n') {
            ++line;
            continue;
        }
        if (c == ' ' || c == '\t' || c == '\r') continue;
        if (c == '"') {
            std::string s;
            for (++i; i < text.size() && text[i] != '"' && text[i] != '\n'; ++i) {
                if (text[i] == '\\' && i + 1 < text.size()) ++i;
                s += text[i];
            }
            last_string = s;
            after_string = true;
            continue;
        }
        if (c == ':' && after_string) {
            pending = last_string;
            if (line == target_line) {
                std::string path;
                for (const std::string& part : stack)
                    if (!part.empty()) path += part + ".";
                return path + pending;
            }
        } else if (c == '{' || c == '[') {
            stack.push_back(pending);
            pending.clear();
        } else if ((c == '}' || c == ']') && !stack.empty()) {
            stack.pop_back();
        }
        after_string = false;
    }
    return {};
}

// "cfg.json:47: invalid JSON near 'x' (key a.b: replace the placeholder with an integer)"
std::string syntax_error(const std::string& path, std::string_view text, const std::string& error) {
    auto pe = json::last_parse_error();
    if (!pe) return path + ": " + error;
    std::string near = pe->near;
    if (!near.empty() && (isalnum(static_cast<unsigned char>(near[0])) || near[0] == '_')) {
        // A bare word (an unquoted placeholder): quote all of it, not the parser's 40 characters.
        std::string_view rest = text;
        for (int line = 1; line < pe->line && !rest.empty(); ++line) {
            size_t nl = rest.find('\n');
            rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
        }
        rest = rest.substr(std::min(rest.size(), static_cast<size_t>(pe->column - 1)));
        std::string word(rest.substr(0, rest.find_first_of(",}] \t\r\n")));
        if (!word.empty()) near = word;
    }
    std::string msg = near.empty() ? format("%s:%d: invalid JSON: unexpected end of document", path.c_str(), pe->line)
                                   : format("%s:%d: invalid JSON near '%s'", path.c_str(), pe->line, near.c_str());
    std::string key = key_at_line(text, pe->line);
    if (key.empty()) return msg;
    const Key* k = find_key(key);
    bool placeholder = starts_with(near, "replace_with") || starts_with(near, "<replace");
    std::string hint;
    if (placeholder)
        hint = ": replace the placeholder with " + (k ? literal_hint(*k) : std::string("a value"));
    else if (k)
        hint = ": expected " + literal_hint(*k);
    return msg + " (key " + key + hint + ")";
}

enum class FileKind { Main, Runtime, Proxy };

bool holds(FileKind f, Where w) {
    switch (f) {
        case FileKind::Main: return w == Where::Main || w == Where::Runtime;
        case FileKind::Runtime: return w == Where::Runtime;
        case FileKind::Proxy: return w == Where::Proxy;
    }
    return false;
}

struct Assignment {
    size_t index;
    Config::Value value;
};

class Loader {
public:
    Config config;
    std::vector<std::string> errors;
    std::vector<std::string> warnings;

    void set(size_t index, const Config::Value& v) { *config.value_mut(keys()[index].name) = v; }

    // A value problem of a key whose feature may be disabled: like the Device Client, which
    // reads such sub-keys only when their section is enabled, it is an error only if it is.
    void report(const Key& k, std::string message) {
        if (const Key* gate = gate_of(k)) {
            deferred_.push_back({gate->name, std::move(message)});
            return;
        }
        errors.push_back(std::move(message));
    }

    void settle_deferred() {
        for (const auto& d : deferred_) {
            if (config.flag(d.gate))
                errors.push_back(d.message);
            else
                warnings.push_back(d.message + " (ignored: " + d.gate + " is false)");
        }
    }

    // Reads one JSON file into the config. Returns false if it could not be read at all.
    void load_file(const std::string& path, FileKind kind, const std::string& source) {
        struct stat st;
        if (::stat(path.c_str(), &st) == 0 && static_cast<size_t>(st.st_size) > kMaxFileBytes) {
            errors.push_back(format("%s: file is larger than 1 MiB (%lld bytes); refusing it", path.c_str(),
                                    static_cast<long long>(st.st_size)));
            return;
        }
        auto text = fs::read_file(path, kMaxFileBytes);
        if (!text) {
            errors.push_back(text.error());
            return;
        }
        auto doc = json::parse(*text);
        if (!doc) {
            errors.push_back(syntax_error(path, *text, doc.error()));
            return;
        }
        if (!cJSON_IsObject(doc->get())) {
            errors.push_back(format("%s: expected a JSON object at the top level, got %s", path.c_str(),
                                    json::type_name(doc->get())));
            return;
        }
        file_ = File{path, *text, kind, source};
        walk(doc->get(), "");
    }

    // When fleet provisioning has completed, the runtime values replace the main file's, the
    // environment's and the command line's (as the Device Client).
    void apply_completed_fp() {
        if (!config.flag("runtime-config.completed-fp")) return;
        static const char* const kOverrides[][2] = {
            {"runtime-config.cert", "cert"},
            {"runtime-config.key", "key"},
            {"runtime-config.thing-name", "thing-name"},
        };
        for (const auto& o : kOverrides) {
            const Config::Value* from = config.value(o[0]);
            if (from && from->present) *config.value_mut(o[1]) = *from;
        }
    }

private:
    struct File {
        std::string path;
        std::string text;
        FileKind kind;
        std::string source;
    };
    struct Deferred {
        std::string gate;
        std::string message;
    };
    File file_;
    std::vector<Deferred> deferred_;

    std::vector<std::string> names_in_file() const {
        std::vector<std::string> out;
        for (const Key& k : keys())
            if (holds(file_.kind, k.where)) out.push_back(k.name);
        return out;
    }

    void walk(const cJSON* object, const std::string& prefix) {
        for (const cJSON* item = object->child; item; item = item->next) {
            std::string name = prefix.empty() ? item->string : prefix + "." + item->string;
            int line = json::line_of(file_.text, name);
            std::string at = format("%s:%d", file_.path.c_str(), line);
            const Key* k = find_key(name);
            if (k && !(k->flags & kAction)) {
                if (!holds(file_.kind, k->where)) {
                    warnings.push_back(format("%s: %s belongs in %s; ignored here", at.c_str(), name.c_str(),
                                              home_of(k->where)));
                    continue;
                }
                auto conv = from_json(*k, item);
                if (!conv) {
                    report(*k, format("%s: %s: %s", at.c_str(), name.c_str(), conv.error().c_str()));
                    continue;
                }
                for (const std::string& note : conv->notes)
                    warnings.push_back(format("%s: %s: %s", at.c_str(), name.c_str(), note.c_str()));
                if (conv->ignore) continue;
                // Loads (a template placeholder is a valid string), but the person should know.
                if (cJSON_IsString(item) && starts_with(item->valuestring, "<replace_with"))
                    warnings.push_back(format("%s: %s: still the template placeholder %s", at.c_str(), name.c_str(),
                                              shown(item).c_str()));
                Config::Value v = conv->value;
                v.source = file_.source;
                v.file = file_.path;
                v.line = line;
                set(static_cast<size_t>(k - keys().data()), v);
            } else if (is_section(name)) {
                if (!cJSON_IsObject(item)) {
                    errors.push_back(format("%s: %s: expected an object, got %s", at.c_str(), name.c_str(),
                                            shown(item).c_str()));
                    continue;
                }
                walk(item, name);
            } else {
                warnings.push_back(format("%s: unknown key '%s' ignored%s", at.c_str(), name.c_str(),
                                          suggestion(name, names_in_file()).c_str()));
            }
        }
    }
};

std::vector<std::string> all_flags() {
    std::vector<std::string> out;
    for (const Key& k : keys())
        if (k.flag) out.push_back(k.flag);
    return out;
}

struct CommandLine {
    std::vector<Assignment> assignments;
    std::vector<std::string> positional;
    std::string export_path;
};

CommandLine parse_command_line(int argc, const char* const argv[], const LoadOptions& options, Loader& loader) {
    CommandLine cl;
    std::vector<bool> seen(keys().size(), false);
    bool flags_done = false;
    for (int i = 0; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (flags_done || !starts_with(arg, "--")) {
            if (options.allow_positional)
                cl.positional.emplace_back(arg);
            else
                loader.errors.push_back(format("unexpected argument '%s'", argv[i]));
            continue;
        }
        if (arg == "--") {
            if (!options.allow_positional) loader.errors.push_back("unexpected argument '--'");
            flags_done = true;
            continue;
        }
        size_t eq = arg.find('=');
        std::string flag(arg.substr(0, eq));
        const Key* k = find_flag(flag);
        if (!k) {
            loader.errors.push_back(
                format("unknown option %s%s", flag.c_str(), suggestion(flag, all_flags()).c_str()));
            continue;
        }
        size_t index = static_cast<size_t>(k - keys().data());
        if (seen[index]) {
            loader.errors.push_back(format("%s: given twice", flag.c_str()));
            if (!(k->flags & kNoArg) && eq == std::string_view::npos) ++i;  // skip its value too
            continue;
        }
        seen[index] = true;
        std::string text;
        if (k->flags & kNoArg) {
            if (eq != std::string_view::npos) {
                loader.errors.push_back(format("%s takes no value", flag.c_str()));
                continue;
            }
            text = "true";
        } else if (eq != std::string_view::npos) {
            text = std::string(arg.substr(eq + 1));
        } else if (i + 1 < argc && !starts_with(argv[i + 1], "--")) {
            text = argv[++i];
        } else {
            loader.errors.push_back(format("%s: missing value (expected %s)", flag.c_str(), expectation(*k).c_str()));
            continue;
        }
        auto conv = from_text(*k, text);
        if (!conv) {
            loader.errors.push_back(format("%s: %s", flag.c_str(), conv.error().c_str()));
            continue;
        }
        for (const std::string& note : conv->notes) loader.warnings.push_back(flag + ": " + note);
        if (strcmp(k->name, "export-default-settings") == 0) {
            cl.export_path = fs::expand_home(conv->value.text);
            continue;
        }
        conv->value.source = flag;
        cl.assignments.push_back({index, conv->value});
    }
    return cl;
}

std::vector<Assignment> read_environment(Loader& loader) {
    std::vector<Assignment> out;
    const auto& ks = keys();
    for (size_t i = 0; i < ks.size(); ++i) {
        const Key& k = ks[i];
        // The compatibility variable first, so the IOTBOX_ one wins when both are set.
        for (std::string name : {std::string(k.env ? k.env : ""), env_name(k)}) {
            if (name.empty()) continue;
            const char* raw = getenv(name.c_str());
            if (!raw || !*raw) continue;
            std::string text = raw;
            if ((k.flags & kEnvIsDir) && k.env && name == k.env && k.def)
                text = (ends_with(text, "/") ? text : text + "/") + fs::basename(k.def);
            auto conv = from_text(k, text);
            if (!conv) {
                loader.errors.push_back(format("env %s: %s", name.c_str(), conv.error().c_str()));
                continue;
            }
            for (const std::string& note : conv->notes) loader.warnings.push_back("env " + name + ": " + note);
            conv->value.source = "env " + name;
            out.push_back({i, conv->value});
        }
    }
    // A misspelt IOTBOX_ variable would otherwise be ignored without a word.
    std::vector<std::string> known;
    for (const Key& k : ks) {
        if (!env_name(k).empty()) known.push_back(env_name(k));
        if (k.env) known.push_back(k.env);
    }
    for (char** e = environ; e && *e; ++e) {
        std::string_view entry = *e;
        if (!starts_with(entry, "IOTBOX_")) continue;
        std::string name(entry.substr(0, entry.find('=')));
        if (std::find(known.begin(), known.end(), name) == known.end())
            loader.warnings.push_back(format("environment variable %s is not a setting; ignored%s", name.c_str(),
                                             suggestion(name, known).c_str()));
    }
    return out;
}

// The last assignment to `index` from the command line, else from the environment.
const Config::Value* explicit_value(size_t index, const std::vector<Assignment>& cli,
                                    const std::vector<Assignment>& env) {
    for (const auto* list : {&cli, &env})
        for (auto it = list->rbegin(); it != list->rend(); ++it)
            if (it->index == index) return &it->value;
    return nullptr;
}

// "x is required when y is true (set at cfg.json:3)"
void require_when(Loader& l, const char* gate, std::initializer_list<const char*> needed) {
    const Config& c = l.config;
    if (!c.flag(gate)) return;
    for (const char* name : needed) {
        if (c.has(name)) continue;
        const Key* k = find_key(name);
        std::string how = k && k->flag ? format(" (%s)", k->flag) : std::string();
        l.errors.push_back(format("%s%s is required when %s is true (%s)", name, how.c_str(), gate,
                                  c.location(gate).c_str()));
    }
}

void validate(Loader& l) {
    const Config& c = l.config;
    if (c.num("mqtt.reconnect-min") > c.num("mqtt.reconnect-max"))
        l.errors.push_back(format("mqtt.reconnect-min (%lld, %s) is larger than mqtt.reconnect-max (%lld, %s)",
                                  c.num("mqtt.reconnect-min"), c.location("mqtt.reconnect-min").c_str(),
                                  c.num("mqtt.reconnect-max"), c.location("mqtt.reconnect-max").c_str()));
    require_when(l, "fleet-provisioning.enabled", {"fleet-provisioning.template-name"});
    require_when(l, "sample-shadow.enabled", {"sample-shadow.shadow-name"});
    require_when(l, "samples.pub-sub.enabled", {"samples.pub-sub.publish-topic", "samples.pub-sub.subscribe-topic"});
    require_when(l, "secure-element.enabled", {"secure-element.pkcs11-lib", "secure-element.secure-element-pin"});
    require_when(l, "tunneling.disable-notification",
                 {"tunneling.region", "tunneling.service", "tunneling.access-token"});
    require_when(l, "http-proxy-enabled", {"http-proxy-host", "http-proxy-port"});
    if (c.flag("http-proxy-enabled") && c.str("http-proxy-auth-method") == "UserNameAndPassword") {
        for (const char* name : {"http-proxy-username", "http-proxy-password"})
            if (!c.has(name))
                l.errors.push_back(format("%s is required when http-proxy-auth-method is UserNameAndPassword (%s)",
                                          name, c.location("http-proxy-auth-method").c_str()));
    }
    for (const Key& k : keys())
        if ((k.flags & kNoEffect) && c.is_set(k.name))
            l.warnings.push_back(format("%s (%s) is accepted for compatibility but has no effect in iotbox", k.name,
                                        c.source(k.name).c_str()));
}

// The first default config file that exists, or "".
std::string default_config_file(const LoadOptions& options) {
    for (const std::string& candidate :
         {options.system_config, fs::expand_home("~/.aws-iot-device-client/aws-iot-device-client.conf")})
        if (!candidate.empty() && fs::exists(candidate)) return candidate;
    return {};
}

}  // namespace

const char* home_of(Where w) {
    switch (w) {
        case Where::Main: return "the config file";
        case Where::Runtime: return "the runtime-config section";
        case Where::Proxy: return "the HTTP proxy file (--http-proxy-config)";
        case Where::Cli: return "the command line or the environment";
    }
    return "";
}

std::string closest_key(std::string_view name) {
    std::vector<std::string> names;
    for (const Key& k : keys())
        if (!(k.flags & kAction)) names.push_back(k.name);
    std::string s = suggestion(name, names);  // " (did you mean 'x'?)"
    size_t open = s.find('\'');
    return open == std::string::npos ? std::string() : s.substr(open + 1, s.rfind('\'') - open - 1);
}

Result<Config::Value> parse_value(const Key& key, std::string_view text, std::vector<std::string>* notes) {
    auto conv = from_text(key, text);
    if (!conv) return conv.err();
    if (notes) notes->insert(notes->end(), conv->notes.begin(), conv->notes.end());
    return conv->value;
}

Result<std::string> config_file_path(int argc, const char* const argv[], const LoadOptions& options) {
    Loader l;
    CommandLine cl = parse_command_line(argc, argv, options, l);
    std::vector<Assignment> env = read_environment(l);
    if (!l.errors.empty()) return Error(join(l.errors, "\n"));
    const Key* k = find_key("config-file");
    if (const Config::Value* named = explicit_value(static_cast<size_t>(k - keys().data()), cl.assignments, env))
        return fs::expand_home(named->text);
    return options.find_files ? default_config_file(options) : std::string();
}

// ---- Config

Config::Config() : values_(keys().size()) {
    const auto& ks = keys();
    for (size_t i = 0; i < ks.size(); ++i) {
        if (!ks[i].def) continue;
        auto conv = from_text(ks[i], ks[i].def);
        if (conv) values_[i] = conv->value;  // a bad default is caught by the table test
    }
}

const Config::Value* Config::value(std::string_view name) const {
    auto i = lookup(name);
    return i ? &values_[*i] : nullptr;
}

Config::Value* Config::value_mut(std::string_view name) {
    auto i = lookup(name);
    return i ? &values_[*i] : nullptr;
}

std::string Config::str(std::string_view name) const {
    const Value* v = value(name);
    return v && v->present ? v->text : std::string();
}

std::string Config::path(std::string_view name) const { return fs::expand_home(str(name)); }

bool Config::flag(std::string_view name) const {
    const Value* v = value(name);
    return v && v->present && v->number != 0;
}

long long Config::num(std::string_view name) const {
    const Value* v = value(name);
    return v && v->present ? v->number : 0;
}

json::Json Config::json_value(std::string_view name) const {
    const Value* v = value(name);
    if (!v || !v->present) return nullptr;
    auto parsed = json::parse(v->text);
    return parsed ? parsed.take() : nullptr;
}

bool Config::has(std::string_view name) const {
    const Value* v = value(name);
    return v && v->present;
}

bool Config::is_set(std::string_view name) const {
    const Value* v = value(name);
    return v && v->present && v->source != "default";
}

std::string Config::source(std::string_view name) const {
    const Value* v = value(name);
    return v ? v->source : std::string();
}

std::string Config::location(std::string_view name) const {
    const Value* v = value(name);
    if (!v) return {};
    if (!v->file.empty()) return format("%s:%d", v->file.c_str(), v->line);
    return v->source;
}

Status Config::set(std::string_view name, std::string_view text, const std::string& source) {
    auto i = lookup(name);
    if (!i) return Error(format("unknown key '%.*s'", static_cast<int>(name.size()), name.data()));
    auto conv = parse_value(keys()[*i], text);
    if (!conv) return Error(std::string(name) + ": " + conv.error());
    values_[*i] = *conv;
    values_[*i].source = source;
    return {};
}

// ---- loading

Result<Loaded> load(int argc, const char* const argv[], const LoadOptions& options) {
    Loaded out;
    // As the Device Client: --help and --version win over everything, even a broken config.
    for (int i = 0; i < argc && strcmp(argv[i], "--") != 0; ++i) {
        out.help = out.help || strcmp(argv[i], "--help") == 0;
        out.version = out.version || strcmp(argv[i], "--version") == 0;
    }
    if (out.help || out.version) return out;

    Loader l;
    CommandLine cl = parse_command_line(argc, argv, options, l);
    std::vector<Assignment> env = read_environment(l);
    if (!l.errors.empty()) return Error(join(l.errors, "\n"));

    auto index = [](const char* name) { return *lookup(name); };

    // Main config file: named explicitly (must exist), else the first default that exists.
    size_t config_index = index("config-file");
    if (const Config::Value* named = explicit_value(config_index, cl.assignments, env)) {
        l.set(config_index, *named);
        std::string path = fs::expand_home(named->text);
        if (!fs::exists(path))
            return Error(format("config file %s (%s): %s", path.c_str(), named->source.c_str(),
                                errno_text(ENOENT).c_str()));
    } else if (options.find_files) {
        std::string found = default_config_file(options);
        if (!found.empty()) (void)l.config.set("config-file", found, "default");
    }
    if (l.config.has("config-file")) {
        std::string path = l.config.path("config-file");
        l.load_file(path, FileKind::Main, "file " + path);
        l.apply_completed_fp();
    }

    // Runtime file: absent until fleet provisioning has written it, so never required.
    size_t runtime_index = index("runtime-config-file");
    const Config::Value* runtime_named = explicit_value(runtime_index, cl.assignments, env);
    std::string runtime_path =
        fs::expand_home(runtime_named ? runtime_named->text : l.config.str("runtime-config-file"));
    if (!runtime_path.empty() && (runtime_named || options.find_files) && fs::exists(runtime_path)) {
        l.load_file(runtime_path, FileKind::Runtime, "runtime file " + runtime_path);
        l.apply_completed_fp();
    }

    // HTTP proxy file: the default may be missing (no proxy); a named one must exist.
    size_t proxy_index = index("http-proxy-config");
    const Config::Value* proxy_named = explicit_value(proxy_index, cl.assignments, env);
    std::string proxy_path = fs::expand_home(proxy_named ? proxy_named->text : l.config.str("http-proxy-config"));
    if ((proxy_named || options.find_files) && fs::exists(proxy_path))
        l.load_file(proxy_path, FileKind::Proxy, "file " + proxy_path);
    else if (proxy_named)
        l.errors.push_back(format("HTTP proxy config %s (%s): %s", proxy_path.c_str(), proxy_named->source.c_str(),
                                  errno_text(ENOENT).c_str()));

    for (const Assignment& a : env) l.set(a.index, a.value);
    for (const Assignment& a : cl.assignments) l.set(a.index, a.value);
    // Once fleet provisioning has completed, its identity wins even over the command line: the
    // Device Client's trusted-user command line names the claim with --cert/--key, and after
    // provisioning the same command line must run as the provisioned thing.
    l.apply_completed_fp();

    l.settle_deferred();
    validate(l);
    if (!l.errors.empty()) return Error(join(l.errors, "\n"));

    for (const Key& k : keys())
        if ((k.flags & kSecret) && l.config.has(k.name)) log::add_secret(l.config.str(k.name));

    out.config = std::move(l.config);
    out.warnings = std::move(l.warnings);
    out.positional = std::move(cl.positional);
    out.export_path = std::move(cl.export_path);
    return out;
}

Status check_required(const Config& config) {
    std::vector<std::string> missing;
    bool secure_element = config.flag("secure-element.enabled");
    for (const Key& k : keys()) {
        if (!(k.flags & kRequired) || config.has(k.name)) continue;
        if ((k.flags & kUnlessSecureElement) && secure_element) continue;
        missing.push_back(k.flag ? format("%s (%s)", k.name, k.flag) : std::string(k.name));
    }
    if (missing.empty()) return {};
    return Error("missing required settings to connect: " + join(missing, ", "));
}

bool in_use(const Config& config, const Key& k) {
    if (const Key* gate = gate_of(k); gate && !config.flag(gate->name)) return false;
    if ((k.flags & kUnlessSecureElement) && config.flag("secure-element.enabled")) return false;
    // Log files matter only when something writes them.
    if (strcmp(k.name, "logging.file") == 0) return config.str("logging.type") == "FILE";
    if (strcmp(k.name, "logging.sdk-log-file") == 0) return config.flag("logging.enable-sdk-logging");
    return true;
}

std::string export_file(const Config& config, FileKeys which) {
    // export_json writes what is present: clear what this file should not hold.
    const Config defaults;
    Config out = config;
    for (const Key& k : keys()) {
        Config::Value* v = out.value_mut(k.name);
        bool keep = k.where == Where::Main && v->present &&
                    ((k.flags & kRequired) || (which == FileKeys::Changed ? v->text != defaults.str(k.name)
                                                                           : v->source != "default"));
        if (!keep) *v = Config::Value{};
    }
    return export_json(out, true, true);
}

PermissionReport check_permissions(const Config& config) {
    PermissionReport r;
    for (const Key& k : keys()) {
        if (!k.mode || !config.has(k.name) || !in_use(config, k)) continue;
        std::string path = config.path(k.name);
        struct stat st;
        if (::stat(path.c_str(), &st) != 0) {
            int err = errno;
            if (!(k.flags & kPermRequired)) continue;  // created later with the right mode
            if (k.flags & kMissingWarns) {
                std::string fallback =
                    strcmp(k.name, "root-ca") == 0 ? "; using the system trust store" : std::string();
                r.warnings.push_back(format("%s: %s: %s%s", k.name, path.c_str(), errno_text(err).c_str(),
                                            fallback.c_str()));
            } else {
                r.errors.push_back(format("%s: %s: %s", k.name, path.c_str(), errno_text(err).c_str()));
            }
            continue;
        }
        Status mode_ok = fs::check_mode(path, k.mode);
        if (!mode_ok) {
            if (k.flags & kPermRequired)
                r.errors.push_back(format("%s: %s", k.name, mode_ok.error().c_str()));
            else
                r.warnings.push_back(format("%s (recommended): %s", k.name, mode_ok.error().c_str()));
        }
        if (k.flags & kDirPrivate) {
            Status dir_ok = fs::check_mode(fs::dirname(path), 0700);
            if (!dir_ok)
                r.warnings.push_back(format("%s (recommended): directory %s", k.name, dir_ok.error().c_str()));
        }
    }
    return r;
}

size_t unknown_key_lookups() { return g_unknown_lookups; }

}  // namespace iot::config
