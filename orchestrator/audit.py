"""The audit trail: who did what, when, from where, and the outcome; tamper-evident.

Every mutating API request, every failed or refused login, and every automatic action of a
controller (failover, fencing, rejoin, drill start and end, backup) is appended to
``<lab>/audit/audit-YYYY-MM-DD.jsonl`` (UTC day; one JSON object per line, never rewritten).
Each entry carries the SHA-256 ``hash`` of its own canonical text (sorted keys, no spaces,
ASCII) and the ``prev`` hash of the entry before it; the first entry of a day chains to the
last entry of the previous file, the very first one to 64 zeros. Changing, deleting,
reordering or inserting a line therefore breaks the chain at that line. ``head.json``
(replaced atomically after each append) records the last entry, so cutting entries off the
end, or appending a forged one, shows too. Whoever can rewrite the files *and* recompute the
hashes can forge a log: ship the files elsewhere as they are written to guard against that.

Appends from several processes (the lab's controllers share a directory) are serialised
by ``flock`` on ``.lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
HEAD_FILE = "head.json"
_FILE_RE = re.compile(r"^audit-(\d{4}-\d{2}-\d{2})\.jsonl$")
_TAIL = 1 << 16   # an entry is far shorter than this


def canonical(entry: dict[str, Any]) -> str:
    """The one text of an entry: sorted keys, no spaces, ASCII only (so any changed byte shows)."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def entry_hash(entry: dict[str, Any]) -> str:
    body = {key: value for key, value in entry.items() if key != "hash"}
    return hashlib.sha256(canonical(body).encode("ascii")).hexdigest()


def day_file(directory: Path, ts: float) -> Path:
    return directory / f"audit-{time.strftime('%Y-%m-%d', time.gmtime(ts))}.jsonl"


