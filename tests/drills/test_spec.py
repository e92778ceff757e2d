"""Drill files: the shipped ones validate; each bad input is rejected in one line naming its field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.drills.spec import (
    DatacenterOutage,
    FaultKind,
    Switchover,
    find_drill,
    list_drills,
    load_drill,
    parse_drill,
)
from orchestrator.errors import DrillFileError
from orchestrator.topology import Topology

REPO = Path(__file__).resolve().parents[2]
DRILLS = REPO / "drills"
SHIPPED = {
    "primary-crash": FaultKind.KILL_PRIMARY,
    "datacenter-outage": FaultKind.DATACENTER_OUTAGE,
    "controller-leader-crash": FaultKind.CONTROLLER_LEADER_CRASH,
    "zookeeper-server-loss": FaultKind.ZOOKEEPER_SERVER_LOSS,
    "planned-switchover": FaultKind.SWITCHOVER,
    "region-switchover": FaultKind.SWITCHOVER,
}


@pytest.fixture
def raw() -> dict[str, Any]:
    data = yaml.safe_load((DRILLS / "primary-crash.yaml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_drills_validate_against_the_lab(name: str, shipped_topology: Topology) -> None:
    spec = load_drill(DRILLS / f"{name}.yaml", shipped_topology)
    assert spec.name == name
    assert spec.cluster == "payments"
    assert spec.fault.kind is SHIPPED[name]
    assert len(spec.description) > 80
    assert spec.load.duration_s <= 20   # short enough for CI
    assert spec.fault_at_s + spec.observe_s <= spec.load.duration_s


def test_every_shipped_drill_is_listed() -> None:
    assert {p.stem for p in list_drills(DRILLS)} >= set(SHIPPED)
    assert find_drill(DRILLS, "primary-crash") == DRILLS / "primary-crash.yaml"
    with pytest.raises(DrillFileError, match=r"no drill 'primary-crsh'.*primary-crash"):
        find_drill(DRILLS, "primary-crsh")
    assert list_drills(DRILLS / "missing") == []


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    return change


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = data
        for part in parents:
            node = node[part]
        del node[leaf]

    return change


BAD = [
    pytest.param(_set("fault", {"kind": "switchover", "to": "dc1-bb"}),
                 "fault.to: unknown member 'dc1-bb' of cluster 'payments'; use one of dc1-a, dc1-b, dc2-a, dc3-a",
                 id="typo-member"),
    pytest.param(_set("cluster", "paymnts"), "cluster: unknown cluster 'paymnts'; use one of payments",
                 id="unknown-cluster"),
    pytest.param(_set("schedule", "61 * * * *"), "schedule: '61 * * * *' is not a valid cron expression",
                 id="bad-cron"),
    pytest.param(_set("schedule", "0 0 3 * * 1"), "schedule: '0 0 3 * * 1' is not a valid cron expression",
                 id="six-field-cron"),
    pytest.param(_set("fault", {"kind": "kill-primry"}),
                 "fault.kind: unknown fault kind 'kill-primry'; use one of kill-primary, datacenter-outage",
                 id="unknown-fault-kind"),
    pytest.param(_set("fault", {"to": "dc1-b"}), "fault.kind: required field is missing", id="no-fault-kind"),
    pytest.param(_set("obseve_s", 8), "obseve_s: unknown field; remove it or check its spelling", id="unknown-key"),
    pytest.param(_set("fault", {"kind": "kill-primary", "member": "dc1-a"}), "fault.member: unknown field",
                 id="unknown-key-in-fault"),
    pytest.param(_set("load.userz", 5), "load.userz: unknown field", id="unknown-key-in-load"),
    pytest.param(_set("fault", {"kind": "switchover"}), "fault.to: required field is missing; add it",
                 id="switchover-without-target"),
    pytest.param(_set("fault", {"kind": "datacenter-outage", "datacenter": "dc9"}),
                 "fault.datacenter: unknown data centre 'dc9'; use one of dc1, dc2, dc3, witness or 'primary'",
                 id="unknown-datacenter"),
    pytest.param(_set("fault", {"kind": "zookeeper-server-loss", "datacenter": "dc4"}),
                 "fault.datacenter: no ZooKeeper server in 'dc4'", id="unknown-zookeeper-datacenter"),
    pytest.param(_set("fault_at_s", 20), "fault_at_s: 20 s is beyond the load's duration_s 12 s",
                 id="fault-after-load"),
    pytest.param(_set("observe_s", 10), "observe_s: the window ends 14 s into the load but the load stops at 12 s",
                 id="window-after-load"),
    pytest.param(_set("observe_s", 3), "observe_s: 3 s is shorter than the 5 s RTO target", id="window-too-short"),
    pytest.param(_set("load.spawn_rate", 1), "load.spawn_rate: 10 users at 1/s are not all running", id="slow-spawn"),
    pytest.param(_set("targets.rto_seconds", 0), "targets.rto_seconds: Input should be greater than 0",
                 id="zero-rto-target"),
    pytest.param(_drop("load.duration_s"), "load.duration_s: required field is missing; add it", id="no-duration"),
    pytest.param(_set("name", "Primary Crash"), "name: 'Primary Crash' is not a valid name", id="bad-name"),
    pytest.param(_set("abort.rto_factor", 1), "abort.rto_factor: Input should be greater than 1", id="abort-factor"),
]


@pytest.mark.parametrize(("change", "message"), BAD)
def test_bad_drill_is_rejected_with_its_field_path(
    raw: dict[str, Any], shipped_topology: Topology, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    data = copy.deepcopy(raw)
    change(data)
    with pytest.raises(DrillFileError) as info:
        parse_drill(data, shipped_topology, source="drills/x.yaml")
    text = str(info.value)
    assert text.startswith("drills/x.yaml: ")
    assert message in text
    assert "\n" not in text


def test_a_typod_member_in_a_file_is_rejected_before_anything_runs(
    raw: dict[str, Any], shipped_topology: Topology, tmp_path: Path
) -> None:
    raw.update(name="switch", fault={"kind": "switchover", "to": "dc2-x"})
    path = tmp_path / "switch.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(DrillFileError, match=r"switch\.yaml: fault\.to: unknown member 'dc2-x'"):
        load_drill(path, shipped_topology)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("name: [unclosed", "not valid YAML", id="bad-yaml"),
        pytest.param("- a list", "expected a mapping at the top level, got list", id="not-a-mapping"),
    ],
)
def test_unparseable_files(tmp_path: Path, shipped_topology: Topology, text: str, message: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(DrillFileError, match=message):
        load_drill(path, shipped_topology)


def test_missing_file_and_name_mismatch(raw: dict[str, Any], shipped_topology: Topology, tmp_path: Path) -> None:
    with pytest.raises(DrillFileError, match="cannot read drill file"):
        load_drill(tmp_path / "nope.yaml", shipped_topology)
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(DrillFileError, match=r"name: 'primary-crash' differs from the file name 'other\.yaml'"):
        load_drill(path, shipped_topology)


def test_targets_default_from_the_topology_and_can_be_overridden(
    raw: dict[str, Any], shipped_topology: Topology
) -> None:
    cluster = shipped_topology.cluster("payments")
    spec = parse_drill(raw, shipped_topology)
    assert spec.effective_targets(cluster) == cluster.targets
    assert spec.abort_after_s(cluster.targets) == 50.0
    raw["targets"] = {"rto_seconds": 8}
    targets = parse_drill(raw, shipped_topology).effective_targets(cluster)
    assert (targets.rto_seconds, targets.rpo_seconds, targets.availability_percent) == (8, 0, 99.99)


def test_schedule_gives_the_next_run(raw: dict[str, Any], shipped_topology: Topology) -> None:
    assert parse_drill(raw, shipped_topology).next_run(datetime(2025, 1, 1, tzinfo=UTC)) is None
    raw["schedule"] = "0 3 * * 1"
    spec = parse_drill(raw, shipped_topology)
    assert spec.next_run(datetime(2025, 1, 1, tzinfo=UTC)) == datetime(2025, 1, 6, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        pytest.param({"kind": "kill-primary"}, True, id="kill-primary"),
        pytest.param({"kind": "switchover", "to": "dc2-a"}, True, id="switchover"),
        pytest.param({"kind": "datacenter-outage"}, True, id="outage-of-the-primary-dc"),
        pytest.param({"kind": "datacenter-outage", "datacenter": "dc1"}, True, id="outage-of-dc1"),
        pytest.param({"kind": "datacenter-outage", "datacenter": "dc3"}, False, id="outage-of-dc3"),
        pytest.param({"kind": "controller-leader-crash"}, False, id="controller"),
        pytest.param({"kind": "zookeeper-server-loss", "datacenter": "dc3"}, False, id="zookeeper"),
    ],
)
def test_which_faults_must_move_the_primary(
    raw: dict[str, Any], shipped_topology: Topology, fault: dict[str, Any], expected: bool
) -> None:
    raw["fault"] = fault
    spec = parse_drill(raw, shipped_topology)
    assert spec.expects_new_primary("dc1") is expected


def test_fault_defaults(raw: dict[str, Any], shipped_topology: Topology) -> None:
    raw["fault"] = {"kind": "datacenter-outage"}
    fault = parse_drill(raw, shipped_topology).fault
    assert isinstance(fault, DatacenterOutage) and fault.datacenter == "primary"
    raw["fault"] = {"kind": "switchover", "to": "dc3-a"}
    fault = parse_drill(raw, shipped_topology).fault
    assert isinstance(fault, Switchover) and fault.to == "dc3-a"


def test_a_switchover_to_the_initial_primary_is_valid_as_a_switch_back(raw: dict[str, Any],
                                                                       shipped_topology: Topology) -> None:
    """Whether the target is the primary *now* is checked when the drill runs, before its load."""
    raw["fault"] = {"kind": "switchover", "to": "dc1-a"}
    fault = parse_drill(raw, shipped_topology).fault
    assert isinstance(fault, Switchover) and fault.to == "dc1-a"


BACKUP_DRILLS = {"archive-outage": FaultKind.ARCHIVE_OUTAGE, "total-loss-restore": FaultKind.TOTAL_LOSS_RESTORE}


@pytest.mark.parametrize("name", sorted(BACKUP_DRILLS))
def test_backup_drills_validate_against_the_backup_lab_and_name_what_the_plain_lab_lacks(
        name: str, shipped_topology: Topology) -> None:
    from orchestrator.topology import load_topology

    spec = load_drill(DRILLS / f"{name}.yaml", load_topology(REPO / "topology" / "lab-backup.yaml"))
    assert spec.fault.kind is BACKUP_DRILLS[name]
    assert spec.fault_at_s + spec.observe_s <= spec.load.duration_s
    with pytest.raises(DrillFileError, match=rf"fault: {name} needs cluster 'payments' to have a backup section"):
        load_drill(DRILLS / f"{name}.yaml", shipped_topology)


def test_an_archive_outage_that_outlasts_the_load_is_refused() -> None:
    from orchestrator.topology import load_topology

    data = yaml.safe_load((DRILLS / "archive-outage.yaml").read_text())
    data["fault"]["duration_s"] = 200
    with pytest.raises(DrillFileError, match=r"fault\.duration_s: the outage ends 205 s into the load, after it "
                                             r"stops at 110 s; raise load\.duration_s"):
        parse_drill(data, load_topology(REPO / "topology" / "lab-backup.yaml"), source="drills/x.yaml")
