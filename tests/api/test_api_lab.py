"""The REST API of real controllers (uvicorn, TLS on loopback) on a real lab: reads, actions, auth, audit.

The lab runs on its own ports (DRCTL_TEST_PORT_BASE + 4100). A refused request (401, 403,
429, 422) must change nothing: no request node is created in ZooKeeper (the children
version of the request queue stays put) and the cluster state keeps its version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from orchestrator import audit
from orchestrator.api.auth import Role, TokenFile
from orchestrator.coordination import Coordinator
from orchestrator.lab import Lab
from orchestrator.topology import Topology, with_port_base
from orchestrator.waiting import poll
from tests.api.conftest import Api, serving_api
from tests.conftest import REPO, TEST_PORT_BASE, make_lab_dir

pytestmark = pytest.mark.lab

CLUSTER = "payments"


@pytest.fixture(scope="module")
def lab(shipped_topology: Topology) -> Iterator[Lab]:
    lab = Lab(with_port_base(shipped_topology, TEST_PORT_BASE + 4100), make_lab_dir("drctl-api-"))
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def api(lab: Lab) -> Api:
    return serving_api(lab)


@pytest.fixture
def coord(lab: Lab) -> Iterator[Coordinator]:
    coord = Coordinator(lab.topology.zookeeper_hosts(), lab.topology.name, identity="test-api")
    coord.start()
    try:
        yield coord
    finally:
        coord.stop()


class Unchanged:
    """Nothing was submitted (request queue's children version) and nothing recorded (state version)."""

    def __init__(self, lab: Lab, coord: Coordinator) -> None:
        self.coord = coord
        self.zk = KazooClient(hosts=lab.topology.zookeeper_hosts())
        self.zk.start(timeout=10)
        self.path = f"/dr-orchestrator/{lab.topology.name}/clusters/{CLUSTER}/requests"
        self.zk.ensure_path(self.path)
        self.before = self.snapshot()

    def snapshot(self) -> tuple[int, int, str | None]:
        state, version = self.coord.read_state(CLUSTER)
        return self.zk.exists(self.path).cversion, version, state.primary if state else None

    def check(self) -> None:
        try:
            after = self.snapshot()
            assert after[0] == self.before[0], "a request node was created"
            assert after[2] == self.before[2], "the primary changed"
        finally:
            self.zk.stop()
            self.zk.close()


def _leader_dc(coord: Coordinator) -> str:
    leader = coord.leader_identity()
    assert leader is not None
    return leader.split(":")[0]


def test_every_controller_serves_status_members_topology_and_docs(lab: Lab, api: Api, coord: Coordinator) -> None:
    state, _ = coord.read_state(CLUSTER)
    assert state is not None
    for dc in lab.topology.controller_datacenters:
        status, document = api.call(dc, "GET", "/api/v1/status")
        assert status == 200, document
        assert document["served_by"].startswith(f"{dc}:")
        assert document["clusters"][0]["primary"] == state.primary
        assert document["leader"] == coord.leader_identity()
    status, members = api.call("dc3", "GET", f"/api/v1/clusters/{CLUSTER}/members")
    assert status == 200
    assert {m["member"] for m in members["members"]} == {"dc1-a", "dc1-b", "dc2-a", "dc3-a"}
    assert all({"role", "timeline", "lag_bytes", "health"} <= set(m) for m in members["members"])
    assert api.call("dc1", "GET", "/api/v1/topology")[1]["name"] == lab.topology.name
    assert api.call("dc2", "GET", "/docs", role=None)[0] == 200
    assert "/api/v1/clusters/{cluster}/switchover" in api.call("dc2", "GET", "/openapi.json", role=None)[1]["paths"]
    assert api.call("dc1", "GET", "/api/v1/clusters/nope/members")[0] == 404
    status, drills = api.call("dc2", "GET", "/api/v1/drills")
    assert status == 200 and "primary-crash" in {d["drill"] for d in drills}
    assert api.call("dc2", "GET", "/api/v1/runs")[0] == 200


def test_starting_an_unknown_drill_is_404_and_submits_nothing(lab: Lab, api: Api, coord: Coordinator) -> None:
    unchanged = Unchanged(lab, coord)
    status, answer = api.call("dc1", "POST", "/api/v1/drills/no-such-drill/runs", role=Role.OPERATOR)
    assert status == 404 and "primary-crash" in answer["error"]
    assert api.call("dc1", "POST", "/api/v1/drills/primary-crash/runs", role=Role.VIEWER)[0] == 403
    unchanged.check()


def test_missing_or_wrong_token_and_too_small_a_role_change_nothing(lab: Lab, api: Api, coord: Coordinator) -> None:
    unchanged = Unchanged(lab, coord)
    dc = _leader_dc(coord)   # the leader's own API: a bug here would act at once
    path = f"/api/v1/clusters/{CLUSTER}/switchover"
    for token in (None, "drctl_wrong"):
        status, answer = api.call(dc, "POST", path, role=None, token=token, body={"to": "dc1-b"},
                                  source="127.0.0.2")
        assert status == 401, answer
    status, answer = api.call(dc, "POST", path, role=Role.VIEWER, body={"to": "dc1-b"})
    assert status == 403 and "needs operator" in answer["error"]
    status, answer = api.call(dc, "POST", f"/api/v1/clusters/{CLUSTER}/failover", role=Role.OPERATOR,
                              body={"to": "dc3-a", "accept_data_loss": True})
    assert status == 403 and "accept_data_loss needs admin" in answer["error"]
    assert api.call(dc, "POST", f"/api/v1/clusters/{CLUSTER}/pause", role=Role.VIEWER)[0] == 403
    assert api.call(dc, "POST", "/api/v1/tokens", role=Role.OPERATOR, body={"name": "x", "role": "admin"})[0] == 403
    unchanged.check()
    assert coord.read_state(CLUSTER)[0].paused is False   # type: ignore[union-attr]
    entries = list(audit.read_entries(lab.root / "audit"))
    assert sum(1 for e in entries if e["action"] == "login" and e["outcome"] == "failed"
               and e["from"] == "127.0.0.2") == 2
    assert any(e["outcome"] == "denied" and e["who"] == "test-operator (operator)" for e in entries)
    assert "x" not in {t["name"] for t in TokenFile(lab.root / "api" / "tokens.json").listing()}


@pytest.mark.parametrize(("body", "error"), [
    ({}, "to: required"),
    ({"to": "dc1-b", "bogus": 1}, "bogus: unknown field"),
    ({"to": 5}, "to: "),
    ({"to": "nope"}, "to: payments has no member 'nope'"),
    ({"to": "dc1-b", "timeout_s": 0}, "timeout_s: "),
    (b"{not json", "body: not valid JSON"),
    ([1, 2], "body: expected a JSON object"),
])
def test_malformed_requests_get_422_naming_the_field_and_change_nothing(
        lab: Lab, api: Api, coord: Coordinator, body: Any, error: str) -> None:
    unchanged = Unchanged(lab, coord)
    raw = body if isinstance(body, bytes) else None
    status, answer = api.call("dc2", "POST", f"/api/v1/clusters/{CLUSTER}/switchover", role=Role.OPERATOR,
                              body=None if raw else body, raw=raw)
    assert status == 422, answer
    assert answer["error"].startswith(error) and "\n" not in answer["error"]
    unchanged.check()


def test_repeated_failed_logins_are_rate_limited_and_audited(lab: Lab, api: Api, coord: Coordinator) -> None:
    unchanged = Unchanged(lab, coord)
    source = "127.0.0.9"   # its own address: the lockout does not touch the other tests
    limit = lab.topology.api.failed_logins   # type: ignore[union-attr]
    for _ in range(limit):
        assert api.call("dc1", "GET", "/api/v1/status", token="drctl_guess", source=source)[0] == 401
    status, answer = api.call("dc1", "POST", f"/api/v1/clusters/{CLUSTER}/switchover", role=Role.ADMIN,
                              body={"to": "dc1-b"}, source=source)
    assert status == 429, answer   # even with a valid token, while locked out
    assert api.call("dc1", "GET", "/api/v1/status", source="127.0.0.1")[0] == 200   # others unaffected
    unchanged.check()
    entries = [e for e in audit.read_entries(lab.root / "audit") if e["from"] == source]
    assert [e["action"] for e in entries].count("login") == limit
    assert [e["action"] for e in entries].count("login-rate-limited") == 1


def test_switchover_through_a_follower_with_drctl_api_is_run_by_the_leader_and_audited(
        lab: Lab, api: Api, coord: Coordinator, tmp_path: Path) -> None:
    state, _ = coord.read_state(CLUSTER)
    assert state is not None and state.operation is None
    leader = _leader_dc(coord)
    follower = next(dc for dc in lab.topology.controller_datacenters if dc != leader)
    target = "dc1-b" if state.primary != "dc1-b" else "dc1-a"
    token_file = tmp_path / "token"
    token_file.write_text(api.tokens[Role.OPERATOR] + "\n")
    token_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRCTL_")}
    env["DRCTL_API_TOKEN_FILE"] = str(token_file)
    base = [sys.executable, "-m", "orchestrator.cli", "--api", api.url(follower), "--api-ca",
            str(lab.root / "api" / "cert.pem")]
    done = subprocess.run([*base, "switchover", CLUSTER, "--to", target], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"primary is now {target}" in done.stdout
    after, _ = coord.read_state(CLUSTER)
    assert after is not None and after.primary == target
    assert after.history[-1].kind == "switchover" and after.history[-1].target == target

    shown = subprocess.run([*base, "status", CLUSTER, "--json"], env=env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["clusters"][0]["primary"] == target

    def audited() -> list[dict[str, Any]]:
        return [e for e in audit.read_entries(lab.root / "audit")
                if e["action"] == "switchover" and e["details"].get("request", {}).get("to") == target]
    entries = audited()
    assert len(entries) == 1
    entry = entries[0]
    assert entry["who"] == "test-operator (operator)" and entry["outcome"] == "ok" and entry["from"] == "127.0.0.1"
    assert entry["details"]["served_by"].startswith(f"{follower}:")
    # The leader's own record of it: the request it answered, and the operation's steps.
    assert poll(lambda: any(e["action"] == "request" and e["who"].startswith(f"controller {leader}:")
                            and e["details"].get("request", {}).get("to") == target
                            for e in audit.read_entries(lab.root / "audit")), timeout=10, interval=0.1)
    checked = subprocess.run([sys.executable, "-m", "orchestrator.cli", "audit", "--verify", "--lab-dir",
                              str(lab.root)], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "audit chain intact" in checked.stdout


def test_drctl_audit_verify_names_an_edited_line(lab: Lab, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "lab"
    shutil.copytree(lab.root / "audit", copy / "audit", ignore=shutil.ignore_patterns(".lock"))
    path = audit.log_files(copy / "audit")[-1]
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) >= 2
    lines[1] = lines[1].replace('"outcome":"', '"outcome":"x', 1)
    path.write_text("".join(lines))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRCTL_")}
    checked = subprocess.run([sys.executable, "-m", "orchestrator.cli", "audit", "--verify", "--lab-dir",
                              str(copy)], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 1
    assert f"{path}:2:" in " ".join(checked.stderr.split())
