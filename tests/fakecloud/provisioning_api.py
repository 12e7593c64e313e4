"""AWS IoT fleet provisioning for fakecloud (shared/reference/aws-iot-mqtt-api.md §2).

Written from the reference alone; it shares no code with the device agent.

Device requests, <fmt> = json | cbor (the answer uses the request's encoding):

    $aws/certificates/create/<fmt>                              CreateKeysAndCertificate
    $aws/certificates/create-from-csr/<fmt>                     CreateCertificateFromCsr
    $aws/provisioning-templates/<template>/provision/<fmt>      RegisterThing

Answers go to <request-topic>/accepted or /rejected through the broker, so the
device has to subscribe to them before it publishes (as AWS says). mosquitto
cannot deliver to one connection only: every client allowed to subscribe to a
response topic and subscribed to it gets the answer. Only claim certificates (and
certificates whose policy allows rotation) may subscribe there, and tests run one
provisioning device at a time. Errors: {"statusCode": int, "errorCode": str,
"errorMessage": str} (§2.5), CBOR-encoded for cbor requests.

Identities and the broker (tests/testbed/testbed.py, Testbed.update_security):
- Every certificate is signed by the testbed CA the broker trusts. Its id is the
  SHA-256 hex of its DER. The broker's MQTT username is the certificate's CN
  (use_identity_as_username), and the ACL is per username:
    * certificates from CreateKeysAndCertificate / CreateCertificateFromCsr have
      CN = "cert+<32 hex>" (a CSR's other subject fields are kept, its CN is
      replaced): the thing name is not known before RegisterThing, so the ACL
      entry is per certificate, "user cert+<hex>" with the thing's topics;
    * claim certificates have CN = "claim+<32 hex>".
  The '+' matters: mosquitto 2.0 checks a username's own "user" rules first and
  then refuses every "pattern" rule to a username with '+' or '#' ("dangerous
  username"), so the testbed's "pattern readwrite $aws/things/%u/#" gives these
  certificates nothing, and no such CN can ever be a thing name or a topic level.
  (The prefixes are refused as thing names by create_thing and RegisterThing.)
- PENDING_ACTIVATION: a new certificate is listed in the testbed CRL with reason
  certificateHold, so the broker refuses its TLS handshake: it cannot connect at
  all before RegisterThing. RegisterThing takes it off the CRL and adds
  "user <CN>" + the topics of the template's policy for the thing to the ACL;
  then the broker is reloaded (SIGHUP: mosquitto 2.0.11 rereads acl_file and
  crlfile) and the accepted answer is sent only once the broker uses the new
  files. A certificate whose token expired is DELETED and stays on hold;
  revoke_certificate puts it back on the CRL (keyCompromise) and drops its ACL.
  The CRL is checked at connect: a connection that is up stays up.
- Claim certificates: ACL "user claim+<hex>" with readwrite on
  $aws/certificates/create/#, $aws/certificates/create-from-csr/# and
  $aws/provisioning-templates/<template>/provision/# (any template, "+", when the
  claim names none). Temporary (trusted-user) claims have notAfter = now +
  validity (300 s by default); OpenSSL in the broker refuses them afterwards by the
  validity dates. A connection made before expiry is not cut (mosquitto does not
  re-check), and the create calls cannot be refused on it: the cloud does not know
  which certificate published a request.
- Policies (template "policy") are lists of ACL rules with ${thing} and
  ${template} placeholders. Built in:
    thing           readwrite $aws/things/${thing}/#, readwrite things/${thing}/#
    thing-rotation  thing + readwrite $aws/certificates/create/#,
                    $aws/certificates/create-from-csr/#,
                    $aws/provisioning-templates/${template}/provision/#
  The default is "thing" (only its own thing's topics); a template whose devices
  rotate their certificate over MQTT needs "thing-rotation".

RegisterThing checks, in order: payload (InvalidPayload), template
(ResourceNotFound), ownership token (InvalidCertificateOwnershipToken: empty,
unknown, already used, expired), parameters a flat string map (InvalidPayload),
the pre-provisioning hook (AccessDenied, 403), required parameters and the thing
name (InvalidParameters). A token is consumed only by an accepted RegisterThing.
Registering a thing that exists updates it (attributes merged) and attaches the
new certificate; older certificates stay ACTIVE.

Error codes (statusCode, errorCode), configurable with provisioning_config
error_codes {case: [statusCode, errorCode]}:
    payload [400, InvalidPayload]        token [400, InvalidCertificateOwnershipToken]
    template [404, ResourceNotFound]     hook [403, AccessDenied]
    parameters [400, InvalidParameters]  csr [400, InvalidCsr]

Rotation alert (no AWS-defined message; iotbox's own): published by the
rotation_alert command at QoS 1 on

    things/<thing>/iotbox/rotate-certificate
    {"thingName": str, "certificateId": str|null, "notAfter": int|null (epoch s of
     that certificate), "reason": str ("EXPIRING" by default), "templateName":
     str|null (the template to rotate with), "timestamp": int (epoch s)}

Control commands (one JSON line on DIR/fakecloud.sock, see fakecloudctl):

    create_template {name, parameters?: [required names] | {name: {"default"?: str}},
                     thing_name?: "ParamName" | {"Ref": p} | {"Fn::Join": [sep, [parts]]},
                     attributes?: {name: str | Ref | Join}, policy?: "thing",
                     device_configuration?: {key: str | Ref | Join}, enabled?: true,
                     hook?: {allow?: {param: [values]}, deny?: {param: [values]},
                             overrides?: {param: value}},
                     body?: an AWS template body (Parameters, Resources, DeviceConfiguration)
                            used instead of parameters/thing_name/attributes/policy/
                            device_configuration}
        Create or replace a template. -> {template}
    load_templates {path} -> {templates: [names]}: a JSON file holding a list of
        create_template objects (or {"templates": [...]}). DIR/provisioning-templates.json
        is loaded at start if it exists.
    templates -> {templates: [template]}
    create_policy {name, rules: ["readwrite $aws/things/${thing}/#", ...]} -> {policy}
    claim_certificate {template?, temporary?: false, validity_seconds?: 300}
        -> {cert, key, ca (paths), certificateId, commonName, expiration (epoch s),
            certificatePem, keyPair: {PrivateKey, PublicKey}} (the last four as
            CreateProvisioningClaim returns them)
    provisioning_things {name?} -> {things: [{thingName, attributes, certificates:
        [ids], template, createdAt, updatedAt, provisionedBy: "fleet"|"jitp"}]}
    certificates {status?, thing?} -> {certificates: [{certificateId, commonName,
        status: PENDING_ACTIVATION|ACTIVE|REVOKED|DELETED, kind: "created"|"csr"|
        "claim"|"temporary-claim"|"jitp", thingName, template, createdAt, notAfter,
        tokenExpiresAt (created/csr), certificatePem}]}
    revoke_certificate {certificate_id} -> {certificate}
    provisioning_config {token_ttl_seconds?: 3600, key_type?: "rsa"|"ec",
        cert_validity_days?: 365, claim_validity_days?: 365,
        temporary_claim_seconds?: 300, error_codes?: {...}} -> all options
    provisioning_fail_next {api: "create"|"create-from-csr"|"provision", count?: 1,
        status_code?: 500, error_code?: "InternalFailure", error_message?}
        Reject the next `count` requests of that API with that error. -> {...}
    provisioning_drop_next {api, count?: 1}: ignore the next `count` requests. -> {...}
    rotation_alert {thing, reason?, certificate_id?, template?} -> {topic, payload}
    register_ca {ca_cert: PEM text or a path, template?: a template name}
        -> {caCertificateId, jitp_port}
    jitp -> {port, cas: [ids]}        (ping also reports "jitp_port")

JITP (§2.11): mosquitto cannot drop a first connection by itself, so the fakecloud
runs a JITP endpoint: a TLS listener on 127.0.0.1:<jitp_port> with the broker's
server certificate (localhost) that requires a client certificate signed by a
registered CA. A certificate seen for the first time is registered (thing name =
its CN, or the template's thing name with AWS::IoT::Certificate::* parameters
from its subject; kind "jitp", ACTIVE) and the connection is closed right after the
handshake, before any MQTT byte. Later connections of an ACTIVE certificate are
relayed byte for byte to the broker over TLS with a certificate the fakecloud
mints from the testbed CA with CN = the thing name, so the broker's per-CN ACL
(pattern $aws/things/%u/#) applies. A CN that is not a valid thing name (or is
"fakecloud") fails registration: every connection is closed.
"""

