"""From an audit's report document to a :class:`LockPlan`: the base by digest, the OS and Python
packages added on top of it at their exact versions, the environment and labels, and what cannot
be locked. Pure: the package index is reached through the ``hashes`` function it is given."""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from auditor import __version__
from auditor.diff import env_map
from auditor.errors import InputError
from auditor.lock.model import Base, LockPlan, Pin, Setting, Sources, Unlockable
from auditor.reference import parse_reference

HashLookup = Callable[[str, str], "tuple[str, ...] | str"]  # (name, version) -> hashes, or why not
BASE_NAME = "org.opencontainers.image.base.name"
BASE_DIGEST = "org.opencontainers.image.base.digest"
DEBIAN_LIKE = ("debian", "ubuntu")
# Directories of Python packages that an OS package manager owns (not pip's to reinstall).
OS_PYTHON_DIRS = re.compile(r"^usr/lib/python3[^/]*/(dist|site)-packages/|^usr/lib/python3/dist-packages/")


@dataclass(frozen=True)
class LockOptions:
    apt_sources: tuple[str, ...] = ()  # replace the dated snapshot archive lines
    index_url: str = "https://pypi.org/simple"
    extra_index_urls: tuple[str, ...] = ()
    lock_date: str = field(default_factory=lambda: datetime.date.today().isoformat())


def base_candidate(document: Mapping[str, Any]) -> str | None:
    """The base the image declares: the OCI annotations (manifest), else the same keys as
    labels, as ``name@digest`` (or ``name``)."""
    image = document.get("image") or {}
    labels = ((document.get("config") or {}).get("Labels")) or {}
    for source in (image.get("annotations") or {}, labels):
        name, digest = source.get(BASE_NAME), source.get(BASE_DIGEST)
        if name:
            return f"{_repository(name)}@{digest}" if digest else name
    return None


def prove_base(document: Mapping[str, Any], base_document: Mapping[str, Any] | None,
               base_reference: str | None, source_name: str | None = None) -> Base:
    """The base by digest when its layers (``diff_id``s) are the image's leading layers; the
    image itself when no candidate is given (named ``source_name``, else its registry or engine
    name, else ``localhost/<tag>``). A candidate that does not match is an error."""
    source_ids = [layer["diff_id"] for layer in document.get("layers") or []]
    if base_document is None or base_reference is None:
        reference = _repository(source_name) if source_name else _source_name(document)
        return Base(reference, document["image"]["digest"] or "", False,
                    "no base image could be proved (give --base REF, or build with the "
                    f"{BASE_NAME}/{BASE_DIGEST} annotations): the image itself is the base",
                    len(source_ids))
    base_ids = [layer["diff_id"] for layer in base_document.get("layers") or []]
    if not base_ids or source_ids[:len(base_ids)] != base_ids:
        raise InputError(f"base {base_reference}: its layers are not the image's leading layers "
                         "(not the image's base)")
    digest = (base_document.get("image") or {}).get("digest")
    if not digest:
        raise InputError(f"base {base_reference}: it has no manifest digest to pin (push or pull "
                         "it through a registry)")
    ref = parse_reference(base_reference)
    name = ref.name if ref.transport == "registry" else (ref.engine_ref or base_reference)
    return Base(_repository(name), digest, True,
                f"{base_reference}: its {len(base_ids)} layers are the image's first {len(base_ids)}",
                len(base_ids))


def check_apt_versions(plan: LockPlan, offered: Mapping[str, set[str]], unread: Sequence[str]) -> None:
    """Pins the recipe would install that the apt sources do not offer become unlockable (the
    recipe could not build with them); sources that could not be read are said."""
    keep = []
    for pin in plan.os_packages:
        installed = pin.kind == "deb" and (plan.base.proved or pin.fix is not None)
        if installed and not unread and pin.version not in offered.get(pin.name, set()):
            plan.unlockable.append(Unlockable("deb", pin.name, pin.version, "not in the apt sources given"))
            continue
        keep.append(pin)
    plan.os_packages = keep
    for line in unread:
        plan.notes.append(f"Not checked against {line!r} (unreadable here).")


