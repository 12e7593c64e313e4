"""Tests of tests/testbed/testbed.py against the real mosquitto it starts.

Run: /usr/bin/python3 -m pytest -q tests/testbed
"""

import datetime
import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import time

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import testbed  # noqa: E402
from devclient import ConnectRefused, DeviceClient  # noqa: E402

TESTBED_PY = os.path.join(HERE, "testbed.py")
PY = "/usr/bin/python3"


@pytest.fixture
def tb(tmp_path):
    bed = testbed.Testbed(str(tmp_path / "tb"))
    bed.up()
    clients = []
    bed.clients = clients
    try:
        yield bed
    finally:
        for c in clients:
            c.close()
        bed.down()
        testbed.reap(str(tmp_path))
        assert not testbed.alive(bed.info["pid"])


def connect(tb, ident, **kw):
    dev = DeviceClient.connect(tb, ident, **kw)
    tb.clients.append(dev)
    return dev


def cloud_ident(tb):
    return {"cert": tb.info["fakecloud_cert"], "key": tb.info["fakecloud_key"]}


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def load_cert(path):
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def cn(name):
    return name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


# ---------------------------------------------------------------- up and its files


def test_up_writes_testbed_json_and_config(tb):
    with open(os.path.join(tb.dir, "testbed.json")) as f:
        info = json.load(f)
    assert set(info) == {"dir", "host", "port", "mismatch_port", "ca", "ca_key", "server_cert",
                         "fakecloud_cert", "fakecloud_key", "pid"}
    assert info["host"] == "localhost"
    assert info["dir"] == tb.dir
    assert isinstance(info["port"], int) and isinstance(info["mismatch_port"], int)
    assert info["port"] != info["mismatch_port"]
    for key in ("ca", "ca_key", "server_cert", "fakecloud_cert", "fakecloud_key"):
        assert os.path.isabs(info[key]) and os.path.isfile(info[key]), key
    for key in ("ca_key", "fakecloud_key"):
        assert stat.S_IMODE(os.stat(info[key]).st_mode) == 0o600, key
    assert testbed.alive(info["pid"])
    assert tb.status()["running"]

    conf = open(os.path.join(tb.dir, "mosquitto.conf")).read()
    for line in ("per_listener_settings false", "persistence false", "require_certificate true",
                 "use_identity_as_username true", "tls_version tlsv1.2",
                 "acl_file " + os.path.join(tb.dir, "acl"),
                 "log_dest file " + os.path.join(tb.dir, "mosquitto.log"),
                 "listener %d 127.0.0.1" % info["port"],
                 "listener %d 127.0.0.1" % info["mismatch_port"]):
        assert line in conf.splitlines(), line
    acl = open(os.path.join(tb.dir, "acl")).read().splitlines()
    for line in ("pattern readwrite $aws/things/%u/#", "pattern readwrite things/%u/#",
                 "user fakecloud", "topic readwrite $aws/#", "topic readwrite #"):
        assert line in acl, line

    server = load_cert(info["server_cert"])
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert cn(load_cert(info["fakecloud_cert"]).subject) == "fakecloud"


def test_listeners_are_on_loopback_only(tb):
    # a non-loopback address of this host, if it has one, must not reach the broker
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            addr = s.getsockname()[0]
    except OSError:
        pytest.skip("no non-loopback address")
    if addr.startswith("127."):
        pytest.skip("no non-loopback address")
    with pytest.raises(OSError):
        socket.create_connection((addr, tb.port), timeout=1).close()


def test_thing_identity_files(tb):
    ident = tb.thing("dev1")
    assert ident == {"cert": os.path.join(tb.dir, "things", "dev1.crt"),
                     "key": os.path.join(tb.dir, "things", "dev1.key"), "ca": tb.ca}
    assert stat.S_IMODE(os.stat(ident["key"]).st_mode) == 0o600
    cert = load_cert(ident["cert"])
    assert cn(cert.subject) == "dev1"
    assert cert.issuer == load_cert(tb.ca).subject
    assert cert.not_valid_after > datetime.datetime.utcnow()

    expired = load_cert(tb.thing("old", expired=True)["cert"])
    assert expired.not_valid_after < datetime.datetime.utcnow()
    untrusted = load_cert(tb.thing("rogue", untrusted=True)["cert"])
    assert untrusted.issuer != load_cert(tb.ca).subject
    assert untrusted.issuer == load_cert(os.path.join(tb.dir, "untrusted-ca.crt")).subject
    with pytest.raises(testbed.TestbedError):
        tb.thing("../evil")


# ---------------------------------------------------------------- TLS and authentication


