#!/usr/bin/python3
"""fakecloud: the local emulator of the AWS IoT cloud side, for tests.

It connects to a testbed broker (tests/testbed/testbed.py) as the privileged
client CN=fakecloud, sees every message the devices publish, answers the AWS
request/response APIs and records every exchange in DIR/fakecloud.log. Tests
drive it through a Unix socket, DIR/fakecloud.sock (see tests/fakecloud/fakecloudctl).

    fakecloud.py --testbed DIR

It is written from shared/reference/aws-iot-mqtt-api.md alone and shares no code
with the device agent, so that a codec bug in the agent cannot hide in the tests.

Adding an API: subclass Api, list its routes (MQTT topic filters and handler
methods) in routes(), and add the class to APIS. A handler gets a Request and
answers with req.accept(obj) / req.reject(obj) / cloud.publish(...). An API may
add control commands (commands()) and clean up its threads in stop().

APIs: the echo demo (EchoApi below), AWS IoT Jobs (jobs_api.py, §3 of the
reference), Device Defender (defender_api.py) and fleet provisioning with JITP
(provisioning_api.py, §2; ping also reports its "jitp_port") and the secure
tunneling service with its tunnels/notify message (tunnel_api.py, a TLS WebSocket
server; ping also reports its "tunnel_port").

Control commands (one JSON object with "cmd" per line, one JSON answer per line
with "ok": true|false and "error" when false):

    ping, wait_connected {timeout?}, create_thing {name, days?, expired?, untrusted?},
    things, publish {topic, payload, qos?, retain?}, received {topic?, thing?},
    wait {topic, thing?, timeout?, after?}, log, clear_log
    jobs (see jobs_api.py for arguments and results): create_job, cancel_job,
    remove_job, retry_job, job, jobs, set_strict, jobs_config, fail_next_updates,
    drop_next
    provisioning (see provisioning_api.py): create_template, load_templates, templates,
    create_policy, claim_certificate, provisioning_things, certificates,
    revoke_certificate, provisioning_config, provisioning_fail_next,
    provisioning_drop_next, rotation_alert, register_ca, jitp
    tunneling (see tunnel_api.py): open_tunnel, rotate_token, close_tunnel, tunnels,
    wait_tunnel, tunnel_log, tunnel_hooks
"""

import argparse
import base64
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "testbed"))
import testbed  # noqa: E402  (test-side helper, not device code)

CLIENT_ID = "fakecloud"
KEEPALIVE = 30
SUN_PATH_MAX = 107


# ---------------------------------------------------------------- topics


def topic_matches(filter, topic):
    """MQTT filter matching with '+' and '#'; wildcards never match a leading '$'."""
    if topic.startswith("$") and filter[:1] in ("+", "#"):
        return False
    f, t = filter.split("/"), topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t):
            return False
        if level != "+" and level != t[i]:
            return False
    return len(f) == len(t)


def thing_of(topic):
    """The thing name in $aws/things/<thing>/... or things/<thing>/..., else None."""
    parts = topic.split("/")
    if len(parts) >= 3 and parts[0] == "$aws" and parts[1] == "things":
        return parts[2] or None
    if len(parts) >= 2 and parts[0] == "things":
        return parts[1] or None
    return None


def now_s():
    return int(time.time())


def now_ms():
    return int(time.time() * 1000)


# ---------------------------------------------------------------- error shapes (reference §0.1)


def provisioning_error(status_code, error_code, message):
    """Fleet provisioning: no timestamp, no client token."""
    return {"statusCode": int(status_code), "errorCode": str(error_code), "errorMessage": str(message)}


def jobs_error(code, message, client_token=None, execution_state=None):
    """Jobs: string code, timestamp in seconds."""
    err = {"code": str(code), "message": str(message)}
    if client_token is not None:
        err["clientToken"] = client_token
    err["timestamp"] = now_s()
    if execution_state is not None:
        err["executionState"] = execution_state
    return err


def shadow_error(code, message, client_token=None, timestamp=True):
    """Device Shadow: an HTTP status as an int code, timestamp in seconds."""
    err = {"code": int(code), "message": str(message)}
    if timestamp:
        err["timestamp"] = now_s()
    if client_token is not None:
        err["clientToken"] = client_token
    return err


