"""The backup engine adapter: pgBackRest configuration, ``archive_command``, commands and info.

Why pgBackRest (measured with ``make backup-bench``; see the README's "Backups" section): its
synchronous ``archive-push`` made 1 MB segments durable in the store with p50 0.06-0.6 s and p99
0.24-2.7 s (three runs) at 6 MB/s of WAL on the loaded 2-core lab machine (its asynchronous mode had higher lag
but drains a backlog ≈ 2x faster: ``archive_async``); it never drops WAL when the store is down (we
set no ``archive-push-queue-max``: PostgreSQL keeps the segment and retries); its restore is parallel
and its ``archive-get`` prefetches WAL asynchronously, which a per-segment Python
``restore_command`` cannot match; retention, compression, bundling and checksums come with it.

One configuration file per PostgreSQL instance (a member, or a restore target), written
mode 0600 for the server's OS user under ``<lab>/backup/<cluster>/<member>/`` with its lock,
spool and log directories beside it. It holds the S3 keys (pgBackRest reads them from its
configuration or its environment, and ``archive_command`` inherits only the postmaster's
environment). The stanza is the cluster's name; the repository path is the spec's prefix
or ``/<topology>/<cluster>``. Commands run as the server's OS user; every failure is one
:class:`BackupFailed` line quoting pgBackRest's ERROR.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from orchestrator.backup.catalog import Catalog, parse_info
from orchestrator.backup.errors import BackupConfigError, BackupFailed
from orchestrator.backup.s3 import S3Keys, StoreSettings
from orchestrator.waiting import poll

_UNSAFE_PATH = re.compile(r"[\s'\"$`\\]")


def binary() -> str:
    found = shutil.which("pgbackrest") or ("/usr/bin/pgbackrest" if Path("/usr/bin/pgbackrest").exists() else None)
    if found is None:
        raise BackupFailed("no pgbackrest binary: install the Debian package pgbackrest (make setup)")
    return found


def repo_path(topology: str, cluster: str, prefix: str) -> str:
    return prefix or f"/{topology}/{cluster}"


def conf_dir(root: Path, cluster: str, member: str) -> Path:
    """Where a member's pgBackRest configuration, lock, spool and log live."""
    return root / "backup" / cluster / member


def archive_command(conf: Path, stanza: str) -> str:
    """The ``archive_command`` that pushes one completed segment synchronously.

    :raises BackupConfigError: the path holds characters the rendered configuration cannot carry.
    """
    if _UNSAFE_PATH.search(str(conf)):
        raise BackupConfigError(f"--lab-dir: {conf} contains spaces, quotes or shell characters; use a plain path "
                                "for the lab directory")
    return f"{binary()} --config={conf} --stanza={stanza} archive-push %p"


