"""Health endpoints, HAProxy and /metrics on a real lab (ports from DRCTL_TEST_PORT_BASE + 6600).

One lab for the module (the shipped topology: controllers with their API, agents with their
health ports). The agents' answers are checked against the cluster state; HAProxy routes writes
to the primary before and after a switchover through the same port, while a poller asks every
member's /primary and proves no two answered 200 at overlapping moments; the controllers' and
agents' /metrics are scraped over HTTP and parsed with prometheus_client's parser. Last, the
primary's postmaster is killed (a failover, not a switchover): the same poller proves the new
primary alone answers 200 on /primary, the killed member never again answers 200.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from orchestrator import haproxy, operator
from orchestrator.api.server import api_url
from orchestrator.coordination import Coordinator
from orchestrator.lab import Lab
from orchestrator.state import ClusterState
from orchestrator.topology import Topology, with_port_base
from orchestrator.waiting import poll
from tests.conftest import TEST_PORT_BASE, make_lab_dir

pytestmark = pytest.mark.lab

CLUSTER = "payments"


@pytest.fixture(scope="module")
def lab(shipped_topology: Topology) -> Iterator[Lab]:
    lab = Lab(with_port_base(shipped_topology, TEST_PORT_BASE + 6600), make_lab_dir("drctl-health-"))
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def coord(lab: Lab) -> Iterator[Coordinator]:
    coord = Coordinator(lab.topology.zookeeper_hosts(), lab.topology.name, identity="test-health")
    coord.start()
    try:
        yield coord
    finally:
        coord.stop()


def health_port(lab: Lab, member: str) -> int:
    return lab.topology.port_plan()[f"health:{CLUSTER}:{member}"]


def ask(lab: Lab, member: str, path: str, method: str = "GET") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", health_port(lab, member), timeout=5)
    try:
        conn.request(method, path)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def members(lab: Lab) -> list[str]:
    return [m.name for m in lab.topology.cluster(CLUSTER).members]


def settled_state(lab: Lab, coord: Coordinator) -> ClusterState:
    """The state once every member answers /primary or /replica as it says (agents watch it)."""
    found: list[ClusterState] = []
    seen: dict[str, tuple[int, int]] = {}

    def agreed() -> bool:
        state, _ = coord.read_state(CLUSTER)
        if state is None or state.operation is not None:
            return False
        found[:] = [state]
        seen.clear()
        seen.update({m: (ask(lab, m, "/primary")[0], ask(lab, m, "/replica")[0]) for m in members(lab)})
        return all(codes == ((200, 503) if m == state.primary else (503, 200)) for m, codes in seen.items())

    assert poll(agreed, timeout=90, interval=0.1), \
        f"the health endpoints never agreed with the state ({found[0].primary if found else None} primary): " \
        f"(/primary, /replica) = {seen}"
    return found[0]


def idle_state(coord: Coordinator) -> ClusterState:
    """The cluster state once no operation runs."""
    found: list[ClusterState] = []

    def idle() -> bool:
        state, _ = coord.read_state(CLUSTER)
        found[:] = [state] if state is not None else []
        return state is not None and state.operation is None

    assert poll(idle, timeout=90, interval=0.1), "an operation never ended"
    return found[0]


def scrape(text: str) -> dict[str, list[Sample]]:
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def test_endpoints_answer_with_patroni_codes(lab: Lab, coord: Coordinator) -> None:
    state = settled_state(lab, coord)
    primary = state.primary
    for member in members(lab):
        for method in ("GET", "HEAD", "OPTIONS"):   # HAProxy's httpchk sends OPTIONS
            status, raw = ask(lab, member, "/primary", method)
            assert status == (200 if member == primary else 503), (member, method)
            assert (raw == b"") == (method == "HEAD")
        assert ask(lab, member, "/read-write")[0] == (200 if member == primary else 503)
        assert ask(lab, member, "/read-only")[0] == 200
        assert ask(lab, member, "/health")[0] == 200
        assert ask(lab, member, "/liveness")[0] == 200
        doc = json.loads(ask(lab, member, "/health")[1])
        assert doc["member"] == member and doc["primary"] == primary and doc["timeline"] == state.timeline
        assert doc["role"] == ("primary" if member == primary else "standby")
        if member != primary:   # a standby is sync or async, never both
            assert {ask(lab, member, "/sync")[0], ask(lab, member, "/async")[0]} == {200, 503}
            assert poll(lambda m=member: ask(lab, m, "/replica?lag=16MB&replication_state=streaming")[0] == 200,
                        timeout=20, interval=0.1)
    standby = next(m for m in members(lab) if m != primary)
    status, raw = ask(lab, standby, "/replica?lag=16XB")
    assert status == 400 and json.loads(raw)["error"].startswith("lag: '16XB' is not a size")
    assert ask(lab, standby, "/nothing")[0] == 404
    metrics = scrape(ask(lab, primary, "/metrics")[1].decode())
    roles = {s.labels["role"]: s.value for s in metrics["drctl_member_role"]}
    assert roles == {"primary": 1.0, "standby": 0.0, "unknown": 0.0}
    assert metrics["drctl_lease_valid"][0].value == 1.0
    assert metrics["drctl_zookeeper_last_contact_seconds"][0].value >= 0
    assert metrics["drctl_member_timeline"][0].value == state.timeline


@dataclass(frozen=True)
class Claim:
    member: str
    sent: float
    received: float


class PrimaryWatcher:
    """Asks every member's /primary in a loop; keeps each 200 with the moment it was sent and received."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.claims: list[Claim] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            for member in members(self.lab):
                sent = time.monotonic()
                try:
                    status, _ = ask(self.lab, member, "/primary")
                except OSError:
                    continue
                if status == 200:
                    self.claims.append(Claim(member, sent, time.monotonic()))
            self.stop.wait(0.01)

    def __enter__(self) -> PrimaryWatcher:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def overlapping(self) -> list[tuple[Claim, Claim]]:
        """Pairs of 200s from two members whose request intervals overlap: two primaries at once."""
        ordered = sorted(self.claims, key=lambda c: c.sent)
        return [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1:]
                if a.member != b.member and b.sent <= a.received]


