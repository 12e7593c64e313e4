"""Every TLS combination AWS IoT Core and the tunneling service may pick still works: the guard
for the trimmed OpenSSL (make OPENSSL=trimmed), which must not have cut an algorithm iotbox needs.
It runs against whatever binary the build made (IOTBOX), so it checks Debian's OpenSSL too.

The device end is the real binary: `iot-config check --online` makes one mutual-TLS MQTT
connection. Its keys and certificates are made by the binary itself (`iot-provision ca create`,
`iot-provision jitp`, EC P-256 and RSA 2048). The server end is Python's ssl (the host's OpenSSL)
restricted per case to one protocol version, one cipher suite and one key-exchange group, with
server certificates like AWS's: RSA 2048 under an RSA root (Amazon Root CA 1), EC P-256 and P-384
under EC roots (Amazon Root CA 3 and 4).

IOTBOX_EMULATOR (e.g. qemu-arm-static) runs a foreign binary: IOTBOX=build-armhf-trim/iotbox
IOTBOX_EMULATOR=qemu-arm-static python3 -m pytest tests/buildopts/test_tls_algorithms.py"""
import datetime
import ipaddress
import json
import os
import shlex
import subprocess
import sys
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))
IOTBOX = os.path.abspath(os.environ.get('IOTBOX', os.path.join(SOURCE, 'build', 'iotbox')))
EMULATOR = shlex.split(os.environ.get('IOTBOX_EMULATOR', ''))
SERVER = os.path.join(HERE, 'tls_probe_server.py')

TLS13_SUITES = ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256']
GROUPS = ['X25519', 'P-256', 'P-384']
# (server certificate, TLS 1.3 suite, group, device key): every suite, group, server and device key
# at least once, and each suite with each group.
TLS13_CASES = [(['rsa2048', 'p256', 'p384'][(i + j) % 3], suite, group, ['ec', 'rsa'][(i + j) % 2])
               for i, suite in enumerate(TLS13_SUITES) for j, group in enumerate(GROUPS)]
# TLS 1.2: the suites of AWS IoT's security policies (GCM, ChaCha20-Poly1305, CBC with SHA-1 and
# SHA-2, and RSA key exchange), under the kind of server key each needs. In TLS 1.2 the server's
# group list also limits the curve of an EC client certificate, so an EC device key goes with P-256.
TLS12_CASES = [
    ('rsa2048', 'ECDHE-RSA-AES128-GCM-SHA256', 'X25519', 'rsa'),
    ('rsa2048', 'ECDHE-RSA-AES256-GCM-SHA384', 'P-256', 'ec'),
    ('rsa2048', 'ECDHE-RSA-CHACHA20-POLY1305', 'P-384', 'rsa'),
    ('rsa2048', 'ECDHE-RSA-AES128-SHA256', 'P-256', 'ec'),
    ('rsa2048', 'ECDHE-RSA-AES256-SHA', 'X25519', 'rsa'),
    ('rsa2048', 'AES128-GCM-SHA256', 'P-256', 'ec'),
    ('rsa2048', 'AES256-SHA256', 'P-256', 'rsa'),
    ('p256', 'ECDHE-ECDSA-AES128-GCM-SHA256', 'P-256', 'ec'),
    ('p384', 'ECDHE-ECDSA-AES256-GCM-SHA384', 'P-384', 'rsa'),
    ('p256', 'ECDHE-ECDSA-CHACHA20-POLY1305', 'X25519', 'rsa'),
    ('p384', 'ECDHE-ECDSA-AES128-SHA256', 'P-256', 'ec'),
]


def run_iotbox(*args, **kw):
    return subprocess.run(EMULATOR + [IOTBOX, *args], capture_output=True, text=True, timeout=60, **kw)


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject_key, cn, issuer_key, issuer_cn, ca, hash_alg):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(issuer_cn))
         .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName('localhost'),
                                                         x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]),
                            critical=False)
    return b.sign(issuer_key, hash_alg)


