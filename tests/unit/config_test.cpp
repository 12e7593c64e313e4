// Unit tests of lib/config: the key table, the Device Client's files, flags and environment,
// precedence, errors, permissions, export and help.
#include <dirent.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/strings.hpp"
#include "config/config.hpp"
#include "fs/fs.hpp"
#include "json/json.hpp"
#include "log/log.hpp"

#ifndef IOT_SOURCE_DIR
#error "IOT_SOURCE_DIR must name the source tree (the fixtures are under tests/unit/data/config)"
#endif

using namespace iot;
using iot::config::Loaded;
using iot::config::LoadOptions;

namespace {

std::string fixture(const std::string& name) { return std::string(IOT_SOURCE_DIR) + "/tests/unit/data/config/" + name; }

std::string read(const std::string& path) {
    auto text = fs::read_file(path);
    EXPECT_TRUE(text.ok()) << text.error();
    return text ? *text : std::string();
}

void write(const std::string& path, const std::string& text, mode_t mode = 0644) {
    ASSERT_TRUE(fs::write_atomic(path, text, mode).ok()) << path;
    ASSERT_EQ(::chmod(path.c_str(), mode), 0);
}

// Every environment variable the loader reads, so a test starts from a clean environment and
// leaves the process's as it found it.
std::vector<std::string> watched_env() {
    std::vector<std::string> names = {"HOME"};
    for (const auto& k : config::keys()) {
        if (!config::env_name(k).empty()) names.push_back(config::env_name(k));
        if (k.env) names.push_back(k.env);
    }
    return names;
}

class Config : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/config_test.XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        for (const std::string& name : watched_env()) {
            const char* v = getenv(name.c_str());
            saved_[name] = v ? std::optional<std::string>(v) : std::nullopt;
            unsetenv(name.c_str());
        }
        // ~ paths (the default config, runtime and proxy files) land in the temp dir.
        setenv("HOME", dir_.c_str(), 1);
        options_.system_config = dir_ + "/no-system.conf";
    }
    void TearDown() override {
        for (const auto& [name, value] : saved_) {
            if (value)
                setenv(name.c_str(), value->c_str(), 1);
            else
                unsetenv(name.c_str());
        }
        nftw(
            dir_.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }, 16,
            FTW_DEPTH | FTW_PHYS);
    }

    Result<Loaded> run(std::vector<std::string> args) {
        std::vector<const char*> argv;
        for (const std::string& a : args) argv.push_back(a.c_str());
        argv.push_back(nullptr);
        return config::load(static_cast<int>(args.size()), argv.data(), options_);
    }
    // Loads with `text` as the config file (and extra arguments); fails the test on error.
    Loaded load_text(const std::string& text, std::vector<std::string> extra = {}) {
        std::string path = file("cfg.json", text);
        extra.insert(extra.begin(), {"--config-file", path});
        auto r = run(extra);
        EXPECT_TRUE(r.ok()) << r.error();
        return r ? r.take() : Loaded{};
    }
    std::string load_error(const std::string& text, std::vector<std::string> extra = {}) {
        std::string path = file("cfg.json", text);
        extra.insert(extra.begin(), {"--config-file", path});
        auto r = run(extra);
        EXPECT_FALSE(r.ok());
        return r ? std::string() : r.error();
    }
    std::string file(const std::string& name, const std::string& text, mode_t mode = 0640) {
        std::string path = dir_ + "/" + name;
        fs::make_dirs(fs::dirname(path), 0700).ok();
        write(path, text, mode);
        return path;
    }
    std::string dir_;
    LoadOptions options_;
    std::map<std::string, std::optional<std::string>> saved_;
};

bool contains(const std::vector<std::string>& v, const std::string& needle) {
    for (const std::string& s : v)
        if (s.find(needle) != std::string::npos) return true;
    return false;
}

std::string joined(const std::vector<std::string>& v) { return join(v, "\n"); }

// The Device Client's flags (compat §2), with a value and what it must set.
struct FlagCase {
    const char* flag;
    const char* value;  // nullptr: takes no argument
    const char* key;
    const char* expected;
};
const FlagCase kDeviceClientFlags[] = {
    {"--endpoint", "e-ats.iot.us-east-1.amazonaws.com", "endpoint", "e-ats.iot.us-east-1.amazonaws.com"},
    {"--cert", "/c/cert.pem", "cert", "/c/cert.pem"},
    {"--key", "/c/key.pem", "key", "/c/key.pem"},
    {"--root-ca", "/c/ca.pem", "root-ca", "/c/ca.pem"},
    {"--thing-name", "flag-thing", "thing-name", "flag-thing"},
    {"--log-level", "error", "logging.level", "ERROR"},
    {"--log-type", "File", "logging.type", "FILE"},
    {"--log-file", "/l/a.log", "logging.file", "/l/a.log"},
    {"--enable-sdk-logging", nullptr, "logging.enable-sdk-logging", "true"},
    {"--sdk-log-level", "fatal", "logging.sdk-log-level", "Fatal"},
    {"--sdk-log-file", "/l/sdk.log", "logging.sdk-log-file", "/l/sdk.log"},
    {"--enable-jobs", "false", "jobs.enabled", "false"},
    {"--jobs-handler-dir", "/j", "jobs.handler-directory", "/j"},
    {"--enable-tunneling", "false", "tunneling.enabled", "false"},
    {"--tunneling-region", "eu-west-1", "tunneling.region", "eu-west-1"},
    {"--tunneling-service", "vnc", "tunneling.service", "VNC"},
    {"--enable-device-defender", "true", "device-defender.enabled", "true"},
    {"--device-defender-interval", "45", "device-defender.interval", "45"},
    {"--enable-fleet-provisioning", "false", "fleet-provisioning.enabled", "false"},
    {"--fleet-provisioning-template-name", "Tpl", "fleet-provisioning.template-name", "Tpl"},
    {"--fleet-provisioning-template-parameters", "{\"A\": \"b\"}", "fleet-provisioning.template-parameters",
     "{\"A\":\"b\"}"},
    {"--csr-file", "/c/x.csr", "fleet-provisioning.csr-file", "/c/x.csr"},
    {"--device-key", "/c/dk.pem", "fleet-provisioning.device-key", "/c/dk.pem"},
    {"--enable-pub-sub", "false", "samples.pub-sub.enabled", "false"},
    {"--publish-topic", "p/t", "samples.pub-sub.publish-topic", "p/t"},
    {"--publish-file", "/p.txt", "samples.pub-sub.publish-file", "/p.txt"},
    {"--subscribe-topic", "s/t", "samples.pub-sub.subscribe-topic", "s/t"},
    {"--subscribe-file", "/s.txt", "samples.pub-sub.subscribe-file", "/s.txt"},
    {"--enable-sample-shadow", "false", "sample-shadow.enabled", "false"},
    {"--shadow-name", "sh", "sample-shadow.shadow-name", "sh"},
    {"--shadow-input-file", "/in.json", "sample-shadow.shadow-input-file", "/in.json"},
    {"--shadow-output-file", "/out.json", "sample-shadow.shadow-output-file", "/out.json"},
    {"--enable-config-shadow", "true", "config-shadow.enabled", "true"},
    {"--enable-secure-element", "false", "secure-element.enabled", "false"},
    {"--pkcs11-lib", "/lib/p11.so", "secure-element.pkcs11-lib", "/lib/p11.so"},
    {"--secure-element-pin", "1234-pin", "secure-element.secure-element-pin", "1234-pin"},
    {"--secure-element-key-label", "kl", "secure-element.secure-element-key-label", "kl"},
    {"--secure-element-slot-id", "7", "secure-element.secure-element-slot-id", "7"},
    {"--secure-element-token-label", "tl", "secure-element.secure-element-token-label", "tl"},
};
// Flags of the Device Client that are actions or name other files (checked separately).
const char* const kDeviceClientOtherFlags[] = {"--help", "--version", "--export-default-settings", "--config-file",
                                               "--http-proxy-config", "--tunneling-disable-notification"};

}  // namespace

