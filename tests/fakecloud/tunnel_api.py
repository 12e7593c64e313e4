"""AWS IoT secure tunneling for fakecloud: the tunneling service and its notify message.

Written from shared/reference/secure-tunneling.md and aws-iot-mqtt-api.md §5 alone;
it shares no code with the device agent. The WebSocket server (RFC 6455) and the
protobuf codec of the tunnel Message are both written here by hand (no
websockets or protobuf package): a codec bug in the agent cannot hide behind a
library both sides share, and the hooks below need control over every frame.

The service: one TLS WebSocket server on 127.0.0.1:<ws_port> (the port is in the
open_tunnel answer and in ping's "tunnel_port"), with the testbed broker's server
certificate (CN/SAN localhost and 127.0.0.1, signed by the testbed CA), TLS 1.2+.
It runs in an asyncio loop in a thread of the fakecloud process. Endpoint for a
device: tunneling.endpoint = "localhost:<ws_port>"; URL:

    wss://localhost:<ws_port>/tunnel?local-proxy-mode=source|destination

The upgrade (reference §1), checked in this order; a refusal is an HTTP error
with a text body and a channel-id header, then the connection is closed:
    request > 4096 bytes                                   431
    not GET                                                405
    path other than /tunnel, local-proxy-mode absent, repeated or not
    source|destination                                     400
    not a WebSocket upgrade (Upgrade, Connection, Sec-WebSocket-Key)  400
    Sec-WebSocket-Version other than 13                    426 (+ Sec-WebSocket-Version: 13)
    no aws.iot.securetunneling-{1.0,2.0,3.0} offered (or none <= the
    tunnel's max_version)                                  400
    no access token (header "access-token" or cookie "awsiot-tunnel-token")  401
    several access tokens (headers and/or cookie)          400
    several client-token headers, or one not ^[a-zA-Z0-9-]{32,128}$  400
    unknown token, token of the other mode, rotated token, closed tunnel  403
    the http_status hook of the token's tunnel             that status
    token already used without a client token, or with another client token  403
    client token in use by another open tunnel             403
The chosen subprotocol is the highest offered (3.0 > 2.0 > 1.0, capped by the
tunnel's max_version); the 101 carries Connection: upgrade, upgrade: websocket,
sec-websocket-accept, sec-websocket-protocol and channel-id.
Tokens: the first successful handshake of a mode binds its token to the client
token sent (or to none). Without a client token the token is then spent (a
reconnect gets 403); with one, a reconnect with the same client token is
accepted and replaces the connection in place (the old one is closed with 1000
"replaced"). The reuse_tokens hook lifts the single-use rule.

After the 101 the service sends SERVICE_IDS (availableServiceIds = the tunnel's
services) to a V2 or V3 end of either mode, in the same write as the 101; a V1
end gets nothing. Then every tunnel message of one end is forwarded to the
other, byte for byte (the message is never re-encoded, merged or split), with a
fresh 2-byte length prefix, in order, one message per binary frame unless a hook
says otherwise. Received frames are one byte stream: messages may span frames
and frames may hold several messages, fragmented (continuation) frames are
accepted. Pings are answered with a pong carrying the same payload; a close frame
is answered with a close frame echoing its code.
Messages are forwarded as they are whatever the two ends' versions (peers adapt,
reference §6); messages the service itself makes (SERVICE_IDS, resets) carry no
field the receiving end's version does not know.

Service behaviour on points the reference leaves open (decisions):
- Peer absent: a STREAM_START from an end whose peer is not connected is answered
  by the service with STREAM_RESET(serviceId, streamId), a CONNECTION_START with
  CONNECTION_RESET(serviceId, streamId, connectionId); other messages are
  dropped. They are in tunnel_log with "forwarded": false. Hook absent_peer:
  "drop" drops them all silently.
- Peer lost (its WebSocket ended, was dropped, or was replaced by a reconnect):
  the remaining end gets STREAM_RESET for every active stream (serviceId and
  streamId of the last STREAM_START of each service not reset since); the
  streams are then forgotten. Hook reset_on_peer_loss: false turns this off.
- Validation (hook strict, default true): a violation is recorded (tunnels
  "violations") and the offending end is closed with a close frame: 1002 for a
  WebSocket protocol error (unmasked client frame, RSV bits, bad opcode or
  continuation, fragmented/oversized control frame), 1003 for a text frame, 1009
  for a frame payload > 131076 bytes, 1008 for a tunnel message the service
  refuses: unparsable; a field outside the schema, or outside the end's version
  (serviceId/availableServiceIds in V1, connectionId before V3); type UNKNOWN, or
  an unknown type without ignorable (an ignorable one is forwarded); SESSION_RESET
  or SERVICE_IDS from a client; availableServiceIds from a client; STREAM_START or
  CONNECTION_START from a destination; CONNECTION_START/CONNECTION_RESET from a
  pre-V3 end; stream id 0 on DATA/STREAM_START/STREAM_RESET/CONNECTION_START/
  CONNECTION_RESET; payload > 64512 bytes; a serviceId that is not one of the
  tunnel's services; mixing messages with and without serviceId on one
  connection; DATA or CONNECTION_START for a service that never had a STREAM_START
  in this tunnel. strict: false keeps only the WebSocket-level checks.
- Back-pressure: each end has an outbox of at most 1 MiB of forwarded messages;
  when it is full the service stops reading the other end.
- close_tunnel and rotate_token close the affected ends with 1000; the tokens of
  a closed tunnel and rotated tokens get 403.

Tokens are ~720 characters ("AQGAAX" + base64 of random bytes) as the real ones
are long; the token's length can be set with token_length. Tokens are secrets in
AWS: here they are test data, but the upgrade requests recorded in "tunnels"
have the access-token value and the cookie redacted.

Control commands (one JSON line on DIR/fakecloud.sock, see fakecloudctl):

    open_tunnel {thing?, services: [1..3 names], mode?: "destination", region?:
                 "us-east-1", notify?: true, max_version?: 3, token_length?: 720}
        Open a tunnel; unless notify is false (or no thing), publish at QoS 1 on
        $aws/things/<thing>/tunnels/notify the JSON of aws-iot-mqtt-api.md §5.1:
        {"clientAccessToken": <the token of mode>, "clientMode": mode, "region":
        region, "services": services} (mode "source" puts the source token in it;
        any other mode string is sent as is with the destination token).
        -> {tunnel_id, source_token, destination_token, ws_port, ws_host:
            "localhost", endpoint: "localhost:<ws_port>", region, services,
            url_source, url_destination, notify: {topic, payload} | null}
    rotate_token {tunnel_id, mode?: "destination"|"source"|"all", notify?: true}
        New token(s) for the mode(s), old ones refused (403), their client-token
        bindings forgotten, connected ends of those modes closed (1000 "token
        rotated"); the destination notify is published again for "destination"
        and "all". -> the open_tunnel answer
    close_tunnel {tunnel_id} -> {tunnel}: close both ends (1000), refuse the tokens.
    tunnels {tunnel_id?} -> {tunnels: [tunnel], loop_errors: [the last 20 errors the
        asyncio loop reported, e.g. TLS handshakes that clients broke off]}, tunnel = {tunnel_id, thing,
        services, region, status: "OPEN"|"CLOSED", max_version, active_streams:
        [{serviceId, streamId}], violations: [{end, code, reason, t}], hooks,
        ends: {source|destination: {connected, protocol (subprotocol or null),
        version (1..3 or null), client_token, channel_id, handshakes, refused,
        messages_in, messages_out, bytes_in, bytes_out (tunnel frames, with their
        2-byte prefixes), data_bytes_in, data_bytes_out (DATA payloads), frames_in,
        frames_out, pings_in, pongs_out, pings_out, pongs_in, last_pong (hex),
        last_close: {code, reason, by: "client"|"service"|"drop"|"eof"} | null,
        request: {method, target, headers: [[name, value]]} of the last upgrade
        attempt (token redacted)}}; counters add up over reconnects.
    wait_tunnel {tunnel_id, end?: "destination", connected?: true, handshakes?: n,
                 messages_in?: n, timeout?: 10}
        Wait until that end is (dis)connected and has at least that many
        handshakes and received messages. -> {tunnel} or error "timeout"
    tunnel_log {tunnel_id, since?: 0, types?: [names]} -> {entries: [{n, t, from:
        "source"|"destination"|"service", to, type (name, or the number if
        unknown), streamId, serviceId, connectionId, ignorable, payload_size,
        availableServiceIds (SERVICE_IDS only), forwarded: bool, injected?: true}],
        next: n}   (the last 200000 messages; "since" is a previous "next")
    tunnel_hooks {tunnel_id, to?: "both"|"source"|"destination", ...} -> {hooks}
        Frame hooks for the frames the service sends to `to` (null/0 clears):
          rechunk: N       cut the outgoing byte stream into binary frames of at
                           most N bytes (length prefixes and messages split)
          merge: bool      put every message queued for that end (up to 131076
                           bytes; waiting 10 ms for more) into one frame
          fragment: N      send every frame as a fragmented WebSocket message:
                           binary + continuation frames of at most N bytes
          pong: bool       answer pings (default true)
        Actions (now):
          inject: "STREAM_RESET"|"SESSION_RESET" to `to`; STREAM_RESET uses
                  service/stream_id (and connection_id) if given, else one per
                  active stream; the streams concerned are forgotten.
          ping: payload text: send a ping to `to` (its pong shows in pongs_in, last_pong)
          drop: "source"|"destination": close that end's TCP connection without a
                close frame, at once or, with drop_after: N, as soon as N more
                DATA payload bytes (either direction) have been forwarded.
          http_status: S (+ http_status_count?: 1, http_status_mode?: mode): answer
                the next upgrade(s) with this tunnel's tokens with status S.
        Tunnel options: strict: bool, reuse_tokens: bool, absent_peer:
          "reset"|"drop", reset_on_peer_loss: bool, max_version: 1..3.
"""

