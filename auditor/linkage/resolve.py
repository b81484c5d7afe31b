"""``resolve_linkage``: the files glibc's ld.so would load for a consumer, from facts alone.

As ``elf/dl-load.c`` and ``elf/dl-deps.c`` do: dependencies breadth first in load order; a name
already loaded (by the name it was asked as, by SONAME, or the same file) is not searched again;
otherwise, for an object without DT_RUNPATH, the DT_RPATH of that object and of each object up
its loading chain (an object with DT_RUNPATH has its DT_RPATH ignored), then ``LD_LIBRARY_PATH``,
then the object's own DT_RUNPATH, then ``/etc/ld.so.cache``, then the default directories. A
candidate of another ELF class or machine is skipped, as ld.so skips it. ``$ORIGIN``, ``$LIB``
and ``$PLATFORM`` are expanded. Paths resolve inside the image root only (``..`` stops there).

Pure: everything comes from the arguments; nothing is read from disk.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from auditor.linkage.ldcache import CacheEntry, cache_lookup
from auditor.linkage.model import ConsumerLinkage, How, Kind, Resolution
from auditor.rootfs.index import RootfsIndex

PATH_MAX = 4096
MAX_OBJECTS = 2048
MAX_DIRS = 256  # per search list
MAX_PROBES = 100_000  # candidate files tried, per consumer
MAX_SEARCHED = 64  # listed per resolution
MAX_PROBLEMS = 200

DEFAULT_DIRS: dict[str, tuple[str, ...]] = {
    "x86_64": ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
               "/lib", "/usr/lib"),
    "aarch64": ("/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/lib64", "/usr/lib64",
                "/lib", "/usr/lib"),
}
FALLBACK_DIRS = ("/lib64", "/usr/lib64", "/lib", "/usr/lib")
INTERPRETERS = {"x86_64": "/lib64/ld-linux-x86-64.so.2", "aarch64": "/lib/ld-linux-aarch64.so.1"}
DST_LIB = {"x86_64": "lib/x86_64-linux-gnu", "aarch64": "lib/aarch64-linux-gnu"}
# glibc-hwcaps subdirectories ld.so 2.33+ may search in every directory, best first; which ones
# it does depends on the CPU (``ld.so --help`` lists them), so they are searched only when given
HWCAPS = {"x86_64": ("glibc-hwcaps/x86-64-v4", "glibc-hwcaps/x86-64-v3", "glibc-hwcaps/x86-64-v2"),
          "ppc64le": ("glibc-hwcaps/power10", "glibc-hwcaps/power9"),
          "s390x": ("glibc-hwcaps/z16", "glibc-hwcaps/z15", "glibc-hwcaps/z14", "glibc-hwcaps/z13")}
DST = re.compile(r"\$(?:\{(ORIGIN|LIB|PLATFORM)\}|(ORIGIN|LIB|PLATFORM)(?![A-Za-z0-9_]))")

ElfOf = Callable[[str], "dict[str, Any] | None"]


@dataclass(eq=False)
class _Object:
    path: str  # absolute, as opened
    file: str  # root-relative, symlinks followed
    facts: dict[str, Any]
    loader: _Object | None
    names: set[str] = field(default_factory=set)

    @property
    def origin(self) -> str:
        return posixpath.dirname(self.path) or "/"

    @property
    def rpath(self) -> list[str] | None:
        # get-dynamic-info.h: an object with DT_RUNPATH has its DT_RPATH ignored
        return None if self.facts.get("runpath") is not None else self.facts.get("rpath")


@dataclass
class _Run:
    index: RootfsIndex
    elf_of: ElfOf
    machine: str
    elfclass: int
    cwd: str
    platform: str
    lib: str
    hwcaps: tuple[str, ...] | None
    problems: list[str] = field(default_factory=list)
    probes: int = 0
    fatal: str | None = None

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS and text not in self.problems:
            self.problems.append(text)

    def expand(self, item: str, origin: str, what: str) -> str | None:
        """One search-list element with its dynamic string tokens replaced; None to drop it."""
        if item == "":
            return self.cwd  # an empty element is the current directory
        expanded = DST.sub(lambda m: {"ORIGIN": origin, "LIB": self.lib,
                                      "PLATFORM": self.platform}[m.group(1) or m.group(2)], item)
        if not expanded.startswith("/"):
            expanded = posixpath.join(self.cwd, expanded)
        if len(expanded) >= PATH_MAX:
            self.problem(f"{what}: element of {len(expanded)} characters, over PATH_MAX; skipped")
            return None
        if _climbs_out(expanded):
            self.problem(f"{what}: {item!r} climbs above the image root; '..' stops at the root")
        return expanded

    def candidates(self, directory: str, needed: str) -> list[str]:
        """The paths tried in one search directory: its glibc-hwcaps subdirectories first."""
        return [*(posixpath.join(directory, sub, needed) for sub in self.hwcaps or ()),
                posixpath.join(directory, needed)]

    def note_hwcaps(self, path: str) -> None:
        """Without the CPU's hwcaps list, say when a variant ld.so may prefer exists."""
        if self.hwcaps is not None:
            return
        directory, name = posixpath.split(path)
        for sub in HWCAPS.get(self.machine, ()):
            variant = posixpath.join(directory, sub, name)
            if self.index.lookup(variant) is not None:
                self.problem(f"{path}: {variant} is loaded instead on CPUs with "
                             f"{sub.rpartition('/')[2]} (glibc-hwcaps)")

    def dirs(self, items: Iterable[str], origin: str, what: str) -> list[str]:
        out: list[str] = []
        for count, item in enumerate(items):
            if count >= MAX_DIRS:
                self.problem(f"{what}: more than {MAX_DIRS} directories; rest ignored")
                break
            expanded = self.expand(item, origin, what)
            if expanded is not None:
                out.append(expanded)
        return out

    def probe(self, path: str, searched: list[str]) -> tuple[str, dict[str, Any]] | None:
        """(file, facts) when ld.so would load ``path``; None (noting why) when it goes on or,
        with ``fatal`` set, stops."""
        self.probes += 1
        if self.probes > MAX_PROBES or self.fatal:
            return None
        hit = self._open(path)
        if hit is None and len(searched) < MAX_SEARCHED:
            searched.append(path)
        return hit

    def _open(self, path: str) -> tuple[str, dict[str, Any]] | None:
        if len(path) >= PATH_MAX:
            self.problem(f"{path[:80]}...: over PATH_MAX; not opened")
            return None
        canonical = self.index.resolve(path)
        if canonical is None:
            if _is_symlink(self.index, path):
                self.problem(f"{path}: a symlink that dangles or loops; skipped")
            return None
        entry = self.index.entries.get(canonical)
        # resolve() gives a path without an entry only for a directory the tar did not list
        if entry is None or entry.type == "dir":  # open() succeeds, read() fails: EISDIR, and ld.so gives up
            self.fatal = f"{path}: cannot read file data (a directory)"
            return None
        if entry.type not in ("file", "hardlink"):
            return None
        facts = self.elf_of(canonical)
        if not facts:
            self.problem(f"{path}: not analyzed; taken as not there (ld.so stops at a file "
                         "that is not ELF)")
            return None
        if "class" not in facts:  # "invalid ELF header", "file too short": ld.so gives up
            self.fatal = f"{path}: not an ELF file ({facts.get('error', 'unreadable')})"
            return None
        if facts.get("class") != self.elfclass or facts.get("machine") != self.machine:
            self.problem(f"{path}: ELF{facts.get('class')} {facts.get('machine')}, not the "
                         f"consumer's ELF{self.elfclass} {self.machine}; skipped as ld.so does")
            return None
        return canonical, facts


