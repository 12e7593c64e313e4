#include "json/json.hpp"

#include <cmath>
#include <cstring>

#include "base/strings.hpp"

namespace iot::json {
namespace {
std::optional<ParseError> g_last_error;

int line_at(std::string_view text, size_t offset, int* column) {
    int line = 1;
    size_t line_start = 0;
    for (size_t i = 0; i < offset && i < text.size(); ++i) {
        if (text[i] == '\n') {
            ++line;
            line_start = i + 1;
        }
    }
    if (column) *column = static_cast<int>(offset - line_start) + 1;
    return line;
}
}  // namespace

Result<Json> parse(std::string_view text) {
    g_last_error.reset();
    const char* end = nullptr;
    cJSON* root = cJSON_ParseWithLengthOpts(text.data(), text.size(), &end, false);
    if (root) {
        // Trailing content after the document ("{} {}") is an error too.
        size_t off = static_cast<size_t>(end - text.data());
        std::string_view rest = trim(text.substr(off));
        if (rest.empty() || rest == std::string_view("\0", 1)) return Json(root);
        cJSON_Delete(root);
        end = text.data() + off;
        while (static_cast<size_t>(end - text.data()) < text.size() && strchr(" \t\r\n", *end)) ++end;
    }
    const char* err = cJSON_GetErrorPtr();
    size_t offset = end ? static_cast<size_t>(end - text.data()) : 0;
    if (err && err >= text.data() && err <= text.data() + text.size()) offset = static_cast<size_t>(err - text.data());
    if (text.empty() || trim(text).empty()) {
        g_last_error = ParseError{1, 1, ""};
        return Error("empty document (expected a JSON object)");
    }
    ParseError pe;
    pe.line = line_at(text, offset, &pe.column);
    size_t stop = offset;
    while (stop < text.size() && stop - offset < 40 && text[stop] != '\n' && text[stop] != '\r') ++stop;
    pe.near = std::string(trim(text.substr(offset, stop - offset)));
    g_last_error = pe;
    if (offset >= text.size())
        return Error(format("line %d, column %d: invalid JSON: unexpected end of document", pe.line, pe.column));
    return Error(format("line %d, column %d: invalid JSON near '%s'", pe.line, pe.column, pe.near.c_str()));
}

std::optional<ParseError> last_parse_error() { return g_last_error; }

std::string print(const cJSON* item, bool pretty) {
    char* s = pretty ? cJSON_Print(item) : cJSON_PrintUnformatted(item);
    if (!s) return {};
    std::string out(s);
    cJSON_free(s);
    return out;
}

std::string quote(std::string_view s) {
    std::string out = "\"";
    for (char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (static_cast<unsigned char>(c) < 0x20)
                    out += format("\\u%04x", c);
                else
                    out += c;
        }
    }
    return out + "\"";
}

const char* type_name(const cJSON* item) {
    if (!item) return "nothing";
    if (cJSON_IsString(item)) return "a string";
    if (cJSON_IsNumber(item)) return "a number";
    if (cJSON_IsBool(item)) return "a boolean";
    if (cJSON_IsNull(item)) return "null";
    if (cJSON_IsArray(item)) return "an array";
    if (cJSON_IsObject(item)) return "an object";
    return "an invalid value";
}

const cJSON* get(const cJSON* object, const char* key) {
    if (!cJSON_IsObject(object)) return nullptr;
    return cJSON_GetObjectItemCaseSensitive(object, key);
}

Result<std::optional<std::string>> get_string(const cJSON* object, const char* key) {
    const cJSON* v = get(object, key);
    if (!v || cJSON_IsNull(v)) return std::optional<std::string>();
    if (!cJSON_IsString(v)) return Error(format("'%s' must be a string, not %s", key, type_name(v)));
    return std::optional<std::string>(v->valuestring);
}

std::string string_or(const cJSON* object, const char* key, std::string fallback) {
    const cJSON* v = get(object, key);
    return cJSON_IsString(v) ? std::string(v->valuestring) : fallback;
}

std::optional<long long> integer(const cJSON* object, const char* key) {
    const cJSON* v = get(object, key);
    if (!cJSON_IsNumber(v)) return std::nullopt;
    double d = v->valuedouble;
    if (std::floor(d) != d || std::fabs(d) > 9007199254740992.0) return std::nullopt;
    return static_cast<long long>(d);
}

Json make_object() { return Json(cJSON_CreateObject()); }
void set(cJSON* object, const char* key, std::string_view value) {
    cJSON_DeleteItemFromObjectCaseSensitive(object, key);
    cJSON_AddItemToObject(object, key, cJSON_CreateString(std::string(value).c_str()));
}
void set(cJSON* object, const char* key, long long value) {
    cJSON_DeleteItemFromObjectCaseSensitive(object, key);
    cJSON_AddItemToObject(object, key, cJSON_CreateNumber(static_cast<double>(value)));
}
void set_bool(cJSON* object, const char* key, bool value) {
    cJSON_DeleteItemFromObjectCaseSensitive(object, key);
    cJSON_AddItemToObject(object, key, cJSON_CreateBool(value));
}

int line_of(std::string_view text, std::string_view path) {
    size_t from = 0;
    for (const std::string& key : split(path, '.')) {
        std::string needle = "\"" + key + "\"";
        size_t pos = text.find(needle, from);
        if (pos == std::string_view::npos) return 0;
        from = pos + needle.size();
    }
    return line_at(text, from, nullptr);
}

}  // namespace iot::json
