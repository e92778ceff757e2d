"""The node agent's pure rules: the fencing budget, the fence decision, instruction verdicts.

No I/O, no clock: the agent runtime (:mod:`orchestrator.agent.runtime`) passes ``now`` and what
it observed, and acts on the typed answer; the tests in ``tests/agent/test_rules.py`` table them.

Why the budget is safe. The agent confirms its lease with a ZooKeeper *write* (its facts) every
``heartbeat_s``; a write is answered only after the ensemble's leader accepted it under the
agent's live session, so the session cannot expire on the server earlier than ``send + T - tick``
(``T`` the negotiated session timeout; a follower relays its clients' session touches to the
leader every half tick, a full tick is the margin). A read would not do: a follower cut from its
leader keeps answering reads until ``syncLimit`` ticks pass. The agent fences when no write sent
in the last ``detect_s`` was confirmed; the fence stops acknowledgements within ``act_s``; so
acknowledgements stop ``bound_s = detect_s + act_s`` after the last confirmed send, which must
be earlier than the earliest expiry. A controller that sees the agent's ephemeral node gone
(expired) therefore knows the member acknowledges nothing any more.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from orchestrator.decisions import SessionState
from orchestrator.errors import InvalidInput
from orchestrator.state import Role

# The first fence step (ALTER SYSTEM + reload, terminate, SIGINT) took 8 ms median, 16 ms max on
# the lab (LAB-NOTES "Fencing a primary locally"); 250 ms leaves room for a loaded 2-core host.
DEFAULT_ACT_S = 0.25


@dataclass(frozen=True)
class FencingBudget:
    """Every timing of the agent, derived from the ZooKeeper session timeout (seconds)."""

    session_timeout_s: float
    # Earliest server-side session expiry after the send of a confirmed write.
    lease_s: float
    # The agent fences when no write sent within this long was confirmed.
    detect_s: float
    # The fence stops acknowledgements within this long once started.
    act_s: float
    # The watchdog stops the postmaster when not petted with a newer deadline within this long.
    watchdog_s: float
    # Published: acknowledgements stop at most this long after the last confirmed lease write.
    bound_s: float
    # How often the agent writes its facts (each write confirms the lease).
    heartbeat_s: float


def fencing_budget(session_timeout_s: float, tick_s: float, *, act_s: float = DEFAULT_ACT_S) -> FencingBudget:
    """The agent's timings for a ZooKeeper session of ``session_timeout_s`` and ``tick_s`` ticks.

    ``detect_s`` is half the session (kazoo itself suspends after two thirds of it), shortened
    when the tick margin leaves less; the watchdog fires halfway through the act allowance, so
    the agent, which fences more gently and records it, normally acts first.

    :raises InvalidInput: the session is too short to fence before it can expire.
    """
    if session_timeout_s <= 0 or tick_s <= 0 or act_s <= 0:
        raise InvalidInput(f"zookeeper.agent_session_timeout_ms: {session_timeout_s * 1000:.0f} ms with tick "
                           f"{tick_s * 1000:.0f} ms and fence time {act_s * 1000:.0f} ms: all must be positive")
    lease = session_timeout_s - tick_s
    detect = min(session_timeout_s / 2, lease - act_s)
    heartbeat = min(0.25, detect / 4)
    if detect < 4 * 0.02:
        raise InvalidInput(
            f"zookeeper.agent_session_timeout_ms: {session_timeout_s * 1000:.0f} ms leaves the agent "
            f"{max(detect, 0) * 1000:.0f} ms to notice a lost lease before the session can expire "
            f"(tick {tick_s * 1000:.0f} ms, fence {act_s * 1000:.0f} ms); raise it to at least "
            f"{(tick_s + act_s + 0.1) * 1000:.0f} ms or lower tick_time_ms"
        )
    bound = min(detect + act_s, lease)  # equal at most; min() keeps float rounding from crossing it
    return FencingBudget(session_timeout_s=session_timeout_s, lease_s=lease, detect_s=detect, act_s=act_s,
                         watchdog_s=min(detect + act_s / 2, bound), bound_s=bound, heartbeat_s=heartbeat)


# ---- the fence decision ------------------------------------------------------------------------


class FenceCause(StrEnum):
    NONE = "none"
    SESSION_LOST = "session-lost"
    LEASE_LAPSED = "lease-lapsed"
    STRAY = "stray-primary"


@dataclass(frozen=True)
class RecordedPrimary:
    """What the cluster state in ZooKeeper says about who may be primary."""

    primary: str
    generation: int
    # The target of a failover/switchover in progress: it is promoted before the state names it.
    promoting: str | None = None


@dataclass(frozen=True)
class FenceInputs:
    member: str
    role: Role
    postmaster_alive: bool
    session: SessionState
    # Seconds since the send of the last confirmed lease write (since start when none yet).
    lease_age_s: float
    recorded: RecordedPrimary | None


@dataclass(frozen=True)
class FenceVerdict:
    cause: FenceCause
    reason: str

    @property
    def fence(self) -> bool:
        return self.cause is not FenceCause.NONE


def fence_decision(inputs: FenceInputs, budget: FencingBudget) -> FenceVerdict:
    """Fence iff the member may acknowledge commits as primary without a lease we can confirm.

    A standby or stopped member acknowledges nothing: never fenced. A primary is fenced when
    the session is LOST (its lease is gone for sure), when no lease write was confirmed for
    ``detect_s`` (SUSPENDED alone is not enough: kazoo moves to another server within
    milliseconds when one ZooKeeper server dies, keeping the session), or when the recorded
    state names another member primary and no operation is promoting this one.
    """
    if not inputs.postmaster_alive or inputs.role is Role.STANDBY:
        return FenceVerdict(FenceCause.NONE, "acknowledges nothing: "
                            + ("postmaster not running" if not inputs.postmaster_alive else "standby"))
    # Role UNKNOWN with a live postmaster (not answering) is treated as a primary: in doubt, fence.
    if inputs.session is SessionState.LOST:
        return FenceVerdict(FenceCause.SESSION_LOST, "ZooKeeper session lost: the lease is gone")
    if inputs.lease_age_s > budget.detect_s:
        return FenceVerdict(FenceCause.LEASE_LAPSED,
                            f"no lease write confirmed for {inputs.lease_age_s:.3f}s "
                            f"(limit {budget.detect_s:.3f}s, session {inputs.session.value})")
    rec = inputs.recorded
    if rec is not None and rec.primary != inputs.member and rec.promoting != inputs.member:
        return FenceVerdict(FenceCause.STRAY,
                            f"the state names {rec.primary} primary of generation {rec.generation}")
    return FenceVerdict(FenceCause.NONE, "primary with a confirmed lease"
                        + ("" if rec is not None else " (no state recorded yet)"))


def lease_deadline(confirmed_send_at: float, main_loop_at: float, budget: FencingBudget) -> float:
    """The monotonic instant the watchdog acts at: the lease's, or sooner if the agent's loop stalls.

    A heartbeat thread that keeps confirming while the decide-and-fence loop hangs must not keep
    the watchdog quiet: the deadline follows whichever of the two is older.
    """
    return min(confirmed_send_at, main_loop_at) + budget.watchdog_s


# ---- instructions ------------------------------------------------------------------------------


class InstructionAction(StrEnum):
    FENCE = "fence"
    UNFENCE = "unfence"


@dataclass(frozen=True)
class InstructionVerdict:
    accept: bool
    reason: str


def instruction_verdict(instruction_epoch: int, current_epoch: int | None, instruction_id: str,
                        last_answered_id: str | None) -> InstructionVerdict:
    """Accept an instruction only from the current leader's epoch, and each one only once.

    An older epoch is a deposed leader's; a newer one than ZooKeeper holds cannot come from a
    real leader; an unknown current epoch (ZooKeeper unreadable) refuses: in doubt, do nothing.
    """
    if instruction_id == last_answered_id:
        return InstructionVerdict(False, f"instruction {instruction_id} was already answered")
    if current_epoch is None:
        return InstructionVerdict(False, "the current epoch could not be read from ZooKeeper")
    if instruction_epoch < current_epoch:
        return InstructionVerdict(False, f"stale: epoch {instruction_epoch} is older than the current "
                                         f"epoch {current_epoch}")
    if instruction_epoch > current_epoch:
        return InstructionVerdict(False, f"epoch {instruction_epoch} is newer than the current epoch "
                                         f"{current_epoch}: no leader holds it")
    return InstructionVerdict(True, f"epoch {instruction_epoch} is current")
