#include "log/log.hpp"

#include <fcntl.h>
#include <syslog.h>
#include <unistd.h>

#include <cstdarg>
#include <cstring>
#include <vector>

#include "base/strings.hpp"
#include "base/time.hpp"

namespace iot::log {
namespace {

struct State {
    Level level = Level::Info;
    Sink sink = Sink::Stdout;
    std::string target;
    int fd = STDOUT_FILENO;
    std::vector<std::string> secrets;
};

State& state() {
    static State s;
    return s;
}

const char* const kLevelNames[] = {"DEBUG", "INFO", "WARN", "ERROR"};

// JSON fields and header names whose values are secrets.
const char* const kSecretFields[] = {
    "privateKey", "certificateOwnershipToken", "clientAccessToken", "destinationAccessToken",
    "sourceAccessToken", "access-token", "accessToken", "password", "http-proxy-password",
    "secure-element-pin", "pin",
};

bool is_value_end(char c, bool quoted) {
    return quoted ? c == '"' : (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ',' || c == ';' || c == '&');
}

// Replace the value after `"name":` (JSON), `name: ` (header) or `name=` (query/flag) with ***.
void redact_field(std::string& s, const std::string& name) {
    size_t pos = 0;
    while ((pos = s.find(name, pos)) != std::string::npos) {
        size_t i = pos + name.size();
        // Only a whole name: not "pin" inside "mapping".
        if (pos > 0 && (isalnum(static_cast<unsigned char>(s[pos - 1])) || s[pos - 1] == '-')) {
            pos = i;
            continue;
        }
        if (i < s.size() && s[i] == '"') ++i;
        while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
        if (i >= s.size() || (s[i] != ':' && s[i] != '=')) {
            pos = i;
            continue;
        }
        ++i;
        while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
        bool quoted = i < s.size() && s[i] == '"';
        if (quoted) ++i;
        size_t end = i;
        while (end < s.size() && !is_value_end(s[end], quoted)) {
            if (quoted && s[end] == '\\' && end + 1 < s.size()) ++end;
            ++end;
        }
        if (end > i) s.replace(i, end - i, "***");
        pos = i + 3;
    }
}

void redact_pem_keys(std::string& s) {
    size_t pos = 0;
    while ((pos = s.find("-----BEGIN ", pos)) != std::string::npos) {
        size_t label_end = s.find("-----", pos + 11);
        if (label_end == std::string::npos) return;
        std::string label = s.substr(pos + 11, label_end - pos - 11);
        if (label.find("PRIVATE KEY") == std::string::npos) {
            pos = label_end;
            continue;
        }
        size_t body = label_end + 5;
        std::string end_marker = "-----END " + label + "-----";
        size_t end = s.find(end_marker, body);
        size_t stop = end == std::string::npos ? s.size() : end;
        s.replace(body, stop - body, "[redacted]");
        pos = body + 10;
    }
}

void emit(Level level, const char* component, const std::string& msg) {
    State& st = state();
    if (st.sink == Sink::Syslog) {
        static const int prio[] = {LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR};
        syslog(prio[static_cast<int>(level)], "[%s] %s", component, msg.c_str());
        return;
    }
    std::string line = iso8601_utc(wall_ms());
    line += ' ';
    line += kLevelNames[static_cast<int>(level)];
    line += " [";
    line += component;
    line += "] ";
    line += msg;
    line += '\n';
    // One write() per line: lines from several processes (daemon and children) never interleave.
    const char* p = line.data();
    size_t left = line.size();
    while (left > 0) {
        ssize_t n = ::write(st.fd, p, left);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;
        }
        p += n;
        left -= static_cast<size_t>(n);
    }
}

Result<int> open_log_file(const std::string& path) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) return Error(format("cannot open log file %s: %s", path.c_str(), errno_text(errno).c_str()));
    return fd;
}

}  // namespace

Result<Level> parse_level(std::string_view name) {
    for (int i = 0; i < 4; ++i)
        if (iequals(name, kLevelNames[i])) return static_cast<Level>(i);
    return Error(format("unknown log level '%.*s' (expected DEBUG, INFO, WARN or ERROR)",
                        static_cast<int>(name.size()), name.data()));
}

Result<Sink> parse_sink(std::string_view name) {
    if (iequals(name, "STDOUT")) return Sink::Stdout;
    if (iequals(name, "STDERR")) return Sink::Stderr;
    if (iequals(name, "FILE")) return Sink::File;
    if (iequals(name, "SYSLOG")) return Sink::Syslog;
    return Error(format("unknown log type '%.*s' (expected STDOUT, STDERR, FILE or SYSLOG)",
                        static_cast<int>(name.size()), name.data()));
}

const char* level_name(Level level) { return kLevelNames[static_cast<int>(level)]; }

Status configure(Level level, Sink sink, const std::string& target) {
    State& st = state();
    st.level = level;
    if (st.sink == Sink::File && st.fd > STDERR_FILENO) ::close(st.fd);
    if (st.sink == Sink::Syslog) closelog();
    st.fd = STDOUT_FILENO;
    st.sink = Sink::Stdout;
    st.target = target;
    if (sink == Sink::Stderr) {
        st.fd = STDERR_FILENO;
        st.sink = Sink::Stderr;
    } else if (sink == Sink::File) {
        auto fd = open_log_file(target);
        if (!fd) return fd.err();
        st.fd = *fd;
        st.sink = Sink::File;
    } else if (sink == Sink::Syslog) {
        static std::string ident;  // openlog keeps the pointer
        ident = target.empty() ? "iotbox" : target;
        openlog(ident.c_str(), LOG_PID | LOG_NDELAY, LOG_DAEMON);
        st.sink = Sink::Syslog;
    }
    return {};
}

void set_level(Level level) { state().level = level; }
Level level() { return state().level; }
bool enabled(Level level) { return level >= state().level; }

Status reopen() {
    State& st = state();
    if (st.sink != Sink::File) return {};
    auto fd = open_log_file(st.target);
    if (!fd) return fd.err();
    ::close(st.fd);
    st.fd = *fd;
    return {};
}

void add_secret(std::string_view value) {
    if (value.size() < 4) return;
    for (const auto& s : state().secrets)
        if (s == value) return;
    state().secrets.emplace_back(value);
}

void clear_secrets() { state().secrets.clear(); }

std::string redact(std::string_view message) {
    std::string s(message);
    for (const auto& secret : state().secrets) s = replace_all(std::move(s), secret, "***");
    redact_pem_keys(s);
    for (const char* name : kSecretFields) redact_field(s, name);
    return s;
}

void write(Level level, const char* component, const char* fmt, ...) {
    if (!enabled(level)) return;
    va_list ap;
    va_start(ap, fmt);
    std::string msg = vformat(fmt, ap);
    va_end(ap);
    emit(level, component, redact(msg));
}

}  // namespace iot::log
