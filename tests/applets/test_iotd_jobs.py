"""iotd's jobs feature end to end: a real broker with client certificates, the fakecloud's Jobs
API, real handler processes. Each test asserts what the cloud ends up knowing."""
import json
import os
import signal
import time

import pytest

from conftest import device_config

THING = 'job-thing'


@pytest.fixture
def setup(broker, cloud, workdir, daemons, iotbox):
    handlers = os.path.join(workdir, 'jobs')
    os.makedirs(handlers, mode=0o700)
    os.chmod(handlers, 0o700)
    with open(os.path.join(handlers, 'args.sh'), 'w') as f:
        f.write('#!/bin/sh\nprintf "user=[%s]" "$1"; shift; printf " arg=[%s]" "$@"; echo\n')
    os.chmod(os.path.join(handlers, 'args.sh'), 0o700)
    state = os.path.join(workdir, 'state')
    cfg, _ = device_config(broker, workdir, THING, jobs={'enabled': True, 'handler-directory': handlers},
                           **{'state-directory': state})

    class Setup:
        pass
    s = Setup()
    s.cloud, s.broker, s.workdir, s.handlers, s.state, s.cfg = cloud, broker, workdir, handlers, state, cfg

    def start():
        d = daemons([iotbox, 'iotd', '--config-file', cfg], os.path.join(workdir, f'iotd-{time.time()}.out'))
        d.wait_for('connected to')
        return d
    s.start = start
    return s


def command_job(cloud, job_id, command, **extra):
    doc = {'version': '1.0', 'includeStdOut': True,
           'steps': [{'action': {'name': 'cmd', 'type': 'runCommand', 'input': {'command': command}}}]}
    return cloud.cmd('create_job', thing=THING, job_id=job_id, document=doc, **extra)


def wait_until(ready, what, timeout=60):
    deadline = time.time() + timeout
    while not ready():
        assert time.time() < deadline, f'no {what} within {timeout} s'
        time.sleep(0.05)


