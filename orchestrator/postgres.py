"""The PostgreSQL adapter (psycopg 3): probe, promote, re-point, fence, slots.

The only module that talks SQL to members on the controller's behalf. Every call has a
strict connect timeout; psycopg errors become :class:`DatabaseUnavailable`. Callers are
the controller (fast path), the lab (set-up) and the drills (checks).
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from psycopg import sql

from orchestrator.decisions.archiving import ArchiverStats
from orchestrator.errors import DatabaseUnavailable
from orchestrator.state import Health, MemberStatus, Role, lsn_to_int
from orchestrator.waiting import poll_tight


@dataclass(frozen=True)
class Credentials:
    superuser: str
    superuser_password: str
    replication_user: str
    replication_password: str
    app_user: str
    app_password: str


@dataclass(frozen=True)
class Endpoint:
    """How to reach one member: its name (= application_name), address and port."""

    name: str
    address: str
    port: int

    def conninfo(self, user: str, password: str, dbname: str = "postgres", timeout: float = 1.0) -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.address,
            port=self.port,
            user=user,
            password=password,
            dbname=dbname,
            connect_timeout=max(1, round(timeout)),
            # A silent host must not hang a probe: bound unacknowledged sends too.
            tcp_user_timeout=int(timeout * 1000),
            application_name="drctl",
        )


Connection = psycopg.Connection[tuple[object, ...]]


def connect(endpoint: Endpoint, creds: Credentials, *, dbname: str = "postgres", timeout: float = 1.0
            ) -> Connection:
    """An autocommit superuser connection.

    :raises DatabaseUnavailable: refused, timed out, or authentication failed.
    """
    try:
        conn = psycopg.connect(
            endpoint.conninfo(creds.superuser, creds.superuser_password, dbname, timeout), autocommit=True
        )
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"{endpoint.name}: cannot connect ({_first_line(exc)})") from exc
    conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(int(timeout * 1000))))
    return conn


# libpq's words when the host answered and nothing listened: ECONNREFUSED over TCP, no socket file
# (or one nobody accepts on) over a unix socket. Every other failure (timeout, no route, a server
# starting up or shutting down, authentication) leaves open whether a postmaster still runs.
_REFUSED = ("connection refused", "no such file or directory")


def refused(error: str) -> bool:
    """Did a failed connection prove that no postmaster listens? (see :data:`_REFUSED`)"""
    text = error.lower()
    return any(words in text for words in _REFUSED)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_PROBE = """
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
       pg_last_wal_receive_lsn()::text,
       pg_last_wal_replay_lsn()::text,
       (SELECT status FROM pg_stat_wal_receiver),
       current_setting('primary_conninfo'),
       (SELECT received_tli FROM pg_stat_wal_receiver),
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
       current_setting('default_transaction_read_only')::bool,
       current_setting('synchronous_standby_names')
"""
_REPLICAS = "SELECT application_name, state, sync_state, flush_lsn::text, replay_lsn::text FROM pg_stat_replication"


T = TypeVar("T")


class _ProbeExpired(Exception):
    """A probe's query had no answer within the probe timeout (its connection was shut down)."""


def bounded(conn: Connection, timeout: float, read: Callable[[], T]) -> tuple[T, bool]:
    """Run ``read`` on ``conn`` with a client-side deadline of ``timeout`` seconds.

    An established connection to a stalled server waits forever: the server's kernel acknowledges
    every byte, so ``statement_timeout`` (server side), keepalives and ``tcp_user_timeout`` never
    fire. Past the deadline the socket is shut down, the wait ends at once, and
    :class:`_ProbeExpired` is raised (the connection is then unusable: drop it).
    """
    expired = threading.Event()

    def cut() -> None:
        expired.set()
        with contextlib.suppress(OSError, psycopg.Error):   # closed meanwhile: nothing to cut
            sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
            try:
                sock.shutdown(socket.SHUT_RDWR)
            finally:
                sock.close()

    timer = threading.Timer(timeout, cut)
    timer.daemon = True
    timer.start()
    try:
        result = read()
    except psycopg.Error:
        if expired.is_set():
            raise _ProbeExpired() from None
        raise
    finally:
        timer.cancel()
    return result, expired.is_set()


