"""The command line. Thin: parse options, call one function per command, render the result."""

from __future__ import annotations

import sys
from typing import Any

import click

from auditor import __version__
from auditor.cli_campaign import campaign
from auditor.cli_common import (
    FORMATS,
    _err_console,
    audit_options,
    audit_options_from,
    cache_option,
    handle_errors,
    prepare_gate,
    prepare_outputs,
    report,
)
from auditor.cli_diff import diff
from auditor.cli_lock import lock
from auditor.cli_probe import probe
from auditor.cli_rules import rules
from auditor.errors import EXIT_FINDINGS, InputError


class _OneLineUsage(click.UsageError):
    """A usage error as every other error is shown: one line on stderr (exit 2)."""

    def show(self, file: Any = None) -> None:
        click.echo(f"auditor: error: {self.format_message()}", err=True)


class _Main(click.Group):
    """The root group: usage errors of any command (a bad option value, an unknown option, a
    missing argument) come out as one line naming the command's --help, not click's usage
    block."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as err:
            raise _one_line(err) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as err:
            raise _one_line(err) from None


def _one_line(err: click.UsageError) -> click.UsageError:
    # a group without its command shows its help, as click does
    if isinstance(err, _OneLineUsage | click.exceptions.NoArgsIsHelpError):
        return err
    where = f" (see: {err.ctx.command_path} --help)" if err.ctx is not None else ""
    return _OneLineUsage(f"{err.format_message()}{where}", err.ctx)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="auditor")
def main() -> None:
    """Audit ML container images: what they hold, what they load, what is known to go wrong."""


main.add_command(rules)
main.add_command(diff)
main.add_command(probe)
main.add_command(lock)
main.add_command(campaign)


@main.command()
@click.argument("reference", required=False)
@audit_options
@handle_errors
def audit(reference: str | None, **options: Any) -> None:
    """Audit an image. REFERENCE is name[:tag][@digest], registry:REF, docker-archive:PATH,
    oci:DIR[:tag], oci-archive:PATH[:tag], docker-daemon:REF or podman:REF.
    Without one, audits the embedded demo image."""
    _run_audit(reference, **options)


@main.command()
@audit_options
@handle_errors
def demo(**options: Any) -> None:
    """Build the embedded demo image (offline, no engine) and audit it."""
    _run_audit(None, **options)


def _run_audit(reference: str | None, *, fmt: str, outputs: tuple[str, ...], fail_on: str,
               ignore_file: str | None, dockerfile: str | None, **image_options: Any) -> None:
    from auditor.audit import audit
    from auditor.demo import build_demo_image
    from auditor.progress import RichLayerProgress
    from auditor.report.document import build_document
    from auditor.report.formats import AUDIT_FORMATS
    from auditor.sources import BlobCache

    targets = prepare_outputs(fmt, outputs, AUDIT_FORMATS)
    gate_inputs = prepare_gate(ignore_file, dockerfile)
    options = audit_options_from(**image_options)
    ref: Any = reference
    if reference is None:
        ref = build_demo_image(BlobCache(options.cache_dir))
    with RichLayerProgress(_err_console()) as progress:
        result = audit(ref, options, progress)
    report("audit", build_document(result), targets, fail_on, gate_inputs)


@main.command("dockerfile")
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--fail-on", type=click.Choice(("critical", "high", "medium", "low", "none")),
              default="low", show_default=True, help="Exit 1 when a finding at or above this remains.")
@handle_errors
def dockerfile(paths: tuple[str, ...], fail_on: str) -> None:
    """Check Dockerfiles without building them (the pre-commit hook): a FROM without a digest,
    CUDA/cuDNN/NCCL/framework packages installed without an exact version. One line per finding,
    FILE:LINE: severity id: message."""
    from auditor.dockerfile import check_dockerfile
    from auditor.model import SEVERITIES
    from auditor.rules.fetch import read_source

    failing = 0
    for path in paths:
        try:
            text = read_source(path, 4 * 1024 * 1024).decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{path}: not UTF-8 text") from None
        for finding in check_dockerfile(text, path):
            click.echo(f"{finding.path}: {finding.severity} {finding.id}: {finding.message}")
            if fail_on != "none" and SEVERITIES.index(finding.severity) >= SEVERITIES.index(fail_on):
                failing += 1
    if failing:
        sys.exit(EXIT_FINDINGS)


@main.group()
def cache() -> None:
    """Inspect or prune the blob cache."""


@cache.command("info")
@cache_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@handle_errors
def cache_info(cache_dir: str | None, fmt: str) -> None:
    """Where the cache is and what it holds."""
    import json

    from auditor.rootfs.decompress import format_size
    from auditor.sources import BlobCache

    info = BlobCache(cache_dir).info()
    if fmt == "json":
        click.echo(json.dumps(info.__dict__, indent=2))
        return
    click.echo(f"cache: {info.path}")
    click.echo(f"blobs: {info.blobs} ({format_size(info.blob_bytes)})")
    click.echo(f"layer indexes: {info.layer_indexes} ({format_size(info.layer_index_bytes)})")
    click.echo(f"partial downloads: {info.partials} ({format_size(info.partial_bytes)})")


@cache.command("prune")
@cache_option
@click.option("--all", "everything", is_flag=True, help="Remove everything.")
@click.option("--older-than", type=float, default=None, metavar="DAYS",
              help="Remove entries not used for DAYS days.")
@handle_errors
def cache_prune(cache_dir: str | None, everything: bool, older_than: float | None) -> None:
    """Remove partial downloads, and unused entries (--older-than) or all (--all)."""
    from auditor.sources import BlobCache

    if older_than is not None and older_than < 0:
        raise InputError("--older-than takes a number of days >= 0")
    removed = BlobCache(cache_dir).prune(older_than, everything)
    click.echo(f"removed {removed} cache entries")



if __name__ == "__main__":  # pragma: no cover
    main()