def defender_error(thing, error_code, message):
    """Device Defender: capitalised detail keys, timestamp in milliseconds."""
    return {
        "thingName": thing,
        "status": "REJECTED",
        "statusDetails": {"ErrorCode": str(error_code), "ErrorMessage": str(message)},
        "timestamp": now_ms(),
    }


def client_token_of(payload):
    """The clientToken of a JSON object payload, if it has one (for rejections)."""
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(obj, dict) and isinstance(obj.get("clientToken"), str):
        return obj["clientToken"]
    return None


# ---------------------------------------------------------------- the exchange log


class ExchangeLog:
    """Every message in and out, in memory (for queries) and in DIR/fakecloud.log."""

    def __init__(self, path):
        self.path = path
        self.entries = []
        self.cond = threading.Condition()
        open(self.path, "a").close()

    def add(self, direction, topic, payload, thing):
        entry = {"t": time.time(), "dir": direction, "topic": topic}
        try:
            entry["payload"] = payload.decode("utf-8")
        except UnicodeDecodeError:
            entry["payload"] = base64.b64encode(payload).decode("ascii")
            entry["encoding"] = "base64"
        entry["thing"] = thing
        with self.cond:
            self.entries.append(entry)
            with open(self.path, "a") as f:
                f.write(json.dumps(entry) + "\n")
            self.cond.notify_all()
        return entry

    def clear(self):
        with self.cond:
            self.entries = []
            open(self.path, "w").close()

    @staticmethod
    def _match(entry, direction, topic_filter, thing):
        return ((direction is None or entry["dir"] == direction)
                and (topic_filter is None or topic_matches(topic_filter, entry["topic"]))
                and (thing is None or entry["thing"] == thing))

    def select(self, direction=None, topic_filter=None, thing=None):
        with self.cond:
            return [e for e in self.entries if self._match(e, direction, topic_filter, thing)]

    def wait(self, topic_filter, thing=None, timeout=10.0, after=0):
        """The (after+1)-th inbound message matching, or None after timeout seconds."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [e for e in self.entries if self._match(e, "in", topic_filter, thing)]
                if len(found) > after:
                    return found[after], len(found)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None, len(found)
                self.cond.wait(left)


# ---------------------------------------------------------------- requests and APIs


class Request:
    """One inbound message, handed to a route's handler."""

    def __init__(self, cloud, thing, topic, payload):
        self.cloud, self.thing, self.topic, self.payload = cloud, thing, topic, payload

    def json(self):
        """The payload as JSON, or raise ValueError."""
        return json.loads(self.payload.decode("utf-8"))

    def accept(self, obj, qos=1):
        self.cloud.publish(self.topic + "/accepted", obj, qos)

    def reject(self, obj, qos=1):
        self.cloud.publish(self.topic + "/rejected", obj, qos)


class Api:
    """A cloud service: a set of topic routes with their handlers and its own state."""

    name = "api"

    def __init__(self, cloud):
        self.cloud = cloud

    def routes(self):
        """[(topic filter, handler(req: Request))]"""
        return []

    def commands(self):
        """{control command name: fn(request dict) -> result dict}"""
        return {}

    def stop(self):
        """Called once when the cloud stops, before it disconnects."""


class EchoApi(Api):
    """Demo API to test the frame: $aws/things/<thing>/fakecloud/echo.

    A JSON object is answered on .../accepted with the same object plus
    "timestamp" (s). Anything else is rejected in the Jobs error shape with code
    "InvalidRequest". An object with "reject": "<Code>" is rejected with that
    code, echoing its clientToken, so that tests can check the token path.
    """

    name = "echo"

    def routes(self):
        return [("$aws/things/+/fakecloud/echo", self.echo)]

    def echo(self, req):
        try:
            obj = req.json()
        except (ValueError, UnicodeDecodeError):
            obj = None
        if not isinstance(obj, dict):
            req.reject(jobs_error("InvalidRequest", "payload is not a JSON object",
                                  client_token=client_token_of(req.payload)))
            return
        if isinstance(obj.get("reject"), str):
            req.reject(jobs_error(obj["reject"], "rejected on request", client_token=obj.get("clientToken")))
            return
        reply = dict(obj)
        reply["timestamp"] = now_s()
        req.accept(reply)


