// Test support for gtest suites: a real mosquitto broker with TLS and client
// certificates (tests/testbed/testbed.py) and the cloud emulator
// (tests/fakecloud/fakecloud.py), driven from C++.
//
//   Testbed tb("mqtt_reconnect");               // broker up in $IOT_TESTBED_ROOT/mqtt_reconnect-<pid>-<n>
//   auto dev = tb.thing("dev1");                // things/dev1.crt + .key, CN=dev1
//   FakeCloud cloud(tb);                        // fakecloud.py connected to it
//   ... run the device code against tb.host():tb.port() with tb.ca() ...
//   EXPECT_TRUE(cloud.wait_for("$aws/things/dev1/jobs/get", 5));
//
// Failures throw std::runtime_error with the tool's own message. Needs the
// compile definition IOT_SOURCE_DIR (the source tree's absolute path) and
// cJSON. Environment: IOT_TESTBED_ROOT (default <source>/build/testbed),
// IOT_PYTHON (default /usr/bin/python3), IOT_TESTBED_KEEP=1 keeps the
// testbed directory after the test for a post-mortem.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace testsupport {

// Options of Testbed::thing (at namespace scope: GCC cannot use a nested
// struct's member initializers in a default argument of the enclosing class).
struct ThingOptions {
    bool expired = false;    // notAfter in the past
    bool untrusted = false;  // signed by a CA the broker does not trust
    int days = 30;
};

class Testbed {
public:
    struct Identity {
        std::string cert, key;
    };
    using ThingOptions = testsupport::ThingOptions;

    // Runs `testbed.py up` in a fresh directory named after `name`.
    explicit Testbed(std::string name);
    // Runs `testbed.py down` and removes the directory (unless IOT_TESTBED_KEEP).
    ~Testbed();
    Testbed(const Testbed&) = delete;
    Testbed& operator=(const Testbed&) = delete;

    const std::string& dir() const { return dir_; }
    const std::string& host() const { return host_; }  // "localhost"
    int port() const { return port_; }
    int mismatch_port() const { return mismatch_port_; }  // server cert for wrong.example
    const std::string& ca() const { return ca_; }
    const std::string& ca_key() const { return ca_key_; }
    Identity fakecloud_identity() const { return {fakecloud_cert_, fakecloud_key_}; }

    Identity thing(const std::string& name, const ThingOptions& options = {});
    void stop();                              // broker dead, port free
    void start();                             // same ports again
    void restart(double down_seconds = 0.0);  // stop, stay down, start
    bool running() const;

    // Runs tests/testbed/testbed.py with these arguments; returns its stdout or throws.
    std::string run(const std::vector<std::string>& args) const;

private:
    std::string dir_, host_, ca_, ca_key_, fakecloud_cert_, fakecloud_key_;
    int port_ = 0;
    int mismatch_port_ = 0;
};

class FakeCloud {
public:
    // Starts fakecloud.py for this testbed; returns once it is connected to the broker.
    explicit FakeCloud(const Testbed& testbed);
    // SIGTERM, then waitpid (SIGKILL after 5 s).
    ~FakeCloud();
    FakeCloud(const FakeCloud&) = delete;
    FakeCloud& operator=(const FakeCloud&) = delete;

    // Sends one JSON request line ({"cmd": ...}); returns the response line
    // (without the newline) whatever it says. Throws if the socket fails.
    std::string command(const std::string& json_line, double timeout_s = 30.0);

    // Helpers over command(); they throw if the response is not ok, except
    // wait_for, which returns false on a timeout.
    Testbed::Identity create_thing(const std::string& name);
    void publish(const std::string& topic, const std::string& payload, int qos = 1);
    bool wait_for(const std::string& topic_filter, double timeout_s, const std::string& thing = "",
                  int after = 0);
    std::string received(const std::string& thing = "", const std::string& topic_filter = "");
    std::string log();
    void clear_log();

    pid_t pid() const { return pid_; }
    const std::string& socket_path() const { return socket_; }

private:
    void terminate();

    std::string dir_, socket_;
    pid_t pid_ = -1;
};

// True when the JSON response line has "ok": true.
bool response_ok(const std::string& response_line);

}  // namespace testsupport
