// Provisioned identity on disk: names, modes, the runtime config's shape (read back by the config
// loader as the Device Client's), certificate validity checks, and kill -9 at every write step.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/time.hpp"
#include "config/config.hpp"
#include "fs/fs.hpp"
#include "json/json.hpp"
#include "provision/files.hpp"
#include "provision/provisioner.hpp"
#include "support/tempdir.hpp"
#include "tls/pki.hpp"

using namespace iot;
using namespace iot::provision;
using testsupport::TempDir;

namespace {
mode_t mode_of(const std::string& p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 ? (st.st_mode & 07777) : 0;
}

// A certificate from a throwaway CA, valid from now + offset for `days`.
std::string make_cert(int64_t not_before_offset_s, int days) {
    auto ca_key = tls::generate_key(tls::KeyType::EcP256);
    auto ca = tls::make_ca(ca_key->get(), "test CA", 10);
    auto key = tls::generate_key(tls::KeyType::EcP256);
    tls::SignOptions so;
    so.days = days;
    so.not_before_offset_s = not_before_offset_s;
    auto cert = tls::sign_public_key(key->get(), "claim", ca->get(), ca_key->get(), so);
    return tls::certificate_pem(cert->get());
}

int g_crash_countdown = 0;
void crash_hook(fs::WriteStep) {
    if (--g_crash_countdown == 0) _exit(0);  // kill -9 here
}
}  // namespace

TEST(ProvisionFiles, NamesAsTheDeviceClient) {
    EXPECT_EQ(certificate_path("/k", "ab12"), "/k/ab12-certificate.pem.crt");
    EXPECT_EQ(private_key_path("/k", "ab12"), "/k/ab12-private.pem.key");
}

TEST(ProvisionFiles, ModesFromTheFirstByte) {
    TempDir t;
    mode_t old = umask(0);
    std::string dir = t.path + "/a/keys";
    ASSERT_TRUE(prepare_key_directory(dir));
    ASSERT_TRUE(write_private_key_pem(dir + "/k.pem.key", "secret"));
    ASSERT_TRUE(write_certificate(dir + "/c.pem.crt", "cert"));
    RuntimeConfig rc{true, dir + "/c.pem.crt", dir + "/k.pem.key", "dev", "{}", "ab"};
    ASSERT_TRUE(write_runtime_config(t.path + "/b/runtime.conf", rc));
    umask(old);
    EXPECT_EQ(mode_of(dir), 0700u);
    EXPECT_EQ(mode_of(dir + "/k.pem.key"), 0600u);
    EXPECT_EQ(mode_of(dir + "/c.pem.crt"), 0644u);
    EXPECT_EQ(mode_of(t.path + "/b/runtime.conf"), 0640u);
    EXPECT_EQ(mode_of(t.path + "/b"), 0700u);
    // An existing key directory open to others is refused, with the fix.
    ::chmod(dir.c_str(), 0755);
    auto st = prepare_key_directory(dir);
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().find("chmod 700"), std::string::npos) << st.error();
}

TEST(ProvisionFiles, RuntimeConfigIsValidJsonTheConfigLoaderReads) {
    TempDir t;
    RuntimeConfig rc{true, t.path + "/c \"1\".crt", t.path + "/k.key", "thing-\\1", R"({"Foo":"Bar","Url":"x"})", "ff00"};
    std::string path = t.path + "/runtime.conf";
    ASSERT_TRUE(write_runtime_config(path, rc));
    auto doc = json::parse(*fs::read_file(path));
    ASSERT_TRUE(doc) << doc.error();
    const cJSON* section = json::get(doc->get(), "runtime-config");
    ASSERT_TRUE(cJSON_IsObject(section));
    EXPECT_TRUE(cJSON_IsTrue(json::get(section, "completed-fp")));
    EXPECT_EQ(json::string_or(section, "cert", ""), rc.cert);
    EXPECT_EQ(json::string_or(section, "thing-name", ""), "thing-\\1");
    EXPECT_EQ(json::string_or(json::get(section, "device-config"), "Foo", ""), "Bar");

    auto back = read_runtime_config(path);
    ASSERT_TRUE(back) << back.error();
    EXPECT_EQ(back->cert, rc.cert);
    EXPECT_EQ(back->certificate_id, "ff00");
    EXPECT_FALSE(runtime_config_complete(*back)) << "the files do not exist";
    ASSERT_TRUE(fs::write_atomic(rc.cert, "c"));
    ASSERT_TRUE(fs::write_atomic(rc.key, "k", 0600));
    EXPECT_TRUE(runtime_config_complete(*back));

    // The shared config loader takes cert, key and thing-name from it, as the Device Client.
    std::string arg = "--runtime-config-file=" + path;
    const char* argv2[] = {"--endpoint", "e", arg.c_str()};
    auto with = config::load(3, argv2);
    ASSERT_TRUE(with) << with.error();
    EXPECT_EQ(with->config.str("cert"), rc.cert);
    EXPECT_EQ(with->config.str("thing-name"), "thing-\\1");
}

