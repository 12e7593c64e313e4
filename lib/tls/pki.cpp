#include "tls/pki.hpp"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <climits>
#include <cstring>
#include <ctime>
#include <utility>

#include "base/strings.hpp"
#include "fs/fs.hpp"

namespace iot::tls {

void KeyFree::operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
void CertFree::operator()(X509* p) const { X509_free(p); }

namespace {

template <class T, void (*F)(T*)>
struct Free {
    void operator()(T* p) const { F(p); }
};
using Bio = std::unique_ptr<BIO, Free<BIO, BIO_free_all>>;
using Req = std::unique_ptr<X509_REQ, Free<X509_REQ, X509_REQ_free>>;
using Name = std::unique_ptr<X509_NAME, Free<X509_NAME, X509_NAME_free>>;
using Ext = std::unique_ptr<X509_EXTENSION, Free<X509_EXTENSION, X509_EXTENSION_free>>;
using Bignum = std::unique_ptr<BIGNUM, Free<BIGNUM, BN_free>>;
using Store = std::unique_ptr<X509_STORE, Free<X509_STORE, X509_STORE_free>>;
using StoreCtx = std::unique_ptr<X509_STORE_CTX, Free<X509_STORE_CTX, X509_STORE_CTX_free>>;

// OPENSSL_free is a macro (it records file and line), so it cannot be a template argument.
struct OsslFree {
    void operator()(void* p) const { OPENSSL_free(p); }
};
using OsslChars = std::unique_ptr<char, OsslFree>;
using OsslBytes = std::unique_ptr<unsigned char, OsslFree>;

// OpenSSL 3.0 still declares some operations that leave their argument logically unchanged with
// non-const parameters: putting a key into a certificate or request only takes a reference, signing
// does not alter the key, and certificate extension flags are a cache filled under a lock.
EVP_PKEY* mut(const EVP_PKEY* p) { return const_cast<EVP_PKEY*>(p); }
X509* mut(const X509* p) { return const_cast<X509*>(p); }

constexpr int64_t kDaySeconds = 86400;
// Far enough for any CA a device will meet; keeps notAfter well inside what ASN1_TIME can encode.
constexpr int kMaxDays = 100 * 366;

// Every public call starts here: OpenSSL must be initialised our way before its first use, and
// errors left on the queue by someone else (libmosquitto, an earlier caller) must not end up in
// our messages.
void begin() {
    init();
    ERR_clear_error();
}

Error ssl_error(const std::string& what) { return Error(what + ": " + openssl_errors()); }

// A read-only memory BIO over `data` (no copy; `data` must outlive it).
Result<Bio> read_bio(std::string_view data) {
    if (data.size() > static_cast<size_t>(INT_MAX)) return Error("input is too large");
    Bio bio(BIO_new_mem_buf(data.empty() ? "" : data.data(), static_cast<int>(data.size())));
    if (!bio) return ssl_error("cannot allocate a memory BIO");
    return bio;
}

Result<Bio> write_bio() {
    Bio bio(BIO_new(BIO_s_mem()));
    if (!bio) return ssl_error("cannot allocate a memory BIO");
    return bio;
}

std::string bio_text(BIO* bio) {
    BUF_MEM* mem = nullptr;
    BIO_get_mem_ptr(bio, &mem);
    return mem ? std::string(mem->data, mem->length) : std::string();
}

// The passphrase callback for every private key we read: a daemon has no terminal, and OpenSSL's
// default callback would prompt on one. Recording the request lets us say why reading failed.
int refuse_passphrase(char*, int, int, void* asked) {
    *static_cast<bool*>(asked) = true;
    return -1;
}

size_t utf8_length(std::string_view s) {
    size_t n = 0;
    for (unsigned char c : s)
        if ((c & 0xC0) != 0x80) ++n;
    return n;
}

// X.520 PrintableString, which countryName and serialNumber must use.
bool is_printable_string(std::string_view s) {
    for (char c : s) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  std::string_view(" '()+,-./:=?").find(c) != std::string_view::npos;
        if (!ok) return false;
    }
    return true;
}

Status check_common_name(const std::string& cn) {
    if (cn.empty()) return Error("the common name is empty");
    if (utf8_length(cn) > 64) return Error(format("the common name is longer than 64 characters: %s", cn.c_str()));
    return {};
}

Status add_name_entry(X509_NAME* name, int nid, const std::string& value) {
    if (X509_NAME_add_entry_by_NID(name, nid, MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(value.data()),
                                   static_cast<int>(value.size()), -1, 0) != 1)
        return ssl_error(format("cannot set %s \"%s\"", OBJ_nid2sn(nid), value.c_str()));
    return {};
}

// Host names only; anything else (a comma above all) could smuggle other entries into the
// subjectAltName value string.
Status check_dns_name(const std::string& dns) {
    if (dns.empty() || dns.size() > 253) return Error(format("invalid DNS name \"%s\"", dns.c_str()));
    for (char c : dns) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                  c == '.' || c == '*' || c == '_';
        if (!ok) return Error(format("invalid DNS name \"%s\" (letters, digits, '-', '.', '*' only)", dns.c_str()));
    }
    return {};
}

