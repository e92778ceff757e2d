"""Pure alert policy: event -> alert mapping, de-duplication windows, retry back-off, config errors."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.alerts.config import AlertKind
from orchestrator.alerts.model import Alert, Severity, alert_for
from orchestrator.alerts.policy import Dedup, backoff
from orchestrator.errors import TopologyError
from orchestrator.topology import Topology, parse_topology


def _alert(kind: AlertKind = AlertKind.FENCING, cluster: str = "payments", subject: str = "dc1-a",
           at: float = 0.0) -> Alert:
    return Alert(kind, cluster, subject, "x", Severity.CRITICAL, at)


@pytest.mark.parametrize(("event", "fields", "kind", "cluster", "subject"), [
    ("failover-intent", {"cluster": "payments", "source": "dc1-a", "target": "dc2-a", "reason": "down"},
     AlertKind.FAILOVER, "payments", "dc1-a"),
    ("fenced", {"cluster": "payments", "member": "dc1-a", "detail": "stopped"}, AlertKind.FENCING, "payments", "dc1-a"),
    ("fenced-stray", {"cluster": "payments", "member": "dc2-a", "stopped": True}, AlertKind.FENCING, "payments",
     "dc2-a"),
    ("dr-lag-over", {"cluster": "payments", "lag_seconds": 9.1, "max_seconds": 5, "mode": "alert"},
     AlertKind.DR_LAG, "payments", "dr-lag"),
    ("drill-failed", {"run": "r1", "drill": "primary-crash", "cluster": "payments", "passed": False},
     AlertKind.DRILL_FAILED, "payments", "primary-crash"),
    ("api-login-rate-limited", {"source": "10.0.0.9", "failures": 5}, AlertKind.LOGIN_FAILURES, "-", "10.0.0.9"),
    ("archive-failed", {"cluster": "payments", "member": "dc1-a", "error": "s3 down"}, AlertKind.ARCHIVE_FAILED,
     "payments", "dc1-a"),
    ("backup-unproven", {"cluster": "payments", "label": "20260101-F", "error": "restore failed"},
     AlertKind.BACKUP_UNPROVEN, "payments", "20260101-F"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_events_that_need_a_human_raise_an_alert(event: str, fields: dict[str, Any], kind: AlertKind, cluster: str,
                                                 subject: str) -> None:
    alert = alert_for(event, fields, 12.5)
    assert alert is not None
    assert (alert.kind, alert.cluster, alert.subject, alert.at) == (kind, cluster, subject, 12.5)
    assert alert.details["event"] == event and alert.summary


@pytest.mark.parametrize("event", ["promoted", "done", "alert-sent", "alert-failed", "dr-lag-recovered", "elected"])
def test_other_events_raise_none(event: str) -> None:
    assert alert_for(event, {"cluster": "payments"}, 0.0) is None


def test_a_repeat_within_the_window_is_counted_and_summarised_when_it_closes() -> None:
    dedup = Dedup(60)
    first = _alert(at=0)
    assert dedup.offer(first, 0) == [first]
    assert dedup.offer(_alert(at=10), 10) == []
    assert dedup.offer(_alert(at=20), 20) == []
    assert dedup.offer(_alert(subject="dc1-b", at=21), 21) == [_alert(subject="dc1-b", at=21)]  # another subject
    assert dedup.offer(_alert(kind=AlertKind.FAILOVER, at=22), 22) != []                         # another kind
    assert dedup.next_expiry() == 60
    assert dedup.expire(59.9) == []
    (summary,) = dedup.expire(60)
    assert (summary.key, summary.count, summary.first_at, summary.at) == (first.key, 2, 10, 20)
    assert dedup.offer(_alert(at=61), 61) == [_alert(at=61)]   # a new window


def test_a_zero_window_sends_everything() -> None:
    dedup = Dedup(0)
    assert all(dedup.offer(_alert(at=t), t) == [_alert(at=t)] for t in (0.0, 0.0, 1.0))


@given(times=st.lists(st.floats(min_value=0, max_value=1000), min_size=1, max_size=60).map(sorted),
       subjects=st.lists(st.sampled_from(["a", "b", "c"]), min_size=60, max_size=60),
       window=st.floats(min_value=0, max_value=200))
def test_every_occurrence_is_counted_once_and_each_window_sends_one(times: list[float], subjects: list[str],
                                                                    window: float) -> None:
    dedup = Dedup(window)
    sent: list[Alert] = []
    for t, subject in zip(times, subjects, strict=False):
        sent.extend(dedup.offer(_alert(subject=subject, at=t), t))
    sent.extend(dedup.expire(float("inf")))
    assert sum(a.count for a in sent) == len(times)
    firsts = [a for a in sent if a.first_at is None]
    for subject in {a.subject for a in firsts}:
        starts = [a.at for a in firsts if a.subject == subject]
        assert all(b - a >= window for a, b in itertools.pairwise(starts))


@pytest.mark.parametrize(("attempt", "expected"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (10, 3.0)])
def test_backoff_doubles_up_to_its_cap(attempt: int, expected: float) -> None:
    assert backoff(attempt, 0.5, 3.0) == expected


@given(st.integers(1, 50), st.floats(0, 100), st.floats(0, 100))
def test_backoff_is_bounded_and_never_shrinks(attempt: int, base: float, cap: float) -> None:
    assert 0 <= backoff(attempt, base, cap) <= cap
    assert backoff(attempt + 1, base, cap) >= backoff(attempt, base, cap)


# ---- configuration ------------------------------------------------------------------------------

GOOD: dict[str, Any] = {
    "receivers": [
        {"name": "ops", "type": "webhook", "url": "https://hooks.example.org/a", "secret_env": "DRCTL_ALERT_SECRET"},
        {"name": "chat", "type": "chat", "url": "https://chat.example.org/h", "format": "generic"},
        {"name": "mail", "type": "smtp", "host": "mail.example.org", "sender": "drctl@example.org",
         "to": ["oncall@example.org"]},
    ],
    "routes": [{"kinds": ["failover", "fencing"], "receivers": ["ops", "mail"]},
               {"kinds": ["*"], "receivers": ["chat"]}],
}


def _with_alerts(shipped_topology: Topology, alerts: Any) -> Topology:
    data = shipped_topology.model_dump(mode="json")
    data["alerts"] = alerts
    return parse_topology(data)


def test_routes_pick_receivers_per_kind(shipped_topology: Topology) -> None:
    spec = _with_alerts(shipped_topology, GOOD).alerts
    assert spec is not None
    assert spec.receivers_for(AlertKind.FAILOVER) == ("ops", "mail", "chat")
    assert spec.receivers_for(AlertKind.DR_LAG) == ("chat",)


def _edited(path: str, value: Any) -> dict[str, Any]:
    import copy

    data = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is None:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return data


@pytest.mark.parametrize(("path", "value", "error"), [
    ("routes.0.receivers", ["ops", "pager"], "alerts: Value error, routes.0.receivers: unknown receiver 'pager'"),
    ("routes.1.kinds", ["fire"], "alerts.routes.1.kinds: unknown alert kind 'fire'"),
    ("receivers.0.secret_env", None, "alerts.receivers.0.webhook: receiver ops: a webhook is signed; add secret_file"),
    ("receivers.0.url", "ftp://x", "alerts.receivers.0.webhook.url: 'ftp://x' is not an http(s) URL"),
    ("receivers.2.to", ["nobody"], "alerts.receivers.2.smtp.to: 'nobody' is not a mail address"),
    ("receivers.2.port", 70000, "alerts.receivers.2.smtp.port: Input should be less than or equal to 65535"),
    ("receivers.1.type", "pager", "alerts.receivers.1: Input tag 'pager' found using 'type' does not match"),
    ("receivers.0.secret", "hunter2", "alerts.receivers.0.webhook.secret: unknown field"),
    ("dedup_window_s", -1, "alerts.dedup_window_s: Input should be greater than or equal to 0"),
], ids=lambda v: v if isinstance(v, str) and "." in v and " " not in v else None)
def test_bad_config_is_one_line_naming_the_field(shipped_topology: Topology, path: str, value: Any,
                                                 error: str) -> None:
    with pytest.raises(TopologyError) as caught:
        _with_alerts(shipped_topology, _edited(path, value))
    message = str(caught.value)
    assert "\n" not in message
    assert error.removeprefix("alerts: Value error, ") in message, message
