"""`auditor diff OLD NEW`: what an image change does to the numeric stack, and a gate on it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from auditor.cli_common import (
    _err_console,
    audit_options_from,
    handle_errors,
    image_options,
    prepare_outputs,
    report,
)
from auditor.diff import CATEGORIES
from auditor.errors import EXIT_FINDINGS, InputError
from auditor.report.formats import DIFF_FORMATS

IMAGE_HELP = ("OLD and NEW are image references, as `auditor audit` takes them (name[:tag][@digest], "
              "registry:REF, docker-archive:PATH, oci:DIR[:tag], oci-archive:PATH[:tag], "
              "docker-daemon:REF, podman:REF), or saved reports: an existing file holding the JSON of "
              "`auditor audit --format json` is read as it is, not audited again.")


def numeric_components() -> tuple[str, ...]:
    """The numeric components the inventory knows (each a --fail-on-change category)."""
    from auditor.inventory.numeric import CLASSIFIERS

    return tuple(c.name for c in CLASSIFIERS)


def _parse_fail_on_change(_ctx: click.Context, _param: click.Parameter,
                          value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    known = {name.lower(): name for name in (*CATEGORIES, *numeric_components())}
    out = []
    for item in filter(None, (v.strip() for v in value.split(","))):
        if item.lower() not in known:
            raise click.BadParameter(f"{item!r} is not a change category (one of "
                                     f"{', '.join(CATEGORIES)}, or a numeric component: "
                                     f"{', '.join(numeric_components())})")
        out.append(known[item.lower()])
    return tuple(dict.fromkeys(out))


@click.command("diff", help="What changes from image OLD to image NEW in the numeric stack (which "
               "cuDNN, cuBLAS, NCCL, CUDA... is present and which copy loads), frameworks, packages, "
               "numerically relevant Env and labels, the base layers, and findings.\n\n" + IMAGE_HELP
               + "\n\nExit codes: 0, or 1 when a --fail-on-change category changed; 2 input error; "
               "3 environment error.")
@click.argument("old")
@click.argument("new")
@click.option("--format", "fmt", type=click.Choice(DIFF_FORMATS), default="table", show_default=True,
              help="Diff format (markdown: for a pull request comment).")
@click.option("-o", "--output", "outputs", multiple=True, metavar="[FORMAT=]FILE",
              help="Write the diff to FILE (atomically): FORMAT=FILE for that format "
                   f"({', '.join(DIFF_FORMATS)}), plain FILE for --format. Repeatable.")
@click.option("--fail-on-change", "fail_on", metavar="LIST", callback=_parse_fail_on_change,
              help="Exit 1 when one of these comma-separated categories changed: "
                   + ", ".join(CATEGORIES) + " (new findings), or a numeric component's name "
                   "(cublasLt, cudart, nvrtc, ...). cublas covers cublas and cublasLt; cuda covers "
                   "cudart, nvrtc, nvjitlink and a framework's built-for CUDA.")
@image_options
@handle_errors
def diff(old: str, new: str, fmt: str, outputs: tuple[str, ...], fail_on: tuple[str, ...],
         **options: Any) -> None:
    from auditor.diff import describe_change, diff_documents

    targets = prepare_outputs(fmt, outputs, DIFF_FORMATS)
    old_doc = _document(old, options)
    new_doc = old_doc if new == old else _document(new, options)
    document = diff_documents(old_doc, new_doc)
    if document["platform_mismatch"]:
        click.echo(f"auditor: warning: {document['platform_note']}", err=True)
    report("diff", document, targets, "none", {})
    changed = {c.lower(): c for c in document["changes"]}
    hit = [changed[c.lower()] for c in fail_on if c.lower() in changed]
    if hit:
        reasons = "; ".join(describe_change(document, c) for c in hit)
        click.echo(f"auditor: diff: --fail-on-change {','.join(hit)}: {reasons}", err=True)
        sys.exit(EXIT_FINDINGS)


def load_report(argument: str) -> dict[str, Any] | None:
    """A saved report document, when ARGUMENT is a file holding one; None for an image reference."""
    path = Path(argument)
    try:
        if not path.is_file():
            return None
    except OSError:
        return None
    try:
        with path.open("rb") as f:
            head = f.read(1)
            if head.strip() not in (b"{", b""):  # not JSON: maybe a reference that names a file
                return None
            data = json.loads(head + f.read())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        if path.suffix == ".json":
            raise InputError(f"cannot read the report {argument}: {err}") from err
        return None
    if isinstance(data, dict) and "schema_version" in data and "findings" in data:
        return data
    if path.suffix == ".json":
        raise InputError(f"{argument} is JSON but not an auditor report (no schema_version and findings); "
                         "write one with `auditor audit --format json -o FILE`")
    return None


def _document(argument: str, options: dict[str, Any]) -> dict[str, Any]:
    report = load_report(argument)
    if report is not None:
        return report
    return audit_document(argument, **options)


def audit_document(reference: str, **image_options: Any) -> dict[str, Any]:
    """Audit one image with the command's image options; its report document."""
    from auditor.audit import audit
    from auditor.progress import RichLayerProgress
    from auditor.report.document import build_document

    with RichLayerProgress(_err_console()) as progress:
        result = audit(reference, audit_options_from(**image_options), progress)
    return build_document(result)
