#!/usr/bin/python3
"""Testbed: a real mosquitto broker on 127.0.0.1 with TLS and client certificates.

Each testbed lives in one directory and has its own throwaway CA, made when the
testbed is brought up. The broker runs detached (its own session) so that a
test process, a shell script or `make check` can start it and another one can
stop it; every pid is recorded in DIR/testbed.json so that `reap` can end them.

    testbed.py up DIR                  make CA and certs, start the broker, print the port
    testbed.py thing DIR NAME [--days N] [--expired] [--untrusted]
    testbed.py stop|start|down|status DIR
    testbed.py restart DIR [--down SECONDS]
    testbed.py reap ROOT               kill every broker/fakecloud recorded under ROOT

As a module: Testbed(dir).up() / .stop() / .start() / .restart(down=0) / .down()
/ .thing(name, days=..., expired=..., untrusted=...) / .status() / .info.

Dynamic security, for the fakecloud's provisioning API: .sign(public_key, cn,
not_before, not_after) issues a client certificate from the testbed CA;
.update_security(acl_extra=..., revoked=...) rewrites the ACL file (the fixed
rules above plus acl_extra) and the CRL (DIR/crl.pem, which both listeners check)
and makes the running broker reload both (SIGHUP; mosquitto 2.0 rereads acl_file
and crlfile then). It returns once the broker uses the new files: each reload
flips whether a probe certificate (DIR/probe.crt) is in the CRL, and a TLS
handshake with it tells which generation the broker has loaded.
"""

import argparse
import datetime
import ipaddress
import json
import os
import pwd
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MOSQUITTO = os.environ.get("IOT_MOSQUITTO", "/usr/sbin/mosquitto")
HOST = "localhost"
BIND = "127.0.0.1"
START_TIMEOUT = 5.0
STOP_TIMEOUT = 5.0
CLOUD_USER = "fakecloud"
PROBE_USER = "testbed.probe"  # not a valid thing name ('.'), so no thing's topics
RELOAD_TIMEOUT = 5.0
_security_lock = threading.Lock()


class TestbedError(Exception):
    pass


# ---------------------------------------------------------------- files


def _write_private(path, data):
    """Write a private key: mode 0600 from the first byte, then rename into place."""
    tmp = path + ".tmp"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def _write_public(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def _tail(path, lines=20):
    try:
        with open(path, "r", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no %s)\n" % path


# ---------------------------------------------------------------- certificates


def _new_key():
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _validity(days=30, expired=False):
    now = datetime.datetime.utcnow()
    if expired:
        return now - datetime.timedelta(days=10), now - datetime.timedelta(days=1)
    # a day of slack before now: clocks of test machines are not always in step
    return now - datetime.timedelta(days=1), now + datetime.timedelta(days=days)


def _make_ca(cn):
    key = _new_key()
    not_before, not_after = _validity(days=3650)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _issue(ca_key, ca_cert, cn, *, server_names=None, server_ips=None, client=False,
           days=30, expired=False):
    key = _new_key()
    not_before, not_after = _validity(days=days, expired=expired)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
    )
    if server_names or server_ips:
        sans = [x509.DNSName(n) for n in (server_names or [])]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in (server_ips or [])]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _crl_pem(ca_key, ca_cert, revoked):
    """A CRL of the CA listing revoked [(serial, reason name)]."""
    now = datetime.datetime.utcnow()
    b = (x509.CertificateRevocationListBuilder()
         .issuer_name(ca_cert.subject)
         .last_update(now - datetime.timedelta(days=1))
         .next_update(now + datetime.timedelta(days=3650)))
    for serial, reason in revoked:
        rb = (x509.RevokedCertificateBuilder().serial_number(int(serial))
              .revocation_date(now - datetime.timedelta(days=1)))
        if reason and reason != "unspecified":
            rb = rb.add_extension(x509.CRLReason(x509.ReasonFlags[reason]), critical=False)
        b = b.add_revoked_certificate(rb.build())
    return b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _load_ca(cert_path, key_path):
    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    return key, cert


# ---------------------------------------------------------------- processes


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((BIND, 0))
        return s.getsockname()[1]


