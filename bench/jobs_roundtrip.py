#!/usr/bin/python3
"""Jobs through the whole system: iotd against a real TLS broker and the fakecloud on loopback.

  bench/jobs_roundtrip.py build/iotbox [round-trips] [queued-jobs]

Round trip: a job created at the cloud until its SUCCEEDED update reaches the cloud, one job at a
time (a runCommand of /bin/true), median and p99. Rate: N jobs queued before iotd starts, time
from start to the last SUCCEEDED. The cloud side is Python (tests/fakecloud), so the figures are
an upper bound for the device's share; iotd's own time per job is printed from its log.
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'applets'))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'testbed'))
import testbed  # noqa: E402
from conftest import Cloud, device_config  # noqa: E402

THING = 'bench-thing'
DOC = {'version': '1.0', 'steps': [{'action': {'name': 'true', 'type': 'runCommand', 'input': {'command': 'true'}}}]}


def start_iotd(binary, cfg, workdir, name, level='WARN'):
    log = open(os.path.join(workdir, name), 'w')
    p = subprocess.Popen([binary, 'iotd', '--config-file', cfg, '--log-level', level], stdout=log,
                         stderr=subprocess.STDOUT)
    return p, log


def device_times(log_path):
    """Per job, iotd's own time from its log: 'job X ... received' to 'job X SUCCEEDED'."""
    import datetime
    received, out = {}, []
    for line in open(log_path):
        parts = line.split()
        if len(parts) < 5 or parts[2] != '[jobs]' or parts[3] != 'job':
            continue
        t = datetime.datetime.strptime(parts[0], '%Y-%m-%dT%H:%M:%S.%fZ').timestamp()
        if 'received' in line:
            received[parts[4]] = t
        elif parts[5] == 'SUCCEEDED:' and parts[4] in received:
            out.append((t - received.pop(parts[4])) * 1000)
    return out


def main():
    binary = os.path.abspath(sys.argv[1])
    trips = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    queued = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    root = os.path.join(os.path.dirname(binary), 'testbed')
    os.makedirs(root, exist_ok=True)
    d = tempfile.mkdtemp(prefix='bench-jobs-', dir=root)
    tb = testbed.Testbed(d)
    tb.up()
    cloud = Cloud(tb)
    work = tempfile.mkdtemp(prefix='bench-jobs-work-')
    os.makedirs(os.path.join(work, 'jobs'), mode=0o700)
    try:
        cfg, _ = device_config(tb, work, THING, jobs={'enabled': True, 'handler-directory': os.path.join(work, 'jobs')},
                               **{'state-directory': os.path.join(work, 'state')})
        p, log = start_iotd(binary, cfg, work, 'iotd-trips.out')
        time.sleep(0.5)
        samples = []
        for i in range(trips):
            cloud.cmd('create_job', thing=THING, job_id=f't{i}', document=DOC)
            view = cloud.wait_status(THING, f't{i}', ['SUCCEEDED'], timeout=10)
            # The cloud's own clock: queued until the SUCCEEDED update was accepted.
            done = [h['t'] for h in view['history'] if h.get('status') == 'SUCCEEDED']
            samples.append((done[0] - view['events'][0]['t']) * 1000)
        p.terminate()
        p.wait()
        log.close()
        samples.sort()
        p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]

        for i in range(queued):
            cloud.cmd('create_job', thing=THING, job_id=f'q{i}', document=DOC)
        t0 = time.perf_counter()
        p, log = start_iotd(binary, cfg, work, 'iotd-queue.out', 'INFO')
        cloud.cmd('wait', topic=f'$aws/things/{THING}/jobs/q{queued - 1}/update', timeout=300)
        elapsed = time.perf_counter() - t0
        p.terminate()
        p.wait()
        log.close()
        print('| what | iotd |')
        print('| --- | --- |')
        print(f'| job round trip, created at the cloud to SUCCEEDED at the cloud ({trips} jobs) | '
              f'median {statistics.median(samples):.2f} ms, p99 {p99:.2f} ms |')
        print(f'| {queued} queued jobs, iotd start to the last SUCCEEDED | {elapsed:.2f} s, '
              f'{queued / elapsed:.0f} jobs/s |')
        device = device_times(os.path.join(work, 'iotd-queue.out'))
        if device:
            print(f'| of which in iotd per job (job received to SUCCEEDED queued: parse, state writes, '
                  f'fork/exec, wait) | median {statistics.median(device):.2f} ms |')
    finally:
        cloud.stop()
        tb.down()
        subprocess.run(['rm', '-rf', d, work])


if __name__ == '__main__':
    main()
