"""The campaign document (``auditor/campaign/aggregate.py``) as one self-contained HTML page: the
summary, the matrix (targets x images), per model its levels, environments and accuracy plot, the
errors and the fleet. The plots are embedded as base64 ``data:`` URIs; there is no external CSS,
JavaScript or font, and a Content-Security-Policy forbids loading any. Every text from the
results (image names, references, errors) is HTML-escaped: it is untrusted."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from auditor.campaign.aggregate import LEVELS, SEVERITIES, TIMES
from auditor.campaign.markdown import accuracy, cell_text, level

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #1b1b1b; max-width: 80em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f3f7; }
td.ok { background: #eaf6ea; } td.partial { background: #fff6dd; } td.failed { background: #fbe5e5; }
td.yes { color: #1d6b1d; } td.no { color: #a01c1c; font-weight: bold; }
code { font-size: 0.95em; } img { max-width: 100%; border: 1px solid #ddd; }
section.model { margin-bottom: 2em; } .small { color: #555; font-size: 0.9em; }
"""


def e(value: Any) -> str:
    """Escaped text (quotes too: safe in attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render_html(document: Mapping[str, Any], plots: dict[str, Path]) -> str:
    """The HTML page; ``plots``: model name -> its PNG (embedded)."""
    name = e(document.get("name") or "-")
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
           f"<title>Campaign {name}</title><style>{STYLE}</style></head><body>",
           f"<h1>Campaign <code>{name}</code></h1>",
           "<ul>" + "".join(f"<li>{e(line)}</li>" for line in document.get("summary") or []) + "</ul>"]
    out += _matrix(document)
    models = document.get("models") or []
    if models:
        out.append("<h2>Models</h2>")
        out += [line for model in models for line in _model(model, plots.get(model["name"]))]
    errors = [(c, error) for c in document.get("matrix") or [] for error in c.get("errors") or []]
    if errors:
        out.append("<h2>Errors</h2><ul>")
        out += [f"<li><code>{e(c.get('target'))}</code> {TIMES} <code>{e(c.get('image'))}</code>: "
                f"{e(error)}</li>" for c, error in errors]
        out.append("</ul>")
    out += _fleet(document.get("fleet"))
    out.append(f'<p class="small">auditor {e(document.get("auditor_version"))}, '
               f'schema {e(document.get("schema"))} version {e(document.get("schema_version"))}</p>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _matrix(document: Mapping[str, Any]) -> list[str]:
    images = list(document.get("images") or [])
    cells = {(c.get("target"), c.get("image")): c for c in document.get("matrix") or []}
    out = ["<h2>Matrix</h2><table><tr><th>target</th>"
           + "".join(f"<th><code>{e(i)}</code></th>" for i in images) + "</tr>"]
    for target in document.get("targets") or []:
        row = []
        for image in images:
            cell = cells.get((target, image))
            row.append(f'<td class="{e(cell.get("status"))}">{e(cell_text(cell))}</td>' if cell
                       else "<td>-</td>")
        out.append(f"<tr><th><code>{e(target)}</code></th>{''.join(row)}</tr>")
    out.append("</table>")
    return out


def _model(model: Mapping[str, Any], plot: Path | None) -> list[str]:
    levels = model.get("levels") or {}
    out = [f'<section class="model"><h3><code>{e(model.get("name"))}</code></h3>',
           f"<p>{e(model.get('summary'))}</p>", "<table><tr>"
           + "".join(f"<th>{name}</th>" for name in LEVELS) + "</tr><tr>"]
    for name in LEVELS:
        holds = level((levels.get(name) or {}).get("holds"))
        evidence = "; ".join((levels.get(name) or {}).get("evidence") or [])
        out.append(f'<td class="{holds}">{holds}<div class="small">{e(evidence)}</div></td>')
    out.append("</tr></table>")
    if plot is not None and Path(plot).is_file():
        out.append(f'<img src="{data_uri(plot)}" alt="accuracy per environment of {e(model.get("name"))}">')
    out.append("<table><tr><th>environment</th><th>runs</th><th>accuracy</th><th>std</th></tr>")
    for env in model.get("environments") or []:
        out.append(f"<tr><td>{e(env.get('label'))}</td><td>{e(env.get('count'))}</td>"
                   f"<td>{e(accuracy(env))}</td><td>{_number(env.get('std'))}</td></tr>")
    out.append("</table>")
    spreads = [s for s in model.get("spreads") or [] if isinstance(s, Mapping)]
    if spreads:
        out.append("<table><tr><th>factor</th><th>spread</th><th>where</th></tr>")
        out += [f"<tr><td>{e(s.get('factor'))}</td><td>{_number(s.get('range'))}</td>"
                f"<td>{e(s.get('detail'))}</td></tr>" for s in spreads]
        out.append("</table>")
    out.append("</section>")
    return out


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) and not isinstance(value, bool) else "-"


def _fleet(fleet: Mapping[str, Any] | None) -> list[str]:
    if not fleet:
        return []
    out = ["<h2>Fleet</h2><table><tr><th>image</th><th>status</th>"
           + "".join(f"<th>{s}</th>" for s in SEVERITIES) + "<th>numeric stack</th></tr>"]
    for image in fleet.get("images") or []:
        findings = image.get("findings") or {}
        stack = ", ".join(f"{c.get('component')} {c.get('version') or '?'}"
                          for c in image.get("numeric_stack") or [])
        out.append(f'<tr><td><code>{e(image.get("image"))}</code></td><td class="{e(image.get("status"))}">'
                   f'{e(image.get("status"))}</td>'
                   + "".join(f"<td>{e(', '.join(findings.get(s) or [])) or '-'}</td>" for s in SEVERITIES)
                   + f"<td>{e(stack) or '-'}</td></tr>")
    out.append("</table>")
    shared = fleet.get("findings") or []
    if shared:
        out.append("<table><tr><th>finding</th><th>severity</th><th>images</th></tr>")
        out += [f"<tr><td><code>{e(f.get('id'))}</code></td><td>{e(f.get('severity'))}</td>"
                f"<td>{len(f.get('images') or [])}: {e(', '.join(f.get('images') or []))}</td></tr>"
                for f in shared]
        out.append("</table>")
    return out
