// iot-config: writes (init), shows, checks and converts configuration, including an existing AWS
// IoT Device Client config. Every setting, its flag, type, default, help and mode rule comes from
// the key table (lib/config/keys.def); this file only decides what to ask, check and report.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "applet.hpp"
#include "base/strings.hpp"
#include "base/time.hpp"
#include "config/config.hpp"
#include "fs/fs.hpp"
#include "json/json.hpp"
#include "log/log.hpp"
#include "loop/loop.hpp"
#include "mqtt/client.hpp"
#include "tls/pki.hpp"

namespace {
namespace config = iot::config;
using config::Config;
using iot::format;

const char* const kName = "iot-config";
const char* const kSystemConfig = "/etc/iotbox/iotbox.conf";
const char* const kDeviceClientConfig = "~/.aws-iot-device-client/aws-iot-device-client.conf";
const char* const kPlaceholder = "<replace_with";
const int64_t kExpiryWarnDays = 30;
// The source of values init proposes itself: not the table's default, not the user's choice.
const char* const kInitSuggestion = "iot-config init";

struct Options {
    std::string command;
    std::string output;
    std::string from;
    bool force = false;
    bool no_prompt = false;
    bool sources = false;
    bool connect = false;
    bool json = false;
    bool show_secret = false;
    long long timeout_s = 10;
    std::vector<std::string> positional;   // get/set/unset: KEY [VALUE]; import: [FILE]
    std::vector<const char*> config_args;  // everything else goes to the config loader
};

// The applet's own options and the subcommands that take them; any other option is a config flag.
struct OwnOption {
    const char* flag;
    bool takes_value;
    const char* commands;  // space-separated
};
const OwnOption kOwnOptions[] = {
    {"--output", true, "init import convert export-default"},
    {"--force", false, "init import convert export-default"},
    {"--no-prompt", false, "init"},
    {"--sources", false, "show"},
    {"--json", false, "show"},
    {"--connect", false, "check"},
    {"--online", false, "check"},
    {"--timeout", true, "check"},
    {"--from", true, "import convert"},
    {"--show-secret", false, "get"},
};

// The subcommands, and how many arguments that are not options each takes.
struct Command {
    const char* name;
    size_t min_args, max_args;
    const char* usage;
};
const Command kCommands[] = {
    {"init", 0, 0, "init"},
    {"show", 0, 0, "show"},
    {"check", 0, 0, "check"},
    {"get", 1, 1, "get KEY"},
    {"set", 2, 2, "set KEY VALUE"},
    {"unset", 1, 1, "unset KEY"},
    {"import", 0, 1, "import [FILE]"},
    {"convert", 0, 1, "convert [FILE]"},  // the first name of import
    {"export-default", 0, 0, "export-default"},
};

const Command* find_command(const std::string& name) {
    for (const Command& c : kCommands)
        if (name == c.name) return &c;
    return nullptr;
}

// "2026-11-22 13:50 UTC"
std::string date_of(int64_t epoch_s) {
    std::string iso = iot::iso8601_utc(epoch_s * 1000);
    return iso.substr(0, 10) + " " + iso.substr(11, 5) + " UTC";
}

const config::Key& key_of(const char* name) {
    return *config::find_key(name);
}

// Where a value came from, for people: "file /etc/iotbox/iotbox.conf:3", "env IOTBOX_PORT",
// "--port", "default".
std::string origin(const Config::Value& v) {
    return v.file.empty() ? v.source : format("%s:%d", v.source.c_str(), v.line);
}

// The value at dotted `name` in a parsed file, or nullptr.
const cJSON* at_path(const cJSON* root, const std::string& name) {
    const cJSON* node = root;
    for (const std::string& part : iot::split(name, '.')) {
        if (!cJSON_IsObject(node)) return nullptr;
        node = iot::json::get(node, part.c_str());
    }
    return node;
}

// ---------------------------------------------------------------- checks shared by init and check

// What a value must be beyond its type (which the table checks): files exist, hold what their key
// says and have safe modes; names have the shape AWS accepts.
iot::Status check_value(const Config& cfg, const char* name) {
    const config::Key& k = key_of(name);
    if (!cfg.has(name)) return {};
    std::string value = cfg.str(name);
    std::string path = cfg.path(name);
    if (strcmp(name, "endpoint") == 0) {
        if (value.find("://") != std::string::npos || value.find_first_of("/ \t") != std::string::npos)
            return iot::Error(
                format("'%s' is not a host name (give it as xxxxxxxx-ats.iot.<region>.amazonaws.com, "
                       "without https:// or a path)",
                       value.c_str()));
    } else if (strcmp(name, "thing-name") == 0) {
        if (value.size() > 128 || value.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                          "0123456789:_-") != std::string::npos)
            return iot::Error(
                format("'%s' is not a thing name (1 to 128 letters, digits, ':', '_' or '-')", value.c_str()));
    } else if (strcmp(name, "cert") == 0) {
        auto info = iot::tls::inspect_file(path);
        if (!info) return info.err();
        int64_t now = iot::wall_ms() / 1000;
        if (info->not_after <= now)
            return iot::Error(
                format("%s expired on %s (a broker refuses it)", path.c_str(), date_of(info->not_after).c_str()));
    } else if (strcmp(name, "root-ca") == 0) {
        auto text = iot::fs::read_file(path, 1024 * 1024);
        if (!text) return text.err();
        auto chain = iot::tls::read_certificate_chain(*text);
        if (!chain) return chain.err().wrap(path);
    } else if (strcmp(name, "key") == 0) {
        auto key = iot::tls::load_private_key(path);
        if (!key) return key.err();
        if (cfg.has("cert")) {
            auto cert = iot::tls::load_certificate(cfg.path("cert"));
            if (cert && !iot::tls::key_matches_certificate(key->get(), cert->get()))
                return iot::Error(
                    format("%s does not belong to the certificate %s", path.c_str(), cfg.path("cert").c_str()));
        }
    }
    if (k.type == config::Type::Path && k.mode && (k.flags & config::kPermRequired) && iot::fs::exists(path))
        return iot::fs::check_mode(path, k.mode);
    return {};
}

// ---------------------------------------------------------------- init

// The questions init asks, in this order: what a connection needs, then the features. Their
// prompts, defaults and value checks come from the table; only the choice and order are init's.
const char* const kQuestions[] = {"endpoint",
                                  "thing-name",
                                  "cert",
                                  "key",
                                  "root-ca",
                                  "port",
                                  "jobs.enabled",
                                  "jobs.handler-directory",
                                  "tunneling.enabled",
                                  "device-defender.enabled"};

