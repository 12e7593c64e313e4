"""Shared by the fakecloud API suites: one broker and one fakecloud per test module, checked on
the way out (exit 0, control socket removed, no traceback), and never left running."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "testbed"))
import testbed  # noqa: E402


def running_cloud(tmp_path_factory, name, prepare=None):
    """Generator behind each module's `cloud` fixture. `prepare(cloud, root)` may add attributes;
    anything in cloud.clients (devices opened by the tests) is closed at the end."""
    from test_fakecloud import Cloud
    root = tmp_path_factory.mktemp(name)
    tb = testbed.Testbed(str(root / "tb")).up()
    c = None
    try:
        c = Cloud(tb)
        c.clients = []
        if prepare:
            prepare(c, root)
        yield c
        for d in c.clients:
            d.close()
        assert c.terminate() == 0, open(c.out.name).read()
        assert not os.path.exists(c.sock), "control socket left behind"
        with open(c.out.name) as f:
            out = f.read()
        assert "Traceback" not in out and "failed" not in out, out
    finally:
        if c is not None:
            for d in c.clients:
                d.close()
            if c.proc.poll() is None:
                c.proc.kill()
                c.proc.wait()
        tb.down()
        testbed.reap(str(root))


def cloud_fixture(name, prepare=None):
    @pytest.fixture(scope="module")
    def cloud(tmp_path_factory):
        yield from running_cloud(tmp_path_factory, name, prepare)
    return cloud
