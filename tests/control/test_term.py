"""The leadership term: the lease rule (pure) and the Term against a fake ZooKeeper."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.control.term import LeaseInDoubt, LeaseVerdict, Term, check_lease
from orchestrator.coordination import Lease
from orchestrator.decisions import SessionState, may_act
from orchestrator.errors import CoordinationUnavailable, LostLeadership
from tests.control.fakes import FakeCoordinator, FakeZooKeeper

HELD = Lease(epoch=3, version=2)


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def emit(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    def names(self) -> list[str]:
        return [e for e, _ in self.events]


# ---- the rule ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("session", "stored", "read_error", "verdict"), [
    pytest.param(SessionState.CONNECTED, HELD, None, LeaseVerdict.CURRENT, id="connected-same-lease"),
    pytest.param(SessionState.CONNECTED, Lease(4, 3), None, LeaseVerdict.LOST, id="newer-epoch"),
    pytest.param(SessionState.CONNECTED, Lease(3, 5), None, LeaseVerdict.LOST, id="same-epoch-other-version"),
    pytest.param(SessionState.CONNECTED, None, None, LeaseVerdict.LOST, id="no-epoch-znode"),
    pytest.param(SessionState.LOST, HELD, None, LeaseVerdict.LOST, id="session-expired"),
    pytest.param(SessionState.LOST, None, "SessionExpiredError", LeaseVerdict.LOST, id="expired-read-failed"),
    pytest.param(SessionState.SUSPENDED, None, "not read", LeaseVerdict.IN_DOUBT, id="suspended-not-read"),
    pytest.param(SessionState.SUSPENDED, HELD, None, LeaseVerdict.IN_DOUBT, id="suspended-after-read"),
    pytest.param(SessionState.CONNECTED, None, "ConnectionLoss", LeaseVerdict.IN_DOUBT, id="read-failed"),
    pytest.param(SessionState.SUSPENDED, Lease(4, 3), None, LeaseVerdict.LOST, id="suspended-but-superseded"),
])
def test_lease_rule(session: SessionState, stored: Lease | None, read_error: str | None,
                    verdict: LeaseVerdict) -> None:
    result = check_lease(session, HELD, stored, read_error=read_error)
    assert result.verdict is verdict
    assert str(HELD.epoch) in result.reason


leases = st.builds(Lease, st.integers(0, 5), st.integers(0, 5))


@given(session=st.sampled_from(SessionState), stored=st.none() | leases,
       read_error=st.none() | st.just("ConnectionLoss"))
def test_only_a_confirmed_current_lease_is_current(session: SessionState, stored: Lease | None,
                                                   read_error: str | None) -> None:
    result = check_lease(session, HELD, stored, read_error=read_error)
    if result.verdict is LeaseVerdict.CURRENT:
        assert stored == HELD and read_error is None
        assert may_act(session, True, HELD.epoch, stored.epoch)


# ---- the term against a fake ZooKeeper ----------------------------------------------------------

def elected(zk: FakeZooKeeper, identity: str, log: Log | None = None) -> tuple[FakeCoordinator, Term]:
    coord = FakeCoordinator(zk, identity)
    term = Term(coord, coord.bump_epoch(), log=log, join_timeout=5)
    coord.on_session_change(term.session_changed)
    return coord, term


def test_guard_reads_the_epoch_every_time() -> None:
    zk = FakeZooKeeper()
    coord, term = elected(zk, "dc1:a")
    ran = 0
    for _ in range(3):
        with term.guard("promote dc1-b"):
            ran += 1
    assert ran == 3
    assert coord.reads == 3, "each guard must read the epoch znode, not trust a cached value"


def test_paused_past_its_session_the_old_leader_is_refused() -> None:
    """SIGSTOP: the server expires the session, another leader bumps the epoch, the old one wakes."""
    zk = FakeZooKeeper()
    old, term = elected(zk, "dc1:old")
    old.expire()
    new = FakeCoordinator(zk, "dc2:new")
    new.bump_epoch()
    writes_before = list(zk.writes)
    assert old.session is SessionState.CONNECTED   # it woke believing it still leads
    acted = False
    with pytest.raises(LostLeadership, match="expired"), term.guard("fence stray dc1-b"):
        acted = True
    assert not acted
    assert term.ended
    assert old.session is SessionState.LOST
    assert zk.writes == writes_before


def test_a_stale_epoch_is_detected_on_a_fresh_session() -> None:
    """The old leader's client reconnected with a new session before it looked: the epoch read catches it."""
    zk = FakeZooKeeper()
    old, term = elected(zk, "dc1:old")
    old.expire()
    FakeCoordinator(zk, "dc2:new").bump_epoch()
    old.reconnect()
    with pytest.raises(LostLeadership, match="superseded by epoch 2"):
        term.confirm("re-point")
    assert term.ended and not isinstance(_raised(term), LeaseInDoubt)


