"""Bad input anywhere on the command line: one line naming what is wrong and the fix, exit 2, nothing started."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, TEST_PORT_BASE

SHIPPED = REPO / "topology" / "lab.yaml"
# Ports nobody else in this suite uses (see tests/conftest.py for the other offsets).
FREE_BASE = TEST_PORT_BASE + 800


def drctl(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DRCTL_TOPOLOGY", "DRCTL_LAB_DIR")}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          timeout=60, check=False, cwd=cwd, env={**env, "COLUMNS": "200"})


def one_line(proc: subprocess.CompletedProcess[str], *, code: int = 2) -> str:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
def topology_file(tmp_path: Path) -> Path:
    """The shipped topology on ports from FREE_BASE."""
    data = yaml.safe_load(SHIPPED.read_text())
    data["ports"] = {"base": FREE_BASE, "span": 30}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("args", [["lab", "up"], ["lab", "status"], ["lab", "down"], ["status"],
                                  ["connstr", "payments"]], ids=" ".join)
def test_lab_dir_that_is_a_file(tmp_path: Path, args: list[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    line = one_line(drctl(*args, "--lab-dir", str(afile)))
    assert line == f"error: --lab-dir: {afile} is a file, not a lab directory; pass a directory (it is created if " \
                   "missing)"


def test_damaged_lab_state_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "lab.json").write_bytes(b"\x89PNG\x00")
    line = one_line(drctl("lab", "status", "--lab-dir", str(tmp_path)))
    assert f"{tmp_path / 'lab.json'}: unreadable lab state" in line and "--lab-dir" in line


def test_no_default_topology_outside_the_repository(tmp_path: Path) -> None:
    line = one_line(drctl("drill", "list", "--lab-dir", str(tmp_path / "nolab"), cwd=tmp_path))
    assert "--topology: no topology/lab.yaml in" in line and "pass --topology FILE" in line


@pytest.fixture
def held_port() -> Iterator[int]:
    """Someone else's server on the first port of the test topology."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", FREE_BASE))
        sock.listen()
        yield FREE_BASE


def test_lab_up_on_a_held_port_starts_nothing(tmp_path: Path, topology_file: Path, held_port: int) -> None:
    lab_dir = tmp_path / "lab"
    line = one_line(drctl("lab", "up", "--topology", str(topology_file), "--lab-dir", str(lab_dir)))
    assert f"ports: 127.0.0.1:{held_port} (zk:dc1:client) is already in use" in line
    assert not lab_dir.exists()


def test_unreachable_zookeeper_is_one_line_without_kazoo_noise(tmp_path: Path, topology_file: Path) -> None:
    line = one_line(drctl("status", "--topology", str(topology_file), "--lab-dir", str(tmp_path)), code=1)
    assert "did not answer in 5s" in line


def test_unknown_cluster_before_anything_is_contacted(topology_file: Path, tmp_path: Path) -> None:
    for args in (["status", "nosuch"], ["pause", "nosuch"], ["switchover", "nosuch", "--to", "dc1-b"],
                 ["abort", "nosuch"]):
        line = one_line(drctl(*args, "--topology", str(topology_file), "--lab-dir", str(tmp_path)))
        assert line == "error: cluster: no cluster 'nosuch'; clusters are payments", args


def test_timeout_below_one_second_is_a_usage_error() -> None:
    proc = drctl("switchover", "payments", "--to", "dc1-b", "--timeout", "0")
    assert proc.returncode == 2 and "--timeout" in proc.stderr and "Traceback" not in proc.stderr


def test_binary_report_is_one_line_for_show_and_a_row_for_history(tmp_path: Path) -> None:
    run = tmp_path / "20260101T000000Z-primary-crash"
    run.mkdir()
    (run / "report.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xa5")
    line = one_line(drctl("drill", "show", "latest", "--reports-dir", str(tmp_path)))
    assert line == f"error: {run / 'report.json'}: not a drill report (Invalid JSON: expected value at line 1 " \
                   "column 1); was it written by drctl?"
    history = drctl("drill", "history", "--reports-dir", str(tmp_path))
    assert history.returncode == 0 and "Traceback" not in history.stderr, history.stderr
    assert "unreadable" in history.stdout and run.name in history.stdout


def test_lab_up_where_no_directory_can_be_made(topology_file: Path) -> None:
    line = one_line(drctl("lab", "up", "--topology", str(topology_file), "--lab-dir", "/proc/no-lab-here"))
    assert line.startswith("error: --lab-dir: cannot create /proc/no-lab-here (")
