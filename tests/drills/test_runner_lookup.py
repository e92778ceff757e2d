"""The drill's loss lookup waits for a writable primary, and says why when none comes."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from orchestrator.drills.runner import DrillRunner
from orchestrator.errors import DatabaseUnavailable
from orchestrator.lab import Lab
from orchestrator.topology import load_topology
from tests.conftest import REPO


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_no_writable_primary_within_the_timeout_raises_the_last_failure(tmp_path: Path) -> None:
    said: list[str] = []
    runner = DrillRunner(Lab(load_topology(REPO / "topology" / "lab.yaml"), tmp_path / "lab"), REPO / "drills",
                         tmp_path / "reports", progress=said.append)
    conninfo = f"host=127.0.0.1 port={_closed_port()} dbname=bank user=app connect_timeout=1"
    with pytest.raises(DatabaseUnavailable, match="bank transfer lookup failed"):
        runner._lookup_when_writable(conninfo, frozenset({"00000000-0000-0000-0000-000000000001"}), timeout=1.0)
    assert said == ["no writable primary to measure against after 1s"]