// ---- the table

TEST_F(Config, TableIsConsistent) {
    std::set<std::string> names, flags, envs;
    for (const auto& k : config::keys()) {
        EXPECT_TRUE(names.insert(k.name).second) << "duplicate key " << k.name;
        if (k.flag) { EXPECT_TRUE(flags.insert(k.flag).second) << "duplicate flag " << k.flag; }
        std::string env = config::env_name(k);
        if (!env.empty()) { EXPECT_TRUE(envs.insert(env).second) << "duplicate env " << env; }
        if (k.env) { EXPECT_TRUE(envs.insert(k.env).second) << "duplicate env " << k.env; }
        EXPECT_TRUE(k.help && *k.help) << k.name << " has no help";
        if (k.type == config::Type::Enum) { EXPECT_TRUE(*k.choices) << k.name; }
        if (k.type == config::Type::Int && !(k.flags & config::kAction)) { EXPECT_LT(k.lo, k.hi) << k.name; }
        if (k.flags & config::kNoArg) { EXPECT_EQ(k.type, config::Type::Bool) << k.name; }
        if (k.mode) { EXPECT_TRUE(k.flags & (config::kPermRequired | config::kPermRecommended)) << k.name; }
    }
    // Every default is a valid value of its key.
    config::Config c;
    for (const auto& k : config::keys())
        if (k.def) { EXPECT_TRUE(c.has(k.name)) << "default of " << k.name << " does not convert: " << k.def; }
    for (const auto& fc : kDeviceClientFlags) EXPECT_TRUE(config::find_flag(fc.flag)) << fc.flag;
    for (const char* f : kDeviceClientOtherFlags) EXPECT_TRUE(config::find_flag(f)) << f;
    EXPECT_EQ(config::env_name(*config::find_key("logging.level")), "IOTBOX_LOGGING_LEVEL");
    EXPECT_EQ(config::env_name(*config::find_key("thing-name")), "IOTBOX_THING_NAME");
}

TEST_F(Config, DefaultsMatchTheDeviceClientAndIotbox) {
    config::Config c;
    EXPECT_EQ(c.str("logging.level"), "DEBUG");
    EXPECT_EQ(c.str("logging.type"), "STDOUT");
    EXPECT_EQ(c.str("logging.file"), "/var/log/aws-iot-device-client/aws-iot-device-client.log");
    EXPECT_EQ(c.str("logging.sdk-log-level"), "Trace");
    EXPECT_TRUE(c.flag("jobs.enabled"));
    EXPECT_TRUE(c.flag("tunneling.enabled"));
    EXPECT_FALSE(c.flag("device-defender.enabled"));
    EXPECT_EQ(c.num("device-defender.interval"), 300);
    EXPECT_EQ(c.path("jobs.handler-directory"), dir_ + "/.aws-iot-device-client/jobs/");
    EXPECT_EQ(c.num("port"), 443);
    EXPECT_EQ(c.num("mqtt.keepalive"), 60);
    EXPECT_EQ(c.num("mqtt.reconnect-min"), 1);
    EXPECT_EQ(c.num("mqtt.reconnect-max"), 120);
    EXPECT_EQ(c.num("mqtt.connect-timeout"), 30);
    EXPECT_EQ(c.str("lock-file"), "/run/lock/devicecl.lock");
    EXPECT_EQ(c.str("state-directory"), "/var/lib/iotbox");
    EXPECT_EQ(c.path("runtime-config-file"), dir_ + "/.aws-iot-device-client/aws-iot-device-client-runtime.conf");
    EXPECT_FALSE(c.has("endpoint"));
    EXPECT_EQ(c.source("port"), "default");
    EXPECT_FALSE(c.is_set("port"));
}

// ---- the main file

TEST_F(Config, FullFileLoadsEveryDeviceClientKey) {
    auto r = run({"--config-file", fixture("full.json")});
    ASSERT_TRUE(r.ok()) << r.error();
    const config::Config& c = r->config;
    std::map<std::string, std::string> want = {
        {"endpoint", "abc123-ats.iot.eu-west-1.amazonaws.com"},
        {"cert", "/certs/device.pem.crt"},
        {"key", "/certs/private.pem.key"},
        {"root-ca", "/certs/AmazonRootCA1.pem"},
        {"thing-name", "full-thing"},
        {"logging.level", "WARN"},
        {"logging.type", "FILE"},
        {"logging.file", "/var/log/full/dc.log"},
        {"logging.enable-sdk-logging", "true"},
        {"logging.sdk-log-level", "Error"},
        {"logging.sdk-log-file", "/var/log/full/sdk.log"},
        {"jobs.enabled", "false"},
        {"jobs.handler-directory", "/opt/full/jobs"},
        {"tunneling.enabled", "false"},
        {"tunneling.endpoint", "data.tunneling.iot.eu-west-1.amazonaws.com"},
        {"device-defender.enabled", "true"},
        {"device-defender.interval", "77"},
        {"fleet-provisioning.enabled", "true"},
        {"fleet-provisioning.template-name", "FullTemplate"},
        {"fleet-provisioning.template-parameters", "{\"SerialNumber\":\"S-1\",\"Color\":\"red\"}"},
        {"fleet-provisioning.csr-file", "/certs/full.csr"},
        {"fleet-provisioning.device-key", "/certs/full-device.key"},
        {"fleet-provisioning.collect-system-information", "true"},
        {"runtime-config.completed-fp", "false"},
        {"runtime-config.cert", "/certs/runtime.crt"},
        {"runtime-config.key", "/certs/runtime.key"},
        {"runtime-config.thing-name", "runtime-thing"},
        {"runtime-config.device-config", "{\"mode\":\"fast\"}"},
        {"samples.pub-sub.enabled", "true"},
        {"samples.pub-sub.publish-topic", "full/pub"},
        {"samples.pub-sub.publish-file", "/data/pub.txt"},
        {"samples.pub-sub.subscribe-topic", "full/sub"},
        {"samples.pub-sub.subscribe-file", "/data/sub.txt"},
        {"samples.pub-sub.publish-on-change", "true"},
        {"sample-shadow.enabled", "true"},
        {"sample-shadow.shadow-name", "full-shadow"},
        {"sample-shadow.shadow-input-file", "/data/shadow-in.json"},
        {"sample-shadow.shadow-output-file", "/data/shadow-out.json"},
        {"config-shadow.enabled", "true"},
        {"config-shadow.persistent-update", "true"},
        {"secure-element.enabled", "true"},
        {"secure-element.pkcs11-lib", "/usr/lib/libfullpkcs11.so"},
        {"secure-element.secure-element-pin", "9876-full-pin"},
        {"secure-element.secure-element-key-label", "full-key"},
        {"secure-element.secure-element-slot-id", "1566083225"},
        {"secure-element.secure-element-token-label", "full-token"},
    };
    for (const auto& [key, value] : want) {
        EXPECT_EQ(c.str(key), value) << key;
        EXPECT_EQ(c.source(key), "file " + fixture("full.json")) << key;
    }
    EXPECT_TRUE(c.flag("samples.pub-sub.publish-on-change"));
    EXPECT_EQ(c.num("device-defender.interval"), 77);
    EXPECT_EQ(c.num("secure-element.secure-element-slot-id"), 1566083225LL);
    EXPECT_EQ(c.location("thing-name"), fixture("full.json") + ":6");

    auto params = c.json_value("fleet-provisioning.template-parameters");
    ASSERT_TRUE(params);
    EXPECT_EQ(json::string_or(params.get(), "SerialNumber", ""), "S-1");

    auto sensors = c.json_value("sensor-publish.sensors");
    ASSERT_TRUE(cJSON_IsArray(sensors.get()));
    ASSERT_EQ(cJSON_GetArraySize(sensors.get()), 1);
    const cJSON* s = cJSON_GetArrayItem(sensors.get(), 0);
    EXPECT_EQ(json::string_or(s, "name", ""), "temp");
    EXPECT_EQ(json::string_or(s, "addr", ""), "/run/sensors/temp.sock");
    EXPECT_EQ(json::string_or(s, "eom_delimiter", ""), "[\\n]+");
    EXPECT_EQ(json::integer(s, "buffer_capacity"), 4096);
    EXPECT_EQ(json::integer(s, "heartbeat_time_sec"), 60);
    EXPECT_TRUE(cJSON_IsTrue(json::get(s, "enabled")));  // the default, filled in
    EXPECT_EQ(json::string_or(s, "mqtt_heartbeat_topic", ""), "full/sensors/heartbeat");
    EXPECT_TRUE(r->warnings.empty()) << joined(r->warnings);
}

