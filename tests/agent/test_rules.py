"""The agent's pure rules: fencing budget, fence decision, instruction verdicts (tables + properties)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from orchestrator.agent import rules as r
from orchestrator.decisions import SessionState
from orchestrator.errors import InvalidInput
from orchestrator.state import Role
from orchestrator.topology import load_topology

_LAB_ZK = load_topology(Path(__file__).resolve().parents[2] / "topology" / "lab.yaml").zookeeper
LAB = r.fencing_budget(_LAB_ZK.agent_session_ms / 1000, _LAB_ZK.tick_time_ms / 1000)


# ---- the budget ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("timeout", "tick", "detect", "bound", "watchdog"), [
    pytest.param(2.0, 0.5, 1.0, 1.25, 1.125, id="2 s session, 500 ms tick"),
    pytest.param(3.5, 0.5, 1.75, 2.0, 1.875, id="lab: 3.5 s agent session, 500 ms tick"),
    pytest.param(4.0, 0.5, 2.0, 2.25, 2.125, id="4 s session: half of it"),
    pytest.param(1.0, 0.25, 0.5, 0.75, 0.625, id="1 s session, 250 ms tick"),
    pytest.param(1.0, 0.5, 0.25, 0.5, 0.375, id="session = 2 ticks: the tick margin shortens detection"),
    pytest.param(30.0, 2.0, 15.0, 15.25, 15.125, id="Patroni-like 30 s"),
])
def test_budget_table(timeout: float, tick: float, detect: float, bound: float, watchdog: float) -> None:
    budget = r.fencing_budget(timeout, tick)
    assert (budget.detect_s, budget.bound_s, budget.watchdog_s) == pytest.approx((detect, bound, watchdog))
    assert budget.bound_s <= budget.lease_s


def test_the_lab_budget_meets_the_issue_target() -> None:
    """An isolated primary must stop acknowledging within 2 s of losing its lease (issue 9)."""
    assert LAB.bound_s <= 2.0
    assert LAB.heartbeat_s == 0.25


@pytest.mark.parametrize(("timeout", "tick"), [
    pytest.param(0.4, 0.2, id="session too short for the fence time"),
    pytest.param(0.5, 0.3, id="tick eats the session"),
    pytest.param(0.0, 0.5, id="zero session"),
])
def test_budget_refuses_sessions_too_short_to_fence_in(timeout: float, tick: float) -> None:
    with pytest.raises(InvalidInput, match=r"^zookeeper\.agent_session_timeout_ms: "):
        r.fencing_budget(timeout, tick)


@given(timeout=st.floats(0.5, 120.0), tick_fraction=st.floats(0.05, 0.5), act=st.floats(0.01, 0.3))
@example(timeout=1.5, tick_fraction=0.49999999999999994, act=0.15447963148712857)  # float rounding, found once
def test_budget_always_fences_before_the_session_can_expire(timeout: float, tick_fraction: float,
                                                             act: float) -> None:
    try:
        budget = r.fencing_budget(timeout, timeout * tick_fraction, act_s=act)
    except InvalidInput:
        return
    assert budget.detect_s <= budget.watchdog_s <= budget.bound_s <= budget.lease_s < timeout
    assert budget.detect_s <= timeout * 2 / 3  # no later than kazoo's own suspension
    assert budget.heartbeat_s * 4 <= budget.detect_s + 1e-9  # several heartbeats per detection window


# ---- the fence decision ---------------------------------------------------------------------------

ME = "dc1-a"
STATE_ME = r.RecordedPrimary("dc1-a", 1)
STATE_OTHER = r.RecordedPrimary("dc2-a", 2)
PROMOTING_ME = r.RecordedPrimary("dc2-a", 2, promoting="dc1-a")


def inputs(role: Role = Role.PRIMARY, *, alive: bool = True, session: SessionState = SessionState.CONNECTED,
           age: float = 0.1, recorded: r.RecordedPrimary | None = STATE_ME) -> r.FenceInputs:
    return r.FenceInputs(ME, role, alive, session, age, recorded)


@pytest.mark.parametrize(("case", "cause"), [
    pytest.param(inputs(), r.FenceCause.NONE, id="primary, connected, fresh lease"),
    pytest.param(inputs(recorded=None), r.FenceCause.NONE, id="primary before any state is recorded"),
    pytest.param(inputs(session=SessionState.SUSPENDED, age=0.5), r.FenceCause.NONE,
                 id="suspended but lease still within detection: kazoo may reconnect elsewhere"),
    pytest.param(inputs(session=SessionState.SUSPENDED, age=LAB.detect_s + 0.01), r.FenceCause.LEASE_LAPSED,
                 id="suspended past detection"),
    pytest.param(inputs(session=SessionState.CONNECTED, age=LAB.detect_s + 0.01), r.FenceCause.LEASE_LAPSED,
                 id="connected but writes unconfirmed (isolated follower)"),
    pytest.param(inputs(session=SessionState.LOST), r.FenceCause.SESSION_LOST, id="session lost"),
    pytest.param(inputs(recorded=STATE_OTHER), r.FenceCause.STRAY, id="state names another primary"),
    pytest.param(inputs(recorded=PROMOTING_ME), r.FenceCause.NONE, id="being promoted: state not yet updated"),
    pytest.param(inputs(Role.UNKNOWN, session=SessionState.LOST), r.FenceCause.SESSION_LOST,
                 id="postmaster alive but not answering counts as primary"),
    pytest.param(inputs(Role.STANDBY, session=SessionState.LOST, recorded=STATE_OTHER), r.FenceCause.NONE,
                 id="standby: acknowledges nothing"),
    pytest.param(inputs(alive=False, session=SessionState.LOST), r.FenceCause.NONE, id="postmaster down"),
])
def test_fence_table(case: r.FenceInputs, cause: r.FenceCause) -> None:
    verdict = r.fence_decision(case, LAB)
    assert verdict.cause is cause, verdict.reason
    assert verdict.fence is (cause is not r.FenceCause.NONE)
    assert verdict.reason


roles = st.sampled_from(list(Role))
sessions = st.sampled_from(list(SessionState))
recorded = st.one_of(st.none(), st.builds(r.RecordedPrimary, st.sampled_from(["dc1-a", "dc2-a"]),
                                          st.integers(1, 5), st.sampled_from([None, "dc1-a", "dc2-a"])))


@given(role=roles, alive=st.booleans(), session=sessions, age=st.floats(0, 10), rec=recorded)
def test_a_primary_without_a_sure_lease_is_always_fenced(role: Role, alive: bool, session: SessionState,
                                                         age: float, rec: r.RecordedPrimary | None) -> None:
    verdict = r.fence_decision(r.FenceInputs(ME, role, alive, session, age, rec), LAB)
    may_acknowledge = alive and role is not Role.STANDBY
    if not may_acknowledge:
        assert not verdict.fence
    elif session is SessionState.LOST or age > LAB.detect_s:
        assert verdict.fence
    if verdict.fence is False and may_acknowledge:
        assert age <= LAB.detect_s and session is not SessionState.LOST


@given(confirmed=st.floats(0, 1000), loop=st.floats(0, 1000))
def test_the_watchdog_deadline_follows_the_older_of_lease_and_loop(confirmed: float, loop: float) -> None:
    deadline = r.lease_deadline(confirmed, loop, LAB)
    assert deadline <= confirmed + LAB.watchdog_s
    assert deadline <= loop + LAB.watchdog_s
    assert deadline == min(confirmed, loop) + LAB.watchdog_s


# ---- instructions ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("epoch", "current", "ident", "last", "accept", "why"), [
    pytest.param(3, 3, "a", None, True, "current", id="current epoch"),
    pytest.param(2, 3, "a", None, False, "stale", id="older epoch: a deposed leader"),
    pytest.param(4, 3, "a", None, False, "newer", id="newer than ZooKeeper holds"),
    pytest.param(3, None, "a", None, False, "could not be read", id="epoch unreadable: in doubt, refuse"),
    pytest.param(3, 3, "a", "a", False, "already answered", id="re-delivery of an answered one"),
    pytest.param(3, 3, "b", "a", True, "current", id="a new instruction after an answered one"),
])
def test_instruction_table(epoch: int, current: int | None, ident: str, last: str | None, accept: bool,
                           why: str) -> None:
    verdict = r.instruction_verdict(epoch, current, ident, last)
    assert verdict.accept is accept
    assert why in verdict.reason


@given(epoch=st.integers(1, 50), current=st.one_of(st.none(), st.integers(1, 50)))
def test_only_the_current_epoch_is_ever_obeyed(epoch: int, current: int | None) -> None:
    assert r.instruction_verdict(epoch, current, "x", None).accept is (epoch == current)
