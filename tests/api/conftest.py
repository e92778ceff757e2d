"""Shared API test set-up: raw HTTPS calls with one token per role, and the operator-surface lab.

``Api`` and ``serving_api`` serve ``test_api_lab.py`` (its own lab at +4100) and the
operator-surface tests. ``operator_lab`` (DRCTL_TEST_PORT_BASE + 6700..6739) is the
shipped topology with an ``alerts:`` section whose webhook and mail receivers are real
servers on loopback (+6740 HTTP, +6741 SMTP); the alert and status-page tests share it,
so the suite pays for one lab.
"""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from orchestrator.api.auth import Role
from orchestrator.api.server import api_url, tokens_file
from orchestrator.lab import Lab
from orchestrator.topology import Topology, parse_topology, with_port_base
from orchestrator.waiting import poll
from tests.alerts.receivers import HttpReceiver, SmtpReceiver
from tests.conftest import TEST_PORT_BASE, make_lab_dir

OPERATOR_LAB_BASE = TEST_PORT_BASE + 6700
HOOK_PORT, SMTP_PORT = TEST_PORT_BASE + 6740, TEST_PORT_BASE + 6741
ALERT_SECRET = b"operator-lab-webhook-secret"


class Api:
    """Raw HTTPS calls (status and JSON), optionally from another loopback source address."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.context = ssl.create_default_context(cafile=str(lab.root / "api" / "cert.pem"))
        tokens = tokens_file(lab.topology, lab.root)
        self.tokens = {role: tokens.add(f"test-{role.value}", role) for role in Role}

    def url(self, dc: str) -> str:
        return api_url(self.lab.topology, dc)

    def call(self, dc: str, method: str, path: str, *, role: Role | None = Role.VIEWER, token: str | None = None,
             body: Any = None, raw: bytes | None = None, source: str = "127.0.0.1") -> tuple[int, Any]:
        host, port = self.url(dc).removeprefix("https://").rsplit(":", 1)
        conn = http.client.HTTPSConnection(host, int(port), context=self.context, timeout=90,
                                           source_address=(source, 0))
        headers = {"Content-Type": "application/json"}
        if token is None and role is not None:
            token = self.tokens[role]
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        try:
            conn.request(method, path, body=data, headers=headers)
            reply = conn.getresponse()
            text = reply.read()
        finally:
            conn.close()
        try:
            return reply.status, json.loads(text)
        except ValueError:
            return reply.status, text.decode(errors="replace")


def _serving(api: Api, dc: str) -> bool:
    try:
        return api.call(dc, "GET", "/openapi.json", role=None)[0] == 200
    except OSError:
        return False



def serving_api(lab: Lab) -> Api:
    """An :class:`Api` once every controller (leader or not) serves."""
    api = Api(lab)
    for dc in lab.topology.controller_datacenters:
        assert poll(lambda dc=dc: _serving(api, dc), timeout=60, interval=0.2), f"{dc}: API not serving"
    return api


@dataclass
class OperatorLab:
    lab: Lab
    api: Api
    hook: HttpReceiver
    smtp: SmtpReceiver


def operator_topology(shipped: Topology) -> Topology:
    data = with_port_base(shipped, OPERATOR_LAB_BASE).model_dump(mode="json")
    data["ports"]["span"] = 40
    data["alerts"] = {
        "receivers": [
            {"name": "ops-hook", "type": "webhook", "url": f"http://127.0.0.1:{HOOK_PORT}/drctl",
             "secret_file": "alerts/webhook.secret"},
            {"name": "ops-mail", "type": "smtp", "host": "127.0.0.1", "port": SMTP_PORT,
             "sender": "drctl@lab.example", "to": ["oncall@lab.example"]},
        ],
        "routes": [{"kinds": ["failover"], "receivers": ["ops-hook", "ops-mail"]}],
        "dedup_window_s": 60, "attempts": 5, "backoff_s": 0.2, "max_backoff_s": 2,
    }
    return parse_topology(data)


@pytest.fixture(scope="session")
def operator_lab(shipped_topology: Topology) -> Iterator[OperatorLab]:
    hook, smtp = HttpReceiver(HOOK_PORT, ALERT_SECRET), SmtpReceiver(SMTP_PORT)
    root = make_lab_dir("drctl-operator-")
    (root / "alerts").mkdir()
    (root / "alerts" / "webhook.secret").write_text(ALERT_SECRET.decode() + "\n")
    lab = Lab(operator_topology(shipped_topology), root)
    try:
        lab.up()
        yield OperatorLab(lab, serving_api(lab), hook, smtp)
    finally:
        lab.down()
        hook.close()
        smtp.close()
