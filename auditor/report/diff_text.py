"""The ``table`` and ``markdown`` formats of a diff document (``auditor/diff.py``)."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from auditor.report.table import SEVERITY_STYLE, short

PACKAGE_ROWS = 40  # the table lists this many package changes; the JSON has them all
MARKDOWN_PACKAGE_ROWS = 100
MESSAGE_CHARS = 300
ARROW = "→"


# -- shared wording ------------------------------------------------------------------------------
def summary_line(diff: dict[str, Any]) -> str:
    """One line: what changed, or that nothing did."""
    if diff["changes"]:
        text = "Changed: " + ", ".join(diff["changes"])
    elif diff.get("identical"):
        text = "No changes: the same image"
    else:
        text = "No changes in the numeric stack, frameworks, packages, env or base"
    findings = diff["findings"]
    text += (f". Findings: {len(findings['new'])} new, {len(findings['resolved'])} resolved, "
             f"{findings['unchanged']} unchanged.")
    return text


def _versions(values: list[str | None]) -> str:
    return ", ".join(v or "unknown" for v in values) or "absent"


def _loaded_text(side: dict[str, Any] | None) -> str:
    if side is None:
        return "not loaded"
    more = len(side["paths"]) - 1
    text = f"{side['version'] or 'unknown'} /{side['path']}"
    return text + (f" (+{more} more)" if more > 0 else "")


def _loaded_change(component: dict[str, Any]) -> str:
    old, new = component["loaded"]["old"], component["loaded"]["new"]
    if old is None and new is None:
        return "-"
    if old and new and old["paths"] == new["paths"] and old["versions"] == new["versions"]:
        return f"{_loaded_text(new)} (unchanged)"
    return f"{_loaded_text(old)} {ARROW} {_loaded_text(new)}"


def _framework_version(side: dict[str, Any] | None) -> str:
    return (side or {}).get("version") or "absent"


def _built_for(side: dict[str, Any] | None, keys: list[str] | None = None) -> str:
    if side is None:
        return "-"
    built = side.get("built_for") or {}
    chosen = keys if keys else sorted(k for k in built if k != "cuda_arch")
    return ", ".join(f"{k} {built.get(k) or 'none'}" for k in chosen) or "-"


def _package_rows(packages: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    rows = [("changed", p["type"], _pkg_name(p), p["old"], p["new"]) for p in packages["changed"]]
    rows += [("added", p["type"], _pkg_name(p), "", p["version"]) for p in packages["added"]]
    rows += [("removed", p["type"], _pkg_name(p), p["version"], "") for p in packages["removed"]]
    return rows


def _pkg_name(p: dict[str, Any]) -> str:
    return f"{p['name']}:{p['arch']}" if p.get("arch") else p["name"]


def _package_counts(packages: dict[str, Any]) -> str:
    c = packages["counts"]
    return (f"{c['changed']} changed, {c['added']} added, {c['removed']} removed "
            f"({c['old']} {ARROW} {c['new']} packages)")


def _unset(value: str | None) -> str:
    return "(unset)" if value is None else value


def _message(text: str | None, limit: int = MESSAGE_CHARS) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


# -- table -----------------------------------------------------------------------------------------
def render_table(diff: dict[str, Any], context: Any) -> str:
    """The ``table`` format as text: rich markup for a terminal, plain at a fixed width otherwise."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=None if context.terminal else (context.width or 132),
                      force_terminal=context.terminal,
                      color_system="auto" if context.terminal else None, highlight=False)
    _images(console, diff)
    _numeric(console, diff["numeric"])
    _frameworks(console, diff["frameworks"])
    _packages(console, diff["packages"])
    _env(console, diff["env"])
    _findings(console, diff["findings"])
    return buffer.getvalue()


def _images(console: Console, diff: dict[str, Any]) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_column(overflow="fold")
    grid.add_row("", Text("old", style="bold"), Text("new", style="bold"))
    old, new = diff["old"], diff["new"]
    for label, key in (("Reference", "reference"), ("Digest", "digest"), ("Image ID", "image_id"),
                       ("Platform", "platform"), ("OS", "os"), ("Layers", "layers")):
        a, b = old.get(key), new.get(key)
        style = "yellow" if key == "platform" and diff["platform_mismatch"] else ""
        grid.add_row(label, Text(str(a if a is not None else "-"), style=style),
                     Text(str(b if b is not None else "-"), style=style))
    console.print(Text("Images", style="bold underline"))
    console.print(grid)
    if diff["platform_mismatch"]:
        console.print(Text(f"Platform mismatch: {diff['platform_note']}", style="bold yellow"))
    base = diff["base"]
    console.print(Text.assemble(("Base ", "bold"), "changed: " if base["changed"] else "unchanged: ",
                                base["note"]))
    console.print(Text(summary_line(diff), style="bold"))


