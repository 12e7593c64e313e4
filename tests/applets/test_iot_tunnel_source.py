"""iot-tunnel --source, the operator's end, against the fakecloud's tunneling service, with iotd or
iot-tunnel --destination at the device end and echo servers behind it: real processes, real
sockets, TLS WebSockets on loopback. Plain TCP clients stand in for ssh and the like."""
import hashlib
import os
import re
import socket
import subprocess
import threading
import time

import pytest

from test_iotd_tunnel import (assert_no_token, clean_env, echo, start_iotd, tunnel_cmd,  # noqa: F401
                              wait_destination, wait_subscribed)


def run(args, env, timeout=30):
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


def wait_source(cloud, t, connected=True, handshakes=1):
    return cloud.cmd('wait_tunnel', tunnel_id=t['tunnel_id'], end='source', connected=connected,
                     handshakes=handshakes, timeout=15)['tunnel']


def start_source(iotbox, broker, cloud, workdir, daemons, t, services, *extra, name='source'):
    """Starts iot-tunnel --source with the tunnel's source token; returns the daemon and
    {service: port} parsed from its "listens on" lines (IPv4)."""
    port = cloud.cmd('ping')['tunnel_port']
    env = clean_env(HOME=workdir, AWSIOT_TUNNEL_ACCESS_TOKEN=t['source_token'])
    d = daemons([iotbox, 'iot-tunnel', '--source', '--services', services, '--endpoint', f'localhost:{port}',
                 '--root-ca', broker.ca, *extra], os.path.join(workdir, f'{name}.out'), env=env)
    n = len(services.split(','))
    d.wait_for('listens on', count=n)
    ports = {}
    for m in re.finditer(r'(?:service (\S+)|the tunnel\'s service) listens on 127\.0\.0\.1:(\d+)', d.output()):
        ports[m.group(1) or ''] = int(m.group(2))
    assert len(ports) == n, d.output()
    return d, ports


def start_destination(iotbox, broker, cloud, workdir, daemons, t, server):
    """iot-tunnel --destination for the tunnel's ECHO service, to the echo server."""
    env = clean_env(HOME=workdir, AWSIOT_TUNNEL_ACCESS_TOKEN=t['destination_token'])
    return daemons(tunnel_cmd(iotbox, broker, cloud, server), os.path.join(workdir, 'dest.out'), env=env)


def iotd_and_source(iotbox, broker, cloud, workdir, daemons, thing, services, **tunnel):
    """iotd with this service map, a tunnel to its thing for all of them (notified), and
    iot-tunnel --source on free ports for the same names: (iotd, tunnel, source, {name: port})."""
    d = start_iotd(iotbox, broker, cloud, workdir, daemons, thing, services)
    wait_subscribed(d, thing)
    t = cloud.cmd('open_tunnel', thing=thing, services=list(services), **tunnel)
    src, ports = start_source(iotbox, broker, cloud, workdir, daemons, t, ','.join(f'{n}=0' for n in services))
    wait_destination(cloud, t)
    return d, t, src, ports


def client(port, timeout=10):
    s = socket.create_connection(('127.0.0.1', port), timeout=timeout)
    s.settimeout(timeout)
    return s


def read_exactly(s, n):
    got = bytearray()
    while len(got) < n:
        chunk = s.recv(min(65536, n - len(got)))
        if not chunk:
            break
        got += chunk
    return bytes(got)


def echo_round(s, tag, payload):
    """Sends payload to an echo server behind the tunnel; on a new connection it greets with tag +
    newline first (tag None: a connection already greeted)."""
    s.sendall(payload)
    want = (b'' if tag is None else tag + b'\n') + payload
    got = read_exactly(s, len(want))
    assert got == want, (len(got), len(want))


def echo_until_served(port, tag, payload, src, timeout=15):
    """A new connection's echo round, tried again until the source carries it (it may still be
    closing the connection before, or reconnecting)."""
    deadline = time.time() + timeout
    while True:
        c = client(port)
        try:
            echo_round(c, tag, payload)
            c.close()
            return
        except (AssertionError, OSError):
            c.close()
            assert time.time() < deadline, src.output()
            time.sleep(0.2)


