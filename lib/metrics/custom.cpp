#include "metrics/custom.hpp"

#include <arpa/inet.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <tuple>

#include "base/process.hpp"
#include "base/strings.hpp"
#include "fs/fs.hpp"

namespace iot::metrics {
namespace {

constexpr size_t kMaxOutput = 64 * 1024;  // more than any sane metric; bounds memory per source
constexpr size_t kMaxNameLength = 128;
constexpr int64_t kMaxTimeoutS = 300;
const char* const kSearchPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// Defender's rule for metric names.
bool valid_name(const std::string& name) {
    if (name.empty() || name.size() > kMaxNameLength) return false;
    for (char c : name)
        if (!isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != ':') return false;
    return true;
}

std::vector<std::string> tokens(const std::string& text, const char* separators) {
    std::vector<std::string> out;
    size_t i = 0;
    while (i < text.size()) {
        size_t start = text.find_first_not_of(separators, i);
        if (start == std::string::npos) break;
        size_t end = text.find_first_of(separators, start);
        if (end == std::string::npos) end = text.size();
        out.push_back(text.substr(start, end - start));
        i = end;
    }
    return out;
}

Result<double> parse_number(const std::string& s) {
    errno = 0;
    char* end = nullptr;
    double v = strtod(s.c_str(), &end);
    if (end == s.c_str() || *end != '\0' || errno == ERANGE || !std::isfinite(v))
        return Error(format("%s is not a number", json::quote(s).c_str()));
    return v;
}

bool valid_ip(const std::string& s) {
    unsigned char buf[16];
    return ::inet_pton(AF_INET, s.c_str(), buf) == 1 || ::inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

std::string last_line(const std::string& text) {
    std::string_view t = trim(text);
    size_t nl = t.rfind('\n');
    std::string line(nl == std::string_view::npos ? t : t.substr(nl + 1));
    return line.size() > 200 ? line.substr(0, 200) + "..." : line;
}

}  // namespace

const char* custom_type_name(CustomType t) {
    switch (t) {
        case CustomType::Number:
            return "number";
        case CustomType::NumberList:
            return "number-list";
        case CustomType::StringList:
            return "string-list";
        case CustomType::IpList:
            return "ip-list";
    }
    return "?";
}

const char* custom_report_key(CustomType t) {
    switch (t) {
        case CustomType::Number:
            return "number";
        case CustomType::NumberList:
            return "number_list";
        case CustomType::StringList:
            return "string_list";
        case CustomType::IpList:
            return "ip_list";
    }
    return "?";
}

Result<std::vector<CustomSpec>> parse_custom_specs(const cJSON* object) {
    std::vector<CustomSpec> out;
    if (!object) return out;
    if (!cJSON_IsObject(object)) return Error("expected an object of metrics keyed by name");
    std::vector<std::string> problems;
    for (const cJSON* entry = object->child; entry; entry = entry->next) {
        CustomSpec spec;
        spec.name = entry->string;
        std::string what = format("custom metric %s", json::quote(spec.name).c_str());
        auto problem = [&](const std::string& p) { problems.push_back(what + ": " + p); };
        if (!valid_name(spec.name)) {
            problem("a name is 1 to 128 characters of letters, digits, '_', '-' and ':'");
            continue;
        }
        if (!cJSON_IsObject(entry)) {
            problem(
                format("expected an object with \"type\" and \"command\" or \"file\", got %s", json::type_name(entry)));
            continue;
        }
        std::string type = json::string_or(entry, "type", "");
        bool known = false;
        for (CustomType t : {CustomType::Number, CustomType::NumberList, CustomType::StringList, CustomType::IpList}) {
            // Defender's own name for ip-list is accepted too.
            if (type == custom_type_name(t) || (t == CustomType::IpList && type == "ip-address-list")) {
                spec.type = t;
                known = true;
            }
        }
        if (!known) {
            problem(format("\"type\" must be one of number, number-list, string-list, ip-list (got %s)",
                           json::print(json::get(entry, "type")).c_str()));
            continue;
        }
        const cJSON* command = json::get(entry, "command");
        const cJSON* file = json::get(entry, "file");
        if (!!command == !!file) {
            problem("give exactly one of \"command\" and \"file\"");
            continue;
        }
        if (file) {
            if (!cJSON_IsString(file) || !*file->valuestring) {
                problem("\"file\" must be a non-empty path");
                continue;
            }
            spec.file = fs::expand_home(file->valuestring);
        } else if (cJSON_IsString(command)) {
            spec.command = tokens(command->valuestring, " \t");
        } else if (cJSON_IsArray(command)) {
            for (const cJSON* a = command->child; a; a = a->next) {
                if (!cJSON_IsString(a)) {
                    spec.command.clear();
                    break;
                }
                spec.command.push_back(a->valuestring);
            }
        }
        if (!file && (spec.command.empty() || spec.command[0].empty())) {
            problem("\"command\" must be a non-empty array of strings (argv) or a string");
            continue;
        }
        if (const cJSON* timeout = json::get(entry, "timeout")) {
            if (!cJSON_IsNumber(timeout) || timeout->valuedouble <= 0 || timeout->valuedouble > kMaxTimeoutS) {
                problem(format("\"timeout\" must be a number of seconds from 0 to %lld",
                               static_cast<long long>(kMaxTimeoutS)));
                continue;
            }
            spec.timeout_ms = static_cast<int64_t>(timeout->valuedouble * 1000);
        }
        for (const cJSON* field = entry->child; field; field = field->next) {
            std::string f = field->string;
            if (f != "type" && f != "command" && f != "file" && f != "timeout")
                problems.push_back(what + ": unknown field " + json::quote(f) +
                                   " (fields: type, command, file, timeout)");
        }
        out.push_back(std::move(spec));
    }
    if (!problems.empty()) return Error(join(problems, "; "));
    return out;
}

Result<CustomValue> parse_custom_output(const CustomSpec& spec, const std::string& output, size_t max_list) {
    CustomValue v;
    v.name = spec.name;
    v.type = spec.type;
    switch (spec.type) {
        case CustomType::Number: {
            std::string text(trim(output));
            if (text.empty()) return Error("no value (expected one number)");
            auto n = parse_number(text);
            if (!n) return Error(n.error() + " (expected one number)");
            v.number = *n;
            return v;
        }
        case CustomType::NumberList:
            for (const std::string& t : tokens(output, " \t\r\n,")) {
                auto n = parse_number(t);
                if (!n) return n.err();
                v.numbers.push_back(*n);
            }
            break;
        case CustomType::IpList:
            for (const std::string& t : tokens(output, " \t\r\n,")) {
                if (!valid_ip(t)) return Error(format("%s is not an IPv4 or IPv6 address", json::quote(t).c_str()));
                v.strings.push_back(t);
            }
            break;
        case CustomType::StringList:
            for (const std::string& line : split(output, '\n')) {
                std::string_view t = trim(line);
                if (!t.empty()) v.strings.emplace_back(t);
            }
            break;
    }
    size_t n = spec.type == CustomType::NumberList ? v.numbers.size() : v.strings.size();
    if (n > max_list) return Error(format("%zu values, more than device-defender.max-list-size (%zu)", n, max_list));
    return v;
}

// ---- CustomCollector

struct CustomCollector::Job {
    const CustomSpec* spec = nullptr;
    pid_t pid = -1;
    Fd out, err;
    EventLoop::WatchId out_watch = 0, err_watch = 0;
    EventLoop::TimerId timer = 0;
    std::string output, errors;
    bool exited = false, timed_out = false, too_long = false, finished = false;
    int wait_status = 0;
    Result<CustomValue> result = Error("not run");
};

CustomCollector::CustomCollector(EventLoop& loop) : loop_(loop) {}

CustomCollector::~CustomCollector() {
    for (auto& job : jobs_) {
        if (job->out_watch) loop_.unwatch(job->out_watch);
        if (job->err_watch) loop_.unwatch(job->err_watch);
        loop_.cancel_timer(job->timer);
        if (job->pid > 0 && !job->exited) ::kill(-job->pid, SIGKILL);
    }
    // Child callbacks still registered with the loop hold a Job that is kept alive by them (see
    // start), so nothing they touch is freed here.
}

void CustomCollector::start(const std::vector<CustomSpec>& specs, size_t max_list,
                            std::function<void(CustomResult)> done) {
    jobs_.clear();
    max_list_ = max_list;
    done_ = std::move(done);
    running_ = true;
    // A child that is already gone is reported by watch_child at once: hold the result back until
    // every job has been started.
    starting_ = true;
    for (const CustomSpec& spec : specs) {
        jobs_.push_back(std::make_unique<Job>());
        Job& job = *jobs_.back();
        job.spec = &spec;
        if (!spec.file.empty()) {
            auto text = fs::read_file(spec.file, kMaxOutput);
            job.result = text ? parse_custom_output(spec, *text, max_list) : Result<CustomValue>(text.err());
            if (!job.result) job.result = job.result.err().wrap(spec.file);
            job.exited = job.finished = true;
            continue;
        }
        SpawnOptions so;
        so.argv = spec.command;
        const char* home = getenv("HOME");
        so.env = {std::string("PATH=") + kSearchPath, "LANG=C", std::string("HOME=") + (home && *home ? home : "/")};
        so.search_path = kSearchPath;
        auto child = spawn(so);
        if (!child) {
            job.result = child.err();
            job.exited = job.finished = true;
            continue;
        }
        job.pid = child->pid;
        job.out = std::move(child->out);
        job.err = std::move(child->err);
        Job* jp = &job;
        job.out_watch = loop_.watch(job.out.get(), POLLIN, [this, jp](short) { read_job(*jp); });
        job.err_watch = loop_.watch(job.err.get(), POLLIN, [this, jp](short) { read_job(*jp); });
        job.timer = loop_.add_timer(spec.timeout_ms, [this, jp] {
            jp->timer = 0;
            if (jp->exited) return;
            jp->timed_out = true;
            ::kill(-jp->pid, SIGKILL);
        });
        // The loop keeps this callback until the child exits, possibly after we are gone: it
        // only touches our state through a flag that the destructor cannot leave dangling.
        std::weak_ptr<int> alive = alive_token();
        loop_.watch_child(job.pid, [this, jp, alive](int status) {
            if (alive.expired()) return;
            jp->exited = true;
            jp->wait_status = status;
            loop_.cancel_timer(jp->timer);
            jp->timer = 0;
            ::kill(-jp->pid, SIGKILL);  // whatever it left behind in its group
            read_job(*jp);
        });
    }
    starting_ = false;
    maybe_done();
}

std::weak_ptr<int> CustomCollector::alive_token() {
    if (!alive_) alive_ = std::make_shared<int>(0);
    return alive_;
}

void CustomCollector::read_job(Job& job) {
    char buf[4096];
    for (auto [fd, watch, sink] : {std::make_tuple(&job.out, &job.out_watch, &job.output),
                                   std::make_tuple(&job.err, &job.err_watch, &job.errors)}) {
        if (!*watch) continue;
        for (int rounds = 0; rounds < 16; ++rounds) {
            ssize_t n = ::read(fd->get(), buf, sizeof buf);
            if (n > 0) {
                if (sink->size() + static_cast<size_t>(n) > kMaxOutput) {
                    if (sink == &job.output) job.too_long = true;
                    continue;  // keep draining so the child is not blocked on a full pipe
                }
                sink->append(buf, static_cast<size_t>(n));
                continue;
            }
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
            loop_.unwatch(*watch);
            *watch = 0;
            fd->reset();
            break;
        }
    }
    if (job.exited && !job.out_watch && !job.err_watch && !job.finished) finish_job(job);
}

void CustomCollector::finish_job(Job& job) {
    job.finished = true;
    std::string prog = job.spec->command[0];
    if (job.timed_out) {
        job.result =
            Error(format("command %s: no result within %g s (killed)", prog.c_str(), job.spec->timeout_ms / 1000.0));
    } else if (!WIFEXITED(job.wait_status) || WEXITSTATUS(job.wait_status) != 0) {
        std::string why = last_line(job.errors);
        job.result = Error(format("command %s: %s%s%s", prog.c_str(), describe_wait_status(job.wait_status).c_str(),
                                  why.empty() ? "" : ": ", why.c_str()));
    } else if (job.too_long) {
        job.result = Error(format("command %s: more than %zu bytes of output", prog.c_str(), kMaxOutput));
    } else {
        job.result = parse_custom_output(*job.spec, job.output, max_list_);
        if (!job.result) job.result = job.result.err().wrap("command " + prog);
    }
    maybe_done();
}

void CustomCollector::maybe_done() {
    if (!running_ || starting_) return;
    for (const auto& job : jobs_)
        if (!job->finished) return;
    running_ = false;
    CustomResult r;
    for (const auto& job : jobs_) {
        if (job->result)
            r.values.push_back(*job->result);
        else
            r.errors.push_back(
                format("custom metric %s: %s", json::quote(job->spec->name).c_str(), job->result.error().c_str()));
    }
    auto done = std::move(done_);
    done_ = nullptr;
    if (done) done(std::move(r));
}

CustomResult collect_custom(EventLoop& loop, const std::vector<CustomSpec>& specs, size_t max_list) {
    CustomCollector c(loop);
    CustomResult out;
    bool finished = false;
    c.start(specs, max_list, [&](CustomResult r) {
        out = std::move(r);
        finished = true;
    });
    while (!finished) loop.run_once();
    return out;
}

}  // namespace iot::metrics
