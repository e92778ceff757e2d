"""pg_auto_failover as a benchmarked :class:`~orchestrator.bench.system.System`.

A monitor and three data nodes, each run by its own ``pg_autoctl run`` (Debian's
``postgresql-15-auto-failover`` + ``pg-auto-failover-cli``) as the ``postgres`` user, all
files under the work directory (``XDG_*`` point there, else pg_autoctl writes into
``~postgres`` and ``/tmp/pg_autoctl``). The formation keeps ``number_sync_standbys 1`` with
both standbys in the replication quorum, so the primary runs ``ANY 1 (standby_2, standby_3)``.
The bench runner (:mod:`orchestrator.bench.runner`) calls ``start``, loads the cluster through
:meth:`PgAutoFailoverSystem.conninfo`, calls ``kill_primary`` and ``observe``, and ``stop``.
Where everything lives and the exact commands are :mod:`orchestrator.bench.pgautofailover_commands`.

Two variants: ``default`` leaves the monitor's health-check GUCs alone; ``aggressive`` sets
the lowest values that still make sense (``ALTER SYSTEM`` + ``pg_reload_conf()`` on the
monitor). Every process is tracked by PID: each ``pg_autoctl run`` is a session leader; its
sub-services are found by session (psutil, :mod:`orchestrator.bench.procs`), the
postmasters by ``postmaster.pid``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from orchestrator import processes
from orchestrator.bench import procs
from orchestrator.bench.pgautofailover_commands import (
    ADDRESS,
    AGGRESSIVE_GUCS,
    APP_DATABASE,
    APP_USER,
    DEBIAN_PACKAGES,
    INSTANCES,
    NODES,
    OS_USER,
    PG_AUTOCTL,
    POSTGRES_OVERRIDES,
    Layout,
    Variant,
    setting_value,
    sync_off,
)
from orchestrator.bench.polling import KeptConnections, Row, connector
from orchestrator.bench.system import Fault, RoundFacts, SyncSample
from orchestrator.errors import LabError
from orchestrator.pgserver import chown_tree
from orchestrator.processes import spawn, stop
from orchestrator.waiting import poll

__all__ = ["NODES", "NodeState", "PgAutoFailoverSystem"]

_POLL_S = 0.05
_ROLE_QUERY = ("SELECT pg_is_in_recovery(), current_setting('transaction_read_only') = 'on', "
               "current_setting('synchronous_standby_names')")


@dataclass(frozen=True)
class NodeState:
    """One row of the monitor's ``pgautofailover.node``."""

    name: str
    port: int
    reported: str
    goal: str
    health: int