def _raised(term: Term) -> BaseException:
    try:
        term.confirm()
    except LostLeadership as exc:
        return exc
    raise AssertionError("confirm passed on an ended term")


def test_an_expired_session_ends_the_term_even_if_nobody_bumped_the_epoch_yet() -> None:
    """The election lock went with the session: a new session must not resume the old term."""
    zk = FakeZooKeeper()
    old, term = elected(zk, "dc1:old")
    old.expire()
    with pytest.raises(CoordinationUnavailable):
        old.is_paused("payments")   # any request: the client notices the expiry (LOST)
    old.reconnect()
    assert zk.lease() == term.lease   # nobody bumped it
    with pytest.raises(LostLeadership, match="expired"):
        term.confirm("promote")
    assert term.ended


def test_a_suspended_session_is_doubt_not_loss() -> None:
    zk = FakeZooKeeper()
    coord, term = elected(zk, "dc1:a")
    coord.suspend()
    with pytest.raises(LeaseInDoubt, match="suspended"):
        term.confirm("fence")
    assert not term.ended
    coord.resume()
    term.confirm("fence")


def test_ending_cancels_and_joins_every_thread() -> None:
    zk = FakeZooKeeper()
    log = Log()
    _, term = elected(zk, "dc1:a", log)
    started = threading.Barrier(3)
    cancelled: list[str] = []
    hooked: list[str] = []

    def job(name: str) -> None:
        started.wait(5)
        while not term.wait(0.005):   # a rejoin polling its playbook
            with term.guard(f"{name} step"):
                pass
        cancelled.append(name)

    term.on_end(lambda: hooked.append("playbook cancelled"))
    threads = [term.spawn(f"rejoin-{n}", lambda n=n: job(n)) for n in ("dc1-a", "dc2-a")]  # type: ignore[misc]
    started.wait(5)
    still = term.end("deposed")
    assert still == []
    assert not any(t.is_alive() for t in threads)
    assert sorted(cancelled) == ["dc1-a", "dc2-a"]
    assert hooked == ["playbook cancelled"]
    assert "term-ended" in log.names()


def test_losing_the_lease_stops_a_thread_at_its_next_guard() -> None:
    zk = FakeZooKeeper()
    log = Log()
    old, term = elected(zk, "dc1:old", log)
    steps: list[str] = []
    lost = threading.Event()

    def operation() -> None:
        with term.guard("fence dc1-a"):
            steps.append("fence")
        with term.guard("promote dc1-b"):
            steps.append("promote")
        lost.wait(5)
        with term.guard("re-point dc2-a"):
            steps.append("repoint")

    thread = term.spawn("operation", operation)
    old.expire()
    FakeCoordinator(zk, "dc2:new").bump_epoch()
    lost.set()
    thread.join(5)
    assert not thread.is_alive()
    assert steps == ["fence", "promote"]
    assert [e for e, f in log.events if e == "term-thread-stopped" and f["thread"] == "operation"]
    assert term.ended


def test_no_thread_starts_in_an_ended_term() -> None:
    zk = FakeZooKeeper()
    _, term = elected(zk, "dc1:a")
    term.end("yielded")
    with pytest.raises(LostLeadership, match="not started"):
        term.spawn("rejoin-dc1-a", lambda: None)
    late: list[int] = []
    term.on_end(lambda: late.append(1))
    assert late == [1], "a hook registered after the end runs at once"


def test_a_thread_may_end_its_own_term() -> None:
    zk = FakeZooKeeper()
    _, term = elected(zk, "dc1:a")
    result: list[list[str]] = []
    thread = term.spawn("self-ending", lambda: result.append(term.end("gave up")))
    thread.join(5)
    assert result == [[]]
    assert term.ended and term.reason == "gave up"


def test_a_failing_thread_is_reported_not_silent() -> None:
    zk = FakeZooKeeper()
    log = Log()
    _, term = elected(zk, "dc1:a", log)

    def broken() -> None:
        raise ValueError("bad slot name")

    term.spawn("rejoin-dc3-a", broken).join(5)
    assert ("term-thread-failed", {"thread": "rejoin-dc3-a", "error": "ValueError: bad slot name"}) in log.events
