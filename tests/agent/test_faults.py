"""The silent-cut proxy (no servers needed) and instruction parsing."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from orchestrator.agent.faults import CutProxies
from orchestrator.agent.runtime import parse_instruction


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def handle(conn: socket.socket) -> None:
        # The connection is closed when its peer goes, also one accepted after teardown began.
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(4096):
                conn.sendall(data)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(conn)
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[:2]
    # close() alone does not wake a thread blocked in accept(); shutdown() does, so the listener
    # stops accepting before its port can be handed to anything else.
    with contextlib.suppress(OSError):
        server.shutdown(socket.SHUT_RDWR)
    server.close()
    thread.join(5)
    for conn in accepted:
        conn.close()


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
