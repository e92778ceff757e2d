"""Patroni as a benchmarked system: three Patroni daemons over our ZooKeeper ensemble.

The bench runner (:mod:`orchestrator.bench.runner`) builds one :class:`PatroniSystem` per
variant and drives it through the :class:`~orchestrator.bench.system.System` contract.
Patroni comes from PyPI (``patroni[zookeeper]``, using the project's psycopg 3) and runs
from the project venv as the ``postgres`` user; each daemon is started with
:func:`orchestrator.processes.spawn` and stopped by its PID, its PostgreSQL by the PID in
``postmaster.pid``. The DCS is a ZooKeeper ensemble the caller provides (the bench's
shared one, or :func:`dcs_topology` for a dedicated one); each bootstrap gets its own
ZooKeeper namespace, so systems and re-runs never see each other's keys.

Patroni's ZooKeeper session timeout is its ``ttl``, and the server silently clamps it to
its ``maxSessionTimeout``; the session actually granted is read back with the ``cons``
four-letter word and written into :meth:`PatroniSystem.settings`, because that session's
expiry is what a failover after a ``kill -9`` waits for.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import secrets
import shutil
import signal
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psycopg
import yaml
from psycopg import sql

from orchestrator.bench.system import Fault, RoundFacts, SyncSample
from orchestrator.ensemble import four_letter
from orchestrator.errors import InvalidInput, LabError
from orchestrator.pgserver import chown_tree, write_owned
from orchestrator.processes import is_running, port_in_use, read_pid, spawn, stop, wait_gone
from orchestrator.topology import Topology, parse_topology

Variant = Literal["default", "aggressive"]

# Patroni's documented defaults, and the smallest values its validator accepts
# (patroni/validator.py: ttl >= 20, loop_wait >= 1, retry_timeout >= 3).
TIMINGS: dict[str, dict[str, int]] = {
    "default": {"ttl": 30, "loop_wait": 10, "retry_timeout": 10},
    "aggressive": {"ttl": 20, "loop_wait": 1, "retry_timeout": 3},
}
# PostgreSQL-level settings dr-orchestrator's lab members run with (pgserver.py, topology
# defaults), given to Patroni's members too so that only the HA tool differs. The one that
# matters: PG 15 sleeps out a whole wal_retrieve_retry_interval (default 5 s) when a promote
# request lands during the walreceiver's retry sleep, which added ~5 s to Patroni's outage.
SAME_AS_OUR_LAB: dict[str, Any] = {
    "wal_retrieve_retry_interval": "50ms",
    "wal_init_zero": "off",
    "wal_keep_size": "128MB",
    "wal_receiver_timeout": "5000ms",
    "wal_sender_timeout": "5000ms",
    "wal_receiver_status_interval": "1s",
    "hot_standby_feedback": "on",
}
MEMBERS = ("pg1", "pg2", "pg3")
APP_USER = "app"
APP_DATABASE = "bench"
POLL_INTERVAL = 0.05
REJOIN_TIMEOUT = 30.0
STATE_FILE = "state.json"
# The member states of Patroni's GET /cluster that mean "a replica receiving WAL".
_STREAMING = "streaming"
_SYNC_ROLES = ("quorum_standby", "sync_standby")
_CONS_LINE = re.compile(r"/(?P<addr>[0-9.]+):(?P<port>\d+)\[\d+\]\((?P<fields>[^)]*)\)")


@dataclass(frozen=True)
class _Node:
    """One Patroni member: ``<root>/<name>/{data,patroni.yml,patroni.log,patroni.pid}``."""

    name: str
    address: str
    pg_port: int
    api_port: int
    home: Path

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def config_file(self) -> Path:
        return self.home / "patroni.yml"

    @property
    def log(self) -> Path:
        return self.home / "patroni.log"

    @property
    def pidfile(self) -> Path:
        return self.home / "patroni.pid"

    @property
    def server(self) -> str:
        return f"{self.address}:{self.pg_port}"

    def daemon_pid(self) -> int | None:
        pid = read_pid(self.pidfile)
        return pid if pid is not None and is_running(pid) else None

    def postmaster_pid(self) -> int | None:
        pid = read_pid(self.data / "postmaster.pid")
        return pid if pid is not None and is_running(pid) else None


def dcs_topology(port_base: int, *, max_session_ms: int = 10_000, tick_time_ms: int = 500) -> Topology:
    """A 3-server ZooKeeper ensemble on 127.0.0.1 (9 ports from ``port_base``) for Patroni.

    Start it with :func:`orchestrator.ensemble.servers`. The servers' ``maxSessionTimeout``
    is ``max(max_session_ms, 20 * tick_time_ms)``: pass 30000 to grant Patroni's default
    ``ttl`` unclamped. The one-member cluster only satisfies the topology schema.
    """
    return parse_topology({
        "name": "patroni-dcs",
        "regions": [{"name": "bench", "datacenters": [{"name": "zk1"}, {"name": "zk2"}, {"name": "zk3"}]}],
        "ports": {"base": port_base, "span": 10},
        "zookeeper": {"tick_time_ms": tick_time_ms, "session_timeout_ms": max_session_ms},
        "clusters": [{
            "name": "unused",
            "members": [{"name": "unused", "datacenter": "zk1", "role": "primary"}],
            "replication": {"quorum": 0},
            "targets": {"rpo_seconds": 1},
        }],
    }, source="patroni dcs")


class PatroniSystem:
    """Patroni ``variant`` with 3 PostgreSQL 15 members on ``port_base`` .. ``port_base + 5``.

    Ports: PostgreSQL ``port_base + i``, REST API ``port_base + 3 + i`` (i = 0, 1, 2).
    ``zookeeper_hosts`` is a ``host:port,host:port,...`` string of a running ensemble.
    ``synchronous_mode_strict`` is on by default: Patroni's documentation asks for it when
    every acknowledged write must exist on two nodes (the bench's zero-loss setting).
    """

    def __init__(
        self,
        variant: Variant,
        port_base: int,
        *,
        zookeeper_hosts: str,
        address: str = "127.0.0.1",
        bin_dir: str = "/usr/lib/postgresql/15/bin",
        os_user: str = "postgres",
        strict: bool = True,
        ready_timeout: float = 120.0,
    ) -> None:
        if variant not in TIMINGS:
            raise InvalidInput(f"PatroniSystem: variant {variant!r} is unknown; use 'default' or 'aggressive'")
        self.variant = variant
        self.name = f"patroni-{variant}"
        self.port_base = port_base
        self.zookeeper_hosts = zookeeper_hosts
        self.address = address
        self.bin_dir = bin_dir
        self.os_user = os_user
        self.strict = strict
        self.ready_timeout = ready_timeout
        self.patroni_bin = str(Path(sys.executable).parent / "patroni")
        self._root: Path | None = None
        self._state: dict[str, Any] = {}
        self._granted_ms: dict[str, int | None] = {}

    # ---- layout and configuration ------------------------------------------------------------

    def _nodes(self) -> list[_Node]:
        root = self._root if self._root is not None else Path("<workdir>") / self.name
        return [
            _Node(name, self.address, self.port_base + i, self.port_base + 3 + i, root / name)
            for i, name in enumerate(MEMBERS)
        ]

    def _node(self, name: str) -> _Node:
        return next(n for n in self._nodes() if n.name == name)

    @property
    def ports(self) -> tuple[int, ...]:
        """Every TCP port the system listens on (PostgreSQL, then REST API)."""
        return tuple(range(self.port_base, self.port_base + 2 * len(MEMBERS)))

    def _zk_servers(self) -> list[tuple[str, int]]:
        servers = []
        for entry in self.zookeeper_hosts.split(","):
            host, _, port = entry.strip().rpartition(":")
            servers.append((host, int(port)))
        return servers

    def member_config(self, member: str, *, redact: bool = False) -> dict[str, Any]:
        """The complete ``patroni.yml`` of ``member`` (passwords shown as ``***`` with ``redact``)."""
        node = self._node(member)
        passwords = self._state.get("passwords", {})

        def secret(key: str) -> str:
            return "***" if redact or key not in passwords else str(passwords[key])

        hosts = [f"{host}:{port}" for host, port in self._zk_servers()]
        return {
            "scope": self.name,
            "namespace": self._state.get("namespace", "/dr-bench-<generated at start>/"),
            "name": node.name,
            "log": {"level": "INFO"},
            "restapi": {"listen": f"{node.address}:{node.api_port}",
                        "connect_address": f"{node.address}:{node.api_port}"},
            "zookeeper": {"hosts": hosts},
            "bootstrap": {
                "dcs": {
                    **TIMINGS[self.variant],
                    "maximum_lag_on_failover": 1048576,
                    "synchronous_mode": "quorum",
                    "synchronous_mode_strict": self.strict,
                    "synchronous_node_count": 1,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "use_slots": True,
                        "parameters": {
                            "wal_level": "replica",
                            "wal_log_hints": "on",
                            "hot_standby": "on",
                            "max_connections": 200,
                            "max_wal_senders": 10,
                            "max_replication_slots": 10,
                            "password_encryption": "scram-sha-256",
                            **SAME_AS_OUR_LAB,
                        },
                    },
                },
                # 1 MB WAL segments, like our lab's initdb --wal-segsize.
                "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, {"wal-segsize": "1"}],
            },
            "postgresql": {
                "listen": f"{node.address}:{node.pg_port}",
                "connect_address": f"{node.address}:{node.pg_port}",
                "data_dir": str(node.data),
                "bin_dir": self.bin_dir,
                "pgpass": str(node.home / "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres", "password": secret("superuser")},
                    "replication": {"username": "replicator", "password": secret("replication")},
                },
                "parameters": {
                    # Sockets beside the member, not in the shared /var/run/postgresql.
                    "unix_socket_directories": str(node.home),
                    # The same memory as dr-orchestrator's lab members get.
                    "shared_buffers": "32MB",
                },
                "pg_hba": [
                    "local all all scram-sha-256",
                    f"host all all {node.address}/32 scram-sha-256",
                    f"host replication replicator {node.address}/32 scram-sha-256",
                ],
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
        }

    def settings(self) -> dict[str, Any]:
        timings = TIMINGS[self.variant]
        granted = dict(self._granted_ms)
        return {
            "system": "patroni",
            "version": importlib.metadata.version("patroni"),
            "variant": self.variant,
            "timings": timings,
            "postgresql_bin_dir": self.bin_dir,
            "client_routing": "libpq multi-host, target_session_attrs=read-write",
            "zookeeper": {
                "hosts": self.zookeeper_hosts,
                "requested_session_ms": timings["ttl"] * 1000,
                # Read back with `cons` (to=...) after start: the server clamps the request
                # into [2 x tickTime, maxSessionTimeout]; this is what a failover waits for.
                "granted_session_ms": granted or "not measured yet (start() measures it)",
                **({"clamped": "the ensemble's maxSessionTimeout granted less than Patroni's ttl: a failover "
                               "after kill -9 waits for the granted session, not the ttl"}
                   if any(ms is not None and ms < timings["ttl"] * 1000 for ms in granted.values()) else {}),
            },
            "postgresql_same_as_dr_orchestrator_lab": {**SAME_AS_OUR_LAB, "shared_buffers": "32MB",
                                                       "max_connections": 200, "wal_segsize_mb": 1},
            "synchronous_mode_strict": self.strict,
            "why_strict": "Patroni's replication-modes documentation asks for it when every acknowledged "
                          "commit must be on two nodes: never fall back to asynchronous replication",
            "rejoin": "after the observation window the bench restarts the killed Patroni daemon (as an init "
                      "system would); Patroni then rejoins its PostgreSQL (crash recovery, pg_rewind) by itself",
            "members": {name: self.member_config(name, redact=True) for name in MEMBERS},
        }

    # ---- start -------------------------------------------------------------------------------

    def start(self, workdir: Path) -> None:
        """Bootstrap under ``workdir/<name>`` on the first call; later, launch any daemon that
        is not running and wait for one leader and two streaming replicas.

        :raises LabError: a daemon exited, or the cluster was not healthy in ``ready_timeout``.
        """
        root = (workdir / self.name).resolve()
        if self._root is not None and self._root != root and self._running_pids():
            raise LabError(f"{self.name}: already running under {self._root}; stop() it before using {root}")
        self._root = root
        self._prepare(workdir)
        for node in self._nodes():
            if node.daemon_pid() is None:
                self._launch(node)
        self._wait_healthy(self.ready_timeout)
        self._ensure_app_database()
        self._granted_ms = self._granted_sessions()

    def _prepare(self, workdir: Path) -> None:
        assert self._root is not None
        self._root.mkdir(parents=True, exist_ok=True)
        # mkdtemp dirs are 0700: the postgres user must traverse the workdir and every ancestor.
        os.chmod(self._root, 0o711)
        for path in self._root.parents:
            mode = path.stat().st_mode
            if path == workdir.resolve():
                os.chmod(path, mode | 0o711)
            elif not mode & 0o001:
                raise LabError(f"{path}: the {self.os_user} user cannot traverse it; chmod o+x or use another workdir")
        state_file = self._root / STATE_FILE
        if state_file.exists():
            self._state = json.loads(state_file.read_text())
        else:
            self._state = {
                # A fresh namespace per bootstrap: a shared ensemble may hold an older cluster.
                "namespace": f"/dr-bench-{secrets.token_hex(4)}/",
                "passwords": {key: secrets.token_urlsafe(18) for key in ("superuser", "replication", "app")},
            }
            state_file.write_text(json.dumps(self._state, indent=2))
            os.chmod(state_file, 0o600)
        for node in self._nodes():
            node.home.mkdir(parents=True, exist_ok=True)
            chown_tree(node.home, self.os_user)
            os.chmod(node.home, 0o700)
            write_owned(node.config_file, yaml.safe_dump(self.member_config(node.name), sort_keys=False), self.os_user)

    def _launch(self, node: _Node) -> int:
        """Start ``node``'s Patroni daemon once its previous postmaster is really gone."""
        stale = read_pid(node.data / "postmaster.pid")
        if stale is not None and is_running(stale) and not wait_gone(stale, timeout=10):
            raise LabError(f"{self.name}/{node.name}: an old postmaster {stale} still runs; stop() first")
        env = {"PATH": "/usr/bin:/bin", "HOME": str(node.home), "LC_ALL": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
        pid = spawn([self.patroni_bin, str(node.config_file)], log=node.log, cwd=node.home, user=self.os_user,
                    env=env)
        node.pidfile.write_text(f"{pid}\n")
        return pid

    def cluster_view(self, timeout: float = 1.0) -> dict[str, Any] | None:
        """Patroni's ``GET /cluster`` from the first member whose REST API answers."""
        for node in self._nodes():
            url = f"http://{node.address}:{node.api_port}/cluster"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as reply:
                    view: dict[str, Any] = json.loads(reply.read())
                    return view
            except (OSError, ValueError):
                continue
        return None

    @staticmethod
    def _healthy(view: dict[str, Any] | None) -> bool:
        """One running leader, two streaming replicas, at least one of them in the sync quorum."""
        if view is None:
            return False
        members = {m.get("name"): m for m in view.get("members", [])}
        if set(members) != set(MEMBERS):
            return False
        leaders = [m for m in members.values() if m.get("role") == "leader" and m.get("state") == "running"]
        replicas = [m for m in members.values() if m.get("role") != "leader" and m.get("state") == _STREAMING]
        return (len(leaders) == 1 and len(replicas) == 2
                and any(m.get("role") in _SYNC_ROLES for m in replicas))

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            view = self.cluster_view()
            if self._healthy(view):
                return
            dead = [n.name for n in self._nodes() if n.daemon_pid() is None]
            if dead or time.monotonic() > deadline:
                why = f"Patroni exited on {', '.join(dead)}" if dead else f"not healthy after {timeout:.0f}s"
                raise LabError(f"{self.name}: {why} (last view: {json.dumps(view)}); see {self._root}/pg*/patroni.log")
            time.sleep(0.2)

    def leader(self) -> str | None:
        view = self.cluster_view()
        if view is None:
            return None
        return next((m["name"] for m in view.get("members", []) if m.get("role") == "leader"), None)

    def _superuser_conninfo(self, node: _Node, timeout: int = 2) -> str:
        return psycopg.conninfo.make_conninfo(
            host=node.address, port=node.pg_port, user="postgres", password=self._state["passwords"]["superuser"],
            dbname="postgres", connect_timeout=timeout, application_name="bench-patroni",
        )

    def _ensure_app_database(self) -> None:
        leader = self.leader()
        if leader is None:
            raise LabError(f"{self.name}: no leader to create the {APP_DATABASE} database on")
        try:
            with psycopg.connect(self._superuser_conninfo(self._node(leader)), autocommit=True) as conn:
                if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_USER,)).fetchone() is None:
                    conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(APP_USER), sql.Literal(self._state["passwords"]["app"])))
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (APP_DATABASE,)).fetchone() is None:
                    conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(APP_DATABASE), sql.Identifier(APP_USER)))
        except psycopg.Error as exc:
            raise LabError(f"{self.name}: cannot create {APP_USER}/{APP_DATABASE} on {leader}: {exc}") from exc

    def conninfo(self) -> str:
        if not self._state:
            raise LabError(f"{self.name}: not started; call start(workdir) first")
        nodes = self._nodes()
        hosts = ",".join(n.address for n in nodes)
        ports = ",".join(str(n.pg_port) for n in nodes)
        return (
            f"postgresql://{APP_USER}:{self._state['passwords']['app']}@/{APP_DATABASE}"
            f"?host={hosts}&port={ports}&target_session_attrs=read-write&connect_timeout=2"
        )

    # ---- ZooKeeper sessions ------------------------------------------------------------------

    def _granted_sessions(self) -> dict[str, int | None]:
        """Each daemon's negotiated ZooKeeper session timeout (ms), from the servers' ``cons``.

        A daemon's connection is found by its local port: the socket inodes in its
        ``/proc/PID/fd`` matched against the kernel's TCP table.
        """
        servers = self._zk_servers()
        timeouts: dict[int, int] = {}
        for host, port in servers:
            for match in _CONS_LINE.finditer(four_letter(host, port, "cons", timeout=1.0)):
                fields = dict(f.split("=", 1) for f in match["fields"].split(",") if "=" in f)
                if "to" in fields:
                    timeouts[int(match["port"])] = int(fields["to"])
        granted: dict[str, int | None] = {}
        for node in self._nodes():
            pid = node.daemon_pid()
            local = _local_ports(pid, {port for _, port in servers}) if pid is not None else set()
            granted[node.name] = next((timeouts[p] for p in local if p in timeouts), None)
        return granted

    def session_seconds(self) -> float:
        """The longest granted session (the requested ``ttl`` when not measured)."""
        known = [ms for ms in self._granted_ms.values() if ms is not None]
        return max(known) / 1000 if known else float(TIMINGS[self.variant]["ttl"])

    # ---- the fault and the round -------------------------------------------------------------

    def kill_primary(self) -> Fault:
        leader = self.leader()
        if leader is None:
            raise LabError(f"{self.name}: no leader to kill; start() the system first")
        node = self._node(leader)
        pids = tuple(pid for pid in (node.daemon_pid(), node.postmaster_pid()) if pid is not None)
        at = time.time()
        # The daemon first, so it neither restarts PostgreSQL nor releases its leader key.
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return Fault(at=at, member=leader, pids=pids)

    def observe(self, fault: Fault, seconds: float) -> RoundFacts:
        """Poll every member's role and each primary's ``synchronous_standby_names`` until
        ``fault.at + seconds``; then restart the killed node's Patroni daemon (as its init
        system would) and give it :data:`REJOIN_TIMEOUT` seconds to stream again.
        """
        samples: list[SyncSample] = []
        new_primary: str | None = None
        first_seen: float | None = None
        poller = _Poller({n.name: self._superuser_conninfo(n, timeout=2) for n in self._nodes()})
        try:
            while time.time() < fault.at + seconds:
                started = time.time()
                for name, (in_recovery, names) in poller.poll().items():
                    if in_recovery:
                        continue
                    samples.append(SyncSample(at=started, server=self._node(name).server,
                                              synchronous_standby_names=names))
                    if name != fault.member:
                        new_primary = name
                        first_seen = first_seen if first_seen is not None else started
                time.sleep(max(0.0, POLL_INTERVAL - (time.time() - started)))
        finally:
            poller.close()
        notes: dict[str, Any] = {
            "new_primary_seen_after_s": None if first_seen is None else round(first_seen - fault.at, 3),
            "granted_session_ms": dict(self._granted_ms),
            "rejoin": (
                "Patroni cannot restart itself after kill -9: after the window the bench restarts the "
                "killed daemon (as systemd would) and old_primary_rejoined says whether it then came "
                f"back as a streaming replica within {REJOIN_TIMEOUT:.0f} s with no other action"
            ),
        }
        rejoined = self._restart_killed(fault, notes)
        return RoundFacts(new_primary=new_primary, old_primary_rejoined=rejoined,
                          sync_samples=tuple(samples), notes=notes)

    def _restart_killed(self, fault: Fault, notes: dict[str, Any]) -> bool:
        node = self._node(fault.member)
        for pid in fault.pids:
            wait_gone(pid, timeout=5)
        # Never restart before the dead leader's session expired and another member leads:
        # the daemon would take its own leader key back and restart PostgreSQL in place.
        deadline = fault.at + self.session_seconds() + TIMINGS[self.variant]["loop_wait"] + 10
        while (leader := self.leader()) in (None, fault.member) and time.time() < deadline:
            time.sleep(0.2)
        if leader in (None, fault.member):
            notes["rejoin_skipped"] = f"no other leader by +{deadline - fault.at:.0f}s; killed daemon not restarted"
            return False
        notes["leader_when_restarted"] = leader
        restarted = time.time()
        self._launch(node)
        notes["daemon_restarted_after_s"] = round(restarted - fault.at, 3)
        while time.time() < restarted + REJOIN_TIMEOUT:
            view = self.cluster_view()
            member = next((m for m in (view or {}).get("members", []) if m.get("name") == node.name), None)
            if member is not None and member.get("role") != "leader" and member.get("state") == _STREAMING:
                notes["rejoined_after_restart_s"] = round(time.time() - restarted, 3)
                return True
            time.sleep(0.2)
        return False

    # ---- stop --------------------------------------------------------------------------------

    def daemon_pids(self) -> list[int]:
        """The long-lived processes: each member's Patroni daemon and postmaster."""
        return self._running_pids()

    def _running_pids(self) -> list[int]:
        pids: list[int] = []
        if self._root is None:
            return pids
        for node in self._nodes():
            pids += [pid for pid in (node.daemon_pid(), node.postmaster_pid()) if pid is not None]
        return pids

    def pids(self) -> list[int]:
        """Every running process of this system: daemons, postmasters and their children."""
        roots = set(self._running_pids())
        return sorted(roots | set(_descendants(roots)))

    def stop(self) -> None:
        """Stop all three members in parallel, each by PID; a no-op before :meth:`start`."""
        if self._root is None:
            return
        with ThreadPoolExecutor(max_workers=len(MEMBERS)) as pool:
            list(pool.map(self._stop_node, self._nodes()))

    def _stop_node(self, node: _Node) -> None:
        """The daemon by its PID (Patroni stops its PostgreSQL first), then a postmaster that
        outlived it (a killed daemon's, or after a failed shutdown) by the PID in postmaster.pid.

        :raises LabError: a process survived SIGKILL.
        """
        try:
            pid = read_pid(node.pidfile)
            if pid is not None:
                stop(pid, sig=signal.SIGTERM, timeout=30)
            node.pidfile.unlink(missing_ok=True)
        finally:
            postmaster = node.postmaster_pid()
            if postmaster is not None:
                stop(postmaster, sig=signal.SIGINT, timeout=15)  # PostgreSQL's fast shutdown

    def remove(self) -> None:
        """Delete this system's directory (after :meth:`stop`)."""
        if self._root is not None and not self._running_pids():
            shutil.rmtree(self._root, ignore_errors=True)

    def ports_free(self) -> bool:
        return not any(port_in_use(self.address, port) for port in self.ports)


