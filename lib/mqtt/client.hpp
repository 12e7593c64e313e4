// The MQTT client every applet uses: libmosquitto driven by our EventLoop (its external-loop API),
// mutual TLS through tls::make_client_context, reconnect forever with jittered backoff, and a table
// of topic handlers that is re-subscribed after every connect whatever the broker says about its
// session (AWS drops persistent sessions after an hour; the Device Client trusted them and went
// deaf). A request/response helper pairs AWS API requests with their accepted/rejected answers.
#pragma once
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "base/result.hpp"
#include "loop/loop.hpp"
#include "mqtt/topic.hpp"
#include "tls/context.hpp"

namespace iot::config {
class Config;
}

struct mosquitto;
struct mosquitto_message;

namespace iot::mqtt {

struct Options {
    std::string host;
    int port = 8883;
    std::string client_id;
    std::string ca_file;  // empty: system trust store
    std::string cert_file;
    std::string key_file;
    int keepalive_s = 60;
    bool clean_session = false;
    int64_t reconnect_min_ms = 1000;
    int64_t reconnect_max_ms = 120000;
    int64_t connect_timeout_ms = 30000;
    // A connection that lasted this long resets the backoff; a broker that accepts and drops at
    // once (a policy or JITP refusal) keeps backing off instead of hammering it once a second.
    int64_t stable_after_ms = 10000;
};

struct Message {
    std::string topic;
    std::string payload;
    int qos = 0;
    bool retain = false;
};
using Handler = std::function<void(const Message&)>;

struct Request {
    std::string topic;
    std::string payload;
    std::string accepted;      // response topics
    std::string rejected;
    std::string client_token;  // empty: the API has none; correlate by topic, oldest first
    int64_t timeout_ms = 10000;
    int qos = 1;
};
struct Response {
    enum class Outcome { Accepted, Rejected, Timeout } outcome;
    std::string topic;
    std::string payload;
};

class Client {
public:
    Client(EventLoop& loop, Options options);
    ~Client();
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    // Load certificates and start connecting. Fails only on local problems (unreadable key, bad
    // certificate file); network trouble is retried forever and reported through on_connection.
    Status start();
    // Disconnect cleanly (DISCONNECT sent and flushed) and stop reconnecting; `done` runs once the
    // socket is closed, or at once if it already is.
    void stop(std::function<void()> done = {});
    bool connected() const { return connected_; }
    // Switch to another certificate and key (a rotated identity): the new files are loaded first
    // (an error leaves everything as it was), then the connection is dropped and made again.
    Status set_identity(const std::string& cert_file, const std::string& key_file);
    const Options& options() const { return options_; }

    // Persistent subscription: sent now if connected, and again after every connect.
    void subscribe(const std::string& filter, int qos, Handler handler);
    // Publish; QoS 1 messages published while disconnected are queued by libmosquitto and sent
    // after the next connect. Returns the message id.
    Result<int> publish(const std::string& topic, std::string_view payload, int qos = 1, bool retain = false);
    void on_published(std::function<void(int mid)> cb) { on_published_ = std::move(cb); }

    // (up, reason): reason says why a connection went down or failed, in a person's words.
    using ConnectionCallback = std::function<void(bool up, const std::string& reason)>;
    // Every listener is called, in the order added.
    void on_connection(ConnectionCallback cb) { on_connection_.push_back(std::move(cb)); }

    // Send `request` once its response topics are subscribed and the client is connected; call
    // `done` exactly once with the answer or a timeout.
    void request(Request request, std::function<void(const Response&)> done);

    struct Stats {
        int connects = 0;
        int connection_losses = 0;
        int failed_attempts = 0;
        int subscribe_refusals = 0;
    };
    const Stats& stats() const { return stats_; }
    const std::string& last_error() const { return last_error_; }
    // Upper bound of the next reconnect delay (for status output and tests).
    int64_t next_backoff_ceiling() const { return backoff_.ceiling(); }

private:
    struct Subscription {
        std::string filter;
        int qos;
        std::vector<Handler> handlers;
        bool active = false;  // SUBACK granted on the current connection
        int pending_mid = 0;
    };
    struct PendingRequest {
        uint64_t id;
        Request request;
        std::function<void(const Response&)> done;
        EventLoop::TimerId timer = 0;
        bool sent = false;
    };

    static void cb_connect(mosquitto*, void*, int rc, int flags);
    static void cb_disconnect(mosquitto*, void*, int rc);
    static void cb_message(mosquitto*, void*, const mosquitto_message*);
    static void cb_subscribe(mosquitto*, void*, int mid, int count, const int* granted);
    static void cb_publish(mosquitto*, void*, int mid);
    static void cb_log(mosquitto*, void*, int level, const char* text);

    void connect_now();
    void schedule_reconnect();
    void connection_failed(const std::string& reason);
    void handle_connected(int rc, bool session_present);
    void handle_disconnected(int rc);
    void handle_message(const Message& m);
    void handle_suback(int mid, int count, const int* granted);
    void on_socket(short revents);
    void update_watch();
    void drop_watch();
    void send_subscriptions();
    void flush_requests();
    void finish_request(std::list<PendingRequest>::iterator it, Response response);
    std::string describe_failure(int rc) const;

    EventLoop& loop_;
    Options options_;
    mosquitto* mosq_ = nullptr;
    tls::Context ctx_;
    Backoff backoff_;
    std::vector<Subscription> subs_;
    std::list<PendingRequest> requests_;
    std::vector<ConnectionCallback> on_connection_;
    std::function<void(int)> on_published_;
    std::function<void()> on_stopped_;
    EventLoop::WatchId watch_ = 0;
    EventLoop::PrepareId prepare_ = 0;
    int watched_fd_ = -1;
    EventLoop::TimerId reconnect_timer_ = 0, connect_timer_ = 0, misc_timer_ = 0, resubscribe_timer_ = 0;
    bool started_ = false, connecting_ = false, tcp_pending_ = false, connected_ = false, stopping_ = false;
    int64_t connected_at_ = 0;
    int connect_errno_ = 0;
    uint64_t next_request_id_ = 1;
    std::string last_error_;
    std::string tls_log_;  // OpenSSL errors libmosquitto logged during the current attempt
    std::string refused_reason_;  // CONNACK refusal of the current attempt
    Stats stats_;
};

// The connection settings of a configuration (endpoint, port, thing name, certificates,
// keepalive, reconnect and connect timeouts). One-shot applets then set clean_session.
Options options_from_config(const config::Config& cfg);

// libmosquitto's version as "2.0.11".
std::string library_version();

}  // namespace iot::mqtt
