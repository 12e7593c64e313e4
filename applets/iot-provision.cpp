// iot-provision: fleet provisioning from a factory or first-boot script, in one command: by claim,
// by CSR (a CSR file, or a key made on the device), trusted-user claims, certificate rotation, and
// the JITP tools (a CA, device certificates it signs, a first connection that waits for the
// registration). The Device Client's flags work unchanged.
#include <signal.h>
#include <stdlib.h>

#include <cstdio>
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
#include "provision/files.hpp"
#include "provision/provisioner.hpp"

namespace {
const char* const kName = "iot-provision";

struct Options {
    std::string command;     // "", claim, csr, rotate, ca, jitp, jitp-connect
    std::string subcommand;  // ca create
    bool json = false;
    bool force = false;
    std::string out, cn, ca_cert, ca_key;
    int days = 0;
    long long timeout_s = 0;  // jitp-connect: the whole wait
    std::vector<const char*> config_args;
};

void progress(const std::string& line) { fprintf(stderr, "%s: %s\n", kName, line.c_str()); }

void print_result(const iot::provision::Outcome& r, bool provisioned) {
    std::string dc = r.device_config.empty() ? "{}" : r.device_config;
    printf("{\"provisioned\":%s,\"thing-name\":%s,\"certificate-id\":%s,\"cert\":%s,\"key\":%s,"
           "\"runtime-config-file\":%s,\"device-config\":%s%s}\n",
           provisioned ? "true" : "false", iot::json::quote(r.thing_name).c_str(),
           iot::json::quote(r.certificate_id).c_str(), iot::json::quote(r.cert).c_str(), iot::json::quote(r.key).c_str(),
           iot::json::quote(r.runtime_config_file).c_str(), dc.c_str(),
           r.previous_certificate_id.empty()
               ? ""
               : (",\"previous-certificate-id\":" + iot::json::quote(r.previous_certificate_id)).c_str());
}

std::string certificate_id_of(const std::string& cert) {
    auto info = iot::tls::inspect_file(cert);
    return info ? info->fingerprint_sha256 : "";
}

// The claim identity is the main config's cert and key: when a completed runtime file replaced
// them (the --force case with a config file), load again without the runtime file.
iot::Result<iot::config::Config> claim_config(const Options& o, const iot::config::Config& cfg) {
    if (!iot::starts_with(cfg.source("cert"), "runtime file") && !iot::starts_with(cfg.source("key"), "runtime file"))
        return cfg;
    std::vector<const char*> args = o.config_args;
    args.push_back("--runtime-config-file");
    args.push_back("/nonexistent/iotbox-claim-only");
    auto again = iot::config::load(static_cast<int>(args.size()), args.data());
    if (!again) return again.err();
    return again->config;
}

int run_provision(const Options& o, const iot::config::Config& loaded) {
    auto opts = iot::provision::options_from_config(loaded);
    if (!opts) return iot::fail(kName, iot::kExitUsage, "%s", opts.error().c_str());
    if (o.command == "claim" && opts->method == iot::provision::Method::CsrFile)
        return iot::fail(kName, iot::kExitUsage, "claim asks AWS for a key: drop --csr-file, or use `%s csr`", kName);
    if (o.command == "csr" && opts->method == iot::provision::Method::CreateKeys)
        opts->method = iot::provision::Method::DeviceKey;

    const std::string& runtime = opts->runtime_config_file;
    if (!o.force && iot::fs::exists(runtime)) {
        auto rc = iot::provision::read_runtime_config(runtime);
        if (rc && iot::provision::runtime_config_complete(*rc)) {
            progress(iot::format("already provisioned as %s (%s); --force provisions again", rc->thing_name.c_str(),
                                 runtime.c_str()));
            iot::provision::Outcome r;
            r.thing_name = rc->thing_name;
            r.certificate_id = rc->certificate_id.empty() ? certificate_id_of(rc->cert) : rc->certificate_id;
            r.cert = rc->cert;
            r.key = rc->key;
            r.runtime_config_file = runtime;
            r.device_config = rc->device_config;
            if (o.json) print_result(r, false);
            return iot::kExitOk;
        }
    }
    auto cfg = claim_config(o, loaded);
    if (!cfg) return iot::fail(kName, iot::kExitUsage, "%s", cfg.error().c_str());
    opts->cert = cfg->path("cert");
    opts->key = cfg->path("key");
    if (opts->cert.empty() || opts->key.empty())
        return iot::fail(kName, iot::kExitUsage, "no claim certificate and key (--cert and --key)");
    opts->thing_name = cfg->str("thing-name");
    opts->client_id = opts->thing_name.empty() ? "provision-" + iot::random_token(12) : opts->thing_name;
    opts->progress = progress;
    auto r = iot::provision::provision(*opts);
    if (!r) return iot::fail(kName, iot::kExitFailed, "provisioning failed: %s", r.error().c_str());
    if (o.json) print_result(*r, true);
    return iot::kExitOk;
}

int run_rotate(const Options& o, const iot::config::Config& cfg) {
    auto opts = iot::provision::options_from_config(cfg);
    if (!opts) return iot::fail(kName, iot::kExitUsage, "%s", opts.error().c_str());
    opts->method = iot::provision::Method::DeviceKey;  // a rotation always makes a new key here
    opts->rotation = true;
    opts->cert = cfg.path("cert");
    opts->key = cfg.path("key");
    opts->thing_name = cfg.str("thing-name");
    if (opts->cert.empty() || opts->key.empty() || opts->thing_name.empty())
        return iot::fail(kName, iot::kExitUsage, "rotation needs the current certificate, key and thing name "
                                                 "(a completed runtime config, or --cert, --key and --thing-name)");
    opts->client_id = opts->thing_name;
    opts->progress = progress;
    std::string previous = certificate_id_of(opts->cert);
    auto r = iot::provision::provision(*opts);
    if (!r)
        return iot::fail(kName, iot::kExitFailed, "rotation failed, still using %s: %s", opts->cert.c_str(),
                         r.error().c_str());
    r->previous_certificate_id = previous;
    progress(iot::format("rotated: %s replaces %s (the old files are kept)", r->certificate_id.c_str(), previous.c_str()));
    if (o.json) print_result(*r, true);
    return iot::kExitOk;
}

int run_ca(const Options& o, const iot::config::Config& cfg) {
    if (o.subcommand != "create") return iot::fail(kName, iot::kExitUsage, "usage: %s ca create --out DIR [--cn NAME]", kName);
    if (o.out.empty()) return iot::fail(kName, iot::kExitUsage, "ca create needs --out DIR");
    auto type = iot::tls::parse_key_type(cfg.str("fleet-provisioning.key-type"));
    if (!type) return iot::fail(kName, iot::kExitUsage, "%s", type.error().c_str());
    auto f = iot::provision::create_ca(o.out, o.cn.empty() ? "iotbox JITP CA" : o.cn, o.days ? o.days : 3650, *type);
    if (!f) return iot::fail(kName, iot::kExitFailed, "cannot create the CA: %s", f.error().c_str());
    progress(iot::format("wrote %s (0644) and %s (0600); register ca.crt with AWS IoT (auto-registration on, with a "
                         "JITP template)", f->cert.c_str(), f->key.c_str()));
    if (o.json)
        printf("{\"cert\":%s,\"key\":%s,\"certificate-id\":%s}\n", iot::json::quote(f->cert).c_str(),
               iot::json::quote(f->key).c_str(), iot::json::quote(certificate_id_of(f->cert)).c_str());
    return iot::kExitOk;
}

int run_jitp(const Options& o, const iot::config::Config& cfg) {
    if (o.ca_cert.empty() || o.ca_key.empty() || o.out.empty() || cfg.str("thing-name").empty())
        return iot::fail(kName, iot::kExitUsage, "usage: %s jitp --ca-cert FILE --ca-key FILE --thing-name NAME --out DIR", kName);
    auto type = iot::tls::parse_key_type(cfg.str("fleet-provisioning.key-type"));
    if (!type) return iot::fail(kName, iot::kExitUsage, "%s", type.error().c_str());
    auto f = iot::provision::issue_jitp_device(o.ca_cert, o.ca_key, cfg.str("thing-name"), o.out, o.days ? o.days : 365, *type);
    if (!f) return iot::fail(kName, iot::kExitFailed, "cannot issue the device certificate: %s", f.error().c_str());
    progress(iot::format("wrote %s, %s (certificate + CA, for --cert) and %s (0600)", f->cert.c_str(), f->chain.c_str(),
                         f->key.c_str()));
    if (o.json)
        printf("{\"thing-name\":%s,\"certificate-id\":%s,\"cert\":%s,\"chain\":%s,\"key\":%s}\n",
               iot::json::quote(cfg.str("thing-name")).c_str(), iot::json::quote(f->certificate_id).c_str(),
               iot::json::quote(f->cert).c_str(), iot::json::quote(f->chain).c_str(), iot::json::quote(f->key).c_str());
    return iot::kExitOk;
}

int run_jitp_connect(const Options& o, const iot::config::Config& cfg) {
    iot::Status required = iot::config::check_required(cfg);
    if (!required) return iot::fail(kName, iot::kExitUsage, "%s", required.error().c_str());
    iot::provision::JitpOptions jo;
    jo.broker.host = cfg.str("endpoint");
    jo.broker.port = static_cast<int>(cfg.num("port"));
    std::string ca = cfg.path("root-ca");
    jo.broker.ca_file = !ca.empty() && iot::fs::exists(ca) ? ca : "";
    jo.broker.keepalive_s = static_cast<int>(cfg.num("mqtt.keepalive"));
    jo.cert = cfg.path("cert");
    jo.key = cfg.path("key");
    jo.client_id = cfg.str("thing-name");
    jo.total_timeout_ms = (o.timeout_s ? o.timeout_s : 60) * 1000;
    jo.progress = progress;
    auto r = iot::provision::jitp_connect(jo);
    if (!r) return iot::fail(kName, iot::kExitFailed, "%s", r.error().c_str());
    if (o.json)
        printf("{\"thing-name\":%s,\"attempts\":%d}\n", iot::json::quote(jo.client_id).c_str(), *r);
    return iot::kExitOk;
}

// "--flag VALUE" or "--flag=VALUE" of our own options.
bool take_value(int argc, char** argv, int& i, const char* flag, std::string& out, std::string& error) {
    std::string a = argv[i];
    size_t n = strlen(flag);
    if (a == flag) {
        if (i + 1 >= argc) {
            error = iot::format("%s needs a value", flag);
            return true;
        }
        out = argv[++i];
        return true;
    }
    if (a.size() > n && a.compare(0, n, flag) == 0 && a[n] == '=') {
        out = a.substr(n + 1);
        return true;
    }
    return false;
}
}  // namespace

