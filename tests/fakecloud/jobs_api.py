"""The AWS IoT Jobs device MQTT API for fakecloud (shared/reference/aws-iot-mqtt-api.md §3, §0).

Written from the reference alone; it shares no code with the device agent.

Device requests (answered on <request-topic>/accepted or /rejected):

    $aws/things/<thing>/jobs/get                  GetPendingJobExecutions
    $aws/things/<thing>/jobs/start-next           StartNextPendingJobExecution
    $aws/things/<thing>/jobs/<jobId|$next>/get    DescribeJobExecution
    $aws/things/<thing>/jobs/<jobId>/update       UpdateJobExecution

Pushes: $aws/things/<thing>/jobs/notify (JobExecutionsChanged) and .../notify-next
(NextJobExecutionChanged). Through the testbed's mosquitto the device has to
subscribe to the response topics to get them (on AWS it gets them anyway).

State: per thing, jobs in creation order, each with its executions (1, 2, ... after
retry_job); a state machine per (thing, jobId, executionNumber) as in §3.5.
Timestamps are epoch seconds. All replies and pushes go out through one ordered
outbox thread: a response is always sent before the notifications it causes.

Control commands (one JSON line on DIR/fakecloud.sock; see fakecloudctl). An
"execution view" is {thingName, jobId, executionNumber, status, statusDetails
(null if never set), versionNumber, queuedAt, startedAt (null), lastUpdatedAt,
approximateSecondsBeforeTimedOut (null), history, events}, where history is every
request of the device that tried to change this execution, in order:
{t, op: "update"|"start-next", topic, request (the parsed object, or the raw
text if it was not JSON), outcome: "accepted"|"rejected"|"dropped", code (if
rejected), injected: true (if from fail_next_updates), status and versionNumber
(after, if accepted)}; and events is what the service did: {t, event: "queued"|
"canceled"|"removed"|"timed_out", reason?, force?}.

    create_job {thing, job_id, document: object, step_timeout_minutes?,
                step_timeout_seconds?, in_progress_timeout_minutes?,
                in_progress_timeout_seconds?}
        Queue execution 1 of a new job for the thing (error if the thing already
        has that job); push notify/notify-next as AWS would. The step timeout is
        the job's default step timer, started when the execution goes IN_PROGRESS
        unless the device gives stepTimeoutInMinutes; the in-progress timeout runs
        from IN_PROGRESS to a terminal status and cannot be reset. Minutes may be
        fractional and are scaled by seconds_per_minute; seconds are real seconds.
        -> {execution: view}
    cancel_job {thing, job_id, force?: false, reason?}
        Latest execution QUEUED -> CANCELED; IN_PROGRESS -> CANCELED only with
        force (else an error); a terminal one is an error. -> {execution: view}
    remove_job {thing, job_id}
        Latest execution QUEUED or IN_PROGRESS -> REMOVED. -> {execution: view}
    retry_job {thing, job_id}
        Latest execution FAILED or TIMED_OUT -> a new QUEUED execution with
        executionNumber + 1 at the end of the queue. -> {execution: view}
    job {thing, job_id, execution_number?}
        -> {jobId, document, execution: view (default the latest), executions: [views]}
    jobs {thing}
        -> {executions: [views of every execution, in creation order],
            unmatched: [history entries of updates that named no existing execution]}
    set_strict {value: bool}
        Strict: QUEUED -> SUCCEEDED/FAILED is InvalidStateTransition. -> {strict}
    jobs_config {strict?, describe_terminal?: "reject"|"accept",
                 seconds_per_minute?: number, notify_on_start?: bool}
        Set any of the options, return them all (see Config).
    fail_next_updates {thing, code, count?: 1, message?}
        Reject the thing's next `count` update requests (well-formed JSON, any job)
        with that code, e.g. RequestThrottled or InternalError, before anything
        else is checked; executionState is added only for VersionMismatch and
        InvalidStateTransition. count 0 clears. -> {thing, code, count}
    drop_next {thing, topic_filter?: "$aws/things/<thing>/jobs/#", count?: 1}
        Silently ignore the thing's next `count` jobs requests whose topic matches
        the filter (they are still in the exchange log; a dropped update is in the
        history with outcome "dropped"). -> {thing, topic_filter, count}

Decisions on points the reference leaves open (each marked in the code):
- DescribeJobExecution of an execution in a terminal status is rejected with
  TerminalStateReached (the guide's wording), without executionState. Config
  describe_terminal="accept" answers it like any other execution instead.
- notify is sent when an execution enters or leaves the pending list, not when it
  goes QUEUED -> IN_PROGRESS. The current AWS guide's wording ("... or changes to
  a non-terminal status") suggests it is sent then too: notify_on_start=true.
- versionNumber changes only on what the device does (accepted updates,
  start-next of a QUEUED execution): the API reference says executions "are
  incremented each time they are updated by a device". Cancel, remove and time-out
  leave it as it is.
- Update checks, in order: JSON, clientToken, fail_next_updates, jobId and field
  validation (InvalidRequest), job and executionNumber (ResourceNotFound), terminal
  status (InvalidStateTransition), expectedVersion (VersionMismatch), strict
  QUEUED -> SUCCEEDED/FAILED (InvalidStateTransition). A terminal execution thus
  answers InvalidStateTransition even when expectedVersion is stale too.
- An empty payload is {} for every request (an update then lacks "status":
  InvalidRequest). Valid JSON that is not an object is InvalidRequest.
- A clientToken over 64 bytes or not a string is InvalidRequest and is not echoed.
- expectedVersion and executionNumber: a non-negative integer or a string of
  digits; anything else (e.g. "1.0.1", true) is InvalidRequest.
- statusDetails: an object of <= 10 pairs, keys 1-128 of [a-zA-Z0-9:_-], values
  strings of 1-1024 characters with no Unicode category C character; null is
  InvalidRequest. stepTimeoutInMinutes: an integer 1-10080, or -1 (update only).
- A jobId in a topic that is not 1-64 of [a-zA-Z0-9_-] is InvalidRequest ($next
  only for describe). A jobs topic that maps to no API is InvalidTopic on
  <topic>/rejected. Messages a device publishes on response or push topics
  (.../accepted, .../rejected, notify, notify-next) are ignored.
- thingName appears in start-next's execution (doc example) but not in describe's
  (the captured real response) nor notify-next's (doc example).
- The pending list (get, notify) holds at most 10 entries: IN_PROGRESS first,
  then QUEUED, each in queue (creation) order.
"""

