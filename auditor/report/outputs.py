"""Where reports go: ``-o FILE`` (the ``--format``), ``-o FORMAT=FILE`` (repeatable), or the
terminal. Every report is rendered before anything is written, and each file is written to a
temp file beside it and renamed, so a failure leaves nothing half-written."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from auditor.errors import InputError


@dataclass(frozen=True)
class Output:
    format: str
    path: str | None  # None: stdout


def parse_outputs(fmt: str, values: Sequence[str], formats: Sequence[str]) -> list[Output]:
    """``--format`` and the ``-o`` values as outputs. A plain ``-o FILE`` takes ``--format`` and
    replaces stdout; with only ``FORMAT=FILE`` outputs, ``--format`` still goes to stdout."""
    outputs, plain = [], False
    for value in values:
        name, sep, path = value.partition("=")
        if sep and name in formats:
            if not path:
                raise InputError(f"-o {value}: no file after {name}=")
            outputs.append(Output(name, path))
        elif sep and name.isidentifier() and name.lower() == name and "/" not in name:
            raise InputError(f"-o {value}: unknown format {name!r} (known: {', '.join(formats)})")
        else:
            outputs.append(Output(fmt, value))
            plain = True
    if not plain:
        outputs.insert(0, Output(fmt, None))
    seen: dict[str, str] = {}
    for out in outputs:
        if out.path is None:
            continue
        key = os.path.realpath(out.path)
        if key in seen:
            raise InputError(f"two formats to the same file {out.path} ({seen[key]} and {out.format})")
        seen[key] = out.format
    return outputs


def check_writable(outputs: Sequence[Output]) -> None:
    """Fail before the work when a file could not be written (missing folder, no permission)."""
    for out in outputs:
        if out.path is None:
            continue
        parent = Path(out.path).parent
        if not parent.is_dir():
            raise InputError(f"cannot write {out.path}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise InputError(f"cannot write {out.path}: no permission to create files in {parent}")
        if Path(out.path).is_dir():
            raise InputError(f"cannot write {out.path}: it is a directory")


def write_text(path: str | None, text: str) -> None:
    with open_output(path) as out:
        out.write(text)


def created_file_mode() -> int:
    """The mode a file this process creates plainly gets: 0o666 less its umask. (mkstemp's 0600
    would hide a report from the group a CI job or a shared campaign folder shares it with.)"""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)  # no /proc: read it by setting it, and put it back at once
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def open_output(path: str | os.PathLike[str] | None) -> Iterator[TextIO]:
    """stdout, or a file written only when complete (a temp file beside it, then a rename),
    with the mode a plainly created file would get."""
    if path is None:
        yield sys.stdout
        return
    target = Path(path)
    if not target.parent.is_dir():
        raise InputError(f"cannot write {path}: directory {target.parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as err:
        raise InputError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), created_file_mode())
            yield f
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
