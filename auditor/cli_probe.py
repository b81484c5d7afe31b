"""`auditor probe REF` (run the payload in the image, repeat, vary, classify) and
`auditor probe compare A.json B.json …` (classify reports from several machines together)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from auditor.cli_common import _err_console, _parse_env, cache_option, handle_errors, prepare_outputs, report
from auditor.errors import EXIT_FINDINGS, InputError
from auditor.report.formats import PROBE_FORMATS

_ENGINE_PREFIXES = {"docker-daemon:": "docker", "docker:": "docker", "podman:": "podman"}


class _RunByDefault(click.Group):
    """`auditor probe REF …` runs the probe; `auditor probe compare …` compares reports."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0] in self.commands:
            return super().resolve_command(ctx, args)
        return "run", self.commands["run"], args


def probe_report_options(fn: Any) -> Any:
    fn = click.option("-o", "--output", "outputs", multiple=True, metavar="[FORMAT=]FILE",
                      help="Write the report to FILE (atomically): FORMAT=FILE for that format "
                           f"({', '.join(PROBE_FORMATS)}), plain FILE for --format. Repeatable.")(fn)
    fn = click.option("--format", "fmt", type=click.Choice(PROBE_FORMATS), default="table",
                      show_default=True, help="Report format for stdout (or a plain -o FILE).")(fn)
    fn = click.option("--claim", "claims", multiple=True, metavar="EXPR",
                      help="A conclusion that must hold in every run (interpretation level), e.g. "
                           "'torch.bilstm.accuracy > torch.dense.accuracy'. Repeatable.")(fn)
    fn = click.option("--tolerance", "tolerances", multiple=True, metavar="GLOB=abs:X|rel:X",
                      help="Tolerance per metric, e.g. '*.accuracy=abs:0.01'. Repeatable.")(fn)
    fn = click.option("--force", is_flag=True,
                      help="Compare with baselines of another image or schema anyway.")(fn)
    fn = click.option("--fail-on-divergence", is_flag=True,
                      help="Exit 1 when a model or kernel diverged (beyond tolerance).")(fn)
    return fn


@click.group("probe", cls=_RunByDefault)
def probe() -> None:
    """Run deterministic reference models inside an image (no network), repeat them in fresh
    containers and under variations, and say how well results reproduce: `auditor probe REF`
    (REF: an image in the engine: NAME, docker-daemon:NAME or podman:NAME), or
    `auditor probe compare A.json B.json …` for reports from several machines."""


