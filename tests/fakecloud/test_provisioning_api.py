"""Tests of the fleet provisioning and JITP cloud side of the fakecloud
(provisioning_api.py) with paho-mqtt devices on the real testbed broker.

Run: /usr/bin/python3 -m pytest -q tests/fakecloud/test_provisioning_api.py

One broker and one fakecloud for the module; each test uses its own template
and serial numbers, so tests do not see each other's things.
"""

import datetime
import hashlib
import json
import os
import socket
import ssl
import sys
import time

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "testbed"))
import testbed  # noqa: E402
from devclient import ConnectRefused, DeviceClient  # noqa: E402
from conftest import cloud_fixture  # noqa: E402

ERR_KEYS = {"statusCode", "errorCode", "errorMessage"}


def _prepare(c, root):
    c.files = root


cloud = cloud_fixture("prov", _prepare)


@pytest.fixture(autouse=True)
def fast_keys(cloud):
    cloud.ok("provisioning_config", key_type="ec", token_ttl_seconds=3600)


def connect(cloud, ident, client_id):
    dev = DeviceClient.connect(cloud.tb, ident, client_id=client_id)
    dev.client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    cloud.clients.append(dev)
    return dev


def write_ident(cloud, name, cert_pem, key_pem):
    cert, key = str(cloud.files / (name + ".crt")), str(cloud.files / (name + ".key"))
    with open(cert, "w") as f:
        f.write(cert_pem)
    with open(key, "w") as f:
        f.write(key_pem)
    os.chmod(key, 0o600)
    return {"cert": cert, "key": key}


def refused(cloud, ident, client_id="probe"):
    try:
        DeviceClient.connect(cloud.tb, ident, client_id=client_id).close()
    except ConnectRefused:
        return True
    return False


class Claimed:
    """A device connected with a claim certificate, subscribed to the answers."""

    def __init__(self, cloud, template, claim=None, fmt="json", client_id=None):
        self.cloud, self.template, self.fmt = cloud, template, fmt
        self.claim = claim or cloud.ok("claim_certificate", template=template)
        self.dev = connect(cloud, self.claim, client_id or "claim-" + template)
        for t in ("$aws/certificates/create/%s/+" % fmt, "$aws/certificates/create-from-csr/%s/+" % fmt,
                  "$aws/provisioning-templates/%s/provision/%s/+" % (template, fmt)):
            self.dev.subscribe(t)

    def request(self, topic, payload, timeout=5.0):
        """-> ("accepted"|"rejected", decoded object)."""
        if isinstance(payload, dict):
            payload = json.dumps(payload).encode() if self.fmt == "json" else cbor2.dumps(payload)
        start = len(self.dev.messages)
        self.dev.publish(topic, payload)
        want = (topic + "/accepted", topic + "/rejected")
        deadline = time.monotonic() + timeout
        with self.dev.cond:
            while True:
                for t, p in self.dev.messages[start:]:
                    if t in want:
                        obj = json.loads(p) if self.fmt == "json" else cbor2.loads(p)
                        return t.rsplit("/", 1)[1], obj
                left = deadline - time.monotonic()
                assert left > 0, "no answer on %s" % topic
                self.dev.cond.wait(left)

    def create(self, payload=b""):
        return self.request("$aws/certificates/create/" + self.fmt, payload)

    def create_csr(self, payload):
        return self.request("$aws/certificates/create-from-csr/" + self.fmt, payload)

    def register(self, payload, template=None):
        return self.request("$aws/provisioning-templates/%s/provision/%s"
                            % (template or self.template, self.fmt), payload)

    def provision(self, params):
        kind, created = self.create()
        assert kind == "accepted", created
        kind, reg = self.register({"certificateOwnershipToken": created["certificateOwnershipToken"],
                                   "parameters": params})
        assert kind == "accepted", reg
        return created, reg


def template(cloud, name, **spec):
    spec.setdefault("parameters", ["SerialNumber"])
    spec.setdefault("thing_name", {"Fn::Join": ["", [name + "_", {"Ref": "SerialNumber"}]]})
    return cloud.ok("create_template", name=name, **spec)