import json
import math
import queue
import re
import threading
import time
import unicodedata

from fakecloud import Api, jobs_error, now_s, topic_matches

QUEUED, IN_PROGRESS = "QUEUED", "IN_PROGRESS"
SUCCEEDED, FAILED, TIMED_OUT = "SUCCEEDED", "FAILED", "TIMED_OUT"
REJECTED, REMOVED, CANCELED = "REJECTED", "REMOVED", "CANCELED"
STATUSES = (QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, TIMED_OUT, REJECTED, REMOVED, CANCELED)
TERMINAL = frozenset((SUCCEEDED, FAILED, TIMED_OUT, REJECTED, REMOVED, CANCELED))
PENDING = (IN_PROGRESS, QUEUED)
DEVICE_SETTABLE = frozenset((IN_PROGRESS, SUCCEEDED, FAILED, REJECTED))
RETRYABLE = frozenset((FAILED, TIMED_OUT))

PENDING_LIST_MAX = 10
CLIENT_TOKEN_MAX = 64
DETAILS_MAX_PAIRS = 10
DETAILS_KEY_MAX = 128
DETAILS_VALUE_MAX = 1024
STEP_TIMEOUT_MAX = 10080
JOB_DOCUMENT_MAX = 32768

JOB_ID_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}\Z")
THING_RE = re.compile(r"[a-zA-Z0-9:_-]{1,128}\Z")
DETAILS_KEY_RE = re.compile(r"[a-zA-Z0-9:_-]+\Z")
DIGITS_RE = re.compile(r"[0-9]+\Z")


class Rejection(Exception):
    """A rejected answer: code, message and, for two codes, the execution's state."""

    def __init__(self, code, message, execution=None):
        super().__init__(message)
        self.code, self.message, self.execution = code, message, execution


class Config:
    def __init__(self):
        self.strict = False                # QUEUED -> SUCCEEDED/FAILED refused
        self.describe_terminal = "reject"  # or "accept"
        self.seconds_per_minute = 60.0     # scales every timeout given in minutes
        self.notify_on_start = False       # notify also on QUEUED -> IN_PROGRESS

    def as_dict(self):
        return {"strict": self.strict, "describe_terminal": self.describe_terminal,
                "seconds_per_minute": self.seconds_per_minute, "notify_on_start": self.notify_on_start}


class Job:
    def __init__(self, thing, job_id, document, step_timeout, in_progress_timeout):
        self.thing, self.job_id, self.document = thing, job_id, document
        # (value, "minutes"|"seconds") or None; minutes are scaled when the timer starts
        self.step_timeout, self.in_progress_timeout = step_timeout, in_progress_timeout
        self.executions = []