std::string name_text(const X509_NAME* name) {
    auto bio = write_bio();
    if (!bio) return {};
    // RFC 2253 but with UTF-8 left readable instead of escaped as \XX.
    X509_NAME_print_ex(bio->get(), name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
    return bio_text(bio->get());
}

std::string common_name_of(const X509_NAME* name) {
    // With several CNs the last is the most specific one, as TLS libraries treat it.
    int index = -1;
    for (int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1); i >= 0;
         i = X509_NAME_get_index_by_NID(name, NID_commonName, i))
        index = i;
    if (index < 0) return {};
    const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
    unsigned char* utf8 = nullptr;
    int len = ASN1_STRING_to_UTF8(&utf8, data);
    if (len < 0) return {};
    OsslBytes owner(utf8);
    return std::string(reinterpret_cast<const char*>(utf8), static_cast<size_t>(len));
}

Result<int64_t> epoch_of(const ASN1_TIME* t, const char* what) {
    struct tm tm {};
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return ssl_error(format("unreadable %s time", what));
    return static_cast<int64_t>(timegm(&tm));
}

Status add_extension(X509* cert, X509V3_CTX* ctx, int nid, const std::string& value) {
    Ext ext(X509V3_EXT_conf_nid(nullptr, ctx, nid, value.c_str()));
    if (!ext) return ssl_error(format("cannot make the %s extension \"%s\"", OBJ_nid2sn(nid), value.c_str()));
    if (X509_add_ext(cert, ext.get(), -1) != 1)
        return ssl_error(format("cannot add the %s extension", OBJ_nid2sn(nid)));
    return {};
}

bool is_ca_cert(const X509* cert) { return (X509_get_extension_flags(mut(cert)) & EXFLAG_CA) != 0; }

