"""Operator requests through the real ZooKeeper ensemble: watched answers, withdrawal, expiry stamps.

Requests go to a cluster no controller serves (``ghost``), so the test plays the leader itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from orchestrator.coordination import Coordinator
from orchestrator.lab import Lab

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
