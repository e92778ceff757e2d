"""Bench hygiene: ports are free before a system starts, nothing of it outlives its round.

Real sockets and real processes (``sleep``), no lab: the kernel's rule that a client-side
TIME_WAIT blocks a listener's bind even with SO_REUSEADDR is what made Patroni fail with
"Address already in use", so it is exercised for real. Ports DRCTL_TEST_PORT_BASE+6500 to +6539
(a TIME_WAIT this test leaves lasts 60 s: a re-run takes the next free port of its range).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.bench import procs
from orchestrator.bench.patroni import PatroniSystem
from orchestrator.bench.patroni_config import none_values
from orchestrator.bench.report import hygiene_lines
from orchestrator.bench.runner import run_bench
from orchestrator.bench.suite import check_port_base
from orchestrator.bench.system import Fault, RoundFacts
from orchestrator.errors import InvalidInput, LabError
from tests.conftest import TEST_PORT_BASE

PORT = TEST_PORT_BASE + 6500


def _free_port(first: int, count: int = 10) -> int:
    return next(p for p in range(first, first + count) if procs.bindable("127.0.0.1", p))


def _client_time_wait(local_port: int) -> None:
    """Leave a client-side TIME_WAIT whose local end is ``local_port`` (the client closes first)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client = socket.socket()
        client.bind(("127.0.0.1", local_port))
        client.connect(server.getsockname())
        accepted, _ = server.accept()
        client.close()
        time.sleep(0.05)
        accepted.close()


def test_a_client_time_wait_blocks_the_port_and_is_named() -> None:
    port = _free_port(PORT)
    _client_time_wait(port)

    assert not procs.bindable("127.0.0.1", port)       # even with SO_REUSEADDR
    assert [h.status for h in procs.holders([port])] == ["TIME_WAIT"]
    with pytest.raises(LabError, match=rf"ports \[{port}\] .* still taken after 1s \({port}: TIME_WAIT no process"):
        procs.wait_ports_free("127.0.0.1", [port], timeout=1)


def test_a_listener_is_named_with_its_pid() -> None:
    port = _free_port(PORT + 10)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        (holder,) = procs.holders([port])
        assert (holder.status, holder.pid) == ("LISTEN", os.getpid())
        assert not procs.bindable("127.0.0.1", port)
    waited, first = procs.wait_ports_free("127.0.0.1", [port], timeout=5)
    assert waited < 1 and first == []


def test_processes_under_finds_a_process_by_its_working_directory(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "30"], cwd=tmp_path)
    try:
        assert [s.pid for s in procs.processes_under(tmp_path)] == [proc.pid]
        assert procs.processes_under(tmp_path.parent / "elsewhere") == []
        assert procs.kill([proc.pid]) == []
        proc.wait(timeout=5)
        assert procs.processes_under(tmp_path) == []
    finally:
        proc.kill()
        proc.wait()


class LeakySystem:
    """start() leaves a process in its directory that stop() forgets; the round must fail loudly."""

    name = "leaky"

    def __init__(self, port: int) -> None:
        self.port = port
        self.child: subprocess.Popen[bytes] | None = None

    def settings(self) -> dict[str, Any]:
        return {}

    def ports(self) -> tuple[int, ...]:
        return (self.port,)

    def start(self, workdir: Path) -> None:
        self.child = subprocess.Popen(["sleep", "60"], cwd=workdir)
        raise LabError("never healthy")

    def conninfo(self) -> str:
        raise AssertionError("not started")

    def kill_primary(self) -> Fault:
        raise AssertionError("not started")

    def observe(self, fault: Fault, seconds: float) -> RoundFacts:
        raise AssertionError("not started")

    def stop(self) -> None:
        pass


def test_a_process_that_outlives_its_round_fails_the_round_and_is_killed(tmp_path: Path) -> None:
    system = LeakySystem(_free_port(PORT + 20))
    lines: list[str] = []
    result = run_bench([system], 1, tmp_path / "work", users=1, duration_s=8, fault_at_s=3, accounts=10,
                       user_rate=5, progress=lines.append)
    assert system.child is not None
    assert system.child.wait(timeout=10) == -9                 # killed by PID in the teardown
    (r,) = result.rounds
    assert not r.ok
    assert r.error is not None and r.error.startswith("LabError: never healthy; teardown: 1 process(es) outlived")
    assert f"pid {system.child.pid} sleep" in r.error
    assert r.preflight["ports"] == [system.port] and r.preflight["waited_s"] < 1
    assert any("TEARDOWN FAILED" in line for line in lines)
    assert not (tmp_path / "work" / "leaky").exists()        # removed: the next round starts from nothing
    hygiene = "\n".join(hygiene_lines(result))
    assert re.search(rf"\| 1 \| leaky \| 0\.\d s \| — \| \d+\.\d s \| pid {system.child.pid} sleep: sleep 60 \|",
                     hygiene), hygiene


@pytest.mark.parametrize(("base", "ok"), [
    (24000, True), (41000, True), (25200, False), (33000, False), (1000, False), (65200, False),
], ids=["default", "high", "dev-lab", "ci", "privileged", "past-65535"])
def test_port_base_must_avoid_the_labs(base: int, ok: bool) -> None:
    if ok:
        check_port_base(base)
    else:
        with pytest.raises(InvalidInput, match="--port-base"):
            check_port_base(base)


def test_patroni_config_renders_no_null_and_its_ports_include_its_own_ensemble() -> None:
    system = PatroniSystem("aggressive", PORT + 30)
    assert none_values(system.member_config("pg1")) == []
    assert none_values({"a": [1, {"b": None}]}) == ["a[1].b"]
    assert system.ports() == (*range(PORT + 30, PORT + 36), *range(PORT + 40, PORT + 49))