// Build and sign a certificate for `subject_key` named `subject`. `ca` null means self-signed
// (`signing_key` is then `subject_key`).
Result<Cert> issue(const X509_NAME* subject, const EVP_PKEY* subject_key, const X509* ca, const EVP_PKEY* signing_key,
                   const SignOptions& opts) {
    if (!subject_key || !signing_key) return Error("no key given");
    if (opts.days < 1 || opts.days > kMaxDays)
        return Error(format("validity of %d days is out of range (1 to %d)", opts.days, kMaxDays));
    for (const std::string& dns : opts.dns_names) {
        Status st = check_dns_name(dns);
        if (!st) return st.err();
    }
    if (ca) {
        if (!is_ca_cert(ca))
            return Error(format("%s is not a CA certificate (no basicConstraints CA:TRUE)",
                                name_text(X509_get_subject_name(ca)).c_str()));
        if (!key_matches_certificate(signing_key, ca))
            return Error(format("the CA key does not belong to the CA certificate %s",
                                name_text(X509_get_subject_name(ca)).c_str()));
    }
    const bool make_ca = ca == nullptr || opts.is_ca;

    Cert cert(X509_new());
    if (!cert) return ssl_error("cannot allocate a certificate");
    X509* x = cert.get();
    if (X509_set_version(x, X509_VERSION_3) != 1) return ssl_error("cannot set the certificate version");

    // Random serials keep two certificates from one CA distinct without a serial database.
    Bignum serial(BN_new());
    if (!serial || BN_rand(serial.get(), 128, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
        !BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(x)))
        return ssl_error("cannot make a random serial number");

    if (X509_set_subject_name(x, subject) != 1 ||
        X509_set_issuer_name(x, ca ? X509_get_subject_name(ca) : subject) != 1)
        return ssl_error("cannot set the certificate names");

    const int64_t not_before = static_cast<int64_t>(time(nullptr)) + opts.not_before_offset_s;
    const int64_t not_after = not_before + opts.days * kDaySeconds;
    if (!ASN1_TIME_set(X509_getm_notBefore(x), static_cast<time_t>(not_before)) ||
        !ASN1_TIME_set(X509_getm_notAfter(x), static_cast<time_t>(not_after)))
        return ssl_error("cannot set the validity dates");

    if (X509_set_pubkey(x, mut(subject_key)) != 1) return ssl_error("cannot set the certificate's public key");

    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, ca ? mut(ca) : x, x, nullptr, nullptr, 0);
    std::vector<std::pair<int, std::string>> exts;
    if (make_ca) {
        exts.emplace_back(NID_basic_constraints, "critical,CA:TRUE");
        exts.emplace_back(NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        exts.emplace_back(NID_basic_constraints, "CA:FALSE");
        // RSA key exchange (TLS 1.2 without ECDHE) encrypts to the key; EC keys only ever sign.
        bool rsa = EVP_PKEY_get_base_id(subject_key) == EVP_PKEY_RSA;
        exts.emplace_back(NID_key_usage,
                          rsa ? "critical,digitalSignature,keyEncipherment" : "critical,digitalSignature");
        exts.emplace_back(NID_ext_key_usage, opts.dns_names.empty() ? "clientAuth" : "clientAuth,serverAuth");
    }
    // The subject key id must exist before a self-signed certificate's authority key id copies it.
    exts.emplace_back(NID_subject_key_identifier, "hash");
    // A foreign CA without a subject key id is still usable: fall back to its issuer and serial.
    exts.emplace_back(NID_authority_key_identifier, ca ? "keyid,issuer" : "keyid:always");
    if (!opts.dns_names.empty()) {
        std::vector<std::string> san;
        for (const std::string& dns : opts.dns_names) san.push_back("DNS:" + dns);
        exts.emplace_back(NID_subject_alt_name, join(san, ","));
    }
    for (const auto& [nid, value] : exts) {
        Status st = add_extension(x, &ctx, nid, value);
        if (!st) return st.err();
    }

    if (X509_sign(x, mut(signing_key), EVP_sha256()) <= 0) return ssl_error("cannot sign the certificate");
    return cert;
}

Result<Name> common_name_only(const std::string& common_name) {
    Status st = check_common_name(common_name);
    if (!st) return st.err();
    Name name(X509_NAME_new());
    if (!name) return ssl_error("cannot allocate a name");
    st = add_name_entry(name.get(), NID_commonName, common_name);
    if (!st) return st.err();
    return name;
}

}  // namespace

void init() {
    static const bool done = [] {
        const uint64_t no_config = OPENSSL_INIT_NO_LOAD_CONFIG;
        OPENSSL_init_crypto(no_config | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, nullptr);
        OPENSSL_init_ssl(no_config | OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, nullptr);
        return true;
    }();
    (void)done;
}

std::string openssl_errors() {
    std::vector<std::string> parts;
    size_t dropped = 0;
    const char* data = nullptr;
    int flags = 0;
    while (unsigned long e = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) {
        const char* lib = ERR_lib_error_string(e);
        const char* reason = ERR_reason_error_string(e);
        std::string part = reason ? reason : format("error %08lx", e);
        if (lib) part = std::string(lib) + ": " + part;
        if (data && (flags & ERR_TXT_STRING) && *data) {
            std::string detail(data, strnlen(data, 200));
            part += " (" + replace_all(replace_all(detail, "\r", " "), "\n", " ") + ")";
        }
        // The same reason is often pushed once per layer; once is enough for a person.
        bool seen = false;
        for (const std::string& p : parts) seen = seen || p == part;
        if (seen) continue;
        if (parts.size() < 8)
            parts.push_back(std::move(part));
        else
            ++dropped;
    }
    if (parts.empty()) return "no detail from OpenSSL";
    std::string out = join(parts, "; ");
    if (dropped) out += format("; and %zu more", dropped);
    return out;
}