def step_gone(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return ') Z ' in f.read()
    except FileNotFoundError:
        return True


def terminal_updates(view):
    return [h for h in view['history'] if h['op'] == 'update' and h['outcome'] == 'accepted'
            and h.get('status') in ('SUCCEEDED', 'FAILED', 'REJECTED')]


def test_device_client_old_and_new_schema_documents_succeed(setup):
    d = setup.start()
    setup.cloud.cmd('create_job', thing=THING, job_id='old-schema',
                    document={'operation': 'args.sh', 'args': ['x', 'y z'], 'path': 'default', 'includeStdOut': 'true'})
    command_job(setup.cloud, 'new-schema', 'echo,Hello\\, world')
    old = setup.cloud.wait_status(THING, 'old-schema', ['SUCCEEDED', 'FAILED'])
    new = setup.cloud.wait_status(THING, 'new-schema', ['SUCCEEDED', 'FAILED'])
    assert old['status'] == 'SUCCEEDED', old
    assert old['statusDetails']['stdout'] == 'user=[] arg=[x] arg=[y z]'
    assert new['status'] == 'SUCCEEDED' and new['statusDetails']['stdout'] == 'Hello, world'
    assert len(terminal_updates(old)) == 1 and len(terminal_updates(new)) == 1
    assert d.proc.poll() is None


def test_bad_documents_are_rejected_and_missing_handlers_fail_with_reasons(setup):
    setup.start()
    setup.cloud.cmd('create_job', thing=THING, job_id='traversal', document={
        'version': '1.0', 'steps': [{'action': {'name': 'x', 'type': 'runHandler', 'input': {'handler': '../x.sh'}}}]})
    setup.cloud.cmd('create_job', thing=THING, job_id='missing', document={
        'version': '1.0', 'steps': [{'action': {'name': 'x', 'type': 'runHandler',
                                                'input': {'handler': 'nope.sh', 'path': 'default'}}}]})
    rejected = setup.cloud.wait_status(THING, 'traversal', ['REJECTED', 'FAILED', 'SUCCEEDED'])
    assert rejected['status'] == 'REJECTED'
    assert 'plain file name' in rejected['statusDetails']['reason']
    failed = setup.cloud.wait_status(THING, 'missing', ['FAILED', 'SUCCEEDED'])
    assert failed['status'] == 'FAILED'
    assert 'nope.sh not found' in failed['statusDetails']['reason'], failed


def test_hundred_jobs_run_one_at_a_time_in_order(setup):
    order = os.path.join(setup.workdir, 'order')
    for i in range(100):
        command_job(setup.cloud, f'j{i:03d}', f'sh,-c,echo {i} >> {order}')
    setup.start()
    setup.cloud.wait_status(THING, 'j099', ['SUCCEEDED'], timeout=60)
    with open(order) as f:
        assert [int(x) for x in f.read().split()] == list(range(100))
    views = setup.cloud.cmd('jobs', thing=THING)['executions']
    assert all(v['status'] == 'SUCCEEDED' and len(terminal_updates(v)) == 1 for v in views)


def test_cancel_stops_the_running_job_and_nothing_is_reported_for_it(setup):
    pidfile = os.path.join(setup.workdir, 'pid')
    command_job(setup.cloud, 'long', f'sh,-c,echo $$ > {pidfile}; exec sleep 60')
    command_job(setup.cloud, 'after', 'true')
    setup.start()
    wait_until(lambda: os.path.exists(pidfile) and open(pidfile).read().strip(), 'step started')
    pid = int(open(pidfile).read())
    setup.cloud.cmd('cancel_job', thing=THING, job_id='long', force=True)
    setup.cloud.wait_status(THING, 'after', ['SUCCEEDED'], timeout=60)
    assert step_gone(pid), 'step still running'
    view = setup.cloud.cmd('job', thing=THING, job_id='long')['execution']
    assert view['status'] == 'CANCELED'
    assert not [h for h in view['history'] if h['op'] == 'update'], view['history']


def test_cloud_step_timeout_stops_the_step(setup):
    pidfile = os.path.join(setup.workdir, 'pid')
    command_job(setup.cloud, 'slow', f'sh,-c,echo $$ > {pidfile}; exec sleep 60', step_timeout_seconds=1)
    setup.start()
    view = setup.cloud.wait_status(THING, 'slow', ['TIMED_OUT', 'SUCCEEDED', 'FAILED'])
    assert view['status'] == 'TIMED_OUT'
    # iotd's own timer started when it received the job, a little after the cloud's.
    wait_until(lambda: os.path.exists(pidfile) and open(pidfile).read().strip(), 'step started')
    pid = int(open(pidfile).read())
    wait_until(lambda: step_gone(pid), f'end of the step (pid {pid}, sleep 60)', timeout=30)


def test_sigkill_mid_job_resumes_after_the_last_completed_step(setup):
    out = os.path.join(setup.workdir, 'out')
    go = os.path.join(setup.workdir, 'go')
    setup.cloud.cmd('create_job', thing=THING, job_id='resume', document={'version': '1.0', 'steps': [
        {'action': {'name': 'one', 'type': 'runCommand', 'input': {'command': f'sh,-c,printf 1 >> {out}'}}},
        {'action': {'name': 'two', 'type': 'runCommand',
                    'input': {'command': f'sh,-c,printf 2 >> {out}; while [ ! -f {go} ]; do sleep 0.05; done'}}},
        {'action': {'name': 'three', 'type': 'runCommand', 'input': {'command': f'sh,-c,printf 3 >> {out}'}}}]})
    d = setup.start()
    wait_until(lambda: os.path.exists(out) and open(out).read() == '12', 'step two running')
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    open(go, 'w').close()  # the orphaned step ends by itself; its result is never reported
    setup.start()
    view = setup.cloud.wait_status(THING, 'resume', ['SUCCEEDED', 'FAILED'])
    assert view['status'] == 'SUCCEEDED', view
    assert open(out).read() == '1223', 'step one must not run again; step two was not finished'
    assert len(terminal_updates(view)) == 1


def test_status_is_delivered_across_a_broker_restart(setup):
    go = os.path.join(setup.workdir, 'go')
    command_job(setup.cloud, 'through-restart', f'sh,-c,while [ ! -f {go} ]; do sleep 0.05; done; echo done')
    d = setup.start()
    setup.cloud.wait_status(THING, 'through-restart', ['IN_PROGRESS'])
    setup.broker.stop()
    open(go, 'w').close()  # the job ends while the broker is down: its status waits in the outbox
    time.sleep(1)
    setup.broker.start()
    view = setup.cloud.wait_status(THING, 'through-restart', ['SUCCEEDED', 'FAILED'], timeout=30)
    assert view['status'] == 'SUCCEEDED'
    assert len(terminal_updates(view)) == 1
    assert d.proc.poll() is None


def test_throttled_updates_are_retried_until_accepted(setup):
    setup.cloud.cmd('fail_next_updates', thing=THING, code='RequestThrottled', count=2)
    command_job(setup.cloud, 'throttled', 'true')
    setup.start()
    view = setup.cloud.wait_status(THING, 'throttled', ['SUCCEEDED', 'FAILED'], timeout=30)
    assert view['status'] == 'SUCCEEDED'
    rejected = [h for h in view['history'] if h.get('code') == 'RequestThrottled']
    assert len(rejected) == 2 and len(terminal_updates(view)) == 1


def test_duplicate_notifications_do_not_run_a_job_twice(setup):
    runs = os.path.join(setup.workdir, 'runs')
    go = os.path.join(setup.workdir, 'go')
    command_job(setup.cloud, 'once', f'sh,-c,echo x >> {runs}; while [ ! -f {go} ]; do sleep 0.05; done')
    d = setup.start()
    # Duplicates of a job iotd is running: wait for its step, not for the cloud's IN_PROGRESS. The
    # cloud is IN_PROGRESS once it has answered start-next, and a notification published then can
    # reach iotd before that answer: it is then the first news of the job, not a duplicate.
    wait_until(lambda: os.path.exists(runs) and open(runs).read() == 'x\n', 'the job\'s step to start')
    view = setup.cloud.cmd('job', thing=THING, job_id='once')['execution']
    assert view['status'] == 'IN_PROGRESS', view
    dup = json.dumps({'timestamp': 1, 'execution': {
        'jobId': 'once', 'status': 'IN_PROGRESS', 'versionNumber': view['versionNumber'], 'executionNumber': 1,
        'jobDocument': {'operation': 'x'}}})
    for _ in range(3):
        setup.cloud.cmd('publish', topic=f'$aws/things/{THING}/jobs/notify-next', payload=dup, qos=1)
    # iotd has handled each one when it has logged it (DEBUG); only then may the job end.
    d.wait_for(f'received {len(dup)} bytes on $aws/things/{THING}/jobs/notify-next', timeout=60, count=3)
    open(go, 'w').close()
    final = setup.cloud.wait_status(THING, 'once', ['SUCCEEDED', 'FAILED'], timeout=60)
    assert final['status'] == 'SUCCEEDED', final
    assert len(terminal_updates(final)) == 1
    assert d.output().count('job once (execution 1, ') == 1, d.output()
    assert open(runs).read() == 'x\n'


def test_iot_job_run_fetches_runs_and_reports_the_next_job(setup, iotbox):
    from conftest import run
    command_job(setup.cloud, 'scripted', 'echo,from cron')
    r = run([iotbox, 'iot-job-run', '--next', '--config-file', setup.cfg, '--json'], timeout=60)
    assert r.returncode == 0, r.stderr
    view = setup.cloud.cmd('job', thing=THING, job_id='scripted')['execution']
    assert view['status'] == 'SUCCEEDED' and view['statusDetails']['stdout'] == 'from cron'
    assert '"status":"SUCCEEDED"' in r.stdout
    # Nothing pending: says so and exits 0.
    r = run([iotbox, 'iot-job-run', '--next', '--config-file', setup.cfg], timeout=60)
    assert r.returncode == 0 and 'no pending job' in r.stderr


def test_iot_job_run_by_job_id_reports_failure_with_exit_1(setup, iotbox):
    from conftest import run
    command_job(setup.cloud, 'first', 'true')
    command_job(setup.cloud, 'picked', 'sh,-c,exit 4')
    r = run([iotbox, 'iot-job-run', '--job-id', 'picked', '--config-file', setup.cfg], timeout=60)
    assert r.returncode == 1, r.stderr
    view = setup.cloud.cmd('job', thing=THING, job_id='picked')['execution']
    assert view['status'] == 'FAILED' and view['statusDetails']['reason'] == 'step cmd: exit status 4'
    assert setup.cloud.cmd('job', thing=THING, job_id='first')['execution']['status'] == 'QUEUED'


def test_reboot_step_completes_when_the_device_comes_back(setup, iotbox, daemons):
    boot = os.path.join(setup.workdir, 'boot_id')
    out = os.path.join(setup.workdir, 'out')
    with open(boot, 'w') as f:
        f.write('boot-1\n')
    # The "reboot": a new boot id, and the init system stopping iotd.
    reboot_cmd = f'sh,-c,echo boot-2 > {boot}; kill -TERM $PPID'
    setup.cloud.cmd('create_job', thing=THING, job_id='with-reboot', document={'version': '1.0', 'steps': [
        {'action': {'name': 'before', 'type': 'runCommand', 'input': {'command': f'sh,-c,printf b >> {out}'}}},
        {'action': {'name': 'reboot', 'type': 'reboot'}},
        {'action': {'name': 'after', 'type': 'runCommand', 'input': {'command': f'sh,-c,printf a >> {out}'}}}]})
    env = dict(os.environ, IOTBOX_BOOT_ID_FILE=boot)
    first = daemons([iotbox, 'iotd', '--config-file', setup.cfg, '--jobs-reboot-command', reboot_cmd],
                    os.path.join(setup.workdir, 'iotd-1.out'), env=env)
    assert first.proc.wait(20) == 0, first.output()
    assert open(out).read() == 'b'
    assert setup.cloud.cmd('job', thing=THING, job_id='with-reboot')['execution']['status'] == 'IN_PROGRESS'
    second = daemons([iotbox, 'iotd', '--config-file', setup.cfg], os.path.join(setup.workdir, 'iotd-2.out'), env=env)
    view = setup.cloud.wait_status(THING, 'with-reboot', ['SUCCEEDED', 'FAILED'])
    assert view['status'] == 'SUCCEEDED', view
    assert open(out).read() == 'ba', 'the step before the reboot must not run again'
    assert 'the device rebooted: reboot step done' in second.output()
