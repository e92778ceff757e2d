"""Break-glass on a lab of its own (ports DRCTL_TEST_PORT_BASE+1700, no node agents so the old primary
keeps accepting writes: the worst case the adoption must fence). Refused while ZooKeeper has a
majority; with two of the three servers stopped, drctl dr promote makes dc3-a primary without
ZooKeeper; once ZooKeeper is back the leader adopts dc3-a and fences dc1-a: one writer afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import breakglass
from orchestrator import postgres as pg
from orchestrator.coordination import Coordinator
from orchestrator.lab import Lab
from orchestrator.state import Role
from orchestrator.topology import Topology, with_port_base
from orchestrator.waiting import poll
from tests.conftest import TEST_PORT_BASE, make_lab_dir

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
CLUSTER = "payments"


@pytest.fixture(scope="module")
def glass_lab(shipped_topology: Topology) -> Iterator[Lab]:
    lab = Lab(with_port_base(shipped_topology, TEST_PORT_BASE + 1700), make_lab_dir("drctl-glass-"), agents=False)
    try:
        lab.up(timeout=240)   # the machine is shared: start-up under heavy load takes minutes
        yield lab
    finally:
        lab.down()


def drctl(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args, "--lab-dir", str(lab.root)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def promote(lab: Lab, region: str = "east") -> subprocess.CompletedProcess[str]:
    return drctl(lab, "dr", "promote", "--cluster", CLUSTER, "--to", "dc3-a", "--accept-data-loss",
                 "--confirm-fenced", region)


def roles(lab: Lab) -> dict[str, Role | None]:
    prober = pg.Prober(lab.credentials, timeout=1)
    try:
        cluster = lab.topology.cluster(CLUSTER)
        found = {}
        for member in cluster.members:
            status = prober.probe(lab.layout(cluster, member).endpoint)
            found[member.name] = status.role if status.reachable else None
        return found
    finally:
        prober.close()


def controller_events(root: Path, name: str) -> list[dict[str, object]]:
    found = []
    for log in sorted((root / "controller").glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if f'"event": "{name}"' in line:
                found.append(json.loads(line))
    return found


def test_break_glass_promotes_without_zookeeper_and_wins_when_it_returns(glass_lab: Lab) -> None:
    lab = glass_lab
    refused = promote(lab)
    assert refused.returncode != 0
    assert "ZooKeeper has a majority (3 of 3 servers serve): do not break glass" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert breakglass.read_record(lab.root, CLUSTER) is None

    lost = [s for s in lab.zookeeper() if s.datacenter in ("dc3", "witness")]
    for server in lost:
        server.stop()
    assert poll(lambda: breakglass.zookeeper_serving(lab)[0] == 0, timeout=30, interval=0.1)
    wrong = promote(lab, "west")
    assert wrong.returncode != 0 and "--confirm-fenced: west named" in wrong.stderr, wrong.stderr
    done = promote(lab)
    assert done.returncode == 0, done.stderr
    record = breakglass.read_record(lab.root, CLUSTER)
    assert record is not None and (record.target, record.lost_region) == ("dc3-a", "east")
    assert roles(lab)["dc3-a"] is Role.PRIMARY
    audit = "".join(p.read_text() for p in sorted((lab.root / "audit").glob("*.jsonl")))
    assert "break-glass-promote" in audit and record.id in audit

    for server in lost:
        server.start()
    coord = Coordinator(lab.topology.zookeeper_hosts(), lab.topology.name, identity="test")
    coord.start(timeout=30)
    try:
        def adopted() -> bool:
            state, _ = coord.read_state(CLUSTER)
            return state is not None and state.primary == "dc3-a" and record.id in state.break_glass

        assert poll(adopted, timeout=60, interval=0.2), controller_events(lab.root, "decision")[-5:]
        state, _ = coord.read_state(CLUSTER)
        assert state is not None and state.generation >= 2 and state.history[-1].id == record.id

        def one_writer() -> bool:
            now = roles(lab)
            return [n for n, role in now.items() if role is Role.PRIMARY] == ["dc3-a"]

        assert poll(one_writer, timeout=60, interval=0.2), roles(lab)
    finally:
        coord.stop()
    assert [e["primary"] for e in controller_events(lab.root, "break-glass-adopted")] == ["dc3-a"]
    assert any(e.get("member") == "dc1-a" for e in controller_events(lab.root, "fenced-stray"))
