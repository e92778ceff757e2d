"""Patroni as a benchmarked system: three Patroni daemons over a ZooKeeper ensemble of their own.

The bench runner (:mod:`orchestrator.bench.runner`) builds one :class:`PatroniSystem` per
variant and drives it through the :class:`~orchestrator.bench.system.System` contract, one
round at a time: :meth:`PatroniSystem.start` bootstraps from nothing (the ensemble, then
the members), :meth:`PatroniSystem.stop` stops every process by PID. Patroni comes from
PyPI (``patroni[zookeeper]``, using the project's psycopg 3) and runs from the project
venv as the ``postgres`` user; each daemon is started with
:func:`orchestrator.processes.spawn`, its PostgreSQL found by ``postmaster.pid``. The
configuration is :mod:`orchestrator.bench.patroni_config`.

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
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql

from orchestrator import ensemble, processes
from orchestrator.bench import procs
from orchestrator.bench.patroni_config import (
    APP_DATABASE,
    APP_USER,
    BOOTSTRAP_NOTICE,
    DCS_OFFSET,
    MEMBERS,
    SAME_AS_OUR_LAB,
    SHARED_BUFFERS,
    TIMINGS,
    Node,
    Variant,
    dcs_topology,
    member_config,
    nodes,
    none_values,
)
from orchestrator.bench.polling import KeptConnections, connector
from orchestrator.bench.system import Fault, RoundFacts, SyncSample
from orchestrator.errors import InvalidInput, LabError
from orchestrator.pgserver import chown_tree, write_owned
from orchestrator.processes import spawn, stop
from orchestrator.waiting import poll

__all__ = ["TIMINGS", "PatroniSystem", "dcs_topology"]

POLL_INTERVAL = 0.05
REJOIN_TIMEOUT = 30.0
DCS_READY_TIMEOUT = 60.0
STATE_FILE = "state.json"
# The member states of Patroni's GET /cluster that mean "a replica receiving WAL".
_STREAMING = "streaming"
_SYNC_ROLES = ("quorum_standby", "sync_standby")
_CONS_LINE = re.compile(r"/(?P<addr>[0-9.]+):(?P<port>\d+)\[\d+\]\((?P<fields>[^)]*)\)")
_ROLE_QUERY = "SELECT pg_is_in_recovery(), current_setting('synchronous_standby_names')"


class PatroniSystem:
    """Patroni ``variant``: 3 PostgreSQL 15 members and their own 3-server ZooKeeper ensemble.

    Ports: PostgreSQL ``port_base + i``, REST API ``port_base + 3 + i`` (i = 0, 1, 2), the
    ensemble's 9 ports from ``port_base + 10``. Its ``maxSessionTimeout`` is
    ``dcs_max_session_ms`` (default: Patroni's default ``ttl``, so no variant is clamped).
    ``synchronous_mode_strict`` is on by default: Patroni's documentation asks for it when
    every acknowledged write must exist on two nodes (the bench's zero-loss setting).
    """

    def __init__(
        self,
        variant: Variant,
        port_base: int,
        *,
        dcs_max_session_ms: int = 30_000,
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
        self.dcs = dcs_topology(port_base + DCS_OFFSET, max_session_ms=dcs_max_session_ms)
        self.zookeeper_hosts = self.dcs.zookeeper_hosts()
        self.address = address
        self.bin_dir = bin_dir
        self.os_user = os_user
        self.strict = strict
        self.ready_timeout = ready_timeout
        self.patroni_bin = str(Path(sys.executable).parent / "patroni")
        self._root: Path | None = None
        self._state: dict[str, Any] = {}
        self._granted_ms: dict[str, int | None] = {}
        self._zk: list[ensemble.ZooKeeperServer] = []

    # ---- layout and configuration ------------------------------------------------------------

    def _nodes(self) -> list[Node]:
        root = self._root if self._root is not None else Path("<workdir>") / self.name
        return nodes(root, self.address, self.port_base)

    def _node(self, name: str) -> Node:
        return next(n for n in self._nodes() if n.name == name)

    def ports(self) -> tuple[int, ...]:
        """Every TCP port the system listens on: PostgreSQL, REST API, then its ensemble's."""
        own = range(self.port_base, self.port_base + 2 * len(MEMBERS))
        zk = sorted(port for key, port in self.dcs.port_plan().items() if key.startswith("zk:"))
        return (*own, *zk)

    def _zk_hosts(self) -> list[tuple[str, int]]:
        return [(host, int(port)) for host, _, port in (e.rpartition(":") for e in self.zookeeper_hosts.split(","))]

    def member_config(self, member: str, *, redact: bool = False) -> dict[str, Any]:
        """The complete ``patroni.yml`` of ``member`` (passwords shown as ``***`` with ``redact``)."""
        passwords = self._state.get("passwords")
        return member_config(
            scope=self.name, variant=self.variant, node=self._node(member),
            zookeeper_hosts=[f"{host}:{port}" for host, port in self._zk_hosts()],
            namespace=self._state.get("namespace", "/dr-bench-<generated at start>/"),
            passwords=None if redact or passwords is None else passwords, strict=self.strict, bin_dir=self.bin_dir,
        )

    def settings(self) -> dict[str, Any]:
        timings = TIMINGS[self.variant]
        granted = dict(self._granted_ms)
        zk = self.dcs.zookeeper
        return {
            "system": "patroni",
            "version": importlib.metadata.version("patroni"),
            "variant": self.variant,
            "timings": timings,
            "postgresql_bin_dir": self.bin_dir,
            "client_routing": "libpq multi-host, target_session_attrs=read-write",
            "zookeeper": {
                "hosts": self.zookeeper_hosts,
                "ensemble": "3 servers of its own, started and stopped with the system in every round",
                "tick_time_ms": zk.tick_time_ms,
                "max_session_timeout_ms": max(zk.session_timeout_ms, 20 * zk.tick_time_ms),
                "requested_session_ms": timings["ttl"] * 1000,
                # Read back with `cons` (to=...) after start: the server clamps the request
                # into [2 x tickTime, maxSessionTimeout]; this is what a failover waits for.
                "granted_session_ms": granted or "not measured yet (start() measures it)",
                **({"clamped": "the ensemble's maxSessionTimeout granted less than Patroni's ttl: a failover "
                               "after kill -9 waits for the granted session, not the ttl"}
                   if any(ms is not None and ms < timings["ttl"] * 1000 for ms in granted.values()) else {}),
            },
            "postgresql_same_as_dr_orchestrator_lab": {**SAME_AS_OUR_LAB, "shared_buffers": SHARED_BUFFERS,
                                                       "max_connections": 200, "wal_segsize_mb": 1},
            "synchronous_mode_strict": self.strict,
            "why_strict": "Patroni's replication-modes documentation asks for it when every acknowledged "
                          "commit must be on two nodes: never fall back to asynchronous replication",
            "bootstrap_notice": BOOTSTRAP_NOTICE,
            "rejoin": "after the observation window the bench restarts the killed Patroni daemon (as an init "
                      "system would); Patroni then rejoins its PostgreSQL (crash recovery, pg_rewind) by itself",
            "members": {name: self.member_config(name, redact=True) for name in MEMBERS},
        }

    # ---- start -------------------------------------------------------------------------------

    def start(self, workdir: Path) -> None:
        """Bootstrap under ``workdir/<name>`` on the first call (ensemble, then members); later,
        launch any daemon that is not running and wait for one leader and two streaming replicas.

        :raises LabError: the ensemble or a daemon did not come up, or the cluster was not
            healthy in ``ready_timeout``.
        """
        root = (workdir / self.name).resolve()
        if self._root is not None and self._root != root and self.daemon_pids():
            raise LabError(f"{self.name}: already running under {self._root}; stop() it before using {root}")
        self._root = root
        self._prepare(workdir)
        self._start_dcs()
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
                # A fresh namespace per bootstrap: the ensemble's data may hold an older cluster.
                "namespace": f"/dr-bench-{secrets.token_hex(4)}/",
                "passwords": {key: secrets.token_urlsafe(18) for key in ("superuser", "replication", "app")},
            }
            state_file.write_text(json.dumps(self._state, indent=2))
            os.chmod(state_file, 0o600)
        for node in self._nodes():
            node.home.mkdir(parents=True, exist_ok=True)
            chown_tree(node.home, self.os_user)
            os.chmod(node.home, 0o700)
            config = self.member_config(node.name)
            if missing := none_values(config):
                raise LabError(f"{self.name}/{node.name}: patroni.yml would hold null at {', '.join(missing)}")
            write_owned(node.config_file, yaml.safe_dump(config, sort_keys=False), self.os_user)

    def _start_dcs(self) -> None:
        assert self._root is not None
        self._zk = ensemble.servers(self.dcs, self._root / "dcs")
        for server in self._zk:
            if server.pid() is None:
                server.start()
        zk = self._zk
        if not poll(lambda: ensemble.ensemble_ready(zk), timeout=DCS_READY_TIMEOUT, interval=0.1):
            raise LabError(f"{self.name}: its ZooKeeper ensemble has no leader after {DCS_READY_TIMEOUT:.0f}s; "
                           f"see {self._root}/dcs/zk/*/zk.log")

    def _launch(self, node: Node) -> int:
        """Start ``node``'s Patroni daemon once its previous postmaster is really gone."""
        stale = processes.read_pid(node.data / "postmaster.pid")
        if stale is not None and procs.is_running_pid(stale) and not processes.wait_gone(stale, timeout=10):
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

    def _superuser_conninfo(self, node: Node, timeout: int = 2) -> str:
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
        nodes_ = self._nodes()
        hosts = ",".join(n.address for n in nodes_)
        ports = ",".join(str(n.pg_port) for n in nodes_)
        return (
            f"postgresql://{APP_USER}:{self._state['passwords']['app']}@/{APP_DATABASE}"
            f"?host={hosts}&port={ports}&target_session_attrs=read-write&connect_timeout=2"
        )

    # ---- ZooKeeper sessions ------------------------------------------------------------------

    def _granted_sessions(self) -> dict[str, int | None]:
        """Each daemon's negotiated ZooKeeper session timeout (ms), from the servers' ``cons``:
        a daemon's connection is found by its local port (psutil)."""
        servers = self._zk_hosts()
        timeouts: dict[int, int] = {}
        for host, port in servers:
            for match in _CONS_LINE.finditer(ensemble.four_letter(host, port, "cons", timeout=1.0)):
                fields = dict(f.split("=", 1) for f in match["fields"].split(",") if "=" in f)
                if "to" in fields:
                    timeouts[int(match["port"])] = int(fields["to"])
        granted: dict[str, int | None] = {}
        for node in self._nodes():
            pid = node.daemon_pid()
            local = procs.local_ports(pid, {port for _, port in servers}) if pid is not None else set()
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
        poller = KeptConnections({n.name: connector(self._superuser_conninfo(n, timeout=2)) for n in self._nodes()})
        try:
            while time.time() < fault.at + seconds:
                started = time.time()
                for node in self._nodes():
                    rows = poller.query(node.name, _ROLE_QUERY)
                    if not rows or rows[0][0]:
                        continue
                    samples.append(SyncSample(at=started, server=node.server,
                                              synchronous_standby_names=str(rows[0][1])))
                    if node.name != fault.member:
                        new_primary = node.name
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
            processes.wait_gone(pid, timeout=5)
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
        pids: list[int] = []
        if self._root is None:
            return pids
        for node in self._nodes():
            pids += [pid for pid in (node.daemon_pid(), node.postmaster_pid()) if pid is not None]
        return pids

    def pids(self) -> list[int]:
        """Every running process of this system: daemons, postmasters, their children, the ensemble."""
        roots = set(self.daemon_pids())
        zk = {pid for server in self._zk if (pid := server.pid()) is not None}
        return sorted(roots | set(procs.descendants(roots)) | zk)

    def stop(self) -> None:
        """Stop all three members in parallel, each by PID, then the ensemble; a no-op before :meth:`start`."""
        if self._root is None:
            return
        try:
            with ThreadPoolExecutor(max_workers=len(MEMBERS)) as pool:
                list(pool.map(self._stop_node, self._nodes()))
        finally:
            for server in self._zk:
                server.stop()

    def _stop_node(self, node: Node) -> None:
        """The daemon by its PID (Patroni stops its PostgreSQL first), then a postmaster that
        outlived it (a killed daemon's, or after a failed shutdown) by the PID in postmaster.pid.

        :raises LabError: a process survived SIGKILL.
        """
        try:
            pid = node.daemon_pid()
            if pid is not None:
                stop(pid, sig=signal.SIGTERM, timeout=30)
            node.pidfile.unlink(missing_ok=True)
        finally:
            postmaster = node.postmaster_pid()
            if postmaster is not None:
                stop(postmaster, sig=signal.SIGINT, timeout=15)  # PostgreSQL's fast shutdown

    def remove(self) -> None:
        """Delete this system's directory (after :meth:`stop`) so the next start bootstraps anew."""
        if self._root is not None and not self.pids():
            shutil.rmtree(self._root, ignore_errors=True)
            self._state = {}
            self._granted_ms = {}

    def listeners(self) -> list[procs.Holder]:
        """Sockets still listening on this system's ports (none after :meth:`stop`)."""
        return [h for h in procs.holders(self.ports()) if h.status == "LISTEN"]