import datetime
import hashlib
import json
import os
import queue
import re
import secrets
import select
import socket
import ssl
import threading
import time

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from fakecloud import CLIENT_ID, Api, now_s, provisioning_error

TEMPLATE_RE = re.compile(r"[0-9A-Za-z_-]{1,36}\Z")
THING_RE = re.compile(r"[a-zA-Z0-9:_-]{1,128}\Z")
CERT_PREFIX, CLAIM_PREFIX = "cert+", "claim+"
RESERVED_PREFIXES = (CERT_PREFIX, CLAIM_PREFIX, "testbed.")
PENDING, ACTIVE, REVOKED, DELETED = "PENDING_ACTIVATION", "ACTIVE", "REVOKED", "DELETED"
PARAM_KEY_MAX, PARAM_VALUE_MAX = 2048, 4096
ROTATION_TOPIC = "things/%s/iotbox/rotate-certificate"
APIS = ("create", "create-from-csr", "provision")

DEFAULT_ERRORS = {
    "payload": (400, "InvalidPayload"),
    "token": (400, "InvalidCertificateOwnershipToken"),
    "template": (404, "ResourceNotFound"),
    "hook": (403, "AccessDenied"),
    "parameters": (400, "InvalidParameters"),
    "csr": (400, "InvalidCsr"),
}

BUILTIN_POLICIES = {
    "thing": ["readwrite $aws/things/${thing}/#", "readwrite things/${thing}/#"],
    "thing-rotation": ["readwrite $aws/things/${thing}/#", "readwrite things/${thing}/#",
                       "readwrite $aws/certificates/create/#",
                       "readwrite $aws/certificates/create-from-csr/#",
                       "readwrite $aws/provisioning-templates/${template}/provision/#"],
}

