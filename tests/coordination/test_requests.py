"""Operator requests through the real ZooKeeper ensemble: watched answers, withdrawal, expiry stamps.

Requests go to a cluster no controller serves (``ghost``), so the test plays the leader itself.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from orchestrator import decisions as d
from orchestrator.control.context import ClusterContext
from orchestrator.control.rejoin import Rejoins
from orchestrator.control.requests import Requests
from orchestrator.control.store import StateStore
from orchestrator.control.term import Term
from orchestrator.coordination import Coordinator
from orchestrator.lab import Lab
from orchestrator.waiting import poll
from tests.control.fakes import FakeCluster

pytestmark = pytest.mark.lab

GHOST = "ghost"


@pytest.fixture
def coord(lab: Lab) -> Iterator[Coordinator]:
    coord = Coordinator(lab.topology.zookeeper_hosts(), lab.topology.name, identity="test-requests")
    coord.start()
    try:
        yield coord
    finally:
        for request_id, _ in coord.pending_requests(GHOST):
            coord.withdraw_request(GHOST, request_id)
        coord.stop()


def test_an_unanswered_request_is_withdrawn_and_can_never_run(coord: Coordinator) -> None:
    request_id = coord.submit_request(GHOST, {"kind": "failover", "to": "dc3-a", "accept_data_loss": True})
    assert [rid for rid, _ in coord.pending_requests(GHOST)] == [request_id]
    assert coord.wait_result(GHOST, request_id, timeout=0.3) is None
    assert coord.pending_requests(GHOST) == []
    assert coord.claim_request(GHOST, request_id) is False  # a late leader finds nothing to run


def test_a_request_carries_its_expiry(coord: Coordinator) -> None:
    before = time.time()
    request_id = coord.submit_request(GHOST, {"kind": "switchover", "to": "dc1-b"}, ttl=30)
    (rid, request), = coord.pending_requests(GHOST)
    assert rid == request_id and request["kind"] == "switchover"
    assert before <= request["submitted_at"] <= time.time()
    assert request["expires_at"] == pytest.approx(request["submitted_at"] + 30, abs=0.01)


def test_the_answer_arrives_through_the_watch(coord: Coordinator) -> None:
    request_id = coord.submit_request(GHOST, {"kind": "switchover", "to": "dc1-b"})

    def leader() -> None:
        assert coord.claim_request(GHOST, request_id)
        coord.answer_request(GHOST, request_id, {"ok": True, "primary": "dc1-b"})

    thread = threading.Thread(target=leader)
    thread.start()
    try:
        assert coord.wait_result(GHOST, request_id, timeout=10) == {"ok": True, "primary": "dc1-b"}
    finally:
        thread.join()


def test_a_claimed_request_is_not_withdrawn_and_its_answer_is_awaited(coord: Coordinator) -> None:
    request_id = coord.submit_request(GHOST, {"kind": "switchover", "to": "dc1-b"})
    assert coord.claim_request(GHOST, request_id)
    assert coord.withdraw_request(GHOST, request_id) is False
    answer = threading.Timer(0.5, coord.answer_request, (GHOST, request_id, {"ok": False, "error": "refused"}))
    answer.start()
    try:
        # The operator's timeout passes while the claimed operation runs: its answer still counts.
        assert coord.wait_result(GHOST, request_id, timeout=0.1, claimed_grace=10) == {"ok": False, "error": "refused"}
    finally:
        answer.join()


# ---- a leader's request part on the real ensemble: a timed-out request never fires later ----------


@pytest.fixture
def own_namespace(lab: Lab) -> Iterator[tuple[Coordinator, Coordinator]]:
    """An operator's client and a leader's client in a namespace of their own: bumping its
    epoch cannot depose the lab's leader."""
    namespace = f"steer-requests-{uuid.uuid4().hex[:8]}"
    operator = Coordinator(lab.topology.zookeeper_hosts(), namespace, identity="operator")
    leader = Coordinator(lab.topology.zookeeper_hosts(), namespace, identity="leader")
    operator.start()
    leader.start()
    try:
        yield operator, leader
    finally:
        operator.stop()
        leader.stop()


class _Log:
    def __init__(self) -> None:
        self.events: list[str] = []

    def emit(self, event: str, **fields: object) -> None:
        self.events.append(event)


def _leader_parts(lab: Lab, coord: Coordinator, pool: ThreadPoolExecutor) -> tuple[Requests, ClusterContext,
                                                                                 FakeCluster]:
    topology = lab.topology
    policy = d.Policy.from_topology(topology, topology.cluster("payments"))
    db = FakeCluster(policy, "dc1-a")
    log = _Log()
    term = Term(coord, coord.bump_epoch(), log=log)
    store = StateStore(coord, term, "leader", clock=time.time, log=log)
    ctx = ClusterContext("payments", term, db, store, policy, log, time.time, pool)
    store.load("payments", db.probe())
    return Requests(coord, Rejoins(None)), ctx, db


def test_a_request_its_operator_gave_up_on_never_runs_on_a_later_leader(
        lab: Lab, own_namespace: tuple[Coordinator, Coordinator]) -> None:
    operator, leader = own_namespace
    request_id = operator.submit_request("payments", {"kind": "failover", "to": "dc3-a", "accept_data_loss": True})
    assert operator.wait_result("payments", request_id, timeout=0.3) is None   # drctl gave up: withdrawn
    with ThreadPoolExecutor(max_workers=2) as pool:
        requests, ctx, db = _leader_parts(lab, leader, pool)   # a leader elected only now
        assert requests.serve(ctx, db.probe()) is False
    assert db.actions == [], "the withdrawn request changed a member"
    assert leader.read_state("payments")[0].primary == "dc1-a"  # type: ignore[union-attr]
    assert leader.pending_requests("payments") == []


def test_an_expired_request_whose_operator_vanished_is_answered_never_run(
        lab: Lab, own_namespace: tuple[Coordinator, Coordinator]) -> None:
    operator, leader = own_namespace
    # The operator's drctl died before it could withdraw: only the expiry stamp protects.
    request_id = operator.submit_request("payments", {"kind": "switchover", "to": "dc2-a"}, ttl=0.05)
    (_, request), = operator.pending_requests("payments")
    assert poll(lambda: time.time() > request["expires_at"], timeout=5, interval=0.01)
    with ThreadPoolExecutor(max_workers=2) as pool:
        requests, ctx, db = _leader_parts(lab, leader, pool)
        assert requests.serve(ctx, db.probe()) is False
    assert db.actions == []
    answer = operator.wait_result("payments", request_id, timeout=5)
    assert answer is not None and not answer["ok"] and "expired" in answer["error"], answer
