"""AWS IoT Device Defender device-side metrics for fakecloud (shared/reference/aws-iot-mqtt-api.md §4, §0.1).

Written from the reference alone; it shares no code with the device agent.

Device reports (reference §4.1):

    $aws/things/<thing>/defender/metrics/json     a JSON report
    $aws/things/<thing>/defender/metrics/cbor     the same document as CBOR (cbor2)

answered on <report-topic>/accepted

    {"thingName": "<thing>", "reportId": <report_id>, "status": "ACCEPTED", "timestamp": <ms>}

or on <report-topic>/rejected (the Defender error shape of §0.1, reportId only when a
positive integer report id could be read from the header)

    {"thingName": "<thing>", "reportId"?: <report_id>, "status": "REJECTED",
     "statusDetails": {"ErrorCode": "InvalidPayload", "ErrorMessage": "..."}, "timestamp": <ms>}

Timestamps are epoch MILLISECONDS. The emulator answers the topics of whichever
thing the report names; it is the testbed broker's ACL that keeps each device to its
own $aws/things/<its CN>/... topics (on AWS a policy may let a device report for
another thing, §4.1). Other topics under .../defender/ (a device publishing on
.../accepted, a format other than json/cbor) are ignored, as the Jobs API ignores
responses.

Checks, in order (the first failure is the answer):
 1. size: a payload over 128 KiB (131072 bytes) is rejected (AWS's broker would refuse
    it before the service sees it; the emulator answers so that a test sees why);
 2. decoding: JSON must be strict UTF-8 JSON (no NaN/Infinity, no duplicate keys, no
    number beyond the float range such as 1e400); CBOR must be exactly one data item
    (no trailing bytes) whose maps have text keys and whose values are JSON types (no
    byte strings, tags, undefined, simple values, NaN/Infinity). The root must be an
    object/map. Else "Malformed metrics report: ...";
 3. the thing name: 1-128 bytes of UTF-8, no control characters;
 4. the schema of §4.2, below;
 5. report_id monotonic per thing: compared with the highest report_id accepted for
    the thing. Not greater: accepted with a warning (on stdout and in the stored
    entry), or rejected in strict mode;
 6. the throttle, when on: a report less than throttle_seconds after the thing's last
    accepted report is rejected. Only accepted reports start the window.
Every rejection but the throttle has ErrorCode "InvalidPayload" (the only code the
sources show). Schema and decoding messages start with "Malformed metrics report"
(the documented message) followed by what was wrong, with the path in the report's
own key names, e.g. "Malformed metrics report: met.tp.pts[1].pt must be a port
number from 1 to 65535, not 0". A bad thing name is "Invalid thing name: ...", a
non-increasing report_id (strict) "report_id N is not greater than M, the highest
report_id accepted for <thing>". [decision] Everything is checked before the
throttle, so a throttled report is a valid one.

Schema (§4.2), decisions on what the reference leaves open marked [decision]:
- Long or short key names, never both: the header key (header / hed) sets the style,
  any key of the other style anywhere else is "mixes long and short key names". The
  two sets are disjoint. Custom metric names and their typed keys (number,
  number_list, string_list, ip_list) have no short form and are the same in both.
- [decision] Unknown keys are rejected at every level (it catches agent typos; AWS's
  behaviour is not documented).
- header: report_id an integer 1..2^63-1 (a JSON 5.0 or "5" is not an integer),
  version the string "1.0". A missing header is rejected; reportId is then absent.
- At least one of metrics / custom_metrics; [decision] either may be empty ({}).
- listening_tcp_ports / listening_udp_ports: {ports?: [{port?, interface?}], total?}.
  tcp_connections: {established_connections?: {connections?: [{remote_addr,
  local_port?, local_interface?}], total?}}. network_stats: {bytes_in?, bytes_out?,
  packets_in?, packets_out?}. Fields are optional as in the reference's table, except
  remote_addr inside a connection. Empty lists are valid (§4.4).
- [decision] Numbers that count are integers, not just numbers: port 1..65535,
  local_port 0..65535, total and the network_stats deltas 0..2^64-1. Booleans are
  never numbers. total is not compared with the length of its list (the AWS sample
  agent samples lists down to 50 and reports the true count).
- [decision] interface / local_interface: a non-empty string (omit it rather than
  sending "").
- remote_addr: "a.b.c.d:port" or "[v6]:port" (the IPv6 form is [unconfirmed] in the
  reference; this is its suggestion), the port 1..65535 in decimal, no zone id.
- custom_metrics: {name: [ {one typed value} ]}. [decision] A name is 1-128
  characters of [a-zA-Z0-9:_-] (the pattern of AWS custom metric names). The value
  must be an array holding exactly one object (a bare object is rejected with
  "Malformed metrics report: ... is an object ..."), the object exactly one of
  number (a finite number), number_list (finite numbers), string_list (strings),
  ip_list (IPv4 / IPv6 addresses without port or brackets).
- [decision] CBOR maps with duplicate keys cannot be seen through cbor2 (the last
  one wins); JSON objects with duplicate keys are rejected.

The throttle: [unconfirmed] AWS says reporting "is throttled to one metric per 5
minutes per device" but no source shows the answer. The emulator's (off by default)
rejects with ErrorCode throttle_error_code, default "ThrottlingException" (the name
AWS IoT's own APIs use for throttling), and a message saying when the next report
is allowed; it keeps the report's reportId.

Control commands (one JSON line on DIR/fakecloud.sock; see fakecloudctl):

    defender_reports {thing}
        -> {reports: [entry, ...]} every report the thing's topics received, oldest
        first, where entry is {t (epoch seconds, float), format: "json"|"cbor", topic,
        report (the decoded document as JSON, or null when it could not be decoded,
        e.g. oversized or malformed), report_id (the reportId of the answer, or
        null), names: "long"|"short"|null (the key style, when valid), accepted: bool,
        error (the ErrorMessage, when rejected), error_code (when rejected),
        warning (when accepted with a non-increasing report_id)}.
    defender_config {strict?: bool, throttle_seconds?: number >= 0 (0 = off),
                     throttle_error_code?: string}
        Set any of the options, return them all: {strict, throttle_seconds,
        throttle_error_code}. Defaults: false, 0, "ThrottlingException". The
        throttle of AWS is 300 s.
    defender_clear {thing?}
        Forget the stored reports and the report_id / throttle state of the thing,
        or of every thing. -> {cleared: number of reports forgotten}
"""

