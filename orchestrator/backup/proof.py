"""What proves a backup: the checks ``BackupService.verify`` runs on a restored copy, and their pure parts.

A verification restores a base backup plus every archived segment after it into a scratch
directory (to the end of the archive), starts it, and then:

* :func:`wal_reached` (pure) - recovery replayed up to the newest segment the archive held
  when the verification started: the WAL after the backup is continuous (a missing segment
  stops recovery early, and the restored server's end of recovery falls short of it).
* :func:`amcheck` - ``pg_amcheck --all`` on the restored server (heap and B-tree checks,
  the ``amcheck`` extension installed where missing: the copy is thrown away).
* :func:`bank_conservation` - when the cluster's database holds the drills' bank: every
  account's balance minus its net transfers is the same opening balance, so money was
  neither created nor lost (the restored copy is a consistent snapshot of the bank).

pgBackRest's repository checksums are checked by ``pgbackrest verify`` (see the service);
``pg_verifybackup`` does not apply (it reads ``pg_basebackup``'s manifest, which pgBackRest
backups do not carry). Each check raises :class:`ProofFailed` with one line naming what failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator import pgserver
from orchestrator import postgres as pg
from orchestrator.backup.catalog import parse_lsn
from orchestrator.backup.errors import BackupFailed
from orchestrator.errors import LabError
from orchestrator.pgserver import InstanceLayout


class ProofFailed(BackupFailed):
    """A restored copy of a backup failed a check: the backup is not proven."""


def segment_name(timeline: int, lsn: int, segment_bytes: int) -> str:
    """The WAL file name holding ``lsn`` on ``timeline`` (``pg_walfile_name`` for any segment size)."""
    per_xlogid = 0x1_0000_0000 // segment_bytes
    number = lsn // segment_bytes
    return f"{timeline:08X}{number // per_xlogid:08X}{number % per_xlogid:08X}"


def segment_range(first: str, last: str, segment_bytes: int) -> list[str]:
    """Every segment name from ``first`` through ``last`` on ``first``'s timeline (empty if ``last`` is earlier)."""
    per_xlogid = 0x1_0000_0000 // segment_bytes
    timeline = int(first[:8], 16)

    def number(name: str) -> int:
        return int(name[8:16], 16) * per_xlogid + int(name[16:24], 16)

    return [f"{timeline:08X}{n // per_xlogid:08X}{n % per_xlogid:08X}" for n in range(number(first), number(last) + 1)]


def recovery_end(history: str) -> tuple[int, int]:
    """The timeline recovery ran on and the LSN where it ended, from the new timeline's ``.history`` file.

    Its last line is ``<parent timeline>\\t<switch point LSN>\\t<reason>``.

    :raises ProofFailed: no such line.
    """
    lines = [line.split() for line in history.splitlines() if line.strip() and not line.startswith("#")]
    if not lines or len(lines[-1]) < 2 or not lines[-1][0].isdigit():
        raise ProofFailed(f"the restored server's timeline history has no switch point: {history[:120]!r}")
    return int(lines[-1][0]), parse_lsn(lines[-1][1], field="timeline history")


def wal_reached(history: str, last_archived: str, segment_bytes: int) -> str:
    """The segment recovery ended in, when it is at or past ``last_archived``.

    Recovery that ends in (or after) the newest archived segment replayed every segment
    before it: none was missing or unreadable.

    :raises ProofFailed: recovery stopped before the newest archived segment.
    """
    timeline, lsn = recovery_end(history)
    reached = segment_name(timeline, lsn, segment_bytes)
    if reached < last_archived:
        raise ProofFailed(f"WAL continuity: recovery ended in segment {reached}, before the newest archived segment "
                          f"{last_archived}: the archive misses or cannot serve a segment in between")
    return reached


def restored_history(conn: pg.Connection) -> str:
    """The restored (promoted) server's current timeline's history file."""
    row = conn.execute("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)").fetchone()
    if row is None:
        raise ProofFailed("the restored server reports no WAL position")
    found = conn.execute("SELECT pg_read_file(%s)", (f"pg_wal/{row[0]}.history",)).fetchone()
    if found is None:
        raise ProofFailed(f"the restored server has no history file for timeline {row[0]}")
    return str(found[0])


def amcheck(layout: InstanceLayout, port: int, creds: pg.Credentials, passfile: Path) -> dict[str, Any]:
    """``pg_amcheck --all`` against the restored server on ``port``, as the server's OS user.

    :raises ProofFailed: it reported corruption or could not run (its last lines quoted).
    """
    argv = [layout.bin("pg_amcheck"), "--all", "--install-missing", "--no-password", "-h",
            layout.endpoint.address, "-p", str(port), "-U", creds.superuser]
    try:
        pgserver.run_as(layout, argv, env={"PGPASSFILE": str(passfile)}, timeout=900)
    except LabError as exc:
        raise ProofFailed(f"pg_amcheck: {exc}") from None
    return {"pg_amcheck": "ok"}


def bank_conservation(conn: pg.Connection) -> dict[str, Any] | None:
    """The bank's money-conservation invariant on the restored copy; None when the database holds no bank.

    :raises ProofFailed: accounts do not share one opening balance (money created or lost).
    """
    tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() "
                          "AND tablename IN ('accounts', 'transfers')").fetchone()
    if tables is None or tables[0] != 2:
        return None
    rows = conn.execute(
        "SELECT a.balance - coalesce(i.amount, 0) + coalesce(o.amount, 0) AS opening, count(*) "
        "FROM accounts a "
        "LEFT JOIN (SELECT dst, sum(amount) AS amount FROM transfers GROUP BY dst) i ON i.dst = a.id "
        "LEFT JOIN (SELECT src, sum(amount) AS amount FROM transfers GROUP BY src) o ON o.src = a.id "
        "GROUP BY 1 ORDER BY 2 DESC").fetchall()
    if not rows:
        return {"bank": "empty"}
    if len(rows) > 1:
        raise ProofFailed(f"bank: money not conserved: accounts' opening balances differ "
                          f"({', '.join(f'{r[1]} at {r[0]}' for r in rows[:3])})")
    total = conn.execute("SELECT sum(balance)::bigint, count(*) FROM accounts").fetchone()
    transfers = conn.execute("SELECT count(*) FROM transfers").fetchone()
    assert total is not None and transfers is not None
    return {"bank_total": int(str(total[0])), "bank_accounts": int(str(total[1])),
            "bank_opening": int(str(rows[0][0])), "bank_transfers": int(str(transfers[0]))}
