"""Node agents on real servers: an isolated primary fences itself, the watchdog covers a frozen agent,
instructions are obeyed only from the current epoch.

A lab of its own (20 ports, the first free window of DRCTL_TEST_PORT_BASE+3000..+3099): one ZooKeeper
server, primary ``a`` and synchronous standby ``b``, no controllers. Each agent reaches ZooKeeper
through :class:`~orchestrator.agent.faults.CutProxies`, which the test cuts silently while writers
keep committing straight to PostgreSQL over TCP. Rounds of the isolation test: ``DRCTL_FENCE_ROUNDS``
(default 3); the fence times are printed (``-s``) with their median and max.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
import pytest

from orchestrator import audit, pgserver
from orchestrator import postgres as pg
from orchestrator.agent.facts import AgentFacts
from orchestrator.agent.faults import CutProxies
from orchestrator.agent.main import agent_command
from orchestrator.agent.rules import fencing_budget
from orchestrator.coordination import AgentSession, Coordinator
from orchestrator.drills.writers import Writers
from orchestrator.errors import CoordinationUnavailable, LabError, LostLeadership
from orchestrator.lab import Lab
from orchestrator.pgserver import InstanceLayout
from orchestrator.processes import is_running, spawn, stop, wait_gone
from orchestrator.state import ClusterState, Operation, OperationKind
from orchestrator.topology import parse_topology
from orchestrator.waiting import poll
from tests.alerts.receivers import HttpReceiver
from tests.conftest import TEST_PORT_BASE, make_lab_dir

pytestmark = pytest.mark.lab

SPAN = 20


def _bindable(port: int) -> bool:
    with socket.socket() as sock:  # no SO_REUSEADDR: a port in TIME-WAIT is refused too (Java's bind is)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_base() -> int:
    """The first window of +3000..+3099 whose ports are free now: on a shared host any port of the
    ephemeral range (32768-60999 here) may be some client's for a while."""
    for offset in range(3000, 3100, SPAN):
        base = TEST_PORT_BASE + offset
        if all(_bindable(p) for p in range(base, base + SPAN)):
            return base
    return TEST_PORT_BASE + 3000
CLUSTER = "agents"
# The agents' own fences are alerted to this receiver (a real HTTP server on loopback).
HOOK_PORT = TEST_PORT_BASE + 3100
HOOK_SECRET = b"agent-lab-webhook-secret"
ROUNDS = int(os.environ.get("DRCTL_FENCE_ROUNDS", "3"))


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``predicate``; the test's own ZooKeeper session blinking (a starved CI machine) is "not yet"."""

    def check() -> object:
        try:
            return predicate()
        except CoordinationUnavailable:
            return False

    assert poll(check, timeout=timeout, interval=0.02), f"timed out after {timeout}s waiting for {what}"


@pytest.fixture(scope="module")
def hook() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver(HOOK_PORT, HOOK_SECRET)
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def agent_lab(hook: HttpReceiver) -> Iterator[Lab]:
    topo = parse_topology({
        "name": "agentlab",
        "regions": [{"name": "r", "datacenters": [{"name": "dc1"}]}],
        "ports": {"base": free_port_base(), "span": SPAN},
        "clusters": [{"name": CLUSTER, "members": [
            {"name": "a", "datacenter": "dc1", "role": "primary"}, {"name": "b", "datacenter": "dc1"}],
            # One data centre cannot promise RPO 0 (its loss takes every copy): a positive RPO.
            "targets": {"rpo_seconds": 1}}],
        "alerts": {"receivers": [{"name": "ops-hook", "type": "webhook", "url": f"http://127.0.0.1:{HOOK_PORT}/agent",
                                  "secret_file": "alerts/webhook.secret"}],
                   "routes": [{"kinds": ["fencing"], "receivers": ["ops-hook"]}],
                   "dedup_window_s": 0, "attempts": 5, "backoff_s": 0.2, "max_backoff_s": 1},
    })
    lab = Lab(topo, make_lab_dir("drctl-agent-"), controllers=False)
    (lab.root / "alerts").mkdir(parents=True)
    (lab.root / "alerts" / "webhook.secret").write_bytes(HOOK_SECRET)
    os.chmod(lab.root / "alerts" / "webhook.secret", 0o600)
    try:
        for attempt in range(3):
            try:
                lab.up()
                break
            except LabError:
                # On a shared host a lab port may be taken for a moment as some client's ephemeral
                # port (32768-60999 here); up is idempotent: what failed to bind is started again.
                if attempt == 2:
                    raise
                time.sleep(5)
        with pg.connect(layout(lab, "a").endpoint, lab.credentials) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS agent_writes (id text PRIMARY KEY)")
        yield lab
    finally:
        lab.down()


