"""What every command shares: option decorators (each option defined once), the one place that
turns errors into one line and an exit code, and the report plumbing (outputs, gate, render)."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click
from rich.console import Console

from auditor.errors import EXIT_FINDINGS, AuditorError, InputError
from auditor.report.outputs import open_output

FORMATS = ("table", "json")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    m = _SIZE_RE.match(text)
    if not m:
        raise click.BadParameter(f"{text!r} is not a size (examples: 512M, 64G)")
    power = " kmgt".index(m.group(2).lower() or " ")
    return int(float(m.group(1)) * 1024**power)


def _err_console() -> Console:
    return Console(stderr=True, highlight=False)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The one place that turns errors into one line on stderr and an exit code."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AuditorError as err:
            click.echo(f"auditor: error: {err}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("auditor: interrupted", err=True)
            sys.exit(130)
        except (click.ClickException, click.exceptions.Exit, SystemExit):
            raise
        except Exception as err:  # a bug: still one line, the traceback only on request
            if os.environ.get("AUDITOR_DEBUG"):
                raise
            click.echo(f"auditor: internal error: {err.__class__.__name__}: {err} "
                       "(set AUDITOR_DEBUG=1 for the traceback, and please report it)", err=True)
            sys.exit(70)

    return wrapper


# -- options, each defined once -------------------------------------------------------------
def output_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True),
                      help="Write the report to FILE (atomically) instead of stdout.")(fn)
    fn = click.option("--format", "fmt", type=click.Choice(FORMATS), default="table",
                      show_default=True, help="Report format.")(fn)
    return fn


def report_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Where the report goes and the CI gate: the same on every command that reports."""
    from auditor.gate import FAIL_ON
    from auditor.report.formats import AUDIT_FORMATS

    fn = click.option("-o", "--output", "outputs", multiple=True, metavar="[FORMAT=]FILE",
                      help="Write a report to FILE (atomically): FORMAT=FILE for that format "
                           f"({', '.join(AUDIT_FORMATS)}), plain FILE for --format. Repeatable; "
                           "with only FORMAT=FILE outputs, --format still goes to stdout.")(fn)
    fn = click.option("--format", "fmt", type=click.Choice(AUDIT_FORMATS), default="table",
                      show_default=True, help="Report format for stdout (or a plain -o FILE).")(fn)
    fn = click.option("--fail-on", type=click.Choice(FAIL_ON), default="none", show_default=True,
                      help="Exit 1 when a finding at or above this severity remains after "
                           "--ignore-file.")(fn)
    fn = click.option("--ignore-file", type=click.Path(dir_okay=False), default=None,
                      help="YAML of reviewed, expiring exceptions (rule, component, version, "
                           "reason, expires); an expired entry no longer suppresses and is reported.")(fn)
    fn = click.option("--dockerfile", type=click.Path(dir_okay=False), default=None,
                      help="The Dockerfile the image was built from: SARIF results point at the "
                           "ENV/FROM line behind a finding.")(fn)
    return fn


def cache_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--cache-dir", type=click.Path(file_okay=False), envvar="AUDITOR_CACHE_DIR",
                        help="Blob cache directory [default: $XDG_CACHE_HOME/auditor].")(fn)


def limit_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for decl, help_text in (
        ("--max-layer-size", "Largest uncompressed layer to read [default: 64G]."),
        ("--max-file-size", "Largest file handed to a cataloger [default: 64M]."),
    ):
        fn = click.option(decl, type=str, default=None, help=help_text)(fn)
    fn = click.option("--max-ratio", type=float, default=None,
                      help="Largest compression ratio of a layer [default: 200].")(fn)
    fn = click.option("--max-entries", type=int, default=None,
                      help="Most tar entries in one layer [default: 2000000].")(fn)
    fn = click.option("--jobs", "-j", type=click.IntRange(min=0), default=0,
                      help="Layers read at once [default: 0, one per core, at most 3]; 1 reads "
                           "them one after another. Each read in flight holds ~60 MB.")(fn)
    return fn


def audit_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`auditor audit`'s and `demo`'s options: the image options and the report's."""
    return image_options(report_options(fn))


def image_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """How an image is read and audited (audit_options_from takes them): every command that
    audits images declares them here, once."""
    fn = click.option("--platform", help="os/arch[/variant] to pick from an index "
                      "[default: the host's].")(fn)
    fn = click.option("--insecure", is_flag=True,
                      help="Allow plain HTTP and unverified TLS for the registry.")(fn)
    fn = click.option("--keep-layers/--no-keep-layers", default=True,
                      help="Keep registry layers in the blob cache as they download (a cut "
                           "download resumes; other catalogers need no second download) "
                           "[default: keep]. With --no-keep-layers they stream through the pass "
                           "and only the per-layer results are cached.")(fn)
    fn = click.option("--engine-host", envvar=None,
                      help="Engine API address for docker-daemon:/podman: references "
                           "[default: DOCKER_HOST / CONTAINER_HOST].")(fn)
    fn = click.option("--env", "env", multiple=True, metavar="NAME=VALUE", callback=_parse_env,
                      help="Set an environment variable over the image's Env for the audit "
                           "(LD_LIBRARY_PATH decides linkage); NAME= sets it empty. "
                           "Repeatable.")(fn)
    fn = click.option("--all-elf", is_flag=True,
                      help="Resolve the linkage of every ELF file, not only the frameworks'.")(fn)
    fn = click.option("--gpu-arch", "gpu_arch", multiple=True, metavar="sm_NN", callback=_parse_gpu_arch,
                      help="The GPU architecture the image will run on (sm_80 for A100, sm_90 for "
                           "H100), for rules that depend on it; repeatable, or comma-separated. "
                           "Without it such rules state the GPU as an assumption.")(fn)
    fn = rules_option(fn)
    return limit_options(cache_option(verify_option(lazy_option(fn))))


