"""The self-fence: stop a primary acknowledging commits, locally, in milliseconds.

Called by the agent runtime when :func:`orchestrator.agent.rules.fence_decision` says so, or when
an instruction of the current epoch asks. Everything goes over the member's unix socket and by
PID, so it works while the host is cut off from ZooKeeper and the controllers.

The sequence, and why (measured in /work/shared/LAB-NOTES.md, "Fencing a primary locally"):

1. ``ALTER SYSTEM SET synchronous_standby_names`` to a name no standby has, ``pg_reload_conf()``:
   every later commit of a default session waits (last acknowledgement 8 ms after, median). It
   also survives a restart: anything that starts this data directory again as a primary before
   the rejoin rewrites its configuration cannot acknowledge a synchronous commit.
2. ``pg_terminate_backend`` on every client backend: sessions that ``SET synchronous_commit =
   local/off`` are not held by step 1; this cuts them (and those waiting in step 1, whose
   commits are then never acknowledged).
3. SIGINT to the postmaster (``pg_ctl stop -m fast`` without the fork): it refuses new
   connections at once (a client reconnecting after step 2 with ``synchronous_commit = local``
   would otherwise commit) and terminates whatever backend is left; then SIGQUIT (immediate)
   and SIGKILL if it lingers (a fast shutdown can wait on its walsenders).

Steps 1 and 2 run on a connection opened in advance (no login on the fast path, no refusal when
``max_connections`` is reached). If SQL fails, or gets no answer within :data:`SQL_BUDGET_S` (a
stalled server), step 3 alone still fences; a stalled (stopped) postmaster gets SIGKILL at once,
with its stopped children, since no other signal acts on it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from orchestrator.agent.watchdog import postmaster_pid, stop_postmaster

FENCE_NAMES = 'FIRST 1 ("drctl-fenced")'
# Steps 1 and 2 took 8 ms median, 16 ms max (LAB-NOTES); a server that has not answered in this
# long is stalled, and step 3 goes ahead without it.
SQL_BUDGET_S = 0.2


@dataclass(frozen=True)
class FenceReport:
    sql_ok: bool
    # Why the SQL steps failed (the signals fenced alone), empty when they worked.
    sql_error: str
    shutdown: str
    # Seconds from the start of the fence to the end of the SQL steps (acknowledgements stopped).
    sql_s: float
    total_s: float


class Fencer:
    """Holds the reserved local connection and runs the fence sequence."""

    def __init__(self, conninfo: str, data_dir: Path) -> None:
        self._conninfo = conninfo
        self._data = data_dir
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def prepare(self) -> str:
        """Open (or re-open) the reserved connection; return why not ('' when open). Retried at the next call."""
        if self._conn is not None and not self._conn.closed:
            return ""
        try:
            self._conn = psycopg.connect(self._conninfo, autocommit=True)
            self._conn.execute("SET statement_timeout = 500")
        except psycopg.Error as exc:
            self._conn = None
            return _line(exc)
        return ""

    def fence(self) -> FenceReport:
        started = time.monotonic()
        sql_error = self._bounded_sql_steps()
        sql_done = time.monotonic()
        pid = postmaster_pid(self._data)
        shutdown = stop_postmaster(pid) if pid is not None else "not running"
        return FenceReport(not sql_error, sql_error, shutdown, sql_done - started, time.monotonic() - started)

    def _bounded_sql_steps(self) -> str:
        """Steps 1 and 2 within :data:`SQL_BUDGET_S`: a stalled server (SIGSTOP, a frozen disk) never
        answers, and the signals of step 3 must not wait for it. The reserved connection's socket is
        shut down to free the worker; a connect still pending fails once step 3 kills the postmaster."""
        outcome: list[str] = []
        worker = threading.Thread(target=lambda: outcome.append(self._sql_steps()), name="fence-sql", daemon=True)
        worker.start()
        worker.join(SQL_BUDGET_S)
        if outcome:
            return outcome[0]
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError, ValueError), \
                    socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        return f"no answer within {SQL_BUDGET_S}s (the server is stalled?): the signals alone fence"

    def _sql_steps(self) -> str:
        """Steps 1 and 2; return '' or why they failed. A broken reserved connection is replaced once."""
        error = ""
        try:
            for attempt in (1, 2):
                error = self.prepare()
                conn = self._conn
                if conn is None:
                    return error
                try:
                    conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{FENCE_NAMES}'")
                except psycopg.OperationalError as exc:
                    self.close()
                    error = _line(exc)
                    if attempt == 2:
                        return error
                    continue
                conn.execute("SELECT pg_reload_conf()")
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
                return ""
        except psycopg.Error as exc:
            return _line(exc)
        finally:
            self.close()
        return error

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
