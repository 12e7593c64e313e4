#include "provision/provisioner.hpp"

#include <cerrno>
#include <ctime>
#include <memory>

#include "base/strings.hpp"
#include "base/time.hpp"
#include "config/config.hpp"
#include "fs/fs.hpp"
#include "log/log.hpp"
#include "loop/loop.hpp"
#include "mqtt/client.hpp"
#include "mqtt/topic.hpp"

namespace iot::provision {

const char* const kRotationParameter = "Rotation";

namespace {
const char* const kComp = "provision";

std::string utc_text(int64_t epoch_s) { return iso8601_utc(epoch_s * 1000).substr(0, 19) + "Z"; }

std::string seconds_text(int64_t ms) {
    return ms % 1000 ? format("%.1f s", static_cast<double>(ms) / 1000.0) : format("%lld s", static_cast<long long>(ms / 1000));
}

// One MQTT connection with one identity, driven on `loop` until each step is done.
class Session {
public:
    Session(EventLoop& loop, const Broker& broker, const std::string& cert, const std::string& key,
            const std::string& client_id, int64_t timeout_ms)
        : loop_(loop), timeout_ms_(timeout_ms), client_(loop, make_options(broker, cert, key, client_id, timeout_ms)) {
        client_.on_connection([this](bool up, const std::string& reason) {
            if (up) connected_ = true;
            else if (!connected_) failure_ = reason, ++refusals_;  // the first refusal is the answer
        });
    }
    ~Session() { close(); }

    // Connect. A refusal fails at once unless `retry`: then the client keeps trying until the step
    // timeout (a certificate just activated may take a moment to be accepted everywhere).
    Status connect(bool retry = false) {
        Status st = client_.start();
        if (!st) return st;
        int64_t deadline = monotonic_ms() + timeout_ms_;
        while (!connected_ && (retry || failure_.empty()) && monotonic_ms() < deadline)
            loop_.run_once(deadline - monotonic_ms());
        if (connected_) return {};
        if (!failure_.empty()) return Error(failure_);
        std::string last = client_.last_error();
        return Error("no connection within " + seconds_text(timeout_ms_) + (last.empty() ? "" : ": " + last));
    }

    // One request; Accepted returns the payload, anything else an error naming the call.
    Result<std::string> ask(const char* name, const api::Call& call, std::string payload) {
        mqtt::Request r;
        r.topic = call.request;
        r.payload = std::move(payload);
        r.accepted = call.accepted();
        r.rejected = call.rejected();
        r.timeout_ms = timeout_ms_;
        std::unique_ptr<mqtt::Response> out;
        client_.request(std::move(r), [&](const mqtt::Response& resp) { out = std::make_unique<mqtt::Response>(resp); });
        while (!out) loop_.run_once();
        switch (out->outcome) {
            case mqtt::Response::Outcome::Accepted: return out->payload;
            case mqtt::Response::Outcome::Rejected:
                return Error(format("%s rejected: %s", name, api::parse_rejection(out->payload).text().c_str()));
            case mqtt::Response::Outcome::Timeout: break;
        }
        std::string why = client_.connected() ? format("does the claim policy allow publishing and subscribing on %s "
                                                        "and its /accepted and /rejected topics?", call.request.c_str())
                                              : "connection lost: " + client_.last_error();
        return Error(format("%s: no answer within %s (%s)", name, seconds_text(timeout_ms_).c_str(), why.c_str()));
    }

    void close() {
        if (closed_) return;
        closed_ = true;
        bool stopped = false;
        client_.stop([&] { stopped = true; });
        int64_t deadline = monotonic_ms() + 2000;
        while (!stopped && monotonic_ms() < deadline) loop_.run_once(deadline - monotonic_ms());
    }

private:
    static mqtt::Options make_options(const Broker& b, const std::string& cert, const std::string& key,
                                      const std::string& client_id, int64_t timeout_ms) {
        mqtt::Options o;
        o.host = b.host;
        o.port = b.port;
        o.ca_file = b.ca_file;
        o.cert_file = cert;
        o.key_file = key;
        o.client_id = client_id;
        o.keepalive_s = b.keepalive_s;
        o.clean_session = true;  // a one-shot session must not take over a daemon's
        o.connect_timeout_ms = timeout_ms;
        o.reconnect_min_ms = 200;
        o.reconnect_max_ms = 1000;
        return o;
    }

