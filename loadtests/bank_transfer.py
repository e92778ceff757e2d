"""Bank transfers for failover drills: a Locust workload that journals every attempt.

Each simulated user moves a random amount between two random accounts in ONE transaction
on the cluster's libpq multi-host connection string (``target_session_attrs=read-write``,
so a new connection always lands on the current primary), inserts a ``transfers`` row
keyed by a fresh uuid, and appends one :class:`JournalRecord` line per attempt: ``ack``
when COMMIT returned success, ``fail`` when the error came before COMMIT was sent,
``indeterminate`` when COMMIT was sent and the connection broke before an answer. After
any error the user drops its connection and reconnects every ~10 ms until a primary
answers; reconnecting is not an attempt (an attempt starts on an open connection), and
the server ("address:port") and WAL timeline on each record are those of the connection
it ran on. The drill measurement reads these journals (RTO, RPO, lost acknowledged
writes); Locust's own statistics (request type and name ``transfer``) give throughput and
latency. Attempts cut off because the load is stopping are journaled with an error
starting ``interrupted:`` and not reported to Locust.

Started by :mod:`orchestrator.drills.load` in a process of its own (Locust monkey-patches
the process with gevent); configured through the environment:

* ``DRCTL_CONNINFO``  the multi-host connection string (required)
* ``DRCTL_JOURNAL``   journal path; each process writes ``<stem>-<pid><suffix>`` (required)
* ``DRCTL_ACCOUNTS``  number of accounts, ids 1..N (default 100)
* ``DRCTL_USER_RATE`` transfers per second per user (default 50)
* ``DRCTL_RUN_SECONDS`` quit this many seconds after the users start (default 0: until stopped)

Never bound a COMMIT with ``statement_timeout`` or a cancel: a cancelled synchronous-commit
wait returns *success* for a row no standby has. Hence ``statement_timeout=0`` on every
connection, and no client-side timeout around the transaction.
"""

from __future__ import annotations

import csv
import os
import random
import time
import uuid
from pathlib import Path
from typing import IO, Any

import gevent

# locust must come before psycopg: importing it monkey-patches gevent, and psycopg picks its
# wait function when imported (a blocking one would stall every user). Checked below.
import locust  # noqa: F401
import psycopg
import psycopg.waiting
from locust import User, constant, constant_throughput, events, task
from locust.env import Environment
from locust.runners import Runner, WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from orchestrator.drills.journal import JournalRecord, Outcome

if getattr(psycopg.waiting, "wait_c", None) is psycopg.waiting.wait:
    raise ImportError("psycopg was imported before locust: its blocking wait function would stall every user")

RECONNECT_SLEEP_S = 0.01  # short: the client must not inflate the outage the drill measures
SERVER_QUERY = (
    "SELECT host(inet_server_addr()) || ':' || inet_server_port(), "
    "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
)


def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise RuntimeError(f"{name} is not set; start the load with orchestrator.drills.load.start_load")
    return value


CONNINFO = _env("DRCTL_CONNINFO")
JOURNAL = Path(_env("DRCTL_JOURNAL"))
ACCOUNTS = int(_env("DRCTL_ACCOUNTS", "100"))
USER_RATE = float(_env("DRCTL_USER_RATE", "50"))
RUN_SECONDS = float(_env("DRCTL_RUN_SECONDS", "0"))  # 0: until stopped (SIGTERM)
# "off": no journal lines at all, only for measuring what the journal costs (orchestrator.bench.overhead);
# a drill needs the journal.
JOURNALING = _env("DRCTL_MEASURE", "journal") != "off"
if ACCOUNTS < 2:
    raise RuntimeError(f"DRCTL_ACCOUNTS={ACCOUNTS}: a transfer needs at least 2 accounts")


class Journal:
    """This process's journal file, opened on first use (after any fork), flushed per line."""

    def __init__(self, base: Path) -> None:
        self._base = base
        self._pid: int | None = None
        self._file: IO[str] | None = None

    def append(self, record: JournalRecord) -> None:
        if self._pid != os.getpid() or self._file is None:
            self._pid = os.getpid()
            path = self._base.with_name(f"{self._base.stem}-{self._pid}{self._base.suffix}")
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")
        self._file.write(record.model_dump_json() + "\n")
        self._file.flush()


JOURNAL_WRITER = Journal(JOURNAL)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Session:
    """One connection to the primary, with the server and timeline that answered on it."""

    def __init__(self, conn: psycopg.Connection[Any], server: str, timeline: int) -> None:
        self.conn = conn
        self.server = server
        self.timeline = timeline

    @classmethod
    def open(cls) -> Session:
        """Connect through the multi-host string; raises psycopg.Error."""
        conn = psycopg.connect(
            CONNINFO, autocommit=True, application_name="drctl-load", options="-c statement_timeout=0"
        )
        try:
            row = conn.execute(SERVER_QUERY).fetchone()
        except BaseException:
            conn.close()
            raise
        assert row is not None
        return cls(conn, str(row[0]), int(row[1]))

    def close(self) -> None:
        self.conn.close()