bool given(const Config& cfg, const char* name) {
    return cfg.is_set(name) && cfg.source(name) != kInitSuggestion;
}

bool relevant(const Config& cfg, const char* name) {
    return config::in_use(cfg, key_of(name));
}

// One question on the terminal, asked again until the answer passes. False at end of input.
bool ask(Config& cfg, const char* name) {
    const config::Key& k = key_of(name);
    std::string help = k.help;
    printf("\n%s\n", help.c_str());
    for (;;) {
        Config::Value old = *cfg.value(name);
        if (k.type == config::Type::Bool)
            printf("%s [%s]: ", name, cfg.flag(name) ? "Y/n" : "y/N");
        else if (cfg.has(name))
            printf("%s [%s]: ", name, cfg.str(name).c_str());
        else
            printf("%s%s: ", name, (k.flags & config::kRequired) ? "" : " [none]");
        fflush(stdout);
        char buf[4096];
        if (!fgets(buf, sizeof buf, stdin)) return false;
        std::string answer(iot::trim(buf));
        if (answer.empty() && !cfg.has(name) && (k.flags & config::kRequired)) {
            printf("  %s is required to connect; please enter it\n", name);
            continue;
        }
        if (!answer.empty()) {
            if (k.type == config::Type::Bool) {
                std::string a = iot::to_lower(answer);
                if (a == "y" || a == "yes") answer = "true";
                if (a == "n" || a == "no") answer = "false";
            }
            iot::Status set = cfg.set(name, answer, "answer");
            if (!set) {
                printf("  %s; please try again\n", set.error().c_str());
                continue;
            }
        }
        iot::Status ok = check_value(cfg, name);
        if (!ok) {
            printf("  %s; please try again\n", ok.error().c_str());
            *cfg.value_mut(name) = old;
            continue;
        }
        return true;
    }
}

// Create `dir` with `mode` unless it exists; remember it for the report.
iot::Status make_dir(const std::string& dir, mode_t mode, std::vector<std::string>& created) {
    if (dir.empty() || iot::fs::is_dir(dir)) return {};
    iot::Status st = iot::fs::make_dirs(dir, mode);
    if (st) created.push_back(format("%s (mode %04o)", dir.c_str(), static_cast<unsigned>(mode)));
    return st;
}

void print_next_steps(const std::string& output) {
    printf(
        "\nNext steps:\n"
        "  iot-config check --config-file %s --online\n"
        "      checks files, modes and certificates, then connects once\n"
        "  make install INIT=systemd          (in the iotbox sources; INIT=sysvinit or INIT=openrc)\n"
        "      installs iotd and its service file, then start it:\n"
        "      systemd:  systemctl enable --now iotd\n"
        "      sysvinit: /etc/init.d/iotd start\n"
        "      OpenRC:   rc-update add iotd default && rc-service iotd start\n",
        output.c_str());
    if (output != kSystemConfig)
        printf("  The service files read %s: copy the file there, or change --config-file in them.\n", kSystemConfig);
}

int run_init(const Options& o) {
    std::string output = o.output.empty() ? kSystemConfig : o.output;
    if (iot::fs::exists(output) && !o.force)
        return iot::fail(kName, iot::kExitFailed, "%s exists; not replacing it (use --force to overwrite)",
                         output.c_str());
    config::LoadOptions lo;
    lo.find_files = false;  // a new file from flags and answers, not from what is already there
    auto loaded = config::load(static_cast<int>(o.config_args.size()), o.config_args.data(), lo);
    if (!loaded) return iot::fail(kName, iot::kExitUsage, "%s", loaded.error().c_str());
    for (const auto& w : loaded->warnings) fprintf(stderr, "%s: warning: %s\n", kName, w.c_str());
    Config cfg = loaded->config;
    std::string dir = iot::fs::dirname(output);
    // Handlers next to the config: where `make install` puts the sample handlers.
    if (!given(cfg, "jobs.handler-directory")) (void)cfg.set("jobs.handler-directory", dir + "/jobs", kInitSuggestion);

    if (isatty(STDIN_FILENO) && !o.no_prompt) {
        printf("Writing %s. Press Enter to keep the value in brackets.\n", output.c_str());
        for (const char* name : kQuestions) {
            if (!relevant(cfg, name)) continue;
            if (given(cfg, name)) {
                iot::Status ok = check_value(cfg, name);
                if (ok) continue;
                printf("\n%s (%s): %s\n", name, cfg.source(name).c_str(), ok.error().c_str());
            }
            if (!ask(cfg, name)) return iot::fail(kName, iot::kExitFailed, "no answer (end of input); nothing written");
        }
        printf("\n");
    } else {
        iot::Status required = config::check_required(cfg);
        if (!required)
            return iot::fail(kName, iot::kExitUsage, "%s (give them as flags, or run iot-config init on a terminal)",
                             required.error().c_str());
        std::vector<std::string> errors;
        for (const char* name : kQuestions) {
            if (!relevant(cfg, name)) continue;
            iot::Status ok = check_value(cfg, name);
            if (!ok) errors.push_back(format("%s (%s): %s", name, cfg.source(name).c_str(), ok.error().c_str()));
        }
        if (!errors.empty()) {
            for (const auto& e : errors) fprintf(stderr, "%s: %s\n", kName, e.c_str());
            fprintf(stderr, "%s: nothing written\n", kName);
            return iot::kExitUsage;
        }
    }
    // A handler directory is only worth writing when jobs run.
    if (!cfg.flag("jobs.enabled") && cfg.source("jobs.handler-directory") == kInitSuggestion)
        *cfg.value_mut("jobs.handler-directory") = *Config().value("jobs.handler-directory");

    // Directories first: if one cannot be made, nothing is written.
    // The key and certificate exist already (they were checked), so their directories keep the
    // modes they have; check_permissions below says if one is too open.
    std::vector<std::string> created;
    iot::Status st = make_dir(dir, 0755, created);
    if (st && cfg.flag("jobs.enabled")) st = make_dir(cfg.path("jobs.handler-directory"), 0700, created);
    if (st) st = make_dir(cfg.path("state-directory"), 0700, created);
    if (!st) return iot::fail(kName, iot::kExitFailed, "%s; nothing written", st.error().c_str());

    std::string text = config::export_file(cfg, config::FileKeys::Changed);
    st = iot::fs::write_atomic(output, text, 0640);
    if (!st) return iot::fail(kName, iot::kExitFailed, "%s", st.error().c_str());
    // Shown without its secrets (a PIN given as a flag), which stay in the file only.
    std::string display = text;
    for (const config::Key& k : config::keys())
        if ((k.flags & config::kSecret) && cfg.has(k.name))
            display = iot::replace_all(display, iot::json::quote(cfg.str(k.name)), "\"***\"");
    printf("Wrote %s (mode 0640): the settings that differ from the defaults, and the required ones:\n%s",
           output.c_str(), display.c_str());
    for (const auto& d : created) printf("Created %s\n", d.c_str());
    // What is still wrong after writing (an existing handler directory open to others, ...).
    auto perms = config::check_permissions(cfg);
    for (const auto& e : perms.errors) printf("Problem: %s\n", e.c_str());
    for (const auto& w : perms.warnings) printf("Warning: %s\n", w.c_str());
    print_next_steps(output);
    return iot::kExitOk;
}

