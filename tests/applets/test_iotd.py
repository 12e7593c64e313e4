"""iotd against a real mosquitto broker with mutual TLS: connect, survive restarts, stop cleanly,
refuse bad configs clearly, run inside a chroot holding only the static binary."""
import json
import os
import shutil
import signal
import time

import pytest

from conftest import device_config, run


def start_iotd(daemons, iotbox, workdir, cfg, *extra):
    return daemons([iotbox, 'iotd', '--config-file', cfg, *extra], os.path.join(workdir, 'iotd.out'))


def test_connects_over_mutual_tls_and_stops_cleanly_on_sigterm(iotbox, broker, workdir, daemons):
    cfg, _ = device_config(broker, workdir, 'thing-1')
    d = start_iotd(daemons, iotbox, workdir, cfg)
    d.wait_for(f'connected to localhost:{broker.port} as thing-1')
    assert os.path.exists(os.path.join(workdir, 'iotd.lock'))
    assert d.stop(signal.SIGTERM) == 0
    out = d.output()
    assert 'stopped' in out
    assert not os.path.exists(os.path.join(workdir, 'iotd.lock')), 'lock file removed on exit'
    # The broker saw a clean DISCONNECT, not a dropped socket (it may log it a moment later).
    assert broker.wait_log('Client thing-1 disconnected.'), open(broker.path('mosquitto.log')).read()[-2000:]


def test_sigint_also_stops_with_exit_0(iotbox, broker, workdir, daemons):
    cfg, _ = device_config(broker, workdir, 'thing-int')
    d = start_iotd(daemons, iotbox, workdir, cfg)
    d.wait_for('connected to')
    assert d.stop(signal.SIGINT) == 0


def test_survives_broker_restart_and_outage_without_exiting(iotbox, broker, workdir, daemons):
    cfg, _ = device_config(broker, workdir, 'thing-2')
    d = start_iotd(daemons, iotbox, workdir, cfg)
    d.wait_for('connected to')
    broker.stop()
    d.wait_for('disconnected:')
    d.wait_for('connection refused', timeout=10)
    time.sleep(2.5)  # several failed attempts while the broker is down
    assert d.proc.poll() is None, 'iotd must never exit because the broker is gone'
    broker.start()
    d.wait_for('connected to', count=2, timeout=15)
    assert d.stop() == 0


def test_stops_promptly_while_the_broker_is_down(iotbox, broker, workdir, daemons):
    cfg, _ = device_config(broker, workdir, 'thing-3')
    broker.stop()
    d = start_iotd(daemons, iotbox, workdir, cfg)
    d.wait_for('connect failed')
    t0 = time.time()
    assert d.stop() == 0
    assert time.time() - t0 < 5


def test_wrong_host_name_is_explained_and_retried(iotbox, broker, workdir, daemons):
    cfg, _ = device_config(broker, workdir, 'thing-4', port=broker.mismatch_port)
    d = start_iotd(daemons, iotbox, workdir, cfg)
    d.wait_for('does not match host name localhost', timeout=10)
    d.wait_for('reconnecting in')
    assert d.proc.poll() is None
    assert d.stop() == 0


def test_second_instance_is_refused_naming_the_first(iotbox, broker, workdir, daemons):
    cfg, _ = device_config(broker, workdir, 'thing-5')
    d = start_iotd(daemons, iotbox, workdir, cfg)
    d.wait_for('connected to')
    r = run([iotbox, 'iotd', '--config-file', cfg], timeout=10)
    assert r.returncode == 1
    assert f'pid {d.proc.pid}' in r.stderr, r.stderr
    assert d.stop() == 0


