"""Patroni's configuration in the bench: each member's ``patroni.yml`` and its ZooKeeper ensemble.

Pure: :func:`member_config` renders one member's complete configuration and
:func:`dcs_topology` the 3-server ensemble Patroni gets as its DCS; the launcher
(:mod:`orchestrator.bench.patroni`) writes and starts them. Every value that matters for
fairness is here, so the report's settings and the running daemons cannot disagree.

One message in every Patroni bootstrap log is Patroni's own, not ours: with
``synchronous_mode: quorum`` and ``synchronous_mode_strict``, Patroni 4.1's
``post_bootstrap`` sets ``synchronous_standby_names`` to ``'*'`` with no quorum number
(``SyncHandler.set_synchronous_standby_names({'*'})`` formats ``f"ANY {num} (*)"`` with
``num=None``), and PostgreSQL answers ``invalid value for parameter
"synchronous_standby_names": "ANY None (*)"`` / ``syntax error at or near "None"``, keeps
the previous value, and Patroni's next cycle writes ``ANY 1 (...)``. It happens before the
cluster counts as healthy (a quorum standby is required), so before any load;
:data:`BOOTSTRAP_NOTICE` puts this into the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from orchestrator.bench.procs import running_pid
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
SHARED_BUFFERS = "32MB"            # the same memory as dr-orchestrator's lab members get
DCS_OFFSET = 10                    # the ensemble's 9 ports start at port_base + 10
DCS_TICK_MS = 500
BOOTSTRAP_NOTICE = (
    "Patroni 4.1 logs 'invalid value for parameter \"synchronous_standby_names\": \"ANY None (*)\"' "
    "(syntax error at or near \"None\") once per bootstrap: its post_bootstrap sets '*' without a quorum "
    "number in quorum + strict mode; PostgreSQL keeps the previous value and Patroni's next cycle writes "
    "ANY 1 (...). Before the cluster is healthy, so before any load; not a bench setting"
)


@dataclass(frozen=True)
class Node:
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
        return running_pid(self.pidfile)

    def postmaster_pid(self) -> int | None:
        return running_pid(self.data / "postmaster.pid")


def nodes(root: Path, address: str, port_base: int) -> list[Node]:
    """PostgreSQL on ``port_base + i``, the REST API on ``port_base + 3 + i`` (i = 0, 1, 2)."""
    return [Node(name, address, port_base + i, port_base + len(MEMBERS) + i, root / name)
            for i, name in enumerate(MEMBERS)]


def dcs_topology(port_base: int, *, max_session_ms: int = 10_000, tick_time_ms: int = DCS_TICK_MS) -> Topology:
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


def member_config(
    *, scope: str, variant: str, node: Node, zookeeper_hosts: list[str], namespace: str,
    passwords: dict[str, str] | None, strict: bool, bin_dir: str,
) -> dict[str, Any]:
    """The complete ``patroni.yml`` of ``node``; without ``passwords`` they read ``***``."""

    def secret(key: str) -> str:
        return "***" if passwords is None else passwords[key]

    return {
        "scope": scope,
        "namespace": namespace,
        "name": node.name,
        "log": {"level": "INFO"},
        "restapi": {"listen": f"{node.address}:{node.api_port}", "connect_address": f"{node.address}:{node.api_port}"},
        "zookeeper": {"hosts": zookeeper_hosts},
        "bootstrap": {
            "dcs": {
                **TIMINGS[variant],
                "maximum_lag_on_failover": 1048576,
                "synchronous_mode": "quorum",
                "synchronous_mode_strict": strict,
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
            "bin_dir": bin_dir,
            "pgpass": str(node.home / "pgpass"),
            "authentication": {
                "superuser": {"username": "postgres", "password": secret("superuser")},
                "replication": {"username": "replicator", "password": secret("replication")},
            },
            "parameters": {
                # Sockets beside the member, not in the shared /var/run/postgresql.
                "unix_socket_directories": str(node.home),
                "shared_buffers": SHARED_BUFFERS,
            },
            "pg_hba": [
                "local all all scram-sha-256",
                f"host all all {node.address}/32 scram-sha-256",
                f"host replication replicator {node.address}/32 scram-sha-256",
            ],
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
    }


def none_values(config: Any, path: str = "") -> list[str]:
    """Paths of every ``None`` in a rendered config (a YAML ``null`` Patroni would use as a value)."""
    if isinstance(config, dict):
        return [p for key, value in config.items() for p in none_values(value, f"{path}.{key}" if path else str(key))]
    if isinstance(config, list):
        return [p for i, value in enumerate(config) for p in none_values(value, f"{path}[{i}]")]
    return [path] if config is None else []
