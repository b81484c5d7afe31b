"""The probe report (``auditor/probe/compare.py``'s document) as a terminal table and as Markdown:
per model its verdict and the three reproducibility levels (outcome: identical outputs; analysis:
metrics within tolerance; interpretation: the same conclusions), then kernels, failures and the
cross-check findings."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

VERDICT_STYLE = {"identical": "green", "within-tolerance": "cyan", "diverged": "bold red",
                 "insufficient": "dim"}
LEVELS = ("outcome", "analysis", "interpretation")


def _level(value: dict[str, Any] | None) -> str:
    holds = (value or {}).get("holds")
    return "yes" if holds else "no" if holds is False else "-"


def _accuracy(model: dict[str, Any]) -> str:
    stats = (model.get("metrics") or {}).get("accuracy") or {}
    low, high = stats.get("min"), stats.get("max")
    if not isinstance(low, int | float) or not isinstance(high, int | float):
        return "-"
    return f"{low:.4f}" if low == high else f"{low:.4f} to {high:.4f} ({(high - low) * 100:.1f} %)"


def render_table(document: dict[str, Any], context: Any) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=None if context.terminal else (context.width or 132),
                      force_terminal=context.terminal, highlight=False,
                      color_system="auto" if context.terminal else None)
    image = document.get("image") or {}
    counts = document.get("counts") or {}
    console.print(Text.assemble(("Probe ", "bold"), str(image.get("reference") or "-"),
                                f"  {counts.get('successful', 0)}/{counts.get('runs', 0)} runs ok, "
                                f"{counts.get('groups', 0)} configurations, "
                                f"{counts.get('sources', 0)} sources"))
    models = Table(title="Models", title_justify="left", title_style="bold")
    for column in ("model", "verdict", "accuracy", *LEVELS):
        models.add_column(column, overflow="fold")
    for model in document.get("models") or []:
        verdict = model.get("verdict") or "-"
        levels = model.get("levels") or {}
        models.add_row(model["name"], Text(verdict, style=VERDICT_STYLE.get(verdict, "")), _accuracy(model),
                       *(_level(levels.get(level)) for level in LEVELS))
    console.print(models)
    kernels = document.get("kernels") or []
    if kernels:
        table = Table(title="Kernels", title_justify="left", title_style="bold")
        table.add_column("kernel")
        table.add_column("verdict")
        for kernel in kernels:
            verdict = kernel.get("verdict") or "-"
            table.add_row(kernel.get("name", "-"), Text(verdict, style=VERDICT_STYLE.get(verdict, "")))
        console.print(table)
    for line in document.get("summary") or []:
        console.print(f"- {line}", markup=False)
    for failure in document.get("failures") or []:
        console.print(Text(f"failed: {_failure(failure)}", style="yellow"))
    for finding in document.get("findings") or []:
        console.print(Text(f"{finding['severity']} {finding['id']}: {_finding(finding)}", style="yellow"))
    for note in document.get("notes") or []:
        console.print(Text(f"note: {note}", style="dim"))
    return buffer.getvalue()


def _finding(finding: dict[str, Any]) -> str:
    runs = finding.get("runs") or []
    where = f" (run{'s' if len(runs) > 1 else ''} {', '.join(map(str, runs))})" if runs else ""
    return f"{finding['message']}{where}"


def _failure(failure: dict[str, Any]) -> str:
    where = failure.get("where")
    run = failure.get("run")
    head = f"run {run}" if run is not None else "a run"
    return f"{head}{' ' + where if where else ''}: {failure.get('error')}"


def render_markdown(document: dict[str, Any], _context: Any) -> str:
    image = document.get("image") or {}
    counts = document.get("counts") or {}
    out = [f"### Probe: `{image.get('reference') or '-'}`", "",
           f"{counts.get('successful', 0)}/{counts.get('runs', 0)} runs ok in "
           f"{counts.get('groups', 0)} configurations from {counts.get('sources', 0)} sources.", "",
           "| Model | Verdict | Accuracy | Outcome | Analysis | Interpretation |",
           "|---|---|---|---|---|---|"]
    for model in document.get("models") or []:
        levels = model.get("levels") or {}
        out.append(f"| `{model['name']}` | {model.get('verdict') or '-'} | {_accuracy(model)} | "
                   + " | ".join(_level(levels.get(level)) for level in LEVELS) + " |")
    out.append("")
    out.extend("- " + line.replace("|", "\\|") for line in document.get("summary") or [])
    failures = document.get("failures") or []
    findings = document.get("findings") or []
    if failures or findings:
        out += ["", "<details><summary>Failures and cross-check findings</summary>", ""]
        out += [f"- {_failure(f)}" for f in failures]
        out += [f"- **{f['severity']}** `{f['id']}`: {_finding(f)}" for f in findings]
        out += ["", "</details>"]
    return "\n".join(out) + "\n"