// ---------------------------------------------------------------- show

int run_show(const Options& o) {
    auto loaded = config::load(static_cast<int>(o.config_args.size()), o.config_args.data());
    if (!loaded) return iot::fail(kName, iot::kExitUsage, "%s", loaded.error().c_str());
    for (const auto& w : loaded->warnings) fprintf(stderr, "%s: warning: %s\n", kName, w.c_str());
    const Config& cfg = loaded->config;
    if (o.json) {
        // {"logging.level": {"value": "INFO", "source": "file /etc/iotbox/iotbox.conf:7"}, ...}, the
        // values as export_json writes them (secrets "***"), JsonText as the object it holds.
        auto nested = iot::json::parse(config::export_json(cfg));
        iot::json::Json out = iot::json::make_object();
        for (const config::Key& k : config::keys()) {
            if ((k.flags & config::kAction) || !cfg.has(k.name)) continue;
            const cJSON* value = nested ? at_path(nested->get(), k.name) : nullptr;
            iot::json::Json parsed;
            if (k.type == config::Type::JsonText && !(k.flags & config::kSecret)) parsed = cfg.json_value(k.name);
            cJSON* entry = cJSON_CreateObject();
            cJSON_AddItemToObject(entry, "value",
                                  parsed  ? parsed.release()
                                  : value ? cJSON_Duplicate(value, true)
                                          : cJSON_CreateNull());
            iot::json::set(entry, "source", origin(*cfg.value(k.name)));
            cJSON_AddItemToObject(out.get(), k.name, entry);
        }
        printf("%s\n", iot::json::print(out.get(), true).c_str());
        return iot::kExitOk;
    }
    if (!o.sources) {
        printf("%s", config::export_json(cfg).c_str());
        return iot::kExitOk;
    }
    size_t width = 0;
    for (const config::Key& k : config::keys())
        if (!(k.flags & config::kAction) && cfg.has(k.name)) width = std::max(width, strlen(k.name));
    for (const config::Key& k : config::keys()) {
        if ((k.flags & config::kAction) || !cfg.has(k.name)) continue;
        const Config::Value& v = *cfg.value(k.name);
        std::string value = (k.flags & config::kSecret) ? "***" : v.text;
        printf("%-*s  %s  [%s]\n", static_cast<int>(width), k.name, value.c_str(), origin(v).c_str());
    }
    return iot::kExitOk;
}

// ---------------------------------------------------------------- check

// One line per check; the worst result decides the exit code.
class Report {
public:
    void ok(const std::string& s) { line("OK", s); }
    void warn(const std::string& s) { line("WARN", s); }
    void fail(const std::string& s) {
        line("FAIL", s);
        failed_ = true;
    }
    int exit_code() const { return failed_ ? iot::kExitFailed : iot::kExitOk; }

private:
    void line(const char* what, const std::string& s) {
        printf("%-4s  %s\n", what, s.c_str());
        fflush(stdout);
    }
    bool failed_ = false;
};

void check_certificate(const Config& cfg, Report& r) {
    std::string path = cfg.path("cert");
    auto info = iot::tls::inspect_file(path);
    if (!info) return r.fail("certificate: " + info.error());
    int64_t now = iot::wall_ms() / 1000;
    long long days = (info->not_after - now) / 86400;
    std::string who =
        format("certificate %s (%s, issued by %s)", path.c_str(), info->subject.c_str(), info->issuer.c_str());
    if (info->not_after <= now)
        r.fail(format("%s: expired on %s; the broker will refuse it (issue a new one: iot-provision)", who.c_str(),
                      date_of(info->not_after).c_str()));
    else if (info->not_before > now)
        r.fail(format("%s: not valid before %s (is the clock right?)", who.c_str(), date_of(info->not_before).c_str()));
    else if (days < kExpiryWarnDays)
        r.warn(format("%s: expires in %lld days, on %s (rotate it soon)", who.c_str(), days,
                      date_of(info->not_after).c_str()));
    else
        r.ok(format("%s: valid until %s (%lld days)", who.c_str(), date_of(info->not_after).c_str(), days));
}

void check_key(const Config& cfg, Report& r) {
    std::string path = cfg.path("key");
    auto key = iot::tls::load_private_key(path);
    if (!key) return r.fail("key: " + key.error());
    auto cert = iot::tls::load_certificate(cfg.path("cert"));
    if (!cert)
        return r.warn(format("key %s: loads; not compared with the certificate, which does not load", path.c_str()));
    if (!iot::tls::key_matches_certificate(key->get(), cert->get()))
        return r.fail(format("key %s does not belong to the certificate %s (a broker refuses the handshake)",
                             path.c_str(), cfg.path("cert").c_str()));
    r.ok(format("key %s matches the certificate", path.c_str()));
}

void check_root_ca(const Config& cfg, Report& r) {
    if (!cfg.has("root-ca")) return r.ok("root CA: not set; the system trust store verifies the endpoint");
    std::string path = cfg.path("root-ca");
    if (!iot::fs::exists(path)) return;  // check_permissions has said so, with the fallback
    auto text = iot::fs::read_file(path, 1024 * 1024);
    if (!text) return r.fail("root CA: " + text.error());
    auto chain = iot::tls::read_certificate_chain(*text);
    if (!chain) return r.fail(format("root CA %s: %s", path.c_str(), chain.error().c_str()));
    auto info = iot::tls::inspect((*chain)[0].get());
    r.ok(format("root CA %s: %zu certificate%s, first %s", path.c_str(), chain->size(), chain->size() == 1 ? "" : "s",
                info ? info->subject.c_str() : "?"));
}

