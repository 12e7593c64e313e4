// The MQTT client against a real mosquitto broker with TLS and client certificates (tests/testbed),
// plus a tiny scripted TLS server for the two refusals mosquitto cannot be made to produce here
// (CONNACK "not authorised", and AWS's silent close before CONNACK).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "base/time.hpp"
#include "json/json.hpp"
#include "log/log.hpp"
#include "loop/loop.hpp"
#include "mqtt/client.hpp"
#include "support/testbed.hpp"

using namespace iot;
using testsupport::FakeCloud;
using testsupport::Testbed;

namespace {

bool run_until(EventLoop& loop, const std::function<bool()>& done, int64_t timeout_ms) {
    int64_t deadline = monotonic_ms() + timeout_ms;
    while (!done()) {
        if (monotonic_ms() > deadline) return false;
        loop.run_once(50);
    }
    return true;
}

mqtt::Options options_for(const Testbed& tb, const std::string& thing, const Testbed::Identity& id) {
    mqtt::Options o;
    o.host = "localhost";
    o.port = tb.port();
    o.client_id = thing;
    o.ca_file = tb.ca();
    o.cert_file = id.cert;
    o.key_file = id.key;
    o.reconnect_min_ms = 100;
    o.reconnect_max_ms = 400;
    o.connect_timeout_ms = 5000;
    return o;
}

// Watches a client's connection events.
struct Events {
    int ups = 0, downs = 0;
    std::string last_reason;
    void attach(mqtt::Client& c) {
        c.on_connection([this](bool up, const std::string& reason) {
            if (up) ++ups;
            else ++downs, last_reason = reason;
        });
    }
};

std::string failure_of(const mqtt::Options& o) {
    EventLoop loop;
    mqtt::Client c(loop, o);
    Events ev;
    ev.attach(c);
    Status st = c.start();
    if (!st) return "start: " + st.error();
    run_until(loop, [&] { return ev.downs > 0 || ev.ups > 0; }, 8000);
    return ev.ups ? "connected" : ev.last_reason;
}

// A TLS server on loopback that reads the CONNECT and then either answers with a CONNACK return
// code or hangs up without one, as AWS IoT does for a certificate or policy it refuses.
class ScriptedServer {
public:
    ScriptedServer(const Testbed& tb, int connack_code) : code_(connack_code) {
        ctx_ = SSL_CTX_new(TLS_server_method());
        SSL_CTX_use_certificate_chain_file(ctx_, (tb.dir() + "/server.crt").c_str());
        SSL_CTX_use_PrivateKey_file(ctx_, (tb.dir() + "/server.key").c_str(), SSL_FILETYPE_PEM);
        fd_ = socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
        socklen_t len = sizeof a;
        getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
        port_ = ntohs(a.sin_port);
        listen(fd_, 4);
        thread_ = std::thread([this] { serve(); });
    }
    ~ScriptedServer() {
        stop_ = true;
        shutdown(fd_, SHUT_RDWR);
        close(fd_);
        thread_.join();
        SSL_CTX_free(ctx_);
    }
    int port() const { return port_; }
    int connects() const { return connects_; }

private:
    void serve() {
        while (!stop_) {
            int c = accept(fd_, nullptr, nullptr);
            if (c < 0) return;
            if (code_ == -3) {  // a plain TCP listener that hangs up at once
                close(c);
                continue;
            }
            SSL* ssl = SSL_new(ctx_);
            SSL_set_fd(ssl, c);
            if (SSL_accept(ssl) == 1) {
                std::string packet;
                if (read_packet(ssl, packet) && (static_cast<unsigned char>(packet[0]) & 0xf0) == 0x10) {
                    ++connects_;
                    if (code_ >= 0) {
                        unsigned char connack[] = {0x20, 0x02, 0x00, static_cast<unsigned char>(code_)};
                        SSL_write(ssl, connack, sizeof connack);
                        if (code_ == 0) converse(ssl);
                        usleep(100000);
                    }
                }
            }
            SSL_free(ssl);
            close(c);
        }
    }
    // One MQTT packet: fixed header byte, variable-length remaining length, body.
    static bool read_exact(SSL* ssl, unsigned char* p, int n) {
        while (n > 0) {
            int r = SSL_read(ssl, p, n);
            if (r <= 0) return false;
            p += r;
            n -= r;
        }
        return true;
    }
    static bool read_packet(SSL* ssl, std::string& packet) {
        unsigned char b;
        if (!read_exact(ssl, &b, 1)) return false;
        packet.assign(1, static_cast<char>(b));
        size_t len = 0, mult = 1;
        do {
            if (!read_exact(ssl, &b, 1)) return false;
            len += (b & 127) * mult;
            mult *= 128;
        } while (b & 128);
        std::string body(len, '\0');
        if (len && !read_exact(ssl, reinterpret_cast<unsigned char*>(body.data()), static_cast<int>(len))) return false;
        packet += body;
        return true;
    }
    // After CONNACK 0: SUBACK refusing (0x80) every filter containing "secret", granting QoS 1
    // otherwise; PUBACK each QoS 1 publish and send it back at QoS 0; PINGRESP; stop at DISCONNECT.
    void converse(SSL* ssl) {
        std::string p;
        while (!stop_ && read_packet(ssl, p)) {
            unsigned char type = static_cast<unsigned char>(p[0]) & 0xf0;
            std::string body = p.substr(1);
            if (type == 0x80) {
                std::string granted;
                size_t i = 2;
                while (i + 2 <= body.size()) {
                    size_t n = (static_cast<unsigned char>(body[i]) << 8) | static_cast<unsigned char>(body[i + 1]);
                    std::string filter = body.substr(i + 2, n);
                    i += 2 + n + 1;
                    granted += filter.find("secret") != std::string::npos ? '\x80' : '\x01';
                }
                std::string suback = std::string(1, '\x90') + static_cast<char>(2 + granted.size()) + body.substr(0, 2) + granted;
                SSL_write(ssl, suback.data(), static_cast<int>(suback.size()));
            } else if (type == 0x30) {
                int qos = (static_cast<unsigned char>(p[0]) >> 1) & 3;
                size_t n = (static_cast<unsigned char>(body[0]) << 8) | static_cast<unsigned char>(body[1]);
                std::string topic = body.substr(2, n);
                std::string payload = body.substr(2 + n + (qos ? 2 : 0));
                if (qos) {
                    std::string puback = std::string("\x40\x02", 2) + body.substr(2 + n, 2);
                    SSL_write(ssl, puback.data(), static_cast<int>(puback.size()));
                }
                std::string out = std::string(1, '\x30') + static_cast<char>(2 + topic.size() + payload.size()) +
                                  body.substr(0, 2 + n) + payload;
                SSL_write(ssl, out.data(), static_cast<int>(out.size()));
            } else if (type == 0xc0) {
                SSL_write(ssl, "\xd0\x00", 2);
            } else if (type == 0xe0) {
                return;
            }
        }
    }