def closed_by_peer(s, timeout=10):
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def test_source_to_iotd_three_services_with_several_connections_each(iotbox, broker, cloud, workdir, daemons,
                                                                     echo):
    servers = {name: echo(name.lower()) for name in ('SSH', 'WEB', 'DB')}
    d, t, src, ports = iotd_and_source(iotbox, broker, cloud, workdir, daemons, 'src-multi',
                                       {name: f'127.0.0.1:{s.port}' for name, s in servers.items()})
    wait_subscribed(d, 'src-multi')
    t = cloud.cmd('open_tunnel', thing='src-multi', services=list(servers))
    src, ports = start_source(iotbox, broker, cloud, workdir, daemons, t, 'SSH=0,WEB=0,DB=0')
    wait_destination(cloud, t)
    conns = [(name, i, client(ports[name])) for name in servers for i in range(3)]
    # All nine at once, each with its own payload, interleaved.
    for name, i, s in conns:
        s.sendall(b'%s-%d|' % (name.encode(), i) * 2000)
    for name, i, s in conns:
        want = name.lower().encode() + b'\n' + b'%s-%d|' % (name.encode(), i) * 2000
        assert read_exactly(s, len(want)) == want
    assert [servers[n].accepted for n in servers] == [3, 3, 3]
    # V3: one stream per service, connections 1..3 in it.
    log = cloud.cmd('tunnel_log', tunnel_id=t['tunnel_id'], types=['STREAM_START', 'CONNECTION_START'])['entries']
    starts = [(e['type'], e['serviceId'], e['streamId'], e['connectionId']) for e in log if e['from'] == 'source']
    for name in servers:
        assert ('STREAM_START', name, 1, 1) in starts
        assert {c for (ty, sv, st, c) in starts if sv == name and ty == 'CONNECTION_START'} == {2, 3}
    # Closing a local client resets its connection only; the others go on.
    conns[0][2].close()
    s = conns[1][2]
    echo_round(s, None, b'still here')  # no new greeting: the same connection
    state = cloud.cmd('tunnels', tunnel_id=t['tunnel_id'])['tunnels'][0]
    assert not state['violations'], state['violations']
    for _, _, s in conns[1:]:
        s.close()
    assert_no_token(src, t['source_token'], t['destination_token'])
    assert src.stop() == 0
    assert d.stop() == 0


def test_a_connection_made_while_the_source_connects_waits_for_it(iotbox, broker, cloud, workdir, daemons, echo):
    server = echo('early')
    t = cloud.cmd('open_tunnel', thing='src-early', services=['ECHO'], notify=False)
    dest = start_destination(iotbox, broker, cloud, workdir, daemons, t, server)
    wait_destination(cloud, t)
    # The service answers the source's first two upgrades with 503: it retries with backoff, and
    # a client that connects meanwhile waits in the listener's backlog instead of being refused.
    cloud.cmd('tunnel_hooks', tunnel_id=t['tunnel_id'], http_status=503, http_status_count=2,
              http_status_mode='source')
    src, ports = start_source(iotbox, broker, cloud, workdir, daemons, t, 'ECHO=0')
    s = client(ports['ECHO'], timeout=30)
    s.sendall(b'sent early')
    want = b'early\nsent early'
    assert read_exactly(s, want.__len__()) == want, src.output()
    assert src.output().count('503') >= 2
    s.close()
    assert src.stop() == 0
    assert dest.stop() == 0


def test_v2_tunnel_one_connection_per_service(iotbox, broker, cloud, workdir, daemons, echo):
    server = echo('v2')
    d, t, src, ports = iotd_and_source(iotbox, broker, cloud, workdir, daemons, 'src-v2', {'ECHO': server.port},
                                       max_version=2)
    assert wait_source(cloud, t)['ends']['source']['version'] == 2
    a = client(ports['ECHO'])
    echo_round(a, b'v2', b'first')
    # A second connection while the first is open: refused, and the first is untouched.
    b = client(ports['ECHO'])
    assert closed_by_peer(b)
    src.wait_for('one connection per service at a time')
    echo_round(a, None, b'first again')
    a.close()
    # Once the first is gone, the next gets a new stream (id 2), without connection ids.
    echo_until_served(ports['ECHO'], b'v2', b'second', src)
    log = cloud.cmd('tunnel_log', tunnel_id=t['tunnel_id'])['entries']
    starts = [e for e in log if e['from'] == 'source' and e['type'] == 'STREAM_START']
    assert [e['streamId'] for e in starts][:2] == [1, 2]
    assert all(not e['connectionId'] for e in log if e['from'] == 'source')
    state = cloud.cmd('tunnels', tunnel_id=t['tunnel_id'])['tunnels'][0]
    assert not state['violations'], state['violations']
    assert src.stop() == 0
    assert d.stop() == 0


def test_v1_destination_client_type_sends_no_ids(iotbox, broker, cloud, workdir, daemons, echo):
    server = echo('v1')
    t = cloud.cmd('open_tunnel', thing='src-v1', services=['ECHO'], notify=False)
    # A bare port binds the tunnel's one service, as the local proxy's "-s 2222" does.
    src, ports = start_source(iotbox, broker, cloud, workdir, daemons, t, '0', '--destination-client-type', 'V1')
    dest = start_destination(iotbox, broker, cloud, workdir, daemons, t, server)
    wait_destination(cloud, t)
    assert wait_source(cloud, t)['ends']['source']['version'] == 1
    s = client(ports[''])
    echo_round(s, b'v1', b'over V1')
    s.close()
    log = cloud.cmd('tunnel_log', tunnel_id=t['tunnel_id'])['entries']
    mine = [e for e in log if e['from'] == 'source']
    assert any(e['type'] == 'STREAM_START' for e in mine)
    assert all(not e['serviceId'] and not e['connectionId'] for e in mine)
    assert src.stop() == 0
    assert dest.stop() == 0


