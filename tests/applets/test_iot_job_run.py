"""iot-job-run on local job documents: the Device Client's schemas and handler conventions, exact
results, and the failure cases the Device Client got wrong."""
import json
import os

import pytest

from conftest import run


def write(path, text, mode=0o600):
    with open(path, 'w') as f:
        f.write(text)
    os.chmod(path, mode)
    return path


@pytest.fixture
def handlers(workdir):
    d = os.path.join(workdir, 'jobs')
    os.makedirs(d, mode=0o700)
    os.chmod(d, 0o700)
    # A Device Client style handler: $1 is the user, the real arguments follow.
    write(os.path.join(d, 'args.sh'), '#!/bin/sh\nprintf "user=[%s]" "$1"; shift; printf " arg=[%s]" "$@"; echo\n', 0o700)
    write(os.path.join(d, 'loud.sh'), '#!/bin/sh\necho "$2" >&2\nexit "$3"\n', 0o700)
    return d


def job(iotbox, workdir, handlers, doc, *extra):
    path = write(os.path.join(workdir, 'job.json'), json.dumps(doc))
    return run([iotbox, 'iot-job-run', path, '--handler-dir', handlers,
                *extra], cwd=workdir, env={'PATH': '/usr/bin:/bin', 'HOME': workdir})


def test_old_schema_document_runs_a_device_client_handler(iotbox, workdir, handlers):
    r = job(iotbox, workdir, handlers, {'operation': 'args.sh', 'args': ['a b', 'c'], 'path': 'default',
                                         'includeStdOut': 'true'}, '--json')
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result['status'] == 'SUCCEEDED'
    assert result['statusDetails']['stdout'] == 'user=[] arg=[a b] arg=[c]'
    assert result['statusDetails']['reason'] == 'exit status 0'


def test_new_schema_with_steps_final_step_and_run_command(iotbox, workdir, handlers):
    doc = {'version': '1.0', 'includeStdOut': True, 'steps': [
        {'action': {'name': 'greet', 'type': 'runCommand', 'input': {'command': 'echo,Hello\\, world'}}},
        {'action': {'name': 'handler', 'type': 'runHandler', 'input': {'handler': 'args.sh', 'args': ['x'],
                                                                        'path': 'default'}}}],
        'finalStep': {'action': {'name': 'last', 'type': 'runCommand', 'input': {'command': 'printf,done'}}}}
    r = job(iotbox, workdir, handlers, doc, '--json')
    assert r.returncode == 0, r.stderr
    assert 'step 1/3 greet: succeeded: exit status 0' in r.stderr
    assert 'Hello, world' in r.stderr
    assert json.loads(r.stdout)['statusDetails'] == {'reason': 'all 2 steps succeeded, final step succeeded',
                                                     'stdout': 'done'}


def test_failure_is_reported_exactly_with_stderr(iotbox, workdir, handlers):
    doc = {'version': '1.0', 'steps': [{'action': {'name': 'boom', 'type': 'runHandler',
                                                   'input': {'handler': 'loud.sh', 'args': ['disk full', '3'],
                                                             'path': 'default'}}}]}
    r = job(iotbox, workdir, handlers, doc, '--json')
    assert r.returncode == 1
    details = json.loads(r.stdout)['statusDetails']
    assert details['reason'] == 'step boom: exit status 3'
    assert details['stderr'] == 'disk full'


def test_dry_run_shows_the_plan_without_running(iotbox, workdir, handlers):
    doc = {'version': '1.0', 'steps': [{'action': {'name': 'h', 'type': 'runHandler',
                                                   'input': {'handler': 'args.sh', 'args': ['1'], 'path': 'default'}}}]}
    r = job(iotbox, workdir, handlers, doc, '--dry-run')
    assert r.returncode == 0
    assert f'step 1/1 h (runHandler): {handlers}/args.sh  1' in r.stdout, r.stdout
    assert 'user=' not in r.stdout + r.stderr


def test_invalid_document_exits_2_and_says_what_is_wrong(iotbox, workdir, handlers):
    r = job(iotbox, workdir, handlers, {'version': '1.0', 'steps': [{'action': {'name': 'x', 'type': 'runScript'}}]})
    assert r.returncode == 2
    assert 'steps[0].action.type' in r.stderr and 'runScript' in r.stderr
    r = job(iotbox, workdir, handlers, {'version': '1.0', 'steps': [
        {'action': {'name': 'x', 'type': 'runHandler', 'input': {'handler': '../../bin/sh'}}}]})
    assert r.returncode == 2
    assert 'plain file name' in r.stderr


def test_handler_with_loose_mode_is_refused_with_the_fix(iotbox, workdir, handlers):
    os.chmod(os.path.join(handlers, 'args.sh'), 0o755)
    r = job(iotbox, workdir, handlers, {'operation': 'args.sh', 'path': 'default'}, '--json')
    assert r.returncode == 1
    reason = json.loads(r.stdout)['statusDetails']['reason']
    assert 'mode 0755, must be 0700 or stricter' in reason and 'chmod 700' in reason


def test_ten_megabytes_of_output_is_cut_not_fatal(iotbox, workdir, handlers):
    doc = {'version': '1.0', 'includeStdOut': 'true', 'steps': [{'action': {
        'name': 'flood', 'type': 'runCommand',
        'input': {'command': 'sh,-c,yes e | head -c 1048576 >&2; yes o | head -c 10485760; echo tail-marker'}}}]}
    r = job(iotbox, workdir, handlers, doc, '--json')
    assert r.returncode == 0, r.stderr[-500:]
    details = json.loads(r.stdout)['statusDetails']
    assert details['stdout'].endswith('tail-marker')
    assert len(details['stdout']) <= 1024 and 1000 <= len(details['stderr']) <= 1024


def test_local_step_limit_stops_the_step(iotbox, workdir, handlers):
    doc = {'version': '1.0', 'steps': [{'action': {'name': 'sleepy', 'type': 'runCommand',
                                                   'input': {'command': 'sleep,30'}}}]}
    r = job(iotbox, workdir, handlers, doc, '--json', '--jobs-step-timeout', '1', '--jobs-kill-grace', '1')
    assert r.returncode == 1
    assert json.loads(r.stdout)['statusDetails']['reason'] == 'step sleepy: timed out after 1 s (killed by signal SIGTERM)'


@pytest.mark.skipif(os.geteuid() != 0, reason='switching user needs root')
def test_run_as_user_switches_user_without_sudo(iotbox, workdir, handlers):
    doc = {'version': '1.0', 'includeStdOut': True, 'steps': [{'action': {
        'name': 'who', 'type': 'runCommand', 'runAsUser': 'nobody', 'input': {'command': 'id,-u'}}}]}
    r = job(iotbox, workdir, handlers, doc, '--json')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)['statusDetails']['stdout'] == '65534'
    doc['steps'][0]['action']['runAsUser'] = 'no-such-user-iotbox'
    r = job(iotbox, workdir, handlers, doc, '--json')
    assert r.returncode == 1
    assert "no such user 'no-such-user-iotbox'" in json.loads(r.stdout)['statusDetails']['reason']


def test_usage_errors(iotbox):
    assert run([iotbox, 'iot-job-run']).returncode == 2
    assert run([iotbox, 'iot-job-run', '/nonexistent.json']).returncode == 2
