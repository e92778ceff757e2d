"""The region-loss drill's operator step follows the runbook when the leader holds a failover it began
as the region went down: ``drctl abort``, then the DR failover."""

from __future__ import annotations

from typing import Any, cast

from orchestrator.coordination import Coordinator
from orchestrator.drills.faults import _operator_failover
from orchestrator.topology import load_topology
from tests.conftest import REPO


class FakeRequests:
    """Answers requests in order from ``answers``, recording what was submitted."""

    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = answers
        self.submitted: list[dict[str, Any]] = []

    def submit_request(self, cluster: str, request: dict[str, Any]) -> str:
        self.submitted.append(dict(request))
        return f"req-{len(self.submitted)}"

    def wait_result(self, cluster: str, request_id: str, timeout: float) -> dict[str, Any] | None:
        return self.answers.pop(0)


def _run(answers: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    fake = FakeRequests(answers)
    cluster = load_topology(REPO / "topology" / "lab.yaml").cluster("payments")
    result = _operator_failover(cast(Coordinator, fake), cluster, "dc3-a", timeout=5)
    return result, fake.submitted


def test_a_held_failover_is_aborted_then_the_dr_failover_runs() -> None:
    result, submitted = _run([
        {"ok": False, "error": "failover 3ab0f9478e9f is in progress; retry later (or end it: drctl abort payments)"},
        {"ok": True, "operation": "3ab0f9478e9f", "outcome": "aborted"},
        {"ok": True, "operation": "9f00d", "primary": "dc3-a"},
    ])
    assert [r["kind"] for r in submitted] == ["failover", "abort", "failover"]
    assert submitted[2] == {"kind": "failover", "to": "dc3-a", "accept_data_loss": True}
    assert result == {"ok": True, "operation": "9f00d", "primary": "dc3-a"}


def test_a_refused_abort_is_the_answer_and_no_second_failover_is_sent() -> None:
    result, submitted = _run([
        {"ok": False, "error": "failover 3ab0f9478e9f is in progress; retry later"},
        {"ok": False, "error": "dc2-a is becoming primary: too late to abort"},
    ])
    assert [r["kind"] for r in submitted] == ["failover", "abort"]
    assert result == {"ok": False, "error": "dc2-a is becoming primary: too late to abort"}


def test_any_other_refusal_is_returned_as_it_is() -> None:
    result, submitted = _run([{"ok": False, "error": "dc3-a is already the primary"}])
    assert [r["kind"] for r in submitted] == ["failover"]
    assert result == {"ok": False, "error": "dc3-a is already the primary"}
