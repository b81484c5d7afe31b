"""``auditor lock --fix``: the fired rules' machine-applicable fixes applied to a plan.

``fix.env`` settings are part of every lock (they are the determinism settings the findings ask
for); ``fix.upgrade`` ({component: release}) moves the packages that carry the component to that
release, with the finding cited: NVIDIA components through ``nvidia-builds.yaml`` (the build
and the CUDA versions it exists for; a CUDA change is made and said), Python packages to the
exact version. What cannot be moved is listed as unlockable with the reason."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from importlib import resources
from typing import Any

import yaml

from auditor.diff import env_map
from auditor.lock.model import Change, LockPlan, Pin, Setting, Unlockable
from auditor.lock.plan import HashLookup, settings_from_findings
from auditor.model import SEVERITIES


@functools.cache
def nvidia_builds() -> dict[str, dict[str, dict[str, Any]]]:
    text = resources.files("auditor.lock").joinpath("nvidia-builds.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def add_finding_settings(plan: LockPlan, findings: Sequence[Mapping[str, Any]],
                         fixes: Mapping[str, Mapping[str, Any]]) -> None:
    """The ``fix.env`` settings of the fired rules, replacing the image's value of the same name."""
    for setting in settings_from_findings(findings, fixes):
        plan.env = [s for s in plan.env if s.name != setting.name] + [setting]


def apply_fixes(plan: LockPlan, document: Mapping[str, Any], fixes: Mapping[str, Mapping[str, Any]],
                hashes: HashLookup) -> None:
    """Apply the fired rules' ``fix.upgrade`` to ``plan``. Per component one release is applied:
    that of the most severe finding whose release can be built (the lower release when severities
    tie: the smaller change); the other requests are listed as not applied, with the reason."""
    asked: dict[str, list[tuple[int, str, str]]] = {}  # component -> (severity rank, release, finding)
    for finding in document.get("findings") or []:
        upgrade = (fixes.get(finding.get("id") or "") or {}).get("upgrade") or {}
        rank = SEVERITIES.index(finding["severity"]) if finding.get("severity") in SEVERITIES else 0
        for component, release in upgrade.items():
            row = (rank, str(release), finding["id"])
            if row not in asked.setdefault(component, []):
                asked[component].append(row)
    for component, rows in sorted(asked.items()):
        buildable = [r for r in rows if component not in nvidia_builds()
                     or r[1] in nvidia_builds()[component]]
        chosen = min(buildable, key=lambda r: (-r[0], _key(r[1]))) if buildable else None
        for _rank, release, finding in rows:
            if chosen is not None and release == chosen[1]:
                continue
            why = (f"{component} {chosen[1]} was chosen for {chosen[2]}" if chosen else
                   f"no known build of {component} {release} (auditor/lock/nvidia-builds.yaml)")
            plan.unlockable.append(Unlockable(component, component, release,
                                              f"{finding}: not applied: {why}"))
        if chosen is None:
            continue
        if component in nvidia_builds():
            _upgrade_nvidia(plan, document, component, chosen[1], chosen[2])
        else:
            _upgrade_python(plan, document, component, chosen[1], chosen[2], hashes)


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


def _owning_packages(document: Mapping[str, Any], component: str) -> list[tuple[str, str, str]]:
    """(type, name, version) of the packages owning the component's libraries."""
    out = set()
    for library in document.get("numeric_stack") or []:
        if library.get("component") == component and library.get("package"):
            kind, _, rest = library["package"].partition(":")
            name, _, version = rest.rpartition("@")
            out.add((kind, name, version))
    return sorted(out)