@pytest.fixture
def watcher(agent_lab: Lab) -> Iterator[AgentSession]:
    """The test's own session, straight to ZooKeeper (never cut). It only observes, so it gets the
    longest session the server grants (20 ticks): a starved machine must not end it mid-test."""
    zk = agent_lab.topology.zookeeper
    session = AgentSession(agent_lab.topology.zookeeper_hosts(), agent_lab.topology.name,
                           session_timeout=20 * zk.tick_time_ms / 1000)
    session.start()
    yield session
    session.stop()


def layout(lab: Lab, member: str) -> InstanceLayout:
    cluster = lab.topology.cluster(CLUSTER)
    return lab.layout(cluster, cluster.member(member))


def budget(lab: Lab) -> float:
    zk = lab.topology.zookeeper
    return fencing_budget(zk.agent_session_ms / 1000, zk.tick_time_ms / 1000).bound_s


@dataclass
class AgentProcess:
    pid: int
    log: Path
    proxies: CutProxies

    def events(self, name: str) -> list[dict[str, object]]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [e for e in (json.loads(line) for line in lines if line.startswith("{")) if e["event"] == name]

    def stop(self) -> None:
        stop(self.pid, timeout=20)
        self.proxies.close()


def start_agent(lab: Lab, watcher: AgentSession, member: str, *, member_running: bool = True) -> AgentProcess:
    proxies = CutProxies(lab.topology.zookeeper_hosts())
    log = lab.root / "agent" / f"{member}-{uuid.uuid4().hex[:6]}.log"
    pid = spawn(agent_command(lab.root, member, zk_hosts=proxies.hosts), log=log, cwd=lab.root)
    agent = AgentProcess(pid, log, proxies)

    def ready() -> bool:
        raw = watcher.agent_facts(CLUSTER).get(member)
        if raw is None:
            return False
        facts = AgentFacts.model_validate_json(raw)
        return facts.agent_pid == pid and facts.session == "connected" and facts.postmaster_alive is member_running
    try:
        wait_for(ready, 30, f"the agent of {member} to publish its facts")
    except AssertionError:
        agent.stop()
        raise AssertionError(f"agent of {member} not ready; log: {log.read_text() if log.exists() else ''}") from None
    except BaseException:
        agent.stop()  # never leave an agent (and its proxies) behind for the next test
        raise
    return agent


def restore(lab: Lab, member: str, upstream: str | None) -> None:
    """Bring a fenced member back as it was (the rejoin's job in production): fresh config, start."""
    lay = layout(lab, member)
    if lay.postmaster_pid() is None:
        up = layout(lab, upstream).endpoint if upstream else None
        pgserver.write_config(lay, up, lab.credentials)
        pgserver.start(lay)
    primary = layout(lab, "a").endpoint
    prober = pg.Prober(lab.credentials, timeout=1)
    try:
        wait_for(lambda: "b" in prober.probe(primary).replicas, 60, "b to stream from a")
    finally:
        prober.close()


