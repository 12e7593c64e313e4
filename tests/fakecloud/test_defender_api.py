"""Tests of the Device Defender metrics API of the fakecloud (defender_api.py) with paho devices.

Run: /usr/bin/python3 -m pytest -q tests/fakecloud/test_defender_api.py

One broker and one fakecloud for the module; each test has its own thing (report_id
and throttle state are per thing) and the Defender options are reset before each test.
A few checks of rules no device can reach through the broker's ACL (thing names) run
the handler in-process.
"""

import copy
import json
import os
import socket
import sys
import time

import cbor2
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "testbed"))
import fakecloud  # noqa: E402,F401  (first: it imports defender_api once fully initialised)
import defender_api  # noqa: E402
import testbed  # noqa: E402
from devclient import DeviceClient  # noqa: E402
from conftest import cloud_fixture  # noqa: E402

DEFAULTS = {"strict": False, "throttle_seconds": 0.0, "throttle_error_code": "ThrottlingException"}

# The reference's examples (§4.2), verbatim.
LONG_EXAMPLE = {
    "header": {"report_id": 1530304554, "version": "1.0"},
    "metrics": {
        "listening_tcp_ports": {"ports": [{"interface": "eth0", "port": 24800},
                                          {"interface": "eth0", "port": 22}], "total": 2},
        "listening_udp_ports": {"ports": [{"interface": "eth0", "port": 5353},
                                          {"interface": "eth0", "port": 67}], "total": 2},
        "network_stats": {"bytes_in": 29358693495, "bytes_out": 26485035, "packets_in": 10013573555,
                          "packets_out": 11382615},
        "tcp_connections": {
            "established_connections": {
                "connections": [{"local_interface": "eth0", "local_port": 80,
                                 "remote_addr": "192.168.0.1:8000"}],
                "total": 1,
            }
        },
    },
    "custom_metrics": {
        "MyMetricOfType_Number": [{"number": 1}],
        "MyMetricOfType_NumberList": [{"number_list": [1, 2, 3]}],
        "MyMetricOfType_StringList": [{"string_list": ["value_1", "value_2"]}],
        "MyMetricOfType_IpList": [{"ip_list": ["172.0.0.0", "172.0.0.10"]}],
    },
}

SHORT_EXAMPLE = {
    "hed": {"rid": 1530305228, "v": "1.0"},
    "met": {
        "tp": {"pts": [{"if": "eth0", "pt": 24800}, {"if": "eth0", "pt": 22}], "t": 2},
        "up": {"pts": [{"if": "eth0", "pt": 5353}], "t": 1},
        "ns": {"bi": 29359307173, "bo": 26490711, "pi": 10014614051, "po": 11387620},
        "tc": {"ec": {"cs": [{"li": "eth0", "lp": 80, "rad": "192.168.0.1:8000"}], "t": 1}},
    },
    "cmet": {"MyMetricOfType_Number": [{"number": 1}]},
}

ACCEPTED_KEYS = ["thingName", "reportId", "status", "timestamp"]
REJECTED_KEYS = ["thingName", "reportId", "status", "statusDetails", "timestamp"]


cloud = cloud_fixture("defender")


@pytest.fixture(autouse=True)
def defaults(request):
    if "cloud" in request.fixturenames:
        cloud = request.getfixturevalue("cloud")
        assert cloud.ok("defender_config", **DEFAULTS)["strict"] is False
    yield


