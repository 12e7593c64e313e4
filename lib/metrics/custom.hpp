// Custom metrics: values a device owner defines in the configuration, read from a file or from
// the output of a command run without a shell under a timeout. Each bad source gives its own
// error naming the metric; the other metrics and the standard ones are reported regardless.
//
// Configuration (device-defender.custom-metrics, an object keyed by metric name, so a name cannot
// be given twice):
//   "custom-metrics": {
//     "cpu_temp":   {"type": "number",      "file": "/sys/class/thermal/thermal_zone0/temp"},
//     "open_files": {"type": "number",      "command": ["/usr/local/bin/count-open-files"], "timeout": 2},
//     "peers":      {"type": "ip-list",     "command": "/usr/local/bin/peers --active"},
//     "services":   {"type": "string-list", "file": "/run/services.txt"}
//   }
// "command" is an argv array, or a string split at spaces (no quoting, no shell). Output formats:
// number: one number; number-list and ip-list: values separated by spaces, commas or newlines;
// string-list: one value per non-empty line.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/result.hpp"
#include "json/json.hpp"
#include "loop/loop.hpp"

namespace iot::metrics {

enum class CustomType { Number, NumberList, StringList, IpList };
const char* custom_type_name(CustomType t);   // "number", "number-list", ...
const char* custom_report_key(CustomType t);  // "number", "number_list", "string_list", "ip_list"

struct CustomSpec {
    std::string name;
    CustomType type = CustomType::Number;
    std::vector<std::string> command;  // argv; empty when `file` is used
    std::string file;
    int64_t timeout_ms = 5000;
};

// The specs in a device-defender.custom-metrics object. Every problem is listed, each naming its
// metric: "custom metric 'x': type must be one of number, number-list, string-list, ip-list".
Result<std::vector<CustomSpec>> parse_custom_specs(const cJSON* object);

struct CustomValue {
    std::string name;
    CustomType type = CustomType::Number;
    double number = 0;
    std::vector<double> numbers;
    std::vector<std::string> strings;  // string-list and ip-list
};

// Turn a source's output into a value, validated for its type (numbers parse and are finite, IP
// addresses are IPv4 or IPv6). Lists longer than `max_list` are an error rather than cut silently.
Result<CustomValue> parse_custom_output(const CustomSpec& spec, const std::string& output, size_t max_list);

struct CustomResult {
    std::vector<CustomValue> values;  // in the order of the specs
    std::vector<std::string> errors;  // "custom metric 'x': command ...: exit status 3"
};

// Reads every custom metric; commands run concurrently on the loop (never blocking it), each
// stopped with SIGKILL to its process group at its timeout. `done` runs once, when all finished.
class CustomCollector {
public:
    // Commands get a clean environment (PATH, HOME, LANG=C) and a bare program name is looked up
    // in the standard system directories.
    explicit CustomCollector(EventLoop& loop);
    ~CustomCollector();
    CustomCollector(const CustomCollector&) = delete;
    CustomCollector& operator=(const CustomCollector&) = delete;

    void start(const std::vector<CustomSpec>& specs, size_t max_list, std::function<void(CustomResult)> done);
    bool running() const { return running_; }

private:
    struct Job;
    void finish_job(Job& job);
    void read_job(Job& job);
    void maybe_done();
    std::weak_ptr<int> alive_token();

    EventLoop& loop_;
    std::shared_ptr<int> alive_;  // expires with us: child callbacks outlive the collector
    std::vector<std::unique_ptr<Job>> jobs_;
    size_t max_list_ = 50;
    std::function<void(CustomResult)> done_;
    bool running_ = false;
    bool starting_ = false;
};

// Run `specs` to completion on `loop` (for one-shot callers).
CustomResult collect_custom(EventLoop& loop, const std::vector<CustomSpec>& specs, size_t max_list);

}  // namespace iot::metrics
