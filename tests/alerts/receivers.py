"""Real alert receivers on loopback for the tests: an HTTP server and an SMTP server (aiosmtpd).

:class:`HttpReceiver` records every POST (path, headers, body, whether its signature
verifies with the shared secret) and answers 503 to the first ``fail_first`` requests.
:class:`SmtpReceiver` records every message aiosmtpd accepts. Both run in threads of the
test process and are stopped by :meth:`close`.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from orchestrator.alerts.delivery import SIGNATURE_HEADER, verify


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    signed: bool | None     # None: no signature header
    at: float = 0.0         # time.time() at receipt

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class HttpReceiver:
    def __init__(self, port: int, secret: bytes | None = None, *, fail_first: int = 0) -> None:
        self.requests: list[Received] = []
        self.refused = 0
        self.fail_first = fail_first
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    if receiver.refused < receiver.fail_first:
                        receiver.refused += 1
                        status = 503
                    else:
                        header = self.headers.get(SIGNATURE_HEADER)
                        signed = None if header is None or secret is None else verify(secret, body, header)
                        receiver.requests.append(Received(self.path, dict(self.headers.items()), body, signed,
                                                          time.time()))
                        status = 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


class SmtpReceiver:
    def __init__(self, port: int) -> None:
        self.messages: list[Message] = []
        self.times: list[float] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        receiver = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                receiver.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                receiver.messages.append(message_from_bytes(envelope.content))
                receiver.times.append(time.time())
                return "250 OK"

        self.port = port
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=port)
        self._controller.start()

    def close(self) -> None:
        self._controller.stop()
