"""What musl's dynamic loader loads for a consumer (``ldso/dynlink.c``, musl 1.2.x).

musl's rules differ from glibc's in almost every step (``load_library``, ``path_open``,
``fixup_rpath``):

- a name ``lib`` + ``c``/``pthread``/``rt``/``m``/``dl``/``util``/``xnet`` + ``.`` (``libc.so``,
  ``libm.so.6``...) or the loader's own path is the loader itself: musl's libc is its loader;
- a name with ``/`` is opened as it stands (no ``$ORIGIN`` in it), relative to the working dir;
- a name already loaded as that short name (the name a search found it under) is not searched
  again; SONAMEs play no part (a file found again under another name is the same object, as
  the same device and inode);
- otherwise, in order: ``LD_LIBRARY_PATH``; the DT_RUNPATH (or, without one, the DT_RPATH) of
  the requesting object and of every object up its "needed by" chain -- both kinds inherited,
  ``$ORIGIN`` expanded, a list with any other ``$`` token ignored whole; then the loader's path
  file, ``<prefix>/etc/ld-musl-<arch>.path`` (``<prefix>``: the parent of the loader's
  directory), or without it ``/lib:/usr/local/lib:/usr/lib``. Elements are separated by ``:`` or
  newlines, empty ones skipped; an empty path file searches nothing;
- no ld.so.cache, no hwcaps subdirectories, no ELF class or machine check: the first file that
  opens is taken, and a directory, a file that is not ELF or a symlink loop there ends the
  search for that name with an error while the other names still load;
- a candidate path of 512 characters or more is skipped (musl's buffer), a name over 255 is
  not searched;
- ``LD_PRELOAD`` objects (white space or ``:`` separated) load first, with no requester (so no
  RPATH), and one that is not found is silently ignored.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from auditor.linkage.model import ConsumerLinkage, How, Kind, Resolution
from auditor.linkage.search import MAX_DIRS, MAX_OBJECTS, MAX_PROBES, MAX_SEARCHED, Search

DEFAULT_PATH = "/lib:/usr/local/lib:/usr/lib"
RESERVED = ("c.", "pthread.", "rt.", "m.", "dl.", "util.", "xnet.")
PATH_BUFFER = 2 * 255 + 2  # char buf[2*NAME_MAX+2]
NAME_MAX = 255
ARCHES = {"x86_64": "x86_64", "aarch64": "aarch64", "i386": "i386", "arm": "armhf",
          "riscv": "riscv64", "s390x": "s390x", "ppc64": "powerpc64le"}
LOADER = re.compile(r"(?:^|/)ld-musl-([A-Za-z0-9_]+)\.so\.1$")


def is_musl_loader(path: str) -> bool:
    return LOADER.search(path) is not None


def loader_paths(machine: str) -> list[str]:
    """Where musl's loader lives in an image of ``machine`` (Alpine, Debian's musl package)."""
    arch = ARCHES.get(machine)
    return [f"/lib/ld-musl-{arch}.so.1"] if arch else []


def path_file(interpreter: str) -> str:
    """The path file the loader at ``interpreter`` reads: ``/etc/ld-musl-x86_64.path`` for
    ``/lib/ld-musl-x86_64.so.1``, ``/opt/m/etc/...`` for ``/opt/m/lib/ld-musl-...``."""
    match = LOADER.search(interpreter)
    arch = match.group(1) if match else "unknown"
    prefix = posixpath.dirname(posixpath.dirname(interpreter)) if interpreter.startswith("/") \
        else ""
    return f"{prefix.rstrip('/')}/etc/ld-musl-{arch}.path"


def split_path(text: str) -> list[str]:
    """Path file or ``LD_LIBRARY_PATH`` elements, as ``path_open`` walks them."""
    return [d for d in re.split(r"[:\n]", text) if d]


@dataclass(eq=False)
class _Dso:
    path: str  # as opened (musl's p->name)
    file: str
    facts: dict[str, Any]
    needed_by: _Dso | None
    shortname: str | None = None


@dataclass
class _Loader:
    run: Search
    interp: str
    env: list[str]
    system: list[str]
    loaded: list[_Dso]
    resolutions: list[Resolution] = field(default_factory=list)
    ldso: _Dso | None = None
    ldso_in: bool = False

    @property
    def main(self) -> _Dso:
        return self.loaded[0]

    def is_self(self, name: str) -> bool:
        return (name.startswith("lib") and name[3:].startswith(RESERVED)) or name == self.interp

    def record(self, name: str, path: str | None, how: How, searched: list[str],
               requester: _Dso, kind: Kind, file: str | None = None) -> None:
        self.resolutions.append(Resolution(name, path, how, tuple(searched[:MAX_SEARCHED]),
                                           requester.file, file, kind))

    def load(self, name: str, needed_by: _Dso | None, kind: Kind,
             caller: _Dso | None = None) -> _Dso | None:
        """``load_library(name, needed_by)``: the new object, if one was mapped (``caller``:
        the object that asked, when not ``needed_by``)."""
        requester = caller or needed_by or self.main
        if not name:
            self.run.problem(f"{requester.path}: an empty library name; musl fails it (EINVAL)")
            self.record(name, None, "not-found", [], requester, kind)
            return None
        if self.is_self(name):
            if self.ldso is not None and not self.ldso_in:
                self.ldso_in = True
                self.loaded.append(self.ldso)
            self.record(name, self.interp, "already-loaded", [], requester, kind,
                        self.ldso.file if self.ldso else None)
            return None
        searched: list[str] = []
        if "/" in name:
            path = self.run.absolute(name, name, f"library name {name[:80]}", 1 << 20)
            attempts: list[tuple[How, str]] = [("direct", path)] if path else []
        else:
            for dso in self.loaded[1:]:
                if dso.shortname == name:
                    self.record(name, dso.path, "already-loaded", [], requester, kind, dso.file)
                    return None
            if len(name) > NAME_MAX:
                self.run.problem(f"{name[:80]}...: a name over {NAME_MAX} characters; musl "
                                 "does not search it")
                self.record(name, None, "not-found", [], requester, kind)
                return None
            attempts = self.attempts(name, needed_by)
        found = self.first(name, attempts, searched, requester)
        if found is None:
            self.record(name, None, "not-found", searched, requester, kind)
            return None
        how, path, file, facts = found
        for dso in [*self.loaded[1:], *([self.ldso] if self.ldso else [])]:
            if dso.file == file:  # the same dev/inode
                if dso.shortname is None and "/" not in name:
                    dso.shortname = posixpath.basename(dso.path)
                self.record(name, path, how, searched, requester, kind, file)
                return None
        self.record(name, path, how, searched, requester, kind, file)
        if len(self.loaded) >= MAX_OBJECTS:
            self.run.problem(f"more than {MAX_OBJECTS} objects loaded; the rest not followed")
            return None
        new = _Dso(path, file, facts, needed_by,
                   posixpath.basename(path) if "/" not in name else None)
        self.loaded.append(new)
        self.run.note_facts(path, facts)
        return new

    def attempts(self, name: str, needed_by: _Dso | None) -> list[tuple[How, str]]:
        lists: list[tuple[How, list[str]]] = [("ld_library_path", self.env)]
        chain = needed_by
        while chain is not None:
            found = self.rpath(chain)
            if found is not None:
                lists.append(found)
            chain = chain.needed_by
        lists.append(("default", self.system))
        out: list[tuple[How, str]] = []
        for how, dirs in lists:
            for directory in dirs[:MAX_DIRS]:
                if not directory.startswith("/"):
                    directory = posixpath.join(self.run.cwd, directory)
                candidate = f"{directory}/{name}"
                if len(candidate) >= PATH_BUFFER:
                    self.run.problem(f"{candidate[:80]}...: {len(candidate)} characters, over "
                                     f"musl's {PATH_BUFFER - 1}; skipped")
                    continue
                out.append((how, candidate))
        return out

    def rpath(self, dso: _Dso) -> tuple[How, list[str]] | None:
        """``fixup_rpath``: DT_RUNPATH, else DT_RPATH, with ``$ORIGIN`` expanded; None when it
        has neither or names another ``$`` token (musl then ignores it whole)."""
        how: How = "runpath" if dso.facts.get("runpath") is not None else "rpath"
        items = dso.facts.get("runpath") if how == "runpath" else dso.facts.get("rpath")
        if items is None:
            return None
        text = ":".join(str(i) for i in items)
        if re.search(r"\$(?!ORIGIN|\{ORIGIN\})", text):
            self.run.problem(f"DT_{how.upper()} of {dso.path}: a '$' token other than $ORIGIN; "
                             "musl ignores the whole list")
            return None
        origin = posixpath.dirname(dso.path) if "/" in dso.path else "."
        return how, split_path(re.sub(r"\$\{ORIGIN\}|\$ORIGIN", lambda _m: origin, text))

    def first(self, name: str, attempts: list[tuple[How, str]], searched: list[str],
              requester: _Dso) -> tuple[How, str, str, dict[str, Any]] | None:
        for how, path in attempts:
            self.run.probes += 1
            if self.run.probes > MAX_PROBES:
                return None
            state, file, facts = self.run.examine(path)
            if state == "elf" and facts is not None:
                if facts.get("class") != self.run.elfclass:
                    self.run.problem(f"{path}: ELF{facts.get('class')}, not the consumer's "
                                     f"ELF{self.run.elfclass}; musl fails to map it ({name} "
                                     f"needed by {requester.path})")
                    return None
                if facts.get("machine") != self.run.machine:
                    self.run.problem(f"{path}: {facts.get('machine')}, not "
                                     f"{self.run.machine}: musl maps it all the same (no "
                                     "machine check), and relocating it fails")
                return how, path, file, facts
            searched.append(path)
            if state in ("absent", "dangling", "other", "unanalyzed"):
                if state == "unanalyzed":
                    self.run.problem(f"{path}: not analyzed; taken as not there")
                continue
            reason = {"loop": "a symlink loop", "dir": "a directory",
                      "not-elf": "not an ELF file"}[state]
            self.run.problem(f"{path}: {reason}; musl stops searching for {name} (needed by "
                             f"{requester.path}) and fails it")
            return None
        return None

    def load_deps(self, start: int) -> None:
        """``load_deps``: every object from ``start`` on, breadth first, its DT_NEEDED."""
        position = start
        while position < len(self.loaded):
            dso = self.loaded[position]
            position += 1
            if dso is self.ldso:
                continue
            for needed in dso.facts.get("needed") or []:
                if self.run.probes > MAX_PROBES or len(self.loaded) >= MAX_OBJECTS:
                    return
                self.load(str(needed), dso, "needed")


def resolve(run: Search, name: str, consumer: str, facts: dict[str, Any], interp: str,
            env_ld_library_path: str | None, path_text: str | None, preload: list[str],
            opens: Callable[[str], Sequence[str]]) -> ConsumerLinkage:
    """The consumer ``name`` (at ``consumer``, absolute, symlinks followed) as musl's loader at
    ``interp`` loads it; ``path_text``: the text of :func:`path_file` (None: there is none)."""
    run.note_facts(consumer, facts)
    loader = _Loader(run, interp, split_path(env_ld_library_path or ""),
                     _system_dirs(run, interp, path_text),
                     [_Dso(consumer, consumer.lstrip("/"), facts, None)])
    ldso_file = run.index.resolve(interp)
    ldso_facts = run.elf_of(ldso_file) if ldso_file is not None else None
    if ldso_file is None:
        run.problem(f"{interp}: musl's loader is not in the image")
    else:
        loader.ldso = _Dso(interp, ldso_file, ldso_facts or {}, None, "libc.so")
    for name in preload:
        loader.load(name, None, "preload")
    loader.load_deps(0)
    done = 0
    while done < len(loader.loaded):  # objects loaded by a dlopen may dlopen too
        caller = loader.loaded[done]
        done += 1
        for name in opens(caller.file) if caller is not loader.ldso else ():
            # dlopen(name): load_library(name, head) -- the consumer's RPATH, not the caller's
            before = len(loader.loaded)
            loader.load(str(name), loader.main, "dlopen", caller)
            loader.load_deps(before)
    if run.probes > MAX_PROBES:
        run.problem(f"more than {MAX_PROBES} candidate files tried; search stopped")
    return ConsumerLinkage(name, tuple(loader.resolutions), tuple(run.problems))


def _system_dirs(run: Search, interp: str, path_text: str | None) -> list[str]:
    name = path_file(interp)
    resolved = run.index.resolve(name)
    entry = run.index.entries.get(resolved) if resolved is not None else None
    if path_text is not None:
        return split_path(path_text)
    if resolved is not None and (entry is None or entry.type == "dir"):
        run.problem(f"{name}: a directory; musl reads no path from it and searches no system "
                    "directory")
        return []
    if resolved is not None:
        run.problem(f"{name}: in the image but its text was not given; the default "
                    f"{DEFAULT_PATH} assumed")
    return split_path(DEFAULT_PATH)
