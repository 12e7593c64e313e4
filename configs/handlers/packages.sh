#!/bin/sh
# packages.sh: the code of iotbox's package job handlers, install-packages.sh,
# remove-packages.sh, verify-packages-installed.sh and verify-packages-removed.sh. It is not a
# handler: each of them sets action=install, remove, verify-installed or verify-removed and
# sources this file, which then does what that handler's header describes (arguments, output and
# exit status are documented there). Installed beside them.
#
# Usage:  packages.sh is sourced (". packages.sh" with action set), never run itself; run on its
#         own it only says so.
#
# Exit:   as the handler that sourced it; 2 when run on its own

me=${0##*/}
fail() { printf '%s: %s\n' "$me" "$1" >&2; exit "${2:-1}"; }
nl='
'

case ${action-} in
install | remove | verify-installed | verify-removed) ;;
*) fail "not a handler: the *-packages.sh handlers source it" 2 ;;
esac

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

case $action in
install | remove)
    # Change the packages with the first package manager found.
    pm=
    for m in apt-get opkg apk dnf yum; do
        if command -v "$m" >/dev/null 2>&1; then pm=$m && break; fi
    done
    [ -n "$pm" ] || fail "no package manager found (looked for apt-get, opkg, apk, dnf, yum)"
    rc=0
    case $action.$pm in
    install.apt-get) DEBIAN_FRONTEND=noninteractive apt-get install -y \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" || rc=$? ;;
    remove.apt-get) DEBIAN_FRONTEND=noninteractive apt-get remove -y --purge "$@" || rc=$? ;;
    install.opkg) opkg install "$@" || rc=$? ;;
    remove.opkg) opkg remove "$@" || rc=$? ;;
    install.apk) apk add "$@" || rc=$? ;;
    remove.apk) apk del "$@" || rc=$? ;;
    install.dnf | install.yum | remove.dnf | remove.yum) "$pm" "$action" -y "$@" || rc=$? ;;
    esac
    [ $rc -eq 0 ] || fail "$pm could not $action $* (exit $rc)"
    if [ "$action" = install ]; then did=installed; else did=removed; fi
    printf '%s with %s: %s\n' "$did" "$pm" "$*" ;;
*)
    # Ask the first package database found about every package; name all the wrong ones.
    db=
    for m in dpkg-query opkg apk rpm; do
        if command -v "$m" >/dev/null 2>&1; then db=$m && break; fi
    done
    [ -n "$db" ] || fail "no package database tool found (looked for dpkg-query, opkg, apk, rpm)"
    wrong=
    for p; do
        if installed "$p"; then
            [ "$action" = verify-installed ] || wrong="$wrong $p"
        else
            [ "$action" = verify-removed ] || wrong="$wrong $p"
        fi
    done
    if [ "$action" = verify-installed ]; then
        [ -z "$wrong" ] || fail "not installed:$wrong"
        printf 'installed: %s\n' "$*"
    else
        [ -z "$wrong" ] || fail "still installed:$wrong"
        printf 'not installed: %s\n' "$*"
    fi ;;
esac
