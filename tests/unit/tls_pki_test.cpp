// lib/tls/pki: keys, CSRs and certificates, cross-checked against the real openssl command line
// tool wherever a second opinion exists (a CSR or certificate we make must convince OpenSSL's own
// verifier, not just our code that made it).
#include "tls/pki.hpp"

#include <dirent.h>
#include <gtest/gtest.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>

#include "base/strings.hpp"
#include "fs/fs.hpp"

using namespace iot::tls;

namespace {

class TempDir {
public:
    TempDir() {
        char tmpl[] = "/tmp/tls_pki_test.XXXXXX";
        // Without a directory every path below would point at "/": stop rather than write there.
        if (!mkdtemp(tmpl)) {
            perror("mkdtemp");
            abort();
        }
        path_ = tmpl;
    }
    ~TempDir() {
        if (path_.empty()) return;
        // Flat: the tests create no subdirectories.
        if (DIR* d = opendir(path_.c_str())) {
            while (dirent* e = readdir(d)) {
                std::string name = e->d_name;
                if (name != "." && name != "..") unlink((path_ + "/" + name).c_str());
            }
            closedir(d);
        }
        rmdir(path_.c_str());
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    std::string file(const std::string& name) const { return path_ + "/" + name; }
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

struct CliResult {
    int code = -1;
    std::string out;  // stdout and stderr
};

// Paths come from mkdtemp, so they need no shell quoting.
CliResult run(const std::string& command) {
    CliResult r;
    FILE* p = popen((command + " 2>&1").c_str(), "r");
    if (!p) return r;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
    int status = pclose(p);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

// Test helpers that fail the test instead of dereferencing an empty Result.
std::string slurp(const std::string& path) {
    auto text = iot::fs::read_file(path);
    EXPECT_TRUE(text) << text.error();
    return text ? *text : std::string();
}

CertInfo info_of(const X509* cert) {
    auto info = inspect(cert);
    EXPECT_TRUE(info) << info.error();
    return info ? *info : CertInfo{};
}

std::string pem_of(const EVP_PKEY* key) {
    auto pem = private_key_pem(key);
    EXPECT_TRUE(pem) << pem.error();
    return pem ? *pem : std::string();
}

void write_text(const std::string& path, const std::string& text) {
    ASSERT_TRUE(iot::fs::write_atomic(path, text, 0644)) << path;
}

Key ec_key() {
    auto key = generate_key(KeyType::EcP256);
    EXPECT_TRUE(key) << key.error();
    return key ? key.take() : Key();
}

struct Ca {
    Key key;
    Cert cert;
};

Ca make_test_ca(const std::string& cn = "iotbox test CA") {
    Ca ca;
    ca.key = ec_key();
    auto cert = make_ca(ca.key.get(), cn, 30);
    EXPECT_TRUE(cert) << cert.error();
    if (cert) ca.cert = cert.take();
    return ca;
}

// "sha256 Fingerprint=AB:CD:..." or "serial=ABCD" -> "abcd..."
std::string cli_value(const std::string& out) {
    std::string v(iot::trim(out.substr(out.find('=') + 1)));
    return iot::to_lower(iot::replace_all(v, ":", ""));
}

// The base64 body of a PEM block, without its BEGIN/END lines and line breaks.
std::string pem_body(const std::string& pem) {
    std::string body;
    for (const std::string& line : iot::split(pem, '\n'))
        if (!iot::starts_with(line, "-----")) body += line;
    return body;
}

// An error message must not carry the key: neither its PEM armour nor any run of its base64 body.
void expect_no_key_material(const std::string& message, const std::string& key_pem) {
    EXPECT_EQ(message.find("PRIVATE KEY-----"), std::string::npos) << message;
    std::string body = pem_body(key_pem);
    ASSERT_GT(body.size(), 100u);
    for (size_t i = 0; i + 12 <= body.size(); ++i) {
        if (message.find(body.substr(i, 12)) != std::string::npos) {
            ADD_FAILURE() << "key material at offset " << i << " in: " << message;
            return;
        }
    }
}

// Flip one byte of a DER-encoded PEM object where `needle` occurs, keeping it valid PEM.
std::string tamper_pem(const std::string& pem, const std::string& needle, char replacement) {
    BIO* in = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    char* name = nullptr;
    char* header = nullptr;
    unsigned char* data = nullptr;
    long len = 0;
    std::string out;
    if (PEM_read_bio(in, &name, &header, &data, &len) == 1) {
        std::string der(reinterpret_cast<char*>(data), static_cast<size_t>(len));
        size_t pos = der.find(needle);
        if (pos != std::string::npos) {
            der[pos] = replacement;
            BIO* mem = BIO_new(BIO_s_mem());
            PEM_write_bio(mem, name, header, reinterpret_cast<const unsigned char*>(der.data()),
                          static_cast<long>(der.size()));
            char* p = nullptr;
            long n = BIO_get_mem_data(mem, &p);
            out.assign(p, static_cast<size_t>(n));
            BIO_free(mem);
        }
    }
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(data);
    BIO_free(in);
    return out;
}

// "Jan  2 03:04:05 2026 GMT" as printed by `openssl x509 -startdate`.
int64_t cli_time(const std::string& out, const std::string& key) {
    size_t pos = out.find(key + "=");
    if (pos == std::string::npos) return -1;
    struct tm tm {};
    if (!strptime(out.c_str() + pos + key.size() + 1, "%b %d %H:%M:%S %Y GMT", &tm)) return -1;
    return static_cast<int64_t>(timegm(&tm));
}

const char kFipsOnlyConf[] =
    "openssl_conf = conf_init\n"
    "[conf_init]\n"
    "alg_section = evp\n"
    "[evp]\n"
    "default_properties = fips=yes\n";

// In a fresh child (see the death tests below): point OPENSSL_CONF at a configuration that allows
// only FIPS algorithms, which this OpenSSL does not have, and report whether a key can be made.
[[noreturn]] void keygen_under_fips_only_conf(bool load_config_first) {
    char conf[] = "/tmp/tls_pki_conf.XXXXXX";
    int fd = mkstemp(conf);
    if (fd < 0 || write(fd, kFipsOnlyConf, sizeof kFipsOnlyConf - 1) < 0) _exit(3);
    close(fd);
    setenv("OPENSSL_CONF", conf, 1);
    if (load_config_first) OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, nullptr);
    init();
    auto key = generate_key(KeyType::EcP256);
    unlink(conf);
    if (!key) fprintf(stderr, "%s\n", key.error().c_str());
    _exit(key ? 0 : 1);
}

}  // namespace

TEST(TlsPki, ParseKeyTypeAcceptsEverySpelling) {
    const std::pair<const char*, KeyType> cases[] = {
        {"ec", KeyType::EcP256},        {"ec-p256", KeyType::EcP256},   {"P256", KeyType::EcP256},
        {"rsa", KeyType::Rsa2048},      {"rsa2048", KeyType::Rsa2048},  {"RSA3072", KeyType::Rsa3072},
        {" rsa4096 ", KeyType::Rsa4096},
    };
    for (const auto& [text, type] : cases) {
        auto parsed = parse_key_type(text);
        ASSERT_TRUE(parsed) << text << ": " << parsed.error();
        EXPECT_EQ(*parsed, type) << text;
    }
    EXPECT_STREQ(key_type_name(KeyType::EcP256), "ec-p256");
    EXPECT_STREQ(key_type_name(KeyType::Rsa4096), "rsa4096");
}

TEST(TlsPki, ParseKeyTypeErrorListsTheChoices) {
    for (const char* bad : {"ed25519", "", "rsa1024", "ec-p384"}) {
        auto parsed = parse_key_type(bad);
        ASSERT_FALSE(parsed) << bad;
        EXPECT_NE(parsed.error().find(std::string("\"") + bad + "\""), std::string::npos) << parsed.error();
        for (const char* choice : {"ec-p256", "rsa2048", "rsa3072", "rsa4096"})
            EXPECT_NE(parsed.error().find(choice), std::string::npos) << parsed.error();
    }
}

TEST(TlsPki, GeneratesEcP256Key) {
    auto key = generate_key(KeyType::EcP256);
    ASSERT_TRUE(key) << key.error();
    EXPECT_EQ(EVP_PKEY_get_base_id(key->get()), EVP_PKEY_EC);
    EXPECT_EQ(EVP_PKEY_get_bits(key->get()), 256);
    char group[64] = {};
    size_t len = 0;
    ASSERT_EQ(EVP_PKEY_get_group_name(key->get(), group, sizeof group, &len), 1);
    EXPECT_STREQ(group, "prime256v1");
}

TEST(TlsPki, GeneratesRsaKeysOfEachSize) {
    const std::pair<KeyType, int> cases[] = {
        {KeyType::Rsa2048, 2048}, {KeyType::Rsa3072, 3072}, {KeyType::Rsa4096, 4096}};
    for (const auto& [type, bits] : cases) {
        auto key = generate_key(type);
        ASSERT_TRUE(key) << key.error();
        EXPECT_EQ(EVP_PKEY_get_base_id(key->get()), EVP_PKEY_RSA);
        EXPECT_EQ(EVP_PKEY_get_bits(key->get()), bits);
    }
    auto a = generate_key(KeyType::EcP256);
    auto b = generate_key(KeyType::EcP256);
    ASSERT_TRUE(a && b);
    EXPECT_NE(EVP_PKEY_eq(a->get(), b->get()), 1) << "two generated keys are equal";
}

TEST(TlsPki, PrivateKeyPemRoundTrip) {
    for (KeyType type : {KeyType::EcP256, KeyType::Rsa2048}) {
        auto key = generate_key(type);
        ASSERT_TRUE(key) << key.error();
        auto pem = private_key_pem(key->get());
        ASSERT_TRUE(pem) << pem.error();
        EXPECT_TRUE(iot::starts_with(*pem, "-----BEGIN PRIVATE KEY-----\n")) << "not PKCS#8";
        EXPECT_TRUE(iot::ends_with(*pem, "-----END PRIVATE KEY-----\n"));

        auto back = read_private_key(*pem);
        ASSERT_TRUE(back) << back.error();
        EXPECT_EQ(EVP_PKEY_eq(key->get(), back->get()), 1);
        EXPECT_EQ(pem_of(back->get()), *pem);

        std::string pub = public_key_pem(key->get());
        EXPECT_TRUE(iot::starts_with(pub, "-----BEGIN PUBLIC KEY-----\n")) << pub;
        EXPECT_EQ(pub, public_key_pem(back->get()));
        EXPECT_EQ(pub.find("PRIVATE"), std::string::npos);
    }
}

TEST(TlsPki, ReadsKeysMadeByTheOpensslTool) {
    TempDir dir;
    ASSERT_FALSE(dir.path().empty());
    // The traditional "EC PRIVATE KEY" form that older provisioning scripts produce.
    std::string path = dir.file("ec.key");
    CliResult gen = run("openssl ecparam -genkey -name prime256v1 -noout -out " + path);
    ASSERT_EQ(gen.code, 0) << gen.out;
    ASSERT_TRUE(iot::starts_with(slurp(path), "-----BEGIN EC PRIVATE KEY-----"));
    auto key = load_private_key(path);
    ASSERT_TRUE(key) << key.error();
    EXPECT_EQ(EVP_PKEY_get_base_id(key->get()), EVP_PKEY_EC);

    CliResult pub = run("openssl pkey -pubout -in " + path);
    ASSERT_EQ(pub.code, 0) << pub.out;
    EXPECT_EQ(public_key_pem(key->get()), pub.out);
}

TEST(TlsPki, EncryptedKeyIsRefusedWithoutPrompting) {
    TempDir dir;
    std::string plain = dir.file("plain.key"), encrypted = dir.file("enc.key");
    Key key = ec_key();
    ASSERT_TRUE(write_private_key(plain, key.get()));
    // stdin from /dev/null: had we let OpenSSL prompt, it would fail differently (or hang on a tty).
    CliResult enc = run("openssl pkcs8 -topk8 -v2 aes-256-cbc -passout pass:secret -in " + plain + " -out " +
                        encrypted + " </dev/null");
    ASSERT_EQ(enc.code, 0) << enc.out;
    auto loaded = load_private_key(encrypted);
    ASSERT_FALSE(loaded);
    EXPECT_NE(loaded.error().find("encrypted with a passphrase"), std::string::npos) << loaded.error();
    EXPECT_NE(loaded.error().find(encrypted), std::string::npos) << loaded.error();
    expect_no_key_material(loaded.error(), slurp(encrypted));
}

namespace {
std::string g_temp_dir;
mode_t g_temp_mode = 0;
int g_temp_files_seen = 0;

// At WriteStep::TempWritten the key bytes are in the temporary file but not yet renamed: its mode
// then is what anyone could have seen while it was being written.
void record_temp_mode(iot::fs::WriteStep step) {
    if (step != iot::fs::WriteStep::TempWritten) return;
    DIR* d = opendir(g_temp_dir.c_str());
    if (!d) return;
    while (dirent* e = readdir(d)) {
        std::string name = e->d_name;
        if (!iot::starts_with(name, ".device.key.tmp")) continue;
        struct stat st;
        if (stat((g_temp_dir + "/" + name).c_str(), &st) == 0) {
            g_temp_mode = st.st_mode & 0777;
            ++g_temp_files_seen;
        }
    }
    closedir(d);
}
}  // namespace

TEST(TlsPki, PrivateKeyFileIsPrivateFromTheFirstByte) {
    TempDir dir;
    std::string path = dir.file("device.key");
    write_text(path, "an older, world-readable file\n");  // replaced, not reused with its mode
    Key key = ec_key();

    g_temp_dir = dir.path();
    g_temp_files_seen = 0;
    iot::fs::set_write_step_hook(record_temp_mode);
    mode_t old_umask = umask(0);  // nothing to hide behind: the mode must come from the code
    iot::Status st = write_private_key(path, key.get());
    umask(old_umask);
    iot::fs::set_write_step_hook(nullptr);
    ASSERT_TRUE(st) << st.error();

    EXPECT_EQ(g_temp_files_seen, 1);
    EXPECT_EQ(g_temp_mode, 0600u);
    struct stat sb;
    ASSERT_EQ(stat(path.c_str(), &sb), 0);
    EXPECT_EQ(sb.st_mode & 0777, 0600u);

    auto back = load_private_key(path);
    ASSERT_TRUE(back) << back.error();
    EXPECT_EQ(EVP_PKEY_eq(key.get(), back->get()), 1);
    EXPECT_TRUE(iot::fs::check_mode(path, 0600));
}

TEST(TlsPki, LoadErrorsNameTheFile) {
    TempDir dir;
    std::string missing = dir.file("missing.pem"), junk = dir.file("junk.pem"), cert_path = dir.file("ca.pem");
    write_text(junk, "this is not PEM\n");
    Ca ca = make_test_ca();
    write_text(cert_path, certificate_pem(ca.cert.get()));

    auto k1 = load_private_key(missing);
    ASSERT_FALSE(k1);
    EXPECT_NE(k1.error().find(missing), std::string::npos) << k1.error();
    EXPECT_NE(k1.error().find("No such file"), std::string::npos) << k1.error();

    auto k2 = load_private_key(junk);
    ASSERT_FALSE(k2);
    EXPECT_NE(k2.error().find(junk), std::string::npos) << k2.error();
    EXPECT_NE(k2.error().find("private key"), std::string::npos) << k2.error();

    auto k3 = load_private_key(cert_path);  // a certificate where a key belongs
    ASSERT_FALSE(k3);
    EXPECT_NE(k3.error().find(cert_path), std::string::npos) << k3.error();

    auto c1 = load_certificate(missing);
    ASSERT_FALSE(c1);
    EXPECT_NE(c1.error().find(missing), std::string::npos) << c1.error();

    auto c2 = load_certificate(junk);
    ASSERT_FALSE(c2);
    EXPECT_NE(c2.error().find(junk), std::string::npos) << c2.error();
    EXPECT_NE(c2.error().find("certificate"), std::string::npos) << c2.error();

    auto i1 = inspect_file(junk);
    ASSERT_FALSE(i1);
    EXPECT_NE(i1.error().find(junk), std::string::npos) << i1.error();

    for (const std::string& e : {k1.error(), k2.error(), k3.error(), c1.error(), c2.error(), i1.error()})
        EXPECT_EQ(e.find('\n'), std::string::npos) << "not one line: " << e;
}

TEST(TlsPki, CsrIsAcceptedByOpensslWithTheRightSubject) {
    TempDir dir;
    for (KeyType type : {KeyType::EcP256, KeyType::Rsa2048}) {
        auto key = generate_key(type);
        ASSERT_TRUE(key) << key.error();
        CsrSubject subject;
        subject.common_name = "thing-0001";
        subject.organization = "Acme Devices";
        subject.country = "de";
        subject.serial_number = "SN-42";
        auto csr = make_csr(key->get(), subject);
        ASSERT_TRUE(csr) << csr.error();
        EXPECT_TRUE(iot::starts_with(*csr, "-----BEGIN CERTIFICATE REQUEST-----\n"));
        std::string path = dir.file("device.csr");
        write_text(path, *csr);

        CliResult verify = run("openssl req -verify -noout -in " + path);
        EXPECT_EQ(verify.code, 0) << verify.out;
        EXPECT_NE(verify.out.find("verify OK"), std::string::npos) << verify.out;

        CliResult subj = run("openssl req -noout -subject -nameopt RFC2253 -in " + path);
        ASSERT_EQ(subj.code, 0) << subj.out;
        EXPECT_EQ(subj.out, "subject=serialNumber=SN-42,CN=thing-0001,O=Acme Devices,C=DE\n");

        CliResult text = run("openssl req -noout -text -in " + path);
        const char* algorithm = type == KeyType::EcP256 ? "ecdsa-with-SHA256" : "sha256WithRSAEncryption";
        EXPECT_NE(text.out.find(std::string("Signature Algorithm: ") + algorithm), std::string::npos) << text.out;

        CliResult pub = run("openssl req -noout -pubkey -in " + path);
        EXPECT_EQ(pub.out, public_key_pem(key->get()));
    }

    // Only the required field: no empty entries appear.
    Key key = ec_key();
    auto csr = make_csr(key.get(), CsrSubject{"thing-0002", "", "", ""});
    ASSERT_TRUE(csr) << csr.error();
    write_text(dir.file("min.csr"), *csr);
    CliResult subj = run("openssl req -noout -subject -nameopt RFC2253 -in " + dir.file("min.csr"));
    EXPECT_EQ(subj.out, "subject=CN=thing-0002\n");
}

TEST(TlsPki, CsrRefusesBadSubjects) {
    Key key = ec_key();
    auto expect_refused = [&](CsrSubject s, const char* why) {
        auto csr = make_csr(key.get(), s);
        ASSERT_FALSE(csr) << why;
        EXPECT_NE(csr.error().find(why), std::string::npos) << csr.error();
    };
    expect_refused({"", "", "", ""}, "common name is empty");
    expect_refused({std::string(65, 'x'), "", "", ""}, "longer than 64");
    expect_refused({"thing", "", "USA", ""}, "two letters");
    expect_refused({"thing", "", "D1", ""}, "two letters");
    expect_refused({"thing", "", "", "SN_1"}, "serial number");
    expect_refused({"thing", std::string(65, 'o'), "", ""}, "organization");
    // 64 characters of multi-byte UTF-8 are within the limit.
    std::string umlauts;
    for (int i = 0; i < 64; ++i) umlauts += "\xc3\xbc";
    auto csr = make_csr(key.get(), {umlauts, "", "", ""});
    EXPECT_TRUE(csr) << csr.error();
}

TEST(TlsPki, MakeCaIsASelfSignedCa) {
    TempDir dir;
    Key key = ec_key();
    int64_t before = time(nullptr);
    auto ca = make_ca(key.get(), "iotbox test CA", 10);
    int64_t after = time(nullptr);
    ASSERT_TRUE(ca) << ca.error();

    auto info = inspect(ca->get());
    ASSERT_TRUE(info) << info.error();
    EXPECT_TRUE(info->is_ca);
    EXPECT_EQ(info->subject, "CN=iotbox test CA");
    EXPECT_EQ(info->issuer, info->subject);
    EXPECT_EQ(info->common_name, "iotbox test CA");
    EXPECT_GE(info->not_before, before);
    EXPECT_LE(info->not_before, after);
    EXPECT_EQ(info->not_after - info->not_before, 10 * 86400);
    EXPECT_TRUE(key_matches_certificate(key.get(), ca->get()));

    std::string path = dir.file("ca.pem");
    write_text(path, certificate_pem(ca->get()));
    CliResult verify = run("openssl verify -CAfile " + path + " " + path);
    EXPECT_EQ(verify.code, 0) << verify.out;
    CliResult ext = run("openssl x509 -noout -ext basicConstraints,keyUsage,subjectKeyIdentifier -in " + path);
    ASSERT_EQ(ext.code, 0) << ext.out;
    EXPECT_NE(ext.out.find("X509v3 Basic Constraints: critical\n    CA:TRUE"), std::string::npos) << ext.out;
    EXPECT_NE(ext.out.find("X509v3 Key Usage: critical\n    Certificate Sign, CRL Sign"), std::string::npos)
        << ext.out;
    EXPECT_NE(ext.out.find("X509v3 Subject Key Identifier"), std::string::npos) << ext.out;

    auto self = verify_certificate(ca->get(), ca->get());
    EXPECT_TRUE(self) << self.error();

    auto bad = make_ca(key.get(), "CA", 0);
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.error().find("out of range"), std::string::npos) << bad.error();
}

TEST(TlsPki, SignCsrIssuesACertificateOpensslAccepts) {
    TempDir dir;
    Ca ca = make_test_ca();
    Key device = ec_key();
    auto csr = make_csr(device.get(), {"thing-0001", "Acme", "DE", ""});
    ASSERT_TRUE(csr) << csr.error();

    int64_t before = time(nullptr);
    auto cert = sign_csr(*csr, ca.cert.get(), ca.key.get(), SignOptions{});
    int64_t after = time(nullptr);
    ASSERT_TRUE(cert) << cert.error();

    std::string ca_path = dir.file("ca.pem"), cert_path = dir.file("cert.pem");
    write_text(ca_path, certificate_pem(ca.cert.get()));
    write_text(cert_path, certificate_pem(cert->get()));
    CliResult verify = run("openssl verify -CAfile " + ca_path + " -purpose sslclient " + cert_path);
    EXPECT_EQ(verify.code, 0) << verify.out;
    EXPECT_EQ(verify.out, cert_path + ": OK\n");

    auto info = inspect(cert->get());
    ASSERT_TRUE(info) << info.error();
    EXPECT_EQ(info->common_name, "thing-0001");
    EXPECT_EQ(info->subject, "CN=thing-0001,O=Acme,C=DE");
    EXPECT_EQ(info->issuer, "CN=iotbox test CA");
    EXPECT_FALSE(info->is_ca);
    EXPECT_GE(info->not_before, before);
    EXPECT_LE(info->not_before, after);
    EXPECT_EQ(info->not_after - info->not_before, 365 * 86400);

    CliResult names =
        run("openssl x509 -noout -subject -issuer -startdate -enddate -nameopt RFC2253 -in " + cert_path);
    ASSERT_EQ(names.code, 0) << names.out;
    EXPECT_NE(names.out.find("subject=CN=thing-0001,O=Acme,C=DE\n"), std::string::npos) << names.out;
    EXPECT_NE(names.out.find("issuer=CN=iotbox test CA\n"), std::string::npos) << names.out;
    EXPECT_EQ(cli_time(names.out, "notBefore"), info->not_before) << names.out;
    EXPECT_EQ(cli_time(names.out, "notAfter"), info->not_after) << names.out;

    CliResult ext =
        run("openssl x509 -noout -ext basicConstraints,extendedKeyUsage,authorityKeyIdentifier -in " + cert_path);
    EXPECT_NE(ext.out.find("CA:FALSE"), std::string::npos) << ext.out;
    EXPECT_NE(ext.out.find("TLS Web Client Authentication"), std::string::npos) << ext.out;
    EXPECT_EQ(ext.out.find("TLS Web Server Authentication"), std::string::npos) << ext.out;
    EXPECT_NE(ext.out.find("X509v3 Authority Key Identifier"), std::string::npos) << ext.out;
    CliResult text = run("openssl x509 -noout -text -in " + cert_path);
    EXPECT_NE(text.out.find("Signature Algorithm: ecdsa-with-SHA256"), std::string::npos) << text.out;

    EXPECT_TRUE(key_matches_certificate(device.get(), cert->get()));
    auto verified = verify_certificate(cert->get(), ca.cert.get());
    ASSERT_TRUE(verified) << verified.error();
    EXPECT_TRUE(*verified);

    // Two certificates from one CA never share a serial.
    auto second = sign_csr(*csr, ca.cert.get(), ca.key.get(), SignOptions{});
    ASSERT_TRUE(second) << second.error();
    EXPECT_NE(info_of(second->get()).serial_hex, info->serial_hex);
}

TEST(TlsPki, SignCsrWorksWithRsaKeys) {
    TempDir dir;
    auto ca_key = generate_key(KeyType::Rsa2048);
    auto device = generate_key(KeyType::Rsa2048);
    ASSERT_TRUE(ca_key && device);
    auto ca = make_ca(ca_key->get(), "RSA CA", 30);
    ASSERT_TRUE(ca) << ca.error();
    auto csr = make_csr(device->get(), {"rsa-thing", "", "", ""});
    ASSERT_TRUE(csr) << csr.error();
    auto cert = sign_csr(*csr, ca->get(), ca_key->get(), SignOptions{});
    ASSERT_TRUE(cert) << cert.error();
    write_text(dir.file("ca.pem"), certificate_pem(ca->get()));
    write_text(dir.file("cert.pem"), certificate_pem(cert->get()));
    CliResult verify = run("openssl verify -CAfile " + dir.file("ca.pem") + " " + dir.file("cert.pem"));
    EXPECT_EQ(verify.code, 0) << verify.out;
    CliResult text = run("openssl x509 -noout -text -in " + dir.file("cert.pem"));
    EXPECT_NE(text.out.find("Signature Algorithm: sha256WithRSAEncryption"), std::string::npos) << text.out;
    EXPECT_NE(text.out.find("Digital Signature, Key Encipherment"), std::string::npos) << text.out;
}

TEST(TlsPki, SignCsrRefusesATamperedCsr) {
    TempDir dir;
    Ca ca = make_test_ca();
    Key device = ec_key();
    auto csr = make_csr(device.get(), {"thing-0001", "", "", ""});
    ASSERT_TRUE(csr) << csr.error();
    std::string tampered = tamper_pem(*csr, "thing-0001", 'T');  // CN becomes "Thing-0001"
    ASSERT_FALSE(tampered.empty());
    ASSERT_NE(tampered, *csr);

    // The tampering is real: OpenSSL itself refuses the request now, while it still parses.
    write_text(dir.file("bad.csr"), tampered);
    CliResult cli = run("openssl req -verify -noout -in " + dir.file("bad.csr"));
    EXPECT_EQ(cli.out.find("verify OK"), std::string::npos) << cli.out;
    CliResult subj = run("openssl req -noout -subject -in " + dir.file("bad.csr"));
    EXPECT_NE(subj.out.find("Thing-0001"), std::string::npos) << subj.out;

    auto cert = sign_csr(tampered, ca.cert.get(), ca.key.get(), SignOptions{});
    ASSERT_FALSE(cert);
    EXPECT_NE(cert.error().find("signature does not verify"), std::string::npos) << cert.error();

    auto junk = sign_csr("not a CSR", ca.cert.get(), ca.key.get(), SignOptions{});
    ASSERT_FALSE(junk);
    EXPECT_NE(junk.error().find("no readable PEM certificate request"), std::string::npos) << junk.error();
}

TEST(TlsPki, SigningRefusesAWrongIssuer) {
    Ca ca = make_test_ca();
    Key other = ec_key();
    Key device = ec_key();
    auto csr = make_csr(device.get(), {"thing-0001", "", "", ""});
    ASSERT_TRUE(csr) << csr.error();

    auto wrong_key = sign_csr(*csr, ca.cert.get(), other.get(), SignOptions{});
    ASSERT_FALSE(wrong_key);
    EXPECT_NE(wrong_key.error().find("CA key does not belong"), std::string::npos) << wrong_key.error();

    auto leaf = sign_csr(*csr, ca.cert.get(), ca.key.get(), SignOptions{});
    ASSERT_TRUE(leaf) << leaf.error();
    auto from_leaf = sign_public_key(other.get(), "x", leaf->get(), device.get(), SignOptions{});
    ASSERT_FALSE(from_leaf);
    EXPECT_NE(from_leaf.error().find("not a CA certificate"), std::string::npos) << from_leaf.error();

    SignOptions bad_dns;
    bad_dns.dns_names = {"broker.test,IP:10.0.0.1"};
    auto injected = sign_public_key(other.get(), "broker", ca.cert.get(), ca.key.get(), bad_dns);
    ASSERT_FALSE(injected);
    EXPECT_NE(injected.error().find("invalid DNS name"), std::string::npos) << injected.error();
}

TEST(TlsPki, SignPublicKeyMakesServerCertificatesWithDnsNames) {
    TempDir dir;
    Ca ca = make_test_ca();
    Key broker = ec_key();
    SignOptions opts;
    opts.days = 2;
    opts.dns_names = {"localhost", "broker.test"};
    auto cert = sign_public_key(broker.get(), "broker", ca.cert.get(), ca.key.get(), opts);
    ASSERT_TRUE(cert) << cert.error();
    auto info = inspect(cert->get());
    ASSERT_TRUE(info) << info.error();
    EXPECT_EQ(info->subject, "CN=broker");
    EXPECT_EQ(info->not_after - info->not_before, 2 * 86400);

    write_text(dir.file("ca.pem"), certificate_pem(ca.cert.get()));
    write_text(dir.file("broker.pem"), certificate_pem(cert->get()));
    CliResult ext = run("openssl x509 -noout -ext subjectAltName,extendedKeyUsage -in " + dir.file("broker.pem"));
    EXPECT_NE(ext.out.find("DNS:localhost, DNS:broker.test"), std::string::npos) << ext.out;
    EXPECT_NE(ext.out.find("TLS Web Client Authentication, TLS Web Server Authentication"), std::string::npos)
        << ext.out;
    CliResult verify = run("openssl verify -purpose sslserver -verify_hostname broker.test -CAfile " +
                           dir.file("ca.pem") + " " + dir.file("broker.pem"));
    EXPECT_EQ(verify.code, 0) << verify.out;
}

TEST(TlsPki, IntermediateCaSignsLeavesThatVerify) {
    TempDir dir;
    Ca root = make_test_ca("root");
    Key inter_key = ec_key();
    SignOptions ca_opts;
    ca_opts.is_ca = true;
    auto inter = sign_public_key(inter_key.get(), "intermediate", root.cert.get(), root.key.get(), ca_opts);
    ASSERT_TRUE(inter) << inter.error();
    EXPECT_TRUE(info_of(inter->get()).is_ca);

    Key device = ec_key();
    auto leaf = sign_public_key(device.get(), "thing", inter->get(), inter_key.get(), SignOptions{});
    ASSERT_TRUE(leaf) << leaf.error();
    auto verified = verify_certificate(leaf->get(), inter->get());
    EXPECT_TRUE(verified) << verified.error();
    auto wrong = verify_certificate(leaf->get(), root.cert.get());
    EXPECT_FALSE(wrong);

    write_text(dir.file("root.pem"), certificate_pem(root.cert.get()));
    write_text(dir.file("inter.pem"), certificate_pem(inter->get()));
    write_text(dir.file("leaf.pem"), certificate_pem(leaf->get()));
    CliResult verify = run("openssl verify -CAfile " + dir.file("root.pem") + " -untrusted " + dir.file("inter.pem") +
                           " " + dir.file("leaf.pem"));
    EXPECT_EQ(verify.code, 0) << verify.out;
}

TEST(TlsPki, FingerprintAndSerialMatchOpenssl) {
    TempDir dir;
    Ca ca = make_test_ca();
    Key device = ec_key();
    for (int i = 0; i < 3; ++i) {  // random serials: a few, to meet a leading zero nibble or high bit
        auto cert = sign_public_key(device.get(), "thing", ca.cert.get(), ca.key.get(), SignOptions{});
        ASSERT_TRUE(cert) << cert.error();
        std::string path = dir.file("cert.pem");
        write_text(path, certificate_pem(cert->get()));
        auto info = inspect_file(path);
        ASSERT_TRUE(info) << info.error();

        CliResult fp = run("openssl x509 -noout -fingerprint -sha256 -in " + path);
        ASSERT_EQ(fp.code, 0) << fp.out;
        EXPECT_EQ(info->fingerprint_sha256, cli_value(fp.out));
        ASSERT_EQ(info->fingerprint_sha256.size(), 64u);
        EXPECT_EQ(info->fingerprint_sha256.find_first_not_of("0123456789abcdef"), std::string::npos);

        CliResult serial = run("openssl x509 -noout -serial -in " + path);
        ASSERT_EQ(serial.code, 0) << serial.out;
        EXPECT_EQ(info->serial_hex, cli_value(serial.out));
        EXPECT_GE(info->serial_hex.size(), 24u);  // 128 random bits; 2^-32 to be this short by chance
    }
}

TEST(TlsPki, KeyMatchesCertificate) {
    Ca ca = make_test_ca();
    Key device = ec_key();
    Key other_ec = ec_key();
    auto rsa = generate_key(KeyType::Rsa2048);
    ASSERT_TRUE(rsa);
    auto cert = sign_public_key(device.get(), "thing", ca.cert.get(), ca.key.get(), SignOptions{});
    ASSERT_TRUE(cert) << cert.error();
    EXPECT_TRUE(key_matches_certificate(device.get(), cert->get()));
    EXPECT_FALSE(key_matches_certificate(other_ec.get(), cert->get()));
    EXPECT_FALSE(key_matches_certificate(rsa->get(), cert->get()));
    EXPECT_EQ(ERR_peek_error(), 0ul) << "a mismatch left an error on the OpenSSL queue";
    EXPECT_FALSE(key_matches_certificate(ca.key.get(), cert->get()));
    EXPECT_FALSE(key_matches_certificate(nullptr, cert->get()));
    EXPECT_FALSE(key_matches_certificate(device.get(), nullptr));
    // The public half alone is enough to match.
    auto pub_only = read_certificate(certificate_pem(cert->get()));
    ASSERT_TRUE(pub_only);
    EXPECT_TRUE(key_matches_certificate(X509_get0_pubkey(pub_only->get()), cert->get()));
}

TEST(TlsPki, ExpiredAndFutureCertificatesFailVerification) {
    TempDir dir;
    Ca ca = make_test_ca();
    Key device = ec_key();
    SignOptions expired;
    expired.days = 1;
    expired.not_before_offset_s = -2 * 86400;
    auto old = sign_public_key(device.get(), "thing", ca.cert.get(), ca.key.get(), expired);
    ASSERT_TRUE(old) << old.error();
    EXPECT_LT(info_of(old->get()).not_after, static_cast<int64_t>(time(nullptr)));
    auto r = verify_certificate(old->get(), ca.cert.get());
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().find("certificate has expired"), std::string::npos) << r.error();
    EXPECT_NE(r.error().find("CN=thing"), std::string::npos) << r.error();