    SSL_CTX* ctx_;
    int fd_, port_ = 0, code_;
    std::atomic<bool> stop_{false};
    std::atomic<int> connects_{0};
    std::thread thread_;
};

}  // namespace

TEST(MqttClient, ConnectsOverMutualTlsAndExchangesMessages) {
    Testbed tb("mqtt-basic");
    EventLoop loop;
    mqtt::Client c(loop, options_for(tb, "t1", tb.thing("t1")));
    std::vector<std::string> got;
    c.subscribe("things/t1/+", 1, [&](const mqtt::Message& m) { got.push_back(m.topic + "=" + m.payload); });
    ASSERT_TRUE(c.start());
    ASSERT_TRUE(run_until(loop, [&] { return c.connected(); }, 8000)) << c.last_error();
    // The SUBACK may follow CONNACK by a round trip: publish until our own message comes back.
    ASSERT_TRUE(run_until(loop, [&] {
        if (got.empty()) (void)c.publish("things/t1/echo", "hello", 1);
        loop.run_once(50);
        return !got.empty();
    }, 5000));
    EXPECT_EQ(got.front(), "things/t1/echo=hello");
    bool stopped = false;
    c.stop([&] { stopped = true; });
    ASSERT_TRUE(run_until(loop, [&] { return stopped; }, 3000));
    EXPECT_FALSE(c.connected());
}

TEST(MqttClient, UnknownServerCaIsExplained) {
    Testbed tb("mqtt-unknown-ca");
    auto id = tb.thing("t1");
    tb.thing("other", Testbed::ThingOptions{false, true});  // creates the untrusted CA file
    auto o = options_for(tb, "t1", id);
    o.ca_file = tb.dir() + "/untrusted-ca.crt";
    std::string why = failure_of(o);
    EXPECT_NE(why.find("unknown CA"), std::string::npos) << why;
}

TEST(MqttClient, HostNameMismatchIsExplained) {
    Testbed tb("mqtt-mismatch");
    auto o = options_for(tb, "t1", tb.thing("t1"));
    o.port = tb.mismatch_port();
    std::string why = failure_of(o);
    EXPECT_NE(why.find("does not match host name localhost"), std::string::npos) << why;
}