class PgAutoFailoverSystem:
    """pg_auto_failover 2.0: a monitor and three keepers on ports ``port_base`` .. ``port_base + 3``."""

    def __init__(self, variant: Variant, port_base: int, *,
                 rejoin_timeout: float = 45.0, start_timeout: float = 120.0) -> None:
        if variant not in ("default", "aggressive"):
            raise ValueError(f"pg_auto_failover variant {variant!r}: use 'default' or 'aggressive'")
        self.variant = variant
        self.name = f"pg_auto_failover-{variant}"
        self.port_base = port_base
        # The runner's observation window (its observe_window() reads it): defaults need ~52 s.
        self.observe_s = 70.0 if variant == "default" else 12.0
        self.rejoin_timeout = rejoin_timeout
        self.start_timeout = start_timeout
        self._root: Path | None = None
        self._password: str | None = None
        self._effective_gucs: dict[str, str] = {}
        self._observer = KeptConnections()

    # ---- layout ----------------------------------------------------------------------------

    @property
    def layout(self) -> Layout:
        """Where everything lives; before :meth:`start`, under a placeholder ``$WORKDIR``."""
        return Layout(self.variant, self.port_base, self._root or Path(f"$WORKDIR/{self.name}"))

    @property
    def monitor_port(self) -> int:
        return self.layout.monitor_port

    def port(self, node: str) -> int:
        return self.layout.port(node)

    def ports(self) -> tuple[int, ...]:
        """Every TCP port the system listens on: the monitor's, then the nodes'."""
        return self.layout.ports()

    @property
    def root(self) -> Path:
        if self._root is None:
            raise LabError(f"{self.name}: not started; call start(workdir) first")
        return self._root

    def pgdata(self, instance: str) -> Path:
        return self.layout.pgdata(instance)

    def settings(self) -> dict[str, Any]:
        layout = self.layout
        return {
            "system": "pg_auto_failover",
            "variant": self.variant,
            "version": self._version(),
            "debian_packages": list(DEBIAN_PACKAGES),
            "topology": {"monitor": f"{ADDRESS}:{layout.monitor_port}",
                         "nodes": {n: f"{ADDRESS}:{layout.port(n)}" for n in NODES}},
            "formation": {"number_sync_standbys": 1, "replication_quorum": dict.fromkeys(NODES, True),
                          "candidate_priority": dict.fromkeys(NODES, 50)},
            "expected_synchronous_standby_names": "ANY 1 (pgautofailover_standby_<id>, ...)",
            "monitor_gucs_requested": dict(AGGRESSIVE_GUCS) if self.variant == "aggressive" else "defaults",
            "monitor_gucs_effective": dict(self._effective_gucs),
            "postgres_overrides": dict(POSTGRES_OVERRIDES),
            "postgres_settings": "pg_autoctl's own (synchronous_commit on, wal_log_hints on, hot_standby_feedback on, "
                                 "its tuning except shared_buffers)",
            "auth": f"trust for pg_auto_failover's internal users (lab); scram-sha-256 for {APP_USER!r}",
            "ssl": "off (--no-ssl)",
            "environment": {k: v for k, v in layout.env().items() if k.startswith(("XDG_", "PGHOST"))},
            "client": layout.conninfo("<password>"),
            "fault": "kill -9 of the primary node's 'pg_autoctl run' supervisor, its pg_autoctl sub-services, "
                     "then its postmaster (postmaster.pid)",
            "rejoin": (f"after the observation window the killed keeper is restarted ('pg_autoctl run', as an init "
                       f"system would) and given {self.rejoin_timeout:g} s to report 'secondary'; no operator "
                       "command") if self.rejoin_timeout > 0 else "the killed keeper is not restarted in observe()",
            "observe_s": self.observe_s,
            "commands": layout.commands(),
        }

    @staticmethod
    def _version() -> str:
        try:
            out = subprocess.run([PG_AUTOCTL, "--version"], capture_output=True, text=True, timeout=10, check=False)
        except OSError:
            return "pg_autoctl not installed"
        return out.stdout.splitlines()[0].strip() if out.stdout else "unknown"

    # ---- running pg_autoctl ------------------------------------------------------------------

    def _run(self, argv: list[str], *, timeout: float = 120.0) -> str:
        """Run a pg_autoctl command to completion as postgres, in its own session (killed whole on timeout)."""
        layout = self.layout
        proc = subprocess.Popen(argv, cwd=layout.base, env=layout.env(), user=OS_USER,
                                group=OS_USER, extra_groups=[], start_new_session=True, text=True, errors="replace",
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the session we created for it: its postgres too
            proc.communicate()
            raise LabError(f"{self.name}: {shlex.join(argv[:3])} did not finish in {timeout:g}s") from None
        log = layout.base / "logs" / "commands.log"
        with log.open("a") as fh:
            fh.write(f"$ {shlex.join(argv)}\n{out}\n")
        if proc.returncode != 0:
            tail = " | ".join(out.strip().splitlines()[-3:])
            raise LabError(f"{self.name}: {shlex.join(argv[:3])} failed (rc {proc.returncode}): {tail}; see {log}")
        return out

    def keeper_pid(self, instance: str) -> int | None:
        """The running ``pg_autoctl run`` of ``instance`` (``monitor`` or a node), or None."""
        pid = procs.running_pid(self.layout.pidfile(instance))
        return pid if pid is not None and procs.cmdline_contains(pid, "pg_autoctl") else None

    def _spawn_keeper(self, instance: str) -> int:
        layout = self.layout
        pid = spawn(layout.run_argv(instance), log=layout.log(instance), cwd=layout.base, user=OS_USER,
                    env=layout.env())
        layout.pidfile(instance).write_text(f"{pid}\n")
        return pid

    def postmaster_pid(self, instance: str) -> int | None:
        return procs.running_pid(self.pgdata(instance) / "postmaster.pid")

    def pids(self) -> list[int]:
        """Every running process of this system: keepers, their sessions, postmasters and their children."""
        if self._root is None:
            return []
        layout = self.layout
        keepers = {p for i in INSTANCES if (p := procs.running_pid(layout.pidfile(i))) is not None}
        postmasters = {p for i in INSTANCES if (p := self.postmaster_pid(i)) is not None}
        found = keepers | postmasters | set(procs.descendants(keepers | postmasters))
        for keeper in keepers:
            found.update(procs.session_members(keeper))
        return sorted(found)

    # ---- start -----------------------------------------------------------------------------

    def start(self, workdir: Path) -> None:
        """Bootstrap under ``workdir/<name>`` on the first call; later, restart what is not running
        (a keeper killed in the last round) and wait for 1 primary + 2 streaming secondaries.

        After a full :meth:`stop`, starting again restarts the whole cluster; pg_auto_failover
        may then fail over once (the monitor judges health it saw before the stop). The bench
        runner avoids that: it removes the directory after each round, so each round bootstraps.

        :raises LabError: a command failed, or not healthy within ``start_timeout``.
        """
        root = (workdir / self.name).resolve()
        if self._root is not None and self._root != root:
            raise LabError(f"{self.name}: already runs in {self._root}; stop() it before using {root}")
        self._root = root
        root.mkdir(parents=True, exist_ok=True)
        for path in (workdir, root):
            os.chmod(path, 0o755)  # the postgres user must traverse them
        (root / "pids").mkdir(exist_ok=True)
        if not (root / "bootstrapped").exists():
            self._bootstrap()
            (root / "bootstrapped").write_text(f"{time.time()}\n")
        else:
            self._password = json.loads((root / "secrets.json").read_text())["password"]
            self._ensure_running("monitor")
            self._wait_monitor()
            for node in NODES:
                self._ensure_running(node)
        self._wait_healthy(self.start_timeout)
        self._apply_gucs()

    def _ensure_running(self, instance: str) -> None:
        if self.keeper_pid(instance) is not None:
            return
        # A keeper killed in the last round: its zombies must be gone before pg_autoctl and postgres
        # trust their pid files again (a postmaster that still runs is adopted by pg_autoctl).
        for path in (self.layout.pidfile(instance), self.pgdata(instance) / "postmaster.pid"):
            pid = processes.read_pid(path)
            if pid is not None and not procs.is_running_pid(pid) and not processes.wait_gone(pid, timeout=10):
                raise LabError(f"{self.name}: old process {pid} of {instance} still exists; inspect ps -p {pid}")
        self._spawn_keeper(instance)

    def _bootstrap(self) -> None:
        self.stop()  # leftovers of an interrupted bootstrap, by their pid files
        busy = [p for p in self.ports() if not procs.bindable(ADDRESS, p)]
        if busy:
            raise LabError(f"{self.name}: port(s) {busy} on {ADDRESS} already in use; pick another port_base")
        base = self.layout.base
        shutil.rmtree(base, ignore_errors=True)
        for sub in ("logs", "xdg/config", "xdg/data", "xdg/run"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        chown_tree(base, OS_USER)
        os.chmod(base / "xdg" / "run", 0o700)
        self._password = secrets.token_urlsafe(18)
        secret_file = self.root / "secrets.json"
        secret_file.write_text(json.dumps({"user": APP_USER, "password": self._password}))
        os.chmod(secret_file, 0o600)

        layout = self.layout
        self._run(layout.create_monitor_argv())
        self._append_overrides("monitor")
        self._spawn_keeper("monitor")
        self._wait_monitor()

        first = NODES[0]
        self._run(layout.create_node_argv(first))
        self._append_overrides(first)
        hba = self.pgdata(first) / "pg_hba.conf"
        hba.write_text(f"host all {APP_USER} {ADDRESS}/32 scram-sha-256\n" + hba.read_text())
        self._spawn_keeper(first)
        self._wait(lambda: self._single(first), f"{first} not a running 'single'", self.start_timeout)
        self._create_app_role(first)
        # One standby at a time: creating both at once failed now and then under load
        # ("Failed to get Postgres pid" while the other clone held the primary busy).
        for node in NODES[1:]:
            self._run(layout.create_node_argv(node))
            self._spawn_keeper(node)
        self._wait_healthy(self.start_timeout)
        self._run(layout.formation_argv())

    def _append_overrides(self, instance: str) -> None:
        # postgresql.auto.conf is read last, so it wins over pg_autoctl's tuning file.
        with (self.pgdata(instance) / "postgresql.auto.conf").open("a") as fh:
            fh.writelines(f"{key} = '{value}'\n" for key, value in POSTGRES_OVERRIDES.items())

    def _create_app_role(self, node: str) -> None:
        try:
            with psycopg.connect(host=ADDRESS, port=self.port(node), dbname="postgres", user=OS_USER,
                                 connect_timeout=5, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(APP_USER), sql.Literal(self._password)))
                conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(APP_DATABASE), sql.Identifier(APP_USER)))
        except psycopg.Error as exc:
            raise LabError(f"{self.name}: creating role {APP_USER!r} on {node} failed: {exc}") from exc

    def _apply_gucs(self) -> None:
        statements = self.layout.guc_statements()
        try:
            with psycopg.connect(host=ADDRESS, port=self.monitor_port, dbname="pg_auto_failover", user=OS_USER,
                                 connect_timeout=5, autocommit=True) as conn:
                current = {r[0]: r[1] for r in conn.execute(
                    "SELECT name, setting FROM pg_settings WHERE name LIKE 'pgautofailover.%'").fetchall()}
                if statements and any(current.get(n) != setting_value(v) for n, v in AGGRESSIVE_GUCS.items()):
                    for statement in statements:
                        conn.execute(statement)
                    def taken(conn: psycopg.Connection[tuple[object, ...]] = conn) -> bool:
                        return all(conn.execute("SELECT setting FROM pg_settings WHERE name = %s", (n,)).fetchone()
                                   == (setting_value(v),) for n, v in AGGRESSIVE_GUCS.items())

                    if not poll(taken, timeout=10, interval=0.05):
                        raise LabError(f"{self.name}: the monitor did not take the aggressive settings")
                rows = conn.execute("SELECT name, setting, coalesce(unit, '') FROM pg_settings "
                                    "WHERE name LIKE 'pgautofailover.%' ORDER BY name").fetchall()
        except psycopg.Error as exc:
            raise LabError(f"{self.name}: cannot configure the monitor: {exc}") from exc
        self._effective_gucs = {name: f"{setting}{unit}" for name, setting, unit in rows}

    # ---- the monitor's view ----------------------------------------------------------------

    def _query(self, instance: str, statement: str) -> list[Row] | None:
        """``statement`` on ``instance`` over a kept-open connection; None when it does not answer."""
        if instance == "monitor":
            self._observer.add(instance, connector(host=ADDRESS, port=self.monitor_port, dbname="pg_auto_failover",
                                                   user="autoctl_node", connect_timeout=2,
                                                   statement_timeout_ms=1000, application_name="bench-observer"))
        else:
            self._observer.add(instance, connector(host=ADDRESS, port=self.port(instance), dbname="postgres",
                                                   user=OS_USER, connect_timeout=2, statement_timeout_ms=1000,
                                                   application_name="bench-observer"))
        return self._observer.query(instance, statement)

    def monitor_states(self) -> list[NodeState] | None:
        rows = self._query("monitor", "SELECT nodename, nodeport, reportedstate::text, goalstate::text, health "
                           "FROM pgautofailover.node WHERE formationid = 'default' ORDER BY nodeid")
        return None if rows is None else [NodeState(*row) for row in rows]

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float) -> None:
        if not poll(ready, timeout=timeout, interval=0.1):
            seen = {s.name: (s.reported, s.goal) for s in self.monitor_states() or []}
            raise LabError(f"{self.name}: {what} after {timeout:g}s (monitor: {seen or 'no answer'}); "
                           f"see {self.layout.base}/logs/")

    def _wait_monitor(self) -> None:
        self._wait(lambda: self.monitor_states() is not None, f"monitor not answering on {self.monitor_port}",
                   self.start_timeout)

    def _single(self, node: str) -> bool:
        state = next((s for s in self.monitor_states() or [] if s.name == node), None)
        return (state is not None and state.reported == state.goal == "single"
                and self._query(node, "SELECT 1") is not None)

    def healthy(self) -> bool:
        """One primary and two secondaries (reported = assigned), both standbys streaming, sync on."""
        states = self.monitor_states() or []
        primaries = [s for s in states if s.reported == s.goal == "primary"]
        secondaries = [s for s in states if s.reported == s.goal == "secondary"]
        if len(states) != 3 or len(primaries) != 1 or len(secondaries) != 2:
            return False
        rows = self._query(primaries[0].name, "SELECT count(*) FILTER (WHERE state = 'streaming'), "
                           "current_setting('synchronous_standby_names') FROM pg_stat_replication")
        return rows is not None and rows[0][0] == 2 and rows[0][1] != ""

    def _wait_healthy(self, timeout: float) -> None:
        self._wait(self.healthy, "not 1 primary + 2 streaming secondaries", timeout)

    def primary(self) -> str | None:
        """The node the monitor has as primary (reported and assigned)."""
        return next((s.name for s in self.monitor_states() or [] if s.reported == s.goal == "primary"), None)

    # ---- the client's view -----------------------------------------------------------------

    def conninfo(self) -> str:
        if self._password is None:
            raise LabError(f"{self.name}: not started; call start(workdir) first")
        return self.layout.conninfo(self._password)

    # ---- the fault and the observation ------------------------------------------------------

    def kill_primary(self) -> Fault:
        """kill -9 the monitor's primary: its keeper (supervisor and sub-services) and its postmaster."""
        member = self.primary()
        if member is None:
            raise LabError(f"{self.name}: the monitor shows no primary to kill; start() first")
        keeper = self.keeper_pid(member)
        postmaster = self.postmaster_pid(member)
        if keeper is None or postmaster is None:
            raise LabError(f"{self.name}: {member} has keeper {keeper}, postmaster {postmaster}; nothing to kill")
        # The supervisor first, then its sub-services (else one restarts postgres), then the postmaster.
        services = [pid for pid in procs.session_members(keeper, needle="pg_autoctl")
                    if pid not in (keeper, postmaster)]
        victims = (keeper, *services, postmaster)
        at = time.time()
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return Fault(at=at, member=member, pids=victims)

    def observe(self, fault: Fault, seconds: float) -> RoundFacts:
        """Poll every ~50 ms until ``fault.at + seconds``: which survivor is writable, its
        ``synchronous_standby_names``, the monitor's states; then restart the killed keeper."""
        samples: list[SyncSample] = []
        transitions: list[dict[str, Any]] = []
        last_state: dict[str, tuple[str, str, int]] = {}
        first: dict[str, float] = {}
        split_brain: list[float] = []
        current: str | None = None
        deadline = fault.at + seconds
        while (now := time.time()) < deadline:
            writable = []
            for node in NODES:
                # Writable as libpq's target_session_attrs=read-write sees it: pg_auto_failover promotes
                # in stop_replication but keeps default_transaction_read_only on until wait_primary.
                rows = self._query(node, _ROLE_QUERY)
                if not rows or rows[0][0] or node == fault.member:
                    continue
                first.setdefault("promoted", now - fault.at)
                if not rows[0][1]:
                    writable.append(node)
                    first.setdefault("writable", now - fault.at)
                    samples.append(SyncSample(time.time(), f"{ADDRESS}:{self.port(node)}", str(rows[0][2])))
            if len(writable) > 1:
                split_brain.append(round(now - fault.at, 3))
            if writable:
                current = writable[0]
            for state in self.monitor_states() or []:
                key = (state.reported, state.goal, state.health)
                if last_state.get(state.name) != key:
                    last_state[state.name] = key
                    transitions.append({"t": round(now - fault.at, 3), "node": state.name, "reported": state.reported,
                                        "goal": state.goal, "health": state.health})
            time.sleep(max(0.0, _POLL_S - (time.time() - now)))
        notes: dict[str, Any] = {
            "killed_pids": list(fault.pids),
            "new_primary_promoted_s": round(first["promoted"], 3) if "promoted" in first else None,
            "new_primary_writable_s": round(first["writable"], 3) if "writable" in first else None,
            "sync_off": sync_off(samples, fault.at),
            "monitor_transitions": transitions,
            "two_writable_at_s": split_brain,
        }
        notes["rejoin"], rejoined = self._rejoin(fault)
        self._observer.close()
        return RoundFacts(new_primary=current, old_primary_rejoined=rejoined, sync_samples=tuple(samples),
                          notes=notes)

    def _rejoin(self, fault: Fault) -> tuple[dict[str, Any], bool]:
        """Restart the killed keeper (what an init system does) and wait for it to report secondary."""
        if self.rejoin_timeout <= 0:
            return {"method": "not attempted (rejoin_timeout 0)"}, False
        started = time.time()
        try:
            self._ensure_running(fault.member)
        except LabError as exc:
            return {"method": "restart of the killed keeper failed", "error": str(exc)}, False
        deadline = started + self.rejoin_timeout
        while time.time() < deadline:
            state = next((s for s in self.monitor_states() or [] if s.name == fault.member), None)
            rows = self._query(fault.member, "SELECT pg_is_in_recovery()")
            if state is not None and state.reported == state.goal == "secondary" and rows and rows[0][0]:
                return {"method": "killed keeper restarted after the window (as an init system would); "
                                  "no operator command",
                        "restarted_at_s": round(started - fault.at, 3),
                        "secondary_after_restart_s": round(time.time() - started, 3)}, True
            time.sleep(0.1)
        state = next((s for s in self.monitor_states() or [] if s.name == fault.member), None)
        return {"method": "killed keeper restarted after the window; no operator command",
                "restarted_at_s": round(started - fault.at, 3),
                "not_secondary_after_s": self.rejoin_timeout,
                "monitor_state": None if state is None else [state.reported, state.goal]}, False

    # ---- stop ------------------------------------------------------------------------------

    def stop(self) -> None:
        """SIGTERM every keeper (each stops its postgres), then any postmaster or process left, by PID."""
        self._observer.close()
        if self._root is None or not self.layout.base.exists():
            return
        leftovers = self.pids()
        keepers = [p for i in (*NODES, "monitor") if (p := self.keeper_pid(i)) is not None]
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda pid: stop(pid, timeout=30), keepers))
            postmasters = [p for i in (*NODES, "monitor") if (p := self.postmaster_pid(i)) is not None]
            list(pool.map(lambda pid: stop(pid, sig=signal.SIGINT, timeout=15), postmasters))
        for pid in leftovers:
            if procs.is_running_pid(pid):  # collected before the stops: ours, not a reused PID
                stop(pid, sig=signal.SIGKILL, timeout=5)
        for instance in INSTANCES:
            self.layout.pidfile(instance).unlink(missing_ok=True)