TEST_F(Config, EveryDeviceClientFlagSetsItsKey) {
    for (const FlagCase& fc : kDeviceClientFlags) {
        std::vector<std::string> args = {fc.flag};
        if (fc.value) args.push_back(fc.value);
        auto r = run(args);
        ASSERT_TRUE(r.ok()) << fc.flag << ": " << r.error();
        EXPECT_EQ(r->config.str(fc.key), fc.expected) << fc.flag;
        EXPECT_EQ(r->config.source(fc.key), fc.flag);
    }
}

TEST_F(Config, FlagEqualsValueForm) {
    for (const FlagCase& fc : kDeviceClientFlags) {
        if (!fc.value) continue;
        auto r = run({std::string(fc.flag) + "=" + fc.value});
        ASSERT_TRUE(r.ok()) << fc.flag << ": " << r.error();
        EXPECT_EQ(r->config.str(fc.key), fc.expected) << fc.flag;
    }
    std::string cfg = file("eq.json", R"({"thing-name": "from-eq-file"})");
    auto r = run({"--config-file=" + cfg});
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r->config.str("thing-name"), "from-eq-file");
    // A value that begins with "--" needs the = form.
    r = run({"--thing-name=--odd"});
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r->config.str("thing-name"), "--odd");
}

TEST_F(Config, IotboxFlagsSetTheirKeys) {
    auto r = run({"--port", "8883", "--state-dir", "/s", "--keepalive", "300", "--reconnect-min", "2", "--reconnect-max",
                  "60", "--connect-timeout", "10", "--lock-file", "/l/x.lock", "--runtime-config-file", "/r.conf",
                  "--clean-session", "true", "--collect-system-information", "true"});
    ASSERT_TRUE(r.ok()) << r.error();
    const config::Config& c = r->config;
    EXPECT_EQ(c.num("port"), 8883);
    EXPECT_EQ(c.str("state-directory"), "/s");
    EXPECT_EQ(c.num("mqtt.keepalive"), 300);
    EXPECT_EQ(c.num("mqtt.reconnect-min"), 2);
    EXPECT_EQ(c.num("mqtt.reconnect-max"), 60);
    EXPECT_EQ(c.num("mqtt.connect-timeout"), 10);
    EXPECT_EQ(c.str("lock-file"), "/l/x.lock");
    EXPECT_EQ(c.str("runtime-config-file"), "/r.conf");
    EXPECT_TRUE(c.flag("clean-session"));
    EXPECT_TRUE(c.flag("fleet-provisioning.collect-system-information"));
    EXPECT_FALSE(run({"--port", "0"}).ok());
    EXPECT_FALSE(run({"--port", "65536"}).ok());
    EXPECT_NE(run({"--reconnect-min", "100", "--reconnect-max", "10"}).error().find("reconnect-min"), std::string::npos);
}

TEST_F(Config, KeepaliveOutsideAwsRangeIsClampedWithAWarning) {
    auto r = run({"--keepalive", "5"});
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r->config.num("mqtt.keepalive"), 30);
    EXPECT_TRUE(contains(r->warnings, "--keepalive: 5 is outside 30..1200; using 30")) << joined(r->warnings);
    Loaded l = load_text(R"({"mqtt": {"keepalive": 5000}})");
    EXPECT_EQ(l.config.num("mqtt.keepalive"), 1200);
    EXPECT_TRUE(contains(l.warnings, "cfg.json:1: mqtt.keepalive: 5000 is outside")) << joined(l.warnings);
}

TEST_F(Config, BooleansAsJsonOrStringsAnyCase) {
    EXPECT_TRUE(load_text(R"({"jobs": {"enabled": true}})").config.flag("jobs.enabled"));
    EXPECT_TRUE(load_text(R"({"device-defender": {"enabled": "true"}})").config.flag("device-defender.enabled"));
    EXPECT_TRUE(load_text(R"({"device-defender": {"enabled": "TRUE"}})").config.flag("device-defender.enabled"));
    EXPECT_FALSE(load_text(R"({"jobs": {"enabled": false}})").config.flag("jobs.enabled"));
    EXPECT_FALSE(load_text(R"({"jobs": {"enabled": "False"}})").config.flag("jobs.enabled"));
    EXPECT_TRUE(run({"--enable-device-defender", "TRUE"})->config.flag("device-defender.enabled"));
    EXPECT_FALSE(run({"--enable-jobs", "false"})->config.flag("jobs.enabled"));
    std::string err = load_error(R"({"jobs": {"enabled": "yes"}})");
    EXPECT_NE(err.find("cfg.json:1: jobs.enabled: expected true or false, got \"yes\""), std::string::npos) << err;
    EXPECT_NE(run({"--enable-jobs", "1"}).error().find("--enable-jobs: expected true or false"), std::string::npos);
}

TEST_F(Config, IntegersAsNumbersOrNumericStrings) {
    EXPECT_EQ(load_text(R"({"device-defender": {"interval": "600"}})").config.num("device-defender.interval"), 600);
    std::string err = load_error("{\n\"device-defender\": {\"enabled\": true,\n\"interval\": 0}}");
    EXPECT_NE(err.find("cfg.json:3: device-defender.interval: expected an integer from 1 to"), std::string::npos) << err;
    err = load_error(R"({"port": 44.5})");
    EXPECT_NE(err.find("port: expected an integer from 1 to 65535, got 44.5"), std::string::npos) << err;
}

