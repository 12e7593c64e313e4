#!/bin/sh
# Builds the static archives Debian does not ship (libmosquitto, cJSON) from Debian's own source
# packages, for one target triplet, into build/deps/<triplet>/. The system's apt configuration is
# left alone: a private sources list, lists and cache live under build/deps/apt/.
#
#   toolchains/deps.sh [TRIPLET] [DEPS_DIR]
#
# TRIPLET defaults to the host's (gcc -dumpmachine); a cross triplet uses <triplet>-gcc and the
# toolchain file toolchains/<triplet>.cmake. Re-running is cheap: a finished prefix is kept.
set -eu
# A `make install DESTDIR=...` that builds the deps first must not install them under DESTDIR.
unset DESTDIR

TRIPLET=${1:-$(gcc -dumpmachine)}
DEPS=${2:-$(pwd)/build/deps}
HERE=$(cd "$(dirname "$0")" && pwd)

# Pinned source versions (bookworm). Changing them is a deliberate act: bump here and in README.
MOSQUITTO_VERSION=2.0.11-1.2+deb12u2
CJSON_VERSION=1.7.15-1+deb12u4

PFX=$DEPS/$TRIPLET
STAMP=$PFX/.built-$MOSQUITTO_VERSION-$CJSON_VERSION
[ -f "$STAMP" ] && exit 0

APT=$DEPS/apt
SRC=$DEPS/src
mkdir -p "$APT/sources.list.d" "$APT/lists/partial" "$APT/cache/archives/partial" "$SRC"

# A deb-src list derived from the machine's own deb list, so no mirror host is written down here.
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
	sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$APT/sources.list.d/debian-src.sources"
elif [ -f /etc/apt/sources.list ]; then
	grep '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' >"$APT/sources.list.d/debian-src.list"
else
	echo "deps.sh: no Debian apt sources found (/etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list)" >&2
	exit 1
fi
APTOPT="-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=$APT/sources.list.d \
 -o Dir::State::Lists=$APT/lists -o Dir::Cache=$APT/cache -o Debug::NoLocking=1 -o APT::Sandbox::User=root"

fetch() { # package version
	if ! ls "$SRC/$1"_*.dsc >/dev/null 2>&1; then
		[ -f "$APT/lists/.updated" ] || { apt-get $APTOPT -qq update && touch "$APT/lists/.updated"; }
		(cd "$SRC" && apt-get $APTOPT -qq source --download-only "$1=$2")
	fi
	dir=$(ls -d "$SRC/$1"-*/ 2>/dev/null | head -n 1 || true)
	if [ -z "$dir" ]; then
		(cd "$SRC" && dpkg-source -x --no-check "$(ls "$SRC/$1"_*.dsc | head -n 1)" >/dev/null)
	fi
}
fetch mosquitto "$MOSQUITTO_VERSION"
fetch cjson "$CJSON_VERSION"
MOSQ_SRC=$(ls -d "$SRC"/mosquitto-*/ | head -n 1)
CJSON_SRC=$(ls -d "$SRC"/cjson-*/ | head -n 1)

TC=""
if [ "$TRIPLET" != "$(gcc -dumpmachine)" ]; then
	[ -f "$HERE/$TRIPLET.cmake" ] || { echo "deps.sh: no toolchain file toolchains/$TRIPLET.cmake" >&2; exit 1; }
	TC="-DCMAKE_TOOLCHAIN_FILE=$HERE/$TRIPLET.cmake"
	# The target's packages unpacked rather than installed (toolchains/target-root.sh).
	if [ -n "${IOT_TARGET_ROOT:-}" ]; then TC="$TC -DIOT_TARGET_ROOT=$IOT_TARGET_ROOT"; fi
fi
# OPENSSL_ROOT_DIR lets a trimmed, self-built OpenSSL (size option) replace Debian's.
OSSL=""
[ -n "${IOT_OPENSSL_ROOT:-}" ] && OSSL="-DOPENSSL_ROOT_DIR=$IOT_OPENSSL_ROOT -DOPENSSL_USE_STATIC_LIBS=ON"

F="-Os -ffunction-sections -fdata-sections -Wno-deprecated-declarations"
B=$DEPS/build-$TRIPLET
cmake -S "$MOSQ_SRC" -B "$B/mosquitto" $TC $OSSL -DCMAKE_BUILD_TYPE=MinSizeRel \
	-DCMAKE_INSTALL_PREFIX="$PFX" -DCMAKE_C_FLAGS="$F" \
	-DWITH_STATIC_LIBRARIES=ON -DWITH_PIC=OFF -DWITH_TLS=ON -DWITH_TLS_PSK=OFF -DWITH_SOCKS=OFF \
	-DWITH_SRV=OFF -DWITH_THREADING=OFF -DWITH_BROKER=OFF -DWITH_APPS=OFF -DWITH_CLIENTS=OFF \
	-DWITH_PLUGINS=OFF -DWITH_CJSON=OFF -DWITH_LIB_CPP=OFF -DDOCUMENTATION=OFF >"$B-mosquitto.log" 2>&1 ||
	{ cat "$B-mosquitto.log" >&2; exit 1; }
cmake --build "$B/mosquitto" -j2 >>"$B-mosquitto.log" 2>&1 && cmake --install "$B/mosquitto" >>"$B-mosquitto.log" 2>&1 ||
	{ tail -n 40 "$B-mosquitto.log" >&2; exit 1; }
cmake -S "$CJSON_SRC" -B "$B/cjson" $TC -DCMAKE_BUILD_TYPE=MinSizeRel \
	-DCMAKE_INSTALL_PREFIX="$PFX" -DCMAKE_C_FLAGS="$F" -DBUILD_SHARED_LIBS=OFF \
	-DENABLE_CJSON_TEST=OFF -DENABLE_CJSON_UTILS=OFF -DENABLE_TARGET_EXPORT=OFF \
	-DENABLE_CUSTOM_COMPILER_FLAGS=OFF >"$B-cjson.log" 2>&1 || { cat "$B-cjson.log" >&2; exit 1; }
cmake --build "$B/cjson" -j2 >>"$B-cjson.log" 2>&1 && cmake --install "$B/cjson" >>"$B-cjson.log" 2>&1 ||
	{ tail -n 40 "$B-cjson.log" >&2; exit 1; }

printf 'mosquitto %s\ncjson %s\n' "$MOSQUITTO_VERSION" "$CJSON_VERSION" >"$PFX/VERSIONS"
touch "$STAMP"
echo "deps: built libmosquitto and cJSON for $TRIPLET in $PFX"
