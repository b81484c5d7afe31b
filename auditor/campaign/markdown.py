"""The campaign document (``auditor/campaign/aggregate.py``) as Markdown: the summary lines, the
matrix (targets x images) as a table, a table of models (accuracy range, what explains it, the
three levels, a link to its plot), the errors of failed cells, and the fleet. Every text from the
results (names, references, errors) is escaped: one line, ``|`` and markup characters escaped."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from auditor.campaign.aggregate import DASH, LEVELS, SEVERITIES, percent
from auditor.report.markdown import code, text


def level(value: Any) -> str:
    return "yes" if value is True else "no" if value is False else "-"


def accuracy(model: Mapping[str, Any]) -> str:
    low, high, spread = model.get("min"), model.get("max"), model.get("range")
    if not isinstance(low, int | float) or not isinstance(high, int | float):
        return "-"
    return f"{low:.4f}" if not spread else f"{low:.4f}{DASH}{high:.4f} ({percent(float(spread))})"


def cell_text(cell: Mapping[str, Any]) -> str:
    """One matrix cell in one line of plain words (not escaped)."""
    runs = cell.get("runs") or {}
    if cell.get("status") == "failed":
        return f"failed: {(cell.get('errors') or ['no usable report'])[0]}"
    parts = [f"{cell.get('status')}: {runs.get('ok', 0)}/{runs.get('total', 0)} runs ok"]
    if cell.get("findings"):
        parts.append(", ".join(f"{n} {s}" for s, n in cell["findings"].items() if n) or "no findings")
    odd = [f"{name} {verdict}" for name, verdict in sorted((cell.get("verdicts") or {}).items())
           if verdict not in ("identical", "insufficient")]
    parts.append("; ".join(odd) if odd else "all identical" if cell.get("verdicts") else "")
    return "; ".join(p for p in parts if p)


def render_markdown(document: Mapping[str, Any], plot_links: dict[str, str] | None = None) -> str:
    """The Markdown report; ``plot_links``: model name -> the plot's relative URL."""
    plot_links = plot_links or {}
    targets, images = list(document.get("targets") or []), list(document.get("images") or [])
    out = [f"# Campaign {code(str(document.get('name') or '-'))}", ""]
    out += [f"- {text(line)}" for line in document.get("summary") or []]
    cells = {(c.get("target"), c.get("image")): c for c in document.get("matrix") or []}
    out += ["", "## Matrix", "", "| target | " + " | ".join(code(i) for i in images) + " |",
            "|---|" + "---|" * len(images)]
    for target in targets:
        row = [text(cell_text(cells[(target, image)]), 300) if (target, image) in cells else "-"
               for image in images]
        out.append(f"| {code(target)} | " + " | ".join(row) + " |")
    models = document.get("models") or []
    if models:
        out += ["", "## Models", "",
                "| model | accuracy | runs | explained by | " + " | ".join(LEVELS) + " | plot |",
                "|---|---|---|---|" + "---|" * len(LEVELS) + "---|"]
        for model in models:
            levels = model.get("levels") or {}
            link = plot_links.get(model["name"])
            plot = f"[plot](<{link.replace('>', '%3E').replace('<', '%3C')}>)" if link else "-"
            out.append(f"| {code(model['name'])} | {accuracy(model)} | {model.get('count', 0)} | "
                       f"{text(', '.join(model.get('explained_by') or []) or '-')} | "
                       + " | ".join(level((levels.get(name) or {}).get("holds")) for name in LEVELS)
                       + f" | {plot} |")
    failed = [c for c in document.get("matrix") or [] if c.get("errors")]
    if failed:
        out += ["", "## Errors", ""]
        out += [f"- {code(str(c.get('target')))} \u00d7 {code(str(c.get('image')))}: {text(error)}"
                for c in failed for error in c["errors"]]
    out += _fleet(document.get("fleet"))
    return "\n".join(out) + "\n"


def _fleet(fleet: Mapping[str, Any] | None) -> list[str]:
    if not fleet:
        return []
    out = ["", "## Fleet", "", "| image | status | " + " | ".join(SEVERITIES) + " | numeric stack |",
           "|---|---|" + "---|" * len(SEVERITIES) + "---|"]
    for image in fleet.get("images") or []:
        findings = image.get("findings") or {}
        stack = ", ".join(f"{c['component']} {c.get('version') or '?'}"
                          for c in image.get("numeric_stack") or [])
        out.append(f"| {code(str(image.get('image')))} | {text(str(image.get('status')))} | "
                   + " | ".join(text(", ".join(findings.get(s) or [])) or "-" for s in SEVERITIES)
                   + f" | {text(stack) or '-'} |")
    shared = fleet.get("findings") or []
    if shared:
        out += ["", "| finding | severity | images |", "|---|---|---|"]
        out += [f"| {code(f['id'])} | {f['severity']} | {len(f['images'])}: {text(', '.join(f['images']))} |"
                for f in shared]
    return out
