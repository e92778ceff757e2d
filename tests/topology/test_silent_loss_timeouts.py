"""Every timeout that bounds a silent loss is in what the lab renders: connection strings, server
settings, the walreceiver's conninfo, ZooKeeper's command line, and the stall tolerance derived from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from orchestrator.decisions.detection import stall_tolerance_s
from orchestrator.ensemble import ZooKeeperServer
from orchestrator.pgserver import InstanceLayout, member_endpoint
from orchestrator.postgres import Credentials, primary_conninfo
from orchestrator.topology import Topology

CREDS = Credentials("su", "sup", "repl", "replp", "app", "appp")


def _settings(conf: str) -> dict[str, str]:
    out = {}
    for line in conf.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip().strip("'")
    return out


def test_the_client_string_bounds_connects_sends_and_idle_waits(shipped_topology: Topology) -> None:
    cluster = shipped_topology.cluster("payments")
    params = conninfo_to_dict(shipped_topology.connection_string(cluster, user="app", password="x"))
    assert params["target_session_attrs"] == "read-write"
    assert int(params["connect_timeout"]) >= 2          # libpq 15 rounds anything lower up to 2
    assert 0 < int(params["tcp_user_timeout"]) <= 2000
    assert params["keepalives"] == "1"
    idle = int(params["keepalives_idle"]) + int(params["keepalives_interval"]) * int(params["keepalives_count"])
    assert idle <= 5, params


def test_the_walreceiver_conninfo_bounds_reconnects_and_silent_streams(shipped_topology: Topology) -> None:
    cluster = shipped_topology.cluster("payments")
    upstream = member_endpoint(shipped_topology, cluster, cluster.initial_primary)
    params = conninfo_to_dict(primary_conninfo(upstream, "dc2-a", CREDS, "/tmp/pass"))
    assert params["host"] == upstream.address and int(params["port"]) == upstream.port
    assert params["application_name"] == "dc2-a"
    assert int(params["connect_timeout"]) == 2
    assert params["keepalives"] == "1" and int(params["keepalives_count"]) >= 1
    assert 0 < int(params["tcp_user_timeout"]) <= 5000


def test_the_server_settings_end_silent_replication_streams_in_seconds(shipped_topology: Topology,
                                                                       tmp_path: Path) -> None:
    cluster = shipped_topology.cluster("payments")
    layout = InstanceLayout(shipped_topology, cluster, cluster.initial_primary, tmp_path)
    settings = _settings(layout.postgresql_conf())
    pg = shipped_topology.postgres
    assert settings["wal_receiver_timeout"] == f"{pg.wal_receiver_timeout_ms}ms"
    assert settings["wal_sender_timeout"] == f"{pg.wal_sender_timeout_ms}ms"
    assert pg.wal_receiver_timeout_ms <= 2000 and pg.wal_sender_timeout_ms <= 2000   # PostgreSQL's 60 s hangs


def test_zookeeper_runs_with_fast_rejoin_and_election_connect_bounds(shipped_topology: Topology,
                                                                     tmp_path: Path) -> None:
    server = ZooKeeperServer(shipped_topology, shipped_topology.zookeeper_datacenters[0], tmp_path)
    command = server.command()
    assert "-Dzookeeper.fastleader.maxNotificationInterval=2000" in command
    assert "-Dzookeeper.cnxTimeout=1000" in command
    config = _settings(server.config())
    zk = shipped_topology.zookeeper
    assert int(config["syncLimit"]) * int(config["tickTime"]) == zk.sync_limit * zk.tick_time_ms <= 2000


@pytest.mark.parametrize(("threshold", "probe_ms", "receiver_ms", "expected"), [
    (2, 1000, 2000, 2.0),     # the lab: the probes decide
    (2, 1000, 6000, 3.0),     # a long receiver timeout keeps standbys streaming longer
    (3, 500, 2000, 1.5),
    (1, 100, 400, 0.2),
], ids=["lab", "receiver-bound", "three-probes", "tight"])
def test_stall_tolerance_is_the_later_of_probe_failures_and_the_walreceiver_giving_up(
        shipped_topology: Topology, threshold: int, probe_ms: int, receiver_ms: int, expected: float) -> None:
    topo = shipped_topology.model_copy(update={
        "controller": shipped_topology.controller.model_copy(
            update={"failure_threshold": threshold, "probe_timeout_ms": probe_ms}),
        "postgres": shipped_topology.postgres.model_copy(update={"wal_receiver_timeout_ms": receiver_ms}),
    })
    assert stall_tolerance_s(topo) == pytest.approx(expected)