void check_connection(const Config& cfg, long long timeout_s, Report& r) {
    iot::EventLoop loop;
    iot::mqtt::Options mo = iot::mqtt::options_from_config(cfg);
    mo.connect_timeout_ms = timeout_s * 1000;
    mo.clean_session = true;  // a check must not take over the daemon's persistent session
    std::string where = format("%s:%d as %s", mo.host.c_str(), mo.port, mo.client_id.c_str());
    iot::mqtt::Client client(loop, mo);
    int state = 0;  // 1 connected, -1 failed
    std::string reason;
    client.on_connection([&](bool up, const std::string& why) {
        if (state != 0) return;
        state = up ? 1 : -1;
        reason = why;
    });
    int64_t start = iot::monotonic_ms();
    iot::Status st = client.start();
    if (!st) return r.fail("connection: " + st.error());
    int64_t deadline = start + timeout_s * 1000 + 500;
    while (state == 0 && iot::monotonic_ms() < deadline) loop.run_once(100);
    int64_t took = iot::monotonic_ms() - start;
    bool stopped = false;
    client.stop([&] { stopped = true; });
    int64_t stop_deadline = iot::monotonic_ms() + 3000;
    while (!stopped && iot::monotonic_ms() < stop_deadline) loop.run_once(100);
    if (state == 1)
        r.ok(format("connection: connected to %s (TLS and MQTT) in %lld ms, disconnected", where.c_str(),
                    static_cast<long long>(took)));
    else if (state == -1)
        r.fail(format("connection to %s: %s", where.c_str(), reason.c_str()));
    else
        r.fail(format("connection to %s: no result within %lld s (raise --timeout?)", where.c_str(), timeout_s));
}

int run_check(const Options& o) {
    Report r;
    auto loaded = config::load(static_cast<int>(o.config_args.size()), o.config_args.data());
    if (!loaded) {
        for (const auto& e : iot::split(loaded.error(), '\n')) printf("FAIL  config: %s\n", e.c_str());
        return iot::kExitUsage;
    }
    const Config& cfg = loaded->config;
    // The mqtt client logs its own view of a failure; the report already says it once.
    auto level = iot::log::parse_level(cfg.is_set("logging.level") ? cfg.str("logging.level") : "ERROR");
    (void)iot::log::configure(level ? *level : iot::log::Level::Error, iot::log::Sink::Stderr);

    std::string files = cfg.has("config-file") ? cfg.path("config-file") : "no config file found (defaults only)";
    std::string runtime = cfg.path("runtime-config-file");
    if (!runtime.empty() && iot::fs::exists(runtime)) files += ", runtime file " + runtime;
    r.ok("config: loaded " + files);
    for (const auto& w : loaded->warnings) r.warn("config: " + w);

    iot::Status required = config::check_required(cfg);
    if (!required)
        r.fail(required.error());
    else
        r.ok(format("required settings: endpoint %s, thing-name %s", cfg.str("endpoint").c_str(),
                    cfg.str("thing-name").c_str()));

    auto perms = config::check_permissions(cfg);
    for (const auto& e : perms.errors) r.fail("permissions: " + e);
    for (const auto& w : perms.warnings) r.warn("permissions: " + w);
    if (perms.errors.empty() && perms.warnings.empty())
        r.ok("permissions: every file and directory is within its mode rule");

    bool secure_element = cfg.flag("secure-element.enabled");
    if (cfg.has("cert")) check_certificate(cfg, r);
    if (cfg.has("key") && !secure_element) check_key(cfg, r);
    check_root_ca(cfg, r);
    if (o.connect) {
        if (!required)
            r.fail("connection: not tried, required settings are missing");
        else if (secure_element)
            r.warn("connection: not tried, the secure element is not supported by --online");
        else
            check_connection(cfg, o.timeout_s, r);
    }
    return r.exit_code();
}

// ---------------------------------------------------------------- convert

std::string shown(const config::Key& k, const cJSON* item) {
    if (k.flags & config::kSecret) return "\"***\"";
    return item ? iot::json::print(item) : std::string("(none)");
}

// Why a value in the Device Client's file was written differently.
std::string why_changed(const config::Key& k, const cJSON* before, const Config::Value& v) {
    if (iot::starts_with(v.source, "runtime file"))
        return format(" (%s: fleet provisioning completed)", origin(v).c_str());
    if (v.source == kName) return " (fleet provisioning completed: it must not run again)";
    if (!cJSON_IsString(before)) return {};
    if (k.type == config::Type::Bool)
        return " (a string: the Device Client reads any string as false, iotbox reads what it says)";
    if (k.type == config::Type::Int) return " (a number written as a string)";
    if (k.type == config::Type::Enum) return " (its canonical spelling)";
    return {};
}

