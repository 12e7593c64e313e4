"""iot-config against the real binary: init (from flags, and answering its prompts in a tmux
session), show (precedence, sources, secrets, --json), check (certificates, keys, modes, a real
connection to the TLS test broker), get/set/unset (atomic edits of the config file), import/convert
(Device Client configs, its runtime file and its template) and export-default."""
import json
import os
import re
import shutil
import stat
import subprocess
import time

from conftest import SOURCE, device_config, run

TEMPLATE = os.path.join(SOURCE, 'tests', 'unit', 'data', 'config', 'config-template.json')
FULL = os.path.join(SOURCE, 'tests', 'unit', 'data', 'config', 'full.json')


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
    assert broker.wait_log('Client check-net disconnected.'), 'a clean DISCONNECT'
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


def test_check_online_is_the_issue_name_for_connect(iotbox, broker, workdir):
    cfg, _ = device_config(broker, workdir, 'check-online')
    broker.thing('check-online', days=365)
    r = config(iotbox, 'check', '--config-file', cfg, '--online')
    assert r.returncode == 0, r.stdout + r.stderr
    assert f'OK    connection: connected to localhost:{broker.port} as check-online' in r.stdout, r.stdout


# ---------------------------------------------------------------- get, set, unset

def quiet_env(workdir, **extra):
    """No IOTBOX_ variables from outside, and a HOME without a Device Client config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('IOTBOX_') and k != 'LOCK_FILE_PATH'}
    env['HOME'] = workdir
    env.update(extra)
    return env


def edit_file(workdir, content, file_mode=0o600):
    path = os.path.join(workdir, 'etc', 'iotbox.conf')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(content, f, indent=2)
    os.chmod(path, file_mode)
    return path


def load(path):
    with open(path) as f:
        return json.load(f)


def test_set_and_unset_keep_the_file_valid_json_with_its_mode_and_create_sections(iotbox, workdir):
    path = edit_file(workdir, {'endpoint': 'example-ats.iot.eu-west-1.amazonaws.com', 'port': 8883,
                               'jobs': {'enabled': False}})
    env = quiet_env(workdir)

    def edit(*args):
        r = config(iotbox, *args, '--config-file', path, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert mode(path) == 0o600, 'the mode is kept'
        assert os.listdir(os.path.dirname(path)) == ['iotbox.conf'], 'no temporary file left behind'
        return r, load(path)

    r, c = edit('set', 'logging.level', 'info')                # a section created, the canonical spelling
    assert c['logging'] == {'level': 'INFO'}
    assert f'Changed {path}: logging.level = INFO' in r.stdout
    _, c = edit('set', 'samples.pub-sub.publish-on-change', 'true')  # two levels created
    assert c['samples'] == {'pub-sub': {'publish-on-change': True}}
    _, c = edit('set', 'port', '443')                          # an int stays a number, in place
    assert c['port'] == 443 and list(c)[:2] == ['endpoint', 'port']
    _, c = edit('set', 'jobs.enabled', 'TRUE')
    assert c['jobs'] == {'enabled': True}
    _, c = edit('set', 'fleet-provisioning.template-parameters', '{"SerialNumber": "S-1"}')
    assert json.loads(c['fleet-provisioning']['template-parameters']) == {'SerialNumber': 'S-1'}
    _, c = edit('set', 'device-defender.custom-metrics', '{"t": {"type": "number", "file": "/x"}}')
    assert c['device-defender']['custom-metrics'] == {'t': {'type': 'number', 'file': '/x'}}
    r, c = edit('set', 'mqtt.keepalive', '5')                  # clamped as the loader clamps
    assert c['mqtt']['keepalive'] == 30 and '5 is outside 30..1200; using 30' in r.stderr

    for key, want in [('logging.level', 'INFO'), ('port', '443'), ('samples.pub-sub.publish-on-change', 'true'),
                      ('fleet-provisioning.template-parameters', '{"SerialNumber":"S-1"}')]:
        g = config(iotbox, 'get', key, '--config-file', path, env=env)
        assert (g.returncode, g.stdout) == (0, want + '\n'), (key, g.stdout, g.stderr)

    r, c = edit('unset', 'logging.level')                      # the emptied section goes too
    assert 'logging' not in c
    assert 'logging.level is now DEBUG (the default)' in r.stdout
    # Written even when the configuration needs more before it loads; the warning says what.
    r, c = edit('set', 'samples.pub-sub.enabled', 'true')
    assert c['samples']['pub-sub'] == {'publish-on-change': True, 'enabled': True}
    assert 'does not load yet' in r.stderr and 'samples.pub-sub.publish-topic (--publish-topic) is required' in r.stderr
    edit('unset', 'samples.pub-sub.enabled')
    r, c = edit('unset', 'samples.pub-sub.publish-on-change')
    assert 'samples' not in c
    r, again = edit('unset', 'samples.pub-sub.publish-on-change')
    assert again == c and 'nothing to change' in r.stdout
    r = config(iotbox, 'unset', 'port', '--config-file', path, env=dict(env, IOTBOX_PORT='8883'))
    assert r.returncode == 0 and 'port' not in load(path)
    assert 'port is 8883 from env IOTBOX_PORT, which overrides the config file' in r.stdout, r.stdout
    c = config(iotbox, 'show', '--config-file', path, env=env)
    assert c.returncode == 0, c.stderr


def test_set_follows_a_link_keeps_the_owner_and_creates_a_missing_file(iotbox, workdir):
    path = edit_file(workdir, {'thing-name': 'a'}, file_mode=0o640)
    link = os.path.join(workdir, 'link.conf')
    os.symlink(path, link)
    env = quiet_env(workdir)
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
    r = config(iotbox, 'set', 'thing-name', 'b', '--config-file', link, env=env)
    assert r.returncode == 0, r.stderr
    assert os.path.islink(link) and load(path) == {'thing-name': 'b'}
    assert mode(path) == 0o640
    if os.geteuid() == 0:
        assert (os.stat(path).st_uid, os.stat(path).st_gid) == (65534, 65534), 'the owner is kept'

    new = os.path.join(workdir, 'new', 'iotbox.conf')
    r = config(iotbox, 'set', 'logging.type', 'syslog', '--config-file', new, env=env)
    assert r.returncode == 0, r.stderr
    assert load(new) == {'logging': {'type': 'SYSLOG'}} and mode(new) == 0o640
    assert f'Created {new}' in r.stdout
    # The file the loader would read when none is named: IOTBOX_CONFIG.
    r = config(iotbox, 'set', 'port', '8883', env=dict(env, IOTBOX_CONFIG=new))
    assert r.returncode == 0, r.stderr
    assert load(new) == {'logging': {'type': 'SYSLOG'}, 'port': 8883}


def test_set_refuses_bad_values_unknown_keys_and_keys_of_other_files_without_touching_the_file(iotbox, workdir):
    path = edit_file(workdir, {'endpoint': 'x', 'samples': 'oops'})
    with open(path) as f:
        before = f.read()
    env = quiet_env(workdir)
    cases = [
        (['set', 'port', '99999'], 'port: expected an integer from 1 to 65535, got 99999'),
        (['set', 'port', 'eighty'], 'port: expected an integer from 1 to 65535, got "eighty"'),
        (['set', 'jobs.enabled', 'maybe'], 'jobs.enabled: expected true or false, got "maybe"'),
        (['set', 'logging.level', 'LOUD'], 'logging.level: expected one of DEBUG, INFO, WARN, ERROR, got "LOUD"'),
        (['set', 'fleet-provisioning.template-parameters', '[1]'], 'expected a JSON object'),
        (['set', 'device-defender.custom-metrics', '{"a": '], 'expected an object'),
        (['set', 'endpoint', ''], 'endpoint: expected a non-empty value'),
        (['set', 'logging.levl', 'INFO'], "unknown key 'logging.levl' (did you mean 'logging.level'?)"),
        (['unset', 'thing-nam'], "unknown key 'thing-nam' (did you mean 'thing-name'?)"),
        (['set', 'logging', 'INFO'], "'logging' is a section"),
        (['set', 'http-proxy-host', 'proxy'], 'http-proxy-host is not a setting of the config file: it belongs in the HTTP proxy file (--http-proxy-config)'),
        (['set', 'runtime-config.cert', '/c'], 'belongs in the runtime-config section of the runtime file'),
        (['unset', 'tunneling.region'], 'belongs in the command line or the environment: --tunneling-region, env IOTBOX_TUNNELING_REGION'),
        (['set', 'config-file', '/x'], 'belongs in the command line or the environment: --config-file'),
        (['set', 'help', 'true'], "unknown key 'help'"),
        (['set', 'samples.pub-sub.enabled', 'true'], f'{path}:3: samples is a string, not an object'),
        (['set', 'port'], 'usage: iot-config set KEY VALUE'),
    ]
    for args, message in cases:
        r = config(iotbox, *args, '--config-file', path, env=env)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert message in r.stderr, (args, r.stderr)
        with open(path) as f:
            assert f.read() == before, args
        assert mode(path) == 0o600

    with open(path, 'w') as f:
        f.write('{"endpoint": "x",\n "port": }\n')
    r = config(iotbox, 'set', 'port', '443', '--config-file', path, env=env)
    assert r.returncode == 2 and f'{path}: line 2' in r.stderr and 'not changed' in r.stderr, r.stderr
    with open(path) as f:
        assert f.read() == '{"endpoint": "x",\n "port": }\n'


def test_get_prints_the_effective_value_exits_1_when_unset_and_hides_secrets(iotbox, workdir):
    path = edit_file(workdir, {'endpoint': 'x', 'logging': {'level': 'INFO'},
                               'secure-element': {'secure-element-pin': 'pin-31f7c2'}})
    env = quiet_env(workdir)
    r = config(iotbox, 'get', 'logging.level', '--config-file', path, env=env)
    assert (r.returncode, r.stdout) == (0, 'INFO\n')
    r = config(iotbox, 'get', 'logging.level', '--config-file', path, env=dict(env, IOTBOX_LOGGING_LEVEL='warn'))
    assert r.stdout == 'WARN\n', 'the environment wins, as everywhere'
    r = config(iotbox, 'get', 'logging.level', '--config-file', path, '--log-level', 'error', env=env)
    assert r.stdout == 'ERROR\n'
    r = config(iotbox, 'get', 'jobs.step-timeout', '--config-file', path, env=env)
    assert r.stdout == '0\n', 'a default is a value'
    r = config(iotbox, 'get', 'thing-name', '--config-file', path, env=env)
    assert (r.returncode, r.stdout) == (1, '') and 'thing-name is not set' in r.stderr
    r = config(iotbox, 'get', 'thing-nmae', '--config-file', path, env=env)
    assert r.returncode == 2 and "unknown key 'thing-nmae' (did you mean 'thing-name'?)" in r.stderr
    r = config(iotbox, 'get', 'secure-element.secure-element-pin', '--config-file', path, env=env)
    assert (r.returncode, r.stdout) == (0, '***\n')
    assert 'pin-31f7c2' not in r.stdout + r.stderr and '--show-secret' in r.stderr
    r = config(iotbox, 'get', 'secure-element.secure-element-pin', '--show-secret', '--config-file', path, env=env)
    assert (r.returncode, r.stdout) == (0, 'pin-31f7c2\n')
    r = config(iotbox, 'set', 'secure-element.secure-element-pin', 'pin-88aa01', '--config-file', path, env=env)
    assert r.returncode == 0 and 'pin-88aa01' not in r.stdout + r.stderr, 'set does not echo a secret'
    assert load(path)['secure-element']['secure-element-pin'] == 'pin-88aa01'
    r = config(iotbox, 'get', 'tunneling.access-token', env=dict(env, AWSIOT_TUNNEL_ACCESS_TOKEN='tok-55e1'))
    assert (r.returncode, r.stdout) == (0, '***\n') and 'tok-55e1' not in r.stderr


# ---------------------------------------------------------------- show --json

def test_show_json_gives_each_value_with_its_source(iotbox, workdir):
    path = edit_file(workdir, {'endpoint': 'x', 'port': 8883,
                               'fleet-provisioning': {'template-parameters': '{"a": 1}'},
                               'secure-element': {'secure-element-pin': 'pin-0b0b17'}})
    r = config(iotbox, 'show', '--json', '--config-file', path, '--log-level', 'warn',
               env=quiet_env(workdir, IOTBOX_THING_NAME='t-1'))
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    lines = open(path).read().splitlines()
    port_line = next(i for i, line in enumerate(lines, 1) if '"port"' in line)
    assert shown['port'] == {'value': 8883, 'source': f'file {path}:{port_line}'}
    assert shown['thing-name'] == {'value': 't-1', 'source': 'env IOTBOX_THING_NAME'}
    assert shown['logging.level'] == {'value': 'WARN', 'source': '--log-level'}
    assert shown['jobs.enabled'] == {'value': True, 'source': 'default'}
    assert shown['fleet-provisioning.template-parameters']['value'] == {'a': 1}
    assert shown['secure-element.secure-element-pin']['value'] == '***'
    assert 'pin-0b0b17' not in r.stdout
    assert 'root-ca' not in shown, 'unset settings are left out'
    assert set(shown) == {line.split()[0] for line in config(
        iotbox, 'show', '--sources', '--config-file', path, '--log-level', 'warn',
        env=quiet_env(workdir, IOTBOX_THING_NAME='t-1')).stdout.splitlines()}


# ---------------------------------------------------------------- export-default

def test_export_default_is_complete_valid_json_that_loads_back_as_the_defaults(iotbox, workdir):
    env = quiet_env(workdir)
    r = config(iotbox, 'export-default', env=env)
    assert r.returncode == 0, r.stderr
    printed = json.loads(r.stdout)
    assert printed['port'] == 443 and printed['logging']['level'] == 'DEBUG' and printed['endpoint'] == ''
    assert printed['jobs']['enabled'] is True and 'runtime-config' not in printed

    out = os.path.join(workdir, 'etc', 'defaults.conf')
    r = config(iotbox, 'export-default', '--output', out, env=env)
    assert r.returncode == 0, r.stderr
    assert mode(out) == 0o640 and load(out) == printed
    r = config(iotbox, 'export-default', '--output', out, env=env)
    assert r.returncode == 1 and '--force' in r.stderr
    assert config(iotbox, 'export-default', '--output', out, '--force', env=env).returncode == 0

    # It loads, and means exactly the defaults.
    empty = os.path.join(workdir, 'empty.conf')
    with open(empty, 'w') as f:
        f.write('{}\n')
    a = config(iotbox, 'show', '--config-file', out, env=env)
    b = config(iotbox, 'show', '--config-file', empty, env=env)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    a, b = json.loads(a.stdout), json.loads(b.stdout)
    assert a.pop('config-file') == out and b.pop('config-file') == empty
    assert a == b
    d = run([iotbox, 'iotd', '--config-file', out, '--help'], env=env)
    assert d.returncode == 0, d.stderr
    c = config(iotbox, 'check', '--config-file', out, env=env)
    assert c.returncode == 1, c.stdout                       # loads; only the required settings are missing
    assert f'OK    config: loaded {out}' in c.stdout and 'FAIL  config:' not in c.stdout
    assert 'missing required settings to connect: endpoint (--endpoint)' in c.stdout


# ---------------------------------------------------------------- import

def test_import_a_device_client_config_with_every_section(iotbox, workdir):
    src = os.path.join(workdir, 'dc.json')
    with open(FULL) as f:
        dc = json.load(f)
    dc['logging']['colour'] = 'red'                          # not an iotbox setting
    dc['http-proxy-host'] = 'proxy.example'                  # a setting of another file
    with open(src, 'w') as f:
        json.dump(dc, f, indent=2)
    env = quiet_env(workdir)
    out = os.path.join(workdir, 'etc', 'iotbox.conf')
    r = config(iotbox, 'import', src, '--output', out, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert mode(out) == 0o640
    c = load(out)
    assert 'runtime-config' not in c and 'colour' not in c['logging'] and 'http-proxy-host' not in c
    assert c['secure-element']['secure-element-pin'] == '9876-full-pin'
    assert '9876-full-pin' not in r.stdout + r.stderr, 'a secret is never echoed'
    report = r.stdout.split('Not carried over:\n')
    assert len(report) == 2, r.stdout
    assert 'logging.level: "warn" -> "WARN" (its canonical spelling)' in report[0]
    for key in ('completed-fp', 'cert', 'key', 'thing-name', 'device-config'):
        assert f'  runtime-config.{key}: left out' in report[1], r.stdout
    assert "unknown key 'logging.colour' ignored" in report[1]
    assert 'http-proxy-host belongs in the HTTP proxy file' in report[1]

    # Every setting means the same in iotbox's file as in the Device Client's.
    before = json.loads(config(iotbox, 'show', '--json', '--config-file', src, env=env).stdout)
    after = json.loads(config(iotbox, 'show', '--json', '--config-file', out, env=env).stdout)
    for shown in (before, after):
        shown.pop('config-file')
        for key in [k for k in shown if k.startswith('runtime-config.')]:
            shown.pop(key)
    assert {k: v['value'] for k, v in before.items()} == {k: v['value'] for k, v in after.items()}
    with open(out) as f:
        interval_line = next(i for i, line in enumerate(f.read().splitlines(), 1) if '"interval"' in line)
    assert after['device-defender.interval'] == {'value': 77, 'source': f'file {out}:{interval_line}'}
    assert len([k for k in after if after[k]['source'] != 'default']) >= 40, 'every section carried over'

    # convert is the same command under its first name; FILE and --from are the same.
    again = os.path.join(workdir, 'again.conf')
    r = config(iotbox, 'convert', '--from', src, '--output', again, env=env)
    assert r.returncode == 0, r.stderr
    assert load(again) == c
    r = config(iotbox, 'import', src, '--from', src, '--output', again, '--force', env=env)
    assert r.returncode == 2 and 'once' in r.stderr
    r = config(iotbox, 'import', os.path.join(workdir, 'missing.json'), '--output', again, '--force', env=env)
    assert r.returncode == 2 and 'no Device Client config at' in r.stderr