class DefenderDevice:
    """A paho device subscribed to the answers of its own Defender topics (both formats)."""

    def __init__(self, cloud, name):
        self.cloud, self.thing = cloud, name
        self.base = "$aws/things/%s/defender/metrics" % name
        self.dev = DeviceClient.connect(cloud.tb, cloud.ok("create_thing", name=name))
        self.dev.client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.dev.subscribe(self.base + "/+/+")

    def close(self):
        self.dev.close()

    def _wait(self, topics, start, timeout):
        deadline = time.monotonic() + timeout
        with self.dev.cond:
            while True:
                for m in self.dev.messages[start:]:
                    if m[0] in topics:
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.dev.cond.wait(left)

    def send(self, report, fmt="json", topic=None):
        topic = topic or "%s/%s" % (self.base, fmt)
        if isinstance(report, bytes):
            payload = report
        elif fmt == "cbor":
            payload = cbor2.dumps(report)
        else:
            payload = json.dumps(report).encode()
        start = len(self.dev.messages)
        self.dev.publish(topic, payload)
        return topic, start

    def report(self, report, fmt="json", timeout=5.0):
        """-> ("accepted"|"rejected", the answer object)."""
        topic, start = self.send(report, fmt)
        m = self._wait((topic + "/accepted", topic + "/rejected"), start, timeout)
        assert m is not None, "no answer to %s within %.1f s" % (topic, timeout)
        return m[0].rsplit("/", 1)[1], json.loads(m[1])

    def accepted(self, report, fmt="json"):
        kind, obj = self.report(report, fmt)
        assert kind == "accepted", obj
        return obj

    def rejected(self, report, fmt="json"):
        kind, obj = self.report(report, fmt)
        assert kind == "rejected", obj
        return obj

    def no_answer(self, topic, payload, wait=0.5):
        start = len(self.dev.messages)
        self.dev.publish(topic, payload)
        m = self._wait((topic + "/accepted", topic + "/rejected"), start, wait)
        assert m is None, "unexpected answer %r" % (m,)


_n = [0]


@pytest.fixture
def dev(cloud):
    _n[0] += 1
    d = DefenderDevice(cloud, "def%d" % _n[0])
    yield d
    d.close()


def with_rid(report, rid):
    r = copy.deepcopy(report)
    if "header" in r:
        r["header"]["report_id"] = rid
    else:
        r["hed"]["rid"] = rid
    return r


def reports(cloud, thing):
    return cloud.ok("defender_reports", thing=thing)["reports"]


def check_accepted(obj, thing, rid, before_ms):
    assert list(obj) == ACCEPTED_KEYS, obj
    assert obj["thingName"] == thing and obj["reportId"] == rid and obj["status"] == "ACCEPTED"
    assert isinstance(obj["timestamp"], int)
    assert before_ms <= obj["timestamp"] <= int(time.time() * 1000), obj  # milliseconds


def check_rejected(obj, thing, rid, code="InvalidPayload"):
    """-> the ErrorMessage; rid None: the answer must have no reportId."""
    keys = [k for k in REJECTED_KEYS if rid is not None or k != "reportId"]
    assert list(obj) == keys, obj
    assert obj["thingName"] == thing and obj["status"] == "REJECTED"
    if rid is not None:
        assert obj["reportId"] == rid
    assert list(obj["statusDetails"]) == ["ErrorCode", "ErrorMessage"], obj
    assert obj["statusDetails"]["ErrorCode"] == code
    ts = obj["timestamp"]
    assert isinstance(ts, int) and abs(ts - time.time() * 1000) < 10000, obj  # milliseconds
    return obj["statusDetails"]["ErrorMessage"]


# ---------------------------------------------------------------- accepted reports


@pytest.mark.parametrize("fmt", ["json", "cbor"])
@pytest.mark.parametrize("example", [LONG_EXAMPLE, SHORT_EXAMPLE], ids=["long", "short"])
def test_reference_examples_are_accepted(cloud, dev, fmt, example):
    before = int(time.time() * 1000)
    rid = (example.get("header") or example.get("hed"))
    rid = rid.get("report_id") or rid.get("rid")
    check_accepted(dev.accepted(example, fmt), dev.thing, rid, before)
    (entry,) = reports(cloud, dev.thing)
    assert entry["format"] == fmt and entry["topic"] == "%s/%s" % (dev.base, fmt)
    assert entry["report"] == example and entry["accepted"] is True and entry["report_id"] == rid
    assert entry["names"] == ("long" if "header" in example else "short")
    assert "error" not in entry and "warning" not in entry


def test_json_answers_on_json_topics_and_cbor_on_cbor_topics(cloud, dev):
    dev.accepted(with_rid(SHORT_EXAMPLE, 10), "cbor")
    dev.rejected(b"{", "json")
    topics = dev.dev.topics()
    assert topics == [dev.base + "/cbor/accepted", dev.base + "/json/rejected"], topics


