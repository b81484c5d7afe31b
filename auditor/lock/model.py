"""What a lock recipe pins, with the evidence for each pin: the plan the writers render."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Base:
    """The image the recipe starts ``FROM``, by digest. ``proved``: its layers are the leading
    layers of the source image (else the source image itself is the base: nothing is
    reinstalled on top of its OS layers)."""

    name: str  # repository, without tag or digest (e.g. 127.0.0.1:5000/lock/base)
    digest: str
    proved: bool
    how: str  # what proved it, or why nothing could be
    layers: int  # how many of the source's layers it accounts for


@dataclass(frozen=True)
class Pin:
    """One package at its exact version (``hashes`` for Python: ``sha256:HEX``)."""

    kind: str  # deb, apk, rpm, python
    name: str
    version: str
    evidence: str  # where the version was read (the package database, a dist-info, a fix)
    arch: str | None = None
    hashes: tuple[str, ...] = ()
    fix: str | None = None  # the finding whose fix chose this version
    layer: int | None = None  # the layer whose package database or metadata recorded it


@dataclass(frozen=True)
class Setting:
    """An ``ENV`` or ``LABEL`` line, and why it is there."""

    name: str
    value: str
    why: str


@dataclass(frozen=True)
class Unlockable:
    """Something the recipe cannot reproduce, said, not dropped."""

    kind: str
    name: str
    version: str | None
    reason: str


@dataclass(frozen=True)
class Change:
    """A change ``--fix`` made to the recipe, and the finding that asked for it."""

    finding: str
    component: str
    change: str


@dataclass(frozen=True)
class Sources:
    """Where the recipe installs from: apt lines (``deb [...] URL SUITE COMPONENTS``) and the
    Python package index."""

    apt: tuple[str, ...] = ()
    index_url: str = "https://pypi.org/simple"
    extra_index_urls: tuple[str, ...] = ()
    snapshot: str | None = None  # the archive snapshot's time stamp (YYYYMMDDThhmmssZ)


@dataclass
class LockPlan:
    source: dict[str, Any]  # reference, digest, image_id
    os: dict[str, Any] | None
    base: Base
    sources: Sources
    os_packages: list[Pin] = field(default_factory=list)
    python_packages: list[Pin] = field(default_factory=list)
    env: list[Setting] = field(default_factory=list)
    labels: list[Setting] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # User, WorkingDir, Entrypoint, Cmd
    unlockable: list[Unlockable] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
