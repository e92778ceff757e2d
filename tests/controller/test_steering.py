"""Steering operations on the real lab: a failover re-plans past a dead target; abort rolls a switchover back.

Each test stops the lab's controllers and runs one controller in this process, on the lab's
own ZooKeeper namespace, so that a fault can be injected at an exact step: its event log
calls a hook when the operation's intent (with the chosen target) has been recorded, before
any member is touched. The lab's controllers are started again afterwards and take over
from the recorded state (rejoining the dead members).
"""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from orchestrator import decisions as d
from orchestrator import pgserver
from orchestrator import postgres as pg
from orchestrator.controller import Controller, EventLog
from orchestrator.decisions import steering
from orchestrator.drills.writers import Writers
from orchestrator.errors import DatabaseUnavailable
from orchestrator.lab import Lab
from orchestrator.pgserver import InstanceLayout
from orchestrator.playbooks import PlaybookRunner, member_host, rejoin_extravars
from orchestrator.state import Outcome, lsn_to_int
from orchestrator.topology import Topology
from orchestrator.waiting import poll
from tests.controller.test_failover import (
    all_streaming_from,
    assert_all_present,
    coordinator,
    healthy,
    primary_of,
)
from tests.controller.test_failover import writer as writer  # the fixture

pytestmark = pytest.mark.lab


class HookedLog(EventLog):
    """The controller's event log; ``hooks[event](fields)`` runs once, in the emitting thread."""

    def __init__(self, stream: io.StringIO) -> None:
        super().__init__(stream)
        self.hooks: dict[str, Callable[[dict[str, Any]], None]] = {}
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def emit(self, event: str, **fields: Any) -> None:
        super().emit(event, **fields)
        self.seen.append((event, fields))
        hook = self.hooks.pop(event, None)
        if hook is not None:
            hook(fields)


class Solo:
    def __init__(self, lab: Lab, topology: Topology) -> None:
        self.log = HookedLog(io.StringIO())
        runner = PlaybookRunner(topology, lab.root / "ansible")

        def rejoin(layout: InstanceLayout, upstream: pg.Endpoint, cancelled: Callable[[], bool]) -> None:
            runner.run("rejoin.yml", limit=member_host(topology, layout.member),
                       extravars=rejoin_extravars(layout, upstream, lab.credentials), cancel=cancelled)

        # Like the lab's controllers, it rejoins dead members (a stopped standby it cannot
        # rejoin would keep it from re-pointing the others).
        self.controller = Controller(topology, "dc2", lab.root, lab.credentials, log=self.log, rejoin=rejoin,
                                     cancel_rejoin=runner.cancel)
        self.thread = threading.Thread(target=self.controller.run, daemon=True)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [f for e, f in self.log.seen if e == name]

    def tail(self, count: int = 25) -> str:
        """The controller's last events, for a failure message."""
        quiet = {"publish", "session"}
        return "\n".join(f"{e} {f}" for e, f in self.log.seen if e not in quiet)[-6000:]


@pytest.fixture
def solo(lab: Lab) -> Iterator[Callable[[Topology], Solo]]:
    """Start the one controller (after stopping the lab's); restore the lab's controllers after."""
    started: list[Solo] = []

    def start(topology: Topology) -> Solo:
        lab.stop_controllers()
        one = Solo(lab, topology)
        one.thread.start()
        started.append(one)
        coord = coordinator(lab.topology)
        try:
            assert poll(lambda: coord.leader_identity() == one.controller.identity, timeout=20, interval=0.05), \
                "the test's controller did not become the leader"
            assert poll(lambda: one.events("decision"), timeout=20, interval=0.05), "no first round"
        finally:
            coord.stop()
        return one

    try:
        yield start
    finally:
        for one in started:
            one.controller.stop_event.set()
            one.thread.join(20)
        lab.restart_services()


def endpoint(lab: Lab, member: str) -> pg.Endpoint:
    cluster = lab.topology.cluster("payments")
    return lab.layout(cluster, cluster.member(member)).endpoint


def unreachable(lab: Lab, member: str) -> bool:
    try:
        pg.connect(endpoint(lab, member), lab.credentials, timeout=0.5).close()
    except DatabaseUnavailable:
        return True
    return False


