"""`auditor rules …`: list, show, lint and test rule packs; draft rules from release notes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from auditor.cli_common import _output, handle_errors, output_options, rules_option
from auditor.errors import EXIT_FINDINGS, InputError


@click.group()
def rules() -> None:
    """List, show, lint and test rule packs; draft rules from vendor release notes."""


@rules.command("list")
@rules_option
@click.option("--all", "everything", is_flag=True, help="Include draft and retired rules.")
@output_options
@handle_errors
def rules_list(rule_specs: tuple[str, ...], everything: bool, fmt: str, output: str | None) -> None:
    """Every rule of the built-in packs (and --rules packs)."""
    from auditor.rules.pack import load_packs

    packs = load_packs(rule_specs)
    chosen = [(p, r) for p in packs for r in p.rules if everything or r.active]
    with _output(output) as out:
        if fmt == "json":
            out.write(json.dumps({
                "packs": [_pack_json(p) for p in packs],
                "rules": [{"id": r.id, "pack": p.ref, "status": r.status, "severity": r.severity,
                           "confidence": r.confidence, "components": list(r.components),
                           "title": r.title} for p, r in chosen]}, indent=2) + "\n")
            return
        console = _console(out, output)
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("id", "severity", "components", "pack", "title"):
            table.add_column(column, overflow="fold")
        for pack, rule in chosen:
            status = "" if rule.active else f" [{rule.status}]"
            table.add_row(rule.id + status, rule.severity, ",".join(rule.components), pack.ref, rule.title)
        console.print(table)
        console.print(f"{len(chosen)} rules in {len(packs)} packs: "
                      + ", ".join(f"{p.ref} ({p.date})" for p in packs))


@rules.command("show")
@click.argument("rule_id")
@rules_option
@output_options
@handle_errors
def rules_show(rule_id: str, rule_specs: tuple[str, ...], fmt: str, output: str | None) -> None:
    """One rule in full, as written in its pack."""
    import yaml

    from auditor.rules.pack import load_packs

    for pack in load_packs(rule_specs):
        for rule in pack.rules:
            if rule.id == rule_id:
                data = {"pack": pack.ref, "source": f"{rule.source}:{rule.line}", **rule.raw}
                with _output(output) as out:
                    if fmt == "json":
                        out.write(json.dumps(data, indent=2) + "\n")
                    else:
                        out.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100))
                return
    raise InputError(f"no rule {rule_id!r} in the packs (auditor rules list shows them)")


@rules.command("lint")
@click.argument("paths", nargs=-1, required=True)
@click.option("--alone", is_flag=True,
              help="Do not check rule ids against the built-in packs (a pack of the same name "
                   "as a built-in one always replaces it for this check).")
@handle_errors
def rules_lint(paths: tuple[str, ...], alone: bool) -> None:
    """Check pack files (or folders of *.yaml) against the schema, version schemes, regexes and
    rule-id uniqueness. Prints every problem as FILE:LINE: rule ID: message; exit 1 if any."""
    from auditor.rules.pack import builtin_pack_files, cross_pack_problems, pack_files, parse_packs

    files = [f for spec in paths for f in pack_files(spec)]
    packs, problems = parse_packs(files)
    linted = {p.name for p in packs}
    others: list = []  # first, so that a clash is reported at the linted file's line
    if not alone:
        others = [p for p in parse_packs(builtin_pack_files())[0] if p.name not in linted]
    problems.extend(cross_pack_problems(others + packs))
    for problem in problems:
        click.echo(str(problem))
    rules_count = sum(len(p.rules) for p in packs if p.name in linted)
    if problems:
        click.echo(f"{len(problems)} problems in {len(files)} pack files", err=True)
        sys.exit(EXIT_FINDINGS)
    click.echo(f"ok: {len(files)} pack files, {rules_count} rules", err=True)


@rules.command("test")
@click.argument("paths", nargs=-1)
@click.option("-v", "--verbose", is_flag=True, help="Print every case, not only failures.")
@handle_errors
def rules_test(paths: tuple[str, ...], verbose: bool) -> None:
    """Run every rule's embedded test cases (the built-in packs, or the packs at PATHS)."""
    from auditor.rules.pack import load_packs
    from auditor.rules.selftest import run_pack_cases

    packs = load_packs(paths, builtin=not paths)
    results = run_pack_cases(packs)
    failed = [r for r in results if not r.passed]
    for result in results:
        if verbose or not result.passed:
            mark = "ok  " if result.passed else "FAIL"
            click.echo(f"{mark} {result.name}: {result.detail}")
    rules_count = len({r.rule.id for r in results})
    click.echo(f"{len(results) - len(failed)}/{len(results)} cases passed, {rules_count} rules, "
               f"{len(packs)} packs", err=True)
    if failed or not results:
        sys.exit(EXIT_FINDINGS)