void iot_provision_help() {
    printf("Usage: iot-provision [claim|csr] [--json] [--force] [--timeout S] [CONFIG OPTIONS]\n"
           "       iot-provision rotate [--json] [CONFIG OPTIONS]\n"
           "       iot-provision ca create --out DIR [--cn NAME] [--days N]\n"
           "       iot-provision jitp --ca-cert FILE --ca-key FILE --thing-name NAME --out DIR [--days N]\n"
           "       iot-provision jitp-connect [--timeout S] [CONFIG OPTIONS]\n\n"
           "Fleet provisioning with the claim certificate (--cert/--key), then the new identity is proved by\n"
           "connecting with it and the runtime config (runtime-config-file, Device Client format, 0640) is\n"
           "switched to it. Certificates and keys go to <keys dir>/<certId>-certificate.pem.crt (0644) and\n"
           "<certId>-private.pem.key (0600); the keys dir (0700) is keys/ beside the runtime config unless\n"
           "--dir is given. A completed runtime config means there is nothing to do.\n\n"
           "  (none)         as the Device Client: CreateKeysAndCertificate, or CreateCertificateFromCsr with\n"
           "                 --csr-file and --device-key\n"
           "  claim          CreateKeysAndCertificate (AWS makes the key)\n"
           "  csr            CreateCertificateFromCsr; without --csr-file the key (--key-type ec|rsa, default\n"
           "                 EC P-256) and the CSR are made here and the key never leaves the device\n"
           "  rotate         new key and CSR for the provisioned thing; RegisterThing gets the parameter\n"
           "                 \"Rotation\": \"true\"; the old files are kept\n"
           "  ca create      a root CA for JITP (ca.crt, ca.key 0600)\n"
           "  jitp           a device key and certificate signed by the CA (CN = thing name) and the chain\n"
           "                 file (device certificate + CA certificate) to connect with\n"
           "  jitp-connect   connect until the cloud has registered a JITP certificate (the first\n"
           "                 connections are dropped while it does), --timeout S in all (default 60)\n\n"
           "  --json         print one result object on standard output\n"
           "  --force        provision again although the runtime config says it is done\n"
           "  --timeout S    seconds per step (fleet-provisioning.timeout, default 10)\n"
           "  --key-type T   ec (P-256) or rsa (2048) (fleet-provisioning.key-type)\n"
           "  --dir DIR      where new certificates and keys go (fleet-provisioning.keys-directory)\n"
           "Any Device Client option (--config-file, --endpoint, --cert, --key, --root-ca, --thing-name,\n"
           "--enable-fleet-provisioning, --fleet-provisioning-template-name,\n"
           "--fleet-provisioning-template-parameters, --csr-file, --device-key, ...) is accepted too.\n\n"
           "Progress goes to standard error, one line per step. Exit codes: 0 provisioned (or already),\n"
           "1 the cloud refused, a step timed out or a file could not be written, 2 bad usage or config.\n");
}

