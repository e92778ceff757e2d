"""Alert delivery to real receivers on loopback (DRCTL_TEST_PORT_BASE + 6750..6754).

A stdlib HTTP server checks the webhook's HMAC signature, aiosmtpd receives the mail, and
a receiver that refuses its first requests proves the retry; one that never answers
proves that giving up is recorded in the event log and the audit trail.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import audit
from orchestrator.alerts.config import AlertsSpec
from orchestrator.alerts.dispatcher import AlertDispatcher
from orchestrator.audit import AuditLog
from orchestrator.events import EventLog
from orchestrator.waiting import poll
from tests.alerts.receivers import HttpReceiver, SmtpReceiver
from tests.conftest import TEST_PORT_BASE

HOOK, CHAT, SLACK, SMTP, DEAD = (TEST_PORT_BASE + 6750 + i for i in range(5))
SECRET = b"s3cret-for-tests"
FAILOVER = {"cluster": "payments", "source": "dc1-a", "target": "dc2-a", "reason": "dc1-a down"}


@pytest.fixture
def hook() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver(HOOK, SECRET, fail_first=2)
    yield receiver
    receiver.close()


@pytest.fixture
def chats() -> Iterator[tuple[HttpReceiver, HttpReceiver]]:
    generic, slack = HttpReceiver(CHAT), HttpReceiver(SLACK)
    yield generic, slack
    generic.close()
    slack.close()


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver(SMTP)
    yield receiver
    receiver.close()


class Recorded:
    """An EventLog whose lines the test reads back."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.log = EventLog(self.stream, controller="test")

    def events(self, name: str) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.stream.getvalue().splitlines()]
        return [line for line in lines if line["event"] == name]


def _spec(**extra: Any) -> AlertsSpec:
    return AlertsSpec.model_validate({
        "receivers": [
            {"name": "hook", "type": "webhook", "url": f"http://127.0.0.1:{HOOK}/alerts", "secret_file": "secret"},
            {"name": "chat", "type": "chat", "url": f"http://127.0.0.1:{CHAT}/chat", "format": "generic"},
            {"name": "slack", "type": "chat", "url": f"http://127.0.0.1:{SLACK}/services/x"},
            {"name": "mail", "type": "smtp", "host": "127.0.0.1", "port": SMTP, "sender": "drctl@example.org",
             "to": ["oncall@example.org", "dba@example.org"]},
        ],
        "routes": [{"kinds": ["failover", "fencing"], "receivers": ["hook", "mail"]},
                   {"kinds": ["*"], "receivers": ["chat", "slack"]}],
        "attempts": 4, "backoff_s": 0.05, "max_backoff_s": 0.2, **extra,
    })


def test_a_failover_reaches_every_receiver_signed_and_retried(tmp_path: Path, hook: HttpReceiver,
                                                              chats: tuple[HttpReceiver, HttpReceiver],
                                                              smtp: SmtpReceiver) -> None:
    (tmp_path / "secret").write_text(SECRET.decode() + "\n")
    recorded = Recorded()
    dispatcher = AlertDispatcher.from_spec(_spec(), tmp_path, emit=recorded.log.emit, audit=AuditLog(tmp_path / "a"))
    recorded.log.subscribe(dispatcher)
    try:
        recorded.log.emit("failover-intent", **FAILOVER)
        generic, slack = chats
        assert poll(lambda: hook.received() and smtp.messages and generic.received() and slack.received(),
                    timeout=15, interval=0.02)
    finally:
        dispatcher.close()
    (request,) = hook.received()
    assert hook.refused == 2                      # refused twice, delivered on the third attempt
    assert request.signed is True and request.path == "/alerts"
    body = request.json
    assert (body["kind"], body["cluster"], body["subject"], body["count"]) == ("failover", "payments", "dc1-a", 1)
    assert "dc2-a" in body["summary"] and body["details"]["reason"] == "dc1-a down"
    (message,) = smtp.messages
    assert message["Subject"].startswith("[drctl critical] failover: payments dc1-a")
    assert smtp.envelopes == [("drctl@example.org", ["oncall@example.org", "dba@example.org"])]
    assert "failover from dc1-a to dc2-a" in message.get_payload()
    assert slack.received()[0].json == {"text": f"{message['Subject']}\n{body['summary']}"}
    assert generic.received()[0].json["title"] == message["Subject"]
    assert generic.received()[0].signed is None   # no secret configured for it: unsigned
    retries = recorded.events("alert-attempt-failed")
    assert [(e["receiver"], e["attempt"], e["will_retry"]) for e in retries] == [("hook", 1, True), ("hook", 2, True)]
    sent = {e["receiver"]: e["attempts"] for e in recorded.events("alert-sent")}
    assert sent == {"hook": 3, "mail": 1, "chat": 1, "slack": 1}
    assert recorded.events("alert-failed") == []


def test_a_wrong_secret_fails_verification(tmp_path: Path, hook: HttpReceiver) -> None:
    (tmp_path / "secret").write_text("not-the-shared-secret")
    hook.fail_first = 0
    recorded = Recorded()
    spec = AlertsSpec.model_validate({"receivers": [_spec().receivers[0].model_dump()],
                                      "routes": [{"kinds": ["*"], "receivers": ["hook"]}]})
    dispatcher = AlertDispatcher.from_spec(spec, tmp_path, emit=recorded.log.emit)
    recorded.log.subscribe(dispatcher)
    try:
        recorded.log.emit("fenced", cluster="payments", member="dc1-a", detail="stopped")
        assert poll(hook.received, timeout=10, interval=0.02)
    finally:
        dispatcher.close()
    assert hook.received()[0].signed is False