int run_convert(const Options& o) {
    std::string from = iot::fs::expand_home(o.from.empty() ? kDeviceClientConfig : o.from);
    std::string output = o.output.empty() ? kSystemConfig : o.output;
    if (!iot::fs::exists(from))
        return iot::fail(kName, iot::kExitUsage,
                         "no Device Client config at %s (give its path: iot-config import FILE)", from.c_str());
    if (iot::fs::exists(output) && !o.force)
        return iot::fail(kName, iot::kExitFailed, "%s exists; not replacing it (use --force to overwrite)",
                         output.c_str());
    std::vector<const char*> args = {"--config-file", from.c_str()};
    args.insert(args.end(), o.config_args.begin(), o.config_args.end());
    auto loaded = config::load(static_cast<int>(args.size()), args.data());
    if (!loaded) {
        for (const auto& e : iot::split(loaded.error(), '\n')) fprintf(stderr, "%s: %s\n", kName, e.c_str());
        fprintf(stderr, "%s: nothing written\n", kName);
        return iot::kExitUsage;
    }
    Config cfg = loaded->config;
    std::vector<std::string> notes;
    for (const auto& w : loaded->warnings)
        if (w.find("still the template placeholder") == std::string::npos) notes.push_back(w);

    // The Device Client's template holds "<replace_with_...>" strings: one in a setting that is
    // used must be filled in; one in a disabled section is dropped.
    std::vector<std::string> errors;
    const Config defaults;
    for (const config::Key& k : config::keys()) {
        const Config::Value& v = *cfg.value(k.name);
        if (!v.present || v.file.empty() || !iot::starts_with(v.text, kPlaceholder)) continue;
        if (config::in_use(cfg, k))
            errors.push_back(format("%s:%d: %s: still the template placeholder \"%s\" (write the real value%s%s)",
                                    v.file.c_str(), v.line, k.name, v.text.c_str(), k.flag ? ", or give " : "",
                                    k.flag ? k.flag : ""));
        else
            *cfg.value_mut(k.name) = *defaults.value(k.name);
    }
    if (!errors.empty()) {
        for (const auto& e : errors) fprintf(stderr, "%s: %s\n", kName, e.c_str());
        fprintf(stderr, "%s: nothing written\n", kName);
        return iot::kExitUsage;
    }

    std::string runtime = cfg.path("runtime-config-file");
    bool completed = cfg.flag("runtime-config.completed-fp");
    if (completed && cfg.flag("fleet-provisioning.enabled")) {
        (void)cfg.set("fleet-provisioning.enabled", "false", kName);
        notes.push_back(
            "fleet provisioning has completed: the provisioned cert, key and thing-name are now the main "
            "ones, and fleet-provisioning.enabled is false so it does not run again");
    } else if (!completed && iot::fs::exists(runtime)) {
        notes.push_back(
            format("runtime file %s: provisioning has not completed (completed-fp is not true); nothing "
                   "taken from it",
                   runtime.c_str()));
    }
    std::string proxy = cfg.path("http-proxy-config");
    if (iot::fs::exists(proxy)) {
        notes.push_back(
            format("HTTP proxy file %s is read from where it is (--http-proxy-config); not copied", proxy.c_str()));
        iot::Status mode = iot::fs::check_mode(proxy, key_of("http-proxy-config").mode);
        if (!mode) notes.push_back("it may hold a password: " + mode.error());
    }

    std::string text = config::export_file(cfg, config::FileKeys::Set);
    iot::Status st = iot::fs::make_dirs(iot::fs::dirname(output), 0755);
    if (st) st = iot::fs::write_atomic(output, text, 0640);
    if (!st) return iot::fail(kName, iot::kExitFailed, "%s", st.error().c_str());

    // What changed: the Device Client's file against the one written.
    auto before_text = iot::fs::read_file(from, 1024 * 1024);
    auto before = iot::json::parse(before_text ? *before_text : "{}");
    auto after = iot::json::parse(text);
    std::vector<std::string> changes, dropped;
    for (const config::Key& k : config::keys()) {
        if (k.where != config::Where::Main && k.where != config::Where::Runtime) continue;
        const cJSON* b = before ? at_path(before->get(), k.name) : nullptr;
        const cJSON* a = after ? at_path(after->get(), k.name) : nullptr;
        if (!a && !b) continue;
        if (a && b && iot::json::print(a) == iot::json::print(b)) continue;
        const Config::Value& v = *cfg.value(k.name);
        if (a && b)
            changes.push_back(format("%s: %s -> %s%s", k.name, shown(k, b).c_str(), shown(k, a).c_str(),
                                     why_changed(k, b, v).c_str()));
        else if (a)
            changes.push_back(format("%s: %s added%s", k.name, shown(k, a).c_str(), why_changed(k, b, v).c_str()));
        else if (k.where == config::Where::Runtime)
            dropped.push_back(format("%s: left out (fleet provisioning state; %s)", k.name,
                                     completed ? "its values are now in place" : "iotbox reads the runtime file"));
        else if (cJSON_IsString(b) && iot::starts_with(b->valuestring, kPlaceholder))
            dropped.push_back(format("%s: %s left out (template placeholder of a setting that is not used)", k.name,
                                     shown(k, b).c_str()));
        else if (cJSON_IsNull(b) || (cJSON_IsString(b) && !*b->valuestring))
            dropped.push_back(format("%s: empty value left out", k.name));
        else
            dropped.push_back(format("%s: %s left out", k.name, shown(k, b).c_str()));
    }
    // What the loader could not place: names iotbox does not know, settings of another file.
    std::vector<std::string> other_notes;
    for (const auto& n : notes) {
        if (n.find(": unknown key '") != std::string::npos || n.find(" belongs in ") != std::string::npos)
            dropped.push_back(n);
        else
            other_notes.push_back(n);
    }
    printf("Converted %s\n     into %s (mode 0640).\n", from.c_str(), output.c_str());
    if (changes.empty() && dropped.empty())
        printf("No changes: the file was already valid for iotbox as it is.\n");
    if (!changes.empty()) printf("Changes:\n");
    for (const auto& c : changes) printf("  %s\n", c.c_str());
    if (!dropped.empty()) printf("Not carried over:\n");
    for (const auto& d : dropped) printf("  %s\n", d.c_str());
    for (const auto& n : other_notes) printf("Note: %s\n", n.c_str());
    printf("Next: iot-config check --config-file %s --online\n", output.c_str());
    return iot::kExitOk;
}

// ---------------------------------------------------------------- export-default

int run_export_default(const Options& o) {
    if (!o.config_args.empty())
        return iot::fail(kName, iot::kExitUsage, "export-default takes no config options (got %s)", o.config_args[0]);
    std::string text = config::export_defaults();
    if (o.output.empty()) {
        fputs(text.c_str(), stdout);
        return iot::kExitOk;
    }
    if (iot::fs::exists(o.output) && !o.force)
        return iot::fail(kName, iot::kExitFailed, "%s exists; not replacing it (use --force to overwrite)",
                         o.output.c_str());
    iot::Status st = iot::fs::make_dirs(iot::fs::dirname(o.output), 0755);
    if (st) st = iot::fs::write_atomic(o.output, text, 0640);
    if (!st) return iot::fail(kName, iot::kExitFailed, "%s", st.error().c_str());
    printf("Wrote %s (mode 0640): every config-file setting at its default, \"\" where there is none.\n"
           "Fill in endpoint, cert, key, root-ca and thing-name, then: iot-config check --config-file %s\n",
           o.output.c_str(), o.output.c_str());
    return iot::kExitOk;
}

// ---------------------------------------------------------------- get, set, unset

// The setting named on the command line; nullptr (the error printed) when there is none.
const config::Key* setting(const std::string& name) {
    const config::Key* k = config::find_key(name);
    if (k && !(k->flags & config::kAction)) return k;
    std::string hint = " (iotd --help lists every setting)";
    std::string close = config::closest_key(name);
    for (const config::Key& other : config::keys()) {
        if (!iot::starts_with(other.name, name + ".")) continue;
        hint = format(" ('%s' is a section: name one of its settings, such as '%s')", name.c_str(), other.name);
        close.clear();
        break;
    }
    if (!close.empty()) hint = format(" (did you mean '%s'?)", close.c_str());
    iot::fail(kName, iot::kExitUsage, "unknown key '%s'%s", name.c_str(), hint.c_str());
    return nullptr;
}

