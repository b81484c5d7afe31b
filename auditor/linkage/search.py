"""The image as a dynamic loader sees it, for one consumer: what opening a path meets, the
limits every search keeps to, and what went wrong. Shared by glibc's and musl's rules
(:mod:`auditor.linkage.resolve`, :mod:`auditor.linkage.musl`). Pure."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from auditor.rootfs.index import MAX_SYMLINK_HOPS, RootfsIndex

PATH_MAX = 4096
MAX_OBJECTS = 2048
MAX_DIRS = 256  # per search list
MAX_PROBES = 100_000  # candidate files tried, per consumer
MAX_SEARCHED = 64  # listed per resolution
MAX_PROBLEMS = 200
# problems in an object's ELF facts that bear on what it loads, reported with the linkage
LINKAGE_PROBLEMS = ("DT_", "dynamic section", "program header", "PT_INTERP")

ElfOf = Callable[[str], "dict[str, Any] | None"]


@dataclass
class Search:
    """One consumer's resolution: the image, the consumer's ELF class and machine, the working
    directory, the candidates tried so far, and the problems met."""

    index: RootfsIndex
    elf_of: ElfOf
    machine: str
    elfclass: int
    cwd: str = "/"
    problems: list[str] = field(default_factory=list)
    probes: int = 0

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS and text not in self.problems:
            self.problems.append(text)

    def note_facts(self, path: str, facts: dict[str, Any]) -> None:
        for text in facts.get("problems") or ():
            if str(text).startswith(LINKAGE_PROBLEMS):
                self.problem(f"{path}: malformed ELF: {text}")

    def absolute(self, path: str, item: str, what: str, limit: int) -> str | None:
        """``path`` made absolute from the working directory; None (noted) when too long."""
        if not path.startswith("/"):
            path = posixpath.join(self.cwd, path)
        if len(path) >= limit:
            self.problem(f"{what}: element of {len(path)} characters, over {limit - 1}; skipped")
            return None
        if _climbs_out(path):
            self.problem(f"{what}: {item[:200]!r} climbs above the image root; '..' stops at "
                         "the root")
        return path

    def examine(self, path: str) -> tuple[str, str, dict[str, Any] | None]:
        """What opening ``path`` in the image meets: ``("elf", file, facts)``; ``("absent"|
        "dangling"|"loop"|"other", ...)``: nothing to read; ``("dir", file, None)``,
        ``("not-elf", file, facts)``: opened but unreadable as a library; ``("unanalyzed",
        file, None)``: a file without ELF facts."""
        canonical = self.index.resolve(path)
        if canonical is None:
            return (_broken_link(self.index, path) or "absent"), "", None
        entry = self.index.entries.get(canonical)
        # resolve() gives a path without an entry only for a directory the tar did not list
        if entry is None or entry.type == "dir":
            return "dir", canonical, None
        if entry.type not in ("file", "hardlink"):
            return "other", canonical, None
        facts = self.elf_of(canonical)
        if not facts:
            return "unanalyzed", canonical, None
        if "class" not in facts:
            return "not-elf", canonical, facts
        return "elf", canonical, facts


def _broken_link(index: RootfsIndex, path: str) -> str | None:
    """"loop" or "dangling" when ``path`` is a symlink that leads nowhere, else None."""
    current, hops = "/" + path.strip("/"), 0
    while True:
        located = index.resolve(current, follow_final=False)
        entry = index.entries.get(located) if located is not None else None
        if entry is None or entry.type != "symlink":
            return "dangling" if hops else None
        hops += 1
        if hops > MAX_SYMLINK_HOPS:
            return "loop"
        link = entry.link or ""
        current = link if link.startswith("/") else posixpath.join(
            "/" + posixpath.dirname(located or ""), link)


def _climbs_out(path: str) -> bool:
    depth = 0
    for part in path.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False