def _is_symlink(index: RootfsIndex, path: str) -> bool:
    parent, _, name = path.strip("/").rpartition("/")
    resolved = index.resolve(parent) if parent else ""
    if resolved is None:
        return False
    entry = index.entries.get(f"{resolved}/{name}" if resolved else name)
    return entry is not None and entry.type == "symlink"


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


def resolve_linkage(consumer_path: str, elf_of: ElfOf, index: RootfsIndex,
                    env_ld_library_path: str | None, ld_cache: list[CacheEntry] | None,
                    ld_conf_dirs: list[str], *, default_dirs: Iterable[str] | None = None,
                    interpreter: str | None = None, cwd: str = "/",
                    dst_lib: str | None = None, platform: str | None = None,
                    hwcaps: Iterable[str] | None = None,
                    dlopen: Iterable[str] | Callable[[str], Sequence[str]] = (),
                    ) -> ConsumerLinkage:
    """Every DT_NEEDED in ``consumer_path``'s dependency tree and the file that satisfies it.

    ``elf_of(root_relative_file)`` gives a file's ``elf_facts`` (or None); ``ld_cache`` is the
    parsed ``/etc/ld.so.cache`` (None when the image has none); ``ld_conf_dirs`` the directories
    of ``/etc/ld.so.conf`` -- ld.so never reads them itself, so they only serve to note a
    library that a missing or stale cache leaves unfound. ``hwcaps``: the subdirectories (as
    ``glibc-hwcaps/x86-64-v3``) the CPU lets ld.so search in each directory, best first; None
    when unknown (a variant there is then only noted). ``dlopen``: names the consumer opens
    with ``dlopen`` once its dependencies are loaded, or a function giving the names any loaded
    object (by root-relative file) opens; each is searched as ld.so searches for the caller's
    own needs (its RPATH chain, ``LD_LIBRARY_PATH``, its RUNPATH, cache, defaults) and loaded
    with its own dependencies, objects in load order, until nothing new is opened."""
    consumer = "/" + consumer_path.strip("/")
    canonical = index.resolve(consumer)
    facts = elf_of(canonical) if canonical is not None else None
    if canonical is None or not facts or "class" not in facts:
        return ConsumerLinkage(consumer, (), (f"{consumer}: not an ELF file in the image",))
    machine, elfclass = str(facts.get("machine")), int(facts["class"])
    run = _Run(index, elf_of, machine, elfclass, cwd, platform or machine,
               dst_lib or DST_LIB.get(machine, "lib"),
               tuple(hwcaps) if hwcaps is not None else None)
    main = _Object("/" + canonical, canonical, facts, None, {consumer})
    loaded: list[_Object] = [main]
    _load_interpreter(run, loaded, interpreter or INTERPRETERS.get(machine))
    llp = run.dirs(re.split(r"[:;]", env_ld_library_path), main.origin, "LD_LIBRARY_PATH") \
        if env_ld_library_path else []
    defaults = list(default_dirs) if default_dirs is not None else \
        _default_dirs(loaded[-1].file if len(loaded) > 1 else None, machine)
    resolutions: list[Resolution] = []
    tree = _Tree(run, loaded, llp, ld_cache, defaults, resolutions)
    tree.load([(main, [str(n) for n in main.facts.get("needed") or []], "needed")])
    if callable(dlopen):
        opens = dlopen
    else:
        names = list(dlopen)
        opens = lambda file: names if file == main.file else ()  # noqa: E731
    done = 0
    while done < len(loaded) and not run.fatal:  # objects loaded by a dlopen may dlopen too
        caller = loaded[done]
        done += 1
        for name in opens(caller.file) if caller is main or caller.loader is not None else ():
            if run.fatal:
                break
            tree.load([(caller, [str(name)], "dlopen")])  # one object and its dependencies
    if run.probes > MAX_PROBES:
        run.problem(f"more than {MAX_PROBES} candidate files tried; search stopped")
    _note_conf_dirs(run, resolutions, ld_conf_dirs, ld_cache)
    return ConsumerLinkage(consumer, tuple(resolutions), tuple(run.problems), run.fatal)