def _upgrade_nvidia(plan: LockPlan, document: Mapping[str, Any], component: str, release: str,
                    finding: str) -> None:
    build = (nvidia_builds()[component]).get(release)
    owners = _owning_packages(document, component)
    if build is None:
        plan.unlockable.append(Unlockable(component, component, release,
                                          f"{finding}: no known build of {component} {release} "
                                          "(auditor/lock/nvidia-builds.yaml)"))
        return
    debs = [o for o in owners if o[0] == "deb"]
    for kind, name, version in owners:
        if kind != "deb":
            plan.unlockable.append(Unlockable(kind, name, version, f"{finding}: {component} "
                                              f"{release} is not published as a {kind} package here"))
    if not debs:
        if not owners:
            plan.unlockable.append(Unlockable(component, component, None, f"{finding}: no package "
                                              f"owns {component} in the image; move it by hand"))
        return
    current = _cuda_of(debs[0][2]) or _env_value(plan, document, "CUDA_VERSION")
    cuda = _choose_cuda(current, [str(c) for c in build["cuda"]])
    names = {name for _, name, _ in debs}
    names |= {p["name"] for p in document.get("packages") or []
              if p["type"] == "deb" and any(p["name"] == f"{n}-dev" for n in names)}
    new_version = f"{build['build']}-1+cuda{cuda}"
    for name in sorted(names):
        old = next((p["version"] for p in document.get("packages") or []
                    if p["type"] == "deb" and p["name"] == name), None)
        arch = next((p.get("arch") for p in document.get("packages") or []
                     if p["type"] == "deb" and p["name"] == name), None)
        plan.os_packages = [p for p in plan.os_packages if not (p.kind == "deb" and p.name == name)]
        plan.os_packages.append(Pin("deb", name, new_version, f"--fix: {finding}", arch=arch, fix=finding))
        plan.changes.append(Change(finding, component, f"{name} {old} -> {new_version}"))
    if current and cuda != current:
        plan.changes.append(Change(finding, "cuda", f"CUDA {current} -> {cuda} ({component} "
                                   f"{build['build']} is built for CUDA {', '.join(build['cuda'])})"))
        if _env_value(plan, document, "CUDA_VERSION"):
            plan.env = [s for s in plan.env if s.name != "CUDA_VERSION"]
            plan.env.append(Setting("CUDA_VERSION", cuda, f"--fix: {finding} (CUDA {current} -> {cuda})"))
        _rename_cuda_packages(plan, document, current, cuda, finding)
    _add_nvidia_source(plan)


def _add_nvidia_source(plan: LockPlan) -> None:
    """NVIDIA's CUDA repository for the distribution (its packages are not in the distribution's
    archive), unless the user gave the sources."""
    os_info = plan.os or {}
    release = str(os_info.get("version_id") or "").replace(".", "")
    line = ("deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] https://developer.download."
            f"nvidia.com/compute/cuda/repos/{os_info.get('id')}{release}/x86_64/ /")
    if plan.sources.snapshot is None or line in plan.sources.apt:
        return
    plan.sources = replace(plan.sources, apt=(*plan.sources.apt, line))
    plan.notes.append("NVIDIA's packages come from its CUDA repository, whose key the cuda-keyring "
                      "package installs (https://developer.download.nvidia.com/compute/cuda/repos/).")


def _rename_cuda_packages(plan: LockPlan, document: Mapping[str, Any], old: str, new: str,
                          finding: str) -> None:
    """CUDA's own packages carry the toolkit version in their names (cuda-cudart-11-2): their
    11.3 builds' versions are not known here, so they are listed, not guessed."""
    suffix = "-" + old.replace(".", "-")
    for package in document.get("packages") or []:
        if package["type"] == "deb" and package["name"].endswith(suffix):
            renamed = package["name"][: -len(suffix)] + "-" + new.replace(".", "-")
            plan.unlockable.append(Unlockable("deb", renamed, None, f"--fix: {finding}: CUDA {old} -> "
                                              f"{new} replaces {package['name']}; pin its {new} version"))


def _cuda_of(version: str) -> str | None:
    found = re.search(r"\+cuda(\d+\.\d+)", version)
    return found.group(1) if found else None


def _env_value(plan: LockPlan, document: Mapping[str, Any], name: str) -> str | None:
    for setting in plan.env:
        if setting.name == name:
            return setting.value
    return env_map(document.get("config") or {}).get(name)


def _choose_cuda(current: str | None, available: list[str]) -> str:
    """The CUDA the new build should use: the image's own when the build exists for it, else
    the nearest newer one of the same major version, else the newest."""
    ordered = sorted(available, key=_key)
    if current in ordered:
        return current
    if current:
        same_major = [c for c in ordered if _key(c)[0] == _key(current)[0] and _key(c) >= _key(current)]
        if same_major:
            return same_major[0]
    return ordered[-1]


def _upgrade_python(plan: LockPlan, document: Mapping[str, Any], component: str, release: str,
                    finding: str, hashes: HashLookup) -> None:
    installed = [p for p in document.get("packages") or []
                 if p["type"] == "python" and p["name"].lower() in _python_names(component)]
    if not installed:
        plan.unlockable.append(Unlockable(component, component, release, f"{finding}: {component} is "
                                          "not a Python package of the image; move it by hand"))
        return
    for package in installed:
        found = hashes(package["name"], release)
        if isinstance(found, str):
            plan.unlockable.append(Unlockable("python", package["name"], release, f"{finding}: {found}"))
            continue
        plan.python_packages = [p for p in plan.python_packages if p.name != package["name"]]
        plan.python_packages.append(Pin("python", package["name"], release, f"--fix: {finding}",
                                        hashes=found, fix=finding))
        plan.changes.append(Change(finding, component,
                                   f"{package['name']} {package['version']} -> {release}"))


def _python_names(component: str) -> set[str]:
    return {component, *{"tensorflow": ("tensorflow-gpu", "tensorflow-cpu")}.get(component, ())}