CERT_SUBJECT_PARAMS = {
    "AWS::IoT::Certificate::Country": NameOID.COUNTRY_NAME,
    "AWS::IoT::Certificate::Organization": NameOID.ORGANIZATION_NAME,
    "AWS::IoT::Certificate::OrganizationalUnit": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "AWS::IoT::Certificate::DistinguishedNameQualifier": NameOID.DN_QUALIFIER,
    "AWS::IoT::Certificate::StateName": NameOID.STATE_OR_PROVINCE_NAME,
    "AWS::IoT::Certificate::CommonName": NameOID.COMMON_NAME,
    "AWS::IoT::Certificate::SerialNumber": NameOID.SERIAL_NUMBER,
}


class Rejection(Exception):
    def __init__(self, case, message):
        super().__init__(message)
        self.case, self.message = case, message


def _utcnow():
    return datetime.datetime.utcnow()


def cert_id(cert):
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _cn(name):
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return attrs[0].value if attrs else None


def _ts(dt):
    return int(dt.replace(tzinfo=datetime.timezone.utc).timestamp())


def valid_thing_name(name):
    return (isinstance(name, str) and THING_RE.match(name) is not None and name != CLIENT_ID
            and not name.startswith(RESERVED_PREFIXES))


# ---------------------------------------------------------------- templates


class Template:
    def __init__(self, spec):
        if not isinstance(spec, dict):
            raise ValueError("a template is a JSON object")
        name = spec.get("name")
        if not isinstance(name, str) or not TEMPLATE_RE.match(name):
            raise ValueError("template name must be 1-36 of [0-9A-Za-z_-]")
        self.name = name
        self.spec = spec
        self.enabled = bool(spec.get("enabled", True))
        self.required, self.defaults = [], {}
        if "body" in spec:
            self._from_body(spec["body"])
        else:
            self._parameters(spec.get("parameters", []))
            self.thing_name = spec.get("thing_name")
            if isinstance(self.thing_name, str):
                self.thing_name = {"Ref": self.thing_name}
            self.attributes = spec.get("attributes") or {}
            self.policy = spec.get("policy") or "thing"
            self.device_configuration = spec.get("device_configuration") or {}
        hook = spec.get("hook")
        if hook is not None and not isinstance(hook, dict):
            raise ValueError("hook must be an object")
        self.hook = hook
        for what, value in (("attributes", self.attributes),
                            ("device_configuration", self.device_configuration)):
            if not isinstance(value, dict):
                raise ValueError("%s must be an object" % what)
        if not isinstance(self.policy, str):
            raise ValueError("policy must be a policy name")

    def _parameters(self, params):
        if isinstance(params, list):
            for p in params:
                if not isinstance(p, str):
                    raise ValueError("parameters: a list of names")
                self.required.append(p)
        elif isinstance(params, dict):
            for p, opt in params.items():
                opt = opt if isinstance(opt, dict) else {}
                default = opt.get("default", opt.get("Default"))
                if default is None:
                    self.required.append(p)
                else:
                    self.defaults[p] = str(default)
        else:
            raise ValueError("parameters: a list of names or an object")

    def _from_body(self, body):
        if isinstance(body, str):
            body = json.loads(body)
        if not isinstance(body, dict):
            raise ValueError("body must be a template object")
        params = {}
        for p, opt in (body.get("Parameters") or {}).items():
            if p.startswith("AWS::IoT::"):
                continue
            params[p] = {"default": (opt or {}).get("Default")}
        self._parameters(params)
        self.thing_name, self.attributes, self.policy = None, {}, "thing"
        for res in (body.get("Resources") or {}).values():
            props = (res or {}).get("Properties") or {}
            if res.get("Type") == "AWS::IoT::Thing":
                self.thing_name = props.get("ThingName")
                self.attributes = props.get("AttributePayload") or {}
            elif res.get("Type") == "AWS::IoT::Policy" and isinstance(props.get("PolicyName"), str):
                self.policy = props["PolicyName"]
        self.device_configuration = body.get("DeviceConfiguration") or {}

    def view(self):
        return dict(self.spec, required=self.required, defaults=self.defaults, policy=self.policy)