def verify_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--verify-diff-ids", is_flag=True,
                        help="Also hash each compressed layer's content against the diff_id its "
                             "config claims, as containerd does when it unpacks (a SHA-256 of "
                             "every uncompressed byte). Blobs are always checked against their "
                             "digests.")(fn)


def lazy_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--lazy", is_flag=True,
                        help="Read zstd:chunked and eStargz layers by their table of contents: "
                             "fetch only the chunks catalogers read (HTTP Range), each checked "
                             "against the table, the table against the manifest's annotation. "
                             "The blob's own digest is then not "
                             "checked, nor the tar an engine would unpack; the report marks such "
                             "layers. Other layers are read whole.")(fn)


def rules_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--rules", "rule_specs", multiple=True, metavar="PATH|URL#sha256=HEX",
                        help="An extra rule pack: a YAML file, a folder of them, or an https URL "
                             "pinned by the pack's sha256. Repeatable.")(fn)


def _parse_gpu_arch(_ctx: click.Context, _param: click.Parameter,
                    values: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for value in values:
        for arch in filter(None, (v.strip() for v in value.split(","))):
            if not re.fullmatch(r"sm_[0-9]+[a-z]?", arch):
                raise click.BadParameter(f"{arch!r} is not a GPU architecture (expected sm_NN, e.g. sm_80)")
            out.append(arch)
    return tuple(out)


def _parse_env(_ctx: click.Context, _param: click.Parameter,
               values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    out = []
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise click.BadParameter(f"{item!r} is not NAME=VALUE")
        out.append((name, value))
    return tuple(out)




def audit_options_from(*, cache_dir: str | None, platform: str | None, insecure: bool,
                       engine_host: str | None, env: tuple[tuple[str, str], ...],
                       gpu_arch: tuple[str, ...], rule_specs: tuple[str, ...], all_elf: bool = False,
                       max_layer_size: str | None = None, max_file_size: str | None = None,
                       max_ratio: float | None = None, max_entries: int | None = None,
                       verify_diff_ids: bool = False, keep_layers: bool = True,
                       lazy: bool = False, jobs: int = 0) -> Any:
    """The AuditOptions the image options of a command ask for."""
    from auditor.audit import AuditOptions
    from auditor.model import parse_platform
    from auditor.rootfs.decompress import Limits
    from auditor.sources import SourceOptions

    overrides: dict[str, Any] = {}
    if max_layer_size:
        overrides["max_layer_bytes"] = parse_size(max_layer_size)
    if max_file_size:
        overrides["max_capture_bytes"] = parse_size(max_file_size)
    if max_ratio:
        overrides["max_ratio"] = max_ratio
    if max_entries:
        overrides["max_entries"] = max_entries
    return AuditOptions(platform=parse_platform(platform) if platform else None,
                        cache_dir=cache_dir, limits=dataclasses.replace(Limits(), **overrides),
                        source=SourceOptions(insecure=insecure, engine_host=engine_host,
                                             keep_layers=keep_layers),
                        env=env, all_elf=all_elf, gpu_arch=gpu_arch, rules=rule_specs,
                        verify_diff_ids=verify_diff_ids, lazy=lazy, jobs=jobs)


def prepare_outputs(fmt: str, outputs: tuple[str, ...], formats: tuple[str, ...]) -> list[Any]:
    """The -o targets, checked before any work (bad names, same file twice, unwritable)."""
    from auditor.report.outputs import check_writable, parse_outputs

    targets = parse_outputs(fmt, outputs, formats)
    check_writable(targets)
    return targets


def prepare_gate(ignore_file: str | None, dockerfile: str | None) -> dict[str, Any]:
    """The ignore entries and the Dockerfile's text, read (and checked) before any work."""
    from auditor.gate import load_ignore_file
    from auditor.rules.fetch import read_source

    text = None
    if dockerfile:
        try:
            text = read_source(dockerfile, 4 * 1024 * 1024).decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{dockerfile}: not UTF-8 text") from None
    return {"ignores": load_ignore_file(ignore_file) if ignore_file else [],
            "dockerfile": dockerfile, "dockerfile_text": text}


def report(kind: str, document: dict[str, Any], targets: list[Any], fail_on: str,
           gate_inputs: dict[str, Any]) -> None:
    """Apply the ignore file and the gate, render every target, write them, and exit 1 when
    the gate fails (after everything is written)."""
    import datetime
    import shutil

    from auditor.gate import apply_gate
    from auditor.report.formats import RenderContext, render
    from auditor.report.outputs import write_text

    if kind == "audit":
        document = apply_gate(document, gate_inputs["ignores"], fail_on, datetime.date.today())
    texts = []
    for target in targets:
        terminal = target.path is None and sys.stdout.isatty()
        context = RenderContext(terminal=terminal,
                                width=shutil.get_terminal_size().columns if terminal else 132,
                                dockerfile=gate_inputs.get("dockerfile"),
                                dockerfile_text=gate_inputs.get("dockerfile_text"))
        texts.append((target.path, render(kind, target.format, document, context)))
    for path, text in texts:
        write_text(path, text)
    gate = document.get("gate") or {}
    if gate.get("failed"):
        click.echo(f"auditor: gate: {gate['failing']} findings at or above {gate['fail_on']}", err=True)
        sys.exit(EXIT_FINDINGS)



_output = open_output  # one atomic writer for every command
