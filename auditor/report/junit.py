"""The ``junit`` format: JUnit XML, for CI systems that show test reports (GitLab, Jenkins, Azure).

One test suite per rule pack (``name@version``) with one test case per evaluated rule: a rule that
fired fails (one block per finding: message, fix, path), a rule that could not be evaluated is
skipped with the reasons, a rule that passed is a plain test case. Findings an ignore file covers
are skipped. The suite ``auditor.inventory`` holds one failing test case per finding that is not a
pack's rule (version disagreements, linkage problems). No timestamps: the same document gives the
same XML.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from auditor.model import SEVERITIES
from auditor.report.formats import RenderContext

INVENTORY_SUITE = "auditor.inventory"
MAX_ATTRIBUTE = 500
# Characters XML 1.0 cannot carry at all (a hostile image's paths may hold them).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def render(document: dict[str, Any], context: RenderContext | None = None) -> str:
    """The document as JUnit XML text."""
    root = build_junit(document)
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def build_junit(document: dict[str, Any]) -> ET.Element:
    rules = document.get("rules") or {}
    findings = list(document.get("findings") or [])
    suppressed = [s for s in document.get("suppressed") or [] if isinstance(s.get("finding"), dict)]
    live: dict[str, list[dict[str, Any]]] = {}
    for f in findings:
        live.setdefault(f["id"], []).append(f)
    quiet: dict[str, list[dict[str, Any]]] = {}
    for s in suppressed:
        quiet.setdefault(s["finding"]["id"], []).append(s)

    reference = document.get("reference") or {}
    root = ET.Element("testsuites", {"name": _clean(f"auditor {reference.get('canonical') or ''}".strip())})
    suites: dict[str, ET.Element] = {}
    for pack in rules.get("packs") or []:
        key = f"{pack['name']}@{pack['version']}"
        suites[key] = _suite(root, key, {"source": pack.get("source"), "sha256": pack.get("sha256"),
                                         "date": pack.get("date"), "rules": pack.get("rules")})
    seen: set[str] = set()
    for result in rules.get("results") or []:
        rule_id, pack = result["rule"], result.get("pack") or "unknown"
        seen.add(rule_id)
        suite = suites.get(pack) or suites.setdefault(pack, _suite(root, pack, {}))
        _rule_case(suite, pack, rule_id, result.get("title") or "", result.get("status"),
                   result.get("severity"), result.get("reasons") or [], live.get(rule_id, []),
                   quiet.get(rule_id, []))
    # Rule findings whose rule the document does not list among the results (an older document).
    for group in (live, quiet):
        for rule_id, items in group.items():
            first = items[0] if group is live else items[0]["finding"]
            if rule_id in seen or not first.get("rule"):
                continue
            seen.add(rule_id)
            pack = first["rule"].get("pack") or "unknown"
            suite = suites.get(pack) or suites.setdefault(pack, _suite(root, pack, {}))
            _rule_case(suite, pack, rule_id, first["rule"].get("title") or "", "fired", None, [],
                       live.get(rule_id, []), quiet.get(rule_id, []))

    image = document.get("image") or {}
    properties = {"reference": reference.get("canonical"), "digest": image.get("digest"),
                  "image_id": image.get("image_id"), "platform": image.get("platform"),
                  "auditor_version": document.get("auditor_version")}
    gate = document.get("gate")
    if isinstance(gate, dict):
        properties.update({"gate.fail_on": gate.get("fail_on"), "gate.failed": gate.get("failed")})
    inventory = _suite(root, INVENTORY_SUITE, properties)
    names: dict[str, int] = {}
    for f in findings:
        if f.get("rule"):
            continue
        case = ET.SubElement(inventory, "testcase", {"classname": INVENTORY_SUITE,
                                                     "name": _unique(names, f"{f['id']}: {f['component']}")})
        failure = ET.SubElement(case, "failure", {"message": _attr(f["message"]), "type": f["severity"]})
        failure.text = _clean(_finding_text(f))
    for s in suppressed:
        f = s["finding"]
        if f.get("rule"):
            continue
        case = ET.SubElement(inventory, "testcase", {"classname": INVENTORY_SUITE,
                                                     "name": _unique(names, f"{f['id']}: {f['component']}")})
        ET.SubElement(case, "skipped", {"message": _attr(_suppressed_message([s]))})

    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in root.findall("testsuite"):
        cases = suite.findall("testcase")
        counts = {"tests": len(cases),
                  "failures": sum(1 for c in cases if c.find("failure") is not None),
                  "errors": 0,
                  "skipped": sum(1 for c in cases if c.find("skipped") is not None)}
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
    for key, value in totals.items():
        root.set(key, str(value))
    return root


def _suite(root: ET.Element, name: str, properties: dict[str, Any]) -> ET.Element:
    suite = ET.SubElement(root, "testsuite", {"name": _clean(name)})
    present = {k: v for k, v in properties.items() if v is not None}
    if present:
        block = ET.SubElement(suite, "properties")
        for key, value in present.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            ET.SubElement(block, "property", {"name": key, "value": _attr(text)})
    return suite


def _rule_case(suite: ET.Element, pack: str, rule_id: str, title: str, status: str | None,
               severity: str | None, reasons: list[str], findings: list[dict[str, Any]],
               suppressed: list[dict[str, Any]]) -> None:
    name = f"{rule_id}: {title}" if title else rule_id
    case = ET.SubElement(suite, "testcase", {"classname": _clean(pack.split("@", 1)[0]),
                                             "name": _clean(name)})
    if findings:
        worst = max((f["severity"] for f in findings), key=_rank)
        summary = "; ".join(_affects(f) for f in findings)
        failure = ET.SubElement(case, "failure", {
            "message": _attr(f"{len(findings)} finding{'s' if len(findings) != 1 else ''}: {summary}"),
            "type": severity if severity and _rank(severity) >= _rank(worst) else worst})
        blocks = [_finding_text(f) for f in findings]
        if suppressed:
            blocks.append(_suppressed_message(suppressed))
        failure.text = _clean("\n\n".join(blocks))
    elif suppressed:
        ET.SubElement(case, "skipped", {"message": _attr(_suppressed_message(suppressed))})
    elif status == "not-evaluable":
        ET.SubElement(case, "skipped", {
            "message": _attr("not evaluable: " + ("; ".join(reasons) or "no reason given"))})
    elif status == "fired":  # fired, yet no finding in the document: still a failure
        ET.SubElement(case, "failure", {"message": "the rule fired", "type": severity or "medium"})


def _affects(f: dict[str, Any]) -> str:
    text = f["component"] + (f" {f['version']}" if f.get("version") else "")
    return text + (f" (fixed in {f['fixed_in']})" if f.get("fixed_in") else "")


def _finding_text(f: dict[str, Any]) -> str:
    lines = [f"[{f['severity']}] {f['message']}"]
    if f.get("remediation"):
        lines.append(f"Fix: {f['remediation']}")
    if f.get("fixed_in"):
        lines.append(f"Fixed in: {f['component']} {f['fixed_in']}")
    if f.get("path"):
        lines.append(f"Path: /{f['path'].lstrip('/')}")
    for assumption in f.get("assumptions") or []:
        lines.append(f"Assumes: {assumption}")
    for reference in (f.get("rule") or {}).get("references") or []:
        lines.append(f"See: {reference}")
    return "\n".join(lines)


def _suppressed_message(entries: list[dict[str, Any]]) -> str:
    parts = []
    for entry in entries:
        ignore, f = entry.get("ignore") or {}, entry["finding"]
        text = f"suppressed ({_affects(f)}): {ignore.get('reason') or 'no reason given'}"
        if ignore.get("expires"):
            text += f"; expires {ignore['expires']}"
        if ignore.get("source"):
            text += f"; from {ignore['source']}"
        parts.append(text)
    return "; ".join(parts)


def _unique(names: dict[str, int], name: str) -> str:
    names[name] = names.get(name, 0) + 1
    return _clean(name if names[name] == 1 else f"{name} #{names[name]}")


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


def _clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _attr(text: str) -> str:
    text = _clean(" ".join(text.split()))
    return text if len(text) <= MAX_ATTRIBUTE else text[:MAX_ATTRIBUTE - 1] + "…"