def test_edge_values_are_accepted(cloud, dev):
    report = {
        "header": {"report_id": 2 ** 63 - 1, "version": "1.0"},
        "metrics": {
            "listening_tcp_ports": {"ports": [], "total": 0},
            "listening_udp_ports": {"ports": [{"port": 65535}, {"port": 1, "interface": "wlan0"}]},
            "network_stats": {"bytes_in": 0, "bytes_out": 2 ** 64 - 1, "packets_in": 0},
            "tcp_connections": {"established_connections": {"connections": [
                {"remote_addr": "[2001:db8::1]:443", "local_port": 0},
                {"remote_addr": "[::ffff:10.0.0.1]:1"},
                {"remote_addr": "10.0.0.1:65535", "local_interface": "lo"}], "total": 7}},
        },
        "custom_metrics": {
            "a:b_c-d": [{"number": -1.5}],
            "empty_ips": [{"ip_list": []}],
            "ips": [{"ip_list": ["::1", "fe80::1", "255.255.255.255"]}],
            "strs": [{"string_list": []}],
            "nums": [{"number_list": [0, -3, 2.5]}],
        },
    }
    dev.accepted(report)
    # custom metrics alone, short names; metrics alone, empty
    dev.accepted({"hed": {"rid": 1, "v": "1.0"}, "cmet": {"m": [{"number": 0}]}})
    dev.accepted({"header": {"report_id": 2, "version": "1.0"}, "metrics": {}})


# ---------------------------------------------------------------- rejected reports


def test_mixed_long_and_short_names_are_rejected(cloud, dev):
    mixes = [
        {"hed": {"rid": 5, "v": "1.0"}, "metrics": {}},                            # root
        {"header": {"rid": 5, "version": "1.0"}, "metrics": {}},                   # header
        with_rid(dict(LONG_EXAMPLE, metrics={"listening_tcp_ports": {"pts": []}}), 5),
        with_rid(dict(SHORT_EXAMPLE, met={"tc": {"ec": {"cs": [{"remote_addr": "1.2.3.4:5"}]}}}), 5),
        {"header": {"report_id": 5, "version": "1.0"}, "hed": {"rid": 5, "v": "1.0"}, "metrics": {}},
    ]
    for report in mixes:
        msg = check_rejected(dev.rejected(report), dev.thing, 5)
        assert msg.startswith("Malformed metrics report") and "mixes long and short key names" in msg, msg
    for entry in reports(cloud, dev.thing):
        assert entry["accepted"] is False and entry["error_code"] == "InvalidPayload"


def test_a_bare_object_custom_metric_is_malformed(cloud, dev):
    report = with_rid(LONG_EXAMPLE, 77)
    report["custom_metrics"]["MyMetricOfType_Number"] = {"number": 1}
    msg = check_rejected(dev.rejected(report), dev.thing, 77)
    assert msg.startswith("Malformed metrics report"), msg
    assert "custom_metrics.MyMetricOfType_Number is an object" in msg, msg
    # the same in CBOR and with short names
    report = with_rid(SHORT_EXAMPLE, 78)
    report["cmet"]["MyMetricOfType_Number"] = {"number": 1}
    msg = check_rejected(dev.rejected(report, "cbor"), dev.thing, 78)
    assert msg.startswith("Malformed metrics report") and "cmet.MyMetricOfType_Number" in msg, msg


def _long(**metrics):
    return {"header": {"report_id": 9, "version": "1.0"}, "metrics": metrics}


def _custom(value):
    return {"hed": {"rid": 9, "v": "1.0"}, "cmet": {"m": value}}


def _conn(addr):
    return _long(tcp_connections={"established_connections": {"connections": [{"remote_addr": addr}]}})


