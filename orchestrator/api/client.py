"""The REST API's client for ``drctl --api URL`` (stdlib HTTP; the token never on the command line).

The token comes from ``DRCTL_API_TOKEN``, or from the file named by ``--api-token-file`` /
``DRCTL_API_TOKEN_FILE``; ``--api-ca`` / ``DRCTL_API_CA`` names the PEM that signs the
server's certificate (the lab's is self-signed). An answer other than 2xx becomes one line:
4xx input errors (404, 422) as :class:`InvalidInput`, the rest as :class:`OrchestratorError`.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from orchestrator.errors import InvalidInput, OrchestratorError

TOKEN_ENV = "DRCTL_API_TOKEN"
TOKEN_FILE_ENV = "DRCTL_API_TOKEN_FILE"


def load_token(token_file: Path | None) -> str:
    """From the file (``--api-token-file``/``DRCTL_API_TOKEN_FILE``), else ``DRCTL_API_TOKEN``."""
    path = token_file or (Path(os.environ[TOKEN_FILE_ENV]) if os.environ.get(TOKEN_FILE_ENV) else None)
    if path is not None:
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise InvalidInput(f"--api-token-file: cannot read {path} ({exc.strerror}); give the file holding the "
                               "token 'drctl api token add' printed") from None
        if not token:
            raise InvalidInput(f"--api-token-file: {path} is empty; put the token in it")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise InvalidInput(f"--api: no token; set {TOKEN_ENV} or pass --api-token-file FILE (never the token itself)")
    return token


class ApiClient:
    def __init__(self, url: str, token: str, *, ca_file: Path | None = None, timeout: float = 75.0) -> None:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise InvalidInput(f"--api: {url!r} is not an http(s)://HOST:PORT URL; give a controller's API address")
        self.url = url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._context: ssl.SSLContext | None = None
        if parsed.scheme == "https":
            try:
                self._context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            except (OSError, ssl.SSLError) as exc:
                raise InvalidInput(f"--api-ca: cannot load {ca_file} ({exc}); give the PEM certificate of the "
                                   "API (the lab's: <lab>/api/cert.pem)") from None

    def get(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        return self._call("GET", f"{path}?{query}" if query else path, None)

    def post(self, path: str, body: dict[str, Any], *, timeout: float | None = None) -> Any:
        if timeout is not None:
            body = {**body, "timeout_s": timeout}
        return self._call("POST", path, body, wait=(timeout or 0) + 15)

    def delete(self, path: str) -> Any:
        return self._call("DELETE", path, None)

    def _call(self, method: str, path: str, body: dict[str, Any] | None, *, wait: float = 0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {self._token}", "Accept": "application/json",
            **({"Content-Type": "application/json"} if data is not None else {})})
        try:
            with urllib.request.urlopen(request, timeout=max(self._timeout, wait), context=self._context) as reply:
                return json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read()).get("error", exc.reason)
            except (ValueError, AttributeError):
                error = exc.reason
            message = f"API {exc.code}: {error}"
            raise (InvalidInput(message) if exc.code in (400, 404, 422) else OrchestratorError(message)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise OrchestratorError(f"--api: cannot reach {self.url} ({reason}); check the URL, the controller, and "
                                    "--api-ca for a self-signed certificate") from None