# jobs_api imports Api and the helpers above from "fakecloud": when this file is
# run as a script it is "__main__", so make it importable under its own name.
sys.modules.setdefault("fakecloud", sys.modules[__name__])
import jobs_api  # noqa: E402
import defender_api  # noqa: E402
import provisioning_api  # noqa: E402
import tunnel_api  # noqa: E402

APIS = [EchoApi, jobs_api.JobsApi, defender_api.DefenderApi, provisioning_api.ProvisioningApi,
        tunnel_api.TunnelApi]


# ---------------------------------------------------------------- the cloud


class Cloud:
    def __init__(self, dir):
        self.dir = os.path.abspath(dir)
        self.testbed = testbed.Testbed(self.dir)
        if self.testbed.info is None:
            raise SystemExit("fakecloud: %s: no testbed.json (run testbed.py up first)" % self.dir)
        self.log = ExchangeLog(os.path.join(self.dir, "fakecloud.log"))
        self.things = {}
        self.things_lock = threading.Lock()
        self.connected = threading.Event()
        self.apis = [cls(self) for cls in APIS]
        self.routes = [(f, h) for api in self.apis for (f, h) in api.routes()]
        self.client = self._make_client()

    def _make_client(self):
        info = self.testbed.info
        c = mqtt.Client(client_id=CLIENT_ID, protocol=mqtt.MQTTv5)
        c.tls_set_context(self.testbed.client_context(info["fakecloud_cert"], info["fakecloud_key"]))
        c.reconnect_delay_set(min_delay=0.1, max_delay=1)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        return c

    def run_mqtt(self):
        info = self.testbed.info
        self.client.connect_async(info["host"], info["port"], keepalive=KEEPALIVE)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, rc, properties=None):
        if rc != 0:
            return
        # Answers go out at once, not after Nagle and delayed-ACK stalls (~40 ms each).
        try:
            client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass
        # Two non-overlapping catch-alls ('#' does not match '$' topics), with
        # No Local so the cloud never hears its own replies. Overlapping
        # filters would make mosquitto deliver a message once per filter.
        opts = SubscribeOptions(qos=1, noLocal=True)
        client.subscribe([("$aws/#", opts), ("#", opts)])
        self.connected.set()

    def _on_disconnect(self, client, userdata, rc, properties=None):
        self.connected.clear()

    def _on_message(self, client, userdata, msg):
        thing = thing_of(msg.topic)
        self.log.add("in", msg.topic, msg.payload, thing)
        for filter, handler in self.routes:
            if topic_matches(filter, msg.topic):
                try:
                    handler(Request(self, thing, msg.topic, msg.payload))
                except Exception as e:  # a broken handler must not stop the cloud
                    print("fakecloud: handler for %s failed: %r" % (msg.topic, e), file=sys.stderr)

    def publish(self, topic, payload, qos=1, retain=False):
        """Publish to the devices; payload: dict/list (JSON), str or bytes."""
        if isinstance(payload, (dict, list)):
            data = json.dumps(payload, separators=(",", ":")).encode()
        elif isinstance(payload, str):
            data = payload.encode()
        else:
            data = bytes(payload)
        self.log.add("out", topic, data, thing_of(topic))
        info = self.client.publish(topic, data, qos=qos, retain=retain)
        return info.rc

    def create_thing(self, name, **opts):
        if name == CLIENT_ID:
            raise ValueError("the thing name %r is the cloud's own identity" % name)
        if name.startswith(provisioning_api.RESERVED_PREFIXES):
            raise ValueError("the thing name %r has a prefix reserved for certificate CNs" % name)
        ident = self.testbed.thing(name, **opts)
        with self.things_lock:
            self.things[name] = {"name": name, "cert": ident["cert"], "key": ident["key"],
                                 "created": time.time()}
        return ident

    def stop(self):
        for api in self.apis:
            api.stop()
        self.client.disconnect()
        self.client.loop_stop()


# ---------------------------------------------------------------- control socket


