"""Bad input at the command line: one line, the field and the fix, a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def drctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          timeout=60, check=False)


def test_contradictory_topology_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = (Path(__file__).resolve().parents[2] / "topology" / "lab.yaml").read_text()
    bad.write_text(text.replace("quorum: 1 ", "quorum: 5 "))
    proc = drctl("validate", str(bad))
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "clusters.payments.replication.quorum: 5 is larger" in lines[0]


def test_a_topology_still_allowing_unproven_failover_is_told_to_delete_the_field(tmp_path: Path) -> None:
    old = tmp_path / "old.yaml"
    text = (Path(__file__).resolve().parents[2] / "topology" / "lab.yaml").read_text()
    field = "      allow_unproven_failover: true\n"
    old.write_text(text.replace("      fallback: [dc3-a]\n", "      fallback: [dc3-a]\n" + field))
    proc = drctl("validate", str(old))
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "clusters.0.replication.allow_unproven_failover: this field was removed" in lines[0]
    assert "delete the field" in lines[0] and "--accept-data-loss" in lines[0]


def test_unknown_flag_is_a_usage_error() -> None:
    proc = drctl("lab", "up", "--bogus")
    assert proc.returncode == 2
    assert "No such option: --bogus" in proc.stderr


def test_drill_without_a_lab_says_how_to_start_one(tmp_path: Path) -> None:
    proc = drctl("drill", "run", "nosuch", "--lab-dir", str(tmp_path))
    assert proc.returncode == 2
    assert "no lab at" in proc.stderr
