"""`auditor.campaign.aggregate`: a results directory of genuine probe reports (made by the real
``classify`` from payload outputs with known accuracies, ``builders.py``) read and aggregated: the
matrix, per model the environments, statistics, levels and the factor that explains the spread,
failed and malformed jobs, several sites' reports of one cell, and fleet audits. Every document
is validated against its schema."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from auditor.campaign.aggregate import AUDIT_SCHEMA_ID, JobResult, aggregate, load_results
from auditor.errors import InputError
from tests.campaign import builders
from tests.campaign.builders import (
    NUMPY_MODELS,
    TORCH_MODELS,
    constant,
    job_result,
    probe_report,
    real_payload,
    real_probe_report,
    seed_campaign,
    write_job,
)

ROOT = Path(__file__).parents[2]
SCHEMA = json.loads((ROOT / "auditor/schemas/campaign-report.schema.json").read_text())


def valid(document: dict[str, Any]) -> dict[str, Any]:
    jsonschema.Draft202012Validator(SCHEMA).validate(document)
    json.dumps(document, allow_nan=False)  # strictly JSON
    return document


def seed(tmp_path: Path) -> dict[str, Any]:
    return valid(aggregate(load_results(seed_campaign(tmp_path / "results")), name="seed-study"))


def the_model(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in document["models"] if m["name"] == name)


def the_cell(document: dict[str, Any], target: str, image: str) -> dict[str, Any]:
    return next(c for c in document["matrix"] if (c["target"], c["image"]) == (target, image))


def spread(model: dict[str, Any], factor: str) -> dict[str, Any]:
    return next(s for s in model["spreads"] if s["factor"] == factor)


def test_the_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_the_matrix_has_a_cell_per_target_and_image_with_its_verdicts_and_failures(tmp_path: Path) -> None:
    document = seed(tmp_path)
    assert document["schema_version"] == "1" and document["name"] == "seed-study"
    assert document["targets"] == ["cpu-a", "cpu-b", "cpu-c"]
    assert document["images"] == ["numpy", "torch"]
    assert document["counts"] == {"jobs": 6, "ok": 4, "partial": 0, "failed": 2, "probe_jobs": 6,
                                  "audit_jobs": 0, "runs": 16, "successful_runs": 16}
    assert [(c["target"], c["image"], c["status"]) for c in document["matrix"]] == [
        ("cpu-a", "numpy", "ok"), ("cpu-a", "torch", "ok"), ("cpu-b", "numpy", "ok"),
        ("cpu-b", "torch", "ok"), ("cpu-c", "numpy", "failed"), ("cpu-c", "torch", "failed")]
    cell = the_cell(document, "cpu-b", "numpy")
    assert cell["runs"] == {"total": 4, "ok": 4, "failed": 0}
    assert cell["verdicts"] == {"numpy.mlp": "identical", "numpy.rnn": "diverged"}
    assert cell["explained_by"] == {"numpy.mlp": [], "numpy.rnn": ["variation"]}
    assert cell["levels"]["numpy.rnn"] == {"outcome": False, "analysis": True, "interpretation": True}
    assert cell["hosts"] == ["cpu-b-node"] and cell["jobs"] == ["cpu-b--numpy"] and not cell["failed"]
    timed_out = the_cell(document, "cpu-c", "torch")
    assert timed_out["failed"] and timed_out["verdicts"] == {}
    assert timed_out["errors"] == ["cpu-c--torch: timed out after 600 s (stderr: run 3 of 4: still training)"]
    old = the_cell(document, "cpu-c", "numpy")
    assert old["status"] == "failed"
    assert old["errors"] == ["cpu-c--numpy: report.json is a probe report of schema_version '0'; "
                             "this auditor reads version 1"]
    job = next(j for j in document["jobs"] if j["job_id"] == "cpu-c--numpy")
    assert job["status"] == "failed" and "schema_version '0'" in job["problems"][0]


def test_each_model_has_every_runs_accuracy_per_environment(tmp_path: Path) -> None:
    model = the_model(seed(tmp_path), "torch.bilstm")
    assert [e["label"] for e in model["environments"]] == [
        "cpu-a / torch / threads=1", "cpu-a / torch / threads=2",
        "cpu-b / torch / threads=1", "cpu-b / torch / threads=2"]
    assert [e["values"] for e in model["environments"]] == [[0.88, 0.88], [0.88, 0.88],
                                                            [0.95, 0.95], [0.95, 0.95]]
    assert model["environments"][0]["variation"] == {"threads": "1"}
    assert model["environments"][2]["std"] == 0.0 and model["environments"][2]["range"] == 0.0
    assert (model["count"], model["min"], model["max"]) == (8, 0.88, 0.95)
    assert model["range"] == pytest.approx(0.07)
    assert model["std"] == pytest.approx(statistics.pstdev([0.88] * 4 + [0.95] * 4)) == pytest.approx(0.035)
    assert model["targets"] == ["cpu-a", "cpu-b"] and model["images"] == ["torch"]
    assert (model["framework"], model["kind"]) == ("torch", "bilstm")
    assert [(c["target"], c["verdict"]) for c in model["cells"]] == [("cpu-a", "identical"),
                                                                     ("cpu-b", "identical")]


def test_the_factor_across_targets_is_hardware_and_across_threads_the_variation(tmp_path: Path) -> None:
    document = seed(tmp_path)
    bilstm = the_model(document, "torch.bilstm")
    assert bilstm["explained_by"] == ["hardware"]
    assert spread(bilstm, "hardware")["range"] == pytest.approx(0.07)
    assert spread(bilstm, "hardware")["detail"] == "torch / threads=1: cpu-a 0.88, cpu-b 0.95"
    assert spread(bilstm, "run-to-run")["range"] == 0.0
    assert spread(bilstm, "variation")["range"] == 0.0
    assert spread(bilstm, "software") == {"factor": "software", "range": None,
                                          "detail": "no two environments differ only by software"}
    rnn = the_model(document, "numpy.rnn")
    assert rnn["explained_by"] == ["variation"]
    assert spread(rnn, "variation")["differs_in"] == ["threads"]
    assert spread(rnn, "variation")["range"] == pytest.approx(0.0035)
    for name in ("numpy.mlp", "torch.dense"):
        assert the_model(document, name)["explained_by"] == []


def test_the_three_levels_across_the_campaign(tmp_path: Path) -> None:
    document = seed(tmp_path)
    levels = {m["name"]: {k: v["holds"] for k, v in m["levels"].items()} for m in document["models"]}
    assert levels == {
        # identical everywhere, but its order against torch.bilstm reverses between the targets
        "numpy.mlp": {"outcome": True, "analysis": True, "interpretation": False},
        # threads change its bits; its accuracy moves 0.35 points, within abs 0.005
        "numpy.rnn": {"outcome": False, "analysis": True, "interpretation": True},
        "torch.bilstm": {"outcome": False, "analysis": False, "interpretation": False},
        "torch.dense": {"outcome": True, "analysis": True, "interpretation": True},
    }
    assert the_model(document, "numpy.rnn")["verdicts"]["accuracy"] == "within-tolerance"
    assert the_model(document, "torch.bilstm")["verdicts"] == {
        "accuracy": "diverged", "loss": "identical", "weights_digest": "diverged",
        "predictions_digest": "diverged"}
    [reversal] = document["interpretation"]["reversals"]
    assert reversal["models"] == ["numpy.mlp", "torch.bilstm"]
    assert reversal["first_higher"] == [f"cpu-a--torch #{i}" for i in range(4)]
    assert reversal["second_higher"] == [f"cpu-b--torch #{i}" for i in range(4)]
    assert the_model(document, "numpy.mlp")["count"] == 16  # both images, both targets


def test_the_summary_lines(tmp_path: Path) -> None:
    assert seed(tmp_path)["summary"] == [
        "seed-study: 6 jobs on 3 targets \u00d7 2 images: 4 ok, 0 partial, 2 failed",
        "cpu-c \u00d7 numpy: failed: cpu-c--numpy: report.json is a probe report of schema_version '0'; "
        "this auditor reads version 1",
        "cpu-c \u00d7 torch: failed: cpu-c--torch: timed out after 600 s "
        "(stderr: run 3 of 4: still training)",
        "numpy.mlp: accuracy identical (0.9355) across 16 runs on 2 targets \u00d7 2 images",
        "numpy.rnn: accuracy range 0.4 % (0.8965\u20130.9) across 8 runs on 2 targets \u00d7 1 image: "
        "within tolerance; the variation (threads) explains it",
        "torch.bilstm: accuracy range 7.0 % (0.88\u20130.95) across 8 runs on 2 targets \u00d7 1 image: "
        "hardware explains it",
        "torch.dense: accuracy identical (0.955) across 8 runs on 2 targets \u00d7 1 image",
        "ranking: numpy.mlp and torch.bilstm swap places by accuracy (numpy.mlp higher in 4 runs, "
        "torch.bilstm in 4): interpretation does not reproduce for either",
    ]


@pytest.mark.parametrize(("jobs", "factors"), [
    # the same target, another image: software
    ([job_result(t, "numpy-a", {"numpy.mlp": constant(0.93)}) for t in ("cpu-a", "cpu-b")]
     + [job_result(t, "numpy-b", {"numpy.mlp": constant(0.95)}) for t in ("cpu-a", "cpu-b")], ["software"]),
    # repeats of one configuration differ more than anything else: run to run
    ([job_result(t, "numpy", {"numpy.mlp": lambda _t, _v, run: 0.90 + 0.01 * (run % 2)})
      for t in ("cpu-a", "cpu-b")], ["run-to-run"]),
    # cpu-a ran one image and cpu-b another: no comparison of one factor alone
    ([job_result("cpu-a", "x", {"numpy.mlp": constant(0.90)}, variations=({},)),
      job_result("cpu-b", "y", {"numpy.mlp": constant(0.95)}, variations=({},))], ["confounded"]),
    # the target and the image move it as much: both are named
    ([job_result(t, i, {"numpy.mlp": constant(a)}) for t, i, a in (
        ("cpu-a", "x", 0.90), ("cpu-b", "x", 0.95), ("cpu-a", "y", 0.95), ("cpu-b", "y", 1.0))],
     ["hardware", "software"]),
])
def test_the_factor_rule(jobs: list[JobResult], factors: list[str]) -> None:
    [model] = valid(aggregate(jobs, name="c"))["models"]
    assert model["explained_by"] == factors


def test_the_phrase_of_each_factor() -> None:
    jobs = [job_result(t, i, {"numpy.mlp": constant(a)}, variations=({},))
            for t, i, a in (("cpu-a", "x", 0.9), ("cpu-b", "y", 0.95))]
    assert valid(aggregate(jobs, name="c"))["models"][0]["summary"] == (
        "numpy.mlp: accuracy range 5.0 % (0.9\u20130.95) across 4 runs on 2 targets \u00d7 2 images: "
        "confounded: no comparison of one factor alone shows it")


def test_reports_of_one_cell_from_two_sites_are_classified_together(tmp_path: Path) -> None:
    results = seed_campaign(tmp_path / "results")
    other = {**TORCH_MODELS, "torch.bilstm": constant(0.90)}
    write_job(results, "site2--cpu-a--torch", target="cpu-a", image="torch",
              report=probe_report("docker-daemon:localhost/torch:t", "cpu-a", other))
    document = valid(aggregate(load_results(results), name="seed-study"))
    cell = the_cell(document, "cpu-a", "torch")
    assert cell["jobs"] == ["cpu-a--torch", "site2--cpu-a--torch"]
    assert cell["runs"] == {"total": 8, "ok": 8, "failed": 0}
    assert cell["verdicts"]["torch.bilstm"] == "diverged" and cell["verdicts"]["torch.dense"] == "identical"
    assert cell["explained_by"]["torch.bilstm"] == ["environment"]  # compare_reports: the other site
    bilstm = the_model(document, "torch.bilstm")
    assert bilstm["environments"][0]["values"] == [0.88, 0.88, 0.9, 0.9]
    # the sites differ by 2 points within cpu-a; the targets by 6 (means 0.89 and 0.95): hardware
    assert spread(bilstm, "run-to-run")["range"] == pytest.approx(0.02)
    assert spread(bilstm, "hardware")["range"] == pytest.approx(0.06)
    assert bilstm["explained_by"] == ["hardware"]


def test_a_report_with_failed_runs_makes_its_cell_partial(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_job(results, "cpu-a--numpy", target="cpu-a", image="numpy", exit_code=1,
              report=probe_report("docker-daemon:localhost/numpy:t", "cpu-a", NUMPY_MODELS, failed_runs=1))
    # exit code 1: the gate (a divergence), not a failure
    write_job(results, "cpu-a--torch", target="cpu-a", image="torch", exit_code=1,
              report=probe_report("docker-daemon:localhost/torch:t", "cpu-a", TORCH_MODELS))
    document = valid(aggregate(load_results(results), name="results"))
    cell = the_cell(document, "cpu-a", "numpy")
    assert (cell["status"], cell["failed"]) == ("partial", True)
    assert cell["runs"] == {"total": 4, "ok": 3, "failed": 1}
    assert cell["errors"] == ["cpu-a--numpy run 3 (threads=2): the container was killed (out of memory)"]
    assert the_cell(document, "cpu-a", "torch")["status"] == "ok"
    assert the_model(document, "numpy.rnn")["count"] == 3


def test_bad_jobs_are_recorded_never_raised(tmp_path: Path) -> None:
    results = tmp_path / "results"
    good = probe_report("docker-daemon:localhost/numpy:t", "cpu-a", NUMPY_MODELS)
    folder = write_job(results, "broken-record", target="cpu-a", image="numpy", report=good)
    (folder / "job.json").write_text("{not json")
    unfinished = results / "jobs" / "unfinished"
    unfinished.mkdir(parents=True)
    (unfinished / "spec.json").write_text(json.dumps({
        "schema": "auditor-campaign-job/1", "job_id": "unfinished", "kind": "probe", "target": "cpu-b",
        "image": {"name": "numpy", "reference": "r"}, "args": []}))
    (results / "jobs" / "empty").mkdir()
    write_job(results, "garbage-report", target="cpu-c", image="numpy", report_text="\x00garbage")
    write_job(results, "audit-as-probe", target="cpu-d", image="numpy",
              report={"schema": AUDIT_SCHEMA_ID, "schema_version": "1", "findings": [], "numeric_stack": []})
    write_job(results, "bad-runs", target="cpu-e", image="numpy", report={**good, "runs": "x"})
    odd = json.loads(json.dumps(good))
    odd["runs"][1]["output"]["errors"] = 3  # the schema does not look into outputs; classifying fails
    write_job(results, "odd-output", target="cpu-e", image="torch", report=odd)
    write_job(results, "bad-fields", target="cpu-f", image="numpy", record={
        "schema": "auditor-campaign-job/1", "kind": "build", "target": 3, "image": "numpy",
        "exit_code": "zero", "error": None})
    jobs = {j.job_id: j for j in load_results(results)}
    assert jobs["broken-record"].problems[0].startswith("job.json is not JSON (")
    assert jobs["broken-record"].report is not None  # the report itself is fine
    assert jobs["unfinished"].target == "cpu-b"
    assert jobs["unfinished"].problems == ["no job.json: the job did not finish (or was copied without it)"]
    assert jobs["empty"].failure() == "no job.json: the job did not finish (or was copied without it)"
    assert jobs["garbage-report"].report_problem.startswith("report.json is not JSON (")
    assert jobs["audit-as-probe"].report_problem == (
        f"report.json is not a probe report (schema {AUDIT_SCHEMA_ID!r})")
    assert jobs["bad-runs"].report_problem == (
        "report.json does not match the probe report schema at runs: 'x' is not of type 'array'")
    assert jobs["odd-output"].report_problem == (
        "report.json: its runs cannot be classified (TypeError: 'int' object is not iterable)")
    assert jobs["bad-fields"].problems == [
        "job.json: kind 'build' is not probe or audit", "job.json: target is not a string",
        "job.json: image is not {name, reference}", "job.json: exit_code is not an integer"]
    document = valid(aggregate(list(jobs.values()), name="results"))
    statuses = {j["job_id"]: j["status"] for j in document["jobs"]}
    assert statuses == {"audit-as-probe": "failed", "bad-fields": "failed", "bad-runs": "failed",
                        "broken-record": "failed", "empty": "failed", "garbage-report": "failed",
                        "odd-output": "failed", "unfinished": "failed"}
    assert document["models"] == []  # no job both known and with a usable report
    [error] = the_cell(document, "?", "broken-record")["errors"]
    assert error.startswith("broken-record: job.json is not JSON")
    assert the_cell(document, "cpu-b", "numpy")["errors"] == [
        "unfinished: no job.json: the job did not finish (or was copied without it)"]
    assert load_results(tmp_path / "nothing-here") == []


def audit_report(findings: list[tuple[str, str]], stack: list[tuple[str, str | None]]) -> dict[str, Any]:
    return {"schema": AUDIT_SCHEMA_ID, "schema_version": "1",
            "findings": [{"id": i, "severity": s, "component": "c", "message": "m"} for i, s in findings],
            "numeric_stack": [{"component": c, "version": v, "path": f"/usr/lib/{c}.so", "evidence": []}
                              for c, v in stack]}


def test_a_fleet_audit_lists_findings_per_image_and_which_images_share_them(tmp_path: Path) -> None:
    results = tmp_path / "results"
    findings = [("cudnn-8.1-birnn-nondeterminism", "high"), ("pythonhashseed-unset", "low")]
    write_job(results, "fleet--img-a", kind="audit", target="fleet", image="img-a", exit_code=1,
              report=audit_report(findings, [("cudnn", "8.1.0"), ("openblas", None), ("cudnn", "8.1.0")]))
    write_job(results, "fleet--img-b", kind="audit", target="fleet", image="img-b",
              report=audit_report([("pythonhashseed-unset", "low")], [("openblas", "0.3.21")]))
    write_job(results, "fleet--img-c", kind="audit", target="fleet", image="img-c", exit_code=2,
              error="registry: 401 Unauthorized")
    document = valid(aggregate(load_results(results), name="fleet-audit"))
    fleet = document["fleet"]
    assert fleet["counts"] == {"images": 3, "audited": 2, "failed": 1}
    a = fleet["images"][0]
    assert a["image"] == "img-a" and a["findings"]["high"] == ["cudnn-8.1-birnn-nondeterminism"]
    assert a["findings"]["low"] == ["pythonhashseed-unset"] and a["findings"]["critical"] == []
    assert a["numeric_stack"] == [{"component": "cudnn", "version": "8.1.0"},
                                  {"component": "openblas", "version": None}]
    assert fleet["images"][2]["error"] == "registry: 401 Unauthorized"
    assert fleet["findings"] == [
        {"id": "pythonhashseed-unset", "severity": "low", "images": ["img-a", "img-b"]},
        {"id": "cudnn-8.1-birnn-nondeterminism", "severity": "high", "images": ["img-a"]}]
    assert the_cell(document, "fleet", "img-a")["findings"] == {
        "critical": 0, "high": 1, "medium": 0, "low": 1, "info": 0}
    assert document["models"] == [] and document["counts"]["audit_jobs"] == 3
    assert document["summary"][-2:] == [
        "fleet: 2 of 3 images audited, 2 distinct findings, 1 shared by several images",
        "finding pythonhashseed-unset (low) in 2 of 3 images: img-a, img-b"]
    assert valid(aggregate([], name="none"))["fleet"] is None


def test_the_builder_makes_genuine_probe_reports() -> None:
    probe_schema = json.loads((ROOT / "auditor/schemas/probe-report.schema.json").read_text())
    report = probe_report("r", "cpu-a", builders.TORCH_MODELS)
    jsonschema.Draft202012Validator(probe_schema).validate(report)
    assert {m["name"]: m["verdict"] for m in report["models"]} == dict.fromkeys(
        ("numpy.mlp", "torch.bilstm", "torch.dense"), "identical")


def test_tolerances_after_the_defaults_change_the_analysis_level() -> None:
    jobs = [job_result(t, "torch", TORCH_MODELS) for t in ("cpu-a", "cpu-b")]
    document = valid(aggregate(jobs, name="c", tolerances=["torch.bilstm.accuracy=abs:0.1"]))
    bilstm = the_model(document, "torch.bilstm")
    assert bilstm["verdicts"]["accuracy"] == "within-tolerance"
    assert bilstm["levels"]["analysis"]["holds"] is True
    assert document["tolerances"][-1] == {"pattern": "torch.bilstm.accuracy", "abs": 0.1, "rel": 0.0,
                                          "source": "user"}
    with pytest.raises(InputError, match="tolerance 'nonsense'"):
        aggregate(jobs, name="c", tolerances=["nonsense"])


def test_real_payload_outputs_aggregate(tmp_path: Path) -> None:
    """The payload run for real here (NumPy models), as two targets' reports: the same host, so the
    targets agree; the document holds exactly the accuracies the payload printed."""
    results = tmp_path / "results"
    for target in ("cpu-a", "cpu-b"):
        write_job(results, f"{target}--numpy", target=target, image="numpy",
                  report=real_probe_report("docker-daemon:localhost/numpy:t"))
    document = valid(aggregate(load_results(results), name="real"))
    printed = {(n, repeat): {m["name"]: m["accuracy"] for m in json.loads(real_payload(n, repeat))["models"]}
               for n in (1, 2) for repeat in (0, 1)}
    assert [m["name"] for m in document["models"]] == ["numpy.mlp", "numpy.rnn"]
    for model in document["models"]:
        assert [(e["label"], e["values"]) for e in model["environments"]] == [
            (f"{t} / numpy / threads={n}", [printed[(n, 0)][model["name"]], printed[(n, 1)][model["name"]]])
            for t in ("cpu-a", "cpu-b") for n in (1, 2)]
        assert "hardware" not in model["explained_by"] and "software" not in model["explained_by"]
        assert spread(model, "hardware")["range"] == 0.0
    assert [c["status"] for c in document["matrix"]] == ["ok", "ok"]
