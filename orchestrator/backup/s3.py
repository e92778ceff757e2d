"""The object store client: the only module that imports boto3.

The backup engine (pgBackRest) moves the bytes; this client is dr-orchestrator's own view of
the store: it reads the credentials file, creates the bucket (pgBackRest does not), checks
the endpoint, the TLS chain and the keys before anything runs (so a wrong setting is one line
naming the topology field, not a minute of engine retries), sizes and lists prefixes, and
keeps the small JSON records of verified restores next to the backups.

Contract: every method either returns or raises :class:`BackupConfigError` (a setting is
wrong: the message names ``clusters.<name>.backup.<field>`` and the fix) or
:class:`BackupFailed` (the store failed or is unreachable). No botocore exception escapes.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, SSLError

from orchestrator.backup.errors import BackupConfigError, BackupFailed
from orchestrator.topology import BackupSpec

_REJECTED_KEYS = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "InvalidToken", "403"}
_NO_BUCKET = {"NoSuchBucket", "404", "NotFound"}


@dataclass(frozen=True)
class S3Keys:
    access_key: str
    secret_key: str

    def __repr__(self) -> str:  # never print a secret in a traceback
        return f"S3Keys(access_key={self.access_key!r}, secret_key=***)"


@dataclass(frozen=True)
class StoreSettings:
    """One cluster's store, resolved: the spec, its field path, and its files as absolute paths."""

    spec: BackupSpec
    field: str                 # clusters.<name>.backup
    credentials_file: Path
    ca_file: Path | None
    encryption_key_file: Path | None = None

    @classmethod
    def resolve(cls, spec: BackupSpec, cluster: str, root: Path) -> StoreSettings:
        """Relative paths in the spec are resolved against the lab directory ``root``."""
        return cls(spec, f"clusters.{cluster}.backup", root / spec.credentials_file,
                   (root / spec.ca_file) if spec.ca_file else None,
                   (root / spec.encryption_key_file) if spec.encryption_key_file else None)


def write_keys(path: Path, keys: S3Keys) -> None:
    """Write a credentials file (mode 0600, created that way: never readable by others)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"access_key": keys.access_key, "secret_key": keys.secret_key}, handle)
    os.chmod(path, 0o600)


def write_passphrase(path: Path) -> None:
    """Generate a repository passphrase into ``path`` (mode 0600 from creation) unless one is there."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48) + "\n")


def load_passphrase(settings: StoreSettings) -> str | None:
    """The repository passphrase from ``encryption_key_file``; None when the repository is not encrypted.

    :raises BackupConfigError: missing, readable by group/others, or empty.
    """
    path, field = settings.encryption_key_file, f"{settings.field}.encryption_key_file"
    if path is None:
        return None
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except FileNotFoundError:
        raise BackupConfigError(f"{field}: {path} does not exist; write the repository passphrase there with mode "
                                "0600 (losing it makes every backup unreadable: keep a copy apart)") from None
    except OSError as exc:
        raise BackupConfigError(f"{field}: cannot read {path} ({exc.strerror}); fix its owner or path") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BackupConfigError(f"{field}: {path} is readable by others (mode {stat.S_IMODE(mode):o}); chmod 600 it")
    if not text:
        raise BackupConfigError(f"{field}: {path} is empty; write the repository passphrase there")
    return text


def load_keys(settings: StoreSettings) -> S3Keys:
    """Read ``{"access_key": ..., "secret_key": ...}`` from the 0600 credentials file.

    :raises BackupConfigError: missing, readable by group/others, not JSON, or a key missing.
    """
    path, field = settings.credentials_file, f"{settings.field}.credentials_file"
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except FileNotFoundError:
        raise BackupConfigError(f'{field}: {path} does not exist; write {{"access_key": "...", "secret_key": '
                                '"..."}} there with mode 0600') from None
    except OSError as exc:
        raise BackupConfigError(f"{field}: cannot read {path} ({exc.strerror}); fix its owner or path") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BackupConfigError(f"{field}: {path} is readable by others (mode {stat.S_IMODE(mode):o}); chmod 600 it")
    try:
        data = json.loads(text)
        keys = S3Keys(str(data["access_key"]), str(data["secret_key"]))
    except (ValueError, KeyError, TypeError):
        raise BackupConfigError(f'{field}: {path} is not a JSON object with "access_key" and "secret_key"; '
                                "rewrite it in that form") from None
    if not keys.access_key or not keys.secret_key:
        raise BackupConfigError(f"{field}: {path} has an empty access_key or secret_key; fill both in")
    return keys