import io
import ipaddress
import json
import math
import re
import threading
import time
import unicodedata

import cbor2

from fakecloud import Api, defender_error, now_ms

FORMATS = ("json", "cbor")
MAX_PAYLOAD = 128 * 1024
THING_MAX_BYTES = 128
REPORT_ID_MAX = 2 ** 63 - 1
COUNT_MAX = 2 ** 64 - 1
MALFORMED = "Malformed metrics report"
INVALID_PAYLOAD = "InvalidPayload"
METRIC_NAME_RE = re.compile(r"[a-zA-Z0-9:_-]{1,128}\Z")
PORT_RE = re.compile(r"[0-9]{1,5}\Z")
TYPED_KEYS = ("number", "number_list", "string_list", "ip_list")


class Invalid(Exception):
    """A rejected report: the ErrorMessage (ErrorCode InvalidPayload unless code is given)."""

    def __init__(self, message, code=INVALID_PAYLOAD):
        super().__init__(message)
        self.message, self.code = message, code


def malformed(detail):
    return Invalid("%s: %s" % (MALFORMED, detail))


# ---------------------------------------------------------------- decoding


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise _Duplicate("duplicate key %s" % json.dumps(k))
        obj[k] = v
    return obj


def _no_constant(name):
    raise ValueError("%s is not JSON" % name)


def _finite_float(text):
    v = float(text)
    if not math.isfinite(v):
        raise ValueError("the number %s is out of range" % text[:40])
    return v


def decode_json(payload):
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise malformed("the payload is not UTF-8 (%s)" % e.reason)
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant,
                          parse_float=_finite_float)
    except _Duplicate as e:
        raise malformed("invalid JSON: %s" % e)
    except RecursionError:
        raise malformed("invalid JSON: nested too deeply")
    except ValueError as e:
        raise malformed("invalid JSON: %s" % e)