class MemberWriters:
    """Two writers committing straight to member a, and one more with ``synchronous_commit = local``
    (not held by an unreachable ``synchronous_standby_names``)."""

    def __init__(self, lab: Lab) -> None:
        creds, endpoint = lab.credentials, layout(lab, "a").endpoint
        conninfo = psycopg.conninfo.make_conninfo(
            host=endpoint.address, port=endpoint.port, user=creds.superuser, password=creds.superuser_password,
            dbname="postgres")
        self.groups = [Writers(conninfo, "agent_writes", count=2, connect_timeout=1, retry_pause=0.005),
                       Writers(conninfo, "agent_writes", count=1, connect_timeout=1, retry_pause=0.005,
                                session_sql=("SET synchronous_commit = local",))]
        for group in self.groups:
            group.start()
        wait_for(lambda: all(group.count() > 10 for group in self.groups), 20, "every writer to commit")

    def last_ack(self) -> float:
        return max(ack.mono for group in self.groups if (ack := group.last()) is not None)

    def stop(self) -> None:
        for group in self.groups:
            group.stop(10)


@dataclass(frozen=True)
class IsolationRound:
    last_ack_s: float  # the last acknowledged commit, after the cut
    postmaster_gone_s: float
    node_expired_s: float  # the agent's liveness node gone: what a controller may act on
    fenced: list[dict[str, object]]


def isolate_once(lab: Lab, watcher: AgentSession) -> IsolationRound:
    restore(lab, "a", None)
    agent = start_agent(lab, watcher, "a")
    try:
        writers = MemberWriters(lab)
        try:
            cut_at = time.monotonic()
            agent.proxies.cut()
            wait_for(lambda: layout(lab, "a").postmaster_pid() is None, 15, "the primary to be fenced")
            gone_at = time.monotonic()
            wait_for(lambda: "a" not in watcher.agent_facts(CLUSTER), 15, "the agent's liveness node to expire")
            expired_at = time.monotonic()
        finally:
            writers.stop()
            agent.proxies.heal()
        wait_for(lambda: agent.events("fenced"), 10, "the agent's fence report")
        return IsolationRound(writers.last_ack() - cut_at, gone_at - cut_at, expired_at - cut_at,
                              agent.events("fenced"))
    finally:
        agent.stop()


def test_isolated_primary_stops_acknowledging_within_its_bound(agent_lab: Lab, watcher: AgentSession,
                                                               hook: HttpReceiver) -> None:
    bound = budget(agent_lab)
    rounds: list[IsolationRound] = []
    alerted_before = len(hook.received())
    audited_before = sum(1 for e in audit.read_entries(agent_lab.root / "audit") if e["action"] == "self-fenced")
    for round_no in range(ROUNDS):
        r = isolate_once(agent_lab, watcher)
        rounds.append(r)
        print(f"\nround {round_no}: last ack +{r.last_ack_s:.3f}s, postmaster gone +{r.postmaster_gone_s:.3f}s, "
              f"liveness node gone +{r.node_expired_s:.3f}s; agent: {r.fenced}")
        assert r.last_ack_s <= bound, f"round {round_no}: a commit acknowledged {r.last_ack_s:.3f}s after the cut"
        assert r.last_ack_s < r.node_expired_s, "a commit was acknowledged after the agent's session expired"
        assert r.fenced[0]["cause"] in ("lease-lapsed", "session-lost"), r.fenced
    acks, gone = [r.last_ack_s for r in rounds], [r.postmaster_gone_s for r in rounds]
    print(f"\nisolated primary, {ROUNDS} rounds: last acknowledgement after the cut median "
          f"{statistics.median(acks):.3f}s max {max(acks):.3f}s; postmaster gone median {statistics.median(gone):.3f}s "
          f"max {max(gone):.3f}s; liveness node gone min {min(r.node_expired_s for r in rounds):.3f}s; bound {bound}s")
    # Each fence the agent decided alone, cut off from ZooKeeper, reached the on-call webhook (signed) and the
    # audit trail, sent by the agent itself: no controller saw it happen.
    assert poll(lambda: len(hook.received()) >= alerted_before + ROUNDS, timeout=30, interval=0.05), \
        f"{len(hook.received()) - alerted_before} of {ROUNDS} self-fencing alerts arrived"
    alerts = hook.received()[alerted_before:]
    assert len(alerts) == ROUNDS, [a.json for a in alerts]
    for alert in alerts:
        body = alert.json
        assert alert.signed is True and alert.path == "/agent"
        assert (body["kind"], body["cluster"], body["subject"]) == ("fencing", CLUSTER, "a"), body
        assert "fenced itself (" in body["summary"] and ("session-lost" in body["summary"]
                                                         or "lease-lapsed" in body["summary"]), body
    entries = [e for e in audit.read_entries(agent_lab.root / "audit") if e["action"] == "self-fenced"]
    assert len(entries) - audited_before == ROUNDS
    assert all(e["who"] == f"agent {CLUSTER}/a" and e["details"]["member"] == "a" for e in entries)
    assert audit.verify(agent_lab.root / "audit").broken is None
    restore(agent_lab, "a", None)


