// The one logger: DEBUG/INFO/WARN/ERROR to stdout, a file (reopened on SIGHUP for logrotate) or
// syslog. Line format: "<UTC time> <LEVEL> [<component>] <message>".
//
// Secrets never reach a sink: the logger itself redacts PEM private keys, the values of
// secret-named JSON fields and headers (privateKey, certificateOwnershipToken, clientAccessToken,
// access-token, passwords, PINs) and every value registered with add_secret(), so no caller has to
// remember to.
#pragma once
#include <string>
#include <string_view>

#include "base/result.hpp"

namespace iot::log {

enum class Level { Debug = 0, Info = 1, Warn = 2, Error = 3 };
enum class Sink { Stdout, Stderr, File, Syslog };

Result<Level> parse_level(std::string_view name);  // case-insensitive DEBUG|INFO|WARN|ERROR
Result<Sink> parse_sink(std::string_view name);    // case-insensitive STDOUT|STDERR|FILE|SYSLOG
const char* level_name(Level level);

// Configure the process-wide logger. For Sink::File, `target` is the file (created 0600);
// for Sink::Syslog it is the ident. Fails only if the file cannot be opened (then stays on stdout).
Status configure(Level level, Sink sink, const std::string& target = {});
void set_level(Level level);
Level level();
// Reopen the log file after logrotate moved it (SIGHUP). No-op for other sinks.
Status reopen();
// A value that must never be written (a PIN, a proxy password, a token). Short values (< 4
// bytes) are ignored: redacting every "ab" would mangle logs without protecting anything.
void add_secret(std::string_view value);
void clear_secrets();
// What the logger writes for `message` (exposed for tests).
std::string redact(std::string_view message);

void write(Level level, const char* component, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
bool enabled(Level level);

}  // namespace iot::log

#define LOG_DEBUG(comp, ...) \
    do { if (::iot::log::enabled(::iot::log::Level::Debug)) ::iot::log::write(::iot::log::Level::Debug, comp, __VA_ARGS__); } while (0)
#define LOG_INFO(comp, ...) ::iot::log::write(::iot::log::Level::Info, comp, __VA_ARGS__)
#define LOG_WARN(comp, ...) ::iot::log::write(::iot::log::Level::Warn, comp, __VA_ARGS__)
#define LOG_ERROR(comp, ...) ::iot::log::write(::iot::log::Level::Error, comp, __VA_ARGS__)
