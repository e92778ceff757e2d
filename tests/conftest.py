"""Shared fixtures: the shipped topology, and one real lab per test session.

The lab runs on its own port range (``DRCTL_TEST_PORT_BASE``, default 26000) in a
temporary directory, so the suite can run beside a developer's ``.lab``. Every process
it starts is stopped by PID in teardown.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from orchestrator.lab import Lab
from orchestrator.topology import Topology, load_topology, with_port_base

REPO = Path(__file__).resolve().parent.parent
# Under pytest-xdist each worker takes its own window below the base (gw0 the base itself, gw1
# 7000 ports lower, ...): every lab port of a test is an offset (< 6800) from TEST_PORT_BASE.
WORKER_PORT_SPAN = 7000
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
TEST_PORT_BASE = int(os.environ.get("DRCTL_TEST_PORT_BASE", "26000")) - _WORKER * WORKER_PORT_SPAN

# Property tests check logic, never speed: hypothesis's default 200 ms deadline per example fails
# them when the session lab's servers share the two cores (a timing target belongs in a benchmark).
settings.register_profile("drctl", deadline=None)
settings.load_profile("drctl")


@pytest.fixture(scope="session")
def shipped_topology() -> Topology:
    return load_topology(REPO / "topology" / "lab.yaml")


def make_lab_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)  # the postgres user must traverse it
    return path


@pytest.fixture(scope="session")
def lab(shipped_topology: Topology) -> Iterator[Lab]:
    """The shipped topology as real processes, shared by every lab test in the session."""
    lab = Lab(with_port_base(shipped_topology, TEST_PORT_BASE), make_lab_dir("drctl-lab-"))
    try:
        lab.up()
        yield lab
    finally:
        lab.down()
