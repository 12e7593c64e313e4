#!/usr/bin/python3
"""Secure tunneling through the whole system on loopback: a source end, the fakecloud's tunneling
service as the relay (Python, TLS both legs), `iot-tunnel --destination`, and a local service.

  bench/tunnel_bench.py build/iotbox [MB each way] [round trips]

Throughput each way (upload: source to the device's local service; download: the other way) and
both at once (an echo), CPU seconds per GB carried by the destination (utime + stime from
/proc/<pid>/stat), its peak RSS (VmHWM), and the round trip of a 64-byte message through the tunnel
(median, p99). The relay's and the source's CPU per GB are printed too: they are Python and the
likely bottleneck, so throughput and round trip are bounds for the whole chain, not for iotbox.
The source end is `iot-tunnel --source` when the binary has it, else the Python one of
tests/applets/test_tunnel_transfer.py (TUNNEL_SOURCE=python|iotbox chooses).
"""
import hashlib
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'applets'))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'testbed'))
import testbed  # noqa: E402
from conftest import Cloud  # noqa: E402
from test_tunnel_transfer import (MiB, LocalService, SourceEnd, chunks, clean_env, echo_transfer,  # noqa: E402
                                  read_line, recv_exact, source_impl)

TICK = os.sysconf('SC_CLK_TCK')


def cpu_seconds(pid):
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def status(pid, key):
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return line.split(':', 1)[1].strip()
    return '?'


class Meter:
    """Wall time and the CPU of each process over one measured step."""

    def __init__(self, pids):
        self.pids = pids

    def __enter__(self):
        self.cpu0 = {k: cpu_seconds(p) for k, p in self.pids.items()}
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        self.cpu = {k: cpu_seconds(p) - self.cpu0[k] for k, p in self.pids.items()}


def machine():
    model = '?'
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'):
                model = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    return f'{model}, {os.cpu_count()} cores, Linux {platform.release()}'


def main():
    binary = os.path.abspath(sys.argv[1])
    mb = int(sys.argv[2]) if len(sys.argv) > 2 else 512
    trips = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
    total = mb * MiB
    root = os.path.join(os.path.dirname(binary), 'testbed')
    os.makedirs(root, exist_ok=True)
    d = tempfile.mkdtemp(prefix='bench-tunnel-', dir=root)
    tb = testbed.Testbed(d)
    tb.up()
    cloud = Cloud(tb)
    service = LocalService()
    dest = src = None
    try:
        t = cloud.cmd('open_tunnel', thing='bench-thing', services=['SVC'], notify=False)
        port = cloud.cmd('ping')['tunnel_port']
        dest_log = open(os.path.join(d, 'destination.out'), 'w')
        dest = subprocess.Popen([binary, 'iot-tunnel', '--destination', '--services', f'SVC=127.0.0.1:{service.port}',
                                 '--endpoint', f'localhost:{port}', '--root-ca', tb.ca],
                                stdout=dest_log, stderr=subprocess.STDOUT,
                                env=clean_env(HOME=d, AWSIOT_TUNNEL_ACCESS_TOKEN=t['destination_token']))
        cloud.cmd('wait_tunnel', tunnel_id=t['tunnel_id'], end='destination', connected=True, timeout=15)
        impl = source_impl(binary)
        src = SourceEnd(impl, binary, f'127.0.0.1:{port}', tb.ca, t['source_token'], ['SVC'],
                        os.path.join(d, 'source.out'))
        pids = {'destination': dest.pid, 'relay': cloud.proc.pid, 'source': src.proc.pid}

        def connect(command):
            s = src.connect('SVC')
            s.sendall(command.encode() + b'\n')
            return s

        # Warm up (TLS sessions, buffers, the stream).
        s = connect('echo')
        echo_transfer(s, 8 * MiB)
        s.close()

        results = []
        with Meter(pids) as up:
            s = connect(f'sink {total}')
            h = hashlib.sha256()
            for c in chunks(total):
                s.sendall(c)
                h.update(c)
            assert read_line(s) == h.hexdigest(), 'upload: sha256 differs'
            s.close()
        results.append(('upload (source to device)', total, up))
        with Meter(pids) as down:
            s = connect(f'send {total}')
            recv_exact(s, total)
            s.close()
        results.append(('download (device to source)', total, down))
        with Meter(pids) as both:
            s = connect('echo')
            sent, back = echo_transfer(s, total)
            assert sent == back, 'echo: sha256 differs'
            s.close()
        results.append(('both ways at once (echo)', 2 * total, both))

        s = connect('echo')
        msg = os.urandom(64)
        rtts = []
        for _ in range(trips):
            t0 = time.perf_counter()
            s.sendall(msg)
            recv_exact(s, 64)
            rtts.append((time.perf_counter() - t0) * 1000)
        s.close()
        direct = socket.create_connection(('127.0.0.1', service.port))
        direct.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        direct.sendall(b'echo\n')
        drtts = []
        for _ in range(trips):
            t0 = time.perf_counter()
            direct.sendall(msg)
            recv_exact(direct, 64)
            drtts.append((time.perf_counter() - t0) * 1000)
        direct.close()
        rtts.sort()
        drtts.sort()

        def p99(v):
            return v[min(len(v) - 1, int(len(v) * 0.99))]

        hwm, rss = status(dest.pid, 'VmHWM'), status(dest.pid, 'VmRSS')
        source_name = {'iotbox': 'iot-tunnel --source', 'python': 'Python'}.get(impl, impl + ' iot-tunnel --source')
        print(f'Machine: {machine()}; source end: {source_name}, '
              f'relay: the fakecloud (Python asyncio), destination: iot-tunnel --destination; TLS on both legs.')
        print()
        print('| transfer | MB/s | destination CPU s/GB | relay CPU s/GB | source CPU s/GB |')
        print('| --- | --- | --- | --- | --- |')
        for name, n, m in results:
            gb = n / 1e9
            print(f'| {name}, {n // MiB} MiB | {n / 1e6 / m.wall:.1f} | {m.cpu["destination"] / gb:.2f} | '
                  f'{m.cpu["relay"] / gb:.2f} | {m.cpu["source"] / gb:.2f} |')
        print()
        print('| what | destination (iot-tunnel --destination) |')
        print('| --- | --- |')
        print(f'| peak RSS (VmHWM) | {hwm} (RSS now {rss}) |')
        print(f'| 64-byte round trip through the tunnel ({trips}) | median {statistics.median(rtts):.3f} ms, '
              f'p99 {p99(rtts):.3f} ms |')
        print(f'| the same, straight to the local service | median {statistics.median(drtts):.3f} ms, '
              f'p99 {p99(drtts):.3f} ms |')
    finally:
        if src is not None:
            src.stop()
        if dest is not None:
            dest.terminate()
            dest.wait(10)
        service.stop()
        cloud.stop()
        tb.down()
        subprocess.run(['rm', '-rf', d])


if __name__ == '__main__':
    main()
