"""`auditor campaign run|report|audit` (and the hidden `job`, what backends run on a worker)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from auditor.cli_common import _err_console, handle_errors
from auditor.errors import InputError

BACKENDS = ("local", "slurm", "kubernetes")


@click.group("campaign")
def campaign() -> None:
    """The probe across many machines and images on a scheduler (`run`), the aggregated report of
    results collected anywhere (`report`), and fleet audits (`audit`)."""


def _backend_options(fn: Any) -> Any:
    fn = click.option("--backend", type=click.Choice(BACKENDS), default=None,
                      help="Where the jobs run [default: the campaign file's, else local].")(fn)
    fn = click.option("--parallel", type=click.IntRange(1, 256), default=None,
                      help="Local backend: jobs at once [default: 1].")(fn)
    fn = click.option("--partition", default=None, help="Slurm partition [default: the cluster's].")(fn)
    fn = click.option("--force", is_flag=True,
                      help="Run again into a results directory that has results.")(fn)
    fn = click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), required=True,
                      help="The results directory (shared by the nodes for Slurm).")(fn)
    return fn


@campaign.command("run")
@click.argument("campaign_file", type=click.Path(dir_okay=False, exists=True))
@_backend_options
@click.option("--namespace", default=None,
              help="Kubernetes namespace [default: the kubeconfig context's, else default].")
@click.option("--dry-run", is_flag=True,
              help="Kubernetes: write the manifests under RESULTS/kubernetes/ and apply nothing.")
@handle_errors
def campaign_run(campaign_file: str, out_dir: str, backend: str | None, parallel: int | None,
                 partition: str | None, force: bool, namespace: str | None, dry_run: bool) -> None:
    """Submit the campaign's probe jobs (one per target x image), follow them, and aggregate."""
    from auditor.campaign.spec import parse_campaign, probe_jobs

    path = Path(campaign_file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{campaign_file}: cannot read it ({err})") from None
    spec = parse_campaign(text, campaign_file)
    settings = {**spec.backend, **({"partition": partition} if partition else {}),
                **({"parallel": parallel} if parallel else {})}
    kind = backend or settings.get("kind", "local")
    if dry_run and kind != "kubernetes":
        raise InputError("--dry-run writes Kubernetes manifests: give --backend kubernetes")
    if kind == "kubernetes":
        settings["namespace"] = namespace or settings.get("namespace")
        settings["campaign"] = spec
    if dry_run:
        from auditor.campaign.kube_manifests import write_manifests
        from auditor.campaign.kubernetes import default_namespace

        written = write_manifests(Path(out_dir).absolute(), spec, probe_jobs(spec),
                                  settings["namespace"] or default_namespace(), settings.get("parallel"))
        for written_path in written:
            click.echo(str(written_path))
        return
    _run(Path(out_dir), spec.name, str(path.resolve()), probe_jobs(spec), kind, settings, force)


@campaign.command("audit")
@click.option("--images", "images_file", type=click.Path(dir_okay=False, exists=True),
              help="A file of images, one per line: REFERENCE or NAME REFERENCE.")
@click.option("--repo", help="Every tag of this registry repository (REGISTRY/NAME).")
@click.option("--insecure", is_flag=True, help="Plain HTTP for --repo's registry.")
@_backend_options
@handle_errors
def campaign_audit(images_file: str | None, repo: str | None, insecure: bool, out_dir: str,
                   backend: str | None, parallel: int | None, partition: str | None, force: bool) -> None:
    """Audit a fleet of images in parallel on the backend and summarise findings across them."""
    from auditor.campaign.spec import audit_jobs

    if bool(images_file) == bool(repo):
        raise InputError("give --images FILE or --repo REGISTRY/NAME (one of them)")
    if backend == "kubernetes":
        raise InputError("the kubernetes backend runs probe campaigns only: audit with local or slurm")
    images = _images_from_file(Path(images_file)) if images_file else _images_from_repo(str(repo), insecure)
    if not images:
        raise InputError("no image to audit")
    settings = {**({"partition": partition} if partition else {}),
                **({"parallel": parallel} if parallel else {})}
    jobs = audit_jobs(images, extra_args=("--insecure",) if insecure else ())
    _run(Path(out_dir), "fleet-audit", None, jobs, backend or "local", settings, force)


@campaign.command("report")
@click.argument("results", type=click.Path(file_okay=False, exists=True))
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Where to write the report files [default: RESULTS].")
@handle_errors
def campaign_report(results: str, out_dir: str | None) -> None:
    """Aggregate the results in RESULTS (jobs/*/job.json and report.json, from any backend or
    copied in from other sites) into report.json, report.md, report.html and plots/."""
    _write_report(Path(results), Path(out_dir) if out_dir else Path(results))


@campaign.command("job", hidden=True)
@click.argument("results", type=click.Path(file_okay=False, exists=True))
@click.argument("job_id")
@handle_errors
def campaign_job(results: str, job_id: str) -> None:
    """Run one job of a campaign here (what every backend starts on a worker)."""
    from auditor.campaign.jobs import run_job

    record = run_job(Path(results), job_id, _auditor_command(Path(results)))
    if record["error"]:
        click.echo(f"auditor: campaign job {job_id}: {record['error']}", err=True)


# -- the shared parts ---------------------------------------------------------------------------

def _auditor_command(results: Path) -> list[str]:
    from auditor.campaign.jobs import default_auditor

    try:
        command = json.loads((results / "campaign.json").read_text()).get("auditor")
    except (OSError, ValueError):
        command = None
    return list(command) if isinstance(command, list) and command else default_auditor()


def _run(results: Path, name: str, file: str | None, jobs: list[Any], kind: str, settings: dict[str, Any],
         force: bool) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from auditor.campaign.backends import run_local, run_slurm
    from auditor.campaign.jobs import default_auditor, prepare_results

    auditor = list(settings.get("auditor") or default_auditor())
    settings = dict(settings)
    environment = {"DOCKER_HOST": settings["engine_host"]} if settings.get("engine_host") else {}
    results = results.absolute()
    prepare_results(results, {"name": name, "file": file, "backend": kind, "auditor": auditor}, jobs, force)
    with Progress(TextColumn(f"campaign {name} ({kind})"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.description}"), console=_err_console(), transient=True) as bar:
        task = bar.add_task("", total=len(jobs))

        def advance(job_id: str) -> None:
            bar.update(task, advance=1, description=job_id)

        if kind == "slurm":
            run_slurm(results, jobs, auditor, name, settings, advance, environment)
        elif kind == "kubernetes":
            from auditor.campaign.kubernetes import default_namespace, run_kubernetes

            namespace = settings.get("namespace") or default_namespace()
            run_kubernetes(results, settings["campaign"], jobs, namespace, advance,
                           parallelism=settings.get("parallel"))
        else:
            run_local(results, jobs, auditor, int(settings.get("parallel", 1)), advance, environment)
    _write_report(results, results)


def _write_report(results: Path, out_dir: Path) -> None:
    from auditor.campaign.aggregate import aggregate, load_results
    from auditor.campaign.html import render_html
    from auditor.campaign.markdown import render_markdown
    from auditor.campaign.plots import accuracy_plot
    from auditor.report.outputs import write_text

    if not (results / "jobs").is_dir():
        raise InputError(f"{results}: no jobs/ folder: not a campaign's results")
    jobs = load_results(results)
    try:
        meta = json.loads((results / "campaign.json").read_text())
    except (OSError, ValueError):
        meta = {}
    document = aggregate(jobs, name=meta.get("name") or results.name, file=meta.get("file"),
                         backend=meta.get("backend"))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "plots").mkdir(exist_ok=True)
    plots = {model["name"]: accuracy_plot(
                 model, out_dir / "plots" / f"{_safe_name(model['name'], 100, 'model')}.png")
             for model in document.get("models") or []}
    write_text(str(out_dir / "report.json"), json.dumps(document, indent=1) + "\n")
    write_text(str(out_dir / "report.md"), render_markdown(
        document, {name: f"plots/{path.name}" for name, path in plots.items()}))
    write_text(str(out_dir / "report.html"), render_html(document, plots))
    for line in document.get("summary") or []:
        click.echo(f"- {line}")
    counts = document["counts"]
    click.echo(f"campaign: {counts['jobs']} jobs ({counts['ok']} ok, {counts['partial']} partial, "
               f"{counts['failed']} failed); report in {out_dir / 'report.html'}", err=True)
    sys.stdout.flush()


def _safe_name(text: str, limit: int, default: str) -> str:
    """``text`` as a file or job name: letters, digits and ``._-`` only, at most ``limit`` long."""
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in text)[:limit] or default


def _images_from_file(path: Path) -> list[tuple[str, str]]:
    images = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if len(words) > 2:
            raise InputError(f"{path}:{number}: expected REFERENCE or NAME REFERENCE")
        name, reference = (words[0], words[1]) if len(words) == 2 else (_short(words[0]), words[0])
        images.append((name, reference))
    names = [n for n, _ in images]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"{path}: image names used twice: {', '.join(twice)} (give NAME REFERENCE lines)")
    return images


def _short(reference: str) -> str:
    tail = reference.rsplit("/", 1)[-1].replace("@", "-").replace(":", "-")
    return _safe_name(tail, 64, "image")


def _images_from_repo(repo: str, insecure: bool) -> list[tuple[str, str]]:
    from auditor.reference import parse_reference
    from auditor.sources.registry import list_tags

    ref = parse_reference(repo if repo.startswith("registry:") else f"registry:{repo}")
    return [(tag, f"registry:{ref.name}:{tag}") for tag in sorted(list_tags(ref, insecure))]