def _check_json_types(obj):
    """CBOR items that JSON cannot express are refused (the schema is a JSON one)."""
    stack = [(obj, None)]
    while stack:
        v, p = stack.pop()
        if isinstance(v, dict):
            for k, x in v.items():
                if not isinstance(k, str):
                    raise malformed("CBOR map key %s in %s is not a text string" % (_show(k), p or "the root"))
                stack.append((x, k if p is None else p + "." + k))
        elif isinstance(v, list):
            stack.extend((x, "%s[%d]" % (p or "", i)) for i, x in enumerate(v))
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise malformed("%s is %r, which JSON cannot express" % (p or "the root", v))
        elif v is None or isinstance(v, (str, int, bool)):
            pass
        else:
            raise malformed("%s is a CBOR %s, which JSON cannot express" % (p or "the root", type(v).__name__))


def decode_cbor(payload):
    fp = io.BytesIO(payload)
    try:
        obj = cbor2.CBORDecoder(fp).decode()
    except RecursionError:
        raise malformed("invalid CBOR: nested too deeply")
    except Exception as e:  # cbor2 raises several types (CBORDecodeError, ValueError, ...)
        raise malformed("invalid CBOR: %s" % e)
    if fp.tell() != len(payload):
        raise malformed("invalid CBOR: %d bytes after the first data item" % (len(payload) - fp.tell()))
    _check_json_types(obj)
    return obj


def decode(fmt, payload):
    """The report object (a dict) or raise Invalid."""
    if len(payload) > MAX_PAYLOAD:
        raise malformed("the payload is %d bytes, over the %d-byte (128 KiB) limit"
                        % (len(payload), MAX_PAYLOAD))
    if not payload:
        raise malformed("the payload is empty")
    obj = decode_json(payload) if fmt == "json" else decode_cbor(payload)
    if not isinstance(obj, dict):
        raise malformed("the report must be a %s, not %s" % ("JSON object" if fmt == "json" else "CBOR map",
                                                              _kind(obj)))
    return obj


# ---------------------------------------------------------------- the schema (reference §4.2)


class Field:
    def __init__(self, short, kind, sub=None, required=False):
        self.short, self.kind, self.sub, self.required = short, kind, sub, required


PORT_ENTRY = {"port": Field("pt", "port"), "interface": Field("if", "ifname")}
LISTENING = {"ports": Field("pts", "objects", PORT_ENTRY), "total": Field("t", "count")}
NETWORK_STATS = {"bytes_in": Field("bi", "count"), "bytes_out": Field("bo", "count"),
                 "packets_in": Field("pi", "count"), "packets_out": Field("po", "count")}
CONNECTION = {"remote_addr": Field("rad", "remote_addr", required=True),
              "local_port": Field("lp", "port0"), "local_interface": Field("li", "ifname")}
ESTABLISHED = {"connections": Field("cs", "objects", CONNECTION), "total": Field("t", "count")}
TCP_CONNECTIONS = {"established_connections": Field("ec", "object", ESTABLISHED)}
METRICS = {"listening_tcp_ports": Field("tp", "object", LISTENING),
           "listening_udp_ports": Field("up", "object", LISTENING),
           "network_stats": Field("ns", "object", NETWORK_STATS),
           "tcp_connections": Field("tc", "object", TCP_CONNECTIONS)}
HEADER = {"report_id": Field("rid", "report_id", required=True),
          "version": Field("v", "version", required=True)}
ROOT = {"header": Field("hed", "object", HEADER, required=True),
        "metrics": Field("met", "object", METRICS),
        "custom_metrics": Field("cmet", "custom")}


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    """An int (any size; math.isfinite would overflow on a huge one) or a finite float."""
    return _is_int(v) or (isinstance(v, float) and math.isfinite(v))


