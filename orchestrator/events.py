"""The controller's structured event log: one JSON object per line, through stdlib logging.

:class:`EventLog` keeps the interface the controller calls, ``emit(event, **fields)``, and
writes lines of the form ``{"ts": <epoch s, 6 decimals>, "event": ..., **context,
**fields}`` (the drill runner and operators read them back). Each log owns a private
:class:`logging.Logger` with one handler on its stream, so two controllers in one process
(as in the tests) never share or duplicate handlers, and nothing touches the root logger.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TextIO

_FIELDS = "event_fields"   # the LogRecord attribute carrying context and fields


class JsonLineFormatter(logging.Formatter):
    """``{"ts", "event", **fields}`` as one JSON line; values JSON cannot hold are written as str()."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, _FIELDS, {})
        return json.dumps({"ts": round(record.created, 6), "event": record.getMessage(), **fields}, default=str)


class EventLog:
    """Structured log: one JSON object per line, each with a wall-clock ``ts``.

    ``context`` (e.g. ``controller="dc1:ab12cd34"``) goes into every line after ``event``;
    a field given to :meth:`emit` overrides a context key of the same name. Lines are
    written whole and flushed at once (the handler holds a lock), from any thread.
    """

    def __init__(self, stream: TextIO, **context: Any) -> None:
        self._context = context
        self._logger = logging.Logger(f"orchestrator.events.{id(self):x}", logging.INFO)
        self._logger.propagate = False
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonLineFormatter())
        self._logger.addHandler(handler)
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = []

    def subscribe(self, listener: Callable[[str, dict[str, Any]], None]) -> None:
        """Also hand every event to ``listener(event, fields)`` (the audit trail); it must not raise."""
        self._listeners.append(listener)

    def emit(self, event: str, **fields: Any) -> None:
        # The event name is the message verbatim: no %-formatting of its text.
        self._logger.info("%s", event, extra={_FIELDS: {**self._context, **fields}})
        for listener in self._listeners:
            listener(event, fields)
