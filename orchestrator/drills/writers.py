"""Background writers: threads committing one row at a time, every acknowledgement recorded.

A drill's load is Locust's bank workload (:mod:`orchestrator.drills.load`); these are the small
in-process write loops the lab tests and the DR-lag benchmark use where they need each
acknowledgement itself: to prove that no acknowledged row is missing after a failover, and to
time the last commit an old primary acknowledged against the first one a new primary did.
Each thread keeps one connection, reconnects after any error (a failover, a fenced server) and
records an :class:`Ack` only once ``INSERT`` has returned.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

import psycopg
from psycopg import sql


@dataclass(frozen=True)
class Ack:
    """One acknowledged commit: the row's id, the server port that acknowledged it, and when."""

    ident: str
    port: int
    wall: float  # time.time() when the commit returned
    mono: float  # time.monotonic() when the commit returned


class Writers:
    """``count`` threads inserting rows ``(id[, filler])`` into ``table`` through ``conninfo``.

    The table must exist with a text ``id`` column (and a text ``filler`` column when
    ``filler_bytes`` is set). ``session_sql`` runs on every new connection (for example
    ``SET synchronous_commit = local``). Use as a context manager, or call :meth:`start` and
    :meth:`stop`.
    """

    def __init__(self, conninfo: str, table: str, *, count: int = 4, filler_bytes: int = 0,
                 session_sql: Sequence[str] = (), connect_timeout: int = 2, retry_pause: float = 0.02) -> None:
        if filler_bytes:
            self._insert = sql.SQL("INSERT INTO {} (id, filler) VALUES (%s, repeat('x', {}))").format(
                sql.Identifier(table), sql.Literal(filler_bytes))
        else:
            self._insert = sql.SQL("INSERT INTO {} (id) VALUES (%s)").format(sql.Identifier(table))
        self.conninfo = conninfo
        self.session_sql = tuple(session_sql)
        self.connect_timeout = connect_timeout
        self.retry_pause = retry_pause
        self.halt = threading.Event()
        self._acks: list[Ack] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, name=f"writer-{table}-{n}", daemon=True)
                         for n in range(count)]

    def start(self) -> Writers:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.halt.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    def __enter__(self) -> Writers:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def snapshot(self) -> list[Ack]:
        """Every acknowledgement so far, in the order they were recorded."""
        with self._lock:
            return list(self._acks)

    def count(self) -> int:
        with self._lock:
            return len(self._acks)

    def last(self) -> Ack | None:
        with self._lock:
            return self._acks[-1] if self._acks else None

    def _run(self) -> None:
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        while not self.halt.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=self.connect_timeout)
                    for statement in self.session_sql:
                        conn.execute(statement.encode())
                ident = uuid.uuid4().hex
                conn.execute(self._insert, (ident,))
                ack = Ack(ident, int(conn.info.port), time.time(), time.monotonic())
                with self._lock:
                    self._acks.append(ack)
            except psycopg.Error:
                if conn is not None:
                    conn.close()
                conn = None
                self.halt.wait(self.retry_pause)  # reconnect back-off, not synchronisation
        if conn is not None:
            conn.close()
