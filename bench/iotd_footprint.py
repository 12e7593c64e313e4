#!/usr/bin/python3
"""Whole-system bench of iotd against a real TLS broker on loopback: time from exec to connected,
memory (RSS, peak RSS, virtual), threads, and wake-ups while idle. Prints a Markdown table.

  bench/iotd_footprint.py build/iotbox [idle-seconds]
"""
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'testbed'))
import testbed  # noqa: E402


def status(pid):
    out = {}
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            k, _, v = line.partition(':')
            out[k] = v.strip()
    return out


def main():
    binary = os.path.abspath(sys.argv[1])
    idle = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    root = os.path.join(os.path.dirname(binary), 'testbed')
    os.makedirs(root, exist_ok=True)
    d = tempfile.mkdtemp(prefix='bench-', dir=root)
    tb = testbed.Testbed(d)
    tb.up()
    try:
        ident = tb.thing('bench-thing')
        cfg = {'endpoint': 'localhost', 'port': tb.port, 'cert': ident['cert'], 'key': ident['key'],
               'root-ca': tb.ca, 'thing-name': 'bench-thing', 'logging': {'level': 'INFO', 'type': 'STDOUT'},
               'jobs': {'enabled': False}, 'tunneling': {'enabled': False}, 'lock-file': os.path.join(d, 'lock')}
        path = os.path.join(d, 'iotd.conf')
        with open(path, 'w') as f:
            json.dump(cfg, f)
        log = os.path.join(d, 'iotd.out')
        t0 = time.monotonic()
        with open(log, 'w') as out:
            proc = subprocess.Popen([binary, 'iotd', '--config-file', path], stdout=out, stderr=subprocess.STDOUT)
        while 'connected to' not in open(log).read():
            if proc.poll() is not None or time.monotonic() - t0 > 15:
                raise SystemExit('iotd did not connect:\n' + open(log).read())
            time.sleep(0.001)
        connected_ms = (time.monotonic() - t0) * 1000
        time.sleep(0.5)
        before = status(proc.pid)
        time.sleep(idle)
        after = status(proc.pid)
        wakeups = (int(after['voluntary_ctxt_switches']) + int(after['nonvoluntary_ctxt_switches'])
                   - int(before['voluntary_ctxt_switches']) - int(before['nonvoluntary_ctxt_switches']))
        proc.terminate()
        rc = proc.wait(10)
        print('| what | iotd |')
        print('| --- | --- |')
        print(f'| binary (static, stripped) | {os.path.getsize(binary):,} bytes |')
        print(f'| start to connected (TLS, loopback) | {connected_ms:.0f} ms |')
        print(f'| RSS connected and idle | {after["VmRSS"]} (peak {after["VmHWM"]}) |')
        print(f'| virtual memory | {after["VmSize"]} |')
        print(f'| threads | {after["Threads"]} |')
        print(f'| wake-ups while idle | {wakeups / idle:.2f} per second ({wakeups} in {idle:.0f} s) |')
        print(f'| exit status after SIGTERM | {rc} |')
    finally:
        tb.down()
        subprocess.run(['rm', '-rf', d])


if __name__ == '__main__':
    main()
