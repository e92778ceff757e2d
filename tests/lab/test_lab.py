"""The lab against real PostgreSQL 15 and ZooKeeper 3.8 processes."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from orchestrator import decisions as d
from orchestrator import postgres as pg
from orchestrator.lab import Lab
from orchestrator.processes import is_running, port_in_use
from orchestrator.state import Role
from orchestrator.topology import parse_topology
from orchestrator.waiting import poll
from tests.conftest import TEST_PORT_BASE, make_lab_dir

pytestmark = pytest.mark.lab


def _drctl(*args: str, lab: Lab) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args, "--lab-dir", str(lab.root)],
        capture_output=True, text=True, check=True, timeout=60,
    )
    return proc.stdout.strip()


def _wait_replayed(lab: Lab, member_name: str, marker: str, timeout: float = 30) -> None:
    cluster = lab.topology.cluster("payments")
    endpoint = lab.layout(cluster, cluster.member(member_name)).endpoint

    def replayed() -> bool:
        with pg.connect(endpoint, lab.credentials, dbname="payments") as conn:
            try:
                row = conn.execute("SELECT count(*) FROM lab_probe WHERE marker = %s", (marker,)).fetchone()
            except psycopg.errors.UndefinedTable:
                return False  # an asynchronous standby has not replayed the CREATE TABLE yet
        return bool(row and row[0] == 1)

    assert poll(replayed, timeout=timeout, interval=0.05), f"{member_name} never replayed {marker}"


def test_write_through_connstr_reaches_every_standby(lab: Lab) -> None:
    conninfo = _drctl("connstr", "payments", lab=lab)
    assert "target_session_attrs=read-write" in conninfo
    marker = uuid.uuid4().hex
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS lab_probe (marker text PRIMARY KEY)")
        conn.execute("INSERT INTO lab_probe VALUES (%s)", (marker,))
    for member in lab.topology.cluster("payments").members:
        _wait_replayed(lab, member.name, marker)


def test_replication_states_follow_the_policy(lab: Lab) -> None:
    status = lab.status()
    by_name = {r.member: r for r in status.members}
    primaries = [r for r in status.members if r.role is Role.PRIMARY]
    assert len(primaries) == 1
    cluster = lab.topology.cluster("payments")
    # RPO 0: only members outside the primary's data centre confirm its commits.
    sync = set(d.Policy.from_topology(lab.topology, cluster).quorum_for(primaries[0].member)[0])
    assert sync and all(cluster.member(n).datacenter != primaries[0].datacenter for n in sync)
    for member in cluster.members:
        row = by_name[member.name]
        if row.role is Role.PRIMARY:
            continue
        assert row.replication == ("quorum" if member.name in sync else "async"), row
    assert by_name["dc3-a"].replication == "async"


def test_zookeeper_has_one_leader_and_two_followers(lab: Lab) -> None:
    modes = sorted(server.mode() or "down" for server in lab.zookeeper())
    assert modes == ["follower", "follower", "leader"]


def test_up_twice_changes_nothing(lab: Lab) -> None:
    def pids() -> dict[str, int | None]:
        found: dict[str, int | None] = {la.member.name: la.postmaster_pid() for la in lab.layouts()}
        found.update({f"zk-{s.datacenter}": s.pid() for s in lab.zookeeper()})
        if lab.with_controllers:
            found.update({f"ctl-{dc}": lab.controller_pid(dc) for dc in lab.topology.controller_datacenters})
        return found

    before = pids()
    assert all(before.values()), before
    lab.up()
    assert pids() == before


def test_down_stops_every_process_and_frees_every_port() -> None:
    """A one-DC lab of its own: up, then down, then nothing of it runs or listens."""
    topo = parse_topology({
        "name": "mini",
        "regions": [{"name": "r", "datacenters": [{"name": "dc1"}]}],
        "ports": {"base": TEST_PORT_BASE + 300, "span": 20},
        "clusters": [{"name": "mini", "members": [
            {"name": "a", "datacenter": "dc1", "role": "primary"}, {"name": "b", "datacenter": "dc1"}],
            # One data centre cannot promise RPO 0 (its loss takes every copy): a positive RPO.
            "targets": {"rpo_seconds": 1}}],
    })
    root = make_lab_dir("drctl-mini-")
    lab = Lab(topo, root, controllers=False)
    try:
        lab.up()
        pids = [la.postmaster_pid() for la in lab.layouts()] + [s.pid() for s in lab.zookeeper()]
        assert all(pids), pids
    finally:
        lab.down()
    assert not any(is_running(pid) for pid in pids if pid)
    assert not any(port_in_use("127.0.0.1", port) for port in topo.port_plan().values())
    assert not Path(root).exists()
