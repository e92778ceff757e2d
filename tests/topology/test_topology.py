"""Topology validation: the shipped file, every contradiction, and generated values."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import TopologyError
from orchestrator.topology import Topology, load_topology, parse_topology, with_port_base

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def raw() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "topology" / "lab.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_shipped_topology_validates(shipped_topology: Topology) -> None:
    cluster = shipped_topology.cluster("payments")
    assert [dc.name for dc in shipped_topology.datacenters] == ["dc1", "dc2", "dc3", "witness"]
    assert cluster.initial_primary.name == "dc1-a"
    assert shipped_topology.synchronous_members(cluster) == ("dc1-a", "dc1-b", "dc2-a")
    # RPO 0: the initial primary's commits are confirmed outside dc1 only.
    assert shipped_topology.synchronous_standby_names(cluster) == 'ANY 1 ("dc2-a")'
    assert shipped_topology.synchronous_standby_names(cluster, ("dc3-a",)) == 'ANY 1 ("dc2-a", "dc3-a")'
    assert shipped_topology.region_of("dc3") == "west"
    assert shipped_topology.zookeeper_datacenters == ("dc1", "dc3", "witness")
    assert shipped_topology.controller_datacenters == ("dc1", "dc2", "dc3")


def _member(data: dict[str, Any], name: str) -> dict[str, Any]:
    members: list[dict[str, Any]] = data["clusters"][0]["members"]
    return next(m for m in members if m["name"] == name)


def _dup_member(d: dict[str, Any]) -> None:
    d["clusters"][0]["members"].append({"name": "dc1-b", "datacenter": "dc2"})


def _dup_dc(d: dict[str, Any]) -> None:
    d["regions"][1]["datacenters"].append({"name": "dc1"})


def _unknown_dc(d: dict[str, Any]) -> None:
    _member(d, "dc2-a")["datacenter"] = "dc9"


def _quorum_too_big(d: dict[str, Any]) -> None:
    d["clusters"][0]["replication"]["quorum"] = 3


def _port_clash(d: dict[str, Any]) -> None:
    _member(d, "dc1-a")["port"] = 6000
    _member(d, "dc1-b")["port"] = 6000


def _primary_outside_regions(d: dict[str, Any]) -> None:
    _member(d, "dc1-a")["datacenter"] = "nowhere"


def _two_primaries(d: dict[str, Any]) -> None:
    _member(d, "dc1-b")["role"] = "primary"


def _sync_cross_region(d: dict[str, Any]) -> None:
    d["clusters"][0]["replication"]["synchronous"] = ["dc1-a", "dc1-b", "dc3-a"]
    d["clusters"][0]["replication"]["fallback"] = []


def _fallback_in_quorum(d: dict[str, Any]) -> None:
    d["clusters"][0]["replication"]["fallback"] = ["dc2-a"]


def _unknown_fallback(d: dict[str, Any]) -> None:
    d["clusters"][0]["replication"]["fallback"] = ["dc4-a"]


def _unknown_field(d: dict[str, Any]) -> None:
    d["clusters"][0]["replica"] = 3


def _even_zookeeper(d: dict[str, Any]) -> None:
    d["zookeeper"]["datacenters"] = ["dc1", "witness"]


def _bad_name(d: dict[str, Any]) -> None:
    _member(d, "dc3-a")["name"] = "DC3_A"


def _zero_rpo_async(d: dict[str, Any]) -> None:
    d["clusters"][0]["replication"]["quorum"] = 0


def _unknown_sync_member(d: dict[str, Any]) -> None:
    d["clusters"][0]["replication"]["synchronous"] = ["dc1-a", "dc1-z"]


def _quorum_inside_one_dc(d: dict[str, Any]) -> None:
    d["clusters"][0]["replication"]["synchronous"] = ["dc1-a", "dc1-b"]


def _synchronous_standby_alone_in_its_dc_with_quorum_2(d: dict[str, Any]) -> None:
    d["clusters"][0]["replication"]["quorum"] = 2   # dc1-a has only dc2-a outside dc1


def _removed_allow_unproven(d: dict[str, Any]) -> None:
    d["clusters"][0]["replication"]["allow_unproven_failover"] = True


def _removed_allow_unproven_among_other_errors(d: dict[str, Any]) -> None:
    d["clusters"][0]["replica"] = 3
    d["clusters"][0]["replication"]["allow_unproven_failover"] = False


def _range_too_small(d: dict[str, Any]) -> None:
    d["ports"]["span"] = 10


def _short_session(d: dict[str, Any]) -> None:
    d["zookeeper"]["session_timeout_ms"] = 500


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        pytest.param(_dup_member, r"clusters\.payments\.members\.dc1-b: member name used twice", id="dup-member"),
        pytest.param(_dup_dc, r"datacenters\.dc1: data centre name used twice", id="dup-datacenter"),
        pytest.param(_unknown_dc, r"members\.dc2-a\.datacenter: unknown data centre 'dc9'; use one of dc1, dc2, dc3",
                     id="unknown-datacenter"),
        pytest.param(_quorum_too_big, r"replication\.quorum: 3 is larger than the 2 synchronous", id="quorum-too-big"),
        pytest.param(_port_clash, r"members\.dc1-b\.port: port 6000 on 127\.0\.0\.1 is already used", id="port-clash"),
        pytest.param(_primary_outside_regions, r"members\.dc1-a\.datacenter: unknown data centre 'nowhere'",
                     id="primary-outside-regions"),
        pytest.param(_two_primaries, r"2 members have role primary \(dc1-a, dc1-b\)", id="two-primaries"),
        pytest.param(_sync_cross_region, r"'dc3-a' is in region 'west', not the primary's region 'east'",
                     id="sync-cross-region"),
        pytest.param(_fallback_in_quorum, r"replication\.fallback: 'dc2-a' is already a quorum candidate",
                     id="fallback-in-quorum"),
        pytest.param(_unknown_fallback, r"replication\.fallback: unknown member 'dc4-a'", id="unknown-fallback"),
        pytest.param(_unknown_field, r"clusters\.0\.replica: unknown field", id="unknown-field"),
        pytest.param(_even_zookeeper, r"zookeeper\.datacenters: 2 servers cannot form a majority", id="even-zk"),
        pytest.param(_bad_name, r"is not a valid name", id="bad-name"),
        pytest.param(_zero_rpo_async, r"targets\.rpo_seconds: 0 needs synchronous replication", id="rpo0-async"),
        pytest.param(_unknown_sync_member, r"replication\.synchronous: unknown member 'dc1-z'", id="unknown-sync"),
        pytest.param(_quorum_inside_one_dc,
                     r"^lab\.yaml: clusters\.payments\.replication\.synchronous: with targets\.rpo_seconds 0 every "
                     r"commit must be confirmed outside the primary's data centre, but dc1-a \(in dc1\) would have 0 "
                     r"quorum candidate\(s\) outside dc1 \(none\) for quorum 1; add members of another data centre "
                     r"to replication\.synchronous", id="rpo0-quorum-inside-the-primarys-dc"),
        pytest.param(_synchronous_standby_alone_in_its_dc_with_quorum_2,
                     r"replication\.synchronous: .* but dc1-a \(in dc1\) would have 1 quorum candidate\(s\) outside "
                     r"dc1 \(dc2-a\) for quorum 2", id="rpo0-quorum-2-with-one-outside"),
        pytest.param(_removed_allow_unproven,
                     r"^lab\.yaml: clusters\.0\.replication\.allow_unproven_failover: this field was removed: .*"
                     r"--accept-data-loss'; delete the field", id="removed-allow-unproven-failover"),
        pytest.param(_removed_allow_unproven_among_other_errors,
                     r"clusters\.0\.replication\.allow_unproven_failover: this field was removed",
                     id="removed-field-reported-first"),
        pytest.param(_range_too_small, r"ports: the range 25400-25409 is too small", id="range-too-small"),
        pytest.param(_short_session, r"session_timeout_ms: 500 is below 2 x tick_time_ms", id="short-session"),
    ],
)
def test_contradiction_is_rejected_with_field_and_fix(
    raw: dict[str, Any], mutate: Any, pattern: str
) -> None:
    data = copy.deepcopy(raw)
    mutate(data)
    with pytest.raises(TopologyError) as info:
        parse_topology(data, source="lab.yaml")
    message = str(info.value)
    assert message.startswith("lab.yaml: ")
    assert "\n" not in message
    assert re.search(pattern, message), message


def test_missing_and_malformed_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="cannot read topology file"):
        load_topology(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("regions: [\n")
    with pytest.raises(TopologyError, match="not valid YAML"):
        load_topology(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(TopologyError, match="expected a mapping"):
        load_topology(scalar)


def test_with_port_base_moves_every_port(shipped_topology: Topology) -> None:
    moved = with_port_base(shipped_topology, 30000)
    before, after = shipped_topology.port_plan(), moved.port_plan()
    assert set(before) == set(after)
    assert all(after[k] - before[k] == 30000 - shipped_topology.ports.base for k in before)


# ---- properties -------------------------------------------------------------------------------

names = st.lists(st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True), min_size=2, max_size=6, unique=True)


def _topology(member_names: list[str], quorum: int, base: int, explicit: dict[int, int]) -> dict[str, Any]:
    members = [
        {"name": f"m-{n}", "datacenter": "dc1", "role": "primary" if i == 0 else "replica",
         **({"port": explicit[i]} if i in explicit else {})}
        for i, n in enumerate(member_names)
    ]
    return {
        "name": "prop",
        "regions": [{"name": "r", "datacenters": [{"name": "dc1"}]}],
        "ports": {"base": base, "span": 40},
        # One data centre: only a positive RPO lets its members confirm each other's commits.
        "clusters": [{"name": "c", "members": members, "replication": {"quorum": quorum},
                      "targets": {"rpo_seconds": 1}}],
    }


@given(member_names=names, data=st.data())
def test_quorum_string_names_every_candidate_once(member_names: list[str], data: st.DataObject) -> None:
    quorum = data.draw(st.integers(1, len(member_names) - 1))
    topo = parse_topology(_topology(member_names, quorum, 20000, {}))
    text = topo.synchronous_standby_names(topo.clusters[0])
    match = re.fullmatch(r"ANY (\d+) \((.*)\)", text)
    assert match is not None
    assert int(match.group(1)) == quorum
    listed = [part.strip().strip('"') for part in match.group(2).split(",")]
    assert listed == [f"m-{n}" for n in member_names]


@given(member_names=names, base=st.integers(1024, 60000), data=st.data())
def test_port_plan_is_unique_and_in_range(member_names: list[str], base: int, data: st.DataObject) -> None:
    explicit_ports = data.draw(st.dictionaries(st.integers(0, len(member_names) - 1),
                                               st.integers(base, base + 39), max_size=2))
    if len(set(explicit_ports.values())) < len(explicit_ports):
        return  # two members asking for one port is the clash case, tested above
    topo = parse_topology(_topology(member_names, 1, base, explicit_ports))
    plan = topo.port_plan()
    assert len(set(plan.values())) == len(plan)
    assert all(base <= port < base + 40 for port in plan.values())
    for index, port in explicit_ports.items():
        assert plan[f"pg:c:m-{member_names[index]}"] == port


def test_a_one_dc_cluster_cannot_promise_rpo_zero() -> None:
    data = _topology(["a", "b", "c"], 1, 20000, {})
    data["clusters"][0]["targets"] = {"rpo_seconds": 0}
    with pytest.raises(TopologyError, match=r"clusters\.c\.replication\.synchronous: with targets\.rpo_seconds 0"):
        parse_topology(data)


def test_a_never_promote_member_needs_no_quorum_outside_its_dc(raw: dict[str, Any]) -> None:
    """With ANY 2 of three dc2 members, a dc2 primary would have only dc1-a outside dc2: never_promote fixes it."""
    data = copy.deepcopy(raw)
    data["clusters"][0]["members"] += [{"name": "dc2-b", "datacenter": "dc2"}, {"name": "dc2-c", "datacenter": "dc2"}]
    data["clusters"][0]["replication"].update(quorum=2, synchronous=["dc1-a", "dc2-a", "dc2-b", "dc2-c"])
    with pytest.raises(TopologyError, match=r"but dc2-a \(in dc2\) would have 1 quorum candidate\(s\) outside dc2 "
                                            r"\(dc1-a\) for quorum 2; .* mark dc2-a never_promote"):
        parse_topology(copy.deepcopy(data))
    for name in ("dc2-a", "dc2-b", "dc2-c"):
        _member(data, name)["never_promote"] = True
    topo = parse_topology(data)
    assert topo.synchronous_standby_names(topo.clusters[0]) == 'ANY 2 ("dc2-a", "dc2-b", "dc2-c")'
