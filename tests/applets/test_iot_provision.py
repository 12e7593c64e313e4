"""iot-provision against the real broker and the fakecloud's provisioning API: by claim, by CSR
file, by a key made on the device, the Device Client's trusted-user command line, rejections,
timeouts, expired claims, --json, idempotence, rotation, JITP, and SIGKILL at random moments."""
import json
import os
import random
import signal
import stat
import subprocess
import time

import pytest

from conftest import run

TEMPLATE = 'FleetTemplate'


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def create_template(cloud, **spec):
    """create_template through load_templates (Cloud.cmd's own first parameter is called name)."""
    path = cloud.broker.path(f'template-{spec["name"]}.json')
    with open(path, 'w') as f:
        json.dump([spec], f)
    cloud.cmd('load_templates', path=path)


@pytest.fixture
def fleet(cloud):
    create_template(cloud, name=TEMPLATE, parameters=['ThingName'], thing_name='ThingName',
                    device_configuration={'Foo': 'Bar', 'Where': {'Ref': 'ThingName'}}, policy='thing-rotation')
    return cloud


@pytest.fixture
def env(workdir):
    e = dict(os.environ)
    e['HOME'] = workdir  # the Device Client's ~/.aws-iot-device-client defaults land here
    e.pop('IOTBOX_CONFIG', None)
    return e


def base_args(iotbox, broker, claim, thing='dev-1', runtime=None):
    args = [iotbox, 'iot-provision', '--endpoint', 'localhost', '--port', str(broker.port),
            '--cert', claim['cert'], '--key', claim['key'], '--root-ca', broker.ca,
            '--fleet-provisioning-template-name', TEMPLATE,
            '--fleet-provisioning-template-parameters', json.dumps({'ThingName': thing})]
    if thing:
        args += ['--thing-name', thing]
    if runtime:
        args += ['--runtime-config-file', runtime]
    return args


def runtime_path(workdir):
    return os.path.join(workdir, '.aws-iot-device-client', 'aws-iot-device-client-runtime.conf')


def check_provisioned(workdir, thing, cloud, runtime=None, key_in_dir=True):
    """The runtime config is valid JSON in the Device Client's shape, and every file has its mode."""
    runtime = runtime or runtime_path(workdir)
    with open(runtime) as f:
        rc = json.load(f)['runtime-config']
    assert rc['completed-fp'] is True
    assert rc['thing-name'] == thing
    assert mode(runtime) == 0o640
    assert mode(rc['cert']) == 0o644
    assert mode(rc['key']) == 0o600
    assert mode(os.path.dirname(rc['cert'])) == 0o700
    cert_id = os.path.basename(rc['cert']).split('-certificate.pem.crt')[0]
    assert rc['cert'].endswith(f'/{cert_id}-certificate.pem.crt')
    if key_in_dir:
        assert rc['key'] == os.path.join(os.path.dirname(rc['cert']), f'{cert_id}-private.pem.key')
    certs = {c['certificateId']: c for c in cloud.cmd('certificates', thing=thing)['certificates']}
    assert certs[cert_id]['status'] == 'ACTIVE'
    return rc, cert_id


def test_by_claim_with_the_device_client_flags_and_json(iotbox, broker, fleet, workdir, env):
    claim = fleet.cmd('claim_certificate', template=TEMPLATE)
    r = run(base_args(iotbox, broker, claim) + ['--json'], env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    rc, cert_id = check_provisioned(workdir, 'dev-1', fleet)
    assert out['provisioned'] is True and out['thing-name'] == 'dev-1' and out['certificate-id'] == cert_id
    assert out['cert'] == rc['cert'] and out['key'] == rc['key']
    assert out['device-config'] == {'Foo': 'Bar', 'Where': 'dev-1'} == rc['device-config']
    assert rc['cert'].startswith(os.path.join(workdir, '.aws-iot-device-client', 'keys') + '/')
    for step in ('connecting to', 'CreateKeysAndCertificate: new certificate', 'RegisterThing',
                 'connected as dev-1 with the new certificate', 'provisioned as dev-1'):
        assert step in r.stderr, r.stderr
    assert 'PRIVATE KEY' not in r.stderr + r.stdout

    # Idempotent: done is done, unless --force.
    again = run(base_args(iotbox, broker, claim) + ['--json'], env=env)
    assert again.returncode == 0, again.stderr
    assert 'already provisioned as dev-1' in again.stderr
    assert json.loads(again.stdout)['provisioned'] is False
    forced = run(base_args(iotbox, broker, claim) + ['--json', '--force'], env=env)
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)['certificate-id'] != cert_id
    check_provisioned(workdir, 'dev-1', fleet)