def _numeric_note(c: dict[str, Any]) -> str:
    if "loaded-copy" in c["why"]:
        return "a different file, whose version is known only as " + _versions(c["new"])
    return "" if c["changed"] else "same version, a different file"


def _numeric(console: Console, components: list[dict[str, Any]]) -> None:
    shown = [c for c in components if c["changed"] or c["moved"]]
    unchanged = ", ".join(f"{c['component']} {_versions(c['new'])}" for c in components if c not in shown)
    if not shown:
        console.print(Text.assemble(("Numeric stack ", "bold"), f"unchanged: {unchanged}" if unchanged
                                    else "none in either image"))
        return
    table = Table(title="Numeric stack changes", title_justify="left", title_style="bold")
    for column in ("component", "old", "new", "loaded copy (old → new)"):
        table.add_column(column, overflow="fold")
    for c in shown:
        note = _numeric_note(c)
        table.add_row(Text(c["component"], style="bold" if c["changed"] else "dim"), _versions(c["old"]),
                      _versions(c["new"]), _loaded_change(c) + (f"\n({note})" if note else ""))
    if unchanged:
        table.caption = "unchanged: " + unchanged
    console.print(table)


def _frameworks(console: Console, frameworks: list[dict[str, Any]]) -> None:
    changed = [f for f in frameworks if f["changed"]]
    if not changed:
        if frameworks:
            console.print(Text.assemble(("Frameworks ", "bold"), "unchanged: " + ", ".join(
                f"{f['name']} {_framework_version(f['new'])}" for f in frameworks)))
        return
    table = Table(title="Frameworks", title_justify="left", title_style="bold")
    for column in ("framework", "old", "new", "built for (old → new)"):
        table.add_column(column, overflow="fold")
    for f in changed:
        keys = f["built_for_changed"] or None
        built = (f"{_built_for(f['old'], keys)} {ARROW} {_built_for(f['new'], keys)}"
                 if f["built_for_changed"] else f"{_built_for(f['new'] or f['old'])} (unchanged)")
        table.add_row(f["name"], _framework_version(f["old"]), _framework_version(f["new"]), built)
    console.print(table)


def _packages(console: Console, packages: dict[str, Any]) -> None:
    rows = _package_rows(packages)
    if not rows:
        console.print(Text.assemble(("Packages ", "bold"), f"unchanged ({packages['counts']['new']})"))
        return
    table = Table(title=f"Packages: {_package_counts(packages)}", title_justify="left",
                  title_style="bold")
    for column in ("change", "type", "name", "old", "new"):
        table.add_column(column, overflow="fold")
    style = {"changed": "yellow", "added": "green", "removed": "red"}
    for row in rows[:PACKAGE_ROWS]:
        table.add_row(Text(row[0], style=style[row[0]]), *row[1:])
    if len(rows) > PACKAGE_ROWS:
        table.caption = f"{len(rows) - PACKAGE_ROWS} more in --format json"
    console.print(table)


def _env(console: Console, env: list[dict[str, Any]]) -> None:
    if not env:
        return
    table = Table(title="Env and labels", title_justify="left", title_style="bold")
    for column in ("kind", "name", "old", "new"):
        table.add_column(column, overflow="fold")
    for e in env:
        table.add_row(e["kind"], e["name"], _unset(e["old"]), _unset(e["new"]))
    console.print(table)


def _findings(console: Console, findings: dict[str, Any]) -> None:
    for title, rows, style in (("New findings", findings["new"], "bold red"),
                               ("Resolved findings", findings["resolved"], "bold green")):
        if not rows:
            continue
        table = Table(title=f"{title} ({len(rows)})", title_justify="left", title_style=style)
        for column in ("severity", "id", "component", "finding"):
            table.add_column(column, overflow="fold")
        for f in rows:
            table.add_row(Text(f["severity"], style=SEVERITY_STYLE.get(f["severity"], "")), f["id"],
                          f["component"], _message(f["message"]))
        console.print(table)