@pytest.mark.parametrize("sig", [signal.SIGSTOP, signal.SIGKILL], ids=["agent frozen", "agent killed"])
def test_watchdog_fences_the_primary_of_a_frozen_or_dead_agent(agent_lab: Lab, watcher: AgentSession,
                                                                sig: signal.Signals) -> None:
    bound = budget(agent_lab)
    restore(agent_lab, "a", None)
    agent = start_agent(agent_lab, watcher, "a")
    raw = watcher.agent_facts(CLUSTER)["a"]
    watchdog_pid = AgentFacts.model_validate_json(raw).watchdog_pid
    assert watchdog_pid is not None and is_running(watchdog_pid)
    dog_log = agent_lab.root / "agent" / f"{CLUSTER}-a.watchdog.log"
    fenced_before = dog_log.read_text().count('"event": "fenced"')
    try:
        writers = MemberWriters(agent_lab)
        try:
            frozen_at = time.monotonic()
            os.kill(agent.pid, sig)
            wait_for(lambda: layout(agent_lab, "a").postmaster_pid() is None, 15, "the watchdog to fence the primary")
            if sig is signal.SIGKILL:  # the session expires: a controller may now promote
                wait_for(lambda: "a" not in watcher.agent_facts(CLUSTER), 15, "the dead agent's node to expire")
                expired_at = time.monotonic()
                assert writers.last_ack() < expired_at
            else:
                time.sleep(0.2)  # a window for any late acknowledgement to show, not synchronisation
        finally:
            writers.stop()
            if sig is signal.SIGSTOP:
                os.kill(agent.pid, signal.SIGCONT)
    finally:
        agent.stop()
    late = writers.last_ack() - frozen_at
    assert wait_gone(watchdog_pid, timeout=10), (
        f"the watchdog must end with its agent; watchdog log: {dog_log.read_text()[-1500:]}; "
        f"agent log: {agent.log.read_text()[-2500:] if agent.log.exists() else ''}")
    print(f"\n{sig.name} of the agent: last acknowledgement {late:.3f}s after it (bound {bound}s)")
    assert late <= bound, f"a commit was acknowledged {late:.3f}s after the agent's {sig.name} (bound {bound}s)"
    assert dog_log.read_text().count('"event": "fenced"') == fenced_before + 1
    restore(agent_lab, "a", None)


