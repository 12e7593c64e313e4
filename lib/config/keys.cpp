// The key table and what is generated from it alone: lookup, environment names, --help, export.
#include <cstring>

#include "base/strings.hpp"
#include "config/config.hpp"
#include "fs/fs.hpp"

namespace iot::config {
namespace {

constexpr Type String = Type::String, Path = Type::Path, Bool = Type::Bool, Int = Type::Int, Enum = Type::Enum,
               JsonText = Type::JsonText, Array = Type::Array, Object = Type::Object;
constexpr Where Main = Where::Main, Runtime = Where::Runtime, Proxy = Where::Proxy, Cli = Where::Cli;

const std::vector<Key> kKeys = {
#define KEY(name, flag, type, choices, lo, hi, def, where, flags, mode, env, help) \
    Key{name, flag, type, choices, lo, hi, def, where, flags, mode, env, help},
#include "config/keys.def"
#undef KEY
};

const char* argument_name(const Key& k) {
    switch (k.type) {
        case Type::Path: return "PATH";
        case Type::Bool: return "true|false";
        case Type::Int: return "N";
        case Type::Enum: return k.choices;
        case Type::JsonText: return "JSON";
        default: return "VALUE";
    }
}

// The heading a key is listed under in --help.
std::string section_of(const Key& k) {
    if (k.where == Where::Proxy) return "HTTP proxy file (--http-proxy-config)";
    if (k.where == Where::Runtime) return "Runtime file (--runtime-config-file)";
    std::string_view name = k.name;
    size_t dot = name.rfind('.');
    if (dot == std::string_view::npos) return k.where == Where::Cli ? "Command line" : "General";
    return std::string(name.substr(0, dot));
}

// Append a paragraph wrapped at `width`, each line indented by `indent` spaces.
void wrap(std::string& out, std::string_view text, size_t indent, size_t width) {
    size_t col = indent;
    out.append(indent, ' ');
    for (const std::string& word : split(text, ' ')) {
        if (word.empty()) continue;
        if (col > indent && col + 1 + word.size() > width) {
            out += '\n';
            out.append(indent, ' ');
            col = indent;
        } else if (col > indent) {
            out += ' ';
            ++col;
        }
        out += word;
        col += word.size();
    }
    out += '\n';
}

// The object at dotted `prefix` inside `root`, created on the way.
cJSON* object_at(cJSON* root, const std::vector<std::string>& parts) {
    cJSON* node = root;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
        cJSON* child = cJSON_GetObjectItemCaseSensitive(node, parts[i].c_str());
        if (!cJSON_IsObject(child)) {
            child = cJSON_CreateObject();
            cJSON_AddItemToObject(node, parts[i].c_str(), child);
        }
        node = child;
    }
    return node;
}

cJSON* json_of(const Key& k, const Config::Value& v) {
    switch (k.type) {
        case Type::Bool: return cJSON_CreateBool(v.number != 0);
        case Type::Int: return cJSON_CreateNumber(static_cast<double>(v.number));
        case Type::Array:
        case Type::Object: {
            auto parsed = json::parse(v.text);
            return parsed ? parsed->release() : cJSON_CreateNull();
        }
        // JsonText stays an escaped string, the form the Device Client reads.
        default: return cJSON_CreateString(v.text.c_str());
    }
}

std::string print_document(const json::Json& root) { return json::print(root.get(), true) + "\n"; }

}  // namespace

const std::vector<Key>& keys() { return kKeys; }

const Key* find_key(std::string_view name) {
    for (const Key& k : kKeys)
        if (name == k.name) return &k;
    return nullptr;
}

const Key* find_flag(std::string_view flag) {
    for (const Key& k : kKeys)
        if (k.flag && flag == k.flag) return &k;
    return nullptr;
}

std::string env_name(const Key& key) {
    if (key.flags & kNoEnv) return {};
    std::string out = "IOTBOX_";
    for (const char* p = key.name; *p; ++p) out += (*p == '.' || *p == '-') ? '_' : *p;
    return to_upper(out);
}

std::string help_text() {
    std::string out =
        "Options (every AWS IoT Device Client flag is accepted; --flag=value works too).\n"
        "Precedence: defaults < config file < runtime file < environment (IOTBOX_<KEY>) < command line.\n";
    std::string section;
    for (const Key& k : kKeys) {
        std::string s = section_of(k);
        if (s != section) {
            section = s;
            out += "\n" + section + ":\n";
        }
        std::string head = "  ";
        if (k.flag) {
            head += k.flag;
            if (!(k.flags & kNoArg)) head += std::string(" ") + argument_name(k);
        } else if (k.env && k.where == Where::Cli) {
            head += std::string("env ") + k.env;
        } else {
            head += std::string("\"") + k.name + "\" (file only)";
        }
        out += head + "\n";
        std::string text = k.help;
        if (k.flag && !(k.flags & kAction) && k.where != Where::Cli) text += std::string(" [") + k.name + "]";
        // A flag without a value is off unless given: its "Default: false" would only be noise.
        if (k.def && !(k.flags & (kNoArg | kAction))) text += std::string(" Default: ") + k.def + ".";
        if (k.env && k.flag) text += std::string(" Environment: ") + k.env + ".";
        wrap(out, text, 6, 100);
    }
    return out;
}

std::string export_json(const Config& config, bool include_secrets, bool main_file_only) {
    json::Json root = json::make_object();
    for (const Key& k : kKeys) {
        if (k.flags & kAction) continue;
        if (main_file_only && k.where != Where::Main && k.where != Where::Runtime) continue;
        const Config::Value* v = config.value(k.name);
        if (!v || !v->present) continue;
        std::vector<std::string> parts = split(k.name, '.');
        cJSON* parent = object_at(root.get(), parts);
        cJSON* item = (k.flags & kSecret) && !include_secrets ? cJSON_CreateString("***") : json_of(k, *v);
        cJSON_AddItemToObject(parent, parts.back().c_str(), item);
    }
    return print_document(root);
}

std::string export_defaults() {
    // What the Device Client's template holds: every config-file key; those without a default as
    // "" so a person sees where to fill in (an empty value loads as "unset", with a warning).
    json::Json root = json::make_object();
    for (const Key& k : kKeys) {
        if (k.where != Where::Main) continue;
        std::vector<std::string> parts = split(k.name, '.');
        cJSON* item = nullptr;
        if (k.def) {
            Config::Value v;
            v.text = k.def;
            if (k.type == Type::Bool) v.number = strcmp(k.def, "true") == 0;
            if (k.type == Type::Int) v.number = parse_int(k.def).value_or(0);
            item = json_of(k, v);
        } else if (k.type == Type::String || k.type == Type::Path || k.type == Type::JsonText) {
            item = cJSON_CreateString("");
        } else {
            continue;
        }
        cJSON_AddItemToObject(object_at(root.get(), parts), parts.back().c_str(), item);
    }
    return print_document(root);
}

}  // namespace iot::config
