#!/bin/sh
# health-check.sh: iotbox job handler. Prints a one-line summary of the device's health.
#
# Usage:  health-check.sh USER
#   USER  the step's runAsUser (always argv[1], may be empty; iotd has already switched to it)
# Prints uptime, load averages, available memory and free space on / from /proc and df, e.g.
#   up 3d 04:12, load 0.08 0.03 0.01, memory 412/987 MiB available, / 5120/7442 MiB free
# A value that cannot be read is shown as "?". Running at all is the check (the job round trip),
# so the handler always succeeds.
#
# Exit:   0 always

up='?' load='? ? ?' mem='?' disk='?'
if { read -r secs _ </proc/uptime; } 2>/dev/null; then
    s=${secs%%.*}
    up=$(printf '%dd %02d:%02d' $((s / 86400)) $((s % 86400 / 3600)) $((s % 3600 / 60)))
fi
{ read -r l1 l5 l15 _ </proc/loadavg; } 2>/dev/null && load="$l1 $l5 $l15"
if [ -r /proc/meminfo ]; then
    total='' avail='' free=''
    while read -r key kb _; do
        case $key in
        MemTotal:) total=$kb ;;
        MemAvailable:) avail=$kb ;;
        MemFree:) free=$kb ;;
        esac
    done </proc/meminfo
    avail=${avail:-$free} # kernels before 3.14 have no MemAvailable
    [ -z "$total" ] || [ -z "$avail" ] || mem="$((avail / 1024))/$((total / 1024)) MiB available"
fi
# df -P: a header line, then "filesystem 1024-blocks used available capacity mountpoint".
set -f
# shellcheck disable=SC2046
set -- $(df -Pk / 2>/dev/null)
set +f
if [ $# -ge 13 ]; then
    case ${9}${11} in *[!0-9]*) ;; *) disk="$((${11} / 1024))/$((${9} / 1024)) MiB free" ;; esac
fi
printf 'up %s, load %s, memory %s, / %s\n' "$up" "$load" "$mem" "$disk"
