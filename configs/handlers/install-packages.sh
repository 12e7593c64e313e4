#!/bin/sh
# install-packages.sh: iotbox job handler. Installs packages with the device's package manager.
#
# Usage:  install-packages.sh USER PACKAGE...
#   USER     the step's runAsUser (always argv[1], may be empty; iotd has already switched to it)
#   PACKAGE  package names, all installed in one transaction
# Uses the first of apt-get, opkg, apk, dnf, yum found on PATH, without prompts (apt-get keeps
# changed configuration files). Package lists are not refreshed: add an "apt-get update" or
# "opkg update" step before this one if the device may not have current lists.
#
# Exit:   0 installed
#         1 the package manager failed, or none was found
#         2 usage error

me=${0##*/}
fail() { printf '%s: %s\n' "$me" "$1" >&2; exit "${2:-1}"; }

[ $# -ge 2 ] || fail "usage: $me USER PACKAGE..." 2
shift
for p; do
    case $p in '' | -*) fail "not a package name: '$p'" 2 ;; esac
done

pm=
for m in apt-get opkg apk dnf yum; do
    if command -v "$m" >/dev/null 2>&1; then pm=$m && break; fi
done
rc=0
case $pm in
apt-get) DEBIAN_FRONTEND=noninteractive apt-get install -y \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" || rc=$? ;;
opkg) opkg install "$@" || rc=$? ;;
apk) apk add "$@" || rc=$? ;;
dnf | yum) "$pm" install -y "$@" || rc=$? ;;
'') fail "no package manager found (looked for apt-get, opkg, apk, dnf, yum)" ;;
esac
[ $rc -eq 0 ] || fail "$pm could not install $* (exit $rc)"
printf 'installed with %s: %s\n' "$pm" "$*"
