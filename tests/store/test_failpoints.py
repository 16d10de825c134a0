"""The failpoints the fault tests use: armed only where asked, at the n-th hit, and from the
environment of a child process."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from neurondb.store import failpoints


def test_nth_hit_and_repeat():
    seen = []
    with failpoints.armed("tensor.flush", lambda **c: seen.append(c["key"]), nth=2):
        for k in range(4):
            failpoints.hit("tensor.flush", key=k)
    assert seen == [1]
    with failpoints.armed("tensor.flush", lambda **c: seen.append(c["key"]), nth=3, repeat=True):
        for k in range(5):
            failpoints.hit("tensor.flush", key=k)
    assert seen == [1, 2, 3, 4]
    failpoints.hit("tensor.flush", key=9)  # disarmed on exit
    assert seen == [1, 2, 3, 4]


def test_named_actions_and_unknown_points():
    with failpoints.armed("parquet.write", "enospc"), pytest.raises(OSError) as e:
        failpoints.hit("parquet.write", table="examples.parquet")
    assert e.value.errno == errno.ENOSPC
    with failpoints.armed("shard.commit.before", "interrupt"), pytest.raises(KeyboardInterrupt):
        failpoints.hit("shard.commit.before")
    with pytest.raises(ValueError, match="unknown failpoint 'nope'"):
        failpoints.arm("nope", lambda **_: None)
    with pytest.raises(ValueError, match="unknown action"):
        failpoints.action("explode")


def test_armed_from_the_environment_in_a_child():
    code = ("from neurondb.store import failpoints\n"
            "failpoints.hit('run.begin'); print('one', flush=True)\n"
            "failpoints.hit('run.begin'); print('two', flush=True)\n")
    env = dict(os.environ, NEURONDB_FAILPOINTS="run.begin=kill@2")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode == -9 and res.stdout.split() == ["one"]
