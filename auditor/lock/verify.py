"""``auditor lock --verify DIR``: what a rebuilt recipe must match. Pure: it compares the
source's report document (kept in the recipe as ``source-audit.json``) with the rebuilt
image's, given the recipe's ``lock.json``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from packaging.utils import canonicalize_name

from auditor.diff import diff_documents

OS_KINDS = ("deb", "apk", "rpm")


def expected_packages(source: Mapping[str, Any], lock: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """(type, name) -> version the rebuilt image must hold: the source's packages, with the
    versions ``--fix`` chose."""
    out = {_key(p["type"], p["name"]): p["version"] for p in source.get("packages") or []}
    for pin in [*(lock.get("os_packages") or []), *(lock.get("python_packages") or [])]:
        if pin.get("fix"):
            out[_key(pin["kind"], pin["name"])] = pin["version"]
    return out


def _key(kind: str, name: str) -> tuple[str, str]:
    """Python names compare as pip compares them (PEP 503)."""
    return kind, str(canonicalize_name(name)) if kind == "python" else name


def verify_rebuild(source: Mapping[str, Any], rebuilt: Mapping[str, Any],
                   lock: Mapping[str, Any]) -> dict[str, Any]:
    """``{"ok": bool, "problems": [str], "diff": <auditor diff document>}``: ok exactly when the
    numeric stack and frameworks are the same (but for what --fix changed) and every package
    of the source is in the rebuilt image at the expected version, and nothing more."""
    diff = diff_documents(dict(source), dict(rebuilt))
    fixed = {c["component"] for c in lock.get("changes") or []}
    problems = []
    for change in diff.get("numeric") or []:
        if change["changed"] and change["component"] not in fixed:
            problems.append(f"numeric stack: {change['component']}: {_versions(change['old'])} -> "
                            f"{_versions(change['new'])} ({', '.join(change['why'])})")
    for change in diff.get("frameworks") or []:
        if change["changed"] and change["name"] not in fixed:
            old, new = change["old"] or {}, change["new"] or {}
            problems.append(f"framework {change['name']}: {old.get('version') or '-'} -> "
                            f"{new.get('version') or '-'}")
    want = expected_packages(source, lock)
    have = {_key(p["type"], p["name"]): p["version"] for p in rebuilt.get("packages") or []}
    for key in sorted(set(want) | set(have)):
        kind, name = key
        if want.get(key) == have.get(key):
            continue
        where = "OS package" if kind in OS_KINDS else f"{kind} package"
        if key not in have:
            problems.append(f"{where} {name} {want[key]}: missing from the rebuilt image")
        elif key not in want:
            problems.append(f"{where} {name} {have[key]}: in the rebuilt image only")
        else:
            problems.append(f"{where} {name}: locked {want[key]}, rebuilt {have[key]}")
    return {"ok": not problems, "problems": problems, "diff": diff}


def _versions(versions: list[str | None]) -> str:
    return ", ".join(v or "?" for v in versions) or "-"
