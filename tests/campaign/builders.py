"""Results directories for the campaign tests: payload outputs with known accuracies, run through
the real ``auditor.probe.compare.classify`` into genuine probe reports, written as the job runner
writes them (``jobs/<id>/job.json``, ``report.json``, ``stderr.txt``).

``seed_campaign`` is the standard one: targets cpu-a and cpu-b, images torch and numpy, 2 repeats
x threads=1,2 per job (4 runs), and

- ``torch.bilstm`` (torch image): 0.88 on cpu-a, 0.95 on cpu-b: hardware explains it;
- ``torch.dense`` (torch image): 0.955 everywhere, bit for bit;
- ``numpy.mlp`` (both images): 0.9355 everywhere, bit for bit (its order against torch.bilstm
  reverses between the targets: interpretation fails for both);
- ``numpy.rnn`` (numpy image): 0.8965 with 1 thread, 0.9 with 2, on both targets: the variation;
- job ``cpu-c--torch``: timed out, no report; ``cpu-c--numpy``: a report of schema_version "0".

``real_probe_report`` instead runs the probe's payload for real on this host (NumPy models).
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from auditor.campaign.aggregate import JobResult
from auditor.campaign.spec import JOB_SCHEMA
from auditor.probe.compare import classify

PAYLOAD = Path(__file__).resolve().parents[2] / "auditor/probe/payload/run.py"

THREADS = ({"threads": "1"}, {"threads": "2"})
Accuracy = Callable[[str, dict[str, str], int], float]  # target, variation, run -> accuracy


def digest(text: str) -> str:
    return "sha256:" + (text.encode().hex() * 64)[:64]


def model(name: str, accuracy: float, loss: float = 0.3, repeat: int = 0) -> dict[str, Any]:
    """A payload model entry; its digests follow the accuracy (same accuracy: same bits)."""
    framework, _, kind = name.partition(".")
    return {"name": name, "framework": framework, "kind": kind, "accuracy": accuracy, "loss": loss,
            "weights_digest": digest(f"{name}-w-{accuracy!r}"),
            "predictions_digest": digest(f"{name}-p-{accuracy!r}"),
            "epochs": [{"loss": loss, "accuracy": accuracy}], "seconds": 1.0, "repeat": repeat}


def output(models: Sequence[dict[str, Any]], errors: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
    """A payload's JSON; its config lists the models it ran, as the payload's applied config does."""
    return {"schema": "auditor-probe-payload/1", "payload_version": "1",
            "config": {"seed": 0, "models": [m["name"] for m in models], "kernels": False},
            "environment": {"frameworks": {}, "maps": [], "network": {"has_network": False}},
            "kernels": [], "models": list(models), "errors": list(errors), "seconds": 3.0}


def probe_report(reference: str, target: str, accuracies: dict[str, Accuracy], repeats: int = 2,
                 variations: Sequence[dict[str, str]] = THREADS,
                 failed_runs: int = 0) -> dict[str, Any]:
    """A genuine probe report: ``repeats`` fresh containers per variation (the runner's order),
    each model's accuracy from ``accuracies[model](target, variation, run)``; the last
    ``failed_runs`` runs failed (no output)."""
    runs = []
    for variation in variations:
        for _ in range(repeats):
            number = len(runs)
            out = output([model(name, f(target, variation, number)) for name, f in accuracies.items()])
            runs.append({"run": number, "variation": dict(variation), "output": out, "error": None,
                         "exit_code": 0, "log_tail": "", "seconds": 4.0})
    for run in runs[len(runs) - failed_runs:]:
        run.update(output=None, error="the container was killed (out of memory)", exit_code=137)
    return classify(runs, image={"reference": reference, "digest": "sha256:" + "c" * 64})


def write_job(results: Path, job_id: str, *, target: str, image: str, reference: str | None = None,
              kind: str = "probe", report: Any = None, report_text: str | None = None,
              exit_code: int | None = 0, error: str | None = None, stderr: str | None = None,
              host: str | None = "node1", record: dict[str, Any] | None = None) -> Path:
    """One ``jobs/<job_id>/`` folder as the job runner leaves it (``record`` replaces job.json)."""
    folder = results / "jobs" / job_id
    folder.mkdir(parents=True, exist_ok=True)
    reference = reference or f"docker-daemon:localhost/{image}:t"
    job = record if record is not None else {
        "schema": JOB_SCHEMA, "job_id": job_id, "kind": kind, "target": target,
        "image": {"name": image, "reference": reference}, "host": host, "exit_code": exit_code,
        "error": error, "started": "2025-01-01T00:00:00Z", "finished": "2025-01-01T00:01:00Z",
        "command": ["auditor", kind, reference]}
    (folder / "job.json").write_text(json.dumps(job))
    if report is not None:
        (folder / "report.json").write_text(json.dumps(report))
    elif report_text is not None:
        (folder / "report.json").write_text(report_text)
    if stderr is not None:
        (folder / "stderr.txt").write_text(stderr)
    return folder


def bilstm(target: str, _variation: dict[str, str], _run: int) -> float:
    return 0.88 if target == "cpu-a" else 0.95


def constant(value: float) -> Accuracy:
    return lambda _target, _variation, _run: value


def rnn(_target: str, variation: dict[str, str], _run: int) -> float:
    return 0.8965 if variation.get("threads") == "1" else 0.9


TORCH_MODELS: dict[str, Accuracy] = {"torch.bilstm": bilstm, "torch.dense": constant(0.955),
                                     "numpy.mlp": constant(0.9355)}
NUMPY_MODELS: dict[str, Accuracy] = {"numpy.mlp": constant(0.9355), "numpy.rnn": rnn}


def seed_campaign(results: Path, name: str = "seed-study") -> Path:
    """The standard results directory (see the module docstring)."""
    results.mkdir(parents=True, exist_ok=True)
    (results / "campaign.json").write_text(json.dumps({"name": name, "file": None, "backend": "local"}))
    for target in ("cpu-a", "cpu-b"):
        for image, models in (("torch", TORCH_MODELS), ("numpy", NUMPY_MODELS)):
            reference = f"docker-daemon:localhost/{image}:t"
            write_job(results, f"{target}--{image}", target=target, image=image, reference=reference,
                      report=probe_report(reference, target, models), host=f"{target}-node")
    write_job(results, "cpu-c--torch", target="cpu-c", image="torch", exit_code=None,
              error="timed out after 600 s", stderr="probe: starting\nrun 3 of 4: still training\n")
    old = probe_report("docker-daemon:localhost/numpy:t", "cpu-c", NUMPY_MODELS)
    old["schema_version"] = "0"
    write_job(results, "cpu-c--numpy", target="cpu-c", image="numpy", report=old)
    return results


def job_result(target: str, image: str, accuracies: dict[str, Accuracy], **report: Any) -> JobResult:
    """A finished probe job in memory (what ``load_results`` reads from a job's folder)."""
    reference = f"docker-daemon:localhost/{image}:t"
    return JobResult(f"{target}--{image}", "probe", target, {"name": image, "reference": reference},
                     host="node1", exit_code=0, report=probe_report(reference, target, accuracies, **report))


@functools.cache
def real_payload(threads: int, repeat: int = 0, models: tuple[str, ...] = ("numpy.mlp", "numpy.rnn")) -> str:
    """The probe's payload run for real on this host (this interpreter's NumPy), as JSON text; once
    per (threads, repeat): both targets of a test get the same host's outputs."""
    config = {"seed": 0, "device": "cpu", "threads": threads, "deterministic": True, "repeats": 1,
              "models": list(models), "kernels": False, "epochs": None}
    done = subprocess.run([sys.executable, str(PAYLOAD), json.dumps(config)], capture_output=True, text=True,
                          timeout=300, check=True)
    return done.stdout


def real_probe_report(reference: str, repeats: int = 2) -> dict[str, Any]:
    """A probe report of real payload outputs: ``repeats`` runs with threads=1, then with 2."""
    plan = [(threads, repeat) for threads in (1, 2) for repeat in range(repeats)]
    runs = [{"run": k, "variation": {"threads": str(threads)}, "error": None, "exit_code": 0, "log_tail": "",
             "output": json.loads(real_payload(threads, repeat)), "seconds": 1.0}
            for k, (threads, repeat) in enumerate(plan)]
    return classify(runs, image={"reference": reference, "digest": None})
