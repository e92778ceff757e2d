"""Pure alert policy: de-duplication within a window, and the retry back-off (no I/O, time passed in).

:class:`Dedup`: the first alert of a key ``(kind, cluster, subject)`` goes out at once and
opens a window of ``window`` seconds; repeats inside the window are only counted. When the
window has passed, :meth:`Dedup.expire` hands back one summary per key that had repeats
(``count`` = the repeats), so nothing is lost and a storm is one alert plus one summary.
Every offered occurrence is counted exactly once in what :meth:`offer` and :meth:`expire` return.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.alerts.model import Alert


@dataclass
class _Window:
    opened: float
    repeats: int = 0
    last: Alert | None = None
    first_repeat: float = 0.0


class Dedup:
    def __init__(self, window: float) -> None:
        self.window = window
        self._open: dict[tuple[str, str, str], _Window] = {}

    def offer(self, alert: Alert, now: float) -> list[Alert]:
        """What to send now: the summaries of windows that have closed, then ``alert`` unless it
        repeats an alert sent within the window (then it is only counted)."""
        out = self.expire(now)
        window = self._open.get(alert.key)
        if window is None:
            self._open[alert.key] = _Window(opened=now)
            return [*out, alert]
        if window.repeats == 0:
            window.first_repeat = alert.at
        window.repeats += 1
        window.last = alert
        return out

    def expire(self, now: float) -> list[Alert]:
        """Close every window at least ``window`` old: one summary alert per window that had repeats."""
        out: list[Alert] = []
        for key, window in list(self._open.items()):
            if now - window.opened >= self.window:
                del self._open[key]
                if window.repeats and window.last is not None:
                    out.append(window.last.folded(window.repeats, window.first_repeat))
        return out

    def next_expiry(self) -> float | None:
        """When the earliest open window with repeats closes (the dispatcher waits until then)."""
        times = [w.opened + self.window for w in self._open.values() if w.repeats]
        return min(times) if times else None


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): base, 2·base, 4·base, ... at most ``cap``."""
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    return float(min(cap, base * 2 ** (attempt - 1)))
