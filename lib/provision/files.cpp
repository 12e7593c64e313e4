#include "provision/files.hpp"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/strings.hpp"
#include "fs/fs.hpp"
#include "json/json.hpp"

namespace iot::provision {

std::string certificate_path(const std::string& dir, const std::string& certificate_id) {
    return dir + "/" + certificate_id + "-certificate.pem.crt";
}

std::string private_key_path(const std::string& dir, const std::string& certificate_id) {
    return dir + "/" + certificate_id + "-private.pem.key";
}

Status prepare_key_directory(const std::string& dir) {
    if (!fs::is_dir(dir)) {
        Status st = fs::make_dirs(dir, 0700);
        if (!st) return st.err().wrap("cannot create the key directory");
    }
    return fs::check_mode(dir, 0700);
}

void remove_stale_temporaries(const std::string& dir) {
    DIR* d = ::opendir(dir.c_str());
    if (!d) return;
    while (struct dirent* e = ::readdir(d)) {
        std::string name = e->d_name;
        // Only ours: ".<cert or key or runtime file>.tmp-<pid>-<token>", and never a live writer's.
        size_t pos = name.find(".tmp-");
        if (name[0] != '.' || pos == std::string::npos) continue;
        std::string base = name.substr(1, pos - 1);
        if (!ends_with(base, "-certificate.pem.crt") && !ends_with(base, "-private.pem.key") && !ends_with(base, ".conf"))
            continue;
        auto pid = parse_int(split(name.substr(pos + 5), '-')[0]);
        if (pid && *pid != getpid() && ::kill(static_cast<pid_t>(*pid), 0) == 0) continue;
        ::unlink((dir + "/" + name).c_str());
    }
    ::closedir(d);
}

Status write_certificate(const std::string& path, const std::string& certificate_pem) {
    Status st = fs::write_atomic(path, certificate_pem, 0644);
    if (!st) return st.err().wrap("cannot write certificate " + path);
    return {};
}

Status write_private_key_pem(const std::string& path, const std::string& key_pem) {
    Status st = fs::write_atomic(path, key_pem, 0600);
    if (!st) return st.err().wrap("cannot write private key " + path);
    return {};
}

std::string runtime_config_json(const RuntimeConfig& rc) {
    auto dc = json::parse(rc.device_config.empty() ? "{}" : rc.device_config);
    std::string device_config = dc && cJSON_IsObject(dc->get()) ? json::print(dc->get()) : "{}";
    std::string out = "{\n  \"runtime-config\": {\n";
    out += format("    \"completed-fp\": %s,\n", rc.completed_fp ? "true" : "false");
    out += "    \"cert\": " + json::quote(rc.cert) + ",\n";
    out += "    \"key\": " + json::quote(rc.key) + ",\n";
    out += "    \"thing-name\": " + json::quote(rc.thing_name) + ",\n";
    if (!rc.certificate_id.empty()) out += "    \"certificate-id\": " + json::quote(rc.certificate_id) + ",\n";
    out += "    \"device-config\": " + device_config + "\n  }\n}\n";
    return out;
}

Status write_runtime_config(const std::string& path, const RuntimeConfig& rc) {
    std::string dir = fs::dirname(path);
    if (!fs::is_dir(dir)) {
        Status st = fs::make_dirs(dir, 0700);
        if (!st) return st.err().wrap("cannot create the runtime config's directory");
    }
    Status st = fs::write_atomic(path, runtime_config_json(rc), 0640);
    if (!st) return st.err().wrap("cannot write the runtime config " + path);
    return {};
}

Result<RuntimeConfig> read_runtime_config(const std::string& path) {
    auto text = fs::read_file(path, 1024 * 1024);
    if (!text) return text.err();
    auto doc = json::parse(*text);
    if (!doc) return Error(path + ": " + doc.error());
    const cJSON* section = json::get(doc->get(), "runtime-config");
    if (!cJSON_IsObject(section)) return Error(path + ": no \"runtime-config\" object");
    RuntimeConfig rc;
    const cJSON* done = json::get(section, "completed-fp");
    rc.completed_fp = cJSON_IsTrue(done);
    rc.cert = fs::expand_home(json::string_or(section, "cert", ""));
    rc.key = fs::expand_home(json::string_or(section, "key", ""));
    rc.thing_name = json::string_or(section, "thing-name", "");
    rc.certificate_id = json::string_or(section, "certificate-id", "");
    const cJSON* dc = json::get(section, "device-config");
    rc.device_config = cJSON_IsObject(dc) ? json::print(dc) : "{}";
    return rc;
}

bool runtime_config_complete(const RuntimeConfig& rc) {
    return rc.completed_fp && !rc.cert.empty() && !rc.key.empty() && fs::exists(rc.cert) && fs::exists(rc.key);
}

}  // namespace iot::provision
