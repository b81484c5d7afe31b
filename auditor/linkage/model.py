"""The answer of linkage resolution: for each needed name, the file ld.so would load, and how."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

How = Literal["rpath", "ld_library_path", "runpath", "ld.so.cache", "default", "already-loaded",
              "direct", "not-found"]
Kind = Literal["needed", "dlopen", "preload"]


@dataclass(frozen=True)
class Resolution:
    """One DT_NEEDED entry of ``requester`` (a root-relative path).

    ``path`` is the absolute path the loader opens (as ``ld.so --list`` prints it), ``file`` the
    root-relative file it is after following symlinks inside the image; both None when not found.
    ``searched`` lists the candidate paths tried before it, in order (bounded). ``kind``:
    a DT_NEEDED entry, a name the requester opens with ``dlopen`` at run time, or an object
    ``LD_PRELOAD`` or ``/etc/ld.so.preload`` names (its requester: the consumer)."""

    needed: str
    path: str | None
    how: How
    searched: tuple[str, ...] = ()
    requester: str = ""
    file: str | None = None
    kind: Kind = "needed"


@dataclass(frozen=True)
class ConsumerLinkage:
    """Every resolution in a consumer's dependency tree, in the loader's order (breadth first),
    and what could not be followed (cycles of symlinks, paths out of bounds, limits reached).

    ``fatal``: the error ld.so would stop the program with (a directory or a file that is not ELF
    where it looked for a library); the resolutions end with the need that hit it."""

    consumer: str
    resolutions: tuple[Resolution, ...]
    problems: tuple[str, ...] = ()
    fatal: str | None = None

    def of(self, needed: str, requester: str | None = None) -> Resolution | None:
        """The first resolution of ``needed`` (asked by ``requester``, if given)."""
        for resolution in self.resolutions:
            if resolution.needed == needed and requester in (None, resolution.requester):
                return resolution
        return None

    def loaded(self) -> dict[str, str]:
        """needed name -> root-relative file, for every name that resolved (first wins)."""
        out: dict[str, str] = {}
        for resolution in self.resolutions:
            if resolution.file is not None:
                out.setdefault(resolution.needed, resolution.file)
        return out


@dataclass(frozen=True)
class Copy:
    """One file of a library in the image, with what the inventory knows of it."""

    file: str  # root-relative
    layer: int | None
    version: str | None = None
    component: str | None = None  # when it is a numeric library the inventory classified
    package: str | None = None


@dataclass(frozen=True)
class Consumer:
    """A consumer's linkage, with the framework it belongs to (None: an ELF of ``--all-elf``)."""

    linkage: ConsumerLinkage
    framework: str | None
    layer: int | None


@dataclass(frozen=True)
class Winner:
    """Which copy of one library (by the name asked for) the consumers load, and which copies
    of it in the image lose. Two winners for one name: consumers load different files."""

    needed: str
    loaded: Copy
    hows: tuple[str, ...]
    consumers: tuple[str, ...]
    shadowed: tuple[Copy, ...] = ()


@dataclass(frozen=True)
class LinkageStack:
    """The linkage part of the Stack: every consumer resolved, and per numeric library which
    copy wins. ``ld_library_path``: the value resolution used, and where it came from."""

    consumers: tuple[Consumer, ...]
    winners: tuple[Winner, ...]
    ld_library_path: str | None = None
    env_source: str = "image"  # "image" (its config's Env) or "--env"
    all_elf: bool = False
