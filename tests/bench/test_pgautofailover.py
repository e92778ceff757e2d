"""pg_auto_failover's bench launcher against the real ``pg_autoctl`` (start-up and teardown only).

Ports DRCTL_TEST_PORT_BASE+5000 onwards (the launcher owns 100 from there).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from orchestrator.bench.pgautofailover import NODES, PgAutoFailoverSystem
from orchestrator.processes import is_running, port_in_use
from tests.conftest import TEST_PORT_BASE, make_lab_dir

# `make setup` installs pg_autoctl (Debian's postgresql-15-auto-failover, pg-auto-failover-cli).
pytestmark = pytest.mark.lab

PORT_BASE = TEST_PORT_BASE + 5000


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = make_lab_dir("bench-pgaf-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(150)
def test_start_write_stop(workdir: Path) -> None:
    system = PgAutoFailoverSystem("aggressive", PORT_BASE)
    try:
        system.start(workdir)

        states = system.monitor_states() or []
        assert sorted((s.reported, s.goal) for s in states) == [
            ("primary", "primary"), ("secondary", "secondary"), ("secondary", "secondary")]
        assert system.healthy()
        effective = system.settings()["monitor_gucs_effective"]
        assert effective["pgautofailover.primary_demote_timeout"] == "1ms"
        assert effective["pgautofailover.health_check_max_retries"] == "1"

        marker = str(uuid.uuid4())
        with psycopg.connect(system.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE TABLE smoke (marker text PRIMARY KEY)")
            conn.execute("INSERT INTO smoke VALUES (%s)", (marker,))
            row = conn.execute("SELECT current_setting('synchronous_standby_names'), current_user").fetchone()
        assert row is not None
        assert row[0].startswith("ANY 1 (")
        assert row[1] == "bench"

        system.start(workdir)  # idempotent: already healthy, nothing restarted
        pids = system.pids()
        assert pids
    finally:
        system.stop()

    assert [pid for pid in pids if is_running(pid)] == []
    assert system.pids() == []
    ports = [system.monitor_port, *(system.port(n) for n in NODES)]
    assert [p for p in ports if port_in_use("127.0.0.1", p)] == []


def test_settings_before_start_name_every_command() -> None:
    settings = PgAutoFailoverSystem("default", PORT_BASE).settings()

    assert settings["monitor_gucs_requested"] == "defaults"
    assert any("number-sync-standbys 1" in c for c in settings["commands"])
    assert not any("ALTER SYSTEM" in c for c in settings["commands"])
    aggressive = PgAutoFailoverSystem("aggressive", PORT_BASE).settings()
    assert sum("ALTER SYSTEM SET pgautofailover." in c for c in aggressive["commands"]) == 6
