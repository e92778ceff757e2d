"""The witness site: a ZooKeeper server only, and the warning when one region holds a majority."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.errors import TopologyError
from orchestrator.topology import DrFailover, Topology, load_topology, parse_topology, warnings

REPO = Path(__file__).resolve().parents[2]


def shipped() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "topology" / "lab.yaml").read_text())
    return data


def test_the_shipped_lab_spreads_zookeeper_one_per_region() -> None:
    topo = load_topology(REPO / "topology" / "lab.yaml")
    assert [topo.region_of(dc) for dc in topo.zookeeper_datacenters] == ["east", "west", "central"]
    assert topo.datacenter("witness").witness
    assert "witness" not in topo.controller_datacenters
    assert warnings(topo) == []
    payments = topo.cluster("payments")
    assert payments.replication.dr_failover is DrFailover.MANUAL
    assert (payments.targets.region_rto_seconds, payments.targets.region_rpo_seconds) == (10, 5)


def without_witness() -> Topology:
    data = shipped()
    data["regions"] = [r for r in data["regions"] if r["name"] != "central"]
    data["zookeeper"]["datacenters"] = ["dc1", "dc2", "dc3"]
    return parse_topology(data)


def test_a_region_with_a_zookeeper_majority_is_warned_about_with_the_fix() -> None:
    found = warnings(without_witness())
    assert len(found) == 1
    assert found[0].startswith("zookeeper.datacenters: region 'east' holds 2 of the 3 ZooKeeper servers (dc1, dc2)")
    assert "add a witness site" in found[0]


def test_one_region_alone_is_not_warned_about() -> None:
    data = shipped()
    data["regions"] = [r for r in data["regions"] if r["name"] == "east"]
    data["zookeeper"]["datacenters"] = ["dc1"]
    for member in data["clusters"][0]["members"]:
        if member["datacenter"] == "dc3":
            member["datacenter"] = "dc2"
    data["clusters"][0]["replication"].pop("fallback")
    data["clusters"][0]["replication"].pop("dr_lag")
    assert warnings(parse_topology(data)) == []


def _member_on_witness(d: dict[str, Any]) -> None:
    d["clusters"][0]["members"][3]["datacenter"] = "witness"


def _controller_on_witness(d: dict[str, Any]) -> None:
    d["controller"]["datacenters"] = ["dc1", "dc3", "witness"]


def _witness_without_zookeeper(d: dict[str, Any]) -> None:
    d["zookeeper"]["datacenters"] = ["dc1", "dc2", "dc3"]


def _bad_dr_failover(d: dict[str, Any]) -> None:
    d["clusters"][0]["replication"]["dr_failover"] = "sometimes"


@pytest.mark.parametrize(("change", "expected"), [
    (_member_on_witness, "clusters.payments.members.dc3-a.datacenter: 'witness' is a witness site (a ZooKeeper "
                         "server only); place the member in another data centre"),
    (_controller_on_witness, "controller.datacenters: 'witness' is a witness site"),
    (_witness_without_zookeeper, "zookeeper.datacenters: the witness site 'witness' is not listed, so it runs "
                                 "nothing; add 'witness' to zookeeper.datacenters"),
    (_bad_dr_failover, "clusters.0.replication.dr_failover: Input should be 'manual' or 'automatic'"),
], ids=["member", "controller", "no-zookeeper", "dr-failover"])
def test_a_witness_runs_zookeeper_only(change: Any, expected: str) -> None:
    data = shipped()
    change(data)
    with pytest.raises(TopologyError) as caught:
        parse_topology(data, source="t.yaml")
    message = str(caught.value)
    assert message.startswith(f"t.yaml: {expected.split(':')[0]}") and expected in message, message
    assert "\n" not in message
