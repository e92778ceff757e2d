"""What ``drctl backup`` and ``drctl restore`` call: set-up, base backups, listing, restore, verification.

:class:`BackupService` binds one cluster's ``backup:`` settings to a lab directory (where the
members' data, the pgBackRest configurations and the generated credentials live) and to the
database credentials. Every operation checks the store with boto3 first, so a wrong endpoint,
CA or key is one line naming the topology field before the engine runs. Verified restores are
recorded as small JSON objects beside the backups (``<repo>/drctl/verified/<label>.json``), so
``list`` shows which backups were proven by a restore and which are unproven.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator import pgserver
from orchestrator import postgres as pg
from orchestrator.backup.catalog import Backup, Catalog, choose_backup
from orchestrator.backup.errors import BackupConfigError, BackupFailed
from orchestrator.backup.pgbackrest import EngineConfig, conf_dir, repo_path
from orchestrator.backup.replicate import ReplicationReport, replicate
from orchestrator.backup.restore import RestoreReport, Target, restore_instance
from orchestrator.backup.s3 import ObjectStore, StoreSettings, load_keys, load_passphrase
from orchestrator.backup.store import SeaweedStore
from orchestrator.errors import DatabaseUnavailable
from orchestrator.pgserver import InstanceLayout
from orchestrator.topology import Cluster, Topology
from orchestrator.waiting import poll

if TYPE_CHECKING:
    from orchestrator.playbooks import PlaybookRunner

STORE_DIR = "s3"


@dataclass(frozen=True)
class BackupRow:
    backup: Backup
    verified: dict[str, Any] | None     # the last verified restore's record, None: unproven
    failed: dict[str, Any] | None = None  # the last failed verification (none since the last success)


def lab_store(topology: Topology, root: Path) -> SeaweedStore | None:
    """The lab's own S3 store, when a cluster's backup endpoint is on loopback with its keys in ``<lab>/s3``."""
    for cluster in topology.clusters:
        spec = cluster.backup
        if spec is not None and spec.host.startswith("127.") and spec.credentials_file.startswith(f"{STORE_DIR}/"):
            return SeaweedStore(root / STORE_DIR, spec.host, spec.port)
    return None


class BackupService:
    """One cluster's backups. Stateless between calls: everything lives in the store and the lab directory."""

    def __init__(self, topology: Topology, cluster: str, root: Path, creds: pg.Credentials) -> None:
        try:
            self.cluster: Cluster = topology.cluster(cluster)
        except KeyError as exc:
            raise BackupConfigError(f"cluster: {exc.args[0]}") from None
        if self.cluster.backup is None:
            raise BackupConfigError(f"clusters.{cluster}.backup: the cluster has no backup section; add one "
                                    "(endpoint, bucket, credentials_file; see topology/lab-backup.yaml)")
        self.spec = self.cluster.backup
        self.topology = topology
        self.root = root.resolve()
        self.creds = creds
        self.settings = StoreSettings.resolve(self.spec, cluster, self.root)
        self.repo = repo_path(topology.name, cluster, self.spec.prefix)
        self._store: ObjectStore | None = None

    # ---- parts -------------------------------------------------------------------------------

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            self._store = ObjectStore(self.settings, load_keys(self.settings))
        return self._store

    def layout(self, member: str, root: Path | None = None) -> InstanceLayout:
        try:
            found = self.cluster.member(member)
        except KeyError as exc:
            raise BackupConfigError(f"--to: {exc.args[0]}") from None
        return InstanceLayout(self.topology, self.cluster, found, root or self.root)

    def engine(self, layout: InstanceLayout, *, home: Path | None = None, port: int | None = None) -> EngineConfig:
        return EngineConfig(
            stanza=self.cluster.name, store=self.settings, keys=self.store.keys, repo=self.repo,
            pg_data=layout.data, pg_port=port or layout.endpoint.port, pg_socket=layout.socket_dir,
            pg_user=self.creds.superuser, os_user=self.topology.postgres.os_user,
            home=home or conf_dir(self.root, self.cluster.name, layout.member.name), passfile=self.root / "pgpass",
            cipher_pass=load_passphrase(self.settings),
        )

    def write_configs(self) -> None:
        """Every member's pgBackRest configuration (their ``archive_command`` names it)."""
        for member in self.cluster.members:
            self.engine(self.layout(member.name)).write()

    def primary(self) -> InstanceLayout:
        """The member that answers and is not in recovery.

        :raises BackupFailed: none does.
        """
        for member in self.cluster.members:
            layout = self.layout(member.name)
            try:
                with pg.connect(layout.endpoint, self.creds, timeout=2) as conn:
                    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            except DatabaseUnavailable:
                continue
            if row is not None and not row[0]:
                return layout
        raise BackupFailed(f"{self.cluster.name}: no member answers as primary; a base backup needs the primary "
                           "(drctl lab status)")

    # ---- operations --------------------------------------------------------------------------

    def setup(self) -> bool:
        """Create the bucket (pgBackRest does not), write the configurations, create the stanza. Idempotent.

        Returns True when the bucket was created.
        """
        created = self.store.ensure_bucket()
        self.write_configs()
        self.engine(self.primary()).stanza_create()
        return created

    def catalog(self) -> Catalog:
        self.store.check()
        self.write_configs()
        return self.engine(self.layout(self.cluster.members[0].name)).catalog()

    def run(self, kind: str = "full") -> tuple[Backup, float]:
        """Take a base backup on the primary; return it and how long it took.

        :raises BackupConfigError: an unknown kind, or a bad store setting.
        :raises BackupFailed: the store or the engine failed.
        """
        if kind not in ("full", "diff", "incr"):
            raise BackupConfigError(f"--type: {kind!r} is not a backup type; use full, diff or incr")
        self.setup()
        before = {b.label for b in self.catalog().backups}
        started = time.monotonic()
        self.engine(self.primary()).backup(kind)
        seconds = time.monotonic() - started
        new = [b for b in self.catalog().backups if b.label not in before]
        if not new:
            raise BackupFailed(f"{self.cluster.name}: the engine reported success but listed no new backup")
        return new[-1], seconds

    def _verified_key(self, label: str) -> str:
        return f"{self.repo}/drctl/verified/{label}.json"

    def listing(self) -> list[BackupRow]:
        """Every backup with its verified-restore record (None: unproven) and its last failed verification."""
        return [BackupRow(b, self.store.get_json(self._verified_key(b.label)),
                          self.store.get_json(self._failed_key(b.label)))
                for b in self.catalog().backups]

    def restore(self, to: str, target: Target, *, scratch: Path | None = None, port: int | None = None,
                label: str | None = None, runner: PlaybookRunner | None = None) -> RestoreReport:
        """Restore the best base backup for ``target`` (or backup ``label``) plus WAL as member ``to``, promoted.

        Into the member's own data directory (its server must be stopped; it archives again
        once promoted), or with ``scratch`` into ``scratch/pg/<cluster>/<member>/data`` on
        ``port`` (default: the first port past the topology's range), without archiving (a
        copy must not add a timeline to the cluster's archive) and without synchronous standbys.
        With ``runner``, a member restore runs through ``playbooks/restore.yml`` on its host.
        """
        backups = self.catalog().backups
        if label is not None:
            backup = next((b for b in backups if b.label == label), None)
            if backup is None:
                known = ", ".join(b.label for b in backups) or "none"
                raise BackupConfigError(f"--set: no backup {label!r}; backups are {known}")
        else:
            backup = choose_backup(backups, target_time=target.epoch, target_lsn=target.lsn_int)
        if scratch is None:
            layout = self.layout(to)
            return restore_instance(self.engine(layout), layout, backup, target, creds=self.creds, archive=True,
                                    postgresql_conf=layout.postgresql_conf(), port=layout.endpoint.port,
                                    runner=runner)
        scratch = scratch.resolve()
        layout = self.layout(to, scratch)
        if layout.data.exists() and any(layout.data.iterdir()):
            raise BackupConfigError(f"--scratch: {layout.data} is not empty; pass an empty or new directory")
        scratch.mkdir(parents=True, exist_ok=True)
        scratch.chmod(0o755)
        listen = port or self.topology.ports.end
        conf = layout.postgresql_conf() + (
            "# A scratch restore: its own port, no archiving, no synchronous standbys.\n"
            f"port = '{listen}'\narchive_mode = 'off'\nsynchronous_standby_names = ''\n"
            f"cluster_name = 'restore-{to}'\n")
        engine = self.engine(layout, home=scratch / "pgbackrest", port=listen)
        report = restore_instance(engine, layout, backup, target, postgresql_conf=conf, creds=self.creds,
                                  port=listen, archive=False)
        _no_synchronous_standbys(pg.Endpoint(to, layout.endpoint.address, listen), self.creds)
        return report

    def replica_store(self) -> ObjectStore:
        """The other region's copy of the bucket (``backup.replica``).

        :raises BackupConfigError: the cluster has no replica, or its settings are wrong.
        """
        replica = self.spec.replica
        if replica is None:
            raise BackupConfigError(f"clusters.{self.cluster.name}.backup.replica: no replica store; add one "
                                    "(endpoint, bucket, credentials_file) to copy the backups to another region")
        spec = self.spec.model_copy(update={"endpoint": replica.endpoint, "bucket": replica.bucket,
                                            "region": replica.region, "credentials_file": replica.credentials_file,
                                            "ca_file": replica.ca_file, "replica": None})
        settings = StoreSettings(spec, f"clusters.{self.cluster.name}.backup.replica", self.root /
                                 replica.credentials_file, (self.root / replica.ca_file) if replica.ca_file else None)
        return ObjectStore(settings)

    def replicate(self, replica: ObjectStore | None = None) -> ReplicationReport:
        """Copy the repository's new objects to the replica store (default: ``backup.replica``)."""
        self.store.check()
        return replicate(self.store, replica or self.replica_store(), self.repo)

    def last_verified_at(self) -> float | None:
        """When the newest verified-restore record was written (UNIX seconds); None: no backup proven yet.

        One listing of ``<repo>/drctl/verified/`` and one read per record (a failed verification
        writes none). :raises BackupFailed, BackupConfigError: the store failed or refused.
        """
        keys = [key for key, _ in self.store.list_objects(f"{self.repo}/drctl/verified/") if key.endswith(".json")]
        times = [float(at) for key in keys if (record := self.store.get_json(key)) is not None
                 and isinstance(at := record.get("verified_at"), int | float)]
        return max(times, default=None)

    def _failed_key(self, label: str) -> str:
        return f"{self.repo}/drctl/failed/{label}.json"

    def verify(self, label: str | None = None, *, scratch: Path, port: int | None = None,
               check: Callable[[pg.Endpoint], dict[str, Any]] | None = None) -> dict[str, Any]:
        """Prove one backup (default: the newest): check the repository, restore the backup plus every archived
        segment after it into ``scratch``, start it, check it, record the result in the store, stop it and
        remove the scratch copy.

        The checks (:mod:`.proof`): ``pgbackrest verify`` (the repository's backup and WAL checksums),
        recovery reaching the newest segment archived when the verification started (WAL
        continuity), every database answering, ``pg_amcheck --all``, the bank's money
        conservation when the cluster's database holds the bank, then ``check`` (optional: more
        facts to record; it raises to fail). Success writes ``drctl/verified/<label>.json`` with the
        measured restore time; a failure writes ``drctl/failed/<label>.json`` and raises.

        :raises ProofFailed: a check failed (recorded). :raises BackupFailed, BackupConfigError: as restore.
        """
        catalog = self.catalog()
        label = label or (catalog.backups[-1].label if catalog.backups else None)
        if label is None:
            raise BackupConfigError("--set: the repository holds no base backup yet; run 'drctl backup run CLUSTER'")
        started = time.time()
        try:
            record = self._prove(label, catalog.wal_max, scratch, port, check)
        except BackupFailed as exc:
            self.store.put_json(self._failed_key(label), {"label": label, "failed_at": time.time(),
                                                           "started_at": started, "error": str(exc)})
            raise
        self.store.put_json(self._verified_key(label), record)
        self.store.delete(self._failed_key(label))
        return record

    def _prove(self, label: str, last_archived: str | None, scratch: Path, port: int | None,
               check: Callable[[pg.Endpoint], dict[str, Any]] | None) -> dict[str, Any]:
        from orchestrator.backup import proof

        member = self.cluster.initial_primary.name
        layout = self.layout(member, scratch.resolve())
        checked = time.monotonic()
        try:
            self.engine(self.layout(member)).run("verify", timeout=1800)
        except BackupFailed as exc:
            raise proof.ProofFailed(f"pgbackrest verify (repository checksums): {exc}") from None
        facts: dict[str, Any] = {"pgbackrest_verify": "ok",
                                 "pgbackrest_verify_seconds": round(time.monotonic() - checked, 3)}
        try:
            report = self.restore(member, Target(), scratch=scratch, port=port, label=label)
            endpoint = pg.Endpoint(member, layout.endpoint.address, report.port)
            if last_archived is not None:
                with pg.connect(endpoint, self.creds, timeout=5) as conn:
                    history = proof.restored_history(conn)
                segment_bytes = self.topology.postgres.wal_segsize_mb * 1024 * 1024
                facts["wal_reached"] = proof.wal_reached(history, last_archived, segment_bytes)
                facts["wal_last_archived"] = last_archived
            facts.update(_databases_answer(endpoint, self.creds))
            facts.update(proof.amcheck(layout, report.port, self.creds, self.root / "pgpass"))
            with pg.connect(endpoint, self.creds, dbname=self.cluster.database, timeout=5) as conn:
                bank = proof.bank_conservation(conn) if self.cluster.database in facts["databases"] else None
            if bank is not None:
                facts.update(bank)
            if check is not None:
                facts.update(check(endpoint))
        except DatabaseUnavailable as exc:
            raise proof.ProofFailed(f"the restored copy of {label}: {exc}") from None
        finally:
            pgserver.stop(layout, mode="immediate")
            shutil.rmtree(layout.home, ignore_errors=True)
            shutil.rmtree(scratch.resolve() / "pgbackrest", ignore_errors=True)   # its configuration holds keys
        return {"label": label, "verified_at": time.time(), "restore_seconds": round(report.restore_seconds, 3),
                "recovery_seconds": round(report.recovery_seconds, 3), "mb_per_s": round(report.mb_per_s, 1),
                "restored_bytes": report.restored_bytes, "checks": facts}


