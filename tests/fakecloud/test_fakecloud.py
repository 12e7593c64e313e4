"""Tests of tests/fakecloud/fakecloud.py and fakecloudctl on a real testbed broker.

Run: /usr/bin/python3 -m pytest -q tests/fakecloud
"""

import base64
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "testbed"))
import fakecloud  # noqa: E402
import testbed  # noqa: E402
from devclient import ConnectRefused, DeviceClient  # noqa: E402

PY = "/usr/bin/python3"
FAKECLOUD = os.path.join(HERE, "fakecloud.py")
CTL = os.path.join(HERE, "fakecloudctl")


class Cloud:
    """A running fakecloud.py and a way to talk to it."""

    def __init__(self, tb):
        self.tb = tb
        self.sock = os.path.join(tb.dir, "fakecloud.sock")
        self.out = open(os.path.join(tb.dir, "fakecloud.out"), "w")
        self.proc = subprocess.Popen([PY, FAKECLOUD, "--testbed", tb.dir],
                                     stdout=self.out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            assert self.proc.poll() is None, open(self.out.name).read()
            if os.path.exists(self.sock):
                try:
                    if self.cmd("ping")["connected"]:
                        break
                except OSError:
                    pass
            assert time.monotonic() < deadline, "fakecloud did not come up"
            time.sleep(0.05)

    def cmd(self, _cmd, **args):
        args["cmd"] = _cmd
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(self.sock)
            s.sendall((json.dumps(args) + "\n").encode())
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                assert chunk, "fakecloud closed the control connection"
                data += chunk
        return json.loads(data)

    def ok(self, _cmd, **args):
        resp = self.cmd(_cmd, **args)
        assert resp["ok"] is True, resp
        return resp

    def terminate(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        finally:
            self.out.close()


@pytest.fixture
def env(tmp_path):
    tb = testbed.Testbed(str(tmp_path / "tb")).up()
    cloud = None
    clients = []
    try:
        cloud = Cloud(tb)
        yield tb, cloud, clients
        for c in clients:
            c.close()
        clients.clear()
        assert cloud.terminate() == 0, open(cloud.out.name).read()
        assert not os.path.exists(cloud.sock), "control socket left behind"
        assert not os.path.exists(os.path.join(tb.dir, "fakecloud.pid")), "pid file left behind"
    finally:
        for c in clients:
            c.close()
        if cloud is not None and cloud.proc.poll() is None:
            cloud.proc.kill()
            cloud.proc.wait()
        tb.down()
        testbed.reap(str(tmp_path))


def device(env, name, subscribe=None):
    tb, cloud, clients = env
    ident = cloud.ok("create_thing", name=name)
    dev = DeviceClient.connect(tb, ident)
    clients.append(dev)
    for f in subscribe or []:
        dev.subscribe(f)
    return dev


# ---------------------------------------------------------------- the echo demo API


def test_echo_accepted_has_the_request_plus_timestamp(env):
    tb, cloud, _ = env
    dev = device(env, "dev1", ["$aws/things/dev1/fakecloud/echo/+"])
    before = int(time.time())
    dev.publish("$aws/things/dev1/fakecloud/echo", json.dumps({"clientToken": "t-1", "n": [1, 2], "s": "x"}))
    reply = json.loads(dev.wait_message("$aws/things/dev1/fakecloud/echo/accepted")[1])
    assert set(reply) == {"clientToken", "n", "s", "timestamp"}
    assert reply["clientToken"] == "t-1" and reply["n"] == [1, 2] and reply["s"] == "x"
    assert isinstance(reply["timestamp"], int)
    assert before - 1 <= reply["timestamp"] <= int(time.time()) + 1  # seconds, not ms
    assert "$aws/things/dev1/fakecloud/echo/rejected" not in dev.topics()


@pytest.mark.parametrize("payload", [b"[1,2]", b"\"text\"", b"{not json", b"\xff\xfe\x00", b""])
def test_echo_rejects_what_is_not_a_json_object_in_the_jobs_shape(env, payload):
    dev = device(env, "dev1", ["$aws/things/dev1/fakecloud/echo/+"])
    dev.publish("$aws/things/dev1/fakecloud/echo", payload)
    err = json.loads(dev.wait_message("$aws/things/dev1/fakecloud/echo/rejected")[1])
    assert set(err) == {"code", "message", "timestamp"}
    assert err["code"] == "InvalidRequest"
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["timestamp"], int) and abs(err["timestamp"] - time.time()) < 5
    assert "$aws/things/dev1/fakecloud/echo/accepted" not in dev.topics()


def test_echo_rejection_echoes_the_client_token(env):
    dev = device(env, "dev1", ["$aws/things/dev1/fakecloud/echo/+"])
    dev.publish("$aws/things/dev1/fakecloud/echo", json.dumps({"clientToken": "tok", "reject": "VersionMismatch"}))
    err = json.loads(dev.wait_message("$aws/things/dev1/fakecloud/echo/rejected")[1])
    assert set(err) == {"code", "message", "timestamp", "clientToken"}
    assert err["code"] == "VersionMismatch" and err["clientToken"] == "tok"


def test_error_shapes_of_each_service():
    p = fakecloud.provisioning_error(400, "InvalidParameters", "bad")
    assert p == {"statusCode": 400, "errorCode": "InvalidParameters", "errorMessage": "bad"}

    j = fakecloud.jobs_error("RejectedInvalidState", "no", client_token="c",
                             execution_state={"status": "FAILED", "versionNumber": 2})
    assert set(j) == {"code", "message", "clientToken", "timestamp", "executionState"}
    assert abs(j["timestamp"] - time.time()) < 5
    assert set(fakecloud.jobs_error("InvalidJson", "x")) == {"code", "message", "timestamp"}

    s = fakecloud.shadow_error(404, "No shadow exists with name: 'dev1'", client_token="c")
    assert s["code"] == 404 and isinstance(s["code"], int) and s["clientToken"] == "c"
    assert abs(s["timestamp"] - time.time()) < 5
    assert set(fakecloud.shadow_error(400, "x", timestamp=False)) == {"code", "message"}

    d = fakecloud.defender_error("dev1", "InvalidJson", "bad report")
    assert set(d) == {"thingName", "status", "statusDetails", "timestamp"}
    assert d["status"] == "REJECTED" and d["thingName"] == "dev1"
    assert d["statusDetails"] == {"ErrorCode": "InvalidJson", "ErrorMessage": "bad report"}
    assert abs(d["timestamp"] - time.time() * 1000) < 5000  # milliseconds


def test_topic_matching_and_thing_names():
    m = fakecloud.topic_matches
    assert m("$aws/things/+/jobs/#", "$aws/things/dev1/jobs/get")
    assert m("$aws/things/+/jobs/#", "$aws/things/dev1/jobs")
    assert not m("#", "$aws/things/dev1/jobs/get")
    assert not m("+/things/dev1", "$aws/things/dev1")
    assert m("things/+/x", "things/dev1/x") and not m("things/+/x", "things/dev1/x/y")
    assert not m("things/dev1", "things/dev1/x")
    assert fakecloud.thing_of("$aws/things/dev1/shadow/get") == "dev1"
    assert fakecloud.thing_of("things/dev2/telemetry") == "dev2"
    assert fakecloud.thing_of("$aws/provisioning-templates/t/provision/json") is None


# ---------------------------------------------------------------- the log


def test_log_records_both_directions(env):
    tb, cloud, _ = env
    dev = device(env, "dev1", ["$aws/things/dev1/fakecloud/echo/+"])
    dev.publish("$aws/things/dev1/fakecloud/echo", '{"a":1}')
    dev.wait_message("$aws/things/dev1/fakecloud/echo/accepted")
    dev.publish("things/dev1/bin", b"\x00\xff")
    cloud.ok("wait", topic="things/dev1/bin", timeout=5)

    entries = cloud.ok("log")["entries"]
    with open(os.path.join(tb.dir, "fakecloud.log")) as f:
        assert [json.loads(line) for line in f] == entries
    inbound = [e for e in entries if e["topic"] == "$aws/things/dev1/fakecloud/echo"]
    outbound = [e for e in entries if e["topic"] == "$aws/things/dev1/fakecloud/echo/accepted"]
    assert len(inbound) == 1 and len(outbound) == 1
    assert inbound[0]["dir"] == "in" and outbound[0]["dir"] == "out"
    assert inbound[0]["payload"] == '{"a":1}' and inbound[0]["thing"] == "dev1"
    assert json.loads(outbound[0]["payload"])["a"] == 1 and outbound[0]["thing"] == "dev1"
    assert inbound[0]["t"] <= outbound[0]["t"] <= time.time()
    assert "encoding" not in inbound[0]
    binary = [e for e in entries if e["topic"] == "things/dev1/bin"][0]
    assert binary["encoding"] == "base64" and base64.b64decode(binary["payload"]) == b"\x00\xff"
    # the cloud's own replies never come back to it as inbound messages (No Local)
    assert not [e for e in entries if e["dir"] == "in" and e["topic"].endswith("/accepted")]

    cloud.ok("clear_log")
    assert cloud.ok("log")["entries"] == []
    assert os.path.getsize(os.path.join(tb.dir, "fakecloud.log")) == 0


# ---------------------------------------------------------------- control commands


def test_create_thing_and_things(env):
    tb, cloud, _ = env
    ident = cloud.ok("create_thing", name="dev7")
    assert ident["cert"] == os.path.join(tb.dir, "things", "dev7.crt")
    assert ident["key"] == os.path.join(tb.dir, "things", "dev7.key") and ident["ca"] == tb.ca
    assert stat.S_IMODE(os.stat(ident["key"]).st_mode) == 0o600
    DeviceClient.connect(tb, ident).close()
    assert [t["name"] for t in cloud.ok("things")["things"]] == ["dev7"]

    expired = cloud.ok("create_thing", name="old", expired=True)
    with pytest.raises(ConnectRefused):
        DeviceClient.connect(tb, expired)
    for bad in ({"name": "fakecloud"}, {"name": "a/b"}, {}):
        resp = cloud.cmd("create_thing", **bad)
        assert resp["ok"] is False and resp["error"], bad
    assert cloud.cmd("no_such_command") == {"ok": False, "error": "unknown command 'no_such_command'"}


def test_publish_reaches_a_subscribed_thing(env):
    tb, cloud, _ = env
    dev = device(env, "dev1", ["$aws/things/dev1/jobs/notify-next", "things/dev1/cmd"])
    cloud.ok("publish", topic="$aws/things/dev1/jobs/notify-next", payload='{"execution":null}', qos=1)
    cloud.ok("publish", topic="things/dev1/cmd", payload="reboot", qos=0)
    assert dev.wait_message("$aws/things/dev1/jobs/notify-next")[1] == b'{"execution":null}'
    assert dev.wait_message("things/dev1/cmd")[1] == b"reboot"
    out = [e for e in cloud.ok("log")["entries"] if e["dir"] == "out"]
    assert [e["topic"] for e in out] == ["$aws/things/dev1/jobs/notify-next", "things/dev1/cmd"]
    assert cloud.cmd("publish", payload="x")["ok"] is False


def test_wait_and_received(env):
    tb, cloud, _ = env
    dev1 = device(env, "dev1")
    dev2 = device(env, "dev2")
    dev1.publish("things/dev1/a", "1")
    dev2.publish("things/dev2/a", "2")
    dev2.publish("$aws/things/dev2/jobs/get", "{}")

    first = cloud.ok("wait", topic="things/+/a", timeout=5)
    assert first["message"]["topic"] in ("things/dev1/a", "things/dev2/a")
    assert cloud.ok("wait", topic="$aws/things/+/jobs/get", thing="dev2", timeout=5)["message"]["payload"] == "{}"
    assert cloud.ok("wait", topic="things/+/a", after=1, timeout=5)["count"] == 2

    # filters: by thing, by topic, both; '#' does not reach '$aws' topics
    got = cloud.ok("received", thing="dev2")["messages"]
    assert [m["topic"] for m in got] == ["things/dev2/a", "$aws/things/dev2/jobs/get"]
    assert [m["topic"] for m in cloud.ok("received", topic="#")["messages"]] == ["things/dev1/a", "things/dev2/a"]
    assert [m["payload"] for m in cloud.ok("received", topic="things/+/a", thing="dev1")["messages"]] == ["1"]
    assert all(m["dir"] == "in" for m in cloud.ok("received")["messages"])

    # nothing more matches: a timeout, reported as ok:false
    t0 = time.monotonic()
    assert cloud.cmd("wait", topic="things/+/a", after=2, timeout=0.3) == {"ok": False, "error": "timeout"}
    assert time.monotonic() - t0 >= 0.3

    # a wait blocks until the message arrives
    later = threading.Timer(0.3, lambda: dev1.publish("things/dev1/late", "L"))
    later.start()
    try:
        resp = cloud.ok("wait", topic="things/dev1/late", timeout=5)
    finally:
        later.join()
    assert resp["message"]["payload"] == "L" and resp["message"]["thing"] == "dev1"


def test_fakecloudctl(env):
    tb, cloud, _ = env

    def ctl(*args):
        return subprocess.run([CTL, tb.dir] + list(args), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=20)
    p = ctl("ping")
    assert p.returncode == 0 and json.loads(p.stdout)["ok"] is True
    p = ctl("create_thing", '{"name":"dev5"}')
    assert p.returncode == 0 and json.loads(p.stdout)["cert"].endswith("/things/dev5.crt")
    p = ctl("wait", '{"topic":"things/dev5/x","timeout":0.1}')
    assert p.returncode == 1 and json.loads(p.stdout) == {"ok": False, "error": "timeout"}
    assert ctl("publish", "[not an object").returncode == 2
    p = subprocess.run([CTL, "/nonexistent", "ping"], stderr=subprocess.PIPE, text=True)
    assert p.returncode == 2 and "fakecloud" in p.stderr


# ---------------------------------------------------------------- robustness and cleanup


def test_reconnects_after_a_broker_restart(env):
    tb, cloud, _ = env
    tb.restart(down=0.5)
    deadline = time.monotonic() + 10
    while not cloud.ok("ping")["connected"]:
        assert time.monotonic() < deadline, "fakecloud did not reconnect"
        time.sleep(0.1)
    dev = device(env, "dev1", ["$aws/things/dev1/fakecloud/echo/+"])
    dev.publish("$aws/things/dev1/fakecloud/echo", "{}")
    dev.wait_message("$aws/things/dev1/fakecloud/echo/accepted")


def test_reap_kills_the_fakecloud_and_the_broker(tmp_path):
    tb = testbed.Testbed(str(tmp_path / "tb")).up()
    cloud = Cloud(tb)
    try:
        killed = testbed.reap(str(tmp_path))
        assert cloud.proc.pid in killed and tb.info["pid"] in killed
        assert cloud.proc.wait(5) == 0  # SIGTERM: a clean exit
        assert not testbed.alive(tb.info["pid"])
    finally:
        if cloud.proc.poll() is None:
            cloud.proc.kill()
            cloud.proc.wait()
        cloud.out.close()
        tb.down()
        testbed.reap(str(tmp_path))
