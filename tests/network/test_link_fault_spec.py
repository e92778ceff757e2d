"""Link-fault drill files: what they may name, and their refusal on a lab without namespaces (no I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestrator.drills.runner import DrillRunner
from orchestrator.drills.spec import LINK_FAULTS, load_drill
from orchestrator.errors import DrillFileError
from orchestrator.lab import Lab
from orchestrator.topology import Topology
from tests.conftest import REPO

LINK_DRILLS = ["partition-datacenter", "partition-primary-from-controllers", "isolate-zookeeper-minority",
               "one-way-cut", "flaky-link"]


@pytest.mark.parametrize("drill", LINK_DRILLS)
def test_shipped_link_drills_load(shipped_topology: Topology, drill: str) -> None:
    spec = load_drill(REPO / "drills" / f"{drill}.yaml", shipped_topology)
    assert isinstance(spec.fault, LINK_FAULTS)
    assert spec.fault.kind == drill


def _write(tmp_path: Path, fault: dict[str, object]) -> Path:
    data = yaml.safe_load((REPO / "drills" / "partition-datacenter.yaml").read_text())
    data["fault"] = fault
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("fault", "message"), [
    pytest.param({"kind": "partition-datacenter", "datacenter": "dc9", "duration_s": 5},
                 r"fault\.datacenter: unknown data centre 'dc9'; use one of dc1, dc2, dc3, witness or 'primary'",
                 id="unknown data centre"),
    pytest.param({"kind": "partition-datacenter", "clients": "maybe", "duration_s": 5}, r"fault\.clients",
                 id="clients neither cut nor keep"),
    pytest.param({"kind": "partition-datacenter"}, r"fault\.duration_s", id="no duration"),
    pytest.param({"kind": "one-way-cut", "source": "dc2", "target": "dc2", "duration_s": 5},
                 r"fault\.target: the same data centre as fault\.source", id="one-way cut to itself"),
    pytest.param({"kind": "flaky-link", "between": ["dc1", "dc1"], "duration_s": 5}, r"fault\.between: twice",
                 id="flaky link to itself"),
    pytest.param({"kind": "isolate-zookeeper-minority", "datacenter": "dc2", "duration_s": 5},
                 r"fault\.datacenter: no ZooKeeper server in 'dc2'", id="no ZooKeeper server there"),
])
def test_bad_link_faults_are_rejected_with_the_field(shipped_topology: Topology, tmp_path: Path,
                                                     fault: dict[str, object], message: str) -> None:
    with pytest.raises(DrillFileError, match=message):
        load_drill(_write(tmp_path, fault), shipped_topology)


@pytest.mark.parametrize("drill", LINK_DRILLS)
def test_link_drill_on_a_loopback_lab_is_refused_in_one_line(shipped_topology: Topology, tmp_path: Path,
                                                             drill: str) -> None:
    lab = Lab(shipped_topology, tmp_path / "lab", controllers=False)
    assert not lab.isolated
    reports = tmp_path / "reports"
    with pytest.raises(DrillFileError) as caught:
        DrillRunner(lab, REPO / "drills", reports).run(drill)
    message = str(caught.value)
    assert "\n" not in message and drill in message and "drctl lab up --isolated" in message
    assert not reports.exists()
