"""The ``sarif`` format: SARIF 2.1.0 for code scanning (GitHub, GitLab, Azure DevOps).

One run. The driver's rules are one reporting descriptor per rule the packs evaluated and per
finding id (inventory and linkage findings included); one result per finding, suppressed findings
(an ignore file) with an external suppression. A result points at the file in the image (relative
to ``IMAGEROOT``, the image's root filesystem) and, given ``--dockerfile``, first at the Dockerfile
line that set the thing: the ``ENV`` of a variable in the evidence, the ``RUN`` that installed the
package, or else the final stage's ``FROM``. A finding that no file holds (an unset variable of the
image's Env, with no ``--dockerfile``) points at the image's configuration (``config.json``
relative to ``IMAGECONFIG``): GitHub's code scanning refuses a whole file if one result has no
location. Everything comes from the report document.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from urllib.parse import quote

from auditor.dockerfile import DockerfileMap, parse_dockerfile
from auditor.report.formats import RenderContext

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
INFORMATION_URI = "https://auditor.invalid/"
IMAGE_ROOT = "IMAGEROOT"
IMAGE_CONFIG = "IMAGECONFIG"
FINGERPRINT_KEY = "auditorFinding/v1"
MAX_RELATED = 20
LEVELS = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}

# What a finding id that is not a pack's rule means (the inventory's and the linkage's own checks).
BUILTIN_FINDINGS = {
    "version-disagreement": "The version the image claims (Env, label or package) differs from the "
                            "version read from the library itself",
    "built-for-mismatch": "A framework was built for a different version of a numeric library than "
                          "the one in the image",
    "linkage-missing-library": "A library a consumer needs is not found by the dynamic loader",
    "linkage-loader-error": "The dynamic loader would fail to load a consumer",
    "linkage-built-for-mismatch": "A framework loads a different version of a numeric library than the "
                                  "one it was built for",
    "linkage-mixed-versions": "Consumers load different versions of the same numeric library",
    "linkage-ld-library-path-override": "LD_LIBRARY_PATH makes the loader pick a different copy of a "
                                        "numeric library",
    "driver-library-in-image": "The image carries CUDA driver libraries that should come from the host",
    "python-version-not-pep440": "A Python package's version is not a PEP 440 version",
    "ignore-expired": "An ignore-file entry is past its expiry date and no longer suppresses findings",
}


def render(document: dict[str, Any], context: RenderContext | None = None) -> str:
    """The document as a SARIF 2.1.0 log (JSON text)."""
    return json.dumps(build_sarif(document, context), indent=2) + "\n"


def build_sarif(document: dict[str, Any], context: RenderContext | None = None) -> dict[str, Any]:
    dockerfile = getattr(context, "dockerfile", None)
    text = getattr(context, "dockerfile_text", None)
    mapping = parse_dockerfile(text) if text is not None and dockerfile else None
    findings = list(document.get("findings") or [])
    suppressed = [s for s in document.get("suppressed") or [] if isinstance(s.get("finding"), dict)]
    rules, index = _descriptors(document, findings + [s["finding"] for s in suppressed])
    results = [_result(f, index, document, dockerfile, mapping) for f in findings]
    for entry in suppressed:
        result = _result(entry["finding"], index, document, dockerfile, mapping)
        ignore = entry.get("ignore") or {}
        suppression: dict[str, Any] = {"kind": "external", "status": "accepted"}
        if ignore.get("reason"):
            suppression["justification"] = ignore["reason"]
        extra = {k: ignore[k] for k in ("expires", "source", "rule") if ignore.get(k)}
        if extra:
            suppression["properties"] = extra
        result["suppressions"] = [suppression]
        results.append(result)
    image = document.get("image") or {}
    reference = document.get("reference") or {}
    run_properties: dict[str, Any] = {
        "image": {"reference": reference.get("canonical") or reference.get("input"),
                  "digest": image.get("digest"), "imageId": image.get("image_id"),
                  "platform": image.get("platform")},
    }
    rules_doc = document.get("rules") or {}
    if rules_doc:
        run_properties["rules"] = {
            "packs": [f"{p['name']}@{p['version']}" for p in rules_doc.get("packs") or []],
            "evaluated": rules_doc.get("evaluated", 0), "fired": len(rules_doc.get("fired") or []),
            "passed": len(rules_doc.get("passed") or []),
            "notEvaluable": len(rules_doc.get("not_evaluable") or [])}
    if document.get("gate"):
        run_properties["gate"] = document["gate"]
    invocation: dict[str, Any] = {"executionSuccessful": True}
    notifications = [
        {"level": "note", "message": {"text": f"Rule {item['rule']} could not be evaluated: "
                                              + "; ".join(item.get("reasons") or ["no reason given"])},
         "associatedRule": {"id": item["rule"], "index": index[item["rule"]]}}
        for item in rules_doc.get("not_evaluable") or [] if item.get("rule") in index]
    if notifications:
        invocation["toolExecutionNotifications"] = notifications
    run: dict[str, Any] = {
        "tool": {"driver": {"name": "auditor", "version": str(document.get("auditor_version") or "0"),
                            "informationUri": INFORMATION_URI, "rules": rules}},
        "invocations": [invocation],
        "originalUriBaseIds": {IMAGE_ROOT: {"uri": "file:///",
                                            "description": {"text": "the image's root filesystem"}},
                               IMAGE_CONFIG: {"description": {"text": "the image's configuration "
                                                                      "(its config blob)"}}},
        "results": results,
        "columnKind": "unicodeCodePoints",
        "properties": run_properties,
    }
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}


def _descriptors(document: dict[str, Any],
                 findings: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """One reporting descriptor per evaluated rule (in the order evaluated), then per other finding
    id (in the order found); and each id's index."""
    by_id: dict[str, list[dict[str, Any]]] = {}
    for f in findings:
        by_id.setdefault(f["id"], []).append(f)
    rules: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for result in (document.get("rules") or {}).get("results") or []:
        if result["rule"] not in index:
            index[result["rule"]] = len(rules)
            rules.append(_descriptor(result["rule"], by_id.get(result["rule"], []), result))
    for rule_id, group in by_id.items():
        if rule_id not in index:
            index[rule_id] = len(rules)
            rules.append(_descriptor(rule_id, group, None))
    return rules, index