    // OpenSSL's own verifier agrees that this certificate has expired (and only that is wrong).
    write_text(dir.file("ca.pem"), certificate_pem(ca.cert.get()));
    write_text(dir.file("old.pem"), certificate_pem(old->get()));
    CliResult cli = run("openssl verify -CAfile " + dir.file("ca.pem") + " " + dir.file("old.pem"));
    EXPECT_NE(cli.code, 0);
    EXPECT_NE(cli.out.find("certificate has expired"), std::string::npos) << cli.out;

    SignOptions future;
    future.not_before_offset_s = 86400;
    auto early = sign_public_key(device.get(), "thing", ca.cert.get(), ca.key.get(), future);
    ASSERT_TRUE(early) << early.error();
    auto e = verify_certificate(early->get(), ca.cert.get());
    ASSERT_FALSE(e);
    EXPECT_NE(e.error().find("not yet valid"), std::string::npos) << e.error();

    Ca other = make_test_ca("another CA");
    auto fresh = sign_public_key(device.get(), "thing", ca.cert.get(), ca.key.get(), SignOptions{});
    ASSERT_TRUE(fresh);
    auto foreign = verify_certificate(fresh->get(), other.cert.get());
    ASSERT_FALSE(foreign);
    EXPECT_NE(foreign.error().find("CN=another CA"), std::string::npos) << foreign.error();
}

