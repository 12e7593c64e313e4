// iot-job-run: run a job document from a shell with the daemon's engine: a local file, or the
// next (or a given) job fetched from the cloud, run, and reported.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "applet.hpp"
#include "base/strings.hpp"
#include "base/time.hpp"
#include "config/config.hpp"
#include "fs/fs.hpp"
#include "jobs/api.hpp"
#include "jobs/feature.hpp"
#include "log/log.hpp"
#include "loop/loop.hpp"
#include "mqtt/client.hpp"

namespace {
const char* const kName = "iot-job-run";

struct Options {
    std::string file;
    std::string job_id;
    bool next = false;
    bool dry_run = false;
    bool json = false;
    std::vector<const char*> config_args;  // everything else goes to the config loader
};

const char* type_name(iot::jobs::ActionType t) {
    switch (t) {
        case iot::jobs::ActionType::RunHandler: return "runHandler";
        case iot::jobs::ActionType::RunCommand: return "runCommand";
        case iot::jobs::ActionType::Reboot: return "reboot";
    }
    return "?";
}

void print_plan(const iot::jobs::Document& doc, const iot::jobs::RunnerOptions& ro) {
    printf("job document: %s schema, version %s, includeStdOut %s\n", doc.old_schema ? "old" : "new",
           doc.version.c_str(), doc.include_stdout ? "true" : "false");
    size_t total = doc.steps.size() + (doc.final_step ? 1 : 0);
    for (size_t i = 0; i < total; ++i) {
        const auto& a = i < doc.steps.size() ? doc.steps[i] : *doc.final_step;
        printf("%s %zu/%zu %s (%s)", i < doc.steps.size() ? "step" : "final", i + 1, total, a.name.c_str(), type_name(a.type));
        if (a.type == iot::jobs::ActionType::Reboot) {
            printf(": %s\n", iot::join(ro.reboot_command, " ").c_str());
        } else {
            auto argv = iot::jobs::resolve_argv(a, ro.resolve);
            printf(": %s\n", argv ? iot::join(*argv, " ").c_str() : ("cannot run: " + argv.error()).c_str());
        }
        if (!a.run_as_user.empty()) printf("    as user %s\n", a.run_as_user.c_str());
        if (a.ignore_step_failure) printf("    a failure is ignored\n");
        if (a.timeout_s) printf("    limit %lld s\n", a.timeout_s);
    }
}

// The update the cloud would receive for `r`.
std::string result_json(const iot::jobs::RunResult& r, bool include_stdout) {
    return iot::jobs::api::status_payload(iot::jobs::final_status(r), iot::jobs::status_details(r, include_stdout));
}

void print_tail(const char* label, const std::string& text) {
    if (text.empty()) return;
    fprintf(stderr, "  %s (last %zu bytes):\n", label, text.size());
    for (const auto& line : iot::split(text, '\n'))
        if (!line.empty()) fprintf(stderr, "    %s\n", line.c_str());
}

// Run `doc` on `loop`; returns the result. SIGINT/SIGTERM cancel the running step.
iot::jobs::RunResult run_document(iot::EventLoop& loop, const iot::jobs::Document& doc,
                                  const iot::jobs::RunnerOptions& ro, size_t first_step = 0) {
    iot::jobs::JobRunner runner(loop, ro);
    iot::jobs::RunResult result;
    bool finished = false;
    size_t total = doc.steps.size() + (doc.final_step ? 1 : 0);
    iot::jobs::JobRunner::Callbacks cb;
    cb.step_started = [&](size_t i, const iot::jobs::Action& a) {
        fprintf(stderr, "%s: step %zu/%zu %s: started\n", kName, i + 1, total, a.name.c_str());
    };
    cb.step_finished = [&](const iot::jobs::StepResult& r) {
        fprintf(stderr, "%s: step %zu/%zu %s: %s: %s\n", kName, r.index + 1, total, r.name.c_str(),
                r.ok ? "succeeded" : "failed", r.reason.c_str());
        print_tail("stdout", r.stdout_tail);
        print_tail("stderr", r.stderr_tail);
    };
    cb.done = [&](const iot::jobs::RunResult& r) {
        result = r;
        finished = true;
    };
    auto cancel = [&] { runner.cancel("interrupted"); };
    (void)loop.on_signal(SIGINT, cancel);
    (void)loop.on_signal(SIGTERM, cancel);
    runner.start(doc, first_step, std::move(cb));
    while (!finished) loop.run_once();
    return result;
}

int run_local(const Options& o, const iot::config::Config& cfg) {
    auto text = iot::fs::read_file(o.file == "-" ? "/dev/stdin" : o.file, 1024 * 1024);
    if (!text) return iot::fail(kName, iot::kExitUsage, "%s", text.error().c_str());
    auto doc = iot::jobs::parse_document(*text);
    if (!doc) return iot::fail(kName, iot::kExitUsage, "%s: invalid job document: %s", o.file.c_str(), doc.error().c_str());
    auto ro = iot::jobs::runner_options(cfg);
    if (o.dry_run) {
        print_plan(*doc, ro);
        return iot::kExitOk;
    }
    iot::EventLoop loop;
    auto r = run_document(loop, *doc, ro);
    bool ok = r.outcome == iot::jobs::RunResult::Outcome::Succeeded;
    fprintf(stderr, "%s: %s: %s\n", kName, ok ? "SUCCEEDED" : "FAILED", r.reason.c_str());
    if (o.json) printf("%s\n", result_json(r, doc->include_stdout).c_str());
    return ok ? iot::kExitOk : iot::kExitFailed;
}

// One request to the cloud and its answer, waiting on the loop.
iot::mqtt::Response ask(iot::EventLoop& loop, iot::mqtt::Client& client, const std::string& topic, std::string payload,
                        const std::string& token) {
    iot::mqtt::Request r;
    r.topic = topic;
    r.payload = std::move(payload);
    r.accepted = iot::jobs::api::Topics::accepted(topic);
    r.rejected = iot::jobs::api::Topics::rejected(topic);
    r.client_token = token;
    r.timeout_ms = 15000;
    iot::mqtt::Response out{iot::mqtt::Response::Outcome::Timeout, {}, {}};
    bool done = false;
    client.request(std::move(r), [&](const iot::mqtt::Response& resp) {
        out = resp;
        done = true;
    });
    while (!done) loop.run_once();
    return out;
}

std::string rejection_text(const iot::mqtt::Response& r) {
    if (r.outcome == iot::mqtt::Response::Outcome::Timeout) return "no answer within 15 s";
    auto rej = iot::jobs::api::parse_rejection(r.payload);
    return rej ? rej->code + ": " + rej->message : r.payload;
}

int run_cloud(const Options& o, const iot::config::Config& cfg) {
    iot::Status required = iot::config::check_required(cfg);
    if (!required) return iot::fail(kName, iot::kExitUsage, "%s", required.error().c_str());
    iot::EventLoop loop;
    iot::mqtt::Options mo = iot::mqtt::options_from_config(cfg);
    mo.clean_session = true;  // a one-shot client must not take over the daemon's session
    iot::mqtt::Client client(loop, mo);
    iot::Status st = client.start();
    if (!st) return iot::fail(kName, iot::kExitFailed, "%s", st.error().c_str());
    iot::jobs::api::Topics topics(cfg.str("thing-name"));

    std::string token = iot::random_token(16);
    auto resp = o.next ? ask(loop, client, topics.start_next(), iot::jobs::api::start_next_request(token), token)
                       : ask(loop, client, topics.describe(o.job_id),
                             "{\"includeJobDocument\":true,\"clientToken\":" + iot::json::quote(token) + "}", token);
    if (resp.outcome != iot::mqtt::Response::Outcome::Accepted)
        return iot::fail(kName, iot::kExitFailed, "cannot fetch the job: %s%s%s", rejection_text(resp).c_str(),
                         client.connected() ? "" : "; not connected: ", client.connected() ? "" : client.last_error().c_str());
    auto exec = iot::jobs::api::parse_execution(resp.payload);
    if (!exec) return iot::fail(kName, iot::kExitFailed, "%s", exec.error().c_str());
    if (!*exec) {
        fprintf(stderr, "%s: no pending job\n", kName);
        return iot::kExitOk;
    }
    const auto& e = **exec;
    fprintf(stderr, "%s: job %s (execution %lld, %s)\n", kName, e.job_id.c_str(), e.execution_number, e.status.c_str());
    if (iot::jobs::api::is_terminal(e.status))
        return iot::fail(kName, iot::kExitFailed, "job %s is already %s", e.job_id.c_str(), e.status.c_str());

    auto report = [&](const std::string& status, const iot::jobs::api::Details& d, long long version) {
        std::string t = iot::random_token(16);
        auto r = ask(loop, client, topics.update(e.job_id),
                     iot::jobs::api::update_request(status, d, version, e.execution_number, t), t);
        if (r.outcome != iot::mqtt::Response::Outcome::Accepted)
            fprintf(stderr, "%s: %s not accepted: %s\n", kName, status.c_str(), rejection_text(r).c_str());
        return r.outcome == iot::mqtt::Response::Outcome::Accepted;
    };
    auto doc = iot::jobs::parse_document(e.document);
    if (!doc) {
        report("REJECTED", {{"reason", "invalid job document: " + doc.error()}}, 0);
        return iot::fail(kName, iot::kExitUsage, "job %s: invalid job document: %s", e.job_id.c_str(), doc.error().c_str());
    }
    if (e.status == "QUEUED" && !report("IN_PROGRESS", {}, 0)) return iot::kExitFailed;
    auto r = run_document(loop, *doc, iot::jobs::runner_options(cfg));
    bool ok = r.outcome == iot::jobs::RunResult::Outcome::Succeeded;
    bool reported = report(iot::jobs::final_status(r), iot::jobs::status_details(r, doc->include_stdout), 0);
    fprintf(stderr, "%s: %s: %s%s\n", kName, ok ? "SUCCEEDED" : "FAILED", r.reason.c_str(), reported ? "" : " (not reported)");
    if (o.json) printf("%s\n", result_json(r, doc->include_stdout).c_str());
    bool stopped = false;
    client.stop([&] { stopped = true; });
    int64_t deadline = iot::monotonic_ms() + 3000;
    while (!stopped && iot::monotonic_ms() < deadline) loop.run_once(100);
    return ok && reported ? iot::kExitOk : iot::kExitFailed;
}
}  // namespace