def plan_lock(document: Mapping[str, Any], base: Base, base_document: Mapping[str, Any] | None,
              options: LockOptions, hashes: HashLookup) -> LockPlan:
    """The recipe's plan: what is added on top of ``base`` (everything, when it is not proved)."""
    image = document.get("image") or {}
    os_info = document.get("os")
    plan = LockPlan(
        source={"reference": (document.get("reference") or {}).get("canonical"),
                "digest": image.get("digest"), "image_id": image.get("image_id"),
                "created": image.get("created")},
        os=os_info, base=base,
        sources=Sources(index_url=options.index_url, extra_index_urls=options.extra_index_urls))
    base_packages = _package_set(base_document) if base_document is not None else None
    _plan_os_packages(plan, document, base_packages, options)
    _plan_python_packages(plan, document, base_packages, hashes)
    _plan_config(plan, document, base_document)
    if not base.proved:
        plan.notes.append("No base was proved, so the recipe starts FROM the image itself by "
                          "digest: its OS and Python packages are recorded with their versions but "
                          "not reinstalled.")
    return plan


# -- OS packages -----------------------------------------------------------------------------

def _package_set(document: Mapping[str, Any] | None) -> set[tuple[str, str, str]]:
    return {(p["type"], p["name"], p["version"]) for p in (document or {}).get("packages") or []}


def _plan_os_packages(plan: LockPlan, document: Mapping[str, Any],
                      base_packages: set[tuple[str, str, str]] | None, options: LockOptions) -> None:
    packages = [p for p in document.get("packages") or [] if p["type"] in ("deb", "apk", "rpm")]
    if not packages and not any(p["type"] == "python" for p in document.get("packages") or []):
        plan.notes.append("The image has no package database: no OS package is locked.")
    for package in sorted(packages, key=lambda p: (p["type"], p["name"])):
        key = (package["type"], package["name"], package["version"])
        if base_packages is not None and key in base_packages:
            continue
        plan.os_packages.append(Pin(package["type"], package["name"], package["version"],
                                    f"{package['path']} (layer {package.get('layer')})",
                                    arch=package.get("arch"), layer=package.get("layer")))
    if base_packages is not None:
        present = {(p["type"], p["name"]) for p in packages}
        removed = sorted({name for kind, name, _ in base_packages
                          if kind in ("deb", "apk", "rpm") and (kind, name) not in present})
        for name in removed:
            plan.unlockable.append(Unlockable("os", name, None, "in the base but removed from the "
                                              "image: the recipe does not remove it"))
    stamp = None if options.apt_sources else _snapshot_stamp(document, plan.os_packages)
    plan.sources = Sources(apt=options.apt_sources or _snapshot_sources(plan, stamp),
                           index_url=plan.sources.index_url,
                           extra_index_urls=plan.sources.extra_index_urls, snapshot=stamp)


def _snapshot_stamp(document: Mapping[str, Any], pins: Sequence[Pin]) -> str | None:
    """When the packages were installed: the history entry of the last layer that wrote the
    package database (a dated archive shows only the versions current at its date), else the
    image's creation time."""
    layers = [p.layer for p in pins if p.kind == "deb" and isinstance(p.layer, int)]
    created = (document.get("image") or {}).get("created")
    if layers:
        entries = [h for h in document.get("history") or [] if not h.get("empty_layer")]
        if max(layers) < len(entries) and entries[max(layers)].get("created"):
            created = entries[max(layers)]["created"]
    if not isinstance(created, str) or not re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", created):
        return None
    return created[:19].replace("-", "").replace(":", "") + "Z"


def _snapshot_sources(plan: LockPlan, stamp: str | None) -> tuple[str, ...]:
    """The distribution's archive as it was when the packages were installed
    (snapshot.debian.org or snapshot.ubuntu.com at that time), for the packages added on top."""
    if not any(p.kind == "deb" for p in plan.os_packages):
        return ()
    os_id = (plan.os or {}).get("id")
    codename = (plan.os or {}).get("version_codename")
    if os_id not in DEBIAN_LIKE or not codename or not stamp:
        plan.notes.append("No dated archive could be chosen (unknown distribution, codename or "
                          "creation time): give --apt-source lines.")
        return ()
    plan.notes.append(f"OS packages come from the {os_id} archive snapshot of {stamp} (when the "
                      "layer that installed them was made).")
    if os_id == "debian":
        root = f"http://snapshot.debian.org/archive/debian/{stamp}/"
        security = f"http://snapshot.debian.org/archive/debian-security/{stamp}/"
        return (f"deb [check-valid-until=no] {root} {codename} main",
                f"deb [check-valid-until=no] {root} {codename}-updates main",
                f"deb [check-valid-until=no] {security} {codename}-security main")
    root = f"http://snapshot.ubuntu.com/ubuntu/{stamp}/"
    return tuple(f"deb [check-valid-until=no] {root} {suite} main restricted universe multiverse"
                 for suite in (codename, f"{codename}-updates", f"{codename}-security"))


