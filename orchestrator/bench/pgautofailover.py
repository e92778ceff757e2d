"""pg_auto_failover as a benchmarked :class:`~orchestrator.bench.system.System`.

A monitor and three data nodes, each run by its own ``pg_autoctl run`` (Debian's
``postgresql-15-auto-failover`` + ``pg-auto-failover-cli``) as the ``postgres`` user, all
files under the work directory (``XDG_*`` point there, else pg_autoctl writes into
``~postgres`` and ``/tmp/pg_autoctl``). The formation keeps ``number_sync_standbys 1`` with
both standbys in the replication quorum, so the primary runs ``ANY 1 (standby_2, standby_3)``.
The bench runner (:mod:`orchestrator.bench`) calls ``start``, loads the cluster through
:meth:`PgAutoFailoverSystem.conninfo`, calls ``kill_primary`` and ``observe``, and ``stop``.

Two variants: ``default`` leaves the monitor's health-check GUCs alone; ``aggressive`` sets
the lowest values that still make sense (``ALTER SYSTEM`` + ``pg_reload_conf()`` on the
monitor). Ports: the monitor on ``port_base``, node *i* on ``port_base + i`` (i = 1..3).
Every process is tracked by PID (each ``pg_autoctl run`` is a session leader; its
sub-services and the postmaster are found through ``/proc`` and ``postmaster.pid``).
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
from typing import Any, Literal

import psycopg
from psycopg import sql

from orchestrator.bench.system import Fault, RoundFacts, SyncSample
from orchestrator.errors import LabError
from orchestrator.pgserver import chown_tree
from orchestrator.processes import is_running, port_in_use, read_pid, spawn, stop, wait_gone

ADDRESS = "127.0.0.1"
OS_USER = "postgres"
PG_CTL = "/usr/lib/postgresql/15/bin/pg_ctl"
PG_AUTOCTL = "/usr/bin/pg_autoctl"
DEBIAN_PACKAGES = ("postgresql-15-auto-failover", "pg-auto-failover-cli")
APP_USER = "bench"
APP_DATABASE = "bench"
NODES = ("node1", "node2", "node3")
# pg_autoctl's tuning gives every instance 25% of RAM; four of them on one lab machine would not fit.
POSTGRES_OVERRIDES = {"shared_buffers": "32MB"}
AGGRESSIVE_GUCS = {
    "pgautofailover.health_check_period": "100ms",
    "pgautofailover.health_check_timeout": "100ms",
    "pgautofailover.health_check_max_retries": "1",
    "pgautofailover.health_check_retry_delay": "50ms",
    "pgautofailover.node_considered_unhealthy_timeout": "100ms",
    "pgautofailover.primary_demote_timeout": "1ms",
}
_POLL_S = 0.05

Row = tuple[Any, ...]


@dataclass(frozen=True)
class NodeState:
    """One row of the monitor's ``pgautofailover.node``."""

    name: str
    port: int
    reported: str
    goal: str
    health: int


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, session id) of a live, non-zombie process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else (int(fields[1]), int(fields[3]))


def _processes() -> dict[int, tuple[int, int]]:
    table: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _proc_stat(int(entry))) is not None:
            table[int(entry)] = stat
    return table


def _is_autoctl(pid: int) -> bool:
    try:
        return b"pg_autoctl" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class _Observer:
    """Kept-open autocommit connections to the monitor and the nodes; a failure is ``None``."""

    def __init__(self) -> None:
        self._conns: dict[int, psycopg.Connection[Row]] = {}

    def query(self, port: int, query: str, *, dbname: str = "postgres", user: str = OS_USER) -> list[Row] | None:
        conn = self._conns.get(port)
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(host=ADDRESS, port=port, dbname=dbname, user=user, connect_timeout=2,
                                       autocommit=True, options="-c statement_timeout=1000",
                                       application_name="bench-observer")
                self._conns[port] = conn
            return conn.execute(query).fetchall()
        except psycopg.Error:
            self.drop(port)
            return None

    def drop(self, port: int) -> None:
        conn = self._conns.pop(port, None)
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def close(self) -> None:
        for port in list(self._conns):
            self.drop(port)