def test_connection_without_client_certificate_is_refused(tb):
    with pytest.raises(ConnectRefused):
        connect(tb, None)
    # the same connection with a certificate works, so the refusal was the missing cert
    connect(tb, tb.thing("dev1"))


def raw_connect(tb, ident):
    """Send an MQTT 3.1.1 CONNECT over TLS by hand; return the first bytes back (b"" if none)."""
    ctx = tb.client_context(ident and ident["cert"], ident and ident["key"])
    packet = bytes([0x10, 14, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 30, 0, 2]) + b"rc"
    try:
        with socket.create_connection(("127.0.0.1", tb.port), timeout=3) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(packet)
                return s.recv(4)
    except (ssl.SSLError, OSError):
        return b""


def test_raw_tls_without_certificate_gets_no_connack(tb):
    assert raw_connect(tb, None)[:1] != b"\x20", "CONNACK sent to a client without certificate"
    assert raw_connect(tb, tb.thing("dev1")) == b"\x20\x02\x00\x00"


def test_expired_certificate_is_refused(tb):
    with pytest.raises(ConnectRefused):
        connect(tb, tb.thing("old", expired=True))
    connect(tb, tb.thing("fresh"))


def test_untrusted_certificate_is_refused(tb):
    with pytest.raises(ConnectRefused):
        connect(tb, tb.thing("rogue", untrusted=True))


def test_mismatch_listener_presents_the_wrong_name(tb):
    ident = tb.thing("dev1")
    with pytest.raises(ConnectRefused) as e:
        connect(tb, ident, port=tb.mismatch_port)
    assert "mismatch" in str(e.value).lower() or "doesn't match" in str(e.value) \
        or "not valid for" in str(e.value), str(e.value)
    # the same certificate chain without the name check connects: only the name is wrong
    connect(tb, ident, port=tb.mismatch_port, check_hostname=False)

    ctx = tb.client_context(ident["cert"], ident["key"], check_hostname=False)
    with socket.create_connection(("127.0.0.1", tb.mismatch_port), timeout=3) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            peer = s.getpeercert()
    assert peer["subjectAltName"] == (("DNS", "wrong.example"),)
    # the main listener passes the same check
    connect(tb, ident, client_id="dev1-main")


def test_tls_1_1_is_refused(tb):
    ident = tb.thing("dev1")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(tb.ca)
    ctx.load_cert_chain(ident["cert"], ident["key"])
    try:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot speak TLS 1.1")
    with pytest.raises((ssl.SSLError, OSError)):
        with socket.create_connection(("127.0.0.1", tb.port), timeout=3) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost"):
                pass


# ---------------------------------------------------------------- ACL


def test_thing_uses_its_own_topics(tb):
    dev = connect(tb, tb.thing("dev1"))
    dev.subscribe("things/dev1/#")
    dev.subscribe("$aws/things/dev1/#")
    dev.publish("things/dev1/hello", "plain")
    dev.publish("$aws/things/dev1/shadow/get", "{}")
    assert dev.wait_message("things/dev1/hello")[1] == b"plain"
    assert dev.wait_message("$aws/things/dev1/shadow/get")[1] == b"{}"


def test_acl_keeps_things_apart(tb):
    dev1 = connect(tb, tb.thing("dev1"))
    dev2 = connect(tb, tb.thing("dev2"))
    cloud = connect(tb, cloud_ident(tb))
    for f in ("things/dev1/#", "$aws/things/dev1/#", "things/dev2/#", "$aws/things/dev2/#", "#"):
        dev1.subscribe(f)
    cloud.subscribe("#")
    cloud.subscribe("$aws/#")

    # dev2 writes to dev1's topics: acknowledged (MQTT 3.1.1 has no way to say no) but dropped
    dev2.publish("things/dev1/cmd", "intruder")
    dev2.publish("$aws/things/dev1/jobs/notify", "intruder")
    # dev2's own messages are not readable by dev1 although dev1 subscribed to them
    dev2.publish("things/dev2/own", "private")
    dev2.publish("$aws/things/dev2/own", "private")
    # the marker comes after everything above: once dev1 has it, the rest would be there
    dev1.publish("things/dev1/marker", "m")
    dev1.wait_message("things/dev1/marker")
    cloud.wait_message("things/dev1/marker")

    assert dev1.topics().count("things/dev1/marker") >= 1
    for topic in ("things/dev1/cmd", "$aws/things/dev1/jobs/notify", "things/dev2/own",
                  "$aws/things/dev2/own"):
        assert topic not in dev1.topics(), topic
    # the cloud sees every thing's own topics, '$aws' ones included, and nothing denied
    cloud.wait_message("things/dev2/own")
    cloud.wait_message("$aws/things/dev2/own")
    assert "things/dev1/cmd" not in cloud.topics()


