"""iotd with fleet provisioning enabled, as the Device Client runs it: it provisions with the claim
first and continues with the new identity; a rotation alert from the cloud gives it a new
certificate made on the device, and it reconnects with it."""
import json
import os
import time

from test_iot_provision import TEMPLATE, check_provisioned, create_template


def provisioning_daemon(iotbox, broker, cloud, workdir, thing, *extra):
    """A template, a claim, and iotd's command line with the Device Client's own flags (other
    features off); returns (args, env)."""
    create_template(cloud, name=TEMPLATE, parameters=['ThingName'], thing_name='ThingName', policy='thing-rotation')
    claim = cloud.cmd('claim_certificate', template=TEMPLATE)
    env = dict(os.environ, HOME=workdir)
    env.pop('IOTBOX_CONFIG', None)
    args = [iotbox, 'iotd', '--enable-fleet-provisioning', 'true', '--endpoint', 'localhost',
            '--port', str(broker.port), '--cert', claim['cert'], '--key', claim['key'], '--root-ca', broker.ca,
            '--thing-name', thing, '--fleet-provisioning-template-name', TEMPLATE,
            '--fleet-provisioning-template-parameters', json.dumps({'ThingName': thing}),
            '--enable-jobs', 'false', '--enable-tunneling', 'false', '--enable-device-defender', 'false',
            '--lock-file', os.path.join(workdir, 'lock'), *extra]
    return args, env, claim


def test_iotd_provisions_first_then_rotates_on_the_cloud_alert(iotbox, broker, cloud, workdir, daemons):
    args, env, claim = provisioning_daemon(iotbox, broker, cloud, workdir, 'fp-dev-1', '--log-level', 'DEBUG')
    d = daemons(args, os.path.join(workdir, 'iotd.out'), env=env)
    d.wait_for('provisioned as fp-dev-1', timeout=30)
    d.wait_for('subscribed to things/fp-dev-1/iotbox/rotate-certificate', timeout=15)
    rc, first_id = check_provisioned(workdir, 'fp-dev-1', cloud)
    assert claim['certificateId'] not in d.output().split('connected to')[-1]

    cloud.cmd('rotation_alert', thing='fp-dev-1', reason='EXPIRING')
    d.wait_for('new identity', timeout=30)
    d.wait_for('connected to localhost', count=2, timeout=30)
    rc2, second_id = check_provisioned(workdir, 'fp-dev-1', cloud)
    assert second_id != first_id
    assert os.path.exists(rc['cert']), 'the old certificate is kept'
    assert d.proc.poll() is None
    # A restart uses the rotated identity from the runtime file and does not provision again.
    assert d.stop() == 0
    d2 = daemons(args, os.path.join(workdir, 'iotd2.out'), env=env)
    d2.wait_for('connected to localhost', timeout=15)
    assert 'provisioned as' not in d2.output()
    assert d2.stop() == 0


def test_iotd_rotates_before_expiry_without_an_alert(iotbox, broker, cloud, workdir, daemons):
    args, env, _ = provisioning_daemon(iotbox, broker, cloud, workdir, 'fp-dev-2')
    d = daemons(args, os.path.join(workdir, 'iotd.out'), env=env)
    d.wait_for('provisioned as fp-dev-2', timeout=30)
    d.wait_for('online', timeout=15)
    _, first_id = check_provisioned(workdir, 'fp-dev-2', cloud)
    assert 'rotating' not in d.output(), 'no rotation without a reason'
    assert d.stop() == 0
    # The issued certificates are valid for about a year: "expires within 3650 days" is now.
    d2 = daemons(args + ['--fleet-provisioning-rotate-before-days', '3650'], os.path.join(workdir, 'iotd2.out'),
                 env=env)
    d2.wait_for('new identity', timeout=30)
    _, second_id = check_provisioned(workdir, 'fp-dev-2', cloud)
    assert second_id != first_id
    d2.wait_for('online', count=2, timeout=30)
    assert d2.stop() == 0