def test_trusted_user_invocation_then_iot_job_run_uses_the_new_identity(iotbox, broker, fleet, workdir, env):
    """The seeds' command line verbatim (other features disabled), with a 5-minute temporary claim."""
    claim = fleet.cmd('claim_certificate', template=TEMPLATE, temporary=True)
    args = [iotbox, 'iot-provision', '--enable-fleet-provisioning', 'true', '--endpoint', 'localhost',
            '--port', str(broker.port), '--cert', claim['cert'], '--key', claim['key'], '--root-ca', broker.ca,
            '--thing-name', 'installer-1', '--fleet-provisioning-template-name', TEMPLATE,
            '--fleet-provisioning-template-parameters', '{"ThingName": "installer-1"}',
            '--enable-jobs', 'false', '--enable-tunneling', 'false', '--enable-device-defender', 'false']
    r = run(args, env=env)
    assert r.returncode == 0, r.stderr
    check_provisioned(workdir, 'installer-1', fleet)
    # The runtime file now gives cert, key and thing-name to every applet reading the defaults.
    show = run([iotbox, 'iot-job-run', '--next', '--endpoint', 'localhost', '--port', str(broker.port),
                '--root-ca', broker.ca], env=env)
    assert show.returncode == 0, show.stderr
    assert 'no pending job' in show.stderr


def test_by_csr_file_and_device_key(iotbox, broker, fleet, workdir, env):
    key = os.path.join(workdir, 'device.key')
    csr = os.path.join(workdir, 'device.csr')
    subprocess.run(['openssl', 'req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
                    '-keyout', key, '-out', csr, '-subj', '/CN=csr-dev'], check=True, capture_output=True)
    os.chmod(key, 0o600)
    os.chmod(csr, 0o600)
    claim = fleet.cmd('claim_certificate', template=TEMPLATE)
    r = run(base_args(iotbox, broker, claim, 'csr-dev') + ['--csr-file', csr, '--device-key', key, '--json'], env=env)
    assert r.returncode == 0, r.stderr
    assert 'CreateCertificateFromCsr' in r.stderr
    rc, _ = check_provisioned(workdir, 'csr-dev', fleet, key_in_dir=False)
    assert rc['key'] == key


@pytest.mark.parametrize('key_type,marker', [('ec', 'id-ecPublicKey'), ('rsa', 'rsaEncryption')])
def test_key_made_on_the_device(iotbox, broker, fleet, workdir, env, key_type, marker):
    claim = fleet.cmd('claim_certificate', template=TEMPLATE)
    keys = os.path.join(workdir, 'state', 'keys')
    r = run(base_args(iotbox, broker, claim, 'ondev') + ['csr', '--key-type', key_type, '--dir', keys, '--json'],
            env=env)
    assert r.returncode == 0, r.stderr
    assert 'generated a' in r.stderr and 'CreateCertificateFromCsr' in r.stderr
    rc, cert_id = check_provisioned(workdir, 'ondev', fleet)
    assert os.path.dirname(rc['key']) == keys
    text = subprocess.run(['openssl', 'x509', '-in', rc['cert'], '-noout', '-text'], capture_output=True,
                          text=True).stdout
    assert marker in text
    kinds = {c['certificateId']: c['kind'] for c in fleet.cmd('certificates')['certificates']}
    assert kinds[cert_id] == 'csr'


def test_rejections_name_the_error(iotbox, broker, fleet, workdir, env):
    claim = fleet.cmd('claim_certificate')  # any template
    fleet.cmd('provisioning_fail_next', api='create', status_code=429, error_code='Throttling',
              error_message='Rate exceeded')
    r = run(base_args(iotbox, broker, claim), env=env)
    assert r.returncode == 1
    assert 'CreateKeysAndCertificate rejected: Throttling (429): Rate exceeded' in r.stderr, r.stderr
    assert not os.path.exists(runtime_path(workdir))

    # A required parameter missing: RegisterThing's own rejection.
    args = base_args(iotbox, broker, claim)
    args[args.index('--fleet-provisioning-template-parameters') + 1] = '{"Other": "x"}'
    r = run(args, env=env)
    assert r.returncode == 1
    assert 'RegisterThing rejected: InvalidParameters (400)' in r.stderr, r.stderr
    assert not os.path.exists(runtime_path(workdir))

    # The pre-provisioning hook refuses a serial number.
    create_template(fleet, name='Hooked', parameters=['ThingName', 'Serial'], thing_name='ThingName',
                    hook={'deny': {'Serial': ['BAD-1']}})
    args = base_args(iotbox, broker, claim)
    args[args.index('--fleet-provisioning-template-name') + 1] = 'Hooked'
    args[args.index('--fleet-provisioning-template-parameters') + 1] = '{"ThingName": "dev-1", "Serial": "BAD-1"}'
    r = run(args, env=env)
    assert r.returncode == 1
    assert 'RegisterThing rejected: AccessDenied (403)' in r.stderr, r.stderr

    # An unknown template.
    args[args.index('--fleet-provisioning-template-name') + 1] = 'NoSuchTemplate'
    r = run(args, env=env)
    assert r.returncode == 1
    assert 'ResourceNotFound (404)' in r.stderr, r.stderr