import asyncio
import base64
import collections
import hashlib
import inspect
import re
import secrets
import socket
import ssl
import struct
import threading
import time
import urllib.parse
import uuid

from fakecloud import Api

# ---------------------------------------------------------------- protocol constants

SUBPROTOCOLS = {
    "aws.iot.securetunneling-1.0": 1,
    "aws.iot.securetunneling-2.0": 2,
    "aws.iot.securetunneling-3.0": 3,
}
PROTOCOL_OF = {v: k for k, v in SUBPROTOCOLS.items()}
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_FRAME = 131076
MAX_PAYLOAD = 64512
MAX_REQUEST = 4096
OUTBOX_LIMIT = 1 << 20
MERGE_WAIT = 0.010
LOG_LIMIT = 200000
CLIENT_TOKEN_RE = re.compile(r"^[a-zA-Z0-9-]{32,128}$")
SERVICE_RE = re.compile(r"^[a-zA-Z0-9_-]{1,127}$")
MODES = ("source", "destination")
OTHER = {"source": "destination", "destination": "source"}

UNKNOWN, DATA, STREAM_START, STREAM_RESET, SESSION_RESET, SERVICE_IDS, \
    CONNECTION_START, CONNECTION_RESET = range(8)
TYPE_NAMES = ["UNKNOWN", "DATA", "STREAM_START", "STREAM_RESET", "SESSION_RESET",
              "SERVICE_IDS", "CONNECTION_START", "CONNECTION_RESET"]
TYPE_OF = {n: i for i, n in enumerate(TYPE_NAMES)}
STREAM_TYPES = (DATA, STREAM_START, STREAM_RESET, CONNECTION_START, CONNECTION_RESET)

# field tag -> (name, wire type): 0 varint, 2 length-delimited
FIELDS = {1: ("type", 0), 2: ("streamId", 0), 3: ("ignorable", 0), 4: ("payload", 2),
          5: ("serviceId", 2), 6: ("availableServiceIds", 2), 7: ("connectionId", 0)}
FIELD_SINCE = {5: 2, 6: 2, 7: 3}

HTTP_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                405: "Method Not Allowed", 410: "Gone", 426: "Upgrade Required",
                429: "Too Many Requests", 431: "Request Header Fields Too Large",
                500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
                504: "Gateway Timeout"}


# ---------------------------------------------------------------- the Message codec


def _varint(n):
    n &= (1 << 64) - 1  # a negative int32 is a 10-byte varint
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(buf, pos):
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint longer than 10 bytes")


def _int32(v):
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def encode_message(type, stream_id=0, ignorable=False, payload=b"", service_id="",
                   available_service_ids=(), connection_id=0):
    """A serialized Message (proto3: zero/empty fields omitted, tag order)."""
    out = bytearray()
    if type:
        out += b"\x08" + _varint(type)
    if stream_id:
        out += b"\x10" + _varint(stream_id)
    if ignorable:
        out += b"\x18\x01"
    if payload:
        out += b"\x22" + _varint(len(payload)) + bytes(payload)
    if service_id:
        s = service_id.encode()
        out += b"\x2a" + _varint(len(s)) + s
    for sid in available_service_ids:
        s = sid.encode()
        out += b"\x32" + _varint(len(s)) + s
    if connection_id:
        out += b"\x38" + _varint(connection_id)
    return bytes(out)