class BankUser(User):
    """Moves money between random accounts at ``DRCTL_USER_RATE`` transfers per second."""

    wait_time = constant_throughput(USER_RATE) if USER_RATE > 0 else constant(0)

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self._session: Session | None = None

    def on_stop(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def _connected(self) -> Session:
        """The current session, reconnecting until a primary answers (every ~10 ms)."""
        while self._session is None:
            try:
                self._session = Session.open()
            except psycopg.Error:
                gevent.sleep(RECONNECT_SLEEP_S)
        return self._session

    @task
    def transfer(self) -> None:
        session = self._connected()
        src, dst = random.sample(range(1, ACCOUNTS + 1), 2)
        amount = random.randint(1, 100)
        tid = str(uuid.uuid4())
        started, t0 = time.time(), time.perf_counter()
        commit_sent = False
        outcome, error, exc_seen = Outcome.ACK, None, None
        try:
            conn = session.conn
            conn.execute("BEGIN")
            # Lock the two rows in id order: concurrent opposite transfers never deadlock.
            for account, delta in sorted([(src, -amount), (dst, amount)]):
                conn.execute("UPDATE accounts SET balance = balance + %s WHERE id = %s", (delta, account))
            conn.execute("INSERT INTO transfers (id, src, dst, amount) VALUES (%s, %s, %s, %s)",
                         (tid, src, dst, amount))
            commit_sent = True
            conn.execute("COMMIT")
        except psycopg.Error as exc:
            exc_seen, error = exc, _first_line(exc)
            outcome = Outcome.INDETERMINATE if commit_sent and _connection_lost(session, exc) else Outcome.FAIL
        except BaseException as exc:  # the load is stopping (GreenletExit): journal the attempt anyway
            outcome = Outcome.INDETERMINATE if commit_sent else Outcome.FAIL
            self._journal(tid, src, dst, amount, started, session, outcome, f"interrupted: {type(exc).__name__}")
            raise
        self._journal(tid, src, dst, amount, started, session, outcome, error)
        self.environment.events.request.fire(
            request_type="transfer", name="transfer", response_time=(time.perf_counter() - t0) * 1000,
            response_length=0, exception=exc_seen, context={"id": tid, "server": session.server},
        )
        if outcome is not Outcome.ACK:
            # Whatever the error, start over on a fresh connection: the string finds the primary.
            session.close()
            self._session = None

    @staticmethod
    def _journal(tid: str, src: int, dst: int, amount: int, started: float, session: Session,
                 outcome: Outcome, error: str | None) -> None:
        if not JOURNALING:
            return
        JOURNAL_WRITER.append(JournalRecord(
            id=tid, src=src, dst=dst, amount=amount, start=started, end=time.time(), outcome=outcome,
            server=session.server, timeline=session.timeline, error=error,
        ))


def _final_stats_on_quit(environment: Environment, runner: Runner | None = None, **_kwargs: Any) -> None:
    """Rewrite ``<prefix>_stats.csv`` once the users have stopped.

    Locust's CSV writer refreshes the file only every second and not at shutdown (nor on
    SIGTERM), so the file could miss the last second of the run. The ``quit`` event fires
    after the users stop; the file is replaced atomically (Locust's own handle then
    writes into the unlinked old file).
    """
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if not prefix or isinstance(runner, WorkerRunner):
        return

    def write(**_kw: Any) -> None:
        path = Path(f"{prefix}_stats.csv")
        partial = path.with_name(f"{path.name}.partial")
        with partial.open("w", newline="") as handle:
            StatsCSV(environment, PERCENTILES_TO_REPORT).requests_csv(csv.writer(handle))
        os.replace(partial, path)

    environment.events.quit.add_listener(write)  # type: ignore[no-untyped-call]


events.init.add_listener(_final_stats_on_quit)  # type: ignore[no-untyped-call]


def _quit_after_run_time(environment: Environment, **_kwargs: Any) -> None:
    """Quit ``DRCTL_RUN_SECONDS`` after the users start, timed on the real monotonic clock.

    Locust's own ``-t`` schedules a gevent timer against the loop's cached time; a process whose
    start-up stalled (a starved machine) saw that timer fire within a second of starting, and the
    drill then injected its fault into no load at all. Polling ``time.monotonic()`` cannot fire
    early; a stall only makes it late.
    """
    if RUN_SECONDS <= 0 or isinstance(environment.runner, WorkerRunner) or environment.runner is None:
        return
    runner, started = environment.runner, time.monotonic()

    def watch() -> None:
        while time.monotonic() - started < RUN_SECONDS:
            gevent.sleep(0.1)
        runner.quit()

    gevent.spawn(watch)


events.test_start.add_listener(_quit_after_run_time)  # type: ignore[no-untyped-call]


def _connection_lost(session: Session, exc: psycopg.Error) -> bool:
    """Did COMMIT's error come from a broken connection (outcome unknown) rather than the server's verdict?"""
    sqlstate = getattr(exc, "sqlstate", None)
    return session.conn.broken or session.conn.closed or sqlstate is None or sqlstate[:2] in ("08", "57")