def evaluate(spec, params, what):
    """A template value: a literal string, {"Ref": p} or {"Fn::Join": [sep, [parts]]}."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, (int, float, bool)):
        return str(spec).lower() if isinstance(spec, bool) else str(spec)
    if isinstance(spec, dict) and len(spec) == 1 and "Ref" in spec:
        ref = spec["Ref"]
        if ref not in params:
            raise Rejection("parameters", "Parameter %s referenced by %s has no value" % (ref, what))
        return params[ref]
    if isinstance(spec, dict) and len(spec) == 1 and "Fn::Join" in spec:
        args = spec["Fn::Join"]
        if (not isinstance(args, list) or len(args) != 2 or not isinstance(args[0], str)
                or not isinstance(args[1], list)):
            raise Rejection("parameters", "Bad Fn::Join in %s" % what)
        return args[0].join(evaluate(p, params, what) for p in args[1])
    raise Rejection("parameters", "Unsupported template expression in %s" % what)


# ---------------------------------------------------------------- payloads


def decode(fmt, payload):
    if payload == b"":
        return {}
    try:
        obj = json.loads(payload.decode("utf-8")) if fmt == "json" else cbor2.loads(payload)
    except Exception:
        raise Rejection("payload", "The payload is not valid %s." % fmt.upper())
    if not isinstance(obj, dict):
        raise Rejection("payload", "The payload must be a %s object." % ("JSON" if fmt == "json" else "CBOR map"))
    return obj


def encode(fmt, obj):
    if fmt == "json":
        return json.dumps(obj, separators=(",", ":")).encode()
    return cbor2.dumps(obj)


# ---------------------------------------------------------------- the API


class Config:
    def __init__(self):
        self.token_ttl_seconds = 3600.0
        self.key_type = "rsa"
        self.cert_validity_days = 365.0
        self.claim_validity_days = 365.0
        self.temporary_claim_seconds = 300.0
        self.error_codes = dict(DEFAULT_ERRORS)

    def as_dict(self):
        d = dict(vars(self))
        d["error_codes"] = {k: list(v) for k, v in self.error_codes.items()}
        return d


class ProvisioningApi(Api):
    name = "provisioning"

    def __init__(self, cloud):
        super().__init__(cloud)
        self.tb = cloud.testbed
        self.config = Config()
        self.lock = threading.RLock()
        self.sec_lock = threading.Lock()
        self.templates = {}
        self.policies = {k: list(v) for k, v in BUILTIN_POLICIES.items()}
        self.certs = {}      # certificateId -> record
        self.tokens = {}     # token -> {cert, expires, used}
        self.things = {}     # thingName -> record
        self.cas = {}        # caCertificateId -> {pem, template}
        self.fail_next = {}  # api -> {count, status_code, error_code, error_message}
        self.drop_next = {}  # api -> count
        self.files = self.tb.path("provisioning")
        os.makedirs(self.files, mode=0o700, exist_ok=True)
        self.inbox = queue.Queue()
        self.worker = threading.Thread(target=self._work, name="provisioning", daemon=True)
        self.worker.start()
        path = self.tb.path("provisioning-templates.json")
        if os.path.exists(path):
            self._load_templates(path)
        self.jitp = JitpProxy(self)
        self.jitp.start()

    def routes(self):
        return [("$aws/certificates/create/+", self._enqueue),
                ("$aws/certificates/create-from-csr/+", self._enqueue),
                ("$aws/provisioning-templates/+/provision/+", self._enqueue)]

    def commands(self):
        return {n[4:]: getattr(self, n) for n in dir(self) if n.startswith("cmd_")}

    def ping_info(self):
        return {"jitp_port": self.jitp.port}

    def stop(self):
        self.inbox.put(None)
        self.worker.join(10)
        self.jitp.stop()

    # ---- requests

    def _enqueue(self, req):
        self.inbox.put(req)

    def _work(self):
        while True:
            req = self.inbox.get()
            if req is None:
                return
            try:
                self._handle(req)
            except Exception as e:  # keep serving
                print("fakecloud: provisioning: %s failed: %r" % (req.topic, e))

    def _handle(self, req):
        parts = req.topic.split("/")
        fmt = parts[-1]
        if fmt not in ("json", "cbor"):
            return
        if parts[1] == "certificates":
            api, fn = parts[2], (self._create_keys if parts[2] == "create" else self._create_from_csr)
        else:
            api, fn = "provision", self._register_thing
        with self.lock:
            if self.drop_next.get(api):
                self.drop_next[api] -= 1
                return
            fail = self.fail_next.get(api)
            if fail and fail["count"] > 0:
                fail["count"] -= 1
                self._reply(req, fmt, "rejected", provisioning_error(
                    fail["status_code"], fail["error_code"], fail["error_message"]))
                return
        try:
            obj = decode(fmt, req.payload)
            answer = fn(obj, parts)
        except Rejection as r:
            status, code = self.config.error_codes[r.case]
            self._reply(req, fmt, "rejected", provisioning_error(status, code, r.message))
            return
        except Exception as e:  # e.g. the broker could not be reloaded: say so, as AWS would
            print("fakecloud: provisioning: %s: internal error %r" % (req.topic, e))
            self._reply(req, fmt, "rejected", provisioning_error(500, "InternalFailure", str(e)))
            return
        self._reply(req, fmt, "accepted", answer)

    def _reply(self, req, fmt, kind, obj):
        self.cloud.publish(req.topic + "/" + kind, encode(fmt, obj), qos=1)

    # ---- certificates

    def _new_record(self, cert, kind, **extra):
        rec = {"certificateId": cert_id(cert), "commonName": _cn(cert.subject), "status": PENDING,
               "kind": kind, "thingName": None, "template": None, "createdAt": now_s(),
               "notAfter": _ts(cert.not_valid_after), "serial": cert.serial_number,
               "certificatePem": _pem(cert)}
        rec.update(extra)
        with self.lock:
            self.certs[rec["certificateId"]] = rec
        return rec

    def _validity(self, seconds):
        now = _utcnow()
        return now - datetime.timedelta(days=1), now + datetime.timedelta(seconds=seconds)

    def _issue_pending(self, public_key, kind, extra_names=()):
        nb, na = self._validity(self.config.cert_validity_days * 86400)
        cert = self.tb.sign(public_key, CERT_PREFIX + secrets.token_hex(16), nb, na, extra_names)
        token = secrets.token_urlsafe(96)
        expires = time.time() + self.config.token_ttl_seconds
        rec = self._new_record(cert, kind, tokenExpiresAt=int(expires))
        with self.lock:
            self.tokens[token] = {"cert": rec["certificateId"], "expires": expires, "used": False}
        self._apply_security()  # on hold in the CRL before the device has it
        return cert, token

    def _create_keys(self, obj, parts):
        if self.config.key_type == "ec":
            key = ec.generate_private_key(ec.SECP256R1())
            key_pem = key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.TraditionalOpenSSL,
                                        serialization.NoEncryption())
        else:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            key_pem = key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.TraditionalOpenSSL,
                                        serialization.NoEncryption())
        cert, token = self._issue_pending(key.public_key(), "created")
        return {"certificateId": cert_id(cert), "certificatePem": _pem(cert),
                "privateKey": key_pem.decode(), "certificateOwnershipToken": token}

    def _create_from_csr(self, obj, parts):
        pem = obj.get("certificateSigningRequest")
        if not isinstance(pem, str) or not pem:
            raise Rejection("payload", "certificateSigningRequest is required.")
        try:
            csr = x509.load_pem_x509_csr(pem.encode())
        except ValueError:
            raise Rejection("csr", "The certificate signing request is not a valid PEM CSR.")
        if not csr.is_signature_valid:
            raise Rejection("csr", "The certificate signing request signature is invalid.")
        pub = csr.public_key()
        if isinstance(pub, rsa.RSAPublicKey):
            if pub.key_size < 2048:
                raise Rejection("csr", "RSA keys must be at least 2048 bits.")
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            if pub.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
                raise Rejection("csr", "Unsupported elliptic curve %s." % pub.curve.name)
        else:
            raise Rejection("csr", "Unsupported key type in the certificate signing request.")
        extra = [a for a in csr.subject if a.oid != NameOID.COMMON_NAME]
        cert, token = self._issue_pending(pub, "csr", extra)
        return {"certificateOwnershipToken": token, "certificateId": cert_id(cert),
                "certificatePem": _pem(cert)}

    def _expire_tokens(self):
        now = time.time()
        for tok in self.tokens.values():
            rec = self.certs.get(tok["cert"])
            if not tok["used"] and tok["expires"] <= now and rec and rec["status"] == PENDING:
                rec["status"] = DELETED

    # ---- RegisterThing

    def _register_thing(self, obj, parts):
        name = parts[2]
        with self.lock:
            tpl = self.templates.get(name)
        if tpl is None or not tpl.enabled:
            raise Rejection("template", "Template %s does not exist or is disabled." % name)
        token = obj.get("certificateOwnershipToken")
        if token is None or token == "":
            raise Rejection("token", "Certificate ownership token cannot be empty.")
        with self.lock:
            self._expire_tokens()
            tok = self.tokens.get(token) if isinstance(token, str) else None
            if tok is None:
                raise Rejection("token", "Certificate ownership token is invalid.")
            if tok["used"]:
                raise Rejection("token", "Certificate ownership token has already been used.")
            if tok["expires"] <= time.time():
                raise Rejection("token", "Certificate ownership token has expired.")
            rec = self.certs[tok["cert"]]
        params = obj.get("parameters", {})
        if params is None:
            params = {}
        if not isinstance(params, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in params.items()):
            raise Rejection("payload", "parameters must be a map of strings to strings.")
        for k, v in params.items():
            if len(k) > PARAM_KEY_MAX or len(v) > PARAM_VALUE_MAX:
                raise Rejection("payload", "Parameter %s is too long." % k[:64])
        params = self._run_hook(tpl, dict(params))
        thing = self._apply_template(tpl, params, rec, "fleet")
        with self.lock:
            tok["used"] = True
        return thing

    def _run_hook(self, tpl, params):
        hook = tpl.hook
        if not hook:
            return params
        for p, values in (hook.get("allow") or {}).items():
            if params.get(p) not in values:
                raise Rejection("hook", "The pre-provisioning hook denied provisioning "
                                "(%s=%s is not allowed)." % (p, params.get(p)))
        for p, values in (hook.get("deny") or {}).items():
            if params.get(p) in values:
                raise Rejection("hook", "The pre-provisioning hook denied provisioning "
                                "(%s=%s is denied)." % (p, params.get(p)))
        params.update({k: str(v) for k, v in (hook.get("overrides") or {}).items()})
        return params

    def _apply_template(self, tpl, params, rec, how):
        """Evaluate the template for the certificate, activate it; -> the accepted payload."""
        values = dict(tpl.defaults)
        values.update(params)
        missing = [p for p in tpl.required if p not in values]
        if missing:
            raise Rejection("parameters", "Missing value for required parameter(s): %s." % ", ".join(missing))
        values["AWS::IoT::Certificate::Id"] = rec["certificateId"]
        cert = x509.load_pem_x509_certificate(rec["certificatePem"].encode())
        for p, oid in CERT_SUBJECT_PARAMS.items():
            attrs = cert.subject.get_attributes_for_oid(oid)
            if attrs and p not in values:
                values[p] = attrs[0].value
        thing = None
        if tpl.thing_name is not None:
            thing = evaluate(tpl.thing_name, values, "ThingName")
            if not valid_thing_name(thing):
                raise Rejection("parameters", "Invalid thing name %r." % thing[:200])
        attributes = {k: evaluate(v, values, "attribute " + k) for k, v in tpl.attributes.items()}
        config = {k: evaluate(v, values, "DeviceConfiguration " + k)
                  for k, v in tpl.device_configuration.items()}
        if tpl.policy not in self.policies:
            raise Rejection("parameters", "Policy %s does not exist." % tpl.policy)
        with self.lock:
            rec["status"] = ACTIVE
            rec["template"] = tpl.name
            rec["policy"] = tpl.policy
            rec["thingName"] = thing
            if thing is not None:
                t = self.things.get(thing)
                if t is None:
                    t = self.things[thing] = {"thingName": thing, "attributes": {}, "certificates": [],
                                              "template": tpl.name, "createdAt": now_s(),
                                              "provisionedBy": how}
                t["attributes"].update(attributes)
                t["certificates"].append(rec["certificateId"])
                t["updatedAt"] = now_s()
                t["template"] = tpl.name
        self._apply_security()
        answer = {"deviceConfiguration": config}
        if thing is not None:
            answer["thingName"] = thing
        return answer

    # ---- broker security (ACL + CRL)

    def _apply_security(self):
        with self.sec_lock:
            with self.lock:
                self._expire_tokens()
                acl, revoked = [], []
                for rec in self.certs.values():
                    if rec["kind"] == "jitp":
                        continue  # the relay's minted certificate carries the thing's CN
                    if rec["status"] in (PENDING, DELETED):
                        revoked.append((rec["serial"], "certificate_hold"))
                    elif rec["status"] == REVOKED:
                        revoked.append((rec["serial"], "key_compromise"))
                    elif rec["kind"] in ("claim", "temporary-claim"):
                        tpl = rec.get("template") or "+"
                        acl.append("user %s\ntopic readwrite $aws/certificates/create/#\n"
                                   "topic readwrite $aws/certificates/create-from-csr/#\n"
                                   "topic readwrite $aws/provisioning-templates/%s/provision/#\n"
                                   % (rec["commonName"], tpl))
                    elif rec["thingName"]:
                        rules = [r.replace("${thing}", rec["thingName"])
                                 .replace("${template}", rec["template"] or "+")
                                 for r in self.policies[rec.get("policy") or "thing"]]
                        acl.append("user %s\n" % rec["commonName"]
                                   + "".join("topic %s\n" % r for r in rules))
            self.tb.update_security(acl_extra="\n".join(acl), revoked=revoked)

    # ---- templates and policies

    def _add_template(self, spec):
        tpl = Template(spec)
        with self.lock:
            self.templates[tpl.name] = tpl
        return tpl

    def _load_templates(self, path):
        with open(path) as f:
            data = json.load(f)
        if isinstance(data, dict):
            data = data.get("templates", [])
        return [self._add_template(spec).name for spec in data]

    def cmd_create_template(self, req):
        spec = {k: v for k, v in req.items() if k != "cmd"}
        return {"template": self._add_template(spec).view()}

    def cmd_load_templates(self, req):
        return {"templates": self._load_templates(req["path"])}

    def cmd_templates(self, req):
        with self.lock:
            return {"templates": [t.view() for t in self.templates.values()]}

    def cmd_create_policy(self, req):
        name, rules = req.get("name"), req.get("rules")
        if not isinstance(name, str) or not name or not isinstance(rules, list) or not all(
                isinstance(r, str) and r.split(" ", 1)[0] in ("read", "write", "readwrite")
                and len(r.split()) == 2 for r in rules):
            raise ValueError('create_policy needs "name" and "rules": ["readwrite <topic>", ...]')
        with self.lock:
            self.policies[name] = list(rules)
        return {"policy": {"name": name, "rules": rules}}

    # ---- claims

    def cmd_claim_certificate(self, req):
        template = req.get("template")
        if template is not None and (not isinstance(template, str) or not TEMPLATE_RE.match(template)):
            raise ValueError("bad template name")
        temporary = bool(req.get("temporary", False))
        seconds = float(req.get("validity_seconds",
                                self.config.temporary_claim_seconds if temporary
                                else self.config.claim_validity_days * 86400))
        key = ec.generate_private_key(ec.SECP256R1())
        now = _utcnow()
        nb = now - datetime.timedelta(seconds=60 if temporary else 86400)
        na = now + datetime.timedelta(seconds=seconds)
        cn = CLAIM_PREFIX + secrets.token_hex(16)
        cert = self.tb.sign(key.public_key(), cn, nb, na)
        rec = self._new_record(cert, "temporary-claim" if temporary else "claim", template=template)
        rec["status"] = ACTIVE
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        cert_path = os.path.join(self.files, cn + ".crt")
        key_path = os.path.join(self.files, cn + ".key")
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key_pem)
        with open(cert_path, "w") as f:
            f.write(_pem(cert))
        self._apply_security()
        pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        return {"cert": cert_path, "key": key_path, "ca": self.tb.info["ca"],
                "certificateId": rec["certificateId"], "commonName": cn,
                "expiration": _ts(cert.not_valid_after), "certificatePem": _pem(cert),
                "keyPair": {"PrivateKey": key_pem, "PublicKey": pub}}

    # ---- views

    @staticmethod
    def _cert_view(rec):
        return {k: v for k, v in rec.items() if k != "serial"}

    def cmd_certificates(self, req):
        with self.lock:
            self._expire_tokens()
            out = [self._cert_view(r) for r in self.certs.values()
                   if (req.get("status") is None or r["status"] == req["status"])
                   and (req.get("thing") is None or r["thingName"] == req["thing"])]
        return {"certificates": out}

    def cmd_provisioning_things(self, req):
        with self.lock:
            out = [json.loads(json.dumps(t)) for n, t in sorted(self.things.items())
                   if req.get("name") is None or n == req["name"]]
        return {"things": out}

    def cmd_revoke_certificate(self, req):
        cid = req.get("certificate_id")
        with self.lock:
            rec = self.certs.get(cid)
            if rec is None:
                raise ValueError("no certificate %r" % cid)
            rec["status"] = REVOKED
        self._apply_security()
        return {"certificate": self._cert_view(rec)}

    def cmd_provisioning_config(self, req):
        c = self.config
        with self.lock:
            for k in ("token_ttl_seconds", "cert_validity_days", "claim_validity_days",
                      "temporary_claim_seconds"):
                if k in req:
                    v = float(req[k])
                    if v <= 0:
                        raise ValueError("%s must be > 0" % k)
                    setattr(c, k, v)
            if "key_type" in req:
                if req["key_type"] not in ("rsa", "ec"):
                    raise ValueError('key_type is "rsa" or "ec"')
                c.key_type = req["key_type"]
            for case, pair in (req.get("error_codes") or {}).items():
                if case not in DEFAULT_ERRORS or not isinstance(pair, list) or len(pair) != 2:
                    raise ValueError("error_codes: {case: [statusCode, errorCode]}, cases %s"
                                     % sorted(DEFAULT_ERRORS))
                c.error_codes[case] = (int(pair[0]), str(pair[1]))
            return c.as_dict()

    @staticmethod
    def _api_arg(req):
        api = req.get("api")
        if api not in APIS:
            raise ValueError("api is one of %s" % ", ".join(APIS))
        return api

    def cmd_provisioning_fail_next(self, req):
        api = self._api_arg(req)
        fail = {"count": int(req.get("count", 1)), "status_code": int(req.get("status_code", 500)),
                "error_code": str(req.get("error_code", "InternalFailure")),
                "error_message": str(req.get("error_message", "Injected failure."))}
        with self.lock:
            self.fail_next[api] = fail
        return dict(fail, api=api)

    def cmd_provisioning_drop_next(self, req):
        api = self._api_arg(req)
        with self.lock:
            self.drop_next[api] = int(req.get("count", 1))
        return {"api": api, "count": self.drop_next[api]}

    def cmd_rotation_alert(self, req):
        thing = req.get("thing")
        if not isinstance(thing, str) or not THING_RE.match(thing):
            raise ValueError('rotation_alert needs a valid "thing"')
        with self.lock:
            cid = req.get("certificate_id")
            if cid is None:
                active = [r for r in self.certs.values()
                          if r["thingName"] == thing and r["status"] == ACTIVE]
                cid = active[-1]["certificateId"] if active else None
            rec = self.certs.get(cid) if cid else None
            template = req.get("template") or (rec and rec["template"]) or None
        payload = {"thingName": thing, "certificateId": cid,
                   "notAfter": rec["notAfter"] if rec else None,
                   "reason": str(req.get("reason", "EXPIRING")), "templateName": template,
                   "timestamp": now_s()}
        topic = ROTATION_TOPIC % thing
        self.cloud.publish(topic, payload, qos=1)
        return {"topic": topic, "payload": payload}

    # ---- JITP

    def cmd_register_ca(self, req):
        pem = req.get("ca_cert")
        if not isinstance(pem, str) or not pem:
            raise ValueError('register_ca needs "ca_cert" (PEM text or a path)')
        if "-----BEGIN" not in pem:
            with open(pem) as f:
                pem = f.read()
        ca = x509.load_pem_x509_certificate(pem.encode())
        template = req.get("template")
        if template is not None and template not in self.templates:
            raise ValueError("no template %r" % template)
        cid = cert_id(ca)
        with self.lock:
            self.cas[cid] = {"pem": pem, "template": template, "cert": ca}
        self.jitp.reload_cas()
        return {"caCertificateId": cid, "jitp_port": self.jitp.port}

    def cmd_jitp(self, req):
        with self.lock:
            return {"port": self.jitp.port, "cas": sorted(self.cas)}

    def jitp_register(self, cert):
        """First sight of a certificate at the JITP endpoint: register it. -> record or None."""
        issuer = None
        with self.lock:
            for cid, ca in self.cas.items():
                if ca["cert"].subject == cert.issuer:
                    issuer = ca
        rec = self._new_record(cert, "jitp")
        tpl_name = issuer and issuer["template"]
        with self.lock:
            tpl = self.templates.get(tpl_name) if tpl_name else None
        if tpl is None:
            tpl = Template({"name": "JITP", "thing_name": {"Ref": "AWS::IoT::Certificate::CommonName"}})
        try:
            self._apply_template(tpl, {}, rec, "jitp")
        except Rejection as r:
            with self.lock:
                rec["status"] = DELETED
                rec["error"] = r.message
            return None
        return rec

    def jitp_lookup(self, cert):
        with self.lock:
            return self.certs.get(cert_id(cert))


# ---------------------------------------------------------------- the JITP endpoint


class JitpProxy:
    def __init__(self, api):
        self.api = api
        self.tb = api.tb
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.ctx = None
        self.stopping = threading.Event()
        self.minted = {}  # thing -> (cert path, key path)
        self.mint_lock = threading.Lock()
        self.conns = set()
        self.conns_lock = threading.Lock()
        self.reload_cas()

    def reload_cas(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.tb.info["server_cert"], self.tb.path("server.key"))
        ctx.verify_mode = ssl.CERT_REQUIRED
        with self.api.lock:
            pems = [ca["pem"] for ca in self.api.cas.values()]
        if pems:
            ctx.load_verify_locations(cadata="\n".join(pems))
        self.ctx = ctx

    def start(self):
        threading.Thread(target=self._accept_loop, name="jitp", daemon=True).start()

    def stop(self):
        self.stopping.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self.conns_lock:
            for s in list(self.conns):
                try:
                    s.close()
                except OSError:
                    pass

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), name="jitp-conn", daemon=True).start()

    def _track(self, s, add):
        with self.conns_lock:
            (self.conns.add if add else self.conns.discard)(s)

    def _mint(self, thing):
        with self.mint_lock:
            if thing not in self.minted:
                key = ec.generate_private_key(ec.SECP256R1())
                now = _utcnow()
                cert = self.tb.sign(key.public_key(), thing, now - datetime.timedelta(days=1),
                                    now + datetime.timedelta(days=365))
                base = os.path.join(self.api.files, "jitp-relay-" + thing)
                fd = os.open(base + ".key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
                with open(base + ".crt", "w") as f:
                    f.write(_pem(cert))
                self.minted[thing] = (base + ".crt", base + ".key")
            return self.minted[thing]

    def _serve(self, raw):
        self._track(raw, True)
        dev = up = None
        try:
            raw.settimeout(5)
            dev = self.ctx.wrap_socket(raw, server_side=True)
            der = dev.getpeercert(binary_form=True)
            cert = x509.load_der_x509_certificate(der)
            rec = self.api.jitp_lookup(cert)
            if rec is None:
                # first connection: register, then drop it before any MQTT byte
                self.api.jitp_register(cert)
                return
            if rec["status"] != ACTIVE or not rec["thingName"]:
                return
            cert_path, key_path = self._mint(rec["thingName"])
            ctx = self.tb.client_context(cert_path, key_path)
            upraw = socket.create_connection(("127.0.0.1", self.tb.port), timeout=5)
            self._track(upraw, True)
            up = ctx.wrap_socket(upraw, server_hostname="localhost")
            for s in (dev, up):
                # Non-blocking: a readable TLS socket may hold only a TLS 1.3 session ticket (the
                # broker sends two after its handshake), and a blocking recv() would then wait for
                # application data that cannot come before the device's CONNECT is relayed.
                s.setblocking(False)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._relay(dev, up)
        except (OSError, ssl.SSLError, ValueError):
            pass
        finally:
            for s in (dev, up):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass
            try:
                raw.close()
            except OSError:
                pass
            self._track(raw, False)
            if up is not None:
                self._track(up, False)

    def _relay(self, a, b):
        peer = {a: b, b: a}
        while not self.stopping.is_set():
            ready = [s for s in (a, b) if s.pending()]
            if not ready:
                ready, _, _ = select.select([a, b], [], [], 0.5)
            for s in ready:
                try:
                    data = s.recv(65536)
                except ssl.SSLWantReadError:
                    continue
                if not data:
                    return
                self._send_all(peer[s], data)

    @staticmethod
    def _send_all(s, data):
        view = memoryview(data)
        while view:
            try:
                view = view[s.send(view):]
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                select.select([], [s], [], 0.5)
