"""The versioned report document: everything an audit found, as plain JSON-able data.

Every format renders this document; ``--format json`` writes it as is. Its shape is fixed by
``auditor/schemas/report.schema.json`` (``schema_version`` changes when a field changes meaning or
goes away; new fields may appear in any version).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from auditor import __version__
from auditor.audit import AuditResult
from auditor.linkage.model import Copy, Resolution
from auditor.model import Evidence, Finding
from auditor.rules.evaluate import FIRED, NOT_EVALUABLE, PASSED

SCHEMA_VERSION = "1"
SCHEMA_ID = "https://auditor.invalid/schemas/report.schema.json"
CONFIG_KEYS = ("User", "Env", "Entrypoint", "Cmd", "WorkingDir", "Labels", "ExposedPorts",
               "Volumes", "StopSignal", "Shell")


def _annotations(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's string annotations (``org.opencontainers.image.base.name``, …), when any."""
    raw = manifest.get("annotations")
    found = {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, str)} \
        if isinstance(raw, dict) else {}
    return {"annotations": found} if found else {}


def build_document(result: AuditResult) -> dict[str, Any]:
    image, index = result.image, result.index
    config = image.config.get("config") if isinstance(image.config.get("config"), dict) else {}
    layer_files: dict[int, int] = {}
    for entry in index.entries.values():
        layer_files[entry.layer] = layer_files.get(entry.layer, 0) + 1
    history = [h for h in image.config.get("history") or [] if isinstance(h, dict)]
    return {
        "schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "auditor_version": __version__,
        "reference": {
            "input": result.ref.original,
            "canonical": str(result.ref),
            "transport": result.ref.transport,
        },
        "image": {
            "digest": image.identity_digest,
            "digest_source": ("manifest" if not image.digest_synthesized else
                              "engine-repo-digest" if image.identity_digest else None),
            "index_digest": image.index_digest,
            "image_id": image.image_id,
            "media_type": image.media_type,
            "platform": str(image.platform),
            "platforms_available": [str(p) for p in image.platforms],
            "created": image.config.get("created"),
            "author": image.config.get("author"),
            "compressed_size": sum(layer.size for layer in image.layers),
            "source": result.facts,
            **_annotations(image.manifest),
        },
        "layers": [
            {
                "index": layer.index,
                "digest": layer.digest,
                "diff_id": layer.diff_id,
                "media_type": layer.media_type,
                "size": layer.size,
                "files_visible": layer_files.get(layer.index, 0),
                "created_by": layer.created_by,
                **({"lazy": result.index.lazy[layer.index]} if layer.index in result.index.lazy
                   else {}),
            }
            for layer in image.layers
        ],
        "config": {key: config[key] for key in CONFIG_KEYS if config.get(key) is not None},
        "history": [
            {key: h[key] for key in ("created", "created_by", "comment", "empty_layer") if key in h}
            for h in history
        ],
        "os": result.inventory.os,
        "numeric_stack": [
            {"component": lib.component, "version": lib.version, "path": lib.path,
             "layer": lib.layer, "soname": lib.soname, "machine": lib.machine,
             "package": lib.package, "evidence": [_evidence(e) for e in lib.evidence]}
            for lib in sorted(result.inventory.libraries, key=lambda x: (x.component, x.path))
        ],
        "frameworks": [
            {"name": fw.name, "version": fw.version, "path": fw.path, "layer": fw.layer,
             "built_for": dict(fw.built_for), "evidence": [_evidence(e) for e in fw.evidence]}
            for fw in result.inventory.frameworks
        ],
        "linkage": _linkage(result),
        "findings": [_finding(f) for f in result.findings],
        "rules": _rules(result),
        "packages": [
            {"type": p.type, "name": p.name, "version": p.version, "purl": p.purl, "path": p.path,
             "layer": p.layer, "arch": p.arch, "source": p.source, "licenses": list(p.licenses),
             "files": len(p.files)}
            for p in sorted(result.inventory.packages, key=lambda x: (x.type, x.name.lower(),
                                                                      x.version, x.path))
        ],
        "rootfs": {
            "fingerprint": index.fingerprint(),
            "entries": index.counts(),
            "file_bytes": index.total_bytes(),
            "whiteouts_applied": index.whiteouts_applied,
        },
        "skipped": [{"layer": s.layer, "path": s.path, "reason": s.reason} for s in index.skipped],
        "unknowns": [
            {"cataloger": u.cataloger, "path": u.path, "layer": u.layer, "reason": u.reason}
            for u in result.inventory.unknowns
        ],
        "elapsed_seconds": round(result.seconds, 3),
        "timings": {
            "rootfs_seconds": round(result.rootfs_seconds, 3),
            "catalogers": {name: round(t, 3) for name, t in result.inventory.seconds.items()},
        },
    }


