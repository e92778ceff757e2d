"""Polling a condition until it holds or a deadline passes: one tenacity policy for every wait.

The lab, the PostgreSQL adapter and the process helpers wait for things that announce
nothing (a PID to vanish, a standby to stream, a promoted server to leave recovery). They
all call :func:`poll`, which runs the check at once, then every ``interval`` seconds, and
returns the last result so the caller can name what was still missing in its error.
Exceptions raised by the check are not retried: they propagate at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_delay, wait_fixed

T = TypeVar("T")


def _not_done(result: object) -> bool:
    return not result


def _last_result(state: RetryCallState) -> object:
    assert state.outcome is not None
    return state.outcome.result()


def poll(check: Callable[[], T], *, timeout: float, interval: float) -> T:
    """Call ``check`` until it returns a truthy value or ``timeout`` seconds have passed.

    Returns that value, or the last (falsy) one when time ran out: the caller decides
    what a timeout means.
    """
    retrying: Retrying = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(interval),
        retry=retry_if_result(_not_done),
        retry_error_callback=_last_result,
        reraise=True,
    )
    return retrying(check)