TEST_F(Config, EmptyStringsWarnAndAreIgnored) {
    Loaded l = load_text(R"({"endpoint": "", "logging": {"file": ""}})");
    EXPECT_FALSE(l.config.has("endpoint"));
    EXPECT_EQ(l.config.str("logging.file"), "/var/log/aws-iot-device-client/aws-iot-device-client.log");
    EXPECT_TRUE(contains(l.warnings, "cfg.json:1: endpoint: empty value ignored")) << joined(l.warnings);
}

TEST_F(Config, TemplateParametersAsEscapedStringOrObject) {
    Loaded a = load_text(R"({"fleet-provisioning": {"enabled": true, "template-name": "T",
                              "template-parameters": "{\"Serial\":\"1\"}"}})");
    Loaded b = load_text(R"({"fleet-provisioning": {"enabled": true, "template-name": "T",
                              "template-parameters": {"Serial": "1"}}})");
    EXPECT_EQ(a.config.str("fleet-provisioning.template-parameters"), "{\"Serial\":\"1\"}");
    EXPECT_EQ(b.config.str("fleet-provisioning.template-parameters"), "{\"Serial\":\"1\"}");
    std::string err = load_error(R"({"fleet-provisioning": {"enabled": true, "template-name": "T",
                                     "template-parameters": "[1, 2]"}})");
    EXPECT_NE(err.find("fleet-provisioning.template-parameters: expected a JSON object"), std::string::npos) << err;
    // Not read while fleet provisioning is disabled, as the Device Client: a warning only.
    Loaded c = load_text(R"({"fleet-provisioning": {"enabled": false, "template-parameters": "<replace_me>"}})");
    EXPECT_TRUE(contains(c.warnings, "ignored: fleet-provisioning.enabled is false")) << joined(c.warnings);
}

TEST_F(Config, SensorEntriesAreValidatedAndBadOnesDisabled) {
    Loaded l = load_text(R"({"sensor-publish": {"sensors": [
        {"addr": "/run/a.sock", "eom_delimiter": "\n", "mqtt_topic": "t/a", "addr_poll_sec": "3"},
        {"name": "broken", "addr": "/run/b.sock", "mqtt_topic": "t/b"},
        {"addr": "/run/c.sock", "eom_delimiter": "\n", "mqtt_topic": "t/c", "buffer_capacity": 10, "colour": 1}
    ]}})");
    auto sensors = l.config.json_value("sensor-publish.sensors");
    ASSERT_EQ(cJSON_GetArraySize(sensors.get()), 3);
    const cJSON* a = cJSON_GetArrayItem(sensors.get(), 0);
    EXPECT_EQ(json::string_or(a, "name", ""), "1");
    EXPECT_EQ(json::integer(a, "addr_poll_sec"), 3);
    EXPECT_EQ(json::integer(a, "buffer_capacity"), 128000);
    EXPECT_TRUE(cJSON_IsTrue(json::get(a, "enabled")));
    EXPECT_TRUE(cJSON_IsFalse(json::get(cJSON_GetArrayItem(sensors.get(), 1), "enabled")));
    EXPECT_TRUE(cJSON_IsFalse(json::get(cJSON_GetArrayItem(sensors.get(), 2), "enabled")));
    EXPECT_TRUE(contains(l.warnings, "sensor 2 (broken): eom_delimiter is required; this sensor is disabled"))
        << joined(l.warnings);
    EXPECT_TRUE(contains(l.warnings, "sensor 3 (3): buffer_capacity: expected an integer from 1024")) << joined(l.warnings);
    EXPECT_TRUE(contains(l.warnings, "sensor 3: unknown field 'colour' ignored")) << joined(l.warnings);
    EXPECT_NE(load_error(R"({"sensor-publish": {"sensors": {"addr": "x"}}})").find("expected an array of objects"),
              std::string::npos);
}

// ---- precedence

TEST_F(Config, PrecedenceDefaultsFileRuntimeEnvCli) {
    // logging.level: default < file < env < command line.
    EXPECT_EQ(run({})->config.str("logging.level"), "DEBUG");
    std::string cfg = file("p.json", R"({"logging": {"level": "INFO"}, "thing-name": "file-thing",
        "runtime-config-file": ")" + dir_ + R"(/rt.conf"})");
    auto r = run({"--config-file", cfg});
    EXPECT_EQ(r->config.str("logging.level"), "INFO");
    EXPECT_EQ(r->config.source("logging.level"), "file " + cfg);
    setenv("IOTBOX_LOGGING_LEVEL", "warn", 1);
    r = run({"--config-file", cfg});
    EXPECT_EQ(r->config.str("logging.level"), "WARN");
    EXPECT_EQ(r->config.source("logging.level"), "env IOTBOX_LOGGING_LEVEL");
    r = run({"--config-file", cfg, "--log-level", "ERROR"});
    EXPECT_EQ(r->config.str("logging.level"), "ERROR");
    EXPECT_EQ(r->config.source("logging.level"), "--log-level");

    // thing-name: file < env < command line, until fleet provisioning completes; then the
    // provisioned identity in the runtime file wins over all of them (the Device Client's
    // trusted-user command line keeps naming the claim after provisioning).
    EXPECT_EQ(run({"--config-file", cfg})->config.str("thing-name"), "file-thing");
    setenv("IOTBOX_THING_NAME", "env-thing", 1);
    EXPECT_EQ(run({"--config-file", cfg})->config.str("thing-name"), "env-thing");
    EXPECT_EQ(run({"--config-file", cfg, "--thing-name", "cli-thing"})->config.str("thing-name"), "cli-thing");
    file("rt.conf", R"({"runtime-config": {"completed-fp": true, "thing-name": "runtime-thing"}})");
    r = run({"--config-file", cfg, "--thing-name", "cli-thing"});
    EXPECT_EQ(r->config.str("thing-name"), "runtime-thing");
    EXPECT_EQ(r->config.source("thing-name"), "runtime file " + dir_ + "/rt.conf");
}

TEST_F(Config, RuntimeFileOverridesOnlyWhenFleetProvisioningCompleted) {
    std::string cfg = file("main.json", R"({"cert": "/main.crt", "key": "/main.key", "thing-name": "main"})");
    file(".aws-iot-device-client/aws-iot-device-client-runtime.conf",
         R"({"runtime-config": {"completed-fp": false, "cert": "/rt.crt", "key": "/rt.key", "thing-name": "rt"}})");
    auto r = run({"--config-file", cfg});
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r->config.str("cert"), "/main.crt");
    EXPECT_EQ(r->config.str("runtime-config.cert"), "/rt.crt");
    file(".aws-iot-device-client/aws-iot-device-client-runtime.conf",
         R"({"runtime-config": {"completed-fp": true, "cert": "/rt.crt", "key": "/rt.key", "thing-name": "rt",
             "device-config": {"a": 1}}})");
    r = run({"--config-file", cfg});
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r->config.str("cert"), "/rt.crt");
    EXPECT_EQ(r->config.str("key"), "/rt.key");
    EXPECT_EQ(r->config.str("thing-name"), "rt");
    EXPECT_TRUE(r->config.flag("runtime-config.completed-fp"));
    EXPECT_EQ(r->config.str("runtime-config.device-config"), "{\"a\":1}");
    // A completed provisioning's identity wins over the command line, which names the claim.
    EXPECT_EQ(run({"--config-file", cfg, "--cert", "/claim.crt"})->config.str("cert"), "/rt.crt");
}