def decode_message(buf, with_payload=False):
    """Decode a serialized Message -> dict; ValueError if it cannot be parsed.

    "tags" lists the field numbers present, "unknown" those outside the schema.
    """
    m = {"type": 0, "streamId": 0, "ignorable": False, "payload_size": 0, "serviceId": "",
         "availableServiceIds": [], "connectionId": 0, "tags": [], "unknown": []}
    if with_payload:
        m["payload"] = b""
    pos, n = 0, len(buf)
    while pos < n:
        key, pos = _read_varint(buf, pos)
        tag, wt = key >> 3, key & 7
        if tag == 0:
            raise ValueError("field number 0")
        if wt == 0:
            v, pos = _read_varint(buf, pos)
        elif wt == 2:
            ln, pos = _read_varint(buf, pos)
            if pos + ln > n:
                raise ValueError("truncated length-delimited field %d" % tag)
            v = (pos, ln)
            pos += ln
        elif wt == 1:
            pos += 8
            v = None
        elif wt == 5:
            pos += 4
            v = None
        else:
            raise ValueError("wire type %d (field %d)" % (wt, tag))
        if pos > n:
            raise ValueError("truncated field %d" % tag)
        m["tags"].append(tag)
        if tag not in FIELDS:
            m["unknown"].append(tag)
            continue
        name, want = FIELDS[tag]
        if wt != want:
            raise ValueError("field %d (%s) has wire type %d" % (tag, name, wt))
        if tag == 1:
            m["type"] = _int32(v)
        elif tag == 2:
            m["streamId"] = _int32(v)
        elif tag == 3:
            m["ignorable"] = bool(v)
        elif tag == 4:
            m["payload_size"] = v[1]
            if with_payload:
                m["payload"] = bytes(buf[v[0]:v[0] + v[1]])
        elif tag == 7:
            m["connectionId"] = v & 0xFFFFFFFF
        else:
            try:
                s = bytes(buf[v[0]:v[0] + v[1]]).decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError("field %d (%s) is not UTF-8" % (tag, name))
            if tag == 5:
                m["serviceId"] = s
            else:
                m["availableServiceIds"].append(s)
    return m


def type_name(t):
    return TYPE_NAMES[t] if 0 <= t < len(TYPE_NAMES) else t


# ---------------------------------------------------------------- WebSocket framing


class WsError(Exception):
    """Close the connection with this close code (and record a violation)."""

    def __init__(self, code, reason):
        super().__init__(reason)
        self.code, self.reason = code, reason


def ws_frame(opcode, payload=b"", fin=True):
    """A server frame (unmasked)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        head = struct.pack("!BB", b0, n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, 126, n)
    else:
        head = struct.pack("!BBQ", b0, 127, n)
    return head + bytes(payload)


def unmask(data, mask):
    n = len(data)
    if not n:
        return b""
    m = (mask * ((n + 3) // 4))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(m, "big")).to_bytes(n, "big")


def accept_key(key):
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def new_token(length=720):
    raw = base64.b64encode(secrets.token_bytes(length)).decode().rstrip("=")
    return ("AQGAAX" + raw)[:max(16, int(length))]


def channel_id():
    h = secrets.token_hex(32)
    return "%s-%s-%s-%s-%s" % (h[:16], h[16:24], h[24:32], h[32:48], h[48:56])


# ---------------------------------------------------------------- per-end state


def _new_stats():
    return {"handshakes": 0, "refused": 0, "messages_in": 0, "messages_out": 0,
            "bytes_in": 0, "bytes_out": 0, "data_bytes_in": 0, "data_bytes_out": 0,
            "frames_in": 0, "frames_out": 0, "pings_in": 0, "pongs_out": 0,
            "pings_out": 0, "pongs_in": 0, "last_pong": None, "last_close": None,
            "request": None}


class Outbox:
    """The messages and control items waiting for an end's writer, bounded in bytes."""

    def __init__(self, limit=OUTBOX_LIMIT):
        self.items = collections.deque()
        self.size = 0
        self.limit = limit
        self.closed = False
        self.cond = asyncio.Condition()

    async def put(self, item, size=0, force=False):
        async with self.cond:
            while not self.closed and not force and self.size >= self.limit:
                await self.cond.wait()
            if self.closed:
                return False
            self.items.append((item, size))
            self.size += size
            self.cond.notify_all()
            return True

    async def get(self, timeout=None):
        """The next item; None when closed and empty (or after timeout)."""
        async with self.cond:
            if not self.items and not self.closed:
                try:
                    await asyncio.wait_for(self.cond.wait_for(lambda: self.items or self.closed), timeout)
                except asyncio.TimeoutError:
                    return None
            if not self.items:
                return None
            item, size = self.items.popleft()
            self.size -= size
            self.cond.notify_all()
            return item

    def push(self, item, size):
        """put(force=True) from synchronous code in the loop thread."""
        if self.closed:
            return
        self.items.append((item, size))
        self.size += size

        async def wake():
            async with self.cond:
                self.cond.notify_all()
        asyncio.ensure_future(wake())

    def peek(self):
        return self.items[0][0] if self.items else None

    async def close(self):
        async with self.cond:
            self.closed = True
            self.items.clear()
            self.size = 0
            self.cond.notify_all()


class End:
    """One connected WebSocket of a tunnel."""

    def __init__(self, tunnel, mode, version, client_token, chan, reader, writer):
        self.tunnel, self.mode, self.version = tunnel, mode, version
        self.client_token, self.channel_id = client_token, chan
        self.reader, self.writer = reader, writer
        self.stats = tunnel.stats[mode]
        self.outbox = Outbox()
        self.close_sent = False
        self.gone = False
        self.replaced = False
        self.has_sid = None  # whether this connection's stream messages carry a serviceId
        self.writer_task = None

    def write_now(self, data):
        """Write one whole frame at once (control frames may go between data frames)."""
        if not self.gone and not self.writer.is_closing():
            self.writer.write(data)

    def abort(self):
        self.gone = True
        try:
            self.writer.transport.abort()
        except Exception:
            pass


