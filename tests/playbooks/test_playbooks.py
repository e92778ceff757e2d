"""Host operations as playbooks: the generated inventory, and fence / provision / rejoin on a real lab.

The lab tests bring up their own lab on ports from DRCTL_TEST_PORT_BASE+2000, so they can run beside the
session lab. The rejoin scenario is the one the controller will drive after a failover:
kill -9 the primary, promote a synchronous standby, re-point the others, write, then run
``rejoin.yml`` on the old primary and check it streams from the new one with every row.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from orchestrator import decisions as d
from orchestrator import pgserver
from orchestrator import postgres as pg
from orchestrator.errors import InvalidInput, PlaybookFailed
from orchestrator.lab import Lab
from orchestrator.playbooks import (
    PlaybookRunner,
    PlaybookStatus,
    fence_extravars,
    inventory,
    member_host,
    rejoin_extravars,
)
from orchestrator.processes import is_running, port_in_use
from orchestrator.topology import Topology, parse_topology, with_port_base
from orchestrator.waiting import poll
from tests.conftest import TEST_PORT_BASE, make_lab_dir

PORT_BASE = TEST_PORT_BASE + 2000
CLUSTER = "payments"
REWIND_TASK = "Rewind the data directory from the upstream (pg_rewind)"
CLONE_TASK = "Clone the upstream over the member's slot (pg_basebackup)"
STOP_TASK = "Stop the server immediately"


# ---- the inventory (no servers) --------------------------------------------------------------


def test_inventory_groups_lab_hosts_by_region_datacenter_and_cluster(shipped_topology: Topology) -> None:
    inv = inventory(shipped_topology)["all"]
    # The witness site's host runs only a ZooKeeper server: in the inventory, in no cluster's group.
    assert set(inv["hosts"]) == {"dc1-host", "dc2-host", "dc3-host", "witness-host"}
    for name, region, dc in (("dc1-host", "east", "dc1"), ("dc2-host", "east", "dc2"), ("dc3-host", "west", "dc3"),
                             ("witness-host", "central", "witness")):
        assert inv["hosts"][name] == {
            "ansible_host": "127.0.0.1",
            "ansible_connection": "local",
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "dr_region": region,
            "dr_datacenter": dc,
        }
    groups = inv["children"]
    assert groups["region_east"] == {"children": {"dc_dc1": {}, "dc_dc2": {}}}
    assert groups["region_west"] == {"children": {"dc_dc3": {}}}
    assert groups["region_central"] == {"children": {"dc_witness": {}}}
    assert groups["dc_dc1"] == {"hosts": {"dc1-host": {}}}
    assert groups["dc_dc3"] == {"hosts": {"dc3-host": {}}}
    assert set(groups["cluster_payments"]["hosts"]) == {"dc1-host", "dc2-host", "dc3-host"}
    cluster = shipped_topology.cluster(CLUSTER)
    assert member_host(shipped_topology, cluster.member("dc1-b")) == "dc1-host"
    assert member_host(shipped_topology, cluster.member("dc3-a")) == "dc3-host"


def test_ansible_reads_the_inventory_as_generated(shipped_topology: Topology, tmp_path: Path) -> None:
    """ansible-inventory sees the same groups, and warns about nothing (e.g. '-' in group names)."""
    path = tmp_path / "hosts.json"
    path.write_text(json.dumps(inventory(shipped_topology)))
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(path), "--list"],
        capture_output=True, text=True, timeout=60, check=True,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1"},
    )
    assert "WARNING" not in proc.stderr, proc.stderr
    listed = json.loads(proc.stdout)
    assert set(listed["region_east"]["children"]) == {"dc_dc1", "dc_dc2"}
    assert listed["cluster_payments"]["hosts"] == ["dc1-host", "dc2-host", "dc3-host"]
    assert listed["_meta"]["hostvars"]["dc2-host"]["dr_datacenter"] == "dc2"


def test_remote_hosts_are_reached_over_ssh() -> None:
    topo = parse_topology({
        "name": "remote",
        "regions": [
            {"name": "east", "datacenters": [
                {"name": "dc1", "hosts": [{"name": "db-1", "address": "10.0.0.11"}]},
                {"name": "dc2", "hosts": [{"name": "db-2", "address": "10.0.1.11"}]},
            ]},
            {"name": "west", "datacenters": [{"name": "dc3", "hosts": [{"name": "db-3", "address": "10.1.0.11"}]}]},
        ],
        "clusters": [{"name": "ledger-eu", "members": [
            {"name": "a", "datacenter": "dc1", "role": "primary"},
            {"name": "b", "datacenter": "dc2"},
        ]}],
    })
    inv = inventory(topo)["all"]
    assert inv["hosts"]["db-1"] == {"ansible_host": "10.0.0.11", "dr_region": "east", "dr_datacenter": "dc1"}
    assert set(inv["children"]["cluster_ledger_eu"]["hosts"]) == {"db-1", "db-2"}  # '-' is not valid in a group


def test_rejoin_extravars_carry_the_rendered_files_and_refuse_the_member_itself(shipped_topology: Topology) -> None:
    cluster = shipped_topology.cluster(CLUSTER)
    layout = pgserver.InstanceLayout(shipped_topology, cluster, cluster.member("dc1-a"), Path("/srv/lab"))
    upstream = pgserver.member_endpoint(shipped_topology, cluster, cluster.member("dc1-b"))
    creds = pg.Credentials("postgres", "s3cr{{et", "replicator", "r3pl", "app", "app")
    extravars = rejoin_extravars(layout, upstream, creds)
    assert extravars["pgdata"] == "/srv/lab/pg/payments/dc1-a/data"
    assert extravars["postgresql_conf"] == layout.postgresql_conf()
    assert extravars["pg_hba_conf"] == pgserver.PG_HBA
    assert extravars["auto_conf"] == layout.auto_conf(upstream, creds)
    assert "primary_slot_name = 'dc1_a'" in str(extravars["auto_conf"])
    assert extravars["rewind_password"] == "s3cr{{et"
    assert "password" not in str(extravars["rewind_source"])  # off the command line
    with pytest.raises(InvalidInput, match="standby of itself"):
        rejoin_extravars(layout, layout.endpoint, creds)


def test_unknown_playbook_or_limit_is_refused_before_running(shipped_topology: Topology, tmp_path: Path) -> None:
    runner = PlaybookRunner(shipped_topology, tmp_path / "ansible")
    with pytest.raises(InvalidInput, match=r"playbook '\.\./x\.yml'"):
        runner.run("../x.yml", limit=None, extravars={})
    with pytest.raises(InvalidInput, match="'dc9-host' is neither a host nor a group"):
        runner.run("fence.yml", limit="dc1-host:dc9-host", extravars={})


def test_a_failed_run_names_playbook_host_and_task(shipped_topology: Topology, tmp_path: Path) -> None:
    """Three hosts for a one-member playbook: it stops at its first check, on every host."""
    runner = PlaybookRunner(shipped_topology, tmp_path / "ansible")
    extravars = {"pgdata": str(tmp_path / "none"), "bin_dir": "/nonexistent", "os_user": "postgres"}
    with pytest.raises(PlaybookFailed) as caught:
        runner.run("fence.yml", limit="cluster_payments", extravars=extravars)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("playbook fence.yml failed on dc")
    assert "at task 'Check the request names one host and one data directory'" in message
    assert "fence acts on exactly one member" in message
    result = runner.run("fence.yml", limit="cluster_payments", extravars=extravars, check=False)
    assert not result.ok and result.failed_task is not None and result.rc != 0


def test_runs_leave_signal_handlers_alone_and_can_be_cancelled(shipped_topology: Topology, tmp_path: Path) -> None:
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    runner = PlaybookRunner(shipped_topology, tmp_path / "ansible")
    extravars = {"pgdata": str(tmp_path / "none"), "bin_dir": "/nonexistent", "os_user": "postgres"}
    assert runner.run("fence.yml", limit="dc1-host", extravars=extravars).ok  # no postmaster.pid: nothing to do
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    runner.cancel()
    cancelled = runner.run("fence.yml", limit="dc1-host", extravars=extravars, check=False)
    assert cancelled.status is PlaybookStatus.CANCELED
    assert cancelled.summary().startswith("playbook fence.yml canceled: was cancelled")


# ---- the lab -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pb_lab(shipped_topology: Topology) -> Iterator[Lab]:
    topology = with_port_base(shipped_topology, PORT_BASE)
    taken = [port for port in topology.port_plan().values() if port_in_use("127.0.0.1", port)]
    if taken:  # fail clearly rather than through a lab half-started on someone else's ports
        pytest.fail(f"ports {taken} are in use: is another run of tests/playbooks going on?")
    lab = Lab(topology, make_lab_dir("drctl-pb-"), controllers=False)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def runner(pb_lab: Lab) -> PlaybookRunner:
    return PlaybookRunner(pb_lab.topology, pb_lab.root / "ansible")


def _endpoint(lab: Lab, member: str) -> pg.Endpoint:
    cluster = lab.topology.cluster(CLUSTER)
    return lab.layout(cluster, cluster.member(member)).endpoint


def _write_rows(lab: Lab, first: int, count: int, phase: str) -> set[int]:
    """Insert rows through the application's multi-host string: they land on the primary."""
    ids = set(range(first, first + count))
    with psycopg.connect(lab.app_connection_string(lab.topology.cluster(CLUSTER)), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS pb_marker (id bigint PRIMARY KEY, phase text NOT NULL)")
        for row_id in sorted(ids):
            conn.execute("INSERT INTO pb_marker VALUES (%s, %s)", (row_id, phase))
    return ids


def _rows_on(lab: Lab, member: str) -> set[int]:
    with pg.connect(_endpoint(lab, member), lab.credentials, dbname="payments", timeout=2) as conn:
        return {int(str(r[0])) for r in conn.execute("SELECT id FROM pb_marker")}


def _wait_rows(lab: Lab, member: str, want: set[int], timeout: float = 15) -> None:
    """Wait until ``member`` holds exactly the rows ``want`` (no more: diverged rows must be gone)."""
    have: set[int] = set()

    def exactly() -> bool:
        nonlocal have
        have = _rows_on(lab, member)
        return have == want

    assert poll(exactly, timeout=timeout, interval=0.05), \
        f"{member} has {len(have)} rows, missing {sorted(want - have)[:10]}"


def _replication(lab: Lab, primary: str) -> dict[str, tuple[str, str]]:
    """``application_name -> (state, sync_state)`` from the primary's pg_stat_replication."""
    with pg.connect(_endpoint(lab, primary), lab.credentials, timeout=2) as conn:
        rows = conn.execute("SELECT application_name, state, sync_state FROM pg_stat_replication").fetchall()
    return {str(name): (str(state), str(sync)) for name, state, sync in rows}


def _wait_streaming(lab: Lab, primary: str, member: str, timeout: float = 20) -> tuple[str, str]:
    state: tuple[str, str] | None = None

    def streaming() -> bool:
        nonlocal state
        state = _replication(lab, primary).get(member)
        return state is not None and state[0] == "streaming"

    assert poll(streaming, timeout=timeout, interval=0.05) and state is not None, \
        f"{member} not streaming from {primary} after {timeout}s: {state}"
    return state


def _wait_caught_up(lab: Lab, primary: str, standbys: int, timeout: float = 15) -> None:
    """Every standby has replayed everything the primary wrote so far."""
    with pg.connect(_endpoint(lab, primary), lab.credentials, timeout=2) as conn:
        (lsn,) = conn.execute("SELECT pg_current_wal_lsn()").fetchone()  # type: ignore[misc]

        def replayed() -> bool:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE replay_lsn >= %s::pg_lsn) FROM pg_stat_replication", (str(lsn),)
            ).fetchone()
            return row is not None and row[0] == standbys

        assert poll(replayed, timeout=timeout, interval=0.05), \
            f"standbys of {primary} did not replay {lsn} in {timeout}s"


