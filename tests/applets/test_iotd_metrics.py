"""iotd's Device Defender metrics feature against the broker and the fakecloud's Defender API."""
import os
import socket
import time

from conftest import device_config


def test_iotd_reports_a_listening_port_it_did_not_open(iotbox, broker, cloud, workdir, daemons):
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen()
    port = listener.getsockname()[1]
    cfg, _ = device_config(broker, workdir, 'dd-thing', **{'state-directory': os.path.join(workdir, 'state')})
    d = daemons([iotbox, 'iotd', '--config-file', cfg, '--enable-device-defender', 'true',
                 '--device-defender-interval', '300'], os.path.join(workdir, 'iotd.out'))
    deadline = time.time() + 20
    reports = []
    while time.time() < deadline and not reports:
        reports = cloud.cmd('defender_reports', thing='dd-thing')['reports']
        time.sleep(0.2)
    assert reports, d.output()
    r = reports[0]
    assert r['accepted'], r
    ports = [p['port'] for p in r['report']['metrics']['listening_tcp_ports']['ports']]
    assert port in ports
    d.wait_for('accepted')
    assert d.stop() == 0
    listener.close()
