"""Whatever a path holds, a topology or drill file that cannot be used is one line naming it and the fix.

The table runs through the real command line (``python -m orchestrator.cli``), for ``drctl validate``,
``drctl lab up --topology`` (which must not start building a lab) and ``drctl drill list``; the
hypothesis property feeds arbitrary bytes to the reader itself.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.errors import DrillFileError, InvalidInput, TopologyError
from orchestrator.topology import load_topology
from orchestrator.yamlfile import MAX_BYTES, read_yaml
from tests.conftest import REPO

SHIPPED = REPO / "topology" / "lab.yaml"


def drctl(*args: str, user: str | None = None, columns: int = 80) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          timeout=60, check=False, cwd=REPO, user=user, env={**os.environ, "COLUMNS": str(columns)})


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert proc.stdout == ""
    return lines[0]


def _write(content: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / "given.yaml"
        path.write_bytes(content)
        return path
    return make


def _directory(tmp: Path) -> Path:
    path = tmp / "given.yaml"
    path.mkdir()
    return path


def _fifo(tmp: Path) -> Path:
    path = tmp / "given.yaml"
    os.mkfifo(path)
    return path


def _huge(tmp: Path) -> Path:
    path = tmp / "given.yaml"
    with path.open("wb") as file:
        file.truncate(MAX_BYTES + 1)  # sparse: size without the disk
    return path


def _markup_path(tmp: Path) -> Path:
    path = tmp / "a[" / "red]" / "given.yaml"  # rich would read "[/red]" as a closing tag
    path.parent.mkdir(parents=True)
    path.write_bytes(b"- x\n")
    return path


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01"

# (id, how to make the path, what the one line must say)
BAD_FILES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("missing", lambda tmp: tmp / "given.yaml", "cannot read topology file (no such file)"),
    ("directory", _directory, "is a directory"),
    ("fifo", _fifo, "not a regular file"),
    ("device", lambda tmp: Path("/dev/zero"), "not a regular file"),
    ("huge", _huge, "too large"),
    ("binary-png", _write(PNG), "binary file (NUL byte at offset 8)"),
    ("nul-in-text", _write(b"name: lab\x00\n"), "binary file (NUL at character 9)"),
    ("latin-1", _write("name: caf\u00e9\n".encode("latin-1")), "not UTF-8 text (byte 0xe9 at offset 9)"),
    ("utf-16-no-bom", _write("name: lab\n".encode("utf-16-le")), "binary file (NUL at character 1)"),
    ("empty", _write(b""), "is empty"),
    ("only-comments", _write(b"# nothing here\n"), "is empty"),
    ("a-list", _write(b"- name: lab\n"), "got list"),
    ("a-number", _write(b"42\n"), "got number"),
    ("a-string", _write(b"hello\n"), "got string"),
    ("bad-syntax", _write(b"name: [lab\n"), "not valid YAML (line 2, column 1:"),
    ("two-documents", _write(b"a: 1\n---\nb: 2\n"), "expected a single document in the stream, but found another"),
    ("python-tag", _write(b"name: !!python/object/apply:os.system [id]\n"), "could not determine a constructor"),
    ("deep-nesting", _write(b"[" * 50_000), "nested too deeply"),
    ("markup-in-path", _markup_path, "got list"),
]


@pytest.mark.parametrize(("make", "expected"), [pytest.param(m, e, id=i) for i, m, e in BAD_FILES])
def test_validate_says_one_line_naming_the_file(tmp_path: Path, make: Callable[[Path], Path], expected: str) -> None:
    path = make(tmp_path)
    line = one_error_line(drctl("validate", str(path)))
    assert line.startswith(f"error: {path}: "), line
    assert expected in line
    assert "; " in line, "the line ends with the fix"


@pytest.mark.parametrize(("make", "expected"), [pytest.param(m, e, id=i) for i, m, e in BAD_FILES
                                                if i in ("binary-png", "directory", "a-list", "fifo")])
def test_lab_up_with_a_bad_topology_builds_nothing(tmp_path: Path, make: Callable[[Path], Path],
                                                   expected: str) -> None:
    path = make(tmp_path)
    lab_dir = tmp_path / "lab"
    line = one_error_line(drctl("lab", "up", "--topology", str(path), "--lab-dir", str(lab_dir)))
    assert expected in line and str(path) in line
    assert not lab_dir.exists(), "nothing half-done"


def test_unreadable_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "given.yaml"
    path.write_bytes(SHIPPED.read_bytes())
    path.chmod(0)
    # root reads anything: ask as the unprivileged postgres user, which the lab runs as
    user = pwd.getpwnam("postgres").pw_name if os.geteuid() == 0 else None
    tmp_path.chmod(0o755)
    line = one_error_line(drctl("validate", str(path), user=user))
    assert f"{path}: cannot read topology file (Permission denied)" in line


def test_drill_list_marks_a_binary_drill_invalid_and_lists_the_rest(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_bytes(PNG)
    (tmp_path / "listed.yaml").write_bytes(b"[1, 2]\n")
    good = REPO / "drills" / "primary-crash.yaml"
    (tmp_path / good.name).write_bytes(good.read_bytes())
    proc = drctl("drill", "list", "--drills-dir", str(tmp_path), "--topology", str(SHIPPED),
                 "--lab-dir", str(tmp_path / "nolab"), columns=400)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    flat = " ".join(proc.stdout.split())
    assert "binary file" in flat and "got list" in flat and "kill-primary" in flat


@pytest.mark.parametrize("content", [b"", PNG, b"- 1\n"], ids=["empty", "binary", "list"])
def test_load_drill_reports_a_drill_file_error(tmp_path: Path, content: bytes) -> None:
    from orchestrator.drills.spec import load_drill

    path = tmp_path / "x.yaml"
    path.write_bytes(content)
    with pytest.raises(DrillFileError, match=rf"^{path}: .*drill"):
        load_drill(path, load_topology(SHIPPED))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512) | st.text(max_size=256).map(str.encode))
def test_any_bytes_give_a_mapping_or_one_line_naming_the_file(tmp_path_factory: pytest.TempPathFactory,
                                                             content: bytes) -> None:
    path = tmp_path_factory.mktemp("any") / "t.yaml"
    path.write_bytes(content)
    for what, error in (("topology", TopologyError), ("drill", DrillFileError)):
        try:
            data = read_yaml(path, what, error)
        except InvalidInput as exc:
            assert type(exc) is error
            assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
        else:
            assert isinstance(data, dict)
    try:
        load_topology(path)
    except TopologyError as exc:
        assert "\n" not in str(exc)


@pytest.mark.parametrize("encoded", [b"\xef\xbb\xbf" + SHIPPED.read_bytes(), SHIPPED.read_text().encode("utf-16")],
                         ids=["utf-8-bom", "utf-16-bom"])
def test_a_valid_file_with_a_byte_order_mark_loads(tmp_path: Path, encoded: bytes) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(encoded)
    assert load_topology(path) == load_topology(SHIPPED)
