#!/bin/sh
# shutdown.sh: iotbox job handler. Schedules a power-off, and exits 0 before it happens.
#
# Usage:  shutdown.sh USER [DELAY_MINUTES]
#   USER           the step's runAsUser (always argv[1], may be empty; iotd has already switched to it)
#   DELAY_MINUTES  minutes until the power-off (default 1, as the Device Client's handler)
# The power-off must come after this step completes: a step the shutdown interrupts is run again
# at the next boot, which would power the device off again. So:
#   - under systemd, with a delay: "shutdown -h +DELAY" (logind keeps the schedule; shutdown -c
#     cancels it);
#   - otherwise: poweroff (or "shutdown -h now") runs DELAY minutes later, or
#     IOTBOX_DETACH_DELAY seconds later for a delay of 0, in a session of its own.
#
# Environment:
#   IOTBOX_SHUTDOWN_COMMAND  the command that powers off now, split at spaces; always run
#                            detached as above
#   IOTBOX_DETACH_DELAY      (tests) seconds before a power-off "now" (default 3)
#   IOTBOX_SYSTEMD_DIR       (tests) systemd runs when this directory exists (default /run/systemd/system)
#
# Exit:   0 power-off scheduled
#         1 no command to power off, or the command failed
#         2 usage error

me=${0##*/}
fail() { printf '%s: %s\n' "$me" "$1" >&2; exit "${2:-1}"; }

case $# in 1 | 2) ;; *) fail "usage: $me USER [DELAY_MINUTES]" 2 ;; esac
minutes=${2:-1}
case $minutes in *[!0-9]*) fail "DELAY_MINUTES must be a whole number of minutes, got '$minutes'" 2 ;; esac

if [ -z "${IOTBOX_SHUTDOWN_COMMAND:-}" ] && [ "$minutes" -gt 0 ] &&
    [ -d "${IOTBOX_SYSTEMD_DIR:-/run/systemd/system}" ] && command -v shutdown >/dev/null 2>&1; then
    shutdown -h "+$minutes" || fail "shutdown -h +$minutes failed (exit $?)"
    exit 0
fi

if [ -n "${IOTBOX_SHUTDOWN_COMMAND:-}" ]; then
    set -f
    # shellcheck disable=SC2086
    set -- $IOTBOX_SHUTDOWN_COMMAND
    set +f
elif command -v poweroff >/dev/null 2>&1; then set -- poweroff
elif command -v shutdown >/dev/null 2>&1; then set -- shutdown -h now
else fail "no command to power off found (looked for shutdown, poweroff)"
fi
command -v setsid >/dev/null 2>&1 || fail "setsid not found: cannot power off after this step"
seconds=$((minutes * 60))
[ "$seconds" -gt 0 ] || seconds=${IOTBOX_DETACH_DELAY:-3}
# shellcheck disable=SC2016
setsid sh -c 'sleep "$0" && exec "$@"' "$seconds" "$@" </dev/null >/dev/null 2>&1 &
printf 'power-off (%s) in %s s\n' "$*" "$seconds"
