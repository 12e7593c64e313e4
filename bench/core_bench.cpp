// Micro benchmarks of the hot paths of the core library: every inbound MQTT message is matched
// against the handler table, every log line goes through redaction, every start parses config.
#include <benchmark/benchmark.h>

#include <string>

#include "config/config.hpp"
#include "json/json.hpp"
#include "log/log.hpp"
#include "mqtt/topic.hpp"

namespace {

void BM_TopicMatchJobsFilters(benchmark::State& state) {
    const char* filters[] = {"$aws/things/t1/jobs/notify-next", "$aws/things/t1/jobs/+/update/accepted",
                             "$aws/things/t1/jobs/+/update/rejected", "$aws/things/t1/jobs/start-next/accepted",
                             "$aws/things/t1/tunnels/notify", "$aws/things/t1/defender/metrics/json/accepted"};
    std::string topic = "$aws/things/t1/jobs/job-0042/update/accepted";
    for (auto _ : state) {
        int n = 0;
        for (const char* f : filters) n += iot::mqtt::topic_matches(f, topic);
        benchmark::DoNotOptimize(n);
    }
    state.SetItemsProcessed(state.iterations() * 6);
}
BENCHMARK(BM_TopicMatchJobsFilters);

void BM_LogRedactStatusUpdate(benchmark::State& state) {
    std::string msg = R"({"status":"SUCCEEDED","statusDetails":{"reason":"done","stdout":"installed 3 packages"},)"
                      R"("expectedVersion":2,"clientToken":"aB3dE5gH7j"})";
    for (auto _ : state) benchmark::DoNotOptimize(iot::log::redact(msg));
    state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(msg.size()));
}
BENCHMARK(BM_LogRedactStatusUpdate);

void BM_JsonParseJobDocument(benchmark::State& state) {
    std::string doc = R"({"clientToken":"x","execution":{"jobId":"j1","status":"QUEUED","versionNumber":1,)"
                      R"("executionNumber":1,"jobDocument":{"version":"1.0","steps":[{"action":{"name":"i",)"
                      R"("type":"runHandler","input":{"handler":"install-packages.sh","args":["lftp"]}}}]}}})";
    for (auto _ : state) {
        auto r = iot::json::parse(doc);
        benchmark::DoNotOptimize(r.ok());
    }
    state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(doc.size()));
}
BENCHMARK(BM_JsonParseJobDocument);

void BM_ConfigLoadDeviceClientFile(benchmark::State& state) {
    std::string path = std::string(IOT_SOURCE_DIR) + "/tests/unit/data/config/full.json";
    const char* argv[] = {"--config-file", path.c_str(), "--http-proxy-config", "/dev/null"};
    for (auto _ : state) {
        auto r = iot::config::load(2, argv);
        benchmark::DoNotOptimize(r.ok());
    }
}
BENCHMARK(BM_ConfigLoadDeviceClientFile);

}  // namespace
