"""iot-config against the real binary: init (from flags, and answering its prompts in a tmux
session), show (precedence, sources, secrets), check (certificates, keys, modes, a real connection
to the TLS test broker) and convert (Device Client configs, its runtime file and its template)."""
import json
import os
import re
import shutil
import stat
import subprocess
import time

from conftest import SOURCE, device_config, run

TEMPLATE = os.path.join(SOURCE, 'tests', 'unit', 'data', 'config', 'config-template.json')


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def config(iotbox, *args, env=None, **kw):
    """iot-config with standard input not a terminal (as from a script)."""
    return run([iotbox, 'iot-config', *args], stdin=subprocess.DEVNULL, env=env, **kw)


def init_flags(broker, workdir, thing, ident):
    return ['--endpoint', 'localhost', '--port', str(broker.port), '--thing-name', thing,
            '--cert', ident['cert'], '--key', ident['key'], '--root-ca', broker.ca,
            '--state-dir', os.path.join(workdir, 'state')]


# ---------------------------------------------------------------- init

def test_init_from_flags_writes_minimal_valid_json_and_directories_with_their_modes(iotbox, broker, workdir):
    ident = broker.thing('init-1', days=365)
    out = os.path.join(workdir, 'etc', 'iotbox', 'iotbox.conf')
    r = config(iotbox, 'init', '--output', out, *init_flags(broker, workdir, 'init-1', ident),
               '--enable-tunneling', 'false', '--log-level', 'DEBUG')
    assert r.returncode == 0, r.stderr
    with open(out) as f:
        written = json.load(f)
    # Required settings and what differs from the defaults; nothing else (DEBUG is the default).
    assert written == {
        'endpoint': 'localhost', 'port': broker.port, 'cert': ident['cert'], 'key': ident['key'],
        'root-ca': broker.ca, 'thing-name': 'init-1', 'state-directory': os.path.join(workdir, 'state'),
        'jobs': {'handler-directory': os.path.join(workdir, 'etc', 'iotbox', 'jobs')},
        'tunneling': {'enabled': False},
    }
    assert mode(out) == 0o640
    assert mode(os.path.dirname(out)) == 0o755
    assert mode(os.path.join(workdir, 'etc', 'iotbox', 'jobs')) == 0o700
    assert mode(os.path.join(workdir, 'state')) == 0o700
    assert f'Wrote {out} (mode 0640)' in r.stdout
    assert 'make install INIT=systemd' in r.stdout and f'iot-config check --config-file {out}' in r.stdout
    # What it wrote is a config the rest of iotbox accepts.
    c = config(iotbox, 'check', '--config-file', out)
    assert c.returncode == 0, c.stdout + c.stderr
    assert 'FAIL' not in c.stdout and 'WARN' not in c.stdout, c.stdout


def test_init_refuses_to_overwrite_without_force(iotbox, broker, workdir):
    ident = broker.thing('init-2', days=365)
    out = os.path.join(workdir, 'iotbox.conf')
    assert config(iotbox, 'init', '--output', out, *init_flags(broker, workdir, 'init-2', ident)).returncode == 0
    with open(out) as f:
        first = f.read()
    r = config(iotbox, 'init', '--output', out, *init_flags(broker, workdir, 'init-2', ident), '--enable-jobs', 'false')
    assert r.returncode == 1
    assert f'{out} exists' in r.stderr and '--force' in r.stderr
    with open(out) as f:
        assert f.read() == first
    r = config(iotbox, 'init', '--output', out, '--force', *init_flags(broker, workdir, 'init-2', ident),
               '--enable-jobs', 'false', '--secure-element-pin', 'pin-55aa17')
    assert r.returncode == 0, r.stderr
    with open(out) as f:
        written = json.load(f)
    assert written['jobs'] == {'enabled': False}, 'no handler directory when jobs are off'
    assert written['secure-element']['secure-element-pin'] == 'pin-55aa17'
    assert 'pin-55aa17' not in r.stdout + r.stderr and '"***"' in r.stdout, 'a secret is never echoed'
    assert mode(out) == 0o640