TEST(ProvisionFiles, ValidityIsCheckedBeforeConnecting) {
    TempDir t;
    int64_t now = wall_ms() / 1000;
    std::string good = t.path + "/good.crt", expired = t.path + "/expired.crt", future = t.path + "/future.crt";
    ASSERT_TRUE(fs::write_atomic(good, make_cert(-60, 1)));
    ASSERT_TRUE(fs::write_atomic(expired, make_cert(-3 * 86400, 1)));
    ASSERT_TRUE(fs::write_atomic(future, make_cert(2 * 86400, 5)));
    EXPECT_TRUE(check_validity(good, "claim certificate", now));
    auto e = check_validity(expired, "claim certificate", now);
    ASSERT_FALSE(e);
    EXPECT_NE(e.error().find("claim certificate " + expired + " expired at"), std::string::npos) << e.error();
    auto f = check_validity(future, "claim certificate", now);
    ASSERT_FALSE(f);
    EXPECT_NE(f.error().find("not valid yet"), std::string::npos) << f.error();
    EXPECT_FALSE(check_validity(t.path + "/none.crt", "claim certificate", now));
}

// The commit sequence of provision(): new certificate, new key, then the runtime config. kill -9
// after any step of any of the three atomic writes leaves the old runtime config pointing at old,
// whole files, or the new one pointing at new, whole files; every file has its mode.
TEST(ProvisionFiles, KillAtEveryWriteStepLeavesOldOrNewIdentity) {
    const int kSteps = 3 * 4;  // three atomic writes of four steps each
    for (int crash_at = 1; crash_at <= kSteps + 1; ++crash_at) {
        TempDir t;
        std::string dir = t.path + "/keys", runtime = t.path + "/runtime.conf";
        ASSERT_TRUE(prepare_key_directory(dir));
        ASSERT_TRUE(write_certificate(certificate_path(dir, "01d"), "old cert"));
        ASSERT_TRUE(write_private_key_pem(private_key_path(dir, "01d"), "old key"));
        RuntimeConfig old_rc{true, certificate_path(dir, "01d"), private_key_path(dir, "01d"), "dev", "{}", "01d"};
        ASSERT_TRUE(write_runtime_config(runtime, old_rc));
        std::string big(100000, 'c');
        pid_t pid = fork();
        if (pid == 0) {
            g_crash_countdown = crash_at;
            fs::set_write_step_hook(crash_hook);
            RuntimeConfig rc{true, certificate_path(dir, "0e1"), private_key_path(dir, "0e1"), "dev", "{}", "0e1"};
            if (!write_certificate(rc.cert, big) || !write_private_key_pem(rc.key, "new key") ||
                !write_runtime_config(runtime, rc))
                _exit(2);
            _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << crash_at;
        auto rc = read_runtime_config(runtime);
        ASSERT_TRUE(rc) << crash_at << ": " << rc.error();
        ASSERT_TRUE(runtime_config_complete(*rc)) << crash_at;
        if (rc->certificate_id == "0e1") {
            EXPECT_EQ(*fs::read_file(rc->cert), big);
            EXPECT_EQ(*fs::read_file(rc->key), "new key");
        } else {
            EXPECT_EQ(rc->certificate_id, "01d") << crash_at;
            EXPECT_EQ(*fs::read_file(rc->cert), "old cert");
            EXPECT_EQ(*fs::read_file(rc->key), "old key");
        }
        EXPECT_EQ(rc->certificate_id == "0e1", crash_at > kSteps - 2) << crash_at;  // renamed = switched
        EXPECT_EQ(mode_of(rc->key), 0600u);
        EXPECT_EQ(mode_of(rc->cert), 0644u);
        EXPECT_EQ(mode_of(runtime), 0640u);
        // Temporaries a crash left are never more open than their file, and are cleaned up.
        remove_stale_temporaries(dir);
        remove_stale_temporaries(t.path);
        EXPECT_EQ(std::system(("test -z \"$(ls -A " + dir + " | grep tmp)\"").c_str()), 0) << crash_at;
        EXPECT_EQ(std::system(("test -z \"$(ls -A " + t.path + " | grep tmp)\"").c_str()), 0) << crash_at;
    }
}
