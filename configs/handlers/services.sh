#!/bin/sh
# services.sh: the code of iotbox's service job handlers, start-services.sh, stop-services.sh
# and restart-services.sh. It is not a handler: each of them sets action=start, stop or restart
# and sources this file, which then does what that handler's header describes (arguments,
# environment, output and exit status are documented there). Installed beside them.
#
# Usage:  services.sh is sourced (". services.sh" with action set), never run itself; run on its
#         own it only says so.
#
# Exit:   as the handler that sourced it; 2 when run on its own

me=${0##*/}
fail() { printf '%s: %s\n' "$me" "$1" >&2; exit "${2:-1}"; }

case ${action-} in
start | stop | restart) ;;
*) fail "not a handler: the *-services.sh handlers source it" 2 ;;
esac

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
    case $action.$svc in
    # Stopping or restarting iotd ends this job: done later, once the handler has exited.
    # Starting it (it is running) is done at once, as for any service.
    stop.iotd | stop.iotd.service | restart.iotd | restart.iotd.service)
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
