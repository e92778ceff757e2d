"""Reading the YAML files a person hands us (topologies, drills): the one place they cross into the program.

:func:`read_yaml` is called by :func:`orchestrator.topology.load_topology` and
:func:`orchestrator.drills.spec.load_drill`. Whatever the path holds (nothing, a directory, a
FIFO or device, a huge or binary file, text that is not UTF-8, bad YAML, a list or a number
instead of a mapping), the caller gets its own :class:`InvalidInput` subclass with one line
naming the file and the fix, never a library exception; nothing is parsed from a file that
fails these checks, so nothing acts on half of one.
"""

from __future__ import annotations

import codecs
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from orchestrator.errors import InvalidInput

# A topology or drill file is a few KiB; anything this large was given by mistake (a log, an image),
# and reading it whole would only cost memory before failing.
MAX_BYTES = 1024 * 1024

_TYPE_NAMES = {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}


def read_yaml(path: Path, what: str, error: type[InvalidInput]) -> dict[str, Any]:
    """The top-level mapping of the YAML file at ``path``.

    :param what: the kind of file, for messages ("topology", "drill").
    :raises error: one line naming ``path`` and the fix, for every way the file can be unusable.
    """
    text = read_text(path, what, error)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({_first_line(exc)}); fix the syntax") from None
    except RecursionError:  # PyYAML composes recursively: thousands of nested [ or { exhaust the stack
        raise error(f"{path}: nested too deeply to be a {what} file; fix the brackets") from None
    if data is None:
        raise error(f"{path}: the {what} file is empty; write its fields in it (see README.md)")
    if not isinstance(data, dict):
        got = _TYPE_NAMES.get(type(data), type(data).__name__)
        raise error(f"{path}: expected a mapping at the top level, got {got}; write the {what}'s fields as "
                    "'field: value' lines")
    return data


def read_text(path: Path, what: str, error: type[InvalidInput]) -> str:
    """The text of a regular, bounded file in UTF-8 (or UTF-16 with a byte order mark).

    :raises error: missing, unreadable, not a regular file, too large, binary or not UTF-8.
    """
    try:
        # O_NONBLOCK: opening a FIFO with no writer must not hang; it is refused below anyway.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise error(f"{path}: cannot read {what} file (no such file); check the path") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not a {what} file; give the path of a YAML file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what} file ({exc.strerror}); check the path and its "
                    "permissions") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise error(f"{path}: is a directory, not a {what} file; give the path of a YAML file")
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{path}: not a regular file (a device, FIFO or socket); give the path of a {what} "
                        "YAML file")
        if info.st_size > MAX_BYTES:
            raise error(f"{path}: {info.st_size:,} bytes is too large for a {what} file (at most "
                        f"{MAX_BYTES:,}); check the path")
        with os.fdopen(fd, "rb", closefd=False) as file:
            raw = file.read(MAX_BYTES + 1)
    except OSError as exc:
        raise error(f"{path}: cannot read {what} file ({exc.strerror}); check the path") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_BYTES:  # grew while we looked
        raise error(f"{path}: too large for a {what} file (over {MAX_BYTES:,} bytes); check the path")
    # YAML allows UTF-8 and, marked by a byte order mark, UTF-16 (what some Windows editors save).
    utf16 = raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    try:
        text = raw.decode("utf-16") if utf16 else raw.removeprefix(codecs.BOM_UTF8).decode("utf-8")
    except UnicodeDecodeError as exc:
        nul = raw.find(b"\0")
        if nul >= 0:
            raise error(f"{path}: a binary file (NUL byte at offset {nul}), not a YAML {what} file; "
                        "check the path") from None
        offset = exc.start + (0 if utf16 or not raw.startswith(codecs.BOM_UTF8) else len(codecs.BOM_UTF8))
        raise error(f"{path}: not UTF-8 text (byte 0x{raw[offset]:02x} at offset {offset}), so not a YAML "
                    f"{what} file; check the path or save it as UTF-8") from None
    nul = text.find("\0")
    if nul >= 0:
        raise error(f"{path}: a binary file (NUL at character {nul}), not a YAML {what} file; check the path")
    return text


def _first_line(exc: yaml.YAMLError) -> str:
    """PyYAML's own problem and where it is, on one line ("line 3, column 7: found ...")."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = " ".join(exc.problem.split())
        if exc.context and problem.startswith("but "):  # "expected a single document ..., but found another"
            problem = f"{exc.context}, {problem}"
        return where + problem
    lines = str(exc).splitlines()
    return lines[0] if lines else type(exc).__name__