def kill(lab: Lab, member: str) -> None:
    cluster = lab.topology.cluster("payments")
    pid = lab.layout(cluster, cluster.member(member)).postmaster_pid()
    assert pid is not None, f"{member} is not running"
    os.kill(pid, signal.SIGKILL)
    assert poll(lambda: unreachable(lab, member), timeout=10, interval=0.01), f"{member} still answers"


def sync_standbys(lab: Lab, primary: str) -> list[str]:
    return [m for m in lab.topology.synchronous_members(lab.topology.cluster("payments")) if m != primary]


def recorded(lab: Lab) -> Any:
    coord = coordinator(lab.topology)
    try:
        state, _ = coord.read_state("payments")
    finally:
        coord.stop()
    assert state is not None
    return state


def test_a_failover_target_killed_right_after_it_was_chosen_the_next_candidate_is_promoted(
        lab: Lab, writer: Writers, solo: Callable[[Topology], Solo], monkeypatch: pytest.MonkeyPatch) -> None:
    old = healthy(lab)
    standbys = sync_standbys(lab, old)
    assert len(standbys) == 2
    # Both standbys confirm every commit from here on: whichever is chosen first and killed, the
    # other holds every acknowledged write, so zero loss is a fact to check, not luck.
    with pg.connect(endpoint(lab, old), lab.credentials) as conn:
        conn.autocommit = True
        names = ", ".join(f'"{n}"' for n in standbys)
        conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = 'ANY 2 ({names})'")
        conn.execute("SELECT pg_reload_conf()")
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    lsn = lsn_to_int(str(row[0])) if row else None
    for standby in standbys:  # what was acknowledged before the setting is on both, too
        assert pg.wait_flushed(endpoint(lab, old), lab.credentials, [standby], lsn or 0, timeout=10)
    # The test's controller (a thread of this process) runs the same policy: ANY 2 of the two, each
    # counted as its own data centre. Either one alone then proves zero loss by counting, so the
    # re-plan to the second is automatic. (The lab's own data-centre-aware policy has a single
    # in-region confirmer outside the primary's data centre: with it dead, nothing else can prove
    # zero loss and the failover rightly holds; see tests/decisions/test_steering.py.)
    shipped = d.Policy.from_topology(lab.topology, lab.topology.cluster("payments"))
    policy = dataclasses.replace(
        shipped, quorum=2, fallback=(), synchronous_order=(old, *standbys),
        members={n: dataclasses.replace(m, datacenter=n, synchronous=n in (old, *standbys))
                 for n, m in shipped.members.items()})
    monkeypatch.setattr(d.Policy, "from_topology", staticmethod(lambda topology, cluster: policy))
    one = solo(lab.topology)
    chosen: list[str] = []

    def kill_the_target(fields: dict[str, Any]) -> None:
        chosen.append(str(fields["target"]))
        kill(lab, chosen[0])            # recorded as the target; nothing promoted yet

    one.log.hooks["failover-intent"] = kill_the_target
    killed_at = time.time()
    kill(lab, old)
    assert poll(lambda: primary_of(lab) not in (None, old), timeout=30, interval=0.05), "no new primary"
    (first,) = chosen
    (second,) = [n for n in standbys if n != first]
    assert primary_of(lab) == second
    assert poll(lambda: (last := writer.last()) is not None and last.wall > killed_at + 0.05,
                timeout=30, interval=0.05), \
        "writes did not resume on the next candidate"
    writer.stop()
    state = recorded(lab)
    op = state.history[-1]
    assert (state.primary, op.outcome, op.target) == (second, Outcome.DONE, second)
    assert [(r.old_target, r.new_target) for r in op.replans] == [(first, second)]
    assert not [f for f in one.events("promote-timing") if f.get("member") == first]
    assert_all_present(lab, writer.snapshot())
    one.controller.stop_event.set()
    one.thread.join(20)
    lab.restart_services()
    assert poll(lambda: all_rejoined(lab, second), timeout=120, interval=0.5), "the dead members did not rejoin"


def all_rejoined(lab: Lab, primary: str) -> bool:
    return primary_of(lab) == primary and all_streaming_from(lab, primary)


