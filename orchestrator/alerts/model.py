"""What an alert is, and which events raise one (pure: no I/O, no clock).

:func:`alert_for` maps an event of the controller's :class:`~orchestrator.events.EventLog`
(name and fields) to an :class:`Alert`, or None for the many events that need no human.
The de-duplication key is ``(kind, cluster, subject)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from orchestrator.alerts.config import AlertKind


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"


@dataclass(frozen=True)
class Alert:
    """One alert; ``count`` occurrences of it were folded into this one by de-duplication."""

    kind: AlertKind
    cluster: str
    subject: str
    summary: str
    severity: Severity
    at: float
    details: dict[str, Any] = field(default_factory=dict)
    count: int = 1
    first_at: float | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind.value, self.cluster, self.subject)

    def folded(self, count: int, first_at: float) -> Alert:
        return dataclasses.replace(self, count=count, first_at=first_at)

    @property
    def title(self) -> str:
        repeat = f" (x{self.count})" if self.count > 1 else ""
        return f"[drctl {self.severity.value}] {self.kind.value}: {self.cluster} {self.subject}{repeat}"

    def document(self) -> dict[str, Any]:
        """The JSON a webhook receives."""
        return {"kind": self.kind.value, "severity": self.severity.value, "cluster": self.cluster,
                "subject": self.subject, "summary": self.summary, "at": self.at,
                "first_at": self.first_at if self.first_at is not None else self.at, "count": self.count,
                "details": self.details}


def _failover(f: dict[str, Any]) -> tuple[str, str]:
    return (str(f.get("cluster", "")),
            f"failover from {f.get('source')} to {f.get('target')}: {f.get('reason', '')}".rstrip(": "))


def _fenced(f: dict[str, Any]) -> tuple[str, str]:
    member = f.get("member", "")
    detail = f.get("detail") or f.get("reason") or f.get("stopped") or ""
    return str(f.get("cluster", "")), f"{member} fenced{': ' + str(detail) if detail != '' else ''}"


def _dr_lag(f: dict[str, Any]) -> tuple[str, str]:
    return (str(f.get("cluster", "")),
            f"DR lag {f.get('lag_seconds')} s is over its bound of {f.get('max_seconds')} s (mode {f.get('mode')})")


def _drill(f: dict[str, Any]) -> tuple[str, str]:
    return (str(f.get("cluster", "")),
            f"drill {f.get('drill')} failed (run {f.get('run')}, RTO {f.get('rto_seconds')} s, "
            f"lost {f.get('lost')})")


def _logins(f: dict[str, Any]) -> tuple[str, str]:
    return "", f"{f.get('failures')} failed API logins from {f.get('source')}; the address is locked out"


def _archive(f: dict[str, Any]) -> tuple[str, str]:
    return str(f.get("cluster", "")), f"WAL archiving failed on {f.get('member')}: {f.get('error', '')}"


def _unproven(f: dict[str, Any]) -> tuple[str, str]:
    return str(f.get("cluster", "")), f"backup {f.get('label')} is not proven by a restore: {f.get('error', '')}"


# event -> (kind, severity, the field naming the subject, (cluster, summary))
_EVENTS: dict[str, tuple[AlertKind, Severity, str, Callable[[dict[str, Any]], tuple[str, str]]]] = {
    "failover-intent": (AlertKind.FAILOVER, Severity.CRITICAL, "source", _failover),
    "fenced": (AlertKind.FENCING, Severity.CRITICAL, "member", _fenced),
    "fenced-stray": (AlertKind.FENCING, Severity.CRITICAL, "member", _fenced),
    "dr-lag-over": (AlertKind.DR_LAG, Severity.WARNING, "mode", _dr_lag),
    "drill-failed": (AlertKind.DRILL_FAILED, Severity.WARNING, "drill", _drill),
    "api-login-rate-limited": (AlertKind.LOGIN_FAILURES, Severity.WARNING, "source", _logins),
    "archive-failed": (AlertKind.ARCHIVE_FAILED, Severity.CRITICAL, "member", _archive),
    "backup-unproven": (AlertKind.BACKUP_UNPROVEN, Severity.WARNING, "label", _unproven),
}

ALERTING_EVENTS = frozenset(_EVENTS)


def alert_for(event: str, fields: dict[str, Any], at: float) -> Alert | None:
    """The alert an event raises, or None. ``at``: when it happened (the caller's clock)."""
    entry = _EVENTS.get(event)
    if entry is None:
        return None
    kind, severity, subject_field, describe = entry
    cluster, summary = describe(fields)
    subject = "dr-lag" if kind is AlertKind.DR_LAG else str(fields.get(subject_field, ""))
    details = {"event": event, **{k: v for k, v in fields.items() if isinstance(v, str | int | float | bool)
                                  or v is None or isinstance(v, list | dict)}}
    return Alert(kind, cluster or "-", subject or "-", summary, severity, at, details)
