"""A live view of a running game day: throughput, errors, faults injected and error budget used.

:class:`JournalTail` reads the lines the load processes have appended since the last look
(only complete lines: a writer may be mid-line). :class:`LiveCounts` (pure) folds records into
what the panel shows. :class:`LiveView` is the game-day runner's watcher: a Rich ``Live``
panel refreshed by a thread of its own every ``refresh_s`` from the journals, plus the
runner's progress lines and its faults. Nothing here affects the measurement, which reads the
journals again, whole, when the window ends.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator.drills.journal import JournalRecord, Outcome
from orchestrator.slo.budget import burn_rate


class JournalTail:
    """New complete records of every journal a load writes (files appear as its processes start)."""

    def __init__(self, files: Callable[[], list[Path]]) -> None:
        self._files = files
        self._offsets: dict[Path, int] = {}

    def read(self) -> list[JournalRecord]:
        out: list[JournalRecord] = []
        for path in self._files():
            offset = self._offsets.get(path, 0)
            try:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    data = handle.read()
            except OSError:
                continue
            complete = data[: data.rfind(b"\n") + 1]
            self._offsets[path] = offset + len(complete)
            out.extend(JournalRecord.model_validate_json(line) for line in complete.splitlines() if line.strip())
        return out


@dataclass
class LiveCounts:
    """Running totals of a window, and the acknowledged rate over the last ``rate_window_s``."""

    availability_percent: float
    rate_window_s: float = 5.0
    acks: int = 0
    errors: int = 0
    _recent: deque[float] = field(default_factory=deque)

    def add(self, records: Iterable[JournalRecord]) -> None:
        for record in records:
            if record.outcome is Outcome.ACK:
                self.acks += 1
                self._recent.append(record.end)
            else:
                self.errors += 1

    def rate(self, now: float) -> float:
        """Acknowledged transfers per second over the last ``rate_window_s`` before ``now``."""
        while self._recent and self._recent[0] < now - self.rate_window_s:
            self._recent.popleft()
        return sum(1 for t in self._recent if t <= now) / self.rate_window_s

    @property
    def attempts(self) -> int:
        return self.acks + self.errors

    def burn(self) -> float | None:
        """The failed share over the share the availability objective allows (1x spends it exactly)."""
        if not self.attempts:
            return None
        return burn_rate(self.errors / self.attempts, self.availability_percent)


class LiveView:
    """The game-day runner's watcher (``load_started``, ``fault_injected``, ``progress``), drawn with Rich."""

    def __init__(self, console: Console, *, duration_s: float, availability_percent: float,
                 refresh_s: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self._console, self._duration_s, self._refresh_s, self._clock = console, duration_s, refresh_s, clock
        self.counts = LiveCounts(availability_percent)
        self._tail: JournalTail | None = None
        self._started: float | None = None
        self._faults: list[tuple[float, str]] = []
        self._lines: deque[str] = deque(maxlen=6)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._live = Live(self.render(), console=console, refresh_per_second=4, transient=False)
        self._thread = threading.Thread(target=self._run, name="live-view", daemon=True)

    # ---- the runner's calls ---------------------------------------------------------------------

    def load_started(self, journal_files: Callable[[], list[Path]], at: float) -> None:
        with self._lock:
            self._tail, self._started = JournalTail(journal_files), at

    def fault_injected(self, name: str, at: float) -> None:
        with self._lock:
            self._faults.append((at, name))

    def progress(self, text: str) -> None:
        with self._lock:
            self._lines.append(f"{time.strftime('%H:%M:%S')} {text}")

    # ---- drawing --------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read what the journals gained and redraw."""
        with self._lock:
            tail = self._tail
        if tail is not None:
            records = tail.read()
            with self._lock:
                self.counts.add(records)
        self._live.update(self.render())

    def render(self) -> Group:
        with self._lock:
            now, counts = self._clock(), self.counts
            elapsed = 0.0 if self._started is None else now - self._started
            table = Table.grid(padding=(0, 2))
            table.add_column(style="bold")
            table.add_column()
            table.add_row("window", f"{min(elapsed, self._duration_s):,.0f} / {self._duration_s:,.0f} s")
            table.add_row("throughput", f"{counts.rate(now):,.1f} transfers/s (last {counts.rate_window_s:g} s)")
            table.add_row("acknowledged", f"{counts.acks:,}")
            table.add_row("errors", f"{counts.errors:,}"
                          + (f" ({100.0 * counts.errors / counts.attempts:.3f}%)" if counts.attempts else ""))
            burn = counts.burn()
            table.add_row("budget burn", "—" if burn is None else
                          f"{burn:.1f}x the {counts.availability_percent:g}% objective allows")
            faults = ", ".join(f"+{at - (self._started or at):.0f}s {name}" for at, name in self._faults)
            table.add_row("faults", f"{len(self._faults)}" + (f": {faults}" if faults else ""))
            return Group(table, Text("\n".join(self._lines), style="dim"))

    def _run(self) -> None:
        while not self._stop.wait(self._refresh_s):
            self.refresh()

    def __enter__(self) -> LiveView:
        self._live.__enter__()
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(5)
        self.refresh()
        self._live.__exit__(kind, exc, tb)