void iot_job_run_help() {
    printf("Usage: iot-job-run FILE.json [--handler-dir DIR] [--dry-run] [--json] [CONFIG OPTIONS]\n"
           "       iot-job-run --next | --job-id ID [--json] [CONFIG OPTIONS]\n\n"
           "Runs a job document with iotd's engine: Device Client documents (old and new schema) and\n"
           "handlers work unchanged. FILE may be - for standard input.\n\n"
           "  --dry-run      validate the document and show what each step would run\n"
           "  --json         print the status update the cloud would receive on standard output\n"
           "  --handler-dir  the handler directory for \"path\": \"default\" (jobs.handler-directory)\n"
           "  --next         fetch the next pending job from the cloud (start-next), run it, report it\n"
           "  --job-id ID    fetch job ID (describe), run it, report it\n"
           "Any iotd option (--config-file, --endpoint, --jobs-step-timeout, ...) is accepted too.\n\n"
           "Progress goes to standard error. Exit codes: 0 the job succeeded (or nothing was pending),\n"
           "1 it failed or could not be reported, 2 a bad document or bad usage.\n");
}

int iot_job_run_main(int argc, char** argv) {
    Options o;
    std::vector<std::string> storage;
    storage.reserve(static_cast<size_t>(argc));
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--dry-run") o.dry_run = true;
        else if (a == "--json") o.json = true;
        else if (a == "--next") o.next = true;
        else if (a == "--job-id" || iot::starts_with(a, "--job-id=")) {
            if (a == "--job-id" && i + 1 >= argc) return iot::fail(kName, iot::kExitUsage, "--job-id needs a job id");
            o.job_id = a == "--job-id" ? argv[++i] : a.substr(9);
        } else if (a == "--handler-dir" || iot::starts_with(a, "--handler-dir=")) {
            if (a == "--handler-dir" && i + 1 >= argc) return iot::fail(kName, iot::kExitUsage, "--handler-dir needs a directory");
            storage.push_back("--jobs-handler-dir=" + (a == "--handler-dir" ? std::string(argv[++i]) : a.substr(14)));
            o.config_args.push_back(storage.back().c_str());
        } else if (a == "-" || a[0] != '-') {
            if (!o.file.empty()) return iot::fail(kName, iot::kExitUsage, "one job document at a time (%s and %s)", o.file.c_str(), a.c_str());
            o.file = a;
        } else {
            o.config_args.push_back(argv[i]);
            // A config flag's value is its next argument, not a job document.
            const iot::config::Key* key = iot::config::find_flag(a);
            if (key && !(key->flags & iot::config::kNoArg) && i + 1 < argc) o.config_args.push_back(argv[++i]);
        }
    }
    int modes = !o.file.empty() + o.next + !o.job_id.empty();
    if (modes != 1) return iot::fail(kName, iot::kExitUsage, "give a job document FILE, --next or --job-id ID (see --help)");
    auto loaded = iot::config::load(static_cast<int>(o.config_args.size()), o.config_args.data());
    if (!loaded) return iot::fail(kName, iot::kExitUsage, "%s", loaded.error().c_str());
    if (loaded->help) {
        iot_job_run_help();
        return iot::kExitOk;
    }
    // The engine logs as iotd does; a shell user wants warnings and errors only, unless asked.
    auto level = iot::log::parse_level(loaded->config.is_set("logging.level") ? loaded->config.str("logging.level") : "WARN");
    (void)iot::log::configure(level ? *level : iot::log::Level::Warn, iot::log::Sink::Stderr);
    ::signal(SIGPIPE, SIG_IGN);
    return o.file.empty() ? run_cloud(o, loaded->config) : run_local(o, loaded->config);
}
