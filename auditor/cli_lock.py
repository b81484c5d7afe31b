"""`auditor lock REF -o DIR` (a pinned, digest-locked rebuild recipe, `--fix` applying the
findings' fixes) and `auditor lock --verify DIR` (rebuild it with the engine and compare)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from auditor.cli_common import (
    _err_console,
    _parse_env,
    cache_option,
    handle_errors,
    limit_options,
    rules_option,
)
from auditor.errors import EXIT_FINDINGS, InputError

SOURCE_AUDIT = "source-audit.json"


@click.command("lock")
@click.argument("reference", required=False)
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), default=None,
              help="The recipe's directory (Dockerfile.lock, requirements.lock, apt.lock, lock.json).")
@click.option("--force", is_flag=True, help="Replace an existing output directory.")
@click.option("--dry-run", is_flag=True, help="Print the files that would be written; write nothing.")
@click.option("--base", "base_reference", metavar="REF",
              help="The base image to prove (its layers must lead the image's) and start FROM by "
                   "digest [default: the image's org.opencontainers.image.base.* annotations].")
@click.option("--name", "source_name", metavar="NAME",
              help="The name the image is published under, for FROM NAME@DIGEST when no base is "
                   "proved [default: its registry or engine name; localhost/TAG for a file].")
@click.option("--apt-source", "apt_sources", multiple=True, metavar="LINE",
              help="An apt sources line to install from instead of the dated snapshot archive, "
                   "e.g. 'deb [trusted=yes] http://127.0.0.1:8000/ ./'. Repeatable.")
@click.option("--index-url", default="https://pypi.org/simple", show_default=True,
              help="The Python package index (simple API) for versions and hashes.")
@click.option("--extra-index-url", "extra_index_urls", multiple=True, metavar="URL",
              help="More indexes, e.g. https://download.pytorch.org/whl/cu121. Repeatable.")
@click.option("--fix", is_flag=True,
              help="Apply the fired rules' fixes (component upgrades) to the recipe, citing each.")
@click.option("--verify", "verify_dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="Rebuild the recipe in DIR with the engine, audit it and compare with the source.")
@click.option("--build-network", default=None, metavar="MODE",
              help="Network of the --verify build's containers (e.g. host, to reach indexes on "
                   "loopback) [default: the engine's].")
@click.option("--platform", help="os/arch[/variant] to pick from an index [default: the host's].")
@click.option("--insecure", is_flag=True, help="Allow plain HTTP and unverified TLS for the registry.")
@click.option("--engine-host", help="Engine API address [default: DOCKER_HOST / CONTAINER_HOST].")
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE", callback=_parse_env,
              help="Set an environment variable over the image's Env for the audit. Repeatable.")
@rules_option
@limit_options
@cache_option
@handle_errors
def lock(reference: str | None, out_dir: str | None, force: bool, dry_run: bool,
         base_reference: str | None, source_name: str | None, apt_sources: tuple[str, ...],
         index_url: str, extra_index_urls: tuple[str, ...], fix: bool, verify_dir: str | None,
         build_network: str | None, **image_options: Any) -> None:
    """Write a recipe that rebuilds REF's software stack: the base by digest, OS packages at
    their exact versions from a dated archive snapshot, Python packages with hashes, the
    environment the findings ask for. `auditor lock --verify DIR` rebuilds and compares."""
    options = {"gpu_arch": (), "all_elf": False, **image_options}
    if verify_dir is not None:
        if reference or out_dir:
            raise InputError("--verify DIR takes no image and no -o (it rebuilds DIR's recipe)")
        _verify(Path(verify_dir), build_network, options)
        return
    if not reference:
        raise InputError("give the image to lock (auditor lock REF -o DIR), or --verify DIR")
    if out_dir is None and not dry_run:
        raise InputError("give the recipe's directory with -o DIR (or --dry-run)")
    for line in apt_sources:
        if not line.startswith(("deb ", "deb-src ")) or "'" in line or "\n" in line:
            raise InputError(f"--apt-source {line!r}: expected one sources line ('deb [options] URL SUITE "
                             "[COMPONENTS]') without quotes")
    if out_dir is not None and Path(out_dir).exists() and not force and not dry_run:
        raise InputError(f"{out_dir}: exists; give --force to replace it")
    _lock(reference, Path(out_dir) if out_dir else None, force, dry_run, base_reference, source_name,
          apt_sources, index_url, extra_index_urls, fix, options)


def _lock(reference: str, out_dir: Path | None, force: bool, dry_run: bool, base_reference: str | None,
          source_name: str | None, apt_sources: tuple[str, ...], index_url: str,
          extra_index_urls: tuple[str, ...], fix: bool, options: dict[str, Any]) -> None:
    from auditor.cli_diff import audit_document
    from auditor.lock.fix import add_finding_settings, apply_fixes
    from auditor.lock.index import apt_versions, hash_lookup
    from auditor.lock.output import print_recipe, write_recipe
    from auditor.lock.plan import LockOptions, base_candidate, check_apt_versions, plan_lock, prove_base
    from auditor.lock.writers import recipe_files
    from auditor.rules.pack import load_packs

    packs = load_packs(options["rule_specs"])
    fixes = {rule.id: rule.fix for pack in packs for rule in pack.rules if rule.fix}
    document = audit_document(reference, **options)
    candidate = base_reference or base_candidate(document)
    base_document = audit_document(candidate, **options) if candidate else None
    base = prove_base(document, base_document, candidate, source_name)
    lock_options = LockOptions(apt_sources=apt_sources, index_url=index_url,
                               extra_index_urls=extra_index_urls)
    hashes = hash_lookup(index_url, extra_index_urls)
    plan = plan_lock(document, base, base_document, lock_options, hashes)
    add_finding_settings(plan, document.get("findings") or [], fixes)
    if fix:
        apply_fixes(plan, document, fixes, hashes)
    if plan.sources.apt and any(p.kind == "deb" and (base.proved or p.fix) for p in plan.os_packages):
        check_apt_versions(plan, *apt_versions(plan.sources.apt))
    files = recipe_files(plan, lock_options.lock_date)
    files[SOURCE_AUDIT] = lambda: iter(json.dumps(document, indent=1).splitlines())
    if dry_run:
        print_recipe({k: v for k, v in files.items() if k != SOURCE_AUDIT}, sys.stdout)
    else:
        assert out_dir is not None
        write_recipe(files, out_dir, force)
    _summary(plan, out_dir if not dry_run else None)


def _summary(plan: Any, out_dir: Path | None) -> None:
    console = _err_console()
    where = f" in {out_dir}" if out_dir else ""
    console.print(f"lock{where}: FROM {plan.base.name}@{plan.base.digest[:19]}… "
                  f"({'proved' if plan.base.proved else 'not proved: the image itself'}); "
                  f"{len(plan.os_packages)} OS packages, {len(plan.python_packages)} Python packages, "
                  f"{len(plan.env)} env settings", markup=False)
    for change in plan.changes:
        console.print(f"fixed: {change.change}  ({change.finding})", markup=False)
    for item in plan.unlockable:
        version = f" {item.version}" if item.version else ""
        console.print(f"not locked: {item.kind} {item.name}{version}: {item.reason}", markup=False,
                      style="yellow")


def _verify(directory: Path, build_network: str | None, options: dict[str, Any]) -> None:
    from auditor.cli_diff import audit_document
    from auditor.lock.build import build_recipe
    from auditor.lock.verify import verify_rebuild

    try:
        lock_doc = json.loads((directory / "lock.json").read_text(encoding="utf-8"))
        source = json.loads((directory / SOURCE_AUDIT).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{directory}: not a recipe written by auditor lock ({err})") from None
    tag = build_recipe(directory, options.get("engine_host"), build_network)
    rebuilt = audit_document(f"docker-daemon:{tag}", **options)
    result = verify_rebuild(source, rebuilt, lock_doc)
    console = _err_console()
    for problem in result["problems"]:
        console.print(f"differs: {problem}", markup=False)
    if not result["ok"]:
        click.echo(f"auditor: lock --verify: the rebuilt {tag} differs from the source "
                   f"({len(result['problems'])} differences)", err=True)
        sys.exit(EXIT_FINDINGS)
    click.echo(f"lock --verify: {tag} rebuilt from {directory} has the source's numeric stack and "
               "package sets")