namespace {
struct KeyTypeName {
    const char* name;
    KeyType type;
};
// The first spelling of each type is its canonical name.
constexpr KeyTypeName kKeyTypeNames[] = {
    {"ec-p256", KeyType::EcP256}, {"ec", KeyType::EcP256},        {"p256", KeyType::EcP256},
    {"rsa2048", KeyType::Rsa2048}, {"rsa", KeyType::Rsa2048},     {"rsa3072", KeyType::Rsa3072},
    {"rsa4096", KeyType::Rsa4096},
};
}  // namespace

Result<KeyType> parse_key_type(std::string_view name) {
    std::string wanted = to_lower(trim(name));
    std::vector<std::string> choices;
    for (const KeyTypeName& k : kKeyTypeNames) {
        if (wanted == k.name) return k.type;
        choices.push_back(k.name);
    }
    return Error(format("unknown key type \"%.*s\" (choose one of: %s)", static_cast<int>(name.size()), name.data(),
                        join(choices, ", ").c_str()));
}

const char* key_type_name(KeyType type) {
    for (const KeyTypeName& k : kKeyTypeNames)
        if (k.type == type) return k.name;
    return "unknown";
}

Result<Key> generate_key(KeyType type) {
    begin();
    EVP_PKEY* key = nullptr;
    switch (type) {
        case KeyType::EcP256: key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"); break;
        case KeyType::Rsa2048: key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(2048)); break;
        case KeyType::Rsa3072: key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(3072)); break;
        case KeyType::Rsa4096: key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(4096)); break;
    }
    if (!key) return ssl_error(format("cannot generate a %s key", key_type_name(type)));
    return Key(key);
}