TEST_F(Config, RuntimeSectionInTheMainFileIsRead) {
    Loaded l = load_text(R"({"cert": "/main.crt", "runtime-config": {"completed-fp": "true", "cert": "/fp.crt"}})");
    EXPECT_EQ(l.config.str("cert"), "/fp.crt");
    // A main-file key in the runtime file is ignored with a warning.
    std::string rt = file("rt2.conf", R"({"endpoint": "x", "runtime-config": {"completed-fp": false}})");
    auto r = run({"--runtime-config-file", rt});
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_FALSE(r->config.has("endpoint"));
    EXPECT_TRUE(contains(r->warnings, "endpoint belongs in the config file")) << joined(r->warnings);
    // A runtime file that does not exist (yet) is fine.
    EXPECT_TRUE(run({"--runtime-config-file", dir_ + "/nope.conf"}).ok());
}

// ---- the HTTP proxy file

TEST_F(Config, ProxyFileWithPortAsStringAndSecretPassword) {
    log::clear_secrets();
    file(".aws-iot-device-client/http-proxy.conf", R"({
  "http-proxy-enabled": true,
  "http-proxy-host": "10.0.0.140",
  "http-proxy-port": "9999",
  "http-proxy-auth-method": "UserNameAndPassword",
  "http-proxy-username": "MyUserName",
  "http-proxy-password": "password12345"
})",
         0600);
    auto r = run({});
    ASSERT_TRUE(r.ok()) << r.error();
    const config::Config& c = r->config;
    EXPECT_TRUE(c.flag("http-proxy-enabled"));
    EXPECT_EQ(c.str("http-proxy-host"), "10.0.0.140");
    EXPECT_EQ(c.num("http-proxy-port"), 9999);
    EXPECT_EQ(c.str("http-proxy-auth-method"), "UserNameAndPassword");
    EXPECT_EQ(c.str("http-proxy-username"), "MyUserName");
    EXPECT_EQ(c.str("http-proxy-password"), "password12345");
    EXPECT_EQ(log::redact("proxy login MyUserName/password12345 failed"), "proxy login MyUserName/*** failed");

    std::string p = file("proxy6.json", R"({"http-proxy-enabled": true, "http-proxy-host": "fd00::1",
                                            "http-proxy-port": 3128, "http-proxy-auth-method": "none"})");
    r = run({"--http-proxy-config", p});
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r->config.str("http-proxy-host"), "fd00::1");
    EXPECT_EQ(r->config.num("http-proxy-port"), 3128);
    EXPECT_EQ(r->config.str("http-proxy-auth-method"), "None");

    p = file("proxybad.json", R"({"http-proxy-enabled": true, "http-proxy-host": "proxy.lan", "http-proxy-port": "70000"})");
    EXPECT_NE(run({"--http-proxy-config", p}).error().find("http-proxy-port: expected an integer from 1 to 65535"),
              std::string::npos);
    p = file("proxynoauth.json", R"({"http-proxy-enabled": true, "http-proxy-host": "proxy.lan", "http-proxy-port": 1,
                                     "http-proxy-auth-method": "UserNameAndPassword"})");
    EXPECT_NE(run({"--http-proxy-config", p}).error().find("http-proxy-username is required"), std::string::npos);
    EXPECT_NE(run({"--http-proxy-config", dir_ + "/missing.json"}).error().find("missing.json"), std::string::npos);
}

// ---- the environment

TEST_F(Config, EnvironmentVariables) {
    setenv("LOCK_FILE_PATH", "/tmp/locks", 1);
    setenv("AWSIOT_TUNNEL_ACCESS_TOKEN", "tok-secret-value", 1);
    setenv("AWS_CRT_MEMORY_TRACING", "1", 1);
    setenv("IOTBOX_PORT", "8883", 1);
    log::clear_secrets();
    auto r = run({});
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r->config.str("lock-file"), "/tmp/locks/devicecl.lock");
    EXPECT_EQ(r->config.source("lock-file"), "env LOCK_FILE_PATH");
    EXPECT_EQ(r->config.str("tunneling.access-token"), "tok-secret-value");
    EXPECT_EQ(log::redact("token tok-secret-value"), "token ***");
    EXPECT_EQ(r->config.num("port"), 8883);
    EXPECT_TRUE(contains(r->warnings, "crt-memory-tracing (env AWS_CRT_MEMORY_TRACING) is accepted for compatibility "
                                      "but has no effect"))
        << joined(r->warnings);
    setenv("IOTBOX_LOGING_LEVEL", "INFO", 1);  // misspelt
    r = run({});
    unsetenv("IOTBOX_LOGING_LEVEL");
    EXPECT_TRUE(contains(r->warnings, "IOTBOX_LOGING_LEVEL is not a setting; ignored (did you mean "
                                      "'IOTBOX_LOGGING_LEVEL'?)"))
        << joined(r->warnings);
    setenv("IOTBOX_PORT", "https", 1);
    EXPECT_NE(run({}).error().find("env IOTBOX_PORT: expected an integer from 1 to 65535, got \"https\""),
              std::string::npos);
}

TEST_F(Config, ConfigFileSearchOrder) {
    // Nothing found: everything from flags.
    auto r = run({"--thing-name", "t"});
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_FALSE(r->config.has("config-file"));
    // The Device Client's per-user file.
    file(".aws-iot-device-client/aws-iot-device-client.conf", R"({"thing-name": "home"})");
    EXPECT_EQ(run({})->config.str("thing-name"), "home");
    // The system file comes first.
    options_.system_config = file("system.conf", R"({"thing-name": "system"})");
    EXPECT_EQ(run({})->config.str("thing-name"), "system");
    // IOTBOX_CONFIG before both, --config-file before all.
    setenv("IOTBOX_CONFIG", file("env.conf", R"({"thing-name": "env"})").c_str(), 1);
    EXPECT_EQ(run({})->config.str("thing-name"), "env");
    EXPECT_EQ(run({"--config-file", file("cli.conf", R"({"thing-name": "cli"})")})->config.str("thing-name"), "cli");
    // ~ is expanded in the named path and in path values.
    r = run({"--config-file", "~/cli.conf", "--cert", "~/c.pem"});
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r->config.str("thing-name"), "cli");
    EXPECT_EQ(r->config.path("cert"), dir_ + "/c.pem");
}

// ---- errors

TEST_F(Config, BadJsonNamesFileAndLine) {
    std::string err = load_error("{\n  \"endpoint\": \"x\",\n  \"thing-name\": \"t\"\n  \"cert\": \"/c\"\n}\n");
    EXPECT_NE(err.find(dir_ + "/cfg.json:4: invalid JSON near"), std::string::npos) << err;
    err = load_error("");
    EXPECT_NE(err.find("cfg.json"), std::string::npos) << err;
    err = load_error("[1, 2]");
    EXPECT_NE(err.find("expected a JSON object at the top level"), std::string::npos) << err;
}