// set and unset edit the config file only: refuse settings that are given somewhere else.
bool lives_in_config_file(const config::Key& k) {
    if (k.where == config::Where::Main) return true;
    std::string detail;
    if (k.where == config::Where::Runtime) {
        detail = " of the runtime file (--runtime-config-file), which fleet provisioning writes";
    } else if (k.where == config::Where::Proxy) {
        detail = format(", default %s", key_of("http-proxy-config").def);
    } else {
        std::vector<std::string> ways;
        if (k.flag) ways.push_back(k.flag);
        if (!config::env_name(k).empty()) ways.push_back("env " + config::env_name(k));
        if (k.env) ways.push_back(format("env %s", k.env));
        detail = ": " + iot::join(ways, ", ");
    }
    iot::fail(kName, iot::kExitUsage, "%s is not a setting of the config file: it belongs in %s%s", k.name,
              config::home_of(k.where), detail.c_str());
    return false;
}

std::string shown_value(const config::Key& k, const Config::Value& v) {
    return (k.flags & config::kSecret) ? "***" : v.text;
}

int run_get(const Options& o) {
    const config::Key* k = setting(o.positional[0]);
    if (!k) return iot::kExitUsage;
    auto loaded = config::load(static_cast<int>(o.config_args.size()), o.config_args.data());
    if (!loaded) {
        for (const auto& e : iot::split(loaded.error(), '\n')) fprintf(stderr, "%s: %s\n", kName, e.c_str());
        return iot::kExitUsage;
    }
    const Config::Value& v = *loaded->config.value(k->name);
    if (!v.present) {
        fprintf(stderr, "%s: %s is not set\n", kName, k->name);
        return iot::kExitFailed;
    }
    if ((k->flags & config::kSecret) && !o.show_secret) {
        printf("***\n");
        fprintf(stderr, "%s: %s is a secret (set by %s); add --show-secret to print it\n", kName, k->name,
                origin(v).c_str());
        return iot::kExitOk;
    }
    printf("%s\n", v.text.c_str());
    return iot::kExitOk;
}

// The config file set and unset edit, parsed: the one the loader reads (--config-file, the
// environment, else the first default that exists), or a new one at the system path. A symbolic
// link is followed, so the link stays a link.
struct ConfigFile {
    std::string path;
    bool exists = false;
    struct stat st {};
    std::string text;
    iot::json::Json doc;
};

iot::Result<ConfigFile> open_config_file(const Options& o) {
    auto path = config::config_file_path(static_cast<int>(o.config_args.size()), o.config_args.data());
    if (!path) return path.err();
    ConfigFile f;
    f.path = path->empty() ? kSystemConfig : *path;
    f.exists = ::stat(f.path.c_str(), &f.st) == 0;
    if (!f.exists) {
        f.doc = iot::json::make_object();
        return f;
    }
    char real[PATH_MAX];
    if (::realpath(f.path.c_str(), real)) f.path = real;
    auto text = iot::fs::read_file(f.path, 1024 * 1024);
    if (!text) return text.err();
    f.text = *text;
    auto doc = iot::json::parse(f.text);
    if (!doc)
        return iot::Error(format("%s: %s; not changed (fix it by hand first)", f.path.c_str(), doc.error().c_str()));
    if (!cJSON_IsObject(doc->get()))
        return iot::Error(format("%s: expected a JSON object at the top level, got %s; not changed", f.path.c_str(),
                                 iot::json::type_name(doc->get())));
    f.doc = doc.take();
    // Written as someone else, the file would change owner: only its owner or root edits it.
    if (::geteuid() != 0 && f.st.st_uid != ::geteuid())
        return iot::Error(format("%s belongs to uid %u; edit it as that user or as root (its owner would change)",
                                 f.path.c_str(), static_cast<unsigned>(f.st.st_uid)));
    return f;
}

// Atomically, with the mode and owner the file had (a new file: 0640, like init).
iot::Status save(const ConfigFile& f) {
    std::string text = iot::json::print(f.doc.get(), true) + "\n";
    mode_t mode = f.exists ? (f.st.st_mode & 07777) : 0640;
    if (!f.exists) {
        iot::Status st = iot::fs::make_dirs(iot::fs::dirname(f.path), 0755);
        if (!st) return st;
    }
    iot::Status st = iot::fs::write_atomic(f.path, text, mode);
    if (!st) return st;
    struct stat now {};
    if (::stat(f.path.c_str(), &now) != 0) return iot::Error(format("%s: %s", f.path.c_str(), strerror(errno)));
    // A umask stricter than the old mode.
    if ((now.st_mode & 07777) != mode && ::chmod(f.path.c_str(), mode) != 0)
        return iot::Error(format("%s: written, but chmod %04o failed: %s", f.path.c_str(),
                                 static_cast<unsigned>(mode), strerror(errno)));
    // The new file belongs to whoever wrote it: give it back (root editing a root:iotbox file).
    if (f.exists && (now.st_uid != f.st.st_uid || now.st_gid != f.st.st_gid) &&
        ::chown(f.path.c_str(), f.st.st_uid, f.st.st_gid) != 0)
        return iot::Error(format("%s: written, but could not give it back to uid %u gid %u: %s", f.path.c_str(),
                                 static_cast<unsigned>(f.st.st_uid), static_cast<unsigned>(f.st.st_gid),
                                 strerror(errno)));
    return {};
}

// The object holding the last part of `parts`; created on the way when `create`, else nullptr
// when absent. A part on the way that is not an object is an error: it is the person's to fix.
iot::Result<cJSON*> parent_object(const ConfigFile& f, const std::vector<std::string>& parts, bool create) {
    cJSON* node = f.doc.get();
    std::string so_far;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
        so_far += (i ? "." : "") + parts[i];
        cJSON* child = cJSON_GetObjectItemCaseSensitive(node, parts[i].c_str());
        if (!child) {
            if (!create) return static_cast<cJSON*>(nullptr);
            child = cJSON_CreateObject();
            cJSON_AddItemToObject(node, parts[i].c_str(), child);
        } else if (!cJSON_IsObject(child)) {
            return iot::Error(format("%s:%d: %s is %s, not an object; not changed (fix it by hand first)",
                                     f.path.c_str(), iot::json::line_of(f.text, so_far), so_far.c_str(),
                                     iot::json::type_name(child)));
        }
        node = child;
    }
    return node;
}

// Removes every member `name` of `object` after `from` (a key written twice: the loader reads the last).
void remove_later_duplicates(cJSON* object, cJSON* from, const char* name) {
    for (cJSON* item = from->next; item;) {
        cJSON* next = item->next;
        if (item->string && strcmp(item->string, name) == 0) cJSON_Delete(cJSON_DetachItemViaPointer(object, item));
        item = next;
    }
}