INVALID = [
    # ports, totals, deltas
    ("port 0", _long(listening_tcp_ports={"ports": [{"port": 0}]}), "listening_tcp_ports.ports[0].port"),
    ("port -1", _long(listening_udp_ports={"ports": [{"port": 22}, {"port": -1}]}), "ports[1].port"),
    ("port string", _long(listening_tcp_ports={"ports": [{"port": "22"}]}), "port number"),
    ("port 65536", _long(listening_tcp_ports={"ports": [{"port": 65536}]}), "from 1 to 65535"),
    ("port float", _long(listening_tcp_ports={"ports": [{"port": 22.5}]}), "ports[0].port"),
    ("port bool", _long(listening_tcp_ports={"ports": [{"port": True}]}), "ports[0].port"),
    ("ports not a list", _long(listening_tcp_ports={"ports": {"port": 22}}), "array of objects"),
    ("empty interface", _long(listening_tcp_ports={"ports": [{"port": 22, "interface": ""}]}), "interface"),
    ("total -1", _long(listening_tcp_ports={"total": -1}), "listening_tcp_ports.total"),
    ("negative delta", _long(network_stats={"bytes_in": -1}), "network_stats.bytes_in must be an integer >= 0"),
    ("delta float", _long(network_stats={"packets_out": 0.5}), "network_stats.packets_out"),
    ("delta string", _long(network_stats={"bytes_out": "5"}), "network_stats.bytes_out"),
    ("local_port -1", _long(tcp_connections={"established_connections": {
        "connections": [{"remote_addr": "1.2.3.4:5", "local_port": -1}]}}), "local_port"),
    # remote_addr
    ("addr no port", _conn("192.168.0.1"), "remote_addr"),
    ("addr bad ip", _conn("300.1.1.1:80"), "remote_addr"),
    ("addr port 0", _conn("1.2.3.4:0"), "remote_addr"),
    ("addr port 70000", _conn("1.2.3.4:70000"), "remote_addr"),
    ("addr bare v6", _conn("2001:db8::1:443"), "remote_addr"),
    ("addr number", _conn(19216801), "remote_addr"),
    ("addr hostname", _conn("example.com:80"), "remote_addr"),
    ("no remote_addr", _long(tcp_connections={"established_connections": {"connections": [{"local_port": 1}]}}),
     'has no "remote_addr"'),
    # custom metrics
    ("bad ip_list", _custom([{"ip_list": ["10.0.0.1", "10.0.0.256"]}]), "cmet.m[0].ip_list[1]"),
    ("ip_list with port", _custom([{"ip_list": ["10.0.0.1:80"]}]), "ip_list[0]"),
    ("ip_list not a list", _custom([{"ip_list": "10.0.0.1"}]), "ip_list"),
    ("string_list of numbers", _custom([{"string_list": [1]}]), "string_list"),
    ("number_list of strings", _custom([{"number_list": ["1"]}]), "number_list"),
    ("number string", _custom([{"number": "1"}]), "cmet.m[0].number must be a number"),
    ("two typed keys", _custom([{"number": 1, "number_list": [1]}]), "exactly one of"),
    ("no typed key", _custom([{}]), "exactly one of"),
    ("short typed key", _custom([{"n": 1}]), 'unknown key "n"'),
    ("empty array", _custom([]), "exactly one object"),
    ("two objects", _custom([{"number": 1}, {"number": 2}]), "exactly one object"),
    ("a number", _custom(5), "must be an array holding one object"),
    ("bad metric name", {"hed": {"rid": 9, "v": "1.0"}, "cmet": {"my metric": [{"number": 1}]}},
     "custom metric name"),
    # header and structure
    ("version 1", {"header": {"report_id": 9, "version": "1"}, "metrics": {}}, 'version must be the string "1.0"'),
    ("version number", {"header": {"report_id": 9, "version": 1.0}, "metrics": {}}, "version"),
    ("no version", {"header": {"report_id": 9}, "metrics": {}}, 'has no "version"'),
    ("no metrics", {"header": {"report_id": 9, "version": "1.0"}}, 'neither "metrics" nor "custom_metrics"'),
    ("unknown root key", dict(_long(), extra=1), 'unknown key "extra" in the root'),
    ("unknown metrics key", _long(cpu_usage=5), 'unknown key "cpu_usage" in metrics'),
    ("unknown port key", _long(listening_tcp_ports={"ports": [{"port": 1, "proto": "tcp"}]}), '"proto"'),
]


@pytest.fixture(scope="module")
def shared_dev(cloud):
    d = DefenderDevice(cloud, "def-invalid")
    yield d
    d.close()


