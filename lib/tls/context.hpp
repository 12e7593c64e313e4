// The TLS client context shared by MQTT and the tunnel's WebSocket: TLS 1.2 or newer, the peer
// certificate and host name always verified, the client certificate and key, optional ALPN, and
// a record of why verification failed so a person gets "host name mismatch", not "TLS error".
#pragma once
#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <vector>

#include "base/result.hpp"

namespace iot::tls {

struct CtxDeleter {
    void operator()(SSL_CTX* p) const { SSL_CTX_free(p); }
};
using Context = std::unique_ptr<SSL_CTX, CtxDeleter>;

struct ClientOptions {
    std::string host;       // verified against the server certificate (DNS name or IP address)
    std::string ca_file;    // empty: the system trust store
    std::string cert_file;  // client certificate (chain), empty for none
    std::string key_file;
    std::vector<std::string> alpn;  // e.g. {"x-amzn-mqtt-ca"} on port 443
};

Result<Context> make_client_context(const ClientOptions& options);

// The X.509 verification error of the last failed handshake on `ctx` (0 if none), and a person's
// explanation of it ("the server's certificate is not signed by the configured root CA ...").
long last_verify_error(const SSL_CTX* ctx);
void clear_verify_error(SSL_CTX* ctx);
std::string explain_verify_error(long x509_error, const std::string& host, const std::string& ca_file);

}  // namespace iot::tls
