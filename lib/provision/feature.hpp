// iotd's provisioning feature: fleet provisioning before the daemon's first connection, and
// certificate rotation while it runs — on the cloud's rotation alert, and proactively when the
// certificate's notAfter comes within fleet-provisioning.rotate-before-days.
//
// A rotation uses the daemon's own connection (CreateCertificateFromCsr, RegisterThing with
// "Rotation": "true"), never blocks the loop, proves the new certificate by connecting with it,
// and only then switches the runtime config and tells iotd, which reconnects with the new identity.
// Any failure keeps the old certificate in use and retries with backoff.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "loop/loop.hpp"
#include "mqtt/client.hpp"
#include "mqtt/topic.hpp"
#include "provision/provisioner.hpp"

namespace iot::config {
class Config;
}

namespace iot::provision {

// Before iotd connects: when fleet-provisioning.enabled and the runtime config is not complete,
// provision with the configured claim (blocking, each step bounded by fleet-provisioning.timeout).
// Returns true when it provisioned now: the caller must load the configuration again, so that
// cert, key and thing-name come from the new runtime file. false: nothing to do.
Result<bool> provision_at_start(const config::Config& cfg, std::function<void(const std::string&)> progress = {});

// The topic the cloud's rotation alert arrives on (any payload; a JSON "reason" is logged).
std::string rotation_alert_topic(const std::string& thing);

struct RotationOptions {
    Options provision;             // template, parameters, key type, key dir, runtime file, timeout
    int rotate_before_days = 0;    // 0: no proactive rotation
    int64_t check_every_ms = 6LL * 3600 * 1000;
    int64_t retry_min_ms = 60000;
    int64_t retry_max_ms = 3600000;
};
// From the configuration: the identity in use (cert, key, thing-name after the runtime file).
Result<RotationOptions> rotation_options(const config::Config& cfg);

class RotationFeature {
public:
    using Rotated = std::function<void(const Outcome&)>;
    RotationFeature(EventLoop& loop, mqtt::Client& client, RotationOptions options, Rotated on_rotated);
    ~RotationFeature();

    // Subscribe to the alert and schedule the expiry check (the first one at once). Call before the
    // client connects.
    Status start();
    // Start a rotation now unless one is running.
    void rotate(const std::string& reason);
    bool busy() const { return busy_; }
    // "idle", "rotating (RegisterThing)", "retry in 60 s: <why>"
    std::string status_line() const;

private:
    void check_expiry();
    void step_create();
    void step_register();
    void step_prove();
    void finished();
    void failed(const std::string& why);

    EventLoop& loop_;
    mqtt::Client& client_;
    RotationOptions options_;
    Rotated on_rotated_;
    mqtt::Backoff backoff_;
    bool busy_ = false;
    std::string step_, last_error_, reason_;
    tls::Key key_;
    std::string csr_;
    api::NewCertificate issued_;
    Outcome outcome_;
    std::unique_ptr<mqtt::Client> proof_;
    EventLoop::TimerId check_timer_ = 0, retry_timer_ = 0, proof_timer_ = 0;
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace iot::provision