TEST_F(Config, WrongTypeNamesFileLineAndKey) {
    std::string err = load_error("{\n  \"logging\": {\n    \"level\": 3\n  }\n}\n");
    EXPECT_NE(err.find(dir_ + "/cfg.json:3: logging.level: expected one of DEBUG, INFO, WARN, ERROR, got 3"),
              std::string::npos)
        << err;
    err = load_error(R"({"logging": "loud"})");
    EXPECT_NE(err.find("cfg.json:1: logging: expected an object, got \"loud\""), std::string::npos) << err;
}

TEST_F(Config, BadEnumValue) {
    std::string err = load_error("{\n\"logging\": {\n\n\"level\": \"LOUD\"}}");
    EXPECT_NE(err.find(dir_ + "/cfg.json:4: logging.level: expected one of DEBUG, INFO, WARN, ERROR, got \"LOUD\""),
              std::string::npos)
        << err;
    EXPECT_NE(run({"--log-type", "printer"}).error().find("--log-type: expected one of STDOUT, FILE, SYSLOG"),
              std::string::npos);
    EXPECT_EQ(run({"--log-type", "syslog"})->config.str("logging.type"), "SYSLOG");
}

TEST_F(Config, CommandLineErrors) {
    std::string err = run({"--enpoint", "x"}).error();
    EXPECT_NE(err.find("unknown option --enpoint (did you mean '--endpoint'?)"), std::string::npos) << err;
    err = run({"--endpoint", "a", "--endpoint", "b"}).error();
    EXPECT_NE(err.find("--endpoint: given twice"), std::string::npos) << err;
    err = run({"--endpoint"}).error();
    EXPECT_NE(err.find("--endpoint: missing value"), std::string::npos) << err;
    err = run({"--thing-name", "--cert", "/c"}).error();
    EXPECT_NE(err.find("--thing-name: missing value"), std::string::npos) << err;
    err = run({"--enable-sdk-logging=true"}).error();
    EXPECT_NE(err.find("--enable-sdk-logging takes no value"), std::string::npos) << err;
    err = run({"--collect-system-information", "maybe"}).error();
    EXPECT_NE(err.find("--collect-system-information: expected true or false"), std::string::npos) << err;
    err = run({"stray"}).error();
    EXPECT_NE(err.find("unexpected argument 'stray'"), std::string::npos) << err;
    // Every error is reported, not just the first.
    err = run({"--bogus", "--port", "x"}).error();
    EXPECT_NE(err.find("--bogus"), std::string::npos) << err;
    EXPECT_NE(err.find("--port"), std::string::npos) << err;
}

TEST_F(Config, ExplicitConfigFileMustExist) {
    std::string err = run({"--config-file", dir_ + "/absent.conf"}).error();
    EXPECT_NE(err.find(dir_ + "/absent.conf (--config-file): No such file"), std::string::npos) << err;
    setenv("IOTBOX_CONFIG", (dir_ + "/absent2.conf").c_str(), 1);
    err = run({}).error();
    EXPECT_NE(err.find("absent2.conf (env IOTBOX_CONFIG)"), std::string::npos) << err;
}

TEST_F(Config, FilesOverOneMebibyteAreRefused) {
    std::string big = "{\"endpoint\": \"" + std::string(1024 * 1024, 'x') + "\"}";
    std::string err = load_error(big);
    EXPECT_NE(err.find("larger than 1 MiB"), std::string::npos) << err;
    // Well past the Device Client's 5000-byte cap is fine.
    Loaded l = load_text("{\"endpoint\": \"e\", \"tunneling\": {\"endpoint\": \"" + std::string(8000, 't') + "\"}}");
    EXPECT_EQ(l.config.str("tunneling.endpoint").size(), 8000u);
}

TEST_F(Config, UnknownKeyIsAWarningNotAnError) {
    Loaded l = load_text("{\n  \"endpoint\": \"e\",\n  \"logging\": {\n    \"lvl\": \"INFO\"\n  },\n  \"colour\": 1\n}\n");
    EXPECT_EQ(l.config.str("endpoint"), "e");
    EXPECT_TRUE(contains(l.warnings, "cfg.json:4: unknown key 'logging.lvl' ignored (did you mean 'logging.level'?)"))
        << joined(l.warnings);
    EXPECT_TRUE(contains(l.warnings, "cfg.json:6: unknown key 'colour' ignored")) << joined(l.warnings);
    // A proxy key in the main file is named as belonging elsewhere.
    l = load_text(R"({"http-proxy-host": "p"})");
    EXPECT_TRUE(contains(l.warnings, "http-proxy-host belongs in the HTTP proxy file")) << joined(l.warnings);
}

TEST_F(Config, DeviceClientTemplateGivesAClearErrorThenLoads) {
    std::string text = read(fixture("config-template.json"));
    std::string path = file("template.json", text);
    std::string err = run({"--config-file", path}).error();
    EXPECT_NE(err.find(path +
                       ":56: invalid JSON near 'replace_with_secure_element_slot_id_integer' (key "
                       "secure-element.secure-element-slot-id: replace the placeholder with an integer)"),
              std::string::npos)
        << err;
    std::string fixed = replace_all(text, "replace_with_secure_element_slot_id_integer", "1");
    ASSERT_NE(fixed, text);
    path = file("template-fixed.json", fixed);
    auto r = run({"--config-file", path});
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r->config.num("secure-element.secure-element-slot-id"), 1);
    EXPECT_EQ(r->config.str("endpoint"), "<replace_with_your_account_endpoint>");
    EXPECT_EQ(r->config.str("logging.sdk-log-level"), "Warn");
    EXPECT_TRUE(contains(r->warnings, "fleet-provisioning.template-parameters")) << joined(r->warnings);
    EXPECT_TRUE(contains(r->warnings, ":2: endpoint: still the template placeholder \"<replace_with_"))
        << joined(r->warnings);
}

TEST_F(Config, ValidationOfEnabledFeatures) {
    EXPECT_NE(run({"--enable-fleet-provisioning", "true"}).error().find(
                  "fleet-provisioning.template-name (--fleet-provisioning-template-name) is required when "
                  "fleet-provisioning.enabled is true (--enable-fleet-provisioning)"),
              std::string::npos);
    EXPECT_NE(load_error(R"({"sample-shadow": {"enabled": true}})").find("sample-shadow.shadow-name"),
              std::string::npos);
    std::string err = run({"--enable-pub-sub", "true", "--publish-topic", "a"}).error();
    EXPECT_NE(err.find("samples.pub-sub.subscribe-topic"), std::string::npos) << err;
    EXPECT_EQ(err.find("samples.pub-sub.publish-topic"), std::string::npos) << err;
    EXPECT_NE(run({"--tunneling-disable-notification"}).error().find("tunneling.access-token"), std::string::npos);
    auto r = run({"--tunneling-disable-notification", "--tunneling-region", "us-east-1", "--tunneling-service", "SSH"});
    EXPECT_FALSE(r.ok());
    setenv("AWSIOT_TUNNEL_ACCESS_TOKEN", "abcd-token", 1);
    r = run({"--tunneling-disable-notification", "--tunneling-region", "us-east-1", "--tunneling-service", "SSH"});
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_TRUE(r->config.flag("tunneling.disable-notification"));
}