class Prober:
    """Keeps one connection per member and turns each probe into a :class:`MemberStatus`.

    Reusing the connection keeps a probe to one round trip; a broken connection is
    retried once at once, so a dead postmaster is seen within one probe.
    """

    def __init__(self, creds: Credentials, timeout: float) -> None:
        self._creds = creds
        self._timeout = timeout
        self._conns: dict[str, Connection] = {}

    def probe(self, endpoint: Endpoint) -> MemberStatus:
        for attempt in (1, 2):
            conn = self._conns.get(endpoint.name)
            try:
                if conn is None or conn.closed:
                    conn = connect(endpoint, self._creds, timeout=self._timeout)
                    self._conns[endpoint.name] = conn
                status, late = bounded(conn, self._timeout, functools.partial(_read_status, endpoint.name, conn))
                if late:   # answered just as the deadline cut the socket: good answer, dead connection
                    self._drop(endpoint.name)
                return status
            except DatabaseUnavailable as exc:
                self._drop(endpoint.name)
                return MemberStatus(name=endpoint.name, health=Health.UNREACHABLE, error=str(exc),
                                    refused=refused(str(exc)))
            except _ProbeExpired:
                # A stalled (SIGSTOPped, frozen) server: its kernel still acknowledges every packet, so
                # neither keepalives nor tcp_user_timeout end the wait. No retry: it would wait again.
                self._drop(endpoint.name)
                return MemberStatus(name=endpoint.name, health=Health.UNREACHABLE,
                                    error=f"no answer within the {self._timeout:g} s probe timeout")
            except psycopg.Error as exc:
                self._drop(endpoint.name)
                if attempt == 2:
                    return MemberStatus(name=endpoint.name, health=Health.UNREACHABLE, error=_first_line(exc))
        raise AssertionError("unreachable")

    def connection(self, endpoint: Endpoint) -> Connection | None:
        """The open probe connection to ``endpoint``, if any: operations reuse it to skip a login."""
        conn = self._conns.get(endpoint.name)
        return conn if conn is not None and not conn.closed else None

    def _drop(self, name: str) -> None:
        conn = self._conns.pop(name, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for name in list(self._conns):
            self._drop(name)


def _read_status(name: str, conn: Connection) -> MemberStatus:
    row = conn.execute(_PROBE).fetchone()
    assert row is not None
    (in_recovery, current, received, replayed, wr_status, conninfo, received_tli, primary_tli, read_only,
     sync_names) = row
    if in_recovery:
        return MemberStatus(
            name=name,
            health=Health.HEALTHY,
            role=Role.STANDBY,
            timeline=int(received_tli) if received_tli is not None else None,  # type: ignore[call-overload]
            wal_lsn=lsn_to_int(received) or lsn_to_int(replayed),  # type: ignore[arg-type]
            replay_lsn=lsn_to_int(replayed),  # type: ignore[arg-type]
            streaming=wr_status == "streaming",
            upstream=_upstream(str(conninfo or "")),
            read_only=True,
        )
    rows = conn.execute(_REPLICAS).fetchall()
    replicas = {str(app): str(sync) for app, state, sync, _, _ in rows if state == "streaming"}
    attached = {str(app): (lsn_to_int(flush), lsn_to_int(replay))  # type: ignore[arg-type]
                for app, _, _, flush, replay in rows}
    return MemberStatus(
        name=name,
        health=Health.HEALTHY,
        role=Role.PRIMARY,
        timeline=int(primary_tli),  # type: ignore[call-overload]
        wal_lsn=lsn_to_int(current),  # type: ignore[arg-type]
        replay_lsn=lsn_to_int(current),  # type: ignore[arg-type]
        replicas=replicas,
        attached=attached,
        sync_names=str(sync_names),
        read_only=bool(read_only),
    )


def _upstream(conninfo: str) -> str | None:
    """``address:port`` a standby is configured to stream from (its ``primary_conninfo``)."""
    if not conninfo:
        return None
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return None
    return f"{params.get('host', '')}:{params.get('port', 5432)}"


@contextlib.contextmanager
def _session(endpoint: Endpoint, creds: Credentials, conn: Connection | None) -> Iterator[Connection]:
    """Borrow ``conn`` (left open) or open a new connection for the block (closed after)."""
    if conn is not None and not conn.closed:
        yield conn
        return
    with connect(endpoint, creds, timeout=2.0) as fresh:
        yield fresh


def promote(endpoint: Endpoint, creds: Credentials, *, conn: Connection | None = None, timeout: float = 10.0,
            poll: float = 0.005) -> int:
    """Promote a standby and wait until it accepts writes; return its new timeline.

    ``pg_promote(wait => true)`` polls every 100 ms, so we ask without waiting and poll
    ``pg_is_in_recovery()`` every few milliseconds. Promoting a primary is a no-op.

    :raises DatabaseUnavailable: unreachable, or still in recovery after ``timeout``.
    """
    try:
        with _session(endpoint, creds, conn) as conn:
            if _in_recovery(conn):
                conn.execute("SELECT pg_promote(wait => false)")
            if not poll_tight(lambda: not _in_recovery(conn), timeout=timeout, interval=poll):
                raise DatabaseUnavailable(f"{endpoint.name}: still in recovery {timeout}s after promote")
            row = conn.execute(
                "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
            ).fetchone()
            assert row is not None
            return int(str(row[0]))
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"{endpoint.name}: promote failed ({_first_line(exc)})") from exc