def _proc_state(pid):
    """'R', 'S', 'Z', ... or None when there is no such process."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(")") + 2:].split(" ", 1)[0]


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def alive(pid):
    """True when pid runs (a zombie counts as dead: it holds no port and no file)."""
    if not pid:
        return False
    try:  # reap it if it happens to be our child
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    state = _proc_state(pid)
    return state is not None and state not in ("Z", "X")


def kill_and_wait(pid, timeout=STOP_TIMEOUT, expect=None):
    """SIGTERM pid, then SIGKILL after timeout; return once it is gone.

    expect: a bytes string that must appear in the process' command line, so that
    a recycled pid of an unrelated process is never killed.
    """
    if not alive(pid):
        return False
    if expect is not None and not any(expect in arg for arg in _cmdline(pid)):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + timeout
        time.sleep(0.02)
    return True


# ---------------------------------------------------------------- the testbed


class Testbed:
    def __init__(self, dir):
        self.dir = os.path.abspath(dir)
        self.info = None
        if os.path.exists(self._json):
            self._load()

    # paths
    @property
    def _json(self):
        return os.path.join(self.dir, "testbed.json")

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def wait_log(self, text, timeout=10):
        """True once the broker's log holds `text` (mosquitto writes a line a moment after the
        event), False after `timeout` seconds."""
        deadline = time.time() + timeout
        while True:
            with open(self.path("mosquitto.log"), errors="replace") as f:
                if text in f.read():
                    return True
            if time.time() > deadline:
                return False
            time.sleep(0.05)

    @property
    def port(self):
        return self.info["port"]

    @property
    def mismatch_port(self):
        return self.info["mismatch_port"]

    @property
    def ca(self):
        return self.info["ca"]

    def _load(self):
        with open(self._json) as f:
            self.info = json.load(f)

    def _save(self):
        _write_public(self._json, json.dumps(self.info, indent=2) + "\n")

    # ---- up

    def up(self):
        """Create the directory, the CA and certificates, the config; start the broker."""
        if self.info and alive(self.info.get("pid")):
            raise TestbedError("testbed %s is already up (pid %d)" % (self.dir, self.info["pid"]))
        os.makedirs(self.path("things"), mode=0o700, exist_ok=True)
        os.chmod(self.dir, 0o700)

        ca_key, ca_cert = _make_ca("iotbox testbed CA %d" % os.getpid())
        _write_private(self.path("ca.key"), _key_pem(ca_key))
        _write_public(self.path("ca.crt"), _cert_pem(ca_cert))

        key, cert = _issue(ca_key, ca_cert, HOST, server_names=[HOST], server_ips=[BIND], days=365)
        _write_private(self.path("server.key"), _key_pem(key))
        _write_public(self.path("server.crt"), _cert_pem(cert))

        key, cert = _issue(ca_key, ca_cert, "wrong.example", server_names=["wrong.example"], days=365)
        _write_private(self.path("mismatch.key"), _key_pem(key))
        _write_public(self.path("mismatch.crt"), _cert_pem(cert))

        key, cert = _issue(ca_key, ca_cert, CLOUD_USER, client=True, days=365)
        _write_private(self.path("fakecloud.key"), _key_pem(key))
        _write_public(self.path("fakecloud.crt"), _cert_pem(cert))

        key, cert = _issue(ca_key, ca_cert, PROBE_USER, client=True, days=365)
        _write_private(self.path("probe.key"), _key_pem(key))
        _write_public(self.path("probe.crt"), _cert_pem(cert))
        for name in ("acl.extra", "revoked.json"):
            try:
                os.unlink(self.path(name))
            except FileNotFoundError:
                pass
        _write_public(self.path("crl.pem"), _crl_pem(ca_key, ca_cert, []))

        port = _free_port()
        mismatch_port = _free_port()
        while mismatch_port == port:
            mismatch_port = _free_port()

        self._write_acl()
        self._write_conf(port, mismatch_port)
        self.info = {
            "dir": self.dir,
            "host": HOST,
            "port": port,
            "mismatch_port": mismatch_port,
            "ca": self.path("ca.crt"),
            "ca_key": self.path("ca.key"),
            "server_cert": self.path("server.crt"),
            "fakecloud_cert": self.path("fakecloud.crt"),
            "fakecloud_key": self.path("fakecloud.key"),
            "pid": 0,
        }
        self._save()
        self.start()
        return self

    def _write_acl(self, extra=""):
        # Pattern lines apply to every user; %u is the username, which is the
        # certificate's CN because of use_identity_as_username.
        text = (
            "# each thing may use only its own topics\n"
            "pattern readwrite $aws/things/%u/#\n"
            "pattern readwrite things/%u/#\n"
            "\n"
            "# the emulated cloud sees everything ('#' does not match '$' topics)\n"
            "user " + CLOUD_USER + "\n"
            "topic readwrite $aws/#\n"
            "topic readwrite #\n"
        )
        if extra:
            # each section of it starts with its own "user" line
            text += "\n# added by update_security (the fakecloud)\n" + extra
            if not extra.endswith("\n"):
                text += "\n"
        _write_public(self.path("acl"), text)

    def _listener(self, port, cert, key):
        return (
            "listener %d %s\n"
            "cafile %s\n"
            "certfile %s\n"
            "keyfile %s\n"
            "require_certificate true\n"
            "use_identity_as_username true\n"
            "tls_version tlsv1.2\n"
            "crlfile %s\n"
        ) % (port, BIND, self.path("ca.crt"), cert, key, self.path("crl.pem"))

    def _write_conf(self, port, mismatch_port):
        # TLS settings are per listener in mosquitto whatever per_listener_settings
        # says; that option only decides whether acl_file/allow_anonymous are global.
        conf = (
            "# generated by tests/testbed/testbed.py\n"
            "per_listener_settings false\n"
            "persistence false\n"
            "set_tcp_nodelay true\n"
            "user %s\n"
            "allow_anonymous false\n"
            "acl_file %s\n"
            "log_dest file %s\n"
            "log_type all\n"
            "connection_messages true\n"
            "log_timestamp true\n"
            "\n# main listener: server certificate for localhost / 127.0.0.1\n%s"
            "\n# mismatch listener: same CA, server certificate for wrong.example\n%s"
        ) % (
            # started as root, mosquitto would switch to user "mosquitto", which
            # cannot read this private directory: stay whoever we are
            pwd.getpwuid(os.geteuid()).pw_name,
            self.path("acl"), self.path("mosquitto.log"),
            self._listener(port, self.path("server.crt"), self.path("server.key")),
            self._listener(mismatch_port, self.path("mismatch.crt"), self.path("mismatch.key")),
        )
        _write_public(self.path("mosquitto.conf"), conf)

    # ---- start / stop

    def _require_info(self):
        if self.info is None:
            if not os.path.exists(self._json):
                raise TestbedError("%s: no testbed here (run `testbed.py up %s` first)"
                                   % (self.dir, self.dir))
            self._load()

    def running(self):
        self._require_info()
        return alive(self.info.get("pid"))

    def start(self):
        """Start the broker on the recorded ports; return once it accepts TLS."""
        self._require_info()
        if self.running():
            return self
        conf = self.path("mosquitto.conf")
        out = self.path("mosquitto.out")
        # The shell starts mosquitto in the background and exits, so the broker is
        # nobody's child: it outlives the caller and never becomes our zombie.
        sh = subprocess.run(
            ["/bin/sh", "-c", 'exec </dev/null; "$1" -c "$2" >>"$3" 2>&1 & echo $!',
             "sh", MOSQUITTO, conf, out],
            stdout=subprocess.PIPE, start_new_session=True, check=True)
        pid = int(sh.stdout.decode().strip())
        self.info["pid"] = pid
        self._save()
        self._wait_ready(pid)
        return self

    def _wait_ready(self, pid):
        ctx = self.client_context(self.info["fakecloud_cert"], self.info["fakecloud_key"])
        deadline = time.monotonic() + START_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            if not alive(pid):
                raise TestbedError("mosquitto exited at start (see %s):\n%s\n%s" % (
                    self.path("mosquitto.log"), _tail(self.path("mosquitto.log")),
                    _tail(self.path("mosquitto.out"))))
            try:
                with socket.create_connection((BIND, self.port), timeout=1) as raw:
                    with ctx.wrap_socket(raw, server_hostname=HOST):
                        return
            except (OSError, ssl.SSLError) as e:
                last = e
            time.sleep(0.05)
        kill_and_wait(pid)
        raise TestbedError("mosquitto did not accept TLS on port %d within %.0f s (%s); log:\n%s"
                           % (self.port, START_TIMEOUT, last, _tail(self.path("mosquitto.log"))))

    def stop(self):
        """Kill the broker and return once it is dead (its ports are then free)."""
        self._require_info()
        pid = self.info.get("pid")
        if pid:
            kill_and_wait(pid, expect=self.path("mosquitto.conf").encode())
        self.info["pid"] = 0
        self._save()
        return self

    def restart(self, down=0.0):
        self.stop()
        if down > 0:
            time.sleep(down)
        return self.start()

    def down(self):
        """Stop the broker and a fakecloud recorded here; leave the files."""
        if self.info is None and not os.path.exists(self._json):
            return self
        self.stop()
        _kill_pidfile(self.path("fakecloud.pid"))
        return self

    def status(self):
        self._require_info()
        return {"dir": self.dir, "running": self.running(), "pid": self.info.get("pid") or 0,
                "port": self.port, "mismatch_port": self.mismatch_port}

    # ---- identities

    def thing(self, name, days=30, expired=False, untrusted=False):
        """Issue things/NAME.crt and NAME.key (CN=NAME); return {"cert","key","ca"}."""
        self._require_info()
        if not name or "/" in name or name in (".", "..") or any(c in name for c in "+#\0"):
            raise TestbedError("bad thing name %r" % name)
        if untrusted:
            ca_key, ca_cert = self._untrusted_ca()
        else:
            ca_key, ca_cert = _load_ca(self.info["ca"], self.info["ca_key"])
        key, cert = _issue(ca_key, ca_cert, name, client=True, days=days, expired=expired)
        os.makedirs(self.path("things"), mode=0o700, exist_ok=True)
        key_path = self.path("things", name + ".key")
        cert_path = self.path("things", name + ".crt")
        _write_private(key_path, _key_pem(key))
        _write_public(cert_path, _cert_pem(cert))
        return {"cert": cert_path, "key": key_path, "ca": self.info["ca"]}

    def sign(self, public_key, cn, not_before, not_after, extra_names=()):
        """A client certificate for public_key from the testbed CA (subject CN=cn
        plus extra_names, x509.NameAttribute list); return the x509.Certificate."""
        self._require_info()
        ca_key, ca_cert = _load_ca(self.info["ca"], self.info["ca_key"])
        subject = x509.Name(list(extra_names) + [x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )

    def update_security(self, acl_extra=None, revoked=None, timeout=RELOAD_TIMEOUT):
        """Rewrite the ACL (fixed rules + acl_extra text) and the CRL (revoked:
        [(serial, reason)] with reason an x509.ReasonFlags name, e.g. "certificate_hold");
        None keeps the current one. Reload a running broker and wait until it uses them."""
        self._require_info()
        if not os.path.exists(self.path("probe.crt")):
            raise TestbedError("%s: testbed made without a CRL; bring it up again" % self.dir)
        with _security_lock:
            if acl_extra is None:
                acl_extra = _read(self.path("acl.extra"))
            else:
                _write_public(self.path("acl.extra"), acl_extra)
            if revoked is None:
                revoked = [tuple(r) for r in json.loads(_read(self.path("revoked.json")) or "[]")]
            else:
                revoked = [(int(s), str(r)) for s, r in revoked]
                _write_public(self.path("revoked.json"), json.dumps(revoked))
            ca_key, ca_cert = _load_ca(self.info["ca"], self.info["ca_key"])
            probe_serial = self._probe_serial()
            # the probe is revoked in every other generation; flip it
            probe_now = self._probe_revoked_in_file(probe_serial)
            entries = list(revoked) + ([] if probe_now else [(probe_serial, "unspecified")])
            self._write_acl(acl_extra)
            _write_public(self.path("crl.pem"), _crl_pem(ca_key, ca_cert, entries))
            self._load()
            pid = self.info.get("pid")
            if not alive(pid):
                return self
            os.kill(pid, signal.SIGHUP)
            self._wait_probe(not probe_now, timeout)
        return self

    def _probe_serial(self):
        with open(self.path("probe.crt"), "rb") as f:
            return x509.load_pem_x509_certificate(f.read()).serial_number

    def _probe_revoked_in_file(self, serial):
        with open(self.path("crl.pem"), "rb") as f:
            crl = x509.load_pem_x509_crl(f.read())
        return crl.get_revoked_certificate_by_serial_number(serial) is not None

    def _wait_probe(self, revoked, timeout):
        ctx = self.client_context(self.path("probe.crt"), self.path("probe.key"))
        # TLS 1.2: the client's handshake ends only after the broker has checked
        # the client certificate (with 1.3 it ends before)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((BIND, self.port), timeout=1) as raw:
                    with ctx.wrap_socket(raw, server_hostname=HOST):
                        seen = False
            except ConnectionRefusedError:
                seen = None  # not listening (yet)
            except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
                # refused: an alert, or (after a reload) a bare close
                seen = True
            except OSError:
                seen = None
            if seen is revoked:
                return
            if time.monotonic() > deadline:
                raise TestbedError("the broker did not reload its ACL and CRL within %.0f s" % timeout)
            time.sleep(0.01)

    def _untrusted_ca(self):
        cert_path, key_path = self.path("untrusted-ca.crt"), self.path("untrusted-ca.key")
        if os.path.exists(cert_path) and os.path.exists(key_path):
            return _load_ca(cert_path, key_path)
        key, cert = _make_ca("iotbox untrusted CA")
        _write_private(key_path, _key_pem(key))
        _write_public(cert_path, _cert_pem(cert))
        return key, cert

    # ---- helpers for Python tests

    def client_context(self, cert=None, key=None, check_hostname=True):
        """An ssl.SSLContext that trusts the testbed CA and presents cert/key if given."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_verify_locations(self.info["ca"])
        ctx.check_hostname = check_hostname
        if cert:
            ctx.load_cert_chain(cert, key)
        return ctx


