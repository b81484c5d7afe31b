"""Writing a recipe's files into a directory all at once (never half-written), or printing them."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TextIO

from auditor.errors import InputError


def write_recipe(files: Mapping[str, Callable[[], Iterator[str]]], out_dir: Path, force: bool) -> None:
    """Render every file into a new directory beside ``out_dir``, then rename it into place
    (an existing ``out_dir`` is replaced only with ``force``, after the new one is complete)."""
    out_dir = out_dir.absolute()
    if out_dir.exists() and not force:
        raise InputError(f"{out_dir}: exists; give --force to replace it")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a directory")
    parent = out_dir.parent
    if not parent.is_dir():
        raise InputError(f"{parent}: no such directory")
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=parent))
    old: Path | None = None
    try:
        for name, lines in files.items():
            with open(work / name, "w", encoding="utf-8") as stream:
                for line in lines():
                    stream.write(line + "\n")
        work.chmod(0o755)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=parent))
            os.rename(out_dir, old / "previous")
        os.rename(work, out_dir)
    except BaseException:
        if old is not None and not out_dir.exists():
            os.rename(old / "previous", out_dir)  # put the previous recipe back
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if old is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(old)


def print_recipe(files: Mapping[str, Callable[[], Iterator[str]]], stream: TextIO) -> None:
    """``--dry-run``: each file under a ``==> NAME <==`` header, exactly as it would be written."""
    for i, (name, lines) in enumerate(files.items()):
        if i:
            stream.write("\n")
        stream.write(f"==> {name} <==\n")
        for line in lines():
            stream.write(line + "\n")
