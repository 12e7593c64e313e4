"""Secure tunneling end to end: the fakecloud's tunneling service publishes the notification,
iotd (or iot-tunnel --destination) is the device end, a Python source end (tunnel_source.py)
plays the operator, and local echo servers are the services the tunnel reaches."""
import os
import socket
import threading
import time

import pytest

from conftest import device_config, run
from tunnel_source import P2, STREAM_RESET, Source


class EchoServer:
    """Greets each connection with "<tag>\\n", then echoes; counts the connections it accepted."""

    def __init__(self, tag):
        self.tag = tag
        self.accepted = 0
        self.listener = socket.socket()
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.conns = []
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(c)
            threading.Thread(target=self._echo, args=(c,), daemon=True).start()

    def _echo(self, c):
        try:
            c.sendall(self.tag.encode() + b'\n')
            while True:
                data = c.recv(65536)
                if not data:
                    break
                c.sendall(data)
        except OSError:
            pass
        finally:
            c.close()

    def stop(self):
        self.stopping = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        except OSError:
            pass
        self.listener.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.thread.join(5)


@pytest.fixture
def echo():
    servers = []

    def make(tag):
        s = EchoServer(tag)
        servers.append(s)
        return s
    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def sources():
    made = []

    def make(*args, **kw):
        s = Source(*args, **kw)
        made.append(s)
        return s.connect()
    yield make
    for s in made:
        s.close()


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if 'proxy' not in k.lower() and not k.startswith('AWSIOT_')}
    env.update(extra)
    return env


def start_iotd(iotbox, broker, cloud, workdir, daemons, thing, services, *args, env=None):
    port = cloud.cmd('ping')['tunnel_port']
    cfg, _ = device_config(broker, workdir, thing, tunneling={
        'enabled': True, 'endpoint': f'localhost:{port}', 'services': services})
    d = daemons([iotbox, 'iotd', '--config-file', cfg, *args], os.path.join(workdir, f'{thing}.out'),
                env=env or clean_env())
    return d


def wait_subscribed(d, thing):
    d.wait_for(f'subscribed to $aws/things/{thing}/tunnels/notify')


def tunnel_state(cloud, t):
    return cloud.cmd('tunnels', tunnel_id=t['tunnel_id'])['tunnels'][0]


def wait_destination(cloud, t, handshakes=1, timeout=15):
    return cloud.cmd('wait_tunnel', tunnel_id=t['tunnel_id'], end='destination', connected=True,
                     handshakes=handshakes, timeout=timeout)['tunnel']


def assert_no_token(d, *tokens):
    out = d.output()
    for tok in tokens:
        assert tok[:32] not in out, 'a tunnel token was logged'


def test_iotd_carries_a_connection_to_a_mapped_service(iotbox, broker, cloud, workdir, daemons, echo, sources):
    server = echo('echo')
    d = start_iotd(iotbox, broker, cloud, workdir, daemons, 'tun-thing', {'ECHO': f'127.0.0.1:{server.port}'})
    wait_subscribed(d, 'tun-thing')
    t = cloud.cmd('open_tunnel', thing='tun-thing', services=['ECHO'])
    d.wait_for('tunnel 1: opening for ECHO')
    wait_destination(cloud, t)
    src = sources(broker, t['ws_port'], t['source_token'])
    assert src.service_ids() == ['ECHO']
    src.stream_start('ECHO', 1, 1)
    src.send_data('ECHO', 1, 1, b'hello through the tunnel')
    assert src.wait_data('ECHO', 1, b'echo\nhello through the tunnel') == b'echo\nhello through the tunnel'
    assert server.accepted == 1
    d.proc.send_signal(10)  # SIGUSR1: the status names the open tunnel
    d.wait_for('status: tunnels: 1 open (1: ECHO connected, 1 connections)')
    assert_no_token(d, t['destination_token'], t['source_token'])
    assert d.stop() == 0