    EventLoop& loop_;
    int64_t timeout_ms_;
    mqtt::Client client_;
    bool connected_ = false, closed_ = false;
    std::string failure_;
    int refusals_ = 0;

public:
    int refusals() const { return refusals_; }
};

struct Flow {
    const Options& o;
    EventLoop loop;
    void say(const std::string& line) const {
        LOG_INFO(kComp, "%s", line.c_str());
        if (o.progress) o.progress(line);
    }
};

// The key and the CSR of the on-device flows. The private key stays in memory until its file name
// (the certificate id) is known.
struct DeviceKey {
    tls::Key key;
    std::string csr;
};

Result<DeviceKey> make_device_key(const Options& o) {
    auto key = tls::generate_key(o.key_type);
    if (!key) return key.err().wrap("cannot generate the device key");
    tls::CsrSubject subject;
    subject.common_name = o.thing_name.empty() ? "iotbox-device" : o.thing_name.substr(0, 64);
    auto csr = tls::make_csr(key->get(), subject);
    if (!csr) return csr.err().wrap("cannot make the CSR");
    return DeviceKey{key.take(), csr.take()};
}
}  // namespace

Status check_validity(const std::string& cert_path, const char* what, int64_t now) {
    auto info = tls::inspect_file(cert_path);
    if (!info) return info.err().wrap(std::string("cannot read the ") + what);
    if (info->not_before > now)
        return Error(format("the %s %s is not valid yet: valid from %s, the clock says %s (is the device clock set? "
                            "NTP before provisioning)", what, cert_path.c_str(), utc_text(info->not_before).c_str(),
                            utc_text(now).c_str()));
    if (info->not_after < now)
        return Error(format("the %s %s expired at %s (%s ago; a trusted user's temporary claim is valid for 5 minutes: "
                            "get a new one)", what, cert_path.c_str(), utc_text(info->not_after).c_str(),
                            seconds_text((now - info->not_after) * 1000).c_str()));
    return {};
}

Result<Outcome> store_certificate(const Options& o, const api::NewCertificate& issued, const EVP_PKEY* device_key) {
    const char* call_name = o.method == Method::CreateKeys ? "CreateKeysAndCertificate" : "CreateCertificateFromCsr";
    // The certificate must be the one for our key (a cloud-side mix-up would lock us out).
    auto cert = tls::read_certificate(issued.certificate_pem);
    if (!cert) return cert.err().wrap(std::string(call_name) + " answer: certificatePem");
    tls::Key loaded;
    if (o.method == Method::CreateKeys) {
        auto k = tls::read_private_key(issued.private_key);
        if (!k) return k.err().wrap("CreateKeysAndCertificate answer: privateKey");
        loaded = k.take();
    } else if (o.method == Method::CsrFile) {
        auto k = tls::load_private_key(o.device_key);
        if (!k) return k.err();
        loaded = k.take();
    }
    const EVP_PKEY* key = o.method == Method::DeviceKey ? device_key : loaded.get();
    if (!key || !tls::key_matches_certificate(key, cert->get()))
        return Error(format("%s answer: certificate %s is not for our key", call_name, issued.certificate_id.c_str()));

    // New files under new names, before RegisterThing activates the certificate: a crash after
    // activation must not lose the key, and the files in use are never touched.
    Outcome out;
    out.certificate_id = issued.certificate_id;
    out.runtime_config_file = o.runtime_config_file;
    out.cert = certificate_path(o.key_dir, issued.certificate_id);
    Status st = write_certificate(out.cert, issued.certificate_pem);
    if (!st) return st.err();
    if (o.method == Method::CsrFile) {
        out.key = o.device_key;
    } else {
        out.key = private_key_path(o.key_dir, issued.certificate_id);
        st = o.method == Method::CreateKeys ? write_private_key_pem(out.key, issued.private_key)
                                             : tls::write_private_key(out.key, key);
        if (!st) return st.err();
    }
    return out;
}

Status switch_runtime_config(const Options& o, const Outcome& out) {
    RuntimeConfig rc;
    rc.completed_fp = true;
    rc.cert = out.cert;
    rc.key = out.key;
    rc.thing_name = out.thing_name;
    rc.device_config = out.device_config;
    rc.certificate_id = out.certificate_id;
    return write_runtime_config(o.runtime_config_file, rc);
}

Result<Outcome> provision(const Options& o) {
    Flow flow{o, {}};
    const char* identity = o.rotation ? "current certificate" : "claim certificate";
    Status st = api::check_template_name(o.template_name);
    if (!st) return st.err();
    st = check_validity(o.cert, identity, wall_ms() / 1000);
    if (!st) return st.err();
    st = prepare_key_directory(o.key_dir);
    if (!st) return st.err();
    remove_stale_temporaries(o.key_dir);
    remove_stale_temporaries(fs::dirname(o.runtime_config_file));

    // What to ask for, prepared before connecting: a CSR file or a key made here.
    DeviceKey device;
    std::string csr;
    if (o.method == Method::CsrFile) {
        auto text = fs::read_file(o.csr_file, 64 * 1024);
        if (!text) return text.err().wrap("cannot read the CSR");
        csr = text.take();
        if (o.device_key.empty()) return Error("--csr-file needs --device-key, the private key the CSR was made with");
        auto key = tls::load_private_key(o.device_key);
        if (!key) return key.err();
    } else if (o.method == Method::DeviceKey) {
        auto made = make_device_key(o);
        if (!made) return made.err();
        device = made.take();
        csr = device.csr;
        flow.say(format("generated a %s key and its CSR on the device", tls::key_type_name(o.key_type)));
    }

    Outcome out;
    out.runtime_config_file = o.runtime_config_file;
    api::NewCertificate issued;
    api::Registration registration;
    {
        flow.say(format("connecting to %s:%d with the %s %s", o.broker.host.c_str(), o.broker.port, identity,
                        o.cert.c_str()));
        Session claim(flow.loop, o.broker, o.cert, o.key, o.client_id, o.step_timeout_ms);
        st = claim.connect();
        if (!st) return st.err().wrap(std::string("connect with the ") + identity);

        const bool create_keys = o.method == Method::CreateKeys;
        const char* call_name = create_keys ? "CreateKeysAndCertificate" : "CreateCertificateFromCsr";
        auto answer = create_keys ? claim.ask(call_name, api::create_keys_and_certificate(), api::create_keys_request())
                                  : claim.ask(call_name, api::create_certificate_from_csr(), api::create_from_csr_request(csr));
        if (!answer) return answer.err();
        auto parsed = api::parse_create_accepted(*answer, create_keys);
        if (!parsed) return parsed.err();
        issued = parsed.take();
        out.certificate_id = issued.certificate_id;
        flow.say(format("%s: new certificate %s", call_name, issued.certificate_id.c_str()));

        auto stored = store_certificate(o, issued, device.key.get());
        if (!stored) return stored.err();
        out.cert = stored->cert;
        out.key = stored->key;
        flow.say(format("wrote %s (0644) and %s (0600)", out.cert.c_str(), out.key.c_str()));

        api::Parameters parameters = o.parameters;
        if (o.rotation) parameters[kRotationParameter] = "true";
        auto reg = claim.ask("RegisterThing", api::register_thing(o.template_name),
                             api::register_thing_request(issued.ownership_token, parameters));
        if (!reg) return reg.err().wrap(format("template %s", o.template_name.c_str()));
        auto parsed_reg = api::parse_register_accepted(*reg);
        if (!parsed_reg) return parsed_reg.err();
        registration = parsed_reg.take();
        out.thing_name = registration.thing_name.empty() ? o.thing_name : registration.thing_name;
        out.device_config = registration.device_configuration;
        flow.say(format("RegisterThing (template %s): thing %s", o.template_name.c_str(),
                        out.thing_name.empty() ? "(none named)" : out.thing_name.c_str()));
    }  // the claim session is closed here, before the new identity connects

    if (out.thing_name.empty())
        return Error("RegisterThing named no thing and no --thing-name was given: cannot choose the MQTT client id");
    {
        Session proof(flow.loop, o.broker, out.cert, out.key, out.thing_name, o.step_timeout_ms);
        st = proof.connect(true);
        if (!st) return st.err().wrap("connect with the new certificate");
        flow.say(format("connected as %s with the new certificate%s", out.thing_name.c_str(),
                        proof.refusals() ? format(" (refused %d times first)", proof.refusals()).c_str() : ""));
    }

    st = switch_runtime_config(o, out);
    if (!st) return st.err();
    flow.say(format("wrote %s (0640): provisioned as %s", o.runtime_config_file.c_str(), out.thing_name.c_str()));
    return out;
}

std::string key_directory(const config::Config& cfg) {
    if (cfg.is_set("fleet-provisioning.keys-directory")) return cfg.path("fleet-provisioning.keys-directory");
    return fs::dirname(cfg.path("runtime-config-file")) + "/keys";
}

Result<Options> options_from_config(const config::Config& cfg) {
    Options o;
    o.broker.host = cfg.str("endpoint");
    if (o.broker.host.empty()) return Error("no endpoint (--endpoint or \"endpoint\" in the config file)");
    o.broker.port = static_cast<int>(cfg.num("port"));
    std::string ca = cfg.path("root-ca");
    o.broker.ca_file = !ca.empty() && fs::exists(ca) ? ca : "";
    o.broker.keepalive_s = static_cast<int>(cfg.num("mqtt.keepalive"));
    o.template_name = cfg.str("fleet-provisioning.template-name");
    if (o.template_name.empty())
        return Error("no provisioning template (--fleet-provisioning-template-name or fleet-provisioning.template-name)");
    Status st = api::check_template_name(o.template_name);
    if (!st) return st.err();
    if (cfg.has("fleet-provisioning.template-parameters")) {
        auto params = api::parse_parameters(cfg.str("fleet-provisioning.template-parameters"));
        if (!params) return Error(params.error() + " (" + cfg.location("fleet-provisioning.template-parameters") + ")");
        o.parameters = params.take();
    }
    o.csr_file = cfg.path("fleet-provisioning.csr-file");
    o.device_key = cfg.path("fleet-provisioning.device-key");
    if (!o.csr_file.empty()) o.method = Method::CsrFile;
    else if (!o.device_key.empty())
        return Error("--device-key is the key of a --csr-file: give both, or neither to make the key on the device");
    auto type = tls::parse_key_type(cfg.str("fleet-provisioning.key-type"));
    if (!type) return type.err();
    o.key_type = *type;
    o.key_dir = key_directory(cfg);
    o.runtime_config_file = cfg.path("runtime-config-file");
    o.thing_name = cfg.str("thing-name");
    o.step_timeout_ms = cfg.num("fleet-provisioning.timeout") * 1000;
    return o;
}

Result<int> jitp_connect(const JitpOptions& o) {
    EventLoop loop;
    mqtt::Backoff backoff(o.retry_min_ms, o.retry_max_ms);
    int64_t deadline = monotonic_ms() + o.total_timeout_ms;
    std::string last;
    for (int attempt = 1;; ++attempt) {
        int64_t left = deadline - monotonic_ms();
        if (left <= 0) break;
        Session s(loop, o.broker, o.cert, o.key, o.client_id, left < 10000 ? left : 10000);
        Status st = s.connect();
        if (st) {
            if (o.progress) o.progress(format("connected as %s (attempt %d)", o.client_id.c_str(), attempt));
            return attempt;
        }
        last = st.error();
        // A close before CONNACK is what JITP does while it registers; anything else (an untrusted CA,
        // an expired certificate, no broker) will not get better by waiting.
        // libmosquitto may see that close as EPIPE or ECONNRESET when it writes CONNECT.
        bool dropped = last.find("closed the connection before CONNACK") != std::string::npos ||
                       last.find(errno_text(EPIPE)) != std::string::npos ||
                       last.find(errno_text(ECONNRESET)) != std::string::npos;
        if (!dropped)
            return Error("connect with " + o.cert + ": " + last);
        int64_t wait = backoff.next();
        if (o.progress)
            o.progress(format("attempt %d: the connection was closed before CONNACK: registration in progress, "
                              "retrying in %s", attempt, seconds_text(wait).c_str()));
        int64_t until = monotonic_ms() + wait;
        if (until > deadline) until = deadline;
        while (monotonic_ms() < until) loop.run_once(until - monotonic_ms());
    }
    return Error(format("the certificate %s was still refused after %s: JITP never completed (is its CA registered "
                        "with auto-registration and a provisioning template?); last error: %s",
                        o.cert.c_str(), seconds_text(o.total_timeout_ms).c_str(), last.c_str()));
}

Result<CaFiles> create_ca(const std::string& out_dir, const std::string& common_name, int days, tls::KeyType type) {
    Status st = prepare_key_directory(out_dir);
    if (!st) return st.err();
    CaFiles f{out_dir + "/ca.crt", out_dir + "/ca.key"};
    if (fs::exists(f.key) || fs::exists(f.cert))
        return Error(format("%s already holds a CA (ca.crt/ca.key): refusing to overwrite it", out_dir.c_str()));
    auto key = tls::generate_key(type);
    if (!key) return key.err();
    auto ca = tls::make_ca(key->get(), common_name, days);
    if (!ca) return ca.err();
    st = tls::write_private_key(f.key, key->get());
    if (!st) return st.err();
    st = write_certificate(f.cert, tls::certificate_pem(ca->get()));
    if (!st) return st.err();
    return f;
}

Result<DeviceFiles> issue_jitp_device(const std::string& ca_cert, const std::string& ca_key, const std::string& thing,
                                      const std::string& out_dir, int days, tls::KeyType type) {
    if (thing.empty() || thing.size() > 64 || thing.find('/') != std::string::npos || thing.find("..") != std::string::npos)
        return Error(format("thing name '%s' cannot be a certificate's CN and a file name (1-64 characters, no / or ..)",
                            thing.c_str()));
    auto ca = tls::load_certificate(ca_cert);
    if (!ca) return ca.err();
    auto cakey = tls::load_private_key(ca_key);
    if (!cakey) return cakey.err();
    if (!tls::key_matches_certificate(cakey->get(), ca->get()))
        return Error(format("%s is not the key of %s", ca_key.c_str(), ca_cert.c_str()));
    Status st = prepare_key_directory(out_dir);
    if (!st) return st.err();
    auto key = tls::generate_key(type);
    if (!key) return key.err();
    tls::SignOptions so;
    so.days = days;
    auto cert = tls::sign_public_key(key->get(), thing, ca->get(), cakey->get(), so);
    if (!cert) return cert.err();
    auto info = tls::inspect(cert->get());
    if (!info) return info.err();
    DeviceFiles f;
    f.certificate_id = info->fingerprint_sha256;
    f.key = out_dir + "/" + thing + "-private.pem.key";
    f.cert = out_dir + "/" + thing + "-certificate.pem.crt";
    f.chain = out_dir + "/" + thing + "-chain.pem.crt";
    std::string pem = tls::certificate_pem(cert->get());
    if (!(st = tls::write_private_key(f.key, key->get()))) return st.err();
    if (!(st = write_certificate(f.cert, pem))) return st.err();
    if (!(st = write_certificate(f.chain, pem + tls::certificate_pem(ca->get())))) return st.err();
    return f;
}

}  // namespace iot::provision
