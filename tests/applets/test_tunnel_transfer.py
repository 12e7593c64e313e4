"""Transfers through a whole tunnel, end to end through real processes:

    test client --TCP--> source end --TLS WebSocket--> fakecloud relay --TLS WebSocket--> iotd
    (destination) --TCP--> a local service (echo, sink, sender, a real sshd)

200 MB each way with sha256 compared (at once, and one way at a time), the destination's memory
through 1 GiB (512 MiB each way at once) and with a slow local consumer, tiny and merged frames, a
real ssh to a real sshd, the WebSocket dropped mid-transfer, and 503 answers before the tunnel
opens. test_iotd_tunnel.py and test_iot_tunnel_source.py cover the protocol cases (services,
V1/V2/V3, refusals, resets); this file is about carrying bytes. bench/tunnel_bench.py reuses its
pieces to measure.

The source end is `iot-tunnel --source` when the binary has it, else PySource below (the same
command line); TUNNEL_SOURCE=iotbox|python chooses, TUNNEL_SOURCE=/path/to/iotbox takes another
binary's source end. Run this file as a script for PySource alone:

    python3 test_tunnel_transfer.py --source --services ECHO=0 --endpoint 127.0.0.1:PORT --root-ca CA
        (token in AWSIOT_TUNNEL_ACCESS_TOKEN; prints "... service ECHO listens on 127.0.0.1:PORT")
"""
import asyncio
import base64
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from tunnel_source import (CONNECTION_RESET, CONNECTION_START, DATA, P3, SERVICE_IDS,  # noqa: E402
                           SESSION_RESET, STREAM_RESET, STREAM_START, WS_GUID, decode, encode, ws_frame)

MiB = 1 << 20
# Under qemu-user (a cross `make check`) the binary runs 5-20x slower: the transfers there prove the
# same things on that architecture (byte order, 32-bit sizes) with an eighth of the bytes, and the
# RSS bounds are not checked, since the process measured is the emulator with its code cache.
import conftest  # noqa: E402
EMULATED = bool(conftest.EMULATOR)
SCALE = 8 if EMULATED else 1


# ---------------------------------------------------------------- PySource: a source end in Python


class _Service:
    def __init__(self, name):
        self.name = name
        self.stream = 0       # active stream id, 0: none
        self.last_stream = 0
        self.next_conn = 1
        self.conns = {}       # connection id -> asyncio StreamWriter


