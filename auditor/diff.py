"""What changed between two audits: the versioned diff document (pure; no I/O).

``diff_documents(old, new)`` takes two report documents (``auditor/report/document.py``) and
returns a document shaped by ``auditor/schemas/diff.schema.json``: the two images, whether they
share their base (the longest common prefix of layer diff_ids), packages added, removed and
changed, the numeric stack per component (the versions present, and which copy the consumers
load), frameworks, the numerically relevant Env and labels, findings new and resolved, and
``changes``: the categories that changed, which ``auditor diff --fail-on-change`` gates on.

A numeric component counts as changed when the versions present in the image change, or the
version of the copy that wins (``linkage.numeric``) changes. A winning copy that only moved (a
different file, the same precise version) is reported (``moved``) but is not a change, unless its
version is unknown or only a major number, when a different file may well be a different library.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from packaging.utils import canonicalize_name

from auditor import __version__
from auditor.errors import InputError

SCHEMA_VERSION = "1"
SCHEMA_ID = "https://auditor.invalid/schemas/diff.schema.json"
REPORT_SCHEMA_VERSION = "1"

# Env keys whose change can change numerics (or which library loads): prefixes and exact names.
ENV_PREFIXES = ("CUDA_", "CUDNN_", "NCCL_", "NV_", "NVIDIA_", "TF_", "TORCH_", "PYTORCH_", "CUBLAS_",
                "CUBLASLT_", "OMP_", "KMP_", "MKL_", "OPENBLAS_", "ONEDNN_", "DNNL_", "JAX_")
ENV_NAMES = ("LD_LIBRARY_PATH", "LD_PRELOAD", "XLA_FLAGS", "PYTHONHASHSEED")
LABEL_RE = re.compile(r"cuda|cudnn|nvidia|version", re.IGNORECASE)

# Categories that group numeric components (the components' own names are categories too).
GROUPS = {"cublas": ("cublas", "cublaslt"), "cuda": ("cudart", "nvrtc", "nvjitlink")}
# Every category that is not a numeric component's name, in the order ``changes`` lists them.
CATEGORIES = ("cudnn", "cublas", "nccl", "cuda", "framework", "packages", "env", "base", "findings")


def diff_documents(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The diff document from two report documents (OLD first)."""
    for name, doc in (("old", old), ("new", new)):
        _check_report(name, doc)
    old_image, new_image = _image(old), _image(new)
    mismatch = old_image["platform"] != new_image["platform"]
    numeric = _numeric(old, new)
    frameworks = _frameworks(old.get("frameworks") or [], new.get("frameworks") or [])
    packages = _packages(old.get("packages") or [], new.get("packages") or [])
    env = _env(old.get("config") or {}, new.get("config") or {})
    base = _base(old, new)
    findings = _findings(old.get("findings") or [], new.get("findings") or [])
    document: dict[str, Any] = {
        "schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "auditor_version": __version__,
        "old": old_image,
        "new": new_image,
        "identical": bool(old_image["image_id"]) and old_image["image_id"] == new_image["image_id"],
        "platform_mismatch": mismatch,
        "platform_note": (
            f"the images are for different platforms (old {old_image['platform']}, new "
            f"{new_image['platform']}): differences may come from the platform, not from the change"
            if mismatch else None),
        "base": base,
        "numeric": numeric,
        "frameworks": frameworks,
        "packages": packages,
        "env": env,
        "findings": findings,
    }
    document["changes"] = _changes(document)
    return document


def describe_change(diff: dict[str, Any], category: str) -> str:
    """One short phrase saying what changed in ``category`` (for a gate's reason line)."""
    key = category.lower()
    if key == "framework":
        return "; ".join(_framework_phrase(f) for f in diff["frameworks"] if f["changed"])
    if key == "packages":
        counts = diff["packages"]["counts"]
        return (f"packages: {counts['changed']} changed, {counts['added']} added, "
                f"{counts['removed']} removed")
    if key == "env":
        return "env: " + ", ".join(f"{e['name']} ({e['kind']})" for e in diff["env"])
    if key == "base":
        return "base: " + diff["base"]["note"]
    if key == "findings":
        return "new findings: " + ", ".join(sorted({f["id"] for f in diff["findings"]["new"]}))
    members = GROUPS.get(key, (key,))
    parts = [_numeric_phrase(c) for c in diff["numeric"]
             if c["changed"] and c["component"].lower() in members]
    if key == "cuda":
        parts += [f"{f['name']} built for CUDA {_v(f['old'], 'cuda')} -> {_v(f['new'], 'cuda')}"
                  for f in diff["frameworks"] if "cuda" in f["built_for_changed"]]
    return "; ".join(parts)