TEST(MqttClient, ExpiredClientCertificateIsExplained) {
    Testbed tb("mqtt-expired");
    auto o = options_for(tb, "t1", tb.thing("t1", Testbed::ThingOptions{true, false}));
    std::string why = failure_of(o);
    EXPECT_NE(why.find("expired"), std::string::npos) << why;
    EXPECT_NE(why.find(o.cert_file), std::string::npos) << why;
}

TEST(MqttClient, ClientCertificateFromAnUnknownCaIsExplained) {
    Testbed tb("mqtt-untrusted");
    auto o = options_for(tb, "t1", tb.thing("t1", Testbed::ThingOptions{false, true}));
    std::string why = failure_of(o);
    EXPECT_NE(why.find("refused our client certificate"), std::string::npos) << why;
}

TEST(MqttClient, ConnectionRefusedIsExplained) {
    Testbed tb("mqtt-refused");
    auto o = options_for(tb, "t1", tb.thing("t1"));
    tb.stop();
    std::string why = failure_of(o);
    EXPECT_NE(why.find("connection refused"), std::string::npos) << why;
}

TEST(MqttClient, ConnackNotAuthorisedIsExplained) {
    Testbed tb("mqtt-notauth");
    ScriptedServer server(tb, 5);
    auto o = options_for(tb, "t1", tb.thing("t1"));
    o.port = server.port();
    std::string why = failure_of(o);
    EXPECT_NE(why.find("not authorised"), std::string::npos) << why;
}

TEST(MqttClient, SilentCloseBeforeConnackPointsAtPolicyOrRegistration) {
    Testbed tb("mqtt-hangup");
    ScriptedServer server(tb, -1);
    auto o = options_for(tb, "t1", tb.thing("t1"));
    o.port = server.port();
    std::string why = failure_of(o);
    EXPECT_NE(why.find("closed the connection before CONNACK"), std::string::npos) << why;
    EXPECT_NE(why.find("iot:Connect"), std::string::npos) << why;
}

// A peer that hangs up during the handshake: libmosquitto retries the failed write forever, so the
// client must see the hang-up itself instead of spinning until the connect timeout.
TEST(MqttClient, HangUpDuringTheHandshakeFailsTheAttemptAtOnce) {
    Testbed tb("mqtt-tcp-hangup");
    ScriptedServer server(tb, -3);
    auto o = options_for(tb, "t1", tb.thing("t1"));
    o.port = server.port();
    o.connect_timeout_ms = 20000;
    std::string why = failure_of(o);
    EXPECT_EQ(why.find("no answer"), std::string::npos) << "waited for the connect timeout: " << why;
    EXPECT_NE(why.find("closed the connection"), std::string::npos) << why;
}

TEST(MqttClient, ReconnectsAfterBrokerRestartAndResubscribes) {
    Testbed tb("mqtt-restart");
    EventLoop loop;
    mqtt::Client device(loop, options_for(tb, "t1", tb.thing("t1")));
    Events ev;
    ev.attach(device);
    int received = 0;
    device.subscribe("things/t1/cmd", 1, [&](const mqtt::Message&) { ++received; });
    ASSERT_TRUE(device.start());
    ASSERT_TRUE(run_until(loop, [&] { return device.connected(); }, 8000));

    // The broker keeps no state across this restart (persistence off): only a client that
    // resubscribes by itself hears the next command.
    tb.restart(1.0);
    ASSERT_TRUE(run_until(loop, [&] { return ev.ups >= 2; }, 15000)) << device.last_error();
    EXPECT_GE(ev.downs, 1);

    mqtt::Options cloud_opts = options_for(tb, "cloud", tb.fakecloud_identity());
    mqtt::Client cloud(loop, cloud_opts);
    ASSERT_TRUE(cloud.start());
    ASSERT_TRUE(run_until(loop, [&] { return cloud.connected(); }, 8000));
    ASSERT_TRUE(run_until(loop, [&] {
        (void)cloud.publish("things/t1/cmd", "reboot", 1);
        loop.run_once(100);
        return received > 0;
    }, 5000)) << "no message after the restart: not resubscribed";
}

TEST(MqttClient, BackoffGrowsToItsCeilingWhileTheBrokerIsDown) {
    Testbed tb("mqtt-backoff");
    auto o = options_for(tb, "t1", tb.thing("t1"));
    tb.stop();
    EventLoop loop;
    mqtt::Client c(loop, o);
    ASSERT_TRUE(c.start());
    int64_t t0 = monotonic_ms();
    ASSERT_TRUE(run_until(loop, [&] { return c.stats().failed_attempts >= 6; }, 10000));
    int64_t elapsed = monotonic_ms() - t0;
    // 6 attempts with delays in [100, min(400, 100*2^n)] ms: at least 5 * 100 ms, at most
    // 100 + 200 + 400 * 3 ms plus connect time.
    EXPECT_GE(elapsed, 500);
    EXPECT_EQ(c.next_backoff_ceiling(), 400);
    EXPECT_FALSE(c.connected());
}

