"""DR lag in seconds, the cross-region RPO bound's alert, and bounded mode's hold on commits.

**What "lag in seconds" means here.** A DR standby's receive lag is the age of the oldest WAL
the primary wrote that the standby has not yet received and flushed: a loss of the primary's region
right now would take at most the commits acknowledged since then (in bounded mode, once the hold
started, no more commits are acknowledged without the standby). Replay lag is the same for WAL not yet replayed (what a
promotion must replay first: RTO, not RPO). The leader keeps a history of the primary's WAL
position, one sample per probe round, each LSN with the *last* time it was seen
(:func:`observe`); a standby at position P lags by ``now - t``, where t is the last time the
primary's position was seen at or below P (:func:`seconds_behind`). So:

* a standby holding everything the primary wrote lags 0 s, also when the primary is idle (nothing
  unreplicated, nothing at risk; PostgreSQL's ``*_lag`` columns go NULL or stay stale then);
* a standby that stopped receiving lags by the wall-clock age of the first WAL it misses, growing
  while the primary is idle too: that WAL is at risk and getting older;
* the figure is an upper bound with one probe interval's resolution (100 ms in the lab); when the
  history (kept ``LAG_HORIZON_SECONDS``, and empty when a leader starts) does not reach back to
  the standby's position, it is a lower bound and marked inexact.

The standby's position is the most advanced of what it reports itself and what the primary's
``pg_stat_replication`` shows for it; an unreachable, detached standby keeps its last known one.

The bound (``replication.dr_lag``) has hysteresis: over ``max_seconds`` it is *over* (one
``dr-lag-over`` event), and it is back under only at or below ``resume_seconds`` and at least
``DR_MIN_SECONDS`` after it went over (one ``dr-lag-recovered`` event) (:func:`alert_change`).
In bounded mode the most advanced DR standby joins the primary's synchronous set while the lag
is over (:func:`hold_change`; the form is :meth:`Policy.standby_names`'s ``hold``).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.decisions.policy import Policy
from orchestrator.state import ClusterSnapshot, ClusterState, DrLagRecord, DrMemberLag, Role

# How far back the primary's WAL history reaches: a standby further behind is reported as
# "at least" this old (a lower bound), which is over any sensible bound anyway.
LAG_HORIZON_SECONDS = 900.0
# The least time the bound stays over (the alert raised, a DR standby held) before it may clear:
# with the lag just under the bound, a reload per round would be flapping, not bounding.
DR_MIN_SECONDS = 1.0


# ---- the primary's WAL history ----------------------------------------------------------------


@dataclass(frozen=True)
class WalHistory:
    """The primary's WAL position over time: ``(last seen at, lsn)``, both increasing."""

    primary: str = ""
    samples: tuple[tuple[float, int], ...] = ()


def observe(history: WalHistory, primary: str, lsn: int | None, now: float,
            horizon: float = LAG_HORIZON_SECONDS) -> WalHistory:
    """``history`` with the primary's position ``lsn`` seen at ``now``.

    A new primary, or a position that went back, starts a new history. An unchanged position
    only moves its sample's time: the time base is when each position was last current.
    """
    if lsn is None:
        return history
    samples = history.samples if history.primary == primary else ()
    if samples and lsn < samples[-1][1]:
        samples = ()
    unchanged = bool(samples) and samples[-1][1] == lsn
    samples = (*samples[:-1], (now, lsn)) if unchanged else (*samples, (now, lsn))
    if samples[0][0] < now - horizon:
        cut = bisect.bisect_left([t for t, _ in samples], now - horizon)
        samples = samples[min(cut, len(samples) - 1):]
    return WalHistory(primary, samples)


