"""iot-metrics against the real /proc of this machine, with sockets the test opens itself, and
--publish against the test broker and the fakecloud's Defender API (which validates the schema)."""
import json
import os
import pty
import socket
import stat

import cbor2
import pytest

from conftest import device_config, run

THING = 'metrics-thing'


@pytest.fixture
def sockets():
    """A TCP listener on 127.0.0.1, one on every address, a bound UDP socket on 127.0.0.1 and an
    established loopback connection."""
    opened = []

    def sock(*args):
        s = socket.socket(*args)
        opened.append(s)
        return s
    lo_tcp = sock(socket.AF_INET, socket.SOCK_STREAM)
    lo_tcp.bind(('127.0.0.1', 0))
    lo_tcp.listen()
    any_tcp = sock(socket.AF_INET, socket.SOCK_STREAM)
    any_tcp.bind(('0.0.0.0', 0))
    any_tcp.listen()
    udp = sock(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(('127.0.0.1', 0))
    client = sock(socket.AF_INET, socket.SOCK_STREAM)
    client.connect(lo_tcp.getsockname())
    server, _ = lo_tcp.accept()
    opened.append(server)

    class S:
        pass
    s = S()
    s.lo_port = lo_tcp.getsockname()[1]
    s.any_port = any_tcp.getsockname()[1]
    s.udp_port = udp.getsockname()[1]
    s.client_port = client.getsockname()[1]
    yield s
    for o in opened:
        o.close()


def write_config(workdir, **defender):
    cfg = {'state-directory': os.path.join(workdir, 'state'), 'device-defender': defender}
    path = os.path.join(workdir, 'metrics.conf')
    with open(path, 'w') as f:
        json.dump(cfg, f)
    os.chmod(path, 0o640)
    return path


def metrics(iotbox, cfg, *args, binary=False):
    return run([iotbox, 'iot-metrics', '--config-file', cfg] + list(args), text=not binary)


def listed(ports, port):
    return [p for p in ports if p['port'] == port]


def test_lists_the_ports_and_connections_the_test_opened(iotbox, workdir, sockets):
    r = metrics(iotbox, write_config(workdir, **{'max-list-size': 10000}), '--format', 'json')
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report['header']['version'] == '1.0' and report['header']['report_id'] > 0
    m = report['metrics']
    tcp, udp = m['listening_tcp_ports'], m['listening_udp_ports']
    # Loopback sockets are listed with the loopback interface; a wildcard one has no interface.
    assert listed(tcp['ports'], sockets.lo_port) == [{'interface': 'lo', 'port': sockets.lo_port}]
    assert listed(tcp['ports'], sockets.any_port) == [{'port': sockets.any_port}]
    assert listed(udp['ports'], sockets.udp_port) == [{'interface': 'lo', 'port': sockets.udp_port}]
    assert tcp['total'] == len(tcp['ports']) and udp['total'] == len(udp['ports'])
    # Both ends of the loopback connection are established connections.
    conns = m['tcp_connections']['established_connections']
    mine = {(c['local_port'], c['remote_addr'], c.get('local_interface')) for c in conns['connections']}
    assert (sockets.client_port, f'127.0.0.1:{sockets.lo_port}', 'lo') in mine
    assert (sockets.lo_port, f'127.0.0.1:{sockets.client_port}', 'lo') in mine
    assert conns['total'] == len(conns['connections'])
    # No report published yet: the network deltas are a zero baseline.
    assert m['network_stats'] == {'bytes_in': 0, 'bytes_out': 0, 'packets_in': 0, 'packets_out': 0}
    assert 'custom_metrics' not in report


def test_lists_are_capped_with_the_true_total(iotbox, workdir, sockets):
    r = metrics(iotbox, write_config(workdir, **{'max-list-size': 1}), '--format', 'json')
    assert r.returncode == 0, r.stderr
    tcp = json.loads(r.stdout)['metrics']['listening_tcp_ports']
    assert len(tcp['ports']) == 1 and tcp['total'] >= 2


def test_short_names_and_cbor_equal_the_json(iotbox, workdir, sockets):
    with open(os.path.join(workdir, 'peers'), 'w') as f:
        f.write('10.0.0.1\n2001:db8::1\n')
    cfg = write_config(workdir, **{'custom-metrics': {
        'peers': {'type': 'ip-list', 'file': os.path.join(workdir, 'peers')},
        'ratio': {'type': 'number', 'command': ['/bin/echo', '0.25']}}})
    j = metrics(iotbox, cfg, '--format', 'json', '--names', 'short')
    c = metrics(iotbox, cfg, '--format', 'cbor', '--names', 'short', binary=True)
    assert j.returncode == 0 and c.returncode == 0, (j.stderr, c.stderr)
    from_json = json.loads(j.stdout)
    from_cbor = cbor2.loads(c.stdout)
    # Deterministic CBOR: an independent encoder writes the same bytes for the decoded report.
    assert cbor2.dumps(from_cbor, canonical=True) == c.stdout
    assert set(from_cbor) == set(from_json) == {'hed', 'met', 'cmet'}
    assert set(from_cbor['met']) == set(from_json['met']) == {'tp', 'up', 'ns', 'tc'}
    assert from_cbor['cmet'] == from_json['cmet'] == {
        'peers': [{'ip_list': ['10.0.0.1', '2001:db8::1']}], 'ratio': [{'number': 0.25}]}
    for report in (from_json, from_cbor):
        assert report['hed']['v'] == '1.0'
        assert {'if': 'lo', 'pt': sockets.lo_port} in report['met']['tp']['pts']
    assert len(c.stdout) < len(j.stdout)


def test_a_failing_custom_metric_is_reported_and_the_others_still_appear(iotbox, workdir):
    with open(os.path.join(workdir, 'temp'), 'w') as f:
        f.write('41.5\n')
    cfg = write_config(workdir, **{'custom-metrics': {
        'temp': {'type': 'number', 'file': os.path.join(workdir, 'temp')},
        'users': {'type': 'string-list', 'command': ['/bin/echo', 'alice']},
        'broken': {'type': 'number', 'command': ['/bin/sh', '-c', 'echo no sensor >&2; exit 4']},
        'not_ips': {'type': 'ip-list', 'command': ['/bin/echo', '1.2.3.4 999.1.1.1']},
        'gone': {'type': 'number', 'file': os.path.join(workdir, 'missing')}}})
    r = metrics(iotbox, cfg, '--format', 'json')
    assert r.returncode == 1
    report = json.loads(r.stdout)
    assert report['custom_metrics'] == {'temp': [{'number': 41.5}], 'users': [{'string_list': ['alice']}]}
    assert 'listening_tcp_ports' in report['metrics']
    assert 'custom metric "broken": command /bin/sh: exit status 4: no sensor' in r.stderr
    assert 'custom metric "not_ips": command /bin/echo: "999.1.1.1" is not an IPv4 or IPv6 address' in r.stderr
    assert 'custom metric "gone": ' in r.stderr and 'No such file or directory' in r.stderr


def test_a_bad_custom_metric_definition_is_a_configuration_error(iotbox, workdir):
    cfg = write_config(workdir, **{'custom-metrics': {'x': {'type': 'float', 'file': '/tmp/x'}}})
    r = metrics(iotbox, cfg)
    assert r.returncode == 2
    assert 'device-defender.custom-metrics' in r.stderr and 'custom metric "x": "type" must be one of' in r.stderr
    assert f'{cfg}:1' in r.stderr


def test_table_on_a_terminal_and_cbor_as_hex(iotbox, workdir, sockets):
    cfg = write_config(workdir)

    def on_terminal(*args):
        master, slave = pty.openpty()
        r = run([iotbox, 'iot-metrics', '--config-file', cfg] + list(args), stdout=slave, capture_output=False,
                stderr=-1)
        os.close(slave)
        out = b''
        try:
            while True:
                chunk = os.read(master, 65536)
                if not chunk:
                    break
                out += chunk
        except OSError:
            pass
        os.close(master)
        return r.returncode, out.decode()
    rc, table = on_terminal()
    assert rc == 0
    assert 'listening TCP ports' in table and 'established TCP connections' in table
    assert f'{sockets.lo_port}' in table and 'no previous report' in table
    rc, hexed = on_terminal('--format', 'cbor')
    assert rc == 0
    assert cbor2.loads(bytes.fromhex(hexed.strip()))['header']['version'] == '1.0'


def test_usage_errors(iotbox):
    for args, text in ((['--format', 'xml'], '--format: expected json or cbor'),
                       (['--names', 'medium'], '--names: expected long or short'),
                       (['--interval', '5'], '--interval needs --publish'),
                       (['--publish', '--interval', '0'], '--interval: expected')):
        r = run([iotbox, 'iot-metrics'] + args)
        assert r.returncode == 2 and text in r.stderr, (args, r.stderr)
    r = run([iotbox, 'iot-metrics', '--help'])
    assert r.returncode == 0 and '--publish' in r.stdout


# ---- publishing to the fakecloud's Defender API


def publish_config(broker, workdir, **defender):
    cfg, _ = device_config(broker, workdir, THING, **{'state-directory': os.path.join(workdir, 'state'),
                                                        'device-defender': defender})
    return cfg


def test_publish_is_accepted_and_the_cloud_sees_the_ports(iotbox, broker, cloud, workdir, sockets):
    cfg = publish_config(broker, workdir, **{'max-list-size': 10000})
    r = run([iotbox, 'iot-metrics', '--publish', '--config-file', cfg])
    assert r.returncode == 0, r.stderr
    assert 'accepted' in r.stderr
    reports = cloud.cmd('defender_reports', thing=THING)['reports']
    assert len(reports) == 1
    entry = reports[0]
    assert entry['accepted'] and entry['format'] == 'json' and entry['names'] == 'long', entry
    m = entry['report']['metrics']
    assert {'interface': 'lo', 'port': sockets.lo_port} in m['listening_tcp_ports']['ports']
    assert {'port': sockets.any_port} in m['listening_tcp_ports']['ports']
    assert {'interface': 'lo', 'port': sockets.udp_port} in m['listening_udp_ports']['ports']
    conns = m['tcp_connections']['established_connections']['connections']
    assert {'local_interface': 'lo', 'local_port': sockets.client_port,
            'remote_addr': f'127.0.0.1:{sockets.lo_port}'} in conns
    # The state file keeps the id and the counters for the next report, private to the device.
    state = os.path.join(workdir, 'state', 'metrics.json')
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
    saved = json.load(open(state))
    assert saved['last_report_id'] == entry['report']['header']['report_id'] and saved['counters']

    # The next report: a larger id, and network deltas since this one (no longer a baseline).
    r = run([iotbox, 'iot-metrics', '--publish', '--config-file', cfg])
    assert r.returncode == 0, r.stderr
    reports = cloud.cmd('defender_reports', thing=THING)['reports']
    assert len(reports) == 2 and reports[1]['accepted'] and 'warning' not in reports[1], reports[1]
    assert reports[1]['report']['header']['report_id'] > reports[0]['report']['header']['report_id']
    assert reports[1]['report']['metrics']['network_stats']['bytes_in'] >= 0


def test_publish_cbor_with_short_names(iotbox, broker, cloud, workdir, sockets):
    cfg = publish_config(broker, workdir, format='cbor', names='short')
    r = run([iotbox, 'iot-metrics', '--publish', '--config-file', cfg])
    assert r.returncode == 0, r.stderr
    entry = cloud.cmd('defender_reports', thing=THING)['reports'][-1]
    assert entry['accepted'] and entry['format'] == 'cbor' and entry['names'] == 'short', entry
    assert entry['topic'] == f'$aws/things/{THING}/defender/metrics/cbor'
    assert {'if': 'lo', 'pt': sockets.lo_port} in entry['report']['met']['tp']['pts']


def test_a_rejected_report_exits_1_with_the_reason(iotbox, broker, cloud, workdir):
    cloud.cmd('defender_config', throttle_seconds=300)
    cfg = publish_config(broker, workdir)
    first = run([iotbox, 'iot-metrics', '--publish', '--config-file', cfg])
    assert first.returncode == 0, first.stderr
    second = run([iotbox, 'iot-metrics', '--publish', '--config-file', cfg])
    assert second.returncode == 1
    assert 'rejected: ThrottlingException: ' in second.stderr, second.stderr
    reports = cloud.cmd('defender_reports', thing=THING)['reports']
    assert [e['accepted'] for e in reports] == [True, False]


def test_publish_to_a_custom_topic(iotbox, broker, cloud, workdir):
    topic = f'things/{THING}/metrics'
    cfg = publish_config(broker, workdir, topic=topic)
    r = run([iotbox, 'iot-metrics', '--publish', '--config-file', cfg])
    assert r.returncode == 0, r.stderr
    assert f'published to {topic}' in r.stderr
    msg = cloud.cmd('wait', topic=topic, timeout=10)['message']
    assert json.loads(msg['payload'])['header']['version'] == '1.0'
    assert cloud.cmd('defender_reports', thing=THING)['reports'] == []