def write_through(conninfo: str) -> tuple[int, bool]:
    """One write through ``conninfo``; the port of the server that took it and whether it is in recovery."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS health_probe (at timestamptz DEFAULT now())")
        conn.execute("INSERT INTO health_probe DEFAULT VALUES")
        row = conn.execute("SELECT inet_server_port(), pg_is_in_recovery()").fetchone()
    assert row is not None
    return int(str(row[0])), bool(row[1])


def read_through(conninfo: str) -> tuple[int, bool]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT inet_server_port(), pg_is_in_recovery()").fetchone()
    assert row is not None
    return int(str(row[0])), bool(row[1])


def test_haproxy_routes_writes_to_the_primary_across_a_switchover(lab: Lab, coord: Coordinator) -> None:
    state = settled_state(lab, coord)
    old = state.primary
    plan = lab.topology.port_plan()
    haproxy.start(lab.topology, lab.root)
    rw = haproxy.conninfo(lab.topology, CLUSTER, lab.credentials)
    ro = haproxy.conninfo(lab.topology, CLUSTER, lab.credentials, kind="ro")
    assert write_through(rw) == (plan[f"pg:{CLUSTER}:{old}"], False)
    port, in_recovery = read_through(ro)
    assert in_recovery and port != plan[f"pg:{CLUSTER}:{old}"]
    target = next(m for m in members(lab) if m != old and ask(lab, m, "/sync")[0] == 200)
    with PrimaryWatcher(lab) as watcher:
        poll(lambda: bool(watcher.claims), timeout=10, interval=0.05)
        result = operator.run_request(coord, lab.topology, CLUSTER, {"kind": "switchover", "to": target}, 90)
        assert result["ok"], result
        landed: list[tuple[int, bool]] = []

        def on_new_primary() -> bool:
            try:
                landed[:] = [write_through(rw)]
            except psycopg.Error:
                return False   # HAProxy has no server up for a moment, or still the old one
            return landed[0] == (plan[f"pg:{CLUSTER}:{target}"], False)

        assert poll(on_new_primary, timeout=30, interval=0.05), f"writes through HAProxy landed on {landed}"
        poll(lambda: any(c.member == target for c in watcher.claims), timeout=10, interval=0.05)
    assert {c.member for c in watcher.claims} == {old, target}
    assert watcher.overlapping() == [], "two members answered 200 on /primary at the same time"
    assert haproxy.pid(lab.root) is not None
    states = haproxy.server_states(lab.root)
    assert [s for (px, s), (status, _) in states.items() if px == f"{CLUSTER}-rw" and status == "UP"] == [target]


def test_metrics_scraped_from_the_controllers_api(lab: Lab, coord: Coordinator) -> None:
    state = idle_state(coord)
    context = ssl.create_default_context(cafile=str(lab.root / "api" / "cert.pem"))
    done_switchovers = sum(1 for op in state.history if op.kind == "switchover" and op.outcome == "done")
    counted = 0.0
    for dc in lab.topology.controller_datacenters:
        host, port = api_url(lab.topology, dc).removeprefix("https://").rsplit(":", 1)

        def fetch(host: str = host, port: str = port) -> str | None:
            conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=30)
            try:
                conn.request("GET", "/metrics")   # no token: Prometheus scrapes without one
                reply = conn.getresponse()
                body = reply.read().decode()
                return body if reply.status == 200 else None
            except OSError:
                return None
            finally:
                conn.close()

        text = poll(fetch, timeout=60, interval=0.2)
        assert text, f"{dc}: /metrics did not answer"
        metrics = scrape(text)
        primaries = [s.labels["member"] for s in metrics["drctl_cluster_primary"] if s.value == 1.0]
        assert primaries == [state.primary]
        assert metrics["drctl_cluster_timeline"][0].value == state.timeline
        assert {s.labels["cluster"] for s in metrics["drctl_error_budget_used_ratio"]} == {CLUSTER}
        assert metrics["drctl_dr_lag_bound_seconds"][0].value == 5.0
        counted += sum(s.value for s in metrics["drctl_switchovers"]
                       if s.name == "drctl_switchovers_total" and s.labels["outcome"] == "done")
    # Each switchover is counted by the one controller that ran it (none restarted in this lab).
    assert counted == done_switchovers


def test_primary_endpoint_follows_a_failover_after_kill_9(lab: Lab, coord: Coordinator) -> None:
    old = settled_state(lab, coord).primary
    cluster = lab.topology.cluster(CLUSTER)
    pid = lab.layout(cluster, cluster.member(old)).postmaster_pid()
    assert pid is not None, f"{old} is not running"
    with PrimaryWatcher(lab) as watcher:
        assert poll(lambda: any(c.member == old for c in watcher.claims), timeout=10, interval=0.05)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        found: dict[str, int | None] = {}

        def new_primary_alone() -> bool:
            state, _ = coord.read_state(CLUSTER)
            if state is None or state.primary == old:
                return False
            found.clear()
            for member in members(lab):
                try:
                    found[member] = ask(lab, member, "/primary")[0]
                except OSError:
                    found[member] = None   # the killed member's agent may not answer at all
            return all(code == (200 if m == state.primary else 503)
                       for m, code in found.items() if m != old) and found[old] in (None, 503)

        assert poll(new_primary_alone, timeout=60, interval=0.1), \
            f"after the kill of {old}: /primary answered {found}"
        new = next(m for m, code in found.items() if code == 200)
        assert poll(lambda: any(c.member == new for c in watcher.claims), timeout=10, interval=0.05)
    assert watcher.overlapping() == [], "two members answered 200 on /primary at the same time"
    # The killed member's last 200 was asked before the new primary's first one was answered.
    last_old = max(c.sent for c in watcher.claims if c.member == old)
    first_new = min(c.received for c in watcher.claims if c.member == new)
    assert last_old < first_new
    assert {c.member for c in watcher.claims if c.sent > killed_at} <= {old, new}