def test_timeout_names_the_step(iotbox, broker, fleet, workdir, env):
    claim = fleet.cmd('claim_certificate', template=TEMPLATE)
    fleet.cmd('provisioning_drop_next', api='provision')
    # The timeout is every step's: CreateKeysAndCertificate must still be answered within it (the
    # fakecloud makes an RSA key for it; 1 s was not always enough on a loaded machine).
    t0 = time.monotonic()
    r = run(base_args(iotbox, broker, claim) + ['--timeout', '5'], env=env)
    assert r.returncode == 1
    assert 'RegisterThing: no answer within 5 s' in r.stderr, r.stderr
    assert time.monotonic() - t0 >= 5
    assert not os.path.exists(runtime_path(workdir))


def test_expired_claim_is_refused_before_connecting(iotbox, broker, fleet, workdir, env):
    claim = fleet.cmd('claim_certificate', template=TEMPLATE, temporary=True, validity_seconds=1)
    time.sleep(2)
    r = run(base_args(iotbox, broker, claim), env=env)
    assert r.returncode == 1
    assert 'expired at' in r.stderr and 'connecting to' not in r.stderr, r.stderr


def test_usage_errors_exit_2(iotbox, broker, fleet, workdir, env):
    claim = fleet.cmd('claim_certificate', template=TEMPLATE)
    args = base_args(iotbox, broker, claim)
    args[args.index('--fleet-provisioning-template-parameters') + 1] = '{"ThingName": "x",}'
    r = run(args, env=env)
    assert r.returncode == 2
    assert 'line 1, column 19' in r.stderr, r.stderr
    r = run([a for a in base_args(iotbox, broker, claim) if a != TEMPLATE and a != '--fleet-provisioning-template-name'],
            env=env)
    assert r.returncode == 2 and 'template' in r.stderr, r.stderr
    r = run(base_args(iotbox, broker, claim) + ['--device-key', claim['key']], env=env)
    assert r.returncode == 2 and '--csr-file' in r.stderr, r.stderr


def test_sigkill_at_random_moments_leaves_old_or_new_state(iotbox, broker, fleet, workdir, env):
    claim = fleet.cmd('claim_certificate', template=TEMPLATE)
    runtime = runtime_path(workdir)
    rng = random.Random(1234)
    # How long a whole run takes here, to spread the kills over it.
    t0 = time.monotonic()
    r = run(base_args(iotbox, broker, claim, 'crash-1'), env=env)
    assert r.returncode == 0, r.stderr
    span = time.monotonic() - t0
    for i in range(20):
        before = open(runtime).read()
        p = subprocess.Popen(base_args(iotbox, broker, claim, 'crash-1') + ['--force'], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0, span * 1.1))
        p.send_signal(signal.SIGKILL)
        p.wait()
        after = open(runtime).read()
        rc = json.loads(after)['runtime-config']  # never torn: always valid JSON
        assert rc['completed-fp'] is True
        assert mode(runtime) == 0o640
        assert mode(rc['cert']) == 0o644 and mode(rc['key']) == 0o600
        keys = os.path.dirname(rc['cert'])
        for name in os.listdir(keys):
            path = os.path.join(keys, name)
            assert mode(path) in (0o600, 0o644), (name, oct(mode(path)))
            if name.endswith('-private.pem.key') or (name.startswith('.') and '-private.pem.key' in name):
                assert mode(path) == 0o600, name
        if after != before:  # the switch happened: the new identity was proved first
            cert_id = os.path.basename(rc['cert']).split('-')[0]
            states = {c['certificateId']: c['status'] for c in fleet.cmd('certificates')['certificates']}
            assert states[cert_id] == 'ACTIVE', i
    # The next run completes from whatever was left.
    r = run(base_args(iotbox, broker, claim, 'crash-1') + ['--force'], env=env)
    assert r.returncode == 0, r.stderr
    check_provisioned(workdir, 'crash-1', fleet)
    assert not [n for n in os.listdir(os.path.dirname(runtime)) if '.tmp-' in n]