TEST(TlsPki, CertificatePemAndChainRoundTrip) {
    Ca ca = make_test_ca();
    Key device = ec_key();
    auto leaf = sign_public_key(device.get(), "thing", ca.cert.get(), ca.key.get(), SignOptions{});
    ASSERT_TRUE(leaf);
    std::string leaf_pem = certificate_pem(leaf->get());
    std::string ca_pem = certificate_pem(ca.cert.get());
    EXPECT_TRUE(iot::starts_with(leaf_pem, "-----BEGIN CERTIFICATE-----\n"));

    auto back = read_certificate(leaf_pem);
    ASSERT_TRUE(back) << back.error();
    EXPECT_EQ(X509_cmp(back->get(), leaf->get()), 0);

    auto chain = read_certificate_chain(leaf_pem + ca_pem);
    ASSERT_TRUE(chain) << chain.error();
    ASSERT_EQ(chain->size(), 2u);
    EXPECT_EQ(info_of((*chain)[0].get()).common_name, "thing");
    EXPECT_EQ(info_of((*chain)[1].get()).common_name, "iotbox test CA");
    EXPECT_EQ(ERR_peek_error(), 0ul) << "the normal end of a chain left an error on the queue";

    auto one = read_certificate_chain("leading text\n" + ca_pem + "\ntrailing text\n");
    ASSERT_TRUE(one) << one.error();
    EXPECT_EQ(one->size(), 1u);

    auto empty = read_certificate_chain("");
    ASSERT_FALSE(empty);
    EXPECT_NE(empty.error().find("no readable PEM certificate"), std::string::npos) << empty.error();

    // A damaged second block is an error, not a silently shorter chain.
    std::string damaged = ca_pem;
    damaged[100] = damaged[100] == 'A' ? '!' : 'A';
    damaged[101] = '!';
    auto broken = read_certificate_chain(leaf_pem + damaged);
    ASSERT_FALSE(broken);
    EXPECT_NE(broken.error().find("certificate 2"), std::string::npos) << broken.error();
}

