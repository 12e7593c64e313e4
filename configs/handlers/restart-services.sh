#!/bin/sh
# restart-services.sh: iotbox job handler. Restarts services with the init system in use.
#
# Usage:  restart-services.sh USER SERVICE...
#   USER     the step's runAsUser (always argv[1], may be empty; iotd has already switched to it)
#   SERVICE  service names, restarted in order; the first failure stops the step
# Init system: systemd (systemctl) when it is running, else OpenRC (rc-service), else sysvinit
# (/etc/init.d/SERVICE, or the service command).
# iotd, the daemon running this job, is not restarted while the job waits on this handler: the
# restart is scheduled in a new session a few seconds later and the handler exits 0 at once, so
# the step completes first and the job resumes after it once iotd is back.
#
# Environment (for tests; iotd does not set them):
#   IOTBOX_SYSTEMD_DIR  systemd is running when this directory exists (default /run/systemd/system)
#   IOTBOX_INITD_DIR    the sysvinit script directory (default /etc/init.d)
#   IOTBOX_DETACH_DELAY seconds before the scheduled iotd restart (default 3)
#
# Exit:   0 all restarted (iotd: restart scheduled)
#         1 a restart failed, or no way to restart the service was found
#         2 usage error
#
# The code is in services.sh (shared with start-services.sh and stop-services.sh), which must be
# in the same directory as this file; make install puts it there. This file sets the action and
# sources services.sh: sourced, not run, so that $0 (the name in messages), the shell and the
# process stay this handler's.

# shellcheck disable=SC2034
action=restart
case $0 in */*) lib=${0%/*}/services.sh ;; *) lib=./services.sh ;; esac
[ -r "$lib" ] || { printf '%s: cannot read %s\n' "${0##*/}" "$lib" >&2; exit 1; }
# shellcheck source=/dev/null
. "$lib"