def _in_recovery(conn: Connection) -> bool:
    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    return bool(row and row[0])


def primary_conninfo(upstream: Endpoint, member: str, creds: Credentials, passfile: str) -> str:
    """The walreceiver's connection string: bounded connects and keepalives for silent failures."""
    return psycopg.conninfo.make_conninfo(
        host=upstream.address,
        port=upstream.port,
        user=creds.replication_user,
        passfile=passfile,
        application_name=member,
        # A reconnect to a silent upstream: ~134 s without it (libpq 15 enforces at least 2 s).
        connect_timeout=2,
        # An idle stream to a silent upstream ends in 2.8 s with keepalives 1/1/2 (wal_receiver_timeout,
        # 2 s in the lab, usually ends it first: 1.8 s).
        keepalives=1,
        keepalives_idle=1,
        keepalives_interval=1,
        keepalives_count=2,
        # Replies stuck unacknowledged in the send queue: 10.8 s alone (measured), hours without.
        tcp_user_timeout=2000,
    )


def repoint(endpoint: Endpoint, creds: Credentials, *, conninfo: str, slot: str, conn: Connection | None = None
            ) -> None:
    """Point a standby at a new upstream: ``ALTER SYSTEM`` + reload, no restart.

    Nothing is written when it already has ``conninfo`` and ``slot``: a switchover re-points
    before the promotion and again after it, and a second reload then only cost the busy
    standbys a configuration re-read while they re-attach.

    :raises DatabaseUnavailable: unreachable, or the member is not a standby.
    """
    try:
        with _session(endpoint, creds, conn) as conn:
            (in_recovery, current, current_slot) = conn.execute(  # type: ignore[misc]
                "SELECT pg_is_in_recovery(), current_setting('primary_conninfo'), "
                "current_setting('primary_slot_name')").fetchone()
            if not in_recovery:
                raise DatabaseUnavailable(f"{endpoint.name}: is not a standby; rejoin it instead of re-pointing")
            if current == conninfo and current_slot == slot:
                return
            conn.execute(sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(sql.Literal(conninfo)))
            conn.execute(sql.SQL("ALTER SYSTEM SET primary_slot_name = {}").format(sql.Literal(slot)))
            conn.execute("SELECT pg_reload_conf()")
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"{endpoint.name}: re-point failed ({_first_line(exc)})") from exc


