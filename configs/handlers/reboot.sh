#!/bin/sh
# reboot.sh: iotbox job handler. Reboots the device; succeeds once the device is back.
#
# Usage:  reboot.sh USER [DELAY_SECONDS]
#   USER           the step's runAsUser (always argv[1], may be empty; iotd has already switched to it)
#   DELAY_SECONDS  wait this long before asking for the reboot (default 0)
# A reboot step cannot complete before the reboot: the shutdown ends this handler, and iotd runs
# the step again once the device is back. So the handler has two phases, told apart by the
# kernel's boot id (new at every boot), recorded where iotd keeps its state (not in /var/tmp):
#   1. no record, or a record of this boot: record the boot id, ask for the reboot, then wait to be
#      taken down, ignoring SIGTERM so that the shutdown stops iotd before this step can end;
#   2. a record of an earlier boot: the reboot happened, so remove the record and exit 0.
# The reboot command is $IOTBOX_REBOOT_COMMAND if set, else "systemctl reboot" under systemd,
# else reboot, else "busybox reboot". (iotbox's built-in "reboot" step type needs no handler.)
#
# Environment:
#   IOTBOX_STATE_DIR       iotbox's state directory (default /var/lib/iotbox); the record is
#                          handlers/reboot.boot-id in it
#   IOTBOX_REBOOT_COMMAND  the command that reboots, split at spaces
#   IOTBOX_REBOOT_WAIT     seconds to wait to be taken down (default 300)
#   IOTBOX_BOOT_ID_FILE    (tests) default /proc/sys/kernel/random/boot_id
#   IOTBOX_SYSTEMD_DIR     (tests) systemd runs when this directory exists (default /run/systemd/system)
#
# Exit:   0 the device has rebooted since the reboot was asked for
#         1 failed: cannot read the boot id or write the record, or the reboot command failed
#         2 usage error
#         3 the reboot was asked for, but the system is still up after IOTBOX_REBOOT_WAIT seconds;
#           the record is kept, so a run after a later reboot succeeds

me=${0##*/}
fail() { printf '%s: %s\n' "$me" "$1" >&2; exit "${2:-1}"; }

case $# in 1 | 2) ;; *) fail "usage: $me USER [DELAY_SECONDS]" 2 ;; esac
delay=${2:-0} wait=${IOTBOX_REBOOT_WAIT:-300}
case $delay in *[!0-9]*) fail "DELAY_SECONDS must be a whole number of seconds, got '$delay'" 2 ;; esac
case $wait in *[!0-9]*) fail "IOTBOX_REBOOT_WAIT must be a whole number of seconds, got '$wait'" 2 ;; esac
bootfile=${IOTBOX_BOOT_ID_FILE:-/proc/sys/kernel/random/boot_id}
dir=${IOTBOX_STATE_DIR:-/var/lib/iotbox}/handlers
record=$dir/reboot.boot-id

if ! { read -r boot <"$bootfile"; } 2>/dev/null || [ -z "$boot" ]; then
    fail "cannot read the boot id from $bootfile"
fi
if [ -f "$record" ]; then
    { read -r was <"$record"; } 2>/dev/null || was=
    if [ -n "$was" ] && [ "$was" != "$boot" ]; then
        rm -f "$record" || fail "cannot remove $record"
        printf 'rebooted: boot id %s, was %s\n' "$boot" "$was"
        exit 0
    fi
fi

if [ -n "${IOTBOX_REBOOT_COMMAND:-}" ]; then
    set -f
    # shellcheck disable=SC2086
    set -- $IOTBOX_REBOOT_COMMAND
    set +f
elif [ -d "${IOTBOX_SYSTEMD_DIR:-/run/systemd/system}" ]; then set -- systemctl reboot
elif command -v reboot >/dev/null 2>&1; then set -- reboot
elif command -v busybox >/dev/null 2>&1; then set -- busybox reboot
else fail "no reboot command found (looked for systemctl, reboot, busybox)"
fi

umask 077
trap 'rm -f "$record" "$record.tmp"; exit 1' HUP INT TERM # cancelled before the reboot was asked for
if ! { mkdir -p "$dir" && printf '%s\n' "$boot" >"$record.tmp" && mv -f "$record.tmp" "$record"; }; then
    rm -f "$record.tmp"
    fail "cannot write $record"
fi
sync
[ "$delay" -eq 0 ] || sleep "$delay"
printf 'rebooting (%s); this step completes when the device is back\n' "$*"
trap '' HUP TERM
trap - INT
rc=0
"$@" || rc=$?
if [ $rc -ne 0 ]; then
    rm -f "$record"
    fail "reboot command '$*' failed (exit $rc)"
fi
[ "$wait" -eq 0 ] || sleep "$wait"
fail "asked for a reboot ($*) but the system is still up after $wait s" 3
