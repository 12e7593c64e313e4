// JSON on cJSON: an owning handle, parsing with line/column errors, typed getters that say what
// was wrong ("expected a string"), and lookup of the line a key sits on, so config errors can name
// the file, line and key.
#pragma once
#include <cjson/cJSON.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.hpp"

namespace iot::json {

struct Deleter {
    void operator()(cJSON* p) const { cJSON_Delete(p); }
};
using Json = std::unique_ptr<cJSON, Deleter>;

// Parse a whole document. The error names the line and column and quotes the text found there:
// "line 47, column 30: invalid JSON near 'replace_with_secure_element_slot_id_integer'".
Result<Json> parse(std::string_view text);
// Parse error position, 1-based line, for callers that want to look at that line.
struct ParseError {
    int line = 0;
    int column = 0;
    std::string near;
};
std::optional<ParseError> last_parse_error();

std::string print(const cJSON* item, bool pretty = false);
// JSON string literal with escapes, quotes included.
std::string quote(std::string_view s);

const char* type_name(const cJSON* item);  // "a string", "a number", "an object", ...

// Getters: nullptr/nullopt when absent; typed getters return an error when present but wrong.
const cJSON* get(const cJSON* object, const char* key);
Result<std::optional<std::string>> get_string(const cJSON* object, const char* key);
std::string string_or(const cJSON* object, const char* key, std::string fallback);
std::optional<long long> integer(const cJSON* object, const char* key);

Json make_object();
void set(cJSON* object, const char* key, std::string_view value);
void set(cJSON* object, const char* key, long long value);
void set_bool(cJSON* object, const char* key, bool value);

// 1-based line of the value at dotted `path` ("logging.level") in `text`, or 0 if not found.
// Searches for each key in turn after the previous one, which is exact for the config files
// people write and never worse than no line at all.
int line_of(std::string_view text, std::string_view path);

}  // namespace iot::json
