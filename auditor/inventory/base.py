"""The types catalogers share: what they see, what they fill in, how they declare wants."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from auditor.model import Finding, Framework, Library, Package, Unknown
from auditor.rootfs.build import Want
from auditor.rootfs.index import RootfsIndex
from auditor.rootfs.walker import Analyzer

if TYPE_CHECKING:
    from auditor.linkage.model import LinkageStack


class FileView:
    """What a cataloger sees: the merged index, the content of the files it asked for, the
    facts its analyzer found, and the image's config (Env and Labels are evidence too)."""

    def __init__(self, index: RootfsIndex, load: Callable[[str], bytes | None],
                 config: dict[str, Any] | None = None,
                 env_overrides: dict[str, str] | None = None) -> None:
        self.index = index
        self._load = load
        self.config = config or {}
        self.env_overrides = dict(env_overrides or {})

    def env(self) -> dict[str, str]:
        """The image config's Env as a mapping (later entries win, as in a container), with
        the user's ``--env`` settings over it."""
        inner = self.config.get("config") if isinstance(self.config.get("config"), dict) else {}
        out: dict[str, str] = {}
        for item in inner.get("Env") or []:
            if isinstance(item, str) and "=" in item:
                key, _, value = item.partition("=")
                out[key] = value
        out.update(self.env_overrides)
        return out

    def labels(self) -> dict[str, str]:
        inner = self.config.get("config") if isinstance(self.config.get("config"), dict) else {}
        labels = inner.get("Labels")
        return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}

    def glob(self, pattern: str) -> list[str]:
        """Paths in the merged filesystem matching a shell pattern (``*`` crosses ``/``)."""
        return self.index.glob(pattern)

    def captured(self, pattern: str) -> list[str]:
        """Captured files matching a shell pattern, sorted."""
        return self.index.glob(pattern, among=self.index.captured)

    def analyzed(self, owner: str) -> list[tuple[str, dict[str, Any]]]:
        """(path, facts) for every file analyzer ``owner`` saw that is still in the image."""
        return sorted((path, facts[owner]) for path, facts in self.index.analyzed.items()
                      if owner in facts)

    def read(self, path: str) -> bytes | None:
        """Content of a wanted file (following symlinks inside the image), or None."""
        return self.index.read(path, self._load)

    def layer_of(self, path: str) -> int | None:
        entry = self.index.lookup(path)
        return entry.layer if entry else None


@dataclass
class Inventory:
    """Everything the catalogers found: the Stack, with the evidence for each version."""

    os: dict[str, Any] | None = None
    packages: list[Package] = field(default_factory=list)
    libraries: list[Library] = field(default_factory=list)
    frameworks: list[Framework] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    unknowns: list[Unknown] = field(default_factory=list)
    linkage: LinkageStack | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # cataloger -> time it took


@dataclass(frozen=True)
class Cataloger:
    """``globs``: files captured whole for ``run``; ``analyze_globs``: files handed to
    ``analyze`` during the pass (for large binaries), whose facts ``run`` reads with
    ``view.analyzed(name)``; with ``magic``, only those of them that start with it."""

    name: str
    version: int
    globs: tuple[str, ...]
    run: Callable[[FileView, Inventory], None]
    analyze_globs: tuple[str, ...] = ()
    analyze: Analyzer | None = None
    magic: bytes = b""  # analyze only files starting with these bytes (the rest is not copied)

    @property
    def wants(self) -> list[Want]:
        out = [Want(self.name, self.version, self.globs)] if self.globs else []
        if self.analyze_globs and self.analyze is not None:
            out.append(Want(self.name, self.version, self.analyze_globs, self.analyze,
                            self.magic))
        return out


def run_catalogers(view: FileView, catalogers: list[Cataloger]) -> Inventory:
    inventory = Inventory()
    for cataloger in catalogers:
        started = time.perf_counter()
        cataloger.run(view, inventory)
        inventory.seconds[cataloger.name] = time.perf_counter() - started
    return inventory


MAX_BROKEN_LISTED = 100  # Unknowns listed one by one per database file


class BrokenRecords:
    """Records broken entries of one database file as Unknowns, the first
    :data:`MAX_BROKEN_LISTED` one by one and then a count (a hostile file may hold millions)."""

    def __init__(self, inventory: Inventory, cataloger: str, path: str, layer: int | None) -> None:
        self.inventory, self.cataloger, self.path, self.layer = inventory, cataloger, path, layer
        self.count = 0

    def add(self, reason: str) -> None:
        self.count += 1
        if self.count <= MAX_BROKEN_LISTED:
            self.inventory.unknowns.append(Unknown(self.cataloger, self.path, self.layer, reason))

    def close(self) -> None:
        if self.count > MAX_BROKEN_LISTED:
            self.inventory.unknowns.append(Unknown(
                self.cataloger, self.path, self.layer,
                f"{self.count - MAX_BROKEN_LISTED} more broken entries, not listed one by one"))


def decode_database(data: bytes) -> tuple[str, bool]:
    """UTF-8 text, or Latin-1 (lossless for any bytes) with ``False`` when it was not UTF-8."""
    try:
        return data.decode("utf-8"), True
    except UnicodeDecodeError:
        return data.decode("latin-1"), False


def read_database(view: FileView, inventory: Inventory, cataloger: str, path: str) -> bytes | None:
    """A captured database file's bytes; None, with an Unknown saying so, if it was not captured."""
    data = view.read(path)
    if data is None:
        inventory.unknowns.append(Unknown(cataloger, path, view.layer_of(path),
                                          "not captured (larger than the capture limit?)"))
    return data


def read_text_database(view: FileView, inventory: Inventory, cataloger: str,
                       path: str) -> str | None:
    """A captured text database; one that is not UTF-8 is read as Latin-1, with an Unknown."""
    data = read_database(view, inventory, cataloger, path)
    if data is None:
        return None
    text, utf8 = decode_database(data)
    if not utf8:
        inventory.unknowns.append(Unknown(cataloger, path, view.layer_of(path),
                                          "not UTF-8 text; read as Latin-1"))
    return text