class Execution:
    def __init__(self, job, number, seq):
        now = now_s()
        self.job, self.number, self.seq = job, number, seq
        self.status = QUEUED
        self.details = None
        self.queued_at = self.last_updated_at = now
        self.started_at = None
        self.version = 1
        self.step_deadline = None         # time.monotonic() values
        self.in_progress_deadline = None
        self.history = []
        self.events = [{"t": time.time(), "event": "queued"}]

    @property
    def key(self):
        return (self.job.job_id, self.number)

    def deadline(self):
        ds = [d for d in (self.step_deadline, self.in_progress_deadline) if d is not None]
        return min(ds) if ds else None


class ThingJobs:
    def __init__(self, name):
        self.name = name
        self.jobs = {}        # job_id -> Job, in creation order
        self.executions = []  # every Execution, in creation order (= queue order)
        self.unmatched = []
        self.fail_next = None  # {"code", "message", "count"}
        self.drops = []        # [{"topic_filter", "count"}]


# ---------------------------------------------------------------- validation helpers


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _number_field(obj, name):
    """expectedVersion / executionNumber: an int or a string of digits (§3.3 type quirk)."""
    if name not in obj:
        return None
    v = obj[name]
    if _is_int(v) and v >= 0:
        return v
    if isinstance(v, str) and DIGITS_RE.match(v):
        return int(v)
    raise Rejection("InvalidRequest", "%s must be a non-negative integer" % name)


def _bool_field(obj, name, default):
    if name not in obj:
        return default
    if not isinstance(obj[name], bool):
        raise Rejection("InvalidRequest", "%s must be a boolean" % name)
    return obj[name]


def _step_timeout_field(obj, allow_clear):
    if "stepTimeoutInMinutes" not in obj:
        return None
    v = obj["stepTimeoutInMinutes"]
    if _is_int(v) and (1 <= v <= STEP_TIMEOUT_MAX or (allow_clear and v == -1)):
        return v
    raise Rejection("InvalidRequest", "stepTimeoutInMinutes must be an integer from 1 to %d%s"
                    % (STEP_TIMEOUT_MAX, ", or -1" if allow_clear else ""))


def _has_control_char(s):
    return any(unicodedata.category(c).startswith("C") for c in s)


def _details_field(obj):
    """statusDetails (§3.6): None when absent, else a validated dict of strings."""
    if "statusDetails" not in obj:
        return None
    d = obj["statusDetails"]
    if not isinstance(d, dict):
        raise Rejection("InvalidRequest", "statusDetails must be an object of strings")
    if len(d) > DETAILS_MAX_PAIRS:
        raise Rejection("InvalidRequest", "statusDetails has %d pairs, at most %d are allowed"
                        % (len(d), DETAILS_MAX_PAIRS))
    for k, v in d.items():
        if not (1 <= len(k) <= DETAILS_KEY_MAX) or not DETAILS_KEY_RE.match(k):
            raise Rejection("InvalidRequest", "statusDetails key %r: 1-%d characters of [a-zA-Z0-9:_-]"
                            % (k[:140], DETAILS_KEY_MAX))
        if not isinstance(v, str):
            raise Rejection("InvalidRequest", "statusDetails value of %r must be a string" % k)
        if not (1 <= len(v) <= DETAILS_VALUE_MAX) or _has_control_char(v):
            raise Rejection("InvalidRequest", "statusDetails value of %r: 1-%d characters, no control "
                            "characters" % (k, DETAILS_VALUE_MAX))
    return dict(d)


def _client_token(obj):
    if "clientToken" not in obj:
        return None
    tok = obj["clientToken"]
    if not isinstance(tok, str) or len(tok.encode("utf-8")) > CLIENT_TOKEN_MAX:
        raise Rejection("InvalidRequest", "invalid client token (a string of at most %d bytes)"
                        % CLIENT_TOKEN_MAX)
    return tok


def _parse(payload):
    """The request object; an empty payload is {}."""
    if not payload.strip():
        return {}
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise Rejection("InvalidJson", "the payload is not valid UTF-8 JSON")
    if not isinstance(obj, dict):
        raise Rejection("InvalidRequest", "the payload must be a JSON object")
    return obj