def test_two_services_with_several_v3_connections_each(iotbox, broker, cloud, workdir, daemons, echo, sources):
    a, b = echo('alpha'), echo('beta')
    d = start_iotd(iotbox, broker, cloud, workdir, daemons, 'tun-multi',
                   {'ALPHA': f'127.0.0.1:{a.port}', 'BETA': b.port, 'UNUSED': '127.0.0.1:1'})
    wait_subscribed(d, 'tun-multi')
    t = cloud.cmd('open_tunnel', thing='tun-multi', services=['ALPHA', 'BETA'])
    wait_destination(cloud, t)
    src = sources(broker, t['ws_port'], t['source_token'])
    assert sorted(src.service_ids()) == ['ALPHA', 'BETA']
    for service in ('ALPHA', 'BETA'):
        src.stream_start(service, 1, 1)
        for c in (2, 3):
            src.connection_start(service, 1, c)
    for service in ('ALPHA', 'BETA'):
        for c in (1, 2, 3):
            src.send_data(service, 1, c, b'%s-%d-' % (service.encode(), c) * 100)
    for service, tag in (('ALPHA', b'alpha'), ('BETA', b'beta')):
        for c in (1, 2, 3):
            want = tag + b'\n' + b'%s-%d-' % (service.encode(), c) * 100
            assert src.wait_data(service, c, want) == want
    assert (a.accepted, b.accepted) == (3, 3)
    assert d.stop() == 0


def test_a_notification_for_an_unmapped_service_is_refused(iotbox, broker, cloud, workdir, daemons, echo):
    server = echo('echo')
    d = start_iotd(iotbox, broker, cloud, workdir, daemons, 'tun-refuse', {'ECHO': server.port})
    wait_subscribed(d, 'tun-refuse')
    t = cloud.cmd('open_tunnel', thing='tun-refuse', services=['ECHO', 'RDP'])
    d.wait_for('tunnel notification for ECHO, RDP refused: no local endpoint for service RDP in tunneling.services')
    # A source-mode notification and a malformed one are refused too, and iotd carries on.
    s = cloud.cmd('open_tunnel', thing='tun-refuse', services=['ECHO'], mode='source')
    d.wait_for("clientMode is 'source'")
    cloud.cmd('publish', topic='$aws/things/tun-refuse/tunnels/notify', payload='{"clientMode": "destination"}')
    d.wait_for("tunnel notification refused: unreadable: 'clientAccessToken' is missing or empty")
    time.sleep(1)
    for tun in (t, s):
        assert tunnel_state(cloud, tun)['ends']['destination']['handshakes'] == 0
    assert server.accepted == 0
    assert 'opening' not in d.output()
    assert d.proc.poll() is None
    assert_no_token(d, t['destination_token'], s['source_token'])
    assert d.stop() == 0


def test_a_duplicate_notification_is_ignored(iotbox, broker, cloud, workdir, daemons, echo):
    server = echo('echo')
    d = start_iotd(iotbox, broker, cloud, workdir, daemons, 'tun-dup', {'ECHO': server.port})
    wait_subscribed(d, 'tun-dup')
    t = cloud.cmd('open_tunnel', thing='tun-dup', services=['ECHO'])
    wait_destination(cloud, t)
    cloud.cmd('publish', topic=t['notify']['topic'], payload=t['notify']['payload'])
    d.wait_for('ignored: a duplicate')
    time.sleep(0.5)
    assert d.output().count('opening for ECHO') == 1
    assert tunnel_state(cloud, t)['ends']['destination']['handshakes'] == 1
    assert d.stop() == 0