def _descriptor(rule_id: str, findings: list[dict[str, Any]],
                result: dict[str, Any] | None) -> dict[str, Any]:
    with_rule = next((f for f in findings if f.get("rule")), None)
    rule = with_rule["rule"] if with_rule else None
    severity = (result or {}).get("severity") or (findings[0]["severity"] if findings else "medium")
    title = ((result or {}).get("title") or (rule or {}).get("title")
             or BUILTIN_FINDINGS.get(rule_id) or _humanise(rule_id))
    result = result or {}
    effect = result.get("effect") or (rule or {}).get("effect") or title
    references = [r for r in result.get("references") or (rule or {}).get("references") or []
                  if isinstance(r, str)]
    remediation = result.get("remediation") or next(
        (f["remediation"] for f in findings if f.get("remediation")), None)
    pack = result.get("pack") or (rule or {}).get("pack")
    components = sorted({f["component"] for f in findings if f.get("component")})
    descriptor: dict[str, Any] = {
        "id": rule_id,
        "name": _pascal(rule_id),
        "shortDescription": {"text": title},
        "fullDescription": {"text": _sentence(effect)},
        "help": _help(effect, remediation, references),
        "defaultConfiguration": {"level": LEVELS.get(severity, "warning")},
    }
    if references:
        descriptor["helpUri"] = references[0]
    properties: dict[str, Any] = {
        "severity": severity,
        "tags": sorted({*(["rule", pack.split("@", 1)[0]] if pack else ["builtin"]), *components}),
    }
    if pack:
        properties["pack"] = pack
    confidence = result.get("confidence") or (rule or {}).get("confidence")
    if confidence:
        properties["confidence"] = confidence
    if result:
        properties["status"] = result.get("status")
    descriptor["properties"] = properties
    return descriptor


def _help(effect: str, remediation: str | None, references: list[str]) -> dict[str, str]:
    text = [_sentence(effect)]
    markdown = [_sentence(effect)]
    if remediation:
        text.append(f"Remediation: {remediation}")
        markdown.append(f"**Remediation:** {remediation}")
    if references:
        text.append("References:\n" + "\n".join(f"- {r}" for r in references))
        markdown.append("**References:**\n\n" + "\n".join(f"- <{r}>" for r in references))
    return {"text": "\n\n".join(text), "markdown": "\n\n".join(markdown)}