class Control:
    """One JSON request per line, one JSON response per line."""

    def __init__(self, cloud):
        self.cloud = cloud
        self.api_commands = {}
        for api in cloud.apis:
            for name, fn in api.commands().items():
                if hasattr(self, "cmd_" + name) or name in self.api_commands:
                    raise ValueError("control command %r is defined twice" % name)
                self.api_commands[name] = fn

    def handle(self, req):
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            raise ValueError('a request is a JSON object with "cmd"')
        fn = getattr(self, "cmd_" + req["cmd"], None) or self.api_commands.get(req["cmd"])
        if fn is None:
            raise ValueError("unknown command %r" % req["cmd"])
        return fn(req)

    def cmd_ping(self, req):
        resp = {"connected": self.cloud.connected.is_set(), "pid": os.getpid()}
        for api in self.cloud.apis:
            resp.update(getattr(api, "ping_info", dict)())
        return resp

    def cmd_wait_connected(self, req):
        ok = self.cloud.connected.wait(float(req.get("timeout", 10)))
        if not ok:
            raise TimeoutError("timeout")
        return {"connected": True}

    def cmd_create_thing(self, req):
        name = req.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError('create_thing needs "name"')
        opts = {k: req[k] for k in ("days", "expired", "untrusted") if k in req}
        ident = self.cloud.create_thing(name, **opts)
        return {"name": name, "cert": ident["cert"], "key": ident["key"], "ca": ident["ca"]}

    def cmd_things(self, req):
        with self.cloud.things_lock:
            return {"things": sorted(self.cloud.things.values(), key=lambda t: t["name"])}

    def cmd_publish(self, req):
        topic = req.get("topic")
        if not isinstance(topic, str) or not topic:
            raise ValueError('publish needs "topic"')
        payload = req.get("payload", "")
        if not isinstance(payload, str):
            payload = json.dumps(payload, separators=(",", ":"))
        rc = self.cloud.publish(topic, payload, int(req.get("qos", 1)), bool(req.get("retain", False)))
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise RuntimeError("publish failed: %s" % mqtt.error_string(rc))
        return {}

    def cmd_received(self, req):
        return {"messages": self.cloud.log.select("in", req.get("topic"), req.get("thing"))}

    def cmd_wait(self, req):
        topic = req.get("topic")
        if not isinstance(topic, str) or not topic:
            raise ValueError('wait needs "topic"')
        entry, count = self.cloud.log.wait(topic, req.get("thing"), float(req.get("timeout", 10)),
                                           int(req.get("after", 0)))
        if entry is None:
            raise TimeoutError("timeout")
        return {"message": entry, "count": count}

    def cmd_log(self, req):
        return {"entries": self.cloud.log.select()}

    def cmd_clear_log(self, req):
        self.cloud.log.clear()
        return {}


class _ControlHandler(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            if not line.strip():
                continue
            try:
                resp = {"ok": True}
                resp.update(self.server.control.handle(json.loads(line)))
            except TimeoutError as e:
                resp = {"ok": False, "error": str(e) or "timeout"}
            except Exception as e:
                resp = {"ok": False, "error": str(e) or type(e).__name__}
            try:
                self.wfile.write((json.dumps(resp) + "\n").encode())
                self.wfile.flush()
            except OSError:
                return


class _ControlServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


# ---------------------------------------------------------------- main


def main(argv=None):
    p = argparse.ArgumentParser(prog="fakecloud.py", description="AWS IoT cloud emulator for tests")
    p.add_argument("--testbed", required=True, metavar="DIR", help="a directory made by testbed.py up")
    a = p.parse_args(argv)

    cloud = Cloud(a.testbed)
    sock_path = os.path.join(cloud.dir, "fakecloud.sock")
    pid_path = os.path.join(cloud.dir, "fakecloud.pid")
    if len(sock_path.encode()) > SUN_PATH_MAX:
        print("fakecloud: %s: path too long for a Unix socket (%d bytes, max %d)"
              % (sock_path, len(sock_path.encode()), SUN_PATH_MAX), file=sys.stderr)
        return 2
    try:
        os.unlink(sock_path)
    except FileNotFoundError:
        pass

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    server = _ControlServer(sock_path, _ControlHandler)
    server.control = Control(cloud)
    with open(pid_path + ".tmp", "w") as f:
        f.write("%d\n" % os.getpid())
    os.rename(pid_path + ".tmp", pid_path)

    cloud.run_mqtt()
    threading.Thread(target=server.serve_forever, args=(0.05,), name="control", daemon=True).start()
    try:
        stop.wait()  # a signal handler sets it; the wait is interrupted to run it
    finally:
        server.shutdown()
        server.server_close()
        cloud.stop()
        for path in (sock_path, pid_path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
