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
#
# The code is in packages.sh (shared with remove-packages.sh, verify-packages-installed.sh and
# verify-packages-removed.sh), which must be in the same directory as this file; make install puts
# it there. This file sets the action and sources packages.sh: sourced, not run, so that $0 (the
# name in messages), the shell and the process stay this handler's.

# shellcheck disable=SC2034
action=install
case $0 in */*) lib=${0%/*}/packages.sh ;; *) lib=./packages.sh ;; esac
[ -r "$lib" ] || { printf '%s: cannot read %s\n' "${0##*/}" "$lib" >&2; exit 1; }
# shellcheck source=/dev/null
. "$lib"