def test_instructions_obeyed_only_from_the_current_epoch(agent_lab: Lab, watcher: AgentSession) -> None:
    restore(agent_lab, "a", None)
    topo = agent_lab.topology
    coord = Coordinator(topo.zookeeper_hosts(), topo.name, identity="test-leader")
    coord.start()
    try:
        old = coord.bump_epoch()
        watcher.instruct(old, CLUSTER, "b", {"epoch": old.epoch, "action": "fence", "id": "from-old"})
        new = coord.bump_epoch()  # the old leader is deposed before the agent reads its instruction
        agent = start_agent(agent_lab, watcher, "b")
        try:
            wait_for(lambda: (watcher.instruction_result(CLUSTER, "b") or {}).get("id") == "from-old", 10,
                     "the stale instruction's answer")
            refused = watcher.instruction_result(CLUSTER, "b") or {}
            assert refused["accepted"] is False and "stale" in str(refused["reason"]), refused
            assert layout(agent_lab, "b").postmaster_pid() is not None, "a stale instruction changed PostgreSQL"
            with pytest.raises(LostLeadership):  # the deposed leader cannot even write one now
                watcher.instruct(old, CLUSTER, "b", {"epoch": old.epoch, "action": "fence", "id": "late"})
            watcher.instruct(new, CLUSTER, "b", {"epoch": new.epoch, "action": "fence", "id": "from-new"})
            wait_for(lambda: (watcher.instruction_result(CLUSTER, "b") or {}).get("id") == "from-new", 10,
                     "the current instruction's answer")
            done = watcher.instruction_result(CLUSTER, "b") or {}
            assert done["accepted"] is True and done["fenced"] is True, done
            wait_for(lambda: layout(agent_lab, "b").postmaster_pid() is None, 10, "b to be stopped")
            wait_for(lambda: AgentFacts.model_validate_json(watcher.agent_facts(CLUSTER)["b"]).fenced, 5,
                     "the agent to publish fenced=true")
            facts = AgentFacts.model_validate_json(watcher.agent_facts(CLUSTER)["b"])
            assert facts.epoch_seen == new.epoch
            # Never unfenced automatically: a restarted agent still says fenced, and does not re-run
            # the instruction it already answered; only an unfence of the current epoch clears it.
            agent.stop()
            agent = start_agent(agent_lab, watcher, "b", member_running=False)
            assert AgentFacts.model_validate_json(watcher.agent_facts(CLUSTER)["b"]).fenced
            assert (watcher.instruction_result(CLUSTER, "b") or {}).get("id") == "from-new"
            watcher.instruct(new, CLUSTER, "b", {"epoch": new.epoch, "action": "unfence", "id": "unfence-1"})
            wait_for(lambda: (watcher.instruction_result(CLUSTER, "b") or {}).get("id") == "unfence-1", 10,
                     "the unfence answer")
            assert (watcher.instruction_result(CLUSTER, "b") or {})["accepted"] is True
            wait_for(lambda: not AgentFacts.model_validate_json(watcher.agent_facts(CLUSTER)["b"]).fenced, 5,
                     "the agent to publish fenced=false")
        finally:
            agent.stop()
    finally:
        coord.stop()
    restore(agent_lab, "b", "a")


def test_a_primary_the_state_does_not_name_is_fenced(agent_lab: Lab, watcher: AgentSession) -> None:
    """A stray primary: the recorded state names b primary of a newer generation; a promotion in progress
    toward a is not a reason to fence it."""
    restore(agent_lab, "a", None)
    topo = agent_lab.topology
    coord = Coordinator(topo.zookeeper_hosts(), topo.name, identity="test-leader")
    coord.start()
    agent = start_agent(agent_lab, watcher, "a")
    try:
        lease = coord.bump_epoch()
        state, version = coord.read_state(CLUSTER)
        ours = ClusterState(cluster=CLUSTER, primary="a", generation=1)
        version = coord.write_state(lease, ours if state is None else state.model_copy(
            update={"primary": "a", "generation": 1, "operation": None}), version)
        promoting = Operation(id="op1", kind=OperationKind.FAILOVER, source="b", target="a", reason="test",
                              started_at=time.time())
        version = coord.write_state(lease, ours.model_copy(update={"primary": "b", "generation": 2,
                                                                    "operation": promoting}), version)
        wait_for(lambda: any(e.get("promoting") == "a" for e in agent.events("state")), 10, "the agent to see it")
        assert layout(agent_lab, "a").postmaster_pid() is not None, "fenced the target of a promotion"
        coord.write_state(lease, ours.model_copy(update={"primary": "b", "generation": 3}), version)
        wait_for(lambda: agent.events("fenced"), 15, "the stray primary to be fenced")
        assert layout(agent_lab, "a").postmaster_pid() is None
        fenced = agent.events("fenced")
        assert fenced and fenced[0]["cause"] == "stray-primary", fenced
        assert "generation 3" in str(fenced[0]["reason"])
    finally:
        agent.stop()
        coord.stop()
    restore(agent_lab, "a", None)


