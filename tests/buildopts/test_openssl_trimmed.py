"""The trimmed OpenSSL (`make OPENSSL=trimmed`, toolchains/openssl.sh) keeps what iotbox needs.

`make check` builds iotbox once more against it, in <build>/trimmed-test (OpenSSL from Debian's
source, libmosquitto against it, iotbox; kept for the next run), and runs a smoke against that
binary: the TLS matrix of test_tls_algorithms.py, mutual TLS to the test broker, provisioning by
CSR with a key made on the device (EC and RSA), and a tunnel through the fakecloud's WebSocket
service. A build that links the trimmed OpenSSL itself (build-trim/) tests its own binary here,
and its `make OPENSSL=trimmed check` runs every suite against it anyway.

Its own ctest entry (pytest-openssl-trimmed, tests/CMakeLists.txt) runs it with IOT_TRIMMED_TEST=1,
beside the other suites rather than after them; pytest-buildopts passes over it. Measured on 2
cores the first time: 53 s for OpenSSL and the other deps, 19 s for iotbox, 6 s of tests when idle
(137 s and 38 s when busy); a second run only rebuilds what changed."""
import os
import re
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))
BUILD = os.environ.get('IOT_BUILD_DIR', os.path.join(SOURCE, 'build'))
IOTBOX = os.path.abspath(os.environ.get('IOTBOX', os.path.join(BUILD, 'iotbox')))
# The applet tests of the smoke, by name (-k), so that a renamed test drops out rather than errs.
SMOKE = ['connects_over_mutual_tls_and_stops_cleanly', 'key_made_on_the_device',
         'carries_a_connection_to_a_mapped_service']

pytestmark = pytest.mark.skipif(os.environ.get('IOT_TRIMMED_TEST') != '1',
                                reason='run by its own ctest entry, pytest-openssl-trimmed (IOT_TRIMMED_TEST=1)')


def cache_value(build, key):
    try:
        with open(os.path.join(build, 'CMakeCache.txt')) as f:
            for line in f:
                m = re.match(rf'{key}:[A-Z]+=(.*)', line.strip())
                if m:
                    return m.group(1)
    except OSError:
        pass
    return ''


def timed(args, log, **kw):
    start = time.time()
    with open(log, 'a') as f:
        f.write(f'$ {" ".join(args)}\n')
        f.flush()
        r = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT, **kw)
    assert r.returncode == 0, f'{" ".join(args)} failed, see {log}'
    return time.time() - start


@pytest.fixture(scope='module')
def trimmed():
    """The binary linked with the trimmed OpenSSL: this build's own, or one built for the test."""
    if cache_value(BUILD, 'IOT_OPENSSL_ROOT'):
        return IOTBOX
    tree = os.path.join(BUILD, 'trimmed-test')
    os.makedirs(tree, exist_ok=True)
    log = os.path.join(tree, 'build.log')
    triplet = subprocess.run(['gcc', '-dumpmachine'], capture_output=True, text=True, check=True).stdout.strip()
    deps = os.path.join(tree, 'deps')
    env = dict(os.environ, IOT_OPENSSL='trimmed')
    took = {'deps (OpenSSL, libmosquitto, cJSON)': timed([os.path.join(SOURCE, 'toolchains', 'deps.sh'), triplet,
                                                          deps], log, env=env)}
    args = ['cmake', '-S', SOURCE, '-B', tree, '-DIOT_TESTS=OFF', f'-DIOT_DEPS_PREFIX={deps}/{triplet}',
            f'-DIOT_OPENSSL_ROOT={deps}/{triplet}/openssl']
    took['configure'] = timed(args, log)
    took['iotbox'] = timed(['cmake', '--build', tree, '-j2', '--target', 'iotbox'], log)
    with open(os.path.join(tree, 'timings.txt'), 'a') as f:
        f.write(time.strftime('%F %T ') + ', '.join(f'{k} {v:.0f} s' for k, v in took.items()) + '\n')
    return os.path.join(tree, 'iotbox')


def test_it_links_the_trimmed_openssl(trimmed):
    version = subprocess.run([trimmed, '--version'], capture_output=True, text=True, check=True).stdout
    assert re.search(r'OpenSSL 3\.0\.\d+', version), version
    with open(trimmed, 'rb') as f:
        data = f.read()
    # toolchains/openssl.sh's OPENSSLDIR, not Debian's /usr/lib/ssl, and no build path.
    assert b'OPENSSLDIR: "/etc/ssl"' in data
    assert b'/usr/lib/ssl' not in data
    assert b'/deps/' not in data


def test_tls_matrix(trimmed):
    r = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                        os.path.join(HERE, 'test_tls_algorithms.py')],
                       env=dict(os.environ, IOTBOX=trimmed), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_broker_provisioning_and_tunnel_smoke(trimmed):
    if trimmed == IOTBOX:
        pytest.skip('this build links the trimmed OpenSSL: pytest-applets runs every suite against it')
    r = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-k', ' or '.join(SMOKE),
                        os.path.join(SOURCE, 'tests', 'applets', 'test_iotd.py'),
                        os.path.join(SOURCE, 'tests', 'applets', 'test_iot_provision.py'),
                        os.path.join(SOURCE, 'tests', 'applets', 'test_iotd_tunnel.py')],
                       env=dict(os.environ, IOTBOX=trimmed), capture_output=True, text=True, timeout=600,
                       cwd=SOURCE)
    summary = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ''
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    passed = re.search(r'(\d+) passed', summary)
    assert passed and int(passed.group(1)) >= len(SMOKE), summary