class ObjectStore:
    """One bucket on one S3 endpoint, with the cluster's keys."""

    def __init__(self, settings: StoreSettings, keys: S3Keys | None = None, *, timeout: float = 5.0) -> None:
        self.settings = settings
        self.spec = settings.spec
        self.keys = keys if keys is not None else load_keys(settings)
        if settings.ca_file is not None and not settings.ca_file.is_file():
            raise BackupConfigError(f"{settings.field}.ca_file: {settings.ca_file} does not exist; give the PEM "
                                    "that signed the store's TLS certificate, or leave it empty for the system's CAs")
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=self.spec.endpoint,
            region_name=self.spec.region,
            aws_access_key_id=self.keys.access_key,
            aws_secret_access_key=self.keys.secret_key,
            verify=str(settings.ca_file) if settings.ca_file is not None else True,
            config=Config(connect_timeout=timeout, read_timeout=max(timeout, 30.0),
                          retries={"max_attempts": 2, "mode": "standard"}, s3={"addressing_style": "path"}),
        )

    # ---- errors ------------------------------------------------------------------------------

    def _translate(self, exc: Exception, doing: str) -> Exception:
        field, endpoint = self.settings.field, self.spec.endpoint
        if isinstance(exc, SSLError):
            return BackupConfigError(f"{field}.ca_file: TLS verification of {endpoint} failed while {doing} "
                                     f"({_first_line(exc)}); give the PEM that signed the store's certificate")
        if isinstance(exc, EndpointConnectionError | BotoCoreError) and not isinstance(exc, ClientError):
            return BackupFailed(f"{field}.endpoint: cannot reach {endpoint} while {doing} ({_first_line(exc)}); "
                                "check the URL and that the store runs")
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _REJECTED_KEYS:
                return BackupConfigError(f"{field}.credentials_file: {endpoint} rejected the keys in "
                                         f"{self.settings.credentials_file} ({code}) while {doing}; fix access_key "
                                         "and secret_key")
            if code in _NO_BUCKET:
                return BackupConfigError(f"{field}.bucket: {endpoint} has no bucket {self.spec.bucket!r}; run "
                                         "'drctl backup setup CLUSTER' to create it, or fix the name")
            return BackupFailed(f"{field}: {endpoint} refused {doing} ({code}: {_first_line(exc)})")
        return BackupFailed(f"{field}: {doing} failed ({_first_line(exc)})")

    def _call(self, doing: str, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, method)(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self._translate(exc, doing) from exc

    # ---- bucket ------------------------------------------------------------------------------

    def check(self) -> None:
        """The endpoint answers over verified TLS, accepts the keys and holds the bucket.

        :raises BackupConfigError: rejected keys, TLS failure, no such bucket.
        :raises BackupFailed: endpoint unreachable or failing.
        """
        # A listing, not HEAD: its error body names the cause (SignatureDoesNotMatch, NoSuchBucket, ...).
        self._call("checking the bucket", "list_objects_v2", Bucket=self.spec.bucket, MaxKeys=1)

    def ensure_bucket(self) -> bool:
        """Create the bucket unless it exists; True when it was created."""
        try:
            self.check()
            return False
        except BackupConfigError as exc:
            if not str(exc).startswith(f"{self.settings.field}.bucket:"):
                raise
        self._call("creating the bucket", "create_bucket", Bucket=self.spec.bucket)
        return True

    # ---- objects -----------------------------------------------------------------------------

    def list_objects(self, prefix: str) -> list[tuple[str, int]]:
        """Every object under ``prefix`` (no leading '/'): (key, size in bytes), in key order."""
        found: list[tuple[str, int]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.spec.bucket, "Prefix": prefix.lstrip("/")}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("listing objects", "list_objects_v2", **kwargs)
            found += [(str(obj["Key"]), int(obj["Size"])) for obj in page.get("Contents", [])]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return found

    def prefix_size(self, prefix: str) -> int:
        return sum(size for _, size in self.list_objects(prefix))

    def put_json(self, key: str, document: dict[str, Any]) -> None:
        self._call("writing a record", "put_object", Bucket=self.spec.bucket, Key=key.lstrip("/"),
                   Body=json.dumps(document, sort_keys=True).encode(), ContentType="application/json")

    def get_bytes(self, key: str) -> bytes:
        """The whole object at ``key`` (small objects: records, WAL segments)."""
        body = self._call("reading an object", "get_object", Bucket=self.spec.bucket, Key=key.lstrip("/"))["Body"]
        return bytes(body.read())

    def copy_to(self, key: str, other: ObjectStore) -> int:
        """Copy object ``key`` to the same key in ``other`` (another endpoint: read here, written there,
        spooled through memory up to 64 MiB, then a temporary file); its size in bytes."""
        with tempfile.SpooledTemporaryFile(max_size=64 << 20) as spool:
            self._call("reading an object to replicate", "download_fileobj", Bucket=self.spec.bucket,
                       Key=key.lstrip("/"), Fileobj=spool)
            size = spool.tell()
            spool.seek(0)
            other._call("writing a replicated object", "upload_fileobj", Fileobj=spool, Bucket=other.spec.bucket,
                        Key=key.lstrip("/"))
        return size

    def delete(self, key: str) -> None:
        """Remove the object at ``key`` (no error when there is none)."""
        self._call("removing a record", "delete_object", Bucket=self.spec.bucket, Key=key.lstrip("/"))

    def get_json(self, key: str) -> dict[str, Any] | None:
        """The JSON object at ``key``, or None when there is none."""
        try:
            body = self._client.get_object(Bucket=self.spec.bucket, Key=key.lstrip("/"))["Body"].read()
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in {"NoSuchKey", "404"}:
                return None
            raise self._translate(exc, "reading a record") from exc
        except BotoCoreError as exc:
            raise self._translate(exc, "reading a record") from exc
        document = json.loads(body)
        return document if isinstance(document, dict) else None

    def read_all(self, prefix: str) -> tuple[int, float]:
        """Download every object under ``prefix`` and discard it: (bytes, seconds), a plain-copy baseline."""
        started = time.monotonic()
        total = 0
        for key, _ in self.list_objects(prefix):
            body = self._call("reading an object", "get_object", Bucket=self.spec.bucket, Key=key)["Body"]
            while chunk := body.read(1 << 20):
                total += len(chunk)
        return total, time.monotonic() - started


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