def _kill_pidfile(path):
    try:
        with open(path) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return False
    return kill_and_wait(pid, expect=b"fakecloud")


def reap(root):
    """Kill every broker and fakecloud recorded under root; return their pids."""
    killed = []
    for dirpath, _dirs, files in os.walk(os.path.abspath(root)):
        if "fakecloud.pid" in files:
            path = os.path.join(dirpath, "fakecloud.pid")
            try:
                with open(path) as f:
                    pid = int(f.read().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if kill_and_wait(pid, expect=b"fakecloud"):
                killed.append(pid)
        if "testbed.json" in files:
            try:
                with open(os.path.join(dirpath, "testbed.json")) as f:
                    pid = int(json.load(f).get("pid") or 0)
            except (OSError, ValueError):
                pid = 0
            conf = os.path.join(dirpath, "mosquitto.conf").encode()
            if kill_and_wait(pid, expect=conf):
                killed.append(pid)
    return killed


# ---------------------------------------------------------------- command line


def main(argv=None):
    p = argparse.ArgumentParser(prog="testbed.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("up", "stop", "start", "down", "status"):
        sub.add_parser(name).add_argument("dir")
    r = sub.add_parser("restart")
    r.add_argument("dir")
    r.add_argument("--down", type=float, default=0.0, metavar="SECONDS")
    t = sub.add_parser("thing")
    t.add_argument("dir")
    t.add_argument("name")
    t.add_argument("--days", type=int, default=30)
    t.add_argument("--expired", action="store_true")
    t.add_argument("--untrusted", action="store_true")
    sub.add_parser("reap").add_argument("root")
    a = p.parse_args(argv)

    try:
        if a.cmd == "reap":
            killed = reap(a.root)
            print(json.dumps({"killed": killed}))
            return 0
        tb = Testbed(a.dir)
        if a.cmd == "up":
            tb.up()
            print(tb.port)
        elif a.cmd == "thing":
            print(json.dumps(tb.thing(a.name, days=a.days, expired=a.expired, untrusted=a.untrusted)))
        elif a.cmd == "stop":
            tb.stop()
        elif a.cmd == "start":
            tb.start()
            print(tb.port)
        elif a.cmd == "restart":
            tb.restart(a.down)
            print(tb.port)
        elif a.cmd == "down":
            tb.down()
        elif a.cmd == "status":
            st = tb.status()
            print(json.dumps(st))
            return 0 if st["running"] else 3
    except (TestbedError, OSError, subprocess.CalledProcessError) as e:
        print("testbed.py %s: %s" % (a.cmd, e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