# -- the parts ---------------------------------------------------------------------------------
def _check_report(name: str, doc: Any) -> None:
    if not isinstance(doc, dict):
        raise InputError(f"the {name} report is not a JSON object")
    version = doc.get("schema_version")
    if version != REPORT_SCHEMA_VERSION:
        raise InputError(f"the {name} report has schema_version {version!r}; "
                         f"this auditor reads version {REPORT_SCHEMA_VERSION}")
    missing = [k for k in ("reference", "image", "layers", "findings")
               if not isinstance(doc.get(k), (dict, list))]
    if missing:
        raise InputError(f"the {name} report lacks {', '.join(missing)}: not an auditor report document")


def _image(doc: dict[str, Any]) -> dict[str, Any]:
    image = doc.get("image") or {}
    reference = doc.get("reference") or {}
    os_info = doc.get("os") or {}
    return {
        "reference": reference.get("canonical") or reference.get("input"),
        "digest": image.get("digest"),
        "image_id": image.get("image_id"),
        "platform": image.get("platform"),
        "os": os_info.get("pretty_name") or os_info.get("id"),
        "layers": len(doc.get("layers") or []),
    }


def _base(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The base is the longest common prefix of the layers' diff_ids. It changed when the images
    share no leading layer, or their OS (os-release) differs."""
    old_ids = [layer.get("diff_id") for layer in old.get("layers") or []]
    new_ids = [layer.get("diff_id") for layer in new.get("layers") or []]
    shared = 0
    for a, b in zip(old_ids, new_ids, strict=False):
        if a is None or a != b:
            break
        shared += 1
    old_os, new_os = _image(old)["os"], _image(new)["os"]
    os_changed = old_os != new_os
    changed = (shared == 0 and bool(old_ids or new_ids)) or os_changed
    if old_ids == new_ids:
        note = f"all {shared} layers are the same"
    elif shared == 0:
        note = "no leading layer is shared: a different base image"
    else:
        first = "the first layer is" if shared == 1 else f"the first {shared} layers are"
        note = (f"{first} shared (old has {len(old_ids)}, new {len(new_ids)}); "
                f"the images differ from layer {shared} on")
    if os_changed:
        note += f"; the OS changed ({old_os or 'unknown'} -> {new_os or 'unknown'})"
    return {"changed": changed, "shared_layers": shared, "old_layers": len(old_ids),
            "new_layers": len(new_ids), "shared_diff_ids": old_ids[:shared], "os_changed": os_changed,
            "note": note}


def _version_key(version: str | None) -> tuple[int, tuple[Any, ...]]:
    if version is None:
        return (1, ())
    return (0, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.+-]", version)))


def _versions(values: Any) -> list[str | None]:
    return sorted(set(values), key=_version_key)


def _imprecise(version: str | None) -> bool:
    return version is None or "." not in version


def _loaded(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per numeric component, the copies that win: the main one (shortest path), every version."""
    linkage = doc.get("linkage") or {}
    by_component: dict[str, list[dict[str, Any]]] = {}
    for winner in linkage.get("numeric") or []:
        loaded = winner.get("loaded") or {}
        if loaded.get("component") and loaded.get("path"):
            by_component.setdefault(loaded["component"], []).append(loaded)
    out = {}
    for component, copies in by_component.items():
        paths = sorted({c["path"] for c in copies}, key=lambda p: (len(p), p))
        main = next(c for c in copies if c["path"] == paths[0])
        out[component] = {"version": main.get("version"), "path": main["path"],
                          "versions": _versions(c.get("version") for c in copies), "paths": paths}
    return out


def _numeric(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    present: dict[str, dict[str, set[str | None]]] = {}
    for side, doc in (("old", old), ("new", new)):
        for lib in doc.get("numeric_stack") or []:
            present.setdefault(lib["component"], {"old": set(), "new": set()})[side].add(lib.get("version"))
    compare_loaded = bool(old.get("linkage")) and bool(new.get("linkage"))
    loaded_old, loaded_new = _loaded(old), _loaded(new)
    out = []
    for component in sorted(set(present) | set(loaded_old) | set(loaded_new), key=str.lower):
        versions = present.get(component, {"old": set(), "new": set()})
        old_versions, new_versions = _versions(versions["old"]), _versions(versions["new"])
        lo, ln = loaded_old.get(component), loaded_new.get(component)
        why = []
        if old_versions != new_versions:
            why.append("versions")
        if compare_loaded and ((lo is None) != (ln is None)
                               or (lo and ln and lo["versions"] != ln["versions"])):
            why.append("loaded-version")
        moved = False
        if lo is not None and ln is not None:
            moved = lo["versions"] == ln["versions"] and lo["paths"] != ln["paths"]
            if moved and any(_imprecise(v) for v in lo["versions"]):
                why.append("loaded-copy")
        out.append({"component": component, "old": old_versions, "new": new_versions,
                    "loaded": {"old": lo, "new": ln}, "moved": moved, "changed": bool(why),
                    "why": why})
    return out


def _framework_key(fw: dict[str, Any]) -> str:
    return str(fw.get("name"))


def _frameworks(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Frameworks paired by name (the n-th copy of a name with the n-th, by path)."""

    def keyed(items: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
        out: dict[tuple[str, int], dict[str, Any]] = {}
        for fw in sorted(items, key=lambda f: (_framework_key(f), f.get("path") or "")):
            n = sum(1 for k in out if k[0] == _framework_key(fw))
            out[(_framework_key(fw), n)] = fw
        return out

    a, b = keyed(old), keyed(new)
    rows = []
    for key in sorted(set(a) | set(b)):
        fo, fn = a.get(key), b.get(key)
        side_old = _fw_side(fo)
        side_new = _fw_side(fn)
        bo = (side_old or {}).get("built_for") or {}
        bn = (side_new or {}).get("built_for") or {}
        built_changed = sorted(k for k in set(bo) | set(bn) if bo.get(k) != bn.get(k))
        version_changed = (fo is None) != (fn is None) or (
            (side_old or {}).get("version") != (side_new or {}).get("version"))
        rows.append({"name": key[0], "old": side_old, "new": side_new,
                     "version_changed": version_changed, "built_for_changed": built_changed,
                     "changed": version_changed or bool(built_changed)})
    return rows


def _fw_side(fw: dict[str, Any] | None) -> dict[str, Any] | None:
    if fw is None:
        return None
    return {"version": fw.get("version"), "built_for": dict(fw.get("built_for") or {}),
            "path": fw.get("path")}


def _package_key(p: dict[str, Any]) -> tuple[str, str, str | None]:
    name = str(p.get("name"))
    if p.get("type") == "python":  # pip's names compare normalized (PEP 503)
        name = canonicalize_name(name)
    return (str(p.get("type")), name, p.get("arch"))


def _packages(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> dict[str, Any]:
    def keyed(items: list[dict[str, Any]]) -> dict[tuple[str, str, str | None], dict[str, Any]]:
        out: dict[tuple[str, str, str | None], dict[str, Any]] = {}
        for p in items:
            key = _package_key(p)
            entry = out.setdefault(key, {"name": p.get("name"), "versions": set()})
            entry["versions"].add(p.get("version"))
        return out

    def version(entry: dict[str, Any]) -> str:
        return ", ".join(str(v) for v in _versions(entry["versions"]))

    def row(key: tuple[str, str, str | None], name: str, **versions: str) -> dict[str, Any]:
        out: dict[str, Any] = {"type": key[0], "name": name}
        if key[2] is not None:
            out["arch"] = key[2]
        return {**out, **versions}

    a, b = keyed(old), keyed(new)
    order = sorted(set(a) | set(b), key=lambda k: (k[0], k[1], k[2] or ""))
    added = [row(k, b[k]["name"], version=version(b[k])) for k in order if k not in a]
    removed = [row(k, a[k]["name"], version=version(a[k])) for k in order if k not in b]
    changed = [row(k, b[k]["name"], old=version(a[k]), new=version(b[k])) for k in order
               if k in a and k in b and a[k]["versions"] != b[k]["versions"]]
    unchanged = sum(1 for k in order if k in a and k in b) - len(changed)
    return {"added": added, "removed": removed, "changed": changed,
            "counts": {"old": len(a), "new": len(b), "added": len(added), "removed": len(removed),
                       "changed": len(changed), "unchanged": unchanged}}


def env_relevant(name: str) -> bool:
    """Whether an Env key is one whose change can change the numeric results."""
    return name.startswith(ENV_PREFIXES) or name in ENV_NAMES


def env_map(config: Mapping[str, Any]) -> dict[str, str]:
    """An image config's ``Env`` list as name -> value."""
    out = {}
    for item in config.get("Env") or []:
        name, _, value = str(item).partition("=")
        out[name] = value
    return out


def _env(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for kind, a, b, relevant in (
        ("env", env_map(old), env_map(new), env_relevant),
        ("label", old.get("Labels") or {}, new.get("Labels") or {}, lambda k: bool(LABEL_RE.search(k))),
    ):
        for name in sorted(set(a) | set(b)):
            if relevant(name) and a.get(name) != b.get(name):
                rows.append({"kind": kind, "name": name, "old": a.get(name), "new": b.get(name)})
    return rows


def _finding_row(f: dict[str, Any]) -> dict[str, Any]:
    return {"id": f.get("id"), "component": f.get("component"), "severity": f.get("severity"),
            "message": f.get("message"), "path": f.get("path")}


def _findings(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> dict[str, Any]:
    """A finding is its (id, component): messages name paths and versions, which may move."""
    old_ids = {(f.get("id"), f.get("component")) for f in old}
    new_ids = {(f.get("id"), f.get("component")) for f in new}
    return {"new": [_finding_row(f) for f in new if (f.get("id"), f.get("component")) not in old_ids],
            "resolved": [_finding_row(f) for f in old if (f.get("id"), f.get("component")) not in new_ids],
            "unchanged": len(old_ids & new_ids)}


def _changes(doc: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for c in doc["numeric"]:
        if c["changed"]:
            found.append(c["component"])
            found += [group for group, members in GROUPS.items() if c["component"].lower() in members]
    if any(f["changed"] for f in doc["frameworks"]):
        found.append("framework")
    if any("cuda" in f["built_for_changed"] for f in doc["frameworks"]):
        found.append("cuda")
    packages = doc["packages"]
    if packages["added"] or packages["removed"] or packages["changed"]:
        found.append("packages")
    if doc["env"]:
        found.append("env")
    if doc["base"]["changed"]:
        found.append("base")
    if doc["findings"]["new"]:
        found.append("findings")
    order = {name: i for i, name in enumerate(CATEGORIES)}
    unique = list(dict.fromkeys(found))
    return sorted(unique, key=lambda c: (order.get(c, order["framework"] - 0.5), c.lower()))


def _v(side: dict[str, Any] | None, key: str) -> str:
    return str((side or {}).get("built_for", {}).get(key) or "none")


def _numeric_phrase(c: dict[str, Any]) -> str:
    old = ", ".join(v or "unknown" for v in c["old"]) or "absent"
    new = ", ".join(v or "unknown" for v in c["new"]) or "absent"
    text = f"{c['component']} {old} -> {new}"
    if old == new:
        lo, ln = c["loaded"]["old"], c["loaded"]["new"]
        text += (f" (loaded {lo['version'] or 'unknown'} -> {ln['version'] or 'unknown'})"
                 if lo and ln and lo["versions"] != ln["versions"] else
                 " (the copy loaded moved; its version is not precise)" if c["moved"] else
                 " (now loaded)" if ln and not lo else " (no longer loaded)" if lo and not ln else "")
    return text


def _framework_phrase(f: dict[str, Any]) -> str:
    old, new = f["old"], f["new"]
    text = f"{f['name']} {(old or {}).get('version') or 'absent'} -> {(new or {}).get('version') or 'absent'}"
    if f["built_for_changed"] and old and new:
        text += " (built for " + ", ".join(
            f"{k} {old['built_for'].get(k) or 'none'} -> {new['built_for'].get(k) or 'none'}"
            for k in f["built_for_changed"]) + ")"
    return text
