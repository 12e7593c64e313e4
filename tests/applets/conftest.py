"""Fixtures for the black-box suites: the real static binary, and a real TLS broker per test.

IOTBOX_EMULATOR (e.g. "qemu-aarch64-static", set by a cross `make check`) runs a foreign binary
without binfmt_misc: every command that starts the binary, by its path, a link or a hard link to it,
or as a copy inside a chroot, gets the emulator put in front. Unset, nothing here changes."""
import filecmp
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SOURCE, 'tests', 'testbed'))
import testbed as testbed_mod  # noqa: E402

IOTBOX = os.path.abspath(os.environ.get('IOTBOX', os.path.join(SOURCE, 'build', 'iotbox')))
APPLETS = ['iotd', 'iot-provision', 'iot-job-run', 'iot-metrics', 'iot-tunnel', 'iot-config']
ROOT = os.environ.get('IOT_TESTBED_ROOT', os.path.join(SOURCE, 'build', 'testbed'))
# Taken out of the environment: the binary would warn about an IOTBOX_* variable it does not know.
EMULATOR = shlex.split(os.environ.pop('IOTBOX_EMULATOR', ''))

# What cannot be run under a user-mode emulator called explicitly, and why.
EMULATION_SKIPS = {
    'test_sysvinit_script_starts_reports_reloads_and_stops':
        'the init script execs the binary itself: a foreign binary needs binfmt_misc, not available here',
    'test_sysvinit_start_fails_visibly_on_a_bad_config':
        'the init script execs the binary itself: a foreign binary needs binfmt_misc, not available here',
    'test_init_on_a_terminal_asks_validates_and_asks_again':
        'a shell inside tmux execs the binary itself: a foreign binary needs binfmt_misc, not available here',
}


def pytest_collection_modifyitems(config, items):
    if not EMULATOR:
        return
    for item in items:
        reason = EMULATION_SKIPS.get(item.name.split('[')[0])
        if reason:
            item.add_marker(pytest.mark.skip(reason=f'under {EMULATOR[0]}: {reason}'))


def _runs_iotbox(path):
    try:
        return os.path.isfile(path) and os.path.samefile(path, IOTBOX)
    except OSError:
        return False


def _emulated(args):
    """args with the emulator in front when they start the binary; otherwise args unchanged."""
    if isinstance(args, (str, bytes, os.PathLike)) or not args:
        return args
    args = list(args)
    first = os.fspath(args[0])
    if _runs_iotbox(first):
        return EMULATOR + args
    # chroot ROOT /path/in/root ...: the emulator (static) goes into the chroot beside the binary.
    if os.path.basename(first) == 'chroot' and len(args) >= 3:
        root, inner = os.fspath(args[1]), os.fspath(args[2])
        target = os.path.join(root, inner.lstrip('/'))
        if os.path.isfile(target) and filecmp.cmp(target, IOTBOX, shallow=False):
            emulator = os.path.join(os.path.dirname(target), os.path.basename(EMULATOR[0]))
            shutil.copy(EMULATOR[0], emulator)
            inside = '/' + os.path.relpath(emulator, root)
            return args[:2] + [inside] + EMULATOR[1:] + args[2:]
    return args


if EMULATOR:
    EMULATOR[0] = shutil.which(EMULATOR[0]) or EMULATOR[0]
    _Popen = subprocess.Popen

    class _EmulatedPopen(_Popen):
        def __init__(self, args, *a, **kw):
            super().__init__(_emulated(args), *a, **kw)

    subprocess.Popen = _EmulatedPopen


@pytest.fixture
def iotbox():
    assert os.path.exists(IOTBOX), f'{IOTBOX} not built (run make)'
    return IOTBOX


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix='iotbox-test-')
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def links(iotbox, workdir):
    """A bin directory with a symlink per applet, as on a device."""
    bindir = os.path.join(workdir, 'bin')
    os.makedirs(bindir)
    for a in APPLETS:
        os.symlink(iotbox, os.path.join(bindir, a))
    return bindir