class Tunnel:
    def __init__(self, tid, thing, services, region, max_version, token_length):
        self.id, self.thing, self.services, self.region = tid, thing, list(services), region
        self.max_version = max_version
        self.token_length = token_length
        self.tokens = {m: new_token(token_length) for m in MODES}
        self.bound = {m: None for m in MODES}  # mode -> {"client_token": str|None} once used
        self.ends = {m: None for m in MODES}
        self.stats = {m: _new_stats() for m in MODES}
        self.status = "OPEN"
        self.active = collections.OrderedDict()  # serviceId ("" for none) -> streamId
        self.started = set()                     # serviceIds that ever had a STREAM_START
        self.violations = []
        self.log = collections.deque(maxlen=LOG_LIMIT)
        self.log_n = 0
        self.frame_hooks = {m: {"rechunk": 0, "merge": False, "fragment": 0, "pong": True}
                            for m in MODES}
        self.opts = {"strict": True, "reuse_tokens": False, "absent_peer": "reset",
                     "reset_on_peer_loss": True}
        self.http_status = []  # [{"status", "count", "mode"}]
        self.drop = None       # {"end", "left"}

    def hooks_view(self):
        v = dict(self.opts)
        v["max_version"] = self.max_version
        v["frames"] = {m: dict(h) for m, h in self.frame_hooks.items()}
        v["http_status"] = [dict(h) for h in self.http_status]
        v["drop"] = dict(self.drop) if self.drop else None
        return v

    def view(self):
        ends = {}
        for m in MODES:
            e = self.ends[m]
            d = dict(self.stats[m])
            d["connected"] = e is not None and not e.gone
            d["protocol"] = PROTOCOL_OF[e.version] if d["connected"] else None
            d["version"] = e.version if d["connected"] else None
            d["client_token"] = e.client_token if d["connected"] else None
            d["channel_id"] = e.channel_id if d["connected"] else None
            ends[m] = d
        return {"tunnel_id": self.id, "thing": self.thing, "services": list(self.services),
                "region": self.region, "status": self.status, "max_version": self.max_version,
                "active_streams": [{"serviceId": s, "streamId": n} for s, n in self.active.items()],
                "violations": list(self.violations), "hooks": self.hooks_view(), "ends": ends}

    def add_log(self, frm, to, m, forwarded, injected=False):
        self.log_n += 1
        e = {"n": self.log_n, "t": time.time(), "from": frm, "to": to, "type": type_name(m["type"]),
             "streamId": m["streamId"], "serviceId": m["serviceId"],
             "connectionId": m["connectionId"], "ignorable": m["ignorable"],
             "payload_size": m["payload_size"], "forwarded": forwarded}
        if m["type"] == SERVICE_IDS:
            e["availableServiceIds"] = list(m["availableServiceIds"])
        if injected:
            e["injected"] = True
        self.log.append(e)
        return e


class HttpRefusal(Exception):
    def __init__(self, status, body, headers=()):
        super().__init__(body)
        self.status, self.body, self.headers = status, body, list(headers)


# ---------------------------------------------------------------- the API


