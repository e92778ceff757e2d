"""The client-side journal: one JSON line per transfer attempt, written by the load generator.

This is the contract between the Locust workload (``loadtests/``), which appends records,
and the measurement (:mod:`orchestrator.drills.measure`), which reads them. Times are
wall-clock epoch seconds (``time.time()``) so they line up with the controller's timeline.

Outcomes follow Jepsen: ``ack`` (COMMIT returned success), ``fail`` (the transaction
certainly did not commit: it failed before COMMIT was sent), ``indeterminate`` (COMMIT
was sent and no answer came: the connection broke). Indeterminate transfers are looked
up after the drill and counted apart, never assumed lost or acknowledged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict


class Outcome(StrEnum):
    ACK = "ack"
    FAIL = "fail"
    INDETERMINATE = "indeterminate"


class JournalRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str                     # transfer id (uuid), the primary key of the transfers row
    src: int                    # debited account
    dst: int                    # credited account
    amount: int
    start: float                # when the attempt began (epoch seconds)
    end: float                  # when the outcome was known (epoch seconds)
    outcome: Outcome
    server: str | None = None   # "address:port" of the server that answered, when known
    timeline: int | None = None # that server's WAL timeline, when known
    error: str | None = None    # first line of the error, for fail / indeterminate


def read_journal(paths: Iterable[Path]) -> list[JournalRecord]:
    """All records from the given files (one per load process), sorted by start time."""
    records: list[JournalRecord] = []
    for path in paths:
        with path.open() as handle:
            for line in handle:
                if line.strip():
                    records.append(JournalRecord.model_validate(json.loads(line)))
    records.sort(key=lambda r: r.start)
    return records


def iter_lines(records: Iterable[JournalRecord]) -> Iterator[str]:
    for record in records:
        yield record.model_dump_json() + "\n"