// A value in the form the config file holds it: what export_json writes for its type (numbers and
// booleans bare, JsonText as the Device Client's escaped string).
iot::json::Json file_form(const config::Key& k, const Config::Value& v) {
    Config one;
    for (const config::Key& other : config::keys()) *one.value_mut(other.name) = Config::Value{};
    *one.value_mut(k.name) = v;
    auto doc = iot::json::parse(config::export_json(one, true));
    if (!doc) return nullptr;
    const cJSON* item = at_path(doc->get(), k.name);
    return iot::json::Json(item ? cJSON_Duplicate(item, true) : nullptr);
}

// After an edit: whether the file still loads, and what the setting's value is now and from where.
void report_effect(const Options& o, const config::Key& k) {
    auto loaded = config::load(static_cast<int>(o.config_args.size()), o.config_args.data());
    if (!loaded) {
        fprintf(stderr, "%s: warning: the configuration does not load yet:\n", kName);
        for (const auto& e : iot::split(loaded.error(), '\n')) fprintf(stderr, "  %s\n", e.c_str());
        return;
    }
    const Config::Value& v = *loaded->config.value(k.name);
    if (!v.present)
        printf("%s is now unset\n", k.name);
    else if (v.source == "default")
        printf("%s is now %s (the default)\n", k.name, shown_value(k, v).c_str());
    else if (!iot::starts_with(v.source, "file "))
        printf("%s is %s from %s, which overrides the config file\n", k.name, shown_value(k, v).c_str(),
               origin(v).c_str());
}

int run_set(const Options& o) {
    const config::Key* k = setting(o.positional[0]);
    if (!k || !lives_in_config_file(*k)) return iot::kExitUsage;
    std::vector<std::string> notes;
    auto value = config::parse_value(*k, o.positional[1], &notes);
    if (!value) return iot::fail(kName, iot::kExitUsage, "%s: %s", k->name, value.error().c_str());
    auto f = open_config_file(o);
    if (!f) return iot::fail(kName, iot::kExitUsage, "%s", f.error().c_str());
    std::vector<std::string> parts = iot::split(k->name, '.');
    auto parent = parent_object(*f, parts, true);
    if (!parent) return iot::fail(kName, iot::kExitUsage, "%s", parent.error().c_str());
    iot::json::Json item = file_form(*k, *value);
    if (!item) return iot::fail(kName, iot::kExitFailed, "%s: cannot be written as JSON", k->name);
    const char* leaf = parts.back().c_str();
    cJSON* old = cJSON_GetObjectItemCaseSensitive(*parent, leaf);
    cJSON* added = item.release();
    if (old) {
        cJSON_ReplaceItemViaPointer(*parent, old, added);
        remove_later_duplicates(*parent, added, leaf);
    } else {
        cJSON_AddItemToObject(*parent, leaf, added);
    }
    iot::Status st = save(*f);
    if (!st) return iot::fail(kName, iot::kExitFailed, "%s", st.error().c_str());
    for (const auto& n : notes) fprintf(stderr, "%s: warning: %s: %s\n", kName, k->name, n.c_str());
    printf("%s %s: %s = %s\n", f->exists ? "Changed" : "Created", f->path.c_str(), k->name,
           shown_value(*k, *value).c_str());
    report_effect(o, *k);
    return iot::kExitOk;
}

int run_unset(const Options& o) {
    const config::Key* k = setting(o.positional[0]);
    if (!k || !lives_in_config_file(*k)) return iot::kExitUsage;
    auto f = open_config_file(o);
    if (!f) return iot::fail(kName, iot::kExitUsage, "%s", f.error().c_str());
    std::vector<std::string> parts = iot::split(k->name, '.');
    auto parent = parent_object(*f, parts, false);
    if (!parent) return iot::fail(kName, iot::kExitUsage, "%s", parent.error().c_str());
    if (!f->exists || !*parent || !cJSON_GetObjectItemCaseSensitive(*parent, parts.back().c_str())) {
        printf("%s is not in %s; nothing to change\n", k->name, f->exists ? f->path.c_str() : "any config file");
        return iot::kExitOk;
    }
    while (cJSON_GetObjectItemCaseSensitive(*parent, parts.back().c_str()))
        cJSON_DeleteItemFromObjectCaseSensitive(*parent, parts.back().c_str());
    // Sections left empty go too ("logging": {} after unsetting its only setting).
    for (size_t depth = parts.size() - 1; depth > 0; --depth) {
        std::vector<std::string> section(parts.begin(), parts.begin() + static_cast<long>(depth));
        auto holder = parent_object(*f, section, false);
        cJSON* obj = holder && *holder ? cJSON_GetObjectItemCaseSensitive(*holder, section.back().c_str()) : nullptr;
        if (!cJSON_IsObject(obj) || obj->child) break;
        cJSON_DeleteItemFromObjectCaseSensitive(*holder, section.back().c_str());
    }
    iot::Status st = save(*f);
    if (!st) return iot::fail(kName, iot::kExitFailed, "%s", st.error().c_str());
    printf("Removed %s from %s\n", k->name, f->path.c_str());
    report_effect(o, *k);
    return iot::kExitOk;
}

// ---------------------------------------------------------------- options

bool takes(const OwnOption& opt, const std::string& command) {
    for (const std::string& c : iot::split(opt.commands, ' '))
        if (c == command) return true;
    return false;
}