def test_abort_of_a_switchover_whose_target_is_stopped_makes_the_old_primary_writable(
        lab: Lab, writer: Writers, solo: Callable[[Topology], Solo], monkeypatch: pytest.MonkeyPatch) -> None:
    old = healthy(lab)
    target = sync_standbys(lab, old)[0]
    # Far away, so that the operator's abort, not the deadline, ends it (in this process only).
    monkeypatch.setattr(steering, "SWITCHOVER_DEADLINE_SECONDS", 300.0)
    one = solo(lab.topology)
    cluster = lab.topology.cluster("payments")
    one.log.hooks["switchover-intent"] = lambda _: pgserver.stop(lab.layout(cluster, cluster.member(target)))
    coord = coordinator(lab.topology)
    try:
        request_id = coord.submit_request("payments", {"kind": "switchover", "to": target}, ttl=60)
        answer = coord.wait_result("payments", request_id, timeout=60)
    finally:
        coord.stop()
    assert answer is not None and not answer["ok"] and "drctl abort payments" in answer["error"], answer
    stuck = recorded(lab)
    assert stuck.operation is not None and stuck.operation.target == target and stuck.primary == old
    try:
        with psycopg.connect(pg_conninfo(lab, old), autocommit=True) as conn, \
                pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO ctl_writes VALUES ('during-the-stuck-switchover')")
    except psycopg.Error as exc:
        raise AssertionError(f"{exc}; controller events:\n{one.tail()}") from exc
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "abort", "payments", "--reason", "target down",
                           "--lab-dir", str(lab.root)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"{old} takes writes again" in proc.stdout
    aborted_at = time.time()
    with psycopg.connect(pg_conninfo(lab, old), autocommit=True) as conn:
        row = conn.execute("SHOW default_transaction_read_only").fetchone()
    assert row is not None and row[0] == "off", f"{old} is still read-only after the abort"
    # Writes are acknowledged again (by the old primary, its standbys re-pointed back to it).
    assert poll(lambda: (last := writer.last()) is not None and last.wall > aborted_at,
                timeout=30, interval=0.05), \
        "no write acknowledged after the abort"
    assert primary_of(lab) == old
    writer.stop()
    state = recorded(lab)
    assert state.operation is None and state.primary == old
    assert state.history[-1].outcome is Outcome.ABORTED and "target down" in state.history[-1].outcome_detail
    assert [f for f in one.events("aborted")]
    assert_all_present(lab, writer.snapshot())
    one.controller.stop_event.set()
    one.thread.join(20)
    lab.restart_services()
    assert poll(lambda: all_rejoined(lab, old), timeout=120, interval=0.5), f"{target} did not rejoin"


def pg_conninfo(lab: Lab, member: str) -> str:
    """The application's database on ``member`` alone (no host walk)."""
    creds = lab.credentials
    return endpoint(lab, member).conninfo(creds.app_user, creds.app_password,
                                          dbname=lab.topology.cluster("payments").database)


def test_a_switchover_whose_target_dies_at_promotion_restarts_the_stopped_old_primary(
        lab: Lab, writer: Writers, solo: Callable[[Topology], Solo]) -> None:
    old = healthy(lab)
    target = sync_standbys(lab, old)[0]
    one = solo(lab.topology)
    # "fenced": the old primary's writes are stopped and its shutdown issued; nothing promoted yet.
    one.log.hooks["fenced"] = lambda _: kill(lab, target)
    coord = coordinator(lab.topology)
    try:
        request_id = coord.submit_request("payments", {"kind": "switchover", "to": target}, ttl=60)
        answer = coord.wait_result("payments", request_id, timeout=60)
    finally:
        coord.stop()
    assert answer is not None and not answer["ok"] and "rolling back" in answer["error"], answer
    rolled_back_at = time.time()
    state = recorded(lab)
    assert state.operation is None and state.primary == old
    assert state.history[-1].outcome is Outcome.ROLLED_BACK
    assert f"{old} restarted as primary" in state.history[-1].outcome_detail
    assert primary_of(lab) == old
    assert poll(lambda: (last := writer.last()) is not None and last.wall > rolled_back_at,
                timeout=30, interval=0.05), \
        "no write acknowledged after the roll-back"
    writer.stop()
    assert_all_present(lab, writer.snapshot())
    one.controller.stop_event.set()
    one.thread.join(20)
    lab.restart_services()
    assert poll(lambda: all_rejoined(lab, old), timeout=120, interval=0.5), f"{target} did not rejoin"
