"""What ``drctl lab status`` and ``drctl status`` show: JSON documents and tables that fit the terminal.

Pure presentation, called only by :mod:`orchestrator.cli`: it takes a :class:`LabStatus` or the
:class:`ClusterState` records read from ZooKeeper and returns plain dicts (for ``--json``) or rich
renderables (for people). Tables are sized to the console: a member or service name is never cut;
when the table is too wide, the least important columns are left out (pid, then port, ...), and
every cell that still does not fit folds onto a second line instead of ending in "…".

The JSON keys are a documented interface (README "Status output"); add keys, never rename them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rich import box
from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from orchestrator.decisions import AgentView
from orchestrator.lab import LabStatus
from orchestrator.state import ClusterState, DrLagRecord, Operation, Outcome

JSON_VERSION = 1


@dataclass(frozen=True)
class Column:
    header: str
    # 0: never left out (the name that identifies the row); higher numbers are left out first.
    drop_order: int = 0
    justify: Literal["left", "right"] = "left"


def fit_table(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int) -> Table:
    """A table of ``rows`` no wider than ``width`` if leaving out droppable columns can make it so."""
    keep = list(range(len(columns)))
    unbounded = console.options.update_width(1 << 16)  # measured at any width, a table reports its natural one
    while True:
        table = _table([columns[i] for i in keep], [[row[i] for i in keep] for row in rows])
        natural = Measurement.get(console, unbounded, table).maximum
        droppable = [i for i in keep if columns[i].drop_order > 0]
        if natural <= width or not droppable:
            return table
        keep.remove(max(droppable, key=lambda i: (columns[i].drop_order, i)))


def _table(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for index, column in enumerate(columns):
        # The first column names the row: it keeps its full width and the others give way.
        widest = max((len(row[index]) for row in rows), default=0) if index == 0 else None
        table.add_column(column.header, justify=column.justify, overflow="fold", min_width=widest)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # Text: names and states are never read as markup
    return table


def human_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{value} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


# ---- drctl lab status --------------------------------------------------------------------------

def lab_status_json(name: str, root: Path, status: LabStatus) -> dict[str, Any]:
    """``drctl lab status --json``: the lab's processes and replication, one object."""
    return {
        "version": JSON_VERSION,
        "lab": name,
        "root": str(root),
        "healthy": status.healthy,
        "members": [
            {"cluster": r.cluster, "member": r.member, "datacenter": r.datacenter, "role": r.role.value,
             "replication": r.replication, "lag_bytes": r.lag_bytes, "port": r.port, "pid": r.pid}
            for r in status.members
        ],
        "services": [
            {"service": s.service, "datacenter": s.datacenter, "state": s.state, "port": s.port, "pid": s.pid}
            for s in status.services
        ],
    }


# Left out first when the terminal is narrow: pid, then port, then data centre, then lag.
_MEMBER_COLUMNS = (Column("member"), Column("role"), Column("replication"), Column("lag", 1, "right"),
                   Column("dc", 2), Column("port", 3, "right"), Column("pid", 4, "right"))
_SERVICE_COLUMNS = (Column("service"), Column("dc"), Column("state"), Column("port", 1, "right"),
                    Column("pid", 2, "right"))


def lab_status_view(console: Console, name: str, root: Path, status: LabStatus) -> RenderableType:
    """The lab by cluster (members under their cluster's heading) and its services, fitted to ``console``."""
    width = console.width
    verdict = Text("healthy", style="green") if status.healthy else Text("NOT healthy", style="bold red")
    parts: list[RenderableType] = [Text.assemble(f"lab {name} at {root}: ", verdict)]
    clusters = list(dict.fromkeys(r.cluster for r in status.members))
    for cluster in clusters:
        rows = [[r.member, r.role.value, r.replication, human_bytes(r.lag_bytes), r.datacenter, str(r.port),
                 str(r.pid or "-")] for r in status.members if r.cluster == cluster]
        parts += [Text(""), Text(f"cluster {cluster}", style="bold"), fit_table(console, _MEMBER_COLUMNS, rows, width)]
    if status.services:
        rows = [[s.service, s.datacenter, s.state, str(s.port or "-"), str(s.pid or "-")] for s in status.services]
        parts += [Text(""), Text("services", style="bold"), fit_table(console, _SERVICE_COLUMNS, rows, width)]
    return Group(*parts)


# ---- drctl status ------------------------------------------------------------------------------

