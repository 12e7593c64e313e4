"""Tests of the Jobs device API of the fakecloud (jobs_api.py) with paho-mqtt devices.

Run: /usr/bin/python3 -m pytest -q tests/fakecloud/test_jobs_api.py

One broker and one fakecloud for the module; each test has its own thing (jobs
state is per thing) and resets the jobs options first.
"""

import json
import os
import re
import socket
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "testbed"))
import testbed  # noqa: E402
from devclient import DeviceClient  # noqa: E402
from conftest import cloud_fixture  # noqa: E402

DEFAULTS = {"strict": False, "describe_terminal": "reject", "seconds_per_minute": 60.0,
            "notify_on_start": False}


cloud = cloud_fixture("jobs")


class JobsDevice:
    """A paho device subscribed to its whole jobs namespace."""

    def __init__(self, cloud, name):
        self.cloud, self.thing = cloud, name
        self.base = "$aws/things/%s/jobs" % name
        self.dev = DeviceClient.connect(cloud.tb, cloud.ok("create_thing", name=name))
        # Without it a request/response round trip can stall ~40 ms (Nagle against the
        # broker's delayed ACK): the suite takes twice as long.
        self.dev.client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.dev.subscribe(self.base + "/#")
        self.n = 0

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

    def send(self, suffix, payload=None, token=True, topic=None):
        """Publish a request; payload: dict (a clientToken is added unless token=False) or bytes."""
        topic = topic or self.base + "/" + suffix
        if not isinstance(payload, bytes):
            payload = dict(payload or {})
            if token and "clientToken" not in payload:
                self.n += 1
                payload["clientToken"] = "tok-%d" % self.n
            payload = json.dumps(payload).encode()
        start = len(self.dev.messages)
        self.dev.publish(topic, payload)
        return topic, start

    def request(self, suffix, payload=None, token=True, topic=None, timeout=5.0):
        """-> ("accepted"|"rejected", response object)."""
        topic, start = self.send(suffix, payload, token, topic)
        m = self._wait((topic + "/accepted", topic + "/rejected"), start, timeout)
        assert m is not None, "no answer to %s within %.1f s" % (topic, timeout)
        return m[0].rsplit("/", 1)[1], json.loads(m[1])

    def accepted(self, suffix, payload=None, **kw):
        kind, obj = self.request(suffix, payload, **kw)
        assert kind == "accepted", obj
        return obj

    def rejected(self, suffix, payload=None, **kw):
        kind, obj = self.request(suffix, payload, **kw)
        assert kind == "rejected", obj
        return obj

    def no_answer(self, suffix, payload=None, wait=0.8):
        topic, start = self.send(suffix, payload)
        m = self._wait((topic + "/accepted", topic + "/rejected"), start, wait)
        assert m is None, "unexpected answer %r" % (m,)

    def wait_echo(self, topic, timeout=5.0):
        """Wait for the device's own publish on topic to come back (it is subscribed to it)."""
        assert self._wait((topic,), 0, timeout) is not None, "no echo of %s" % topic

    def sync(self):
        """A round trip: every push the cloud sent before it has arrived."""
        self.accepted("get")

    def pushes(self, which):
        topic = self.base + "/" + which
        with self.dev.cond:
            return [json.loads(p) for t, p in self.dev.messages if t == topic]

    def topics(self):
        return self.dev.topics()


_things = [0]


@pytest.fixture
def jd(cloud, request):
    assert cloud.ok("jobs_config", **DEFAULTS)["strict"] is False
    _things[0] += 1
    name = "t%d-%s" % (_things[0], re.sub(r"[^a-zA-Z0-9_-]", "_", request.node.name)[:60])
    d = JobsDevice(cloud, name)
    yield d
    d.close()


def ts_ok(v):
    """An epoch-seconds timestamp of about now."""
    return isinstance(v, int) and not isinstance(v, bool) and abs(v - time.time()) < 10


def create(cloud, jd, job_id, document=None, **kw):
    return cloud.ok("create_job", thing=jd.thing, job_id=job_id,
                    document=document if document is not None else {"op": job_id}, **kw)["execution"]


def job(cloud, jd, job_id, **kw):
    return cloud.ok("job", thing=jd.thing, job_id=job_id, **kw)["execution"]


