#include "tls/context.hpp"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "base/strings.hpp"
#include "fs/fs.hpp"
#include "tls/pki.hpp"

namespace iot::tls {
namespace {

int verify_slot() {
    static int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

// Keeps OpenSSL's verdict and remembers the first error on the context for explain_verify_error.
int remember_verify_error(int preverify_ok, X509_STORE_CTX* store) {
    if (!preverify_ok) {
        SSL* ssl = static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
        SSL_CTX* ctx = ssl ? SSL_get_SSL_CTX(ssl) : nullptr;
        if (ctx && !SSL_CTX_get_ex_data(ctx, verify_slot())) {
            long err = X509_STORE_CTX_get_error(store);
            SSL_CTX_set_ex_data(ctx, verify_slot(), reinterpret_cast<void*>(static_cast<intptr_t>(err)));
        }
    }
    return preverify_ok;
}

}  // namespace

Result<Context> make_client_context(const ClientOptions& o) {
    init();
    Context ctx(SSL_CTX_new(TLS_client_method()));
    if (!ctx) return Error("cannot create TLS context: " + openssl_errors());
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, remember_verify_error);
    if (!o.ca_file.empty()) {
        if (SSL_CTX_load_verify_locations(ctx.get(), o.ca_file.c_str(), nullptr) != 1)
            return Error(format("cannot load root CA %s: %s", o.ca_file.c_str(), openssl_errors().c_str()));
    } else if (SSL_CTX_set_default_verify_paths(ctx.get()) != 1) {
        return Error("cannot load the system trust store: " + openssl_errors());
    }
    if (!o.cert_file.empty()) {
        if (SSL_CTX_use_certificate_chain_file(ctx.get(), o.cert_file.c_str()) != 1)
            return Error(format("cannot load certificate %s: %s", o.cert_file.c_str(), openssl_errors().c_str()));
        if (SSL_CTX_use_PrivateKey_file(ctx.get(), o.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
            return Error(format("cannot load private key %s: %s", o.key_file.c_str(), openssl_errors().c_str()));
        if (SSL_CTX_check_private_key(ctx.get()) != 1)
            return Error(format("private key %s does not match certificate %s", o.key_file.c_str(), o.cert_file.c_str()));
    }
    // Host-name (or IP) verification on every connection made from this context.
    X509_VERIFY_PARAM* param = SSL_CTX_get0_param(ctx.get());
    unsigned char addr[16];
    if (inet_pton(AF_INET, o.host.c_str(), addr) == 1 || inet_pton(AF_INET6, o.host.c_str(), addr) == 1) {
        X509_VERIFY_PARAM_set1_ip_asc(param, o.host.c_str());
    } else {
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        X509_VERIFY_PARAM_set1_host(param, o.host.c_str(), 0);
    }
    if (!o.alpn.empty()) {
        std::string wire;
        for (const auto& p : o.alpn) {
            wire += static_cast<char>(p.size());
            wire += p;
        }
        if (SSL_CTX_set_alpn_protos(ctx.get(), reinterpret_cast<const unsigned char*>(wire.data()),
                                    static_cast<unsigned>(wire.size())) != 0)
            return Error("cannot set ALPN: " + openssl_errors());
    }
    return ctx;
}

long last_verify_error(const SSL_CTX* ctx) {
    return static_cast<long>(reinterpret_cast<intptr_t>(SSL_CTX_get_ex_data(ctx, verify_slot())));
}

void clear_verify_error(SSL_CTX* ctx) { SSL_CTX_set_ex_data(ctx, verify_slot(), nullptr); }

std::string explain_verify_error(long err, const std::string& host, const std::string& ca_file) {
    std::string ca = ca_file.empty() ? "the system trust store" : "the root CA " + ca_file;
    switch (err) {
        case X509_V_ERR_HOSTNAME_MISMATCH:
        case X509_V_ERR_IP_ADDRESS_MISMATCH:
            return format("server certificate does not match host name %s (check the endpoint)", host.c_str());
        case X509_V_ERR_CERT_HAS_EXPIRED:
            return "server certificate has expired (check the device clock and the endpoint)";
        case X509_V_ERR_CERT_NOT_YET_VALID:
            return "server certificate is not valid yet (is the device clock set?)";
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
        case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        case X509_V_ERR_CERT_SIGNATURE_FAILURE:
            return format("server certificate is not signed by a CA in %s (unknown CA: check root-ca)", ca.c_str());
        default:
            return format("server certificate rejected: %s", X509_verify_cert_error_string(err));
    }
}

}  // namespace iot::tls