int iot_provision_main(int argc, char** argv) {
    Options o;
    std::vector<std::string> storage;
    storage.reserve(static_cast<size_t>(argc) * 2);
    std::vector<std::string> positional;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i], v, error;
        if (a == "--json") o.json = true;
        else if (a == "--force") o.force = true;
        else if (take_value(argc, argv, i, "--timeout", v, error)) {
            if (!error.empty()) return iot::fail(kName, iot::kExitUsage, "%s", error.c_str());
            auto n = iot::parse_int(v);
            if (!n || *n < 1 || *n > 3600) return iot::fail(kName, iot::kExitUsage, "--timeout: expected seconds (1-3600), got '%s'", v.c_str());
            o.timeout_s = *n;
            storage.push_back("--fleet-provisioning-timeout=" + v);
            o.config_args.push_back(storage.back().c_str());
        } else if (take_value(argc, argv, i, "--key-type", v, error)) {
            if (!error.empty()) return iot::fail(kName, iot::kExitUsage, "%s", error.c_str());
            storage.push_back("--fleet-provisioning-key-type=" + v);
            o.config_args.push_back(storage.back().c_str());
        } else if (take_value(argc, argv, i, "--dir", v, error)) {
            if (!error.empty()) return iot::fail(kName, iot::kExitUsage, "%s", error.c_str());
            storage.push_back("--fleet-provisioning-keys-dir=" + v);
            o.config_args.push_back(storage.back().c_str());
        } else if (take_value(argc, argv, i, "--out", o.out, error) || take_value(argc, argv, i, "--cn", o.cn, error) ||
                   take_value(argc, argv, i, "--ca-cert", o.ca_cert, error) ||
                   take_value(argc, argv, i, "--ca-key", o.ca_key, error)) {
            if (!error.empty()) return iot::fail(kName, iot::kExitUsage, "%s", error.c_str());
        } else if (take_value(argc, argv, i, "--days", v, error)) {
            auto n = iot::parse_int(v);
            if (!error.empty() || !n || *n < 1 || *n > 36500)
                return iot::fail(kName, iot::kExitUsage, "--days: expected a number of days, got '%s'", v.c_str());
            o.days = static_cast<int>(*n);
        } else if (!a.empty() && a[0] != '-') {
            positional.push_back(a);
        } else {
            o.config_args.push_back(argv[i]);
            const iot::config::Key* key = iot::config::find_flag(a);
            if (key && !(key->flags & iot::config::kNoArg) && i + 1 < argc) o.config_args.push_back(argv[++i]);
        }
    }
    if (!positional.empty()) o.command = positional[0];
    if (positional.size() > 1) o.subcommand = positional[1];
    static const char* const kCommands[] = {"", "claim", "csr", "rotate", "ca", "jitp", "jitp-connect"};
    bool known = false;
    for (const char* c : kCommands) known = known || o.command == c;
    if (!known) return iot::fail(kName, iot::kExitUsage, "unknown command '%s' (see --help)", o.command.c_str());
    if (positional.size() > (o.command == "ca" ? 2u : 1u))
        return iot::fail(kName, iot::kExitUsage, "unexpected argument '%s' (see --help)", positional.back().c_str());

    // iot-provision provisions whatever the config file's fleet-provisioning.enabled says; the
    // setting matters to iotd. Enabled, the fleet-provisioning settings are read and checked.
    bool provisioning = o.command != "ca" && o.command != "jitp" && o.command != "jitp-connect";
    if (const iot::config::Key* k = iot::config::find_key("fleet-provisioning.enabled"); k && provisioning)
        ::setenv(iot::config::env_name(*k).c_str(), "true", 0);
    auto loaded = iot::config::load(static_cast<int>(o.config_args.size()), o.config_args.data());
    if (!loaded) return iot::fail(kName, iot::kExitUsage, "%s", loaded.error().c_str());
    if (loaded->help) {
        iot_provision_help();
        return iot::kExitOk;
    }
    if (loaded->version) {
        iot::print_version();
        return iot::kExitOk;
    }
    auto level = iot::log::parse_level(loaded->config.is_set("logging.level") ? loaded->config.str("logging.level") : "WARN");
    (void)iot::log::configure(level ? *level : iot::log::Level::Warn, iot::log::Sink::Stderr);
    ::signal(SIGPIPE, SIG_IGN);
    const iot::config::Config& cfg = loaded->config;
    if (o.command == "rotate") return run_rotate(o, cfg);
    if (o.command == "ca") return run_ca(o, cfg);
    if (o.command == "jitp") return run_jitp(o, cfg);
    if (o.command == "jitp-connect") return run_jitp_connect(o, cfg);
    return run_provision(o, cfg);
}