// mosquitto grants every subscription and filters delivery by ACL, so the refusal (SUBACK 0x80,
// what AWS IoT sends when the policy has no iot:Subscribe) comes from the scripted server.
TEST(MqttClient, RefusedSubscriptionIsLoggedAndTheRestKeepsWorking) {
    Testbed tb("mqtt-suback");
    ScriptedServer server(tb, 0);
    auto o = options_for(tb, "t1", tb.thing("t1"));
    o.port = server.port();
    EventLoop loop;
    mqtt::Client c(loop, o);
    int mine = 0;
    c.subscribe("things/t2/secret", 1, [](const mqtt::Message&) {});
    c.subscribe("things/t1/ok", 1, [&](const mqtt::Message&) { ++mine; });
    ASSERT_TRUE(c.start());
    ASSERT_TRUE(run_until(loop, [&] { return c.stats().subscribe_refusals >= 1; }, 8000)) << c.last_error();
    ASSERT_TRUE(run_until(loop, [&] {
        (void)c.publish("things/t1/ok", "x", 1);
        loop.run_once(100);
        return mine > 0;
    }, 5000));
    EXPECT_EQ(c.stats().subscribe_refusals, 1);
    EXPECT_TRUE(c.connected()) << "a refused subscription must not cost the connection";
    EXPECT_EQ(server.connects(), 1);
}

TEST(MqttClient, RequestResponseCorrelatesByClientTokenAndTimesOut) {
    Testbed tb("mqtt-request");
    FakeCloud cloud(tb);
    EventLoop loop;
    mqtt::Client c(loop, options_for(tb, "t1", tb.thing("t1")));
    ASSERT_TRUE(c.start());
    const std::string base = "$aws/things/t1/fakecloud/echo";
    std::vector<mqtt::Response> answers;
    auto send = [&](const std::string& payload, const std::string& token, int64_t timeout) {
        mqtt::Request r;
        r.topic = base;
        r.payload = payload;
        r.accepted = base + "/accepted";
        r.rejected = base + "/rejected";
        r.client_token = token;
        r.timeout_ms = timeout;
        c.request(r, [&](const mqtt::Response& resp) { answers.push_back(resp); });
    };
    // Queued before the connection exists: sent once connected and subscribed.
    send(R"({"clientToken":"tok-1","n":1})", "tok-1", 8000);
    send(R"("not an object")", "", 8000);
    ASSERT_TRUE(run_until(loop, [&] { return answers.size() == 2; }, 10000));
    EXPECT_EQ(answers[0].outcome, mqtt::Response::Outcome::Accepted);
    auto doc = json::parse(answers[0].payload);
    ASSERT_TRUE(doc);
    EXPECT_EQ(json::integer(doc->get(), "n"), 1);
    EXPECT_EQ(answers[1].outcome, mqtt::Response::Outcome::Rejected);
    EXPECT_NE(answers[1].payload.find("\"code\":\"InvalidRequest\""), std::string::npos) << answers[1].payload;

    // A token nobody answers (the echo answers with the same token, so ask on a topic it ignores).
    mqtt::Request silent;
    silent.topic = "$aws/things/t1/nobody/home";
    silent.accepted = silent.topic + "/accepted";
    silent.rejected = silent.topic + "/rejected";
    silent.client_token = "tok-2";
    silent.timeout_ms = 300;
    c.request(silent, [&](const mqtt::Response& resp) { answers.push_back(resp); });
    ASSERT_TRUE(run_until(loop, [&] { return answers.size() == 3; }, 3000));
    EXPECT_EQ(answers[2].outcome, mqtt::Response::Outcome::Timeout);
}

// A client destroyed while the loop goes on (a rotation's proving connection) must leave nothing
// behind that the loop would call into.
TEST(MqttClient, AClientDestroyedBeforeItsLoopLeavesNoHooks) {
    Testbed tb("mqtt-lifetime");
    EventLoop loop;
    auto id = tb.thing("t1");
    {
        mqtt::Client c(loop, options_for(tb, "t1", id));
        ASSERT_TRUE(c.start());
        ASSERT_TRUE(run_until(loop, [&] { return c.connected(); }, 8000));
    }
    for (int i = 0; i < 20; ++i) loop.run_once(10);  // would call into the dead client
    SUCCEED();
}
