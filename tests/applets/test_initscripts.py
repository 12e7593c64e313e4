"""The service files: the sysvinit script run for real against the test broker, the systemd unit
verified by systemd-analyze, the OpenRC script checked for syntax and its contract, and iotd's own
daemon mode, sd_notify readiness and SIGHUP reload."""
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import SOURCE, device_config, run

INIT = os.path.join(SOURCE, 'initscripts')


def wait_file(path, text, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and text in open(path).read():
            return
        time.sleep(0.05)
    raise AssertionError(f'"{text}" not in {path}: ' + (open(path).read() if os.path.exists(path) else 'missing'))


@pytest.fixture
def sysv(iotbox, broker, workdir):
    bindir = os.path.join(workdir, 'sbin')
    os.makedirs(bindir)
    os.symlink(iotbox, os.path.join(bindir, 'iotd'))
    log = os.path.join(workdir, 'iotd.log')
    cfg, _ = device_config(broker, workdir, 'sysv-thing', logging={'level': 'INFO', 'type': 'FILE', 'file': log},
                           jobs={'enabled': False})
    env = dict(os.environ, DAEMON=os.path.join(bindir, 'iotd'), CONFIG=cfg,
               PIDFILE=os.path.join(workdir, 'iotd.pid'), LOCKFILE=os.path.join(workdir, 'iotd.lock'))
    script = os.path.join(INIT, 'iotd.init')
    yield lambda *a: run(['sh', script, *a], env=env), env, log
    run(['sh', script, 'stop'], env=env)


def test_sysvinit_script_starts_reports_reloads_and_stops(sysv):
    script, env, log = sysv
    r = script('start')
    assert r.returncode == 0, r.stdout + r.stderr
    wait_file(log, 'connected to localhost')
    pid = int(open(env['PIDFILE']).read())
    r = script('status')
    assert r.returncode == 0 and f'running (pid {pid})' in r.stdout
    assert script('start').returncode == 0, 'starting twice is harmless'
    assert int(open(env['PIDFILE']).read()) == pid
    r = script('reload')
    assert r.returncode == 0
    wait_file(log, 'SIGHUP: configuration reloaded')
    r = script('stop')
    assert r.returncode == 0
    assert not os.path.exists(f'/proc/{pid}') or ') Z ' in open(f'/proc/{pid}/stat').read()
    assert not os.path.exists(env['PIDFILE'])
    assert 'stopped' in open(log).read()
    r = script('status')
    assert r.returncode == 3 and 'not running' in r.stdout


def test_sysvinit_start_fails_visibly_on_a_bad_config(sysv, workdir):
    script, env, _ = sysv
    with open(env['CONFIG'], 'w') as f:
        f.write('{ "endpoint": ')
    r = script('start')
    assert r.returncode != 0
    assert 'invalid JSON' in r.stderr + r.stdout


def test_daemon_mode_reports_start_errors_through_its_exit_status(iotbox, broker, workdir):
    cfg, _ = device_config(broker, workdir, 'd-thing')
    lock = os.path.join(workdir, 'held.lock')
    holder = subprocess.Popen([iotbox, 'iotd', '--config-file', cfg, '--lock-file', lock],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while not os.path.exists(lock) and time.time() < deadline:
            time.sleep(0.05)
        r = run([iotbox, 'iotd', '-d', '--config-file', cfg, '--lock-file', lock,
                 '--pid-file', os.path.join(workdir, 'p.pid')])
        assert r.returncode == 1
        assert f'pid {holder.pid}' in r.stderr, r.stderr
    finally:
        holder.terminate()
        holder.wait()


def test_sd_notify_ready_status_and_stopping(iotbox, broker, workdir, daemons):
    cfg, _ = device_config(broker, workdir, 'notify-thing')
    path = os.path.join(workdir, 'notify.sock')
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC='400000')
    d = daemons([iotbox, 'iotd', '--config-file', cfg], os.path.join(workdir, 'out'), env=env)
    seen = []
    deadline = time.time() + 10
    while time.time() < deadline and not any('WATCHDOG=1' in m for m in seen):
        seen.append(sock.recv(4096).decode())
    assert seen[0].startswith('READY=1'), seen
    assert any('STATUS=connected' in m for m in seen), seen
    assert any('WATCHDOG=1' in m for m in seen), seen
    d.proc.send_signal(signal.SIGTERM)
    while True:
        m = sock.recv(4096).decode()
        if 'STOPPING=1' in m:
            break
    assert d.proc.wait(10) == 0
    sock.close()


def test_sighup_applies_logging_changes_and_names_what_needs_a_restart(iotbox, broker, workdir, daemons):
    log = os.path.join(workdir, 'iotd.log')
    cfg, _ = device_config(broker, workdir, 'hup-thing', logging={'level': 'INFO', 'type': 'FILE', 'file': log})
    d = daemons([iotbox, 'iotd', '--config-file', cfg], os.path.join(workdir, 'out'))
    wait_file(log, 'connected to')
    conf = json.load(open(cfg))
    conf['logging']['level'] = 'DEBUG'
    conf['mqtt']['keepalive'] = 300
    json.dump(conf, open(cfg, 'w'))
    os.rename(log, log + '.1')  # logrotate
    d.proc.send_signal(signal.SIGHUP)
    wait_file(log, 'SIGHUP: configuration reloaded; applied: logging.level; needs a restart: mqtt.keepalive')
    d.proc.send_signal(signal.SIGUSR1)
    wait_file(log, 'status: connected to localhost')
    # A broken file keeps the running configuration.
    open(cfg, 'w').write('{')
    d.proc.send_signal(signal.SIGHUP)
    wait_file(log, 'configuration not reloaded, keeping the running one')
    assert d.proc.poll() is None
    d.stop()


@pytest.mark.skipif(not shutil.which('systemd-analyze'), reason='systemd-analyze not installed')
def test_systemd_unit_verifies(iotbox, workdir):
    os.symlink(iotbox, os.path.join(workdir, 'iotd'))
    text = open(os.path.join(INIT, 'iotd.service')).read().replace('/usr/sbin/iotd', os.path.join(workdir, 'iotd'))
    unit = os.path.join(workdir, 'iotd.service')
    open(unit, 'w').write(text)
    r = run(['systemd-analyze', 'verify', unit])
    assert r.returncode == 0 and r.stderr.strip() == '', r.stderr
    assert 'Type=notify' in text and 'ExecReload=/bin/kill -HUP $MAINPID' in text


def test_openrc_script_is_valid_sh_with_the_expected_contract():
    path = os.path.join(INIT, 'iotd.openrc')
    assert run(['sh', '-n', path]).returncode == 0
    text = open(path).read()
    assert text.startswith('#!/sbin/openrc-run')
    for needed in ('need net', 'supervisor="supervise-daemon"', '--signal HUP', 'command="/usr/sbin/iotd"'):
        assert needed in text


@pytest.mark.parametrize('init,path,mode', [('systemd', 'lib/systemd/system/iotd.service', 0o644),
                                            ('sysvinit', 'etc/init.d/iotd', 0o755),
                                            ('openrc', 'etc/init.d/iotd', 0o755)])
def test_make_install_lays_out_binary_links_handlers_and_init_file(workdir, init, path, mode):
    dest = os.path.join(workdir, 'root')
    build = os.path.relpath(os.path.dirname(os.environ.get('IOTBOX', os.path.join(SOURCE, 'build', 'iotbox'))), SOURCE)
    r = run(['make', '-s', 'install', f'DESTDIR={dest}', 'PREFIX=/usr', f'INIT={init}', f'BUILD={build}'],
            cwd=SOURCE, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.path.islink(os.path.join(dest, 'usr/sbin/iotd'))
    assert os.readlink(os.path.join(dest, 'usr/bin/iot-job-run')) == '../sbin/iotbox'
    assert os.stat(os.path.join(dest, 'etc/iotbox/jobs')).st_mode & 0o777 == 0o700
    assert os.stat(os.path.join(dest, 'etc/iotbox/jobs/reboot.sh')).st_mode & 0o777 == 0o700
    assert os.stat(os.path.join(dest, path)).st_mode & 0o777 == mode
    assert '/usr/sbin/iotd' in open(os.path.join(dest, path)).read()
