"""The controller's /metrics: event counters, the error budget, and a real server's scrape, with and without a token.

Two real uvicorn servers on loopback (DRCTL_TEST_PORT_BASE + 6610 and + 6611), one with
``api.metrics_token: false`` (Prometheus scrapes without a token), one with ``true``; the
scrape is parsed with prometheus_client's parser. The cluster state comes from a function
(what the controller reads from ZooKeeper), the drill reports from a real reports directory.
"""

from __future__ import annotations

import http.client
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from orchestrator.api.app import ApiContext, create_app
from orchestrator.api.auth import AllowList, FailedLogins, Role, TokenFile
from orchestrator.api.server import ApiServer
from orchestrator.audit import AuditLog
from orchestrator.backup.errors import BackupFailed
from orchestrator.decisions.archiving import ArchiverStats
from orchestrator.drills.report import REPORT_JSON
from orchestrator.metrics import SECONDS_PER_YEAR, Cached, ControllerMetrics, Counted, DrillOutage, budget_used, counted
from orchestrator.state import ClusterState, Health, MemberRecord
from orchestrator.state import Role as MemberRole
from orchestrator.topology import Topology, load_topology
from tests.conftest import TEST_PORT_BASE
from tests.drills.test_report import START, make_report

OPEN_PORT, TOKEN_PORT = TEST_PORT_BASE + 6610, TEST_PORT_BASE + 6611


@pytest.mark.parametrize(("event", "fields", "expected"), [
    ("done", {"cluster": "p", "kind": "failover"}, Counted("failovers", "p", "done")),
    ("done", {"cluster": "p", "kind": "switchover"}, Counted("switchovers", "p", "done")),
    ("aborted", {"cluster": "p", "kind": "failover"}, Counted("failovers", "p", "aborted")),
    ("switchover-rolled-back", {"cluster": "p"}, Counted("switchovers", "p", "rolled-back")),
    ("fenced", {"cluster": "p", "member": "a"}, Counted("fencing", "p", "before-promotion")),
    ("fenced-stray", {"cluster": "p", "member": "a"}, Counted("fencing", "p", "stray-primary")),
    ("done", {"cluster": "p"}, None),            # a drill's or a rejoin's "done" carries no operation kind
    ("promoted", {"cluster": "p"}, None),
], ids=lambda v: v if isinstance(v, str) else None)
def test_events_counted(event: str, fields: dict[str, str], expected: Counted | None) -> None:
    assert counted(event, fields) == expected


def test_budget_counts_the_last_year_of_one_cluster() -> None:
    now = 10 * SECONDS_PER_YEAR
    outages = [DrillOutage("p", now - 10, 3.1536), DrillOutage("p", now - SECONDS_PER_YEAR - 1, 1000.0),
               DrillOutage("q", now - 10, 1000.0), DrillOutage("p", now - 20, -1.0)]
    # 99.99%: 3153.6 s a year; 3.1536 s of it is 0.1%.
    assert budget_used(outages, "p", 99.99, now) == pytest.approx(0.001)
    assert budget_used([], "p", 99.99, now) == 0.0


def _state() -> ClusterState:
    healthy = Health.HEALTHY
    return ClusterState(cluster="payments", primary="dc2-a", generation=3, timeline=3, leader="dc1:test", members={
        "dc1-a": MemberRecord(health=healthy, role=MemberRole.STANDBY, lag_bytes=512),
        "dc2-a": MemberRecord(health=healthy, role=MemberRole.PRIMARY, lag_bytes=0)})


class Served:
    def __init__(self, topology: Topology, root: Path, port: int, *, token: bool) -> None:
        reports = root / "reports"
        for run, started in (("run-1", START), ("run-2", START + 3600)):   # report.json is what is read
            (reports / run).mkdir(parents=True)
            (reports / run / REPORT_JSON).write_text(make_report(topology, started_at=started).model_dump_json())
        self.metrics = ControllerMetrics(topology, read_state=lambda _name: _state(), reports_dir=reports,
                                         identity="dc1:test", clock=lambda: START + 7200)
        tokens = TokenFile(root / "tokens.json")
        self.viewer = tokens.add("prometheus", Role.VIEWER)
        ctx = ApiContext(topology=topology, root=root, coord=None, served_by="dc1:test",  # type: ignore[arg-type]
                         audit=AuditLog(root / "audit"), tokens=tokens, allow=AllowList(()),
                         limiter=FailedLogins(3, 60.0), drills_dir=None, emit=lambda event, **fields: None,
                         metrics=self.metrics, metrics_token=token)
        self.port = port
        self.http = ApiServer(create_app(ctx), "127.0.0.1", port)

    def get(self, path: str, token: str | None = None) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
            reply = conn.getresponse()
            return reply.status, reply.read().decode()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def servers(shipped_topology: Topology) -> Iterator[tuple[Served, Served]]:
    with tempfile.TemporaryDirectory(prefix="drctl-metrics-") as root:
        open_root, token_root = Path(root) / "open", Path(root) / "token"
        open_root.mkdir()
        token_root.mkdir()
        served = (Served(shipped_topology, open_root, OPEN_PORT, token=False),
                  Served(shipped_topology, token_root, TOKEN_PORT, token=True))
        for each in served:
            each.http.start()
        try:
            yield served
        finally:
            for each in served:
                each.http.stop()