class _Poller:
    """One kept-open superuser connection per member; a broken one is reopened next poll."""

    _QUERY = "SELECT pg_is_in_recovery(), current_setting('synchronous_standby_names')"

    def __init__(self, conninfos: dict[str, str]) -> None:
        self._conninfos = conninfos
        self._conns: dict[str, psycopg.Connection[tuple[Any, ...]]] = {}

    def poll(self) -> dict[str, tuple[bool, str]]:
        """``{member: (in_recovery, synchronous_standby_names)}`` for every member that answered."""
        result: dict[str, tuple[bool, str]] = {}
        for name, conninfo in self._conninfos.items():
            try:
                conn = self._conns.get(name)
                if conn is None or conn.closed:
                    conn = psycopg.connect(conninfo, autocommit=True, options="-c statement_timeout=500")
                    self._conns[name] = conn
                row = conn.execute(self._QUERY).fetchone()
            except psycopg.Error:
                self._drop(name)
                continue
            if row is not None:
                result[name] = (bool(row[0]), str(row[1]))
        return result

    def _drop(self, name: str) -> None:
        conn = self._conns.pop(name, None)
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def close(self) -> None:
        for name in list(self._conns):
            self._drop(name)


def _local_ports(pid: int, remote_ports: set[int]) -> set[int]:
    """Local ports of ``pid``'s TCP connections to any of ``remote_ports``."""
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[len("socket:["):-1])
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) in remote_ports:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def _descendants(roots: set[int]) -> list[int]:
    """Running descendants of ``roots`` (PostgreSQL's backends and auxiliary processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