@dataclass(frozen=True)
class EngineConfig:
    """One pgBackRest configuration for one PostgreSQL instance."""

    stanza: str
    store: StoreSettings
    keys: S3Keys
    repo: str
    pg_data: Path
    pg_port: int
    pg_socket: Path
    pg_user: str
    os_user: str
    home: Path                 # holds pgbackrest.conf and the lock/, spool/, log/ directories
    passfile: Path | None = None
    cipher_pass: str | None = None   # encryption at rest (backup.encryption_key_file); None: off

    @property
    def conf_file(self) -> Path:
        return self.home / "pgbackrest.conf"

    def render(self) -> str:
        spec = self.store.spec
        lines = [
            "# Rendered by dr-orchestrator (orchestrator.backup.pgbackrest); holds S3 keys: mode 0600.",
            "[global]",
            "repo1-type=s3",
            f"repo1-path={self.repo}",
            f"repo1-s3-bucket={spec.bucket}",
            f"repo1-s3-endpoint={spec.host}",
            f"repo1-storage-port={spec.port}",
            f"repo1-s3-region={spec.region}",
            f"repo1-s3-key={self.keys.access_key}",
            f"repo1-s3-key-secret={self.keys.secret_key}",
            "repo1-s3-uri-style=path",
            # Small files travel bundled: one object per batch, not one request per file.
            "repo1-bundle=y",
            f"repo1-retention-full={spec.retention_full}",
            f"compress-type={spec.compression.value}",
            f"process-max={spec.process_max}",
            # Fail within seconds when the store is unreachable: PostgreSQL retries archive_command itself.
            "io-timeout=10",
            "db-timeout=600",
            # A base backup waits this long for its last segment to be archived (behind a backlog too).
            "archive-timeout=600",
            "start-fast=y",
            "log-level-console=warn",
            "log-level-stderr=off",
            "log-level-file=info",
            f"log-path={self.home / 'log'}",
            f"lock-path={self.home / 'lock'}",
            f"spool-path={self.home / 'spool'}",
        ]
        if self.cipher_pass is not None:
            # Every file is encrypted on this host before it is sent: the store only ever holds ciphertext.
            lines += ["repo1-cipher-type=aes-256-cbc", f"repo1-cipher-pass={self.cipher_pass}"]
        if spec.archive_async:
            # No archive-push-queue-max: when the store is down WAL waits in pg_wal, it is never dropped.
            lines.append("archive-async=y")
        if self.store.ca_file is not None:
            lines.append(f"repo1-storage-ca-file={self.store.ca_file}")
        lines += [
            "",
            f"[{self.stanza}]",
            f"pg1-path={self.pg_data}",
            f"pg1-port={self.pg_port}",
            f"pg1-socket-path={self.pg_socket}",
            f"pg1-user={self.pg_user}",
        ]
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        """(Re)write the configuration and its directories, owned by the server's OS user."""
        entry = pwd.getpwnam(self.os_user)
        for path in (self.home, self.home / "log", self.home / "lock", self.home / "spool"):
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, entry.pw_uid, entry.pw_gid)
            os.chmod(path, 0o700)
        tmp = self.conf_file.with_suffix(".new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.render())
        os.chown(tmp, entry.pw_uid, entry.pw_gid)
        os.replace(tmp, self.conf_file)

    # ---- commands ----------------------------------------------------------------------------

    def run(self, command: str, *options: str, args: tuple[str, ...] = (), timeout: float = 3600.0) -> str:
        """Run ``pgbackrest [OPTIONS] COMMAND [ARGS]`` for this instance as the server's OS user; return its stdout.

        :raises BackupFailed: it exited non-zero (the message quotes its ERROR line) or timed out.
        """
        argv = [binary(), f"--config={self.conf_file}", f"--stanza={self.stanza}", *options, command, *args]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.home), "LC_ALL": "C.UTF-8"}
        if self.passfile is not None:
            env["PGPASSFILE"] = str(self.passfile)
        try:
            proc = subprocess.run(argv, user=self.os_user, group=self.os_user, extra_groups=[], cwd=self.home,
                                  env=env, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise BackupFailed(f"pgbackrest {command} for {self.stanza} did not finish within {timeout:.0f}s; see "
                               f"{self.home / 'log'}") from None
        if proc.returncode != 0:
            cause = _error_line(proc.stdout + proc.stderr)
            raise BackupFailed(f"pgbackrest {command} for {self.stanza} failed: {cause} (log: {self.home / 'log'})")
        return proc.stdout

    def stanza_ready(self) -> bool:
        """Whether the stanza exists in the repository (reading its info takes no lock)."""
        try:
            self.catalog()
        except BackupFailed:
            return False
        return True

    def stanza_create(self, *, timeout: float = 60.0) -> None:
        """Create the stanza unless it exists. The asynchronous archiver holds the archive lock while it
        pushes a backlog (e.g. the segments completed before set-up), so a lock conflict is retried."""
        if self.stanza_ready():
            return
        last: list[BackupFailed] = []

        def attempt() -> bool:
            try:
                self.run("stanza-create", timeout=120)
            except BackupFailed as exc:
                if "[050]" not in str(exc):
                    raise
                last[:] = [exc]
                return False
            return True

        if not poll(attempt, timeout=timeout, interval=0.2):
            raise last[0]

    def backup(self, kind: str = "full") -> None:
        self.run("backup", f"--type={kind}")

    def catalog(self) -> Catalog:
        text = self.run("info", "--output=json", timeout=120)
        try:
            document = json.loads(text)
        except ValueError:
            raise BackupFailed(f"pgbackrest info for {self.stanza}: not JSON ({text[:80]!r})") from None
        return parse_info(document, self.stanza)

    def archive_get(self, segment: str, destination: Path) -> None:
        """Fetch one archived WAL segment into ``destination`` (a path the OS user can write)."""
        self.run("archive-get", args=(segment, str(destination)), timeout=120)

    def restore_command(self) -> str:
        """A ``restore_command`` that fetches WAL with asynchronous prefetch (≈ 3x the replay rate of one-by-one)."""
        return (f"{binary()} --config={self.conf_file} --stanza={self.stanza} --archive-async "
                '--archive-get-queue-max=256MB archive-get %f "%p"')


def _error_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR:" in line]
    line = (errors or lines or ["no output"])[0]
    return line if len(line) <= 400 else line[:397] + "..."