@probe.command("run", hidden=True)
@click.argument("reference")
@click.option("--repeats", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Fresh containers per configuration.")
@click.option("--vary", multiple=True, metavar="KEY=V1,V2",
              help="A variation: threads=1,2, seed=0,1, deterministic=true,false, or env.NAME=a,b "
                   "(e.g. env.OPENBLAS_CORETYPE=Haswell,Prescott). Several make a matrix.")
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE", callback=_parse_env,
              help="Set a variable in every container (after the image's own Env), e.g. "
                   "LD_LIBRARY_PATH=/opt/blas as a scheduler's module system would. Repeatable.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(1, 4096), default=None, help="Threads in every run.")
@click.option("--nondeterministic", is_flag=True,
              help="Leave the frameworks' deterministic switches off.")
@click.option("--models", default=None, help="Comma-separated model names (default: all), e.g. numpy.mlp.")
@click.option("--gpu", is_flag=True,
              help="Give the containers the GPUs (Docker device requests, podman CDI).")
@click.option("--timeout", type=float, default=600, show_default=True, help="Seconds per container.")
@click.option("--baseline", "baselines", multiple=True, type=click.Path(dir_okay=False),
              help="An earlier probe report (JSON) to compare with. Repeatable.")
@click.option("--crosscheck/--no-crosscheck", default=True, show_default=True,
              help="Also audit the image and compare what the runs mapped with the linkage.")
@click.option("--engine-host", default=None,
              help="Engine API address [default: DOCKER_HOST / CONTAINER_HOST].")
@probe_report_options
@cache_option
@handle_errors
def probe_run(reference: str, repeats: int, vary: tuple[str, ...], env: tuple[tuple[str, str], ...],
              seed: int, threads: int | None, nondeterministic: bool, models: str | None, gpu: bool,
              timeout: float,
              baselines: tuple[str, ...], crosscheck: bool, engine_host: str | None, fmt: str,
              outputs: tuple[str, ...], claims: tuple[str, ...], tolerances: tuple[str, ...],
              force: bool, fail_on_divergence: bool, cache_dir: str | None) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from auditor.probe.compare import classify, load_baseline, parse_claim, parse_tolerance
    from auditor.probe.runner import ProbeConfig, parse_variations, run_matrix
    from auditor.sources.engine import connect_engine

    targets = prepare_outputs(fmt, outputs, PROBE_FORMATS)
    for claim in claims:
        parse_claim(claim)
    for tolerance in tolerances:
        parse_tolerance(tolerance)
    variations = parse_variations(vary)
    baseline_docs = [(path, _read_json(path)) for path in baselines]
    engine, name = _engine_image(reference)
    client, _host = connect_engine(engine, engine_host)
    image = _image_facts(client, name, reference)
    base = ProbeConfig(seed=seed, device="gpu" if gpu else "cpu", threads=threads,
                       deterministic=not nondeterministic, env=tuple(dict(env).items()),
                       models=tuple(m.strip() for m in models.split(",") if m.strip()) if models else None)
    total = repeats * max(1, len(variations))
    with Progress(TextColumn("probe {task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=_err_console(), transient=True) as bar:
        task = bar.add_task(image["reference"], total=total)
        results = run_matrix(client, name, base, repeats, variations, gpu=gpu, timeout=timeout,
                             progress=lambda _r: bar.advance(task))
    runs = [{**r.as_dict(), "source": "this machine"} for r in results]
    for path, doc in baseline_docs:
        runs += load_baseline(doc, name=Path(path).name, digest=image.get("digest"), force=force)
    document = classify(runs, image=image, tolerances=tolerances, claims=claims)
    if crosscheck and any(r.ok for r in results):
        engine_ref = f"{'podman' if engine == 'podman' else 'docker-daemon'}:{name}"
        document["findings"] = _crosscheck(engine_ref, engine_host, cache_dir, results)
    _report_and_gate(document, targets, fail_on_divergence)


@probe.command("compare")
@click.argument("reports", nargs=-1, required=True, type=click.Path(dir_okay=False))
@probe_report_options
@handle_errors
def probe_compare(reports: tuple[str, ...], fmt: str, outputs: tuple[str, ...], claims: tuple[str, ...],
                  tolerances: tuple[str, ...], force: bool, fail_on_divergence: bool) -> None:
    """Classify probe reports (JSON) from several runs or machines together; the first is the
    reference."""
    from auditor.probe.compare import compare_reports

    targets = prepare_outputs(fmt, outputs, PROBE_FORMATS)
    docs = [_read_json(path) for path in reports]
    document = compare_reports(docs, force, names=[Path(p).name for p in reports],
                               tolerances=tolerances or None, claims=claims or None)
    _report_and_gate(document, targets, fail_on_divergence)


def _report_and_gate(document: dict[str, Any], targets: list[Any], fail_on_divergence: bool) -> None:
    report("probe", document, targets, "none", {})
    diverged = [r["name"] for r in [*(document.get("models") or []), *(document.get("kernels") or [])]
                if r.get("verdict") == "diverged"]
    if fail_on_divergence and diverged:
        click.echo(f"auditor: probe: diverged: {', '.join(diverged)}", err=True)
        sys.exit(EXIT_FINDINGS)


def _read_json(path: str) -> dict[str, Any]:
    from auditor.rules.fetch import read_source

    try:
        data = json.loads(read_source(path, 256 * 1024 * 1024))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not a JSON probe report ({err})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a probe report (a JSON object is expected)")
    return data


def _engine_image(reference: str) -> tuple[str, str]:
    for prefix, engine in _ENGINE_PREFIXES.items():
        if reference.startswith(prefix):
            return engine, reference[len(prefix):]
    if reference.startswith(("oci:", "oci-archive:", "docker-archive:", "registry:")):
        raise InputError(f"{reference}: the probe runs images in an engine; load or pull it there "
                         "first (podman load, docker pull) and give its name")
    return "docker", reference


def _image_facts(client: Any, name: str, reference: str) -> dict[str, Any]:
    import docker

    try:
        image = client.images.get(name)
    except docker.errors.ImageNotFound:
        raise InputError(f"{reference}: no such image in the engine (pull or load it first)") from None
    except docker.errors.APIError as err:
        raise InputError(f"{reference}: the engine refused: {err.explanation or err}") from None
    repo_digests = image.attrs.get("RepoDigests") or []
    digest = repo_digests[0].split("@", 1)[1] if len(repo_digests) == 1 and "@" in repo_digests[0] else None
    return {"reference": reference, "digest": digest, "image_id": image.id}


def _crosscheck(reference: str, engine_host: str | None, cache_dir: str | None,
                results: list[Any]) -> list[dict[str, Any]]:
    """What the runs mapped and what the frameworks reported, against a static audit of the
    same image (its linkage and inventory)."""
    from auditor.audit import AuditOptions, audit
    from auditor.probe.compare import crosscheck_maps, crosscheck_versions
    from auditor.sources import SourceOptions

    options = AuditOptions(cache_dir=cache_dir, source=SourceOptions(engine_host=engine_host))
    result = audit(reference, options)
    inventory = result.inventory
    predicted: dict[str, list[str]] = {}
    needed_by: dict[str, set[str]] = {}
    if inventory.linkage is not None:
        framework_of = {c.linkage.consumer: c.framework for c in inventory.linkage.consumers}
        for winner in inventory.linkage.winners:
            if winner.loaded.component:
                predicted.setdefault(winner.loaded.component, []).append(winner.loaded.file)
                needed_by.setdefault(winner.loaded.component, set()).update(
                    f for f in (framework_of.get(c) for c in winner.consumers) if f)
    versions: dict[str, list[str]] = {}
    for lib in inventory.libraries:
        if lib.version:
            versions.setdefault(lib.component, []).append(lib.version)
    for fw in inventory.frameworks:
        if fw.version:
            versions.setdefault(fw.name, []).append(fw.version)
    findings: dict[tuple[str, str, str], dict[str, Any]] = {}
    for run in (r for r in results if r.ok):  # each configuration may load other files
        used = {m.get("framework") for m in run.output.get("models") or [] if m.get("framework")}
        environment = run.output["environment"]
        seen = crosscheck_maps(predicted, environment.get("maps") or [],
                               needed_by={k: sorted(v) for k, v in needed_by.items()},
                               frameworks_used=sorted(u for u in used if u),
                               in_image=[lib.path for lib in inventory.libraries])
        seen += crosscheck_versions(versions, environment.get("frameworks") or {})
        for finding in seen:
            key = (finding["id"], finding["component"], finding["message"])
            findings.setdefault(key, {**finding, "runs": []})["runs"].append(run.run)
    return list(findings.values())
