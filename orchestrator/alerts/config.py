"""The topology's ``alerts:`` section: receivers, which alert kinds go where, de-duplication.

Validated with no I/O (the secret and password files are read when an alert is sent, so a
topology never holds a secret, only the name of the file or environment variable that
does). Loaded as part of :class:`orchestrator.topology.Topology`; errors name the field.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,40}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class AlertKind(StrEnum):
    """What an alert is about (one per situation that needs a human)."""

    FAILOVER = "failover"
    FENCING = "fencing"
    DRILL_FAILED = "drill-failed"
    DR_LAG = "dr-lag"
    ARCHIVE_FAILED = "archive-failed"
    BACKUP_UNPROVEN = "backup-unproven"
    LOGIN_FAILURES = "login-failures"


KIND_NAMES = ", ".join(k.value for k in AlertKind)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SecretRef(_Model):
    """Where a secret is: a file (relative paths: the lab directory) or an environment variable."""

    secret_file: str | None = None
    secret_env: str | None = None

    @field_validator("secret_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_RE.match(value):
            raise ValueError(f"{value!r} is not an environment variable name; give e.g. DRCTL_ALERT_SECRET")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if self.secret_file is not None and self.secret_env is not None:
            raise ValueError("give secret_file or secret_env, not both")
        return self

    @property
    def has_secret(self) -> bool:
        return self.secret_file is not None or self.secret_env is not None


def _check_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"{value!r} is not an http(s) URL; give e.g. https://alerts.example.org/hook")
    return value


class WebhookReceiver(SecretRef):
    """JSON POST of the whole alert, signed: ``X-Drctl-Signature: sha256=<HMAC-SHA256 of the body>``."""

    name: str
    type: Literal["webhook"]
    url: str
    timeout_s: float = Field(5.0, gt=0, le=120)

    _url = field_validator("url")(_check_url)

    @model_validator(mode="after")
    def _needs_secret(self) -> WebhookReceiver:
        if not self.has_secret:
            raise ValueError(f"receiver {self.name}: a webhook is signed; add secret_file or secret_env "
                             "(never the secret itself)")
        return self


class ChatFormat(StrEnum):
    SLACK = "slack"        # {"text": "..."} (Slack, Mattermost, Rocket.Chat incoming webhooks)
    GENERIC = "generic"    # {"title", "text", "kind", "cluster", "subject", "count", "severity"}


class ChatReceiver(SecretRef):
    """A chat incoming webhook: a short text message; signed like a webhook when a secret is given."""

    name: str
    type: Literal["chat"]
    url: str
    format: ChatFormat = ChatFormat.SLACK
    timeout_s: float = Field(5.0, gt=0, le=120)

    _url = field_validator("url")(_check_url)


class SmtpReceiver(_Model):
    """Mail over SMTP (``starttls`` upgrades the connection; ``username`` logs in with the password)."""

    name: str
    type: Literal["smtp"]
    host: str
    port: int = Field(25, ge=1, le=65535)
    starttls: bool = False
    sender: str
    to: tuple[str, ...] = Field(min_length=1)
    username: str | None = None
    password_file: str | None = None
    password_env: str | None = None
    timeout_s: float = Field(10.0, gt=0, le=120)

    @field_validator("sender", "to")
    @classmethod
    def _addresses(cls, value: str | tuple[str, ...]) -> str | tuple[str, ...]:
        for address in (value,) if isinstance(value, str) else value:
            if not re.match(r"^[^@\s]+@[^@\s]+$", address):
                raise ValueError(f"{address!r} is not a mail address; give e.g. oncall@example.org")
        return value

    @model_validator(mode="after")
    def _login(self) -> SmtpReceiver:
        if self.password_file is not None and self.password_env is not None:
            raise ValueError(f"receiver {self.name}: give password_file or password_env, not both")
        if (self.password_file or self.password_env) and not self.username:
            raise ValueError(f"receiver {self.name}: a password needs a username; add username")
        return self


Receiver = Annotated[WebhookReceiver | ChatReceiver | SmtpReceiver, Field(discriminator="type")]


class Route(_Model):
    """Alerts of ``kinds`` (``["*"]``: every kind) go to ``receivers``."""

    kinds: tuple[str, ...] = Field(min_length=1)
    receivers: tuple[str, ...] = Field(min_length=1)

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for kind in value:
            if kind != "*" and kind not in AlertKind.__members__.values():
                raise ValueError(f"unknown alert kind {kind!r}; use * or one of {KIND_NAMES}")
        return value

    def matches(self, kind: AlertKind) -> bool:
        return "*" in self.kinds or kind.value in self.kinds


class AlertsSpec(_Model):
    """Receivers, routes, and the de-duplication window and retries every delivery uses."""

    receivers: tuple[Receiver, ...] = Field(min_length=1)
    routes: tuple[Route, ...] = Field(min_length=1)
    dedup_window_s: float = Field(300.0, ge=0, le=86400)
    attempts: int = Field(4, ge=1, le=20)
    backoff_s: float = Field(1.0, ge=0, le=600)
    max_backoff_s: float = Field(30.0, ge=0, le=3600)

    @model_validator(mode="after")
    def _consistent(self) -> AlertsSpec:
        names = [r.name for r in self.receivers]
        for i, name in enumerate(names):
            if not _NAME_RE.match(name):
                raise ValueError(f"receivers.{i}.name: {name!r} is not a name; use lower case letters, digits "
                                 "and '-', starting with a letter")
            if names.count(name) > 1:
                raise ValueError(f"receivers.{i}.name: receiver name {name!r} used twice; give each a unique name")
        known = ", ".join(names)
        for i, route in enumerate(self.routes):
            for name in route.receivers:
                if name not in names:
                    raise ValueError(f"routes.{i}.receivers: unknown receiver {name!r}; receivers are {known}")
        return self

    def receiver(self, name: str) -> WebhookReceiver | ChatReceiver | SmtpReceiver:
        return next(r for r in self.receivers if r.name == name)

    def receivers_for(self, kind: AlertKind) -> tuple[str, ...]:
        """The receivers of ``kind``, each once, in the order the routes name them."""
        out: list[str] = []
        for route in self.routes:
            if route.matches(kind):
                out.extend(n for n in route.receivers if n not in out)
        return tuple(out)