def test_init_from_flags_refuses_missing_and_wrong_files_and_writes_nothing(iotbox, broker, workdir):
    ident = broker.thing('init-3', days=365)
    other = broker.thing('someone-else', days=365)
    out = os.path.join(workdir, 'iotbox.conf')
    flags = init_flags(broker, workdir, 'init-3', ident)
    without_cert = flags[:flags.index('--cert')] + flags[flags.index('--cert') + 2:]
    r = config(iotbox, 'init', '--output', out, *without_cert)
    assert r.returncode == 2
    assert 'cert (--cert)' in r.stderr, r.stderr

    wrong = [other['key'] if a == ident['key'] else a for a in flags]
    r = config(iotbox, 'init', '--output', out, *wrong)
    assert r.returncode == 2
    assert f'{other["key"]} does not belong to the certificate {ident["cert"]}' in r.stderr, r.stderr

    swap = {ident['cert']: ident['key'], 'init-3': 'bad name'}
    r = config(iotbox, 'init', '--output', out, *[swap.get(a, a) for a in flags])
    assert r.returncode == 2
    assert 'cert (--cert)' in r.stderr and ident['key'] in r.stderr, r.stderr
    assert 'not a thing name' in r.stderr
    assert not os.path.exists(out)


class Tmux:
    """A program on a real terminal: a detached tmux session on a private server."""

    def __init__(self, workdir, command):
        self.tm = ['tmux', '-L', f'iotbox-test-{os.getpid()}', '-f', '/dev/null']
        r = run(self.tm + ['new-session', '-d', '-x', '220', '-y', '80', command])
        assert r.returncode == 0, r.stderr

    def screen(self):
        return run(self.tm + ['capture-pane', '-p', '-J', '-S', '-500']).stdout

    def prompts(self, name):
        """How many times the prompt for `name` has been shown."""
        return sum(1 for line in self.screen().splitlines()
                   if line.startswith(name + ':') or line.startswith(name + ' ['))

    def wait(self, predicate, what, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f'{what} not seen within {timeout}s:\n{self.screen()}')

    def answer(self, name, text, nth=1):
        self.wait(lambda: self.prompts(name) >= nth, f'prompt {name} #{nth}')
        if text:
            run(self.tm + ['send-keys', '-l', text])
        run(self.tm + ['send-keys', 'Enter'])

    def close(self):
        run(self.tm + ['kill-server'])


def test_init_on_a_terminal_asks_validates_and_asks_again(iotbox, broker, workdir):
    ident = broker.thing('tty-thing', days=365)
    other = broker.thing('tty-other', days=365)
    out = os.path.join(workdir, 'conf', 'iotbox.conf')
    state = os.path.join(workdir, 'state')
    t = Tmux(workdir, f'{iotbox} iot-config init --output {out} --state-dir {state}; echo EXIT=$?; sleep 600')
    try:
        t.answer('endpoint', 'https://localhost/')          # a URL, not a host name
        t.wait(lambda: 'is not a host name' in t.screen(), 'endpoint refused')
        t.answer('endpoint', 'localhost', nth=2)
        t.answer('thing-name', 'tty-thing')
        t.answer('cert', os.path.join(workdir, 'missing.crt'))  # does not exist
        t.answer('cert', ident['key'], nth=2)                   # exists, but is not a certificate
        t.answer('cert', ident['cert'], nth=3)
        t.answer('key', other['key'])                           # another thing's key
        t.wait(lambda: 'does not belong to the certificate' in t.screen(), 'key refused')
        t.answer('key', ident['key'], nth=2)
        t.answer('root-ca', broker.ca)
        t.answer('port', '99999')
        t.wait(lambda: 'expected an integer from 1 to 65535' in t.screen(), 'port refused')
        t.answer('port', str(broker.port), nth=2)
        t.answer('jobs.enabled', 'n')
        t.answer('tunneling.enabled', '')                       # Enter keeps the default (true)
        t.answer('device-defender.enabled', 'y')
        t.wait(lambda: 'EXIT=' in t.screen(), 'the end')
        screen = t.screen()
    finally:
        t.close()
    assert 'EXIT=0' in screen, screen
    assert screen.count('please try again') == 5, screen
    assert 'No such file or directory' in screen
    assert 'jobs.handler-directory [' not in screen, 'not asked when jobs are off'
    with open(out) as f:
        written = json.load(f)
    assert written == {
        'endpoint': 'localhost', 'port': broker.port, 'cert': ident['cert'], 'key': ident['key'],
        'root-ca': broker.ca, 'thing-name': 'tty-thing', 'state-directory': state,
        'jobs': {'enabled': False}, 'device-defender': {'enabled': True},
    }
    assert mode(out) == 0o640