def ensure_slots(endpoint: Endpoint, creds: Credentials, slots: Iterable[str]) -> list[str]:
    """Create the missing physical slots (unreserved: no WAL held until a standby uses it).

    Works on primaries and standbys alike, so every member holds a slot for each peer
    and re-pointing after a promotion needs no step on the critical path. Returns the
    slots created.
    """
    created: list[str] = []
    try:
        with connect(endpoint, creds, timeout=2.0) as conn:
            existing = {str(r[0]) for r in conn.execute("SELECT slot_name FROM pg_replication_slots")}
            for slot in slots:
                if slot not in existing:
                    conn.execute("SELECT pg_create_physical_replication_slot(%s, false)", (slot,))
                    created.append(slot)
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"{endpoint.name}: creating slots failed ({_first_line(exc)})") from exc
    return created


def set_synchronous_names(endpoint: Endpoint, creds: Credentials, names: str | None, *,
                          conn: Connection | None = None) -> int:
    """Set (or with None reset to the configured value) the primary's quorum list and reload.

    Returns the primary's WAL position right after the reload: every commit after it
    waits for the new list. :raises DatabaseUnavailable: unreachable or not a primary.
    """
    try:
        with _session(endpoint, creds, conn) as conn:
            if names is None:
                conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
            else:
                conn.execute(sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(sql.Literal(names)))
            conn.execute("SELECT pg_reload_conf()")
            # Waiting commits are released by a standby's flush report; one that already holds
            # their WAL reports only every wal_receiver_status_interval. A tiny local commit
            # makes it flush and report now.
            with conn.transaction():
                conn.execute("SET LOCAL synchronous_commit = local")
                conn.execute("SELECT pg_current_xact_id()")
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"{endpoint.name}: changing the quorum failed ({_first_line(exc)})") from exc
    return lsn_to_int(str(row[0])) or 0 if row else 0


def wait_flushed(endpoint: Endpoint, creds: Credentials, standbys: Iterable[str], lsn: int, *, timeout: float,
                 conn: Connection | None = None) -> bool:
    """True once one of ``standbys`` (application names) has flushed WAL up to ``lsn``."""
    names = list(standbys)
    try:
        with _session(endpoint, creds, conn) as session:
            def flushed() -> bool:
                rows = session.execute("SELECT flush_lsn::text FROM pg_stat_replication "
                                       "WHERE application_name = ANY(%s) AND flush_lsn IS NOT NULL", (names,)
                                       ).fetchall()
                return any((lsn_to_int(str(r[0])) or 0) >= lsn for r in rows)

            return poll_tight(flushed, timeout=timeout, interval=0.01)
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"{endpoint.name}: reading replication failed ({_first_line(exc)})") from exc


def reserve_slot(endpoint: Endpoint, creds: Credentials, slot: str) -> None:
    """Make ``slot`` hold WAL from now on (recreate it reserved if it holds none).

    Called on the primary before a member is rewound or cloned, so the WAL it will ask
    for after starting is still there however busy the primary is meanwhile.
    """
    try:
        with connect(endpoint, creds, timeout=2.0) as conn:
            row = conn.execute("SELECT restart_lsn IS NOT NULL, active FROM pg_replication_slots "
                               "WHERE slot_name = %s", (slot,)).fetchone()
            if row is not None and (row[0] or row[1]):
                return
            if row is not None:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"{endpoint.name}: reserving slot {slot} failed ({_first_line(exc)})") from exc