// Returns an exit code when parsing ends the run (an error), -1 to go on.
int parse_options(int argc, char** argv, Options& o) {
    const Command& command = *find_command(o.command);
    bool options_done = false;
    for (int i = 2; i < argc; ++i) {
        std::string arg = argv[i];
        // KEY, VALUE, FILE: anything not an option (a VALUE may be "-5"); all after "--".
        if (command.max_args > 0 && !options_done && arg == "--") {
            options_done = true;
            continue;
        }
        if (command.max_args > 0 && (options_done || !iot::starts_with(arg, "--"))) {
            o.positional.push_back(arg);
            continue;
        }
        size_t eq = arg.find('=');
        std::string flag = arg.substr(0, eq);
        const OwnOption* own = nullptr;
        for (const OwnOption& opt : kOwnOptions)
            if (flag == opt.flag) own = &opt;
        if (!own) {
            o.config_args.push_back(argv[i]);
            // A config flag's value is its next argument.
            const config::Key* key = config::find_flag(flag);
            if (key && !(key->flags & config::kNoArg) && eq == std::string::npos && i + 1 < argc)
                o.config_args.push_back(argv[++i]);
            continue;
        }
        if (!takes(*own, o.command))
            return iot::fail(kName, iot::kExitUsage, "%s is not an option of %s (see iot-config --help)", flag.c_str(),
                             o.command.c_str());
        std::string value;
        if (own->takes_value) {
            if (eq != std::string::npos)
                value = arg.substr(eq + 1);
            else if (i + 1 < argc)
                value = argv[++i];
            if (value.empty()) return iot::fail(kName, iot::kExitUsage, "%s needs a value", flag.c_str());
        } else if (eq != std::string::npos) {
            return iot::fail(kName, iot::kExitUsage, "%s takes no value", flag.c_str());
        }
        if (flag == "--output")
            o.output = value;
        else if (flag == "--from")
            o.from = value;
        else if (flag == "--force")
            o.force = true;
        else if (flag == "--no-prompt")
            o.no_prompt = true;
        else if (flag == "--sources")
            o.sources = true;
        else if (flag == "--connect" || flag == "--online")
            o.connect = true;
        else if (flag == "--json")
            o.json = true;
        else if (flag == "--show-secret")
            o.show_secret = true;
        else if (flag == "--timeout") {
            auto n = iot::parse_int(value);
            if (!n || *n < 1 || *n > 600)
                return iot::fail(kName, iot::kExitUsage, "--timeout: expected seconds from 1 to 600, got '%s'",
                                 value.c_str());
            o.timeout_s = *n;
        }
    }
    if (o.positional.size() < command.min_args || o.positional.size() > command.max_args)
        return iot::fail(kName, iot::kExitUsage, "usage: iot-config %s (see iot-config --help)", command.usage);
    if (!o.positional.empty() && (o.command == "import" || o.command == "convert")) {
        if (!o.from.empty())
            return iot::fail(kName, iot::kExitUsage, "give the file to import once: as FILE or with --from");
        o.from = o.positional[0];
    }
    return -1;
}
}  // namespace

void iot_config_help() {
    printf(
        "Usage: iot-config init [--output FILE] [--force] [--no-prompt] [CONFIG OPTIONS]\n"
        "       iot-config show [--sources | --json] [CONFIG OPTIONS]\n"
        "       iot-config check [--online] [--timeout SECONDS] [CONFIG OPTIONS]\n"
        "       iot-config get KEY [--show-secret] [CONFIG OPTIONS]\n"
        "       iot-config set KEY VALUE [--config-file FILE]\n"
        "       iot-config unset KEY [--config-file FILE]\n"
        "       iot-config import [FILE] [--output FILE] [--force] [CONFIG OPTIONS]\n"
        "       iot-config export-default [--output FILE] [--force]\n\n"
        "init     writes a working config file (default %s, mode 0640). On a terminal it asks\n"
        "         for the endpoint, thing name, certificate, key, root CA, port and features, and asks\n"
        "         again when an answer does not check out; otherwise (or with --no-prompt) everything\n"
        "         comes from CONFIG OPTIONS (--endpoint, --thing-name, --cert, --key, --root-ca, --port,\n"
        "         --enable-jobs, ...). Options given are not asked. The file holds the required settings\n"
        "         and those that differ from the defaults. Creates the config directory (0755), the job\n"
        "         handler directory (0700; default: jobs/ next to the file) and the state directory\n"
        "         (0700). An existing file is kept unless --force.\n"
        "show     the effective configuration (defaults < config file < runtime file < environment <\n"
        "         command line) as JSON, secrets as \"***\"; --sources lists each setting with its\n"
        "         value and where it came from (file:line, env, flag or default); --json gives both as\n"
        "         JSON: {\"KEY\": {\"value\": VALUE, \"source\": \"file PATH:LINE\"}, ...}.\n"
        "check    loads the configuration and checks it: required settings, file modes, the\n"
        "         certificate (readable, dates; a warning 30 days before it expires), that the key\n"
        "         belongs to it, the root CA. --online (or --connect) also connects once (TLS and MQTT,\n"
        "         client id = thing name, within --timeout, default 10 s) and disconnects. One line per\n"
        "         check: OK, WARN or FAIL.\n"
        "get      prints the effective value of KEY (a dotted name: logging.level); exit 1 when it is\n"
        "         not set. A secret prints as *** unless --show-secret.\n"
        "set      writes KEY = VALUE into the config file (the one the configuration is read from, or\n"
        "unset    --config-file; a new one at %s if there is none), or removes KEY from it.\n"
        "         VALUE is checked by the key's type (true/false, a number in range, one of the choices,\n"
        "         a JSON object). The file is replaced atomically, stays valid JSON and keeps its mode and\n"
        "         owner; sections are created as needed. Settings of the runtime or HTTP proxy file and\n"
        "         command-line-only settings are refused, naming where they belong.\n"
        "import   reads an AWS IoT Device Client config (default %s)\n"
        "         with its runtime file (fleet provisioning) and writes an iotbox config (default\n"
        "         %s): booleans and numbers given as strings normalised, template placeholders\n"
        "         refused where used and dropped where not, provisioned cert, key and thing name moved\n"
        "         into place. Prints what changed and what was not carried over. Also: convert [--from FILE].\n"
        "export-default\n"
        "         prints a config file with every setting at its default (valid JSON, \"\" where there is\n"
        "         no default), or writes it to --output FILE (mode 0640).\n\n"
        "CONFIG OPTIONS are iotd's (--config-file, --endpoint, --cert, ...; see iotd --help).\n"
        "Exit codes: 0 done (check: every check OK or WARN), 1 failed (check: a check failed; get: not\n"
        "set; init, import, export-default: the output exists), 2 usage or configuration error (check:\n"
        "the config does not load; get, set, unset: an unknown key or a bad value).\n",
        kSystemConfig, kSystemConfig, kDeviceClientConfig, kSystemConfig);
}

int iot_config_main(int argc, char** argv) {
    Options o;
    o.command = argc > 1 ? argv[1] : "";
    for (int i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            iot_config_help();
            return iot::kExitOk;
        }
        if (strcmp(argv[i], "--version") == 0) {
            iot::print_version();
            return iot::kExitOk;
        }
    }
    const char* const commands = "init, show, check, get, set, unset, import or export-default";
    if (o.command.empty())
        return iot::fail(kName, iot::kExitUsage, "give a command: %s (see --help)", commands);
    if (!find_command(o.command))
        return iot::fail(kName, iot::kExitUsage, "unknown command '%s' (%s)", o.command.c_str(), commands);
    int rc = parse_options(argc, argv, o);
    if (rc >= 0) return rc;
    ::signal(SIGPIPE, SIG_IGN);
    if (o.command == "init") return run_init(o);
    if (o.command == "show") return run_show(o);
    if (o.command == "check") return run_check(o);
    if (o.command == "get") return run_get(o);
    if (o.command == "set") return run_set(o);
    if (o.command == "unset") return run_unset(o);
    if (o.command == "export-default") return run_export_default(o);
    return run_convert(o);  // import, convert
}
