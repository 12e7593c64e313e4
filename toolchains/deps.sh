#!/bin/sh
# Builds the static archives Debian does not ship (libmosquitto, cJSON) from Debian's own source
# packages, for one target triplet, into build/deps/<triplet>/. The system's apt configuration is
# left alone: a private sources list, lists and cache live under build/deps/apt/.
#
#   toolchains/deps.sh [TRIPLET] [DEPS_DIR]
#   toolchains/deps.sh --source PACKAGE VERSION [DEPS_DIR]   fetch and unpack one source package
#                                                            into DEPS_DIR/src, print its directory
#
# TRIPLET defaults to the host's (gcc -dumpmachine); a cross triplet uses <triplet>-gcc and the
# toolchain file toolchains/<triplet>.cmake. Re-running is cheap: a finished prefix is kept.
# IOT_OPENSSL=trimmed first builds a trimmed OpenSSL into <triplet>/openssl (toolchains/openssl.sh)
# and builds libmosquitto against it; IOT_OPENSSL_ROOT=DIR uses an OpenSSL of yours.
set -eu
# A `make install DESTDIR=...` that builds the deps first must not install them under DESTDIR.
unset DESTDIR

if [ "${1:-}" = --source ]; then
	MODE=source
	SOURCE_PACKAGE=$2
	SOURCE_VERSION=$3
	DEPS=${4:-$(pwd)/build/deps}
else
	MODE=build
	TRIPLET=${1:-$(gcc -dumpmachine)}
	DEPS=${2:-$(pwd)/build/deps}
fi
HERE=$(cd "$(dirname "$0")" && pwd)

# Pinned source versions (bookworm). Changing them is a deliberate act: bump here and in README.
MOSQUITTO_VERSION=2.0.11-1.2+deb12u2
CJSON_VERSION=1.7.15-1+deb12u4
# Size flags for the C libraries; no unwind tables: nothing unwinds through them (iotbox is built
# without exceptions), and they were 6 KB of the binary.
F="-Os -ffunction-sections -fdata-sections -fno-asynchronous-unwind-tables -fno-unwind-tables -Wno-deprecated-declarations"

if [ "$MODE" = build ]; then
	PFX=$DEPS/$TRIPLET
	if [ "${IOT_OPENSSL:-debian}" = trimmed ]; then
		"$HERE/openssl.sh" "$TRIPLET" "$DEPS"
		IOT_OPENSSL_ROOT=$PFX/openssl
	fi
	# Rebuilt when the versions, the flags, this recipe (RECIPE) or the OpenSSL it is built against
	# change.
	RECIPE=2
	STAMP=$PFX/.built-$MOSQUITTO_VERSION-$CJSON_VERSION-$(printf '%s\n' "$F" "${IOT_OPENSSL_ROOT:-}" "$RECIPE" \
		"$(cat "${IOT_OPENSSL_ROOT:-/nonexistent}/BUILD-KEY" 2>/dev/null || true)" | sha256sum | cut -c 1-12)
	[ -f "$STAMP" ] && exit 0
fi

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

# Unpacks PACKAGE=VERSION into $SRC/PACKAGE-UPSTREAM (Debian's patches applied) and prints that
# directory. apt checks every file it downloads against the signed index. When the mirror has the
# orig tarball but not the .dsc or .debian.tar (seen for bookworm-security's openssl), the orig
# tarball (upstream's release) is used as it is, and .iotbox-source in the directory says so.
fetch() { # package version
	upstream=${2#*:}
	upstream=${upstream%-*}
	dir=$SRC/$1-$upstream
	if [ ! -d "$dir" ]; then
		[ -f "$APT/lists/.updated" ] || { apt-get $APTOPT -qq update >&2 && touch "$APT/lists/.updated"; }
		if (cd "$SRC" && apt-get $APTOPT -qq source --download-only "$1=$2") >"$SRC/$1.fetch.log" 2>&1; then
			(cd "$SRC" && dpkg-source -x --no-check "$1_${2#*:}.dsc" >/dev/null)
		elif [ "$1" = openssl ] && ls "$SRC/$1_$upstream".orig.tar.* >/dev/null 2>&1; then
			echo "deps: the mirror has no .dsc/.debian.tar for $1 $2; using its orig tarball (upstream $upstream)" >&2
			rm -rf "$dir.part" && mkdir -p "$dir.part"
			for tarball in "$SRC/$1_$upstream".orig.tar.*; do
				case $tarball in *.asc) ;; *) tar -xf "$tarball" -C "$dir.part" --strip-components=1 ;; esac
			done
			echo "openssl $upstream: the orig tarball of Debian's $2 (upstream's release); Debian's patches not applied, its .dsc was not on the mirror" >"$dir.part/.iotbox-source"
			mv "$dir.part" "$dir"
		else
			cat "$SRC/$1.fetch.log" >&2
			exit 1
		fi
	fi
	echo "$dir"
}
if [ "$MODE" = source ]; then
	fetch "$SOURCE_PACKAGE" "$SOURCE_VERSION"
	exit 0
fi
MOSQ_SRC=$(fetch mosquitto "$MOSQUITTO_VERSION")
CJSON_SRC=$(fetch cjson "$CJSON_VERSION")

TC=""
if [ "$TRIPLET" != "$(gcc -dumpmachine)" ]; then
	[ -f "$HERE/$TRIPLET.cmake" ] || { echo "deps.sh: no toolchain file toolchains/$TRIPLET.cmake" >&2; exit 1; }
	TC="-DCMAKE_TOOLCHAIN_FILE=$HERE/$TRIPLET.cmake"
	# The target's packages unpacked rather than installed (toolchains/target-root.sh).
	if [ -n "${IOT_TARGET_ROOT:-}" ]; then TC="$TC -DIOT_TARGET_ROOT=$IOT_TARGET_ROOT"; fi
fi
# A trimmed, self-built OpenSSL (size option) replaces Debian's. Its paths are given outright: a
# cross build's target root (or sysroot) is searched before OPENSSL_ROOT_DIR and holds Debian's.
OSSL=""
if [ -n "${IOT_OPENSSL_ROOT:-}" ]; then
	OSSL="-DOPENSSL_ROOT_DIR=$IOT_OPENSSL_ROOT -DOPENSSL_USE_STATIC_LIBS=ON -DOPENSSL_INCLUDE_DIR=$IOT_OPENSSL_ROOT/include"
	OSSL="$OSSL -DOPENSSL_CRYPTO_LIBRARY=$IOT_OPENSSL_ROOT/lib/libcrypto.a -DOPENSSL_SSL_LIBRARY=$IOT_OPENSSL_ROOT/lib/libssl.a"
fi

B=$DEPS/build-$TRIPLET
rm -rf "$B/mosquitto" "$B/cjson"
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
[ -n "${IOT_OPENSSL_ROOT:-}" ] && echo "built against the OpenSSL in $IOT_OPENSSL_ROOT" >>"$PFX/VERSIONS"
rm -f "$PFX"/.built-*
touch "$STAMP"
echo "deps: built libmosquitto and cJSON for $TRIPLET in $PFX"
