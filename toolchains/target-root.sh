#!/bin/sh
# Unpacks Debian's packages for another architecture into a directory, without installing them:
# no `dpkg --add-architecture`, nothing in the system's dpkg database, /etc/apt left alone (a
# private package list lives under ROOT/.apt). The toolchain file reads the result through
# IOT_TARGET_ROOT (headers, static archives, pkg-config files, CMake package files).
#
#   toolchains/target-root.sh DEBARCH ROOT PACKAGE...
#
# Used where multiarch cannot co-install the target's -dev packages with the host's. Multi-Arch:
# same packages must have the same version on every architecture, and bookworm-security carries
# only amd64 arm64 armhf i386 ppc64el: for mipsel, libssl3 stays at the point-release version
# (3.0.20) while the host has the security one (3.0.22), so apt refuses libssl-dev:mipsel.
# Re-running is cheap: a finished ROOT is kept until the package list changes.
set -eu

DEBARCH=$1
ROOT=$2
shift 2
STAMP=$ROOT/.unpacked-$(echo "$*" | tr ' :' '+_')
[ -f "$STAMP" ] && exit 0

APT=$ROOT/.apt
rm -rf "$APT/debs"
mkdir -p "$APT/sources.list.d" "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/debs"
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
	cp /etc/apt/sources.list.d/debian.sources "$APT/sources.list.d/"
elif [ -f /etc/apt/sources.list ]; then
	grep '^deb ' /etc/apt/sources.list >"$APT/sources.list.d/debian.list"
else
	echo "target-root.sh: no Debian apt sources found (/etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list)" >&2
	exit 1
fi
: >"$APT/status"
APTOPT="-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=$APT/sources.list.d \
 -o Dir::State::Lists=$APT/lists -o Dir::Cache=$APT/cache -o Dir::State::status=$APT/status \
 -o APT::Architecture=$DEBARCH -o APT::Architectures=$DEBARCH -o Debug::NoLocking=1 -o APT::Sandbox::User=root"
apt-get $APTOPT -qq update
(cd "$APT/debs" && apt-get $APTOPT -qq download "$@")
: >"$ROOT/VERSIONS"
for deb in "$APT/debs"/*.deb; do
	dpkg-deb -x "$deb" "$ROOT"
	dpkg-deb -W --showformat='${Package} ${Version} ${Architecture}\n' "$deb" >>"$ROOT/VERSIONS"
done
# The -dev packages' absolute symlinks (libfoo.so -> /usr/lib/...) would point at the host.
find "$ROOT/usr" -type l -lname '/*' | while read -r link; do
	ln -sfn "$ROOT$(readlink "$link")" "$link"
done
touch "$STAMP"
echo "target-root: unpacked $(wc -l <"$ROOT/VERSIONS") $DEBARCH packages into $ROOT"