def _request_record(payload):
    """The request as the history keeps it: parsed JSON, else the text."""
    try:
        return json.loads(payload.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return payload.decode("utf-8", errors="replace")


def _is_response_or_push(rest):
    if rest in (["notify"], ["notify-next"]):
        return True
    if len(rest) == 2 and rest[0] in ("get", "start-next") and rest[1] in ("accepted", "rejected"):
        return True
    return len(rest) == 3 and rest[1] in ("get", "update") and rest[2] in ("accepted", "rejected")


def _timeout_arg(req, name):
    """Control: NAME_minutes (scaled later) or NAME_seconds; returns (value, unit) or None."""
    m, s = req.get(name + "_minutes"), req.get(name + "_seconds")
    if m is not None and s is not None:
        raise ValueError("give %s_minutes or %s_seconds, not both" % (name, name))
    for v, unit in ((m, "minutes"), (s, "seconds")):
        if v is not None:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError("%s_%s must be a positive number" % (name, unit))
            return (float(v), unit)
    return None


# ---------------------------------------------------------------- the API


class JobsApi(Api):
    name = "jobs"

    def __init__(self, cloud):
        super().__init__(cloud)
        self.config = Config()
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)   # wakes the timer thread
        self.things = {}
        self.seq = 0
        self.stopping = False
        self.outbox = queue.Queue()
        self.sender = threading.Thread(target=self._send_loop, name="jobs-outbox", daemon=True)
        self.timer = threading.Thread(target=self._timer_loop, name="jobs-timer", daemon=True)
        self.sender.start()
        self.timer.start()

    def routes(self):
        return [("$aws/things/+/jobs/#", self.on_request)]

    def commands(self):
        return {name[4:]: getattr(self, name) for name in dir(self) if name.startswith("cmd_")}

    def stop(self):
        with self.lock:
            self.stopping = True
            self.cond.notify_all()
        self.outbox.put(None)
        self.sender.join(5)
        self.timer.join(5)

    # ---- output: one ordered outbox, published by a thread that holds none of our locks
    # (paho may take its callback lock in publish(), which its network thread holds
    # while it runs on_message, which may be waiting for self.lock).

    def _send(self, topic, obj):
        self.outbox.put((topic, obj))

    def _send_loop(self):
        while True:
            item = self.outbox.get()
            try:
                if item is None:
                    return
                self.cloud.publish(item[0], item[1], 1)
            except Exception as e:  # noqa: BLE001 (keep the outbox alive)
                print("fakecloud: jobs publish failed: %r" % (e,), flush=True)
            finally:
                self.outbox.task_done()

    def flush(self):
        """Wait until everything queued so far is handed to paho (never from on_message)."""
        self.outbox.join()

    # ---- state helpers (call with self.lock held)

    def _thing(self, name):
        t = self.things.get(name)
        if t is None:
            t = self.things[name] = ThingJobs(name)
        return t

    def _pending(self, t):
        inp = [e for e in t.executions if e.status == IN_PROGRESS]
        que = [e for e in t.executions if e.status == QUEUED]
        return inp, que

    def _next(self, t):
        inp, que = self._pending(t)
        return (inp + que)[0] if inp or que else None

    def _snapshot(self, t):
        inp, que = self._pending(t)
        if self.config.notify_on_start:
            members = frozenset((e.key, e.status) for e in inp + que)
        else:
            members = frozenset(e.key for e in inp + que)
        nxt = self._next(t)
        return members, (nxt.key if nxt else None)

    def _notify_changes(self, t, before):
        members, nxt_key = before
        after_members, after_next = self._snapshot(t)
        if after_members != members:
            inp, que = self._pending(t)
            lists = self._capped(inp, que)
            jobs = {}
            if lists[0]:
                jobs[IN_PROGRESS] = lists[0]
            if lists[1]:
                jobs[QUEUED] = lists[1]
            self._send("$aws/things/%s/jobs/notify" % t.name, {"timestamp": now_s(), "jobs": jobs})
        if after_next != nxt_key:
            msg = {"timestamp": now_s()}
            nxt = self._next(t)
            if nxt is not None:
                msg["execution"] = self._execution_data(nxt, document=True, thing_name=False)
            self._send("$aws/things/%s/jobs/notify-next" % t.name, msg)

    @staticmethod
    def _capped(inp, que):
        inp = inp[:PENDING_LIST_MAX]
        que = que[:PENDING_LIST_MAX - len(inp)]
        return [JobsApi._summary(e) for e in inp], [JobsApi._summary(e) for e in que]

    @staticmethod
    def _summary(e):
        s = {"jobId": e.job.job_id, "queuedAt": e.queued_at}
        if e.started_at is not None:
            s["startedAt"] = e.started_at
        s.update(lastUpdatedAt=e.last_updated_at, versionNumber=e.version, executionNumber=e.number)
        return s

    @staticmethod
    def _seconds_left(e):
        d = e.deadline() if e.status == IN_PROGRESS else None
        if d is None:
            return None
        return max(0, int(math.ceil(d - time.monotonic())))

    def _execution_data(self, e, document=True, thing_name=True):
        x = {"jobId": e.job.job_id}
        if thing_name:
            x["thingName"] = e.job.thing
        if document:
            x["jobDocument"] = e.job.document
        x["status"] = e.status
        if e.details is not None:
            x["statusDetails"] = dict(e.details)
        x["queuedAt"] = e.queued_at
        if e.started_at is not None:
            x["startedAt"] = e.started_at
        x.update(lastUpdatedAt=e.last_updated_at, versionNumber=e.version, executionNumber=e.number)
        left = self._seconds_left(e)
        if left is not None:
            x["approximateSecondsBeforeTimedOut"] = left
        return x

    @staticmethod
    def _state(e):
        s = {"status": e.status}
        if e.details is not None:
            s["statusDetails"] = dict(e.details)
        s["versionNumber"] = e.version
        return s

    def _find_execution(self, t, job_id, number=None):
        job = t.jobs.get(job_id)
        if job is None:
            return None
        if number is None:
            return job.executions[-1]
        for e in job.executions:
            if e.number == number:
                return e
        return None

    def _minutes(self, minutes):
        return minutes * self.config.seconds_per_minute

    def _job_timeout_s(self, spec):
        if spec is None:
            return None
        value, unit = spec
        return self._minutes(value) if unit == "minutes" else value

    def _start(self, e, step_minutes):
        """QUEUED -> IN_PROGRESS: startedAt and the timers (step_minutes: None, -1 or n)."""
        now = time.monotonic()
        e.started_at = now_s()
        if step_minutes is None:
            step = self._job_timeout_s(e.job.step_timeout)
        elif step_minutes == -1:
            step = None
        else:
            step = self._minutes(step_minutes)
        e.step_deadline = None if step is None else now + step
        ip = self._job_timeout_s(e.job.in_progress_timeout)
        e.in_progress_deadline = None if ip is None else now + ip
        self.cond.notify_all()

    @staticmethod
    def _stop_timers(e):
        e.step_deadline = e.in_progress_deadline = None

    # ---- the request handler

    def on_request(self, req):
        parts = req.topic.split("/")
        if len(parts) < 4 or parts[0] != "$aws" or parts[1] != "things" or parts[3] != "jobs":
            return
        thing, rest = parts[2], parts[4:]
        if not thing or _is_response_or_push(rest):
            return
        if rest == ["get"]:
            op, job_id = "get", None
        elif rest == ["start-next"]:
            op, job_id = "start-next", None
        elif len(rest) == 2 and rest[1] == "get":
            op, job_id = "describe", rest[0]
        elif len(rest) == 2 and rest[1] == "update":
            op, job_id = "update", rest[0]
        else:
            op, job_id = "invalid", None
        with self.lock:
            t = self._thing(thing)
            if self._take_drop(t, req.topic):
                if op == "update":
                    self._record(t, job_id, None, {"t": time.time(), "op": "update", "topic": req.topic,
                                                   "request": _request_record(req.payload),
                                                   "outcome": "dropped"})
                return
            getattr(self, "_op_" + op.replace("-", "_"))(t, req, job_id)

    def _take_drop(self, t, topic):
        for rule in t.drops:
            if rule["count"] > 0 and topic_matches(rule["topic_filter"], topic):
                rule["count"] -= 1
                return True
        return False

    def _reject(self, req, rej, token):
        state = None
        if rej.code in ("VersionMismatch", "InvalidStateTransition") and rej.execution is not None:
            state = self._state(rej.execution)
        self._send(req.topic + "/rejected", jobs_error(rej.code, rej.message, client_token=token,
                                                       execution_state=state))

    def _accept(self, req, body, token):
        body["timestamp"] = now_s()
        if token is not None:
            body["clientToken"] = token
        self._send(req.topic + "/accepted", body)

    def _op_invalid(self, t, req, _job_id):
        token = None
        try:
            token = _client_token(_parse(req.payload))
        except Rejection:
            pass
        self._reject(req, Rejection("InvalidTopic", "%s maps to no Jobs API" % req.topic), token)

    def _op_get(self, t, req, _job_id):
        token = None
        try:
            token = _client_token(_parse(req.payload))
        except Rejection as rej:
            return self._reject(req, rej, None)
        inp, que = self._capped(*self._pending(t))
        self._accept(req, {"inProgressJobs": inp, "queuedJobs": que}, token)

    def _op_start_next(self, t, req, _job_id):
        token = None
        try:
            obj = _parse(req.payload)
            token = _client_token(obj)
            details = _details_field(obj)
            step = _step_timeout_field(obj, allow_clear=False)
        except Rejection as rej:
            return self._reject(req, rej, token)
        e = self._next(t)
        if e is None:
            return self._accept(req, {}, token)
        if e.status == IN_PROGRESS:  # returned unchanged
            return self._accept(req, {"execution": self._execution_data(e)}, token)
        before = self._snapshot(t)
        e.status = IN_PROGRESS
        if details is not None:
            e.details = details
        e.version += 1
        e.last_updated_at = now_s()
        self._start(e, step)
        e.history.append({"t": time.time(), "op": "start-next", "topic": req.topic, "request": obj,
                          "outcome": "accepted", "status": e.status, "versionNumber": e.version})
        self._accept(req, {"execution": self._execution_data(e)}, token)
        self._notify_changes(t, before)

    def _op_describe(self, t, req, job_id):
        token = None
        try:
            obj = _parse(req.payload)
            token = _client_token(obj)
            number = _number_field(obj, "executionNumber")
            document = _bool_field(obj, "includeJobDocument", True)  # MQTT default: true
            if job_id == "$next":
                e = self._next(t)
                if e is None:  # [unconfirmed] like start-next: no "execution"
                    return self._accept(req, {}, token)
            else:
                if not JOB_ID_RE.match(job_id):
                    raise Rejection("InvalidRequest", "invalid jobId %r" % job_id)
                e = self._find_execution(t, job_id, number)
                if e is None:
                    raise Rejection("ResourceNotFound", "no execution of job %s%s for thing %s" % (
                        job_id, "" if number is None else " numbered %d" % number, t.name))
            if e.status in TERMINAL and self.config.describe_terminal == "reject":
                raise Rejection("TerminalStateReached", "job execution %s/%d is in the terminal status %s"
                                % (e.job.job_id, e.number, e.status))
        except Rejection as rej:
            return self._reject(req, rej, token)
        self._accept(req, {"execution": self._execution_data(e, document=document, thing_name=False)},
                     token)

    def _record(self, t, job_id, number, entry):
        """Append a device request to the history of the execution it named, else to unmatched."""
        e = self._find_execution(t, job_id, number) if job_id is not None else None
        (e.history if e is not None else t.unmatched).append(entry)

    def _op_update(self, t, req, job_id):
        token, obj, number = None, None, None
        entry = {"t": time.time(), "op": "update", "topic": req.topic,
                 "request": _request_record(req.payload)}
        try:
            obj = _parse(req.payload)
            token = _client_token(obj)
            if t.fail_next is not None and t.fail_next["count"] > 0:
                t.fail_next["count"] -= 1
                entry["injected"] = True
                e = self._find_execution(t, job_id) if JOB_ID_RE.match(job_id) else None
                raise Rejection(t.fail_next["code"], t.fail_next["message"], e)
            if not JOB_ID_RE.match(job_id):
                raise Rejection("InvalidRequest", "invalid jobId %r" % job_id)
            if "status" not in obj:
                raise Rejection("InvalidRequest", "status is required")
            status = obj["status"]
            if status not in STATUSES:
                raise Rejection("InvalidRequest", "unknown status %r" % (status,))
            if status not in DEVICE_SETTABLE:  # [unconfirmed] code
                raise Rejection("InvalidRequest", "a device cannot set the status %s" % status)
            details = _details_field(obj)
            expected = _number_field(obj, "expectedVersion")
            number = _number_field(obj, "executionNumber")
            with_state = _bool_field(obj, "includeJobExecutionState", False)
            with_doc = _bool_field(obj, "includeJobDocument", False)
            step = _step_timeout_field(obj, allow_clear=True)
            e = self._find_execution(t, job_id, number)
            if e is None:
                raise Rejection("ResourceNotFound", "no execution of job %s%s for thing %s" % (
                    job_id, "" if number is None else " numbered %d" % number, t.name))
            if e.status in TERMINAL:
                raise Rejection("InvalidStateTransition", "the execution is in the terminal status %s"
                                % e.status, e)
            if expected is not None and expected != e.version:
                raise Rejection("VersionMismatch", "Version mismatch: expected %d but found %d"
                                % (expected, e.version), e)
            if self.config.strict and e.status == QUEUED and status in (SUCCEEDED, FAILED):
                raise Rejection("InvalidStateTransition", "%s -> %s is not allowed (strict)"
                                % (e.status, status), e)
        except Rejection as rej:
            entry.update(outcome="rejected", code=rej.code)
            self._record(t, job_id if isinstance(job_id, str) and JOB_ID_RE.match(job_id) else None,
                         number, entry)
            return self._reject(req, rej, token)

        before = self._snapshot(t)
        prev = e.status
        e.status = status
        if details is not None:
            e.details = details
        e.version += 1
        e.last_updated_at = now_s()
        if status == IN_PROGRESS:
            if prev == QUEUED:
                self._start(e, step)
            elif step == -1:
                e.step_deadline = None
            elif step is not None:
                e.step_deadline = time.monotonic() + self._minutes(step)
                self.cond.notify_all()
        else:
            self._stop_timers(e)
        entry.update(outcome="accepted", status=e.status, versionNumber=e.version)
        e.history.append(entry)
        body = {}
        if with_state:
            body["executionState"] = self._state(e)
        if with_doc:
            body["jobDocument"] = e.job.document
        self._accept(req, body, token)
        self._notify_changes(t, before)

    # ---- timers

    def _timer_loop(self):
        with self.lock:
            while not self.stopping:
                now = time.monotonic()
                soonest = None
                for t in list(self.things.values()):
                    for e in t.executions:
                        d = e.deadline() if e.status == IN_PROGRESS else None
                        if d is None:
                            continue
                        if d <= now:
                            self._time_out(t, e, "step" if d == e.step_deadline else "in_progress")
                        elif soonest is None or d < soonest:
                            soonest = d
                self.cond.wait(None if soonest is None else max(0.0, soonest - now))

    def _time_out(self, t, e, reason):
        before = self._snapshot(t)
        e.status = TIMED_OUT
        e.last_updated_at = now_s()
        self._stop_timers(e)
        e.events.append({"t": time.time(), "event": "timed_out", "reason": reason})
        self._notify_changes(t, before)

    # ---- control commands

    def _view(self, e):
        left = self._seconds_left(e)
        return {
            "thingName": e.job.thing, "jobId": e.job.job_id, "executionNumber": e.number,
            "status": e.status, "statusDetails": None if e.details is None else dict(e.details),
            "versionNumber": e.version, "queuedAt": e.queued_at, "startedAt": e.started_at,
            "lastUpdatedAt": e.last_updated_at, "approximateSecondsBeforeTimedOut": left,
            "history": [dict(h) for h in e.history], "events": [dict(v) for v in e.events],
        }

    @staticmethod
    def _arg_thing(req):
        thing = req.get("thing")
        if not isinstance(thing, str) or not THING_RE.match(thing):
            raise ValueError('"thing" must be 1-128 characters of [a-zA-Z0-9:_-]')
        return thing

    @staticmethod
    def _arg_job_id(req):
        job_id = req.get("job_id")
        if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
            raise ValueError('"job_id" must be 1-64 characters of [a-zA-Z0-9_-]')
        return job_id

    def _arg_execution(self, req):
        thing, job_id = self._arg_thing(req), self._arg_job_id(req)
        t = self.things.get(thing)
        e = self._find_execution(t, job_id) if t else None
        if e is None:
            raise ValueError("thing %s has no job %s" % (thing, job_id))
        return t, e

    def _then_flush(self, result):
        self.flush()
        return result

    def cmd_create_job(self, req):
        thing, job_id = self._arg_thing(req), self._arg_job_id(req)
        doc = req.get("document")
        if not isinstance(doc, dict):
            raise ValueError('"document" must be a JSON object')
        if len(json.dumps(doc, separators=(",", ":")).encode()) > JOB_DOCUMENT_MAX:
            raise ValueError("the job document is over %d bytes" % JOB_DOCUMENT_MAX)
        step, ip = _timeout_arg(req, "step_timeout"), _timeout_arg(req, "in_progress_timeout")
        with self.lock:
            t = self._thing(thing)
            if job_id in t.jobs:
                raise ValueError("thing %s already has job %s (retry_job makes a new execution)"
                                 % (thing, job_id))
            before = self._snapshot(t)
            job = t.jobs[job_id] = Job(thing, job_id, doc, step, ip)
            self.seq += 1
            e = Execution(job, 1, self.seq)
            job.executions.append(e)
            t.executions.append(e)
            self._notify_changes(t, before)
            view = self._view(e)
        return self._then_flush({"execution": view})

    def _service_end(self, t, e, status, event, **extra):
        before = self._snapshot(t)
        e.status = status
        e.last_updated_at = now_s()
        self._stop_timers(e)
        ev = {"t": time.time(), "event": event}
        ev.update(extra)
        e.events.append(ev)
        self._notify_changes(t, before)

    def cmd_cancel_job(self, req):
        force = req.get("force", False)
        if not isinstance(force, bool):
            raise ValueError('"force" must be a boolean')
        reason = req.get("reason")
        with self.lock:
            t, e = self._arg_execution(req)
            if e.status == IN_PROGRESS and not force:
                raise ValueError("execution %s/%d is IN_PROGRESS: cancel needs force" % e.key)
            if e.status not in PENDING:
                raise ValueError("execution %s/%d is %s: nothing to cancel" % (e.key + (e.status,)))
            extra = {"force": force}
            if reason is not None:
                extra["reason"] = reason
            self._service_end(t, e, CANCELED, "canceled", **extra)
            view = self._view(e)
        return self._then_flush({"execution": view})

    def cmd_remove_job(self, req):
        with self.lock:
            t, e = self._arg_execution(req)
            if e.status not in PENDING:
                raise ValueError("execution %s/%d is %s: nothing to remove" % (e.key + (e.status,)))
            self._service_end(t, e, REMOVED, "removed")
            view = self._view(e)
        return self._then_flush({"execution": view})

    def cmd_retry_job(self, req):
        with self.lock:
            t, e = self._arg_execution(req)
            if e.status not in RETRYABLE:
                raise ValueError("execution %s/%d is %s: only FAILED or TIMED_OUT can be retried"
                                 % (e.key + (e.status,)))
            before = self._snapshot(t)
            self.seq += 1
            n = Execution(e.job, e.number + 1, self.seq)
            e.job.executions.append(n)
            t.executions.append(n)
            self._notify_changes(t, before)
            view = self._view(n)
        return self._then_flush({"execution": view})

    def cmd_job(self, req):
        number = req.get("execution_number")
        if number is not None and not _is_int(number):
            raise ValueError('"execution_number" must be an integer')
        with self.lock:
            t, latest = self._arg_execution(req)
            e = self._find_execution(t, latest.job.job_id, number)
            if e is None:
                raise ValueError("job %s has no execution %d" % (latest.job.job_id, number))
            return {"jobId": e.job.job_id, "document": e.job.document, "execution": self._view(e),
                    "executions": [self._view(x) for x in e.job.executions]}

    def cmd_jobs(self, req):
        thing = self._arg_thing(req)
        with self.lock:
            t = self.things.get(thing)
            if t is None:
                return {"executions": [], "unmatched": []}
            return {"executions": [self._view(e) for e in t.executions],
                    "unmatched": [dict(u) for u in t.unmatched]}

    def cmd_set_strict(self, req):
        if not isinstance(req.get("value"), bool):
            raise ValueError('set_strict needs "value": true or false')
        with self.lock:
            self.config.strict = req["value"]
            return {"strict": self.config.strict}

    def cmd_jobs_config(self, req):
        with self.lock:
            c = self.config
            new = {}
            for k in ("strict", "notify_on_start"):
                if k in req:
                    if not isinstance(req[k], bool):
                        raise ValueError('"%s" must be a boolean' % k)
                    new[k] = req[k]
            if "describe_terminal" in req:
                if req["describe_terminal"] not in ("reject", "accept"):
                    raise ValueError('"describe_terminal" is "reject" or "accept"')
                new["describe_terminal"] = req["describe_terminal"]
            if "seconds_per_minute" in req:
                v = req["seconds_per_minute"]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                    raise ValueError('"seconds_per_minute" must be a positive number')
                new["seconds_per_minute"] = float(v)
            for k, v in new.items():
                setattr(c, k, v)
            return c.as_dict()

    def cmd_fail_next_updates(self, req):
        thing = self._arg_thing(req)
        code, count = req.get("code"), req.get("count", 1)
        if not isinstance(code, str) or not code:
            raise ValueError('"code" must be a Jobs error code, e.g. "RequestThrottled"')
        if not _is_int(count) or count < 0:
            raise ValueError('"count" must be a non-negative integer')
        message = req.get("message", "%s (injected by fail_next_updates)" % code)
        with self.lock:
            self._thing(thing).fail_next = {"code": code, "message": str(message), "count": count}
        return {"thing": thing, "code": code, "count": count}

    def cmd_drop_next(self, req):
        thing = self._arg_thing(req)
        topic_filter = req.get("topic_filter", "$aws/things/%s/jobs/#" % thing)
        count = req.get("count", 1)
        if not isinstance(topic_filter, str) or not topic_filter:
            raise ValueError('"topic_filter" must be an MQTT topic filter')
        if not _is_int(count) or count < 0:
            raise ValueError('"count" must be a non-negative integer')
        with self.lock:
            t = self._thing(thing)
            t.drops = [r for r in t.drops if r["count"] > 0 and r["topic_filter"] != topic_filter]
            if count:
                t.drops.append({"topic_filter": topic_filter, "count": count})
        return {"thing": thing, "topic_filter": topic_filter, "count": count}
