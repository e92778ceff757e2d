"""The node agent's runtime: its threads, its ZooKeeper session, the decide-and-fence loop.

:class:`Agent` is built by :mod:`orchestrator.agent.main` (``drctl agent run``). It runs:

* the **loop** (the calling thread): observe the member locally, answer a pending instruction,
  ask :func:`~orchestrator.agent.rules.fence_decision`, fence when told; every ``loop_s``;
* the **heartbeat** thread: connect the session, write the facts into the ephemeral liveness node
  every ``heartbeat_s``; each confirmed write renews the lease (from the instant it was *sent*) and
  pets the watchdog with the new deadline;
* **watches** (kazoo's threads) that only store what they see: the cluster state (who is primary,
  of which generation, who is being promoted), the leader epoch, this member's instruction;
* the **health port** (:mod:`orchestrator.agent.health`, when the topology has a ``health``
  section): Patroni-style endpoints for load balancers and ``/metrics``, answered from
  :meth:`Agent.reading` (``decisions.health`` decides the codes);
* the **watchdog** process (:mod:`orchestrator.agent.watchdog`), which stops the postmaster by PID
  if the loop or the whole agent stalls past the deadline.

Stopping the agent (SIGTERM) while its member is an unfenced primary fences it first, as stopping
Patroni stops PostgreSQL: a primary without an agent has no lease anyone can check, and the
closed session removes the liveness node that controllers read as "fenced".
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.agent import rules
from orchestrator.agent.facts import AgentFacts, LocalObservation, LocalProbe
from orchestrator.agent.fencing import Fencer
from orchestrator.agent.health import AgentReading, HealthServer
from orchestrator.agent.watchdog import Watchdog
from orchestrator.coordination import AgentSession
from orchestrator.decisions import SessionState
from orchestrator.decisions.health import MemberHealth, fence_in_force
from orchestrator.errors import CoordinationUnavailable, PermanentError
from orchestrator.events import EventLog
from orchestrator.state import ClusterState, Role
from orchestrator.topology import Topology


class AgentAlreadyRunning(PermanentError):
    """Another agent runs beside this member: two would fight over one liveness node."""


class Instruction(BaseModel):
    """The leader's instruction to one agent (``instructions/<member>``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epoch: int = Field(ge=1)
    action: Literal["fence", "unfence"]
    id: str = Field(min_length=1, max_length=100)


