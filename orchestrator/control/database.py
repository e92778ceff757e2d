"""The PostgreSQL members of one cluster, by member name: the real ``ClusterDatabase``.

A thin layer over :mod:`orchestrator.postgres`: it knows each member's endpoint, slot and
the pass file its walreceiver uses, reuses the prober's open connection where one exists
(an operation step then costs one round trip, no login), and probes every member in
parallel. Created by the controller, one per cluster; the parts see only
``control.ports.ClusterDatabase``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from orchestrator import pgserver
from orchestrator import postgres as pg
from orchestrator.errors import DatabaseUnavailable, OrchestratorError
from orchestrator.pgserver import InstanceLayout, member_endpoint
from orchestrator.state import ClusterSnapshot, MemberStatus
from orchestrator.topology import Cluster, Topology


class PostgresCluster:
    def __init__(self, topology: Topology, cluster: Cluster, root: Path, creds: pg.Credentials, *,
                 prober: pg.Prober, pool: ThreadPoolExecutor, clock: Callable[[], float],
                 probe_overrides: Mapping[str, pg.Endpoint] | None = None) -> None:
        self.cluster = cluster
        self.name = cluster.name
        self._topology = topology
        self._root = root
        self._creds = creds
        self._prober = prober
        self._pool = pool
        self._clock = clock
        # Fault hook for tests and drills: probe these members at another endpoint (the dict
        # is the controller's, read at each probe).
        self._overrides = probe_overrides if probe_overrides is not None else {}
        self.endpoints = {m.name: member_endpoint(topology, cluster, m) for m in cluster.members}
        self._pg_ctl = f"{topology.postgres.bin_dir}/pg_ctl"

    def layout(self, member: str) -> InstanceLayout:
        return InstanceLayout(self._topology, self.cluster, self.cluster.member(member), self._root)

    def _conn(self, member: str) -> pg.Connection | None:
        return self._prober.connection(self.endpoints[member])

    # ---- reads ------------------------------------------------------------------------------

    def probe(self) -> ClusterSnapshot:
        endpoints = {**self.endpoints, **{n: ep for n, ep in self._overrides.items() if n in self.endpoints}}
        statuses = list(self._pool.map(self._prober.probe, endpoints.values()))
        return ClusterSnapshot(self.name, {s.name: s for s in statuses}, taken_at=self._clock())

    def probe_member(self, member: str) -> MemberStatus:
        return self._prober.probe(self.endpoints[member])

    def current_lsn(self, member: str) -> int:
        status = self.probe_member(member)
        if not status.reachable:
            raise DatabaseUnavailable(f"{member}: {status.error}")
        return status.wal_lsn or 0

    def wait_flushed(self, member: str, standbys: Iterable[str], lsn: int, *, timeout: float) -> bool:
        return pg.wait_flushed(self.endpoints[member], self._creds, standbys, lsn, timeout=timeout,
                               conn=self._conn(member))

    def attached_standbys(self, member: str) -> list[str]:
        return pg.attached_standbys(self.endpoints[member], self._creds, conn=self._conn(member))

    # ---- actions ----------------------------------------------------------------------------

    def fence(self, member: str, *, mode: str = "immediate") -> bool:
        return pg.fence(self.endpoints[member], self._creds, pg_ctl=self._pg_ctl, mode=mode)

    def stop_writes(self, member: str) -> int:
        return pg.stop_writes(self.endpoints[member], self._creds, conn=self._conn(member))

    def resume_writes(self, member: str) -> None:
        pg.resume_writes(self.endpoints[member], self._creds, conn=self._conn(member))

    def stop_server(self, member: str) -> None:
        pg.stop_server(self.endpoints[member], self._creds, pg_ctl=self._pg_ctl, conn=self._conn(member))

    def start_server(self, member: str) -> None:
        # On the member's host as its OS user (the lab's hosts are this machine).
        try:
            pgserver.start(self.layout(member))
        except (OrchestratorError, OSError, subprocess.SubprocessError) as exc:
            raise DatabaseUnavailable(f"{member}: starting the server failed ({exc})") from exc

    def prepare_synchronous_names(self, member: str, names: str) -> bool:
        return pg.prepare_synchronous_names(self.endpoints[member], self._creds, names, conn=self._conn(member))

    def promote(self, member: str) -> int:
        return pg.promote(self.endpoints[member], self._creds, conn=self._conn(member))

    def repoint(self, member: str, upstream: str) -> None:
        passfile = str(self.layout(upstream).passfile)
        conninfo = pg.primary_conninfo(self.endpoints[upstream], member, self._creds, passfile)
        pg.repoint(self.endpoints[member], self._creds, conninfo=conninfo,
                   slot=self.cluster.member(member).slot_name, conn=self._conn(member))

    def set_synchronous_names(self, member: str, names: str | None) -> int:
        return pg.set_synchronous_names(self.endpoints[member], self._creds, names, conn=self._conn(member))

    def drop_synchronous_names(self, member: str) -> None:
        pg.set_synchronous_names(self.endpoints[member], self._creds, "", conn=self._conn(member))

    def reserve_slot(self, primary: str, member: str) -> None:
        pg.reserve_slot(self.endpoints[primary], self._creds, self.cluster.member(member).slot_name)

    def checkpoint(self, member: str) -> None:
        pg.checkpoint(self.endpoints[member], self._creds)

    def ensure_peer_slots(self, member: str) -> list[str]:
        peers = [m.slot_name for m in self.cluster.members if m.name != member]
        return pg.ensure_slots(self.endpoints[member], self._creds, peers)
