"""The ``markdown`` format: a short report for a pull-request comment (GitHub-flavoured Markdown).

A heading (image reference, short digest), a one-line verdict, a table of the findings (the worst
first), then collapsed ``<details>`` sections: what to do per finding, the numeric stack, the
frameworks, suppressed findings, rules not evaluable, the packs. Text from the image is escaped so
it cannot break a table or inject markup; long lists are cut ("... and N more") so the comment stays
under ``MAX_BYTES`` (GitHub takes at most 65,536 characters).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from auditor.model import SEVERITIES
from auditor.report.formats import RenderContext

MAX_BYTES = 60_000
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")
_ESCAPE = re.compile(r"([\\`*\[\]<>|~])")
_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_URL = re.compile(r"^https?://[^\s<>`|\\]+$")


@dataclass(frozen=True)
class Limits:
    """How much of each list is shown; halved until the comment fits."""

    findings: int = 100
    remediation: int = 40
    stack: int = 60
    frameworks: int = 20
    suppressed: int = 40
    not_evaluable: int = 40
    packs: int = 40
    cell: int = 200

    def halved(self) -> Limits:
        return Limits(*(max(1, v // 2) for v in (self.findings, self.remediation, self.stack,
                                                  self.frameworks, self.suppressed,
                                                  self.not_evaluable, self.packs)),
                      cell=max(60, self.cell // 2))


def render(document: dict[str, Any], context: RenderContext | None = None) -> str:
    """The document as Markdown for a PR comment, at most ``MAX_BYTES`` of UTF-8."""
    limits = Limits()
    for _ in range(8):
        text = render_markdown(document, limits)
        if len(text.encode("utf-8")) <= MAX_BYTES:
            return text
        limits = limits.halved()
    note = "\n\n… (cut to fit a comment; see the JSON report for everything)\n"
    budget = MAX_BYTES - len(note.encode("utf-8")) - 200
    cut = text.encode("utf-8")[:budget].decode("utf-8", "ignore").rsplit("\n", 1)[0]
    unclosed = max(0, cut.count("<details>") - cut.count("</details>"))
    return cut + note + "\n</details>" * unclosed + ("\n" if unclosed else "")


def render_markdown(document: dict[str, Any], limits: Limits = Limits()) -> str:
    findings = sorted(document.get("findings") or [], key=lambda f: -_rank(f["severity"]))
    suppressed = [s for s in document.get("suppressed") or [] if isinstance(s.get("finding"), dict)]
    parts = [_heading(document), _verdict(document, findings, suppressed)]
    if findings:
        parts.append(_findings_table(findings, limits))
    sections = [
        _remediation(findings, limits),
        _stack(document, limits),
        _frameworks(document, limits),
        _suppressed(suppressed, limits),
        _not_evaluable(document, limits),
        _packs(document, limits),
    ]
    parts.extend(s for s in sections if s)
    parts.append(f"<sub>auditor {text(str(document.get('auditor_version') or ''))}</sub>")
    return "\n\n".join(parts) + "\n"


# -- pieces -------------------------------------------------------------------------------------

def _heading(document: dict[str, Any]) -> str:
    reference = document.get("reference") or {}
    image = document.get("image") or {}
    ref = reference.get("canonical") or reference.get("input") or "image"
    digest = image.get("digest") or image.get("image_id")
    line = f"### Image audit: {code(ref)}"
    if digest:
        line += f" ({code(_short(digest))})"
    facts = [image.get("platform"), ((document.get("os") or {}).get("pretty_name"))]
    facts = [text(str(f)) for f in facts if f]
    return line + ("\n\n" + " · ".join(facts) if facts else "")


def _verdict(document: dict[str, Any], findings: list[dict[str, Any]],
             suppressed: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for f in findings:
        counts[f["severity"]] = counts.get(f["severity"], 0) + 1
    if findings:
        by = ", ".join(f"{counts[s]} {s}" for s in reversed(SEVERITIES) if counts.get(s))
        line = f"**{len(findings)} finding{'s' if len(findings) != 1 else ''}** ({by})"
    else:
        line = "**No findings**"
    if suppressed:
        line += f", {len(suppressed)} suppressed"
    gate = document.get("gate")
    if isinstance(gate, dict):
        fail_on = gate.get("fail_on")
        if fail_on == "none" or fail_on is None:
            line += "; gate off (`--fail-on none`)"
        else:
            failing = gate.get("failing")
            state = "**failed**" if gate.get("failed") else "**passed**"
            line += f"; gate `--fail-on {text(str(fail_on))}` {state}"
            if failing is not None:
                line += f" ({failing} at {text(str(fail_on))} or above)"
        expired = gate.get("expired_entries")
        if expired:
            line += f"; {expired} ignore entr{'ies' if expired != 1 else 'y'} expired"
    return line + "."


def _findings_table(findings: list[dict[str, Any]], limits: Limits) -> str:
    rows = ["| Severity | Finding | Component | Version | Effect |", "|---|---|---|---|---|"]
    for f in findings[:limits.findings]:
        severity = f"**{f['severity']}**" if _rank(f["severity"]) >= _rank("high") else f["severity"]
        version = text(f["version"]) if f.get("version") else "—"
        if f.get("fixed_in"):
            version += f" → {text(f['fixed_in'])}"
        effect = (f.get("rule") or {}).get("effect") or f["message"]
        rows.append(f"| {severity} | {code(f['id'])} | {text(f['component'])} | {version} | "
                    f"{text(_shorten(effect, limits.cell))} |")
    return "\n".join(rows) + _more(len(findings), limits.findings, "findings")


def _remediation(findings: list[dict[str, Any]], limits: Limits) -> str:
    groups: dict[str, list[dict[str, Any]]] = {}
    for f in findings:
        groups.setdefault(f["id"], []).append(f)
    if not groups:
        return ""
    blocks = []
    for rule_id, group in list(groups.items())[:limits.remediation]:
        first = group[0]
        rule = first.get("rule") or {}
        title = f"#### {code(rule_id)}"
        if rule.get("title"):
            title += f": {text(_shorten(rule['title'], limits.cell))}"
        lines = [title, ""]
        for f in group[:10]:
            where = f" at {code('/' + f['path'].lstrip('/'))}" if f.get("path") else ""
            more = len([p for p in f.get("locations") or [] if p != f.get("path")])
            extra = f" (and {more} more file{'s' if more != 1 else ''})" if more else ""
            affects = text(f["component"]) + (f" {text(f['version'])}" if f.get("version") else "")
            fixed = f"; fixed in {text(f['fixed_in'])}" if f.get("fixed_in") else ""
            lines.append(f"- **{f['severity']}**: {affects}{where}{extra}{fixed}")
            if not f.get("rule"):
                lines.append(f"  - {text(_shorten(f['message'], limits.cell * 3))}")
        if len(group) > 10:
            lines.append(f"- … and {len(group) - 10} more")
        if rule.get("effect"):
            lines.append(f"- **Effect:** {text(_shorten(rule['effect'], limits.cell * 5))}")
        remediation = next((f["remediation"] for f in group if f.get("remediation")), None)
        if remediation:
            lines.append(f"- **Fix:** {text(_shorten(remediation, limits.cell * 5))}")
        assumptions = list(dict.fromkeys(a for f in group for a in f.get("assumptions") or []))
        for assumption in assumptions[:5]:
            lines.append(f"- **Applies if:** {text(_shorten(assumption, limits.cell * 5))}")
        references = (rule.get("references") or [])[:10]
        if references:
            lines.append("- **References:** " + ", ".join(link(r) for r in references))
        if rule.get("pack"):
            confidence = f" ({text(rule['confidence'])})" if rule.get("confidence") else ""
            lines.append(f"- **Rule:** {text(rule['pack'])}{confidence}")
        blocks.append("\n".join(lines))
    body = "\n\n".join(blocks) + _more(len(groups), limits.remediation, "findings", "see the full report")
    return _details(f"Remediation and references ({len(groups)})", body)


def _stack(document: dict[str, Any], limits: Limits) -> str:
    libraries = document.get("numeric_stack") or []
    if not libraries:
        return ""
    loaded_by = _loaded_by(document.get("linkage"))
    groups: list[tuple[str, str, list[str], list[str]]] = []  # component, version, users, paths
    for lib in libraries:
        users = loaded_by.get(lib["path"].lstrip("/"), [])
        version = lib.get("version") or "unknown"
        if groups and groups[-1][:3] == (lib["component"], version, users):
            groups[-1][3].append(lib["path"])
        else:
            groups.append((lib["component"], version, users, [lib["path"]]))
    rows = ["| Component | Version | Loaded by | Path |", "|---|---|---|---|"]
    for component, version, users, paths in groups[:limits.stack]:
        shown = ", ".join(text(u) for u in users[:3]) + (f" +{len(users) - 3}" if len(users) > 3 else "")
        more = f" (+{len(paths) - 1} more)" if len(paths) > 1 else ""
        rows.append(f"| {text(component)} | {text(version)} | {shown or '—'} | "
                    f"{code('/' + paths[0].lstrip('/'))}{more} |")
    body = "\n".join(rows) + _more(len(groups), limits.stack, "libraries")
    return _details(f"Numeric stack ({len(libraries)} librar{'ies' if len(libraries) != 1 else 'y'})",
                    body)


def _loaded_by(linkage: dict[str, Any] | None) -> dict[str, list[str]]:
    """Library path (relative) -> the frameworks (or consumer files) that load it."""
    if not linkage:
        return {}
    framework_of = {c["path"]: c.get("framework") or c["path"].rsplit("/", 1)[-1]
                    for c in linkage.get("consumers") or []}
    out: dict[str, list[str]] = {}
    for winner in linkage.get("numeric") or []:
        path = winner["loaded"]["path"].lstrip("/")
        users = out.setdefault(path, [])
        for consumer in winner.get("consumers") or []:
            name = framework_of.get(consumer) or consumer.rsplit("/", 1)[-1]
            if name not in users:
                users.append(name)
    return out


def _frameworks(document: dict[str, Any], limits: Limits) -> str:
    frameworks = document.get("frameworks") or []
    if not frameworks:
        return ""
    rows = ["| Framework | Version | Built for | Path |", "|---|---|---|---|"]
    for fw in frameworks[:limits.frameworks]:
        built = ", ".join(f"{k} {v}" for k, v in sorted((fw.get("built_for") or {}).items()))
        rows.append(f"| {text(fw['name'])} | {text(fw.get('version') or 'unknown')} | "
                    f"{text(_shorten(built, limits.cell)) or '—'} | {code('/' + fw['path'].lstrip('/'))} |")
    body = "\n".join(rows) + _more(len(frameworks), limits.frameworks, "frameworks")
    return _details(f"Frameworks ({len(frameworks)})", body)


def _suppressed(entries: list[dict[str, Any]], limits: Limits) -> str:
    if not entries:
        return ""
    rows = ["| Severity | Finding | Component | Reason | Expires | Source |", "|---|---|---|---|---|---|"]
    for entry in entries[:limits.suppressed]:
        f, ignore = entry["finding"], entry.get("ignore") or {}
        rows.append(f"| {f['severity']} | {code(f['id'])} | {text(f.get('component') or '')} | "
                    f"{text(_shorten(ignore.get('reason') or '', limits.cell))} | "
                    f"{text(str(ignore.get('expires') or '—'))} | {text(str(ignore.get('source') or '—'))} |")
    body = "\n".join(rows) + _more(len(entries), limits.suppressed, "suppressed findings")
    return _details(f"Suppressed ({len(entries)})", body)


def _not_evaluable(document: dict[str, Any], limits: Limits) -> str:
    items = (document.get("rules") or {}).get("not_evaluable") or []
    if not items:
        return ""
    lines = [f"- {code(item['rule'])}: {text(_shorten('; '.join(item.get('reasons') or []), 300))}"
             for item in items[:limits.not_evaluable]]
    body = "\n".join(lines) + _more(len(items), limits.not_evaluable, "rules")
    return _details(f"Rules not evaluable ({len(items)})", body)


def _packs(document: dict[str, Any], limits: Limits) -> str:
    rules = document.get("rules") or {}
    packs = rules.get("packs") or []
    if not packs:
        return ""
    summary = (f"{rules.get('evaluated', 0)} rules evaluated: {len(rules.get('fired') or [])} fired, "
               f"{len(rules.get('passed') or [])} passed, "
               f"{len(rules.get('not_evaluable') or [])} not evaluable.")
    if rules.get("gpu_arch"):
        summary += f" GPU architectures: {text(', '.join(rules['gpu_arch']))}."
    rows = ["| Pack | Version | Date | Rules | Source | SHA-256 |", "|---|---|---|---|---|---|"]
    for p in packs[:limits.packs]:
        rows.append(f"| {text(p['name'])} | {text(str(p.get('version') or ''))} | "
                    f"{text(str(p.get('date') or '—'))} | {p.get('rules', '')} | "
                    f"{code(str(p.get('source') or '—'))} | {code(str(p.get('sha256') or '')[:12] or '—')} |")
    body = summary + "\n\n" + "\n".join(rows) + _more(len(packs), limits.packs, "packs")
    return _details(f"Rule packs ({len(packs)})", body)


# -- escaping -----------------------------------------------------------------------------------

def text(value: str, limit: int = 1000) -> str:
    """Plain text for Markdown, safe in a table cell: one line, markup characters escaped."""
    value = " ".join(_CONTROL.sub("\ufffd", value).split())
    if len(value) > limit:
        value = value[:limit - 1] + "…"
    value = _ESCAPE.sub(r"\\\1", value)
    return _UNDERSCORE.sub(r"\\_", value)


def code(value: str, limit: int = 300) -> str:
    """An inline code span, safe in a table cell (``|`` escaped, backticks fenced around)."""
    value = " ".join(_CONTROL.sub("\ufffd", value).split())
    if len(value) > limit:
        value = value[:limit - 1] + "…"
    value = value.replace("|", "\\|")
    runs = [len(r) for r in re.findall(r"`+", value)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def link(url: str) -> str:
    """An autolink for an http(s) URL; anything else as code."""
    return f"<{url}>" if _URL.match(url) else code(url)


def _details(summary: str, body: str) -> str:
    return f"<details><summary>{summary}</summary>\n\n{body}\n\n</details>"


def _more(total: int, shown: int, what: str, where: str = "see the JSON report") -> str:
    return f"\n\n… and {total - shown} more {what} ({where})." if total > shown else ""


def _shorten(value: str, limit: int) -> str:
    value = " ".join(value.split())
    if len(value) <= limit:
        return value
    cut = value[:limit - 1].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + "…"


def _short(digest: str) -> str:
    algorithm, sep, hex_ = digest.partition(":")
    return f"{algorithm}:{hex_[:12]}" if sep else digest[:12]


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1
