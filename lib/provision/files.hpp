// Where a provisioned identity lives on the device, written so that a kill -9 or a power cut at
// any moment leaves either the old state or the complete new one: new certificates and keys go to
// new files named after their certificate id (the Device Client's names), each written atomically
// with its final mode from the first byte (key 0600, certificate 0644, directory 0700), and the
// runtime config that points at them is switched last, atomically (0640).
#pragma once
#include <string>

#include "base/result.hpp"

namespace iot::provision {

// <dir>/<certId>-certificate.pem.crt and <dir>/<certId>-private.pem.key
std::string certificate_path(const std::string& dir, const std::string& certificate_id);
std::string private_key_path(const std::string& dir, const std::string& certificate_id);

// Create `dir` (and missing parents) with mode 0700; an existing directory must be 0700 or
// stricter (it holds private keys), else an error with the chmod to run.
Status prepare_key_directory(const std::string& dir);
// Remove temporary files an interrupted atomic write left in `dir` (".<name>.tmp-<pid>-<rand>").
void remove_stale_temporaries(const std::string& dir);

// Write the certificate (0644) and, unless key_pem is empty, the private key (0600), atomically.
Status write_certificate(const std::string& path, const std::string& certificate_pem);
Status write_private_key_pem(const std::string& path, const std::string& key_pem);

// The Device Client's runtime file:
// {"runtime-config": {"completed-fp": true, "cert": ..., "key": ..., "thing-name": ...,
//  "device-config": {...}}} — valid JSON (the Device Client's printf template was not always).
struct RuntimeConfig {
    bool completed_fp = false;
    std::string cert;
    std::string key;
    std::string thing_name;
    std::string device_config = "{}";  // compact JSON object
    std::string certificate_id;        // iotbox extra ("certificate-id"), for rotation and status
};
std::string runtime_config_json(const RuntimeConfig& rc);
// Atomically, mode 0640; the directory is created 0700 if missing.
Status write_runtime_config(const std::string& path, const RuntimeConfig& rc);
// A missing file is an error (callers check fs::exists first when absence is fine).
Result<RuntimeConfig> read_runtime_config(const std::string& path);
// Provisioning is complete: completed-fp is true and the certificate and key it names exist.
bool runtime_config_complete(const RuntimeConfig& rc);

}  // namespace iot::provision