# ---------------------------------------------------------------- show

def test_show_merges_sources_in_order_hides_secrets_and_names_sources(iotbox, broker, workdir):
    runtime = os.path.join(workdir, 'runtime.conf')
    with open(runtime, 'w') as f:
        json.dump({'runtime-config': {'completed-fp': True, 'thing-name': 'provisioned-1'}}, f)
    cfg, _ = device_config(broker, workdir, 'show-1', logging={'level': 'INFO'},
                           **{'runtime-config-file': runtime,
                              'secure-element': {'secure-element-pin': 'pin-7d1e55'}})
    env = dict(os.environ, IOTBOX_LOGGING_LEVEL='WARN')
    r = config(iotbox, 'show', '--config-file', cfg, env=env)
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown['logging']['level'] == 'WARN'          # environment over file
    assert shown['thing-name'] == 'provisioned-1'       # runtime file over file
    assert shown['port'] == broker.port and shown['jobs']['step-timeout'] == 0  # file, default
    assert shown['secure-element']['secure-element-pin'] == '***'
    r = config(iotbox, 'show', '--config-file', cfg, '--log-level', 'error', env=env)
    assert json.loads(r.stdout)['logging']['level'] == 'ERROR'  # command line over environment

    r = config(iotbox, 'show', '--sources', '--config-file', cfg, '--log-level', 'error', env=env)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines()}
    with open(cfg) as f:
        lines = f.read().splitlines()
    endpoint_line = next(i for i, line in enumerate(lines, 1) if '"endpoint"' in line)
    assert rows['endpoint'].endswith(f'[file {cfg}:{endpoint_line}]'), rows['endpoint']
    assert rows['thing-name'].endswith(f'[runtime file {runtime}:1]'), rows['thing-name']
    assert rows['logging.level'].split()[1] == 'ERROR' and rows['logging.level'].endswith('[--log-level]')
    assert rows['jobs.step-timeout'].endswith('[default]')
    assert '***' in rows['secure-element.secure-element-pin']
    env_only = config(iotbox, 'show', '--sources', '--config-file', cfg, env=env)
    assert '[env IOTBOX_LOGGING_LEVEL]' in env_only.stdout
    for out in (r.stdout, env_only.stdout):
        assert 'pin-7d1e55' not in out


def test_show_refuses_a_config_that_does_not_load(iotbox, workdir):
    bad = os.path.join(workdir, 'bad.conf')
    with open(bad, 'w') as f:
        f.write('{\n  "endpoint": "x",\n  "port": "eighty"\n}\n')
    r = config(iotbox, 'show', '--config-file', bad)
    assert r.returncode == 2
    assert f'{bad}:3: port' in r.stderr, r.stderr


# ---------------------------------------------------------------- check

def check_lines(r):
    return [line for line in r.stdout.splitlines() if line[:4] in ('OK  ', 'WARN', 'FAIL')]


