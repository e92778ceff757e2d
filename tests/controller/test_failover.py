"""The controllers against the real lab: kill -9 the primary, the leader; switch over; probe faults."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from orchestrator import postgres as pg
from orchestrator.controller import Controller, EventLog
from orchestrator.coordination import Coordinator
from orchestrator.drills.writers import Ack, Writers
from orchestrator.errors import LostLeadership
from orchestrator.lab import Lab
from orchestrator.state import Role
from orchestrator.topology import Topology

pytestmark = pytest.mark.lab


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)


def roles(lab: Lab) -> dict[str, tuple[Role, bool, str | None]]:
    cluster = lab.topology.cluster("payments")
    prober = pg.Prober(lab.credentials, timeout=1)
    try:
        found = {}
        for member in cluster.members:
            st = prober.probe(lab.layout(cluster, member).endpoint)
            found[member.name] = (st.role, st.streaming, st.upstream)
        return found
    finally:
        prober.close()


def primary_of(lab: Lab) -> str | None:
    primaries = [n for n, (role, _, _) in roles(lab).items() if role is Role.PRIMARY]
    return primaries[0] if len(primaries) == 1 else None


def all_streaming_from(lab: Lab, primary: str) -> bool:
    cluster = lab.topology.cluster("payments")
    endpoint = lab.layout(cluster, cluster.member(primary)).endpoint
    upstream = f"{endpoint.address}:{endpoint.port}"
    return all(
        role is Role.STANDBY and streaming and up == upstream
        for name, (role, streaming, up) in roles(lab).items() if name != primary
    )


@pytest.fixture
def writer(lab: Lab) -> Iterator[Writers]:
    """A steady write loop through the multi-host string; remembers what was acknowledged."""
    conninfo = lab.app_connection_string(lab.topology.cluster("payments"))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS ctl_writes (id text PRIMARY KEY)")
    with Writers(conninfo, "ctl_writes", count=1, retry_pause=0.005) as w:
        wait_for(lambda: w.count() > 50, 10, "writes to flow")
        yield w


def assert_all_present(lab: Lab, acked: list[Ack]) -> None:
    with psycopg.connect(lab.app_connection_string(lab.topology.cluster("payments"))) as conn:
        present = {r[0] for r in conn.execute("SELECT id FROM ctl_writes WHERE id = ANY(%s)",
                                              ([a.ident for a in acked],))}
    missing = [a.ident for a in acked if a.ident not in present]
    assert not missing, f"{len(missing)} acknowledged writes lost"


def healthy(lab: Lab) -> str:
    wait_for(lambda: primary_of(lab) is not None and all_streaming_from(lab, primary_of(lab) or ""), 60,
             "a healthy cluster")
    primary = primary_of(lab)
    assert primary is not None
    return primary


def coordinator(topology: Topology) -> Coordinator:
    coord = Coordinator(topology.zookeeper_hosts(), topology.name, identity="test")
    coord.start()
    return coord


def test_kill_primary_fails_over_and_old_primary_rejoins(lab: Lab, writer: Writers) -> None:
    old = healthy(lab)
    cluster = lab.topology.cluster("payments")
    pid = lab.layout(cluster, cluster.member(old)).postmaster_pid()
    assert pid is not None
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: primary_of(lab) not in (None, old), 30, "a new primary")
    new = primary_of(lab)
    assert new in lab.topology.synchronous_members(cluster)
    wait_for(lambda: (last := writer.last()) is not None and last.wall > killed_at + 0.05, 30, "writes to resume")
    writer.stop()
    acked = writer.snapshot()
    assert_all_present(lab, [a for a in acked if a.wall < killed_at])
    assert_all_present(lab, acked)
    # The old primary comes back by itself (pg_rewind playbook) as a standby of the new one.
    wait_for(lambda: all_streaming_from(lab, new or ""), 90, f"{old} to rejoin as a standby of {new}")


def test_killing_the_leader_elects_another_with_a_higher_epoch(lab: Lab) -> None:
    healthy(lab)
    coord = coordinator(lab.topology)
    try:
        wait_for(lambda: coord.leader_identity() is not None, 20, "a leader")
        leader = coord.leader_identity()
        old_lease = coord.current_lease()
        assert leader is not None and old_lease is not None
        dc = leader.split(":")[0]
        pid = lab.controller_pid(dc)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: coord.leader_identity() not in (None, leader), 30, "a new leader")
        wait_for(lambda: coord.current_epoch() > old_lease.epoch, 10, "a new epoch")
        # A deposed leader waking up late can change nothing.
        state, version = coord.read_state("payments")
        assert state is not None
        with pytest.raises(LostLeadership):
            coord.write_state(old_lease, state.model_copy(update={"primary": "dc3-a"}), version)
        assert coord.read_state("payments")[0].primary == state.primary  # type: ignore[union-attr]
    finally:
        coord.stop()
        lab.up()  # restarts the killed controller


def _switchover(lab: Lab, target: str) -> None:
    subprocess.run([sys.executable, "-m", "orchestrator.cli", "switchover", "payments", "--to", target,
                    "--lab-dir", str(lab.root)], check=True, capture_output=True, text=True, timeout=120)


def test_switchover_there_and_back_loses_nothing(lab: Lab, writer: Writers) -> None:
    first = healthy(lab)
    cluster = lab.topology.cluster("payments")
    target = next(m for m in lab.topology.synchronous_members(cluster) if m != first)
    _switchover(lab, target)
    assert primary_of(lab) == target
    healthy(lab)
    _switchover(lab, first)
    assert primary_of(lab) == first
    writer.stop()
    assert_all_present(lab, writer.snapshot())
    healthy(lab)


def test_bad_switchover_target_is_refused(lab: Lab) -> None:
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "switchover", "payments", "--to", "dc9-z",
                           "--lab-dir", str(lab.root)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--to: payments has no member 'dc9-z'" in proc.stderr


def test_probe_failure_alone_does_not_fail_over(lab: Lab) -> None:
    """A controller whose probe of the primary hits a wrong port, while standbys stream: no failover."""
    primary = healthy(lab)
    cluster = lab.topology.cluster("payments")
    # Its own ZooKeeper namespace, so it leads alone and would act on the real cluster.
    topo = Topology.model_validate({**lab.topology.model_dump(mode="json"), "name": "probe-fault"})
    coord = coordinator(lab.topology)
    fork = Coordinator(topo.zookeeper_hosts(), topo.name, identity="test")
    fork.start()
    try:
        wait_for(lambda: coord.read_state("payments")[0] is not None, 20, "the leader to record state")
        state, _ = coord.read_state("payments")
        assert state is not None and state.primary == primary
        _, version = fork.read_state("payments")
        fork.write_state(fork.bump_epoch(), state.model_copy(update={"operation": None}), version)
    finally:
        coord.stop()
        fork.stop()
    out = io.StringIO()
    controller = Controller(topo, "dc2", lab.root, lab.credentials, log=EventLog(out))
    real = lab.layout(cluster, cluster.member(primary)).endpoint
    controller.probe_overrides[primary] = pg.Endpoint(real.name, real.address, lab.topology.ports.end + 50)
    thread = threading.Thread(target=controller.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: '"alive"' in out.getvalue() or "still stream" in out.getvalue(), 20,
                 "the controller to notice the standbys still stream")
        time.sleep(1.0)
    finally:
        controller.stop_event.set()
        thread.join(10)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert not [e for e in events if e["event"] == "fenced-stray"]
    kinds = {e.get("kind") for e in events if e["event"] == "decision"}
    assert "failover" not in kinds
    assert not [e for e in events if e["event"] in ("failover-intent", "promoted")]
    assert primary_of(lab) == primary
