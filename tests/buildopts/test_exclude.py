"""EXCLUDE_<APPLET> options really drop an applet, and the Device Client's EXCLUDE_* names map
onto ours: a second build tree with EXCLUDE_ST (secure tunneling) and EXCLUDE_IOT_CONFIG."""
import os
import subprocess

SOURCE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get('IOT_BUILD_DIR', os.path.join(SOURCE, 'build'))
DEPS = os.environ.get('IOT_DEPS_PREFIX', '')


def cache_value(key):
    try:
        with open(os.path.join(BUILD, 'CMakeCache.txt')) as f:
            for line in f:
                if line.startswith(f'{key}:'):
                    return line.strip().split('=', 1)[1]
    except OSError:
        pass
    return ''


def test_excluded_applets_are_gone_and_the_rest_works():
    tree = os.path.join(BUILD, 'exclude-test')
    args = ['cmake', '-S', SOURCE, '-B', tree, '-DEXCLUDE_ST=ON', '-DEXCLUDE_IOT_CONFIG=ON', '-DIOT_TESTS=OFF']
    if DEPS:
        args.append(f'-DIOT_DEPS_PREFIX={DEPS}')
    # In a build with the trimmed OpenSSL (make OPENSSL=trimmed), the deps were built against it.
    openssl_root = cache_value('IOT_OPENSSL_ROOT')
    if openssl_root:
        args.append(f'-DIOT_OPENSSL_ROOT={openssl_root}')
    subprocess.run(args, check=True, capture_output=True)
    subprocess.run(['cmake', '--build', tree, '-j2', '--target', 'iotbox'], check=True, capture_output=True)
    binary = os.path.join(tree, 'iotbox')
    listing = subprocess.run([binary, '--list'], capture_output=True, text=True).stdout.split()
    assert listing == ['iotd', 'iot-provision', 'iot-job-run', 'iot-metrics']
    r = subprocess.run([binary, 'iot-tunnel'], capture_output=True, text=True)
    assert r.returncode == 127
    assert 'iot-tunnel' not in subprocess.run([binary, '--version'], capture_output=True, text=True).stdout
