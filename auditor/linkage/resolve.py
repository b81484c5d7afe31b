"""``resolve_linkage``: the files the dynamic loader would load for a consumer, from facts alone.

glibc's ld.so, as ``elf/dl-load.c``, ``elf/dl-deps.c`` and ``elf/rtld.c`` do: preloaded objects
first (``LD_PRELOAD``, then ``/etc/ld.so.preload``), then dependencies breadth first in load order
(the consumer's, then each preload's, then theirs); a name already loaded (by the name it was
asked as, by SONAME, or the same file) is not searched again; otherwise, for an object without
DT_RUNPATH, the DT_RPATH of that object and of each object up its loading chain (an object with
DT_RUNPATH has its DT_RPATH ignored), then ``LD_LIBRARY_PATH``, then the object's own DT_RUNPATH,
then ``/etc/ld.so.cache``, then the default directories -- the last two skipped (cache entries
in a default directory rejected) for an object marked DF_1_NODEFLIB. In every directory, the
glibc-hwcaps subdirectories the CPU supports come first (glibc 2.33 on) and, before glibc 2.37,
the legacy ``tls``/AT_PLATFORM/hwcap subdirectories. A candidate of another ELF class or
machine is skipped, as ld.so skips it. ``$ORIGIN``, ``$LIB`` and ``$PLATFORM`` are expanded.
Paths resolve inside the image root only (``..`` stops there).

A consumer whose program interpreter is musl's ``ld-musl-<arch>.so.1`` is resolved by musl's
rules instead (:mod:`auditor.linkage.musl`).

Pure: everything comes from the arguments; nothing is read from disk.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from auditor.linkage import musl, search
from auditor.linkage.hwcaps import HWCAPS, glibc_version_tuple, hwcaps_plan, legacy_cache_filter
from auditor.linkage.ldcache import CacheEntry, cache_lookup
from auditor.linkage.ldconf import parse_ld_preload, parse_ld_so_preload
from auditor.linkage.model import ConsumerLinkage, How, Kind, Resolution
from auditor.linkage.search import PATH_MAX, ElfOf, Search
from auditor.rootfs.index import RootfsIndex

DF_1_NODEFLIB = 0x800

DEFAULT_DIRS: dict[str, tuple[str, ...]] = {
    "x86_64": ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
               "/lib", "/usr/lib"),
    "aarch64": ("/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/lib64", "/usr/lib64",
                "/lib", "/usr/lib"),
}
FALLBACK_DIRS = ("/lib64", "/usr/lib64", "/lib", "/usr/lib")
INTERPRETERS = {"x86_64": "/lib64/ld-linux-x86-64.so.2", "aarch64": "/lib/ld-linux-aarch64.so.1"}
DST_LIB = {"x86_64": "lib/x86_64-linux-gnu", "aarch64": "lib/aarch64-linux-gnu"}
DST = re.compile(r"\$(?:\{(ORIGIN|LIB|PLATFORM)\}|(ORIGIN|LIB|PLATFORM)(?![A-Za-z0-9_]))")

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

    @property
    def nodeflib(self) -> bool:
        return bool(int(self.facts.get("flags_1") or 0) & DF_1_NODEFLIB)


@dataclass
class _Glibc(Search):
    """A search by glibc's rules: dynamic string tokens, hwcaps subdirectories, and ld.so's
    reaction to what a candidate path holds (``fatal``: where it would stop)."""

    platform: str = ""
    lib: str = "lib"
    hwcaps: tuple[str, ...] | None = None
    legacy: tuple[str, ...] = ()  # legacy hwcaps subdirectories searched
    legacy_notes: tuple[tuple[str, str], ...] = ()  # (subdirectory, when it would be searched)
    legacy_cache: Callable[[int], bool] | None = None  # which legacy cache entries ld.so takes
    fatal: str | None = None

    def expand(self, item: str, origin: str, what: str) -> str | None:
        """One search-list element with its dynamic string tokens replaced; None to drop it."""
        if item == "":
            return self.cwd  # an empty element is the current directory
        expanded = DST.sub(lambda m: {"ORIGIN": origin, "LIB": self.lib,
                                      "PLATFORM": self.platform}[m.group(1) or m.group(2)], item)
        return self.absolute(expanded, item, what, PATH_MAX)

    def candidates(self, directory: str, needed: str) -> list[str]:
        """The paths tried in one search directory: its glibc-hwcaps subdirectories first, then
        the legacy ones, then the directory itself."""
        return [*(posixpath.join(directory, sub, needed)
                  for sub in (*(self.hwcaps or ()), *self.legacy)),
                posixpath.join(directory, needed)]

    def note_variants(self, path: str) -> None:
        """Say when a variant that ld.so may prefer exists next to ``path``: a glibc-hwcaps one
        when the CPU is unknown, a legacy one when the glibc version or the CPU is unknown."""
        directory, name = posixpath.split(path)
        subs = [(s, f"on CPUs with {s.rpartition('/')[2]} (glibc-hwcaps)")
                for s in (HWCAPS.get(self.machine, ()) if self.hwcaps is None else ())]
        if self.legacy_notes and any(self.index.resolve(posixpath.join(directory, head))
                                     for head in {s.split("/", 1)[0] for s, _ in
                                                  self.legacy_notes}):
            subs += [(s, why) for s, why in self.legacy_notes]
        for sub, why in subs:
            variant = posixpath.join(directory, sub, name)
            if self.index.lookup(variant) is not None:
                self.problem(f"{path}: {variant} is loaded instead {why}")

    def dirs(self, items: Iterable[str], origin: str, what: str) -> list[str]:
        out: list[str] = []
        for count, item in enumerate(items):
            if count >= search.MAX_DIRS:
                self.problem(f"{what}: more than {search.MAX_DIRS} directories; rest ignored")
                break
            expanded = self.expand(item, origin, what)
            if expanded is not None:
                out.append(expanded)
        return out

    def probe(self, path: str, searched: list[str]) -> tuple[str, dict[str, Any]] | None:
        """(file, facts) when ld.so would load ``path``; None (noting why) when it goes on or,
        with ``fatal`` set, stops."""
        self.probes += 1
        if self.probes > search.MAX_PROBES or self.fatal:
            return None
        hit = self._open(path)
        if hit is None and len(searched) < search.MAX_SEARCHED:
            searched.append(path)
        return hit

    def _open(self, path: str) -> tuple[str, dict[str, Any]] | None:
        if len(path) >= PATH_MAX:
            self.problem(f"{path[:80]}...: over PATH_MAX; not opened")
            return None
        state, canonical, facts = self.examine(path)
        if state in ("dangling", "loop"):
            self.problem(f"{path}: a symlink that dangles or loops; skipped")
        elif state == "dir":  # open() succeeds, read() fails: EISDIR, and ld.so gives up
            self.fatal = f"{path}: cannot read file data (a directory)"
        elif state == "unanalyzed":
            self.problem(f"{path}: not analyzed; taken as not there (ld.so stops at a file "
                         "that is not ELF)")
        elif state == "not-elf" and facts is not None:  # "invalid ELF header", "file too short"
            self.fatal = f"{path}: not an ELF file ({facts.get('error', 'unreadable')})"
        elif state == "elf" and facts is not None:
            if facts.get("class") == self.elfclass and facts.get("machine") == self.machine:
                return canonical, facts
            self.problem(f"{path}: ELF{facts.get('class')} {facts.get('machine')}, not the "
                         f"consumer's ELF{self.elfclass} {self.machine}; skipped as ld.so does")
        return None


def resolve_linkage(consumer_path: str, elf_of: ElfOf, index: RootfsIndex,
                    env_ld_library_path: str | None, ld_cache: list[CacheEntry] | None,
                    ld_conf_dirs: list[str], *, default_dirs: Iterable[str] | None = None,
                    interpreter: str | None = None, cwd: str = "/",
                    dst_lib: str | None = None, platform: str | None = None,
                    hwcaps: Iterable[str] | None = None,
                    dlopen: Iterable[str] | Callable[[str], Sequence[str]] = (),
                    preload: Iterable[str] = (), ld_preload: str | None = None,
                    ld_so_preload: str | None = None,
                    glibc_version: str | Sequence[int] | None = None,
                    legacy_hwcaps: Iterable[str] | None = None,
                    musl_path: str | None = None) -> ConsumerLinkage:
    """Every DT_NEEDED in ``consumer_path``'s dependency tree and the file that satisfies it.

    ``elf_of(root_relative_file)`` gives a file's ``elf_facts`` (or None); ``ld_cache`` is the
    parsed ``/etc/ld.so.cache`` (None when the image has none); ``ld_conf_dirs`` the directories
    of ``/etc/ld.so.conf`` -- ld.so never reads them itself, so they only serve to note a
    library that a missing or stale cache leaves unfound. ``interpreter``: the loader (default:
    the consumer's PT_INTERP, else the machine's glibc loader if the image has it, else musl's).

    ``hwcaps``: the subdirectories (as ``glibc-hwcaps/x86-64-v3``) the CPU lets ld.so search in
    each directory, best first; None when unknown (a variant there is then only noted).
    ``glibc_version`` (``"2.36"``): the image's glibc. Before 2.37 the legacy hwcaps
    subdirectories are searched too, from AT_PLATFORM (``platform``) and ``legacy_hwcaps`` (the
    names ``ld.so --help`` marks searched besides AT_PLATFORM and tls, in bit order, as
    ``("x86_64",)``; None: those every CPU of the machine has, the others noted). Unknown:
    legacy variants are only noted.

    ``dlopen``: names the consumer opens with ``dlopen`` once its dependencies are loaded, or a
    function giving the names any loaded object (by root-relative file) opens; each is searched
    as ld.so searches for the caller's own needs (its RPATH chain, ``LD_LIBRARY_PATH``, its
    RUNPATH, cache, defaults; musl: the consumer's) and loaded with its own dependencies,
    objects in load order, until nothing new is opened. ``preload``: the names or paths of
    ``LD_PRELOAD`` then ``/etc/ld.so.preload`` (:mod:`auditor.linkage.ldconf` parses both),
    mapped before any dependency and searched as the consumer's own needs; one that cannot be
    loaded is ignored, as ld.so does. Their resolutions have kind ``"preload"``. Or, parsed
    here as the consumer's loader parses them: ``ld_preload``, the ``LD_PRELOAD`` value, and
    ``ld_so_preload``, the text of ``/etc/ld.so.preload`` (glibc only); the objects load in
    the order LD_PRELOAD's, ``preload`` (as ``ld.so --preload``), the file's.

    ``musl_path``: for a musl consumer, the text of the loader's path file
    (:func:`auditor.linkage.musl.path_file`); None when the image has none."""
    consumer = "/" + consumer_path.strip("/")
    canonical = index.resolve(consumer)
    facts = elf_of(canonical) if canonical is not None else None
    if canonical is None or not facts or "class" not in facts:
        return ConsumerLinkage(consumer, (), (f"{consumer}: not an ELF file in the image",))
    machine, elfclass = str(facts.get("machine")), int(facts["class"])
    interp = interpreter or facts.get("interp") or _image_loader(index, machine)
    if interp and musl.is_musl_loader(interp):
        return musl.resolve(Search(index, elf_of, machine, elfclass, cwd), consumer,
                            "/" + canonical, facts, interp, env_ld_library_path, musl_path,
                            [*parse_ld_preload(ld_preload, musl=True), *preload],
                            _opens(dlopen, canonical))
    run = _Glibc(index, elf_of, machine, elfclass, cwd, platform=platform or machine,
                 lib=dst_lib or DST_LIB.get(machine, "lib"))
    run.note_facts("/" + canonical, facts)
    run.hwcaps, run.legacy, run.legacy_notes = hwcaps_plan(
        machine, run.platform, glibc_version_tuple(glibc_version), hwcaps, legacy_hwcaps)
    run.legacy_cache = legacy_cache_filter(machine, legacy_hwcaps, run.platform)
    main = _Object("/" + canonical, canonical, facts, None, {consumer})
    loaded: list[_Object] = [main]
    _load_interpreter(run, loaded, interp)
    llp = run.dirs(re.split(r"[:;]", env_ld_library_path), main.origin, "LD_LIBRARY_PATH") \
        if env_ld_library_path else []
    defaults = list(default_dirs) if default_dirs is not None else \
        _default_dirs(loaded[-1].file if len(loaded) > 1 else None, machine)
    resolutions: list[Resolution] = []
    tree = _Tree(run, loaded, llp, ld_cache, defaults, resolutions)
    first = [(main, [str(n) for n in main.facts.get("needed") or []], "needed")]
    preload = [*parse_ld_preload(ld_preload), *preload, *parse_ld_so_preload(ld_so_preload)]
    for name in preload:  # each mapped on its own, before any dependency; failures ignored
        if not name:
            continue
        new = tree.map_one(main, name, "preload")
        if run.fatal:
            run.problem(f"preload {name}: {run.fatal}; ignored, as ld.so does")
            run.fatal = None
        if new is not None:
            first.append((new, [str(n) for n in new.facts.get("needed") or []], "needed"))
    tree.load(first)  # the consumer's needs, then each preload's, breadth first
    opens = _opens(dlopen, main.file)
    done = 0
    while done < len(loaded) and not run.fatal:  # objects loaded by a dlopen may dlopen too
        caller = loaded[done]
        done += 1
        for name in opens(caller.file) if caller is main or caller.loader is not None else ():
            if run.fatal:
                break
            tree.load([(caller, [str(name)], "dlopen")])  # one object and its dependencies
    if run.probes > search.MAX_PROBES:
        run.problem(f"more than {search.MAX_PROBES} candidate files tried; search stopped")
    _note_conf_dirs(run, resolutions, ld_conf_dirs, ld_cache)
    return ConsumerLinkage(consumer, tuple(resolutions), tuple(run.problems), run.fatal)


def _opens(dlopen: Iterable[str] | Callable[[str], Sequence[str]],
           main_file: str) -> Callable[[str], Sequence[str]]:
    if callable(dlopen):
        return dlopen
    names = list(dlopen)
    return lambda file: names if file == main_file else ()


def _image_loader(index: RootfsIndex, machine: str) -> str | None:
    """The loader of a consumer without PT_INTERP (a library): glibc's, else musl's."""
    glibc = INTERPRETERS.get(machine)
    if glibc and index.lookup(glibc) is not None:
        return glibc
    for candidate in musl.loader_paths(machine):
        if index.lookup(candidate) is not None:
            return candidate
    return glibc


@dataclass
class _Tree:
    """Loads objects breadth first, as ``_dl_map_object_deps`` does for one ``dlopen`` call."""

    run: _Glibc
    loaded: list[_Object]
    llp: list[str]
    ld_cache: list[CacheEntry] | None
    defaults: list[str]
    resolutions: list[Resolution]

    def map_one(self, requester: _Object, needed: str, kind: Kind) -> _Object | None:
        """One name mapped, its resolution recorded; the new object (not yet followed)."""
        resolution, new = _resolve_one(self.run, requester, needed, self.loaded, self.llp,
                                       self.ld_cache, self.defaults)
        self.resolutions.append(replace(resolution, kind=kind) if kind != "needed"
                                else resolution)
        if new is None or self.run.fatal:
            return None
        if len(self.loaded) >= search.MAX_OBJECTS:
            self.run.problem(f"more than {search.MAX_OBJECTS} objects loaded; the rest not followed")
            return None
        self.loaded.append(new)
        self.run.note_facts(new.path, new.facts)
        return new

    def load(self, first: list[tuple[_Object, list[str], Kind]]) -> None:
        pending = list(first)
        position = 0
        while position < len(pending) and not self.run.fatal:
            requester, names, kind = pending[position]
            position += 1
            for needed in names:
                if not needed:
                    self.run.problem(f"{requester.path}: an empty DT_NEEDED name; skipped")
                    continue
                new = self.map_one(requester, needed, kind)
                if self.run.fatal or len(self.loaded) >= search.MAX_OBJECTS:
                    return
                if new is not None:
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


def _load_interpreter(run: _Glibc, loaded: list[_Object], path: str | None) -> None:
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
    for obj in loaded:  # _dl_name_match_p: a name it was asked as, or its path; or its SONAME
        if needed in obj.names or needed == obj.path or needed == obj.facts.get("soname"):
            return obj
    return None


def _search_lists(run: _Glibc, requester: _Object, llp: list[str]) -> list[tuple[How, list[str]]]:
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


def _resolve_one(run: _Glibc, requester: _Object, needed: str, loaded: list[_Object],
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
        found = _system(run, requester, needed, ld_cache, defaults, searched)
    if found is None:
        return Resolution(needed, None, "not-found", tuple(searched), req), None
    how, path, file, facts = found
    if how != "direct":
        run.note_variants(path)
    resolution = Resolution(needed, path, how, tuple(searched), req, file)
    for obj in loaded:  # the same file under another name is the same object (dev/inode)
        if obj.file == file:
            obj.names.add(needed)
            return resolution, None
    return resolution, _Object(path, file, facts, requester, {needed})


def _system(run: _Glibc, requester: _Object, needed: str, ld_cache: list[CacheEntry] | None,
            defaults: list[str], searched: list[str]) -> tuple[How, str, str, dict[str, Any]] | None:
    """The cache, then the default directories: for a DF_1_NODEFLIB requester, neither a cache
    entry in a default directory (a prefix match, as ``_dl_map_object`` does) nor those."""
    found = None
    if ld_cache is not None:
        hits = cache_lookup(ld_cache, needed, run.machine, run.elfclass, run.hwcaps,
                            run.legacy_cache)
        hit = hits[0].path if hits else None
        if hit and requester.nodeflib and any(hit.startswith(d.rstrip("/") + "/")
                                              for d in defaults):
            run.problem(f"{requester.path}: DF_1_NODEFLIB rejects the ld.so.cache entry {hit} "
                        f"for {needed}")
            hit = None
        found = _first(run, [("ld.so.cache", hit)] if hit else [], searched)
    if found is None and not run.fatal and not requester.nodeflib:
        found = _first(run, [("default", c) for d in defaults
                             for c in run.candidates(d, needed)], searched)
    return found


def _first(run: _Glibc, attempts: list[tuple[How, str]],
           searched: list[str]) -> tuple[How, str, str, dict[str, Any]] | None:
    for how, path in attempts:
        if run.probes > search.MAX_PROBES or run.fatal:
            return None
        hit = run.probe(path, searched)
        if hit is not None:
            return how, path, hit[0], hit[1]
    return None


def _note_conf_dirs(run: _Glibc, resolutions: list[Resolution], conf_dirs: list[str],
                    ld_cache: list[CacheEntry] | None) -> None:
    """A library left unfound that sits in an ld.so.conf directory: the cache is missing or
    stale (ldconfig was not run after it was added), which ld.so does not make up for."""
    for resolution in resolutions:
        if resolution.how != "not-found" or "/" in resolution.needed:
            continue
        for directory in conf_dirs[:search.MAX_DIRS]:
            path = posixpath.join(directory, resolution.needed)
            if run.index.lookup(path) is not None:
                state = "has no ld.so.cache" if ld_cache is None else "ld.so.cache lacks it"
                run.problem(f"{resolution.needed}: in {directory} (ld.so.conf) but the image "
                            f"{state}; run ldconfig in the image")
                break
