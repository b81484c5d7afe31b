"""The terminal rendering of a report document (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from auditor.model import SEVERITIES
from auditor.rootfs.decompress import format_size


def short(digest: str | None, n: int = 12) -> str:
    return digest.split(":", 1)[1][:n] if digest else "-"


def render_table_text(doc: dict[str, Any], context: Any) -> str:
    """The ``table`` format as text: rich markup for a terminal, plain at a fixed width otherwise."""
    import io

    buffer = io.StringIO()
    console = Console(file=buffer, width=None if context.terminal else (context.width or 132),
                      force_terminal=context.terminal, color_system="auto" if context.terminal else None,
                      highlight=False)
    render_table(doc, console)
    return buffer.getvalue()


def render_table(doc: dict[str, Any], console: Console) -> None:
    image = doc["image"]
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column(overflow="fold")
    os_info = doc.get("os") or {}
    rows = [
        ("Reference", doc["reference"]["canonical"]),
        ("Digest", _digest_text(image)),
        ("Index", image.get("index_digest")),
        ("Image ID", image["image_id"]),
        ("Platform", image["platform"]),
        ("OS", os_info.get("pretty_name") or os_info.get("id") or "unknown (no os-release)"),
        ("Created", image.get("created")),
        ("Size", f"{format_size(image['compressed_size'])} in {len(doc['layers'])} layers, "
                 f"{format_size(doc['rootfs']['file_bytes'])} of files"),
    ]
    source = image.get("source") or {}
    if source.get("repo_digests"):
        rows.append(("Repo digests", ", ".join(source["repo_digests"])))
    for key, value in rows:
        if value:
            summary.add_row(key, str(value))
    console.print(Text("Image", style="bold underline"))
    console.print(summary)
    _numeric_stack(console, doc.get("numeric_stack") or [])
    _frameworks(console, doc.get("frameworks") or [])
    _linkage(console, doc.get("linkage"))
    _findings(console, doc.get("findings") or [])
    _rules(console, doc.get("rules"))

    layers = Table(title="Layers", title_justify="left", show_lines=False, expand=False)
    for column, kw in (("#", {"justify": "right"}), ("digest", {}), ("size", {"justify": "right"}),
                       ("files", {"justify": "right"}), ("created by", {"overflow": "fold"})):
        layers.add_column(column, **kw)
    for layer in doc["layers"]:
        size = format_size(layer["size"])
        if layer.get("lazy"):  # read by its table of contents: say how little was fetched
            size += f" (lazy: {format_size(layer['lazy']['fetched_bytes'])} read)"
        layers.add_row(str(layer["index"]), short(layer["digest"]), size,
                       str(layer.get("files_visible", "")), (layer.get("created_by") or "")[:160])
    console.print(layers)

    config = doc["config"]
    if config:
        grid = Table(title="Config", title_justify="left", show_header=False)
        grid.add_column(style="bold")
        grid.add_column(overflow="fold")
        for key, value in config.items():
            grid.add_row(key, _config_value(value))
        console.print(grid)

    _packages(console, doc.get("packages") or [])
    rootfs = doc["rootfs"]
    counts = ", ".join(f"{n} {kind}" for kind, n in rootfs["entries"].items())
    console.print(Text.assemble(("Filesystem ", "bold"), f"{counts or 'empty'}; "
                                f"{rootfs['whiteouts_applied']} whiteouts applied; "
                                f"fingerprint {short(rootfs['fingerprint'], 16)}"))
    _problems(console, "Skipped entries", doc["skipped"], ("layer", "path", "reason"))
    _problems(console, "Unread files", doc["unknowns"], ("cataloger", "layer", "path", "reason"))


SEVERITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan",
                  "info": "dim"}


def _evidence_text(evidence: list[dict[str, Any]]) -> str:
    parts = []
    for e in evidence:
        value = e["value"] if len(e["value"]) <= 48 else e["value"][:45] + "..."
        parts.append(f"{e['kind']}: {value}")
    return "; ".join(parts)


def _numeric_stack(console: Console, libraries: list[dict[str, Any]]) -> None:
    table = Table(title="Numeric stack", title_justify="left", title_style="bold")
    for column in ("component", "version", "path", "evidence"):
        table.add_column(column, overflow="fold")
    for lib in libraries:
        table.add_row(lib["component"], lib["version"] or "unknown", lib["path"],
                      _evidence_text(lib["evidence"]))
    if not libraries:
        table.caption = "no GPU or CPU numeric libraries found"
    console.print(table)


def _frameworks(console: Console, frameworks: list[dict[str, Any]]) -> None:
    if not frameworks:
        return
    table = Table(title="Frameworks", title_justify="left", title_style="bold")
    for column in ("framework", "version", "built for", "path"):
        table.add_column(column, overflow="fold")
    for fw in frameworks:
        built = ", ".join(f"{k} {v}" for k, v in sorted(fw["built_for"].items())) or "-"
        table.add_row(fw["name"], fw["version"], built, fw["path"])
    console.print(table)


def _linkage(console: Console, linkage: dict[str, Any] | None) -> None:
    """One line per numeric component: the copy the consumers load, and the copies it beats."""
    if not linkage:
        return
    framework_of = {c["path"]: c["framework"] or c["path"] for c in linkage["consumers"]}
    by_component: dict[str, list[dict[str, Any]]] = {}
    for winner in linkage["numeric"]:
        by_component.setdefault(winner["loaded"]["component"], []).append(winner)
    llp = linkage["ld_library_path"]
    caption = (f"LD_LIBRARY_PATH={llp} (from {linkage['env_source']})" if llp else
               "no LD_LIBRARY_PATH")
    title = f"Linkage: what {len(linkage['consumers'])} consumers load"
    table = Table(title=title, title_justify="left", title_style="bold", caption=caption)
    for column in ("component", "version", "loaded", "found by", "by", "shadows"):
        table.add_column(column, overflow="fold")
    for component, winners in sorted(by_component.items()):
        versions = sorted({w["loaded"]["version"] or "unknown" for w in winners})
        files = sorted({w["loaded"]["path"] for w in winners}, key=lambda p: (len(p), p))
        loaded = "/" + files[0] + (f" (+{len(files) - 1} more)" if len(files) > 1 else "")
        hows = sorted({h for w in winners for h in w["how"]}) or ["already loaded"]
        users = sorted({framework_of.get(c, c) for w in winners for c in w["consumers"]})
        shadowed = {f"/{c['path']} ({c['version'] or '?'})" for w in winners
                    for c in w["shadowed"]}
        style = "red" if len(versions) > 1 else ""
        table.add_row(component, Text(", ".join(versions), style=style), loaded,
                      ", ".join(hows), ", ".join(users[:3]) + ("..." if len(users) > 3 else ""),
                      "\n".join(sorted(shadowed)[:3]) + ("\n..." if len(shadowed) > 3 else "")
                      or "-")
    if not by_component:
        table.caption = f"no numeric library loaded by a consumer; {caption}"
    console.print(table)


def _findings(console: Console, findings: list[dict[str, Any]]) -> None:
    if not findings:
        return
    table = Table(title=f"Findings ({len(findings)})", title_justify="left", title_style="bold")
    for column in ("severity", "id", "component", "finding"):
        table.add_column(column, overflow="fold")
    order = {name: i for i, name in enumerate(reversed(SEVERITIES))}
    for f in sorted(findings, key=lambda f: order.get(f["severity"], len(order))):
        text = Text(f["message"])
        if f.get("remediation"):
            text.append("\nfix: ", style="bold").append(f["remediation"])
        if f.get("rule") and f["rule"]["references"]:
            text.append("\nsource: ", style="bold").append(f["rule"]["references"][0], style="dim")
        table.add_row(Text(f["severity"], style=SEVERITY_STYLE.get(f["severity"], "")), f["id"],
                      f["component"], text)
    console.print(table)


def _rules(console: Console, rules: dict[str, Any] | None) -> None:
    if not rules:
        return
    packs = ", ".join(f"{p['name']}@{p['version']}" for p in rules["packs"]) or "none"
    line = Text.assemble(("Rules ", "bold"), f"{rules['evaluated']} evaluated from {packs}: "
                         f"{len(rules['fired'])} fired")
    if rules["not_evaluable"]:
        line.append(f", {len(rules['not_evaluable'])} not evaluable "
                    f"({', '.join(r['rule'] for r in rules['not_evaluable'])})", style="yellow")
    if rules["gpu_arch"]:
        line.append(f"; GPU {', '.join(rules['gpu_arch'])}")
    console.print(line)


def _packages(console: Console, packages: list[dict[str, Any]]) -> None:
    if not packages:
        return
    by_type: dict[str, int] = {}
    for p in packages:
        by_type[p["type"]] = by_type.get(p["type"], 0) + 1
    counts = ", ".join(f"{n} {t}" for t, n in sorted(by_type.items()))
    table = Table(title=f"Packages ({counts})", title_justify="left", title_style="bold")
    for column in ("type", "name", "version", "layer"):
        table.add_column(column, overflow="fold")
    for p in packages:
        table.add_row(p["type"], p["name"], p["version"], str(p.get("layer", "")))
    console.print(table)


def _digest_text(image: dict[str, Any]) -> str:
    if not image["digest"]:
        return "- (a docker save tarball has no manifest; the image ID identifies it)"
    if image.get("digest_source") == "engine-repo-digest":
        return f"{image['digest']} (recorded by the engine when it pulled the image)"
    return image["digest"]


def _config_value(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(str(v) for v in value) if value else "[]"
    if isinstance(value, dict):
        return "\n".join(f"{k}={v}" if v not in ({}, None) else str(k) for k, v in value.items())
    return str(value)


def _problems(console: Console, title: str, rows: list[dict[str, Any]], keys: tuple[str, ...],
              limit: int = 20) -> None:
    if not rows:
        return
    table = Table(title=f"{title} ({len(rows)})", title_justify="left", title_style="yellow")
    for key in keys:
        table.add_column(key, overflow="fold")
    for row in rows[:limit]:
        table.add_row(*(str(row.get(k, "")) for k in keys))
    if len(rows) > limit:
        table.caption = f"{len(rows) - limit} more in --format json"
    console.print(Group(table))
