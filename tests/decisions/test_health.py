"""The health endpoints' rules (orchestrator.decisions.health): tables and properties."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.decisions.health import (
    Endpoint,
    MemberHealth,
    Query,
    ReplicationState,
    answer,
    fence_in_force,
    parse_endpoint,
    parse_lag,
    parse_replication_state,
    state_name,
)
from orchestrator.errors import InvalidInput
from orchestrator.state import Role

PRIMARY = MemberHealth(member="a", role=Role.PRIMARY, postmaster_alive=True, answering=True, fenced=False,
                       lease_valid=True, recorded_primary="a", generation=3, timeline=3, streaming=False,
                       synchronous=False, lag_bytes=0, loop_age_s=0.01, loop_limit_s=1.0)
SYNC_STANDBY = replace(PRIMARY, member="b", role=Role.STANDBY, streaming=True, synchronous=True, lag_bytes=100)
ASYNC_STANDBY = replace(SYNC_STANDBY, member="c", synchronous=False)
STOPPED = replace(PRIMARY, member="d", role=Role.UNKNOWN, postmaster_alive=False, answering=False)

E = Endpoint
TABLE = [
    # (id, facts, endpoint, query, status)
    ("primary-ok", PRIMARY, E.PRIMARY, Query(), 200),
    ("read-write-alias", PRIMARY, E.READ_WRITE, Query(), 200),
    ("primary-fenced", replace(PRIMARY, fenced=True), E.PRIMARY, Query(), 503),
    ("primary-no-lease", replace(PRIMARY, lease_valid=False), E.PRIMARY, Query(), 503),
    ("primary-not-recorded", replace(PRIMARY, recorded_primary="b"), E.PRIMARY, Query(), 503),
    ("primary-no-state-yet", replace(PRIMARY, recorded_primary=None), E.PRIMARY, Query(), 503),
    ("primary-not-answering", replace(PRIMARY, answering=False, role=Role.UNKNOWN), E.PRIMARY, Query(), 503),
    ("primary-stopped", STOPPED, E.PRIMARY, Query(), 503),
    ("standby-is-not-primary", SYNC_STANDBY, E.PRIMARY, Query(), 503),
    ("primary-is-not-replica", PRIMARY, E.REPLICA, Query(), 503),
    ("replica-ok", SYNC_STANDBY, E.REPLICA, Query(), 200),
    ("replica-lag-under", SYNC_STANDBY, E.REPLICA, Query(max_lag_bytes=100), 200),
    ("replica-lag-over", SYNC_STANDBY, E.REPLICA, Query(max_lag_bytes=99), 503),
    ("replica-lag-unknown", replace(SYNC_STANDBY, lag_bytes=None), E.REPLICA, Query(max_lag_bytes=10**9), 503),
    ("replica-streaming", SYNC_STANDBY, E.REPLICA, Query(replication_state=ReplicationState.STREAMING), 200),
    ("replica-not-streaming", replace(SYNC_STANDBY, streaming=False), E.REPLICA,
     Query(replication_state=ReplicationState.STREAMING), 503),
    ("replica-archive", replace(SYNC_STANDBY, streaming=False), E.REPLICA,
     Query(replication_state=ReplicationState.ARCHIVE_RECOVERY), 200),
    ("replica-stopped", STOPPED, E.REPLICA, Query(), 503),
    ("read-only-primary", PRIMARY, E.READ_ONLY, Query(), 200),
    ("read-only-standby", ASYNC_STANDBY, E.READ_ONLY, Query(), 200),
    ("read-only-fenced-primary", replace(PRIMARY, fenced=True), E.READ_ONLY, Query(), 503),
    ("sync-sync", SYNC_STANDBY, E.SYNC, Query(), 200),
    ("sync-async", ASYNC_STANDBY, E.SYNC, Query(), 503),
    ("sync-primary", PRIMARY, E.SYNC, Query(), 503),
    ("async-async", ASYNC_STANDBY, E.ASYNC, Query(), 200),
    ("async-sync", SYNC_STANDBY, E.ASYNC, Query(), 503),
    ("health-primary", PRIMARY, E.HEALTH, Query(), 200),
    ("health-standby", ASYNC_STANDBY, E.HEALTH, Query(), 200),
    ("health-fenced-but-running", replace(PRIMARY, fenced=True), E.HEALTH, Query(), 200),
    ("health-stopped", STOPPED, E.HEALTH, Query(), 503),
    ("health-not-answering", replace(PRIMARY, answering=False), E.HEALTH, Query(), 503),
    ("liveness-ok", STOPPED, E.LIVENESS, Query(), 200),
    ("liveness-stalled", replace(PRIMARY, loop_age_s=1.5), E.LIVENESS, Query(), 503),
    ("readiness-primary", PRIMARY, E.READINESS, Query(), 200),
    ("readiness-streaming", ASYNC_STANDBY, E.READINESS, Query(), 200),
    ("readiness-not-streaming", replace(ASYNC_STANDBY, streaming=False), E.READINESS, Query(), 503),
    ("readiness-unleased-primary", replace(PRIMARY, lease_valid=False), E.READINESS, Query(), 503),
]


@pytest.mark.parametrize(("facts", "endpoint", "query", "status"), [t[1:] for t in TABLE],
                         ids=[t[0] for t in TABLE])
def test_endpoint_table(facts: MemberHealth, endpoint: Endpoint, query: Query, status: int) -> None:
    got = answer(endpoint, facts, query)
    assert got.status == status, got.reason
    assert got.reason


@pytest.mark.parametrize(("text", "size"), [("0", 0), ("1048576", 1048576), ("16MB", 16 * 1024**2),
                                            ("1GB", 1024**3), ("1gb", 1024**3), ("8kB", 8192), ("2 tb", 2 * 1024**4),
                                            ("5B", 5)])
def test_lag_units(text: str, size: int) -> None:
    assert parse_lag(text) == size


@pytest.mark.parametrize("text", ["", "MB", "-1", "1.5MB", "16XB", "1e6"])
def test_bad_lag_names_the_parameter(text: str) -> None:
    with pytest.raises(InvalidInput, match=r"^lag: .* e\.g\. \?lag=16MB"):
        parse_lag(text)


def test_replication_state_and_paths() -> None:
    assert parse_replication_state("Streaming") is ReplicationState.STREAMING
    with pytest.raises(InvalidInput, match=r"^replication_state: 'catching up' is unknown"):
        parse_replication_state("catching up")
    assert parse_endpoint("/") is Endpoint.PRIMARY
    assert parse_endpoint("/read-write") is Endpoint.READ_WRITE
    assert parse_endpoint("/metrics") is None


@pytest.mark.parametrize(("fenced", "at_generation", "recorded", "generation", "in_force"), [
    (False, None, "a", 5, False),
    (True, 3, "a", 5, False),        # promoted again after the fence: a controller superseded it
    (True, 5, "a", 5, True),         # fenced in the generation it is primary of
    (True, 3, "b", 5, True),         # the state names another member
    (True, None, "a", 5, True),      # fenced before any state was seen: keep it
    (True, 3, "a", None, True),      # no state: keep it
], ids=["not-fenced", "promoted-after", "same-generation", "other-primary", "unknown-fence", "unknown-state"])
def test_fence_in_force(fenced: bool, at_generation: int | None, recorded: str, generation: int | None,
                        in_force: bool) -> None:
    assert fence_in_force("a", fenced, at_generation, recorded, generation) is in_force


def test_state_names() -> None:
    assert state_name(PRIMARY) == "running"
    assert state_name(replace(PRIMARY, fenced=True)) == "fenced"
    assert state_name(STOPPED) == "stopped"
    assert state_name(replace(PRIMARY, answering=False)) == "not answering"


# ---- properties ----------------------------------------------------------------------------------

NAMES = ("a", "b", "c", "d", "e")


@st.composite
def member_facts(draw: st.DrawFn, name: str, recorded: str | None, generation: int) -> MemberHealth:
    alive = draw(st.booleans())
    return MemberHealth(
        member=name, role=draw(st.sampled_from(list(Role))), postmaster_alive=alive,
        answering=alive and draw(st.booleans()), fenced=draw(st.booleans()), lease_valid=draw(st.booleans()),
        recorded_primary=recorded, generation=generation, timeline=draw(st.none() | st.integers(1, 9)),
        streaming=draw(st.booleans()), synchronous=draw(st.booleans()),
        lag_bytes=draw(st.none() | st.integers(0, 2**40)), loop_age_s=draw(st.floats(0, 10)), loop_limit_s=1.0)


@st.composite
def clusters(draw: st.DrawFn) -> list[MemberHealth]:
    """Every member of one cluster, each with arbitrary local facts, all reading the same cluster state."""
    size = draw(st.integers(1, len(NAMES)))
    recorded = draw(st.none() | st.sampled_from(NAMES[:size]))
    generation = draw(st.integers(1, 50))
    return [draw(member_facts(name, recorded, generation)) for name in NAMES[:size]]


@settings(deadline=None)
@given(members=clusters())
def test_at_most_one_member_answers_primary(members: list[MemberHealth]) -> None:
    for endpoint in (Endpoint.PRIMARY, Endpoint.READ_WRITE):
        winners = [m.member for m in members if answer(endpoint, m).ok]
        assert len(winners) <= 1
        assert all(w == m.recorded_primary for w in winners for m in members)


@settings(deadline=None)
@given(members=clusters())
def test_no_lease_or_fenced_or_not_primary_never_answers_primary(members: list[MemberHealth]) -> None:
    for m in members:
        if m.fenced or not m.lease_valid or m.role is not Role.PRIMARY or not m.postmaster_alive:
            assert answer(Endpoint.PRIMARY, m).status == 503


@settings(deadline=None)
@given(members=clusters(), lag=st.integers(0, 2**40))
def test_primary_and_replica_exclude_each_other(members: list[MemberHealth], lag: int) -> None:
    for m in members:
        primary = answer(Endpoint.PRIMARY, m).ok
        assert not (primary and answer(Endpoint.REPLICA, m, Query(max_lag_bytes=lag)).ok)
        assert answer(Endpoint.READ_ONLY, m).ok == (primary or answer(Endpoint.REPLICA, m).ok)
        assert not (answer(Endpoint.SYNC, m).ok and answer(Endpoint.ASYNC, m).ok)
        assert answer(Endpoint.PRIMARY, m).status in (200, 503)