def _operation_json(op: Operation) -> dict[str, Any]:
    return {
        "id": op.id, "kind": op.kind.value, "source": op.source, "target": op.target, "reason": op.reason,
        "step": op.step.value, "started_at": op.started_at,
        "duration_s": (op.steps[-1].at - op.steps[0].at) if op.steps else None,
        "steps": [{"step": s.step.value, "at": s.at, "detail": s.detail} for s in op.steps],
        "proven": op.proven, "proof": op.proof, "accept_data_loss": op.accept_data_loss,
        "wal_at_risk_bytes": op.wal_at_risk_bytes,
        "running": op.running.value if op.running is not None else None,
        "outcome": op.outcome.value if op.outcome is not None else None, "outcome_detail": op.outcome_detail,
        "replans": [{"at": r.at, "old_target": r.old_target, "new_target": r.new_target, "reason": r.reason}
                    for r in op.replans],
    }


def proof_line(op: Operation) -> str:
    """Whether ``op``'s zero loss was proven and why; for an unproven one, the WAL at risk."""
    if op.proven:
        return f"zero loss proven: yes ({op.proof or 'no reason recorded'})"
    risk = "unknown" if op.wal_at_risk_bytes is None else human_bytes(op.wal_at_risk_bytes)
    accepted = "; the operator accepted data loss" if op.accept_data_loss else ""
    return f"zero loss proven: NO ({op.proof or 'not recorded'}){accepted}; WAL at risk: {risk}"


def cluster_state_json(state: ClusterState) -> dict[str, Any]:
    """One cluster of ``drctl status --json``: the state the leader keeps in ZooKeeper."""
    return {
        "cluster": state.cluster,
        "primary": state.primary,
        "generation": state.generation,
        "timeline": state.timeline,
        "paused": state.paused,
        "epoch": state.epoch,
        "written_by": state.leader,
        "updated_at": state.updated_at,
        "fallback_synchronous": list(state.synchronous_extra),
        "dr_lag": None if state.dr_lag is None else dr_lag_json(state.dr_lag, state.primary),
        "members": [
            {"member": name, "health": rec.health.value, "role": rec.role.value, "timeline": rec.timeline,
             "streaming": rec.streaming, "lag_bytes": rec.lag_bytes, "wal_lsn": rec.wal_lsn}
            for name, rec in sorted(state.members.items())
        ],
        "operation": None if state.operation is None else _operation_json(state.operation),
        "history": [_operation_json(op) for op in state.history],
    }


def dr_lag_json(record: DrLagRecord, primary: str) -> dict[str, Any]:
    """The cross-region RPO bound of one cluster: the DR standbys' lag, the alert, the hold."""
    return {
        "max_seconds": record.max_seconds, "mode": record.mode, "lag_seconds": record.lag_seconds,
        "over": record.over, "over_changed_at": record.over_changed_at, "holding": record.held_by(primary),
        "holding_since": record.holding_since if record.held_by(primary) else None,
        "measured_at": record.measured_at,
        "members": [
            {"member": name, "receive_lag_s": r.receive_lag_s, "replay_lag_s": r.replay_lag_s,
             "receive_lsn": r.receive_lsn, "replay_lsn": r.replay_lsn, "exact": r.exact,
             "replay_exact": r.replay_exact, "attached": r.attached}
            for name, r in sorted(record.members.items())
        ],
    }


def _lag_text(seconds: float | None, exact: bool) -> str:
    return "unknown" if seconds is None else f"{'>= ' if not exact else ''}{seconds:.1f} s"


def dr_lag_line(record: DrLagRecord, primary: str) -> Text:
    """The DR standbys' lag against the bound, for the text view."""
    lags = "; ".join(f"{name} receive {_lag_text(r.receive_lag_s, r.exact)}, replay "
                     f"{_lag_text(r.replay_lag_s, r.replay_exact)}{'' if r.attached else ' (not streaming)'}"
                     for name, r in sorted(record.members.items())) or "not measured"
    text = Text(f"DR lag: {lags} (bound {record.max_seconds:g} s, {record.mode})")
    if record.over:
        text.append("  OVER THE BOUND", style="bold red")
    holding = record.held_by(primary)
    if holding is not None:
        text.append(f"  commits wait for {holding}", style="yellow")
    return text


def status_json(topology: str, leader: str | None, states: Sequence[ClusterState],
                agents: Mapping[str, Mapping[str, AgentView]] | None = None) -> dict[str, Any]:
    """``drctl status --json``; ``agents``: by cluster, the registered node agents."""
    clusters = []
    for state in states:
        document = cluster_state_json(state)
        if agents is not None:
            document["fencing"] = fencing_json(state, agents.get(state.cluster, {}))
        clusters.append(document)
    return {"version": JSON_VERSION, "topology": topology, "leader": leader, "clusters": clusters}


def fencing_json(state: ClusterState, agents: Mapping[str, AgentView]) -> list[dict[str, Any]]:
    """Each member's agent: whether it is live and the bound within which it stops its member
    acknowledging commits once its lease is lost (null: no agent; only a refusal proves it stopped)."""
    return [
        {"member": name, "primary": name == state.primary,
         "agent": None if (view := agents.get(name)) is None else ("live" if view.live else "gone"),
         "fencing_bound_s": None if view is None else view.bound_s,
         "postmaster_alive": None if view is None or not view.live else view.postmaster_alive}
        for name in sorted(set(state.members) | set(agents))
    ]


