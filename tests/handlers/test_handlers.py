"""The job handlers iotbox ships (configs/handlers/), run as iotd runs them: argv[1] is the
runAsUser, a minimal environment. Every test runs under dash (/bin/sh) and, when /bin/busybox
exists, under busybox ash. PATH holds only stubs (which record their arguments) and links to the
few real tools the handlers use, so nothing here can install, restart or reboot anything."""
import functools
import hashlib
import http.server
import os
import re
import shutil
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

HANDLERS = Path(__file__).resolve().parents[2] / 'configs' / 'handlers'
BUSYBOX = '/bin/busybox'
SHELLS = {'dash': ['/bin/sh']}
if os.path.exists(BUSYBOX):
    SHELLS['busybox'] = [BUSYBOX, 'sh']
# Real tools the handlers may use besides the shell's builtins.
TOOLS = ['chmod', 'df', 'grep', 'mkdir', 'mktemp', 'mv', 'rm', 'setsid', 'sha256sum', 'sleep',
         'sync', 'tr']
EXPECTED = ['download-file.sh', 'health-check.sh', 'install-packages.sh', 'reboot.sh',
            'remove-packages.sh', 'restart-services.sh', 'shutdown.sh', 'start-services.sh',
            'stop-services.sh', 'verify-packages-installed.sh', 'verify-packages-removed.sh']
# Not handlers: the code the package and the service handlers source, installed beside them.
SHARED = {'packages.sh': ['install-packages.sh', 'remove-packages.sh',
                          'verify-packages-installed.sh', 'verify-packages-removed.sh'],
          'services.sh': ['start-services.sh', 'stop-services.sh', 'restart-services.sh']}


