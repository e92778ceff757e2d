"""Delivery adapters: a signed JSON webhook, a chat incoming webhook, and mail over SMTP.

Each adapter sends one alert once and raises :class:`DeliveryFailed` (a temporary error:
the dispatcher retries it) when the receiver refuses, times out or cannot be reached, or
when the secret/password cannot be read. Secrets are read at send time from the file or
environment variable the topology names, so rotating one needs no restart.

Webhook signature: ``X-Drctl-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>``; the
secret is the file's content or the variable's value with surrounding whitespace stripped.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from email.message import EmailMessage
from pathlib import Path

from orchestrator.alerts.config import ChatFormat, ChatReceiver, SecretRef, SmtpReceiver, WebhookReceiver
from orchestrator.alerts.model import Alert
from orchestrator.errors import TemporaryError

SIGNATURE_HEADER = "X-Drctl-Signature"
USER_AGENT = "drctl-alerts/1"

Sender = Callable[[Alert], None]


class DeliveryFailed(TemporaryError):
    """An alert did not reach its receiver (worth retrying)."""


def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str) -> bool:
    """Whether ``header`` is the signature of ``body`` (constant-time compare); what a receiver runs."""
    return hmac.compare_digest(sign(secret, body), header)


def _read(path: str | None, env_name: str | None, root: Path, env: Mapping[str, str], what: str) -> bytes:
    if path is not None:
        file = Path(path) if Path(path).is_absolute() else root / path
        try:
            value = file.read_text().strip()
        except OSError as exc:
            raise DeliveryFailed(f"{what}: cannot read {file}: {exc.strerror}") from None
        if not value:
            raise DeliveryFailed(f"{what}: {file} is empty")
        return value.encode()
    if env_name is not None:
        value = env.get(env_name, "").strip()
        if not value:
            raise DeliveryFailed(f"{what}: environment variable {env_name} is not set")
        return value.encode()
    raise DeliveryFailed(f"{what}: no source configured")


def read_secret(ref: SecretRef, root: Path, env: Mapping[str, str]) -> bytes:
    return _read(ref.secret_file, ref.secret_env, root, env, "secret")


def post_json(url: str, document: object, timeout: float, secret: bytes | None) -> None:
    """POST ``document`` as JSON (signed when ``secret``); a non-2xx answer raises :class:`DeliveryFailed`."""
    body = json.dumps(document, sort_keys=True, default=str).encode()
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if secret is not None:
        headers[SIGNATURE_HEADER] = sign(secret, body)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            reply.read()
    except urllib.error.HTTPError as exc:
        raise DeliveryFailed(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryFailed(f"{url}: {reason}") from None


def chat_document(alert: Alert, fmt: ChatFormat) -> dict[str, object]:
    text = f"{alert.title}\n{alert.summary}"
    if fmt is ChatFormat.SLACK:
        return {"text": text}
    return {"title": alert.title, "text": alert.summary, "kind": alert.kind.value, "severity": alert.severity.value,
            "cluster": alert.cluster, "subject": alert.subject, "count": alert.count, "at": alert.at}


def mail_message(alert: Alert, receiver: SmtpReceiver) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = alert.title
    message["From"] = receiver.sender
    message["To"] = ", ".join(receiver.to)
    message["X-Drctl-Alert"] = alert.kind.value
    lines = [alert.summary, "", f"kind: {alert.kind.value}", f"severity: {alert.severity.value}",
             f"cluster: {alert.cluster}", f"subject: {alert.subject}", f"occurrences: {alert.count}", "",
             json.dumps(alert.document(), indent=2, sort_keys=True, default=str)]
    message.set_content("\n".join(lines))
    return message


def send_mail(alert: Alert, receiver: SmtpReceiver, root: Path, env: Mapping[str, str]) -> None:
    message = mail_message(alert, receiver)
    try:
        with smtplib.SMTP(receiver.host, receiver.port, timeout=receiver.timeout_s) as smtp:
            if receiver.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if receiver.username:
                password = _read(receiver.password_file, receiver.password_env, root, env, "password")
                smtp.login(receiver.username, password.decode())
            smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryFailed(f"smtp {receiver.host}:{receiver.port}: {exc}") from None


def sender_for(receiver: WebhookReceiver | ChatReceiver | SmtpReceiver, root: Path,
               env: Mapping[str, str] | None = None) -> Sender:
    """The function that delivers one alert to ``receiver`` (relative files: under ``root``)."""
    environ: Mapping[str, str] = os.environ if env is None else env
    if isinstance(receiver, WebhookReceiver):
        hook = receiver
        return lambda alert: post_json(hook.url, alert.document(), hook.timeout_s,
                                       read_secret(hook, root, environ))
    if isinstance(receiver, ChatReceiver):
        chat = receiver
        return lambda alert: post_json(chat.url, chat_document(alert, chat.format), chat.timeout_s,
                                       read_secret(chat, root, environ) if chat.has_secret else None)
    mail = receiver
    return lambda alert: send_mail(alert, mail, root, environ)