def test_device_client_config_with_every_section_loads_and_connects(iotbox, broker, workdir, daemons):
    ident = broker.thing('dc-thing')
    log_file = os.path.join(workdir, 'logs', 'aws-iot-device-client.log')
    dc = {
        'endpoint': 'localhost', 'cert': ident['cert'], 'key': ident['key'], 'root-ca': broker.ca,
        'thing-name': 'dc-thing',
        'logging': {'level': 'DEBUG', 'type': 'FILE', 'file': log_file, 'enable-sdk-logging': False,
                    'sdk-log-level': 'Warn', 'sdk-log-file': os.path.join(workdir, 'sdk.log')},
        'jobs': {'enabled': False, 'handler-directory': os.path.join(workdir, 'jobs')},
        'tunneling': {'enabled': False},
        'device-defender': {'enabled': False, 'interval': 300},
        'fleet-provisioning': {'enabled': False, 'template-name': 'tmpl', 'template-parameters': '{\"a\": \"b\"}',
                               'csr-file': '', 'device-key': ''},
        'samples': {'pub-sub': {'enabled': False, 'publish-topic': 'p', 'subscribe-topic': 's'}},
        'config-shadow': {'enabled': False},
        'sample-shadow': {'enabled': False, 'shadow-name': 'x'},
        'secure-element': {'enabled': False, 'secure-element-slot-id': 1},
    }
    cfg = os.path.join(workdir, 'aws-iot-device-client.conf')
    with open(cfg, 'w') as f:
        json.dump(dc, f, indent=4)
    os.chmod(cfg, 0o640)
    # The Device Client had no port option: iotbox's --port flag on top of an unchanged file.
    d = start_iotd(daemons, iotbox, workdir, cfg, '--port', str(broker.port), '--lock-file',
                   os.path.join(workdir, 'lock'))
    deadline = time.time() + 15
    while time.time() < deadline:
        if os.path.exists(log_file) and 'connected to' in open(log_file).read():
            break
        time.sleep(0.1)
    assert d.stop() == 0
    content = open(log_file).read()
    assert 'connected to localhost' in content, content + d.output()
    assert oct(os.stat(log_file).st_mode & 0o777) == '0o600'


def test_config_error_names_file_line_and_key_and_exits_2(iotbox, workdir):
    cfg = os.path.join(workdir, 'bad.conf')
    with open(cfg, 'w') as f:
        f.write('{\n  "endpoint": "localhost",\n  "logging": {\n    "level": "LOUD"\n  }\n}\n')
    r = run([iotbox, 'iotd', '--config-file', cfg])
    assert r.returncode == 2
    assert f'{cfg}:4' in r.stderr and 'logging.level' in r.stderr and 'LOUD' in r.stderr, r.stderr


def test_missing_settings_and_bad_key_modes_are_clear_errors(iotbox, broker, workdir):
    cfg, ident = device_config(broker, workdir, 'thing-6')
    r = run([iotbox, 'iotd', '--config-file', cfg, '--endpoint', ''])
    assert r.returncode == 2
    os.chmod(ident['key'], 0o644)
    r = run([iotbox, 'iotd', '--config-file', cfg])
    assert r.returncode == 2
    assert ident['key'] in r.stderr and '0600' in r.stderr, r.stderr
    os.chmod(ident['key'], 0o400)  # stricter than the rule: fine


def test_no_secret_from_the_key_file_reaches_the_log(iotbox, broker, workdir, daemons):
    cfg, ident = device_config(broker, workdir, 'thing-7')
    d = start_iotd(daemons, iotbox, workdir, cfg)
    d.wait_for('connected to')
    d.stop()
    key_body = open(ident['key']).read().splitlines()[1]
    assert key_body not in d.output()


@pytest.mark.skipif(os.geteuid() != 0, reason='chroot needs root')
def test_runs_in_a_chroot_holding_only_the_binary(iotbox, broker, workdir, daemons):
    root = os.path.join(workdir, 'root')
    for sub in ('bin', 'etc'):
        os.makedirs(os.path.join(root, sub))
    shutil.copy(iotbox, os.path.join(root, 'bin', 'iotbox'))
    os.symlink('iotbox', os.path.join(root, 'bin', 'iotd'))
    with open(os.path.join(root, 'etc', 'hosts'), 'w') as f:
        f.write('127.0.0.1 localhost\n')
    ident = broker.thing('chrooted')
    shutil.copy(broker.ca, os.path.join(root, 'etc', 'ca.crt'))
    shutil.copy(ident['cert'], os.path.join(root, 'etc', 'device.crt'))
    shutil.copy(ident['key'], os.path.join(root, 'etc', 'device.key'))
    os.chmod(os.path.join(root, 'etc', 'device.key'), 0o600)
    os.chmod(os.path.join(root, 'etc', 'ca.crt'), 0o644)
    os.chmod(os.path.join(root, 'etc', 'device.crt'), 0o644)
    d = daemons([shutil.which('chroot') or '/usr/sbin/chroot', root, '/bin/iotd', '--endpoint', 'localhost', '--port', str(broker.port),
                 '--root-ca', '/etc/ca.crt', '--cert', '/etc/device.crt', '--key', '/etc/device.key',
                 '--thing-name', 'chrooted', '--lock-file', '/iotd.lock', '--enable-jobs', 'false'],
                os.path.join(workdir, 'chroot.out'), env={'PATH': '/bin'})
    d.wait_for(f'connected to localhost:{broker.port} as chrooted')
    assert d.stop() == 0
    assert sorted(os.listdir(root)) == ['bin', 'etc'], 'nothing left behind in the chroot'