TEST(TlsPki, ErrorsNeverContainPrivateKeyPem) {
    TempDir dir;
    Ca ca = make_test_ca();
    for (KeyType type : {KeyType::EcP256, KeyType::Rsa2048}) {
        auto key = generate_key(type);
        ASSERT_TRUE(key);
        std::string pem = pem_of(key->get());
        std::string key_path = dir.file("device.key");
        ASSERT_TRUE(write_private_key(key_path, key->get()));

        // Damaged in the middle of the body, truncated, and mislabelled keys.
        std::string corrupt = pem;
        size_t mid = pem.size() / 2;
        corrupt.replace(mid, 4, "!!!!");
        std::string truncated = pem.substr(0, pem.size() / 2) + "\n-----END PRIVATE KEY-----\n";
        std::string as_certificate = iot::replace_all(pem, "PRIVATE KEY", "CERTIFICATE");
        // The PKCS#8 version INTEGER (02 01 00) turned into a BIT STRING tag: undecodable DER.
        std::string bitflip = tamper_pem(pem, std::string("\x02\x01\x00", 3), '\x03');
        ASSERT_FALSE(bitflip.empty());
        write_text(dir.file("corrupt.key"), corrupt);

        std::vector<std::string> errors;
        auto add = [&](const auto& result, const char* what) {
            ASSERT_FALSE(result) << what << " was accepted";
            errors.push_back(result.error());
        };
        add(read_private_key(corrupt), "read_private_key(corrupt)");
        add(read_private_key(truncated), "read_private_key(truncated)");
        add(read_private_key(bitflip), "read_private_key(bitflip)");
        add(load_private_key(dir.file("corrupt.key")), "load_private_key(corrupt file)");
        add(read_certificate(pem), "read_certificate(pem)");
        add(read_certificate(as_certificate), "read_certificate(key labelled CERTIFICATE)");
        add(read_certificate_chain(pem), "read_certificate_chain(pem)");
        add(load_certificate(key_path), "load_certificate(key_path)");
        add(inspect_file(key_path), "inspect_file(key_path)");
        add(sign_csr(pem, ca.cert.get(), ca.key.get(), SignOptions{}), "sign_csr(key)");
        for (const std::string& e : errors) {
            expect_no_key_material(e, pem);
            EXPECT_EQ(e.find('\n'), std::string::npos) << "not one line: " << e;
        }
    }
}

