#!/bin/sh
# make demo: the main job end to end on this machine. Starts a real mosquitto broker with mutual
# TLS and a throwaway CA, the fakecloud, and iotd with a Device Client style config; a job is
# created at the cloud, run by iotd with the shipped handlers, and its status read back from the
# cloud; iotd survives a broker restart and stops cleanly. Leaves nothing running.
set -eu
BUILD=${1:-build}
TOP=$(cd "$(dirname "$0")/.." && pwd)
BIN=$TOP/$BUILD/iotbox
PY=/usr/bin/python3
DIR=$TOP/$BUILD/testbed/demo
TB="$PY $TOP/tests/testbed/testbed.py"
CTL="$TOP/tests/fakecloud/fakecloudctl"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cleanup() {
	[ -n "${IOTD_PID:-}" ] && kill "$IOTD_PID" 2>/dev/null || true
	[ -n "${CLOUD_PID:-}" ] && kill "$CLOUD_PID" 2>/dev/null || true
	$TB down "$DIR" >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

rm -rf "$DIR"
say "starting a mosquitto broker with TLS and client certificates on 127.0.0.1"
PORT=$($TB up "$DIR")
echo "broker on port $PORT (require_certificate, per-thing ACL)"

say "starting the fakecloud (the AWS IoT side, emulated)"
$PY "$TOP/tests/fakecloud/fakecloud.py" --testbed "$DIR" >"$DIR/fakecloud.out" 2>&1 &
CLOUD_PID=$!
for _ in $(seq 50); do [ -S "$DIR/fakecloud.sock" ] && break; sleep 0.1; done
$CTL "$DIR" create_thing '{"name": "demo-thing"}' >"$DIR/thing.json"
CERT=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["cert"])' "$DIR/thing.json")
KEY=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["key"])' "$DIR/thing.json")
echo "thing demo-thing registered, certificate $CERT"

say "installing the shipped job handlers (mode 700)"
mkdir -p "$DIR/jobs" && chmod 700 "$DIR/jobs"
install -m 0700 "$TOP"/configs/handlers/*.sh "$DIR/jobs/"
ls "$DIR/jobs"

say "writing a Device Client style config"
cat >"$DIR/aws-iot-device-client.conf" <<JSON
{
  "endpoint": "localhost",
  "port": $PORT,
  "cert": "$CERT",
  "key": "$KEY",
  "root-ca": "$DIR/ca.crt",
  "thing-name": "demo-thing",
  "logging": { "level": "INFO", "type": "STDOUT" },
  "jobs": { "enabled": true, "handler-directory": "$DIR/jobs" },
  "state-directory": "$DIR/state",
  "tunneling": { "enabled": false },
  "lock-file": "$DIR/iotd.lock",
  "mqtt": { "reconnect-min": 1, "reconnect-max": 4 }
}
JSON
chmod 640 "$DIR/aws-iot-device-client.conf"
cat "$DIR/aws-iot-device-client.conf"

say "iotd: connecting over mutual TLS"
"$BIN" iotd --config-file "$DIR/aws-iot-device-client.conf" >"$DIR/iotd.log" 2>&1 &
IOTD_PID=$!
wait_log() {
	for _ in $(seq 150); do [ "$(grep -c "$1" "$DIR/iotd.log")" -ge "$2" ] && return 0; sleep 0.1; done
	echo "demo: timed out waiting for '$1'" >&2; cat "$DIR/iotd.log" >&2; exit 1
}
wait_log "connected to" 1
cat "$DIR/iotd.log"

say "the cloud creates a job: a Device Client style document (health check, then a command)"
DOC='{"version": "1.0", "includeStdOut": true, "steps": [
  {"action": {"name": "health", "type": "runHandler", "input": {"handler": "health-check.sh", "path": "default"}}},
  {"action": {"name": "hello", "type": "runCommand", "input": {"command": "echo,Hello from iotbox"}}}]}'
echo "$DOC"
$CTL "$DIR" create_job "{\"thing\": \"demo-thing\", \"job_id\": \"demo-job-1\", \"document\": $DOC}" >/dev/null
for _ in $(seq 100); do
	STATUS=$($CTL "$DIR" job '{"thing": "demo-thing", "job_id": "demo-job-1"}' |
		$PY -c 'import json,sys; print(json.load(sys.stdin)["execution"]["status"])')
	case "$STATUS" in SUCCEEDED|FAILED|REJECTED) break ;; esac
	sleep 0.1
done
grep "\[jobs\]" "$DIR/iotd.log"
echo "the cloud now says:"
$CTL "$DIR" job '{"thing": "demo-thing", "job_id": "demo-job-1"}' |
	$PY -c 'import json,sys; e=json.load(sys.stdin)["execution"]; print(json.dumps({k: e[k] for k in ("jobId","status","statusDetails","versionNumber")}, indent=2))'
[ "$STATUS" = SUCCEEDED ]

say "restarting the broker under iotd (1 s outage)"
$TB restart "$DIR" --down 1 >/dev/null
wait_log "connected to" 2
tail -n 4 "$DIR/iotd.log"

say "stopping iotd with SIGTERM"
kill -TERM "$IOTD_PID"
wait "$IOTD_PID" && rc=0 || rc=$?
IOTD_PID=
tail -n 2 "$DIR/iotd.log"
echo "iotd exit status: $rc"
[ "$rc" -eq 0 ]
say "demo done: $(stat -c %s "$BIN") byte static binary: connected, ran a job, reconnected, stopped cleanly"