def test_rotate(iotbox, broker, fleet, workdir, env):
    claim = fleet.cmd('claim_certificate', template=TEMPLATE)
    r = run(base_args(iotbox, broker, claim, 'rot-1') + ['csr'], env=env)
    assert r.returncode == 0, r.stderr
    rc_before, old_id = check_provisioned(workdir, 'rot-1', fleet)
    rot = run([iotbox, 'iot-provision', 'rotate', '--endpoint', 'localhost', '--port', str(broker.port),
               '--root-ca', broker.ca, '--fleet-provisioning-template-name', TEMPLATE,
               '--fleet-provisioning-template-parameters', '{"ThingName": "rot-1"}', '--json'], env=env)
    assert rot.returncode == 0, rot.stderr
    out = json.loads(rot.stdout)
    assert out['previous-certificate-id'] == old_id and out['certificate-id'] != old_id
    rc, new_id = check_provisioned(workdir, 'rot-1', fleet)
    assert new_id == out['certificate-id']
    assert os.path.exists(rc_before['cert']) and os.path.exists(rc_before['key']), 'old files kept'

    # A rotation that fails halfway keeps the current identity.
    fleet.cmd('provisioning_fail_next', api='provision', status_code=500, error_code='InternalFailure')
    bad = run([iotbox, 'iot-provision', 'rotate', '--endpoint', 'localhost', '--port', str(broker.port),
               '--root-ca', broker.ca, '--fleet-provisioning-template-name', TEMPLATE,
               '--fleet-provisioning-template-parameters', '{"ThingName": "rot-1"}'], env=env)
    assert bad.returncode == 1
    assert 'rotation failed, still using' in bad.stderr and 'InternalFailure (500)' in bad.stderr, bad.stderr
    rc_after, same_id = check_provisioned(workdir, 'rot-1', fleet)
    assert same_id == new_id


def test_jitp_factory_tools_and_first_connection_drop(iotbox, broker, cloud, workdir, env):
    ca_dir = os.path.join(workdir, 'ca')
    r = run([iotbox, 'iot-provision', 'ca', 'create', '--out', ca_dir, '--cn', 'Factory CA', '--json'], env=env)
    assert r.returncode == 0, r.stderr
    ca = json.loads(r.stdout)
    assert mode(ca['key']) == 0o600 and mode(ca['cert']) == 0o644 and mode(ca_dir) == 0o700
    again = run([iotbox, 'iot-provision', 'ca', 'create', '--out', ca_dir], env=env)
    assert again.returncode == 1 and 'refusing to overwrite' in again.stderr

    dev_dir = os.path.join(workdir, 'dev')
    r = run([iotbox, 'iot-provision', 'jitp', '--ca-cert', ca['cert'], '--ca-key', ca['key'],
             '--thing-name', 'jitp-dev-1', '--out', dev_dir, '--json'], env=env)
    assert r.returncode == 0, r.stderr
    dev = json.loads(r.stdout)
    assert mode(dev['key']) == 0o600 and mode(dev['chain']) == 0o644
    with open(dev['chain']) as f, open(dev['cert']) as c, open(ca['cert']) as a:
        assert f.read() == c.read() + a.read()
    subj = subprocess.run(['openssl', 'x509', '-in', dev['cert'], '-noout', '-subject'], capture_output=True,
                          text=True).stdout
    assert 'CN = jitp-dev-1' in subj

    port = cloud.cmd('register_ca', ca_cert=ca['cert'])['jitp_port']
    r = run([iotbox, 'iot-provision', 'jitp-connect', '--endpoint', 'localhost', '--port', str(port),
             '--root-ca', broker.ca, '--cert', dev['chain'], '--key', dev['key'], '--thing-name', 'jitp-dev-1',
             '--timeout', '30', '--json'], env=env)
    assert r.returncode == 0, r.stderr
    assert 'registration in progress' in r.stderr
    assert json.loads(r.stdout)['attempts'] >= 2
    things = [t for t in cloud.cmd('provisioning_things')['things'] if t['thingName'] == 'jitp-dev-1']
    assert things and things[0]['provisionedBy'] == 'jitp'
