"""The drill runner's guards: a cluster the topology closes to drills, and a loss lookup that waits for a
writable primary and says why when none comes."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from orchestrator.drills.runner import DrillRunner
from orchestrator.errors import DatabaseUnavailable, InvalidInput, TopologyError
from orchestrator.lab import Lab
from orchestrator.topology import load_topology, parse_topology
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


def test_a_cluster_closed_to_drills_refuses_them_in_one_line_naming_the_field(tmp_path: Path) -> None:
    data = load_topology(REPO / "topology" / "lab.yaml").model_dump(mode="json")
    data["clusters"][0]["drills"] = "forbidden"
    runner = DrillRunner(Lab(parse_topology(data), tmp_path / "lab"), REPO / "drills", tmp_path / "reports")
    with pytest.raises(InvalidInput) as caught:
        runner.load("primary-crash")
    assert str(caught.value) == ("clusters.payments.drills: the topology forbids drills on payments; set drills: "
                                 "allowed to opt in for a planned drill")
    data["clusters"][0]["drills"] = "allowed"
    assert DrillRunner(Lab(parse_topology(data), tmp_path / "lab2"), REPO / "drills",
                       tmp_path / "reports").load("primary-crash").cluster == "payments"
    data["clusters"][0]["drills"] = "sometimes"
    with pytest.raises(TopologyError, match="drills"):
        parse_topology(data)
