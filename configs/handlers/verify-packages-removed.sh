#!/bin/sh
# verify-packages-removed.sh: iotbox job handler. Checks that packages are not installed.
#
# Usage:  verify-packages-removed.sh USER PACKAGE...
#   USER     the step's runAsUser (always argv[1], may be empty; iotd has already switched to it)
#   PACKAGE  package names to check
# Asks the first of dpkg-query, opkg, apk, rpm found on PATH. Every package is checked, and all
# the ones still installed are named.
#
# Exit:   0 none installed
#         1 some are still installed (named on stderr), or no package database tool was found
#         2 usage error
#
# The code is in packages.sh (shared with install-packages.sh, remove-packages.sh and
# verify-packages-installed.sh), which must be in the same directory as this file; make install
# puts it there. This file sets the action and sources packages.sh: sourced, not run, so that $0
# (the name in messages), the shell and the process stay this handler's.

# shellcheck disable=SC2034
action=verify-removed
case $0 in */*) lib=${0%/*}/packages.sh ;; *) lib=./packages.sh ;; esac
[ -r "$lib" ] || { printf '%s: cannot read %s\n' "${0##*/}" "$lib" >&2; exit 1; }
# shellcheck source=/dev/null
. "$lib"