@dataclass
class _Tree:
    """Loads objects breadth first, as ``_dl_map_object_deps`` does for one ``dlopen`` call."""

    run: _Run
    loaded: list[_Object]
    llp: list[str]
    ld_cache: list[CacheEntry] | None
    defaults: list[str]
    resolutions: list[Resolution]

    def load(self, first: list[tuple[_Object, list[str], Kind]]) -> None:
        pending = list(first)
        position = 0
        while position < len(pending) and not self.run.fatal:
            requester, names, kind = pending[position]
            position += 1
            for needed in names:
                resolution, new = _resolve_one(self.run, requester, needed, self.loaded,
                                               self.llp, self.ld_cache, self.defaults)
                if kind != "needed":
                    resolution = replace(resolution, kind=kind)
                self.resolutions.append(resolution)
                if self.run.fatal:
                    return
                if new is not None:
                    if len(self.loaded) >= MAX_OBJECTS:
                        self.run.problem(f"more than {MAX_OBJECTS} objects loaded; the rest "
                                         "not followed")
                        return
                    self.loaded.append(new)
                    pending.append((new, [str(n) for n in new.facts.get("needed") or []],
                                    "needed"))


def _default_dirs(interpreter_file: str | None, machine: str) -> list[str]:
    """The loader's built-in directories, which depend on how its glibc was built: Debian and
    Ubuntu (ld.so under /usr/lib/<triplet>) search the multiarch ones and /lib, /usr/lib;
    Fedora, RHEL, SUSE (ld.so under /usr/lib64 or /lib64) /lib64 and /usr/lib64. Unknown: all."""
    home = posixpath.dirname(interpreter_file or "")
    multiarch = DEFAULT_DIRS.get(machine, ())[:2]
    if multiarch and home in (d.lstrip("/") for d in multiarch):
        return [*multiarch, "/lib", "/usr/lib"]
    if home in ("lib64", "usr/lib64"):
        return ["/lib64", "/usr/lib64"]
    return list(DEFAULT_DIRS.get(machine, FALLBACK_DIRS))