class PySource:
    """The operator's end, as the AWS local proxy's source mode (V3 only): a local port per
    service, each accepted connection a connection of the service's stream (the first one starts
    the stream), data both ways with back-pressure (a full local socket stops the WebSocket being
    read, a full WebSocket stops local sockets being read), a lost WebSocket closes every local
    connection and is reconnected with the same client token."""

    def __init__(self, host, port, ca, token, services):
        self.host, self.port, self.ca, self.token = host, port, ca, token
        self.listen = services  # name -> local port (0: any)
        self.services = {name: _Service(name) for name in services}
        self.client_token = str(uuid.uuid4())
        self.ws = None
        self.ready = None
        self.gen = 0

    def log(self, text):
        print('iot-tunnel (python): ' + text, file=sys.stderr, flush=True)

    async def run(self):
        self.ready = asyncio.Event()
        for name, port in self.listen.items():
            server = await asyncio.start_server(lambda r, w, name=name: self.accepted(name, r, w),
                                                '127.0.0.1', port, limit=MiB)
            bound = server.sockets[0].getsockname()[1]
            print('iot-tunnel: service %s listens on 127.0.0.1:%d' % (name, bound), file=sys.stderr, flush=True)
        while True:
            try:
                await self.session()
            except (OSError, EOFError, asyncio.IncompleteReadError, ssl.SSLError, AssertionError) as e:
                self.log('WebSocket lost: %r' % e)
            self.lost()
            await asyncio.sleep(0.5)

    def lost(self):
        self.ready.clear()
        self.ws = None
        self.gen += 1
        for s in self.services.values():
            for w in s.conns.values():
                w.transport.abort()
            s.conns.clear()
            s.stream = 0

    async def session(self):
        ctx = ssl.create_default_context(cafile=self.ca)
        reader, writer = await asyncio.open_connection(self.host, self.port, ssl=ctx, server_hostname=self.host,
                                                       limit=4 * MiB)
        writer.get_extra_info('socket').setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(('GET /tunnel?local-proxy-mode=source HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n'
                      'Connection: upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n'
                      'Sec-WebSocket-Protocol: %s\r\naccess-token: %s\r\nclient-token: %s\r\n\r\n'
                      % (self.host, key, P3, self.token, self.client_token)).encode())
        head = (await reader.readuntil(b'\r\n\r\n')).decode('latin-1')
        status = head.split('\r\n')[0]
        assert status.split(' ')[1] == '101', status
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        assert accept in head, 'bad sec-websocket-accept'
        writer.transport.set_write_buffer_limits(high=256 * 1024)
        self.ws = writer
        self.log('connected')
        buf = bytearray()
        while True:
            h = await reader.readexactly(2)
            n = h[1] & 0x7F
            if n == 126:
                n = struct.unpack('!H', await reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack('!Q', await reader.readexactly(8))[0]
            payload = await reader.readexactly(n) if n else b''
            opcode = h[0] & 0x0F
            if opcode == 0x9:
                writer.write(ws_frame(0xA, payload))
                continue
            if opcode == 0x8:
                writer.write(ws_frame(0x8, payload[:2]))
                return
            if opcode not in (0x0, 0x2):
                continue
            buf += payload
            pos = 0
            while len(buf) - pos >= 2:
                size = (buf[pos] << 8) | buf[pos + 1]
                if len(buf) - pos - 2 < size:
                    break
                m = decode(bytes(buf[pos + 2:pos + 2 + size]))
                pos += 2 + size
                await self.on_message(m)
            del buf[:pos]

    def service(self, name):
        if name:
            return self.services.get(name)
        return next(iter(self.services.values())) if len(self.services) == 1 else None

    async def on_message(self, m):
        t = m['type']
        if t == SERVICE_IDS:
            self.log('services: %s' % ', '.join(m['services']))
            self.ready.set()
            return
        if t == SESSION_RESET:
            for s in self.services.values():
                self.reset_stream(s)
            return
        s = self.service(m['service'])
        if s is None or s.stream == 0 or m['stream'] != s.stream:
            return
        if t == DATA:
            w = s.conns.get(m['connection'] or 1)
            if w is None or w.is_closing():
                return
            w.write(m['payload'])
            if w.transport.get_write_buffer_size() > MiB:
                try:
                    await w.drain()  # back-pressure: the WebSocket is not read meanwhile
                except (ConnectionError, OSError):
                    pass
        elif t == CONNECTION_RESET:
            w = s.conns.pop(m['connection'] or 1, None)
            if w is not None:
                w.close()  # after what was written
        elif t == STREAM_RESET:
            self.reset_stream(s)

    def reset_stream(self, s):
        for w in s.conns.values():
            w.close()
        s.conns.clear()
        s.stream = 0

    async def send(self, msg):
        ws = self.ws
        if ws is None:
            return False
        ws.write(ws_frame(0x2, struct.pack('!H', len(msg)) + msg))
        try:
            await ws.drain()
        except (ConnectionError, OSError):
            return False
        return True

    async def accepted(self, name, reader, writer):
        writer.get_extra_info('socket').setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await self.ready.wait()
        s, gen = self.services[name], self.gen
        if s.stream == 0:
            s.last_stream += 1
            s.stream, s.next_conn = s.last_stream, 2
            cid = 1
            s.conns[cid] = writer
            await self.send(encode(STREAM_START, s.stream, service=name, connection=cid))
        else:
            cid = s.next_conn
            s.next_conn += 1
            s.conns[cid] = writer
            await self.send(encode(CONNECTION_START, s.stream, service=name, connection=cid))
        stream = s.stream
        try:
            while True:
                data = await reader.read(32768)
                if not data or gen != self.gen or s.conns.get(cid) is not writer:
                    break
                if not await self.send(encode(DATA, stream, data, service=name, connection=cid)):
                    break
        except (ConnectionError, OSError):
            pass
        if gen == self.gen and s.conns.get(cid) is writer:
            del s.conns[cid]
            await self.send(encode(CONNECTION_RESET, stream, service=name, connection=cid))
        writer.close()


def pysource_main(argv):
    argv = [a for a in argv if a != '--source']
    args = dict(zip(argv[::2], argv[1::2]))
    host, _, port = args['--endpoint'].rpartition(':')
    services = {}
    for item in args['--services'].split(','):
        name, _, port_text = item.partition('=')
        services[name] = int(port_text)
    src = PySource(host, int(port), args['--root-ca'], os.environ['AWSIOT_TUNNEL_ACCESS_TOKEN'], services)
    try:
        asyncio.run(src.run())
    except KeyboardInterrupt:
        pass


if __name__ == '__main__':
    pysource_main(sys.argv[1:])
    sys.exit(0)


# ---------------------------------------------------------------- the pieces the tests start

import pytest  # noqa: E402

from conftest import device_config  # noqa: E402
from test_iotd_tunnel import clean_env, wait_destination  # noqa: E402

POOL = random.Random(6).randbytes(MiB + 65536)


def chunks(total, size=65536):
    """`total` bytes of a pattern no two 64 KiB chunks of which are equal (a counter in each)."""
    i = sent = 0
    while sent < total:
        n = min(size, total - sent)
        off = (i * 40961) % MiB
        yield (struct.pack('!Q', i) + POOL[off:off + n])[:n]
        sent += n
        i += 1


def pattern_digest(total):
    h = hashlib.sha256()
    for c in chunks(total):
        h.update(c)
    return h.hexdigest()


def recv_exact(sock, n, h=None):
    got = 0
    while got < n:
        data = sock.recv(min(1 << 18, n - got))
        if not data:
            raise EOFError('%d of %d bytes came' % (got, n))
        if h is not None:
            h.update(data)
        got += len(data)
    return got


def read_line(sock):
    line = b''
    while not line.endswith(b'\n'):
        c = sock.recv(1)
        if not c:
            raise EOFError('closed before the line ended: %r' % line)
        line += c
    return line.decode().strip()


class LocalService:
    """The service behind the destination. Each connection names what it wants in its first line:
        echo                       echo everything back
        sink N [BYTES_PER_S]       read N bytes (at most that fast), answer their sha256 hex
        send N                     send N bytes of chunks(N)
    """

    def __init__(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.conns = []
        self.consumed = 0  # bytes the sinks have read so far
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(c)
            threading.Thread(target=self._one, args=(c,), daemon=True).start()

    def _one(self, c):
        try:
            words = read_line(c).split()
            if words[0] == 'echo':
                while True:
                    data = c.recv(1 << 18)
                    if not data:
                        break
                    c.sendall(data)
            elif words[0] == 'sink':
                n = int(words[1])
                rate = float(words[2]) if len(words) > 2 else 0
                h, got, t0 = hashlib.sha256(), 0, time.monotonic()
                while got < n:
                    data = c.recv(min(65536 if rate else 1 << 18, n - got))
                    if not data:
                        break
                    h.update(data)
                    got += len(data)
                    self.consumed += len(data)
                    if rate:
                        ahead = got / rate - (time.monotonic() - t0)
                        if ahead > 0:
                            time.sleep(ahead)
                c.sendall(h.hexdigest().encode() + b'\n')
                c.recv(1)  # until the client closes
            elif words[0] == 'send':
                for chunk in chunks(int(words[1])):
                    c.sendall(chunk)
                c.recv(1)
        except (OSError, EOFError, IndexError, ValueError):
            pass
        finally:
            c.close()

    def stop(self):
        # shutdown() wakes the accept() blocked in _serve; a close() alone leaves it blocked, and a
        # restarted accept() would then take connections of the next listener given the same fd.
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self.thread.join(5)
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def source_impl(iotbox):
    """'iotbox' when the binary has a source end, else 'python'; TUNNEL_SOURCE=iotbox|python chooses,
    and TUNNEL_SOURCE=/path/to/iotbox runs another binary's source end."""
    want = os.environ.get('TUNNEL_SOURCE')
    if want in ('iotbox', 'python') or (want and os.path.isfile(want)):
        return want
    r = subprocess.run([iotbox, 'iot-tunnel', '--source'], capture_output=True, text=True, timeout=10)
    return 'python' if 'not available in this build' in r.stderr else 'iotbox'


class SourceEnd(conftest.Daemon):
    """A running source end: service name -> local port that reaches it through the tunnel."""

    def __init__(self, impl, iotbox, endpoint, ca, token, services, log_path):
        spec = ','.join('%s=0' % s for s in services)
        if impl != 'python':
            binary = iotbox if impl == 'iotbox' else impl
            args = [binary, 'iot-tunnel', '--source', '--services', spec, '--endpoint', endpoint, '--root-ca', ca]
        else:
            args = [sys.executable, os.path.abspath(__file__), '--source', '--services', spec, '--endpoint',
                    endpoint, '--root-ca', ca]
        super().__init__(args, log_path, env=clean_env(AWSIOT_TUNNEL_ACCESS_TOKEN=token,
                                                       HOME=os.path.dirname(log_path)))
        self.impl = impl
        self.ports = {}
        deadline = time.time() + 15
        while len(self.ports) < len(services):
            for name, port in re.findall(r'service (\S+) listens on [^\s:]+:(\d+)', self.output()):
                self.ports[name] = int(port)
            assert self.proc.poll() is None and time.time() < deadline, 'the source end did not listen:\n' + \
                self.output()
            time.sleep(0.05)

    def connect(self, service, timeout=30):
        s = socket.create_connection(('127.0.0.1', self.ports[service]), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def stop(self):
        try:
            return super().stop()
        except subprocess.TimeoutExpired:
            self.kill()


def destination_iotd(iotbox, broker, cloud, workdir, daemons, thing, services):
    port = cloud.cmd('ping')['tunnel_port']
    cfg, _ = device_config(broker, workdir, thing, tunneling={
        'enabled': True, 'endpoint': f'localhost:{port}', 'services': services})
    d = daemons([iotbox, 'iotd', '--config-file', cfg], os.path.join(workdir, f'{thing}.out'), env=clean_env())
    d.wait_for(f'subscribed to $aws/things/{thing}/tunnels/notify')  # a DEBUG line
    # Then INFO (SIGHUP applies it at once): DEBUG logs a line per tunnel message.
    with open(cfg) as f:
        conf = json.load(f)
    conf['logging']['level'] = 'INFO'
    with open(cfg, 'w') as f:
        json.dump(conf, f)
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for('SIGHUP: configuration reloaded')
    return d




class Tunnel:
    """iotd as the destination of a new tunnel to one LocalService, and a source end for it."""

    def __init__(self, iotbox, broker, cloud, workdir, daemons, thing, service_names=('SVC',), notify=True):
        self.cloud, self.service = cloud, LocalService()
        self.iotd = destination_iotd(iotbox, broker, cloud, workdir, daemons, thing,
                                     {name: f'127.0.0.1:{self.service.port}' for name in service_names})
        self.t = cloud.cmd('open_tunnel', thing=thing, services=list(service_names), notify=notify)
        self.iotbox, self.broker, self.workdir, self.names = iotbox, broker, workdir, service_names
        self.source = None

    def open_source(self):
        wait_destination(self.cloud, self.t)
        self.source = SourceEnd(source_impl(self.iotbox), self.iotbox, f'127.0.0.1:{self.t["ws_port"]}',
                                self.broker.ca, self.t['source_token'], self.names,
                                os.path.join(self.workdir, 'source.out'))
        return self

    def hooks(self, **kw):
        return self.cloud.cmd('tunnel_hooks', tunnel_id=self.t['tunnel_id'], **kw)

    def state(self):
        return self.cloud.cmd('tunnels', tunnel_id=self.t['tunnel_id'])['tunnels'][0]

    def connect(self, command, service=None):
        s = self.source.connect(service or self.names[0])
        s.sendall(command.encode() + b'\n')
        return s

    def close(self):
        if self.source:
            self.source.stop()
        self.service.stop()


@pytest.fixture
def tunnel(iotbox, broker, cloud, workdir, daemons):
    made = []

    def make(thing, *args, **kw):
        t = Tunnel(iotbox, broker, cloud, workdir, daemons, thing, *args, **kw)
        made.append(t)
        return t
    yield make
    for t in made:
        t.close()


def rss_kib(pid):
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise AssertionError('no VmRSS')


class RssSampler:
    """VmRSS of a process every 20 ms, with the byte count of the transfer at each sample."""

    def __init__(self, pid, progress):
        self.pid, self.progress, self.samples = pid, progress, []
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            self.samples.append((self.progress(), rss_kib(self.pid)))
            time.sleep(0.02)

    def stop(self):
        self.stopping = True
        self.thread.join()
        return self.samples


def echo_transfer(sock, total, progress=None):
    """Send `total` bytes of chunks() on an echo connection while reading them back; the two sha256."""
    sent_h, back_h = hashlib.sha256(), hashlib.sha256()
    err = []

    def send():
        try:
            for c in chunks(total):
                sock.sendall(c)
                sent_h.update(c)
        except OSError as e:
            err.append(e)
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    got = 0
    while got < total:
        data = sock.recv(min(1 << 18, total - got))
        if not data:
            raise EOFError('echo: %d of %d bytes came back' % (got, total))
        back_h.update(data)
        got += len(data)
        if progress is not None:
            progress[0] = got
    sender.join()
    assert not err, err
    return sent_h.hexdigest(), back_h.hexdigest()


def upload(t, total, rate=0, service=None):
    s = t.connect('sink %d %s' % (total, rate or ''), service)
    h = hashlib.sha256()
    for c in chunks(total):
        s.sendall(c)
        h.update(c)
    answer = read_line(s)
    s.close()
    return h.hexdigest(), answer


def download(t, total, service=None):
    s = t.connect('send %d' % total, service)
    h = hashlib.sha256()
    recv_exact(s, total, h)
    s.close()
    return h.hexdigest()


# ---------------------------------------------------------------- the tests


def test_200_mb_each_way_at_once_and_one_way_at_a_time(tunnel):
    t = tunnel('xfer-200').open_source()
    # Both ways at once: 200 MB up, echoed back 200 MB down, concurrently.
    size = 200 * MiB // SCALE
    s = t.connect('echo')
    sent, back = echo_transfer(s, size)
    s.close()
    assert sent == back
    # One way at a time.
    sent, seen = upload(t, size)
    assert sent == seen == pattern_digest(size)
    assert download(t, size) == seen
    st = t.state()
    assert st['violations'] == []
    assert st['ends']['destination']['data_bytes_in'] >= 2 * size
    assert st['ends']['destination']['data_bytes_out'] >= 2 * size
    assert t.iotd.proc.poll() is None


def test_memory_stays_flat_through_1_gb_and_with_a_slow_consumer(tunnel):
    t = tunnel('xfer-1g').open_source()
    pid = t.iotd.proc.pid
    # 1 GB through the destination: 512 MB up and 512 MB echoed back at once.
    progress = [0]
    sampler = RssSampler(pid, lambda: progress[0])
    s = t.connect('echo')
    sent, back = echo_transfer(s, 512 * MiB // SCALE, progress)
    s.close()
    samples = sampler.stop()
    assert sent == back
    if EMULATED:
        return
    settled = [rss for done, rss in samples if done >= 25 * MiB]  # 50 MB through the destination
    assert len(settled) > 20, samples
    growth = max(settled) - settled[0]
    # Buffers are bounded by design (WebSocket 131 KB in + 256 KB out, 256 KB per local
    # connection): after the first 50 MB nothing may grow. Unbounded buffering of a fast
    # direction would show as many MB here.
    assert growth < 1024, 'VmRSS grew %d KiB after the first 50 MB: %s' % (growth, samples[::50])
    before_slow = rss_kib(pid)

    # A slow consumer: the local service reads 24 MB at 6 MB/s while the client pushes as fast as it
    # can. Back-pressure must reach the client: the destination holds at most its buffers.
    sampler = RssSampler(pid, lambda: t.service.consumed)
    sent, seen = upload(t, 24 * MiB, rate=6 * MiB)
    samples = sampler.stop()
    assert sent == seen
    peak = max(rss for _, rss in samples)
    assert peak - before_slow < 1024, 'VmRSS rose by %d KiB with a slow consumer' % (peak - before_slow)
    assert t.iotd.proc.poll() is None


def test_tiny_and_merged_frames_through_iotd(tunnel):
    t = tunnel('xfer-frames').open_source()
    # Tiny frames: the relay cuts its byte stream to each end into frames of 1 to 7 bytes
    # (length prefixes and messages split anywhere), also as fragmented WebSocket messages.
    for rechunk, fragment, size in ((1, 0, 24 * 1024), (2, 0, 48 * 1024), (3, 1, 32 * 1024),
                                    (5, 0, 96 * 1024), (7, 3, 96 * 1024)):
        t.hooks(to='both', rechunk=rechunk, fragment=fragment)
        s = t.connect('echo')
        sent, back = echo_transfer(s, size)
        s.close()
        assert sent == back, (rechunk, fragment)
    t.hooks(to='both', rechunk=0, fragment=0)
    before = t.state()['ends']['destination']

    # Merged frames: many messages of several connections in one frame each.
    t.hooks(to='destination', merge=True)
    conns = [t.connect('echo') for _ in range(4)]
    pieces = {}
    for round in range(150):
        for i, s in enumerate(conns):
            piece = b'%d:%d:' % (i, round) + POOL[round * 97:round * 97 + 200 + 37 * i]
            pieces.setdefault(i, []).append(piece)
            s.sendall(piece)
        if round % 25 == 0:
            time.sleep(0.02)  # let the relay queue several messages for one frame
    for i, s in enumerate(conns):
        want = b''.join(pieces[i])
        s.settimeout(20)
        got = b''
        while len(got) < len(want):
            data = s.recv(65536)
            assert data, 'connection %d closed' % i
            got += data
        assert got == want, 'connection %d' % i
        s.close()
    after = t.state()['ends']['destination']
    messages = after['messages_out'] - before['messages_out']
    frames = after['frames_out'] - before['frames_out']
    assert frames < messages, 'no frame carried several messages (%d frames, %d messages)' % (frames, messages)
    assert t.state()['violations'] == []


def test_a_dropped_websocket_closes_local_connections_and_iotd_reconnects(tunnel):
    t = tunnel('xfer-drop').open_source()
    s = t.connect('echo')
    assert echo_transfer(s, 1 * MiB)[1] == pattern_digest(1 * MiB)  # the local connection is up
    t.hooks(drop='destination', drop_after=8 * MiB)
    with pytest.raises((EOFError, ConnectionError)):
        echo_transfer(s, 64 * MiB)
    s.close()
    t.iotd.wait_for('reconnecting in')
    wait_destination(t.cloud, t.t, handshakes=2)
    assert t.state()['ends']['destination']['last_close']['by'] == 'drop'
    # The local connection was closed by iotd: the service saw its end of the stream.
    deadline = time.time() + 10
    while time.time() < deadline and any(c.fileno() != -1 for c in t.service.conns):
        time.sleep(0.05)
    assert all(c.fileno() == -1 for c in t.service.conns), 'the local connection was left open'
    # A new connection through the reconnected tunnel carries data.
    s = t.connect('echo')
    sent, back = echo_transfer(s, 4 * MiB)
    s.close()
    assert sent == back
    assert t.service.accepted == 2
    assert t.iotd.proc.poll() is None


def test_503_answers_are_retried_with_backoff_until_the_tunnel_opens(tunnel):
    t = tunnel('xfer-503', notify=False)
    t.hooks(http_status=503, http_status_count=2, http_status_mode='destination')
    note = t.t
    t.cloud.cmd('publish', topic='$aws/things/xfer-503/tunnels/notify',
                payload={'clientAccessToken': note['destination_token'], 'clientMode': 'destination',
                         'region': 'us-east-1', 'services': ['SVC']})
    t0 = time.monotonic()
    t.open_source()
    took = time.monotonic() - t0
    out = t.iotd.output()
    # Each 503 retried after a delay (exponential backoff from tunneling's 1 s minimum), not at once.
    delays = [float(d) for d in re.findall(r'upgrade with 503 [^\n]*; reconnecting in ([0-9.]+) s', out)]
    assert len(delays) == 2 and all(d >= 0.5 for d in delays), out
    assert t.state()['ends']['destination']['refused'] == 2
    assert sum(delays) <= took < 15
    sent, seen = upload(t, 2 * MiB)
    assert sent == seen


def _sshd_or_skip():
    sshd = shutil.which('sshd') or ('/usr/sbin/sshd' if os.path.exists('/usr/sbin/sshd') else None)
    if not sshd or not shutil.which('ssh') or not shutil.which('ssh-keygen'):
        pytest.skip('openssh-server and openssh-client are not installed (make test-packages installs them)')
    return sshd


def test_a_real_ssh_through_the_tunnel(iotbox, broker, cloud, workdir, daemons):
    sshd = _sshd_or_skip()
    os.makedirs('/run/sshd', mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    keys = os.path.join(workdir, 'ssh')
    os.makedirs(keys, mode=0o700)
    for name in ('host', 'user'):
        subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', os.path.join(keys, name)], check=True)
    shutil.copy(os.path.join(keys, 'user.pub'), os.path.join(keys, 'authorized_keys'))
    port_sock = socket.socket()
    port_sock.bind(('127.0.0.1', 0))
    port = port_sock.getsockname()[1]
    port_sock.close()
    sshd_proc = daemons([sshd, '-D', '-e', '-f', '/dev/null', '-p', str(port), '-o', 'ListenAddress=127.0.0.1',
                         '-h', os.path.join(keys, 'host'), '-o', f'AuthorizedKeysFile={keys}/authorized_keys',
                         '-o', 'UsePAM=no', '-o', 'StrictModes=no', '-o', 'PidFile=none',
                         '-o', 'PermitRootLogin=prohibit-password', '-o', 'LogLevel=VERBOSE'],
                        os.path.join(workdir, 'sshd.out'))
    sshd_proc.wait_for('Server listening on 127.0.0.1 port %d' % port)

    d = destination_iotd(iotbox, broker, cloud, workdir, daemons, 'xfer-ssh', {'SSH': f'127.0.0.1:{port}'})
    t = cloud.cmd('open_tunnel', thing='xfer-ssh', services=['SSH'])
    wait_destination(cloud, t)
    src = SourceEnd(source_impl(iotbox), iotbox, f'127.0.0.1:{t["ws_port"]}', broker.ca, t['source_token'], ['SSH'],
                    os.path.join(workdir, 'source.out'))
    try:
        data = os.path.join(workdir, 'data')
        with open(data, 'wb') as f:
            for c in chunks(16 * MiB):
                f.write(c)
        import getpass
        ssh = ['ssh', '-F', '/dev/null', '-p', str(src.ports['SSH']), '-i', os.path.join(keys, 'user'),
               '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes',
               '-o', 'IdentitiesOnly=yes', '-o', 'ConnectTimeout=20', f'{getpass.getuser()}@127.0.0.1']
        with open(data, 'rb') as f:
            r = subprocess.run(ssh + ['echo ok; sha256sum'], stdin=f, capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr.decode() + sshd_proc.output()
        lines = r.stdout.decode().split('\n')
        assert lines[0] == 'ok'
        assert lines[1].split()[0] == pattern_digest(16 * MiB)
        # And back: 16 MB from the device side.
        r = subprocess.run(ssh + [f'cat {data}'], capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr.decode()
        assert hashlib.sha256(r.stdout).hexdigest() == pattern_digest(16 * MiB)
        # Two sessions at once: two connections of one V3 stream.
        procs = [subprocess.Popen(ssh + ['echo %d' % i], stdout=subprocess.PIPE) for i in range(2)]
        assert [p.communicate(timeout=60)[0] for p in procs] == [b'0\n', b'1\n']
    finally:
        src.stop()
    assert d.proc.poll() is None