def _kind(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if _is_int(v) or isinstance(v, float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "an object"
    return "a %s" % type(v).__name__


def _show(v, limit=60):
    try:
        s = json.dumps(v)
    except (TypeError, ValueError):
        s = repr(v)
    return s if len(s) <= limit else s[:limit] + "..."


def _port(s):
    if not PORT_RE.match(s) or not 1 <= int(s) <= 65535:
        return None
    return int(s)


def remote_addr_ok(s):
    """'a.b.c.d:port' or '[v6]:port' with port 1-65535."""
    if not isinstance(s, str):
        return False
    if s.startswith("["):
        host, sep, port = s[1:].partition("]:")
        if not sep or "%" in host:
            return False
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
    else:
        host, sep, port = s.rpartition(":")
        if not sep:
            return False
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
    return _port(port) is not None


def ip_ok(s):
    if not isinstance(s, str) or "%" in s:
        return False
    try:
        ipaddress.ip_address(s)
    except ValueError:
        return False
    return True


def report_id_of(obj):
    """The header's report id if it is a valid one, whatever else is wrong, else None."""
    if not isinstance(obj, dict):
        return None
    for hk in ("header", "hed"):
        h = obj.get(hk)
        if isinstance(h, dict):
            for rk in ("report_id", "rid"):
                rid = h.get(rk)
                if _is_int(rid) and 1 <= rid <= REPORT_ID_MAX:
                    return rid
    return None


class Validator:
    """Checks one decoded report against §4.2; raises Invalid at the first problem."""

    def __init__(self, report):
        self.report = report
        self.style = None  # "long" | "short"

    def name(self, long, field):
        return long if self.style == "long" else field.short

    def run(self):
        r = self.report
        has_long, has_short = "header" in r, "hed" in r
        if has_long and has_short:
            raise malformed('mixes long and short key names: both "header" and "hed" at the root')
        if has_long or has_short:
            self.style = "long" if has_long else "short"
        else:
            self.style = "short" if ("met" in r or "cmet" in r) else "long"
        self._object(r, ROOT, None)
        if self.name("metrics", ROOT["metrics"]) not in r and \
                self.name("custom_metrics", ROOT["custom_metrics"]) not in r:
            raise malformed('the report has neither "%s" nor "%s"'
                            % (self.name("metrics", ROOT["metrics"]),
                               self.name("custom_metrics", ROOT["custom_metrics"])))
        return self.style

    def _path(self, path, key):
        return key if path is None else path + "." + key

    def _object(self, obj, spec, path):
        where = "the root" if path is None else path
        if not isinstance(obj, dict):
            raise malformed("%s must be an object, not %s" % (where, _kind(obj)))
        by_name = {self.name(long, f): (long, f) for long, f in spec.items()}
        other = {(f.short if self.style == "long" else long): long for long, f in spec.items()}
        for key in obj:
            if key in by_name:
                continue
            if key in other:
                raise malformed('mixes long and short key names: "%s" in %s is a %s name, but this report '
                                'uses %s names (its header is "%s")'
                                % (key, where, "short" if self.style == "long" else "long", self.style,
                                   "header" if self.style == "long" else "hed"))
            raise malformed('unknown key "%s" in %s (allowed: %s)'
                            % (key, where, ", ".join(sorted(by_name))))
        for key, (long, f) in by_name.items():
            if key not in obj:
                if f.required:
                    raise malformed('%s has no "%s"' % (where, key))
                continue
            self._value(obj[key], f, self._path(path, key))

    def _value(self, v, f, path):
        k = f.kind
        if k == "object":
            self._object(v, f.sub, path)
        elif k == "objects":
            if not isinstance(v, list):
                raise malformed("%s must be an array of objects, not %s" % (path, _kind(v)))
            for i, item in enumerate(v):
                self._object(item, f.sub, "%s[%d]" % (path, i))
        elif k == "custom":
            self._custom(v, path)
        elif k == "port":
            if not (_is_int(v) and 1 <= v <= 65535):
                raise malformed("%s must be a port number from 1 to 65535, not %s" % (path, _show(v)))
        elif k == "port0":
            if not (_is_int(v) and 0 <= v <= 65535):
                raise malformed("%s must be a port number from 0 to 65535, not %s" % (path, _show(v)))
        elif k == "count":
            if not (_is_int(v) and 0 <= v <= COUNT_MAX):
                raise malformed("%s must be an integer >= 0, not %s" % (path, _show(v)))
        elif k == "ifname":
            if not isinstance(v, str) or not v:
                raise malformed("%s must be a non-empty interface name string, not %s" % (path, _show(v)))
        elif k == "remote_addr":
            if not remote_addr_ok(v):
                raise malformed('%s must be a string "ipv4:port" or "[ipv6]:port" with a port from 1 to '
                                '65535, not %s' % (path, _show(v)))
        elif k == "report_id":
            if not (_is_int(v) and 1 <= v <= REPORT_ID_MAX):
                raise malformed("%s must be a positive integer (at most 2^63-1), not %s" % (path, _show(v)))
        elif k == "version":
            if v != "1.0" or not isinstance(v, str):
                raise malformed('%s must be the string "1.0", not %s' % (path, _show(v)))
        else:  # pragma: no cover
            raise AssertionError(k)

    def _custom(self, obj, path):
        if not isinstance(obj, dict):
            raise malformed("%s must be an object of custom metrics, not %s" % (path, _kind(obj)))
        for name, value in obj.items():
            p = path + "." + name
            if not METRIC_NAME_RE.match(name):
                raise malformed('custom metric name "%s" in %s must be 1-128 characters of [a-zA-Z0-9:_-]'
                                % (name[:140], path))
            if isinstance(value, dict):
                raise malformed('%s is an object; a custom metric value must be an array holding one '
                                'object, e.g. [{"number": 1}]' % p)
            if not isinstance(value, list):
                raise malformed("%s must be an array holding one object, not %s" % (p, _kind(value)))
            if len(value) != 1:
                raise malformed("%s must be an array holding exactly one object; it has %d elements"
                                % (p, len(value)))
            item = value[0]
            if not isinstance(item, dict):
                raise malformed("%s[0] must be an object, not %s" % (p, _kind(item)))
            if len(item) != 1:
                raise malformed("%s[0] must have exactly one of %s; it has %s"
                                % (p, ", ".join(TYPED_KEYS),
                                   ", ".join('"%s"' % k for k in item) or "none"))
            (key, v), = item.items()
            tp = "%s[0].%s" % (p, key)
            if key == "number":
                if not _is_number(v):
                    raise malformed("%s must be a number, not %s" % (tp, _show(v)))
            elif key == "number_list":
                if not isinstance(v, list) or not all(_is_number(x) for x in v):
                    raise malformed("%s must be an array of numbers, not %s" % (tp, _show(v)))
            elif key == "string_list":
                if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                    raise malformed("%s must be an array of strings, not %s" % (tp, _show(v)))
            elif key == "ip_list":
                if not isinstance(v, list):
                    raise malformed("%s must be an array of IP addresses, not %s" % (tp, _show(v)))
                for i, x in enumerate(v):
                    if not ip_ok(x):
                        raise malformed("%s[%d] must be an IPv4 or IPv6 address (no port), not %s"
                                        % (tp, i, _show(x)))
            else:
                raise malformed('unknown key "%s" in %s[0]: the typed keys are %s (they have no short '
                                'names)' % (key, p, ", ".join(TYPED_KEYS)))


def validate(report):
    """'long' or 'short' (the report's key style), or raise Invalid."""
    return Validator(report).run()


def thing_name_problem(thing):
    """Why the thing name is not acceptable (§4.1), or None."""
    n = len(thing.encode("utf-8"))
    if n == 0:
        return "the thing name is empty"
    if n > THING_MAX_BYTES:
        return "the thing name is %d bytes, over %d" % (n, THING_MAX_BYTES)
    if any(unicodedata.category(c) == "Cc" for c in thing):
        return "the thing name has a control character"
    return None


# ---------------------------------------------------------------- the API


class Config:
    def __init__(self):
        self.strict = False                # a non-increasing report_id is rejected
        self.throttle_seconds = 0.0        # 0: off; AWS: 300
        self.throttle_error_code = "ThrottlingException"   # [unconfirmed]

    def as_dict(self):
        return {"strict": self.strict, "throttle_seconds": self.throttle_seconds,
                "throttle_error_code": self.throttle_error_code}


class ThingState:
    def __init__(self):
        self.reports = []
        self.max_report_id = None     # highest accepted
        self.last_accepted = None     # time.monotonic() of the last accepted report


class DefenderApi(Api):
    name = "defender"

    def __init__(self, cloud):
        super().__init__(cloud)
        self.config = Config()
        self.lock = threading.Lock()
        self.things = {}

    def routes(self):
        return [("$aws/things/+/defender/metrics/" + fmt, self.on_report) for fmt in FORMATS]

    def commands(self):
        return {"defender_reports": self.cmd_reports, "defender_config": self.cmd_config,
                "defender_clear": self.cmd_clear}

    def _thing(self, name):
        t = self.things.get(name)
        if t is None:
            t = self.things[name] = ThingState()
        return t

    # ---- the report handler (paho's network thread; publishes outside the lock)

    def on_report(self, req):
        parts = req.topic.split("/")
        thing, fmt = parts[2], parts[5]
        entry = {"t": time.time(), "format": fmt, "topic": req.topic, "report": None, "report_id": None,
                 "names": None, "accepted": False}
        report = None
        try:
            report = decode(fmt, req.payload)
            entry["report"] = report
            entry["report_id"] = report_id_of(report)
            problem = thing_name_problem(thing)
            if problem:
                raise Invalid("Invalid thing name: %s" % problem)
            entry["names"] = validate(report)
        except Invalid as e:
            self._reject(req, thing, entry, e)
            return
        rid = entry["report_id"]
        with self.lock:
            t = self._thing(thing)
            try:
                if t.max_report_id is not None and rid <= t.max_report_id:
                    msg = ("report_id %d is not greater than %d, the highest report_id accepted for %s"
                           % (rid, t.max_report_id, thing))
                    if self.config.strict:
                        raise Invalid(msg)
                    entry["warning"] = msg
                    print("fakecloud: defender: warning: %s" % msg, flush=True)
                now = time.monotonic()
                limit = self.config.throttle_seconds
                if limit > 0 and t.last_accepted is not None and now - t.last_accepted < limit:
                    raise Invalid("Device metric reporting is throttled to one report per %g s per thing; "
                                  "the next report of %s is allowed in %.1f s"
                                  % (limit, thing, limit - (now - t.last_accepted)),
                                  code=self.config.throttle_error_code)
            except Invalid as e:
                entry.pop("warning", None)
                entry["error"], entry["error_code"] = e.message, e.code
                t.reports.append(entry)
                rejected = True
            else:
                t.max_report_id = rid if t.max_report_id is None else max(rid, t.max_report_id)
                t.last_accepted = now
                entry["accepted"] = True
                t.reports.append(entry)
                rejected = False
        if rejected:
            self.cloud.publish(req.topic + "/rejected", self._rejection(thing, rid, entry["error_code"],
                                                                        entry["error"]), 1)
        else:
            req.accept({"thingName": thing, "reportId": rid, "status": "ACCEPTED", "timestamp": now_ms()})

    @staticmethod
    def _rejection(thing, rid, code, message):
        err = defender_error(thing, code, message)
        if rid is None:
            return err
        out = {"thingName": err.pop("thingName"), "reportId": rid}
        out.update(err)
        return out

    def _reject(self, req, thing, entry, e):
        entry["error"], entry["error_code"] = e.message, e.code
        with self.lock:
            self._thing(thing).reports.append(entry)
        req.reject(self._rejection(thing, entry["report_id"], e.code, e.message))

    # ---- control commands

    def cmd_reports(self, req):
        thing = req.get("thing")
        if not isinstance(thing, str) or not thing:
            raise ValueError('defender_reports needs "thing"')
        with self.lock:
            t = self.things.get(thing)
            # entries are never changed once stored; a JSON round trip copies them deeply
            return {"reports": json.loads(json.dumps(t.reports)) if t else []}

    def cmd_config(self, req):
        new = {}
        if "strict" in req:
            if not isinstance(req["strict"], bool):
                raise ValueError('"strict" must be a boolean')
            new["strict"] = req["strict"]
        if "throttle_seconds" in req:
            v = req["throttle_seconds"]
            if not _is_number(v) or v < 0:
                raise ValueError('"throttle_seconds" must be a number >= 0 (0 turns the throttle off)')
            new["throttle_seconds"] = float(v)
        if "throttle_error_code" in req:
            v = req["throttle_error_code"]
            if not isinstance(v, str) or not v:
                raise ValueError('"throttle_error_code" must be a non-empty string')
            new["throttle_error_code"] = v
        with self.lock:
            for k, v in new.items():
                setattr(self.config, k, v)
            return self.config.as_dict()

    def cmd_clear(self, req):
        thing = req.get("thing")
        if thing is not None and not isinstance(thing, str):
            raise ValueError('"thing" must be a string')
        with self.lock:
            if thing is None:
                n = sum(len(t.reports) for t in self.things.values())
                self.things = {}
            else:
                t = self.things.pop(thing, None)
                n = len(t.reports) if t else 0
        return {"cleared": n}
