"""The DR lag bound in the controller's cycle, on fakes: measured, published, alerted once each way, and in
bounded mode the DR standby joins the primary's synchronous set (recorded first) and leaves it after."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from orchestrator import decisions as d
from orchestrator.control.context import ClusterContext
from orchestrator.control.cycle import ClusterCycle
from orchestrator.control.publisher import Publisher
from orchestrator.control.rejoin import Rejoins
from orchestrator.control.requests import Requests
from orchestrator.control.store import StateStore
from orchestrator.control.term import Term
from orchestrator.errors import DatabaseUnavailable
from orchestrator.state import ClusterState
from orchestrator.topology import Topology, parse_topology
from tests.control.fakes import FakeCluster, FakeCoordinator, FakeZooKeeper
from tests.control.test_parts import Clock, Log


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


def build(topo: Topology, mode: str, pool: ThreadPoolExecutor) -> tuple[ClusterCycle, FakeCluster, FakeZooKeeper, Log]:
    data = topo.model_dump(mode="json")
    data["clusters"][0]["replication"]["dr_lag"] = {"max_seconds": 1, "mode": mode}
    changed = parse_topology(data)
    policy = d.Policy.from_topology(changed, changed.cluster("payments"))
    zk, db, log, clock = FakeZooKeeper(), FakeCluster(policy, "dc1-a"), Log(), Clock()
    coord = FakeCoordinator(zk, "c1")
    term = Term(coord, coord.bump_epoch(), log=log, join_timeout=5)
    store = StateStore(coord, term, "c1", clock=clock, log=log)
    ctx = ClusterContext("payments", term, db, store, policy, log, clock, pool)
    rejoins = Rejoins(None)
    return ClusterCycle(ctx, rejoins, Requests(coord, rejoins), Publisher(every=0.0)), db, zk, log


def state(zk: FakeZooKeeper) -> ClusterState:
    return zk.states["payments"][0]


def rounds(cycle: ClusterCycle, db: FakeCluster, *, dr_follows: bool, until: object, limit: int = 200) -> None:
    """Rounds of writes on the primary (the east standbys keep up; dc3-a only if ``dr_follows``)."""
    for _ in range(limit):
        db.members["dc1-a"].lsn += 100
        for name in ("dc1-b", "dc2-a", *(("dc3-a",) if dr_follows else ())):
            db.members[name].lsn = db.members["dc1-a"].lsn
        cycle.run_once()
        if until():  # type: ignore[operator]
            return
    raise AssertionError("the condition never held")


def sync_names(db: FakeCluster) -> list[str]:
    return [detail for action, member, detail in db.actions if action == "set_synchronous_names"]


def test_bounded_mode_holds_commits_for_the_stalled_dr_standby_and_releases_them_once(
        shipped_topology: Topology, pool: ThreadPoolExecutor) -> None:
    cycle, db, zk, log = build(shipped_topology, "bounded", pool)
    rounds(cycle, db, dr_follows=True, until=lambda: (r := state(zk).dr_lag) is not None and r.measured_at)
    record = state(zk).dr_lag
    assert record is not None and record.lag_seconds == 0 and not record.over and record.held_by("dc1-a") is None
    rounds(cycle, db, dr_follows=False, until=lambda: "dr-hold" in log.names())
    record = state(zk).dr_lag
    assert record is not None and record.over and record.held_by("dc1-a") == "dc3-a"
    assert record.lag_seconds is not None and record.lag_seconds > 1
    assert sync_names(db) == ['FIRST 2 ("dc3-a", "dc2-a")']
    for _ in range(10):  # still stalled: held, no second alert
        rounds(cycle, db, dr_follows=False, until=lambda: True)
    assert log.names().count("dr-lag-over") == 1 and log.names().count("dr-hold") == 1
    rounds(cycle, db, dr_follows=True, until=lambda: "dr-release" in log.names() and "dr-lag-recovered"
           in log.names())
    record = state(zk).dr_lag
    assert record is not None and not record.over and record.held_by("dc1-a") is None
    assert sync_names(db) == ['FIRST 2 ("dc3-a", "dc2-a")', 'ANY 1 ("dc2-a")']
    names = log.names()
    assert names.count("dr-lag-over") == 1 and names.count("dr-lag-recovered") == 1
    assert names.index("dr-lag-over") < names.index("dr-lag-recovered")


def test_alert_mode_alerts_and_never_touches_the_synchronous_set(shipped_topology: Topology,
                                                                 pool: ThreadPoolExecutor) -> None:
    cycle, db, _, log = build(shipped_topology, "alert", pool)
    rounds(cycle, db, dr_follows=False, until=lambda: "dr-lag-over" in log.names())
    rounds(cycle, db, dr_follows=True, until=lambda: "dr-lag-recovered" in log.names())
    assert sync_names(db) == []
    assert log.names().count("dr-lag-over") == 1
    over = next(fields for event, fields in log.events if event == "dr-lag-over")
    assert over["max_seconds"] == 1 and over["lag_seconds"] > 1 and over["holding"] is None


def test_a_hold_recorded_but_not_applied_is_applied_again(shipped_topology: Topology, pool: ThreadPoolExecutor) -> None:
    cycle, db, zk, log = build(shipped_topology, "bounded", pool)
    db.members["dc1-a"].sync_names = 'ANY 1 ("dc2-a")'  # as the configuration file sets it
    failures = []

    def fail_once(action: str, member: str) -> None:
        if action == "set_synchronous_names" and not failures:
            failures.append(member)
            raise DatabaseUnavailable(f"{member}: changing the quorum failed (server closed the connection)")

    db.before = fail_once
    rounds(cycle, db, dr_follows=False, until=lambda: "action-failed" in log.names())
    record = state(zk).dr_lag
    assert record is not None and record.held_by("dc1-a") == "dc3-a"  # recorded first
    assert db.members["dc1-a"].sync_names == 'ANY 1 ("dc2-a")'
    rounds(cycle, db, dr_follows=False, until=lambda: db.members["dc1-a"].sync_names == 'FIRST 2 ("dc3-a", "dc2-a")')
    rounds(cycle, db, dr_follows=True, until=lambda: "dr-release" in log.names())
    assert db.members["dc1-a"].sync_names == 'ANY 1 ("dc2-a")'