@rules.command("import-notes")
@click.argument("source")
@click.option("--component", required=True, type=click.Choice(("nccl", "cudnn", "cublas", "cuda")),
              help="Whose release notes SOURCE holds (for a CUDA toolkit page: cuda or cublas).")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Pack file to write the drafts to; an existing pack is extended, never "
                   "rewritten: its rules stay as they are [default: stdout].")
@rules_option
@click.option("--pack-name", default=None, help="Name of a new pack [default: COMPONENT-drafts].")
@handle_errors
def rules_import_notes(source: str, component: str, output: str | None, rule_specs: tuple[str, ...],
                       pack_name: str | None) -> None:
    """Draft rules (status: draft) from vendor release notes: a file or an http(s) URL of NCCL's
    release commit messages, or NVIDIA's HTML notes for cuDNN or the CUDA toolkit. Items that
    describe wrong results, nondeterminism, corruption, hangs or races become drafts; rules that
    exist already (in the built-in packs, --rules packs or OUTPUT) are skipped and reported."""
    import datetime

    from auditor.rules.drafts import append_drafts
    from auditor.rules.fetch import read_source
    from auditor.rules.notes import draft_pack_yaml, import_notes
    from auditor.rules.pack import load_packs, parse_pack

    existing = [r.raw for p in load_packs(rule_specs) for r in p.rules]
    target_text = None
    if output and Path(output).exists():
        target_text = Path(output).read_text(encoding="utf-8")
        pack, problems = parse_pack(target_text.encode(), output)
        if pack is None:
            raise InputError(f"cannot extend {output}: {problems[0]}")
        existing += [r.raw for r in pack.rules]
    result = import_notes(read_source(source), source, component, existing)
    for text, why in result.skipped:
        click.echo(f"skipped: {_clip(text)} — {why}", err=True)
    for text in result.unparsed:
        click.echo(f"could not parse: {text}", err=True)
    click.echo(f"{len(result.drafts)} draft rules from {result.releases} releases "
               f"({len(result.skipped)} items skipped)", err=True)
    if result.releases == 0:
        raise InputError(f"{source}: no {component} release notes found in it "
                         f"({'; '.join(result.unparsed) or 'unknown structure'})")
    if target_text is not None:
        if not result.drafts:
            return
        with _output(output) as out:
            out.write(append_drafts(target_text, result.drafts, output))
        return
    today = datetime.date.today()
    text = draft_pack_yaml(result.drafts, pack_name or f"{component}-drafts",
                           f"{today.year}.{today.month}.{today.day}", today.isoformat())
    with _output(output) as out:
        out.write(text)


def _clip(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _pack_json(pack: Any) -> dict[str, Any]:
    return {"name": pack.name, "version": pack.version, "date": pack.date, "source": pack.source,
            "sha256": pack.sha256, "rules": len(pack.rules)}


def _console(out: Any, output: str | None) -> Console:
    interactive = output is None and sys.stdout.isatty()
    return Console(file=out, width=None if interactive else 132,
                   force_terminal=None if output is None else False, highlight=False)