def parse_instruction(raw: bytes) -> Instruction:
    """:raises ValueError: one line naming the bad field and the expected form."""
    try:
        return Instruction.model_validate_json(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "instruction"
        raise ValueError(f"instruction.{where}: {err['msg']}; expected "
                         '{"epoch": N >= 1, "action": "fence"|"unfence", "id": "..."}') from None


@dataclass(frozen=True)
class AgentConfig:
    cluster: str
    member: str
    namespace: str
    zk_hosts: str
    budget: rules.FencingBudget
    data_dir: Path
    local_conninfo: str
    watchdog_log: Path
    # Where the fenced flag survives an agent restart (only an unfence instruction clears it).
    fence_record: Path
    # Held (flock) for the agent's life: one agent per member on this host.
    lock_file: Path
    loop_s: float = 0.05
    # The health port (orchestrator.agent.health); None: not served.
    health_address: tuple[str, int] | None = None
    metrics: bool = True
    # For the health answers' sync/async: whose confirmation counts for which primary.
    topology: Topology | None = None


class Agent:
    def __init__(self, config: AgentConfig, log: EventLog, *, session: AgentSession | None = None) -> None:
        self.config = config
        self.log = log
        self.stop_event = threading.Event()
        self.session = session or AgentSession(config.zk_hosts, config.namespace,
                                               session_timeout=config.budget.session_timeout_s)
        self._probe = LocalProbe(config.local_conninfo, config.data_dir)
        self._fencer = Fencer(config.local_conninfo, config.data_dir)
        self._lock = threading.Lock()
        started = time.monotonic()
        # No lease yet: the grace until the first confirmation is one detection window from start.
        self._confirmed_send = started
        self._confirmed_wall: float | None = None
        self._loop_at = started
        self._session_state = SessionState.SUSPENDED  # not connected yet: in doubt, not lost
        self._obs = LocalObservation(Role.UNKNOWN, False)
        self._recorded: rules.RecordedPrimary | None = None
        self._state: ClusterState | None = None
        self._probe_s: float | None = None
        self._fences = 0
        self._epoch_seen: int | None = None
        self._instruction: bytes | None = None
        self._last_answered: str | None = None
        self._fenced, self._fenced_at, self._fence_reason, self._fenced_generation = self._load_fence_record()
        self._watchdog: Watchdog | None = None

    # ---- process lifetime ---------------------------------------------------------------------

    def run(self) -> None:
        """Run until :attr:`stop_event` is set; fence an unfenced primary on the way out.

        :raises AgentAlreadyRunning: another agent holds this member's lock.
        """
        cfg = self.config
        cfg.lock_file.parent.mkdir(parents=True, exist_ok=True)
        with open(cfg.lock_file, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AgentAlreadyRunning(f"{cfg.cluster}/{cfg.member}: another agent runs beside this member "
                                          f"(it holds {cfg.lock_file}); stop it first") from None
            self._run()

    def _run(self) -> None:
        cfg = self.config
        self.log.emit("started", budget=cfg.budget.__dict__)
        self.session.on_session_change(self._on_session)
        self._watchdog = self._spawn_watchdog()
        heartbeat = threading.Thread(target=self._heartbeat, name="agent-heartbeat", daemon=True)
        heartbeat.start()
        health = self._serve_health()
        try:
            while not self.stop_event.is_set():
                try:
                    self._loop_once()
                except Exception as exc:  # a bug must not leave a primary unguarded: log, go on
                    self.log.emit("loop-error", error=repr(exc))
                with self._lock:  # wake when the lease lapses, not up to a loop later
                    wake = min(self._loop_at + cfg.loop_s, self._confirmed_send + cfg.budget.detect_s + 0.001)
                self.stop_event.wait(max(0.0, wake - time.monotonic()))
        finally:
            self.stop_event.set()
            obs = self._probe.observe()
            if obs.postmaster_alive and obs.role is not Role.STANDBY:
                self._fence("agent stopped while its member is primary", cause="agent-stopped")
            if health is not None:
                health.stop()
            heartbeat.join(timeout=cfg.budget.session_timeout_s + 1)
            if self._watchdog is not None:
                self._watchdog.stop()
            self.session.stop()
            self._probe.close()
            self._fencer.close()
            self.log.emit("stopped")

    def _serve_health(self) -> HealthServer | None:
        """The health port; one that cannot be bound is logged, and the agent carries on without it."""
        if self.config.health_address is None:
            return None
        host, port = self.config.health_address
        server = HealthServer(host, port, self.reading, metrics=self.config.metrics)
        try:
            server.start()
        except OSError as exc:
            self.log.emit("health-failed", address=host, port=port, error=str(exc))
            return None
        self.log.emit("health-serving", address=host, port=port)
        return server

    def _spawn_watchdog(self) -> Watchdog:
        with self._lock:
            deadline = rules.lease_deadline(self._confirmed_send, time.monotonic(), self.config.budget)
        dog = Watchdog(self.config.data_dir, deadline, self.config.watchdog_log)
        self.log.emit("watchdog", pid=dog.pid)
        return dog

    def _on_session(self, state: SessionState) -> None:
        with self._lock:
            changed = state is not self._session_state
            self._session_state = state
        if changed:
            self.log.emit("session", state=state.value)

    # ---- the loop ------------------------------------------------------------------------------

    def _loop_once(self) -> None:
        now = time.monotonic()
        obs = self._probe.observe()
        with self._lock:
            self._loop_at = now
            self._obs = obs
            self._probe_s = time.monotonic() - now
            pending, self._instruction = self._instruction, None
        if pending is not None:
            self._answer(pending)
        with self._lock:
            inputs = rules.FenceInputs(self.config.member, obs.role, obs.postmaster_alive, self._session_state,
                                       time.monotonic() - self._confirmed_send, self._recorded)
        verdict = rules.fence_decision(inputs, self.config.budget)
        if verdict.fence and (verdict.cause is not rules.FenceCause.STRAY or self._stray_confirmed()):
            self._fence(verdict.reason, cause=verdict.cause.value)
        elif obs.role is Role.PRIMARY:
            self._fencer.prepare()  # the fence's connection stays open while we are primary
        if self._watchdog is not None and not self._watchdog.alive():
            self.log.emit("watchdog-died", pid=self._watchdog.pid)
            self._watchdog = self._spawn_watchdog()

    def _stray_confirmed(self) -> bool:
        """The watched state may lag a promotion in progress: re-read it from the leader first."""
        try:
            state = self.session.read_state(self.config.cluster)
        except CoordinationUnavailable:
            return False  # the lease rule takes over if ZooKeeper stays unreachable
        self._on_state(state)
        with self._lock:
            rec = self._recorded
        return rec is not None and rec.primary != self.config.member and rec.promoting != self.config.member

    def _fence(self, reason: str, *, cause: str = "instruction") -> None:
        started = time.time()
        report = self._fencer.fence()
        with self._lock:
            self._fenced, self._fenced_at, self._fence_reason = True, started, reason
            self._fenced_generation = self._recorded.generation if self._recorded is not None else None
            self._fences += 1
            lease_age = time.monotonic() - self._confirmed_send
        self._save_fence_record()
        self.log.emit("fenced", cause=cause, reason=reason, lease_age_s=round(lease_age, 3),
                      sql_ok=report.sql_ok, sql_error=report.sql_error, sql_s=round(report.sql_s, 4),
                      shutdown=report.shutdown, total_s=round(report.total_s, 3))

    def _answer(self, raw: bytes) -> None:
        cfg = self.config
        try:
            instruction = parse_instruction(raw)
        except ValueError as exc:
            result: dict[str, Any] = {"id": None, "accepted": False, "reason": str(exc)}
        else:
            try:
                current = self.session.current_epoch()
            except CoordinationUnavailable:
                current = None
            verdict = rules.instruction_verdict(instruction.epoch, current, instruction.id, self._last_answered)
            if verdict.accept and instruction.action == rules.InstructionAction.FENCE.value:
                self._fence(f"instructed by the leader of epoch {instruction.epoch} ({instruction.id})")
            elif verdict.accept:
                with self._lock:
                    self._fenced, self._fenced_at, self._fence_reason = False, None, ""
                self._save_fence_record()
            if instruction.id == self._last_answered:
                return  # a re-delivery of what we already answered: the answer stands
            result = {"id": instruction.id, "epoch": instruction.epoch, "action": instruction.action,
                      "accepted": verdict.accept, "reason": verdict.reason, "current_epoch": current}
            self._last_answered = instruction.id
        result.update(at=time.time(), fenced=self._fenced)
        self.log.emit("instruction", **result)
        try:
            self.session.answer(cfg.cluster, cfg.member, result)
        except CoordinationUnavailable as exc:
            self.log.emit("answer-failed", error=str(exc))

    def _load_fence_record(self) -> tuple[bool, float | None, str, int | None]:
        try:
            record = json.loads(self.config.fence_record.read_text())
            generation = record.get("generation")
            return (True, float(record["at"]), str(record["reason"]),
                    int(generation) if generation is not None else None)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False, None, "", None

    def _save_fence_record(self) -> None:
        path = self.config.fence_record
        with self._lock:
            fenced, at, reason = self._fenced, self._fenced_at, self._fence_reason
            generation = self._fenced_generation
        try:
            if fenced:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"at": at, "reason": reason, "generation": generation}))
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            self.log.emit("fence-record-failed", path=str(path), error=str(exc))

    # ---- watches (kazoo threads: store only) -------------------------------------------------------

    def _on_state(self, state: ClusterState | None) -> None:
        recorded = None if state is None else rules.RecordedPrimary(
            state.primary, state.generation, state.operation.target if state.operation is not None else None)
        with self._lock:
            changed = recorded != self._recorded
            self._recorded = recorded
            self._state = state
        if changed and recorded is not None:
            self.log.emit("state", primary=recorded.primary, generation=recorded.generation,
                          promoting=recorded.promoting)

    def _on_epoch(self, epoch: int | None) -> None:
        with self._lock:
            self._epoch_seen = epoch

    def _on_instruction(self, raw: bytes | None) -> None:
        if raw:
            with self._lock:
                self._instruction = raw

    # ---- heartbeat -----------------------------------------------------------------------------

    def _connect(self) -> bool:
        cfg = self.config
        while not self.stop_event.is_set():
            try:
                self.session.start(timeout=cfg.budget.session_timeout_s)
            except CoordinationUnavailable as exc:
                self.log.emit("connect-failed", error=str(exc))
                continue
            self._on_session(SessionState.CONNECTED)
            try:
                self.session.register(cfg.cluster, cfg.member, {
                    "bound_s": cfg.budget.bound_s, "session_timeout_s": cfg.budget.session_timeout_s,
                    "agent_pid": os.getpid(), "at": time.time()})
                answered = self.session.instruction_result(cfg.cluster, cfg.member)
                self._last_answered = str(answered["id"]) if answered and answered.get("id") else None
                self.session.watch_state(cfg.cluster, self._on_state)
                self.session.watch_epoch(self._on_epoch)
                self.session.watch_instruction(cfg.cluster, cfg.member, self._on_instruction)
            except CoordinationUnavailable as exc:
                self.log.emit("watch-failed", error=str(exc))
                self.session.stop()
                continue
            return True
        return False

    def _heartbeat(self) -> None:
        cfg, budget = self.config, self.config.budget
        if not self._connect():
            return
        while not self.stop_event.is_set():
            sent = time.monotonic()
            facts = self.facts()
            try:
                self.session.publish(cfg.cluster, cfg.member, facts.model_dump_json().encode())
            except CoordinationUnavailable:
                self.stop_event.wait(budget.heartbeat_s / 5)
                continue
            with self._lock:
                if sent > self._confirmed_send:
                    self._confirmed_send, self._confirmed_wall = sent, time.time() - (time.monotonic() - sent)
                deadline = rules.lease_deadline(self._confirmed_send, self._loop_at, budget)
                dog = self._watchdog
            if dog is not None:
                dog.pet(deadline)
            self.stop_event.wait(max(0.0, budget.heartbeat_s - (time.monotonic() - sent)))

    def facts(self) -> AgentFacts:
        cfg = self.config
        with self._lock:
            obs, rec = self._obs, self._recorded
            return AgentFacts(
                cluster=cfg.cluster, member=cfg.member, role=obs.role, postmaster_alive=obs.postmaster_alive,
                timeline=obs.timeline, received_lsn=obs.received_lsn, flushed_lsn=obs.flushed_lsn,
                replayed_lsn=obs.replayed_lsn, fenced=self._fenced, fenced_at=self._fenced_at,
                fence_reason=self._fence_reason, fencing_bound_s=cfg.budget.bound_s,
                lease_confirmed_at=self._confirmed_wall, session=self._session_state.value,
                epoch_seen=self._epoch_seen, generation_seen=rec.generation if rec is not None else None,
                agent_pid=os.getpid(), watchdog_pid=self._watchdog.pid if self._watchdog is not None else None,
                updated_at=time.time(),
            )


    # ---- health (the health port's threads) --------------------------------------------------------

    def reading(self) -> AgentReading:
        """What the health endpoints and /metrics answer from, taken under the lock."""
        cfg = self.config
        now = time.monotonic()
        with self._lock:
            obs, state, session = self._obs, self._state, self._session_state
            confirmed = self._confirmed_wall is not None
            lease_age = now - self._confirmed_send
            loop_age = now - self._loop_at
            fenced, probe_s, fences = self._fenced, self._probe_s, self._fences
            fenced_generation = self._fenced_generation
        primary = state.primary if state is not None else None
        generation = state.generation if state is not None else None
        lag: int | None = None
        if obs.role is Role.PRIMARY:
            lag = 0
        elif state is not None and primary in state.members:
            primary_lsn = state.members[primary].wal_lsn
            mine = max((p for p in (obs.received_lsn, obs.replayed_lsn) if p is not None), default=None)
            if primary_lsn is not None and mine is not None:
                lag = max(0, primary_lsn - mine)
        health = MemberHealth(
            member=cfg.member, role=obs.role, postmaster_alive=obs.postmaster_alive,
            answering=obs.postmaster_alive and obs.error is None,
            fenced=fence_in_force(cfg.member, fenced, fenced_generation, primary, generation),
            lease_valid=confirmed and session is not SessionState.LOST and lease_age <= cfg.budget.detect_s,
            recorded_primary=primary, generation=generation,
            timeline=obs.timeline, streaming=obs.receiver == "streaming",
            synchronous=self._synchronous(state), lag_bytes=lag,
            loop_age_s=loop_age, loop_limit_s=cfg.budget.detect_s,
        )
        return AgentReading(cluster=cfg.cluster, health=health,
                            lag_seconds=0.0 if obs.role is Role.PRIMARY else obs.replay_delay_s,
                            probe_seconds=probe_s, since_zookeeper_s=lease_age if confirmed else None,
                            fences=fences)

    def _synchronous(self, state: ClusterState | None) -> bool:
        """Does this member's confirmation count for the recorded primary's commits?"""
        topo = self.config.topology
        if topo is None or state is None or state.primary == self.config.member:
            return False
        try:
            cluster = topo.cluster(self.config.cluster)
            primary = cluster.member(state.primary)
        except (KeyError, ValueError):
            return False
        if cluster.replication.quorum == 0:
            return False
        names = (*topo.synchronous_members(cluster), *state.synchronous_extra)
        return self.config.member in topo.confirming_members(cluster, primary, names)