@pytest.fixture
def broker(request):
    os.makedirs(ROOT, exist_ok=True)
    d = tempfile.mkdtemp(prefix=f'{request.node.name[:40]}-', dir=ROOT)
    tb = testbed_mod.Testbed(d)
    tb.up()
    yield tb
    tb.down()
    shutil.rmtree(d, ignore_errors=True)


def run(args, **kw):
    kw.setdefault('capture_output', True)
    kw.setdefault('text', True)
    kw.setdefault('timeout', 30)
    return subprocess.run(args, **kw)


class Daemon:
    """A running iotd whose log lines can be awaited."""

    def __init__(self, args, log_path, env=None, cwd=None):
        self.log_path = log_path
        self.log = open(log_path, 'w')
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=cwd)

    def output(self):
        with open(self.log_path) as f:
            return f.read()

    def wait_for(self, text, timeout=15, count=1):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.output().count(text) >= count:
                return True
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f'"{text}" (x{count}) not seen within {timeout}s; exit={self.proc.poll()}\n{self.output()}')

    def stop(self, sig=15, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.close()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def daemons():
    started = []

    def start(args, log_path, **kw):
        d = Daemon(args, log_path, **kw)
        started.append(d)
        return d
    yield start
    for d in started:
        d.kill()


def device_config(broker, workdir, thing, **extra):
    """A Device Client style config file for `thing` against the test broker."""
    import json
    ident = broker.thing(thing)
    cfg = {
        'endpoint': 'localhost',
        'port': broker.port,
        'cert': ident['cert'],
        'key': ident['key'],
        'root-ca': broker.ca,
        'thing-name': thing,
        'logging': {'level': 'DEBUG', 'type': 'STDOUT'},
        'jobs': {'enabled': False},
        'tunneling': {'enabled': False},
        'device-defender': {'enabled': False},
        'fleet-provisioning': {'enabled': False},
        'lock-file': os.path.join(workdir, 'iotd.lock'),
        'mqtt': {'reconnect-min': 1, 'reconnect-max': 2},
    }
    for k, v in extra.items():
        cfg[k] = v
    path = os.path.join(workdir, f'{thing}.conf')
    with open(path, 'w') as f:
        json.dump(cfg, f, indent=2)
    os.chmod(path, 0o640)
    return path, ident


class Cloud:
    """The fakecloud for one broker, driven through its control socket."""

    def __init__(self, broker):
        import socket  # noqa: F401
        self.broker = broker
        self.log = open(broker.path('fakecloud.out'), 'w')
        self.proc = subprocess.Popen(['/usr/bin/python3', os.path.join(SOURCE, 'tests', 'fakecloud', 'fakecloud.py'),
                                      '--testbed', broker.dir], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                if self.cmd('ping').get('connected'):
                    return
            except (OSError, AssertionError):
                pass
            time.sleep(0.1)
        raise AssertionError('fakecloud did not come up:\n' + open(broker.path('fakecloud.out')).read())

    def cmd(self, name, check=True, sock_timeout=None, **args):
        import json
        import socket
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(sock_timeout or float(args.get('timeout', 0)) + 60)
        s.connect(self.broker.path('fakecloud.sock'))
        s.sendall((json.dumps(dict(cmd=name, **args)) + '\n').encode())
        buf = b''
        while not buf.endswith(b'\n'):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        s.close()
        resp = json.loads(buf)
        if check:
            assert resp.get('ok'), (name, args, resp)
        return resp

    def wait_status(self, thing, job_id, statuses, timeout=20):
        """Wait until the job's latest execution has one of `statuses`; return its view."""
        deadline = time.time() + timeout
        view = None
        while time.time() < deadline:
            view = self.cmd('job', thing=thing, job_id=job_id)['execution']
            if view['status'] in statuses:
                return view
            time.sleep(0.05)
        raise AssertionError(f'{job_id} never reached {statuses}: {view}')

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def cloud(broker):
    c = Cloud(broker)
    yield c
    c.stop()
