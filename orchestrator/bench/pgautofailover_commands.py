"""pg_auto_failover in the bench: where each instance lives and the exact ``pg_autoctl`` commands.

Pure: :class:`Layout` maps a variant, a port range and a root directory to data
directories, ports, the environment and every command line the launcher
(:mod:`orchestrator.bench.pgautofailover`) runs; :meth:`Layout.commands` is the same list
in words, written verbatim into the report so the set-up can be repeated by hand. The
monitor's GUCs of the aggressive variant and the small helpers over observed samples are
here too.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from orchestrator.bench.system import SyncSample

Variant = Literal["default", "aggressive"]

ADDRESS = "127.0.0.1"
OS_USER = "postgres"
PG_CTL = "/usr/lib/postgresql/15/bin/pg_ctl"
PG_AUTOCTL = "/usr/bin/pg_autoctl"
DEBIAN_PACKAGES = ("postgresql-15-auto-failover", "pg-auto-failover-cli")
APP_USER = "bench"
APP_DATABASE = "bench"
NODES = ("node1", "node2", "node3")
INSTANCES = ("monitor", *NODES)
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


@dataclass(frozen=True)
class Layout:
    """The monitor on ``port_base``, node *i* on ``port_base + i`` (i = 1..3), all files under ``root``."""

    variant: Variant
    port_base: int
    root: Path

    @property
    def monitor_port(self) -> int:
        return self.port_base

    def port(self, instance: str) -> int:
        return self.port_base + INSTANCES.index(instance)

    def ports(self) -> tuple[int, ...]:
        return tuple(self.port(i) for i in INSTANCES)

    @property
    def base(self) -> Path:
        return self.root / "pgaf"  # owned by postgres: pg_autoctl creates data dirs and backups in it

    def pgdata(self, instance: str) -> Path:
        return self.base / instance

    def pidfile(self, instance: str) -> Path:
        return self.root / "pids" / f"{instance}.pid"

    def log(self, instance: str) -> Path:
        return self.base / "logs" / f"{instance}.log"

    @property
    def monitor_uri(self) -> str:
        return f"postgres://autoctl_node@{ADDRESS}:{self.monitor_port}/pg_auto_failover?sslmode=disable"

    def env(self) -> dict[str, str]:
        xdg = self.base / "xdg"
        return {"PATH": "/usr/bin:/bin", "HOME": str(self.base), "LC_ALL": "C.UTF-8",
                "PGHOST": ADDRESS,  # the keepers reach their own postgres over TCP, not /var/run/postgresql
                "XDG_CONFIG_HOME": str(xdg / "config"), "XDG_DATA_HOME": str(xdg / "data"),
                "XDG_RUNTIME_DIR": str(xdg / "run")}

    # ---- the exact commands ----------------------------------------------------------------

    def create_monitor_argv(self) -> list[str]:
        return [PG_AUTOCTL, "create", "monitor", "--pgctl", PG_CTL, "--pgdata", str(self.pgdata("monitor")),
                "--pgport", str(self.monitor_port), "--hostname", ADDRESS, "--listen", ADDRESS,
                "--no-ssl", "--auth", "trust"]

    def create_node_argv(self, node: str) -> list[str]:
        return [PG_AUTOCTL, "create", "postgres", "--pgctl", PG_CTL, "--pgdata", str(self.pgdata(node)),
                "--pgport", str(self.port(node)), "--pghost", ADDRESS, "--hostname", ADDRESS, "--listen", ADDRESS,
                "--name", node, "--dbname", APP_DATABASE, "--monitor", self.monitor_uri,
                "--no-ssl", "--auth", "trust", "--replication-quorum", "true", "--candidate-priority", "50"]

    def run_argv(self, instance: str) -> list[str]:
        return [PG_AUTOCTL, "run", "--pgdata", str(self.pgdata(instance))]

    def formation_argv(self) -> list[str]:
        return [PG_AUTOCTL, "set", "formation", "number-sync-standbys", "1", "--monitor", self.monitor_uri]

    def guc_statements(self) -> list[str]:
        if self.variant == "default":
            return []
        return [f"ALTER SYSTEM SET {name} = '{value}'" for name, value in AGGRESSIVE_GUCS.items()] + [
            "SELECT pg_reload_conf()"]

    def commands(self) -> list[str]:
        """Every set-up step in order, as a reader would type it."""
        overrides = " ".join(f"{k} = '{v}'" for k, v in POSTGRES_OVERRIDES.items())
        first = NODES[0]
        return [
            shlex.join(self.create_monitor_argv()),
            f"append to monitor/postgresql.auto.conf: {overrides}",
            shlex.join(self.run_argv("monitor")) + " &",
            shlex.join(self.create_node_argv(first)),
            f"append to {first}/postgresql.auto.conf: {overrides} (standbys copy it through pg_basebackup)",
            f"prepend to {first}/pg_hba.conf: host all {APP_USER} {ADDRESS}/32 scram-sha-256",
            shlex.join(self.run_argv(first)) + " &",
            f"CREATE ROLE {APP_USER} LOGIN PASSWORD '<generated>'; ALTER DATABASE {APP_DATABASE} OWNER TO {APP_USER}",
            *(shlex.join(self.create_node_argv(n)) + "  # then its keeper" for n in NODES[1:]),
            *(shlex.join(self.run_argv(n)) + " &" for n in NODES[1:]),
            shlex.join(self.formation_argv()),
            *(f"monitor: {s}" for s in self.guc_statements()),
        ]

    def conninfo(self, password: str) -> str:
        hosts = ",".join(ADDRESS for _ in NODES)
        ports = ",".join(str(self.port(n)) for n in NODES)
        return (f"postgresql://{APP_USER}:{password}@/{APP_DATABASE}"
                f"?host={hosts}&port={ports}&target_session_attrs=read-write&connect_timeout=2")


def setting_value(value: str) -> str:
    """What pg_settings shows for a value we set: ms units are stored as the bare number."""
    return value.removesuffix("ms")


def sync_off(samples: list[SyncSample], fault_at: float) -> dict[str, Any]:
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
