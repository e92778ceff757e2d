"""The bank the drill workload moves money in: schema set-up and the post-drill checks.

The Locust workload (``loadtests/bank_transfer.py``) moves random amounts between
``accounts`` and records each transfer as a ``transfers`` row keyed by the uuid it also
writes to its journal. The drill runner calls :func:`setup` before the load starts and,
after the drill, asks the cluster (through its multi-host connection string, so always the
current primary) whether money was conserved (:func:`total_balance`), which journaled
transfers exist (:func:`present_transfers`) and whether any was applied twice
(:func:`duplicate_transfers`).

Plain psycopg, no Locust: this runs in the drill runner's process, which must never be
gevent-patched. Every psycopg error becomes :class:`DatabaseUnavailable`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import psycopg

from orchestrator.errors import DatabaseUnavailable, InvalidInput

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS accounts (id int PRIMARY KEY, balance bigint NOT NULL)",
    "CREATE TABLE IF NOT EXISTS transfers (id uuid PRIMARY KEY, src int, dst int, amount int, "
    "created_at timestamptz DEFAULT now())",
)
# present_transfers sends ids in batches: one round trip each, bounded parameter size.
_BATCH = 10_000


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def _connect(conninfo: str, what: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection; any psycopg error inside the block becomes DatabaseUnavailable."""
    try:
        with psycopg.connect(conninfo, autocommit=True, application_name="drctl-bank") as conn:
            yield conn
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"bank {what} failed: {_first_line(exc)}") from exc


def setup(conninfo: str, accounts: int, initial_balance: int, *, reset: bool = True) -> None:
    """Create the bank's tables if missing and fill ``accounts`` accounts (ids 1..accounts).

    With ``reset`` (the default, what a drill wants) every transfer is deleted and every
    account set to ``initial_balance``, so conservation is checked against
    ``accounts * initial_balance``. Without it, existing rows are kept and only missing
    accounts are added. Idempotent either way; runs in one transaction, committed
    synchronously, so the standbys hold the bank before the load starts.

    :raises InvalidInput: fewer than two accounts (a transfer needs two) or a negative balance.
    :raises DatabaseUnavailable: no primary reachable, or a statement failed.
    """
    if accounts < 2:
        raise InvalidInput(f"bank: accounts={accounts}: a transfer needs at least 2 accounts")
    if initial_balance < 0:
        raise InvalidInput(f"bank: initial_balance={initial_balance}: use a balance >= 0")
    with _connect(conninfo, "set-up") as conn, conn.transaction():
        for statement in _SCHEMA:
            conn.execute(statement)
        if reset:
            conn.execute("TRUNCATE transfers, accounts")
        conn.execute(
            "INSERT INTO accounts (id, balance) SELECT g, %s FROM generate_series(1, %s) AS g "
            "ON CONFLICT (id) DO NOTHING",
            (initial_balance, accounts),
        )


def total_balance(conninfo: str) -> int:
    """The sum of every account's balance: constant under transfers, whatever failed.

    :raises DatabaseUnavailable: no primary reachable, or the bank is not set up.
    """
    return _count(conninfo, "balance check", "SELECT coalesce(sum(balance), 0)::bigint FROM accounts")


def _parse_ids(ids: Iterable[str]) -> dict[uuid.UUID, str]:
    parsed: dict[uuid.UUID, str] = {}
    for text in ids:
        try:
            parsed[uuid.UUID(text)] = text
        except ValueError:
            raise InvalidInput(f"bank: transfer id {text!r} is not a uuid; pass the journal's ids") from None
    return parsed


def present_transfers(conninfo: str, ids: Iterable[str]) -> set[str]:
    """Which of ``ids`` have a ``transfers`` row; returned as given (same spelling).

    :raises InvalidInput: an id is not a uuid.
    :raises DatabaseUnavailable: no primary reachable, or the bank is not set up.
    """
    wanted = _parse_ids(ids)
    keys = list(wanted)
    found: set[str] = set()
    with _connect(conninfo, "transfer lookup") as conn:
        for start in range(0, len(keys), _BATCH):
            rows = conn.execute(
                "SELECT id FROM transfers WHERE id = ANY(%s)", (keys[start:start + _BATCH],)
            ).fetchall()
            found.update(wanted[row[0]] for row in rows if isinstance(row[0], uuid.UUID))
    return found


def duplicate_transfers(conninfo: str) -> int:
    """How many ``transfers`` rows repeat an id already stored: 0 while the primary key holds.

    Each attempt has its own uuid and a retry must reuse it, so the key is what makes a
    transfer apply at most once; a non-zero count means the key was lost (a table rebuilt
    without it, rows merged back from a divergent timeline).

    :raises DatabaseUnavailable: no primary reachable, or the bank is not set up.
    """
    return _count(conninfo, "duplicate check", "SELECT (count(*) - count(DISTINCT id))::bigint FROM transfers")


def _count(conninfo: str, what: str, query: str) -> int:
    with _connect(conninfo, what) as conn:
        row = conn.execute(query).fetchone()
    return int(str(row[0])) if row is not None else 0