@pytest.mark.lab
def test_fence_stops_a_member_by_its_postmaster_pid_and_is_idempotent(pb_lab: Lab, runner: PlaybookRunner) -> None:
    cluster = pb_lab.topology.cluster(CLUSTER)
    member = cluster.member("dc3-a")
    layout = pb_lab.layout(cluster, member)
    pid = layout.postmaster_pid()
    assert pid is not None
    host = member_host(pb_lab.topology, member)

    first = runner.run("fence.yml", limit=host, extravars=fence_extravars(layout))
    assert first.changed_tasks == (STOP_TASK,)
    assert not is_running(pid) and layout.postmaster_pid() is None
    again = runner.run("fence.yml", limit=host, extravars=fence_extravars(layout))
    assert again.ok and again.changed_tasks == ()

    pgserver.start(layout)  # leave the lab whole for the next test
    _wait_streaming(pb_lab, "dc1-a", "dc3-a")


@pytest.mark.lab
def test_provision_replica_clones_a_lost_standby(pb_lab: Lab, runner: PlaybookRunner) -> None:
    cluster = pb_lab.topology.cluster(CLUSTER)
    member = cluster.member("dc3-a")
    layout = pb_lab.layout(cluster, member)
    rows = _write_rows(pb_lab, 1000, 5, "before-provision")
    pgserver.stop(layout, mode="immediate")
    shutil.rmtree(layout.data)

    extravars = rejoin_extravars(layout, _endpoint(pb_lab, "dc1-a"), pb_lab.credentials)
    result = runner.run("provision_replica.yml", limit=member_host(pb_lab.topology, member), extravars=extravars)
    assert CLONE_TASK in result.changed_tasks
    assert _wait_streaming(pb_lab, "dc1-a", "dc3-a") == ("streaming", "async")
    assert (layout.data / "postgresql.conf").read_text() == layout.postgresql_conf()
    _wait_rows(pb_lab, "dc3-a", rows)

    again = runner.run("provision_replica.yml", limit=member_host(pb_lab.topology, member), extravars=extravars)
    assert again.changed_tasks == ()  # a running standby is left alone


