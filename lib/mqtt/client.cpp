#include "mqtt/client.hpp"

#include <mosquitto.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstring>

#include "base/strings.hpp"
#include "base/time.hpp"
#include "json/json.hpp"
#include "log/log.hpp"
#include "tls/pki.hpp"

namespace iot::mqtt {
namespace {
const char* const kComp = "mqtt";

void library_init() {
    static bool done = false;
    if (done) return;
    // OpenSSL first, without its config file: libmosquitto's own init would load openssl.cnf.
    tls::init();
    mosquitto_lib_init();
    done = true;
}

const char* connack_text(int rc) {
    switch (rc) {
        case 1: return "the broker refused the protocol version";
        case 2: return "the broker rejected the client id";
        case 3: return "the broker is unavailable";
        case 4: return "the broker refused the user name or password";
        case 5: return "not authorised: the broker refused this certificate or client id";
        default: return "the broker refused the connection";
    }
}
}  // namespace

std::string library_version() {
    int major = 0, minor = 0, rev = 0;
    mosquitto_lib_version(&major, &minor, &rev);
    return format("%d.%d.%d", major, minor, rev);
}

Client::Client(EventLoop& loop, Options options)
    : loop_(loop), options_(std::move(options)), backoff_(options_.reconnect_min_ms, options_.reconnect_max_ms) {}

Client::~Client() {
    if (prepare_) loop_.remove_prepare(prepare_);
    for (auto t : {reconnect_timer_, connect_timer_, misc_timer_, resubscribe_timer_}) loop_.cancel_timer(t);
    for (auto& r : requests_) loop_.cancel_timer(r.timer);
    drop_watch();
    if (mosq_) mosquitto_destroy(mosq_);
}

namespace {
Result<tls::Context> context_for(const Options& o) {
    tls::ClientOptions tls_options;
    tls_options.host = o.host;
    tls_options.ca_file = o.ca_file;
    tls_options.cert_file = o.cert_file;
    tls_options.key_file = o.key_file;
    // AWS IoT serves MQTT with client certificates on 443 only to clients offering this ALPN.
    if (o.port == 443) tls_options.alpn = {"x-amzn-mqtt-ca"};
    return tls::make_client_context(tls_options);
}
}  // namespace

Status Client::set_identity(const std::string& cert_file, const std::string& key_file) {
    Options next = options_;
    next.cert_file = cert_file;
    next.key_file = key_file;
    auto ctx = context_for(next);
    if (!ctx) return ctx.err();
    options_ = next;
    if (mosq_) {
        // libmosquitto took a reference to the old context and does not drop it when replaced.
        SSL_CTX_free(ctx_.get());
        ctx_ = ctx.take();
        mosquitto_void_option(mosq_, MOSQ_OPT_SSL_CTX, ctx_.get());
        LOG_INFO(kComp, "new identity %s: reconnecting", cert_file.c_str());
        backoff_.reset();
        int fd = mosquitto_socket(mosq_);
        if (fd >= 0) ::shutdown(fd, SHUT_RDWR);  // the loop sees the close and reconnects
    } else {
        ctx_ = ctx.take();
    }
    return {};
}

Status Client::start() {
    library_init();
    auto ctx = context_for(options_);
    if (!ctx) return ctx.err();
    ctx_ = ctx.take();

    mosq_ = mosquitto_new(options_.client_id.c_str(), options_.clean_session, this);
    if (!mosq_) return Error(format("cannot create MQTT client: %s", errno_text(errno).c_str()));
    mosquitto_int_option(mosq_, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    // Without it a request and its answer wait on Nagle and delayed ACKs (~40 ms per round trip).
    mosquitto_int_option(mosq_, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_int_option(mosq_, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0);
    mosquitto_void_option(mosq_, MOSQ_OPT_SSL_CTX, ctx_.get());
    mosquitto_connect_with_flags_callback_set(mosq_, cb_connect);
    mosquitto_disconnect_callback_set(mosq_, cb_disconnect);
    mosquitto_message_callback_set(mosq_, cb_message);
    mosquitto_subscribe_callback_set(mosq_, cb_subscribe);
    mosquitto_publish_callback_set(mosq_, cb_publish);
    mosquitto_log_callback_set(mosq_, cb_log);
    // Keepalive pings: libmosquitto sends them from loop_misc; a quarter of the interval keeps
    // them on time without waking the device every second.
    int64_t misc_ms = options_.keepalive_s * 1000 / 4;
    if (misc_ms < 1000) misc_ms = 1000;
    misc_timer_ = loop_.add_timer(misc_ms, [this] {
        if (mosq_ && connected_) {
            mosquitto_loop_misc(mosq_);
            update_watch();
        }
    }, misc_ms);
    prepare_ = loop_.add_prepare([this] { update_watch(); });
    started_ = true;
    connect_now();
    return {};
}

void Client::connect_now() {
    reconnect_timer_ = 0;
    if (stopping_) return;
    tls_log_.clear();
    refused_reason_.clear();
    connected_at_ = 0;
    tls::clear_verify_error(ctx_.get());
    connecting_ = true;
    LOG_DEBUG(kComp, "connecting to %s:%d as %s", options_.host.c_str(), options_.port, options_.client_id.c_str());
    errno = 0;
    int rc = stats_.connects + stats_.failed_attempts == 0
                 ? mosquitto_connect_async(mosq_, options_.host.c_str(), options_.port, options_.keepalive_s)
                 : mosquitto_reconnect_async(mosq_);
    connect_errno_ = errno;
    if (rc == MOSQ_ERR_SUCCESS && mosquitto_socket(mosq_) < 0) rc = MOSQ_ERR_NO_CONN;
    if (rc != MOSQ_ERR_SUCCESS) {
        connection_failed(describe_failure(rc));
        return;
    }
    tcp_pending_ = true;
    connect_timer_ = loop_.add_timer(options_.connect_timeout_ms, [this] {
        connect_timer_ = 0;
        if (!connecting_) return;
        LOG_DEBUG(kComp, "connect timeout");
        connection_failed(format("no answer from %s:%d within %lld s (TLS handshake or CONNACK)", options_.host.c_str(),
                                 options_.port, static_cast<long long>(options_.connect_timeout_ms / 1000)));
    });
    update_watch();
}

std::string Client::describe_failure(int rc) const {
    std::string where = format("%s:%d", options_.host.c_str(), options_.port);
    long verify = tls::last_verify_error(ctx_.get());
    if (verify != 0) return tls::explain_verify_error(verify, options_.host, options_.ca_file);
    // A TLS 1.3 server verifies the client certificate after the client has finished its side of
    // the handshake, and AWS IoT hangs up on certificates and client ids it refuses: a close with
    // no alert before CONNACK means a refusal, whether or not our handshake had finished.
    bool bare_close = tls_log_.empty() || tls_log_.find("unexpected eof") != std::string::npos;
    bool closed = rc == MOSQ_ERR_CONN_LOST || rc == MOSQ_ERR_TLS || rc == MOSQ_ERR_ERRNO || rc == MOSQ_ERR_PROTOCOL;
    if (!connected_at_ && !tcp_pending_ && closed && bare_close && refused_reason_.empty() &&
        (rc != MOSQ_ERR_ERRNO || errno == EPROTO || errno == ECONNRESET || errno == 0))
        return format("%s closed the connection before CONNACK: it refused our client certificate %s or client "
                      "id '%s' (on AWS IoT: certificate not active, not registered or from an unregistered CA, "
                      "the policy does not allow iot:Connect for this client id, or JITP is registering the "
                      "certificate)",
                      where.c_str(), options_.cert_file.c_str(), options_.client_id.c_str());
    if (!tls_log_.empty()) {
        if (tls_log_.find("certificate expired") != std::string::npos)
            return format("%s refused our client certificate: it has expired (%s)", where.c_str(), options_.cert_file.c_str());
        if (tls_log_.find("unknown ca") != std::string::npos || tls_log_.find("bad certificate") != std::string::npos ||
            tls_log_.find("certificate required") != std::string::npos ||
            tls_log_.find("certificate unknown") != std::string::npos)
            return format("%s refused our client certificate %s (not signed by a CA it trusts, or revoked)",
                          where.c_str(), options_.cert_file.c_str());
        return format("TLS handshake with %s failed: %s", where.c_str(), tls_log_.c_str());
    }
    if (!refused_reason_.empty()) return refused_reason_;
    switch (rc) {
        case MOSQ_ERR_ERRNO:
            if (errno == ECONNREFUSED)
                return format("connection refused by %s (is the endpoint and port right? is the broker up?)", where.c_str());
            return format("cannot connect to %s: %s", where.c_str(), errno ? errno_text(errno).c_str() : "connection failed");
        case MOSQ_ERR_EAI:
            return format("cannot resolve %s: %s", options_.host.c_str(), errno ? errno_text(errno).c_str() : "name lookup failed");
        case MOSQ_ERR_CONN_LOST:
            return connected_at_ ? format("connection to %s lost", where.c_str())
                                 : format("%s closed the connection before CONNACK (on AWS IoT: certificate not "
                                          "active or registered, the policy does not allow iot:Connect for client id "
                                          "'%s', or JITP is registering the certificate)",
                                          where.c_str(), options_.client_id.c_str());
        case MOSQ_ERR_KEEPALIVE:
            return format("no answer from %s within the keepalive (%d s)", where.c_str(), options_.keepalive_s);
        case MOSQ_ERR_TLS:
            return format("TLS handshake with %s failed", where.c_str());
        default:
            return format("connection to %s failed: %s", where.c_str(), mosquitto_strerror(rc));
    }
}

void Client::connection_failed(const std::string& reason) {
    bool was_connected = connected_;
    connecting_ = false;
    connected_ = false;
    if (connect_timer_) loop_.cancel_timer(connect_timer_);
    connect_timer_ = 0;
    // Close the socket if libmosquitto has not (e.g. the handshake timed out).
    int fd = mosquitto_socket(mosq_);
    if (fd >= 0) {
        ::shutdown(fd, SHUT_RDWR);
        mosquitto_loop_read(mosq_, 1);  // lets libmosquitto see the close and tidy up
    }
    drop_watch();
    for (auto& s : subs_) s.active = false, s.pending_mid = 0;
    // An answer to a request sent on the lost connection will not come: send it again after
    // the next connect (within its own timeout).
    for (auto& r : requests_) r.sent = false;
    tcp_pending_ = false;
    last_error_ = reason;
    if (was_connected) {
        ++stats_.connection_losses;
        if (monotonic_ms() - connected_at_ >= options_.stable_after_ms) backoff_.reset();
    } else {
        ++stats_.failed_attempts;
    }
    if (stopping_) {
        if (on_stopped_) {
            auto cb = std::move(on_stopped_);
            on_stopped_ = nullptr;
            cb();
        }
        return;
    }
    if (was_connected)
        LOG_WARN(kComp, "disconnected: %s", reason.c_str());
    else
        LOG_WARN(kComp, "connect failed: %s", reason.c_str());
    for (auto& cb : on_connection_) cb(false, reason);
    schedule_reconnect();
}

void Client::schedule_reconnect() {
    if (stopping_ || reconnect_timer_) return;
    int64_t delay = backoff_.next();
    LOG_INFO(kComp, "reconnecting in %.1f s", static_cast<double>(delay) / 1000.0);
    reconnect_timer_ = loop_.add_timer(delay, [this] { connect_now(); });
}

void Client::update_watch() {
    if (!mosq_) return;
    int fd = mosquitto_socket(mosq_);
    if (fd != watched_fd_) {
        drop_watch();
        if (fd >= 0) {
            watched_fd_ = fd;
            watch_ = loop_.watch(fd, POLLIN, [this](short ev) { on_socket(ev); });
        }
    }
    if (watch_) {
        // During the TCP connect we need to hear when the socket becomes writable or fails.
        bool want_write = mosquitto_want_write(mosq_) || tcp_pending_;
        loop_.set_events(watch_, static_cast<short>(POLLIN | (want_write ? POLLOUT : 0)));
    }
}

void Client::drop_watch() {
    if (watch_) loop_.unwatch(watch_);
    watch_ = 0;
    watched_fd_ = -1;
}

void Client::on_socket(short revents) {
    if (!mosq_) return;
    int fd = mosquitto_socket(mosq_);
    if (fd < 0) return;
    if (tcp_pending_ && (revents & (POLLOUT | POLLERR | POLLHUP))) {
        // The non-blocking TCP connect finished: learn whether it succeeded before TLS goes on.
        // libmosquitto's first SSL_connect may already have consumed the socket error (its write
        // failed with it), so a socket that is not connected falls back to that saved errno.
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        sockaddr_storage peer;
        socklen_t peer_len = sizeof peer;
        if (err == 0 && ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0)
            err = connect_errno_ && connect_errno_ != EINPROGRESS && connect_errno_ != EAGAIN ? connect_errno_ : ECONNREFUSED;
        tcp_pending_ = false;
        if (err != 0) {
            errno = err;
            connection_failed(describe_failure(MOSQ_ERR_ERRNO));
            return;
        }
    }
    int rc = MOSQ_ERR_SUCCESS;
    if (revents & (POLLIN | POLLERR | POLLHUP)) rc = mosquitto_loop_read(mosq_, 1);
    if (rc == MOSQ_ERR_SUCCESS && mosquitto_socket(mosq_) >= 0 && (revents & POLLOUT || mosquitto_want_write(mosq_)))
        rc = mosquitto_loop_write(mosq_, 1);
    // A hang-up during the TLS handshake: libmosquitto treats a failed write (EPIPE) as "try
    // again" and would spin on the dead socket until the connect timeout. Nothing more can come.
    if (connecting_ && (revents & (POLLHUP | POLLERR)) && mosquitto_socket(mosq_) >= 0) {
        connection_failed(describe_failure(MOSQ_ERR_CONN_LOST));
        return;
    }
    // libmosquitto closes the socket without telling us when the TLS handshake fails, and the
    // disconnect callback may already have handled other errors.
    if ((connecting_ || connected_) && mosquitto_socket(mosq_) < 0) connection_failed(describe_failure(rc ? rc : MOSQ_ERR_TLS));
    update_watch();
}

void Client::cb_connect(mosquitto*, void* self, int rc, int flags) {
    static_cast<Client*>(self)->handle_connected(rc, (flags & 1) != 0);
}
void Client::cb_disconnect(mosquitto*, void* self, int rc) { static_cast<Client*>(self)->handle_disconnected(rc); }
void Client::cb_message(mosquitto*, void* self, const mosquitto_message* m) {
    Message msg;
    msg.topic = m->topic;
    msg.payload.assign(static_cast<const char*>(m->payload), static_cast<size_t>(m->payloadlen));
    msg.qos = m->qos;
    msg.retain = m->retain;
    static_cast<Client*>(self)->handle_message(msg);
}
void Client::cb_subscribe(mosquitto*, void* self, int mid, int count, const int* granted) {
    static_cast<Client*>(self)->handle_suback(mid, count, granted);
}
void Client::cb_publish(mosquitto*, void* self, int mid) {
    auto* c = static_cast<Client*>(self);
    if (c->on_published_) c->on_published_(mid);
}
void Client::cb_log(mosquitto*, void* self, int level, const char* text) {
    auto* c = static_cast<Client*>(self);
    if (level == MOSQ_LOG_ERR && c->connecting_) {
        if (!c->tls_log_.empty()) c->tls_log_ += "; ";
        // "OpenSSL Error[0]: error:0A000415:SSL routines::sslv3 alert certificate expired"
        const char* routines = strstr(text, "::");
        c->tls_log_ += routines ? routines + 2 : text;
    }
    LOG_DEBUG(kComp, "libmosquitto: %s", text);
}

void Client::handle_connected(int rc, bool session_present) {
    if (rc != 0) {
        refused_reason_ = format("%s:%d: %s", options_.host.c_str(), options_.port, connack_text(rc));
        return;  // libmosquitto closes the connection next; handle_disconnected reports it
    }
    if (connect_timer_) loop_.cancel_timer(connect_timer_);
    connect_timer_ = 0;
    connecting_ = false;
    connected_ = true;
    connected_at_ = monotonic_ms();
    ++stats_.connects;
    last_error_.clear();
    LOG_INFO(kComp, "connected to %s:%d as %s (session present: %s)", options_.host.c_str(), options_.port,
             options_.client_id.c_str(), session_present ? "yes" : "no");
    // Resubscribe whatever the session flag says: a resumed session may still have lost
    // subscriptions (expired, broker restarted), and a duplicate SUBSCRIBE costs nothing.
    send_subscriptions();
    for (auto& cb : on_connection_) cb(true, {});
    flush_requests();
}

void Client::handle_disconnected(int rc) {
    if (!connecting_ && !connected_ && !stopping_) return;  // already handled
    if (stopping_ && rc == 0) {
        connecting_ = connected_ = false;
        connection_failed("stopped");
        return;
    }
    connection_failed(describe_failure(rc));
}

void Client::subscribe(const std::string& filter, int qos, Handler handler) {
    for (auto& s : subs_) {
        if (s.filter == filter) {
            if (handler) s.handlers.push_back(std::move(handler));
            return;
        }
    }
    Subscription s;
    s.filter = filter;
    s.qos = qos;
    if (handler) s.handlers.push_back(std::move(handler));
    subs_.push_back(std::move(s));
    if (connected_) send_subscriptions();
}

void Client::send_subscriptions() {
    if (!connected_) return;
    // At most 8 filters per SUBSCRIBE (AWS's limit), one QoS per packet.
    std::vector<Subscription*> todo;
    for (auto& s : subs_)
        if (!s.active && !s.pending_mid) todo.push_back(&s);
    size_t i = 0;
    while (i < todo.size()) {
        int qos = todo[i]->qos;
        std::vector<char*> filters;
        std::vector<Subscription*> batch;
        for (size_t j = i; j < todo.size() && batch.size() < 8; ++j) {
            if (todo[j]->qos != qos || todo[j]->pending_mid) continue;
            batch.push_back(todo[j]);
            filters.push_back(const_cast<char*>(todo[j]->filter.c_str()));
        }
        int mid = 0;
        int rc = mosquitto_subscribe_multiple(mosq_, &mid, static_cast<int>(filters.size()), filters.data(), qos, 0, nullptr);
        if (rc != MOSQ_ERR_SUCCESS) {
            LOG_WARN(kComp, "subscribe failed: %s", mosquitto_strerror(rc));
            return;  // retried after the next connect
        }
        for (auto* s : batch) {
            s->pending_mid = mid;
            LOG_DEBUG(kComp, "subscribing to %s (qos %d)", s->filter.c_str(), qos);
        }
        while (i < todo.size() && todo[i]->pending_mid) ++i;
    }
}

void Client::handle_suback(int mid, int count, const int* granted) {
    int index = 0;
    bool refused = false;
    for (auto& s : subs_) {
        if (s.pending_mid != mid) continue;
        s.pending_mid = 0;
        int g = index < count ? granted[index] : 0x80;
        ++index;
        if (g == 0x80 || g > 2) {
            ++stats_.subscribe_refusals;
            refused = true;
            LOG_ERROR(kComp, "subscription to %s refused by the broker (does the IoT policy allow iot:Subscribe on "
                      "topicfilter/%s?); retrying later", s.filter.c_str(), s.filter.c_str());
            continue;
        }
        s.active = true;
        LOG_DEBUG(kComp, "subscribed to %s", s.filter.c_str());
    }
    // A refused subscription is a policy problem that may be fixed in the cloud at any time:
    // retry on a slow timer instead of giving up (the Device Client aborted the process here).
    if (refused && !resubscribe_timer_) {
        resubscribe_timer_ = loop_.add_timer(30000, [this] {
            resubscribe_timer_ = 0;
            send_subscriptions();
        });
    }
    flush_requests();
}

Result<int> Client::publish(const std::string& topic, std::string_view payload, int qos, bool retain) {
    if (!mosq_) return Error("MQTT client not started");
    int mid = 0;
    int rc = mosquitto_publish(mosq_, &mid, topic.c_str(), static_cast<int>(payload.size()), payload.data(), qos, retain);
    if (rc != MOSQ_ERR_SUCCESS) return Error(format("publish to %s: %s", topic.c_str(), mosquitto_strerror(rc)));
    LOG_DEBUG(kComp, "published %zu bytes to %s (mid %d)", payload.size(), topic.c_str(), mid);
    update_watch();
    return mid;
}

void Client::handle_message(const Message& m) {
    LOG_DEBUG(kComp, "received %zu bytes on %s", m.payload.size(), m.topic.c_str());
    // Requests first: their answer topics may have no other handler.
    for (auto it = requests_.begin(); it != requests_.end(); ++it) {
        if (!it->sent) continue;
        bool accepted = m.topic == it->request.accepted, rejected = m.topic == it->request.rejected;
        if (!accepted && !rejected) continue;
        if (!it->request.client_token.empty()) {
            auto doc = json::parse(m.payload);
            if (!doc || json::string_or(doc->get(), "clientToken", "") != it->request.client_token) continue;
        }
        finish_request(it, Response{accepted ? Response::Outcome::Accepted : Response::Outcome::Rejected, m.topic, m.payload});
        break;
    }
    // Copy: a handler may subscribe and grow the table.
    std::vector<Handler> matched;
    for (auto& s : subs_)
        if (topic_matches(s.filter, m.topic))
            for (auto& h : s.handlers) matched.push_back(h);
    for (auto& h : matched) h(m);
}

void Client::request(Request request, std::function<void(const Response&)> done) {
    PendingRequest p;
    p.id = next_request_id_++;
    uint64_t id = p.id;
    p.timer = loop_.add_timer(request.timeout_ms, [this, id] {
        for (auto it = requests_.begin(); it != requests_.end(); ++it) {
            if (it->id == id) {
                it->timer = 0;
                finish_request(it, Response{Response::Outcome::Timeout, {}, {}});
                return;
            }
        }
    });
    // Answer topics already covered by a subscription (e.g. "jobs/+/update/accepted") need no
    // new one: AWS allows only 50 subscriptions per connection.
    for (const std::string* t : {&request.accepted, &request.rejected}) {
        bool covered = false;
        for (auto& s : subs_) covered = covered || topic_matches(s.filter, *t);
        if (!t->empty() && !covered) subscribe(*t, 1, nullptr);
    }
    p.request = std::move(request);
    p.done = std::move(done);
    requests_.push_back(std::move(p));
    flush_requests();
}

void Client::flush_requests() {
    if (!connected_) return;
    for (auto& r : requests_) {
        if (r.sent) continue;
        bool ready = true;
        for (auto& s : subs_)
            if (!s.active && (topic_matches(s.filter, r.request.accepted) || topic_matches(s.filter, r.request.rejected)))
                ready = false;
        if (!ready) continue;
        auto mid = publish(r.request.topic, r.request.payload, r.request.qos);
        if (mid) r.sent = true;
    }
}

void Client::finish_request(std::list<PendingRequest>::iterator it, Response response) {
    if (it->timer) loop_.cancel_timer(it->timer);
    auto done = std::move(it->done);
    requests_.erase(it);
    if (done) done(response);
}

void Client::stop(std::function<void()> done) {
    stopping_ = true;
    if (reconnect_timer_) loop_.cancel_timer(reconnect_timer_);
    reconnect_timer_ = 0;
    if (!mosq_ || mosquitto_socket(mosq_) < 0 || (!connected_ && !connecting_)) {
        connecting_ = connected_ = false;
        if (done) done();
        return;
    }
    on_stopped_ = std::move(done);
    if (connected_) {
        mosquitto_disconnect(mosq_);  // queues DISCONNECT; the loop writes it and closes
        update_watch();
    } else {
        connection_failed("stopped");
    }
}

}  // namespace iot::mqtt
