"""From stored drill reports to a projection page: grouping by failure kind, JSON, HTML, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.drills.report import write_report
from orchestrator.errors import InvalidInput, TopologyError
from orchestrator.slo.evidence import sources
from orchestrator.slo.page import PROJECTION_HTML, PROJECTION_JSON, list_projections, write_projection
from orchestrator.slo.projection import PLANNED_SWITCHOVER, Projection, project
from orchestrator.topology import Topology, parse_topology
from tests.drills.test_report import START, make_report

REPO = Path(__file__).resolve().parents[2]
DAY = 86_400.0


def test_reports_are_grouped_by_the_kind_their_fault_reproduces(shipped_topology: Topology) -> None:
    crash = make_report(shipped_topology)
    old_crash = make_report(shipped_topology, started_at=START - 200 * DAY)
    switch = crash.model_copy(update={"fault": "switchover"})
    elsewhere = crash.model_copy(update={"cluster": "other"})
    cluster = shipped_topology.cluster("payments")
    got = {s.name: s for s in sources([crash, old_crash, switch, elsewhere], cluster, now=START + 10 * DAY)}
    rto = crash.measurement.outage.rto_seconds
    assert got["primary-crash"].rto_samples == (rto, rto)
    assert got["primary-crash"].newest_age_days == pytest.approx(10.0)
    assert got["primary-crash"].rate_per_year == 12
    assert got[PLANNED_SWITCHOVER].rto_samples == (rto,) and got[PLANNED_SWITCHOVER].planned
    assert got["region-loss"].rto_samples == () and got["region-loss"].rate_per_year == 0.2
    assert got["datacenter-outage"].rto_samples == ()
    # A lost region and a data centre gone silent count for their kinds once drilled.
    region = crash.model_copy(update={"fault": "region-loss"})
    silent = crash.model_copy(update={"fault": "partition-datacenter"})
    outage = crash.model_copy(update={"fault": "datacenter-outage"})
    got = {s.name: s for s in sources([region, silent, outage], cluster, now=START + DAY)}
    assert got["region-loss"].rto_samples == (rto,)
    assert got["datacenter-outage"].rto_samples == (rto, rto)


def test_projection_page_and_json(shipped_topology: Topology, tmp_path: Path) -> None:
    cluster = shipped_topology.cluster("payments")
    srcs = sources([make_report(shipped_topology)], cluster, now=START + DAY)
    p = project("payments", srcs, target_percent=99.99, seed=7, years=5_000)
    path = write_projection(p, tmp_path, generated_at=START, slo={"availability": "99.99%"})
    assert Projection.model_validate_json((path / PROJECTION_JSON).read_text()) == p
    html = (path / PROJECTION_HTML).read_text()
    assert "NOT MEASURED" in html and "region-loss" in html and "<svg" in html
    assert "only 1 drill(s), fewer than 5" in html
    assert list_projections(tmp_path) == [path]


def test_slo_project_command_is_reproducible(shipped_topology: Topology, tmp_path: Path) -> None:
    for i in range(3):
        write_report(make_report(shipped_topology, started_at=START + i), tmp_path)
    args = ["slo", "project", "payments", "--seed", "3", "--years", "2000", "--format", "json",
            "--reports-dir", str(tmp_path), "--topology", str(REPO / "topology" / "lab.yaml")]
    first = CliRunner().invoke(app, args)
    second = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout) == json.loads(second.stdout)
    crash = next(s for s in json.loads(first.stdout)["sources"] if s["name"] == "primary-crash")
    assert crash["drills"] == 3 and crash["strength"] == "weak"
    text = CliRunner().invoke(app, [*args[:-4], "--format", "text", *args[-4:]])
    assert text.exit_code == 0 and "INCOMPLETE: no drill measured" in " ".join(text.stdout.split())
    bad = CliRunner().invoke(app, [*args[:-4], "--format", "pdf", *args[-4:]])
    assert isinstance(bad.exception, InvalidInput) and str(bad.exception).startswith("--format: 'pdf'")


@pytest.mark.parametrize(("slo", "message"), [
    pytest.param({"incidents_per_year": {"primary-crsh": 3}}, r"slo\.incidents_per_year: unknown incident kind "
                 r"'primary-crsh'; use one of primary-crash", id="unknown-kind"),
    pytest.param({"incidents_per_year": {"region-loss": -1}}, r"region-loss: -1 is not a rate", id="negative-rate"),
    pytest.param({"write_latency_p99_ms": 0}, r"slo\.write_latency_p99_ms: Input should be greater than 0",
                 id="zero-latency"),
    pytest.param({"p99": 3}, r"slo\.p99: unknown field", id="unknown-field"),
])
def test_bad_slo_names_the_field(slo: dict[str, object], message: str) -> None:
    data = yaml.safe_load((REPO / "topology" / "lab.yaml").read_text())
    data["clusters"][0]["slo"] = slo
    with pytest.raises(TopologyError, match=message):
        parse_topology(data)


def test_slo_defaults_can_be_changed(shipped_topology: Topology) -> None:
    data = yaml.safe_load((REPO / "topology" / "lab.yaml").read_text())
    data["clusters"][0]["slo"] = {"write_latency_p99_ms": 20, "incidents_per_year": {"primary-crash": 4},
                                  "switchovers_per_year": 52}
    slo = parse_topology(data).cluster("payments").slo
    assert (slo.write_latency_p99_ms, dict(slo.incidents_per_year), slo.switchovers_per_year) == (
        20, {"primary-crash": 4}, 52)
    assert shipped_topology.cluster("payments").slo.write_latency_p99_ms == 50