def make_csr(key=None, cn="device"):
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "iotbox"),
                                    x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .sign(key, hashes.SHA256()))
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def cert_status(cloud, cid):
    certs = cloud.ok("certificates")["certificates"]
    return [c for c in certs if c["certificateId"] == cid][0]["status"]


def assert_error(obj, status, code):
    assert set(obj) == ERR_KEYS, obj
    assert obj["statusCode"] == status and obj["errorCode"] == code, obj
    assert isinstance(obj["errorMessage"], str) and obj["errorMessage"], obj


def thing_topics_work(cloud, ident, thing, other="someone_else"):
    """The certificate connects, uses its thing's topics and no other."""
    dev = connect(cloud, ident, thing)
    dev.subscribe("$aws/things/%s/#" % thing)
    dev.subscribe("$aws/things/%s/#" % other)
    dev.subscribe("$aws/certificates/create/json/+")
    cloud.ok("publish", topic="$aws/things/%s/x" % other, payload="no")
    cloud.ok("publish", topic="$aws/certificates/create/json/accepted", payload="no")
    dev.publish("$aws/things/%s/shadow/name/x/y" % other, "intruder")
    dev.publish("$aws/things/%s/marker" % thing, "m")
    dev.wait_message("$aws/things/%s/marker" % thing)
    cloud.ok("wait", topic="$aws/things/%s/marker" % thing, timeout=5)
    assert "$aws/things/%s/x" % other not in dev.topics()
    assert "$aws/certificates/create/json/accepted" not in dev.topics()
    assert cloud.ok("received", topic="$aws/things/%s/shadow/name/x/y" % other)["messages"] == []
    return dev


# ---------------------------------------------------------------- CreateKeysAndCertificate


@pytest.mark.parametrize("fmt,payload", [("json", b""), ("json", b"{}"), ("cbor", b""),
                                          ("cbor", cbor2.dumps({}))])
def test_create_keys_and_register(cloud, fmt, payload):
    name = "CK_" + fmt + str(len(payload))
    template(cloud, name, attributes={"sn": {"Ref": "SerialNumber"}, "kind": "sensor"},
             device_configuration={"Foo": "Bar", "Url": {"Ref": "SerialNumber"}})
    dev = Claimed(cloud, name, fmt=fmt)
    kind, created = dev.create(payload)
    assert kind == "accepted", created
    assert set(created) == {"certificateId", "certificatePem", "privateKey", "certificateOwnershipToken"}
    assert all(isinstance(v, str) and v for v in created.values())
    cert = x509.load_pem_x509_certificate(created["certificatePem"].encode())
    assert created["certificateId"] == hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    ca = x509.load_pem_x509_certificate(open(cloud.tb.ca, "rb").read())
    ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value.startswith("cert+")
    ident = write_ident(cloud, name, created["certificatePem"], created["privateKey"])
    assert cert_status(cloud, created["certificateId"]) == "PENDING_ACTIVATION"
    assert refused(cloud, ident), "a pending certificate connected"

    kind, reg = dev.register({"certificateOwnershipToken": created["certificateOwnershipToken"],
                              "parameters": {"SerialNumber": "S1"}})
    assert kind == "accepted", reg
    assert reg == {"deviceConfiguration": {"Foo": "Bar", "Url": "S1"}, "thingName": name + "_S1"}
    assert cert_status(cloud, created["certificateId"]) == "ACTIVE"
    things = cloud.ok("provisioning_things", name=name + "_S1")["things"]
    assert things[0]["attributes"] == {"sn": "S1", "kind": "sensor"}
    assert things[0]["certificates"] == [created["certificateId"]]
    thing_topics_work(cloud, ident, name + "_S1")


