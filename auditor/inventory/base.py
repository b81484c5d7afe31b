"""The types catalogers share: what they see, what they fill in, how they declare wants."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from auditor.model import Unknown
from auditor.rootfs.build import Want
from auditor.rootfs.index import RootfsIndex


class FileView:
    """What a cataloger sees: the merged index and the content of the files it asked for."""

    def __init__(self, index: RootfsIndex, load: Callable[[str], bytes | None]) -> None:
        self.index = index
        self._load = load

    def read(self, path: str) -> bytes | None:
        """Content of a wanted file (following symlinks inside the image), or None."""
        return self.index.read(path, self._load)

    def layer_of(self, path: str) -> int | None:
        entry = self.index.lookup(path)
        return entry.layer if entry else None


@dataclass
class Inventory:
    """Everything the catalogers found."""

    os: dict[str, Any] | None = None
    unknowns: list[Unknown] = field(default_factory=list)


@dataclass(frozen=True)
class Cataloger:
    name: str
    version: int
    globs: tuple[str, ...]
    run: Callable[[FileView, Inventory], None]

    @property
    def want(self) -> Want:
        return Want(self.name, self.version, self.globs)


def run_catalogers(view: FileView, catalogers: list[Cataloger]) -> Inventory:
    inventory = Inventory()
    for cataloger in catalogers:
        cataloger.run(view, inventory)
    return inventory
