"""The silent-cut proxy (no servers needed) and instruction parsing."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from orchestrator.agent.faults import CutProxies
from orchestrator.agent.runtime import parse_instruction


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=lambda c=conn: [c.sendall(d) for d in iter(lambda: c.recv(4096), b"")],
                             daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[:2]
    server.close()


def test_cut_is_silent_and_heal_delivers_what_was_held(echo: tuple[str, int]) -> None:
    proxies = CutProxies(f"{echo[0]}:{echo[1]}")
    try:
        host, port = proxies.hosts.split(":")
        with socket.create_connection((host, int(port)), timeout=2) as sock:
            sock.sendall(b"ping")
            assert sock.recv(16) == b"ping"
            proxies.cut()
            sock.sendall(b"held")
            sock.settimeout(0.3)
            with pytest.raises(TimeoutError):  # no answer, and no close (recv would return b"")
                sock.recv(16)
            with socket.create_connection((host, int(port)), timeout=2) as late:
                late.settimeout(0.3)
                late.sendall(b"new")
                with pytest.raises(TimeoutError):  # accepted, never answered
                    late.recv(16)
            proxies.heal()
            sock.settimeout(2)
            assert sock.recv(16) == b"held"
    finally:
        proxies.close()


def test_instruction_errors_name_the_field() -> None:
    assert parse_instruction(b'{"epoch": 2, "action": "fence", "id": "x"}').epoch == 2
    with pytest.raises(ValueError, match=r"^instruction\.action: "):
        parse_instruction(b'{"epoch": 2, "action": "explode", "id": "x"}')
    with pytest.raises(ValueError, match=r"^instruction\.epoch: "):
        parse_instruction(b'{"epoch": 0, "action": "fence", "id": "x"}')
    with pytest.raises(ValueError, match=r"^instruction"):
        parse_instruction(b"not json")