@pytest.mark.lab
def test_rejoin_touches_nothing_when_the_upstream_is_not_a_primary(pb_lab: Lab, runner: PlaybookRunner) -> None:
    cluster = pb_lab.topology.cluster(CLUSTER)
    member = cluster.member("dc3-a")
    layout = pb_lab.layout(cluster, member)
    pid = layout.postmaster_pid()
    extravars = rejoin_extravars(layout, _endpoint(pb_lab, "dc2-a"), pb_lab.credentials)  # a standby
    refused = r"at task 'Check the upstream is a primary': upstream dc2-a .* is in recovery"
    with pytest.raises(PlaybookFailed, match=refused):
        runner.run("rejoin.yml", limit=member_host(pb_lab.topology, member), extravars=extravars)
    assert pid is not None and layout.postmaster_pid() == pid


@pytest.mark.lab
def test_a_failed_start_reports_the_log_line_and_a_rerun_recovers(pb_lab: Lab, runner: PlaybookRunner) -> None:
    cluster = pb_lab.topology.cluster(CLUSTER)
    member = cluster.member("dc3-a")
    layout = pb_lab.layout(cluster, member)
    good = rejoin_extravars(layout, _endpoint(pb_lab, "dc1-a"), pb_lab.credentials)
    bad = {**good, "postgresql_conf": str(good["postgresql_conf"]) + "no_such_setting = 1\n"}
    host = member_host(pb_lab.topology, member)
    cause = 'pg_ctl start failed: .*unrecognized configuration parameter "no_such_setting"'
    with pytest.raises(PlaybookFailed, match=f"on dc3-host at task 'Report why the standby did not start': {cause}"):
        runner.run("rejoin.yml", limit=host, extravars=bad)
    assert layout.postmaster_pid() is None
    runner.run("rejoin.yml", limit=host, extravars=good)  # re-running from the start is the recovery
    _wait_streaming(pb_lab, "dc1-a", "dc3-a")


