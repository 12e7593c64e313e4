"""Tests of the secure tunneling service of the fakecloud (tunnel_api.py).

Run: /usr/bin/python3 -m pytest -q tests/fakecloud/test_tunnel_api.py

Both tunnel ends are played by WsClient below: a small blocking RFC 6455 client
over TLS with its own protobuf codec (it shares nothing with tunnel_api.py but
the constants of the reference), so a codec bug on one side shows up. One broker
and one fakecloud for the module; every test opens its own tunnel.
"""

import base64
import hashlib
import json
import os
import random
import socket
import ssl
import struct
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "testbed"))
import testbed  # noqa: E402
from devclient import DeviceClient  # noqa: E402
from conftest import cloud_fixture  # noqa: E402

P1, P2, P3 = ("aws.iot.securetunneling-1.0", "aws.iot.securetunneling-2.0",
              "aws.iot.securetunneling-3.0")
DATA, STREAM_START, STREAM_RESET, SESSION_RESET, SERVICE_IDS, CONNECTION_START, CONNECTION_RESET = \
    1, 2, 3, 4, 5, 6, 7
NAMES = {1: "DATA", 2: "STREAM_START", 3: "STREAM_RESET", 4: "SESSION_RESET", 5: "SERVICE_IDS",
         6: "CONNECTION_START", 7: "CONNECTION_RESET"}


# ---------------------------------------------------------------- protobuf, independently


def _uvarint(n):
    n &= 0xFFFFFFFFFFFFFFFF
    out = b""
    while n > 0x7F:
        out += bytes([(n & 0x7F) | 0x80])
        n >>= 7
    return out + bytes([n])


def enc(type, streamId=0, ignorable=False, payload=b"", serviceId="", availableServiceIds=(),
        connectionId=0, extra=b""):
    """Message bytes: fields in tag order, zero values omitted; extra appended raw."""
    out = b""
    if type:
        out += b"\x08" + _uvarint(type)
    if streamId:
        out += b"\x10" + _uvarint(streamId)
    if ignorable:
        out += b"\x18\x01"
    if payload:
        out += b"\x22" + _uvarint(len(payload)) + payload
    if serviceId:
        out += b"\x2a" + _uvarint(len(serviceId)) + serviceId.encode()
    for s in availableServiceIds:
        out += b"\x32" + _uvarint(len(s)) + s.encode()
    if connectionId:
        out += b"\x38" + _uvarint(connectionId)
    return out + extra


def dec(b):
    m = {"type": 0, "streamId": 0, "ignorable": False, "payload": b"", "serviceId": "",
         "availableServiceIds": [], "connectionId": 0}
    i = 0

    def varint():
        nonlocal i
        v = s = 0
        while True:
            c = b[i]
            i += 1
            v |= (c & 0x7F) << s
            s += 7
            if c < 0x80:
                return v
    while i < len(b):
        key = varint()
        f, wt = key >> 3, key & 7
        if wt == 0:
            v = varint()
        else:
            assert wt == 2, "wire type %d" % wt
            n = varint()
            v = b[i:i + n]
            i += n
        if f == 1:
            m["type"] = v
        elif f == 2:
            m["streamId"] = v - (1 << 64) if v >= 1 << 63 else v
        elif f == 3:
            m["ignorable"] = bool(v)
        elif f == 4:
            m["payload"] = bytes(v)
        elif f == 5:
            m["serviceId"] = v.decode()
        elif f == 6:
            m["availableServiceIds"].append(v.decode())
        elif f == 7:
            m["connectionId"] = v
        else:
            raise AssertionError("unexpected field %d" % f)
    return m


def short(m):
    """(type name, streamId, serviceId, connectionId, payload) of a decoded message."""
    return (NAMES.get(m["type"], m["type"]), m["streamId"], m["serviceId"], m["connectionId"], m["payload"])


# ---------------------------------------------------------------- a WebSocket tunnel client


class Refused(Exception):
    def __init__(self, status, headers, body):
        super().__init__("HTTP %d %s" % (status, body))
        self.status, self.headers, self.body = status, headers, body