TEST_F(Config, CheckRequired) {
    auto r = run({"--endpoint", "e", "--thing-name", "t"});
    ASSERT_TRUE(r.ok()) << r.error();  // load itself does not demand them
    Status st = config::check_required(r->config);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().find("cert (--cert), key (--key)"), std::string::npos) << st.error();
    EXPECT_EQ(st.error().find("endpoint"), std::string::npos) << st.error();
    r = run({"--endpoint", "e", "--thing-name", "t", "--cert", "/c", "--enable-secure-element", "true", "--pkcs11-lib",
             "/p.so", "--secure-element-pin", "1234"});
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_TRUE(config::check_required(r->config).ok()) << config::check_required(r->config).error();
}

TEST_F(Config, HelpAndVersionComeFirst) {
    auto r = run({"--bogus", "--help"});
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_TRUE(r->help);
    r = run({"--config-file", dir_ + "/absent", "--version"});
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_TRUE(r->version);
    r = run({"--export-default-settings", "~/out.conf"});
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r->export_path, dir_ + "/out.conf");
}

TEST_F(Config, PositionalArgumentsWhenAllowed) {
    options_.allow_positional = true;
    auto r = run({"doc.json", "--thing-name", "t", "--", "--not-a-flag"});
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r->positional, (std::vector<std::string>{"doc.json", "--not-a-flag"}));
    EXPECT_EQ(r->config.str("thing-name"), "t");
}

// ---- permissions

TEST_F(Config, PermissionsAreThisModeOrStricter) {
    ASSERT_TRUE(fs::make_dirs(dir_ + "/certs", 0700).ok());
    std::string key = file("certs/key.pem", "k", 0400);
    std::string cert = file("certs/cert.pem", "c", 0644);
    auto r = run({"--key", key, "--cert", cert, "--jobs-handler-dir", dir_ + "/certs"});
    ASSERT_TRUE(r.ok()) << r.error();
    auto report = config::check_permissions(r->config);
    EXPECT_TRUE(report.errors.empty()) << joined(report.errors);
    EXPECT_TRUE(report.warnings.empty()) << joined(report.warnings);

    ASSERT_EQ(::chmod(key.c_str(), 0644), 0);
    report = config::check_permissions(r->config);
    ASSERT_EQ(report.errors.size(), 1u) << joined(report.errors);
    EXPECT_EQ(report.errors[0],
              "key: " + key + " has mode 0644, must be 0600 or stricter (chmod 600 " + key + ")");
}

TEST_F(Config, PermissionWarningsAndMissingFiles) {
    std::string key = file("k.pem", "k", 0600);
    std::string cfg = file("perm.json", "{}", 0644);
    ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
    auto r = run({"--config-file", cfg, "--key", key, "--root-ca", dir_ + "/no-ca.pem", "--cert", dir_ + "/no.crt",
                  "--jobs-handler-dir", dir_ + "/no-jobs"});
    ASSERT_TRUE(r.ok()) << r.error();
    auto report = config::check_permissions(r->config);
    EXPECT_TRUE(contains(report.warnings, "root-ca: " + dir_ + "/no-ca.pem: No such file or directory; using the "
                                                              "system trust store"))
        << joined(report.warnings);
    EXPECT_TRUE(contains(report.warnings, "config-file (recommended): " + cfg + " has mode 0644, must be 0640 or stricter (chmod 640"))
        << joined(report.warnings);
    EXPECT_TRUE(contains(report.warnings, "key (recommended): directory " + dir_ + " has mode 0755, must be 0700"))
        << joined(report.warnings);
    EXPECT_TRUE(contains(report.warnings, "jobs.handler-directory: " + dir_ + "/no-jobs")) << joined(report.warnings);
    EXPECT_TRUE(contains(report.errors, "cert: " + dir_ + "/no.crt: No such file")) << joined(report.errors);
    EXPECT_FALSE(contains(report.errors, "root-ca")) << joined(report.errors);
    // Files of disabled features are not looked at.
    EXPECT_FALSE(contains(report.errors, "csr-file"));
    std::string csr = file("x.csr", "c", 0644);
    r = run({"--enable-fleet-provisioning", "true", "--fleet-provisioning-template-name", "T", "--csr-file", csr});
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_TRUE(contains(config::check_permissions(r->config).errors, "fleet-provisioning.csr-file: " + csr));
}

// ---- export, help, secrets

TEST_F(Config, ExportJsonIsValidAndHidesSecrets) {
    std::string proxy = file("px.json", R"({"http-proxy-enabled": true, "http-proxy-host": "h", "http-proxy-port": "8080",
        "http-proxy-auth-method": "UserNameAndPassword", "http-proxy-username": "u", "http-proxy-password": "pw-\"quoted\"-9"})");
    auto r = run({"--config-file", fixture("full.json"), "--http-proxy-config", proxy});
    ASSERT_TRUE(r.ok()) << r.error();
    std::string out = config::export_json(r->config);
    auto doc = json::parse(out);
    ASSERT_TRUE(doc.ok()) << doc.error() << "\n" << out;
    EXPECT_EQ(out.find("9876-full-pin"), std::string::npos) << out;
    EXPECT_EQ(out.find("pw-"), std::string::npos) << out;
    const cJSON* se = json::get(doc->get(), "secure-element");
    EXPECT_EQ(json::string_or(se, "secure-element-pin", ""), "***");
    EXPECT_EQ(json::integer(se, "secure-element-slot-id"), 1566083225LL);
    EXPECT_EQ(json::string_or(doc->get(), "http-proxy-password", ""), "***");
    EXPECT_EQ(json::integer(doc->get(), "http-proxy-port"), 8080);
    EXPECT_EQ(json::string_or(json::get(doc->get(), "logging"), "level", ""), "WARN");
    EXPECT_TRUE(cJSON_IsArray(json::get(json::get(doc->get(), "sensor-publish"), "sensors")));

    std::string with = config::export_json(r->config, true);
    auto doc2 = json::parse(with);
    ASSERT_TRUE(doc2.ok()) << doc2.error();
    EXPECT_EQ(json::string_or(doc2->get(), "http-proxy-password", ""), "pw-\"quoted\"-9");

    // The main-file export loads back to the same values.
    std::string again = file("again.json", config::export_json(r->config, true, true));
    auto r2 = run({"--config-file", again});
    ASSERT_TRUE(r2.ok()) << r2.error();
    EXPECT_TRUE(r2->warnings.empty()) << joined(r2->warnings);
    for (const auto& k : config::keys())
        if (k.where == config::Where::Main || k.where == config::Where::Runtime) {
            EXPECT_EQ(r2->config.str(k.name), r->config.str(k.name)) << k.name;
        }
}

TEST_F(Config, ExportDefaultsIsValidJsonThatLoads) {
    std::string out = config::export_defaults();
    auto doc = json::parse(out);
    ASSERT_TRUE(doc.ok()) << doc.error() << "\n" << out;
    EXPECT_EQ(json::string_or(json::get(doc->get(), "logging"), "level", ""), "DEBUG");
    EXPECT_EQ(json::integer(json::get(doc->get(), "device-defender"), "interval"), 300);
    EXPECT_TRUE(cJSON_IsTrue(json::get(json::get(doc->get(), "jobs"), "enabled")));
    EXPECT_EQ(json::integer(doc->get(), "port"), 443);
    Loaded l = load_text(out);
    EXPECT_EQ(l.config.str("logging.level"), "DEBUG");
    EXPECT_FALSE(contains(l.warnings, "unknown key")) << joined(l.warnings);
}