def test_a_second_agent_for_the_same_member_refuses_to_run(agent_lab: Lab, watcher: AgentSession) -> None:
    agent = start_agent(agent_lab, watcher, "b")
    try:
        proc = subprocess.run(agent_command(agent_lab.root, "b"), capture_output=True, text=True, timeout=60,
                              cwd=agent_lab.root)
        assert proc.returncode == 1
        assert "agents/b: another agent runs beside this member" in proc.stderr
        facts = AgentFacts.model_validate_json(watcher.agent_facts(CLUSTER)["b"])
        assert facts.agent_pid == agent.pid  # the first one's liveness node was left alone
    finally:
        agent.stop()


def test_a_stalled_primary_is_fenced_when_its_agent_is_told(agent_lab: Lab, watcher: AgentSession) -> None:
    """Every postgres process of the primary SIGSTOPped (a stall): the fence's SQL never gets an
    answer, so it must not wait for one; the signals fence it and the agent's loop goes on."""
    restore(agent_lab, "a", None)
    topo = agent_lab.topology
    coord = Coordinator(topo.zookeeper_hosts(), topo.name, identity="test-leader")
    coord.start()
    stalled: list[int] = []
    agent: AgentProcess | None = None
    try:
        lease = coord.bump_epoch()
        # The state names a primary (an earlier test may have left b recorded: a stray a is fenced at once).
        state, version = coord.read_state(CLUSTER)
        coord.write_state(lease, ClusterState(cluster=CLUSTER, primary="a", generation=1) if state is None
                          else state.model_copy(update={"primary": "a", "generation": state.generation + 1,
                                                        "operation": None}), version)
        agent = start_agent(agent_lab, watcher, "a")
        postmaster = layout(agent_lab, "a").postmaster_pid()
        assert postmaster is not None
        for pid in [postmaster, *(c.pid for c in psutil.Process(postmaster).children())]:
            with contextlib.suppress(ProcessLookupError):  # a backend may end between the listing and now
                os.kill(pid, signal.SIGSTOP)
                stalled.append(pid)
        assert stalled and stalled[0] == postmaster
        watcher.instruct(lease, CLUSTER, "a", {"epoch": lease.epoch, "action": "fence", "id": uuid.uuid4().hex})
        wait_for(lambda: layout(agent_lab, "a").postmaster_pid() is None, 15, "the stalled postmaster to go")
        wait_for(lambda: not AgentFacts.model_validate_json(watcher.agent_facts(CLUSTER)["a"]).postmaster_alive,
                 10, "the agent to report the postmaster gone (its loop was not stuck in the fence)")
        wait_for(lambda: not any(is_running(pid) for pid in stalled), 15, "every stalled process to be gone")
        # Whoever got there first stopped it as stalled: the agent's fence, or (the agent's local
        # probe blocks on the stalled server too) its watchdog, once the agent's loop stopped petting it.
        dog_log = agent_lab.root / "agent" / f"{CLUSTER}-a.watchdog.log"
        reports = [str(e.get("shutdown")) for e in agent.events("fenced")] + [
            line for line in dog_log.read_text().splitlines() if '"event": "fenced"' in line]
        assert any("stalled" in r for r in reports), reports
    finally:
        for pid in stalled:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        if agent is not None:
            agent.stop()
        coord.stop()
    restore(agent_lab, "a", None)
