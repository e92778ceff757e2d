"""``drctl lab status`` / ``drctl status`` rendering: fits 80 columns, never cuts a name; stable JSON keys."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console, RenderableType

from orchestrator import statusview
from orchestrator.lab import LabStatus, MemberRow, ServiceRow
from orchestrator.state import (
    ClusterState,
    DrLagRecord,
    DrMemberLag,
    Health,
    MemberRecord,
    Operation,
    OperationKind,
    Role,
    Step,
    StepRecord,
)
from orchestrator.topology import NAME_PATTERN

LONGEST = "a" * 41  # NAME_PATTERN allows 41 characters
CLUSTER = "payments-" + "x" * 32
MEMBERS = ["dc1-a", "payments-eu-west-primary-with-long-name-1", LONGEST, "z"]


def console(width: int) -> Console:
    return Console(width=width, file=io.StringIO(), color_system=None, force_terminal=False, legacy_windows=False)


def render(target: Console, renderable: RenderableType) -> list[str]:
    target.print(renderable)
    assert isinstance(target.file, io.StringIO)
    return target.file.getvalue().splitlines()


def lab_status(members: list[str], cluster: str = CLUSTER) -> LabStatus:
    rows = [MemberRow(f"dc{i % 3 + 1}", cluster, name, Role.PRIMARY if i == 0 else Role.STANDBY, 25409 + i,
                      4_000_000 + i, "primary" if i == 0 else "not streaming", None if i == 1 else 123_456_789 * i)
            for i, name in enumerate(members)]
    services = [ServiceRow("dc1", "zookeeper-1", 25400, 123, "leader"), ServiceRow("dc2", "controller", None, None,
                                                                                    "down")]
    return LabStatus(rows, services)


def cluster_state(members: list[str]) -> ClusterState:
    op = Operation(id="op1", kind=OperationKind.SWITCHOVER, source=members[0], target=members[-1],
                   reason="operator request from drctl:4242", started_at=100.0, step=Step.DONE,
                   steps=(StepRecord(step=Step.INTENT, at=100.0), StepRecord(step=Step.DONE, at=100.25)))
    records = {name: MemberRecord(health=Health.HEALTHY if i else Health.UNREACHABLE,
                                  role=Role.STANDBY if i else Role.UNKNOWN, timeline=3, streaming=bool(i),
                                  lag_bytes=i * 2048, wal_lsn=1000 + i) for i, name in enumerate(members)}
    return ClusterState(cluster=CLUSTER, primary=members[-1], generation=4, timeline=3, paused=True,
                        synchronous_extra=(members[-1],), history=(op,), operation=op.model_copy(
                            update={"step": Step.PROMOTE}), members=records, leader="dc2:abcdef", epoch=7,
                        updated_at=100.0)


def whole_words(lines: list[str]) -> set[str]:
    return {word for line in lines for word in re.split(r"[\s,:()]+", line) if word}


def test_lab_status_at_80_columns_keeps_every_name_whole() -> None:
    target = console(80)
    lines = render(target, statusview.lab_status_view(target, "lab", Path("/tmp/lab"), lab_status(MEMBERS)))
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    assert set(MEMBERS) | {CLUSTER, "zookeeper-1", "controller"} <= whole_words(lines), "\n".join(lines)
    assert "…" not in "\n".join(lines)
    assert "NOT healthy" in lines[0]


def test_narrow_lab_status_leaves_out_pid_then_port_then_data_centre_then_lag() -> None:
    status = lab_status(MEMBERS)
    full = ["member", "role", "replication", "lag", "dc", "port", "pid"]
    headers = []
    for width in range(68, 124, 4):
        target = console(width)
        lines = render(target, statusview.lab_status_view(target, "lab", Path("/l"), status))
        headers.append(next(line for line in lines if line.startswith("member")).split())
    for header in headers:
        assert header == full[:len(header)], header
    kept = [len(h) for h in headers]
    assert kept == sorted(kept) and kept[0] == 3 and kept[-1] == 7, kept


def test_cluster_status_at_80_columns_keeps_every_name_whole() -> None:
    target = console(80)
    lines = render(target, statusview.cluster_state_view(target, cluster_state(MEMBERS), "dc2:abcdef", now=130.0))
    text = "\n".join(lines)
    assert all(len(line) <= 80 for line in lines), text
    assert set(MEMBERS) | {CLUSTER} <= whole_words(lines), text
    assert "PAUSED" in text and "in progress" in text and "250 ms" in text and "30 s ago" in text


@settings(max_examples=60, deadline=None)
@given(names=st.lists(st.from_regex(NAME_PATTERN, fullmatch=True), min_size=1, max_size=6, unique=True),
       width=st.integers(min_value=60, max_value=160))
def test_any_names_fit_any_width_and_stay_whole(names: list[str], width: int) -> None:
    for view in ("lab", "cluster"):
        target = console(width)
        renderable = (statusview.lab_status_view(target, "lab", Path("/l"), lab_status(names)) if view == "lab"
                      else statusview.cluster_state_view(target, cluster_state(names), None, now=0.0))
        lines = render(target, renderable)
        assert all(len(line) <= width for line in lines), "\n".join(lines)
        words = whole_words(lines)
        assert set(names) <= words, "\n".join(lines)


def test_lab_status_json_keys_are_the_documented_ones() -> None:
    document = json.loads(json.dumps(statusview.lab_status_json("lab", Path("/l"), lab_status(MEMBERS))))
    assert set(document) == {"version", "lab", "root", "healthy", "members", "services"}
    assert document["version"] == 1 and document["healthy"] is False
    assert [m["member"] for m in document["members"]] == MEMBERS
    assert set(document["members"][0]) == {"cluster", "member", "datacenter", "role", "replication", "lag_bytes",
                                           "port", "pid"}
    assert document["members"][1]["lag_bytes"] is None
    assert set(document["services"][0]) == {"service", "datacenter", "state", "port", "pid"}


def test_status_json_keys_are_the_documented_ones() -> None:
    document = json.loads(json.dumps(statusview.status_json("lab", "dc2:abcdef", [cluster_state(MEMBERS)])))
    assert set(document) == {"version", "topology", "leader", "clusters"}
    (cluster,) = document["clusters"]
    assert set(cluster) == {"cluster", "primary", "generation", "timeline", "paused", "epoch", "written_by",
                            "updated_at", "fallback_synchronous", "dr_lag", "members", "operation", "history"}
    assert set(cluster["members"][0]) == {"member", "health", "role", "timeline", "streaming", "lag_bytes", "wal_lsn"}
    assert set(cluster["operation"]) == {"id", "kind", "source", "target", "reason", "step", "started_at",
                                         "duration_s", "steps", "proven", "proof", "accept_data_loss",
                                         "wal_at_risk_bytes", "running", "outcome", "outcome_detail", "replans"}
    assert cluster["operation"]["step"] == "promote" and cluster["history"][0]["duration_s"] == 0.25
    assert cluster["fallback_synchronous"] == [MEMBERS[-1]]
    assert cluster["dr_lag"] is None


def dr_lag_state() -> ClusterState:
    record = DrLagRecord(max_seconds=5, mode="bounded", measured_at=100.0, lag_seconds=7.25, over=True,
                         over_changed_at=99.0, holding="dc3-a", holding_primary="dc1-a", holding_since=99.5,
                         members={"dc3-a": DrMemberLag(receive_lsn=1000, replay_lsn=900, receive_lag_s=7.25,
                                                       replay_lag_s=9.5, exact=True, replay_exact=False,
                                                       attached=True)})
    return ClusterState(cluster="payments", primary="dc1-a", dr_lag=record)


def test_status_shows_the_dr_lag_against_its_bound_and_the_hold() -> None:
    (cluster,) = statusview.status_json("lab", None, [dr_lag_state()])["clusters"]
    document = json.loads(json.dumps(cluster["dr_lag"]))
    assert set(document) == {"max_seconds", "mode", "lag_seconds", "over", "over_changed_at", "holding",
                             "holding_since", "measured_at", "members"}
    assert set(document["members"][0]) == {"member", "receive_lag_s", "replay_lag_s", "receive_lsn", "replay_lsn",
                                           "exact", "replay_exact", "attached"}
    assert (document["over"], document["holding"], document["lag_seconds"]) == (True, "dc3-a", 7.25)
    text = " ".join(render(console(200), statusview.cluster_state_view(console(200), dr_lag_state(), None)))
    assert "DR lag: dc3-a receive 7.2 s, replay >= 9.5 s (bound 5 s, bounded)" in text
    assert "OVER THE BOUND" in text and "commits wait for dc3-a" in text
    # a hold recorded for an earlier primary is not shown as one
    moved = dr_lag_state().model_copy(update={"primary": "dc2-a"})
    assert statusview.status_json("lab", None, [moved])["clusters"][0]["dr_lag"]["holding"] is None


def test_human_bytes() -> None:
    assert [statusview.human_bytes(v) for v in (None, 0, 1023, 1024, 8 * 1024 * 1024, 5 * 1024**4)] == [
        "-", "0 B", "1023 B", "1.0 KiB", "8.0 MiB", "5120.0 GiB"]


def test_status_shows_whether_the_last_operation_proved_zero_loss_and_the_wal_at_risk() -> None:
    state = cluster_state(MEMBERS)
    op = state.history[0].model_copy(update={"kind": OperationKind.FAILOVER, "proven": False, "accept_data_loss": True,
                                             "proof": "only 0 of the 1 quorum standby(s) of dc1-a seen",
                                             "wal_at_risk_bytes": 3 * 1024 * 1024})
    done = state.model_copy(update={"operation": None, "history": (op,)})
    text = " ".join(render(console(200), statusview.cluster_state_view(console(200), done, "dc2:abcdef")))
    assert ("zero loss proven: NO (only 0 of the 1 quorum standby(s) of dc1-a seen); the operator accepted data "
            "loss; WAL at risk: 3.0 MiB") in text
    proven = op.model_copy(update={"proven": True, "proof": "1 of the 1 quorum standby(s) seen",
                                   "wal_at_risk_bytes": None})
    in_progress = state.model_copy(update={"operation": proven.model_copy(update={"step": Step.PROMOTE})})
    text = " ".join(render(console(200), statusview.cluster_state_view(console(200), in_progress, None)))
    assert "zero loss proven: yes (1 of the 1 quorum standby(s) seen)" in text
    document = statusview.cluster_state_json(done)
    assert (document["history"][0]["proven"], document["history"][0]["wal_at_risk_bytes"]) == (False, 3145728)