def test_check_passes_a_good_setup_and_prints_the_expiry(iotbox, broker, workdir):
    cfg, ident = device_config(broker, workdir, 'check-ok')
    ident = broker.thing('check-ok', days=400)
    r = config(iotbox, 'check', '--config-file', cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = check_lines(r)
    assert lines and all(line.startswith('OK') for line in lines), r.stdout
    assert any(re.search(r'valid until \d{4}-\d\d-\d\d \d\d:\d\d UTC \((399|400) days\)', line) for line in lines), r.stdout
    assert any('matches the certificate' in line for line in lines)


def test_check_warns_thirty_days_before_expiry(iotbox, broker, workdir):
    cfg, _ = device_config(broker, workdir, 'check-soon')
    broker.thing('check-soon', days=10)
    r = config(iotbox, 'check', '--config-file', cfg)
    assert r.returncode == 0, r.stdout
    assert any(line.startswith('WARN') and re.search(r'expires in (9|10) days, on \d{4}-', line)
               for line in check_lines(r)), r.stdout


def test_check_fails_an_expired_certificate(iotbox, broker, workdir):
    cfg, _ = device_config(broker, workdir, 'check-old')
    broker.thing('check-old', expired=True)
    r = config(iotbox, 'check', '--config-file', cfg)
    assert r.returncode == 1, r.stdout
    assert any(line.startswith('FAIL') and 'expired on' in line for line in check_lines(r)), r.stdout


def test_check_fails_a_key_that_does_not_belong_to_the_certificate(iotbox, broker, workdir):
    other = broker.thing('check-other', days=365)
    cfg, ident = device_config(broker, workdir, 'check-mix', key=other['key'])
    r = config(iotbox, 'check', '--config-file', cfg)
    assert r.returncode == 1, r.stdout
    fails = [line for line in check_lines(r) if line.startswith('FAIL')]
    assert fails == [f'FAIL  key {other["key"]} does not belong to the certificate {ident["cert"]} '
                     '(a broker refuses the handshake)'], r.stdout


def test_check_fails_a_key_open_to_others_and_says_how_to_fix_it(iotbox, broker, workdir):
    cfg, ident = device_config(broker, workdir, 'check-mode')
    os.chmod(ident['key'], 0o644)
    r = config(iotbox, 'check', '--config-file', cfg)
    assert r.returncode == 1, r.stdout
    assert any(line.startswith('FAIL') and f'chmod 600 {ident["key"]}' in line for line in check_lines(r)), r.stdout


def test_check_exits_2_when_the_config_does_not_load(iotbox, workdir):
    bad = os.path.join(workdir, 'bad.conf')
    with open(bad, 'w') as f:
        f.write('{"endpoint": "x",\n "jobs": {"enabled": maybe}}\n')
    r = config(iotbox, 'check', '--config-file', bad)
    assert r.returncode == 2
    assert f'FAIL  config: {bad}:2' in r.stdout, r.stdout


def test_check_connect_reaches_the_broker_and_reports_refusal(iotbox, broker, workdir):
    cfg, _ = device_config(broker, workdir, 'check-net')
    broker.thing('check-net', days=365)
    r = config(iotbox, 'check', '--config-file', cfg, '--connect')
    assert r.returncode == 0, r.stdout + r.stderr
    assert f'OK    connection: connected to localhost:{broker.port} as check-net' in r.stdout, r.stdout
    with open(broker.path('mosquitto.log')) as f:
        assert 'Client check-net disconnected.' in f.read(), 'a clean DISCONNECT'
    broker.stop()
    r = config(iotbox, 'check', '--config-file', cfg, '--connect', '--timeout', '5')
    assert r.returncode == 1, r.stdout
    assert any(line.startswith('FAIL  connection') and 'connection refused' in line for line in check_lines(r)), r.stdout


# ---------------------------------------------------------------- convert

def test_convert_device_client_config_with_runtime_file_into_one_iotd_runs(iotbox, broker, workdir, daemons):
    home = os.path.join(workdir, 'home')
    dc = os.path.join(home, '.aws-iot-device-client')
    os.makedirs(os.path.join(dc, 'jobs'), mode=0o700)
    claim = broker.thing('claim', days=365)
    device = broker.thing('fp-device-1', days=365)
    # As people write them: booleans and numbers in quotes, a lower-case level, an empty value.
    with open(os.path.join(dc, 'aws-iot-device-client.conf'), 'w') as f:
        json.dump({
            'endpoint': 'localhost', 'port': broker.port, 'cert': claim['cert'], 'key': claim['key'],
            'root-ca': broker.ca, 'thing-name': 'claim',
            'logging': {'level': 'info', 'type': 'STDOUT', 'file': ''},
            'jobs': {'enabled': 'true', 'handler-directory': os.path.join(dc, 'jobs')},
            'tunneling': {'enabled': 'false'},
            'device-defender': {'enabled': 'false', 'interval': '600'},
            'fleet-provisioning': {'enabled': True, 'template-name': 'FleetTemplate'},
            'lock-file': os.path.join(workdir, 'iotd.lock'),
        }, f, indent=2)
    with open(os.path.join(dc, 'aws-iot-device-client-runtime.conf'), 'w') as f:
        json.dump({'runtime-config': {'completed-fp': True, 'cert': device['cert'], 'key': device['key'],
                                      'thing-name': 'fp-device-1'}}, f, indent=2)
    with open(os.path.join(dc, 'http-proxy.conf'), 'w') as f:
        json.dump({'http-proxy-enabled': False}, f)
    os.chmod(os.path.join(dc, 'http-proxy.conf'), 0o644)
    out = os.path.join(workdir, 'etc', 'iotbox.conf')
    env = dict(os.environ, HOME=home)
    r = config(iotbox, 'convert', '--output', out, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert mode(out) == 0o640
    with open(out) as f:
        c = json.load(f)
    assert c['jobs']['enabled'] is True and c['tunneling']['enabled'] is False
    assert c['device-defender'] == {'enabled': False, 'interval': 600}
    assert c['logging'] == {'level': 'INFO', 'type': 'STDOUT'}
    assert (c['cert'], c['key'], c['thing-name']) == (device['cert'], device['key'], 'fp-device-1')
    assert c['fleet-provisioning'] == {'enabled': False, 'template-name': 'FleetTemplate'}
    assert 'runtime-config' not in c
    assert 'jobs.enabled: "true" -> true (a string: the Device Client reads any string as false' in r.stdout
    assert 'device-defender.interval: "600" -> 600' in r.stdout
    assert 'fleet-provisioning.enabled: true -> false (fleet provisioning completed' in r.stdout
    assert f'thing-name: "claim" -> "fp-device-1" (runtime file {dc}/aws-iot-device-client-runtime.conf:6' in r.stdout
    assert 'logging.file: empty value left out' in r.stdout
    assert 'http-proxy.conf is read from where it is' in r.stdout and 'chmod 600' in r.stdout

    # iotd runs on it (with nothing else: another HOME, so no Device Client file to fall back on).
    d = daemons([iotbox, 'iotd', '--config-file', out, '--state-dir', os.path.join(workdir, 'state')],
                os.path.join(workdir, 'iotd.out'), env=dict(os.environ, HOME=workdir))
    d.wait_for(f'connected to localhost:{broker.port} as fp-device-1')
    assert d.stop() == 0


def test_convert_the_device_client_template_names_the_bad_line_then_the_placeholders(iotbox, workdir):
    src = os.path.join(workdir, 'template.json')
    shutil.copy(TEMPLATE, src)
    out = os.path.join(workdir, 'iotbox.conf')
    env = dict(os.environ, HOME=workdir)
    r = config(iotbox, 'convert', '--from', src, '--output', out, env=env)
    assert r.returncode == 2
    assert f'{src}:56: invalid JSON near \'replace_with_secure_element_slot_id_integer\'' in r.stderr, r.stderr
    assert 'secure-element.secure-element-slot-id' in r.stderr
    assert not os.path.exists(out)

    with open(src) as f:
        text = f.read().replace('replace_with_secure_element_slot_id_integer', '1')
    with open(src, 'w') as f:
        f.write(text)
    r = config(iotbox, 'convert', '--from', src, '--output', out, env=env)
    assert r.returncode == 2
    assert f'{src}:2: endpoint: still the template placeholder "<replace_with_your_account_endpoint>"' in r.stderr
    assert 'or give --endpoint' in r.stderr
    assert f'{src}:17: jobs.handler-directory' in r.stderr
    assert 'fleet-provisioning' not in r.stderr, 'placeholders of disabled sections are no error'
    assert not os.path.exists(out)

    # Filled in from the command line, the placeholders of disabled sections are left out.
    r = config(iotbox, 'convert', '--from', src, '--output', out, '--endpoint', 'example-ats.iot.eu-west-1.amazonaws.com',
               '--cert', '/etc/iotbox/cert.pem', '--key', '/etc/iotbox/key.pem', '--root-ca', '/etc/iotbox/ca.pem',
               '--thing-name', 'thing-7', '--jobs-handler-dir', '/etc/iotbox/jobs', env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(out) as f:
        written = f.read()
    c = json.loads(written)
    assert '<replace_with' not in written
    assert c['endpoint'] == 'example-ats.iot.eu-west-1.amazonaws.com'
    assert c['secure-element']['enabled'] is False and 'secure-element-pin' not in c['secure-element']
    assert 'logging.file: "<replace_with_log_file_path>" left out' in r.stdout
