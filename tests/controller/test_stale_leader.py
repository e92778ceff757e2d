"""A leader frozen past its ZooKeeper session wakes up after another failed over: it changes nothing.

The lab's controllers are processes, so SIGSTOP freezes the leader whole (its ZooKeeper
client too), as a long GC pause or a frozen VM would.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from orchestrator.drills.writers import Writers
from orchestrator.lab import Lab
from tests.controller.test_failover import (
    coordinator,
    healthy,
    primary_of,
    wait_for,
)
from tests.controller.test_failover import writer as writer  # the fixture

pytestmark = pytest.mark.lab

# What only an acting leader logs: any of them from the woken leader is a failure.
ACTIONS = {"fenced-stray", "fenced", "failover-intent", "switchover-intent", "promoted", "repointed",
           "rejoin-start", "state-created", "quorum-widened", "quorum-narrowed", "quorum-prepared", "request",
           "scheduled-drill", "paused", "resumed", "sync-off", "caught-up"}


def events_since(log: Path, offset: int, controller: str) -> list[dict[str, Any]]:
    with log.open("rb") as handle:
        handle.seek(offset)
        lines = handle.read().decode(errors="replace").splitlines()
    events = []
    for line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # kazoo's own log lines
        if event.get("controller") == controller:
            events.append(event)
    return events


def postmasters(lab: Lab) -> dict[str, int | None]:
    cluster = lab.topology.cluster("payments")
    return {m.name: lab.layout(cluster, m).postmaster_pid() for m in cluster.members}


def test_a_leader_paused_past_its_session_changes_nothing_when_it_wakes(lab: Lab, writer: Writers) -> None:
    old_primary = healthy(lab)
    cluster = lab.topology.cluster("payments")
    coord = coordinator(lab.topology)
    try:
        wait_for(lambda: coord.leader_identity() is not None, 20, "a leader")
        leader = coord.leader_identity()
        lease = coord.current_lease()
        assert leader is not None and lease is not None
        dc = leader.split(":")[0]
        pid = lab.controller_pid(dc)
        assert pid is not None
        log = lab.root / "controller" / f"{dc}.log"
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_for(lambda: coord.leader_identity() not in (None, leader), 30, "another controller to lead")
            wait_for(lambda: (s := coord.read_state("payments")[0]) is not None and s.epoch > lease.epoch, 30,
                     "the new leader to record state under its epoch")
            primary_pid = lab.layout(cluster, cluster.member(old_primary)).postmaster_pid()
            assert primary_pid is not None
            killed_at = time.time()
            os.kill(primary_pid, signal.SIGKILL)
            wait_for(lambda: primary_of(lab) not in (None, old_primary), 30, "a new primary")
            wait_for(lambda: (last := writer.last()) is not None and last.wall > killed_at + 0.05, 30,
                     "writes to resume")
            new_primary = primary_of(lab)
            state, _ = coord.read_state("payments")
            assert state is not None and state.primary == new_primary
            running = {n: p for n, p in postmasters(lab).items() if n != old_primary}
            offset = log.stat().st_size
        finally:
            os.kill(pid, signal.SIGCONT)
        woke_at = time.time()

        def term_ended() -> list[dict[str, Any]]:
            events = events_since(log, offset, leader)
            ends = [i for i, e in enumerate(events) if e["event"] == "term-ended" and e.get("epoch") == lease.epoch]
            return events[:ends[0] + 1] if ends else []

        wait_for(term_ended, 30, f"the woken controller {leader} to end its term of epoch {lease.epoch}")
        woken = term_ended()
        acted = [e for e in woken if e["event"] in ACTIONS]
        assert not acted, f"the stale leader acted after waking: {acted}"
        # PostgreSQL: no member the new leader runs was stopped; the new primary takes writes.
        assert {n: p for n, p in postmasters(lab).items() if n != old_primary} == running
        assert primary_of(lab) == new_primary
        wait_for(lambda: (last := writer.last()) is not None and last.wall > woke_at, 10,
                 "writes after the old leader woke")
        with psycopg.connect(lab.app_connection_string(cluster), autocommit=True) as conn:
            conn.execute("INSERT INTO ctl_writes VALUES (%s)", (f"after-wake-{woke_at}",))
        # ZooKeeper: the state is still the new leader's, under the newer epoch.
        state, _ = coord.read_state("payments")
        assert state is not None and state.primary == new_primary
        assert state.leader != leader and state.epoch > lease.epoch
        current = coord.current_lease()
        assert current is not None and current.epoch > lease.epoch
    finally:
        coord.stop()
    writer.stop()
    acked = writer.snapshot()
    with psycopg.connect(lab.app_connection_string(cluster)) as conn:
        present = {r[0] for r in conn.execute("SELECT id FROM ctl_writes WHERE id = ANY(%s)",
                                              ([a.ident for a in acked],))}
    missing = [round(a.wall - killed_at, 3) for a in acked if a.ident not in present]
    assert not missing, f"acknowledged writes lost, acknowledged at these seconds after the kill: {missing}"
    healthy(lab)