def seconds_behind(history: WalHistory, position: int | None, now: float) -> tuple[float | None, bool]:
    """How old the oldest WAL beyond ``position`` is: ``(seconds, exact)``; ``(None, True)``: unknown.

    0 when ``position`` holds the newest position seen. ``exact`` is False when every retained
    sample is beyond ``position``: the seconds are then a lower bound.
    """
    samples = history.samples
    if position is None or not samples:
        return None, True
    if position >= samples[-1][1]:
        return 0.0, True
    index = bisect.bisect_right([lsn for _, lsn in samples], position) - 1
    if index < 0:
        return max(now - samples[0][0], 0.0), False
    return max(now - samples[index][0], 0.0), True


# ---- measuring ----------------------------------------------------------------------------------


def _most(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def measure(history: WalHistory, snapshot: ClusterSnapshot, policy: Policy, primary: str, now: float,
            last: Mapping[str, DrMemberLag]) -> dict[str, DrMemberLag]:
    """Each DR standby of ``primary``: positions and lags; empty when the primary did not answer
    as primary this round (nothing measured) or has no DR standby."""
    status = snapshot.members.get(primary)
    if status is None or not status.reachable or status.role is not Role.PRIMARY or history.primary != primary:
        return {}
    readings: dict[str, DrMemberLag] = {}
    for name in policy.dr_members(primary):
        own = snapshot.members.get(name)
        receive = replay = None
        if own is not None and own.reachable and own.role is Role.STANDBY:
            receive, replay = own.wal_lsn, own.replay_lsn
        seen = status.attached.get(name)
        if seen is not None:
            receive, replay = _most(receive, seen[0]), _most(replay, seen[1])
        before = last.get(name)
        if before is not None:  # unreachable and detached: what it last held (positions never go back)
            receive = receive if receive is not None else before.receive_lsn
            replay = replay if replay is not None else before.replay_lsn
        receive_s, exact = seconds_behind(history, receive, now)
        replay_s, replay_exact = seconds_behind(history, replay, now)
        readings[name] = DrMemberLag(receive_lsn=receive, replay_lsn=replay, receive_lag_s=receive_s,
                                     replay_lag_s=replay_s, exact=exact, replay_exact=replay_exact,
                                     attached=seen is not None)
    return readings


def cluster_lag(readings: Mapping[str, DrMemberLag]) -> float | None:
    """What a region loss would take now: the best DR standby's receive lag (None: none known)."""
    known = [r.receive_lag_s for r in readings.values() if r.receive_lag_s is not None]
    return min(known) if known else None


def _under(readings: Mapping[str, DrMemberLag], seconds: float) -> bool:
    """Some DR standby is known to lag at most ``seconds``: a lower bound (a new leader's short history)
    never proves a standby caught up."""
    return any(r.receive_lag_s is not None and r.exact and r.receive_lag_s <= seconds for r in readings.values())


# ---- the alert ----------------------------------------------------------------------------------


def alert_change(record: DrLagRecord | None, readings: Mapping[str, DrMemberLag], policy: Policy, now: float
                 ) -> bool | None:
    """The bound's new state when it changes this round (True: over, False: back under), else None.

    Over when the lag exceeds ``max_seconds`` or no DR standby's position is known; back under
    at or below ``resume_seconds`` (an exact reading: a lower bound proves nothing), no sooner than
    ``DR_MIN_SECONDS`` after going over.
    """
    bound = policy.dr_bound
    if bound is None or not readings:
        return None
    lag = cluster_lag(readings)
    over = record is not None and record.over
    if not over:
        return True if lag is None or lag > bound.max_seconds else None
    since = record.over_changed_at if record is not None else None
    settled = since is None or now - since >= DR_MIN_SECONDS
    return False if _under(readings, bound.resume_seconds) and settled else None


# ---- bounded mode: holding commits --------------------------------------------------------------


@dataclass(frozen=True)
class HoldCommits:
    """Add DR standby ``member`` to the primary's synchronous set (recorded first)."""

    member: str
    reason: str


@dataclass(frozen=True)
class ReleaseCommits:
    """Take DR standby ``member`` out of the primary's synchronous set (recorded after)."""

    member: str
    reason: str


def _seconds(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f}s"


def hold_change(state: ClusterState, policy: Policy, readings: Mapping[str, DrMemberLag], now: float,
                setting: str | None = None) -> HoldCommits | ReleaseCommits | None:
    """Bounded mode: whether a DR standby should join or leave the primary's synchronous set.

    Joins (the most advanced DR standby; only one that streams unless ``hold_when_down``) when
    the lag is over ``max_seconds`` or unknown; leaves at or under ``resume_seconds`` once held
    ``DR_MIN_SECONDS``, when it stops streaming (unless ``hold_when_down``), when fallbacks are in
    the quorum, or when the mode is not bounded. ``readings`` empty (nothing measured): no change.
    ``setting``: the primary's synchronous_standby_names as probed; a recorded hold it does not show
    (the change failed half-way) is applied again.
    """
    bound = policy.dr_bound
    primary = state.primary
    holding = state.dr_lag.held_by(primary) if state.dr_lag is not None else None
    if holding is not None and (bound is None or not bound.bounded):
        return ReleaseCommits(holding, f"dr_lag is not in bounded mode; {holding} leaves the synchronous set")
    if bound is None or not bound.bounded or not readings:
        return None
    lag = cluster_lag(readings)
    if state.synchronous_extra:
        if holding is None:
            return None
        return ReleaseCommits(holding, f"fallback {', '.join(state.synchronous_extra)} in the quorum confirms "
                                       f"across regions; {holding} leaves the synchronous set of {primary}")
    if holding is None:
        if lag is not None and lag <= bound.max_seconds:
            return None
        order = {name: index for index, name in enumerate(policy.members)}
        choices = [n for n, r in readings.items() if r.attached or bound.hold_when_down]
        if not choices:
            return None  # nobody streams to wait for (when_down: release); the alert says the bound lapsed
        best = max(choices, key=lambda n: (readings[n].receive_lsn or -1, -order.get(n, 0)))
        return HoldCommits(best, f"DR lag {_seconds(lag)} over the {bound.max_seconds:g}s bound; {best} joins "
                                 f"the synchronous set of {primary}: commits wait for it")
    reading = readings.get(holding)
    if reading is None:
        return ReleaseCommits(holding, f"{holding} is no DR standby of {primary}; it leaves the synchronous set")
    if not reading.attached and not bound.hold_when_down:
        return ReleaseCommits(holding, f"{holding} does not stream from {primary}; releasing commits "
                                       "(when_down: release): the bound lapses until it is back")
    since = state.dr_lag.holding_since if state.dr_lag is not None else None
    settled = since is None or now - since >= DR_MIN_SECONDS
    if _under(readings, bound.resume_seconds) and settled:
        return ReleaseCommits(holding, f"DR lag {_seconds(lag)} at or under {bound.resume_seconds:g}s; "
                                       f"{holding} leaves the synchronous set of {primary}")
    if setting is not None and setting != policy.standby_names(primary, hold=holding):
        return HoldCommits(holding, f"{primary}'s synchronous_standby_names is {setting!r}, not the recorded hold "
                                    f"for {holding}; setting it again")
    return None


def record_of(state: ClusterState, policy: Policy) -> DrLagRecord:
    """The state's DR lag record with the policy's bound (a fresh one when there is none yet)."""
    bound = policy.dr_bound
    max_seconds = bound.max_seconds if bound is not None else 0.0
    mode = "bounded" if bound is not None and bound.bounded else "alert"
    if state.dr_lag is None:
        return DrLagRecord(max_seconds=max_seconds, mode=mode)
    return state.dr_lag.model_copy(update={"max_seconds": max_seconds, "mode": mode})


def with_readings(record: DrLagRecord, readings: Mapping[str, DrMemberLag], now: float) -> DrLagRecord:
    """``record`` with this round's measurements."""
    return record.model_copy(update={"members": dict(readings), "lag_seconds": cluster_lag(readings),
                                     "measured_at": now})
