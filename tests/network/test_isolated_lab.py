"""The isolated lab (``drctl lab up --isolated``): every data centre in its own network namespace,
and the link-fault drills that only it can run (issue 10's tests).

One module-scoped isolated lab serves every test here, in file order; the last test takes it
down and checks that nothing is left (namespaces, veth, processes), and that a second ``down``
is harmless.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from orchestrator import postgres as pg
from orchestrator.coordination import Coordinator
from orchestrator.drills.report import DrillReport
from orchestrator.drills.runner import DrillRunner
from orchestrator.ensemble import ensemble_ready
from orchestrator.lab import Lab
from orchestrator.network import namespaces
from orchestrator.processes import is_running
from orchestrator.topology import Topology, with_port_base
from orchestrator.waiting import poll
from tests.conftest import REPO, TEST_PORT_BASE, make_lab_dir

pytestmark = pytest.mark.lab

ISOLATED_BASE = TEST_PORT_BASE + 7300


@pytest.fixture(scope="module")
def isolated_lab(shipped_topology: Topology) -> Iterator[Lab]:
    lab = Lab(with_port_base(shipped_topology, ISOLATED_BASE), make_lab_dir("drctl-isolated-"), isolated=True)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def _namespace_of_pid(pid: int) -> str:
    return subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_every_process_runs_in_its_data_centres_namespace(isolated_lab: Lab) -> None:
    lab = isolated_lab
    network = lab.network
    assert network is not None
    cluster = lab.topology.cluster("payments")
    for member in cluster.members:
        layout = lab.layout(cluster, member)
        # The member's address is its namespace's, and its postmaster runs there.
        assert layout.endpoint.address in network.namespace_of(member.datacenter).addresses
        pid = layout.postmaster_pid()
        assert pid is not None and _namespace_of_pid(pid) == network.namespace_of(member.datacenter).name
        agent = lab.agent_pid(cluster.name, member.name)
        assert agent is not None and _namespace_of_pid(agent) == network.namespace_of(member.datacenter).name
    for server in lab.zookeeper():
        pid = server.pid()
        assert pid is not None and _namespace_of_pid(pid) == network.namespace_of(server.datacenter).name
    for dc in lab.topology.controller_datacenters:
        pid = lab.controller_pid(dc)
        assert pid is not None and _namespace_of_pid(pid) == network.namespace_of(dc, "ctl").name


def test_isolated_lab_replicates_to_every_standby(isolated_lab: Lab) -> None:
    lab = isolated_lab
    cluster = lab.topology.cluster("payments")
    marker = uuid.uuid4().hex
    with psycopg.connect(lab.app_connection_string(cluster), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS netns_probe (marker text PRIMARY KEY)")
        conn.execute("INSERT INTO netns_probe VALUES (%s)", (marker,))
    for member in cluster.members:
        endpoint = lab.layout(cluster, member).endpoint

        def replayed(endpoint: pg.Endpoint = endpoint) -> bool:
            with pg.connect(endpoint, lab.credentials, dbname=cluster.database) as conn:
                try:
                    row = conn.execute("SELECT count(*) FROM netns_probe WHERE marker = %s", (marker,)).fetchone()
                except psycopg.errors.UndefinedTable:
                    return False   # an asynchronous standby has not replayed the CREATE TABLE yet
            return bool(row and row[0] == 1)

        assert poll(replayed, timeout=30, interval=0.05), f"{member.name} never replayed {marker}"


def _primary(lab: Lab) -> str:
    coord = Coordinator(lab.topology.zookeeper_hosts(), lab.topology.name, identity="test")
    coord.start()
    try:
        state, _ = coord.read_state("payments")
    finally:
        coord.stop()
    assert state is not None
    return state.primary


def _run(lab: Lab, drill: str, reports: Path) -> DrillReport:
    report, _ = DrillRunner(lab, REPO / "drills", reports).run(drill)
    m = report.measurement
    # Whatever the fault: no acknowledged transfer lost, money conserved, never two writers.
    assert m.loss.lost == 0, m.loss
    assert m.invariants.expected_total == m.invariants.observed_total
    assert m.invariants.duplicate_transfers == 0
    assert not m.invariants.writer_conflicts, m.invariants.writer_conflicts
    return report


def test_partition_of_the_primarys_datacenter_fails_over_elsewhere(isolated_lab: Lab, tmp_path: Path) -> None:
    lab = isolated_lab
    cluster = lab.topology.cluster("payments")
    old = _primary(lab)
    old_dc = cluster.member(old).datacenter
    report = _run(lab, "partition-datacenter", tmp_path)
    promotions = report.measurement.promotions
    assert [p.kind for p in promotions] == ["failover"], promotions
    assert cluster.member(promotions[0].target).datacenter != old_dc
    # Promoted only once the old primary was proven to acknowledge nothing more (fenced by its agent).
    assert promotions[0].proven and not promotions[0].accept_data_loss, promotions[0]
    # After the heal the old primary came back as a standby, and writes land on the new one.
    assert _primary(lab) == promotions[0].target
    assert lab.status().healthy
    new = lab.layout(cluster, cluster.member(promotions[0].target)).endpoint
    with psycopg.connect(lab.app_connection_string(cluster), autocommit=True) as conn:
        row = conn.execute("SELECT inet_server_addr()::text, inet_server_port(), pg_is_in_recovery()").fetchone()
    assert row is not None and (row[0].split("/")[0], row[1], row[2]) == (new.address, new.port, False)


def test_controllers_cut_from_the_primary_alone_cause_no_failover(isolated_lab: Lab, tmp_path: Path) -> None:
    lab = isolated_lab
    before = _primary(lab)
    report = _run(lab, "partition-primary-from-controllers", tmp_path)
    assert report.measurement.promotions == ()
    assert _primary(lab) == before
    assert report.verdict.passed, report.verdict.failures


def test_zookeeper_minority_cut_then_healed_rejoins_without_failover(isolated_lab: Lab, tmp_path: Path) -> None:
    lab = isolated_lab
    before = _primary(lab)
    report = _run(lab, "isolate-zookeeper-minority", tmp_path)
    assert report.measurement.promotions == ()
    assert _primary(lab) == before
    # The cut server serves again: one leader and two followers (polled, never a fixed sleep).
    assert poll(lambda: ensemble_ready(lab.zookeeper()), timeout=60, interval=0.2), \
        [s.mode() for s in lab.zookeeper()]
    assert report.verdict.passed, report.verdict.failures


def test_lab_down_leaves_nothing_and_is_idempotent(isolated_lab: Lab) -> None:
    lab = isolated_lab
    network = lab.network
    assert network is not None
    pids = [pid for name in [n.name for n in network.namespaces] for pid in namespaces.namespace_pids(name)]
    assert pids
    down = [sys.executable, "-m", "orchestrator.cli", "lab", "down", "--lab-dir", str(lab.root)]
    subprocess.run(down, check=True, capture_output=True, timeout=120)
    assert not any(is_running(pid) for pid in pids)
    names = {n.name for n in network.namespaces} | {network.core}
    assert names & namespaces.existing_namespaces() == set()
    assert not namespaces.link_exists(network.root_link)
    assert not lab.root.exists()
    again = subprocess.run(down, check=True, capture_output=True, text=True, timeout=60)
    assert "nothing to stop" in again.stdout
