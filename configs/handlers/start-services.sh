#!/bin/sh
# start-services.sh: iotbox job handler. Starts services with the init system in use.
#
# Usage:  start-services.sh USER SERVICE...
#   USER     the step's runAsUser (always argv[1], may be empty; iotd has already switched to it)
#   SERVICE  service names, started in order; the first failure stops the step
# Init system: systemd (systemctl) when it is running, else OpenRC (rc-service), else sysvinit
# (/etc/init.d/SERVICE, or the service command).
#
# Environment (for tests; iotd does not set them):
#   IOTBOX_SYSTEMD_DIR  systemd is running when this directory exists (default /run/systemd/system)
#   IOTBOX_INITD_DIR    the sysvinit script directory (default /etc/init.d)
#
# Exit:   0 all started
#         1 a start failed, or no way to start the service was found
#         2 usage error

action=start
me=${0##*/}
fail() { printf '%s: %s\n' "$me" "$1" >&2; exit "${2:-1}"; }

# control SERVICE: $action SERVICE with the init system in use.
control() {
    if [ "$init" = systemd ]; then systemctl "$action" "$1"
    elif [ "$init" = openrc ]; then rc-service "$1" "$action"
    elif [ -x "$initd/$1" ]; then "$initd/$1" "$action"
    elif command -v service >/dev/null 2>&1; then service "$1" "$action"
    else fail "cannot $action $1: no $initd/$1 and no service command"
    fi
}

[ $# -ge 2 ] || fail "usage: $me USER SERVICE..." 2
shift
for svc; do
    case $svc in '' | -* | */* | . | ..) fail "not a service name: '$svc'" 2 ;; esac
done
initd=${IOTBOX_INITD_DIR:-/etc/init.d}
if [ -d "${IOTBOX_SYSTEMD_DIR:-/run/systemd/system}" ]; then init=systemd
elif command -v rc-service >/dev/null 2>&1; then init=openrc
else init=sysv
fi

for svc; do
    rc=0
    control "$svc" || rc=$?
    [ $rc -eq 0 ] || fail "$action $svc failed ($init, exit $rc)"
    printf '%s: %s %s done\n' "$init" "$action" "$svc"
done
