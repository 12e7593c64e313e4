#!/bin/sh
# Builds a trimmed, static OpenSSL from Debian's source package for one target triplet, with only
# what iotbox uses, into DEPS_DIR/TRIPLET/openssl/ (include/, lib/libssl.a, lib/libcrypto.a).
# `make OPENSSL=trimmed` and `make -f Makefile.cross ARCH=... OPENSSL=trimmed` run it through
# toolchains/deps.sh (IOT_OPENSSL=trimmed), which then builds libmosquitto against it.
#
#   toolchains/openssl.sh [TRIPLET] [DEPS_DIR]
#
# The source comes through deps.sh's private apt setup (/etc/apt untouched). Re-running is cheap:
# a prefix built from the same version, target, options and compiler is kept.
#
# What is kept: TLS 1.2 and 1.3, ECDHE (X25519, P-256, P-384, P-521), RSA, RSA-PSS and ECDSA
# signatures, AES-GCM and AES-CBC, ChaCha20-Poly1305, SHA-1 (the WebSocket handshake) and SHA-2,
# HMAC, HKDF and the TLS PRF, X.509 with CRLs, OCSP (libmosquitto calls it), PEM, DER and PKCS#8
# keys (PBKDF2 and AES, so an encrypted key is recognised and refused without a prompt), X509_REQ
# (CSRs), RSA and EC key generation, the error strings (iotbox's messages quote them), the DRBG
# seeded by getrandom(). OpenSSL 3.0 has no switch for some of what stays unused: SHA-3, MD5,
# X448 and Ed448, AES-CCM/XTS/wrap, the KDFs of other protocols, the server half of libssl.
# What goes: engines, loadable modules and dlopen, the legacy provider, config autoload (iotbox
# never reads openssl.cnf), the deprecated APIs, SSL 3, TLS 1.0 and 1.1, DTLS, SRP, PSK, CMS,
# CMP, TS, CT, DH, DSA, binary curves, SM2/3/4, GOST, the old ciphers and digests (DES, RC2, RC4,
# IDEA, SEED, Blowfish, CAST, Camellia, ARIA, MD4, MDC2, RIPEMD, Whirlpool, BLAKE2), scrypt, CMAC,
# SipHash, OCB, SIV, async, the secure heap. test_tls_algorithms.py checks that every suite and
# group AWS IoT offers still connects.
#
# Assembler: off by default (no-asm): OpenSSL's portable C code instead, 411 KB less on x86_64
# (3,850,216 bytes instead of 4,260,872; the P-256 table alone is 150 KB). Measured on x86_64
# against the assembler: AES-128-GCM 150 MB/s instead of 5 GB/s, ChaCha20-Poly1305 370 MB/s instead
# of 4.6 GB/s, an ECDHE on P-256 1.8 ms instead of 0.1 ms, an ECDSA P-256 signature 0.7 ms and an
# RSA-2048 one 2.2 ms instead of 0.02 and 0.25 ms: far above what a device's MQTT connection or a
# tunnel (AWS: 800 KB/s per account) needs. AES is then OpenSSL's table-based C code, as in its
# portable builds and its ARMv4 and MIPS assembler, not constant-time as AES-NI is; OpenSSL's
# constant-time C AES (OPENSSL_AES_CONST_TIME) ran at 5 to 10 MB/s, too slow for a tunnel on a
# small CPU. IOT_OPENSSL_ASM=1 keeps the assembler (AES-NI, ARMv8 crypto extensions, NEON).
#
# OPENSSLDIR is /etc/ssl: with no --root-ca, the system trust store is /etc/ssl/certs (hashed) or
# /etc/ssl/cert.pem, where Debian, Alpine, Buildroot and Yocto put it; SSL_CERT_FILE and
# SSL_CERT_DIR override it as usual.
set -eu
unset DESTDIR

TRIPLET=${1:-$(gcc -dumpmachine)}
DEPS=${2:-$(pwd)/build-trim/deps}
HERE=$(cd "$(dirname "$0")" && pwd)
JOBS=${JOBS:-2}

# Pinned: the version of bookworm's libssl-dev (3.0.22-1~deb12u2 from bookworm-security). Where the
# mirror lacks its .dsc, deps.sh falls back to the package's orig tarball (see deps.sh --source).
OPENSSL_VERSION=${IOT_OPENSSL_VERSION:-3.0.22-1~deb12u2}