def test_source_reconnects_after_its_websocket_is_dropped(iotbox, broker, cloud, workdir, daemons, echo):
    server = echo('drop')
    d, t, src, ports = iotd_and_source(iotbox, broker, cloud, workdir, daemons, 'src-drop',
                                       {'ECHO': server.port})
    s = client(ports['ECHO'])
    echo_round(s, b'drop', b'before')
    cloud.cmd('tunnel_hooks', tunnel_id=t['tunnel_id'], drop='source')
    # The local connection rode on the lost WebSocket: it is closed, not left hanging.
    assert closed_by_peer(s)
    wait_source(cloud, t, handshakes=2)
    echo_until_served(ports['ECHO'], b'drop', b'after', src)
    state = cloud.cmd('tunnels', tunnel_id=t['tunnel_id'])['tunnels'][0]
    assert state['ends']['source']['client_token']  # the same client token both times
    assert src.stop() == 0
    assert d.stop() == 0


def test_bulk_both_ways_through_source_and_iotd(iotbox, broker, cloud, workdir, daemons):
    """20 MB each way at once through both of our ends, sha256 compared at the far side."""
    sink = socket.socket()
    sink.bind(('127.0.0.1', 0))
    sink.listen(1)
    size = 20 * 1024 * 1024
    result = {}

    def serve():
        c, _ = sink.accept()
        digest = hashlib.sha256()
        got = 0
        def send():
            block = bytes(range(256)) * 256
            for _ in range(size // len(block)):
                c.sendall(block)
            # No shutdown(SHUT_WR): the tunnel protocol has no half-close, an EOF ends the connection.
        th = threading.Thread(target=send)
        th.start()
        while got < size:
            chunk = c.recv(1 << 20)
            if not chunk:
                break
            digest.update(chunk)
            got += len(chunk)
        result['server'] = (got, digest.hexdigest())
        th.join()
        c.close()

    threading.Thread(target=serve, daemon=True).start()
    d, t, src, ports = iotd_and_source(iotbox, broker, cloud, workdir, daemons, 'src-bulk',
                                       {'BULK': sink.getsockname()[1]})
    s = client(ports['BULK'], timeout=60)
    payload = os.urandom(1 << 20)
    sent = hashlib.sha256()

    def upload():
        for _ in range(size // len(payload)):
            s.sendall(payload)
            sent.update(payload)
    up = threading.Thread(target=upload)
    up.start()
    down = hashlib.sha256()
    got = 0
    while got < size:
        chunk = s.recv(1 << 20)
        assert chunk, f'the download stopped at {got} bytes'
        down.update(chunk)
        got += len(chunk)
    up.join()
    deadline = time.time() + 60
    while 'server' not in result and time.time() < deadline:
        time.sleep(0.1)
    assert result.get('server') == (size, sent.hexdigest())
    assert down.hexdigest() == hashlib.sha256((bytes(range(256)) * 256) * (size // 65536)).hexdigest()
    s.close()
    sink.close()
    assert src.stop() == 0
    assert d.stop() == 0


def test_source_usage_and_errors(iotbox, broker, cloud, workdir, daemons):
    port = cloud.cmd('ping')['tunnel_port']
    base = [iotbox, 'iot-tunnel', '--source', '--endpoint', f'localhost:{port}', '--root-ca', broker.ca]
    env = clean_env(HOME=workdir, AWSIOT_TUNNEL_ACCESS_TOKEN='AQGAAXnot-a-token-of-this-service')
    r = run(base, env)
    assert r.returncode == 2 and '--source needs --services' in r.stderr
    r = run([iotbox, 'iot-tunnel', '--source', '--destination', '--services', 'SSH=0'], env)
    assert r.returncode == 2 and 'say --source' in r.stderr
    r = run(base + ['--services', 'SSH=0', '--destination-client-type', 'V7'], env)
    assert r.returncode == 2 and '--destination-client-type' in r.stderr
    r = run(base + ['--services', 'A=0,B=0', '--destination-client-type', 'V1'], env)
    assert r.returncode == 2 and 'V1 destination takes one service' in r.stderr
    r = run(base + ['--services', 'SSH=0'], clean_env(HOME=workdir))
    assert r.returncode == 2 and 'AWSIOT_TUNNEL_ACCESS_TOKEN' in r.stderr and 'source token' in r.stderr
    # A port that is taken: exit 1, naming it.
    busy = socket.socket()
    busy.bind(('127.0.0.1', 0))
    busy.listen(1)
    taken = busy.getsockname()[1]
    r = run(base + ['--services', f'SSH=127.0.0.1:{taken}'], env)
    busy.close()
    assert r.returncode == 1 and f'127.0.0.1:{taken}' in r.stderr and 'in use' in r.stderr, r.stderr
    # A token the service does not know: refused (403), exit 1, and never printed.
    r = run(base + ['--services', 'SSH=0'], env)
    assert r.returncode == 1 and '403' in r.stderr
    assert 'not-a-token-of-this-service' not in r.stderr + r.stdout