def wait_status(cloud, jd, job_id, status, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        e = job(cloud, jd, job_id)
        if e["status"] == status:
            return e
        assert time.monotonic() < deadline, "%s is %s, not %s" % (job_id, e["status"], status)
        time.sleep(0.02)


def err_ok(err, code, token=None, state=None):
    keys = {"code", "message", "timestamp"} | ({"clientToken"} if token else set()) \
        | ({"executionState"} if state is not None else set())
    assert set(err) == keys, err
    assert err["code"] == code and isinstance(err["message"], str) and err["message"], err
    assert ts_ok(err["timestamp"])
    if token:
        assert err["clientToken"] == token
    if state is not None:
        assert err["executionState"] == state, err


# ---------------------------------------------------------------- accepted shapes


def test_get_pending_shapes_and_order(cloud, jd):
    r = jd.accepted("get", {"clientToken": "c-1"})
    assert set(r) == {"inProgressJobs", "queuedJobs", "timestamp", "clientToken"}
    assert r["inProgressJobs"] == [] and r["queuedJobs"] == [] and r["clientToken"] == "c-1"
    assert ts_ok(r["timestamp"])

    create(cloud, jd, "j1")
    create(cloud, jd, "j2")
    create(cloud, jd, "j3")
    jd.accepted("j2/update", {"status": "IN_PROGRESS"})
    r = jd.accepted("get", b"", token=False)  # an empty payload: no clientToken
    assert set(r) == {"inProgressJobs", "queuedJobs", "timestamp"}
    [ip] = r["inProgressJobs"]
    assert set(ip) == {"jobId", "queuedAt", "startedAt", "lastUpdatedAt", "versionNumber", "executionNumber"}
    assert ip["jobId"] == "j2" and ip["versionNumber"] == 2 and ip["executionNumber"] == 1
    assert all(ts_ok(ip[k]) for k in ("queuedAt", "startedAt", "lastUpdatedAt"))
    assert [q["jobId"] for q in r["queuedJobs"]] == ["j1", "j3"]
    for q in r["queuedJobs"]:
        assert set(q) == {"jobId", "queuedAt", "lastUpdatedAt", "versionNumber", "executionNumber"}
        assert q["versionNumber"] == 1 and q["queuedAt"] == q["lastUpdatedAt"]


def test_start_next_shape_version_and_unchanged_in_progress(cloud, jd):
    r = jd.accepted("start-next", {"clientToken": "c-0"})
    assert set(r) == {"timestamp", "clientToken"}  # nothing pending: no "execution"

    create(cloud, jd, "j1", {"operation": "install", "n": [1, 2]})
    create(cloud, jd, "j2")
    r = jd.accepted("start-next", {"statusDetails": {"step": "starting"}, "clientToken": "c-2"})
    assert set(r) == {"execution", "timestamp", "clientToken"} and r["clientToken"] == "c-2"
    x = r["execution"]
    assert set(x) == {"jobId", "thingName", "jobDocument", "status", "statusDetails", "queuedAt",
                      "startedAt", "lastUpdatedAt", "versionNumber", "executionNumber"}
    assert x["jobId"] == "j1" and x["thingName"] == jd.thing and x["status"] == "IN_PROGRESS"
    assert x["jobDocument"] == {"operation": "install", "n": [1, 2]}  # an object, not a string
    assert x["statusDetails"] == {"step": "starting"}
    assert x["versionNumber"] == 2 and x["executionNumber"] == 1
    assert all(ts_ok(x[k]) for k in ("queuedAt", "startedAt", "lastUpdatedAt"))

    # an IN_PROGRESS execution is returned unchanged, whatever the request says
    again = jd.accepted("start-next", {"statusDetails": {"step": "other"}, "stepTimeoutInMinutes": 5})
    assert again["execution"] == x
    assert job(cloud, jd, "j1")["versionNumber"] == 2
    assert job(cloud, jd, "j2")["status"] == "QUEUED"
    [h] = job(cloud, jd, "j1")["history"]
    assert h["op"] == "start-next" and h["outcome"] == "accepted" and h["versionNumber"] == 2


def test_describe_job_and_next(cloud, jd):
    r = jd.accepted("$next/get", b"", token=False)
    assert set(r) == {"timestamp"}  # nothing pending: no "execution"
    create(cloud, jd, "j1", {"ver": "1"})
    create(cloud, jd, "j2", {"ver": "2"})

    r = jd.accepted("j2/get", {"clientToken": "c-3"})
    assert set(r) == {"execution", "timestamp", "clientToken"}
    x = r["execution"]
    assert set(x) == {"jobId", "jobDocument", "status", "queuedAt", "lastUpdatedAt",
                      "versionNumber", "executionNumber"}  # no thingName, as captured from AWS
    assert x["jobId"] == "j2" and x["jobDocument"] == {"ver": "2"} and x["status"] == "QUEUED"

    assert "jobDocument" not in jd.accepted("j2/get", {"includeJobDocument": False})["execution"]
    assert jd.accepted("j2/get", {"executionNumber": 1})["execution"]["executionNumber"] == 1
    err_ok(jd.rejected("j2/get", {"executionNumber": 2, "clientToken": "c-4"}), "ResourceNotFound", "c-4")
    err_ok(jd.rejected("nope/get", {"clientToken": "c-5"}), "ResourceNotFound", "c-5")
    err_ok(jd.rejected("bad.id/get", {"clientToken": "c-6"}), "InvalidRequest", "c-6")

    assert jd.accepted("$next/get")["execution"]["jobId"] == "j1"
    jd.accepted("j2/update", {"status": "IN_PROGRESS", "statusDetails": {"a": "b"}})
    x = jd.accepted("$next/get")["execution"]  # IN_PROGRESS comes first
    assert x["jobId"] == "j2" and x["statusDetails"] == {"a": "b"} and "startedAt" in x


def test_describe_of_a_terminal_execution_is_configurable(cloud, jd):
    create(cloud, jd, "j1")
    jd.accepted("j1/update", {"status": "IN_PROGRESS"})
    jd.accepted("j1/update", {"status": "SUCCEEDED", "statusDetails": {"r": "ok"}})
    err_ok(jd.rejected("j1/get", {"clientToken": "d-1"}), "TerminalStateReached", "d-1")
    assert cloud.ok("jobs_config", describe_terminal="accept")["describe_terminal"] == "accept"
    x = jd.accepted("j1/get")["execution"]
    assert x["status"] == "SUCCEEDED" and x["versionNumber"] == 3 and x["statusDetails"] == {"r": "ok"}
    assert set(jd.accepted("$next/get")) == {"timestamp", "clientToken"}


def test_update_accepted_shapes_and_versions(cloud, jd):
    create(cloud, jd, "j1", {"operation": "install"})
    r = jd.accepted("j1/update", {"status": "IN_PROGRESS", "clientToken": "c-4"})
    assert set(r) == {"timestamp", "clientToken"} and r["clientToken"] == "c-4" and ts_ok(r["timestamp"])
    assert set(jd.accepted("j1/update", {"status": "IN_PROGRESS"}, token=False)) == {"timestamp"}

    r = jd.accepted("j1/update", {"status": "IN_PROGRESS", "statusDetails": {"step": "flashing"},
                                  "includeJobExecutionState": True, "includeJobDocument": True})
    assert set(r) == {"executionState", "jobDocument", "timestamp", "clientToken"}
    assert r["executionState"] == {"status": "IN_PROGRESS", "statusDetails": {"step": "flashing"},
                                   "versionNumber": 4}
    assert r["jobDocument"] == {"operation": "install"}

    # statusDetails: kept when omitted, replaced (not merged) when given
    r = jd.accepted("j1/update", {"status": "IN_PROGRESS", "includeJobExecutionState": True})
    assert r["executionState"] == {"status": "IN_PROGRESS", "statusDetails": {"step": "flashing"},
                                   "versionNumber": 5}
    r = jd.accepted("j1/update", {"status": "SUCCEEDED", "statusDetails": {"result": "ok"},
                                  "includeJobExecutionState": True})
    assert r["executionState"] == {"status": "SUCCEEDED", "statusDetails": {"result": "ok"}, "versionNumber": 6}
    e = job(cloud, jd, "j1")
    assert e["status"] == "SUCCEEDED" and e["versionNumber"] == 6 and e["statusDetails"] == {"result": "ok"}
    assert e["startedAt"] is not None and e["lastUpdatedAt"] >= e["startedAt"] >= e["queuedAt"]


def test_expected_version_as_number_or_string(cloud, jd):
    create(cloud, jd, "j1")
    jd.accepted("j1/update", {"status": "IN_PROGRESS", "expectedVersion": 1})
    jd.accepted("j1/update", {"status": "IN_PROGRESS", "expectedVersion": "2", "statusDetails": {"s": "x"}})
    err = jd.rejected("j1/update", {"status": "SUCCEEDED", "expectedVersion": 2, "clientToken": "c-4"})
    err_ok(err, "VersionMismatch", "c-4", {"status": "IN_PROGRESS", "statusDetails": {"s": "x"}, "versionNumber": 3})
    err = jd.rejected("j1/update", {"status": "SUCCEEDED", "expectedVersion": "7"}, token=False)
    err_ok(err, "VersionMismatch", None, {"status": "IN_PROGRESS", "statusDetails": {"s": "x"}, "versionNumber": 3})
    assert job(cloud, jd, "j1")["versionNumber"] == 3
    jd.accepted("j1/update", {"status": "SUCCEEDED", "expectedVersion": 3})


def test_execution_number_is_checked(cloud, jd):
    create(cloud, jd, "j1")
    err_ok(jd.rejected("j1/update", {"status": "IN_PROGRESS", "executionNumber": 2, "clientToken": "e"}),
           "ResourceNotFound", "e")
    err_ok(jd.rejected("nope/update", {"status": "IN_PROGRESS", "clientToken": "f"}), "ResourceNotFound", "f")
    jd.accepted("j1/update", {"status": "IN_PROGRESS", "executionNumber": 1})
    jd.accepted("j1/update", {"status": "IN_PROGRESS", "executionNumber": "1"})


# ---------------------------------------------------------------- transitions


def test_terminal_states_refuse_every_update(cloud, jd):
    for job_id, final in (("a", "SUCCEEDED"), ("b", "FAILED"), ("c", "REJECTED")):
        create(cloud, jd, job_id)
        jd.accepted(job_id + "/update", {"status": "IN_PROGRESS", "statusDetails": {"k": job_id}})
        jd.accepted(job_id + "/update", {"status": final})
        state = {"status": final, "statusDetails": {"k": job_id}, "versionNumber": 3}
        for status in ("IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED"):
            err = jd.rejected(job_id + "/update", {"status": status, "clientToken": "x"})
            err_ok(err, "InvalidStateTransition", "x", state)
        # a terminal execution answers InvalidStateTransition even with a stale expectedVersion
        err = jd.rejected(job_id + "/update", {"status": "IN_PROGRESS", "expectedVersion": 1}, token=False)
        err_ok(err, "InvalidStateTransition", None, state)
        assert job(cloud, jd, job_id)["versionNumber"] == 3


def test_device_cannot_set_service_statuses(cloud, jd):
    create(cloud, jd, "j1")
    for payload in ({"status": s} for s in ("QUEUED", "TIMED_OUT", "REMOVED", "CANCELED", "SUCCESS",
                                             "in_progress", 3, None)):
        payload["clientToken"] = "s"
        err_ok(jd.rejected("j1/update", payload), "InvalidRequest", "s")
    err_ok(jd.rejected("j1/update", {"clientToken": "s"}), "InvalidRequest", "s")  # no status
    err_ok(jd.rejected("j1/update", b"", token=False), "InvalidRequest")
    e = job(cloud, jd, "j1")
    assert e["status"] == "QUEUED" and e["versionNumber"] == 1 and len(e["history"]) == 10
    assert all(h["outcome"] == "rejected" and h["code"] == "InvalidRequest" for h in e["history"])


def test_queued_straight_to_a_terminal_status_and_strict_mode(cloud, jd):
    for j in ("a", "b", "c", "d", "e", "f"):
        create(cloud, jd, j)
    jd.accepted("a/update", {"status": "SUCCEEDED"})
    jd.accepted("b/update", {"status": "FAILED"})
    jd.accepted("c/update", {"status": "REJECTED"})
    assert [job(cloud, jd, j)["versionNumber"] for j in "abc"] == [2, 2, 2]

    assert cloud.ok("set_strict", value=True) == {"ok": True, "strict": True}
    for status in ("SUCCEEDED", "FAILED"):
        err = jd.rejected("d/update", {"status": status, "clientToken": "st"})
        err_ok(err, "InvalidStateTransition", "st", {"status": "QUEUED", "versionNumber": 1})
    jd.accepted("e/update", {"status": "REJECTED"})  # still allowed
    jd.accepted("d/update", {"status": "IN_PROGRESS"})
    jd.accepted("d/update", {"status": "SUCCEEDED"})

    assert cloud.ok("set_strict", value=False)["strict"] is False
    jd.accepted("f/update", {"status": "FAILED"})
    assert cloud.cmd("set_strict", value="yes")["ok"] is False


# ---------------------------------------------------------------- validation


def test_status_details_validation(cloud, jd):
    create(cloud, jd, "j1")
    bad = [
        {"k%d" % i: "v" for i in range(11)},  # 11 pairs
        {"k" * 129: "v"},
        {"": "v"},
        {"a/b": "v"},
        {"a b": "v"},
        {"ключ": "v"},
        {"k": ""},
        {"k": "v" * 1025},
        {"k": "line\nbreak"},
        {"k": "nul\u0000"},
        {"k": "zero\u200bwidth"},  # category Cf
        {"k": 5},
        {"k": True},
        {"k": None},
        {"k": {"nested": "x"}},
        ["k", "v"],
        "k=v",
        None,
    ]
    for details in bad:
        err = jd.rejected("j1/update", {"status": "IN_PROGRESS", "statusDetails": details, "clientToken": "v"})
        assert err["code"] == "InvalidRequest", details
        err_ok(err, "InvalidRequest", "v")
        err = jd.rejected("start-next", {"statusDetails": details, "clientToken": "w"})
        assert err["code"] == "InvalidRequest", details
    assert job(cloud, jd, "j1")["versionNumber"] == 1

    good = {"k%d" % i: "v" for i in range(8)}
    good["a:b_c-D9" + "k" * 120] = "x" * 1024
    good["unicode"] = "prüfung ✓"
    r = jd.accepted("j1/update", {"status": "IN_PROGRESS", "statusDetails": good, "includeJobExecutionState": True})
    assert r["executionState"]["statusDetails"] == good
    assert jd.accepted("j1/update", {"status": "IN_PROGRESS", "statusDetails": {},
                                     "includeJobExecutionState": True})["executionState"]["statusDetails"] == {}


def test_other_invalid_requests(cloud, jd):
    create(cloud, jd, "j1")
    # clientToken: at most 64 bytes, a string; a bad one is not echoed
    assert jd.accepted("get", {"clientToken": "x" * 64})["clientToken"] == "x" * 64
    err_ok(jd.rejected("get", {"clientToken": "x" * 65}), "InvalidRequest")
    err_ok(jd.rejected("j1/update", {"status": "IN_PROGRESS", "clientToken": "é" * 33}), "InvalidRequest")
    err_ok(jd.rejected("start-next", {"clientToken": 12}), "InvalidRequest")
    bad_update_fields = [
        {"expectedVersion": "1.0.1"}, {"expectedVersion": True}, {"expectedVersion": [1]},
        {"expectedVersion": -1}, {"executionNumber": "x"}, {"executionNumber": 1.5},
        {"includeJobDocument": "yes"}, {"includeJobExecutionState": 1},
        {"stepTimeoutInMinutes": 0}, {"stepTimeoutInMinutes": 10081}, {"stepTimeoutInMinutes": 1.5},
        {"stepTimeoutInMinutes": "5"}, {"stepTimeoutInMinutes": -2},
    ]
    for fields in bad_update_fields:
        payload = dict(fields, status="IN_PROGRESS", clientToken="u")
        err = jd.rejected("j1/update", payload)
        assert err["code"] == "InvalidRequest", fields
        err_ok(err, "InvalidRequest", "u")
    err_ok(jd.rejected("start-next", {"stepTimeoutInMinutes": -1, "clientToken": "n"}), "InvalidRequest", "n")
    err_ok(jd.rejected("j1/get", {"includeJobDocument": "no", "clientToken": "g"}), "InvalidRequest", "g")
    err_ok(jd.rejected("j1/get", {"executionNumber": "one", "clientToken": "g"}), "InvalidRequest", "g")
    for suffix in ("get", "start-next", "j1/get", "j1/update"):
        err_ok(jd.rejected(suffix, b"[1, 2]"), "InvalidRequest")
    err_ok(jd.rejected("bad.id/update", {"status": "IN_PROGRESS", "clientToken": "b"}), "InvalidRequest", "b")
    err_ok(jd.rejected("$next/update", {"status": "IN_PROGRESS", "clientToken": "b"}), "InvalidRequest", "b")
    assert job(cloud, jd, "j1")["versionNumber"] == 1
    jd.accepted("j1/update", {"status": "IN_PROGRESS", "stepTimeoutInMinutes": 10080, "expectedVersion": "1"})


def test_invalid_json(cloud, jd):
    create(cloud, jd, "j1")
    for suffix in ("get", "start-next", "j1/get", "$next/get", "j1/update"):
        for payload in (b"{not json", b"\xff\xfe{}", b'{"clientToken": "c"'):
            err_ok(jd.rejected(suffix, payload), "InvalidJson")
    e = job(cloud, jd, "j1")
    assert e["versionNumber"] == 1 and [h["request"] for h in e["history"]] == \
        ["{not json", "\ufffd\ufffd{}", '{"clientToken": "c"']


def test_invalid_topic_and_ignored_response_topics(cloud, jd):
    create(cloud, jd, "j1")
    for suffix in ("j1/delete", "j1/update/extra", "a/b/c/d", "get/now", "notify/x"):
        err_ok(jd.rejected(suffix, {"clientToken": "it"}), "InvalidTopic", "it")
    err_ok(jd.rejected(None, b"", topic=jd.base), "InvalidTopic")
    # what a device publishes on response and push topics is not a request: no answer
    before = len(jd.topics())
    for suffix in ("notify", "notify-next", "get/accepted", "start-next/rejected", "j1/get/accepted",
                   "j1/update/rejected"):
        jd.send(suffix, {"status": "SUCCEEDED"})
        jd.wait_echo(jd.base + "/" + suffix)
    jd.sync()
    extra = jd.topics()[before:]
    for suffix in ("notify", "notify-next", "get/accepted", "start-next/rejected", "j1/get/accepted",
                   "j1/update/rejected"):
        extra.remove(jd.base + "/" + suffix)  # the device's own publishes, back from the broker
    assert extra == [jd.base + "/get", jd.base + "/get/accepted"], extra
    assert job(cloud, jd, "j1")["status"] == "QUEUED"


# ---------------------------------------------------------------- notifications


def test_notify_and_notify_next_exactly_on_list_and_head_changes(cloud, jd):
    q1 = create(cloud, jd, "j1", {"operation": "a"})["queuedAt"]
    jd.sync()
    [n] = jd.pushes("notify")
    assert set(n) == {"timestamp", "jobs"} and ts_ok(n["timestamp"])
    assert n["jobs"] == {"QUEUED": [{"jobId": "j1", "queuedAt": q1, "lastUpdatedAt": q1,
                                     "versionNumber": 1, "executionNumber": 1}]}
    [nn] = jd.pushes("notify-next")
    assert set(nn) == {"timestamp", "execution"} and ts_ok(nn["timestamp"])
    assert nn["execution"] == {"jobId": "j1", "jobDocument": {"operation": "a"}, "status": "QUEUED",
                               "queuedAt": q1, "lastUpdatedAt": q1, "versionNumber": 1, "executionNumber": 1}

    # starting the head and changing its details changes neither the list nor the head
    jd.accepted("start-next")
    jd.accepted("j1/update", {"status": "IN_PROGRESS", "statusDetails": {"p": "50"}})
    jd.accepted("j1/update", {"status": "IN_PROGRESS", "statusDetails": {"p": "60"}, "stepTimeoutInMinutes": 30})
    jd.sync()
    assert len(jd.pushes("notify")) == 1 and len(jd.pushes("notify-next")) == 1

    # a second job enters the list behind the head
    create(cloud, jd, "j2")
    jd.sync()
    assert len(jd.pushes("notify")) == 2 and len(jd.pushes("notify-next")) == 1
    jobs = jd.pushes("notify")[-1]["jobs"]
    assert [x["jobId"] for x in jobs["IN_PROGRESS"]] == ["j1"] and [x["jobId"] for x in jobs["QUEUED"]] == ["j2"]
    assert set(jobs["IN_PROGRESS"][0]) == {"jobId", "queuedAt", "startedAt", "lastUpdatedAt",
                                           "versionNumber", "executionNumber"}
    assert jobs["IN_PROGRESS"][0]["versionNumber"] == 4

    # the head reaches a terminal status: it leaves the list and j2 is next
    jd.accepted("j1/update", {"status": "SUCCEEDED"})
    jd.sync()
    assert len(jd.pushes("notify")) == 3 and len(jd.pushes("notify-next")) == 2
    assert [x["jobId"] for x in jd.pushes("notify")[-1]["jobs"]["QUEUED"]] == ["j2"]
    assert "IN_PROGRESS" not in jd.pushes("notify")[-1]["jobs"]
    nn = jd.pushes("notify-next")[-1]["execution"]
    assert nn["jobId"] == "j2" and nn["status"] == "QUEUED" and "thingName" not in nn

    # the last one goes: an empty list and a head-less notify-next
    jd.accepted("j2/update", {"status": "REJECTED"})
    jd.sync()
    assert len(jd.pushes("notify")) == 4 and len(jd.pushes("notify-next")) == 3
    assert set(jd.pushes("notify")[-1]) == {"timestamp", "jobs"} and jd.pushes("notify")[-1]["jobs"] == {}
    assert set(jd.pushes("notify-next")[-1]) == {"timestamp"}

    # a rejected update changes nothing, so it pushes nothing
    jd.rejected("j2/update", {"status": "IN_PROGRESS"})
    jd.sync()
    assert len(jd.pushes("notify")) == 4 and len(jd.pushes("notify-next")) == 3


def test_notify_next_when_a_later_job_starts_first(cloud, jd):
    create(cloud, jd, "j1")
    create(cloud, jd, "j2")
    jd.sync()
    assert len(jd.pushes("notify")) == 2 and len(jd.pushes("notify-next")) == 1
    jd.accepted("j2/update", {"status": "IN_PROGRESS", "statusDetails": {"s": "1"}})
    jd.sync()
    assert len(jd.pushes("notify")) == 2  # still the same two pending executions
    [_, nn] = jd.pushes("notify-next")
    assert nn["execution"]["jobId"] == "j2" and nn["execution"]["status"] == "IN_PROGRESS"
    assert nn["execution"]["statusDetails"] == {"s": "1"} and nn["execution"]["versionNumber"] == 2
    x = jd.accepted("start-next")["execution"]  # the IN_PROGRESS one, unchanged
    assert x["jobId"] == "j2" and x["versionNumber"] == 2


def test_notify_on_start_option(cloud, jd):
    cloud.ok("jobs_config", notify_on_start=True)
    create(cloud, jd, "j1")
    jd.accepted("start-next")
    jd.accepted("j1/update", {"status": "IN_PROGRESS", "statusDetails": {"a": "b"}})
    jd.sync()
    assert [list(n["jobs"]) for n in jd.pushes("notify")] == [["QUEUED"], ["IN_PROGRESS"]]
    assert len(jd.pushes("notify-next")) == 1


def test_queue_order_and_the_ten_entry_limit(cloud, jd):
    ids = ["j%02d" % i for i in range(12)]
    for j in ids:
        create(cloud, jd, j)
    r = jd.accepted("get")
    assert r["inProgressJobs"] == [] and [q["jobId"] for q in r["queuedJobs"]] == ids[:10]
    jd.sync()
    assert len(jd.pushes("notify")) == 12 and len(jd.pushes("notify-next")) == 1
    assert [q["jobId"] for q in jd.pushes("notify")[-1]["jobs"]["QUEUED"]] == ids[:10]

    assert jd.accepted("start-next")["execution"]["jobId"] == "j00"
    r = jd.accepted("get")
    assert [x["jobId"] for x in r["inProgressJobs"]] == ["j00"]
    assert [q["jobId"] for q in r["queuedJobs"]] == ids[1:10]

    done = []
    for _ in ids:
        x = jd.accepted("start-next")["execution"]
        jd.accepted(x["jobId"] + "/update", {"status": "SUCCEEDED", "expectedVersion": x["versionNumber"]})
        done.append(x["jobId"])
    assert done == ids
    assert set(jd.accepted("start-next")) == {"timestamp", "clientToken"}
    jd.sync()
    assert len(jd.pushes("notify")) == 24 and len(jd.pushes("notify-next")) == 13
    assert [n.get("execution", {}).get("jobId") for n in jd.pushes("notify-next")] == ids + [None]
    assert [e["jobId"] for e in cloud.ok("jobs", thing=jd.thing)["executions"]] == ids


def test_only_the_requesting_things_topics(cloud, jd):
    other = JobsDevice(cloud, jd.thing + "-b")
    try:
        create(cloud, jd, "j1")
        jd.accepted("start-next")
        assert other.accepted("get")["queuedJobs"] == [] and other.accepted("get")["inProgressJobs"] == []
        err_ok(other.rejected("j1/get", {"clientToken": "o"}), "ResourceNotFound", "o")
        assert set(other.accepted("start-next")) == {"timestamp", "clientToken"}
        jd.sync()
        other.sync()
        assert not [t for t in other.topics() if jd.base in t]
        assert not [t for t in jd.topics() if other.base in t]
        assert other.pushes("notify") == [] and other.pushes("notify-next") == []
    finally:
        other.close()


# ---------------------------------------------------------------- timers


def test_step_timeout_from_start_next(cloud, jd):
    cloud.ok("jobs_config", seconds_per_minute=0.6)
    create(cloud, jd, "j1")
    t0 = time.monotonic()
    x = jd.accepted("start-next", {"stepTimeoutInMinutes": 1, "statusDetails": {"s": "1"}})["execution"]
    assert x["approximateSecondsBeforeTimedOut"] == 1
    assert "approximateSecondsBeforeTimedOut" in jd.accepted("j1/get")["execution"]
    e = wait_status(cloud, jd, "j1", "TIMED_OUT")
    assert time.monotonic() - t0 >= 0.55
    assert e["versionNumber"] == 2 and e["approximateSecondsBeforeTimedOut"] is None
    assert e["events"][-1]["event"] == "timed_out" and e["events"][-1]["reason"] == "step"
    jd.sync()
    assert jd.pushes("notify")[-1]["jobs"] == {} and set(jd.pushes("notify-next")[-1]) == {"timestamp"}
    assert len(jd.pushes("notify")) == 2 and len(jd.pushes("notify-next")) == 2
    err = jd.rejected("j1/update", {"status": "SUCCEEDED", "clientToken": "late"})
    err_ok(err, "InvalidStateTransition", "late", {"status": "TIMED_OUT", "statusDetails": {"s": "1"},
                                                   "versionNumber": 2})


def test_step_timer_reset_clear_and_not_reset(cloud, jd):
    cloud.ok("jobs_config", seconds_per_minute=0.8)
    create(cloud, jd, "j1")
    jd.accepted("j1/update", {"status": "IN_PROGRESS", "stepTimeoutInMinutes": 1})
    for _ in range(4):  # 1.2 s in all, each reset well within 0.8 s
        time.sleep(0.3)
        jd.accepted("j1/update", {"status": "IN_PROGRESS", "stepTimeoutInMinutes": 1})
    assert job(cloud, jd, "j1")["status"] == "IN_PROGRESS"

    jd.accepted("j1/update", {"status": "IN_PROGRESS", "stepTimeoutInMinutes": -1})
    assert "approximateSecondsBeforeTimedOut" not in jd.accepted("j1/get")["execution"]
    time.sleep(1.0)
    assert job(cloud, jd, "j1")["status"] == "IN_PROGRESS"

    # an IN_PROGRESS update without stepTimeoutInMinutes leaves the running timer alone
    t0 = time.monotonic()
    jd.accepted("j1/update", {"status": "IN_PROGRESS", "stepTimeoutInMinutes": 1})
    time.sleep(0.3)
    jd.accepted("j1/update", {"status": "IN_PROGRESS", "statusDetails": {"still": "going"}})
    wait_status(cloud, jd, "j1", "TIMED_OUT")
    assert 0.7 <= time.monotonic() - t0 < 3.0


def test_job_step_and_in_progress_timeouts(cloud, jd):
    create(cloud, jd, "j1", step_timeout_minutes=0.01)  # 0.6 s, fractional minutes
    create(cloud, jd, "j2", in_progress_timeout_seconds=1.0)
    time.sleep(0.8)
    assert job(cloud, jd, "j1")["status"] == "QUEUED"  # timers start at IN_PROGRESS

    t0 = time.monotonic()
    x = jd.accepted("start-next")["execution"]
    assert x["jobId"] == "j1" and x["approximateSecondsBeforeTimedOut"] == 1
    e = wait_status(cloud, jd, "j1", "TIMED_OUT")
    assert time.monotonic() - t0 >= 0.55 and e["events"][-1]["reason"] == "step"

    # the in-progress timeout cannot be reset by the device's step timer
    t0 = time.monotonic()
    x = jd.accepted("start-next", {"stepTimeoutInMinutes": 10})["execution"]
    assert x["jobId"] == "j2" and x["approximateSecondsBeforeTimedOut"] == 1
    for _ in range(2):
        time.sleep(0.3)
        jd.accepted("j2/update", {"status": "IN_PROGRESS", "stepTimeoutInMinutes": 10})
    e = wait_status(cloud, jd, "j2", "TIMED_OUT")
    assert 0.95 <= time.monotonic() - t0 < 3.0 and e["events"][-1]["reason"] == "in_progress"
    jd.sync()
    assert jd.pushes("notify")[-1]["jobs"] == {} and set(jd.pushes("notify-next")[-1]) == {"timestamp"}
    assert [n["execution"]["jobId"] for n in jd.pushes("notify-next")[:-1]] == ["j1", "j2"]


# ---------------------------------------------------------------- service-side changes


def test_cancel_job(cloud, jd):
    create(cloud, jd, "j1")
    create(cloud, jd, "j2")
    e = cloud.ok("cancel_job", thing=jd.thing, job_id="j1", reason="operator")["execution"]
    assert e["status"] == "CANCELED" and e["versionNumber"] == 1
    assert e["events"][-1] == dict(e["events"][-1], event="canceled", force=False, reason="operator")
    jd.sync()
    assert [q["jobId"] for q in jd.pushes("notify")[-1]["jobs"]["QUEUED"]] == ["j2"]
    assert jd.pushes("notify-next")[-1]["execution"]["jobId"] == "j2"
    counts = (len(jd.pushes("notify")), len(jd.pushes("notify-next")))

    jd.accepted("start-next", {"statusDetails": {"s": "1"}})
    resp = cloud.cmd("cancel_job", thing=jd.thing, job_id="j2")
    assert resp["ok"] is False and "force" in resp["error"]
    assert job(cloud, jd, "j2")["status"] == "IN_PROGRESS"
    jd.sync()
    assert (len(jd.pushes("notify")), len(jd.pushes("notify-next"))) == counts

    assert cloud.ok("cancel_job", thing=jd.thing, job_id="j2", force=True)["execution"]["status"] == "CANCELED"
    jd.sync()
    assert jd.pushes("notify")[-1]["jobs"] == {} and set(jd.pushes("notify-next")[-1]) == {"timestamp"}
    err = jd.rejected("j2/update", {"status": "SUCCEEDED", "clientToken": "c"})
    err_ok(err, "InvalidStateTransition", "c", {"status": "CANCELED", "statusDetails": {"s": "1"}, "versionNumber": 2})
    assert cloud.cmd("cancel_job", thing=jd.thing, job_id="j2", force=True)["ok"] is False
    assert cloud.cmd("cancel_job", thing=jd.thing, job_id="nope")["ok"] is False


def test_remove_job(cloud, jd):
    create(cloud, jd, "j1")
    create(cloud, jd, "j2")
    jd.accepted("j2/update", {"status": "IN_PROGRESS"})
    jd.sync()
    n0, nn0 = len(jd.pushes("notify")), len(jd.pushes("notify-next"))
    assert cloud.ok("remove_job", thing=jd.thing, job_id="j1")["execution"]["status"] == "REMOVED"
    jd.sync()  # j1 left the list; j2 (IN_PROGRESS) was and stays the head
    assert len(jd.pushes("notify")) == n0 + 1 and len(jd.pushes("notify-next")) == nn0
    assert cloud.ok("remove_job", thing=jd.thing, job_id="j2")["execution"]["status"] == "REMOVED"
    jd.sync()
    assert len(jd.pushes("notify")) == n0 + 2 and len(jd.pushes("notify-next")) == nn0 + 1
    assert jd.pushes("notify")[-1]["jobs"] == {} and set(jd.pushes("notify-next")[-1]) == {"timestamp"}
    err_ok(jd.rejected("j2/get", {"clientToken": "r"}), "TerminalStateReached", "r")
    assert set(jd.accepted("start-next")) == {"timestamp", "clientToken"}
    assert cloud.cmd("remove_job", thing=jd.thing, job_id="j2")["ok"] is False


def test_retry_job(cloud, jd):
    create(cloud, jd, "j1", {"op": "x"})
    jd.accepted("j1/update", {"status": "IN_PROGRESS"})
    assert cloud.cmd("retry_job", thing=jd.thing, job_id="j1")["ok"] is False  # not terminal
    jd.accepted("j1/update", {"status": "FAILED"})
    jd.sync()
    n0, nn0 = len(jd.pushes("notify")), len(jd.pushes("notify-next"))
    e = cloud.ok("retry_job", thing=jd.thing, job_id="j1")["execution"]
    assert e["executionNumber"] == 2 and e["status"] == "QUEUED" and e["versionNumber"] == 1
    assert e["startedAt"] is None and e["history"] == []
    jd.sync()
    assert len(jd.pushes("notify")) == n0 + 1 and len(jd.pushes("notify-next")) == nn0 + 1
    [q] = jd.pushes("notify")[-1]["jobs"]["QUEUED"]
    assert q["jobId"] == "j1" and q["executionNumber"] == 2 and q["versionNumber"] == 1
    assert jd.pushes("notify-next")[-1]["execution"]["executionNumber"] == 2

    assert jd.accepted("j1/get")["execution"]["executionNumber"] == 2  # the latest by default
    err_ok(jd.rejected("j1/get", {"executionNumber": 1, "clientToken": "t"}), "TerminalStateReached", "t")
    err = jd.rejected("j1/update", {"status": "IN_PROGRESS", "executionNumber": 1, "clientToken": "t"})
    err_ok(err, "InvalidStateTransition", "t", {"status": "FAILED", "versionNumber": 3})
    x = jd.accepted("start-next")["execution"]
    assert x["executionNumber"] == 2 and x["versionNumber"] == 2 and x["jobDocument"] == {"op": "x"}
    jd.accepted("j1/update", {"status": "SUCCEEDED", "executionNumber": 2})
    assert cloud.cmd("retry_job", thing=jd.thing, job_id="j1")["ok"] is False  # SUCCEEDED
    r = cloud.ok("job", thing=jd.thing, job_id="j1")
    assert [(x["executionNumber"], x["status"]) for x in r["executions"]] == [(1, "FAILED"), (2, "SUCCEEDED")]
    assert r["document"] == {"op": "x"} and r["execution"]["executionNumber"] == 2
    assert cloud.ok("job", thing=jd.thing, job_id="j1", execution_number=1)["execution"]["status"] == "FAILED"


def test_retry_of_a_timed_out_execution(cloud, jd):
    create(cloud, jd, "j1", step_timeout_seconds=0.3)
    jd.accepted("start-next")
    wait_status(cloud, jd, "j1", "TIMED_OUT")
    e = cloud.ok("retry_job", thing=jd.thing, job_id="j1")["execution"]
    assert (e["executionNumber"], e["status"]) == (2, "QUEUED")
    assert jd.accepted("$next/get")["execution"]["executionNumber"] == 2


# ---------------------------------------------------------------- control: history and fault injection


def test_job_history_records_every_update(cloud, jd):
    create(cloud, jd, "j1")
    create(cloud, jd, "j2")
    jd.accepted("start-next", {"statusDetails": {"s": "0"}})
    jd.accepted("j1/update", {"status": "IN_PROGRESS", "statusDetails": {"s": "1"}, "clientToken": "h1"})
    jd.rejected("j1/update", {"status": "SUCCEEDED", "expectedVersion": 1, "clientToken": "h2"})
    jd.rejected("j1/update", b"{oops")
    jd.accepted("j1/update", {"status": "SUCCEEDED", "expectedVersion": 3, "clientToken": "h3"})
    jd.rejected("j1/update", {"status": "FAILED", "clientToken": "h4"})
    jd.rejected("nope/update", {"status": "IN_PROGRESS", "clientToken": "h5"})

    h = job(cloud, jd, "j1")["history"]
    assert [(x["op"], x["outcome"], x.get("code")) for x in h] == [
        ("start-next", "accepted", None), ("update", "accepted", None),
        ("update", "rejected", "VersionMismatch"), ("update", "rejected", "InvalidJson"),
        ("update", "accepted", None), ("update", "rejected", "InvalidStateTransition")]
    assert h[1]["request"] == {"status": "IN_PROGRESS", "statusDetails": {"s": "1"}, "clientToken": "h1"}
    assert h[1]["status"] == "IN_PROGRESS" and h[1]["versionNumber"] == 3
    assert h[3]["request"] == "{oops" and h[1]["topic"] == jd.base + "/j1/update"
    assert all(isinstance(x["t"], float) for x in h)
    terminal = [x for x in h if x["outcome"] == "accepted" and x["status"] in ("SUCCEEDED", "FAILED", "REJECTED")]
    assert len(terminal) == 1 and terminal[0]["request"]["clientToken"] == "h3"

    r = cloud.ok("jobs", thing=jd.thing)
    assert [(e["jobId"], e["status"]) for e in r["executions"]] == [("j1", "SUCCEEDED"), ("j2", "QUEUED")]
    assert [(u["request"]["clientToken"], u["code"]) for u in r["unmatched"]] == [("h5", "ResourceNotFound")]
    assert cloud.ok("jobs", thing="nobody") == {"ok": True, "executions": [], "unmatched": []}
    assert cloud.cmd("job", thing=jd.thing, job_id="nope")["ok"] is False


def test_fail_next_updates(cloud, jd):
    create(cloud, jd, "j1")
    assert cloud.ok("fail_next_updates", thing=jd.thing, code="RequestThrottled", count=2)["count"] == 2
    for tok in ("f1", "f2"):
        err_ok(jd.rejected("j1/update", {"status": "IN_PROGRESS", "clientToken": tok}), "RequestThrottled", tok)
    jd.accepted("get")  # other requests are not affected
    e = job(cloud, jd, "j1")
    assert e["status"] == "QUEUED" and e["versionNumber"] == 1
    assert [(x["outcome"], x["code"], x["injected"]) for x in e["history"]] == [("rejected", "RequestThrottled", True)] * 2
    jd.accepted("j1/update", {"status": "IN_PROGRESS", "clientToken": "f3"})

    cloud.ok("fail_next_updates", thing=jd.thing, code="InternalError")
    err_ok(jd.rejected("j1/update", {"status": "SUCCEEDED", "clientToken": "f4"}), "InternalError", "f4")
    cloud.ok("fail_next_updates", thing=jd.thing, code="VersionMismatch")
    err_ok(jd.rejected("j1/update", {"status": "SUCCEEDED", "clientToken": "f5"}), "VersionMismatch", "f5",
           {"status": "IN_PROGRESS", "versionNumber": 2})
    cloud.ok("fail_next_updates", thing=jd.thing, code="InternalError", count=5)
    cloud.ok("fail_next_updates", thing=jd.thing, code="InternalError", count=0)
    jd.accepted("j1/update", {"status": "SUCCEEDED"})
    assert cloud.cmd("fail_next_updates", thing=jd.thing, code="", count=1)["ok"] is False


def test_drop_next(cloud, jd):
    create(cloud, jd, "j1")
    r = cloud.ok("drop_next", thing=jd.thing)
    assert r["topic_filter"] == jd.base + "/#" and r["count"] == 1
    jd.no_answer("j1/update", {"status": "IN_PROGRESS", "clientToken": "d1"})
    e = job(cloud, jd, "j1")
    assert e["status"] == "QUEUED" and [x["outcome"] for x in e["history"]] == ["dropped"]
    jd.accepted("j1/update", {"status": "IN_PROGRESS", "clientToken": "d2"})

    cloud.ok("drop_next", thing=jd.thing, topic_filter=jd.base + "/get", count=2)
    jd.accepted("start-next")
    jd.no_answer("get", wait=0.5)
    jd.no_answer("get", wait=0.5)
    jd.accepted("get")
    # the dropped requests still reached the cloud
    got = cloud.ok("received", topic=jd.base + "/get")["messages"]
    assert len(got) == 3


def test_control_command_errors(cloud, jd):
    t = jd.thing
    for args in ({"job_id": "j"}, {"thing": t}, {"thing": t, "job_id": "j", "document": "text"},
                 {"thing": t, "job_id": "j"}, {"thing": t, "job_id": "a.b", "document": {}},
                 {"thing": "a/b", "job_id": "j", "document": {}},
                 {"thing": t, "job_id": "j", "document": {"x": "y" * 40000}},
                 {"thing": t, "job_id": "j", "document": {}, "step_timeout_seconds": 0},
                 {"thing": t, "job_id": "j", "document": {}, "step_timeout_seconds": 1,
                  "step_timeout_minutes": 1}):
        resp = cloud.cmd("create_job", **args)
        assert resp["ok"] is False and resp["error"], args
    create(cloud, jd, "j")
    assert "already" in cloud.cmd("create_job", thing=t, job_id="j", document={})["error"]
    assert cloud.cmd("jobs_config", describe_terminal="maybe")["ok"] is False
    assert cloud.cmd("jobs_config", seconds_per_minute=0)["ok"] is False
    assert cloud.ok("jobs_config") == dict(DEFAULTS, ok=True)
    assert cloud.cmd("drop_next", thing=t, count=-1)["ok"] is False
    assert cloud.cmd("job", thing=t, job_id="j", execution_number=2)["ok"] is False