class TunnelApi(Api):
    name = "tunnel"

    def __init__(self, cloud):
        super().__init__(cloud)
        self.tb = cloud.testbed
        self.tunnels = collections.OrderedDict()
        self.by_token = {}     # token -> (tunnel, mode)
        self.dead_tokens = {}  # rotated/closed token -> reason
        self.loop_errors = collections.deque(maxlen=20)
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._loop_error)
        self.server = None
        self.port = None
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), name="tunnel", daemon=True)
        self.thread.start()
        if not started.wait(10) or self.port is None:
            raise RuntimeError("tunnel service did not start")

    # ---- plumbing

    def _ssl_context(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.tb.info["server_cert"], self.tb.path("server.key"))
        return ctx

    def _run(self, started):
        asyncio.set_event_loop(self.loop)

        async def start():
            self.server = await asyncio.start_server(
                self._serve, "127.0.0.1", 0, ssl=self._ssl_context(), ssl_handshake_timeout=10,
                limit=1 << 16)
            self.port = self.server.sockets[0].getsockname()[1]

        try:
            self.loop.run_until_complete(start())
        finally:
            started.set()
        self.loop.run_forever()
        self.loop.close()

    def _loop_error(self, loop, context):
        # e.g. a client that drops during the TLS handshake: not ours to print
        self.loop_errors.append("%s: %r" % (context.get("message"), context.get("exception")))

    def _call(self, fn, *args, timeout=15):
        async def run():
            r = fn(*args)
            if inspect.isawaitable(r):
                r = await r
            return r
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def commands(self):
        return {n[4:]: getattr(self, n) for n in dir(self) if n.startswith("cmd_")}

    def ping_info(self):
        return {"tunnel_port": self.port}

    def stop(self):
        async def shutdown():
            for t in self.tunnels.values():
                for e in list(t.ends.values()):
                    if e is not None:
                        e.abort()
            if self.server is not None:
                self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    # ---- the upgrade

    async def _serve(self, reader, writer):
        try:
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass
        end = None
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                return
            except asyncio.LimitOverrunError:
                self._refuse(writer, HttpRefusal(431, "request too large"))
                return
            try:
                end = self._upgrade(head, reader, writer)
            except HttpRefusal as r:
                self._refuse(writer, r)
                return
            await self._run_end(end)
        except (ConnectionError, ssl.SSLError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if end is not None:
                await self._end_gone(end)
            try:
                writer.close()
            except Exception:
                pass

    def _refuse(self, writer, r):
        reason = HTTP_REASONS.get(r.status, "Error")
        body = (r.body + "\n").encode()
        head = ["HTTP/1.1 %d %s" % (r.status, reason), "channel-id: %s" % channel_id(),
                "Content-Type: text/plain", "Content-Length: %d" % len(body), "Connection: close"]
        head += ["%s: %s" % h for h in r.headers]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)

    def _upgrade(self, head, reader, writer):
        if len(head) > MAX_REQUEST:
            raise HttpRefusal(431, "request too large (%d bytes, max %d)" % (len(head), MAX_REQUEST))
        try:
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
        except ValueError:
            raise HttpRefusal(400, "bad request line")
        headers = []
        for line in lines[1:]:
            if not line:
                continue
            if ":" not in line:
                raise HttpRefusal(400, "bad header line")
            k, v = line.split(":", 1)
            headers.append((k.strip().lower(), v.strip()))
        redacted = [[k, "<redacted %d chars>" % len(v) if k in ("access-token", "cookie") else v]
                    for k, v in headers]
        request = {"method": method, "target": target, "headers": redacted}

        def values(name):
            return [v for k, v in headers if k == name]

        tokens = list(values("access-token"))
        for v in values("cookie"):
            for part in v.split(";"):
                k, _, val = part.strip().partition("=")
                if k == "awsiot-tunnel-token":
                    tokens.append(val)
        found = self.by_token.get(tokens[0]) if len(tokens) == 1 else None
        tunnel = found[0] if found else None
        if tunnel is not None:
            tunnel.stats[found[1]]["request"] = request
        try:
            mode, ver, client_token, key = self._admit(method, target, version, values, tokens, found)
        except HttpRefusal:
            if tunnel is not None:
                tunnel.stats[found[1]]["refused"] += 1
            raise

        # accepted
        tunnel.bound[mode] = {"client_token": client_token}
        chan = channel_id()
        old = tunnel.ends[mode]
        end = End(tunnel, mode, ver, client_token, chan, reader, writer)
        tunnel.ends[mode] = end
        end.stats["handshakes"] += 1
        if old is not None:
            old.replaced = True
            self._close_end(old, 1000, "replaced")
            self._peer_lost(tunnel, mode)
        resp = ("HTTP/1.1 101 Switching Protocols\r\n"
                "Connection: upgrade\r\n"
                "channel-id: %s\r\n"
                "upgrade: websocket\r\n"
                "sec-websocket-accept: %s\r\n"
                "sec-websocket-protocol: %s\r\n\r\n") % (chan, accept_key(key), PROTOCOL_OF[ver])
        writer.write(resp.encode())
        if ver >= 2:
            m = {"type": SERVICE_IDS, "availableServiceIds": tunnel.services}
            raw = self._service_message(end, m)
            frame = ws_frame(0x2, struct.pack("!H", len(raw)) + raw)
            writer.write(frame)  # in the same write burst as the 101
            self._count_out(end, raw, 1)
        return end

    def _admit(self, method, target, version, values, tokens, found):
        """Check an upgrade request: (mode, version, client token, websocket key) or HttpRefusal."""
        if not version.startswith("HTTP/1."):
            raise HttpRefusal(400, "not HTTP/1.x")
        if method != "GET":
            raise HttpRefusal(405, "method not allowed")
        url = urllib.parse.urlsplit(target)
        if url.path != "/tunnel":
            raise HttpRefusal(400, "path must be /tunnel")
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        modes = query.get("local-proxy-mode", [])
        if len(modes) != 1 or modes[0] not in MODES:
            raise HttpRefusal(400, "local-proxy-mode must be source or destination")
        mode = modes[0]
        if not any(v.strip().lower() == "websocket" for v in values("upgrade")):
            raise HttpRefusal(400, "not a websocket upgrade")
        conn_tokens = [t.strip().lower() for v in values("connection") for t in v.split(",")]
        if "upgrade" not in conn_tokens:
            raise HttpRefusal(400, "Connection must include upgrade")
        keys = values("sec-websocket-key")
        try:
            if len(keys) != 1 or len(base64.b64decode(keys[0], validate=True)) != 16:
                raise ValueError
        except ValueError:
            raise HttpRefusal(400, "bad Sec-WebSocket-Key")
        if values("sec-websocket-version") != ["13"]:
            raise HttpRefusal(426, "Sec-WebSocket-Version must be 13", [("Sec-WebSocket-Version", "13")])
        offered = [p.strip() for v in values("sec-websocket-protocol") for p in v.split(",") if p.strip()]

        client_tokens = values("client-token")
        tunnel = found[0] if found else None

        def refuse(status, body, hdrs=()):
            raise HttpRefusal(status, body, hdrs)

        versions = [SUBPROTOCOLS[p] for p in offered if p in SUBPROTOCOLS]
        cap = tunnel.max_version if tunnel is not None else 3
        usable = [v for v in versions if v <= cap]
        if not usable:
            refuse(400, "no supported Sec-WebSocket-Protocol offered")
        if not tokens:
            refuse(401, "missing access token")
        if len(tokens) > 1:
            refuse(400, "more than one access token")
        if len(client_tokens) > 1:
            refuse(400, "more than one client-token")
        client_token = client_tokens[0] if client_tokens else None
        if client_token is not None and not CLIENT_TOKEN_RE.match(client_token):
            refuse(400, "invalid client-token")
        if found is None:
            refuse(403, self.dead_tokens.get(tokens[0], "invalid access token"))
        if found[1] != mode:
            refuse(403, "access token is not for mode %s" % mode)
        if tunnel.status != "OPEN":
            refuse(403, "tunnel closed")
        for h in tunnel.http_status:
            if h["count"] > 0 and h["mode"] in (None, mode):
                h["count"] -= 1
                tunnel.http_status = [x for x in tunnel.http_status if x["count"] > 0]
                refuse(h["status"], "injected status %d" % h["status"])
        bound = tunnel.bound[mode]
        if bound is not None and not tunnel.opts["reuse_tokens"]:
            if bound["client_token"] is None:
                refuse(403, "access token already used")
            if bound["client_token"] != client_token:
                refuse(403, "client-token does not match")
        if client_token is not None:
            for other in self.tunnels.values():
                if other is not tunnel and other.status == "OPEN" and any(
                        b is not None and b["client_token"] == client_token for b in other.bound.values()):
                    refuse(403, "client-token in use by another tunnel")

        return mode, max(usable), client_token, keys[0]

    # ---- a connected end

    def _service_message(self, end, m):
        """Encode and log a message the service sends to end (fields of its version only)."""
        v = end.version
        full = {"type": 0, "streamId": 0, "ignorable": False, "payload_size": 0, "serviceId": "",
                "availableServiceIds": [], "connectionId": 0}
        full.update(m)
        if v < 2:
            full["serviceId"], full["availableServiceIds"] = "", []
        if v < 3:
            full["connectionId"] = 0
        end.tunnel.add_log("service", end.mode, full, True, injected=m.get("injected", False))
        return encode_message(full["type"], full["streamId"], full["ignorable"], b"",
                              full["serviceId"], full["availableServiceIds"], full["connectionId"])

    def _count_out(self, end, raw, frames):
        s = end.stats
        s["messages_out"] += 1
        s["bytes_out"] += len(raw) + 2
        s["frames_out"] += frames

    async def _send_service(self, end, m):
        raw = self._service_message(end, m)
        await end.outbox.put(("msg", raw), len(raw) + 2, force=True)

    async def _run_end(self, end):
        end.writer_task = asyncio.ensure_future(self._write_loop(end))
        try:
            await self._read_loop(end)
        except WsError as e:
            self._violation(end, e.code, e.reason)
            self._close_end(end, e.code, e.reason)
            if e.code not in (1002, 1009):  # framing intact: wait for the client's close
                await self._drain_until_close(end)

    async def _drain_until_close(self, end, timeout=2.0):
        """After our close frame: discard frames until the client's close (or EOF, timeout)."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                _, opcode, _ = await asyncio.wait_for(self._read_frame(end), deadline - time.monotonic())
                if opcode == 0x8:
                    return
        except (WsError, asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError,
                ssl.SSLError, OSError):
            return

    def _violation(self, end, code, reason):
        end.tunnel.violations.append({"end": end.mode, "code": code, "reason": reason, "t": time.time()})

    def _close_end(self, end, code, reason, by="service"):
        """Send a close frame to end now (queued messages are dropped); abort it 2 s later."""
        if end.close_sent or end.gone:
            return
        end.close_sent = True
        end.stats["last_close"] = {"code": code, "reason": reason, "by": by}
        end.write_now(ws_frame(0x8, struct.pack("!H", code) + reason.encode()[:120]))
        self.loop.call_later(2.0, end.abort)

    async def _read_frame(self, end):
        r = end.reader
        h = await r.readexactly(2)
        fin, rsv, opcode = h[0] & 0x80, h[0] & 0x70, h[0] & 0x0F
        masked, ln = h[1] & 0x80, h[1] & 0x7F
        if ln == 126:
            ln = struct.unpack("!H", await r.readexactly(2))[0]
        elif ln == 127:
            ln = struct.unpack("!Q", await r.readexactly(8))[0]
        if rsv:
            raise WsError(1002, "RSV bits set")
        if opcode >= 8 and (ln > 125 or not fin):
            raise WsError(1002, "bad control frame")
        if ln > MAX_FRAME:
            raise WsError(1009, "frame payload of %d bytes (max %d)" % (ln, MAX_FRAME))
        if not masked:
            raise WsError(1002, "unmasked client frame")
        mask = await r.readexactly(4)
        data = unmask(await r.readexactly(ln), mask)
        return bool(fin), opcode, data

    async def _read_loop(self, end):
        buf = bytearray()
        frag = None  # opcode of the fragmented message in progress
        s = end.stats
        while True:
            try:
                fin, opcode, data = await self._read_frame(end)
            except asyncio.IncompleteReadError:
                if not end.close_sent and s["last_close"] is None:
                    s["last_close"] = {"code": 1006, "reason": "eof", "by": "eof"}
                return
            s["frames_in"] += 1
            if opcode == 0x9:
                s["pings_in"] += 1
                if end.tunnel.frame_hooks[end.mode]["pong"]:
                    end.write_now(ws_frame(0xA, data))
                    s["pongs_out"] += 1
                continue
            if opcode == 0xA:
                s["pongs_in"] += 1
                s["last_pong"] = data.hex()
                continue
            if opcode == 0x8:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                reason = data[2:].decode("utf-8", "replace")
                if not end.close_sent:
                    end.close_sent = True
                    s["last_close"] = {"code": code, "reason": reason, "by": "client"}
                    end.write_now(ws_frame(0x8, data[:2]))
                return
            if opcode == 0x1 or (opcode == 0x0 and frag == 0x1):
                raise WsError(1003, "text frame")
            if opcode == 0x2:
                if frag is not None:
                    raise WsError(1002, "new data frame inside a fragmented message")
                frag = None if fin else 0x2
            elif opcode == 0x0:
                if frag is None:
                    raise WsError(1002, "continuation frame without a message")
                if fin:
                    frag = None
            else:
                raise WsError(1002, "opcode %d" % opcode)
            if end.close_sent:
                continue  # closing: data is discarded
            buf += data
            pos = 0
            while len(buf) - pos >= 2:
                n = (buf[pos] << 8) | buf[pos + 1]
                if len(buf) - pos - 2 < n:
                    break
                raw = bytes(buf[pos + 2:pos + 2 + n])
                pos += 2 + n
                if not await self._on_message(end, raw):
                    return
            if pos:
                del buf[:pos]

    def _check(self, end, m):
        """The reason the service refuses message m from end, or None."""
        t = end.tunnel
        if m["unknown"]:
            return "field(s) outside the schema: %s" % m["unknown"]
        for tag in m["tags"]:
            if FIELD_SINCE.get(tag, 1) > end.version:
                return "field %s is not in protocol V%d" % (FIELDS[tag][0], end.version)
        typ = m["type"]
        if typ == UNKNOWN:
            return "type UNKNOWN"
        if typ not in range(len(TYPE_NAMES)):
            return None if m["ignorable"] else "unknown type %d without ignorable" % typ
        if typ in (SESSION_RESET, SERVICE_IDS):
            return "%s is sent by the service only" % TYPE_NAMES[typ]
        if m["availableServiceIds"]:
            return "availableServiceIds from a client"
        if end.mode == "destination" and typ in (STREAM_START, CONNECTION_START):
            return "%s from the destination" % TYPE_NAMES[typ]
        if typ in (CONNECTION_START, CONNECTION_RESET) and end.version < 3:
            return "%s is not in protocol V%d" % (TYPE_NAMES[typ], end.version)
        if m["payload_size"] > MAX_PAYLOAD:
            return "payload of %d bytes (max %d)" % (m["payload_size"], MAX_PAYLOAD)
        if typ in STREAM_TYPES:
            if m["streamId"] == 0:
                return "%s with stream id 0" % TYPE_NAMES[typ]
            sid = m["serviceId"]
            if sid and sid not in t.services:
                return "unknown service id %r" % sid
            has = bool(sid)
            if end.has_sid is None:
                end.has_sid = has
            elif end.has_sid != has:
                return "messages with and without serviceId on one connection"
            if typ in (DATA, CONNECTION_START) and sid not in t.started:
                return "%s for service %r that never had a STREAM_START" % (TYPE_NAMES[typ], sid)
        return None

    async def _on_message(self, end, raw):
        """Handle one tunnel message from end; False to stop reading it."""
        t = end.tunnel
        s = end.stats
        s["messages_in"] += 1
        s["bytes_in"] += len(raw) + 2
        try:
            m = decode_message(raw)
        except ValueError as e:
            if t.opts["strict"]:
                raise WsError(1008, "unparsable message: %s" % e)
            m = {"type": -1, "streamId": 0, "ignorable": False, "payload_size": 0, "serviceId": "",
                 "availableServiceIds": [], "connectionId": 0, "tags": [], "unknown": []}
        if t.opts["strict"]:
            reason = self._check(end, m)
            if reason:
                t.add_log(end.mode, OTHER[end.mode], m, False)
                raise WsError(1008, reason)
        typ = m["type"]
        s["data_bytes_in"] += m["payload_size"] if typ == DATA else 0
        sid = m["serviceId"]
        if typ == STREAM_START and end.mode == "source":
            t.active[sid] = m["streamId"]
            t.active.move_to_end(sid)
            t.started.add(sid)
        elif typ == STREAM_RESET and t.active.get(sid) == m["streamId"]:
            del t.active[sid]
        peer = t.ends[OTHER[end.mode]]
        if peer is None or peer.gone or peer.close_sent:
            t.add_log(end.mode, OTHER[end.mode], m, False)
            if t.opts["absent_peer"] == "reset":
                if typ == STREAM_START:
                    t.active.pop(sid, None)
                    await self._send_service(end, {"type": STREAM_RESET, "streamId": m["streamId"],
                                                   "serviceId": sid})
                elif typ == CONNECTION_START:
                    await self._send_service(end, {"type": CONNECTION_RESET, "streamId": m["streamId"],
                                                   "serviceId": sid, "connectionId": m["connectionId"]})
        else:
            t.add_log(end.mode, peer.mode, m, True)
            await peer.outbox.put(("msg", raw), len(raw) + 2)
        if typ == DATA and t.drop is not None:
            t.drop["left"] -= m["payload_size"]
            if t.drop["left"] <= 0:
                victim = t.ends[t.drop["end"]]
                t.drop = None
                if victim is not None:
                    self._drop_end(victim)
                    if victim is end:
                        return False
        return not end.gone

    def _drop_end(self, end):
        end.stats["last_close"] = {"code": 1006, "reason": "dropped", "by": "drop"}
        end.abort()

    async def _write_loop(self, end):
        hooks = end.tunnel.frame_hooks[end.mode]
        w = end.writer
        try:
            while True:
                item = await end.outbox.get()
                if item is None or end.close_sent or end.gone:
                    return
                kind = item[0]
                if kind == "ping":
                    end.write_now(ws_frame(0x9, item[1]))
                    end.stats["pings_out"] += 1
                    continue
                raws = [item[1]]
                if hooks["merge"]:
                    size = len(raws[0]) + 2
                    while size < MAX_FRAME:
                        nxt = end.outbox.peek()
                        if nxt is None:
                            got = await end.outbox.get(MERGE_WAIT)
                            if got is None:
                                break
                            if got[0] != "msg":
                                await end.outbox.put(got, force=True)  # rare: a ping; send it later
                                break
                            raws.append(got[1])
                            size += len(got[1]) + 2
                            continue
                        if nxt[0] != "msg":
                            break
                        got = await end.outbox.get()
                        raws.append(got[1])
                        size += len(got[1]) + 2
                stream = b"".join(struct.pack("!H", len(r)) + r for r in raws)
                if hooks["merge"] or hooks["rechunk"]:
                    chunk = min(hooks["rechunk"] or MAX_FRAME, MAX_FRAME)
                    pieces = [stream[i:i + chunk] for i in range(0, len(stream), chunk)]
                else:
                    pieces = [stream]  # one message per frame
                frames = 0
                for p in pieces:
                    frag = hooks["fragment"]
                    if frag and len(p) > frag:
                        parts = [p[i:i + frag] for i in range(0, len(p), frag)]
                        for i, part in enumerate(parts):
                            end.write_now(ws_frame(0x2 if i == 0 else 0x0, part, fin=i == len(parts) - 1))
                        frames += len(parts)
                    else:
                        end.write_now(ws_frame(0x2, p))
                        frames += 1
                for i, r in enumerate(raws):
                    self._count_out(end, r, frames if i == 0 else 0)
                    if r[:2] == b"\x08\x01":
                        try:
                            end.stats["data_bytes_out"] += decode_message(r)["payload_size"]
                        except ValueError:
                            pass
                await w.drain()
        except (ConnectionError, OSError, ssl.SSLError):
            end.abort()

    async def _end_gone(self, end):
        end.gone = True
        await end.outbox.close()
        if end.writer_task is not None and not end.writer_task.done():
            end.writer_task.cancel()
            try:
                await end.writer_task
            except (asyncio.CancelledError, Exception):
                pass
        try:
            end.writer.transport.abort() if not end.close_sent else end.writer.close()
        except Exception:
            pass
        t = end.tunnel
        if t.ends[end.mode] is end:
            t.ends[end.mode] = None
            if t.status == "OPEN":
                self._peer_lost(t, end.mode)

    def _peer_lost(self, t, mode):
        """The end of mode went away: reset the active streams at the other end."""
        peer = t.ends[OTHER[mode]]
        if t.opts["reset_on_peer_loss"] and peer is not None and not peer.gone and t.active:
            for sid, n in list(t.active.items()):
                raw = self._service_message(peer, {"type": STREAM_RESET, "streamId": n, "serviceId": sid})
                peer.outbox.push(("msg", raw), len(raw) + 2)
        t.active.clear()

    # ---- control commands (run in the loop thread through _call)

    def _tunnel(self, req):
        tid = req.get("tunnel_id")
        if tid not in self.tunnels:
            raise ValueError("no tunnel %r" % tid)
        return self.tunnels[tid]

    def _answer(self, t, notify=None):
        host = "localhost"
        return {"tunnel_id": t.id, "source_token": t.tokens["source"],
                "destination_token": t.tokens["destination"], "ws_port": self.port, "ws_host": host,
                "endpoint": "%s:%d" % (host, self.port), "region": t.region,
                "services": list(t.services),
                "url_source": "wss://%s:%d/tunnel?local-proxy-mode=source" % (host, self.port),
                "url_destination": "wss://%s:%d/tunnel?local-proxy-mode=destination" % (host, self.port),
                "notify": notify}

    def _notify(self, t, mode):
        if not t.thing:
            return None
        token = t.tokens["source"] if mode == "source" else t.tokens["destination"]
        topic = "$aws/things/%s/tunnels/notify" % t.thing
        payload = {"clientAccessToken": token, "clientMode": mode, "region": t.region,
                   "services": list(t.services)}
        self.cloud.publish(topic, payload, qos=1)
        return {"topic": topic, "payload": payload}

    def cmd_open_tunnel(self, req):
        services = req.get("services")
        if (not isinstance(services, list) or not 1 <= len(services) <= 3
                or not all(isinstance(s, str) and SERVICE_RE.match(s) for s in services)
                or len(set(services)) != len(services)):
            raise ValueError('open_tunnel needs "services": 1 to 3 distinct names [A-Za-z0-9_-]')
        thing = req.get("thing")
        if thing is not None and (not isinstance(thing, str) or not thing):
            raise ValueError('"thing" must be a non-empty string')
        mode = req.get("mode", "destination")
        region = req.get("region", "us-east-1")
        max_version = int(req.get("max_version", 3))
        if max_version not in (1, 2, 3):
            raise ValueError("max_version must be 1, 2 or 3")
        t = Tunnel(str(uuid.uuid4()), thing, services, region, max_version,
                   int(req.get("token_length", 720)))

        def register():
            self.tunnels[t.id] = t
            for m in MODES:
                self.by_token[t.tokens[m]] = (t, m)
        self._call(register)
        notify = self._notify(t, mode) if req.get("notify", True) else None
        return self._answer(t, notify)

    def cmd_rotate_token(self, req):
        mode = req.get("mode", "destination")
        if mode not in ("source", "destination", "all"):
            raise ValueError('mode must be "source", "destination" or "all"')

        def rotate():
            t = self._tunnel(req)
            if t.status != "OPEN":
                raise ValueError("tunnel %s is closed" % t.id)
            for m in (MODES if mode == "all" else (mode,)):
                old = t.tokens[m]
                self.by_token.pop(old, None)
                self.dead_tokens[old] = "access token rotated"
                t.tokens[m] = new_token(t.token_length)
                self.by_token[t.tokens[m]] = (t, m)
                t.bound[m] = None
                if t.ends[m] is not None:
                    self._close_end(t.ends[m], 1000, "token rotated")
            return t
        t = self._call(rotate)
        notify = None
        if req.get("notify", True) and mode in ("destination", "all"):
            notify = self._notify(t, "destination")
        return self._answer(t, notify)

    def cmd_close_tunnel(self, req):
        def close():
            t = self._tunnel(req)
            t.status = "CLOSED"
            for m in MODES:
                self.by_token.pop(t.tokens[m], None)
                self.dead_tokens[t.tokens[m]] = "tunnel closed"
                if t.ends[m] is not None:
                    self._close_end(t.ends[m], 1000, "tunnel closed")
            t.active.clear()
            return {"tunnel": t.view()}
        return self._call(close)

    def cmd_tunnels(self, req):
        def view():
            ts = [t for t in self.tunnels.values() if req.get("tunnel_id") in (None, t.id)]
            return {"tunnels": [t.view() for t in ts], "loop_errors": list(self.loop_errors)}
        return self._call(view)

    def cmd_wait_tunnel(self, req):
        end = req.get("end", "destination")
        if end not in MODES:
            raise ValueError('end must be "source" or "destination"')
        want = bool(req.get("connected", True))
        deadline = time.monotonic() + float(req.get("timeout", 10))
        while True:
            v = self._call(lambda: self._tunnel(req).view())
            e = v["ends"][end]
            if (e["connected"] == want and e["handshakes"] >= int(req.get("handshakes", 0))
                    and e["messages_in"] >= int(req.get("messages_in", 0))):
                return {"tunnel": v}
            if time.monotonic() > deadline:
                raise TimeoutError("timeout")
            time.sleep(0.02)

    def cmd_tunnel_log(self, req):
        since = int(req.get("since", 0))
        types = req.get("types")

        def select():
            t = self._tunnel(req)
            entries = [dict(e) for e in t.log if e["n"] > since and (types is None or e["type"] in types)]
            return {"entries": entries, "next": t.log_n}
        return self._call(select)

    def cmd_tunnel_hooks(self, req):
        to = req.get("to", "both")
        if to not in ("both",) + MODES:
            raise ValueError('"to" must be "both", "source" or "destination"')
        targets = MODES if to == "both" else (to,)

        async def hooks():
            t = self._tunnel(req)
            for key in ("rechunk", "fragment"):
                if key in req:
                    n = int(req[key] or 0)
                    if n < 0 or n > MAX_FRAME:
                        raise ValueError("%s must be 0..%d" % (key, MAX_FRAME))
                    for m in targets:
                        t.frame_hooks[m][key] = n
            for key in ("merge", "pong"):
                if key in req:
                    for m in targets:
                        t.frame_hooks[m][key] = bool(req[key])
            for key in ("strict", "reuse_tokens", "reset_on_peer_loss"):
                if key in req:
                    t.opts[key] = bool(req[key])
            if "absent_peer" in req:
                if req["absent_peer"] not in ("reset", "drop"):
                    raise ValueError('absent_peer must be "reset" or "drop"')
                t.opts["absent_peer"] = req["absent_peer"]
            if "max_version" in req:
                if int(req["max_version"]) not in (1, 2, 3):
                    raise ValueError("max_version must be 1, 2 or 3")
                t.max_version = int(req["max_version"])
            if req.get("http_status"):
                st = int(req["http_status"])
                if not 400 <= st <= 599:
                    raise ValueError("http_status must be 400..599")
                hm = req.get("http_status_mode")
                if hm not in (None,) + MODES:
                    raise ValueError("http_status_mode must be source or destination")
                t.http_status.append({"status": st, "count": int(req.get("http_status_count", 1)),
                                      "mode": hm})
            if "inject" in req:
                await self._inject(t, targets, req)
            if "ping" in req:
                payload = str(req["ping"]).encode()[:125]
                for m in targets:
                    e = t.ends[m]
                    if e is None:
                        raise ValueError("no %s connected" % m)
                    await e.outbox.put(("ping", payload), force=True)
            if req.get("drop"):
                victim = req["drop"]
                if victim not in MODES:
                    raise ValueError('drop must be "source" or "destination"')
                if req.get("drop_after") is not None:
                    t.drop = {"end": victim, "left": int(req["drop_after"])}
                elif t.ends[victim] is None:
                    raise ValueError("no %s connected" % victim)
                else:
                    self._drop_end(t.ends[victim])
            return {"hooks": t.hooks_view()}
        return self._call(hooks)

    async def _inject(self, t, targets, req):
        what = req["inject"]
        if what not in ("STREAM_RESET", "SESSION_RESET"):
            raise ValueError('inject must be "STREAM_RESET" or "SESSION_RESET"')
        ends = [t.ends[m] for m in targets if t.ends[m] is not None and not t.ends[m].gone]
        if not ends:
            raise ValueError("no end connected to inject into")
        if what == "SESSION_RESET":
            msgs = [{"type": SESSION_RESET, "injected": True}]
            t.active.clear()
        elif "service" in req or "stream_id" in req:
            sid = req.get("service") or ""
            n = int(req.get("stream_id", t.active.get(sid, 0)))
            if not n:
                raise ValueError("no active stream for service %r: give stream_id" % sid)
            msgs = [{"type": STREAM_RESET, "streamId": n, "serviceId": sid,
                     "connectionId": int(req.get("connection_id", 0)), "injected": True}]
            if t.active.get(sid) == n:
                del t.active[sid]
        else:
            if not t.active:
                raise ValueError("no active stream to reset")
            msgs = [{"type": STREAM_RESET, "streamId": n, "serviceId": sid, "injected": True}
                    for sid, n in t.active.items()]
            t.active.clear()
        for e in ends:
            for m in msgs:
                await self._send_service(e, m)
