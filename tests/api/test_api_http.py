"""The API's contract over real HTTP: a real uvicorn server on loopback (DRCTL_TEST_PORT_BASE + 4200).

No lab: the routes get a recording stand-in for the ZooKeeper session, so these tests show
that a refused request (401, 403, 429, 422) never reaches it, and that an accepted one
reaches it exactly once with the operator's parameters. The real path (a real leader)
is tested in ``test_api_lab.py``.
"""

from __future__ import annotations

import http.client
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import audit
from orchestrator.api.app import ApiContext, create_app
from orchestrator.api.auth import AllowList, FailedLogins, Role, TokenFile
from orchestrator.api.client import ApiClient
from orchestrator.api.server import ApiServer
from orchestrator.audit import AuditLog
from orchestrator.errors import InvalidInput, OrchestratorError
from orchestrator.topology import Topology, with_port_base
from tests.conftest import TEST_PORT_BASE

PORT = TEST_PORT_BASE + 4200


class RecordingCoordinator:
    """Answers requests like a leader would, and records every call that could change something."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, dict[str, Any]]] = []
        self.paused: list[tuple[str, bool]] = []

    def submit_request(self, cluster: str, request: dict[str, Any], *, ttl: float) -> str:
        self.submitted.append((cluster, request))
        return f"req-{len(self.submitted)}"

    def wait_result(self, cluster: str, request_id: str, timeout: float) -> dict[str, Any]:
        request = self.submitted[-1][1]
        if request.get("to") == "dc1-a":
            return {"ok": False, "error": "dc1-a is already the primary"}
        return {"ok": True, "primary": request.get("to"), "seconds": 0.5, "operation": "op1"}

    def set_paused(self, cluster: str, paused: bool) -> None:
        self.paused.append((cluster, paused))


class Server:
    def __init__(self, topology: Topology, root: Path) -> None:
        self.coord = RecordingCoordinator()
        self.tokens = TokenFile(root / "tokens.json")
        self.token = {role: self.tokens.add(f"t-{role.value}", role) for role in Role}
        self.audit_dir = root / "audit"
        self.events: list[tuple[str, dict[str, Any]]] = []
        ctx = ApiContext(topology=topology, root=root, coord=self.coord, served_by="dc1:test",  # type: ignore[arg-type]
                         audit=AuditLog(self.audit_dir), tokens=self.tokens, allow=AllowList(("127.0.0.0/30",)),
                         limiter=FailedLogins(3, 60.0), drills_dir=None,
                         emit=lambda event, **fields: self.events.append((event, fields)))
        self.http = ApiServer(create_app(ctx), "127.0.0.1", PORT)

    def call(self, method: str, path: str, *, role: Role | None = Role.VIEWER, token: str | None = None,
             body: Any = None, source: str = "127.0.0.1") -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30, source_address=(source, 0))
        headers = {"Content-Type": "application/json"}
        token = token if token is not None else (self.token[role] if role is not None else None)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
            reply = conn.getresponse()
            return reply.status, json.loads(reply.read())
        finally:
            conn.close()


@pytest.fixture(scope="module")
def server(shipped_topology: Topology) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="drctl-api-http-") as root:
        server = Server(with_port_base(shipped_topology, TEST_PORT_BASE + 4300), Path(root))
        server.http.start()
        try:
            yield server
        finally:
            server.http.stop()


@pytest.fixture
def clean(server: Server) -> Server:
    server.coord.submitted.clear()
    server.coord.paused.clear()
    return server


SWITCHOVER = "/api/v1/clusters/payments/switchover"


def test_tokens_are_stored_hashed_in_a_private_file(server: Server) -> None:
    text = server.tokens.path.read_text()
    assert all(token not in text for token in server.token.values())
    assert server.tokens.path.stat().st_mode & 0o777 == 0o600
    assert {t["role"] for t in json.loads(text)["tokens"]} == {"viewer", "operator", "admin"}


def test_no_token_or_a_wrong_one_is_401_and_reaches_nothing(clean: Server) -> None:
    assert clean.call("POST", SWITCHOVER, role=None, body={"to": "dc2-a"}, source="127.0.0.2")[0] == 401
    status, answer = clean.call("POST", SWITCHOVER, token="drctl_nope", body={"to": "dc2-a"}, source="127.0.0.2")
    assert status == 401 and "bearer token" in answer["error"]
    assert clean.coord.submitted == []
    failed = [e for e in audit.read_entries(clean.audit_dir) if e["action"] == "login" and e["from"] == "127.0.0.2"]
    assert [e["outcome"] for e in failed] == ["failed", "failed"]


def test_too_small_a_role_is_403_and_reaches_nothing(clean: Server) -> None:
    assert clean.call("POST", SWITCHOVER, role=Role.VIEWER, body={"to": "dc2-a"})[0] == 403
    assert clean.call("POST", "/api/v1/clusters/payments/pause", role=Role.VIEWER)[0] == 403
    status, answer = clean.call("POST", "/api/v1/clusters/payments/failover", role=Role.OPERATOR,
                                body={"to": "dc3-a", "accept_data_loss": True})
    assert status == 403 and "admin" in answer["error"]
    assert clean.call("GET", "/api/v1/tokens", role=Role.OPERATOR)[0] == 403
    assert clean.coord.submitted == [] and clean.coord.paused == []


def test_an_address_outside_the_allow_list_is_refused(clean: Server) -> None:
    status, answer = clean.call("GET", "/api/v1/whoami", role=Role.ADMIN, source="127.0.0.5")   # not in /30
    assert status == 403 and "api.allow" in answer["error"]
    assert clean.call("GET", "/api/v1/whoami", role=Role.ADMIN)[1]["role"] == "admin"


def test_repeated_failed_logins_lock_the_address_out_with_429(clean: Server) -> None:
    for _ in range(3):
        assert clean.call("GET", "/api/v1/whoami", token="drctl_guess", source="127.0.0.3")[0] == 401
    status, _ = clean.call("POST", SWITCHOVER, role=Role.ADMIN, body={"to": "dc2-a"}, source="127.0.0.3")
    assert status == 429
    assert clean.call("GET", "/api/v1/whoami", role=Role.VIEWER)[0] == 200   # another address is not affected
    assert clean.coord.submitted == []
    assert ("api-login-rate-limited", {"source": "127.0.0.3", "failures": 3}) in clean.events
    assert any(e["action"] == "login-rate-limited" and e["from"] == "127.0.0.3"
               for e in audit.read_entries(clean.audit_dir))


@pytest.mark.parametrize(("body", "error"), [
    ({}, "to: required"), ({"to": "dc2-a", "x": 1}, "x: unknown field"), ({"to": ["dc2-a"]}, "to: "),
    ({"to": "zz"}, "to: payments has no member 'zz'"), ({"to": "dc2-a", "timeout_s": 99999}, "timeout_s: "),
])
def test_malformed_bodies_are_422_naming_the_field(clean: Server, body: dict[str, Any], error: str) -> None:
    status, answer = clean.call("POST", SWITCHOVER, role=Role.OPERATOR, body=body)
    assert status == 422 and answer["error"].startswith(error), answer
    assert clean.coord.submitted == []


def test_failover_flag_must_be_a_boolean(clean: Server) -> None:
    status, answer = clean.call("POST", "/api/v1/clusters/payments/failover", role=Role.ADMIN,
                                body={"to": "dc3-a", "accept_data_loss": "yes"})
    assert status == 422 and answer["error"].startswith("accept_data_loss: ")
    assert clean.coord.submitted == []


def test_an_action_is_handed_to_the_leader_once_and_audited(clean: Server) -> None:
    status, answer = clean.call("POST", SWITCHOVER, role=Role.OPERATOR, body={"to": "dc2-a"})
    assert status == 200 and answer["primary"] == "dc2-a" and answer["served_by"] == "dc1:test"
    assert [(c, r["kind"], r["to"]) for c, r in clean.coord.submitted] == [("payments", "switchover", "dc2-a")]
    status, answer = clean.call("POST", SWITCHOVER, role=Role.OPERATOR, body={"to": "dc1-a"})
    assert status == 409 and "already the primary" in answer["error"]
    status, answer = clean.call("POST", "/api/v1/clusters/payments/failover", role=Role.ADMIN,
                                body={"to": "dc3-a", "accept_data_loss": True})
    assert status == 200 and clean.coord.submitted[-1][1]["accept_data_loss"] is True
    entries = [e for e in audit.read_entries(clean.audit_dir) if e["action"] in ("switchover", "failover")]
    assert [(e["who"], e["action"], e["outcome"]) for e in entries[-3:]] == [
        ("t-operator (operator)", "switchover", "ok"), ("t-operator (operator)", "switchover", "refused"),
        ("t-admin (admin)", "failover", "ok")]
    assert audit.verify(clean.audit_dir).broken is None


def test_the_client_turns_answers_into_one_line_errors(clean: Server) -> None:
    client = ApiClient(f"http://127.0.0.1:{PORT}", clean.token[Role.VIEWER])
    assert client.get("/api/v1/whoami")["name"] == "t-viewer"
    with pytest.raises(OrchestratorError, match=r"API 403: t-viewer has role viewer; this needs operator"):
        client.post(SWITCHOVER, {"to": "dc2-a"})
    with pytest.raises(InvalidInput, match=r"API 404: cluster: no cluster 'nope'"):
        client.get("/api/v1/clusters/nope/members")
    assert clean.coord.submitted == []


def test_an_admin_manages_tokens_and_a_removed_token_stops_working(clean: Server) -> None:
    status, answer = clean.call("POST", "/api/v1/tokens", role=Role.ADMIN, body={"name": "bob", "role": "operator"})
    assert status == 200 and answer["token"].startswith("drctl_")
    assert clean.call("GET", "/api/v1/whoami", token=answer["token"])[1]["name"] == "bob"
    assert clean.call("DELETE", "/api/v1/tokens/bob", role=Role.ADMIN)[0] == 200
    assert clean.call("GET", "/api/v1/whoami", token=answer["token"])[0] == 401


def test_drctl_api_status_table_fits_80_columns_and_names_every_member() -> None:
    import io

    from rich.console import Console

    from orchestrator.statusview import status_document_view

    members = [{"member": name, "health": "healthy", "role": role, "timeline": 2, "streaming": role == "standby",
                "lag_bytes": 1234, "wal_lsn": "0/3000000"}
               for name, role in (("dc1-a", "primary"), ("dc1-b", "standby"), ("dc2-a", "standby"),
                                  ("dc3-a-with-a-long-name", "standby"))]
    document = {"version": 1, "topology": "lab", "leader": "dc3:abc", "clusters": [
        {"cluster": "payments", "primary": "dc1-a", "timeline": 2, "epoch": 4, "paused": True, "members": members,
         "operation": None, "history": [{"kind": "switchover", "source": "dc2-a", "target": "dc1-a",
                                         "outcome": "done", "step": "done"}]}]}
    out = io.StringIO()
    console = Console(file=out, width=80, color_system=None)
    console.print(status_document_view(console, document))
    text = out.getvalue()
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "dc3-a-with-a-long-name" in text and "primary dc1-a" in text and "[paused]" in text
    assert "last operation: switchover dc2-a -> dc1-a (done)" in text
