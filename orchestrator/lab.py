"""The local lab: a topology brought to life as real processes on this machine.

``drctl lab up`` calls :meth:`Lab.up`: a ZooKeeper server per data centre, every PostgreSQL
member (the primary by initdb, standbys by ``pg_basebackup`` over their slots), one node
agent beside every member (:mod:`orchestrator.agent`), and one controller per data centre,
each on its data centre's address and a port from the topology's range. Everything lives
under the lab directory (default ``.lab/``): data dirs, logs, pid files, generated passwords,
and ``lab.json`` recording the topology the lab was built from, so ``down`` and ``status``
act on what really runs.

``up`` is idempotent: what is healthy is left alone, what is stopped is started, what is
missing is built. ``down`` stops every process by its PID (HAProxy too, when ``drctl lab
haproxy`` started it: :mod:`orchestrator.haproxy`) and removes the directory.

An isolated lab (``drctl lab up --isolated``) puts each data centre in its own network
namespace (:mod:`orchestrator.network.namespaces`): the topology's host addresses become the
namespaces' addresses (the derived topology is what ``lab.json`` records), every member, agent
and ZooKeeper server runs inside its data centre's namespace and every controller in its data
centre's controller namespace, so :mod:`orchestrator.network.nftables` can cut links silently.
``down`` then also removes the namespaces, and finds them from ``network.json`` after a crash.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg

from orchestrator import ensemble, pgserver
from orchestrator import postgres as pg
from orchestrator.errors import CoordinationUnavailable, DatabaseUnavailable, LabError
from orchestrator.network import namespaces
from orchestrator.pgserver import InstanceLayout
from orchestrator.processes import is_running, pids_mentioning, read_pid, spawn, stop, stop_all
from orchestrator.state import Role
from orchestrator.topology import Cluster, Member, Topology
from orchestrator.waiting import poll

STATE_FILE = "lab.json"


@dataclass(frozen=True)
class MemberRow:
    datacenter: str
    cluster: str
    member: str
    role: Role
    port: int
    pid: int | None
    replication: str
    lag_bytes: int | None


@dataclass(frozen=True)
class ServiceRow:
    datacenter: str
    service: str
    port: int | None
    pid: int | None
    state: str


@dataclass(frozen=True)
class LabStatus:
    members: list[MemberRow]
    services: list[ServiceRow]

    @property
    def healthy(self) -> bool:
        return all(r.pid is not None and r.replication in ("primary", "quorum", "sync", "async")
                   for r in self.members) and all(s.pid is not None for s in self.services)


def load_credentials(root: Path) -> pg.Credentials:
    path = root / "secrets.json"
    try:
        return pg.Credentials(**json.loads(path.read_text()))
    except FileNotFoundError:
        raise LabError(f"{path}: no lab credentials; run 'drctl lab up' first") from None


def recorded_topology(root: Path) -> Topology | None:
    """The topology the lab in ``root`` was built from, or None when there is no lab."""
    path = root / STATE_FILE
    if not path.exists():
        return None
    data = json.loads(path.read_text())["topology"]
    # A lab recorded before allow_unproven_failover was removed must still come down.
    for cluster in data.get("clusters", ()):
        cluster.get("replication", {}).pop("allow_unproven_failover", None)
    return Topology.model_validate(data)


# A healed ZooKeeper server rejoins in about a second instead of up to two minutes (with the JVM's
# -Dzookeeper.fastleader.maxNotificationInterval=2000: orchestrator.ensemble).
_ZK_NAMESPACE_SYSCTLS = {"net.ipv4.tcp_rto_max_ms": "1000"}


class Lab:
    def __init__(self, topology: Topology, root: Path, *, controllers: bool = True, agents: bool | None = None,
                 isolated: bool = False) -> None:
        self.root = root.resolve()
        # An isolated lab: recorded in network.json once built; planned from the topology when asked for.
        self.network = namespaces.load(self.root)
        if self.network is None and isolated:
            self.network = namespaces.plan(topology)
        self.topology = topology if self.network is None else namespaces.isolate(topology, self.network)
        self.with_controllers = controllers
        # Node agents (orchestrator.agent) run beside every member whenever controllers do: the
        # controllers promote nothing while an unreachable primary is not proven stopped, and the
        # agents are what proves it when its host goes silent. ``None``: as this lab directory was
        # brought up (agent pid files), or like ``controllers`` for a new one.
        if agents is None:
            agents = any((self.root / "agent").glob("*.pid")) if recorded_topology(self.root) is not None \
                else controllers
        self.with_agents = agents
        # Fault hook (tests): the ZooKeeper connection string a process is started with instead of
        # the ensemble's, keyed "controller/<dc>" or "agent/<cluster>/<member>" (a cut-able proxy).
        self.zk_hosts_override: dict[str, str] = {}

    # ---- layout ----------------------------------------------------------------------------

    def layout(self, cluster: Cluster, member: Member) -> InstanceLayout:
        return InstanceLayout(self.topology, cluster, member, self.root)

    def layouts(self) -> list[InstanceLayout]:
        return [self.layout(c, m) for c in self.topology.clusters for m in c.members]

    def zookeeper(self) -> list[ensemble.ZooKeeperServer]:
        return ensemble.servers(self.topology, self.root)

    def controller_pidfile(self, dc: str) -> Path:
        return self.root / "controller" / f"{dc}.pid"

    @property
    def credentials(self) -> pg.Credentials:
        return load_credentials(self.root)

    # ---- up --------------------------------------------------------------------------------

    def up(self, *, timeout: float = 90.0) -> None:
        """Build or start whatever is missing; leave healthy parts alone.

        :raises LabError: a process did not become ready within ``timeout``.
        """
        recorded = recorded_topology(self.root)
        if recorded is not None and recorded != self.topology:
            raise LabError(
                f"{self.root}: a lab built from another topology ({recorded.name!r}, ports from "
                f"{recorded.ports.base}) is there; run 'drctl lab down' first or pass another --lab-dir"
            )
        self._prepare()
        if self.network is not None:
            self._build_network(self.network)
        self._start_zookeeper(timeout)
        for cluster in self.topology.clusters:
            self._up_cluster(cluster, timeout)
        self._start_backups()
        if self.with_agents:
            self._start_agents()
            self._wait_agents(timeout)
        if self.with_controllers:
            self._start_controllers()
            self._wait_controllers(timeout)

    @property
    def isolated(self) -> bool:
        return self.network is not None

    def netns(self, datacenter: str, kind: str = "dc") -> str | None:
        """The namespace ``datacenter``'s processes (``kind`` ``ctl``: its controller) run in; None on loopback."""
        return None if self.network is None else self.network.namespace_of(datacenter, kind).name

    def _build_network(self, network: namespaces.LabNetwork) -> None:
        namespaces.create(network, self.root)
        for dc in self.topology.zookeeper_datacenters:
            for key, value in _ZK_NAMESPACE_SYSCTLS.items():
                namespaces.set_sysctl(network.namespace_of(dc).name, key, value)

    def _start_backups(self) -> None:
        """When a cluster has a ``backup:`` section on the lab's own store: start the store, create the
        bucket and the stanza, so WAL archiving works from ``lab up`` on (orchestrator.backup)."""
        if all(cluster.backup is None for cluster in self.topology.clusters):
            return   # (and boto3 is not imported)
        from orchestrator.backup.service import BackupService, lab_store

        store = lab_store(self.topology, self.root)
        if store is None:
            return
        from orchestrator.backup.s3 import write_passphrase

        for cluster in self.topology.clusters:   # the lab's own store: the lab makes the passphrase too
            if cluster.backup is not None and cluster.backup.encryption_key_file:
                write_passphrase(self.root / cluster.backup.encryption_key_file)
        store.start()
        for cluster in self.topology.clusters:
            if cluster.backup is not None:
                BackupService(self.topology, cluster.name, self.root, self.credentials).setup()

    def _wait_controllers(self, timeout: float) -> None:
        """Until a leader has recorded every cluster's state: then failover is armed."""
        from orchestrator.coordination import Coordinator

        coord = Coordinator(self.topology.zookeeper_hosts(), self.topology.name, identity="lab")
        coord.start()
        waiting = [c.name for c in self.topology.clusters]

        def all_recorded() -> bool:
            try:
                while waiting and coord.read_state(waiting[0])[0] is not None:
                    waiting.pop(0)
            except CoordinationUnavailable:
                return False   # a connection lost on a loaded machine: kazoo reconnects; ask again
            return not waiting

        try:
            if not poll(all_recorded, timeout=timeout, interval=0.05):
                raise LabError(f"{waiting[0]}: no controller recorded state in {timeout}s; "
                               f"see {self.root}/controller/*.log")
        finally:
            coord.stop()

    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # The postgres user must traverse the lab directory (mkdtemp makes it 0700).
        os.chmod(self.root, 0o755)
        secret_file = self.root / "secrets.json"
        if not secret_file.exists():
            creds = pg.Credentials(
                superuser="postgres", superuser_password=secrets.token_urlsafe(18),
                replication_user="replicator", replication_password=secrets.token_urlsafe(18),
                app_user="app", app_password=secrets.token_urlsafe(18),
            )
            secret_file.write_text(json.dumps(creds.__dict__, indent=2))
            os.chmod(secret_file, 0o600)
        creds = self.credentials
        pgserver.write_owned(
            self.root / "pgpass",
            f"*:*:*:{creds.replication_user}:{creds.replication_password}\n"
            f"*:*:*:{creds.superuser}:{creds.superuser_password}\n",
            self.topology.postgres.os_user,
        )
        if self.topology.api is not None:   # the controllers' REST API: its self-signed certificate, once
            from orchestrator.api.server import ensure_certificate

            ensure_certificate(self.topology, self.root)
        (self.root / STATE_FILE).write_text(json.dumps(
            {"topology": self.topology.model_dump(mode="json"), "created_at": time.time(),
             "isolated": self.network is not None}, indent=2))

    def _start_zookeeper(self, timeout: float) -> None:
        servers = self.zookeeper()
        for server in servers:
            server.start()
        dead: list[str] = []

        def ready_or_dead() -> bool:
            dead[:] = [s.datacenter for s in servers if s.pid() is None]
            return bool(dead) or ensemble.ensemble_ready(servers)

        if not poll(ready_or_dead, timeout=timeout, interval=0.1) or dead:
            why = f"server(s) in {', '.join(dead)} exited" if dead else f"no leader after {timeout}s"
            raise LabError(f"ZooKeeper ensemble not ready: {why}; see {self.root}/zk/*/zk.log")

    def _current_primary(self, cluster: Cluster) -> Member | None:
        creds = self.credentials
        for member in cluster.members:
            layout = self.layout(cluster, member)
            if layout.postmaster_pid() is None:
                continue
            try:
                with pg.connect(layout.endpoint, creds, timeout=2) as conn:
                    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            except DatabaseUnavailable:
                continue
            if row is not None and not row[0]:
                return member
        return None

    def _up_cluster(self, cluster: Cluster, timeout: float) -> None:
        creds = self.credentials
        # Start every member that has data but is stopped: the primary may be any of them by now.
        for member in cluster.members:
            layout = self.layout(cluster, member)
            if (layout.data / "PG_VERSION").exists() and layout.postmaster_pid() is None:
                pgserver.start(layout)
        primary = self._current_primary(cluster)
        if primary is None:
            primary = cluster.initial_primary
            layout = self.layout(cluster, primary)
            if (layout.data / "PG_VERSION").exists():
                raise LabError(
                    f"{cluster.name}: no member runs as primary although data exists; "
                    "inspect with 'drctl lab status' or rebuild with 'drctl lab down'"
                )
            pgserver.remove(layout)
            pgserver.initdb(layout, creds)
            pgserver.start(layout)
            self._bootstrap(cluster, layout, creds)
        source = self.layout(cluster, primary).endpoint
        peers = [m.slot_name for m in cluster.members]
        pg.ensure_slots(source, creds, [s for s in peers if s != primary.slot_name])
        for member in cluster.members:
            layout = self.layout(cluster, member)
            if not (layout.data / "PG_VERSION").exists():
                pgserver.remove(layout)
                pgserver.basebackup(layout, source, creds)
                pgserver.start(layout)
            pg.ensure_slots(layout.endpoint, creds, [s for s in peers if s != member.slot_name])
        self._wait_streaming(cluster, primary, timeout)

    def _bootstrap(self, cluster: Cluster, layout: InstanceLayout, creds: pg.Credentials) -> None:
        """Roles and the application database on a new primary (before any standby exists)."""
        with pg.connect(layout.endpoint, creds, timeout=5) as conn:
            # No standby is attached yet: set-up statements must not wait for a quorum.
            conn.execute("SET synchronous_commit = local")
            conn.execute(psycopg.sql.SQL("CREATE ROLE {} WITH REPLICATION LOGIN PASSWORD {}").format(
                psycopg.sql.Identifier(creds.replication_user), psycopg.sql.Literal(creds.replication_password)))
            conn.execute(psycopg.sql.SQL("CREATE ROLE {} WITH LOGIN PASSWORD {}").format(
                psycopg.sql.Identifier(creds.app_user), psycopg.sql.Literal(creds.app_password)))
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {} OWNER {}").format(
                psycopg.sql.Identifier(cluster.database), psycopg.sql.Identifier(creds.app_user)))

    def _wait_streaming(self, cluster: Cluster, primary: Member, timeout: float) -> None:
        want = {m.name for m in cluster.members} - {primary.name}
        endpoint = self.layout(cluster, primary).endpoint
        missing = set(want)
        prober = pg.Prober(self.credentials, timeout=2)

        def all_streaming() -> bool:
            missing.clear()
            missing.update(want - set(prober.probe(endpoint).replicas))
            return not missing

        try:
            if not poll(all_streaming, timeout=timeout, interval=0.05):
                raise LabError(f"{cluster.name}: {', '.join(sorted(missing))} not streaming from {primary.name} "
                               f"after {timeout}s; see {self.root}/pg/{cluster.name}/*/postgres.log")
        finally:
            prober.close()

    def _start_controllers(self) -> None:
        for dc in self.topology.controller_datacenters:
            pidfile = self.controller_pidfile(dc)
            pid = read_pid(pidfile)
            if pid is not None and is_running(pid):
                continue
            zk_hosts = self.zk_hosts_override.get(f"controller/{dc}")
            pid = spawn(
                [sys.executable, "-m", "orchestrator.cli", "controller", "run", "--dc", dc,
                 "--lab-dir", str(self.root), *(["--zk-hosts", zk_hosts] if zk_hosts else [])],
                log=self.root / "controller" / f"{dc}.log",
                cwd=self.root,
                netns=self.netns(dc, "ctl"),
            )
            pidfile.write_text(f"{pid}\n")

    # ---- controllers (also used by drills) -----------------------------------------------------

    def restart_services(self, timeout: float = 60.0) -> None:
        """Restart stopped ZooKeeper servers and controllers (a drill's rollback).

        PostgreSQL members are left to the controllers: a stopped old primary must come back
        through a rewind as a standby, never be started as a second primary.
        """
        self._start_zookeeper(timeout)
        if self.with_agents:
            self._start_agents()
        if self.with_controllers:
            self._start_controllers()

    def controller_pid(self, dc: str) -> int | None:
        pid = read_pid(self.controller_pidfile(dc))
        return pid if pid is not None and is_running(pid) else None

    def stop_controllers(self) -> None:
        for dc in self.topology.controller_datacenters:
            pid = read_pid(self.controller_pidfile(dc))
            if pid is not None:
                stop(pid)
            self.controller_pidfile(dc).unlink(missing_ok=True)

    # ---- node agents (one per member; see orchestrator.agent) -----------------------------------

    def _start_agents(self) -> None:
        from orchestrator.agent.main import agent_command, agent_log, agent_pidfile

        for cluster in self.topology.clusters:
            for member in cluster.members:
                if self.agent_pid(cluster.name, member.name) is not None:
                    continue
                zk_hosts = self.zk_hosts_override.get(f"agent/{cluster.name}/{member.name}")
                pid = spawn(agent_command(self.root, member.name, cluster=cluster.name, zk_hosts=zk_hosts),
                            log=agent_log(self.root, cluster.name, member.name), cwd=self.root,
                            netns=self.netns(member.datacenter))
                agent_pidfile(self.root, cluster.name, member.name).write_text(f"{pid}\n")

    def _wait_agents(self, timeout: float) -> None:
        """Until every agent has published its facts (its liveness node exists)."""
        from orchestrator.coordination import AgentSession

        zk = self.topology.zookeeper
        session = AgentSession(self.topology.zookeeper_hosts(), self.topology.name,
                               session_timeout=zk.session_timeout_ms / 1000)
        session.start()
        try:
            for cluster in self.topology.clusters:
                want = {m.name for m in cluster.members}
                if not poll(lambda c=cluster.name, w=want: w <= set(session.agent_facts(c)),  # type: ignore[misc]
                            timeout=timeout, interval=0.05):
                    raise LabError(f"{cluster.name}: agents of {', '.join(sorted(want))} did not all report "
                                   f"in {timeout}s; see {self.root}/agent/*.log")
        finally:
            session.stop()

    def agent_pid(self, cluster: str, member: str) -> int | None:
        from orchestrator.agent.main import agent_pidfile

        pid = read_pid(agent_pidfile(self.root, cluster, member))
        return pid if pid is not None and is_running(pid) else None

    def stop_agents(self) -> None:
        """Stop every agent by PID (an agent stopping beside a primary fences it: a fast shutdown)."""
        from orchestrator.agent.main import agent_pidfile

        for cluster in self.topology.clusters:
            for member in cluster.members:
                pidfile = agent_pidfile(self.root, cluster.name, member.name)
                pid = read_pid(pidfile)
                if pid is not None:
                    stop(pid)
                pidfile.unlink(missing_ok=True)

    # ---- down ------------------------------------------------------------------------------

    def down(self, *, keep_data: bool = False) -> None:
        """Stop every lab process by its PID, then remove the lab directory."""
        if not self.root.exists():
            return
        from orchestrator import haproxy

        haproxy.stop(self.root)
        self.stop_controllers()
        self.stop_agents()
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(self._stop_member, self.layouts()))
            # A server a cancelled rejoin was starting may have come up meanwhile: once more.
            time.sleep(0.5)
            list(pool.map(self._stop_member, self.layouts()))
            list(pool.map(lambda server: server.stop(), self.zookeeper()))
        # Anything else still working in the lab (a cancelled playbook's pg_ctl or server, a
        # drill child) goes too, each by its PID, before its directory disappears.
        stop_all(pids_mentioning(str(self.root) + "/"), timeout=5)
        # The namespaces last: whatever still runs inside them is stopped by PID first.
        namespaces.destroy(self.root)
        if not keep_data:
            shutil.rmtree(self.root)

    @staticmethod
    def _stop_member(layout: InstanceLayout) -> None:
        pid = read_pid(layout.data / "postmaster.pid")
        if pid is None or not is_running(pid):
            return
        try:
            pgserver.stop(layout, mode="fast")
        except LabError:
            stop(pid, sig=signal.SIGINT)  # PostgreSQL's fast shutdown, by PID

    # ---- status ----------------------------------------------------------------------------

    def status(self) -> LabStatus:
        rows: list[MemberRow] = []
        creds = self.credentials
        prober = pg.Prober(creds, timeout=1)
        try:
            for cluster in self.topology.clusters:
                statuses = {m.name: prober.probe(self.layout(cluster, m).endpoint) for m in cluster.members}
                primaries = [s for s in statuses.values() if s.role is Role.PRIMARY]
                lags = self._lags(cluster, primaries[0].name) if len(primaries) == 1 else {}
                for member in cluster.members:
                    layout, st = self.layout(cluster, member), statuses[member.name]
                    if st.role is Role.PRIMARY:
                        replication = "primary" if len(primaries) == 1 else "SPLIT-BRAIN"
                    elif st.role is Role.STANDBY:
                        sync = next((p.replicas.get(member.name) for p in primaries if member.name in p.replicas),
                                    None)
                        replication = sync or ("streaming" if st.streaming else "not streaming")
                    else:
                        replication = "down"
                    rows.append(MemberRow(member.datacenter, cluster.name, member.name, st.role,
                                          layout.endpoint.port, layout.postmaster_pid(), replication,
                                          lags.get(member.name)))
        finally:
            prober.close()
        services: list[ServiceRow] = []
        for server in self.zookeeper():
            services.append(ServiceRow(server.datacenter, f"zookeeper-{server.myid}", server.client_port,
                                       server.pid(), server.mode() or "down"))
        if self.with_controllers:
            for dc in self.topology.controller_datacenters:
                pid = self.controller_pid(dc)
                services.append(ServiceRow(dc, "controller", None, pid, "running" if pid else "down"))
        if self.with_agents:
            for cluster in self.topology.clusters:
                for member in cluster.members:
                    pid = self.agent_pid(cluster.name, member.name)
                    services.append(ServiceRow(member.datacenter, f"agent-{member.name}", None, pid,
                                               "running" if pid else "down"))
        return LabStatus(rows, services)

    def _lags(self, cluster: Cluster, primary: str) -> dict[str, int]:
        endpoint = self.layout(cluster, cluster.member(primary)).endpoint
        try:
            with pg.connect(endpoint, self.credentials, timeout=1) as conn:
                rows = conn.execute(
                    "SELECT application_name, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint "
                    "FROM pg_stat_replication"
                ).fetchall()
        except (DatabaseUnavailable, psycopg.Error):
            return {}
        lags = {str(name): int(lag) for name, lag in rows if lag is not None}  # type: ignore[call-overload]
        lags[primary] = 0
        return lags

    def app_connection_string(self, cluster: Cluster) -> str:
        creds = self.credentials
        return self.topology.connection_string(cluster, user=creds.app_user, password=creds.app_password)