# -- markdown --------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    text = " ".join(str(value if value is not None else "-").split())
    return text.replace("\\", "\\\\").replace("|", "\\|") or "-"


def _code(value: str | None) -> str:
    return "`" + value.replace("`", "'") + "`" if value else "-"


def _md_loaded(side: dict[str, Any] | None) -> str:
    if side is None:
        return "not loaded"
    more = len(side["paths"]) - 1
    return (f"{_cell(side['version'] or 'unknown')} {_code('/' + side['path'])}"
            + (f" (+{more} more)" if more > 0 else ""))


def render_markdown(diff: dict[str, Any], _context: Any = None) -> str:
    """A PR comment: a summary line, the numeric changes, findings; packages and env folded."""
    old, new = diff["old"], diff["new"]
    lines = [f"### auditor diff: {_code(old['reference'])} {ARROW} {_code(new['reference'])}", ""]
    lines.append(f"Old {_code(short(old['digest'] or old['image_id'], 19))} ({_cell(old['platform'])}), "
                 f"new {_code(short(new['digest'] or new['image_id'], 19))} ({_cell(new['platform'])}).")
    lines.append("")
    if diff["platform_mismatch"]:
        lines += [f"> **Warning: platform mismatch:** {diff['platform_note']}.", ""]
    lines += [f"**{summary_line(diff)}**", ""]
    base = diff["base"]
    lines += [f"Base {'**changed**' if base['changed'] else 'unchanged'}: {base['note']}.", ""]

    numeric = [c for c in diff["numeric"] if c["changed"] or c["moved"]]
    frameworks = [f for f in diff["frameworks"] if f["changed"]]
    if numeric or frameworks:
        lines += [f"| component | old | new | loaded copy (old {ARROW} new) |", "|---|---|---|---|"]
        for c in numeric:
            lo, ln = c["loaded"]["old"], c["loaded"]["new"]
            loaded = "-" if lo is None and ln is None else f"{_md_loaded(lo)} {ARROW} {_md_loaded(ln)}"
            note = _numeric_note(c)
            name = (f"**{c['component']}**" if c["changed"] else c["component"]) + (
                f" ({note})" if note else "")
            lines.append(f"| {name} | {_cell(_versions(c['old']))} | {_cell(_versions(c['new']))} "
                         f"| {loaded} |")
        for f in frameworks:
            keys = f["built_for_changed"] or None
            built = (f"built for {_cell(_built_for(f['old'], keys))} {ARROW} "
                     f"{_cell(_built_for(f['new'], keys))}" if f["built_for_changed"] else "-")
            lines.append(f"| **{_cell(f['name'])}** (framework) | {_cell(_framework_version(f['old']))} "
                         f"| {_cell(_framework_version(f['new']))} | {built} |")
        lines.append("")
    else:
        lines += ["No change in the numeric stack or the frameworks.", ""]

    for title, rows in (("New findings", diff["findings"]["new"]),
                        ("Resolved findings", diff["findings"]["resolved"])):
        if rows:
            lines.append(f"**{title} ({len(rows)})**")
            lines.append("")
            lines += [f"- **{f['severity']}** {_code(f['id'])} ({_cell(f['component'])}): "
                      f"{_cell(_message(f['message']))}" for f in rows]
            lines.append("")

    packages = diff["packages"]
    rows = _package_rows(packages)
    if rows:
        lines += ["<details>", f"<summary>Packages: {_package_counts(packages)}</summary>", "",
                  "| change | type | name | old | new |", "|---|---|---|---|---|"]
        lines += [f"| {' | '.join(_cell(v) for v in row)} |" for row in rows[:MARKDOWN_PACKAGE_ROWS]]
        if len(rows) > MARKDOWN_PACKAGE_ROWS:
            lines += ["", f"{len(rows) - MARKDOWN_PACKAGE_ROWS} more in `--format json`."]
        lines += ["", "</details>", ""]
    if diff["env"]:
        lines += ["<details>", f"<summary>Env and labels: {len(diff['env'])} changed</summary>", "",
                  "| kind | name | old | new |", "|---|---|---|---|"]
        lines += [f"| {e['kind']} | {_code(e['name'])} | {_cell(_unset(e['old']))} "
                  f"| {_cell(_unset(e['new']))} |" for e in diff["env"]]
        lines += ["", "</details>", ""]
    return "\n".join(lines).rstrip("\n") + "\n"