def test_at_most_8_tunnels_at_once(iotbox, broker, cloud, workdir, daemons, echo):
    server = echo('echo')
    d = start_iotd(iotbox, broker, cloud, workdir, daemons, 'tun-cap', {'ECHO': server.port})
    wait_subscribed(d, 'tun-cap')
    tunnels = [cloud.cmd('open_tunnel', thing='tun-cap', services=['ECHO']) for _ in range(9)]
    d.wait_for('refused: 8 tunnels are open, the most at once')
    for t in tunnels[:8]:
        wait_destination(cloud, t)
    assert tunnel_state(cloud, tunnels[8])['ends']['destination']['handshakes'] == 0
    # One closes: the refused notification, delivered again, is not taken for a duplicate and
    # opens; then the cap holds again for a new one.
    cloud.cmd('close_tunnel', tunnel_id=tunnels[0]['tunnel_id'])
    d.wait_for('tunnel 1 (ECHO) is over')
    cloud.cmd('publish', topic=tunnels[8]['notify']['topic'], payload=tunnels[8]['notify']['payload'])
    wait_destination(cloud, tunnels[8])
    assert 'ignored: a duplicate' not in d.output()
    t = cloud.cmd('open_tunnel', thing='tun-cap', services=['ECHO'])
    d.wait_for('refused: 8 tunnels are open, the most at once', count=2)
    # Stopping iotd closes every tunnel with the WebSocket close handshake, not a dropped socket.
    assert d.stop() == 0
    d.wait_for('closing 8 tunnels')
    for tun in tunnels[1:]:
        end = tunnel_state(cloud, tun)['ends']['destination']
        assert not end['connected']
        assert end['last_close']['by'] == 'client' and end['last_close']['code'] == 1000, end['last_close']


def test_iotd_survives_a_closed_tunnel_and_takes_the_next(iotbox, broker, cloud, workdir, daemons, echo, sources):
    server = echo('echo')
    d = start_iotd(iotbox, broker, cloud, workdir, daemons, 'tun-close', {'ECHO': server.port})
    wait_subscribed(d, 'tun-close')
    t = cloud.cmd('open_tunnel', thing='tun-close', services=['ECHO'])
    wait_destination(cloud, t)
    src = sources(broker, t['ws_port'], t['source_token'])
    src.stream_start('ECHO', 1, 1)
    src.send_data('ECHO', 1, 1, b'one')
    src.wait_data('ECHO', 1, b'echo\none')
    cloud.cmd('close_tunnel', tunnel_id=t['tunnel_id'])
    d.wait_for('tunnel 1 (ECHO) is over')
    d.proc.send_signal(10)
    d.wait_for('status: tunnels: none open; 1 notifications, 1 opened')
    # The next tunnel works as the first did.
    t2 = cloud.cmd('open_tunnel', thing='tun-close', services=['ECHO'], max_version=2)
    d.wait_for('tunnel 2: opening for ECHO')
    wait_destination(cloud, t2)
    src2 = sources(broker, t2['ws_port'], t2['source_token'], protocol=P2)
    src2.stream_start('ECHO', 7, 0)  # V2: no connection id
    src2.send_data('ECHO', 7, 0, b'two')
    assert src2.wait_data('ECHO', 0, b'echo\ntwo') == b'echo\ntwo'
    assert d.proc.poll() is None
    assert d.stop() == 0


def test_iotd_with_notifications_disabled_opens_the_env_token_tunnel(iotbox, broker, cloud, workdir, daemons, echo,
                                                                     sources):
    server = echo('ssh')
    t = cloud.cmd('open_tunnel', thing='tun-env', services=['SSH'], notify=False)
    d = start_iotd(iotbox, broker, cloud, workdir, daemons, 'tun-env', {'SSH': server.port},
                   '--tunneling-disable-notification', '--tunneling-region', 'us-east-1',
                   '--tunneling-service', 'SSH', env=clean_env(AWSIOT_TUNNEL_ACCESS_TOKEN=t['destination_token']))
    wait_destination(cloud, t)
    src = sources(broker, t['ws_port'], t['source_token'])
    src.stream_start('SSH', 1, 1)
    src.send_data('SSH', 1, 1, b'ping')
    assert src.wait_data('SSH', 1, b'ssh\nping') == b'ssh\nping'
    assert 'tunnels/notify' not in d.output()
    assert_no_token(d, t['destination_token'])
    assert d.stop() == 0


def tunnel_cmd(iotbox, broker, cloud, server, *extra):
    port = cloud.cmd('ping')['tunnel_port']
    return [iotbox, 'iot-tunnel', '--destination', '--services', f'ECHO=127.0.0.1:{server.port}',
            '--endpoint', f'localhost:{port}', '--root-ca', broker.ca, *extra]


