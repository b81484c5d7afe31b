"""Plain data types that cross stages. A stage takes and returns these."""

from __future__ import annotations

import platform as _platform
from dataclasses import dataclass, field
from typing import Any

from auditor.errors import InputError

_ARCH_ALIASES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm",
                 "i686": "386", "i386": "386", "ppc64le": "ppc64le", "s390x": "s390x"}


@dataclass(frozen=True, order=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def matches(self, other: Platform) -> bool:
        """Whether ``other`` (an index entry) satisfies this requested platform."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        return self.variant is None or self.variant == other.variant or (
            self.architecture == "arm64" and self.variant == "v8" and other.variant is None)


def parse_platform(text: str) -> Platform:
    parts = text.split("/")
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise InputError(f"invalid platform {text!r}: expected os/arch[/variant], e.g. linux/amd64")
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def host_platform() -> Platform:
    machine = _platform.machine().lower()
    arch = _ARCH_ALIASES.get(machine, machine)
    variant = {"armv7l": "v7", "armv6l": "v6"}.get(machine)
    return Platform("linux", arch, variant)


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def from_json(cls, obj: Any, what: str) -> Descriptor:
        from auditor.digest import validate_digest

        if not isinstance(obj, dict):
            raise InputError(f"{what}: descriptor is not an object")
        try:
            digest = validate_digest(obj["digest"])
            size = int(obj["size"])
            media_type = str(obj.get("mediaType", ""))
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"{what}: malformed descriptor ({err})") from None
        if size < 0:
            raise InputError(f"{what}: negative size in descriptor {digest}")
        plat = obj.get("platform")
        platform = None
        if isinstance(plat, dict) and plat.get("os") and plat.get("architecture"):
            platform = Platform(str(plat["os"]), str(plat["architecture"]), plat.get("variant") or None)
        annotations = obj.get("annotations") or {}
        if not isinstance(annotations, dict):
            annotations = {}
        return cls(media_type, digest, size, platform, {str(k): str(v) for k, v in annotations.items()})


@dataclass(frozen=True)
class Layer:
    """One layer: its compressed digest (what the registry stores) and its uncompressed diff_id."""

    index: int
    digest: str
    diff_id: str
    media_type: str
    size: int
    created_by: str | None = None
    # the descriptor's annotations (a zstd:chunked or eStargz table of contents' place, digest)
    annotations: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class FileEntry:
    """One path in the merged filesystem, and the layer that put it there."""

    path: str  # relative to the root, no leading slash
    type: str  # file, dir, symlink, hardlink, char, block, fifo
    layer: int
    mode: int
    size: int = 0
    link: str | None = None  # symlink target as written, or hardlink target path
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Skipped:
    """A tar entry that was not taken into the filesystem, and why (hostile or malformed input)."""

    layer: int
    path: str
    reason: str


@dataclass(frozen=True)
class Unknown:
    """A file a cataloger could not parse; the run went on."""

    cataloger: str
    path: str
    layer: int | None
    reason: str


@dataclass(frozen=True)
class Evidence:
    """One piece of evidence for a version: what was read, where, and the version it implies."""

    kind: str  # soname, filename, string, constant, data-symbol, header, package, metadata, env, label
    source: str  # a path in the image, or a config key such as "Env:CUDNN_VERSION"
    value: str  # what was read there, as read
    version: str | None = None  # the version it implies, normalised (None: says nothing of it)


@dataclass(frozen=True)
class Package:
    """An installed package, from a package database or a Python/conda metadata file."""

    type: str  # deb, apk, rpm, python, conda
    name: str
    version: str
    purl: str
    path: str  # the database or metadata file it was read from
    layer: int | None = None
    arch: str | None = None
    source: str | None = None  # source package, installer, or channel
    licenses: tuple[str, ...] = ()
    files: tuple[str, ...] = field(default=(), compare=False)  # files it owns, when known


@dataclass(frozen=True)
class Library:
    """A numeric library file in the image and its version, with all the evidence read."""

    component: str  # cudnn, cublas, cublasLt, nccl, cudart, nvrtc, nvjitlink, ... (see rules)
    path: str
    layer: int | None
    version: str | None  # the version of the strongest evidence (major.minor.patch[.build])
    evidence: tuple[Evidence, ...] = ()
    soname: str | None = None
    package: str | None = None  # the owning package, "type:name@version"
    machine: str | None = None  # x86_64, aarch64, ...


@dataclass(frozen=True)
class Framework:
    """An ML framework and what it was built for (CUDA, cuDNN, ...)."""

    name: str  # torch, tensorflow, jax, jaxlib
    version: str
    path: str
    layer: int | None = None
    built_for: dict[str, str] = field(default_factory=dict, hash=False)  # component -> version
    evidence: tuple[Evidence, ...] = ()


SEVERITIES = ("info", "low", "medium", "high", "critical")  # in increasing order


@dataclass(frozen=True)
class Finding:
    """Something the audit says about the image: an inventory disagreement, a linkage problem,
    or a rule of a pack that fired (then ``rule`` says which, and the fields after it are set)."""

    id: str  # stable, e.g. "version-disagreement", or the rule id
    severity: str  # info, low, medium, high, critical
    component: str
    message: str  # one sentence: what triggered it, and the effect
    evidence: tuple[Evidence, ...] = ()
    path: str | None = None
    rule: RuleRef | None = None
    version: str | None = None  # the version of ``component`` that triggered it
    fixed_in: str | None = None
    remediation: str | None = None
    assumptions: tuple[str, ...] = ()  # what the image cannot show and the finding rests on
    locations: tuple[str, ...] = ()  # every file involved (``path`` is the first)


@dataclass(frozen=True)
class RuleRef:
    """Which rule of which pack a finding comes from, with what a reader needs to act on it."""

    pack: str  # name@version
    title: str
    effect: str
    confidence: str  # verified, reported
    references: tuple[str, ...] = ()  # URLs, the primary source first


@dataclass(frozen=True)
class Item:
    """One versioned thing the rules look at: a numeric library copy, a framework, a package."""

    kind: str  # component, framework, package
    name: str  # cudnn; tensorflow; deb:libcudnn8
    version: str | None
    path: str | None = None
    layer: int | None = None
    loaded_by: tuple[str, ...] = ()  # frameworks (or consumer paths) the linkage shows loading it
    built_for: tuple[tuple[str, str], ...] = ()  # frameworks: component -> version
    evidence: tuple[Evidence, ...] = ()
    title: str | None = None  # how a finding names it (cuDNN, TensorFlow)


@dataclass(frozen=True)
class Stack:
    """Everything the rules evaluate, in one plain value: what is installed and loaded, the
    environment (with where each variable came from), labels, and the GPU architectures known
    from ``--gpu-arch`` or a probe (empty: unknown)."""

    items: tuple[Item, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    env_origin: tuple[tuple[str, str], ...] = ()  # name -> "Env" (image config) or "--env"
    labels: tuple[tuple[str, str], ...] = ()
    gpu_arch: tuple[str, ...] = ()
    linkage_known: bool = False  # whether a linkage pass ran (``loaded_by`` means something)