def _families(text: str) -> dict[str, list[Sample]]:
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def test_scrape_without_a_token(servers: tuple[Served, Served]) -> None:
    served = servers[0]
    served.metrics.on_event("done", {"cluster": "payments", "kind": "failover"})
    served.metrics.on_event("fenced", {"cluster": "payments", "member": "dc1-a"})
    status, text = served.get("/metrics")
    assert status == 200
    metrics = _families(text)
    failovers = {s.labels["outcome"]: s.value for s in metrics["drctl_failovers"] if s.name.endswith("_total")}
    assert failovers == {"done": 1.0, "aborted": 0.0, "rolled-back": 0.0}
    assert [s.value for s in metrics["drctl_fencing_events"] if s.name.endswith("_total")] == [1.0]
    assert [s.labels["member"] for s in metrics["drctl_cluster_primary"] if s.value == 1.0] == ["dc2-a"]
    lag = {s.labels["member"]: s.value for s in metrics["drctl_cluster_member_lag_bytes"]}
    assert lag == {"dc1-a": 512.0, "dc2-a": 0.0}
    assert metrics["drctl_cluster_timeline"][0].value == 3.0
    assert metrics["drctl_controller_leader"][0].value == 1.0
    # Two runs of one drill: the newest one's figures, and both outages in the budget.
    rto = metrics["drctl_drill_last_rto_seconds"]
    assert [(s.labels["drill"], s.value) for s in rto] == [("primary-crash", pytest.approx(2.504, abs=0.01))]
    assert metrics["drctl_drill_last_run_timestamp_seconds"][0].value == START + 3600
    assert metrics["drctl_drill_last_passed"][0].value == 1.0
    assert metrics["drctl_error_budget_used_ratio"][0].value == pytest.approx(2 * 2.504 / 3153.6, rel=0.01)


def test_metrics_token_required_when_configured(servers: tuple[Served, Served]) -> None:
    served = servers[1]
    assert served.get("/metrics")[0] == 401
    assert served.get("/metrics", token="wrong")[0] == 401
    status, text = served.get("/metrics", token=served.viewer)
    assert status == 200 and "drctl_cluster_primary" in text


def test_cached_reads_once_per_ttl_and_remembers_failures() -> None:
    now = [0.0]
    calls: list[str] = []

    def read(cluster: str) -> float | None:
        calls.append(cluster)
        if cluster == "broken":
            raise BackupFailed("backup: the store is down")
        return 1000.0 + now[0]

    cached = Cached(read, ttl=300.0, clock=lambda: now[0])
    assert cached("payments") == 1000.0
    now[0] = 299.0
    assert cached("payments") == 1000.0 and cached("broken") is None and cached("broken") is None
    assert calls == ["payments", "broken"]
    now[0] = 300.0
    assert cached("payments") == 1300.0
    assert calls == ["payments", "broken", "payments"]


def test_backup_metrics_from_the_leaders_archiver_reading_and_the_verified_restores() -> None:
    topology = load_topology(Path(__file__).parents[2] / "topology" / "lab-backup.yaml")
    backed = [c.name for c in topology.clusters if c.backup is not None]
    assert backed == ["payments"]
    metrics = ControllerMetrics(topology, read_state=lambda _name: None, reports_dir=None, identity="dc1:test",
                                clock=lambda: START + 75.0, last_verified=lambda cluster: START - 3600.0)
    stats = ArchiverStats(archived_count=7, last_archived_at=START, last_archived_wal="000000010000000000000007",
                          failed_count=2, last_failed_at=START + 30.0, last_failed_wal="000000010000000000000008")
    families = _families(generate_latest(metrics.registry).decode())
    assert families["drctl_backup_archive_lag_seconds"] == []        # nothing read yet: no sample, not 0
    assert [s.value for s in families["drctl_backup_last_verified_restore_timestamp_seconds"]] == [START - 3600.0]
    metrics.note_archiver("payments", "dc1-a", stats)
    families = _families(generate_latest(metrics.registry).decode())
    labels = {"cluster": "payments", "member": "dc1-a"}
    assert [(s.labels, s.value) for s in families["drctl_backup_archive_lag_seconds"]] == [(labels, 75.0)]
    assert [s.value for s in families["drctl_backup_archive_failed_count"]] == [2.0]
    assert [s.value for s in families["drctl_backup_archive_failing"]] == [1.0]
    metrics.note_archiver("payments", "dc1-a", None)   # the primary could not be read: no stale sample
    assert _families(generate_latest(metrics.registry).decode())["drctl_backup_archive_lag_seconds"] == []
