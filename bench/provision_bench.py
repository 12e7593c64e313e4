#!/usr/bin/python3
"""Fleet provisioning through the whole system: iot-provision against a real TLS broker and the
fakecloud on loopback.

  bench/provision_bench.py build/iotbox [runs]

Each run provisions a new thing by CSR with an EC P-256 key made on the device (`iot-provision
csr`): connect with the claim, CreateCertificateFromCsr, write the files, RegisterThing, connect
with the new certificate, switch the runtime config. Wall time of the whole process, median and
p90; the Device Client takes 314 ms by CSR file (reference/device-client-compat.md). The cloud
side is Python and reloads the broker's ACL and CRL on every RegisterThing, so the figures are an
upper bound for the device's share.
"""
import json
import os
import shutil
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


def main():
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else 'build/iotbox')
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    root = tempfile.mkdtemp(prefix='provision-bench-')
    tb = testbed.Testbed(os.path.join(root, 'tb'))
    tb.up()
    cloud = Cloud(tb)
    try:
        path = tb.path('templates.json')
        with open(path, 'w') as f:
            json.dump([{'name': 'Bench', 'parameters': ['ThingName'], 'thing_name': 'ThingName'}], f)
        cloud.cmd('load_templates', path=path)
        claim = cloud.cmd('claim_certificate', template='Bench')
        env = dict(os.environ, HOME=root)
        times = []
        for i in range(runs):
            thing = f'bench-{i}'
            args = [binary, 'iot-provision', 'csr', '--force', '--endpoint', 'localhost', '--port', str(tb.port),
                    '--cert', claim['cert'], '--key', claim['key'], '--root-ca', tb.ca, '--thing-name', thing,
                    '--fleet-provisioning-template-name', 'Bench',
                    '--fleet-provisioning-template-parameters', json.dumps({'ThingName': thing})]
            t0 = time.monotonic()
            r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
            times.append((time.monotonic() - t0) * 1000)
            if r.returncode != 0:
                sys.exit(f'run {i} failed:\n{r.stderr}')
        times.sort()
        print(f'provisioning by CSR, EC P-256 key made on the device, {runs} runs: '
              f'median {statistics.median(times):.1f} ms, p90 {times[int(len(times) * 0.9) - 1]:.1f} ms, '
              f'min {times[0]:.1f} ms, max {times[-1]:.1f} ms')
    finally:
        cloud.stop()
        tb.down()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
    main()