TEST(TlsPki, OpensslErrorsFormatsAndDrainsTheQueue) {
    EXPECT_EQ(openssl_errors(), "no detail from OpenSSL");
    BIO* bio = BIO_new_mem_buf("junk", 4);
    EXPECT_EQ(PEM_read_bio_X509(bio, nullptr, nullptr, nullptr), nullptr);
    BIO_free(bio);
    std::string text = openssl_errors();
    EXPECT_NE(text.find("no start line"), std::string::npos) << text;
    EXPECT_EQ(text.find('\n'), std::string::npos) << text;
    EXPECT_EQ(ERR_peek_error(), 0ul);
    EXPECT_EQ(openssl_errors(), "no detail from OpenSSL");
}

// init() must make OpenSSL ignore openssl.cnf. OpenSSL honours only the first initialisation of a
// process, so each case runs in a freshly executed child ("threadsafe" death-test style).
TEST(TlsPki, InitIgnoresOpensslCnf) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_EXIT(keygen_under_fips_only_conf(false), ::testing::ExitedWithCode(0), "");
    init();  // idempotent
    init();
    EXPECT_TRUE(generate_key(KeyType::EcP256));
}

// The control for the test above: the same configuration does bite when OpenSSL loads it, so the
// test above would catch an init() that loads it.
TEST(TlsPki, OpensslCnfBitesWhenLoaded) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_EXIT(keygen_under_fips_only_conf(true), ::testing::ExitedWithCode(1), "cannot generate");
}
