"""Bounded cross-region RPO on a whole lab: the DR standby's walreceiver is stopped (SIGSTOP) under write
load; the controller reports the lag growing past the bound in ``drctl status``, raises ``dr-lag-over`` once,
puts dc3-a into the primary's synchronous set so commits wait for it, and once the walreceiver runs again,
releases the commits, clears the alert once, and restores the zero-loss quorum's setting.

A lab of its own (ports from DRCTL_TEST_PORT_BASE+2500), with ``dr_lag: {max_seconds: 2, mode: bounded,
when_down: hold}`` (hold: the walsender's timeout (5 s in the lab) may detach the stopped standby; commits
must keep waiting for it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from orchestrator import postgres as pg
from orchestrator.coordination import Coordinator
from orchestrator.drills.writers import Writers
from orchestrator.errors import CoordinationUnavailable
from orchestrator.lab import Lab
from orchestrator.pgserver import member_endpoint
from orchestrator.state import ClusterState
from orchestrator.topology import Topology, parse_topology, with_port_base
from orchestrator.waiting import poll
from tests.conftest import REPO, TEST_PORT_BASE, make_lab_dir

pytestmark = pytest.mark.lab

CLUSTER = "payments"
BOUND = 2.0


@pytest.fixture(scope="module")
def bounded_lab(shipped_topology: Topology) -> Iterator[Lab]:
    data = with_port_base(shipped_topology, TEST_PORT_BASE + 2500).model_dump(mode="json")
    data["clusters"][0]["replication"]["dr_lag"] = {"max_seconds": BOUND, "mode": "bounded", "when_down": "hold"}
    # No node agents: nothing here fails over, and on a starved machine an agent whose lease writes lag
    # fences a healthy primary (its job), which would only end this test early.
    lab = Lab(parse_topology(data), make_lab_dir("drctl-drlag-"), agents=False)
    try:
        lab.up()
        with psycopg.connect(lab.app_connection_string(lab.topology.cluster(CLUSTER)), autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS dr_lag_writes (id text PRIMARY KEY, filler text)")
        yield lab
    finally:
        lab.down()


def read_state(coord: Coordinator) -> ClusterState | None:
    try:
        return coord.read_state(CLUSTER)[0]
    except CoordinationUnavailable:
        return None  # the observer's own session blinking on a loaded machine: "not yet"


def status_json(lab: Lab) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "status", CLUSTER, "--json",
                          "--lab-dir", str(lab.root)], capture_output=True, text=True, timeout=60, cwd=REPO,
                         check=True)
    cluster = json.loads(out.stdout)["clusters"][0]
    assert isinstance(cluster, dict)
    return cluster


def controller_events(root: Path, name: str) -> list[dict[str, object]]:
    found = []
    for log in sorted((root / "controller").glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if f'"event": "{name}"' in line:
                event = json.loads(line)
                if event.get("cluster") == CLUSTER:
                    found.append(event)
    return found


def sql_value(endpoint: pg.Endpoint, creds: pg.Credentials, query: str) -> object:
    with pg.connect(endpoint, creds, timeout=5.0) as conn:
        row = conn.execute(query).fetchone()
    return row[0] if row else None


def test_a_stalled_dr_standby_is_alerted_once_holds_commits_and_everything_returns(bounded_lab: Lab) -> None:
    lab = bounded_lab
    topo = lab.topology
    cluster = topo.cluster(CLUSTER)
    creds = lab.credentials
    primary = member_endpoint(topo, cluster, cluster.member("dc1-a"))
    dr = member_endpoint(topo, cluster, cluster.member("dc3-a"))
    zk = topo.zookeeper
    coord = Coordinator(topo.zookeeper_hosts(), topo.name, identity="test-observer",
                        session_timeout=20 * zk.tick_time_ms / 1000)
    coord.start()
    writers = Writers(lab.app_connection_string(cluster), "dr_lag_writes", count=3, filler_bytes=500,
                      retry_pause=0.05)
    stopped: int | None = None
    try:
        writers.start()
        assert poll(lambda: writers.count() >= 50, timeout=60, interval=0.05), "the writers never committed"

        def within_bound() -> bool:
            state = read_state(coord)
            record = state.dr_lag if state is not None else None
            return record is not None and record.lag_seconds is not None and record.lag_seconds <= BOUND \
                and not record.over and "dc3-a" in record.members
        assert poll(within_bound, timeout=60, interval=0.1), f"no DR lag within the bound: {read_state(coord)}"
        assert not controller_events(lab.root, "dr-lag-over")

        receiver = sql_value(dr, creds, "SELECT pid FROM pg_stat_wal_receiver")
        assert isinstance(receiver, int), "dc3-a has no walreceiver"
        os.kill(receiver, signal.SIGSTOP)
        stopped = receiver

        def held() -> bool:
            state = read_state(coord)
            record = state.dr_lag if state is not None else None
            return record is not None and record.over and record.held_by("dc1-a") == "dc3-a"
        assert poll(held, timeout=60, interval=0.1), f"dc3-a was never held: {read_state(coord)}"
        assert sql_value(primary, creds, "SHOW synchronous_standby_names") == 'FIRST 2 ("dc3-a", "dc2-a")'
        # commits wait for the stopped DR standby's confirmation
        assert poll(lambda: sql_value(primary, creds, "SELECT count(*) FROM pg_stat_activity "
                                                      "WHERE wait_event = 'SyncRep'") != 0, timeout=30,
                    interval=0.1), "no commit waits for synchronous replication while held"
        status = status_json(lab)
        document = status["dr_lag"]
        assert isinstance(document, dict)
        assert document["over"] is True and document["holding"] == "dc3-a" and document["mode"] == "bounded"
        assert document["max_seconds"] == BOUND and document["lag_seconds"] > BOUND
        members = {m["member"]: m for m in document["members"]}
        assert set(members) == {"dc3-a"} and members["dc3-a"]["receive_lag_s"] > BOUND
        assert len(controller_events(lab.root, "dr-lag-over")) == 1

        acked_at_resume = writers.count()
        os.kill(receiver, signal.SIGCONT)
        stopped = None

        def released() -> bool:
            state = read_state(coord)
            record = state.dr_lag if state is not None else None
            return record is not None and not record.over and record.held_by("dc1-a") is None
        assert poll(released, timeout=90, interval=0.1), f"never released: {read_state(coord)}"
        assert poll(lambda: writers.count() > acked_at_resume + 50, timeout=60, interval=0.1), \
            "commits did not flow again"
        assert sql_value(primary, creds, "SHOW synchronous_standby_names") == 'ANY 1 ("dc2-a")'
        assert len(controller_events(lab.root, "dr-lag-over")) == 1
        assert len(controller_events(lab.root, "dr-lag-recovered")) == 1
        assert len(controller_events(lab.root, "dr-hold")) == 1
        assert len(controller_events(lab.root, "dr-release")) == 1
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        writers.stop()
        coord.stop()
