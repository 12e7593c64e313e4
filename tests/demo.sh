#!/bin/sh
# make demo: the main job end to end on this machine. Starts a real mosquitto broker with mutual
# TLS and a throwaway CA, the fakecloud, and iotd with a Device Client style config; shows iotd
# connected, survives a broker restart, and stops it cleanly. Leaves nothing running.
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
  "jobs": { "enabled": false },
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
say "demo done: $(stat -c %s "$BIN") byte static binary, connected, reconnected, stopped cleanly"