def fencing_line(state: ClusterState, agents: Mapping[str, AgentView]) -> Text:
    """The primary's fencing bound, for the text view."""
    view = agents.get(state.primary)
    if view is None:
        return Text(f"fencing: {state.primary} has no agent; only a refused connection proves it stopped, so a "
                    "silent primary is never failed over automatically", style="yellow")
    if not view.live:
        return Text(f"fencing: {state.primary}'s agent is gone: its member acknowledges nothing", style="yellow")
    return Text(f"fencing: {state.primary} stops acknowledging commits within {view.bound_s:.2f} s of losing "
                f"its lease (agent live)")


_STATE_COLUMNS = (Column("member"), Column("health"), Column("role"), Column("lag", 1, "right"),
                  Column("streaming", 2), Column("timeline", 3, "right"))


def cluster_state_view(console: Console, state: ClusterState, leader: str | None, *,
                       now: float | None = None, history: int = 3,
                       agents: Mapping[str, AgentView] | None = None) -> RenderableType:
    """One cluster for ``drctl status``: a heading, the members, the operation in progress, the last few."""
    now = time.time() if now is None else now
    heading = Text.assemble(("cluster ", ""), (state.cluster, "bold"), ": primary ", (state.primary, "bold"),
                            f", timeline {state.timeline or '-'}, generation {state.generation}")
    if state.paused:
        heading.append("  PAUSED", style="yellow")
    age = f", updated {max(now - state.updated_at, 0):.0f} s ago" if state.updated_at else ""
    parts: list[RenderableType] = [heading, Text(f"leader {leader or 'none'} (epoch {state.epoch}){age}")]
    if state.synchronous_extra:
        parts.append(Text(f"fallback in the quorum: {', '.join(state.synchronous_extra)}"))
    if agents is not None:
        parts.append(fencing_line(state, agents))
    if state.dr_lag is not None:
        parts.append(dr_lag_line(state.dr_lag, state.primary))
    rows = [[name, rec.health.value, rec.role.value, human_bytes(rec.lag_bytes), "yes" if rec.streaming else "-",
             str(rec.timeline or "-")] for name, rec in sorted(state.members.items())]
    parts.append(fit_table(console, _STATE_COLUMNS, rows, console.width))
    if state.operation is not None:
        op = state.operation
        parts.append(Text.assemble(("in progress: ", "yellow"), f"{op.kind.value} {op.source} -> {op.target} "
                                   f"at step {op.step.value}"
                                   + (f", {op.running.value} started" if op.running is not None else "")
                                   + f" ({op.reason})"))
        parts.append(_proof_text(op))
    for op in state.history[-history:] if history else ():
        took = op.steps[-1].at - op.steps[0].at if op.steps else 0.0
        ended = "" if op.outcome in (None, Outcome.DONE) else f" {op.outcome} ({op.outcome_detail})"
        parts.append(Text(f"{op.kind.value} {op.source} -> {op.target}{ended}: {took * 1000:.0f} ms ({op.reason})"))
    if state.operation is None and state.history and history:
        parts.append(_proof_text(state.history[-1]))  # the last operation's
    return Group(*parts)


def _proof_text(op: Operation) -> Text:
    return Text("  " + proof_line(op), style="" if op.proven else "bold red")


def status_document_view(console: Console, document: Mapping[str, Any]) -> RenderableType:
    """``drctl --api URL status``: the API's status document (:func:`status_json`) as tables."""
    parts: list[RenderableType] = []
    columns = [Column("member"), Column("role"), Column("health", 2), Column("timeline", 3, "right"),
               Column("streaming", 4), Column("lag", 1, "right")]
    for cluster in document.get("clusters", []):
        if parts:
            parts.append(Text(""))
        paused = "  [paused]" if cluster.get("paused") else ""
        parts.append(Text(f"{cluster['cluster']}: primary {cluster['primary']}, timeline {cluster['timeline']}, "
                          f"epoch {cluster['epoch']}, leader {document.get('leader') or 'none'}{paused}",
                          style="bold"))
        rows = [[m["member"], m["role"], m["health"], str(m["timeline"] if m["timeline"] is not None else "-"),
                 "yes" if m["streaming"] else "no", human_bytes(m["lag_bytes"])]
                for m in cluster.get("members", [])]
        parts.append(fit_table(console, columns, rows, console.width))
        operation = cluster.get("operation") or (cluster.get("history") or [None])[-1]
        if operation:
            parts.append(Text(f"{'operation' if cluster.get('operation') else 'last operation'}: "
                              f"{operation['kind']} {operation['source']} -> {operation['target']} "
                              f"({operation.get('outcome') or operation.get('step')})"))
    return Group(*parts)