@pytest.mark.parametrize("report,expect", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_reports_are_rejected_saying_why(cloud, shared_dev, report, expect):
    msg = check_rejected(shared_dev.rejected(report), shared_dev.thing, 9)
    assert msg.startswith("Malformed metrics report: ") and expect in msg, msg


@pytest.mark.parametrize("header", [None, {"report_id": 0, "version": "1.0"}, {"report_id": "12", "version": "1.0"},
                                    {"report_id": 12.0, "version": "1.0"}, "12"])
def test_a_missing_or_bad_report_id_is_rejected_without_report_id(cloud, shared_dev, header):
    report = {"metrics": {}}
    if header is not None:
        report["header"] = header
    msg = check_rejected(shared_dev.rejected(report), shared_dev.thing, None)
    if header is None:
        assert msg == 'Malformed metrics report: the root has no "header"', msg
    else:
        assert "header" in msg, msg


@pytest.mark.parametrize("fmt,payload,expect", [
    ("json", b"{", "invalid JSON"),
    ("json", b"", "empty"),
    ("json", b"[1, 2]", "must be a JSON object"),
    ("json", b'{"header": {"report_id": 1, "version": "1.0"}, "metrics": {}, "metrics": {}}', "duplicate key"),
    ("json", b'{"header": {"report_id": 1, "version": "1.0"}, "custom_metrics": {"m": [{"number": NaN}]}}',
     "NaN"),
    ("json", b'{"header": {"report_id": 1, "version": "1.0"}, "custom_metrics": {"m": [{"number": 1e400}]}}',
     "1e400 is out of range"),
    ("json", b"\xff\xfe{}", "not UTF-8"),
    ("json", cbor2.dumps(SHORT_EXAMPLE), "not UTF-8"),       # CBOR on the JSON topic
    ("cbor", json.dumps(SHORT_EXAMPLE).encode(), "invalid CBOR"),   # JSON on the CBOR topic
    ("cbor", cbor2.dumps(SHORT_EXAMPLE) + b"\x00", "after the first data item"),
    ("cbor", cbor2.dumps({"hed": {"rid": 1, "v": "1.0"}, "cmet": {"m": [{"number": 1}]}, 1: 2}),
     "is not a text string"),
    ("cbor", cbor2.dumps({"hed": {"rid": 1, "v": "1.0"}, "cmet": {"m": [{"string_list": [b"x"]}]}}),
     "cmet.m[0].string_list[0] is a CBOR bytes"),
    ("cbor", cbor2.dumps([1]), "must be a CBOR map"),
], ids=["json-truncated", "json-empty", "json-array", "json-duplicate-key", "json-nan", "json-1e400", "json-not-utf8",
        "cbor-on-json-topic", "json-on-cbor-topic", "cbor-trailing-byte", "cbor-int-key", "cbor-bytes",
        "cbor-array"])
def test_undecodable_payloads_are_malformed(cloud, dev, fmt, payload, expect):
    msg = check_rejected(dev.rejected(payload, fmt), dev.thing, None)
    assert msg.startswith("Malformed metrics report: ") and expect in msg, msg
    (entry,) = reports(cloud, dev.thing)
    assert entry["report"] is None and entry["report_id"] is None and entry["accepted"] is False
    assert entry["format"] == fmt and entry["error"] == msg and entry["error_code"] == "InvalidPayload"


def test_payloads_over_128_kib_are_rejected(cloud, dev):
    body = json.dumps(with_rid(SHORT_EXAMPLE, 500)).encode()
    exact = body + b" " * (128 * 1024 - len(body))          # 131072 bytes: fine
    dev.accepted(exact)
    over = with_rid(SHORT_EXAMPLE, 501)
    over = json.dumps(over).encode()
    over += b" " * (128 * 1024 + 1 - len(over))               # 131073 bytes
    msg = check_rejected(dev.rejected(over), dev.thing, None)
    assert msg.startswith("Malformed metrics report") and "131073 bytes" in msg, msg
    assert [e["accepted"] for e in reports(cloud, dev.thing)] == [True, False]


# ---------------------------------------------------------------- topics


def test_a_device_reaches_only_its_own_thing_topics(cloud, dev):
    other = DefenderDevice(cloud, dev.thing + "-other")
    try:
        # the broker's ACL drops dev's publish on the other thing's topic: no report, no answer
        other_topic = other.base + "/json"
        dev.dev.publish(other_topic, json.dumps(with_rid(SHORT_EXAMPLE, 1)))
        # answers and other topics of dev's own tree are not reports either
        dev.no_answer(dev.base + "/json/accepted", json.dumps(with_rid(SHORT_EXAMPLE, 2)))
        dev.no_answer(dev.base + "/xml", json.dumps(with_rid(SHORT_EXAMPLE, 3)))
        # a round trip of each device: anything sent before has been handled
        other.accepted(with_rid(SHORT_EXAMPLE, 4))
        dev.accepted(with_rid(SHORT_EXAMPLE, 5))
        assert [e["report_id"] for e in reports(cloud, other.thing)] == [4]
        assert [e["report_id"] for e in reports(cloud, dev.thing)] == [5]
        assert other.dev.topics() == [other.base + "/json/accepted"], other.dev.topics()
        # dev also hears its own publish on .../json/accepted; the one answer is to report 5
        answers = [json.loads(p) for t, p in dev.dev.messages if "status" in json.loads(p)]
        assert [(a["thingName"], a["reportId"]) for a in answers] == [(dev.thing, 5)], answers
        got = cloud.ok("received", topic="$aws/things/+/defender/#")["messages"]
        assert not [m for m in got if m["topic"] == other_topic and m["thing"] == other.thing
                    and json.loads(m["payload"])["hed"]["rid"] == 1], got
    finally:
        other.close()


class _StubCloud:
    def __init__(self):
        self.sent = []

    def publish(self, topic, payload, qos=1, retain=False):
        self.sent.append((topic, payload))


class _Req:
    def __init__(self, cloud, topic, payload):
        self.cloud, self.topic, self.payload = cloud, topic, payload

    def accept(self, obj, qos=1):
        self.cloud.publish(self.topic + "/accepted", obj, qos)

    def reject(self, obj, qos=1):
        self.cloud.publish(self.topic + "/rejected", obj, qos)


@pytest.mark.parametrize("thing,ok", [("t" * 128, True), ("é" * 64, True), ("t" * 129, False),
                                      ("é" * 64 + "t", False), ("bad\x01name", False), ("bad\x7fname", False)],
                         ids=["128-ascii", "128-bytes-utf8", "129-ascii", "129-bytes-utf8", "ctrl-01", "ctrl-7f"])
def test_thing_names_over_128_bytes_or_with_control_characters_are_rejected(thing, ok):
    # in-process: the testbed cannot issue such a client certificate
    stub = _StubCloud()
    api = defender_api.DefenderApi(stub)
    topic = "$aws/things/%s/defender/metrics/json" % thing
    api.on_report(_Req(stub, topic, json.dumps(with_rid(SHORT_EXAMPLE, 3)).encode()))
    ((t, answer),) = stub.sent
    if ok:
        assert t == topic + "/accepted" and answer["thingName"] == thing and answer["reportId"] == 3
    else:
        assert t == topic + "/rejected", answer
        msg = check_rejected(answer, thing, 3)
        assert msg.startswith("Invalid thing name"), msg


# ---------------------------------------------------------------- report_id and throttle


def test_non_increasing_report_ids_are_accepted_with_a_warning_by_default(cloud, dev):
    for rid in (100, 100, 50, 101):
        dev.accepted(with_rid(SHORT_EXAMPLE, rid))
    entries = reports(cloud, dev.thing)
    assert [e["accepted"] for e in entries] == [True] * 4
    assert ["warning" in e for e in entries] == [False, True, True, False], entries
    assert "report_id 50 is not greater than 100" in entries[2]["warning"]
    with open(cloud.out.name) as f:
        out = f.read()
    assert "warning: report_id 100 is not greater than 100, the highest report_id accepted for %s" \
        % dev.thing in out, out


def test_strict_mode_rejects_non_increasing_report_ids(cloud, dev):
    assert cloud.ok("defender_config", strict=True)["strict"] is True
    dev.accepted(with_rid(LONG_EXAMPLE, 100))
    for rid in (100, 99):
        msg = check_rejected(dev.rejected(with_rid(LONG_EXAMPLE, rid)), dev.thing, rid)
        assert "report_id %d is not greater than 100" % rid in msg, msg
    dev.accepted(with_rid(LONG_EXAMPLE, 101), "cbor")
    msg = check_rejected(dev.rejected(with_rid(LONG_EXAMPLE, 101), "cbor"), dev.thing, 101)
    assert "not greater than 101" in msg
    entries = reports(cloud, dev.thing)
    assert [(e["report_id"], e["accepted"]) for e in entries] == \
        [(100, True), (100, False), (99, False), (101, True), (101, False)]
    assert not any("warning" in e for e in entries)
    # per thing: another thing may start low
    other = DefenderDevice(cloud, dev.thing + "-b")
    try:
        other.accepted(with_rid(LONG_EXAMPLE, 1))
    finally:
        other.close()


def test_throttle_rejects_a_report_within_the_window(cloud, dev):
    # off by default: back to back is fine
    dev.accepted(with_rid(SHORT_EXAMPLE, 1))
    dev.accepted(with_rid(SHORT_EXAMPLE, 2))
    cfg = cloud.ok("defender_config", throttle_seconds=300)
    assert cfg["throttle_seconds"] == 300 and cfg["throttle_error_code"] == "ThrottlingException"
    msg = check_rejected(dev.rejected(with_rid(SHORT_EXAMPLE, 3)), dev.thing, 3, code="ThrottlingException")
    assert "throttled to one report per 300 s" in msg, msg
    # an invalid report is still InvalidPayload, not throttled
    check_rejected(dev.rejected(dict(with_rid(SHORT_EXAMPLE, 4), x=1)), dev.thing, 4)
    # the window runs from the last accepted report; rejected ones do not restart it
    cloud.ok("defender_config", throttle_seconds=1, throttle_error_code="Throttled")
    time.sleep(1.05)
    dev.accepted(with_rid(SHORT_EXAMPLE, 5))
    check_rejected(dev.rejected(with_rid(SHORT_EXAMPLE, 6)), dev.thing, 6, code="Throttled")
    time.sleep(1.05)
    dev.accepted(with_rid(SHORT_EXAMPLE, 7))
    entries = reports(cloud, dev.thing)
    assert [(e["report_id"], e["accepted"], e.get("error_code")) for e in entries] == [
        (1, True, None), (2, True, None), (3, False, "ThrottlingException"), (4, False, "InvalidPayload"),
        (5, True, None), (6, False, "Throttled"), (7, True, None)]


# ---------------------------------------------------------------- control commands


def test_defender_reports_and_clear(cloud, dev):
    cloud.ok("defender_clear")          # other tests' reports: the counts below are exact
    assert reports(cloud, dev.thing) == []
    t0 = time.time()
    dev.accepted(with_rid(LONG_EXAMPLE, 10), "cbor")
    bad = with_rid(SHORT_EXAMPLE, 11)
    bad["met"]["ns"]["bi"] = -5
    dev.rejected(bad)
    dev.rejected(b"not json")
    e1, e2, e3 = reports(cloud, dev.thing)
    assert t0 <= e1["t"] <= e2["t"] <= e3["t"] <= time.time()
    assert e1 == {"t": e1["t"], "format": "cbor", "topic": dev.base + "/cbor", "report": with_rid(LONG_EXAMPLE, 10),
                  "report_id": 10, "names": "long", "accepted": True}
    assert e2 == {"t": e2["t"], "format": "json", "topic": dev.base + "/json", "report": bad, "report_id": 11,
                  "names": None, "accepted": False, "error_code": "InvalidPayload",
                  "error": "Malformed metrics report: met.ns.bi must be an integer >= 0, not -5"}
    assert e3["report"] is None and e3["report_id"] is None and e3["error"].startswith("Malformed metrics report")

    # clearing one thing forgets its reports and its report_id state only
    other = DefenderDevice(cloud, dev.thing + "-c")
    try:
        other.accepted(with_rid(SHORT_EXAMPLE, 1))
        cloud.ok("defender_config", strict=True)
        assert cloud.ok("defender_clear", thing=dev.thing)["cleared"] == 3
        assert reports(cloud, dev.thing) == []
        assert len(reports(cloud, other.thing)) == 1
        dev.accepted(with_rid(LONG_EXAMPLE, 1))            # 1 < 10, but the state is gone
        check_rejected(other.rejected(with_rid(SHORT_EXAMPLE, 1)), other.thing, 1)
        assert cloud.ok("defender_clear")["cleared"] == 3
        assert reports(cloud, dev.thing) == [] and reports(cloud, other.thing) == []
        other.accepted(with_rid(SHORT_EXAMPLE, 1))
    finally:
        other.close()


def test_defender_config_checks_its_arguments(cloud):
    assert cloud.ok("defender_config") == dict(DEFAULTS, ok=True)
    for bad in ({"strict": 1}, {"throttle_seconds": -1}, {"throttle_seconds": "300"},
                {"throttle_seconds": True}, {"throttle_error_code": ""}):
        resp = cloud.cmd("defender_config", **bad)
        assert resp["ok"] is False and list(bad)[0] in resp["error"], resp
    assert cloud.ok("defender_config") == dict(DEFAULTS, ok=True)
    assert cloud.cmd("defender_reports")["ok"] is False
    assert cloud.cmd("defender_clear", thing=5)["ok"] is False