def _load_interpreter(run: _Run, loaded: list[_Object], path: str | None) -> None:
    """ld.so is loaded before any dependency: its SONAME satisfies libc's need of it."""
    if not path:
        return
    canonical = run.index.resolve(path)
    facts = run.elf_of(canonical) if canonical is not None else None
    if canonical is None or not facts:
        return
    names = {path, *([facts["soname"]] if facts.get("soname") else [])}
    loaded.append(_Object(path, canonical, facts, None, names))


def _already(loaded: list[_Object], needed: str) -> _Object | None:
    for obj in loaded:
        if needed in obj.names or needed == obj.facts.get("soname"):
            return obj
    return None


def _search_lists(run: _Run, requester: _Object, llp: list[str]) -> list[tuple[How, list[str]]]:
    lists: list[tuple[How, list[str]]] = []
    if requester.facts.get("runpath") is None:
        chain: _Object | None = requester
        while chain is not None:
            if chain.rpath:
                lists.append(("rpath", run.dirs(chain.rpath, chain.origin,
                                                f"DT_RPATH of {chain.path}")))
            chain = chain.loader
    lists.append(("ld_library_path", llp))
    runpath = requester.facts.get("runpath")
    if runpath:
        lists.append(("runpath", run.dirs(runpath, requester.origin,
                                          f"DT_RUNPATH of {requester.path}")))
    return lists


def _resolve_one(run: _Run, requester: _Object, needed: str, loaded: list[_Object],
                 llp: list[str], ld_cache: list[CacheEntry] | None,
                 defaults: list[str]) -> tuple[Resolution, _Object | None]:
    req = requester.file
    known = _already(loaded, needed)
    if known is not None:
        return Resolution(needed, known.path, "already-loaded", (), req, known.file), None
    searched: list[str] = []
    attempts: list[tuple[How, str]] = []
    if "/" in needed:
        path = run.expand(needed, requester.origin, f"DT_NEEDED of {requester.path}")
        attempts = [("direct", path)] if path else []
    else:
        for how, dirs in _search_lists(run, requester, llp):
            attempts.extend((how, c) for d in dirs for c in run.candidates(d, needed))
    found = _first(run, attempts, searched)
    if found is None and "/" not in needed and not run.fatal:
        if ld_cache is not None:
            hits = cache_lookup(ld_cache, needed, run.machine, run.elfclass)
            found = _first(run, [("ld.so.cache", hits[0].path)] if hits else [], searched)
        if found is None and not run.fatal:
            found = _first(run, [("default", c) for d in defaults
                                 for c in run.candidates(d, needed)], searched)
    if found is None:
        return Resolution(needed, None, "not-found", tuple(searched), req), None
    how, path, file, facts = found
    if how != "direct":
        run.note_hwcaps(path)
    resolution = Resolution(needed, path, how, tuple(searched), req, file)
    for obj in loaded:  # the same file under another name is the same object (dev/inode)
        if obj.file == file:
            obj.names.add(needed)
            return resolution, None
    return resolution, _Object(path, file, facts, requester, {needed})


def _first(run: _Run, attempts: list[tuple[How, str]],
           searched: list[str]) -> tuple[How, str, str, dict[str, Any]] | None:
    for how, path in attempts:
        if run.probes > MAX_PROBES or run.fatal:
            return None
        hit = run.probe(path, searched)
        if hit is not None:
            return how, path, hit[0], hit[1]
    return None


def _note_conf_dirs(run: _Run, resolutions: list[Resolution], conf_dirs: list[str],
                    ld_cache: list[CacheEntry] | None) -> None:
    """A library left unfound that sits in an ld.so.conf directory: the cache is missing or
    stale (ldconfig was not run after it was added), which ld.so does not make up for."""
    for resolution in resolutions:
        if resolution.how != "not-found" or "/" in resolution.needed:
            continue
        for directory in conf_dirs[:MAX_DIRS]:
            path = posixpath.join(directory, resolution.needed)
            if run.index.lookup(path) is not None:
                state = "has no ld.so.cache" if ld_cache is None else "ld.so.cache lacks it"
                run.problem(f"{resolution.needed}: in {directory} (ld.so.conf) but the image "
                            f"{state}; run ldconfig in the image")
                break