def test_iot_tunnel_destination_one_shot(iotbox, broker, cloud, workdir, daemons, echo, sources):
    server = echo('echo')
    t = cloud.cmd('open_tunnel', thing='tun-cli', services=['ECHO'], notify=False)
    env = clean_env(HOME=workdir, AWSIOT_TUNNEL_ACCESS_TOKEN=t['destination_token'])
    d = daemons(tunnel_cmd(iotbox, broker, cloud, server), os.path.join(workdir, 'iot-tunnel.out'), env=env)
    wait_destination(cloud, t)
    src = sources(broker, t['ws_port'], t['source_token'])
    src.stream_start('ECHO', 1, 1)
    src.send_data('ECHO', 1, 1, b'by hand')
    assert src.wait_data('ECHO', 1, b'echo\nby hand') == b'echo\nby hand'
    # The cloud closes the tunnel: a clean end.
    cloud.cmd('close_tunnel', tunnel_id=t['tunnel_id'])
    assert d.proc.wait(20) == 0, d.output()
    assert 'the tunnel is closed' in d.output()
    assert_no_token(d, t['destination_token'])


def test_iot_tunnel_exit_codes(iotbox, broker, cloud, workdir, daemons, echo):
    server = echo('echo')
    env = clean_env(HOME=workdir, AWSIOT_TUNNEL_ACCESS_TOKEN='AQGAAXnot-a-token-of-this-service')
    # A token the service does not know: refused (403), exit 1.
    r = run(tunnel_cmd(iotbox, broker, cloud, server), env=env)
    assert r.returncode == 1, r.stderr
    assert 'the tunnel could not be opened' in r.stderr and '403' in r.stderr
    # SIGTERM while connected: a clean stop, exit 0.
    t = cloud.cmd('open_tunnel', thing='tun-cli2', services=['ECHO'], notify=False)
    env['AWSIOT_TUNNEL_ACCESS_TOKEN'] = t['destination_token']
    d = daemons(tunnel_cmd(iotbox, broker, cloud, server), os.path.join(workdir, 'iot-tunnel.out'), env=env)
    wait_destination(cloud, t)
    assert d.stop() == 0
    # Usage: no token, no mode, --source without its ports.
    del env['AWSIOT_TUNNEL_ACCESS_TOKEN']
    r = run(tunnel_cmd(iotbox, broker, cloud, server), env=env)
    assert r.returncode == 2 and 'AWSIOT_TUNNEL_ACCESS_TOKEN' in r.stderr
    r = run([iotbox, 'iot-tunnel', '--region', 'us-east-1'], env=env)
    assert r.returncode == 2
    r = run([iotbox, 'iot-tunnel', '--source'], env=env)
    assert r.returncode == 2 and '--source needs --services' in r.stderr
    assert 'not available' not in run([iotbox, 'iot-tunnel', '--help']).stdout


def test_a_reset_from_the_service_leaves_iotd_serving(iotbox, broker, cloud, workdir, daemons, echo, sources):
    server = echo('echo')
    d = start_iotd(iotbox, broker, cloud, workdir, daemons, 'tun-reset', {'ECHO': server.port})
    wait_subscribed(d, 'tun-reset')
    t = cloud.cmd('open_tunnel', thing='tun-reset', services=['ECHO'])
    wait_destination(cloud, t)
    src = sources(broker, t['ws_port'], t['source_token'])
    src.stream_start('ECHO', 1, 1)
    src.send_data('ECHO', 1, 1, b'a')
    src.wait_data('ECHO', 1, b'echo\na')
    cloud.cmd('tunnel_hooks', tunnel_id=t['tunnel_id'], to='destination', inject='STREAM_RESET')
    src.stream_start('ECHO', 2, 1)
    src.send_data('ECHO', 2, 1, b'b')
    src.wait(lambda: src.received('ECHO', 1).endswith(b'echo\nb'), what='echo on the new stream')
    assert not [m for m in src.msgs if m['type'] == STREAM_RESET and m['stream'] == 2]
    assert server.accepted == 2
    assert d.stop() == 0
