"""Which health endpoint answers 200 for a member: the rules HAProxy and load balancers rely on.

Pure: the node agent (:mod:`orchestrator.agent.health`) builds a frozen :class:`MemberHealth`
from what it observed (its local PostgreSQL, its lease, the cluster state it watches) and asks
:func:`answer` for one endpoint; it serves the status code and the body, nothing else. The
endpoint names and codes are the ones load balancers already use against Patroni (200 when
true, 503 otherwise), so existing ``option httpchk`` configurations work unchanged.

``/primary`` is the one that must never lie: it answers 200 only when the member really runs
as primary (its own server says so), its agent holds a confirmed lease, it is not fenced, and
the cluster state it watches names *it* the primary. Two members reading the same state can
therefore never both answer 200; a stale or isolated agent has no confirmed lease and answers
503 (``tests/decisions/test_health.py`` checks both as properties).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from orchestrator.errors import InvalidInput
from orchestrator.state import Role


class Endpoint(StrEnum):
    PRIMARY = "primary"
    READ_WRITE = "read-write"     # alias of primary
    REPLICA = "replica"
    READ_ONLY = "read-only"       # the primary or a replica
    SYNC = "sync"
    ASYNC = "async"
    HEALTH = "health"
    LIVENESS = "liveness"
    READINESS = "readiness"


# What each endpoint answers 200 for (README "Health endpoints" prints this table).
MEANING: dict[Endpoint, str] = {
    Endpoint.PRIMARY: "the member runs as primary, its agent holds a confirmed lease, it is not fenced, "
                      "and the cluster state names it primary",
    Endpoint.READ_WRITE: "same as /primary",
    Endpoint.REPLICA: "the member runs as a standby (and meets ?lag= and ?replication_state= when given)",
    Endpoint.READ_ONLY: "/primary or /replica would answer 200",
    Endpoint.SYNC: "a standby whose confirmation counts in the primary's synchronous quorum",
    Endpoint.ASYNC: "a standby outside the primary's synchronous quorum",
    Endpoint.HEALTH: "PostgreSQL runs and answers queries",
    Endpoint.LIVENESS: "the agent's decide-and-fence loop ran recently",
    Endpoint.READINESS: "/primary would answer 200, or a standby that streams",
}

OK, UNAVAILABLE, BAD_REQUEST = 200, 503, 400


class ReplicationState(StrEnum):
    STREAMING = "streaming"
    ARCHIVE_RECOVERY = "in archive recovery"


@dataclass(frozen=True)
class MemberHealth:
    """One member as its agent sees it now."""

    member: str
    role: Role                   # from the member's own server (UNKNOWN when it did not answer)
    postmaster_alive: bool
    answering: bool              # the server answered the agent's last query
    fenced: bool
    lease_valid: bool            # session not lost and a lease write confirmed within the detect window
    recorded_primary: str | None  # who the cluster state (as watched) names primary
    generation: int | None
    timeline: int | None
    streaming: bool              # a standby whose walreceiver streams
    synchronous: bool            # counts in the recorded primary's synchronous quorum
    lag_bytes: int | None        # WAL the standby lacks against the primary's last recorded position
    loop_age_s: float            # since the agent's loop last ran
    loop_limit_s: float          # liveness fails past this


@dataclass(frozen=True)
class Query:
    """An endpoint's options: ``?lag=`` (bytes) and ``?replication_state=``."""

    max_lag_bytes: int | None = None
    replication_state: ReplicationState | None = None


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str

    @property
    def ok(self) -> bool:
        return self.status == OK