def log_files(directory: Path) -> list[Path]:
    """The day files, oldest first (their names sort by date)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _FILE_RE.match(p.name))


class AuditLog:
    """Append-only, hash-chained JSON lines in ``directory`` (created 0700 on the first append)."""

    def __init__(self, directory: Path, *, clock: Any = time.time) -> None:
        self.directory = directory
        self._clock = clock
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._lock:
            fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)   # releases the flock

    def append(self, *, who: str, action: str, outcome: str, source: str = "",
               details: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
        """Append one entry and return it (with ``prev`` and ``hash``).

        ``who``: the token's name and role, or the controller's identity; ``source``: the client
        address, or where an automatic action ran; ``outcome``: e.g. ``ok``, ``refused``, ``denied``;
        ``details`` and ``more``: the rest (an event's fields may use any name, ``source`` too).
        """
        details = {**(details or {}), **more}
        with self._locked():
            ts = self._clock()
            files = log_files(self.directory)
            last = _last_entry(files[-1]) if files else None
            prev = last[1] if last is not None else GENESIS
            entry: dict[str, Any] = {
                "ts": round(ts, 6), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)),
                "who": who, "action": action, "from": source, "outcome": outcome, "details": details,
                "prev": prev,
            }
            entry = json.loads(canonical(entry))   # what a reader will parse back: hash exactly that
            entry["hash"] = entry_hash(entry)
            path = day_file(self.directory, ts)
            if files and files[-1].name > path.name:
                path = files[-1]   # the clock stepped back over midnight: stay in the newest file
            _write_line(path, entry, os.O_APPEND)
            lines = last[0] + 1 if last is not None and files[-1] == path else 1
            _write_head(self.directory, {"file": path.name, "line": lines, "hash": entry["hash"]})
            return entry


def _last_entry(path: Path) -> tuple[int, str] | None:
    """(line number, hash) of the file's last entry; None for an empty file."""
    with path.open("rb") as handle:
        data = handle.read()
    lines = data.rstrip(b"\n").split(b"\n") if data.strip() else []
    if not lines:
        return None
    try:
        return len(lines), str(json.loads(lines[-1])["hash"])
    except (ValueError, KeyError, TypeError):
        return len(lines), GENESIS   # damaged: the chain (and --verify) breaks here


def _write_head(directory: Path, head: dict[str, Any]) -> None:
    tmp = directory / f".{HEAD_FILE}.tmp"
    _write_line(tmp, head, os.O_TRUNC)
    os.replace(tmp, directory / HEAD_FILE)


def _write_line(path: Path, document: dict[str, Any], mode: int) -> None:
    """One canonical JSON line, synced to disk before returning (file created 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | mode, 0o600)
    try:
        os.write(fd, (canonical(document) + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- reading and verifying ---------------------------------------------------------------------


@dataclass(frozen=True)
class Broken:
    """The first entry that does not check out."""

    file: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class Verified:
    entries: int
    broken: Broken | None


def read_entries(directory: Path, *, since: float | None = None) -> Iterator[dict[str, Any]]:
    """Every parseable entry, oldest first (no checks: :func:`verify` does those)."""
    for path in log_files(directory):
        if since is not None and path.name < day_file(directory, since).name:
            continue
        with path.open("rb") as handle:
            for raw in handle:
                try:
                    entry = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(entry, dict) and (since is None or float(entry.get("ts", 0)) >= since):
                    yield entry


def verify(directory: Path) -> Verified:
    """Check every line's text, hash and link, then the head; name the first broken entry."""
    prev, count = GENESIS, 0
    last: tuple[Path, int, str] | None = None
    for path in log_files(directory):
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            return Verified(count, Broken(path, data.count(b"\n") + 1, "the last line is cut short (no newline)"))
        for number, raw in enumerate(data.split(b"\n")[:-1], start=1):
            problem = _check_line(raw, prev)
            if problem is not None:
                return Verified(count, Broken(path, number, problem))
            entry = json.loads(raw)
            prev, count = entry["hash"], count + 1
            last = (path, number, prev)
    head_path = directory / HEAD_FILE
    if last is None:
        if head_path.exists():
            return Verified(0, Broken(head_path, 1, "the head names an entry but the log is empty (deleted?)"))
        return Verified(0, None)
    try:
        head = json.loads(head_path.read_bytes())
        expected = {"file": last[0].name, "line": last[1], "hash": last[2]}
    except (OSError, ValueError):
        return Verified(count, Broken(head_path, 1, "missing or unreadable: the end of the log cannot be checked"))
    if head != expected:
        where = f"{head.get('file')}:{head.get('line')}" if isinstance(head, dict) else "?"
        return Verified(count, Broken(last[0], last[1], f"the log ends here but {HEAD_FILE} says it ends at {where} "
                                                      "(entries cut off or appended)"))
    return Verified(count, None)


def _check_line(raw: bytes, prev: str) -> str | None:
    try:
        text = raw.decode("ascii")
        entry = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        return "not a JSON object (edited?)"
    if not isinstance(entry, dict) or not isinstance(entry.get("hash"), str):
        return "not an audit entry (edited?)"
    if canonical(entry) != text:
        return "not in canonical form (edited?)"
    if entry.get("prev") != prev:
        return "does not chain to the entry before it (an entry was deleted, inserted or moved)"
    if entry_hash(entry) != entry["hash"]:
        return "its hash does not match its content (edited?)"
    return None


# ---- the controller's automatic actions ----------------------------------------------------------

# Controller events that are actions (or their outcome), and the outcome each records.
AUDITED_EVENTS = {
    "failover-intent": "started", "switchover-intent": "started", "promoted": "ok", "done": "ok",
    "replanned": "ok", "aborted": "ok", "switchover-rolled-back": "ok", "operation-held": "held",
    "fenced-stray": "ok", "fence-instructed": "ok", "quorum-widened": "ok", "quorum-narrowed": "ok",
    "rejoin-start": "started", "rejoined": "ok", "rejoin-failed": "failed",
    "scheduled-drill": "started", "drill-started": "started", "request": "answered",
    "api-login-rate-limited": "blocked",
}


class AutomaticActions:
    """An :class:`~orchestrator.events.EventLog` listener: the controller's actions into the audit trail.

    Entries are written by a background thread, so an fsync never delays a failover step;
    :meth:`close` writes what is queued. A failed write is itself an event (``audit-failed``).
    """

    def __init__(self, audit: AuditLog, who: str, log: Any) -> None:
        import queue

        self._audit, self._who, self._log = audit, who, log
        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._write, name="audit", daemon=True)
        self._thread.start()

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        if event in AUDITED_EVENTS:
            self._queue.put((event, dict(fields)))

    def _write(self) -> None:
        while (item := self._queue.get()) is not None:
            event, fields = item
            outcome = AUDITED_EVENTS[event]
            if event == "request":
                result = fields.get("result") or {}
                outcome = "ok" if isinstance(result, dict) and result.get("ok") else "refused"
            try:
                self._audit.append(who=f"controller {self._who}", action=event, outcome=outcome, source="controller",
                                   details=fields)
            except Exception as exc:   # the writer must outlive any one entry
                self._log.emit("audit-failed", action=event, error=f"{type(exc).__name__}: {exc}")

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)
