"""``drctl lab status`` and ``drctl status`` against the real lab, through the command line, at 80 columns."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.lab import Lab
from tests.conftest import REPO

pytestmark = pytest.mark.lab


def drctl(lab: Lab, *args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args, "--lab-dir", str(lab.root)],
                          capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
                          env={**os.environ, "COLUMNS": str(columns)})


def words(text: str) -> set[str]:
    return set(re.split(r"[\s,:()]+", text))


def member_names(lab: Lab) -> set[str]:
    return {m.name for c in lab.topology.clusters for m in c.members}


def test_lab_status_json_is_the_whole_of_stdout(lab: Lab) -> None:
    proc = drctl(lab, "lab", "status", "--json")
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)  # nothing but the document on stdout
    assert document["healthy"] is True and document["lab"] == lab.topology.name
    assert document["root"] == str(lab.root)
    assert {m["member"] for m in document["members"]} == member_names(lab)
    primaries = [m for m in document["members"] if m["role"] == "primary"]
    assert len(primaries) == 1 and primaries[0]["replication"] == "primary"
    assert all(isinstance(m["port"], int) and isinstance(m["pid"], int) for m in document["members"])
    assert {s["service"] for s in document["services"]} >= {"zookeeper-1", "controller"}


def test_lab_status_reads_well_at_80_columns(lab: Lab) -> None:
    proc = drctl(lab, "lab", "status", columns=80)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), proc.stdout
    assert member_names(lab) <= words(proc.stdout), proc.stdout
    assert "…" not in proc.stdout and "payments/" not in proc.stdout
    header = next(line for line in lines if line.startswith("member")).split()
    assert header == ["member", "role", "replication", "lag", "dc", "port", "pid"]  # the lab's names fit in full


def _cluster_status(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    """drctl status once the leader has recorded member health (it does so within a second or two)."""
    deadline = time.monotonic() + 30
    while True:
        proc = drctl(lab, "status", *args)
        if proc.returncode == 0 and _has_members(proc, args):
            return proc
        assert time.monotonic() < deadline, proc.stderr
        time.sleep(0.5)


def _has_members(proc: subprocess.CompletedProcess[str], args: tuple[str, ...]) -> bool:
    if "--json" in args:
        return all(c["members"] for c in json.loads(proc.stdout)["clusters"])
    return "healthy" in proc.stdout


def test_status_json_is_the_whole_of_stdout(lab: Lab) -> None:
    document = json.loads(_cluster_status(lab, "--json").stdout)
    assert document["topology"] == lab.topology.name and document["leader"]
    (cluster,) = document["clusters"]
    assert cluster["cluster"] == "payments" and cluster["primary"] in member_names(lab)
    assert {m["member"] for m in cluster["members"]} == member_names(lab)
    assert cluster["epoch"] >= 1 and cluster["paused"] is False


def test_status_reads_well_at_80_columns(lab: Lab) -> None:
    proc = _cluster_status(lab)
    assert all(len(line) <= 80 for line in proc.stdout.splitlines()), proc.stdout
    assert member_names(lab) <= words(proc.stdout), proc.stdout
    assert "…" not in proc.stdout


def test_status_of_an_unknown_cluster_is_one_line(lab: Lab) -> None:
    proc = drctl(lab, "status", "nosuch", "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == ["error: cluster: no cluster 'nosuch'; clusters are payments"]


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"- kind: kill-primary\n", b""],
                         ids=["binary", "list", "empty"])
def test_drill_run_with_a_bad_drill_file_runs_nothing(lab: Lab, tmp_path: Path, content: bytes) -> None:
    drills, reports = tmp_path / "drills", tmp_path / "reports"
    drills.mkdir()
    (drills / "bad.yaml").write_bytes(content)
    proc = drctl(lab, "drill", "run", "bad", "--drills-dir", str(drills), "--reports-dir", str(reports))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {drills / 'bad.yaml'}: "), proc.stderr
    assert proc.stdout == "" and not reports.exists()