def test_create_keys_rsa_key_like_aws(cloud):
    cloud.ok("provisioning_config", key_type="rsa")
    template(cloud, "CKRSA")
    kind, created = Claimed(cloud, "CKRSA").create()
    assert kind == "accepted"
    assert created["privateKey"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    key = serialization.load_pem_private_key(created["privateKey"].encode(), None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    cert = x509.load_pem_x509_certificate(created["certificatePem"].encode())
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()


# ---------------------------------------------------------------- CreateCertificateFromCsr


@pytest.mark.parametrize("fmt", ["json", "cbor"])
def test_csr_and_register(cloud, fmt):
    name = "CSR_" + fmt
    template(cloud, name, device_configuration={"A": "b"})
    dev = Claimed(cloud, name, fmt=fmt)
    key, csr = make_csr()
    kind, created = dev.create_csr({"certificateSigningRequest": csr})
    assert kind == "accepted", created
    assert set(created) == {"certificateOwnershipToken", "certificateId", "certificatePem"}
    cert = x509.load_pem_x509_certificate(created["certificatePem"].encode())
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "iotbox"
    ident = write_ident(cloud, name, created["certificatePem"], key_pem(key))
    assert refused(cloud, ident)
    kind, reg = dev.register({"certificateOwnershipToken": created["certificateOwnershipToken"],
                              "parameters": {"SerialNumber": "X9"}})
    assert (kind, reg) == ("accepted", {"deviceConfiguration": {"A": "b"}, "thingName": name + "_X9"})
    thing_topics_work(cloud, ident, name + "_X9")


def test_bad_csrs_are_rejected(cloud):
    template(cloud, "BADCSR")
    dev = Claimed(cloud, "BADCSR")
    kind, err = dev.create_csr({"certificateSigningRequest": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                                "-----END CERTIFICATE REQUEST-----\n"})
    assert kind == "rejected"
    assert_error(err, 400, "InvalidCsr")
    # a CSR whose signature does not match: another key's signature spliced in
    _, csr = make_csr(cn="a")
    der = x509.load_pem_x509_csr(csr.encode()).public_bytes(serialization.Encoding.DER)
    bad = bytearray(der)
    bad[-5] ^= 0x01
    pem = ("-----BEGIN CERTIFICATE REQUEST-----\n"
           + __import__("base64").encodebytes(bytes(bad)).decode()
           + "-----END CERTIFICATE REQUEST-----\n")
    kind, err = dev.create_csr({"certificateSigningRequest": pem})
    assert kind == "rejected"
    assert_error(err, 400, "InvalidCsr")
    _, weak = make_csr(key=rsa.generate_private_key(public_exponent=65537, key_size=1024))
    kind, err = dev.create_csr({"certificateSigningRequest": weak})
    assert kind == "rejected"
    assert_error(err, 400, "InvalidCsr")
    kind, err = dev.create_csr({})
    assert kind == "rejected"
    assert_error(err, 400, "InvalidPayload")


@pytest.mark.parametrize("fmt", ["json", "cbor"])
def test_malformed_payloads_are_rejected(cloud, fmt):
    name = "MAL_" + fmt
    template(cloud, name)
    dev = Claimed(cloud, name, fmt=fmt)
    junk = b"{not json" if fmt == "json" else b"\xff\xff\x00"
    for fn in (dev.create, dev.create_csr, dev.register):
        kind, err = fn(junk)
        assert kind == "rejected", fn
        assert_error(err, 400, "InvalidPayload")
    kind, err = dev.create(b"[1]" if fmt == "json" else cbor2.dumps([1]))
    assert kind == "rejected"
    assert_error(err, 400, "InvalidPayload")


# ---------------------------------------------------------------- RegisterThing rejections


def test_token_errors(cloud):
    template(cloud, "TOK")
    dev = Claimed(cloud, "TOK")
    for tok in (None, ""):
        body = {"parameters": {"SerialNumber": "1"}}
        if tok is not None:
            body["certificateOwnershipToken"] = tok
        kind, err = dev.register(body)
        assert kind == "rejected"
        assert err == {"statusCode": 400, "errorCode": "InvalidCertificateOwnershipToken",
                       "errorMessage": "Certificate ownership token cannot be empty."}
    kind, err = dev.register({"certificateOwnershipToken": "bm90LWEtdG9rZW4", "parameters": {"SerialNumber": "1"}})
    assert kind == "rejected"
    assert_error(err, 400, "InvalidCertificateOwnershipToken")

    created, reg = dev.provision({"SerialNumber": "1"})
    kind, err = dev.register({"certificateOwnershipToken": created["certificateOwnershipToken"],
                              "parameters": {"SerialNumber": "2"}})
    assert kind == "rejected", "a token was used twice"
    assert_error(err, 400, "InvalidCertificateOwnershipToken")

    cloud.ok("provisioning_config", token_ttl_seconds=0.5)
    kind, created = dev.create()
    time.sleep(0.7)
    kind, err = dev.register({"certificateOwnershipToken": created["certificateOwnershipToken"],
                              "parameters": {"SerialNumber": "3"}})
    assert kind == "rejected", "an expired token was taken"
    assert_error(err, 400, "InvalidCertificateOwnershipToken")
    assert cert_status(cloud, created["certificateId"]) == "DELETED"


def test_template_parameter_and_hook_errors(cloud):
    template(cloud, "HOOK", parameters={"SerialNumber": {}, "Region": {"default": "eu"}},
             attributes={"region": {"Ref": "Region"}},
             hook={"allow": {"SerialNumber": ["OK1", "OK2"]}, "overrides": {"Site": "lab"}},
             device_configuration={"Site": {"Ref": "Site"}})
    dev = Claimed(cloud, "HOOK", claim=cloud.ok("claim_certificate"))  # any template
    dev.dev.subscribe("$aws/provisioning-templates/NOSUCH/provision/json/+")
    kind, created = dev.create()
    tok = created["certificateOwnershipToken"]
    kind, err = dev.register({"certificateOwnershipToken": tok, "parameters": {"SerialNumber": "BAD"}})
    assert kind == "rejected"
    assert_error(err, 403, "AccessDenied")
    kind, err = dev.register({"certificateOwnershipToken": tok, "parameters": {}})
    assert kind == "rejected"
    assert_error(err, 403, "AccessDenied")  # the hook runs before the template
    kind, err = dev.register({"certificateOwnershipToken": tok, "parameters": {"SerialNumber": 5}})
    assert kind == "rejected"
    assert_error(err, 400, "InvalidPayload")
    kind, err = dev.register({"certificateOwnershipToken": tok, "parameters": {"SerialNumber": "OK1"}},
                             template="NOSUCH")
    assert kind == "rejected"
    assert_error(err, 404, "ResourceNotFound")
    # the rejections did not use the token up
    kind, reg = dev.register({"certificateOwnershipToken": tok, "parameters": {"SerialNumber": "OK1"}})
    assert (kind, reg) == ("accepted", {"deviceConfiguration": {"Site": "lab"}, "thingName": "HOOK_OK1"})
    assert cloud.ok("provisioning_things", name="HOOK_OK1")["things"][0]["attributes"] == {"region": "eu"}

    template(cloud, "REQ", parameters=["SerialNumber", "Model"])
    dev2 = Claimed(cloud, "REQ")
    kind, created = dev2.create()
    kind, err = dev2.register({"certificateOwnershipToken": created["certificateOwnershipToken"],
                               "parameters": {"SerialNumber": "1"}})
    assert kind == "rejected"
    assert_error(err, 400, "InvalidParameters")
    assert "Model" in err["errorMessage"]
    kind, err = dev2.register({"certificateOwnershipToken": created["certificateOwnershipToken"],
                               "parameters": {"SerialNumber": "bad.name", "Model": "m"}})
    assert kind == "rejected"
    assert_error(err, 400, "InvalidParameters")


def test_aws_template_body_and_file(cloud, tmp_path):
    body = {"Parameters": {"ThingName": {"Type": "String"}, "AWS::IoT::Certificate::Id": {"Type": "String"}},
            "Resources": {"thing": {"Type": "AWS::IoT::Thing",
                                    "Properties": {"ThingName": {"Ref": "ThingName"},
                                                   "AttributePayload": {"v": "1"}}},
                          "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "thing"}}},
            "DeviceConfiguration": {"k": "v"}}
    path = tmp_path / "templates.json"
    path.write_text(json.dumps({"templates": [{"name": "BODY", "body": body}]}))
    assert cloud.ok("load_templates", path=str(path))["templates"] == ["BODY"]
    dev = Claimed(cloud, "BODY")
    created, reg = dev.provision({"ThingName": "body-thing-1"})
    assert reg == {"deviceConfiguration": {"k": "v"}, "thingName": "body-thing-1"}


# ---------------------------------------------------------------- claims and ACLs


def test_claim_is_limited_to_its_provisioning_topics(cloud):
    template(cloud, "LIM")
    claim = cloud.ok("claim_certificate", template="LIM")
    cn = claim["commonName"]
    assert cn.startswith("claim+")  # '+': mosquitto applies no "pattern" rule to it
    assert cloud.cmd("create_thing", name=cn)["ok"] is False
    dev = connect(cloud, claim, "claim-lim")
    for f in ("$aws/things/LIM_1/#", "things/LIM_1/#", "$aws/things/claim-lim/#",
              "$aws/provisioning-templates/OTHER/provision/json/+", "$aws/provisioning-templates/LIM/provision/json/+"):
        dev.subscribe(f)
    cloud.ok("publish", topic="$aws/things/LIM_1/jobs/notify", payload="no")
    cloud.ok("publish", topic="things/LIM_1/x", payload="no")
    cloud.ok("publish", topic="$aws/things/claim-lim/x", payload="no")
    cloud.ok("publish", topic="$aws/provisioning-templates/OTHER/provision/json/accepted", payload="no")
    dev.publish("$aws/things/LIM_1/jobs/get", "{}")
    dev.publish("$aws/provisioning-templates/OTHER/provision/json", "{}")
    dev.publish("$aws/provisioning-templates/LIM/provision/json", "{}")
    dev.wait_message("$aws/provisioning-templates/LIM/provision/json/rejected")
    for t in ("$aws/things/LIM_1/jobs/notify", "things/LIM_1/x", "$aws/things/claim-lim/x",
              "$aws/provisioning-templates/OTHER/provision/json/accepted"):
        assert t not in dev.topics(), t
    assert cloud.ok("received", topic="$aws/things/LIM_1/jobs/get")["messages"] == []
    assert cloud.ok("received", topic="$aws/provisioning-templates/OTHER/provision/json")["messages"] == []


def test_temporary_claim_expires(cloud):
    template(cloud, "TMP")
    claim = cloud.ok("claim_certificate", template="TMP", temporary=True, validity_seconds=2)
    assert claim["expiration"] - time.time() < 3
    assert set(claim["keyPair"]) == {"PrivateKey", "PublicKey"}
    dev = Claimed(cloud, "TMP", claim=claim)  # connects while valid
    dev.provision({"SerialNumber": "t1"})
    time.sleep(max(0.0, claim["expiration"] - time.time()) + 1.1)
    assert refused(cloud, claim), "an expired temporary claim connected"
    default = cloud.ok("claim_certificate", temporary=True)
    assert 290 <= default["expiration"] - time.time() <= 301


def test_revoked_certificate_cannot_connect(cloud):
    template(cloud, "REV")
    dev = Claimed(cloud, "REV")
    created, reg = dev.provision({"SerialNumber": "r"})
    ident = write_ident(cloud, "rev", created["certificatePem"], created["privateKey"])
    assert not refused(cloud, ident, "REV_r")
    cloud.ok("revoke_certificate", certificate_id=created["certificateId"])
    assert cert_status(cloud, created["certificateId"]) == "REVOKED"
    assert refused(cloud, ident, "REV_r")


def test_rotation_alert_reaches_the_thing(cloud):
    template(cloud, "ROT", policy="thing-rotation")
    dev = Claimed(cloud, "ROT")
    created, reg = dev.provision({"SerialNumber": "a"})
    ident = write_ident(cloud, "rot", created["certificatePem"], created["privateKey"])
    thing = connect(cloud, ident, "ROT_a")
    thing.subscribe("things/ROT_a/iotbox/rotate-certificate")
    # thing-rotation: the provisioned certificate may rotate over MQTT itself
    thing.subscribe("$aws/certificates/create-from-csr/json/+")
    resp = cloud.ok("rotation_alert", thing="ROT_a")
    assert resp["topic"] == "things/ROT_a/iotbox/rotate-certificate"
    msg = json.loads(thing.wait_message(resp["topic"])[1])
    assert msg["thingName"] == "ROT_a" and msg["certificateId"] == created["certificateId"]
    assert msg["templateName"] == "ROT" and msg["reason"] == "EXPIRING"
    assert isinstance(msg["notAfter"], int) and isinstance(msg["timestamp"], int)
    key, csr = make_csr()
    thing.publish("$aws/certificates/create-from-csr/json", json.dumps({"certificateSigningRequest": csr}))
    new = json.loads(thing.wait_message("$aws/certificates/create-from-csr/json/accepted")[1])
    assert new["certificateId"] != created["certificateId"]


def test_fail_and_drop_next(cloud):
    template(cloud, "FAIL")
    dev = Claimed(cloud, "FAIL")
    cloud.ok("provisioning_fail_next", api="create", status_code=429, error_code="Throttling")
    kind, err = dev.create()
    assert (kind, err["statusCode"], err["errorCode"]) == ("rejected", 429, "Throttling")
    cloud.ok("provisioning_drop_next", api="create")
    with pytest.raises(AssertionError):
        dev.request("$aws/certificates/create/json", b"", timeout=0.5)
    assert dev.create()[0] == "accepted"


# ---------------------------------------------------------------- JITP


def make_ca(cn):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.utcnow()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_device(ca_key, ca_cert, cn):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.utcnow()
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(ca_key, hashes.SHA256()))
    return key, cert


def test_jitp_first_connection_dropped_then_relayed(cloud):
    ca_key, ca_cert = make_ca("iotbox JITP test CA")
    port = cloud.ok("ping")["jitp_port"]
    resp = cloud.ok("register_ca", ca_cert=ca_cert.public_bytes(serialization.Encoding.PEM).decode())
    assert resp["jitp_port"] == port
    key, cert = make_device(ca_key, ca_cert, "jitp-dev-1")
    ident = write_ident(cloud, "jitp1", cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem(key))
    # a certificate of an unregistered CA never gets in
    other_key, other_ca = make_ca("unregistered CA")
    k2, c2 = make_device(other_key, other_ca, "jitp-dev-2")
    ident2 = write_ident(cloud, "jitp2", c2.public_bytes(serialization.Encoding.PEM).decode(), key_pem(k2))
    for ident_ in (ident, ident2):
        with pytest.raises(ConnectRefused):
            DeviceClient.connect(cloud.tb, ident_, port=port, client_id="jitp-dev-1", timeout=3)
    things = cloud.ok("provisioning_things", name="jitp-dev-1")["things"]
    assert things and things[0]["provisionedBy"] == "jitp"
    cid = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert cert_status(cloud, cid) == "ACTIVE"
    dev = DeviceClient.connect(cloud.tb, ident, port=port, client_id="jitp-dev-1")
    cloud.clients.append(dev)
    dev.subscribe("$aws/things/jitp-dev-1/#")
    dev.subscribe("$aws/things/other/#")
    cloud.ok("publish", topic="$aws/things/other/x", payload="no")
    dev.publish("$aws/things/jitp-dev-1/hello", "hi")
    assert dev.wait_message("$aws/things/jitp-dev-1/hello")[1] == b"hi"
    cloud.ok("wait", topic="$aws/things/jitp-dev-1/hello", timeout=5)
    assert "$aws/things/other/x" not in dev.topics()
    with pytest.raises(ConnectRefused):
        DeviceClient.connect(cloud.tb, ident2, port=port, client_id="jitp-dev-2", timeout=3)


def test_jitp_refuses_reserved_names(cloud):
    ca_key, ca_cert = make_ca("iotbox JITP CA 2")
    port = cloud.ok("register_ca", ca_cert=ca_cert.public_bytes(serialization.Encoding.PEM).decode())["jitp_port"]
    key, cert = make_device(ca_key, ca_cert, "fakecloud")
    ident = write_ident(cloud, "jitpfc", cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem(key))
    for _ in range(2):
        with pytest.raises(ConnectRefused):
            DeviceClient.connect(cloud.tb, ident, port=port, client_id="x", timeout=3)
