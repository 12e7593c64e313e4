// Fleet provisioning flows, each a straight line of steps with a timeout per step and errors that
// name the step: by claim (CreateKeysAndCertificate), by a CSR file with its key (as the Device
// Client), by a key and CSR generated on the device (the key never leaves it), and rotation of a
// provisioned certificate. Every flow writes the new certificate and key under new names, registers
// the thing, proves the new identity by connecting with it, and only then switches the runtime
// config, so an interruption at any moment leaves the old identity in place.
//
// The flows drive their own EventLoop (they run before iotd's connection exists, or from the
// iot-provision applet) and block until done: at most a few step timeouts.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "base/result.hpp"
#include "provision/api.hpp"
#include "provision/files.hpp"
#include "tls/pki.hpp"

namespace iot::config {
class Config;
}

namespace iot::provision {

enum class Method {
    CreateKeys,  // CreateKeysAndCertificate: AWS makes the key
    CsrFile,     // CreateCertificateFromCsr with --csr-file and --device-key
    DeviceKey,   // CreateCertificateFromCsr with a key and CSR made here
};

struct Broker {
    std::string host;
    int port = 8883;
    std::string ca_file;  // empty: system trust store
    int keepalive_s = 60;
};

struct Options {
    Broker broker;
    // The identity to ask with: the claim certificate, or the current one for a rotation.
    std::string cert, key, client_id;
    std::string template_name;
    api::Parameters parameters;
    Method method = Method::CreateKeys;
    std::string csr_file, device_key;  // Method::CsrFile
    tls::KeyType key_type = tls::KeyType::EcP256;
    std::string key_dir;              // new certificates and keys go here (0700)
    std::string runtime_config_file;  // switched last
    std::string thing_name;           // used when RegisterThing names no thing
    int64_t step_timeout_ms = 10000;
    bool rotation = false;  // adds "Rotation": "true" to the parameters; checks are for a live identity
    // One line per step, for a person at a console (no secrets are ever passed).
    std::function<void(const std::string&)> progress;
};

struct Outcome {
    std::string thing_name;
    std::string certificate_id;
    std::string cert;
    std::string key;
    std::string runtime_config_file;
    std::string device_config = "{}";
    std::string previous_certificate_id;  // rotation
};

// The template parameter a rotation adds, so the template and its hook can tell (document it).
extern const char* const kRotationParameter;

// Refuse a certificate that is expired or not yet valid before connecting with it; `what` names it
// ("claim certificate"). `now` is epoch seconds.
Status check_validity(const std::string& cert_path, const char* what, int64_t now);

Result<Outcome> provision(const Options& options);

// Steps shared with the daemon's rotation. Check that an issued certificate is for our key (the
// answer's privateKey, the CSR file's --device-key, or `device_key` made here) and write it and the
// key to new files in key_dir; returns the outcome's certificate id, cert and key.
Result<Outcome> store_certificate(const Options& options, const api::NewCertificate& issued,
                                  const EVP_PKEY* device_key);
// Point the runtime config at the outcome's files, atomically (0640).
Status switch_runtime_config(const Options& options, const Outcome& outcome);

// The directory provisioned keys go to: fleet-provisioning.keys-directory, else "keys" beside the
// runtime config (~/.aws-iot-device-client/keys/ by default, as the Device Client).
std::string key_directory(const config::Config& cfg);
// Options common to every flow from the configuration (endpoint, port, root CA, template, its
// parameters, CSR settings, key type, directories, timeout). The identity fields are left to the
// caller. Errors are configuration errors.
Result<Options> options_from_config(const config::Config& cfg);

// JITP: connect with a certificate from a registered CA until the cloud has registered it. The
// first connections are dropped while it does; each drop is reported through `progress` as
// "registration in progress". Fails when `total_timeout_ms` runs out.
struct JitpOptions {
    Broker broker;
    std::string cert, key, client_id;
    int64_t total_timeout_ms = 60000;
    int64_t retry_min_ms = 500;
    int64_t retry_max_ms = 8000;
    std::function<void(const std::string&)> progress;
};
// The number of attempts it took.
Result<int> jitp_connect(const JitpOptions& options);

// Factory tools. A root CA for JITP (key 0600, certificate 0644, directory 0700).
struct CaFiles {
    std::string cert, key;
};
Result<CaFiles> create_ca(const std::string& out_dir, const std::string& common_name, int days, tls::KeyType type);
// A device key and certificate signed by the CA with CN = thing name, and the chain file JITP
// presents (device certificate followed by the CA certificate).
struct DeviceFiles {
    std::string cert, key, chain, certificate_id;
};
Result<DeviceFiles> issue_jitp_device(const std::string& ca_cert, const std::string& ca_key, const std::string& thing,
                                      const std::string& out_dir, int days, tls::KeyType type);

}  // namespace iot::provision
