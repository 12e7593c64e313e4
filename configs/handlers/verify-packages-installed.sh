#!/bin/sh
# verify-packages-installed.sh: iotbox job handler. Checks that packages are installed.
#
# Usage:  verify-packages-installed.sh USER PACKAGE...
#   USER     the step's runAsUser (always argv[1], may be empty; iotd has already switched to it)
#   PACKAGE  package names to check
# Asks the first of dpkg-query, opkg, apk, rpm found on PATH. Every package is checked, and all
# the missing ones are named.
#
# Exit:   0 all installed
#         1 some are not installed (named on stderr), or no package database tool was found
#         2 usage error

me=${0##*/}
fail() { printf '%s: %s\n' "$me" "$1" >&2; exit "${2:-1}"; }
nl='
'

# installed PACKAGE: true if the package database says PACKAGE is installed. dpkg-query prints
# one status per architecture; "installed" must be a whole word ("half-installed" is not).
# shellcheck disable=SC2016
installed() {
    case $db in
    dpkg-query) s=$(dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null) &&
        case "$nl$s$nl" in *" installed$nl"*) ;; *) false ;; esac ;;
    opkg) opkg status "$1" 2>/dev/null | grep -q '^Status: .* installed$' ;;
    apk) apk info -e "$1" >/dev/null 2>&1 ;;
    rpm) rpm -q "$1" >/dev/null 2>&1 ;;
    esac
}

[ $# -ge 2 ] || fail "usage: $me USER PACKAGE..." 2
shift
for p; do
    case $p in '' | -*) fail "not a package name: '$p'" 2 ;; esac
done
db=
for m in dpkg-query opkg apk rpm; do
    if command -v "$m" >/dev/null 2>&1; then db=$m && break; fi
done
[ -n "$db" ] || fail "no package database tool found (looked for dpkg-query, opkg, apk, rpm)"

missing=
for p; do
    installed "$p" || missing="$missing $p"
done
[ -z "$missing" ] || fail "not installed:$missing"
printf 'installed: %s\n' "$*"