def fence(endpoint: Endpoint, creds: Credentials, *, pg_ctl: str, mode: str = "immediate") -> bool:
    """Stop a reachable (old) primary so it can acknowledge no more writes.

    First turn it read-only and cut its clients (effective at once), then have the server
    stop itself through ``pg_ctl stop`` run by the server's own OS user, which works
    wherever the controller can log in as superuser. Returns False when the member was
    unreachable (nothing to fence: it acknowledges nothing).
    """
    try:
        conn = connect(endpoint, creds, timeout=1.0)
    except DatabaseUnavailable:
        return False
    try:
        with conn:
            conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
            (datadir,) = conn.execute("SHOW data_directory").fetchone()  # type: ignore[misc]
            command = f"{pg_ctl} stop -D {datadir} -m {mode} --no-wait"
            conn.execute(sql.SQL("COPY (SELECT 1) TO PROGRAM {}").format(sql.Literal(command)))
    except psycopg.Error:
        pass  # the server going away under us is the point
    return True


def checkpoint(endpoint: Endpoint, creds: Credentials) -> None:
    try:
        with connect(endpoint, creds, timeout=2.0) as conn:
            conn.execute("SET statement_timeout = 0")
            conn.execute("CHECKPOINT")
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"{endpoint.name}: checkpoint failed ({_first_line(exc)})") from exc


def stop_writes(endpoint: Endpoint, creds: Credentials, *, conn: Connection | None = None,
                wait_ms: int = 500) -> int:
    """A planned switchover's old primary: acknowledge no more writes; the server keeps running.

    Read-only by default from now on (libpq ``read-write`` clients move on at once), the
    reload confirmed, then every client backend terminated and waited for, so no commit can
    be acknowledged past the returned WAL flush position.

    :raises DatabaseUnavailable: unreachable, the reload not seen, or a client backend did not exit.
    """
    try:
        with _session(endpoint, creds, conn) as conn:
            (asked,) = conn.execute("SELECT clock_timestamp()").fetchone()  # type: ignore[misc]
            conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            conn.execute("SELECT pg_reload_conf()")
            # Our own session re-reads the files only after the postmaster did: from then on every
            # new session starts read-only and every older one re-reads them before its next command.
            session = conn

            def reloaded() -> bool:
                row = session.execute("SELECT pg_conf_load_time() >= %s", (asked,)).fetchone()
                return bool(row and row[0])

            if not poll_tight(reloaded, timeout=wait_ms / 1000, interval=0.001):
                raise DatabaseUnavailable(f"{endpoint.name}: configuration not reloaded in {wait_ms} ms")
            (pids,) = conn.execute(  # type: ignore[misc]
                "WITH c AS MATERIALIZED (SELECT pid FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()) "
                "SELECT coalesce(array_agg(pid), '{}') FROM c WHERE pg_terminate_backend(pid)").fetchone()
            # Gone from pg_stat_activity = exiting: it can send its client nothing more.
            def exited() -> bool:
                row = session.execute("SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = ANY(%s)",
                                      (pids,)).fetchone()
                return bool(row and row[0])

            if not poll_tight(exited, timeout=wait_ms / 1000, interval=0.001):
                raise DatabaseUnavailable(f"{endpoint.name}: client backend(s) did not exit in {wait_ms} ms")
            row = conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"{endpoint.name}: stopping writes failed ({_first_line(exc)})") from exc
    return lsn_to_int(str(row[0])) or 0 if row else 0


def attached_standbys(endpoint: Endpoint, creds: Credentials, *, conn: Connection | None = None) -> list[str]:
    """Application names of the standbys streaming from ``endpoint`` right now.

    :raises DatabaseUnavailable: unreachable.
    """
    try:
        with _session(endpoint, creds, conn) as conn:
            return sorted(str(r[0]) for r in conn.execute("SELECT application_name FROM pg_stat_replication"))
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"{endpoint.name}: reading replication failed ({_first_line(exc)})") from exc


