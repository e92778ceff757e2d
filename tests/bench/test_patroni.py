"""Patroni's bench launcher against real Patroni daemons and their own real ZooKeeper ensemble.

Start-up and teardown only (no failover round: that takes a ZooKeeper session or more).
Ports DRCTL_TEST_PORT_BASE+4020 to +4038 (the launcher owns 100 from +4000): Patroni's
PostgreSQL on +4020 to +4022, REST APIs on +4023 to +4025, its ensemble on +4030 to +4038.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml

from orchestrator.bench.patroni import TIMINGS, PatroniSystem
from orchestrator.processes import is_running
from tests.conftest import TEST_PORT_BASE, make_lab_dir

# Patroni comes with the dev extra (`make setup`).
pytestmark = pytest.mark.lab

PORT_BASE = TEST_PORT_BASE + 4000


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = make_lab_dir("bench-patroni-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(120)
def test_start_write_stop(workdir: Path) -> None:
    system = PatroniSystem("aggressive", PORT_BASE + 20)
    try:
        system.start(workdir)

        view = system.cluster_view()
        assert view is not None
        members = view["members"]
        assert sorted(m["role"] for m in members if m["role"] == "leader") == ["leader"]
        assert sorted(m["state"] for m in members if m["role"] != "leader") == ["streaming", "streaming"]
        # Patroni asks for a ttl-long session and its own ensemble grants all of it.
        zk = system.settings()["zookeeper"]
        assert zk["requested_session_ms"] == 20000
        assert zk["granted_session_ms"] == {"pg1": 20000, "pg2": 20000, "pg3": 20000}
        assert "clamped" not in zk

        marker = str(uuid.uuid4())
        with psycopg.connect(system.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE TABLE smoke (marker text PRIMARY KEY)")
            conn.execute("INSERT INTO smoke VALUES (%s)", (marker,))
            row = conn.execute("SELECT current_setting('synchronous_standby_names'), current_user, "
                               "inet_server_port()").fetchone()
        assert row is not None
        assert row[0].startswith("ANY 1 (")
        assert row[1] == "app"
        leader = next(m for m in members if m["role"] == "leader")
        assert row[2] == leader["port"]

        # Backends come and go; the daemons and postmasters must stay the same processes.
        daemons = system.daemon_pids()
        system.start(workdir)  # idempotent: already healthy, nothing restarted
        assert sorted(daemons) == sorted(system.daemon_pids())
        pids = system.pids()
    finally:
        system.stop()

    assert [pid for pid in pids if is_running(pid)] == []
    assert system.pids() == []
    # Released: nothing listens (a port may still be some client's local end: that is not ours).
    assert system.listeners() == []


def _validation_errors(config: dict[str, object], tmp_path: Path) -> list[str]:
    path = tmp_path / "patroni.yml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([PatroniSystem("default", PORT_BASE + 20).patroni_bin,
                           "--validate-config", str(path)], capture_output=True, text=True, timeout=60, check=False)
    # The lab's loopback addresses and a stopped ensemble are reported too: keep the DCS timings.
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("bootstrap.dcs.")]


@pytest.mark.timeout(120)
def test_aggressive_timings_are_the_validators_minimum(tmp_path: Path) -> None:
    system = PatroniSystem("aggressive", PORT_BASE + 20)
    config = system.member_config("pg1")

    assert _validation_errors(config, tmp_path) == []
    for key in TIMINGS["aggressive"]:
        lower = copy.deepcopy(config)
        lower["bootstrap"]["dcs"][key] -= 1
        assert [e.split()[0] for e in _validation_errors(lower, tmp_path)] == [f"bootstrap.dcs.{key}"]


def test_settings_before_start_show_the_whole_config() -> None:
    settings = PatroniSystem("default", PORT_BASE + 20).settings()

    assert settings["variant"] == "default"
    dcs = settings["members"]["pg1"]["bootstrap"]["dcs"]
    assert (dcs["ttl"], dcs["loop_wait"], dcs["retry_timeout"]) == (30, 10, 10)
    assert (dcs["synchronous_mode"], dcs["synchronous_node_count"]) == ("quorum", 1)
    assert dcs["postgresql"]["use_pg_rewind"] is True
    assert dcs["postgresql"]["parameters"]["wal_log_hints"] == "on"
    assert settings["members"]["pg1"]["postgresql"]["authentication"]["superuser"]["password"] == "***"
    assert settings["members"]["pg3"]["postgresql"]["listen"] == f"127.0.0.1:{PORT_BASE + 22}"
    assert settings["members"]["pg1"]["zookeeper"]["hosts"] == [f"127.0.0.1:{PORT_BASE + 30 + k}" for k in (0, 3, 6)]
    assert settings["zookeeper"]["max_session_timeout_ms"] == 30000
