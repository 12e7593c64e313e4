#include "provision/feature.hpp"

#include "base/strings.hpp"
#include "base/time.hpp"
#include "config/config.hpp"
#include "fs/fs.hpp"
#include "json/json.hpp"
#include "log/log.hpp"

namespace iot::provision {
namespace {
const char* const kComp = "rotation";
}

Result<bool> provision_at_start(const config::Config& cfg, std::function<void(const std::string&)> progress) {
    if (!cfg.flag("fleet-provisioning.enabled")) return false;
    std::string runtime = cfg.path("runtime-config-file");
    if (fs::exists(runtime)) {
        auto rc = read_runtime_config(runtime);
        if (rc && runtime_config_complete(*rc)) return false;
    }
    auto o = options_from_config(cfg);
    if (!o) return o.err();
    o->cert = cfg.path("cert");
    o->key = cfg.path("key");
    o->client_id = o->thing_name.empty() ? "provision-" + random_token(12) : o->thing_name;
    o->progress = std::move(progress);
    auto r = provision(*o);
    if (!r) return r.err().wrap("fleet provisioning");
    return true;
}

std::string rotation_alert_topic(const std::string& thing) { return "things/" + thing + "/iotbox/rotate-certificate"; }

Result<RotationOptions> rotation_options(const config::Config& cfg) {
    auto o = options_from_config(cfg);
    if (!o) return o.err();
    RotationOptions r;
    r.provision = o.take();
    r.provision.method = Method::DeviceKey;
    r.provision.rotation = true;
    r.provision.cert = cfg.path("cert");
    r.provision.key = cfg.path("key");
    r.provision.client_id = r.provision.thing_name;
    r.rotate_before_days = static_cast<int>(cfg.num("fleet-provisioning.rotate-before-days"));
    return r;
}

RotationFeature::RotationFeature(EventLoop& loop, mqtt::Client& client, RotationOptions options, Rotated on_rotated)
    : loop_(loop),
      client_(client),
      options_(std::move(options)),
      on_rotated_(std::move(on_rotated)),
      backoff_(options_.retry_min_ms, options_.retry_max_ms) {}

RotationFeature::~RotationFeature() {
    *alive_ = false;
    for (auto t : {check_timer_, retry_timer_, proof_timer_}) loop_.cancel_timer(t);
    proof_.reset();
}

Status RotationFeature::start() {
    Status st = api::check_template_name(options_.provision.template_name);
    if (!st) return st;
    st = prepare_key_directory(options_.provision.key_dir);
    if (!st) return st;
    client_.subscribe(rotation_alert_topic(options_.provision.thing_name), 1, [this](const mqtt::Message& m) {
        auto doc = json::parse(m.payload);
        std::string why = doc ? json::string_or(doc->get(), "reason", "") : "";
        rotate("the cloud's rotation alert" + (why.empty() ? std::string() : " (" + why + ")"));
    });
    if (options_.rotate_before_days > 0)
        check_timer_ = loop_.add_timer(0, [this] { check_expiry(); }, options_.check_every_ms);
    return {};
}

std::string RotationFeature::status_line() const {
    if (busy_) return "rotating (" + step_ + ")";
    if (retry_timer_ && loop_.timer_pending(retry_timer_)) return "retrying later: " + last_error_;
    return "idle";
}

void RotationFeature::check_expiry() {
    auto info = tls::inspect_file(options_.provision.cert);
    if (!info) {
        LOG_WARN(kComp, "cannot check the certificate's expiry: %s", info.error().c_str());
        return;
    }
    int64_t left_s = info->not_after - wall_ms() / 1000;
    if (left_s < static_cast<int64_t>(options_.rotate_before_days) * 86400)
        rotate(format("the certificate expires in %lld days (rotate-before-days %d)",
                      static_cast<long long>(left_s / 86400), options_.rotate_before_days));
}

void RotationFeature::rotate(const std::string& reason) {
    if (busy_) {
        LOG_INFO(kComp, "rotation already running; %s ignored", reason.c_str());
        return;
    }
    if (retry_timer_) loop_.cancel_timer(retry_timer_), retry_timer_ = 0;
    busy_ = true;
    reason_ = reason;
    LOG_INFO(kComp, "rotating the certificate: %s", reason.c_str());
    step_ = "key";
    auto key = tls::generate_key(options_.provision.key_type);
    if (!key) return failed(key.error());
    tls::CsrSubject subject;
    subject.common_name = options_.provision.thing_name.substr(0, 64);
    auto csr = tls::make_csr(key->get(), subject);
    if (!csr) return failed(csr.error());
    key_ = key.take();
    csr_ = csr.take();
    step_create();
}

void RotationFeature::step_create() {
    step_ = "CreateCertificateFromCsr";
    auto call = api::create_certificate_from_csr();
    mqtt::Request r{call.request, api::create_from_csr_request(csr_), call.accepted(), call.rejected(), "",
                    options_.provision.step_timeout_ms, 1};
    auto alive = alive_;
    client_.request(std::move(r), [this, alive](const mqtt::Response& resp) {
        if (!*alive) return;
        if (resp.outcome == mqtt::Response::Outcome::Rejected)
            return failed("CreateCertificateFromCsr rejected: " + api::parse_rejection(resp.payload).text());
        if (resp.outcome == mqtt::Response::Outcome::Timeout)
            return failed(format("CreateCertificateFromCsr: no answer within %lld s",
                                 static_cast<long long>(options_.provision.step_timeout_ms / 1000)));
        auto parsed = api::parse_create_accepted(resp.payload, false);
        if (!parsed) return failed(parsed.error());
        issued_ = parsed.take();
        auto stored = store_certificate(options_.provision, issued_, key_.get());
        if (!stored) return failed(stored.error());
        outcome_ = stored.take();
        step_register();
    });
}

void RotationFeature::step_register() {
    step_ = "RegisterThing";
    api::Parameters params = options_.provision.parameters;
    params[kRotationParameter] = "true";
    auto call = api::register_thing(options_.provision.template_name);
    mqtt::Request r{call.request, api::register_thing_request(issued_.ownership_token, params), call.accepted(),
                    call.rejected(), "", options_.provision.step_timeout_ms, 1};
    auto alive = alive_;
    client_.request(std::move(r), [this, alive](const mqtt::Response& resp) {
        if (!*alive) return;
        if (resp.outcome == mqtt::Response::Outcome::Rejected)
            return failed("RegisterThing rejected: " + api::parse_rejection(resp.payload).text());
        if (resp.outcome == mqtt::Response::Outcome::Timeout)
            return failed(format("RegisterThing: no answer within %lld s",
                                 static_cast<long long>(options_.provision.step_timeout_ms / 1000)));
        auto reg = api::parse_register_accepted(resp.payload);
        if (!reg) return failed(reg.error());
        outcome_.thing_name = reg->thing_name.empty() ? options_.provision.thing_name : reg->thing_name;
        outcome_.device_config = reg->device_configuration;
        step_prove();
    });
}

void RotationFeature::step_prove() {
    step_ = "connect with the new certificate";
    mqtt::Options mo = client_.options();
    mo.cert_file = outcome_.cert;
    mo.key_file = outcome_.key;
    mo.client_id = outcome_.thing_name;
    mo.clean_session = true;
    proof_ = std::make_unique<mqtt::Client>(loop_, mo);
    auto alive = alive_;
    proof_->on_connection([this, alive](bool up, const std::string& reason) {
        if (!*alive || !busy_ || step_ != "connect with the new certificate") return;
        loop_.cancel_timer(proof_timer_);
        // Leave the callback before the client goes away.
        loop_.add_timer(0, [this, alive, up, reason] {
            if (!*alive) return;
            if (proof_) proof_->stop();
            if (up) finished();
            else failed("connect with the new certificate: " + reason);
        });
    });
    Status st = proof_->start();
    if (!st) return failed("connect with the new certificate: " + st.error());
    proof_timer_ = loop_.add_timer(options_.provision.step_timeout_ms, [this, alive] {
        if (!*alive) return;
        failed("connect with the new certificate: no connection within the step timeout");
    });
}

void RotationFeature::finished() {
    proof_.reset();
    std::string previous = options_.provision.cert;
    Status st = switch_runtime_config(options_.provision, outcome_);
    if (!st) return failed(st.error());
    LOG_INFO(kComp, "rotated to certificate %s (%s); the old certificate %s is kept", outcome_.certificate_id.c_str(),
             reason_.c_str(), previous.c_str());
    outcome_.previous_certificate_id = previous;
    options_.provision.cert = outcome_.cert;
    options_.provision.key = outcome_.key;
    busy_ = false;
    step_.clear();
    backoff_.reset();
    key_.reset();
    if (on_rotated_) on_rotated_(outcome_);
}

void RotationFeature::failed(const std::string& why) {
    if (proof_timer_) loop_.cancel_timer(proof_timer_), proof_timer_ = 0;
    if (proof_) {
        // Destroyed on the next turn: this may run inside its callback.
        auto doomed = std::shared_ptr<mqtt::Client>(proof_.release());
        doomed->stop();
        loop_.add_timer(2000, [doomed] {});
    }
    busy_ = false;
    key_.reset();
    last_error_ = why;
    int64_t delay = backoff_.next();
    LOG_ERROR(kComp, "certificate rotation failed at %s: %s; still using %s, retrying in %lld s", step_.c_str(),
              why.c_str(), options_.provision.cert.c_str(), static_cast<long long>(delay / 1000));
    step_.clear();
    std::string reason = reason_;
    retry_timer_ = loop_.add_timer(delay, [this, reason] {
        retry_timer_ = 0;
        rotate(reason + " (retry)");
    });
}

}  // namespace iot::provision
