"""dr-orchestrator itself as a benchmarked :class:`~orchestrator.bench.system.System`.

A lab of its own (:class:`~orchestrator.lab.Lab`): one region, three data centres on
127.0.0.1, one ZooKeeper server and one controller per data centre, and the cluster
``payments`` with members ``a`` (primary, dc1), ``b`` (dc2) and ``c`` (dc3) under
``synchronous_standby_names = ANY 1 ("a", "b", "c")``. The ZooKeeper, controller and
PostgreSQL settings come from ``topology/lab.yaml``, so the bench runs the same tuning as
the drills. :func:`orchestrator.bench.runner.run_bench` drives it; nothing here prints.

The fault is the loss of the primary's node: kill -9 of its postmaster and of the
controller of its data centre (our agent on that node), leader or not.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import time
from pathlib import Path
from typing import Any

import psycopg

from orchestrator import postgres as pg
from orchestrator.bench.system import Fault, RoundFacts, SyncSample
from orchestrator.coordination import Coordinator
from orchestrator.errors import LabError, OrchestratorError
from orchestrator.lab import Lab, recorded_topology
from orchestrator.state import Role
from orchestrator.topology import Cluster, Member, Topology, load_topology, parse_topology
from orchestrator.waiting import poll

NAME = "dr-orchestrator"
CLUSTER = "payments"
DATACENTERS = ("dc1", "dc2", "dc3")
MEMBERS = (("a", "dc1"), ("b", "dc2"), ("c", "dc3"))   # the first one starts as primary
TUNED_FROM = Path(__file__).resolve().parents[2] / "topology" / "lab.yaml"
DEFAULT_PORT_BASE = 24000     # below the lab (25400), CI (26000-33100) and the ephemeral range (32768-)
PORT_SPAN = 50                # 9 ZooKeeper ports + 3 PostgreSQL ports, with room to spare
POLL_S = 0.05
REJOIN_TIMEOUT_S = 30.0
HEAL_TIMEOUT_S = 60.0
FAULT_WORDS = "kill -9 of the primary's postmaster and of the controller of its data centre (leader or not)"


def bench_topology(port_base: int, *, tuned_from: Path = TUNED_FROM, port_span: int = PORT_SPAN) -> Topology:
    """The bench's 3-member topology on ``port_base``, tuned like ``tuned_from``.

    :raises TopologyError: ``tuned_from`` is unreadable, or the port range is invalid.
    """
    tuned = load_topology(tuned_from)
    targets = next((c.targets for c in tuned.clusters if c.name == CLUSTER), None)
    data: dict[str, Any] = {
        "name": "bench",
        "regions": [{"name": "bench", "datacenters": [
            {"name": dc, "hosts": [{"name": f"{dc}-host", "address": "127.0.0.1"}]} for dc in DATACENTERS]}],
        "ports": {"base": port_base, "span": port_span},
        # The timings are tuned like the lab's; the placement is the bench's own (one ZooKeeper server
        # and one controller in each of its data centres), not the lab's (dc1, dc3 and a witness).
        "zookeeper": tuned.zookeeper.model_dump(mode="json", exclude={"datacenters"}),
        "controller": tuned.controller.model_dump(mode="json", exclude={"datacenters"}),
        "postgres": tuned.postgres.model_dump(mode="json"),
        "clusters": [{
            "name": CLUSTER,
            "members": [{"name": name, "datacenter": dc, **({"role": "primary"} if i == 0 else {})}
                        for i, (name, dc) in enumerate(MEMBERS)],
            # One region: every member is a quorum candidate, ANY 1 ("a", "b", "c").
            "replication": {"quorum": 1},
            **({"targets": targets.model_dump(mode="json")} if targets is not None else {}),
        }],
    }
    return parse_topology(data, source=f"bench topology (tuned from {tuned_from})")


def _check_traversable(path: Path) -> None:
    """The postgres user must reach the lab through every existing parent directory."""
    for parent in path.resolve().parents:
        if parent.exists() and not parent.stat().st_mode & stat.S_IXOTH:
            raise LabError(f"{parent}: the postgres user cannot traverse it (mode "
                           f"{stat.filemode(parent.stat().st_mode)}); chmod o+x it or use another work directory")


class DrOrchestratorSystem:
    """Our controllers on their own lab; ``start(workdir)`` keeps the lab in ``workdir/lab``."""

    name = NAME

    def __init__(self, port_base: int = DEFAULT_PORT_BASE, *, tuned_from: Path = TUNED_FROM,
                 poll_s: float = POLL_S, rejoin_timeout_s: float = REJOIN_TIMEOUT_S,
                 heal_timeout_s: float = HEAL_TIMEOUT_S) -> None:
        self.topology = bench_topology(port_base, tuned_from=tuned_from)
        self.cluster: Cluster = self.topology.cluster(CLUSTER)
        self.tuned_from = tuned_from
        self.poll_s = poll_s
        self.rejoin_timeout_s = rejoin_timeout_s
        self.heal_timeout_s = heal_timeout_s
        self._lab: Lab | None = None
        self._leader_at_start: str | None = None

    # ---- System ------------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        return {
            "system": NAME,
            "topology": self.topology.model_dump(mode="json"),
            "synchronous_standby_names": self.topology.synchronous_standby_names(self.cluster),
            "tuned_from": str(self.tuned_from),
            "fault": FAULT_WORDS,
            "client_routing": "libpq multi-host, target_session_attrs=read-write",
            "rejoin": "the leading controller rewinds the old primary (playbooks/rejoin.yml), no operator",
        }

    def start(self, workdir: Path) -> None:
        """Reuse a healthy lab, let the controllers heal a recovering one, rebuild a broken one.

        A stopped old primary is never started by hand (it would come back as a second
        primary): the controllers rewind it. Returns once failover is armed again (the
        anti-flap period since the last failover is over).

        :raises LabError: the lab is not healthy in time, or the postgres user cannot reach it.
        """
        _check_traversable(workdir / "lab")
        lab = Lab(self.topology, workdir / "lab", controllers=True)
        self._lab = lab
        if recorded_topology(lab.root) is not None:
            lab.restart_services()
            if not self._wait_healthy(lab, self.heal_timeout_s):
                lab.down()
        lab.up()
        if not self._wait_healthy(lab, self.heal_timeout_s):
            raise LabError(f"{NAME}: lab in {lab.root} not healthy after {self.heal_timeout_s:.0f}s; "
                           f"see {lab.root}/controller/*.log")
        self._wait_armed(lab, self.heal_timeout_s)

    def ports(self) -> tuple[int, ...]:
        """ZooKeeper's and PostgreSQL's ports (the controllers listen on none)."""
        return tuple(sorted(self.topology.port_plan().values()))

    def conninfo(self) -> str:
        return self._require_lab().app_connection_string(self.cluster)

    def kill_primary(self) -> Fault:
        """:raises LabError: no single primary, or it has no running postmaster (nothing was killed)."""
        lab = self._require_lab()
        primary = self._single_primary(lab)
        postmaster = lab.layout(self.cluster, primary).postmaster_pid()
        if postmaster is None:
            raise LabError(f"{NAME}: primary {primary.name} has no running postmaster; nothing killed")
        controller = lab.controller_pid(primary.datacenter)
        pids = (postmaster,) if controller is None else (postmaster, controller)
        at = time.time()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return Fault(at=at, member=primary.name, pids=pids)

    def observe(self, fault: Fault, seconds: float) -> RoundFacts:
        """Poll roles and the primaries' ``synchronous_standby_names`` until ``fault.at + seconds``,
        then restart the killed controller and wait up to ``rejoin_timeout_s`` for the old
        primary to stream from the new one."""
        lab = self._require_lab()
        endpoints = {m.name: lab.layout(self.cluster, m).endpoint for m in self.cluster.members}
        samples: list[SyncSample] = []
        first_seen: dict[str, float] = {}
        primaries: list[str] = []
        polls = 0
        prober = pg.Prober(lab.credentials, timeout=0.5)
        try:
            while (began := time.time()) < fault.at + seconds:
                primaries = []
                for name, endpoint in endpoints.items():
                    if prober.probe(endpoint).role is not Role.PRIMARY:
                        continue
                    primaries.append(name)
                    first_seen.setdefault(name, time.time())
                    names = _sync_names(prober.connection(endpoint))
                    if names is not None:
                        samples.append(SyncSample(at=time.time(), server=f"{endpoint.address}:{endpoint.port}",
                                                  synchronous_standby_names=names))
                polls += 1
                time.sleep(max(0.0, min(self.poll_s - (time.time() - began), fault.at + seconds - time.time())))
        finally:
            prober.close()
        new_primary = primaries[0] if len(primaries) == 1 and primaries[0] != fault.member else None
        restarted_at = time.time()
        restart_error = None
        try:
            lab.restart_services()
        except OrchestratorError as exc:
            restart_error = str(exc)
        rejoined_at = None
        if new_primary is not None:
            rejoined_at = self._wait_rejoined(lab, fault.member, endpoints[new_primary],
                                              restarted_at + self.rejoin_timeout_s)
        notes: dict[str, Any] = {
            "polls": polls,
            "primaries_at_window_end": primaries,
            "new_primary_seen_after_s": None if new_primary is None else first_seen[new_primary] - fault.at,
            "leader_at_start": self._leader_at_start,
            # Controller identities start with their data centre: did the kill take the leader too?
            "killed_controller_led": (self._leader_at_start or "").startswith(
                f"{self.cluster.member(fault.member).datacenter}:") and len(fault.pids) > 1,
            "killed": {"postmaster": fault.pids[0], "controller": fault.pids[1] if len(fault.pids) > 1 else None},
            "rejoined_after_fault_s": None if rejoined_at is None else rejoined_at - fault.at,
            "rejoined_after_restart_s": None if rejoined_at is None else max(0.0, rejoined_at - restarted_at),
        }
        if restart_error is not None:
            notes["restart_error"] = restart_error
        return RoundFacts(new_primary=new_primary, old_primary_rejoined=rejoined_at is not None,
                          sync_samples=tuple(samples), notes=notes)

    def stop(self) -> None:
        """Stop every lab process by PID; ``workdir/lab`` stays for its logs (the bench runner
        keeps them and removes the directory, so the next :meth:`start` builds a new lab)."""
        if self._lab is not None:
            self._lab.down(keep_data=True)

    # ---- helpers -----------------------------------------------------------------------------

    def _require_lab(self) -> Lab:
        if self._lab is None:
            raise LabError(f"{NAME}: not started; call start(workdir) first")
        return self._lab

    def _single_primary(self, lab: Lab) -> Member:
        prober = pg.Prober(lab.credentials, timeout=1)
        try:
            found = [m for m in self.cluster.members
                     if prober.probe(lab.layout(self.cluster, m).endpoint).role is Role.PRIMARY]
        finally:
            prober.close()
        if len(found) != 1:
            raise LabError(f"{NAME}: {len(found)} primaries ({', '.join(m.name for m in found) or 'none'}); "
                           "expected exactly one before the fault")
        return found[0]

    @staticmethod
    def _wait_healthy(lab: Lab, timeout: float) -> bool:
        def healthy() -> bool:
            try:
                return lab.status().healthy
            except OrchestratorError:
                return False

        return poll(healthy, timeout=timeout, interval=0.2)

    def _wait_armed(self, lab: Lab, timeout: float) -> None:
        """Until a controller leads and the anti-flap period since the last failover is over."""
        coord = Coordinator(self.topology.zookeeper_hosts(), self.topology.name, identity="bench")
        coord.start(timeout=10)
        try:
            deadline = time.monotonic() + timeout
            while True:
                state, _ = coord.read_state(self.cluster.name)
                leader = coord.leader_identity()
                last = None if state is None else state.last_failover_at
                wait = 0.0 if last is None else last + self.topology.controller.anti_flap_seconds + 0.5 - time.time()
                if state is not None and leader is not None and wait <= 0:
                    self._leader_at_start = leader
                    return
                if time.monotonic() + max(wait, 0.0) > deadline:
                    raise LabError(f"{NAME}: failover not armed after {timeout:.0f}s (leader {leader!r}, "
                                   f"state {'recorded' if state else 'missing'}); see {lab.root}/controller/*.log")
                time.sleep(min(max(wait, 0.1), 1.0))
        finally:
            coord.stop()

    def _wait_rejoined(self, lab: Lab, member: str, upstream: pg.Endpoint, deadline: float) -> float | None:
        """When ``member`` first streamed from ``upstream`` as a standby, or None by ``deadline``."""
        endpoint = lab.layout(self.cluster, self.cluster.member(member)).endpoint
        prober = pg.Prober(lab.credentials, timeout=1)
        try:
            while True:
                status = prober.probe(endpoint)
                if (status.role is Role.STANDBY and status.streaming
                        and status.upstream == f"{upstream.address}:{upstream.port}"):
                    return time.time()
                if time.time() > deadline:
                    return None
                time.sleep(0.1)
        finally:
            prober.close()


def _sync_names(conn: pg.Connection | None) -> str | None:
    """The server's ``synchronous_standby_names``, or None when it cannot answer."""
    if conn is None:
        return None
    try:
        row = conn.execute("SELECT current_setting('synchronous_standby_names')").fetchone()
    except psycopg.Error:
        return None
    return None if row is None else str(row[0])
