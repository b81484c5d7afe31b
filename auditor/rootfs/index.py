"""The merged, read-only view of an image's layers, with whiteouts applied.

Paths are root-relative strings without a leading slash. Symlinks are resolved as the kernel
would inside a chroot of the image: an absolute target starts at the image root and ``..`` stops
at the root, so nothing ever resolves to a path outside the image.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from auditor.model import FileEntry, Skipped
from auditor.rootfs.walker import LayerScan

MAX_SYMLINK_HOPS = 40  # as Linux's ELOOP


def glob_regex(pattern: str) -> str:
    """A shell pattern over root-relative paths (``*`` crosses ``/``) as an anchored regex."""
    return fnmatch.translate(pattern.strip("/"))


def glob_matcher(globs: Iterable[str]) -> Callable[[str], bool]:
    """Whether a path matches any of ``globs`` (shell patterns, ``*`` crossing ``/``).

    Each pattern's longest run of plain text (``/libcudnn.so`` of ``**/libcudnn.so*``) must
    be in a path that matches it: that is looked for first (``in``, at C speed), and the regex
    runs only on the few paths that hold it. A pattern with a ``[set]`` is always run."""
    checks = []
    for glob in globs:
        regex = re.compile(glob_regex(glob))
        text = "" if "[" in glob else max(re.split(r"[*?]", glob.strip("/")), key=len)
        checks.append((text, regex.match))

    def matches(path: str) -> bool:
        return any(text in path and match(path) for text, match in checks)

    return matches


_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


@dataclass
class RootfsIndex:
    entries: dict[str, FileEntry] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    captured: dict[str, str] = field(default_factory=dict)  # path -> content digest
    analyzed: dict[str, dict[str, Any]] = field(default_factory=dict)  # path -> owner -> facts
    whiteouts_applied: int = 0
    lazy: dict[int, dict[str, Any]] = field(default_factory=dict)  # layer -> how its table was read
    _children: dict[str, set[str]] = field(default_factory=dict, repr=False)
    # (path, whether a final symlink is followed) -> where it resolves (None: nowhere), while the
    # tree stays as it is: a layer's pass asks where the parents of all its paths land (most
    # share a few directories), and the loader's search probes the same paths again and again
    _resolved: dict[tuple[str, bool], str | None] = field(default_factory=dict, repr=False)

    # -- building --------------------------------------------------------------------------
    def apply(self, scan: LayerScan) -> None:
        """Merge one layer over what is below it (OCI image spec, "Applying changesets").

        As container runtimes do, a path's parent directories are resolved through the symlinks
        already in the filesystem: ``lib/x`` over ``lib -> usr/lib`` lands at ``usr/lib/x``, and a
        whiteout or opaque marker under ``lib/`` acts on ``usr/lib``.
        """
        for directory in scan.opaque_dirs:
            target = self.resolve(directory) if directory else ""
            for child in list(self._children.get(target, ())) if target is not None else ():
                self._remove_tree(_join(target, child))
        for path in scan.whiteouts:
            target = self.canonical_path(path)
            if target in self.entries or target in self._children:
                self._remove_tree(target)
                self.whiteouts_applied += 1
            else:
                self.skipped.append(Skipped(scan.layer, path,
                                            "whiteout of a path no lower layer has"))
        hardlinks: list[FileEntry] = []
        for entry in scan.entries:
            tar_path = entry.path
            path = self.canonical_path(tar_path)
            if path != tar_path:
                entry = FileEntry(path, entry.type, entry.layer, entry.mode, entry.size,
                                  entry.link, entry.uid, entry.gid)
            old = self.entries.get(path)
            if old is not None and (old.type != "dir" or entry.type != "dir"):
                self._remove_tree(path)
            self._add(entry)
            if entry.type == "hardlink":
                hardlinks.append(entry)
            else:
                if tar_path in scan.captured:
                    self.captured[path] = scan.captured[tar_path]
                if tar_path in scan.analyzed:
                    self.analyzed[path] = scan.analyzed[tar_path]
        for link in hardlinks:
            self._check_hardlink(link, scan)
        self.skipped.extend(scan.skipped)
        if scan.toc:
            self.lazy[scan.layer] = scan.lazy()

    def _add(self, entry: FileEntry) -> None:
        self._resolved.clear()
        self.entries[entry.path] = entry
        self.captured.pop(entry.path, None)
        self.analyzed.pop(entry.path, None)
        # Register the path with its parent, and the parent with its own, up to the first one
        # already known: layer tars may omit directory entries, and their files still resolve.
        path = entry.path
        while True:
            parent, _, name = path.rpartition("/")
            children = self._children.setdefault(parent, set())
            if name in children:
                break
            children.add(name)
            if not parent:
                break
            path = parent

    def _remove_tree(self, path: str) -> None:
        self._resolved.clear()
        stack = [path]
        while stack:
            current = stack.pop()
            self.entries.pop(current, None)
            self.captured.pop(current, None)
            self.analyzed.pop(current, None)
            for child in self._children.pop(current, ()):
                stack.append(_join(current, child))
        parent, _, name = path.rpartition("/")
        siblings = self._children.get(parent)
        if siblings is not None:
            siblings.discard(name)

    def _check_hardlink(self, link: FileEntry, scan: LayerScan) -> None:
        target, reason = self._hardlink_file(link)
        if target is None:
            self._remove_tree(link.path)
            scan.skipped.append(Skipped(scan.layer, link.path,
                                        f"hardlink to {link.link!r}, which is {reason}"))
            return
        # A hardlink is the same file: same size, the same captured content and facts.
        self._resolved.clear()
        self.entries[link.path] = FileEntry(link.path, "hardlink", link.layer, target.mode,
                                            target.size, link.link, target.uid, target.gid)
        if target.path in self.captured:
            self.captured[link.path] = self.captured[target.path]
        if target.path in self.analyzed:
            self.analyzed[link.path] = self.analyzed[target.path]

    def _hardlink_file(self, link: FileEntry) -> tuple[FileEntry | None, str]:
        """The regular file a hardlink names, following hardlinks to hardlinks; no cycles."""
        seen = {link.path}
        current = self.entries.get(self.canonical_path(link.link or ""))
        while current is not None and current.type == "hardlink":
            if current.path in seen or len(seen) > MAX_SYMLINK_HOPS:
                return None, "a cycle of hardlinks"
            seen.add(current.path)
            current = self.entries.get(current.link or "")
        if current is None:
            return None, "missing"
        if current.type != "file":
            return None, f"a {current.type}"
        return current, ""

    def canonical_path(self, path: str) -> str:
        """Where an entry written at ``path`` lands: its parent directories resolved through the
        symlinks in the filesystem so far (the final component is not followed)."""
        parent, _, name = path.rpartition("/")
        if not parent:
            return path
        entry = self.entries.get(parent)
        if entry is not None and entry.type == "dir":
            return path
        resolved = self.resolve(parent)
        return _join(resolved, name) if resolved is not None else path

    # -- reading ---------------------------------------------------------------------------
    def resolve(self, path: str, follow_final: bool = True) -> str | None:
        """The path after following symlinks, confined to the root; None if it does not exist
        or loops."""
        key = (path, follow_final)
        if key in self._resolved:
            return self._resolved[key]
        resolved = self._resolved[key] = self._walk(path, follow_final)
        return resolved

    def _walk(self, path: str, follow_final: bool) -> str | None:
        parts = [p for p in path.strip("/").split("/") if p not in ("", ".")]
        done: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if done:
                    done.pop()
                continue
            current = "/".join([*done, part])
            entry = self.entries.get(current)
            if entry is None and current not in self._children:
                return None
            if entry is not None and parts and entry.type not in ("dir", "symlink"):
                return None  # ENOTDIR: a file in the middle of a path
            if entry is not None and entry.type == "symlink" and (parts or follow_final):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    return None
                target = entry.link or ""
                if target.startswith("/"):
                    done = []
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                continue
            done.append(part)
        return "/".join(done)

    def lookup(self, path: str) -> FileEntry | None:
        resolved = self.resolve(path)
        return self.entries.get(resolved) if resolved is not None else None

    def content_digest(self, path: str) -> str | None:
        """The digest of a captured file, following symlinks."""
        resolved = self.resolve(path)
        return self.captured.get(resolved) if resolved is not None else None

    def glob(self, pattern: str, among: Iterable[str] | None = None) -> list[str]:
        """Paths (not following symlinks) that match a shell pattern (``*`` crosses ``/``),
        sorted; ``among`` narrows the search to those paths."""
        compiled = re.compile(glob_regex(pattern))
        return sorted(p for p in (self.entries if among is None else among) if compiled.match(p))

    # -- summaries -------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for entry in self.entries.values():
            out[entry.type] = out.get(entry.type, 0) + 1
        return dict(sorted(out.items()))

    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries.values() if e.type == "file")

    def fingerprint(self) -> str:
        """A digest of the whole index: equal for the same image from any source."""
        h = hashlib.sha256()
        encode = _COMPACT_JSON.encode  # json.dumps's bytes, without a new encoder per entry
        for path in sorted(self.entries):
            e = self.entries[path]
            h.update(encode([e.path, e.type, e.layer, e.mode, e.size, e.link, e.uid, e.gid]).encode())
            h.update(b"\n")
        return f"sha256:{h.hexdigest()}"

    def facts(self, path: str, owner: str) -> dict[str, Any] | None:
        """What analyzer ``owner`` found in a file, following symlinks."""
        resolved = self.resolve(path)
        return (self.analyzed.get(resolved) or {}).get(owner) if resolved is not None else None

    def read(self, path: str, load: Callable[[str], bytes | None]) -> bytes | None:
        digest = self.content_digest(path)
        return load(digest) if digest else None


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name
