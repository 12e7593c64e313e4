// The device's and the test CA's public-key infrastructure on OpenSSL 3: keys, CSRs, certificates,
// a small CA for the testbed, fakecloud and JITP, and the facts about a certificate that AWS IoT
// cares about (its SHA-256 fingerprint is AWS's certificate id).
//
// Every fallible call returns a Result whose error is one line meant for a person; no error ever
// carries key material, so callers may log them as they are. Each call starts with a clean OpenSSL
// error queue and leaves it empty.
#pragma once
#include <openssl/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.hpp"

namespace iot::tls {

// Initialise libcrypto and libssl without reading openssl.cnf, so a device's OpenSSL configuration
// cannot change our keys or our TLS (protocol floor, ciphers, providers). OpenSSL only honours the
// first initialisation of a process, so this must run before libmosquitto's: main() calls it first,
// and every function here calls it too. Idempotent and thread-safe.
void init();

// Drain the calling thread's OpenSSL error queue into one line ("reason (library); reason (library)").
// "no detail from OpenSSL" when the queue is empty.
std::string openssl_errors();

// Owning handles; the deleters live in pki.cpp so this header needs no OpenSSL object headers.
struct KeyFree {
    void operator()(EVP_PKEY* p) const;
};
struct CertFree {
    void operator()(X509* p) const;
};
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;
using Cert = std::unique_ptr<X509, CertFree>;

enum class KeyType { EcP256, Rsa2048, Rsa3072, Rsa4096 };
// "ec", "ec-p256", "p256", "rsa", "rsa2048", "rsa3072", "rsa4096" (any case); the error lists them.
Result<KeyType> parse_key_type(std::string_view name);
// The canonical spelling: "ec-p256", "rsa2048", ...
const char* key_type_name(KeyType type);

Result<Key> generate_key(KeyType type);

// PKCS#8, unencrypted ("-----BEGIN PRIVATE KEY-----"). The string holds the secret: do not log it.
Result<std::string> private_key_pem(const EVP_PKEY* key);
// SubjectPublicKeyInfo ("-----BEGIN PUBLIC KEY-----").
std::string public_key_pem(const EVP_PKEY* key);

// PKCS#8 or the traditional "RSA/EC PRIVATE KEY" forms. Encrypted keys are refused (never prompted
// for: a daemon has no terminal).
Result<Key> read_private_key(std::string_view pem);
// As read_private_key; errors name the file.
Result<Key> load_private_key(const std::string& path);
// Atomically, with mode 0600 from the first byte.
Status write_private_key(const std::string& path, const EVP_PKEY* key);

// The first certificate in `pem`.
Result<Cert> read_certificate(std::string_view pem);
Result<Cert> load_certificate(const std::string& path);
std::string certificate_pem(const X509* cert);
// Every certificate in `pem`, in file order (leaf first, as TLS sends them). At least one.
Result<std::vector<Cert>> read_certificate_chain(std::string_view pem);

// Subject of a certificate signing request. Empty optional fields are left out.
struct CsrSubject {
    std::string common_name;    // required, at most 64 characters (AWS: usually the thing name)
    std::string organization;   // at most 64 characters
    std::string country;        // two letters, e.g. "DE"
    std::string serial_number;  // at most 64 printable characters (letters, digits, " '()+,-./:=?")
};
// A PEM "CERTIFICATE REQUEST" for `key`, signed with SHA-256.
Result<std::string> make_csr(const EVP_PKEY* key, const CsrSubject& subject);

struct CertInfo {
    std::string subject;             // RFC 2253: "CN=thing-1,O=Acme,C=DE"
    std::string issuer;              // same form
    std::string common_name;         // empty if the subject has none
    std::string serial_hex;          // lowercase hex, as `openssl x509 -serial` shows it (lowercased)
    std::string fingerprint_sha256;  // 64 lowercase hex of the DER: AWS's certificate id
    int64_t not_before = 0;          // epoch seconds
    int64_t not_after = 0;
    bool is_ca = false;              // basicConstraints CA:TRUE
};
Result<CertInfo> inspect(const X509* cert);
Result<CertInfo> inspect_file(const std::string& path);

// True if `key` is the private (or public) half of the certificate's public key.
bool key_matches_certificate(const EVP_PKEY* key, const X509* cert);

// A self-signed CA certificate, valid from now for `days`: basicConstraints CA:TRUE (critical),
// keyUsage keyCertSign,cRLSign (critical), subject and authority key identifiers, SHA-256.
Result<Cert> make_ca(const EVP_PKEY* key, const std::string& common_name, int days);

struct SignOptions {
    int days = 365;
    int64_t not_before_offset_s = 0;  // added to now for notBefore; negative makes expired test certs
    bool is_ca = false;               // issue an intermediate CA instead of a leaf
    // subjectAltName DNS entries. A leaf with DNS names is also a TLS server certificate
    // (extendedKeyUsage serverAuth as well as clientAuth), e.g. the testbed broker's.
    std::vector<std::string> dns_names;
};
// Issue a certificate for a CSR after checking the CSR's signature. Only the CSR's subject and key
// are taken; its requested extensions are ignored (the CA, not the requester, decides them). Leaf
// certificates get basicConstraints CA:FALSE, keyUsage digitalSignature (and keyEncipherment for
// RSA), extendedKeyUsage clientAuth; every certificate a random 128-bit serial, subject and
// authority key identifiers and a SHA-256 signature.
Result<Cert> sign_csr(std::string_view csr_pem, const X509* ca, const EVP_PKEY* ca_key, const SignOptions& opts);
// The same without a CSR, for a key the issuer already holds (fakecloud, JITP); subject CN only.
Result<Cert> sign_public_key(const EVP_PKEY* subject_key, const std::string& common_name, const X509* ca,
                             const EVP_PKEY* ca_key, const SignOptions& opts);

// Check `cert` against `ca` alone (`ca` is trusted even if it is itself an intermediate): signature
// and validity dates now. true when it verifies; when it does not, an error says why ("... :
// certificate has expired"), so the result is never false.
Result<bool> verify_certificate(const X509* cert, const X509* ca);

}  // namespace iot::tls
