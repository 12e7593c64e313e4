#!/bin/sh
# remove-packages.sh: iotbox job handler. Removes packages with the device's package manager.
#
# Usage:  remove-packages.sh USER PACKAGE...
#   USER     the step's runAsUser (always argv[1], may be empty; iotd has already switched to it)
#   PACKAGE  package names, all removed in one transaction
# Uses the first of apt-get (with --purge: configuration files go too), opkg, apk, dnf, yum
# found on PATH, without prompts.
#
# Exit:   0 removed
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
apt-get) DEBIAN_FRONTEND=noninteractive apt-get remove -y --purge "$@" || rc=$? ;;
opkg) opkg remove "$@" || rc=$? ;;
apk) apk del "$@" || rc=$? ;;
dnf | yum) "$pm" remove -y "$@" || rc=$? ;;
'') fail "no package manager found (looked for apt-get, opkg, apk, dnf, yum)" ;;
esac
[ $rc -eq 0 ] || fail "$pm could not remove $* (exit $rc)"
printf 'removed with %s: %s\n' "$pm" "$*"