Result<std::string> private_key_pem(const EVP_PKEY* key) {
    begin();
    if (!key) return Error("no key given");
    auto bio = write_bio();
    if (!bio) return bio.err();
    if (PEM_write_bio_PKCS8PrivateKey(bio->get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
        return ssl_error("cannot encode the private key");
    // The memory BIO wipes its buffer when freed; the returned copy is the caller's to guard.
    return bio_text(bio->get());
}

std::string public_key_pem(const EVP_PKEY* key) {
    begin();
    auto bio = write_bio();
    if (!key || !bio || PEM_write_bio_PUBKEY(bio->get(), key) != 1) {
        ERR_clear_error();
        return {};
    }
    return bio_text(bio->get());
}

Result<Key> read_private_key(std::string_view pem) {
    begin();
    auto bio = read_bio(pem);
    if (!bio) return bio.err();
    bool asked_passphrase = false;
    Key key(PEM_read_bio_PrivateKey(bio->get(), nullptr, refuse_passphrase, &asked_passphrase));
    if (!key) {
        if (asked_passphrase) {
            ERR_clear_error();
            return Error("the private key is encrypted with a passphrase (store it unencrypted, readable only "
                         "by iotbox: openssl pkey -in KEY -out PLAIN-KEY)");
        }
        return ssl_error("no readable PEM private key");
    }
    return key;
}

Result<Key> load_private_key(const std::string& path) {
    auto text = fs::read_file(path, 1024 * 1024);
    if (!text) return text.err();
    auto key = read_private_key(*text);
    OPENSSL_cleanse(text->data(), text->size());
    if (!key) return key.err().wrap("cannot load private key " + path);
    return key;
}

Status write_private_key(const std::string& path, const EVP_PKEY* key) {
    auto pem = private_key_pem(key);
    if (!pem) return pem.err().wrap("cannot write private key " + path);
    Status st = fs::write_atomic(path, *pem, 0600);
    OPENSSL_cleanse(pem->data(), pem->size());
    if (!st) return st.err().wrap("cannot write private key " + path);
    return {};
}

Result<Cert> read_certificate(std::string_view pem) {
    begin();
    auto bio = read_bio(pem);
    if (!bio) return bio.err();
    Cert cert(PEM_read_bio_X509(bio->get(), nullptr, nullptr, nullptr));
    if (!cert) return ssl_error("no readable PEM certificate");
    return cert;
}

Result<Cert> load_certificate(const std::string& path) {
    auto text = fs::read_file(path, 1024 * 1024);
    if (!text) return text.err();
    auto cert = read_certificate(*text);
    if (!cert) return cert.err().wrap("cannot load certificate " + path);
    return cert;
}

std::string certificate_pem(const X509* cert) {
    begin();
    auto bio = write_bio();
    if (!cert || !bio || PEM_write_bio_X509(bio->get(), cert) != 1) {
        ERR_clear_error();
        return {};
    }
    return bio_text(bio->get());
}

Result<std::vector<Cert>> read_certificate_chain(std::string_view pem) {
    begin();
    auto bio = read_bio(pem);
    if (!bio) return bio.err();
    std::vector<Cert> chain;
    for (;;) {
        Cert cert(PEM_read_bio_X509(bio->get(), nullptr, nullptr, nullptr));
        if (cert) {
            chain.push_back(std::move(cert));
            continue;
        }
        // Running out of PEM blocks after at least one certificate is the normal end.
        unsigned long e = ERR_peek_last_error();
        if (!chain.empty() && ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
            ERR_clear_error();
            return chain;
        }
        if (chain.empty()) return ssl_error("no readable PEM certificate");
        return ssl_error(format("certificate %zu of the chain is unreadable", chain.size() + 1));
    }
}

Result<std::string> make_csr(const EVP_PKEY* key, const CsrSubject& subject) {
    begin();
    if (!key) return Error("no key given");
    Status st = check_common_name(subject.common_name);
    if (!st) return st.err().wrap("certificate request");
    if (utf8_length(subject.organization) > 64)
        return Error(format("certificate request: the organization is longer than 64 characters: %s",
                            subject.organization.c_str()));
    std::string country = to_upper(subject.country);
    if (!country.empty() && (country.size() != 2 || country[0] < 'A' || country[0] > 'Z' || country[1] < 'A' ||
                             country[1] > 'Z'))
        return Error(format("certificate request: the country must be two letters (ISO 3166, e.g. DE), not \"%s\"",
                            subject.country.c_str()));
    if (subject.serial_number.size() > 64 || !is_printable_string(subject.serial_number))
        return Error(format("certificate request: the serial number \"%s\" must be at most 64 letters, digits or "
                            "\" '()+,-./:=?\"",
                            subject.serial_number.c_str()));

    Req req(X509_REQ_new());
    if (!req) return ssl_error("cannot allocate a certificate request");
    if (X509_REQ_set_version(req.get(), X509_REQ_VERSION_1) != 1)
        return ssl_error("cannot set the certificate request version");
    X509_NAME* name = X509_REQ_get_subject_name(req.get());
    const std::pair<int, const std::string*> entries[] = {
        {NID_countryName, &country},
        {NID_organizationName, &subject.organization},
        {NID_commonName, &subject.common_name},
        {NID_serialNumber, &subject.serial_number},
    };
    for (const auto& [nid, value] : entries) {
        if (value->empty()) continue;
        st = add_name_entry(name, nid, *value);
        if (!st) return st.err().wrap("certificate request");
    }
    if (X509_REQ_set_pubkey(req.get(), mut(key)) != 1) return ssl_error("cannot set the request's public key");
    if (X509_REQ_sign(req.get(), mut(key), EVP_sha256()) <= 0)
        return ssl_error("cannot sign the certificate request");

    auto bio = write_bio();
    if (!bio) return bio.err();
    if (PEM_write_bio_X509_REQ(bio->get(), req.get()) != 1) return ssl_error("cannot encode the certificate request");
    return bio_text(bio->get());
}

Result<CertInfo> inspect(const X509* cert) {
    begin();
    if (!cert) return Error("no certificate given");
    CertInfo info;
    info.subject = name_text(X509_get_subject_name(cert));
    info.issuer = name_text(X509_get_issuer_name(cert));
    info.common_name = common_name_of(X509_get_subject_name(cert));

    Bignum serial(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr));
    if (!serial) return ssl_error("unreadable serial number");
    OsslChars hex(BN_bn2hex(serial.get()));
    if (!hex) return ssl_error("unreadable serial number");
    info.serial_hex = to_lower(hex.get());

    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    if (X509_digest(cert, EVP_sha256(), digest, &digest_len) != 1) return ssl_error("cannot hash the certificate");
    info.fingerprint_sha256 = to_hex(digest, digest_len);

    auto not_before = epoch_of(X509_get0_notBefore(cert), "notBefore");
    if (!not_before) return not_before.err();
    auto not_after = epoch_of(X509_get0_notAfter(cert), "notAfter");
    if (!not_after) return not_after.err();
    info.not_before = *not_before;
    info.not_after = *not_after;
    info.is_ca = is_ca_cert(cert);
    ERR_clear_error();
    return info;
}

Result<CertInfo> inspect_file(const std::string& path) {
    auto cert = load_certificate(path);
    if (!cert) return cert.err();
    auto info = inspect(cert->get());
    if (!info) return info.err().wrap(path);
    return info;
}

bool key_matches_certificate(const EVP_PKEY* key, const X509* cert) {
    begin();
    const EVP_PKEY* cert_key = cert ? X509_get0_pubkey(cert) : nullptr;
    bool match = key && cert_key && EVP_PKEY_eq(key, cert_key) == 1;
    // EVP_PKEY_eq reports keys of different types on the error queue; here that is just "no".
    ERR_clear_error();
    return match;
}

Result<Cert> make_ca(const EVP_PKEY* key, const std::string& common_name, int days) {
    begin();
    auto name = common_name_only(common_name);
    if (!name) return name.err().wrap("CA certificate");
    SignOptions opts;
    opts.days = days;
    opts.is_ca = true;
    auto cert = issue(name->get(), key, nullptr, key, opts);
    if (!cert) return cert.err().wrap("CA certificate");
    return cert;
}

Result<Cert> sign_csr(std::string_view csr_pem, const X509* ca, const EVP_PKEY* ca_key, const SignOptions& opts) {
    begin();
    if (!ca) return Error("no CA certificate given");
    auto bio = read_bio(csr_pem);
    if (!bio) return bio.err();
    Req req(PEM_read_bio_X509_REQ(bio->get(), nullptr, nullptr, nullptr));
    if (!req) return ssl_error("no readable PEM certificate request");
    EVP_PKEY* requested_key = X509_REQ_get0_pubkey(req.get());
    if (!requested_key) return ssl_error("the certificate request has no usable public key");
    // Proof that the requester holds the private key, and that nobody altered the request on its way.
    if (X509_REQ_verify(req.get(), requested_key) != 1)
        return ssl_error("the certificate request's signature does not verify (altered, or not signed by its key)");
    const X509_NAME* subject = X509_REQ_get_subject_name(req.get());
    if (X509_NAME_entry_count(subject) == 0) return Error("the certificate request has an empty subject");
    auto cert = issue(subject, requested_key, ca, ca_key, opts);
    if (!cert) return cert.err().wrap(format("cannot issue a certificate for %s", name_text(subject).c_str()));
    return cert;
}

Result<Cert> sign_public_key(const EVP_PKEY* subject_key, const std::string& common_name, const X509* ca,
                             const EVP_PKEY* ca_key, const SignOptions& opts) {
    begin();
    if (!ca) return Error("no CA certificate given");
    auto name = common_name_only(common_name);
    if (!name) return name.err().wrap("cannot issue a certificate");
    auto cert = issue(name->get(), subject_key, ca, ca_key, opts);
    if (!cert) return cert.err().wrap(format("cannot issue a certificate for CN=%s", common_name.c_str()));
    return cert;
}

Result<bool> verify_certificate(const X509* cert, const X509* ca) {
    begin();
    if (!cert || !ca) return Error("no certificate given");
    Store store(X509_STORE_new());
    StoreCtx ctx(X509_STORE_CTX_new());
    if (!store || !ctx) return ssl_error("cannot allocate a certificate store");
    if (X509_STORE_add_cert(store.get(), mut(ca)) != 1) return ssl_error("cannot add the CA to the store");
    // The caller names the one CA to check against; it need not be a self-signed root.
    X509_STORE_set_flags(store.get(), X509_V_FLAG_PARTIAL_CHAIN);
    if (X509_STORE_CTX_init(ctx.get(), store.get(), mut(cert), nullptr) != 1)
        return ssl_error("cannot set up verification");
    if (X509_verify_cert(ctx.get()) == 1) {
        ERR_clear_error();
        return true;
    }
    const std::string what = format("certificate \"%s\" does not verify against CA \"%s\"",
                                    name_text(X509_get_subject_name(cert)).c_str(),
                                    name_text(X509_get_subject_name(ca)).c_str());
    int code = X509_STORE_CTX_get_error(ctx.get());
    if (code == X509_V_OK) return ssl_error(what);
    ERR_clear_error();
    return Error(what + ": " + X509_verify_cert_error_string(code));
}

}  // namespace iot::tls