# -- Python packages -------------------------------------------------------------------------

def _plan_python_packages(plan: LockPlan, document: Mapping[str, Any],
                          base_packages: set[tuple[str, str, str]] | None, hashes: HashLookup) -> None:
    for package in sorted((p for p in document.get("packages") or [] if p["type"] == "python"),
                          key=lambda p: p["name"].lower()):
        name, version, path = package["name"], package["version"], package["path"]
        if base_packages is not None and ("python", name, version) in base_packages:
            continue
        source = package.get("source") or ""
        installer, _, direct = source.partition(": ")
        if OS_PYTHON_DIRS.match(path) and installer != "pip":
            continue  # an OS package's module: its package is pinned with the OS packages
        if direct or "+" in installer or "://" in installer:
            plan.unlockable.append(Unlockable("python", name, version,
                                              f"installed from {direct or installer}, not an index"))
            continue
        if not plan.base.proved:
            found: tuple[str, ...] | str = ()
        else:
            found = hashes(name, version)
        if isinstance(found, str):
            plan.unlockable.append(Unlockable("python", name, version, found))
            continue
        plan.python_packages.append(Pin("python", name, version, path, hashes=found))


# -- environment, labels, the rest of the config --------------------------------------------

def _plan_config(plan: LockPlan, document: Mapping[str, Any],
                 base_document: Mapping[str, Any] | None) -> None:
    config = document.get("config") or {}
    base_config = (base_document or {}).get("config") or {} if plan.base.proved else config
    base_env = env_map(base_config)
    for name, value in env_map(config).items():
        if base_env.get(name) != value:
            plan.env.append(Setting(name, value, "the image's Env"))
    base_labels = base_config.get("Labels") or {}
    for name, value in sorted((config.get("Labels") or {}).items()):
        if base_labels.get(name) != value:
            plan.labels.append(Setting(name, str(value), "the image's label"))
    for key in ("User", "WorkingDir", "Entrypoint", "Cmd"):
        if config.get(key) and config.get(key) != base_config.get(key):
            plan.config[key] = config[key]
    packs = ",".join(f"{p['name']}@{p['version']}" for p in (document.get("rules") or {}).get("packs") or [])
    source = plan.source
    labels = [(BASE_NAME, plan.base.name), (BASE_DIGEST, plan.base.digest),
              ("io.auditor.lock.source", f"{source['reference']}@{source['digest']}"
               if source.get("digest") else str(source["reference"])),
              ("io.auditor.lock.source-image-id", str(source.get("image_id"))),
              ("io.auditor.version", __version__)]
    if packs:
        labels.append(("io.auditor.rule-packs", packs))
    plan.labels += [Setting(name, value, "recorded by auditor lock") for name, value in labels]


def settings_from_findings(findings: Sequence[Mapping[str, Any]], fixes: Mapping[str, Mapping[str, Any]]
                           ) -> list[Setting]:
    """The environment settings the fired rules' fixes name (``fix.env``), each with the
    finding it answers; one per variable (the first finding that names it)."""
    out: dict[str, Setting] = {}
    for finding in findings:
        fix = fixes.get(finding.get("id") or "") or {}
        for name, value in (fix.get("env") or {}).items():
            out.setdefault(name, Setting(name, str(value),
                                         f"answers {finding['id']} ({finding.get('component')})"))
    return list(out.values())


def _repository(name: str) -> str:
    """``name`` without its tag or digest."""
    name = name.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name[: len(name) - len(last)] + last.split(":", 1)[0]


def _source_name(document: Mapping[str, Any]) -> str:
    canonical = (document.get("reference") or {}).get("canonical") or ""
    ref = parse_reference(canonical)
    if ref.transport == "registry":
        return ref.name
    if ref.transport == "engine":
        return _repository(ref.engine_ref or canonical)
    stem = ref.tag or PurePosixPath(ref.path or "image").name.split(".")[0]
    return f"localhost/{re.sub(r'[^a-z0-9._-]+', '-', stem.lower()).strip('-._') or 'image'}"
