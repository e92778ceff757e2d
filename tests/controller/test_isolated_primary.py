"""An isolated primary, on a whole lab (controllers and agents): the primary's agent and its data
centre's controller reach ZooKeeper only through proxies the test cuts silently, while clients still
reach the primary. The agent must stop it acknowledging within its fencing bound; the new primary
must take writes only after that; no acknowledged write may be lost.

A lab of its own (ports from DRCTL_TEST_PORT_BASE+2400; the issue's "partitions simulated on
loopback by the agents' own fault hooks until the namespace lab exists").
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from orchestrator.agent.faults import CutProxies
from orchestrator.agent.rules import fencing_budget
from orchestrator.coordination import Coordinator
from orchestrator.drills.writers import Writers
from orchestrator.errors import CoordinationUnavailable
from orchestrator.lab import Lab
from orchestrator.topology import Topology, with_port_base
from orchestrator.waiting import poll
from tests.conftest import TEST_PORT_BASE, make_lab_dir

pytestmark = pytest.mark.lab

CLUSTER = "payments"


@pytest.fixture(scope="module")
def isolated_lab(shipped_topology: Topology) -> Iterator[tuple[Lab, CutProxies]]:
    topo = with_port_base(shipped_topology, TEST_PORT_BASE + 2400)
    primary = topo.cluster(CLUSTER).initial_primary
    proxies = CutProxies(topo.zookeeper_hosts())
    lab = Lab(topo, make_lab_dir("drctl-isolated-"))
    lab.zk_hosts_override = {f"agent/{CLUSTER}/{primary.name}": proxies.hosts,
                             f"controller/{primary.datacenter}": proxies.hosts}
    try:
        lab.up()
        with psycopg.connect(lab.app_connection_string(topo.cluster(CLUSTER)), autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS isolation_writes (id text PRIMARY KEY)")
        yield lab, proxies
    finally:
        proxies.heal()
        lab.down()
        proxies.close()


def recorded_primary(coord: Coordinator) -> str | None:
    try:
        state, _ = coord.read_state(CLUSTER)
    except CoordinationUnavailable:
        return None  # the observer's own session blinking on a starved machine: "not yet"
    return state.primary if state is not None and state.operation is None else None


def test_an_isolated_primary_fences_itself_before_anything_else_is_promoted(
        isolated_lab: tuple[Lab, CutProxies]) -> None:
    lab, proxies = isolated_lab
    topo = lab.topology
    cluster = topo.cluster(CLUSTER)
    old = cluster.initial_primary
    old_port = topo.member_port(cluster, old)
    zk = topo.zookeeper
    bound = fencing_budget(zk.agent_session_ms / 1000, zk.tick_time_ms / 1000).bound_s
    coord = Coordinator(topo.zookeeper_hosts(), topo.name, identity="test-observer",
                        session_timeout=20 * zk.tick_time_ms / 1000)
    coord.start()
    writers = Writers(lab.app_connection_string(cluster), "isolation_writes")
    try:
        assert recorded_primary(coord) == old.name
        writers.start()
        assert poll(lambda: len([a for a in writers.snapshot() if a.port == old_port]) >= 50, timeout=30,
                    interval=0.05), "the writers never committed on the primary"
        cut_at = time.monotonic()
        proxies.cut()
        moved = poll(lambda: (p := recorded_primary(coord)) not in (None, old.name) and p, timeout=60,
                     interval=0.1)
        assert moved, f"no failover away from the isolated {old.name}"
        new_port = topo.member_port(cluster, cluster.member(str(moved)))
        assert poll(lambda: any(a.port == new_port for a in writers.snapshot()), timeout=30, interval=0.05), \
            f"no write acknowledged by the new primary {moved}"
    finally:
        writers.stop()
        proxies.heal()
    acks = writers.snapshot()
    last_old = max(a.mono for a in acks if a.port == old_port)
    first_new = min(a.mono for a in acks if a.port == new_port)
    print(f"\nisolated {old.name}: last acknowledgement {last_old - cut_at:.3f}s after the cut (bound {bound}s); "
          f"{moved} took its first write {first_new - cut_at:.3f}s after the cut")
    assert last_old - cut_at <= bound, f"{old.name} acknowledged a commit {last_old - cut_at:.3f}s after the cut"
    assert first_new > last_old, "two servers acknowledged writes in overlapping time"
    try:
        with psycopg.connect(lab.app_connection_string(cluster), autocommit=True) as conn:
            stored = {str(r[0]) for r in conn.execute("SELECT id FROM isolation_writes").fetchall()}
    finally:
        coord.stop()
    lost = [a.ident for a in acks if a.ident not in stored]
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:3]}"
