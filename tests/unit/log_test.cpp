#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include "fs/fs.hpp"
#include "log/log.hpp"

using namespace iot;

namespace {
std::string temp_dir() {
    char tmpl[] = "/tmp/iotlog-XXXXXX";
    return mkdtemp(tmpl);
}
}  // namespace

TEST(Log, RedactsPemPrivateKeys) {
    std::string msg = "got {\"certificatePem\":\"-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\","
                      "\"key\":\"-----BEGIN EC PRIVATE KEY-----\\nSECRETBYTES\\n-----END EC PRIVATE KEY-----\"}";
    std::string out = log::redact(msg);
    EXPECT_EQ(out.find("SECRETBYTES"), std::string::npos) << out;
    EXPECT_NE(out.find("MIIB"), std::string::npos) << "certificates are public and stay readable";
}

TEST(Log, RedactsSecretFieldsAndHeaders) {
    std::string out = log::redact(
        "{\"certificateOwnershipToken\":\"tok123secret\",\"clientToken\":\"abc\",\"privateKey\":\"pk\"} "
        "access-token: hdrsecret http-proxy-password=pw1234");
    EXPECT_EQ(out.find("tok123secret"), std::string::npos) << out;
    EXPECT_EQ(out.find("hdrsecret"), std::string::npos) << out;
    EXPECT_EQ(out.find("pw1234"), std::string::npos) << out;
    EXPECT_EQ(out.find("\"pk\""), std::string::npos) << out;
    EXPECT_NE(out.find("\"clientToken\":\"abc\""), std::string::npos) << "client tokens are not secrets: " << out;
}

TEST(Log, RedactsRegisteredSecretsAnywhere) {
    log::add_secret("hunter2hunter2");
    EXPECT_EQ(log::redact("pin is hunter2hunter2."), "pin is ***.");
    log::clear_secrets();
    EXPECT_EQ(log::redact("pin is hunter2hunter2."), "pin is hunter2hunter2.");
}

TEST(Log, FileSinkFormatLevelsAndReopenAfterRotation) {
    std::string dir = temp_dir();
    std::string path = dir + "/iotd.log";
    ASSERT_TRUE(log::configure(log::Level::Info, log::Sink::File, path));
    LOG_DEBUG("test", "hidden %d", 1);
    LOG_INFO("test", "first %d", 2);
    // logrotate moves the file away; SIGHUP makes the daemon reopen it.
    ASSERT_EQ(::rename(path.c_str(), (dir + "/iotd.log.1").c_str()), 0);
    LOG_WARN("test", "still to the old file");
    ASSERT_TRUE(log::reopen());
    LOG_ERROR("test", "after reopen");
    ASSERT_TRUE(log::configure(log::Level::Info, log::Sink::Stdout));

    auto old_content = fs::read_file(dir + "/iotd.log.1");
    auto new_content = fs::read_file(path);
    ASSERT_TRUE(old_content && new_content);
    EXPECT_EQ(old_content->find("hidden"), std::string::npos);
    EXPECT_NE(old_content->find(" INFO [test] first 2\n"), std::string::npos) << *old_content;
    EXPECT_NE(old_content->find(" WARN [test] still to the old file"), std::string::npos);
    EXPECT_NE(new_content->find(" ERROR [test] after reopen"), std::string::npos) << *new_content;
    EXPECT_EQ(new_content->find("first"), std::string::npos);
    struct stat st;
    ASSERT_EQ(stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << "log files may hold device details: private";
    std::system(("rm -rf " + dir).c_str());
}

TEST(Log, ParsesLevelsAndSinksCaseInsensitively) {
    EXPECT_EQ(*log::parse_level("warn"), log::Level::Warn);
    EXPECT_EQ(*log::parse_sink("Syslog"), log::Sink::Syslog);
    auto bad = log::parse_level("LOUD");
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.error().find("LOUD"), std::string::npos);
    EXPECT_NE(bad.error().find("DEBUG, INFO, WARN or ERROR"), std::string::npos);
}
