"""A campaign's results directory as one campaign document (``auditor/schemas/
campaign-report.schema.json``). Only :func:`load_results` reads files (``RESULTS/jobs/<id>/``:
``job.json``, ``report.json``, ``stderr.txt``); it never raises on one bad job but records the
problem in that job. :func:`aggregate` is pure.

The document:

- ``matrix``: one cell per (target, image): its jobs, status (``ok``; ``partial``: a report but
  failed runs or a job error; ``failed``: no usable report), runs ok/failed, per model the
  verdict and levels of the cell's probe report (several reports of one cell, e.g. copied in
  from another site, are classified together by :func:`auditor.probe.compare.compare_reports`),
  and the errors (the job's, its stderr's last line, failed runs).
- ``models``: per model, per environment (target x image x variation label of the report's runs)
  the accuracy of every run (each in-process repeat is one run), min/max/range/mean/std
  (population std); over the campaign the same statistics, the verdicts and the three
  reproducibility levels, computed by :func:`auditor.probe.compare.classify` over the runs of
  every probe report at once (source: the job id): **outcome** (every weights and predictions
  digest identical), **analysis** (accuracy and loss within tolerance, by default
  ``*.accuracy=abs:0.005``, ``*.loss=rel:1e-6``: the probe's own definition), **interpretation**
  (the model's order by accuracy against another model never reverses beyond tolerance in a run).
- ``fleet`` (audit jobs): per image its finding ids by severity and numeric stack, and which
  images share which finding; null without audit jobs.
- ``summary``: lines of text.

Which factor explains a model's accuracy spread (the rule). Its runs are grouped into
environments (target x image x variation). Four spreads:

- run-to-run: the largest accuracy range within one environment (repeats of one configuration);
- variation: the largest range of environment means across the variations of one target x image;
- hardware: the largest range of environment means across targets, same image and variation;
- software: the largest range of environment means across images, same target and variation.

A spread is null when the campaign has no such comparison (one target only, ...). The factors
named are those of variation, hardware and software with the largest spread, when it exceeds the
run-to-run spread (ties are all named); else ``run-to-run`` if repeats differ; else, when the
accuracy differs but no one-factor comparison shows it (each target ran other images),
``confounded``; identical accuracies name none.

A job fails when it has no usable report: none written, not JSON, of another schema or
schema_version, or malformed; exit codes 0 and 1 (a gate: findings, divergence) are normal.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from auditor import __version__
from auditor.campaign.jobs import last_line
from auditor.campaign.spec import JOB_SCHEMA
from auditor.errors import InputError
from auditor.probe import compare
from auditor.probe.compare import DASH, classify, compare_reports, load_baseline, variation_label

SCHEMA_ID = "https://auditor.invalid/schemas/campaign-report.schema.json"
SCHEMA_VERSION = "1"
AUDIT_SCHEMA_ID = "https://auditor.invalid/schemas/report.schema.json"
KINDS = ("probe", "audit")
LEVELS = ("outcome", "analysis", "interpretation")
SEVERITIES = ("critical", "high", "medium", "low", "info")
_EPSILON = 1e-12
TIMES = "\u00d7"  # target x image
_SHOWN_ERRORS = 3
# what classifying a malformed payload output can raise (compare.py trusts the payload's shapes)
_MALFORMED = (InputError, TypeError, ValueError, AttributeError, KeyError, IndexError)


# -- reading the results directory ---------------------------------------------------------------
@dataclass
class JobResult:
    """One ``jobs/<id>/`` folder: its ``job.json`` fields, the report when usable, and problems."""

    job_id: str
    kind: str = "unknown"  # probe | audit | unknown
    target: str = "?"
    image: dict[str, str | None] = field(default_factory=lambda: {"name": "?", "reference": None})
    host: str | None = None
    exit_code: int | None = None
    error: str | None = None
    started: str | None = None
    finished: str | None = None
    command: list[str] = field(default_factory=list)
    report: dict[str, Any] | None = None  # a report of the expected schema and version
    report_problem: str | None = None  # why report.json is not usable (None: usable or absent)
    problems: list[str] = field(default_factory=list)  # with job.json itself
    stderr_tail: str | None = None  # the last non-empty line of stderr.txt

    def failure(self) -> str | None:
        """Why the job gave no usable report (None: it did)."""
        if self.report is not None and self.kind in KINDS:
            return None
        return (self.error or self.report_problem or next(iter(self.problems), None) or self.stderr_tail
                or (f"exit code {self.exit_code}" if self.exit_code not in (0, 1, None) else None)
                or "no report.json")

    def status(self) -> str:
        if self.report is None or self.kind not in KINDS:  # no report, or one of an unknown job
            return "failed"
        troubled = self.error or self.exit_code not in (0, 1) or self.problems
        counts = self.report.get("counts") if self.kind == "probe" else None
        failed_runs = _count(counts.get("failed")) if isinstance(counts, Mapping) else 0
        return "partial" if troubled or failed_runs else "ok"


def load_results(directory: Path | str) -> list[JobResult]:
    """Every ``jobs/*/`` folder of a results directory, sorted by job id; never raises on one job."""
    try:
        folders = sorted(p for p in (Path(directory) / "jobs").iterdir() if p.is_dir())
    except OSError:
        return []
    return [_load_job(folder) for folder in folders]


def _read_json(path: Path) -> tuple[Any, str | None]:
    if not path.is_file():
        return None, "absent"
    try:
        return json.loads(path.read_bytes()), None
    except (OSError, UnicodeDecodeError) as err:
        return None, f"{path.name} cannot be read ({err})"
    except ValueError as err:
        return None, f"{path.name} is not JSON ({err})"


def _load_job(folder: Path) -> JobResult:
    job = JobResult(folder.name, image={"name": folder.name, "reference": None})
    record, problem = _read_json(folder / "job.json")
    if problem == "absent":
        spec, _ = _read_json(folder / "spec.json")
        if isinstance(spec, Mapping):
            _fields(job, spec, [])
        job.problems.append("no job.json: the job did not finish (or was copied without it)")
    elif problem or not isinstance(record, Mapping):
        job.problems.append(problem or "job.json is not an object")
    else:
        if record.get("schema") != JOB_SCHEMA:
            job.problems.append(f"job.json: schema {record.get('schema')!r}, expected {JOB_SCHEMA}")
        _fields(job, record, job.problems)
    job.stderr_tail = last_line(folder / "stderr.txt")
    doc, problem = _read_json(folder / "report.json")
    if problem != "absent":
        job.report_problem = problem or _report_problem(job, doc)
        job.report = doc if job.report_problem is None else None
    return job


def _fields(job: JobResult, record: Mapping[str, Any], problems: list[str]) -> None:
    def take(key: str, types: type | tuple[type, ...], what: str) -> Any:
        value = record.get(key)
        if value is None or (isinstance(value, types) and not isinstance(value, bool)):
            return value
        problems.append(f"job.json: {key} is not {what}")
        return None

    kind = record.get("kind")
    if kind in KINDS:
        job.kind = kind
    else:
        problems.append(f"job.json: kind {kind!r} is not probe or audit")
    target = take("target", str, "a string")
    job.target = target or job.target
    image = record.get("image")
    if isinstance(image, Mapping) and isinstance(image.get("name"), str) and image["name"]:
        reference = image.get("reference")
        job.image = {"name": image["name"], "reference": reference if isinstance(reference, str) else None}
    else:
        problems.append("job.json: image is not {name, reference}")
    job.host = take("host", str, "a string")
    job.exit_code = take("exit_code", int, "an integer")
    job.error = take("error", str, "a string")
    job.started = take("started", str, "a string")
    job.finished = take("finished", str, "a string")
    command = record.get("command")
    job.command = [str(c) for c in command] if isinstance(command, list) else []


def _report_problem(job: JobResult, doc: Any) -> str | None:
    probe = job.kind == "probe" or (job.kind == "unknown" and isinstance(doc, Mapping)
                                    and doc.get("schema") == compare.SCHEMA_ID)
    schema, version = (compare.SCHEMA_ID, compare.SCHEMA_VERSION) if probe else (AUDIT_SCHEMA_ID, "1")
    what = "a probe report" if probe else "an audit report"
    if not isinstance(doc, Mapping) or doc.get("schema") != schema:
        found = doc.get("schema") if isinstance(doc, Mapping) else type(doc).__name__
        return f"report.json is not {what} (schema {found!r})"
    if doc.get("schema_version") != version:
        return (f"report.json is {what} of schema_version {doc.get('schema_version')!r}; "
                f"this auditor reads version {version}")
    if probe:
        error = jsonschema.exceptions.best_match(_probe_validator().iter_errors(doc))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "the document"
            return f"report.json does not match the probe report schema at {where}: {error.message[:200]}"
        try:  # the runs again, as the campaign will: a payload output of odd shapes is this job's problem
            classify(load_baseline(doc, name="report.json", force=True))
        except _MALFORMED as err:
            return f"report.json: its runs cannot be classified ({type(err).__name__}: {str(err)[:200]})"
    elif not isinstance(doc.get("findings"), list) or not isinstance(doc.get("numeric_stack"), list):
        return "report.json: findings or numeric_stack missing"
    return None


@functools.cache
def _probe_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(resources.files("auditor.schemas").joinpath("probe-report.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)


# -- the document --------------------------------------------------------------------------------
def aggregate(jobs: Sequence[JobResult], *, name: str, file: str | None = None, backend: str | None = None,
              tolerances: Iterable[str] = ()) -> dict[str, Any]:
    """The campaign document of ``jobs`` (``tolerances``: ``GLOB=abs:X`` after the defaults; a bad
    one is an InputError)."""
    tolerances = [compare.parse_tolerance(t) for t in tolerances]
    jobs = sorted(jobs, key=lambda j: j.job_id)
    notes: list[str] = []
    probes = [j for j in jobs if j.kind == "probe" and j.report is not None]
    campaign = _campaign_models(probes, tolerances, notes)
    matrix = [_cell(cell_jobs, notes) for cell_jobs in _by_cell(jobs).values()]
    models = [_model(item, probes, campaign) for item in _observations(probes).items()]
    fleet = _fleet([j for j in jobs if j.kind == "audit"])
    statuses = [j.status() for j in jobs]
    counts = {"jobs": len(jobs), "ok": statuses.count("ok"), "partial": statuses.count("partial"),
              "failed": statuses.count("failed"), "probe_jobs": sum(j.kind == "probe" for j in jobs),
              "audit_jobs": sum(j.kind == "audit" for j in jobs),
              "runs": sum(c["runs"]["total"] for c in matrix),
              "successful_runs": sum(c["runs"]["ok"] for c in matrix)}
    document = {
        "schema": SCHEMA_ID, "schema_version": SCHEMA_VERSION, "auditor_version": __version__,
        "name": name, "file": file, "backend": backend,
        "targets": sorted({j.target for j in jobs}), "images": sorted({str(j.image["name"]) for j in jobs}),
        "counts": counts,
        "jobs": [_job_entry(j) for j in jobs],
        "matrix": matrix,
        "models": models,
        "tolerances": campaign.get("tolerances") or [t.as_dict() for t in compare.DEFAULT_TOLERANCES],
        "interpretation": {"reversals": campaign.get("reversals", [])},
        "fleet": fleet,
        "notes": notes,
    }
    document["summary"] = _summary(document)
    return document


def _job_entry(job: JobResult) -> dict[str, Any]:
    problems = [*job.problems, *([job.report_problem] if job.report_problem else [])]
    return {"job_id": job.job_id, "kind": job.kind, "target": job.target, "image": dict(job.image),
            "host": job.host, "exit_code": job.exit_code, "status": job.status(),
            "error": job.failure() or job.error, "problems": problems, "stderr_tail": job.stderr_tail,
            "started": job.started, "finished": job.finished}


def _by_cell(jobs: Sequence[JobResult]) -> dict[tuple[str, str], list[JobResult]]:
    cells: dict[tuple[str, str], list[JobResult]] = {}
    for job in sorted(jobs, key=lambda j: (j.target, str(j.image["name"]), j.job_id)):
        cells.setdefault((job.target, str(job.image["name"])), []).append(job)
    return cells


def _cell(jobs: list[JobResult], notes: list[str]) -> dict[str, Any]:
    first = jobs[0]
    statuses = {j.status() for j in jobs}
    status = "ok" if statuses == {"ok"} else "failed" if statuses == {"failed"} else "partial"
    errors: list[str] = []
    for job in jobs:
        why = job.failure() or job.error or (job.problems[0] if job.problems else None)
        if why:
            tail = job.stderr_tail if job.stderr_tail and job.stderr_tail != why else None
            errors.append(f"{job.job_id}: {why}" + (f" (stderr: {tail})" if tail else ""))
    reports = [(j, j.report) for j in jobs if j.report is not None and j.kind == "probe"]
    runs = {"total": 0, "ok": 0, "failed": 0}
    for job, report in reports:
        for key, counted in (("total", "runs"), ("ok", "successful"), ("failed", "failed")):
            runs[key] += _count(report["counts"].get(counted))
        failed = [f for f in _list(report.get("failures"))
                  if isinstance(f, Mapping) and f.get("where") is None]
        errors += [f"{job.job_id} run {f.get('run')} ({_label(f.get('variation'))}): {f.get('error')}"
                   for f in failed[:_SHOWN_ERRORS]]
        if len(failed) > _SHOWN_ERRORS:
            errors.append(f"{job.job_id}: {len(failed) - _SHOWN_ERRORS} more failed runs")
    classified = _cell_report(reports, notes)
    models = [m for m in _list((classified or {}).get("models")) if isinstance(m, Mapping) and "name" in m]
    audits = [j.report for j in jobs if j.report is not None and j.kind == "audit"]
    return {
        "target": first.target, "image": first.image["name"], "reference": first.image.get("reference"),
        "kind": first.kind, "jobs": [j.job_id for j in jobs],
        "hosts": sorted({j.host for j in jobs if j.host}), "status": status, "failed": status != "ok",
        "runs": runs,
        "verdicts": {str(m["name"]): _verdict(m.get("verdict")) for m in models},
        "levels": {str(m["name"]): {level: _holds(m, level) for level in LEVELS} for m in models},
        "explained_by": {str(m["name"]): _factors(m) for m in models},
        "findings": _severity_counts(audits) if first.kind == "audit" else None,
        "errors": errors,
    }


def _cell_report(reports: list[tuple[JobResult, dict[str, Any]]], notes: list[str]) -> dict[str, Any] | None:
    if len(reports) < 2:
        return reports[0][1] if reports else None
    try:  # copies of one cell from several sites: their runs classified together
        return compare_reports([r for _, r in reports], force=True, names=[j.job_id for j, _ in reports])
    except _MALFORMED as err:
        job = reports[0][0]
        notes.append(f"{job.target} {TIMES} {job.image['name']}: cannot compare its reports: {err}")
        return reports[0][1]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _label(variation: Any) -> str:
    return variation_label({str(k): str(v) for k, v in variation.items()}) \
        if isinstance(variation, Mapping) else "default"


def _verdict(value: Any) -> str | None:
    return value if value in compare.VERDICTS else None


def _holds(model: Mapping[str, Any], level: str) -> bool | None:
    levels = model.get("levels")
    found = levels.get(level) if isinstance(levels, Mapping) else None
    holds = found.get("holds") if isinstance(found, Mapping) else None
    return holds if isinstance(holds, bool) else None


def _factors(model: Mapping[str, Any]) -> list[str]:
    metrics = model.get("metrics")
    accuracy = metrics.get("accuracy") if isinstance(metrics, Mapping) else None
    found = accuracy.get("explained_by") if isinstance(accuracy, Mapping) else None
    return [str(f.get("factor")) for f in found if isinstance(f, Mapping)] if isinstance(found, list) else []


def _severity_counts(reports: list[Any]) -> dict[str, int]:
    counts = dict.fromkeys(SEVERITIES, 0)
    for report in reports:
        for finding in _list(report.get("findings")):
            if isinstance(finding, Mapping) and _text(finding.get("severity")) in counts:
                counts[finding["severity"]] += 1
    return counts


# -- the campaign's classification (every probe report's runs at once) -----------------------------
def _campaign_models(probes: list[JobResult], tolerances: list[compare.Tolerance],
                     notes: list[str]) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for job in probes:
        for run in load_baseline(job.report, name=job.job_id, force=True):
            output = run.get("output")
            if isinstance(output, Mapping):  # models only; what a run was asked for: what it ran or failed
                config = dict(output["config"]) if isinstance(output.get("config"), Mapping) else {}
                if not isinstance(config.get("models"), list):
                    ran = {m.get("name") for m in _list(output.get("models")) if isinstance(m, Mapping)}
                    ran |= {e.get("where") for e in _list(output.get("errors")) if isinstance(e, Mapping)}
                    config["models"] = sorted(n for n in ran if isinstance(n, str))
                run = {**run, "output": {**output, "config": {**config, "kernels": False}, "kernels": []}}
            runs.append(run)
    if not runs:
        return {}
    try:
        document = classify(runs, image={"reference": None, "digest": None}, tolerances=tolerances)
    except _MALFORMED as err:
        notes.append(f"the campaign's runs cannot be classified together: {err}")
        return {}
    return {"models": {m["name"]: m for m in document["models"]}, "tolerances": document["tolerances"],
            "reversals": document["interpretation"]["ranking"]["reversals"]}


@dataclass(frozen=True)
class _Obs:
    target: str
    image: str
    variation: tuple[tuple[str, str], ...]
    label: str
    value: float


def _observations(probes: list[JobResult]) -> dict[str, list[_Obs]]:
    found: dict[str, list[_Obs]] = {}
    for job in probes:
        report = job.report or {}
        several = len(_list(report.get("sources"))) > 1
        for run in _list(report.get("runs")):
            output = run.get("output") if isinstance(run, Mapping) else None
            if run.get("error") is not None or not isinstance(output, Mapping):
                continue
            variation = {str(k): str(v) for k, v in (run.get("variation") or {}).items()}
            label = variation_label(variation)
            if several:
                label += f" ({run.get('source')})"
            for entry in _list(output.get("models")):
                if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
                    continue
                value = entry.get("accuracy")
                if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                    found.setdefault(entry["name"], []).append(_Obs(
                        job.target, str(job.image["name"]), tuple(sorted(variation.items())), label,
                        float(value)))
    return dict(sorted(found.items()))


def _stats(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "min": None, "max": None, "range": None, "mean": None, "std": None}
    return {"count": len(values), "min": min(values), "max": max(values), "range": max(values) - min(values),
            "mean": statistics.fmean(values), "std": statistics.pstdev(values)}


def _model(item: tuple[str, list[_Obs]], probes: list[JobResult], campaign: dict[str, Any]) -> dict[str, Any]:
    name, observations = item
    envs: dict[tuple[str, str, str], list[_Obs]] = {}
    for obs in sorted(observations, key=lambda o: (o.target, o.image, o.label)):
        envs.setdefault((obs.target, obs.image, obs.label), []).append(obs)
    environments = [{"target": t, "image": i, "variation": dict(obs[0].variation),
                     "label": f"{t} / {i} / {v}", "values": [o.value for o in obs],
                     **_stats([o.value for o in obs])} for (t, i, v), obs in envs.items()]
    classified = (campaign.get("models") or {}).get(name) or {}
    metrics = classified.get("metrics") or {}
    levels = classified.get("levels") or {}
    spreads = _spreads(envs)
    overall = _stats([o.value for o in observations])
    explained = _explain(spreads, overall["range"])
    cells = []
    for job in probes:
        for m in _list((job.report or {}).get("models")):
            if isinstance(m, Mapping) and m.get("name") == name:
                cells.append({"target": job.target, "image": job.image["name"], "job": job.job_id,
                              "verdict": _verdict(m.get("verdict")), "explained_by": _factors(m)})
    entry = {
        "name": name, "framework": _text(classified.get("framework")), "kind": _text(classified.get("kind")),
        "environments": environments, **overall,
        "targets": sorted({o.target for o in observations}),
        "images": sorted({o.image for o in observations}),
        "verdicts": {k: v.get("verdict") for k, v in metrics.items()},
        "verdict": classified.get("verdict"),
        "levels": {level: {"holds": levels.get(level, {}).get("holds"),
                           "evidence": list(levels.get(level, {}).get("evidence") or [])}
                   for level in LEVELS},
        "spreads": spreads, "explained_by": explained, "cells": cells,
    }
    entry["summary"] = _model_summary(entry, metrics)
    return entry


def _spreads(envs: dict[tuple[str, str, str], list[_Obs]]) -> list[dict[str, Any]]:
    within = [(max(o.value for o in obs) - min(o.value for o in obs), key) for key, obs in envs.items()
              if len(obs) > 1]
    worst = max(within, default=None)
    detail = "no environment was repeated" if worst is None else \
        f"repeats differ most in {' / '.join(worst[1])}" if worst[0] else \
        f"repeats agree in each of the {len(within)} repeated environments"
    out: list[dict[str, Any]] = [{"factor": "run-to-run", "range": worst[0] if worst else None,
                                  "detail": detail}]
    means = {key: statistics.fmean(o.value for o in obs) for key, obs in envs.items()}
    variations = {key: dict(obs[0].variation) for key, obs in envs.items()}
    for factor, varies, held in (("variation", 2, (0, 1)), ("hardware", 0, (1, 2)), ("software", 1, (0, 2))):
        groups: dict[tuple[str, ...], list[tuple[str, str, str]]] = {}
        for key in means:
            groups.setdefault(tuple(key[i] for i in held), []).append(key)
        best: tuple[float, tuple[str, ...], list[tuple[str, str, str]]] | None = None
        for fixed, keys in sorted(groups.items()):
            if len(keys) > 1:
                spread = max(means[k] for k in keys) - min(means[k] for k in keys)
                if best is None or spread > best[0] + _EPSILON:
                    best = (spread, fixed, keys)
        if best is None:
            out.append({"factor": factor, "range": None,
                        "detail": f"no two environments differ only by {factor}"})
            continue
        spread, fixed, keys = best
        shown = ", ".join(f"{k[varies]} {means[k]:.4g}" for k in sorted(keys, key=lambda k: means[k]))
        found = {"factor": factor, "range": spread, "detail": f"{' / '.join(fixed)}: {shown}"}
        if factor == "variation":
            names = sorted({n for k in keys for n in variations[k]})
            found["differs_in"] = [n for n in names if len({variations[k].get(n) for k in keys}) > 1]
        out.append(found)
    return out


def _explain(spreads: list[dict[str, Any]], overall: float | None) -> list[str]:
    if not overall:
        return []
    noise = spreads[0]["range"] or 0.0
    measured = [s for s in spreads[1:] if s["range"] is not None and s["range"] > noise + _EPSILON]
    if measured:
        top = max(s["range"] for s in measured)
        return [s["factor"] for s in measured if s["range"] >= top - _EPSILON]
    return ["run-to-run"] if noise > _EPSILON else ["confounded"]


# -- the fleet (audit jobs) ---------------------------------------------------------------------
def _fleet(jobs: list[JobResult]) -> dict[str, Any] | None:
    if not jobs:
        return None
    images: list[dict[str, Any]] = []
    shared: dict[str, set[str]] = {}
    worst: dict[str, int] = {}
    for job in sorted(jobs, key=lambda j: (str(j.image["name"]), j.job_id)):
        report = job.report or {}
        by_severity: dict[str, list[str]] = {s: [] for s in SEVERITIES}
        for finding in _list(report.get("findings")):
            if not isinstance(finding, Mapping) or not isinstance(finding.get("id"), str):
                continue
            severity = finding.get("severity") if finding.get("severity") in SEVERITIES else "info"
            if finding["id"] not in by_severity[severity]:
                by_severity[severity].append(finding["id"])
            shared.setdefault(finding["id"], set()).add(str(job.image["name"]))
            rank = SEVERITIES.index(severity)
            worst[finding["id"]] = min(worst.get(finding["id"], rank), rank)
        stack = sorted({(str(c.get("component")), _text(c.get("version")))
                        for c in _list(report.get("numeric_stack")) if isinstance(c, Mapping)},
                       key=lambda p: (p[0], p[1] or ""))
        images.append({"image": job.image["name"], "reference": job.image.get("reference"), "job": job.job_id,
                       "target": job.target, "status": job.status(), "error": job.failure(),
                       "findings": {s: sorted(ids) for s, ids in by_severity.items()},
                       "numeric_stack": [{"component": c, "version": v} for c, v in stack]})
    findings = sorted(({"id": i, "severity": SEVERITIES[worst[i]], "images": sorted(names)}
                       for i, names in shared.items()),
                      key=lambda f: (-len(f["images"]), worst[f["id"]], f["id"]))
    audited = [i for i in images if i["status"] != "failed"]
    return {"counts": {"images": len(images), "audited": len(audited), "failed": len(images) - len(audited)},
            "images": images, "findings": findings}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# -- words ----------------------------------------------------------------------------------------
def percent(fraction: float) -> str:
    """An accuracy difference in percentage points: 0.07 -> '7.0 %'."""
    points = fraction * 100
    return f"{points:.1f} %" if points >= 0.1 or points == 0 else f"{points:.2g} %"


def factor_phrase(factors: Sequence[str], spreads: Sequence[Mapping[str, Any]] = ()) -> str:
    """``['hardware']`` -> 'hardware explains it'."""
    if not factors:
        return ""
    if factors == ["confounded"]:
        return "confounded: no comparison of one factor alone shows it"
    if factors == ["run-to-run"]:
        return "run to run (nondeterminism) explains it"
    words = []
    for factor in factors:
        if factor == "variation":
            keys = next((s.get("differs_in") for s in spreads if s["factor"] == "variation"), None)
            words.append(f"the variation ({', '.join(keys)})" if keys else "the variation")
        else:
            words.append(factor)
    return f"{' and '.join(words)} explain{'s' if len(words) == 1 else ''} it"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _scope(targets: Sequence[str], images: Sequence[str]) -> str:
    return f"{_plural(len(targets), 'target')} {TIMES} {_plural(len(images), 'image')}"


def _model_summary(entry: dict[str, Any], metrics: Mapping[str, Any]) -> str:
    name, count = entry["name"], entry["count"]
    scope = _scope(entry['targets'], entry['images'])
    if count < 2:
        return f"{name}: {_plural(count, 'run')} with an accuracy on {scope}, nothing to compare"
    if not entry["range"]:
        text = f"{name}: accuracy identical ({entry['min']:.4g}) across {count} runs on {scope}"
        for digest in ("predictions_digest", "weights_digest"):
            m = metrics.get(digest) or {}
            if m.get("verdict") == "diverged":
                return f"{text}; {m.get('distinct')} distinct {digest.replace('_', ' ')}s"
        return text
    verdict = (metrics.get("accuracy") or {}).get("verdict")
    head = (f"{name}: accuracy range {percent(entry['range'])} ({entry['min']:.4g}{DASH}{entry['max']:.4g}) "
            f"across {count} runs on {scope}")
    why = factor_phrase(entry["explained_by"], entry["spreads"])
    return f"{head}: {'within tolerance; ' if verdict == 'within-tolerance' else ''}{why}"


def _summary(document: dict[str, Any]) -> list[str]:
    counts = document["counts"]
    scope = _scope(document['targets'], document['images'])
    lines = [f"{document['name']}: {_plural(counts['jobs'], 'job')} on {scope}: {counts['ok']} ok, "
             f"{counts['partial']} partial, {counts['failed']} failed"]
    for cell in document["matrix"]:
        if cell["failed"]:
            first = cell["errors"][0] if cell["errors"] else "no usable report"
            lines.append(f"{cell['target']} {TIMES} {cell['image']}: {cell['status']}: {first}")
    lines += [m["summary"] for m in document["models"]]
    for r in document["interpretation"]["reversals"]:
        first, second = r["models"]
        lines.append(f"ranking: {first} and {second} swap places by accuracy ({first} higher in "
                     f"{_plural(len(r['first_higher']), 'run')}, {second} in {len(r['second_higher'])}): "
                     f"interpretation does not reproduce for either")
    fleet = document["fleet"]
    if fleet:
        c = fleet["counts"]
        many = [f for f in fleet["findings"] if len(f["images"]) > 1]
        lines.append(f"fleet: {c['audited']} of {_plural(c['images'], 'image')} audited, "
                     f"{_plural(len(fleet['findings']), 'distinct finding')}, "
                     f"{len(many)} shared by several images")
        lines += [f"finding {f['id']} ({f['severity']}) in {len(f['images'])} of {c['images']} images: "
                  f"{', '.join(f['images'])}" for f in many[:5]]
    lines += [f"note: {n}" for n in document["notes"]]
    return lines