class PgAutoFailoverSystem:
    """pg_auto_failover 2.0: a monitor and three keepers on ports ``port_base`` .. ``port_base + 3``."""

    def __init__(self, variant: Literal["default", "aggressive"], port_base: int, *,
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
        self._observer = _Observer()

    # ---- layout ----------------------------------------------------------------------------

    @property
    def monitor_port(self) -> int:
        return self.port_base

    def port(self, node: str) -> int:
        return self.port_base + NODES.index(node) + 1

    @property
    def root(self) -> Path:
        if self._root is None:
            raise LabError(f"{self.name}: not started; call start(workdir) first")
        return self._root

    def _base(self, root: Path) -> Path:
        return root / "pgaf"  # owned by postgres: pg_autoctl creates data dirs and backups in it

    def pgdata(self, instance: str, root: Path | None = None) -> Path:
        return self._base(root or self.root) / instance

    def _pidfile(self, instance: str) -> Path:
        return self.root / "pids" / f"{instance}.pid"

    @property
    def monitor_uri(self) -> str:
        return f"postgres://autoctl_node@{ADDRESS}:{self.monitor_port}/pg_auto_failover?sslmode=disable"

    def _env(self, root: Path) -> dict[str, str]:
        xdg = self._base(root) / "xdg"
        return {"PATH": "/usr/bin:/bin", "HOME": str(self._base(root)), "LC_ALL": "C.UTF-8",
                "PGHOST": ADDRESS,  # the keepers reach their own postgres over TCP, not /var/run/postgresql
                "XDG_CONFIG_HOME": str(xdg / "config"), "XDG_DATA_HOME": str(xdg / "data"),
                "XDG_RUNTIME_DIR": str(xdg / "run")}

    # ---- the exact commands (run, and written into the report) -------------------------------

    def _create_monitor_argv(self, root: Path) -> list[str]:
        return [PG_AUTOCTL, "create", "monitor", "--pgctl", PG_CTL, "--pgdata", str(self.pgdata("monitor", root)),
                "--pgport", str(self.monitor_port), "--hostname", ADDRESS, "--listen", ADDRESS,
                "--no-ssl", "--auth", "trust"]

    def _create_node_argv(self, node: str, root: Path) -> list[str]:
        return [PG_AUTOCTL, "create", "postgres", "--pgctl", PG_CTL, "--pgdata", str(self.pgdata(node, root)),
                "--pgport", str(self.port(node)), "--pghost", ADDRESS, "--hostname", ADDRESS, "--listen", ADDRESS,
                "--name", node, "--dbname", APP_DATABASE, "--monitor", self.monitor_uri,
                "--no-ssl", "--auth", "trust", "--replication-quorum", "true", "--candidate-priority", "50"]

    def _run_argv(self, instance: str, root: Path) -> list[str]:
        return [PG_AUTOCTL, "run", "--pgdata", str(self.pgdata(instance, root))]

    def _formation_argv(self) -> list[str]:
        return [PG_AUTOCTL, "set", "formation", "number-sync-standbys", "1", "--monitor", self.monitor_uri]

    def _guc_statements(self) -> list[str]:
        if self.variant == "default":
            return []
        return [f"ALTER SYSTEM SET {name} = '{value}'" for name, value in AGGRESSIVE_GUCS.items()] + [
            "SELECT pg_reload_conf()"]

    def settings(self) -> dict[str, Any]:
        root = self._root or Path(f"$WORKDIR/{self.name}")
        env = {k: v for k, v in self._env(root).items() if k.startswith(("XDG_", "PGHOST"))}
        overrides = " ".join(f"{k} = '{v}'" for k, v in POSTGRES_OVERRIDES.items())
        commands = [
            shlex.join(self._create_monitor_argv(root)),
            f"append to monitor/postgresql.auto.conf: {overrides}",
            shlex.join(self._run_argv("monitor", root)) + " &",
        ]
        first = NODES[0]
        commands += [
            shlex.join(self._create_node_argv(first, root)),
            f"append to {first}/postgresql.auto.conf: {overrides} (standbys copy it through pg_basebackup)",
            f"prepend to {first}/pg_hba.conf: host all {APP_USER} {ADDRESS}/32 scram-sha-256",
            shlex.join(self._run_argv(first, root)) + " &",
            f"CREATE ROLE {APP_USER} LOGIN PASSWORD '<generated>'; ALTER DATABASE {APP_DATABASE} OWNER TO {APP_USER}",
            *(shlex.join(self._create_node_argv(n, root)) + "  # then its keeper" for n in NODES[1:]),
            *(shlex.join(self._run_argv(n, root)) + " &" for n in NODES[1:]),
            shlex.join(self._formation_argv()),
        ]
        commands += [f"monitor: {s}" for s in self._guc_statements()]
        return {
            "system": "pg_auto_failover",
            "variant": self.variant,
            "version": self._version(),
            "debian_packages": list(DEBIAN_PACKAGES),
            "topology": {"monitor": f"{ADDRESS}:{self.monitor_port}",
                         "nodes": {n: f"{ADDRESS}:{self.port(n)}" for n in NODES}},
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
            "environment": env,
            "client": self._conninfo(redacted=True),
            "fault": "kill -9 of the primary node's 'pg_autoctl run' supervisor, its pg_autoctl sub-services, "
                     "then its postmaster (postmaster.pid)",
            "rejoin": (f"after the observation window the killed keeper is restarted ('pg_autoctl run', as an init "
                       f"system would) and given {self.rejoin_timeout:g} s to report 'secondary'; no operator "
                       "command") if self.rejoin_timeout > 0 else "the killed keeper is not restarted in observe()",
            "observe_s": self.observe_s,
            "commands": commands,
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
        proc = subprocess.Popen(argv, cwd=self._base(self.root), env=self._env(self.root), user=OS_USER,
                                group=OS_USER, extra_groups=[], start_new_session=True, text=True, errors="replace",
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the session we created for it: its postgres too
            proc.communicate()
            raise LabError(f"{self.name}: {shlex.join(argv[:3])} did not finish in {timeout:g}s") from None
        log = self._base(self.root) / "logs" / "commands.log"
        with log.open("a") as fh:
            fh.write(f"$ {shlex.join(argv)}\n{out}\n")
        if proc.returncode != 0:
            tail = " | ".join(out.strip().splitlines()[-3:])
            raise LabError(f"{self.name}: {shlex.join(argv[:3])} failed (rc {proc.returncode}): {tail}; see {log}")
        return out

    def keeper_pid(self, instance: str) -> int | None:
        """The running ``pg_autoctl run`` of ``instance`` (``monitor`` or a node), or None."""
        pid = read_pid(self._pidfile(instance))
        return pid if pid is not None and is_running(pid) and _is_autoctl(pid) else None

    def _spawn_keeper(self, instance: str) -> int:
        pid = spawn(self._run_argv(instance, self.root), log=self._base(self.root) / "logs" / f"{instance}.log",
                    cwd=self._base(self.root), user=OS_USER, env=self._env(self.root))
        self._pidfile(instance).write_text(f"{pid}\n")
        return pid

    def postmaster_pid(self, instance: str) -> int | None:
        pid = read_pid(self.pgdata(instance) / "postmaster.pid")
        return pid if pid is not None and is_running(pid) else None

    def pids(self) -> list[int]:
        """Every running process of this system: keepers, their sessions, postmasters and their children."""
        if self._root is None:
            return []
        table = _processes()
        keepers = {p for i in ("monitor", *NODES) if (p := read_pid(self._pidfile(i))) is not None}
        postmasters = {p for i in ("monitor", *NODES) if (p := read_pid(self.pgdata(i) / "postmaster.pid")) is not None}
        return sorted(pid for pid, (ppid, sid) in table.items()
                      if pid in keepers or pid in postmasters or sid in keepers or ppid in postmasters)

    # ---- start -----------------------------------------------------------------------------

    def start(self, workdir: Path) -> None:
        """Bootstrap under ``workdir/<name>`` on the first call; later, restart what is not running
        (a keeper killed in the last round) and wait for 1 primary + 2 streaming secondaries.

        After a full :meth:`stop`, starting again restarts the whole cluster; pg_auto_failover
        may then fail over once (the monitor judges health it saw before the stop).

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
        for path in (self._pidfile(instance), self.pgdata(instance) / "postmaster.pid"):
            pid = read_pid(path)
            if pid is not None and not is_running(pid) and not wait_gone(pid, timeout=10):
                raise LabError(f"{self.name}: old process {pid} of {instance} still exists; inspect ps -p {pid}")
        self._spawn_keeper(instance)

    def _bootstrap(self) -> None:
        self.stop()  # leftovers of an interrupted bootstrap, by their pid files
        busy = [p for p in range(self.port_base, self.port_base + 4) if port_in_use(ADDRESS, p)]
        if busy:
            raise LabError(f"{self.name}: port(s) {busy} on {ADDRESS} already in use; pick another port_base")
        base = self._base(self.root)
        shutil.rmtree(base, ignore_errors=True)
        for sub in ("logs", "xdg/config", "xdg/data", "xdg/run"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        chown_tree(base, OS_USER)
        os.chmod(base / "xdg" / "run", 0o700)
        self._password = secrets.token_urlsafe(18)
        secret_file = self.root / "secrets.json"
        secret_file.write_text(json.dumps({"user": APP_USER, "password": self._password}))
        os.chmod(secret_file, 0o600)

        self._run(self._create_monitor_argv(self.root))
        self._append_overrides("monitor")
        self._spawn_keeper("monitor")
        self._wait_monitor()

        first = NODES[0]
        self._run(self._create_node_argv(first, self.root))
        self._append_overrides(first)
        hba = self.pgdata(first) / "pg_hba.conf"
        hba.write_text(f"host all {APP_USER} {ADDRESS}/32 scram-sha-256\n" + hba.read_text())
        self._spawn_keeper(first)
        self._wait(lambda: self._single(first), f"{first} not a running 'single'", self.start_timeout)
        self._create_app_role(first)
        # One standby at a time: creating both at once failed now and then under load
        # ("Failed to get Postgres pid" while the other clone held the primary busy).
        for node in NODES[1:]:
            self._run(self._create_node_argv(node, self.root))
            self._spawn_keeper(node)
        self._wait_healthy(self.start_timeout)
        self._run(self._formation_argv())

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
        statements = self._guc_statements()
        try:
            with psycopg.connect(host=ADDRESS, port=self.monitor_port, dbname="pg_auto_failover", user=OS_USER,
                                 connect_timeout=5, autocommit=True) as conn:
                current = {r[0]: r[1] for r in conn.execute(
                    "SELECT name, setting FROM pg_settings WHERE name LIKE 'pgautofailover.%'").fetchall()}
                if statements and any(current.get(n) != _setting(v) for n, v in AGGRESSIVE_GUCS.items()):
                    for statement in statements:
                        conn.execute(statement)
                    deadline = time.monotonic() + 10
                    while any(conn.execute("SELECT setting FROM pg_settings WHERE name = %s", (n,)).fetchone()
                              != (_setting(v),) for n, v in AGGRESSIVE_GUCS.items()):
                        if time.monotonic() > deadline:
                            raise LabError(f"{self.name}: the monitor did not take the aggressive settings")
                        time.sleep(0.05)
                rows = conn.execute("SELECT name, setting, coalesce(unit, '') FROM pg_settings "
                                    "WHERE name LIKE 'pgautofailover.%' ORDER BY name").fetchall()
        except psycopg.Error as exc:
            raise LabError(f"{self.name}: cannot configure the monitor: {exc}") from exc
        self._effective_gucs = {name: f"{setting}{unit}" for name, setting, unit in rows}

    # ---- the monitor's view ----------------------------------------------------------------

    def monitor_states(self) -> list[NodeState] | None:
        rows = self._observer.query(
            self.monitor_port, "SELECT nodename, nodeport, reportedstate::text, goalstate::text, health "
            "FROM pgautofailover.node WHERE formationid = 'default' ORDER BY nodeid",
            dbname="pg_auto_failover", user="autoctl_node")
        return None if rows is None else [NodeState(*row) for row in rows]

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                seen = {s.name: (s.reported, s.goal) for s in self.monitor_states() or []}
                raise LabError(f"{self.name}: {what} after {timeout:g}s (monitor: {seen or 'no answer'}); "
                               f"see {self._base(self.root)}/logs/")
            time.sleep(0.1)

    def _wait_monitor(self) -> None:
        self._wait(lambda: self.monitor_states() is not None, f"monitor not answering on {self.monitor_port}",
                   self.start_timeout)

    def _single(self, node: str) -> bool:
        state = next((s for s in self.monitor_states() or [] if s.name == node), None)
        return (state is not None and state.reported == state.goal == "single"
                and self._observer.query(self.port(node), "SELECT 1") is not None)

    def healthy(self) -> bool:
        """One primary and two secondaries (reported = assigned), both standbys streaming, sync on."""
        states = self.monitor_states() or []
        primaries = [s for s in states if s.reported == s.goal == "primary"]
        secondaries = [s for s in states if s.reported == s.goal == "secondary"]
        if len(states) != 3 or len(primaries) != 1 or len(secondaries) != 2:
            return False
        rows = self._observer.query(primaries[0].port, "SELECT count(*) FILTER (WHERE state = 'streaming'), "
                                    "current_setting('synchronous_standby_names') FROM pg_stat_replication")
        return rows is not None and rows[0][0] == 2 and rows[0][1] != ""

    def _wait_healthy(self, timeout: float) -> None:
        self._wait(self.healthy, "not 1 primary + 2 streaming secondaries", timeout)

    def primary(self) -> str | None:
        """The node the monitor has as primary (reported and assigned)."""
        return next((s.name for s in self.monitor_states() or [] if s.reported == s.goal == "primary"), None)

    # ---- the client's view -----------------------------------------------------------------

    def _conninfo(self, *, redacted: bool = False) -> str:
        secret = "<password>" if redacted or self._password is None else self._password
        hosts = ",".join(ADDRESS for _ in NODES)
        ports = ",".join(str(self.port(n)) for n in NODES)
        return (f"postgresql://{APP_USER}:{secret}@/{APP_DATABASE}"
                f"?host={hosts}&port={ports}&target_session_attrs=read-write&connect_timeout=2")

    def conninfo(self) -> str:
        if self._password is None:
            raise LabError(f"{self.name}: not started; call start(workdir) first")
        return self._conninfo()

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
        services = sorted(pid for pid, (_, sid) in _processes().items()
                          if sid == keeper and pid not in (keeper, postmaster) and _is_autoctl(pid))
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
                rows = self._observer.query(self.port(node), "SELECT pg_is_in_recovery(), "
                                            "current_setting('transaction_read_only') = 'on', "
                                            "current_setting('synchronous_standby_names')")
                if not rows or rows[0][0] or node == fault.member:
                    continue
                first.setdefault("promoted", now - fault.at)
                if not rows[0][1]:
                    writable.append(node)
                    first.setdefault("writable", now - fault.at)
                    samples.append(SyncSample(time.time(), f"{ADDRESS}:{self.port(node)}", rows[0][2]))
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
            "sync_off": _sync_off(samples, fault.at),
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
            rows = self._observer.query(self.port(fault.member), "SELECT pg_is_in_recovery()")
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
        if self._root is None or not self._base(self.root).exists():
            return
        leftovers = self.pids()
        keepers = [p for i in (*NODES, "monitor") if (p := self.keeper_pid(i)) is not None]
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda pid: stop(pid, timeout=30), keepers))
            postmasters = [p for i in (*NODES, "monitor") if (p := self.postmaster_pid(i)) is not None]
            list(pool.map(lambda pid: stop(pid, sig=signal.SIGINT, timeout=15), postmasters))
        for pid in leftovers:
            if is_running(pid):  # collected before the stops: ours, not a reused PID
                stop(pid, sig=signal.SIGKILL, timeout=5)
        for instance in ("monitor", *NODES):
            self._pidfile(instance).unlink(missing_ok=True)


def _setting(value: str) -> str:
    """What pg_settings shows for a value we set: ms units are stored as the bare number."""
    return value.removesuffix("ms")


def _sync_off(samples: list[SyncSample], fault_at: float) -> dict[str, Any]:
    """The new primary's window(s) with ``synchronous_standby_names = ''`` (writes then are not zero-loss)."""
    windows: list[list[float]] = []
    for sample in samples:
        off = sample.synchronous_standby_names.strip() == ""
        if off and (not windows or windows[-1][1] >= 0):
            windows.append([sample.at - fault_at, -1.0])
        elif not off and windows and windows[-1][1] < 0:
            windows[-1][1] = sample.at - fault_at
    return {"windows_s": [[round(a, 3), None if b < 0 else round(b, 3)] for a, b in windows],
            "total_s": round(sum((b if b >= 0 else samples[-1].at - fault_at) - a for a, b in windows), 3)}