def test_repeats_within_the_window_are_one_alert_then_a_summary_with_the_count(
        tmp_path: Path, chats: tuple[HttpReceiver, HttpReceiver]) -> None:
    generic, _ = chats
    now = [1000.0]
    recorded = Recorded()
    spec = AlertsSpec.model_validate({
        "receivers": [{"name": "chat", "type": "chat", "url": f"http://127.0.0.1:{CHAT}/c", "format": "generic"}],
        "routes": [{"kinds": ["*"], "receivers": ["chat"]}], "dedup_window_s": 30})
    from orchestrator.alerts.delivery import sender_for

    dispatcher = AlertDispatcher(spec, {"chat": sender_for(spec.receivers[0], tmp_path)}, emit=recorded.log.emit,
                                 clock=lambda: now[0])
    recorded.log.subscribe(dispatcher)
    try:
        for _ in range(4):
            recorded.log.emit("dr-lag-over", cluster="payments", lag_seconds=8, max_seconds=5, mode="alert")
        assert poll(lambda: len(recorded.events("alert-folded")) == 3 and generic.received(), timeout=10,
                    interval=0.02)
        assert [r.json["count"] for r in generic.received()] == [1]
        now[0] += 30   # the window closes: the next event wakes the dispatcher, which sends the summary first
        recorded.log.emit("dr-lag-over", cluster="payments", lag_seconds=9, max_seconds=5, mode="alert")
        assert poll(lambda: len(generic.received()) == 3, timeout=10, interval=0.02)
    finally:
        dispatcher.close()
    assert [r.json["count"] for r in generic.received()] == [1, 3, 1]
    assert generic.received()[1].json["title"].endswith("(x3)")


def test_a_receiver_that_never_answers_is_retried_then_the_failure_is_logged_and_audited(tmp_path: Path) -> None:
    recorded = Recorded()
    spec = AlertsSpec.model_validate({
        "receivers": [{"name": "down", "type": "webhook", "url": f"http://127.0.0.1:{DEAD}/x",
                       "secret_env": "DRCTL_TEST_ALERT_SECRET", "timeout_s": 2}],
        "routes": [{"kinds": ["*"], "receivers": ["down"]}], "attempts": 3, "backoff_s": 0.01})
    dispatcher = AlertDispatcher.from_spec(spec, tmp_path, emit=recorded.log.emit, audit=AuditLog(tmp_path / "audit"),
                                           who="controller test", env={"DRCTL_TEST_ALERT_SECRET": "x"})
    recorded.log.subscribe(dispatcher)
    try:
        recorded.log.emit("api-login-rate-limited", source="127.0.0.9", failures=5)
        assert poll(lambda: recorded.events("alert-failed"), timeout=15, interval=0.02)
    finally:
        dispatcher.close()
    assert [e["attempt"] for e in recorded.events("alert-attempt-failed")] == [1, 2, 3]
    (failed,) = recorded.events("alert-failed")
    assert failed["receiver"] == "down" and failed["attempts"] == 3 and "refused" in failed["error"].lower()
    (entry,) = [e for e in audit.read_entries(tmp_path / "audit") if e["action"] == "alert-failed"]
    assert entry["outcome"] == "failed" and entry["who"] == "controller test"
    assert entry["details"]["alert"]["kind"] == "login-failures" and entry["details"]["alert"]["subject"] == "127.0.0.9"
    assert audit.verify(tmp_path / "audit").broken is None


def test_a_missing_secret_is_a_failed_delivery_not_a_crash(tmp_path: Path, hook: HttpReceiver) -> None:
    recorded = Recorded()
    spec = AlertsSpec.model_validate({"receivers": [_spec().receivers[0].model_dump()],
                                      "routes": [{"kinds": ["*"], "receivers": ["hook"]}], "attempts": 1})
    dispatcher = AlertDispatcher.from_spec(spec, tmp_path, emit=recorded.log.emit)
    recorded.log.subscribe(dispatcher)
    try:
        recorded.log.emit("fenced", cluster="payments", member="dc1-a")
        assert poll(lambda: recorded.events("alert-failed"), timeout=10, interval=0.02)
    finally:
        dispatcher.close()
    assert "secret: cannot read" in recorded.events("alert-failed")[0]["error"]
    assert hook.received() == []


def test_a_short_lived_command_delivers_before_it_returns(tmp_path: Path, hook: HttpReceiver) -> None:
    """``drctl backup verify`` on failure: the alert is delivered (retried) before the command exits."""
    from orchestrator.alerts.dispatcher import alert_now

    (tmp_path / "secret").write_text(SECRET.decode())
    spec = AlertsSpec.model_validate({"receivers": [_spec().receivers[0].model_dump()],
                                      "routes": [{"kinds": ["backup-unproven"], "receivers": ["hook"]}],
                                      "backoff_s": 0.05})
    alert_now(spec, tmp_path, "backup-unproven", {"cluster": "payments", "label": "20261202-F", "error": "no WAL"},
              audit=None, who="root@test")
    (request,) = hook.received()   # no polling: alert_now returned only once it was delivered
    assert request.signed is True and request.json["kind"] == "backup-unproven"
    assert request.json["subject"] == "20261202-F" and "no WAL" in request.json["summary"]
    lines = (tmp_path / "alerts" / "drctl.jsonl").read_text().splitlines()
    assert [json.loads(line)["event"] for line in lines][-1] == "alert-sent"
    alert_now(None, tmp_path, "backup-unproven", {"cluster": "payments"}, audit=None, who="x")   # no section: nothing
    assert len(hook.received()) == 1
