"""The two polls share one contract: first truthy result, else the last falsy one at the deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator.waiting import poll, poll_tight

POLLS = [pytest.param(poll, id="tenacity"), pytest.param(poll_tight, id="tight")]
Poll = Callable[..., Any]


def _counter(done_at: int, done: object = "done", not_done: object = None) -> tuple[Callable[[], object], list[int]]:
    calls = [0]

    def check() -> object:
        calls[0] += 1
        return done if calls[0] >= done_at else not_done

    return check, calls


@pytest.mark.parametrize("wait", POLLS)
def test_returns_the_first_truthy_result_without_sleeping_first(wait: Poll) -> None:
    check, calls = _counter(1)
    started = time.monotonic()
    assert wait(check, timeout=5, interval=1.0) == "done"
    assert calls == [1] and time.monotonic() - started < 0.5


@pytest.mark.parametrize("wait", POLLS)
def test_checks_every_interval_until_it_holds(wait: Poll) -> None:
    check, calls = _counter(4)
    started = time.monotonic()
    assert wait(check, timeout=5, interval=0.02) == "done"
    assert calls == [4]
    assert time.monotonic() - started >= 3 * 0.02


@pytest.mark.parametrize("wait", POLLS)
def test_gives_back_the_last_falsy_result_after_the_timeout(wait: Poll) -> None:
    check, calls = _counter(10**9, not_done=[])
    started = time.monotonic()
    assert wait(check, timeout=0.1, interval=0.01) == []
    elapsed = time.monotonic() - started
    assert 0.1 <= elapsed < 1.0 and calls[0] >= 3


@pytest.mark.parametrize("wait", POLLS)
def test_an_exception_in_the_check_propagates_at_once(wait: Poll) -> None:
    calls = [0]

    def check() -> bool:
        calls[0] += 1
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError, match="refused"):
        wait(check, timeout=5, interval=0.01)
    assert calls == [1]


@pytest.mark.parametrize("wait", POLLS)
def test_a_zero_timeout_checks_once(wait: Poll) -> None:
    check, calls = _counter(2)
    assert wait(check, timeout=0, interval=0.01) is None
    assert calls == [1]