def _no_synchronous_standbys(endpoint: pg.Endpoint, creds: pg.Credentials) -> None:
    """Drop ``synchronous_standby_names`` from a scratch copy's ``postgresql.auto.conf`` (copied with the
    backup: the leader sets it there, and it overrides ``postgresql.conf``). A copy has no standbys,
    so every commit on it (``pg_amcheck --install-missing``'s CREATE EXTENSION) would wait forever.

    :raises BackupFailed: the setting is still in force after the reload.
    """
    with pg.connect(endpoint, creds, timeout=5) as conn:
        conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
        conn.execute("SELECT pg_reload_conf()")

    def reloaded() -> bool:   # the reload is asynchronous: a new session sees it once the postmaster has
        with pg.connect(endpoint, creds, timeout=5) as conn:
            return conn.execute("SHOW synchronous_standby_names").fetchone() == ("",)

    if not poll(reloaded, timeout=30, interval=0.05):
        raise BackupFailed(f"{endpoint.name}: the scratch copy still names synchronous standbys 30 s after "
                           "ALTER SYSTEM RESET synchronous_standby_names")


def _databases_answer(endpoint: pg.Endpoint, creds: pg.Credentials) -> dict[str, Any]:
    with pg.connect(endpoint, creds, timeout=5) as conn:
        names = [str(r[0]) for r in conn.execute("SELECT datname FROM pg_database WHERE datallowconn").fetchall()]
    for name in names:
        with pg.connect(endpoint, creds, dbname=name, timeout=5) as conn:
            conn.execute("SELECT count(*) FROM pg_class").fetchone()
    return {"databases": sorted(names)}

