"""Ports handed out once per test run. A test picks a free port and binds it later, and a server it
stops for an outage starts again on its port: with the suite on parallel workers, no other worker
may pick that port meanwhile. The workers' shared run folder (tests/workers.py) holds a file per
port handed out."""
from __future__ import annotations

import os
from pathlib import Path

RUN_FOLDER = "PYTEST_GATEWAY_RUN_FOLDER"  # set by the controlling process, inherited by the workers


def claim_port(port: int) -> bool:
    """Whether `port` is this caller's: true for the first caller in the run only."""
    folder = os.environ.get(RUN_FOLDER)
    if folder is None:  # not under pytest
        return True
    try:
        os.close(os.open(Path(folder) / f"port-{port}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True
