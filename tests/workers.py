"""What the processes of one test run share when pytest-xdist runs the suite on parallel workers: a
folder of the run, made by the controlling process before it starts them, which holds

- the ports handed out (tests/ports.py);
- the locks of the `alone` mark. A test that measures latency runs with no other test beside it:
  another worker's load would count in what it measures.

Every test holds a shared lock on the run's lock file while it runs (setup, call and teardown); an
`alone` test holds it exclusively. An `alone` test waiting for the others also holds a second lock,
the gate, that every test takes before the first: the others cannot keep starting tests and starve
it. Without workers no lock is taken.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.ports import RUN_FOLDER


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "alone: run with no other test running beside it on another worker")
    if not hasattr(config, "workerinput"):  # the controlling process, or a run without workers
        os.environ[RUN_FOLDER] = tempfile.mkdtemp(prefix="gateway-tests-run-")


def pytest_unconfigure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and RUN_FOLDER in os.environ:
        shutil.rmtree(os.environ.pop(RUN_FOLDER), ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    if not hasattr(item.config, "workerinput"):
        return (yield)
    folder = Path(os.environ[RUN_FOLDER])
    with open(folder / "gate.lock", "a") as gate, open(folder / "run.lock", "a") as run:
        if item.get_closest_marker("alone"):
            fcntl.flock(gate, fcntl.LOCK_EX)
            fcntl.flock(run, fcntl.LOCK_EX)
        else:
            fcntl.flock(gate, fcntl.LOCK_SH)
            fcntl.flock(run, fcntl.LOCK_SH)
        fcntl.flock(gate, fcntl.LOCK_UN)
        return (yield)  # closing the files releases the run lock