class WsClient:
    """One end of a tunnel: blocking, used by one thread at a time."""

    def __init__(self, cloud, mode, token, protocols=(P3,), client_token=None, headers=(),
                 target=None, cookie=False):
        self.cloud, self.mode, self.token = cloud, mode, token
        self.protocols, self.client_token = protocols, client_token
        self.extra, self.cookie = list(headers), cookie
        self.target = target or "/tunnel?local-proxy-mode=" + mode
        self.sock = None
        self.rbuf = b""
        self.stream = b""          # data bytes not yet parsed into messages
        self.frames = []           # (opcode, fin, payload length) of every frame received
        self.msgs = []             # decoded messages, in order
        self.pongs = []            # payloads of pongs received
        self.pings_answered = 0
        self.closed = None         # ("close", code) or ("eof", None)
        self.frag = False

    def request(self):
        key = base64.b64encode(os.urandom(16)).decode()
        self.key = key
        lines = ["GET %s HTTP/1.1" % self.target, "Host: localhost", "Upgrade: websocket",
                 "Connection: upgrade", "Sec-WebSocket-Key: " + key, "Sec-WebSocket-Version: 13"]
        if self.protocols:
            lines.append("Sec-WebSocket-Protocol: " + ", ".join(self.protocols))
        if self.token is not None:
            lines.append(("Cookie: awsiot-tunnel-token=%s" if self.cookie else "access-token: %s")
                         % self.token)
        if self.client_token:
            lines.append("client-token: " + self.client_token)
        lines += self.extra
        lines.append("User-Agent: test_tunnel_api")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def connect(self, timeout=5):
        raw = socket.create_connection(("127.0.0.1", self.cloud.tunnel_port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self.cloud.tb.client_context().wrap_socket(raw, server_hostname="localhost")
        self.sock.sendall(self.request())
        while b"\r\n\r\n" not in self.rbuf:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed during the upgrade"
            self.rbuf += chunk
        head, self.rbuf = self.rbuf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        self.headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            self.headers[k.strip().lower()] = v.strip()
        if self.status != 101:
            n = int(self.headers.get("content-length", 0))
            while len(self.rbuf) < n:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self.rbuf += chunk
            body = self.rbuf[:n].decode(errors="replace").strip()
            self.sock.close()
            raise Refused(self.status, self.headers, body)
        want = base64.b64encode(hashlib.sha1(
            (self.key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        assert self.headers["sec-websocket-accept"] == want
        self.protocol = self.headers["sec-websocket-protocol"]
        return self

    # ---- frames

    def send_frame(self, opcode, payload=b"", fin=True, mask=True, rsv=0):
        n = len(payload)
        b0 = (0x80 if fin else 0) | rsv | opcode
        mbit = 0x80 if mask else 0
        if n < 126:
            head = struct.pack("!BB", b0, mbit | n)
        elif n < 65536:
            head = struct.pack("!BBH", b0, mbit | 126, n)
        else:
            head = struct.pack("!BBQ", b0, mbit | 127, n)
        if mask:
            key = os.urandom(4)
            m = (key * (n // 4 + 1))[:n]
            payload = (int.from_bytes(payload, "big") ^ int.from_bytes(m, "big")).to_bytes(n, "big") if n else b""
            head += key
        self.sock.sendall(head + payload)

    def send(self, *msgs, merge=False, chunk=None):
        """Send messages: one per frame, all in one frame (merge), or the byte
        stream cut into frames of chunk bytes."""
        stream = [struct.pack("!H", len(m)) + m for m in msgs]
        if merge or chunk:
            data = b"".join(stream)
            step = chunk or len(data)
            for i in range(0, len(data), step):
                self.send_frame(2, data[i:i + step])
        else:
            for s in stream:
                self.send_frame(2, s)

    def _recv_exact(self, n):
        while len(self.rbuf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.rbuf)))
            if not chunk:
                raise EOFError
            self.rbuf += chunk
        data, self.rbuf = self.rbuf[:n], self.rbuf[n:]
        return data

    def read_frame(self):
        h = self._recv_exact(2)
        fin, opcode = bool(h[0] & 0x80), h[0] & 0x0F
        assert not h[1] & 0x80, "server frames must not be masked"
        n = h[1] & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._recv_exact(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._recv_exact(8))[0]
        assert n <= 131076, "frame of %d bytes" % n
        return fin, opcode, self._recv_exact(n)

    def pump(self, timeout):
        """Read one frame (answering pings); False on timeout, close or EOF."""
        if self.closed:
            return False
        self.sock.settimeout(timeout)
        try:
            fin, opcode, data = self.read_frame()
        except (socket.timeout, ssl.SSLWantReadError):
            return False
        except (EOFError, ConnectionError, ssl.SSLError, OSError):
            self.closed = ("eof", None)
            return False
        self.frames.append((opcode, fin, len(data)))
        if opcode == 9:
            self.send_frame(10, data)
            self.pings_answered += 1
        elif opcode == 10:
            self.pongs.append(data)
        elif opcode == 8:
            code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
            self.closed = ("close", code)
            try:
                self.send_frame(8, data[:2])
            except OSError:
                pass
            return False
        else:
            assert opcode in (0, 2), "text or unknown frame from the service: %d" % opcode
            assert (opcode == 0) == self.frag, "continuation frames out of place"
            self.frag = not fin
            self.stream += data
            while len(self.stream) >= 2:
                n = struct.unpack("!H", self.stream[:2])[0]
                if len(self.stream) < 2 + n:
                    break
                self.msgs.append(dec(self.stream[2:2 + n]))
                self.stream = self.stream[2 + n:]
        return True

    def wait_msgs(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        while len(self.msgs) < n:
            left = deadline - time.monotonic()
            assert left > 0, "%s: %d messages, expected %d: %s" % (
                self.mode, len(self.msgs), n, [short(m)[:4] for m in self.msgs])
            if not self.pump(min(left, 0.5)) and self.closed:
                raise AssertionError("%s closed %s after %d messages, expected %d"
                                     % (self.mode, self.closed, len(self.msgs), n))
        return self.msgs[:n]

    def take(self, n, timeout=5.0):
        """The next n messages, removed from the list."""
        got = self.wait_msgs(n, timeout)
        del self.msgs[:n]
        return got

    def quiet(self, seconds=0.2):
        """Assert that no message arrives for a while."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.pump(max(0.01, deadline - time.monotonic()))
        assert not self.msgs, [short(m)[:4] for m in self.msgs]

    def wait_closed(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not self.closed:
            assert time.monotonic() < deadline, "%s not closed" % self.mode
            self.pump(0.2)
        return self.closed

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass


# ---------------------------------------------------------------- fixtures and helpers


def _prepare(c, root):
    c.tunnel_port = c.ok("ping")["tunnel_port"]


cloud = cloud_fixture("tunnel", _prepare)


@pytest.fixture(autouse=True)
def no_leaks(cloud):
    yield
    for d in cloud.clients:
        d.close()
    cloud.clients.clear()


def client(cloud, mode, token, **kw):
    c = WsClient(cloud, mode, token, **kw)
    cloud.clients.append(c)
    return c


def open_tunnel(cloud, services=("SSH",), **kw):
    return cloud.ok("open_tunnel", services=list(services), notify=False, **kw)


def pair(cloud, services=("SSH",), vs=P3, vd=P3, tunnel=None):
    """Open a tunnel, connect both ends, consume their SERVICE_IDS (V2/V3)."""
    t = tunnel or open_tunnel(cloud, services)
    dst = client(cloud, "destination", t["destination_token"], protocols=(vd,)).connect()
    src = client(cloud, "source", t["source_token"], protocols=(vs,)).connect()
    for c, p in ((dst, vd), (src, vs)):
        if p != P1:
            (m,) = c.take(1)
            assert short(m)[0] == "SERVICE_IDS" and m["availableServiceIds"] == list(services)
    return t, src, dst


def state(cloud, t):
    return cloud.ok("tunnels", tunnel_id=t["tunnel_id"])["tunnels"][0]


def log(cloud, t, **kw):
    return cloud.ok("tunnel_log", tunnel_id=t["tunnel_id"], **kw)["entries"]


def refused(cloud, mode, token, **kw):
    with pytest.raises(Refused) as e:
        client(cloud, mode, token, **kw).connect()
    assert "channel-id" in e.value.headers
    return e.value.status


# ---------------------------------------------------------------- the codec


def test_both_codecs_give_the_reference_bytes():
    import tunnel_api
    # reference §4: SERVICE_IDS ["ssh1"] and STREAM_START stream 1, "ssh1", connection 1
    sids = bytes.fromhex("0805320473736831")
    start = bytes.fromhex("080210012a04737368313801")
    assert enc(SERVICE_IDS, availableServiceIds=["ssh1"]) == sids
    assert enc(STREAM_START, 1, serviceId="ssh1", connectionId=1) == start
    assert tunnel_api.encode_message(5, available_service_ids=["ssh1"]) == sids
    assert tunnel_api.encode_message(2, 1, service_id="ssh1", connection_id=1) == start
    m = tunnel_api.decode_message(start)
    assert (m["type"], m["streamId"], m["serviceId"], m["connectionId"]) == (2, 1, "ssh1", 1)
    big = enc(DATA, -3, payload=b"x" * 64512, serviceId="SSH", connectionId=300, ignorable=True)
    m = tunnel_api.decode_message(big)
    assert (m["streamId"], m["payload_size"], m["connectionId"], m["ignorable"]) == (-3, 64512, 300, True)
    assert dec(big)["streamId"] == -3
    assert tunnel_api.decode_message(b"\x08\x01\x98\x01\x05")["unknown"] == [19]
    for bad in (b"\x22\x05ab", b"\x08", b"\x0a\x01x", b"\x2a\x01\xff"):
        with pytest.raises(ValueError):
            tunnel_api.decode_message(bad)


# ---------------------------------------------------------------- the upgrade


@pytest.mark.parametrize("offered,chosen", [
    ((P1,), P1), ((P2,), P2), ((P3,), P3), ((P1, P2, P3), P3), ((P2, P1), P2),
    (("foo", P1), P1)])
def test_subprotocol_selection_and_service_ids(cloud, offered, chosen):
    t = open_tunnel(cloud, ["SSH", "WEB"])
    for mode in ("destination", "source"):
        c = client(cloud, mode, t[mode + "_token"], protocols=offered).connect()
        assert c.protocol == chosen
        assert c.headers["connection"].lower() == "upgrade" and c.headers["upgrade"] == "websocket"
        assert len(c.headers["channel-id"]) > 20
        if chosen == P1:
            c.quiet(0.15)  # a V1 end gets no SERVICE_IDS
        else:
            (m,) = c.take(1)
            assert short(m)[:4] == ("SERVICE_IDS", 0, "", 0)
            assert m["availableServiceIds"] == ["SSH", "WEB"]
            assert c.frames[0] == (2, True, 2 + len(enc(SERVICE_IDS, availableServiceIds=["SSH", "WEB"])))
    st = state(cloud, t)
    for mode in ("source", "destination"):
        e = st["ends"][mode]
        assert e["connected"] and e["protocol"] == chosen and e["version"] == int(chosen[-3])
        hdrs = dict(e["request"]["headers"])
        assert e["request"]["target"] == "/tunnel?local-proxy-mode=" + mode
        assert hdrs["access-token"].startswith("<redacted") and t[mode + "_token"] not in json.dumps(e)


def test_max_version_caps_the_choice(cloud):
    t = open_tunnel(cloud, max_version=2)
    c = client(cloud, "destination", t["destination_token"], protocols=(P3, P2, P1)).connect()
    assert c.protocol == P2
    assert refused(cloud, "source", t["source_token"], protocols=(P3,)) == 400


def test_bad_upgrades_are_refused_with_4xx(cloud):
    t = open_tunnel(cloud)
    dt, st = t["destination_token"], t["source_token"]
    assert len(dt) > 700 and dt != st
    assert refused(cloud, "destination", None) == 401
    assert refused(cloud, "destination", "AQGAAXnotatoken") == 403
    assert refused(cloud, "destination", st) == 403           # the source's token
    assert refused(cloud, "source", dt) == 403
    assert refused(cloud, "destination", dt, target="/tunnels?local-proxy-mode=destination") == 400
    assert refused(cloud, "destination", dt, target="/tunnel") == 400
    assert refused(cloud, "destination", dt, target="/tunnel?local-proxy-mode=both") == 400
    assert refused(cloud, "destination", dt, protocols=()) == 400
    assert refused(cloud, "destination", dt, protocols=("aws.iot.securetunneling-4.0",)) == 400
    assert refused(cloud, "destination", dt, headers=["Cookie: awsiot-tunnel-token=" + dt]) == 400
    assert refused(cloud, "destination", dt, headers=["access-token: " + dt]) == 400
    assert refused(cloud, "destination", dt, client_token="short") == 400
    assert refused(cloud, "destination", dt, headers=["X-Pad: " + "p" * 3500]) == 431
    # none of those spent the token; the cookie form works
    c = client(cloud, "destination", dt, cookie=True).connect()
    assert c.protocol == P3
    st_ = state(cloud, t)
    assert st_["ends"]["destination"]["refused"] >= 5 and st_["ends"]["destination"]["handshakes"] == 1


def test_token_single_use_without_client_token_and_replaced_with_one(cloud):
    t = open_tunnel(cloud)
    first = client(cloud, "destination", t["destination_token"]).connect()
    first.take(1)
    assert refused(cloud, "destination", t["destination_token"]) == 403   # spent

    ct = "0123456789abcdef-0123456789abcdef"
    src1 = client(cloud, "source", t["source_token"], client_token=ct).connect()
    src1.take(1)
    assert refused(cloud, "source", t["source_token"]) == 403
    assert refused(cloud, "source", t["source_token"], client_token=ct.replace("0", "1")) == 403
    # a second tunnel cannot use the same client token
    t2 = open_tunnel(cloud)
    assert refused(cloud, "source", t2["source_token"], client_token=ct) == 403
    src2 = client(cloud, "source", t["source_token"], client_token=ct).connect()
    src2.take(1)
    assert src1.wait_closed() == ("close", 1000)
    # the new source works
    src2.send(enc(STREAM_START, 1, serviceId="SSH", connectionId=1))
    assert short(first.take(1)[0])[:4] == ("STREAM_START", 1, "SSH", 1)
    assert state(cloud, t)["ends"]["source"]["handshakes"] == 2


def test_http_status_hook(cloud):
    t = open_tunnel(cloud)
    cloud.ok("tunnel_hooks", tunnel_id=t["tunnel_id"], http_status=503, http_status_count=2)
    assert refused(cloud, "destination", t["destination_token"]) == 503
    assert refused(cloud, "source", t["source_token"]) == 503
    cloud.ok("tunnel_hooks", tunnel_id=t["tunnel_id"], http_status=429, http_status_mode="source")
    client(cloud, "destination", t["destination_token"]).connect()  # not for this mode
    assert refused(cloud, "source", t["source_token"]) == 429
    client(cloud, "source", t["source_token"]).connect()


# ---------------------------------------------------------------- forwarding


def test_v3_multiplexed_messages_are_forwarded_in_order(cloud):
    t, src, dst = pair(cloud, ["SSH", "WEB", "VNC"])
    sent = [
        enc(STREAM_START, 1, serviceId="SSH", connectionId=1),
        enc(STREAM_START, 1, serviceId="WEB", connectionId=1),
        enc(DATA, 1, payload=b"ssh-1a", serviceId="SSH", connectionId=1),
        enc(CONNECTION_START, 1, serviceId="WEB", connectionId=2),
        enc(DATA, 1, payload=b"web-2a", serviceId="WEB", connectionId=2),
        enc(DATA, 1, payload=b"web-1a", serviceId="WEB", connectionId=1),
        enc(CONNECTION_START, 1, serviceId="SSH", connectionId=2),
        enc(DATA, 1, payload=bytes(range(256)) * 200, serviceId="SSH", connectionId=2),
        enc(CONNECTION_RESET, 1, serviceId="WEB", connectionId=2),
        enc(DATA, 1, payload=b"\x00", serviceId="SSH", connectionId=1),
        enc(123, 1, ignorable=True, serviceId="SSH"),  # unknown but ignorable: forwarded
    ]
    src.send(*sent)
    got = dst.take(len(sent))
    assert [enc(**{k: v for k, v in m.items()}) for m in got] == sent
    back = [
        enc(DATA, 1, payload=b"reply-ssh-1", serviceId="SSH", connectionId=1),
        enc(DATA, 1, payload=b"reply-web-1", serviceId="WEB", connectionId=1),
        enc(CONNECTION_RESET, 1, serviceId="SSH", connectionId=2),
        enc(STREAM_RESET, 1, serviceId="WEB"),
    ]
    dst.send(*back)
    assert [enc(**m) for m in src.take(len(back))] == back
    # the service's view
    st = state(cloud, t)
    assert st["active_streams"] == [{"serviceId": "SSH", "streamId": 1}]
    s, d = st["ends"]["source"], st["ends"]["destination"]
    assert s["messages_in"] == len(sent) and d["messages_out"] == len(sent) + 1  # + SERVICE_IDS
    assert d["messages_in"] == len(back) and s["messages_out"] == len(back) + 1
    assert s["bytes_in"] == sum(len(m) + 2 for m in sent)
    assert s["data_bytes_in"] == 6 + 6 + 6 + 51200 + 1 and d["data_bytes_out"] == s["data_bytes_in"]
    assert st["violations"] == []
    entries = log(cloud, t)
    fwd = [(e["from"], e["type"], e["streamId"], e["serviceId"], e["connectionId"], e["payload_size"])
           for e in entries if e["from"] != "service"]
    assert fwd[:3] == [("source", "STREAM_START", 1, "SSH", 1, 0), ("source", "STREAM_START", 1, "WEB", 1, 0),
                       ("source", "DATA", 1, "SSH", 1, 6)]
    assert fwd[7] == ("source", "DATA", 1, "SSH", 2, 51200)
    assert fwd[10][1] == 123 and fwd[-1] == ("destination", "STREAM_RESET", 1, "WEB", 0, 0)
    assert all(e["forwarded"] for e in entries)
    svc = [e for e in entries if e["from"] == "service"]
    assert [(e["to"], e["type"], e["availableServiceIds"]) for e in svc] == [
        ("destination", "SERVICE_IDS", ["SSH", "WEB", "VNC"]), ("source", "SERVICE_IDS", ["SSH", "WEB", "VNC"])]


def test_v1_and_v2_ends_are_forwarded_as_they_are(cloud):
    t, src, dst = pair(cloud, ["SSH"], vs=P1, vd=P2)
    src.send(enc(STREAM_START, 7), enc(DATA, 7, payload=b"hello"))
    assert [short(m) for m in dst.take(2)] == [("STREAM_START", 7, "", 0, b""), ("DATA", 7, "", 0, b"hello")]
    dst.send(enc(DATA, 7, payload=b"world"), enc(STREAM_RESET, 7))
    assert [short(m) for m in src.take(2)] == [("DATA", 7, "", 0, b"world"), ("STREAM_RESET", 7, "", 0, b"")]
    st = state(cloud, t)
    assert (st["ends"]["source"]["version"], st["ends"]["destination"]["version"]) == (1, 2)
    assert st["violations"] == []


def test_stream_start_without_a_destination_is_reset(cloud):
    t = open_tunnel(cloud)
    src = client(cloud, "source", t["source_token"]).connect()
    src.take(1)
    src.send(enc(STREAM_START, 1, serviceId="SSH", connectionId=1), enc(DATA, 1, payload=b"x", serviceId="SSH",
                                                                         connectionId=1))
    assert short(src.take(1)[0])[:4] == ("STREAM_RESET", 1, "SSH", 0)
    src.quiet(0.1)
    assert [e["forwarded"] for e in log(cloud, t) if e["from"] == "source"] == [False, False]
    assert state(cloud, t)["active_streams"] == []


# ---------------------------------------------------------------- frame hooks


def _payloads(n, seed):
    rnd = random.Random(seed)
    return [rnd.randbytes(rnd.choice((0, 1, 5, 200, 3000, 40000))) for _ in range(n)]


def test_rechunk_merge_and_fragment_preserve_the_byte_stream(cloud):
    t, src, dst = pair(cloud, ["SSH"])
    tid = t["tunnel_id"]
    cloud.ok("tunnel_hooks", tunnel_id=tid, to="destination", rechunk=7)
    cloud.ok("tunnel_hooks", tunnel_id=tid, to="source", merge=True)
    src.send(enc(STREAM_START, 1, serviceId="SSH"))
    dst.take(1)
    sent = [enc(DATA, 1, payload=p, serviceId="SSH") for p in _payloads(30, 1) if p]
    # the client's own framing: the byte stream cut in 1000-byte frames
    src.send(*sent, chunk=1000)
    got = dst.take(len(sent), timeout=15)
    assert [enc(**m) for m in got] == sent
    data_frames = [f for f in dst.frames[1:] if f[0] in (0, 2)]
    assert data_frames and max(f[2] for f in data_frames) <= 7
    # merge towards the source: 20 small replies arrive in fewer frames
    replies = [enc(DATA, 1, payload=b"r%d" % i, serviceId="SSH") for i in range(20)]
    before = len(src.frames)
    dst.send(*replies, merge=True)
    assert [enc(**m) for m in src.take(20)] == replies
    merged = [f for f in src.frames[before:] if f[0] == 2]
    assert len(merged) < 20 and max(f[2] for f in merged) > len(replies[0]) + 2
    # fragmented messages (continuation frames), and back to normal framing
    cloud.ok("tunnel_hooks", tunnel_id=tid, to="source", merge=False, fragment=5)
    big = enc(DATA, 1, payload=os.urandom(100), serviceId="SSH")
    before = len(src.frames)
    dst.send(big)
    assert enc(**src.take(1)[0]) == big
    ops = [f[0] for f in src.frames[before:]]
    assert ops[0] == 2 and ops[1:] == [0] * (len(ops) - 1) and len(ops) == -(-(len(big) + 2) // 5)
    cloud.ok("tunnel_hooks", tunnel_id=tid, to="both", rechunk=0, fragment=0)
    before = len(dst.frames)
    src.send(*sent[:3])
    assert [enc(**m) for m in dst.take(3)] == sent[:3]
    assert [f[2] for f in dst.frames[before:]] == [len(m) + 2 for m in sent[:3]]
    assert state(cloud, t)["violations"] == []


def _transfer(cloud, sender, receiver, total, service="SSH"):
    """Send total random bytes as 32 KiB DATA messages from a thread; read them."""
    blob = random.Random(total).randbytes(total)
    chunks = [blob[i:i + 32768] for i in range(0, total, 32768)]

    def pump():
        sender.sock.settimeout(30)  # back-pressure may stall it for a while
        for c in chunks:
            sender.send(enc(DATA, 1, payload=c, serviceId=service, connectionId=1))
    th = threading.Thread(target=pump, daemon=True)
    th.start()
    got = bytearray()
    deadline = time.monotonic() + 20
    try:
        while len(got) < total:
            assert time.monotonic() < deadline, "received %d of %d" % (len(got), total)
            receiver.pump(1.0)
            for m in receiver.msgs:
                assert short(m)[:4] == ("DATA", 1, service, 1)
                got += m["payload"]
            receiver.msgs.clear()
    finally:
        th.join(10)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(blob).hexdigest()


def test_large_transfers_each_way_with_back_pressure(cloud):
    t, src, dst = pair(cloud, ["SSH"])
    cloud.ok("tunnel_hooks", tunnel_id=t["tunnel_id"], to="destination", rechunk=1000)
    cloud.ok("tunnel_hooks", tunnel_id=t["tunnel_id"], to="source", merge=True)
    src.send(enc(STREAM_START, 1, serviceId="SSH", connectionId=1))
    dst.take(1)
    # both peers may send frames up to 131076 bytes: two full messages in one frame
    two = [enc(DATA, 1, payload=bytes([i]) * 64512, serviceId="SSH", connectionId=1) for i in (1, 2)]
    assert 2 * (len(two[0]) + 2) <= 131076
    src.send(*two, merge=True)
    assert [enc(**m) for m in dst.take(2)] == two
    # more than the service buffers (1 MiB per end + sockets): it has to stop reading the sender
    _transfer(cloud, src, dst, 6 * 1024 * 1024)
    _transfer(cloud, dst, src, 4 * 1024 * 1024)
    st = state(cloud, t)
    assert st["ends"]["destination"]["data_bytes_out"] == 6 * 1024 * 1024 + 2 * 64512
    assert st["ends"]["source"]["data_bytes_out"] == 4 * 1024 * 1024
    assert st["ends"]["destination"]["frames_out"] > 6 * 1024 * 1024 // 1000
    assert st["ends"]["source"]["frames_out"] < 4 * 1024 * 1024 // 32768
    assert st["violations"] == []


# ---------------------------------------------------------------- injected resets, drops, close


def test_injected_stream_and_session_resets(cloud):
    t, src, dst = pair(cloud, ["SSH", "WEB"])
    src.send(enc(STREAM_START, 4, serviceId="SSH", connectionId=1),
             enc(STREAM_START, 9, serviceId="WEB", connectionId=1))
    dst.take(2)
    cloud.ok("tunnel_hooks", tunnel_id=t["tunnel_id"], inject="STREAM_RESET", service="WEB")
    for c in (src, dst):
        assert short(c.take(1)[0])[:4] == ("STREAM_RESET", 9, "WEB", 0)
    assert state(cloud, t)["active_streams"] == [{"serviceId": "SSH", "streamId": 4}]
    cloud.ok("tunnel_hooks", tunnel_id=t["tunnel_id"], to="destination", inject="STREAM_RESET")
    assert short(dst.take(1)[0])[:4] == ("STREAM_RESET", 4, "SSH", 0)
    src.quiet(0.1)
    cloud.ok("tunnel_hooks", tunnel_id=t["tunnel_id"], to="source", inject="SESSION_RESET")
    assert short(src.take(1)[0])[:4] == ("SESSION_RESET", 0, "", 0)
    dst.quiet(0.1)
    inj = [e for e in log(cloud, t) if e.get("injected")]
    assert [(e["to"], e["type"]) for e in inj] == [
        ("source", "STREAM_RESET"), ("destination", "STREAM_RESET"), ("destination", "STREAM_RESET"),
        ("source", "SESSION_RESET")]
    resp = cloud.cmd("tunnel_hooks", tunnel_id=t["tunnel_id"], inject="STREAM_RESET")
    assert resp["ok"] is False and "no active stream" in resp["error"]


def test_drop_hook_mid_transfer_and_reconnect(cloud):
    t = open_tunnel(cloud)
    ct = "c1a2b3c4-d5e6-4f70-8192-a3b4c5d6e7f8"
    dst = client(cloud, "destination", t["destination_token"], client_token=ct).connect()
    src = client(cloud, "source", t["source_token"]).connect()
    dst.take(1)
    src.take(1)
    cloud.ok("tunnel_hooks", tunnel_id=t["tunnel_id"], drop="destination", drop_after=3000)
    src.send(enc(STREAM_START, 1, serviceId="SSH", connectionId=1))
    for i in range(5):
        src.send(enc(DATA, 1, payload=b"%d" % i * 1000, serviceId="SSH", connectionId=1))
    assert dst.wait_closed() == ("eof", None)       # no close frame: the TCP connection dropped
    assert len([m for m in dst.msgs if m["type"] == DATA]) <= 3
    # the source is told that its stream is gone
    msgs = src.take(1)
    assert short(msgs[0])[:4] == ("STREAM_RESET", 1, "SSH", 0)
    st = state(cloud, t)
    assert not st["ends"]["destination"]["connected"] and st["active_streams"] == []
    assert st["ends"]["destination"]["last_close"]["by"] == "drop"
    # the destination comes back with its client token and gets SERVICE_IDS again
    dst2 = client(cloud, "destination", t["destination_token"], client_token=ct).connect()
    assert short(dst2.take(1)[0])[0] == "SERVICE_IDS"
    cloud.ok("wait_tunnel", tunnel_id=t["tunnel_id"], end="destination", handshakes=2, timeout=2)
    src.send(enc(STREAM_START, 2, serviceId="SSH", connectionId=1))
    assert short(dst2.take(1)[0])[:4] == ("STREAM_START", 2, "SSH", 1)
    # an immediate drop of the source
    cloud.ok("tunnel_hooks", tunnel_id=t["tunnel_id"], drop="source")
    assert src.wait_closed() == ("eof", None)
    assert short(dst2.take(1)[0])[:4] == ("STREAM_RESET", 2, "SSH", 0)
    cloud.ok("wait_tunnel", tunnel_id=t["tunnel_id"], end="source", connected=False, timeout=2)


def test_pings_pongs_and_close_handshake(cloud):
    t, src, dst = pair(cloud)
    src.send_frame(9, b"1718000000000")
    while not src.pongs:
        assert src.pump(2)
    assert src.pongs == [b"1718000000000"]
    cloud.ok("tunnel_hooks", tunnel_id=t["tunnel_id"], to="destination", ping="hello")
    deadline = time.monotonic() + 3
    while state(cloud, t)["ends"]["destination"]["pongs_in"] < 1:
        dst.pump(0.1)
        assert time.monotonic() < deadline
    st = state(cloud, t)
    assert st["ends"]["destination"]["last_pong"] == b"hello".hex() and dst.pings_answered == 1
    assert st["ends"]["source"]["pings_in"] == 1 and st["ends"]["source"]["pongs_out"] == 1
    cloud.ok("tunnel_hooks", tunnel_id=t["tunnel_id"], to="source", pong=False)
    src.send_frame(9, b"x")
    src.quiet(0.2)
    assert src.pongs == [b"1718000000000"]
    # close from the client: echoed code, the end is gone
    dst.send_frame(8, struct.pack("!H", 1001) + b"bye")
    assert dst.wait_closed() == ("close", 1001)
    cloud.ok("wait_tunnel", tunnel_id=t["tunnel_id"], end="destination", connected=False, timeout=2)
    assert state(cloud, t)["ends"]["destination"]["last_close"] == {"code": 1001, "reason": "bye", "by": "client"}


def test_close_tunnel_closes_both_ends_and_refuses_tokens(cloud):
    t, src, dst = pair(cloud)
    st = cloud.ok("close_tunnel", tunnel_id=t["tunnel_id"])["tunnel"]
    assert st["status"] == "CLOSED"
    assert src.wait_closed() == ("close", 1000) and dst.wait_closed() == ("close", 1000)
    assert refused(cloud, "source", t["source_token"]) == 403
    cloud.ok("wait_tunnel", tunnel_id=t["tunnel_id"], end="source", connected=False, timeout=2)


# ---------------------------------------------------------------- what the service refuses


@pytest.mark.parametrize("who,action,code,reason", [
    ("source", lambda c: c.send_frame(1, b"text"), 1003, "text frame"),
    ("source", lambda c: c.send_frame(2, b"\x00\x02\x08\x01", mask=False), 1002, "unmasked"),
    # the header of a binary frame of 131077 bytes (masked), no payload
    ("source", lambda c: c.sock.sendall(b"\x82\xff" + struct.pack("!Q", 131077) + b"mask"), 1009,
     "frame payload"),
    ("source", lambda c: c.send_frame(0, b"\x00\x00"), 1002, "continuation"),
    ("destination", lambda c: c.send(enc(STREAM_START, 1, serviceId="SSH")), 1008, "from the destination"),
    ("source", lambda c: c.send(enc(DATA, 1, payload=b"x", serviceId="SSH")), 1008, "never had a STREAM_START"),
    ("source", lambda c: c.send(enc(STREAM_START, 1, serviceId="FTP")), 1008, "unknown service"),
    ("source", lambda c: c.send(enc(STREAM_START, 0, serviceId="SSH")), 1008, "stream id 0"),
    ("source", lambda c: c.send(enc(SESSION_RESET)), 1008, "service only"),
    ("source", lambda c: c.send(enc(STREAM_START, 1, serviceId="SSH", extra=b"\x40\x01")), 1008, "schema"),
    ("source", lambda c: c.send(enc(STREAM_START, 1, serviceId="SSH"), enc(DATA, 1, payload=b"x")), 1008,
     "with and without"),
    ("source", lambda c: c.send(enc(STREAM_START, 1, serviceId="SSH"),
                                enc(DATA, 1, payload=b"x" * 64513, serviceId="SSH")), 1008, "payload of"),
    ("source", lambda c: c.send(b"\x22\x09abc"), 1008, "unparsable"),
    ("source", lambda c: c.send(enc(99, 1)), 1008, "unknown type"),
])
def test_violations_close_the_offending_end(cloud, who, action, code, reason):
    t, src, dst = pair(cloud, ["SSH"])
    c = src if who == "source" else dst
    action(c)
    assert c.wait_closed() == ("close", code)
    v = state(cloud, t)["violations"]
    assert len(v) == 1 and v[0]["end"] == who and v[0]["code"] == code and reason in v[0]["reason"], v


def test_version_limits_on_fields(cloud):
    t, src, dst = pair(cloud, ["SSH"], vs=P2, vd=P1)
    dst.send(enc(DATA, 1, payload=b"x", serviceId="SSH"))     # serviceId is not in V1
    assert dst.wait_closed() == ("close", 1008)
    src.send(enc(STREAM_START, 1, serviceId="SSH", connectionId=1))   # connectionId is not in V2
    assert src.wait_closed() == ("close", 1008)
    reasons = [v["reason"] for v in state(cloud, t)["violations"]]
    assert "not in protocol V1" in reasons[0] and "not in protocol V2" in reasons[1], reasons
    # strict off: forwarded as it is
    t, src, dst = pair(cloud, ["SSH"], vs=P2, vd=P2)
    cloud.ok("tunnel_hooks", tunnel_id=t["tunnel_id"], strict=False)
    src.send(enc(STREAM_START, 1, serviceId="SSH", connectionId=1))
    assert short(dst.take(1)[0])[:4] == ("STREAM_START", 1, "SSH", 1)


# ---------------------------------------------------------------- the MQTT notification


def test_open_tunnel_publishes_the_notify_message(cloud):
    ident = cloud.ok("create_thing", name="tdev1")
    dev = DeviceClient.connect(cloud.tb, ident)
    try:
        dev.subscribe("$aws/things/tdev1/tunnels/notify")
        t = cloud.ok("open_tunnel", thing="tdev1", services=["SSH", "VNC"], region="eu-west-1")
        topic, payload = dev.wait_message("$aws/things/tdev1/tunnels/notify")
        msg = json.loads(payload)
        assert msg == {"clientAccessToken": t["destination_token"], "clientMode": "destination",
                       "region": "eu-west-1", "services": ["SSH", "VNC"]}
        assert t["notify"] == {"topic": topic, "payload": msg}
        assert t["ws_port"] == cloud.tunnel_port and t["endpoint"] == "localhost:%d" % cloud.tunnel_port
        assert t["url_destination"] == "wss://localhost:%d/tunnel?local-proxy-mode=destination" % t["ws_port"]
        # the token in the message opens the destination end
        c = client(cloud, "destination", msg["clientAccessToken"]).connect()
        assert c.protocol == P3
        # rotation: a new notify with a new token; the old one is refused, the end closed
        r = cloud.ok("rotate_token", tunnel_id=t["tunnel_id"])
        assert c.wait_closed() == ("close", 1000)
        deadline = time.monotonic() + 5
        while len([1 for tp, _ in dev.messages if tp == topic]) < 2:
            assert time.monotonic() < deadline, "no second notify"
            time.sleep(0.02)
        msg2 = json.loads([p for tp, p in dev.messages if tp == topic][1])
        assert msg2["clientAccessToken"] == r["destination_token"] != t["destination_token"]
        assert refused(cloud, "destination", t["destination_token"]) == 403
        client(cloud, "destination", r["destination_token"]).connect()
        # mode "source" and notify false
        t3 = cloud.ok("open_tunnel", thing="tdev1", services=["SSH"], mode="source")
        deadline = time.monotonic() + 5
        while len([1 for tp, _ in dev.messages if tp == topic]) < 3:
            assert time.monotonic() < deadline, "no third notify"
            time.sleep(0.02)
        msg3 = json.loads([p for tp, p in dev.messages if tp == topic][2])
        assert msg3["clientMode"] == "source" and msg3["clientAccessToken"] == t3["source_token"]
        assert msg3["region"] == "us-east-1"
        t4 = cloud.ok("open_tunnel", thing="tdev1", services=["SSH"], notify=False)
        assert t4["notify"] is None
        time.sleep(0.2)
        assert len([1 for tp, _ in dev.messages if tp == topic]) == 3
        sent = [e for e in cloud.ok("log")["entries"] if e["topic"] == topic and e["dir"] == "out"]
        assert len(sent) == 3
    finally:
        dev.close()


def test_open_tunnel_arguments(cloud):
    for bad in ({}, {"services": []}, {"services": ["A", "B", "C", "D"]}, {"services": ["A", "A"]},
                {"services": ["a b"]}, {"services": ["SSH"], "max_version": 4}):
        resp = cloud.cmd("open_tunnel", notify=False, **bad)
        assert resp["ok"] is False, bad
    assert cloud.cmd("tunnel_hooks", tunnel_id="nope", merge=True)["ok"] is False