def _copy(copy: Copy) -> dict[str, Any]:
    return {"path": copy.file, "layer": copy.layer, "version": copy.version,
            "component": copy.component, "package": copy.package}


def _linkage(result: AuditResult) -> dict[str, Any] | None:
    """Per consumer, each library it needs or opens -> the file loaded, its layer and version,
    how it was found; per numeric library, the copy that wins and the ones it shadows."""
    stack = result.inventory.linkage
    if stack is None:
        return None
    libraries = {lib.path: lib for lib in result.inventory.libraries}
    layer_of = result.index.lookup

    def resolution(r: Resolution) -> dict[str, Any]:
        lib = libraries.get(r.file) if r.file else None
        entry = layer_of(r.file) if r.file else None
        out = {"needed": r.needed, "kind": r.kind, "requester": r.requester, "how": r.how,
               "path": r.path, "file": r.file, "layer": entry.layer if entry else None,
               "component": lib.component if lib else None,
               "version": lib.version if lib else None}
        if r.how == "not-found":
            out["searched"] = list(r.searched)
        return out

    return {
        "ld_library_path": stack.ld_library_path,
        "env_source": stack.env_source,
        "all_elf": stack.all_elf,
        "numeric": [
            {"needed": w.needed, "loaded": _copy(w.loaded), "how": list(w.hows),
             "consumers": list(w.consumers), "shadowed": [_copy(c) for c in w.shadowed]}
            for w in stack.winners],
        "consumers": [
            {"path": c.linkage.consumer, "framework": c.framework, "layer": c.layer,
             "fatal": c.linkage.fatal, "problems": list(c.linkage.problems),
             "resolutions": [resolution(r) for r in c.linkage.resolutions]}
            for c in stack.consumers],
    }


def _finding(f: Finding) -> dict[str, Any]:
    out: dict[str, Any] = {"id": f.id, "severity": f.severity, "component": f.component,
                           "message": f.message, "path": f.path,
                           "evidence": [_evidence(e) for e in f.evidence]}
    if f.rule is not None:
        out.update({
            "rule": {"pack": f.rule.pack, "title": f.rule.title, "effect": f.rule.effect,
                     "confidence": f.rule.confidence, "references": list(f.rule.references)},
            "version": f.version, "fixed_in": f.fixed_in, "remediation": f.remediation,
            "assumptions": list(f.assumptions), "locations": list(f.locations)})
    return out


def _rules(result: AuditResult) -> dict[str, Any]:
    evaluation = result.evaluation
    packs = evaluation.packs if evaluation else ()
    results = evaluation.results if evaluation else ()
    return {
        "packs": [{"name": p.name, "version": p.version, "date": p.date, "source": p.source,
                   "sha256": p.sha256, "rules": len(p.rules)} for p in packs],
        "evaluated": len(results),
        "fired": [r.rule.id for r in results if r.status == FIRED],
        "passed": [r.rule.id for r in results if r.status == PASSED],
        "not_evaluable": [{"rule": r.rule.id, "reasons": list(r.reasons)}
                          for r in results if r.status == NOT_EVALUABLE],
        "results": [{"rule": r.rule.id, "pack": r.rule.pack, "title": r.rule.title,
                     "severity": r.rule.severity, "status": r.status,
                     "findings": len(r.findings), "reasons": list(r.reasons),
                     "effect": r.rule.effect, "remediation": r.rule.remediation,
                     "confidence": r.rule.confidence, "references": list(r.rule.references)}
                    for r in results],
        "gpu_arch": list(evaluation.gpu_arch) if evaluation else [],
    }


def _evidence(e: Evidence) -> dict[str, Any]:
    return {"kind": e.kind, "source": e.source, "value": e.value, "version": e.version}


def report_schema() -> dict[str, Any]:
    text = resources.files("auditor").joinpath("schemas/report.schema.json").read_text()
    return json.loads(text)


def render_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=False) + "\n"


def render_document(document: dict[str, Any], _context: Any = None) -> str:
    """The ``json`` format: the document as it is."""
    return render_json(document)