@pytest.mark.lab
def test_rejoin_falls_back_to_a_fresh_clone_when_pg_rewind_fails(pb_lab: Lab, runner: PlaybookRunner) -> None:
    cluster = pb_lab.topology.cluster(CLUSTER)
    member = cluster.member("dc3-a")
    layout = pb_lab.layout(cluster, member)
    _write_rows(pb_lab, 2000, 5, "before-reclone")
    pgserver.stop(layout, mode="immediate")
    (layout.data / "global" / "pg_control").unlink()  # pg_rewind cannot read the target

    extravars = rejoin_extravars(layout, _endpoint(pb_lab, "dc1-a"), pb_lab.credentials)
    result = runner.run("rejoin.yml", limit=member_host(pb_lab.topology, member), extravars=extravars)
    assert CLONE_TASK in result.changed_tasks
    _wait_streaming(pb_lab, "dc1-a", "dc3-a")
    _wait_rows(pb_lab, "dc3-a", _rows_on(pb_lab, "dc1-a"))


@pytest.mark.lab
def test_rejoin_turns_the_killed_old_primary_into_a_standby_of_the_new_one(pb_lab: Lab, runner: PlaybookRunner) -> None:
    topo, creds = pb_lab.topology, pb_lab.credentials
    cluster = topo.cluster(CLUSTER)
    old, new = cluster.member("dc1-a"), cluster.member("dc1-b")
    before = _write_rows(pb_lab, 1, 50, "before-failover")
    _wait_caught_up(pb_lab, old.name, standbys=3)

    # The failover, as the controller will do it.
    pid = pb_lab.layout(cluster, old).postmaster_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    new_endpoint = _endpoint(pb_lab, new.name)
    pg.promote(new_endpoint, creds)
    pg.checkpoint(new_endpoint, creds)  # pg_rewind reads the new timeline from the control file
    pg.ensure_slots(new_endpoint, creds, [m.slot_name for m in cluster.members if m != new])
    pg.reserve_slot(new_endpoint, creds, old.slot_name)  # as the controller does before a rejoin
    for other in (cluster.member("dc2-a"), cluster.member("dc3-a")):
        conninfo = pg.primary_conninfo(new_endpoint, other.name, creds, str(pb_lab.layout(cluster, other).passfile))
        pg.repoint(_endpoint(pb_lab, other.name), creds, conninfo=conninfo, slot=other.slot_name)
    _wait_streaming(pb_lab, new.name, "dc2-a")  # a synchronous commit needs a quorum again
    after = _write_rows(pb_lab, 100, 50, "after-failover")

    extravars = rejoin_extravars(pb_lab.layout(cluster, old), new_endpoint, creds)
    result = runner.run("rejoin.yml", limit=member_host(topo, old), extravars=extravars)

    assert REWIND_TASK in result.changed_tasks and CLONE_TASK not in result.changed_tasks, result.changed_tasks
    # Back as a standby of the new primary, streaming from it, with every row: asynchronously, as
    # with RPO 0 a member in the new primary's data centre (dc1) does not confirm its commits.
    quorum = d.Policy.from_topology(topo, cluster).quorum_for(new.name)[0]
    assert _wait_streaming(pb_lab, new.name, old.name) == ("streaming", "quorum" if old.name in quorum else "async")
    with pg.connect(_endpoint(pb_lab, old.name), creds, timeout=2) as conn:
        row = conn.execute("SELECT pg_is_in_recovery(), sender_port FROM pg_stat_wal_receiver").fetchone()
    assert row == (True, new_endpoint.port)
    on_primary = _rows_on(pb_lab, new.name)
    assert before | after <= on_primary
    _wait_rows(pb_lab, old.name, on_primary)
    later = _write_rows(pb_lab, 200, 5, "after-rejoin")
    _wait_rows(pb_lab, old.name, on_primary | later)
