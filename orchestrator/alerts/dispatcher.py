"""The alert dispatcher: an event-log listener that routes, de-duplicates and delivers alerts.

Every controller process attaches one to its :class:`~orchestrator.events.EventLog`
(``Controller.__init__``). The events that alert are emitted only where they happen once:
failover, fencing and DR lag by the elected leader's term (followers run no cycles), a
failed drill by the leader that sees the run recorded, a locked-out address by the
controller whose API refused the logins. So each occurrence is alerted once cluster-wide,
not once per controller.

Nothing here blocks the caller: :meth:`AlertDispatcher.__call__` only maps the event
(pure, :func:`~orchestrator.alerts.model.alert_for`) and queues it. A dispatcher thread
applies de-duplication (:class:`~orchestrator.alerts.policy.Dedup`) and hands each alert to
one worker thread per receiver, so a slow or failing receiver delays no other. A worker
retries with bounded exponential back-off; every failed attempt is an event
(``alert-attempt-failed``), and giving up is an event (``alert-failed``) and an audit entry.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from orchestrator.alerts.config import AlertsSpec
from orchestrator.alerts.delivery import Sender, sender_for
from orchestrator.alerts.model import ALERTING_EVENTS, Alert, alert_for
from orchestrator.alerts.policy import Dedup, backoff
from orchestrator.audit import AuditLog

Emit = Callable[..., None]


class _Worker:
    """One receiver's queue and thread: deliver each alert, retrying, in order."""

    def __init__(self, name: str, send: Sender, spec: AlertsSpec, emit: Emit, audit: AuditLog | None, who: str,
                 stop: threading.Event) -> None:
        self.name, self._send, self._spec, self._emit, self._audit, self._who = name, send, spec, emit, audit, who
        self._stop = stop
        self.queue: queue.Queue[Alert | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name=f"alert:{name}", daemon=True)

    def _run(self) -> None:
        while (alert := self.queue.get()) is not None:
            try:
                self._deliver(alert)
            except Exception as exc:   # the worker must outlive any one alert
                self._emit("alert-failed", receiver=self.name, alert=alert.kind.value, cluster=alert.cluster,
                           subject=alert.subject, error=f"{type(exc).__name__}: {exc}")

    def _deliver(self, alert: Alert) -> None:
        spec, started = self._spec, time.monotonic()
        error = ""
        for attempt in range(1, spec.attempts + 1):
            try:
                self._send(alert)
            except Exception as exc:
                error = str(exc)
                retry = attempt < spec.attempts and not self._stop.is_set()
                self._emit("alert-attempt-failed", receiver=self.name, alert=alert.kind.value, cluster=alert.cluster,
                           subject=alert.subject, attempt=attempt, error=error, will_retry=retry)
                if not retry or self._stop.wait(backoff(attempt, spec.backoff_s, spec.max_backoff_s)):
                    break
                continue
            self._emit("alert-sent", receiver=self.name, alert=alert.kind.value, cluster=alert.cluster,
                       subject=alert.subject, count=alert.count, attempts=attempt,
                       seconds=round(time.monotonic() - started, 3))
            return
        self._emit("alert-failed", receiver=self.name, alert=alert.kind.value, cluster=alert.cluster,
                   subject=alert.subject, attempts=attempt, error=error)
        if self._audit is not None:
            try:
                self._audit.append(who=self._who, action="alert-failed", outcome="failed", source="controller",
                                   receiver=self.name, alert=alert.document(), attempts=attempt, error=error)
            except Exception as exc:
                self._emit("audit-failed", action="alert-failed", error=f"{type(exc).__name__}: {exc}")


class AlertDispatcher:
    """Listener ``(event, fields)``: queue the alert an event raises; threads do the rest. :meth:`close` ends them."""

    def __init__(self, spec: AlertsSpec, senders: Mapping[str, Sender], *, emit: Emit,
                 audit: AuditLog | None = None, who: str = "alerts", clock: Callable[[], float] = time.time) -> None:
        self.spec = spec
        self._emit, self._clock = emit, clock
        self._dedup = Dedup(spec.dedup_window_s)
        self._stop = threading.Event()
        self._inbox: queue.Queue[Alert | None] = queue.Queue()
        self._workers = {r.name: _Worker(r.name, senders[r.name], spec, emit, audit, who, self._stop)
                         for r in spec.receivers}
        self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)
        self._thread.start()
        for worker in self._workers.values():
            worker.thread.start()

    @classmethod
    def from_spec(cls, spec: AlertsSpec, root: Path, *, emit: Emit, audit: AuditLog | None = None,
                  who: str = "alerts", env: Mapping[str, str] | None = None) -> AlertDispatcher:
        """Real delivery adapters for the topology's receivers (relative files under ``root``)."""
        return cls(spec, {r.name: sender_for(r, root, env) for r in spec.receivers}, emit=emit, audit=audit, who=who)

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        if event in ALERTING_EVENTS:
            alert = alert_for(event, fields, self._clock())
            if alert is not None:
                self._inbox.put(alert)

    def _run(self) -> None:
        while True:
            expiry = self._dedup.next_expiry()
            wait = None if expiry is None else max(0.0, expiry - self._clock())
            try:
                alert = self._inbox.get(timeout=wait)
            except queue.Empty:
                alert = None
                due = self._dedup.expire(self._clock())
            else:
                if alert is None:
                    return
                due = self._dedup.offer(alert, self._clock())
                if not due:
                    self._emit("alert-folded", alert=alert.kind.value, cluster=alert.cluster, subject=alert.subject)
            for item in due:
                for name in self.spec.receivers_for(item.kind):
                    self._workers[name].queue.put(item)

    def close(self, timeout: float = 5.0, *, drain: bool = False) -> None:
        """Stop taking alerts; let queued deliveries finish within ``timeout``.

        ``drain``: retries run on until done or ``timeout`` (a command that alerts, then exits);
        otherwise a delivery's retries are cut short (a controller that stops).
        """
        deadline = time.monotonic() + timeout
        self._inbox.put(None)
        self._thread.join(timeout)
        if not drain:
            self._stop.set()
        for worker in self._workers.values():
            worker.queue.put(None)
        for worker in self._workers.values():
            worker.thread.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()


def alert_now(spec: AlertsSpec | None, root: Path, event: str, fields: dict[str, Any], *, audit: AuditLog | None,
              who: str, timeout: float = 60.0) -> None:
    """Deliver the alert ``event`` raises from a short-lived command (``drctl backup verify``), then return.

    Its own events (``alert-sent``, ``alert-failed``, ...) go to ``<root>/alerts/drctl.jsonl``;
    a delivery that gives up is audited as in a controller. No ``alerts:`` section: nothing.
    """
    if spec is None:
        return
    from orchestrator.events import EventLog

    (root / "alerts").mkdir(parents=True, exist_ok=True)
    with (root / "alerts" / "drctl.jsonl").open("a") as stream:
        log = EventLog(stream, who=who)
        dispatcher = AlertDispatcher.from_spec(spec, root, emit=log.emit, audit=audit, who=who)
        log.subscribe(dispatcher)
        try:
            log.emit(event, **fields)
        finally:
            dispatcher.close(timeout, drain=True)