_UNITS = {"": 1, "b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}
_SIZE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")


def parse_lag(text: str) -> int:
    """``?lag=`` as bytes: ``1048576``, ``16MB``, ``1GB`` (units of 1024, case-insensitive).

    :raises InvalidInput: one line naming the parameter and the accepted forms.
    """
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise InvalidInput(f"lag: {text!r} is not a size; give bytes or a number with B, kB, MB, GB or TB, "
                           "e.g. ?lag=16MB")
    return int(match.group(1)) * _UNITS[str(unit)]


def parse_replication_state(text: str) -> ReplicationState:
    """:raises InvalidInput: not one of the states a standby reports."""
    try:
        return ReplicationState(text.strip().lower())
    except ValueError:
        raise InvalidInput(f"replication_state: {text!r} is unknown; give streaming or "
                           "'in archive recovery'") from None


def parse_endpoint(path: str) -> Endpoint | None:
    """``/primary`` -> Endpoint.PRIMARY; ``/`` is Patroni's primary check too; None: not a health path."""
    name = path.strip("/") or Endpoint.PRIMARY.value
    try:
        return Endpoint(name)
    except ValueError:
        return None


def fence_in_force(member: str, fenced: bool, fenced_generation: int | None, recorded_primary: str | None,
                   generation: int | None) -> bool:
    """Does a fence still stand against ``member``'s primary?

    The agent's fenced flag outlives the fence: only an unfence instruction clears it. A fence
    taken at generation ``g`` is void once the cluster state names this member primary of a later
    generation: a controller promoted it after the fence. Unknown generations keep the fence.
    """
    if not fenced:
        return False
    return not (fenced_generation is not None and generation is not None and recorded_primary == member
                and generation > fenced_generation)


def _primary(h: MemberHealth) -> Answer:
    if not h.postmaster_alive:
        return Answer(UNAVAILABLE, "PostgreSQL is not running")
    if h.role is not Role.PRIMARY or not h.answering:
        return Answer(UNAVAILABLE, f"the member runs as {h.role.value}, not primary")
    if h.fenced:
        return Answer(UNAVAILABLE, "the member is fenced")
    if not h.lease_valid:
        return Answer(UNAVAILABLE, "the agent holds no confirmed lease")
    if h.recorded_primary != h.member:
        named = h.recorded_primary or "nobody yet"
        return Answer(UNAVAILABLE, f"the cluster state names {named} primary")
    return Answer(OK, f"primary of generation {h.generation}")


def _replica(h: MemberHealth, q: Query) -> Answer:
    if not h.postmaster_alive:
        return Answer(UNAVAILABLE, "PostgreSQL is not running")
    if h.role is not Role.STANDBY or not h.answering:
        return Answer(UNAVAILABLE, f"the member runs as {h.role.value}, not as a standby")
    if q.replication_state is ReplicationState.STREAMING and not h.streaming:
        return Answer(UNAVAILABLE, "the standby does not stream")
    if q.replication_state is ReplicationState.ARCHIVE_RECOVERY and h.streaming:
        return Answer(UNAVAILABLE, "the standby streams (not in archive recovery)")
    if q.max_lag_bytes is not None:
        if h.lag_bytes is None:
            return Answer(UNAVAILABLE, "the standby's lag is unknown")
        if h.lag_bytes > q.max_lag_bytes:
            return Answer(UNAVAILABLE, f"lag {h.lag_bytes} bytes is over {q.max_lag_bytes}")
    return Answer(OK, "standby" + (f", lag {h.lag_bytes} bytes" if h.lag_bytes is not None else ""))


def answer(endpoint: Endpoint, h: MemberHealth, q: Query = Query()) -> Answer:
    """The status code (200 or 503) and why, for one endpoint."""
    if endpoint in (Endpoint.PRIMARY, Endpoint.READ_WRITE):
        return _primary(h)
    if endpoint is Endpoint.REPLICA:
        return _replica(h, q)
    if endpoint is Endpoint.READ_ONLY:
        primary = _primary(h)
        return primary if primary.ok else _replica(h, q)
    if endpoint in (Endpoint.SYNC, Endpoint.ASYNC):
        replica = _replica(h, q)
        if not replica.ok:
            return replica
        want = endpoint is Endpoint.SYNC
        if h.synchronous is not want:
            return Answer(UNAVAILABLE, "the standby is " + ("asynchronous" if want else "synchronous"))
        return Answer(OK, "synchronous standby" if want else "asynchronous standby")
    if endpoint is Endpoint.HEALTH:
        if h.postmaster_alive and h.answering:
            return Answer(OK, f"PostgreSQL runs as {h.role.value}")
        return Answer(UNAVAILABLE, "PostgreSQL " + ("does not answer" if h.postmaster_alive else "is not running"))
    if endpoint is Endpoint.LIVENESS:
        if h.loop_age_s <= h.loop_limit_s:
            return Answer(OK, f"agent loop ran {h.loop_age_s:.2f}s ago")
        return Answer(UNAVAILABLE, f"agent loop last ran {h.loop_age_s:.2f}s ago (limit {h.loop_limit_s:.2f}s)")
    # READINESS
    primary = _primary(h)
    if primary.ok:
        return primary
    return _replica(h, Query(replication_state=ReplicationState.STREAMING))


def state_name(h: MemberHealth) -> str:
    """The ``state`` field of the body: running, fenced, not answering or stopped."""
    if not h.postmaster_alive:
        return "fenced" if h.fenced else "stopped"
    if h.fenced:
        return "fenced"
    return "running" if h.answering else "not answering"