def test_cloud_reaches_a_thing_on_its_topics(tb):
    dev = connect(tb, tb.thing("dev1"))
    dev.subscribe("$aws/things/dev1/#")
    cloud = connect(tb, cloud_ident(tb))
    cloud.publish("$aws/things/dev1/jobs/notify-next", "{}")
    assert dev.wait_message("$aws/things/dev1/jobs/notify-next")[1] == b"{}"


# ---------------------------------------------------------------- stop, start, restart


def test_stop_start_keeps_ports_and_clients_reconnect(tb):
    port, mismatch_port = tb.port, tb.mismatch_port
    dev = connect(tb, tb.thing("dev1"))
    dev.wait_connects(1)
    pid = tb.info["pid"]

    tb.stop()
    assert not testbed.alive(pid)
    assert not tb.status()["running"]
    assert not port_open(port), "stopped broker still accepts connections"

    tb.start()
    assert tb.port == port and tb.mismatch_port == mismatch_port
    assert tb.info["pid"] != pid and testbed.alive(tb.info["pid"])
    dev.wait_connects(2, timeout=10)
    dev.subscribe("things/dev1/#")
    dev.publish("things/dev1/after", "x")
    dev.wait_message("things/dev1/after")


def test_restart_with_down_time(tb):
    dev = connect(tb, tb.thing("dev1"))
    t0 = time.monotonic()
    tb.restart(down=0.5)
    assert time.monotonic() - t0 >= 0.5
    dev.wait_connects(2, timeout=10)


def test_start_failure_is_reported_with_the_log(tb):
    tb.stop()
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", tb.port))
        blocker.listen(1)
        with pytest.raises(testbed.TestbedError) as e:
            tb.start()
    assert "mosquitto" in str(e.value)
    assert "Address already in use" in str(e.value) or "in use" in str(e.value).lower()
    tb.start()  # and it recovers once the port is free


# ---------------------------------------------------------------- command line and reap


def run(*args, check=True):
    p = subprocess.run([PY, TESTBED_PY] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=30)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_command_line(tmp_path):
    d = str(tmp_path / "cli")
    try:
        port = int(run("up", d).stdout.strip())
        info = json.load(open(os.path.join(d, "testbed.json")))
        assert info["port"] == port

        ident = json.loads(run("thing", d, "dev9", "--days", "3").stdout)
        assert set(ident) == {"cert", "key", "ca"}
        assert os.path.isfile(ident["cert"])
        json.loads(run("thing", d, "gone", "--expired").stdout)
        json.loads(run("thing", d, "evil", "--untrusted").stdout)

        st = json.loads(run("status", d).stdout)
        assert st["running"] and st["port"] == port

        run("stop", d)
        p = run("status", d, check=False)
        assert p.returncode == 3 and not json.loads(p.stdout)["running"]
        assert int(run("start", d).stdout) == port
        assert int(run("restart", d, "--down", "0.2").stdout) == port
        run("down", d)
        assert not json.loads(run("status", d, check=False).stdout)["running"]
        assert os.path.exists(os.path.join(d, "testbed.json")), "down removed the files"

        p = run("start", str(tmp_path / "nothing"), check=False)
        assert p.returncode == 1 and "no testbed here" in p.stderr
    finally:
        testbed.reap(str(tmp_path))


def test_reap_kills_everything_recorded(tmp_path):
    a = testbed.Testbed(str(tmp_path / "a")).up()
    b = testbed.Testbed(str(tmp_path / "deeper" / "b")).up()
    # a stand-in for a fakecloud: its command line names fakecloud
    fake = subprocess.Popen([PY, "-c", "import time; time.sleep(60)", "fakecloud"])
    # an unrelated process whose pid is recorded by mistake must survive
    bystander = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"])
    try:
        with open(tmp_path / "deeper" / "b" / "fakecloud.pid", "w") as f:
            f.write("%d\n" % fake.pid)
        os.makedirs(tmp_path / "c")
        with open(tmp_path / "c" / "fakecloud.pid", "w") as f:
            f.write("%d\n" % bystander.pid)

        p = run("reap", str(tmp_path))
        killed = json.loads(p.stdout)["killed"]
        assert sorted(killed) == sorted([a.info["pid"], b.info["pid"], fake.pid])
        assert fake.wait(5) is not None
        for bed in (a, b):
            assert not testbed.alive(bed.info["pid"])
            assert not port_open(bed.port)
        assert bystander.poll() is None
        assert json.loads(run("reap", str(tmp_path)).stdout)["killed"] == []
    finally:
        for proc in (fake, bystander):
            proc.kill()
            proc.wait()
        testbed.reap(str(tmp_path))
