"""The leadership term: one lease (epoch) from election to loss, and every thread it started.

The elected controller opens a :class:`Term` with the lease it got from bumping the epoch.
Every side effect (a PostgreSQL fence, promote or re-point, a quorum change, a rejoin
step, a ZooKeeper write) runs inside ``with term.guard("what"):``, which *reads* the epoch
znode from ZooKeeper right then and refuses (raises) unless the session is connected and
the stored lease is still this one. A cached flag would not do: a leader paused past its
session (SIGSTOP, a GC pause, a frozen VM) wakes up with its old view and, before its
ZooKeeper client has even noticed the expiry, would act on it.

A term that is lost stays lost: the session listener ends it as soon as kazoo reports the
session expired (the election lock went with it, even if a new session connects at once),
and so does any read that shows another epoch. Ending cancels the term's threads (rejoin
jobs, operations) through their cancel hooks and :meth:`Term.wait`, and the owner's
:meth:`Term.end` waits for them, so nothing the old leader started outlives it.

The rule itself is :func:`check_lease`, pure and table-tested; :class:`Term` does the I/O.
Called by the controller's election loop and by every part that acts (cycle, operations,
executors, rejoin).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from orchestrator.control.ports import LeaseSource
from orchestrator.coordination import Lease
from orchestrator.decisions import SessionState, may_act
from orchestrator.errors import CoordinationUnavailable, LostLeadership


class LeaseInDoubt(LostLeadership):
    """The lease could not be confirmed right now (session suspended, read failed).

    Nothing may act, but the term is not over: the session may reconnect with its lease.
    A thread that catches :class:`LostLeadership` stops on this too.
    """


class Emitter(Protocol):
    def emit(self, event: str, **fields: object) -> None: ...


# ---- the rule (pure) ----------------------------------------------------------------------------


class LeaseVerdict(StrEnum):
    CURRENT = "current"
    IN_DOUBT = "in-doubt"
    LOST = "lost"


@dataclass(frozen=True)
class LeaseCheck:
    verdict: LeaseVerdict
    reason: str


def check_lease(session: SessionState, held: Lease, stored: Lease | None, *, read_error: str | None = None
                ) -> LeaseCheck:
    """Is the term of ``held`` current, given the session and the lease just read?

    ``stored`` is what the epoch znode holds now (None: no epoch znode), or ``read_error``
    says why it could not be read. An expired session is a lost term (its ephemeral
    election node is gone); a different stored lease is a lost term (another controller
    bumped the epoch); a suspended session or a failed read is doubt: act on nothing.
    """
    if session is SessionState.LOST:
        return LeaseCheck(LeaseVerdict.LOST, f"the ZooKeeper session of epoch {held.epoch} expired")
    if read_error is None:
        if stored is None:
            return LeaseCheck(LeaseVerdict.LOST, f"no epoch is stored; epoch {held.epoch} is not current")
        if stored != held:
            return LeaseCheck(LeaseVerdict.LOST, f"epoch {held.epoch} (version {held.version}) was superseded by "
                                                 f"epoch {stored.epoch} (version {stored.version})")
    if not may_act(session, True, held.epoch, stored.epoch if stored is not None else None) \
            or read_error is not None:
        why = read_error if read_error is not None else f"the ZooKeeper session is {session.value}"
        return LeaseCheck(LeaseVerdict.IN_DOUBT, f"cannot confirm epoch {held.epoch}: {why}")
    return LeaseCheck(LeaseVerdict.CURRENT, f"epoch {held.epoch} is current")


# ---- the term --------------------------------------------------------------------------------------


class Term:
    """One leadership term. Thread-safe; :meth:`end` is for its owner (the election loop).

    :param source: reads the stored lease (a fresh ZooKeeper read each call).
    :param lease: the lease this controller got when it bumped the epoch.
    :param join_timeout: how long :meth:`end` waits for the term's threads.
    """

    def __init__(self, source: LeaseSource, lease: Lease, *, log: Emitter | None = None,
                 join_timeout: float = 15.0) -> None:
        self._source = source
        self.lease = lease
        self._log = log
        self._join_timeout = join_timeout
        self._ended = threading.Event()
        self._reason = ""
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._hooks: list[Callable[[], None]] = []
        self._reported = False

    def __enter__(self) -> Term:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end("leadership ended")

    @property
    def epoch(self) -> int:
        return self.lease.epoch

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    @property
    def reason(self) -> str:
        return self._reason

    # ---- confirming the lease ---------------------------------------------------------------

    def check(self) -> LeaseCheck:
        """Read the epoch znode now and judge the lease; a LOST verdict ends the term."""
        if self._ended.is_set():
            return LeaseCheck(LeaseVerdict.LOST, self._reason)
        stored: Lease | None = None
        read_error: str | None = None
        if self._source.session is not SessionState.CONNECTED:
            read_error = f"not read: the ZooKeeper session is {self._source.session.value}"
        else:
            try:
                stored = self._source.current_lease()
            except CoordinationUnavailable as exc:
                read_error = str(exc)
        # The session as it is after the read: a read that failed because the session
        # expired has let the client notice it.
        result = check_lease(self._source.session, self.lease, stored, read_error=read_error)
        if result.verdict is LeaseVerdict.LOST:
            self._lose(result.reason)
        return result

    def confirm(self, action: str = "act") -> None:
        """Return only if the lease is current now.

        :raises LeaseInDoubt: it cannot be confirmed right now (the term goes on).
        :raises LostLeadership: the term is over (and now ended).
        """
        result = self.check()
        if result.verdict is LeaseVerdict.LOST:
            raise LostLeadership(f"{action} refused: {result.reason}")
        if result.verdict is LeaseVerdict.IN_DOUBT:
            raise LeaseInDoubt(f"{action} refused: {result.reason}")

    @contextmanager
    def guard(self, action: str) -> Iterator[None]:
        """``with term.guard("promote dc1-b"):`` runs the body only under a confirmed lease.

        :raises LeaseInDoubt, LostLeadership: as :meth:`confirm`, before the body runs.
        """
        self.confirm(action)
        yield

    def session_changed(self, session: SessionState) -> None:
        """Session listener (called from the ZooKeeper client's thread): an expired session ends the term."""
        if session is SessionState.LOST:
            self._lose(f"the ZooKeeper session of epoch {self.epoch} expired")

    # ---- threads the term owns --------------------------------------------------------------

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True (at once) when the term has ended. For the term's threads."""
        return self._ended.wait(seconds)

    def on_end(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` (quick, non-blocking: e.g. cancel a playbook run) when the term ends."""
        with self._lock:
            if not self._ended.is_set():
                self._hooks.append(hook)
                return
        hook()

    def spawn(self, name: str, body: Callable[[], None]) -> threading.Thread:
        """Run ``body`` in a thread owned by the term; :meth:`end` waits for it.

        ``body`` should call :meth:`guard` before each side effect and :meth:`wait` instead
        of sleeping; a :class:`LostLeadership` it raises ends the thread quietly.

        :raises LostLeadership: the term has already ended (nothing is started).
        """
        thread = threading.Thread(target=self._run, args=(name, body), name=name, daemon=True)
        with self._lock:
            if self._ended.is_set():
                raise LostLeadership(f"{name} not started: {self._reason}")
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()
        return thread

    def _run(self, name: str, body: Callable[[], None]) -> None:
        try:
            body()
        except LostLeadership as exc:
            self._emit("term-thread-stopped", thread=name, reason=str(exc))
        except Exception as exc:  # a thread must not die silently: say which and why
            self._emit("term-thread-failed", thread=name, error=f"{type(exc).__name__}: {exc}")

    def threads(self) -> list[threading.Thread]:
        with self._lock:
            return [t for t in self._threads if t.is_alive()]

    # ---- ending --------------------------------------------------------------------------------

    def _lose(self, reason: str) -> None:
        with self._lock:
            if self._ended.is_set():
                return
            self._reason = reason
            self._ended.set()
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            try:
                hook()
            except Exception as exc:  # one failing hook must not keep the others from cancelling
                self._emit("term-hook-failed", error=f"{type(exc).__name__}: {exc}")

    def end(self, reason: str) -> list[str]:
        """End the term (if not yet), cancel its threads and wait for them.

        Returns the names of threads still running after ``join_timeout`` (empty when all
        stopped). Safe to call twice, and from one of the term's own threads (it skips itself).
        """
        self._lose(reason)
        me = threading.current_thread()
        deadline = time.monotonic() + self._join_timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            if thread is not me:
                thread.join(max(0.0, deadline - time.monotonic()))
        still = [t.name for t in threads if t.is_alive() and t is not me]
        with self._lock:
            first, self._reported = not self._reported, True
        if first or still:
                self._emit("term-ended", epoch=self.epoch, reason=self._reason, threads=[t.name for t in threads],
                       still_running=still)
        return still

    def _emit(self, event: str, **fields: object) -> None:
        if self._log is not None:
            self._log.emit(event, **fields)