class Box:
    """A scratch directory with a bin/ that is the handler's whole PATH."""

    def __init__(self, root, shell):
        self.root, self.shell = root, shell
        self.bin = root / 'bin'
        self.bin.mkdir()
        self.log = root / 'calls.log'
        self.log.touch()
        self.sids = root / 'sids.log'
        for tool in TOOLS:
            self.link(tool, shutil.which(tool))
        # The handlers' detached "sh -c" runs the shell under test.
        self.link('sh', shell[0])
        self.env = {'PATH': str(self.bin), 'HOME': str(root), 'LANG': 'C',
                    'IOTBOX_SYSTEMD_DIR': str(root / 'no-systemd'),
                    'IOTBOX_INITD_DIR': str(root / 'init.d')}

    def link(self, name, target):
        (self.bin / name).symlink_to(target)

    def stub(self, name, status=0, body='', where=None, first=''):
        """A command that runs first, appends "name args..." to calls.log, runs body, exits with
        status."""
        path = (where or self.bin) / name
        path.write_text(
            f'#!/bin/sh\nPATH=/usr/bin:/bin\n{first}\n'
            f'line="{name}"; for a; do line="$line $a"; done; printf "%s\\n" "$line" >>"{self.log}"\n'
            f'{body}\nexit {status}\n')
        path.chmod(0o755)
        return path

    def stub_recording_session(self, name):
        # The session is recorded before the call, so that it is there once wait_calls sees it.
        return self.stub(name, first=f'cut -d" " -f6 /proc/$$/stat >>"{self.sids}"')

    def systemd(self):
        (self.root / 'systemd').mkdir()
        self.env['IOTBOX_SYSTEMD_DIR'] = str(self.root / 'systemd')

    def calls(self):
        return self.log.read_text().splitlines()

    def wait_calls(self, count, timeout=5):
        deadline = time.monotonic() + timeout
        while len(self.calls()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.calls()

    def run(self, handler, *args, env=None, timeout=10):
        return subprocess.run(self.shell + [str(HANDLERS / handler), *args], cwd=self.root,
                              env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout)

    def popen(self, handler, *args, env=None):
        return subprocess.Popen(self.shell + [str(HANDLERS / handler), *args], cwd=self.root,
                                env={**self.env, **(env or {})}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)


@pytest.fixture(params=list(SHELLS))
def box(request, tmp_path):
    return Box(tmp_path, SHELLS[request.param])


def one_line(text):
    assert text.endswith('\n') and text.count('\n') == 1, repr(text)
    return text


# ---- all handlers ----------------------------------------------------------------------------

def test_every_handler_is_there_executable_with_a_header():
    assert sorted(p.name for p in HANDLERS.iterdir()) == sorted(EXPECTED + list(SHARED))
    for p in HANDLERS.iterdir():
        # git keeps only the executable bit; the install step makes them 0700 (checked by iotd).
        assert p.stat().st_mode & stat.S_IXUSR, p.name
        text = p.read_text()
        assert text.startswith('#!/bin/sh\n# ' + p.name + ': '), p.name
        assert '# Usage:  ' + p.name in text and '# Exit:' in text, p.name


@pytest.mark.skipif(not shutil.which('shellcheck'), reason='shellcheck not installed')
def test_shellcheck_finds_nothing_in_posix_sh_mode():
    out = subprocess.run(['shellcheck', '-s', 'sh', *sorted(map(str, HANDLERS.iterdir()))],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize('handler', [h for h in EXPECTED if h != 'health-check.sh'])
def test_missing_arguments_are_a_usage_error(box, handler):
    out = box.run(handler)
    assert out.returncode == 2
    assert 'usage: ' + handler in one_line(out.stderr)


# ---- the shared code (packages.sh, services.sh) ---------------------------------------------

def run_path(box, path, *args, cwd=None):
    return subprocess.run(box.shell + [str(path), *args], cwd=cwd or box.root, env=box.env,
                          capture_output=True, text=True, timeout=10)


@pytest.fixture
def installed(box):
    """The handlers installed as make install does, into a 0700 directory, as iotd wants it."""
    jobs = box.root / 'jobs'
    jobs.mkdir(mode=0o700)
    subprocess.run(['install', '-m', '0700', *sorted(map(str, HANDLERS.glob('*.sh'))), str(jobs)],
                   check=True)
    box.stub('apk')
    box.stub('rc-service')
    return jobs


WRAPPED = [(h, lib) for lib, handlers in SHARED.items() for h in handlers]
EXPECTED_CALLS = {'install-packages.sh': 'apk add a', 'remove-packages.sh': 'apk del a',
                  'verify-packages-installed.sh': 'apk info -e a',
                  'verify-packages-removed.sh': 'apk info -e a',
                  'start-services.sh': 'rc-service a start', 'stop-services.sh': 'rc-service a stop',
                  'restart-services.sh': 'rc-service a restart'}


def test_the_shared_code_is_installed_0700_with_the_handlers(installed):
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in installed.iterdir()}
    assert modes == {name: 0o700 for name in EXPECTED + list(SHARED)}


@pytest.mark.parametrize('handler, lib', WRAPPED)
def test_each_handler_works_from_the_handler_directory(box, installed, handler, lib):
    out = run_path(box, installed / handler, '', 'a')
    # verify-packages-removed.sh fails on purpose: the apk stub says a is installed.
    assert out.returncode == (1 if handler == 'verify-packages-removed.sh' else 0), out.stderr
    assert box.calls() == [EXPECTED_CALLS[handler]]
    # Called by a relative name ($0 without a slash), through a symlink and under another name.
    (installed / 'link.sh').symlink_to(handler)
    shutil.copy2(installed / handler, installed / 'renamed.sh')
    for path, cwd in [(handler, installed), ('./' + handler, installed),
                      (installed / 'link.sh', None), (installed / 'renamed.sh', None)]:
        again = run_path(box, path, '', 'a', cwd=cwd)
        assert (again.returncode, again.stdout, again.stderr) == \
            (out.returncode, out.stdout, out.stderr.replace(handler, Path(path).name))
    usage = run_path(box, installed / 'renamed.sh', '')
    assert usage.returncode == 2 and 'usage: renamed.sh USER ' in one_line(usage.stderr)
    assert len(box.calls()) == 5


@pytest.mark.parametrize('handler, lib', WRAPPED)
def test_a_handler_copied_without_the_shared_code_says_so(box, handler, lib):
    alone = box.root / 'alone'
    alone.mkdir()
    shutil.copy2(HANDLERS / handler, alone)
    out = run_path(box, alone / handler, '', 'a')
    assert out.returncode == 1
    assert one_line(out.stderr) == f'{handler}: cannot read {alone}/{lib}\n'
    assert box.calls() == []


@pytest.mark.parametrize('lib', list(SHARED))
def test_the_shared_code_run_as_a_handler_refuses(box, lib):
    box.stub('apk')
    box.stub('rc-service')
    for args in [(), ('', 'a'), ('restart', 'a')]:
        out = run_path(box, HANDLERS / lib, *args)
        assert out.returncode == 2
        assert one_line(out.stderr).startswith(f'{lib}: not a handler: ')
    assert box.calls() == []


# ---- download-file.sh ------------------------------------------------------------------------

PAYLOAD = bytes(range(256)) * 64
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp('www')
    (root / 'fw.bin').write_bytes(PAYLOAD)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown()
    httpd.server_close()


DOWNLOADERS = ['curl', 'wget'] + (['busybox-wget'] if os.path.exists(BUSYBOX) else [])


@pytest.fixture(params=DOWNLOADERS)
def fetcher(request, box):
    name = request.param
    box.link('wget' if 'wget' in name else 'curl', BUSYBOX if 'busybox' in name else
             shutil.which(name))
    return box


def listing(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir()}


@pytest.mark.parametrize('user', ['', 'pi'])
def test_download_verified_into_a_file(fetcher, server, user):
    out_dir = fetcher.root / 'out'
    out_dir.mkdir()
    out = fetcher.run('download-file.sh', user, server + '/fw.bin', str(out_dir / 'new.bin'),
                      PAYLOAD_SHA.upper())
    assert out.returncode == 0, out.stderr
    assert 'SHA-256 verified' in one_line(out.stdout)
    assert listing(out_dir) == {'new.bin': PAYLOAD}
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((out_dir / 'new.bin').stat().st_mode) == 0o666 & ~umask


def test_download_into_a_directory_is_named_after_the_url_and_hides_its_query(fetcher, server):
    out_dir = fetcher.root / 'out'
    out_dir.mkdir()
    out = fetcher.run('download-file.sh', '', server + '/fw.bin?X-Amz-Signature=SECRET',
                      str(out_dir) + '/')
    assert out.returncode == 0, out.stderr
    assert listing(out_dir) == {'fw.bin': PAYLOAD}
    assert 'SECRET' not in out.stdout + out.stderr


def test_checksum_mismatch_keeps_the_old_file_and_leaves_nothing(fetcher, server):
    out_dir = fetcher.root / 'out'
    out_dir.mkdir()
    (out_dir / 'fw.bin').write_bytes(b'old')
    out = fetcher.run('download-file.sh', '', server + '/fw.bin', str(out_dir / 'fw.bin'),
                      '0' * 64)
    assert out.returncode == 1
    assert 'SHA-256 mismatch' in one_line(out.stderr) and PAYLOAD_SHA in out.stderr
    assert listing(out_dir) == {'fw.bin': b'old'}


def test_download_error_fails_and_leaves_nothing(fetcher, server):
    out_dir = fetcher.root / 'out'
    out_dir.mkdir()
    out = fetcher.run('download-file.sh', '', server + '/missing.bin', str(out_dir))
    assert out.returncode == 1
    assert 'download of ' + server + '/missing.bin failed' in one_line(out.stderr)
    assert listing(out_dir) == {}


def test_download_prefers_curl_and_needs_curl_or_wget(box):
    out = box.run('download-file.sh', '', 'http://example.invalid/x', str(box.root / 'x'))
    assert out.returncode == 1
    assert 'neither curl nor wget' in one_line(out.stderr)
    box.stub('wget')
    box.stub('curl', 7, 'echo "curl: (7) Failed to connect" >&2')
    out = box.run('download-file.sh', '', 'http://example.invalid/x', str(box.root / 'x'))
    assert out.returncode == 1
    assert out.stderr.endswith('failed: curl: (7) Failed to connect\n')
    assert [c.split()[0] for c in box.calls()] == ['curl']
    assert not (box.root / 'x').exists()


@pytest.mark.parametrize('args, status, message', [
    (['http://h/x', 'out', 'abc'], 2, 'SHA256 must be 64 hex digits'),
    (['http://h/x', 'out', 'g' * 64], 2, 'SHA256 must be 64 hex digits'),
    (['--output=/etc/passwd', 'out'], 2, 'not a URL'),
    (['http://h/x', 'no/such/dir/out'], 1, 'directory no/such/dir does not exist'),
    (['http://h', '.'], 2, 'cannot name a file after http://h'),
])
def test_download_argument_errors(box, args, status, message):
    box.stub('curl')
    out = box.run('download-file.sh', '', *args)
    assert out.returncode == status
    assert message in one_line(out.stderr)
    assert box.calls() == []


# ---- packages --------------------------------------------------------------------------------

APT_OPTS = '-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold'
PACKAGE_COMMANDS = {
    'install-packages.sh': {'apt-get': f'apt-get install -y {APT_OPTS} a b',
                            'opkg': 'opkg install a b', 'apk': 'apk add a b',
                            'dnf': 'dnf install -y a b', 'yum': 'yum install -y a b'},
    'remove-packages.sh': {'apt-get': 'apt-get remove -y --purge a b', 'opkg': 'opkg remove a b',
                           'apk': 'apk del a b', 'dnf': 'dnf remove -y a b',
                           'yum': 'yum remove -y a b'},
}


@pytest.mark.parametrize('handler', list(PACKAGE_COMMANDS))
@pytest.mark.parametrize('manager', ['apt-get', 'opkg', 'apk', 'dnf', 'yum'])
def test_package_manager_is_found_and_called(box, handler, manager):
    box.stub(manager, body=f'echo "DEBIAN_FRONTEND=$DEBIAN_FRONTEND" >>"{box.log}"')
    out = box.run(handler, '', 'a', 'b')
    assert out.returncode == 0, out.stderr
    frontend = 'noninteractive' if manager == 'apt-get' else ''
    assert box.calls() == [PACKAGE_COMMANDS[handler][manager], 'DEBIAN_FRONTEND=' + frontend]


@pytest.mark.parametrize('handler', list(PACKAGE_COMMANDS))
def test_package_manager_order_failure_and_absence(box, handler):
    out = box.run(handler, 'root', 'a')
    assert out.returncode == 1
    assert 'no package manager found' in one_line(out.stderr)
    for manager in ['yum', 'apk', 'opkg']:
        box.stub(manager)
    box.stub('apt-get', 100)
    out = box.run(handler, 'root', 'a')
    assert out.returncode == 1
    assert 'apt-get could not' in one_line(out.stderr) and '(exit 100)' in out.stderr
    assert [c.split()[0] for c in box.calls()] == ['apt-get']
    out = box.run(handler, 'root', 'a', '-oAPT::Update::Pre-Invoke::=id')
    assert out.returncode == 2
    assert "not a package name: '-oAPT" in one_line(out.stderr)
    assert len(box.calls()) == 1


# Each stub package database knows foo and multi as installed, bar and nope as not.
PACKAGE_DBS = {
    'dpkg-query': ('for p; do :; done\ncase $p in\n'
                   "foo) printf 'install ok installed\\n' ;;\n"
                   "multi) printf 'deinstall ok config-files\\ninstall ok installed\\n' ;;\n"
                   "bar) printf 'deinstall ok config-files\\n' ;;\n"
                   "half) printf 'install ok half-installed\\n' ;;\n"
                   '*) echo "dpkg-query: no packages found matching $p" >&2; exit 1 ;;\nesac'),
    'opkg': ('case $2 in\n'
             "foo | multi) printf 'Package: %s\\nVersion: 1\\nStatus: install user installed\\n'"
             ' "$2" ;;\n'
             "bar) printf 'Package: bar\\nStatus: deinstall user not-installed\\n' ;;\nesac"),
    'apk': 'case $3 in foo | multi) exit 0 ;; esac\nexit 1',
    'rpm': 'case $2 in foo | multi) echo "$2-1.0"; exit 0 ;; esac\n'
           'echo "package $2 is not installed"; exit 1',
}


@pytest.mark.parametrize('db', list(PACKAGE_DBS))
def test_verify_packages_with_each_database(box, db):
    box.stub(db, body=PACKAGE_DBS[db])
    ok = box.run('verify-packages-installed.sh', '', 'foo', 'multi')
    assert ok.returncode == 0, ok.stderr
    missing = box.run('verify-packages-installed.sh', '', 'foo', 'bar', 'nope')
    assert missing.returncode == 1
    assert one_line(missing.stderr).endswith(': not installed: bar nope\n')
    ok = box.run('verify-packages-removed.sh', '', 'bar', 'nope')
    assert ok.returncode == 0, ok.stderr
    found = box.run('verify-packages-removed.sh', '', 'bar', 'multi', 'foo')
    assert found.returncode == 1
    assert one_line(found.stderr).endswith(': still installed: multi foo\n')
    assert {c.split()[0] for c in box.calls()} == {db}
    if db == 'dpkg-query':
        assert box.run('verify-packages-installed.sh', '', 'half').returncode == 1
        assert box.run('verify-packages-removed.sh', '', 'half').returncode == 0
        assert box.calls()[0] == r'dpkg-query -W -f=${Status}\n foo'


@pytest.mark.parametrize('handler', ['verify-packages-installed.sh',
                                     'verify-packages-removed.sh'])
def test_verify_prefers_dpkg_and_needs_a_database(box, handler):
    out = box.run(handler, '', 'foo')
    assert out.returncode == 1
    assert 'no package database tool found' in one_line(out.stderr)
    box.stub('rpm')
    box.stub('dpkg-query', body=PACKAGE_DBS['dpkg-query'])
    box.run(handler, '', 'foo')
    assert [c.split()[0] for c in box.calls()] == ['dpkg-query']


# ---- services --------------------------------------------------------------------------------

SERVICE_HANDLERS = {'start': 'start-services.sh', 'stop': 'stop-services.sh',
                    'restart': 'restart-services.sh'}


@pytest.mark.parametrize('action', list(SERVICE_HANDLERS))
def test_services_under_systemd(box, action):
    box.systemd()
    box.stub('systemctl')
    box.stub('rc-service')
    out = box.run(SERVICE_HANDLERS[action], '', 'a', 'b.service')
    assert out.returncode == 0, out.stderr
    assert box.calls() == [f'systemctl {action} a', f'systemctl {action} b.service']


@pytest.mark.parametrize('action', list(SERVICE_HANDLERS))
def test_services_under_openrc(box, action):
    box.stub('rc-service')
    box.stub('service')
    out = box.run(SERVICE_HANDLERS[action], 'pi', 'a')
    assert out.returncode == 0, out.stderr
    assert box.calls() == [f'rc-service a {action}']


@pytest.mark.parametrize('action', list(SERVICE_HANDLERS))
def test_services_under_sysvinit(box, action):
    handler = SERVICE_HANDLERS[action]
    initd = box.root / 'init.d'
    initd.mkdir()
    box.stub('a', where=initd)
    out = box.run(handler, '', 'a', 'b')
    assert out.returncode == 1
    assert f'cannot {action} b: no {initd}/b and no service command' in one_line(out.stderr)
    box.stub('service')
    out = box.run(handler, '', 'a', 'b')
    assert out.returncode == 0, out.stderr
    assert box.calls() == [f'a {action}', f'a {action}', f'service b {action}']


@pytest.mark.parametrize('action', list(SERVICE_HANDLERS))
def test_first_service_failure_ends_the_step(box, action):
    box.systemd()
    box.stub('systemctl', body='[ "$2" != bad ] || exit 5')
    out = box.run(SERVICE_HANDLERS[action], '', 'a', 'bad', 'c')
    assert out.returncode == 1
    assert f'{action} bad failed (systemd, exit 5)' in one_line(out.stderr)
    assert box.calls() == [f'systemctl {action} a', f'systemctl {action} bad']
    for name in ['../x', '-x', '']:
        out = box.run(SERVICE_HANDLERS[action], '', 'a', name)
        assert out.returncode == 2
        assert f"not a service name: '{name}'" in one_line(out.stderr)
    assert len(box.calls()) == 2


@pytest.mark.parametrize('action', ['restart', 'stop'])
def test_iotd_is_restarted_or_stopped_after_the_handler_exits(box, action):
    box.systemd()
    box.stub_recording_session('systemctl')
    out = box.run(SERVICE_HANDLERS[action], '', 'a', 'iotd', env={'IOTBOX_DETACH_DELAY': '1'})
    # run() returned before the delayed command ran: the handler did not wait for it, and the
    # detached command holds none of the handler's pipes.
    assert out.returncode == 0, out.stderr
    assert box.calls() == [f'systemctl {action} a']
    assert box.wait_calls(2) == [f'systemctl {action} a', f'systemctl {action} iotd']
    sids = [int(s) for s in box.sids.read_text().split()]
    assert sids[0] == os.getsid(0) and sids[1] != os.getsid(0)


def test_starting_iotd_is_done_at_once(box):
    box.systemd()
    box.stub('systemctl')
    out = box.run('start-services.sh', '', 'iotd', env={'IOTBOX_DETACH_DELAY': '30'})
    assert out.returncode == 0, out.stderr
    assert box.calls() == ['systemctl start iotd']


# ---- reboot.sh -------------------------------------------------------------------------------

@pytest.fixture
def rebootbox(box):
    box.boot_id = box.root / 'boot_id'
    box.boot_id.write_text('11111111-aaaa\n')
    box.record = box.root / 'state' / 'handlers' / 'reboot.boot-id'
    box.env.update({'IOTBOX_STATE_DIR': str(box.root / 'state'),
                    'IOTBOX_BOOT_ID_FILE': str(box.boot_id), 'IOTBOX_REBOOT_WAIT': '0',
                    'IOTBOX_REBOOT_COMMAND': str(box.bin / 'fake-reboot') + ' now'})
    return box


@pytest.mark.parametrize('user', ['', 'root'])
def test_reboot_asks_then_succeeds_after_the_boot_id_changed(rebootbox, user):
    box = rebootbox
    box.stub('fake-reboot')
    first = box.run('reboot.sh', user)
    assert first.returncode == 3
    assert 'still up after 0 s' in one_line(first.stderr)
    assert box.calls() == ['fake-reboot now']
    assert box.record.read_text() == '11111111-aaaa\n'
    assert stat.S_IMODE(box.record.stat().st_mode) == 0o600
    assert stat.S_IMODE(box.record.parent.stat().st_mode) == 0o700
    # iotd restarted without a reboot: the same boot, so ask again.
    assert box.run('reboot.sh', user).returncode == 3
    assert len(box.calls()) == 2
    box.boot_id.write_text('22222222-bbbb\n')
    done = box.run('reboot.sh', user)
    assert done.returncode == 0, done.stderr
    assert 'rebooted: boot id 22222222-bbbb, was 11111111-aaaa' in one_line(done.stdout)
    assert len(box.calls()) == 2
    assert not box.record.exists()
    assert box.run('reboot.sh', user).returncode == 3  # a new request after that
    assert len(box.calls()) == 3


def test_reboot_command_failure_removes_the_record(rebootbox):
    rebootbox.stub('fake-reboot', 1)
    out = rebootbox.run('reboot.sh', '')
    assert out.returncode == 1
    assert f"reboot command '{rebootbox.bin}/fake-reboot now' failed (exit 1)" in \
        one_line(out.stderr)
    assert not rebootbox.record.exists()


def test_reboot_default_commands(rebootbox):
    box = rebootbox
    del box.env['IOTBOX_REBOOT_COMMAND']
    out = box.run('reboot.sh', '')
    assert out.returncode == 1
    assert 'no reboot command found' in one_line(out.stderr)
    for name in ['busybox', 'reboot', 'systemctl']:
        box.stub(name)
        if name == 'systemctl':
            box.systemd()
        assert box.run('reboot.sh', '').returncode == 3
    assert box.calls() == ['busybox reboot', 'reboot', 'systemctl reboot']


def test_reboot_waits_to_be_taken_down_ignoring_sigterm(rebootbox):
    rebootbox.stub('fake-reboot')
    started = time.monotonic()
    proc = rebootbox.popen('reboot.sh', '', env={'IOTBOX_REBOOT_WAIT': '1'})
    assert rebootbox.wait_calls(1) == ['fake-reboot now']
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 3, err
    assert time.monotonic() - started >= 1
    assert 'still up after 1 s' in err


def test_reboot_cancelled_during_the_delay_removes_the_record(rebootbox):
    rebootbox.stub('fake-reboot')
    proc = rebootbox.popen('reboot.sh', '', '30')
    deadline = time.monotonic() + 5
    while not rebootbox.record.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert rebootbox.record.exists()
    os.killpg(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=5)
    assert proc.returncode == 1
    assert not rebootbox.record.exists()
    assert rebootbox.calls() == []


@pytest.mark.parametrize('args, env, status, message', [
    (['', 'soon'], {}, 2, "DELAY_SECONDS must be a whole number of seconds, got 'soon'"),
    ([''], {'IOTBOX_REBOOT_WAIT': '-1'}, 2, 'IOTBOX_REBOOT_WAIT must be a whole number'),
    ([''], {'IOTBOX_BOOT_ID_FILE': '/nonexistent'}, 1, 'cannot read the boot id'),
    ([''], {'IOTBOX_STATE_DIR': '/proc/nonexistent'}, 1, 'cannot write /proc/nonexistent'),
])
def test_reboot_errors(rebootbox, args, env, status, message):
    rebootbox.stub('fake-reboot')
    out = rebootbox.run('reboot.sh', *args, env=env)
    assert out.returncode == status
    # The reason is the last line; mkdir may have said why before it.
    assert out.stderr.endswith('\n') and message in out.stderr.splitlines()[-1], out.stderr
    assert rebootbox.calls() == []


# ---- shutdown.sh -----------------------------------------------------------------------------

def test_shutdown_under_systemd_is_scheduled_by_shutdown(box):
    box.systemd()
    box.stub('shutdown')
    box.stub('poweroff')
    assert box.run('shutdown.sh', '').returncode == 0
    assert box.run('shutdown.sh', 'pi', '5').returncode == 0
    assert box.calls() == ['shutdown -h +1', 'shutdown -h +5']


def test_shutdown_now_runs_detached_after_the_handler_exits(box):
    box.systemd()
    box.stub_recording_session('poweroff')
    out = box.run('shutdown.sh', '', '0', env={'IOTBOX_DETACH_DELAY': '1'})
    assert out.returncode == 0, out.stderr
    assert 'power-off (poweroff) in 1 s' in one_line(out.stdout)
    assert box.calls() == []
    assert box.wait_calls(1) == ['poweroff']
    assert int(box.sids.read_text()) != os.getsid(0)


def test_shutdown_command_override_and_errors(box):
    box.stub('shutdown')
    box.stub('fake-off')
    assert box.run('shutdown.sh', '', 'x').returncode == 2
    out = box.run('shutdown.sh', '', '0', env={
        'IOTBOX_SHUTDOWN_COMMAND': f'{box.bin}/fake-off -p', 'IOTBOX_DETACH_DELAY': '0'})
    assert out.returncode == 0, out.stderr
    assert box.wait_calls(1) == ['fake-off -p']
    (box.bin / 'shutdown').unlink()
    out = box.run('shutdown.sh', '')
    assert out.returncode == 1
    assert 'no command to power off found' in one_line(out.stderr)


# ---- health-check.sh -------------------------------------------------------------------------

@pytest.mark.parametrize('user', ['', 'pi'])
def test_health_check_prints_one_line(box, user):
    out = box.run('health-check.sh', user)
    assert out.returncode == 0 and out.stderr == ''
    m = re.fullmatch(r'up \d+d \d\d:\d\d, load [\d.]+ [\d.]+ [\d.]+, '
                     r'memory (\d+)/(\d+) MiB available, / (\d+)/(\d+) MiB free\n', out.stdout)
    assert m, out.stdout
    mem_avail, mem_total, disk_free, disk_total = map(int, m.groups())
    meminfo = dict(line.split(':', 1) for line in Path('/proc/meminfo').read_text().splitlines())
    assert mem_total == int(meminfo['MemTotal'].split()[0]) // 1024
    assert mem_avail <= mem_total
    fs = os.statvfs('/')
    assert disk_total == fs.f_blocks * fs.f_frsize // 1024 // 1024
    assert disk_free <= disk_total
    (box.bin / 'df').unlink()
    out = box.run('health-check.sh', user)
    assert out.returncode == 0
    assert one_line(out.stdout).endswith(', / ?\n')
