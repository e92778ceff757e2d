"""An agent's local facts: what its member is right now, read on this host.

:class:`LocalProbe` reads the member over its unix socket (no network: it works while the
host is cut off from ZooKeeper and from the controllers) and falls back to the data directory
(``postmaster.pid``, ``standby.signal``) when the server does not answer. The agent runtime
calls it every loop and publishes :class:`AgentFacts` as the data of its liveness znode;
controllers and ``drctl status`` read them back with :meth:`AgentFacts.model_validate_json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg
from pydantic import BaseModel, ConfigDict

from orchestrator.agent.watchdog import is_standby, postmaster_pid
from orchestrator.state import Role, lsn_to_int


class AgentFacts(BaseModel):
    """The data of ``clusters/<cluster>/agents/<member>`` (JSON), refreshed every heartbeat."""

    model_config = ConfigDict(frozen=True)

    cluster: str
    member: str
    role: Role
    postmaster_alive: bool
    timeline: int | None = None
    # Primary: flushed WAL position. Standby: received (written), flushed, replayed.
    received_lsn: int | None = None
    flushed_lsn: int | None = None
    replayed_lsn: int | None = None
    fenced: bool = False
    fenced_at: float | None = None
    fence_reason: str = ""
    # Acknowledgements stop at most this long after lease_confirmed_at (see agent.rules).
    fencing_bound_s: float
    lease_confirmed_at: float | None = None
    session: str = "lost"
    epoch_seen: int | None = None
    generation_seen: int | None = None
    agent_pid: int
    watchdog_pid: int | None = None
    updated_at: float


@dataclass(frozen=True)
class LocalObservation:
    role: Role
    postmaster_alive: bool
    timeline: int | None = None
    received_lsn: int | None = None
    flushed_lsn: int | None = None
    replayed_lsn: int | None = None
    error: str | None = None
    # A standby's walreceiver status ("streaming", "catchup", ...; None: no walreceiver).
    receiver: str | None = None
    # A standby: seconds since the last replayed commit while WAL waits for replay (0 when caught up).
    replay_delay_s: float | None = None


_QUERY = """
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_flush_lsn()::text END,
       (SELECT written_lsn::text FROM pg_stat_wal_receiver),
       pg_last_wal_receive_lsn()::text,
       pg_last_wal_replay_lsn()::text,
       (SELECT timeline_id FROM pg_control_checkpoint()),
       (SELECT received_tli FROM pg_stat_wal_receiver),
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
       (SELECT status FROM pg_stat_wal_receiver),
       CASE WHEN NOT pg_is_in_recovery() THEN NULL
            WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END
"""


def socket_conninfo(socket_dir: Path, port: int, user: str, password: str, *, application_name: str) -> str:
    """A connection over the member's unix socket: unaffected by any network partition."""
    return psycopg.conninfo.make_conninfo(host=str(socket_dir), port=port, user=user, password=password,
                                          dbname="postgres", connect_timeout=2, application_name=application_name)


class LocalProbe:
    """Keeps one local connection and answers :meth:`observe` in one round trip."""

    def __init__(self, conninfo: str, data_dir: Path, *, timeout_s: float = 0.5) -> None:
        self._conninfo = conninfo
        self._data = data_dir
        self._timeout_ms = int(timeout_s * 1000)
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def observe(self) -> LocalObservation:
        alive = postmaster_pid(self._data) is not None
        if not alive:
            self.close()
            return LocalObservation(Role.UNKNOWN, False, error="postmaster not running")
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self._conninfo, autocommit=True)
                self._conn.execute(f"SET statement_timeout = {self._timeout_ms}")
            row = self._conn.execute(_QUERY).fetchone()
        except psycopg.Error as exc:
            self.close()
            # Not answering (starting, shutting down, overloaded): the data directory says what it is.
            role = Role.STANDBY if is_standby(self._data) else Role.UNKNOWN
            return LocalObservation(role, True, error=str(exc).strip().splitlines()[0] if str(exc) else "error")
        assert row is not None
        in_recovery, flush, written, received, replayed, ckpt_tli, received_tli, primary_tli, receiver, delay = row
        if in_recovery:
            tli = received_tli if received_tli is not None else ckpt_tli
            return LocalObservation(
                Role.STANDBY, True, timeline=int(str(tli)) if tli is not None else None,
                received_lsn=lsn_to_int(str(written)) if written else lsn_to_int(str(received) if received else None),
                flushed_lsn=lsn_to_int(str(received)) if received else None,
                replayed_lsn=lsn_to_int(str(replayed)) if replayed else None,
                receiver=str(receiver) if receiver is not None else None,
                replay_delay_s=float(str(delay)) if delay is not None else None,
            )
        position = lsn_to_int(str(flush))
        return LocalObservation(Role.PRIMARY, True, timeline=int(str(primary_tli)), received_lsn=position,
                                flushed_lsn=position, replayed_lsn=position)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