OPTIONS="no-shared no-module no-dso no-engine no-legacy no-autoload-config no-tests no-deprecated
 no-ssl3 no-tls1 no-tls1_1 no-dtls no-dgram no-sctp no-srtp no-srp no-psk no-nextprotoneg no-ssl-trace
 no-comp no-async no-multiblock no-secure-memory no-filenames
 no-cms no-cmp no-ts no-ct no-rfc3779
 no-dh no-dsa no-ec2m no-sm2 no-sm3 no-sm4 no-gost
 no-des no-rc2 no-rc4 no-rc5 no-idea no-seed no-bf no-cast no-camellia no-aria
 no-md4 no-mdc2 no-rmd160 no-whirlpool no-blake2 no-scrypt no-cmac no-siphash no-ocb no-siv"
# Size flags, as for the other dependencies; no unwind tables: C code that nothing unwinds through
# (iotbox is built without exceptions); OPENSSL_SMALL_FOOTPRINT: OpenSSL's own switch for smaller,
# slower loops (SHA-2, GCM, CTR, Curve25519), 36 KB.
CFLAGS="-Os -ffunction-sections -fdata-sections -fno-asynchronous-unwind-tables -fno-unwind-tables -DOPENSSL_SMALL_FOOTPRINT"
if [ "${IOT_OPENSSL_ASM:-0}" = 1 ]; then
	ASM=asm
else
	OPTIONS="$OPTIONS no-asm"
	ASM=no-asm
fi

CROSS=""
CC=gcc
if [ "$TRIPLET" != "$(gcc -dumpmachine)" ]; then
	CROSS="--cross-compile-prefix=$TRIPLET-"
	CC=$TRIPLET-gcc
fi
command -v "$CC" >/dev/null || { echo "openssl.sh: no compiler $CC" >&2; exit 1; }
case $TRIPLET in
x86_64-*) TARGET=linux-x86_64 ;;
i?86-*) TARGET=linux-x86 ;;
aarch64-*) TARGET=linux-aarch64 ;;
arm*-*) TARGET=linux-armv4 ;;
mips64*) TARGET=linux64-mips64 ;;
mips*) TARGET=linux-mips32 ;;
powerpc64le-*) TARGET=linux-ppc64le ;;
riscv64-*) TARGET=linux64-riscv64 ;;
*) if echo | "$CC" -dM -E - | grep -q __LP64__; then TARGET=linux-generic64; else TARGET=linux-generic32; fi ;;
esac

PFX=$DEPS/$TRIPLET/openssl
SRC_DIR=$("$HERE/deps.sh" --source openssl "$OPENSSL_VERSION" "$DEPS")
source_note=$(cat "$SRC_DIR/.iotbox-source" 2>/dev/null || echo "openssl $OPENSSL_VERSION (Debian source package)")
# Rebuilt when any input changes, the source too (Debian's package once the mirror has its .dsc);
# RECIPE is bumped when this script builds differently from the same inputs.
RECIPE=2
KEY=$(printf '%s\n' "$RECIPE" "$source_note" "$TARGET" "$OPTIONS" "$CFLAGS" "$("$CC" --version | head -n 1)" |
	sha256sum | cut -c 1-16)
[ -f "$PFX/.built-$KEY" ] && exit 0

B=$DEPS/build-$TRIPLET/openssl
LOG=$DEPS/build-$TRIPLET-openssl.log
rm -rf "$B" "$PFX"
mkdir -p "$B"
echo "openssl: building a trimmed OpenSSL ($OPENSSL_VERSION, $TARGET, $ASM) for $TRIPLET (a few minutes)"
start=$(date +%s)
# --prefix=/usr: the prefix is compiled in (ENGINESDIR and MODULESDIR, unused here, in
# OpenSSL_version's text), so it must not be this build directory; installed through DESTDIR.
# shellcheck disable=SC2086 # OPTIONS and CFLAGS are word lists
(cd "$B" && "$SRC_DIR/Configure" "$TARGET" $CROSS $OPTIONS --prefix=/usr --libdir=lib \
	--openssldir=/etc/ssl $CFLAGS) >"$LOG" 2>&1 || { tail -n 40 "$LOG" >&2; exit 1; }
(cd "$B" && make -j"$JOBS" build_libs && make install_dev DESTDIR="$B/stage") >>"$LOG" 2>&1 ||
	{ tail -n 40 "$LOG" >&2; exit 1; }
mkdir -p "$PFX"
mv "$B/stage/usr/include" "$B/stage/usr/lib" "$PFX/"
sed -i "s|^prefix=.*|prefix=$PFX|" "$PFX"/lib/pkgconfig/*.pc
printf '%s\nConfigure %s %s\nCFLAGS %s\n' "$source_note" "$TARGET" "$(echo $OPTIONS)" "$CFLAGS" >"$PFX/VERSIONS"
echo "$KEY" >"$PFX/BUILD-KEY"
touch "$PFX/.built-$KEY"
echo "openssl: built in $(($(date +%s) - start)) s: $(du -k "$PFX/lib/libcrypto.a" | cut -f 1) KB libcrypto.a, $PFX"
