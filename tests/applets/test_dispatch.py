"""The busybox contract of the static binary: dispatch by link name or first argument, the
listing and install options, version, help and exit codes."""
import os
import re
import subprocess

from conftest import APPLETS, run


def test_binary_is_fully_static(iotbox):
    out = run(['file', '-L', iotbox]).stdout
    assert 'statically linked' in out, out
    assert 'dynamically' not in out


def test_no_argument_and_list_show_every_applet(iotbox):
    bare = run([iotbox])
    assert bare.returncode == 0
    listing = run([iotbox, '--list'])
    assert listing.returncode == 0
    assert listing.stdout.split() == APPLETS
    for a in APPLETS:
        assert a in bare.stdout


def test_list_full_gives_install_paths(iotbox):
    out = run([iotbox, '--list-full']).stdout.split()
    assert '/usr/sbin/iotd' in out
    assert '/usr/bin/iot-provision' in out
    assert len(out) == len(APPLETS)


def test_symlink_and_argument_dispatch_behave_the_same(iotbox, links):
    for a in APPLETS:
        by_link = run([os.path.join(links, a), '--help'])
        by_arg = run([iotbox, a, '--help'])
        by_help = run([iotbox, '--help', a])
        assert by_link.returncode == 0, (a, by_link.stderr)
        assert by_link.stdout == by_arg.stdout == by_help.stdout
        assert a in by_link.stdout.splitlines()[0]


def test_applet_sees_its_own_name_when_dispatched_by_argument(iotbox, links):
    # A configuration error names the applet in the same way either way.
    by_link = run([os.path.join(links, 'iotd'), '--no-such-flag'])
    by_arg = run([iotbox, 'iotd', '--no-such-flag'])
    assert by_link.returncode == by_arg.returncode == 2
    assert by_link.stderr == by_arg.stderr
    assert by_link.stderr.startswith('iotd: ')
    assert '--no-such-flag' in by_link.stderr


def test_unknown_applet_exits_127_with_one_line(iotbox, workdir):
    r = run([iotbox, 'iot-frobnicate'])
    assert r.returncode == 127
    assert r.stderr.strip() == 'iotbox: applet not found: iot-frobnicate'
    link = os.path.join(workdir, 'frob')
    os.symlink(iotbox, link)
    r = run([link, 'x'])
    assert r.returncode == 127
    assert len(r.stderr.strip().splitlines()) == 1 and 'frob' in r.stderr
    r = run([iotbox, '--help', 'nope'])
    assert r.returncode == 127


def test_unknown_option_is_a_usage_error(iotbox):
    r = run([iotbox, '--frob'])
    assert r.returncode == 2
    assert '--frob' in r.stderr


def test_version_names_applets_and_linked_libraries(iotbox):
    r = run([iotbox, '--version'])
    assert r.returncode == 0
    out = r.stdout
    assert re.match(r'iotbox \d+\.\d+\.\d+', out)
    for a in APPLETS:
        assert a in out
    for lib, pattern in [('OpenSSL', r'OpenSSL 3\.\d+\.\d+'), ('libmosquitto', r'libmosquitto 2\.0\.\d+'),
                         ('cJSON', r'cJSON 1\.7\.\d+'), ('protobuf', r'protobuf-lite 3\.\d+\.\d+'),
                         ('zlib', r'zlib 1\.\d+')]:
        assert re.search(pattern, out), (lib, out)
    assert run([iotbox, 'iotd', '--version']).stdout == out


def test_install_hard_links(iotbox, workdir):
    d = os.path.join(workdir, 'hard')
    os.makedirs(d)
    r = run([iotbox, '--install', d])
    assert r.returncode == 0, r.stderr
    ino = os.stat(iotbox).st_ino
    for a in APPLETS:
        p = os.path.join(d, a)
        assert not os.path.islink(p)
        assert os.stat(p).st_ino == ino
    # Re-running is harmless.
    assert run([iotbox, '--install', d]).returncode == 0
    assert run([os.path.join(d, 'iotd'), '--version']).returncode == 0


def test_install_symlinks_and_leaves_foreign_files_alone(iotbox, workdir):
    d = os.path.join(workdir, 'soft')
    os.makedirs(d)
    foreign = os.path.join(d, 'iot-config')
    with open(foreign, 'w') as f:
        f.write('#!/bin/sh\necho mine\n')
    r = run([iotbox, '--install', '-s', d])
    assert r.returncode == 1
    assert 'iot-config exists and is not iotbox' in r.stderr
    with open(foreign) as f:
        assert 'mine' in f.read()
    for a in APPLETS:
        if a == 'iot-config':
            continue
        p = os.path.join(d, a)
        assert os.path.islink(p) and os.path.realpath(p) == os.path.realpath(iotbox)


def test_install_usage(iotbox):
    assert run([iotbox, '--install']).returncode == 2
