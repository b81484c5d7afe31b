"""``/etc/ld.so.conf`` as ldconfig reads it: directories, ``include`` globs, comments; and the
preload lists ld.so reads itself (``LD_PRELOAD``, ``/etc/ld.so.preload``). Pure.

Note that ld.so itself never reads ld.so.conf: its directories matter only through the cache
ldconfig builds from them (see :mod:`auditor.linkage.ldcache`)."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable

MAX_INCLUDE_DEPTH = 16
MAX_FILES = 1024
MAX_DIRS = 4096
MAX_PRELOADS = 256
PRELOAD_NAME_MAX = 4096  # SECURE_PATH_LIMIT (PATH_MAX): longer LD_PRELOAD elements are dropped


def parse_ld_preload(value: str | None, *, musl: bool = False) -> list[str]:
    """The objects ``LD_PRELOAD`` names, in order. glibc (``rtld.c`` handle_preload_list)
    splits at spaces and colons only (a tab or newline is part of a name) and drops empty and
    over-long elements; musl (``load_preload``) splits at any white space and colons."""
    if not value:
        return []
    if musl:
        names = re.split(r"[\s:]+", value)
    else:
        names = [n for n in re.split(r"[ :]", value) if len(n) < PRELOAD_NAME_MAX]
    return [n for n in names if n][:MAX_PRELOADS]


def parse_ld_so_preload(text: str | None) -> list[str]:
    """The objects ``/etc/ld.so.preload`` names (glibc only; musl has no such file): ``#``
    starts a comment to the end of the line; names are separated by white space or ``:``."""
    if not text:
        return []
    names: list[str] = []
    for line in text.split("\n"):
        names += [n for n in re.split(r"[ \t:]+", line.split("#", 1)[0]) if n]
    return names[:MAX_PRELOADS]


def parse_ld_conf(path: str, read: Callable[[str], str | None],
                  glob: Callable[[str], list[str]]) -> tuple[list[str], list[str]]:
    """(directories in order without duplicates, problems) of the conf file at absolute ``path``.

    ``read(abs_path)`` gives a file's text or None; ``glob(abs_pattern)`` the absolute paths that
    match, in any order (they are sorted here, as glob(3) does)."""
    dirs: list[str] = []
    problems: list[str] = []
    seen_files: set[str] = set()
    _parse(path, read, glob, 0, dirs, problems, seen_files)
    return list(dict.fromkeys(dirs)), problems


def _parse(path: str, read: Callable[[str], str | None], glob: Callable[[str], list[str]],
           depth: int, dirs: list[str], problems: list[str], seen: set[str]) -> None:
    if depth > MAX_INCLUDE_DEPTH:
        problems.append(f"{path}: includes nested deeper than {MAX_INCLUDE_DEPTH}; not read")
        return
    if path in seen:
        problems.append(f"{path}: included again (a cycle); not read twice")
        return
    if len(seen) >= MAX_FILES:
        problems.append(f"{path}: more than {MAX_FILES} conf files; not read")
        return
    seen.add(path)
    text = read(path)
    if text is None:
        return  # no ld.so.conf is common (distroless, musl) and not a problem
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if words[0] == "include" and len(words) > 1:
            for pattern in words[1:]:
                if not pattern.startswith("/"):
                    pattern = posixpath.join(posixpath.dirname(path), pattern)
                for match in sorted(glob(pattern)):
                    _parse(match, read, glob, depth + 1, dirs, problems, seen)
        elif words[0] == "hwcap":
            continue  # obsolete; ignored by current ldconfig
        else:
            for word in line.replace(",", " ").replace(":", " ").split():
                # "dir=TYPE" (libc5 times) names the directory before "="
                directory = word.split("=", 1)[0].rstrip("/") or "/"
                if len(dirs) >= MAX_DIRS:
                    problems.append(f"{path}: more than {MAX_DIRS} directories; rest ignored")
                    return
                dirs.append(directory)