_ARCHIVER = """
SELECT archived_count, extract(epoch FROM last_archived_time)::float8, last_archived_wal,
       failed_count, extract(epoch FROM last_failed_time)::float8, last_failed_wal,
       ready.count, ready.oldest
  FROM pg_stat_archiver,
       (SELECT count(*) AS count, extract(epoch FROM now() - min(modification))::float8 AS oldest
          FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready') AS ready
"""


def archiver_stats(endpoint: Endpoint, creds: Credentials, *, conn: Connection | None = None) -> ArchiverStats:
    """``endpoint``'s ``pg_stat_archiver`` row (one round trip on a borrowed connection).

    :raises DatabaseUnavailable: unreachable, or the read failed.
    """
    try:
        with _session(endpoint, creds, conn) as conn:
            row = conn.execute(_ARCHIVER).fetchone()
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"{endpoint.name}: reading pg_stat_archiver failed ({_first_line(exc)})") from exc
    assert row is not None
    archived, archived_at, archived_wal, failed, failed_at, failed_wal, ready, oldest = row
    return ArchiverStats(archived_count=int(str(archived)), last_archived_at=_float_or_none(archived_at),
                         last_archived_wal=None if archived_wal is None else str(archived_wal),
                         failed_count=int(str(failed)), last_failed_at=_float_or_none(failed_at),
                         last_failed_wal=None if failed_wal is None else str(failed_wal),
                         ready_count=int(str(ready)), oldest_ready_age_s=_float_or_none(oldest))


def _float_or_none(value: object) -> float | None:
    return None if value is None else float(str(value))


def stop_server(endpoint: Endpoint, creds: Credentials, *, pg_ctl: str, mode: str = "fast",
                conn: Connection | None = None) -> None:
    """Have the server stop itself (``pg_ctl stop --no-wait`` run by its own OS user); returns at once.

    The shutdown may end this very session before the command reports back: that is no error.

    :raises DatabaseUnavailable: unreachable.
    """
    try:
        with _session(endpoint, creds, conn) as conn:
            (datadir,) = conn.execute("SHOW data_directory").fetchone()  # type: ignore[misc]
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"{endpoint.name}: stopping the server failed ({_first_line(exc)})") from exc
    command = f"{pg_ctl} stop -D {datadir} -m {mode} --no-wait"
    with contextlib.suppress(psycopg.Error, DatabaseUnavailable), _session(endpoint, creds, conn) as conn:
        conn.execute(sql.SQL("COPY (SELECT 1) TO PROGRAM {}").format(sql.Literal(command)))


def prepare_synchronous_names(endpoint: Endpoint, creds: Credentials, names: str, *,
                              conn: Connection | None = None) -> bool:
    """Give a standby about to be promoted its own quorum list (``ALTER SYSTEM`` + reload).

    Works in recovery, so the promoted member enforces the list from its first commit.
    Nothing is changed when it already has ``names``; returns whether it changed.

    :raises DatabaseUnavailable: unreachable.
    """
    try:
        with _session(endpoint, creds, conn) as conn:
            row = conn.execute("SHOW synchronous_standby_names").fetchone()
            if row is not None and str(row[0]) == names:
                return False
            conn.execute(sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(sql.Literal(names)))
            conn.execute("SELECT pg_reload_conf()")
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"{endpoint.name}: setting the quorum list failed ({_first_line(exc)})") from exc
    return True


def resume_writes(endpoint: Endpoint, creds: Credentials, *, conn: Connection | None = None) -> None:
    """Undo :func:`stop_writes` (an aborted switchover): writable by default again.

    :raises DatabaseUnavailable: unreachable.
    """
    try:
        with _session(endpoint, creds, conn) as conn:
            conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
            conn.execute("SELECT pg_reload_conf()")
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"{endpoint.name}: resuming writes failed ({_first_line(exc)})") from exc