TEST_F(Config, ExportFileKeepsRequiredAndChangedOrSetKeysOnly) {
    Loaded l = load_text(R"({"endpoint": "e", "thing-name": "t", "cert": "/c", "key": "/k",
                            "logging": {"level": "DEBUG"}, "jobs": {"enabled": false}})",
                         {"--secure-element-pin", "9911-33"});
    auto changed = json::parse(config::export_file(l.config, config::FileKeys::Changed));
    ASSERT_TRUE(changed.ok()) << changed.error();
    EXPECT_EQ(json::string_or(changed->get(), "endpoint", ""), "e");
    EXPECT_TRUE(cJSON_IsFalse(json::get(json::get(changed->get(), "jobs"), "enabled")));
    EXPECT_EQ(json::get(changed->get(), "logging"), nullptr) << "DEBUG is the default";
    EXPECT_EQ(json::get(changed->get(), "port"), nullptr);
    EXPECT_EQ(json::get(changed->get(), "config-file"), nullptr) << "not a config-file key";
    EXPECT_EQ(json::string_or(json::get(changed->get(), "secure-element"), "secure-element-pin", ""), "9911-33");
    auto set = json::parse(config::export_file(l.config, config::FileKeys::Set));
    ASSERT_TRUE(set.ok()) << set.error();
    EXPECT_EQ(json::string_or(json::get(set->get(), "logging"), "level", ""), "DEBUG") << "set in the file";
    EXPECT_EQ(json::get(set->get(), "port"), nullptr);
}

TEST_F(Config, InUseFollowsSectionsAndLogType) {
    Loaded l = load_text(R"({"jobs": {"enabled": false}, "logging": {"type": "FILE"}})");
    EXPECT_FALSE(config::in_use(l.config, *config::find_key("jobs.handler-directory")));
    EXPECT_TRUE(config::in_use(l.config, *config::find_key("logging.file")));
    EXPECT_FALSE(config::in_use(l.config, *config::find_key("logging.sdk-log-file")));
    EXPECT_TRUE(config::in_use(l.config, *config::find_key("endpoint")));
    EXPECT_FALSE(config::in_use(l.config, *config::find_key("fleet-provisioning.template-name")));
}

TEST_F(Config, WithoutFindFilesOnlyNamedFilesAreRead) {
    std::string dc = dir_ + "/.aws-iot-device-client";
    ASSERT_EQ(mkdir(dc.c_str(), 0700), 0);
    write(dc + "/aws-iot-device-client.conf", R"({"endpoint": "found"})", 0640);
    write(dc + "/aws-iot-device-client-runtime.conf", R"({"runtime-config": {"thing-name": "rt"}})", 0640);
    auto found = run({});
    ASSERT_TRUE(found.ok()) << found.error();
    EXPECT_EQ(found->config.str("endpoint"), "found");
    EXPECT_EQ(found->config.str("runtime-config.thing-name"), "rt");
    options_.find_files = false;
    auto fresh = run({"--endpoint", "given"});
    ASSERT_TRUE(fresh.ok()) << fresh.error();
    EXPECT_EQ(fresh->config.str("endpoint"), "given");
    EXPECT_FALSE(fresh->config.has("config-file"));
    EXPECT_FALSE(fresh->config.has("runtime-config.thing-name"));
}

TEST_F(Config, SecretsAreRegisteredWithTheLogger) {
    log::clear_secrets();
    EXPECT_EQ(log::redact("pin is 5511-77"), "pin is 5511-77");
    auto r = run({"--secure-element-pin", "5511-77"});
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(log::redact("pin is 5511-77"), "pin is ***");
    log::clear_secrets();
}

TEST_F(Config, HelpMentionsEveryFlagAndDefault) {
    std::string help = config::help_text();
    for (const auto& k : config::keys()) {
        if (k.flag) { EXPECT_NE(help.find(k.flag), std::string::npos) << k.flag; }
        if (k.env) { EXPECT_NE(help.find(k.env), std::string::npos) << k.env; }
    }
    EXPECT_NE(help.find("DEBUG|INFO|WARN|ERROR"), std::string::npos);
    EXPECT_NE(help.find("Default: 443."), std::string::npos);
    EXPECT_NE(help.find("\nlogging:\n"), std::string::npos);
}

// ---- keys named by code

TEST_F(Config, UnknownKeyNameInAGetterIsAProgrammingError) {
    config::Config c;
    size_t before = config::unknown_key_lookups();
    EXPECT_EQ(c.str("logging.levle"), "");
    EXPECT_FALSE(c.flag("no.such.key"));
    EXPECT_EQ(config::unknown_key_lookups(), before + 2);
    EXPECT_FALSE(c.set("no.such.key", "1", "test").ok());
}

TEST_F(Config, EveryKeyTheCodeNamesExists) {
    // Dynamically: load, validate and check everything with every feature on; no lookup may miss.
    setenv("AWSIOT_TUNNEL_ACCESS_TOKEN", "abcd-token", 1);
    std::string proxy = file("px.json", R"({"http-proxy-enabled": true, "http-proxy-host": "h", "http-proxy-port": 1,
        "http-proxy-auth-method": "UserNameAndPassword", "http-proxy-username": "u", "http-proxy-password": "pppp"})");
    size_t before = config::unknown_key_lookups();
    auto r = run({"--config-file", fixture("full.json"), "--http-proxy-config", proxy, "--tunneling-disable-notification",
                  "--tunneling-region", "r", "--tunneling-service", "SSH"});
    ASSERT_TRUE(r.ok()) << r.error();
    (void)config::check_required(r->config);
    (void)config::check_permissions(r->config);
    (void)config::export_json(r->config);
    EXPECT_EQ(config::unknown_key_lookups(), before);

    // Statically: every string literal passed to a Config getter in lib/ and applets/.
    std::vector<std::string> files;
    for (const char* sub : {"/lib", "/applets"}) {
        std::string root = std::string(IOT_SOURCE_DIR) + sub;
        static std::vector<std::string>* out;
        out = &files;
        nftw(
            root.c_str(),
            [](const char* p, const struct stat*, int type, struct FTW*) {
                if (type == FTW_F && (ends_with(p, ".cpp") || ends_with(p, ".hpp"))) out->push_back(p);
                return 0;
            },
            16, FTW_PHYS);
    }
    ASSERT_FALSE(files.empty());
    int checked = 0;
    for (const std::string& path : files) {
        std::string text = read(path);
        if (text.find("config/config.hpp") == std::string::npos && path.find("/lib/config/") == std::string::npos)
            continue;
        for (const char* call : {".str(\"", ".path(\"", ".flag(\"", ".num(\"", ".json_value(\"", ".has(\"",
                                 ".is_set(\"", ".source(\"", ".location(\"", ".value(\"", ".value_mut(\"",
                                 "lookup(\"", "{\"runtime-config.", "\"cert\"}", "require_when(l, \""}) {
            for (size_t pos = text.find(call); pos != std::string::npos; pos = text.find(call, pos + 1)) {
                size_t start = text.find('"', pos) + 1;
                size_t end = text.find('"', start);
                std::string name = text.substr(start, end - start);
                ++checked;
                EXPECT_TRUE(config::find_key(name)) << path << ": '" << name << "' is not in keys.def";
            }
        }
    }
    EXPECT_GT(checked, 20);
}
