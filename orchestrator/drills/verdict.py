"""The drill verdict: each check of a :class:`~orchestrator.drills.measure.Measurement` against the targets.

:func:`judge` is pure: the figures come from :func:`orchestrator.drills.measure.measure`, the
targets from the topology (then the drill's overrides), and every check carries a one-line
reason an auditor can read. ``Verdict.passed`` is true exactly when every check passed.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, model_validator

from orchestrator.topology import Targets

if TYPE_CHECKING:   # measure imports this module: no import cycle at run time
    from orchestrator.drills.measure import Measurement


class CheckName(StrEnum):
    COMPLETED = "completed"
    LOAD_BEFORE_FAULT = "load-before-fault"
    RTO = "rto"
    RPO = "rpo"
    NO_ACKED_WRITE_LOST = "no-acknowledged-write-lost"
    MONEY_CONSERVED = "money-conserved"
    NO_DUPLICATE_TRANSFER = "no-duplicate-transfer"
    SINGLE_WRITABLE_PRIMARY = "single-writable-primary"
    FAILED_NOT_COMMITTED = "failed-transfers-not-committed"
    ZERO_LOSS_PROVEN = "zero-loss-proven"
    NO_FALSE_FAILOVER = "no-false-failover"   # stall drills only (orchestrator.drills.stalls)
    # The backup faults' own checks (orchestrator/drills/backup_faults.py).
    NO_WAL_DROPPED = "no-wal-dropped"
    PG_WAL_WITHIN_BUDGET = "pg-wal-within-budget"
    ARCHIVE_ALERT = "archive-alert"
    ARCHIVE_CAUGHT_UP = "archive-caught-up"
    RESTORED_FROM_STORE = "restored-from-store"


class Check(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: CheckName
    passed: bool
    reason: str   # one line, for an auditor


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    passed: bool
    checks: tuple[Check, ...]

    @model_validator(mode="after")
    def _consistent(self) -> Verdict:
        if self.passed != all(c.passed for c in self.checks):
            raise ValueError("passed must be true exactly when every check passed")
        return self

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed)


def judge(measurement: Measurement, targets: Targets, *, aborted: str | None = None) -> Verdict:
    """Judge a measurement against the drill's effective targets (topology, then overrides).

    ``aborted``: the runner's one-line reason when it stopped the drill early.
    """
    out, loss, inv = measurement.outage, measurement.loss, measurement.invariants
    rto, rpo = targets.rto_seconds, targets.rpo_seconds
    recovery = (
        f"writes did not recover within the {out.rto_seconds:.2f} s observation window" if out.unrecovered
        else f"writes recovered {out.rto_seconds:.2f} s after the fault"
    )
    lost = f"{loss.lost} acknowledged transfer(s) lost, spanning {loss.rpo_seconds:.2f} s"
    conflict = inv.writer_conflicts[0] if inv.writer_conflicts else None
    split = "" if conflict is None else (
        f"two writable primaries: {conflict.older} acknowledged {conflict.late_acks} transfer(s) started after "
        f"{conflict.newer} had acknowledged its first"
    )
    proof_ok, proof_ok_words, proof_bad_words = _zero_loss_proven(measurement, rpo)
    rows: list[tuple[CheckName, bool, str, str]] = [
        (CheckName.COMPLETED, aborted is None,
         "the drill ran to the end of its observation window", f"the drill was aborted: {aborted}"),
        (CheckName.LOAD_BEFORE_FAULT, out.acks_before_fault > 0,
         f"{out.acks_before_fault} transfers were acknowledged before the fault",
         "no transfer was acknowledged before the fault, so the drill proves nothing; check the load"),
        (CheckName.RTO, not out.unrecovered and out.rto_seconds <= rto,
         f"{recovery}, within the {rto:g} s RTO target", f"{recovery}, over the {rto:g} s RTO target"),
        (CheckName.RPO, loss.rpo_seconds <= rpo,
         f"{lost}, within the {rpo:g} s RPO target", f"{lost}, over the {rpo:g} s RPO target"),
        (CheckName.NO_ACKED_WRITE_LOST, loss.lost == 0,
         f"all {loss.acked} acknowledged transfers are on the new primary",
         f"{loss.lost} of {loss.acked} acknowledged transfers are missing from the new primary "
         f"(first {loss.lost_ids[0] if loss.lost_ids else '?'}); the RPO target is zero loss"),
        (CheckName.MONEY_CONSERVED, inv.money_conserved, f"the total balance {inv.observed_total} is conserved",
         f"the total balance is {inv.observed_total}, expected {inv.expected_total} "
         f"(off by {inv.observed_total - inv.expected_total})"),
        (CheckName.NO_DUPLICATE_TRANSFER, inv.duplicate_transfers == 0,
         "no transfer was applied twice", f"{inv.duplicate_transfers} transfer(s) were applied twice"),
        (CheckName.SINGLE_WRITABLE_PRIMARY, conflict is None, "at no time did two servers acknowledge writes", split),
        (CheckName.FAILED_NOT_COMMITTED, loss.failed_but_committed == 0,
         "no transfer reported as failed was committed",
         f"{loss.failed_but_committed} transfer(s) reported as failed were committed; "
         "the workload misclassifies errors"),
        (CheckName.ZERO_LOSS_PROVEN, proof_ok, proof_ok_words, proof_bad_words),
    ]
    checks = tuple(
        Check(name=name, passed=passed, reason=ok if passed else bad)
        for name, passed, ok, bad in rows
        # A zero RPO target is judged by count (one lost transfer spans 0 s), a positive one by span.
        if name is not (CheckName.RPO if rpo == 0 else CheckName.NO_ACKED_WRITE_LOST)
    )
    return Verdict(passed=all(c.passed for c in checks), checks=checks)


def _zero_loss_proven(measurement: Measurement, rpo: float) -> tuple[bool, str, str]:
    """With an RPO of 0, every promotion the drill caused must have been proven lossless by the
    controller, unless an operator explicitly accepted data loss: (passed, reason if passed, if not).

    Counting no lost transfer is not enough: an unproven promotion that happened to lose
    nothing would lose acknowledged commits on another day.
    """
    promotions = measurement.promotions
    words = "; ".join(p.words() for p in promotions) or "the drill caused no promotion"
    unforced = [p for p in promotions if not p.proven and not p.accept_data_loss]
    if rpo > 0:
        return True, f"the RPO target is {rpo:g} s, so a promotion need not prove zero loss: {words}", ""
    return (not unforced, words,
            f"{words}; with an RPO target of 0 a promotion without proven zero loss needs an operator's "
            "--accept-data-loss")
