// String helpers the standard library lacks (C++17), printf-style formatting without <sstream>.
#pragma once
#include <cstdarg>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace iot {

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string vformat(const char* fmt, va_list ap);
// strerror(errno) as a std::string, for "open X: <why>" messages.
std::string errno_text(int err);

bool starts_with(std::string_view s, std::string_view prefix);
bool ends_with(std::string_view s, std::string_view suffix);
std::string_view trim(std::string_view s);
std::string to_lower(std::string_view s);
std::string to_upper(std::string_view s);
bool iequals(std::string_view a, std::string_view b);
std::vector<std::string> split(std::string_view s, char sep);
std::string join(const std::vector<std::string>& parts, std::string_view sep);
// Whole-string integer parse; nullopt for empty, trailing junk or out of range.
std::optional<long long> parse_int(std::string_view s);
// Replace every occurrence of `from` by `to`.
std::string replace_all(std::string s, std::string_view from, std::string_view to);
std::string to_hex(const unsigned char* data, size_t len);

}  // namespace iot