def _result(finding: dict[str, Any], index: dict[str, int], document: dict[str, Any],
            dockerfile: str | None, mapping: DockerfileMap | None) -> dict[str, Any]:
    message = finding["message"]
    if finding.get("remediation"):
        message = f"{message.rstrip()} Fix: {finding['remediation']}"
    locations: list[dict[str, Any]] = []
    if mapping is not None and dockerfile:
        located = dockerfile_line(finding, mapping, document)
        if located is not None:
            line, why = located
            locations.append({
                "physicalLocation": {"artifactLocation": {"uri": file_uri(dockerfile)},
                                     "region": {"startLine": line}},
                "message": {"text": why}})
    if finding.get("path"):
        locations.append({"physicalLocation": {"artifactLocation": image_location(finding["path"])}})
    for e in finding.get("evidence") or []:  # an expired ignore entry: its line in the ignore file
        match = re.match(r"^(.+):(\d+)$", str(e.get("source") or ""))
        if e.get("kind") == "ignore-file" and match and int(match.group(2)) > 0:
            locations.append({"physicalLocation": {"artifactLocation": {"uri": file_uri(match.group(1))},
                                                   "region": {"startLine": int(match.group(2))}}})
            break
    rule = finding.get("rule") or {}
    out: dict[str, Any] = {
        "ruleId": finding["id"],
        "ruleIndex": index[finding["id"]],
        "level": LEVELS.get(finding["severity"], "warning"),
        "message": {"text": message},
    }
    if not locations:  # code scanning takes no result without one: the image's configuration
        locations.append({
            "physicalLocation": {"artifactLocation": {"uri": "config.json",
                                                      "uriBaseId": IMAGE_CONFIG}},
            "message": {"text": "the image's configuration: no file of the image holds this"
                                + ("" if dockerfile else ", and no --dockerfile was given")}})
    out["locations"] = locations
    others = [p for p in finding.get("locations") or [] if p and p != finding.get("path")]
    if others:
        out["relatedLocations"] = [
            {"id": n, "physicalLocation": {"artifactLocation": image_location(p)}}
            for n, p in enumerate(others[:MAX_RELATED], start=1)]
    out["partialFingerprints"] = {FINGERPRINT_KEY: fingerprint(finding)}
    properties: dict[str, Any] = {"severity": finding["severity"], "component": finding["component"]}
    for key in ("version", "fixed_in"):
        if finding.get(key) is not None:
            properties[key] = finding[key]
    if finding.get("assumptions"):
        properties["assumptions"] = list(finding["assumptions"])
    if rule.get("pack"):
        properties["pack"] = rule["pack"]
    if len(others) > MAX_RELATED:
        properties["moreLocations"] = len(others) - MAX_RELATED
    out["properties"] = properties
    return out


def fingerprint(finding: dict[str, Any]) -> str:
    """A stable hash of what identifies a finding across runs: rule, component, version, path."""
    parts = [finding.get("id"), finding.get("component"), finding.get("version"), finding.get("path")]
    return hashlib.sha256("\0".join(str(p or "") for p in parts).encode()).hexdigest()[:32]


def image_location(path: str) -> dict[str, Any]:
    return {"uri": quote(path.lstrip("/"), safe="/+@=,:~!$&'()*;"), "uriBaseId": IMAGE_ROOT}


def file_uri(path: str) -> str:
    """``--dockerfile`` as given, as a URI reference: relative stays relative (code scanning resolves
    it against the checkout); absolute becomes ``file://``."""
    posix = path.replace("\\", "/")
    while posix.startswith("./"):
        posix = posix[2:]
    if re.match(r"^[A-Za-z]:/", posix):  # a Windows drive
        return "file:///" + quote(posix, safe="/:")
    if posix.startswith("/"):
        return "file://" + quote(posix, safe="/")
    return quote(posix, safe="/")


def dockerfile_line(finding: dict[str, Any], mapping: DockerfileMap,
                    document: dict[str, Any]) -> tuple[int, str] | None:
    """The Dockerfile line behind a finding, and why: the ENV that sets a variable its evidence
    names; else the RUN that installed its package; else the final FROM (where an ENV for a
    variable the Dockerfile does not set would go)."""
    env_names = [e["source"].split(":", 1)[1] for e in finding.get("evidence") or []
                 if e.get("kind") == "env" and str(e.get("source", "")).startswith("Env:")]
    for name in env_names:
        if name in mapping.env:
            return mapping.env[name], f"sets {name}"
    # a finding about a file in the image points at what installed it; one about the environment
    # alone (no path) at where an ENV would go
    for name in package_names(finding, document) if finding.get("path") or not env_names else ():
        line = mapping.package_line(name)
        if line is not None:
            return line, f"installs {name}"
    if mapping.final_from is None:
        return None
    if env_names:
        return mapping.final_from, f"the final stage, which does not set {', '.join(env_names)}"
    return mapping.final_from, "the final stage's base image"


def package_names(finding: dict[str, Any], document: dict[str, Any]) -> list[str]:
    """The packages a finding is about, as their package managers name them."""
    names: list[str] = []
    evidence = list(finding.get("evidence") or [])
    path = finding.get("path")
    for lib in document.get("numeric_stack") or []:
        if path and lib.get("path") == path and lib.get("package"):
            names.append(_package_name(lib["package"]))
    for fw in document.get("frameworks") or []:
        if path and fw.get("path") == path:
            evidence.extend(fw.get("evidence") or [])
    for e in evidence:
        if e.get("kind") == "package" and e.get("source"):
            names.append(_package_name(e["source"]))
        elif e.get("kind") == "metadata" and e.get("value"):
            names.append(str(e["value"]).split()[0])
    return list(dict.fromkeys(n for n in names if n))


def _package_name(spec: str) -> str:
    """``deb:libcudnn8@8.1.0.77-1`` (or a purl) -> ``libcudnn8``."""
    _, sep, rest = spec.partition(":")
    return (rest if sep else spec).split("@", 1)[0].rsplit("/", 1)[-1]


def _pascal(rule_id: str) -> str:
    name = "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", rule_id))
    return name or "Finding"


def _humanise(rule_id: str) -> str:
    return rule_id.replace("-", " ").capitalize()


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else f"{text}."