def _write(path, data, mode=0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, 'wb') as f:
        f.write(data)


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp('pki')
    servers = {}
    for name, make_key, hash_alg in [('rsa2048', lambda: rsa.generate_private_key(65537, 2048), hashes.SHA256()),
                                     ('p256', lambda: ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()),
                                     ('p384', lambda: ec.generate_private_key(ec.SECP384R1()), hashes.SHA384())]:
        ca_key, key = make_key(), make_key()
        ca = _cert(ca_key, f'test root {name}', ca_key, f'test root {name}', True, hash_alg)
        cert = _cert(key, 'localhost', ca_key, f'test root {name}', False, hash_alg)
        paths = {k: str(d / f'{name}-{k}.pem') for k in ('ca', 'cert', 'key')}
        _write(paths['ca'], ca.public_bytes(serialization.Encoding.PEM))
        _write(paths['cert'], cert.public_bytes(serialization.Encoding.PEM))
        _write(paths['key'], key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()), 0o600)
        servers[name] = paths
    # The device's identities, made by the binary under test: its key generation and signing.
    r = run_iotbox('iot-provision', 'ca', 'create', '--out', str(d / 'device-ca'))
    assert r.returncode == 0, r.stderr
    devices = {}
    for kind in ('ec', 'rsa'):
        out = d / f'device-{kind}'
        r = run_iotbox('iot-provision', 'jitp', '--ca-cert', str(d / 'device-ca' / 'ca.crt'), '--ca-key',
                       str(d / 'device-ca' / 'ca.key'), '--thing-name', f'thing-{kind}', '--key-type', kind,
                       '--out', str(out))
        assert r.returncode == 0, r.stderr
        devices[kind] = {'cert': str(out / f'thing-{kind}-certificate.pem.crt'),
                         'key': str(out / f'thing-{kind}-private.pem.key')}
        cert = x509.load_pem_x509_certificate(open(devices[kind]['cert'], 'rb').read())
        expected = ec.EllipticCurvePublicKey if kind == 'ec' else rsa.RSAPublicKey
        assert isinstance(cert.public_key(), expected)
        if kind == 'rsa':
            assert cert.public_key().key_size == 2048
        else:
            assert cert.public_key().curve.name == 'secp256r1'
    config = d / 'iotbox.conf'
    config.write_text('{}\n')
    return {'dir': d, 'servers': servers, 'devices': devices, 'device_ca': str(d / 'device-ca' / 'ca.crt'),
            'config': str(config)}


def handshake(pki, server, device, versions, conf_lines, name):
    """Runs one server and one `iot-config check --online`; returns (server result, client output)."""
    d = pki['dir']
    conf = d / f'{name}.cnf'
    conf.write_text('openssl_conf = conf\n[conf]\nssl_conf = ssl\n[ssl]\nsystem_default = sd\n[sd]\n' +
                    ''.join(f'{line}\n' for line in conf_lines))
    result = d / f'{name}.json'
    s = pki['servers'][server]
    env = dict(os.environ, OPENSSL_CONF=str(conf))
    proc = subprocess.Popen([sys.executable, SERVER, s['cert'], s['key'], pki['device_ca'], str(result), *versions],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        port = proc.stdout.readline().strip()
        assert port, 'the probe server did not start'
        dev = pki['devices'][device]
        env = dict(os.environ, HOME=str(d))
        env.pop('IOTBOX_CONFIG', None)
        client = run_iotbox('iot-config', 'check', '--online', '--config-file', pki['config'], '--endpoint',
                            '127.0.0.1', '--port', port, '--cert', dev['cert'], '--key', dev['key'], '--root-ca',
                            s['ca'], '--thing-name', f'thing-{device}', '--timeout', '20', env=env)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.time() + 5
    while not result.exists() and time.time() < deadline:
        time.sleep(0.05)
    return json.loads(result.read_text()), client.stdout + client.stderr


@pytest.mark.parametrize('server,suite,group,device', TLS13_CASES,
                         ids=[f'{c[1]}-{c[2]}-{c[0]}-device_{c[3]}' for c in TLS13_CASES])
def test_tls13(pki, server, suite, group, device):
    got, out = handshake(pki, server, device, ['TLSv1_3', 'TLSv1_3'], [f'Ciphersuites = {suite}', f'Groups = {group}'],
                         f'tls13-{suite}-{group}-{server}-{device}')
    assert got.get('version') == 'TLSv1.3' and got.get('cipher') == suite, (got, out)
    assert got.get('client_cn') == f'thing-{device}', (got, out)
    assert 'connection: connected to' in out, out


@pytest.mark.parametrize('server,cipher,group,device', TLS12_CASES,
                         ids=[f'{c[1]}-{c[2]}-{c[0]}-device_{c[3]}' for c in TLS12_CASES])
def test_tls12(pki, server, cipher, group, device):
    got, out = handshake(pki, server, device, ['TLSv1_2', 'TLSv1_2', cipher], [f'Groups = {group}'],
                         f'tls12-{cipher}-{group}-{server}-{device}')
    assert got.get('version') == 'TLSv1.2' and got.get('cipher') == cipher, (got, out)
    assert got.get('client_cn') == f'thing-{device}', (got, out)
    assert 'connection: connected to' in out, out


def test_tls11_is_refused(pki):
    got, out = handshake(pki, 'rsa2048', 'ec', ['TLSv1', 'TLSv1_1', 'DEFAULT@SECLEVEL=0'], [], 'tls11')
    assert 'version' not in got, got
    assert 'connection: connected to' not in out, out
