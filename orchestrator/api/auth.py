"""Bearer tokens, roles, the source allow-list and the failed-login limit of the REST API.

Tokens are 256 random bits (``secrets.token_urlsafe(32)``, prefixed ``drctl_``); the tokens
file keeps only their SHA-256. A slow password hash (scrypt, bcrypt) exists to make guessing a
*low-entropy* secret expensive; nobody can guess 256 random bits, so a fast hash loses nothing
and costs no CPU on every request, and whoever reads the file still learns no token. The
file (``api.tokens_file`` in the topology; mode 0600, replaced atomically under ``flock``) is
re-read when it changes, so a token added or removed takes effect without a restart.

Roles are ordered: ``viewer`` reads; ``operator`` also switches over, fails over with proven
zero loss, aborts, pauses and starts drills; ``admin`` also fails over accepting data loss
and manages tokens.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from orchestrator.errors import InvalidInput

TOKEN_PREFIX = "drctl_"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


def parse_role(value: str, *, field: str = "--role") -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidInput(f"{field}: unknown role {value!r}; use one of {', '.join(r.value for r in Role)}") from None


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Identity:
    name: str
    role: Role

    def __str__(self) -> str:
        return f"{self.name} ({self.role.value})"


class TokenFile:
    """The hashed tokens: ``{"version": 1, "tokens": [{name, role, sha256, created_at}]}``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cache: tuple[tuple[int, int] | None, list[dict[str, Any]]] = (None, [])
        self._lock = threading.Lock()

    # ---- reading (every request) ---------------------------------------------------------------

    def entries(self) -> list[dict[str, Any]]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        key = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if self._cache[0] != key:
                self._cache = (key, self._read())
            return self._cache[1]

    def _read(self) -> list[dict[str, Any]]:
        try:
            document = json.loads(self.path.read_text())
            tokens = document["tokens"]
            if not isinstance(tokens, list):
                raise TypeError("tokens is not a list")
            return [t for t in tokens if isinstance(t, dict)]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(f"{self.path}: unreadable tokens file ({exc}); restore it, or remove it and add "
                               "tokens again with 'drctl api token add'") from None

    def identify(self, token: str) -> Identity | None:
        """The token's owner, or None (compared in constant time against every stored digest)."""
        digest = token_digest(token)
        found = None
        for entry in self.entries():
            if hmac.compare_digest(str(entry.get("sha256", "")), digest):
                found = entry
        if found is None:
            return None
        try:
            return Identity(str(found["name"]), Role(found["role"]))
        except (KeyError, ValueError):
            return None

    # ---- managing (drctl api token ..., or an admin through the API) -------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[dict[str, Any]]]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path.parent / f".{self.path.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            tokens = self._read() if self.path.exists() else []
            yield tokens
            tmp = self.path.parent / f".{self.path.name}.tmp"
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(out, "w") as handle:
                json.dump({"version": 1, "tokens": tokens}, handle, indent=2)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        finally:
            os.close(fd)

    def add(self, name: str, role: Role) -> str:
        """Store a new token's digest and return the token (shown once, never stored)."""
        if not _NAME_RE.match(name):
            raise InvalidInput(f"--name: {name!r} is not a token name; use 1-64 letters, digits, '_', '.', '@' or "
                               "'-', starting with a letter or digit")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._locked() as tokens:
            if any(t.get("name") == name for t in tokens):
                raise InvalidInput(f"--name: a token named {name!r} exists; remove it first or choose another name")
            tokens.append({"name": name, "role": role.value, "sha256": token_digest(token),
                           "created_at": round(time.time(), 3)})
        return token

    def remove(self, name: str) -> None:
        with self._locked() as tokens:
            kept = [t for t in tokens if t.get("name") != name]
            if len(kept) == len(tokens):
                known = ", ".join(str(t.get("name")) for t in tokens) or "none"
                raise InvalidInput(f"--name: no token named {name!r}; tokens are {known}")
            tokens[:] = kept

    def listing(self) -> list[dict[str, Any]]:
        """Name, role and creation time of each token (never the digest)."""
        return [{"name": t.get("name"), "role": t.get("role"), "created_at": t.get("created_at")}
                for t in self.entries()]


class AllowList:
    """Source networks allowed to reach the API; empty allows every address."""

    def __init__(self, networks: tuple[str, ...]) -> None:
        self._networks = [ipaddress.ip_network(n, strict=False) for n in networks]

    def allows(self, address: str) -> bool:
        if not self._networks:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)


class FailedLogins:
    """At most ``limit`` failed logins per source address within ``window`` seconds; then 429 until they age out."""

    def __init__(self, limit: int, window: float, *, clock: Any = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._failures: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, address: str) -> collections.deque[float]:
        failures = self._failures.setdefault(address, collections.deque())
        horizon = self._clock() - self.window
        while failures and failures[0] <= horizon:
            failures.popleft()
        return failures

    def blocked(self, address: str) -> bool:
        with self._lock:
            return len(self._recent(address)) >= self.limit

    def record(self, address: str) -> bool:
        """Count a failure; True when it reaches the limit (the address is locked out from now on)."""
        with self._lock:
            failures = self._recent(address)
            failures.append(self._clock())
            return len(failures) == self.limit

    def retry_after(self, address: str) -> int:
        with self._lock:
            failures = self._recent(address)
            return max(1, int(failures[0] + self.window - self._clock()) + 1) if failures else 1
