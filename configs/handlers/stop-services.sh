#!/bin/sh
# stop-services.sh: iotbox job handler. Stops services with the init system in use.
#
# Usage:  stop-services.sh USER SERVICE...
#   USER     the step's runAsUser (always argv[1], may be empty; iotd has already switched to it)
#   SERVICE  service names, stopped in order; the first failure stops the step
# Init system: systemd (systemctl) when it is running, else OpenRC (rc-service), else sysvinit
# (/etc/init.d/SERVICE, or the service command).
# iotd, the daemon running this job, is not stopped while the job waits on this handler: the
# stop is scheduled in a new session a few seconds later and the handler exits 0 at once, so
# the step completes first and its status is sent when iotd next starts, if not before.
#
# Environment (for tests; iotd does not set them):
#   IOTBOX_SYSTEMD_DIR  systemd is running when this directory exists (default /run/systemd/system)
#   IOTBOX_INITD_DIR    the sysvinit script directory (default /etc/init.d)
#   IOTBOX_DETACH_DELAY seconds before the scheduled iotd stop (default 3)
#
# Exit:   0 all stopped (iotd: stop scheduled)
#         1 a stop failed, or no way to stop the service was found
#         2 usage error

action=stop
me=${0##*/}
fail() { printf '%s: %s\n' "$me" "$1" >&2; exit "${2:-1}"; }

now() { "$@"; }
# later COMMAND...: run COMMAND a few seconds from now, in its own session, holding none of our
# file descriptors, so that nothing of this job waits for it or is killed with it.
later() {
    # shellcheck disable=SC2016
    setsid sh -c 'sleep "$0" && exec "$@"' "${IOTBOX_DETACH_DELAY:-3}" "$@" </dev/null >/dev/null 2>&1 &
}
# control now|later SERVICE: $action SERVICE with the init system in use.
control() {
    if [ "$init" = systemd ]; then "$1" systemctl "$action" "$2"
    elif [ "$init" = openrc ]; then "$1" rc-service "$2" "$action"
    elif [ -x "$initd/$2" ]; then "$1" "$initd/$2" "$action"
    elif command -v service >/dev/null 2>&1; then "$1" service "$2" "$action"
    else fail "cannot $action $2: no $initd/$2 and no service command"
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
    case $svc in
    iotd | iotd.service)
        command -v setsid >/dev/null 2>&1 || fail "setsid not found: cannot $action iotd without ending this job"
        control later "$svc"
        printf '%s: %s %s scheduled (it runs this job)\n' "$init" "$action" "$svc" ;;
    *)
        rc=0
        control now "$svc" || rc=$?
        [ $rc -eq 0 ] || fail "$action $svc failed ($init, exit $rc)"
        printf '%s: %s %s done\n' "$init" "$action" "$svc" ;;
    esac
done
