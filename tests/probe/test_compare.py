"""`auditor.probe.compare`: verdicts, what explains a divergence, the reproducibility levels,
claims, baselines and the cross-checks, from hand-made payload outputs. Every report is validated
against its schema."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from auditor.errors import InputError
from auditor.probe.compare import (
    DEFAULT_TOLERANCES,
    Claim,
    MetricRef,
    Tolerance,
    classify,
    compare_reports,
    compare_values,
    crosscheck_maps,
    crosscheck_versions,
    int_version,
    load_baseline,
    parse_claim,
    parse_tolerance,
    tolerance_for,
    versions_agree,
)

SCHEMA = json.loads((Path(__file__).parents[2] / "auditor/schemas/probe-report.schema.json").read_text())
IMAGE_A = {"reference": "example.invalid/ml:1", "digest": "sha256:" + "a" * 64}
IMAGE_B = {"reference": "example.invalid/ml:2", "digest": "sha256:" + "b" * 64}


def digest(text: str) -> str:
    return "sha256:" + (text.encode().hex() * 64)[:64]


def model(name: str, accuracy: float, loss: float, weights: str = "w", predictions: str = "p",
          repeat: int = 0) -> dict[str, Any]:
    framework, _, kind = name.partition(".")
    return {"name": name, "framework": framework, "kind": kind, "accuracy": accuracy, "loss": loss,
            "weights_digest": digest(f"{name}-{weights}"),
            "predictions_digest": digest(f"{name}-{predictions}"),
            "epochs": [{"loss": loss, "accuracy": accuracy}], "seconds": 1.0, "repeat": repeat}


def kernel(name: str, value: str = "k", total: float = 12.5) -> dict[str, Any]:
    return {"name": name, "framework": name.split(".")[0], "dtype": "float32", "shape": [4, 4],
            "digest": digest(f"{name}-{value}"), "sum": total}


def output(models: list[dict[str, Any]], kernels: list[dict[str, Any]] | None = None,
           errors: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"schema": "auditor-probe-payload/1", "payload_version": "1", "config": {"seed": 0},
            "environment": {"frameworks": {}, "maps": [], "network": {"has_network": False}},
            "kernels": kernels or [], "models": models, "errors": errors or [], "seconds": 3.0}


def run(number: int, out: dict[str, Any] | None, variation: dict[str, str] | None = None,
        source: str = "this machine", error: str | None = None) -> dict[str, Any]:
    return {"run": number, "variation": variation or {}, "source": source, "output": out,
            "error": error, "exit_code": 0 if out else 1, "log_tail": "", "seconds": 4.0}


def valid(report: dict[str, Any]) -> dict[str, Any]:
    jsonschema.Draft202012Validator(SCHEMA).validate(report)
    json.dumps(report, allow_nan=False)  # strictly JSON
    return report


def metric(report: dict[str, Any], name: str, which: str) -> dict[str, Any]:
    found = {m["name"]: m for m in report["models"]} | {k["name"]: k for k in report["kernels"]}
    return found[name]["metrics"][which]


def the_model(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in report["models"] if m["name"] == name)


def test_the_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


# -- verdicts ----------------------------------------------------------------------------------
def test_identical_runs_are_identical_and_reproduce_the_outcome() -> None:
    runs = [run(i, output([model("numpy.mlp", 0.9, 0.25), model("torch.dense", 0.8, 0.4)],
                          [kernel("numpy.matmul")])) for i in range(6)]
    report = valid(classify(runs, image=IMAGE_A))
    assert report["counts"] == {"runs": 6, "successful": 6, "failed": 0, "sources": 1, "groups": 1}
    for name in ("numpy.mlp", "torch.dense"):
        m = the_model(report, name)
        assert m["verdict"] == "identical"
        assert {k: v["verdict"] for k, v in m["metrics"].items()} == dict.fromkeys(
            ("accuracy", "loss", "weights_digest", "predictions_digest"), "identical")
        assert {k: v["holds"] for k, v in m["levels"].items()} == {
            "outcome": True, "analysis": True, "interpretation": True}
        assert m["metrics"]["accuracy"]["explained_by"] == []
    assert metric(report, "numpy.matmul", "digest")["verdict"] == "identical"
    assert report["summary"][0] == "numpy.mlp: identical across 6 runs"
    assert "kernels: 1 of 1 with identical digests across 6 runs" in report["summary"]
    assert report["interpretation"]["ranking"]["same_order"] is True
    assert report["interpretation"]["ranking"]["per_run"][0]["order"] == "numpy.mlp > torch.dense"
    assert report["image"] == IMAGE_A


def test_small_float_jitter_is_within_tolerance_and_reproduces_the_analysis() -> None:
    runs = [run(i, output([model("torch.dense", 0.8 + i * 0.001, 0.4 * (1 + i * 1e-8),
                                 weights=f"w{i}", predictions=f"p{i % 2}")]))
            for i in range(4)]
    report = valid(classify(runs))
    m = the_model(report, "torch.dense")
    assert m["metrics"]["accuracy"]["verdict"] == "within-tolerance"
    assert m["metrics"]["accuracy"]["range"] == pytest.approx(0.003)
    assert m["metrics"]["loss"]["verdict"] == "within-tolerance"
    assert m["metrics"]["weights_digest"]["verdict"] == "diverged"
    assert m["metrics"]["weights_digest"]["distinct"] == 4
    assert m["metrics"]["predictions_digest"]["distinct"] == 2
    assert m["levels"]["outcome"]["holds"] is False
    assert m["levels"]["analysis"]["holds"] is True
    assert m["levels"]["interpretation"]["holds"] is True
    assert m["verdict"] == "diverged"  # the digests
    assert m["metrics"]["accuracy"]["explained_by"][0]["factor"] == "run-to-run"
    assert "outcome" in json.dumps(m["levels"]) and "4 distinct values in 4 runs" in \
        m["levels"]["outcome"]["evidence"][0]


def test_a_bilstm_spread_across_repeats_diverged_run_to_run() -> None:
    accuracies = [0.81, 0.87, 0.84, 0.83, 0.86, 0.85]
    runs = [run(i, output([model("numpy.mlp", 0.9, 0.25),
                           model("torch.bilstm", a, 0.5 - a / 10, weights=f"w{i}", predictions=f"p{i}")]))
            for i, a in enumerate(accuracies)]
    report = valid(classify(runs, image=IMAGE_A))
    acc = metric(report, "torch.bilstm", "accuracy")
    assert acc["verdict"] == "diverged"
    assert (acc["min"], acc["max"]) == (0.81, 0.87)
    assert acc["range"] == pytest.approx(0.06)
    assert [v["value"] for v in acc["values"]] == accuracies
    assert acc["groups"][0]["verdict"] == "diverged"
    assert [f["factor"] for f in acc["explained_by"]] == ["run-to-run"]
    assert acc["explained_by"][0]["description"] == "run to run (nondeterminism)"
    bilstm = the_model(report, "torch.bilstm")
    assert bilstm["summary"] == ("torch.bilstm: accuracy range 6.0 % (0.81\u20130.87), 6 distinct "
                                 "predictions digests across 6 runs: diverged run to run (nondeterminism)")
    assert bilstm["levels"]["analysis"]["holds"] is False
    assert bilstm["levels"]["outcome"]["holds"] is False
    # numpy.mlp stays ahead: the conclusion (the ranking) holds
    assert bilstm["levels"]["interpretation"]["holds"] is True
    assert report["summary"][0] == "numpy.mlp: identical across 6 runs"


def test_in_process_repeats_are_observations_of_their_own() -> None:
    runs = [run(i, output([model("torch.bilstm", 0.8 + r * 0.05, 0.3, repeat=r) for r in range(2)]))
            for i in range(2)]
    report = valid(classify(runs))
    acc = metric(report, "torch.bilstm", "accuracy")
    assert acc["count"] == 4
    assert [v["label"] for v in acc["values"]] == [
        "this machine #0", "this machine #0 repeat 1", "this machine #1", "this machine #1 repeat 1"]
    assert acc["explained_by"][0]["factor"] == "run-to-run"


def test_a_divergence_only_across_the_threads_variation_is_the_variation() -> None:
    runs = []
    for i, threads in enumerate(["1", "1", "1", "2", "2", "2"]):
        a = 0.84 if threads == "1" else 0.86
        runs.append(run(i, output([model("torch.bilstm", a, 0.3, weights=threads, predictions=threads)],
                                  [kernel("torch.matmul", value=threads, total=float(threads))]),
                        variation={"threads": threads}))
    report = valid(classify(runs))
    acc = metric(report, "torch.bilstm", "accuracy")
    assert acc["verdict"] == "diverged"
    assert [g["verdict"] for g in acc["groups"]] == ["identical", "identical"]
    assert acc["across_variations"][0]["differs_in"] == ["threads"]
    assert [(f["factor"], f["description"]) for f in acc["explained_by"]] == [
        ("variation", "the variation (threads=1 vs threads=2)")]
    assert "run-to-run nondeterminism is not ruled out" not in acc["explained_by"][0]["detail"]
    assert the_model(report, "torch.bilstm")["summary"].endswith(
        "across 6 runs: diverged by the variation (threads=1 vs threads=2)")
    assert metric(report, "torch.matmul", "digest")["explained_by"][0]["factor"] == "variation"
    assert [g["label"] for g in report["groups"]] == ["this machine threads=1", "this machine threads=2"]


def test_a_variation_without_repeats_says_nondeterminism_is_not_ruled_out() -> None:
    runs = [run(i, output([model("numpy.mlp", 0.9, 0.2 + i)]), variation={"threads": str(i + 1)})
            for i in range(2)]
    loss = metric(valid(classify(runs)), "numpy.mlp", "loss")
    assert loss["groups"][0]["verdict"] == "insufficient"
    assert loss["explained_by"][0]["factor"] == "variation"
    assert "not ruled out" in loss["explained_by"][0]["detail"]


def test_a_divergence_only_against_a_baseline_is_the_machine() -> None:
    ours = [run(i, output([model("numpy.mlp", 0.9, 0.25)])) for i in range(3)]
    theirs = [run(i, output([model("numpy.mlp", 0.9, 0.26, weights="other")]), source="B.json")
              for i in range(3)]
    report = valid(classify(ours + theirs, image=IMAGE_A))
    loss = metric(report, "numpy.mlp", "loss")
    assert loss["verdict"] == "diverged"
    assert [g["verdict"] for g in loss["groups"]] == ["identical", "identical"]
    assert loss["across_sources"][0]["source"] == "B.json"
    assert [(f["factor"], f["description"]) for f in loss["explained_by"]] == [
        ("environment", "the machine/environment (baseline B.json)")]
    assert report["reference_source"] == "this machine"
    m = the_model(report, "numpy.mlp")
    assert m["levels"]["analysis"]["holds"] is False
    assert m["metrics"]["accuracy"]["verdict"] == "identical"


def test_different_variations_on_different_sources_are_confounded() -> None:
    runs = [run(0, output([model("numpy.mlp", 0.9, 0.2)]), variation={"threads": "1"}),
            run(0, output([model("numpy.mlp", 0.9, 0.3)]), variation={"threads": "2"}, source="B.json")]
    loss = metric(valid(classify(runs)), "numpy.mlp", "loss")
    assert [f["factor"] for f in loss["explained_by"]] == ["confounded"]


def test_failures_and_missing_models() -> None:
    runs = [run(0, output([model("numpy.mlp", 0.9, 0.2), model("torch.bilstm", 0.8, 0.4)])),
            run(1, output([model("numpy.mlp", 0.9, 0.2)],
                          errors=[{"where": "torch.bilstm", "error": "RuntimeError: cuDNN error"}])),
            run(2, None, error="timed out after 600 s"),
            run(3, output([model("numpy.mlp", 0.9, 0.2), model("torch.bilstm", 0.8, 0.4)]))]
    report = valid(classify(runs))
    assert report["counts"]["failed"] == 1
    assert [(f["index"], f["where"]) for f in report["failures"]] == [(1, "torch.bilstm"), (2, None)]
    assert report["summary"][0] == "1 of 4 runs failed: this machine #2: timed out after 600 s"
    bilstm = the_model(report, "torch.bilstm")
    assert bilstm["metrics"]["accuracy"]["missing"] == [
        {"index": 1, "label": "this machine #1", "error": "RuntimeError: cuDNN error"}]
    assert bilstm["metrics"]["accuracy"]["verdict"] == "identical"
    assert {k: v["holds"] for k, v in bilstm["levels"].items()} == {
        "outcome": False, "analysis": False, "interpretation": False}
    assert bilstm["summary"].endswith("; missing or failed in 1 of 3 runs")
    assert the_model(report, "numpy.mlp")["levels"]["outcome"]["holds"] is True


def test_a_single_run_compares_nothing() -> None:
    report = valid(classify([run(0, output([model("numpy.mlp", 0.9, 0.2)]))]))
    m = the_model(report, "numpy.mlp")
    assert m["verdict"] == "insufficient"
    assert {k: v["holds"] for k, v in m["levels"].items()} == dict.fromkeys(
        ("outcome", "analysis", "interpretation"))
    assert m["summary"] == "numpy.mlp: 1 successful run(s), nothing to compare"


def test_no_successful_run() -> None:
    report = valid(classify([run(0, None, error="no python3 in the image")]))
    assert report["models"] == [] and report["summary"][-1] == "no successful run: nothing to compare"


def test_hostile_output_is_skipped_not_trusted() -> None:
    hostile = output([{"name": 3}, "x", {"name": "numpy.mlp", "accuracy": "0.9", "loss": True,
                                        "weights_digest": 5, "repeat": -1}])
    hostile["kernels"] = {"not": "a list"}
    report = valid(classify([run(0, hostile), run(1, output([model("numpy.mlp", 0.9, 0.2)]))]))
    acc = metric(report, "numpy.mlp", "accuracy")
    assert acc["count"] == 1 and acc["missing"][0]["error"] == "no accuracy recorded"
    assert report["kernels"] == []


def test_non_finite_values_diverge_and_stay_out_of_the_statistics() -> None:
    result = compare_values([0.5, float("nan")], True, DEFAULT_TOLERANCES[1])
    assert result["verdict"] == "diverged" and result["min"] == result["max"] == 0.5
    assert compare_values([float("nan")] * 2, True, None)["verdict"] == "identical"
    assert compare_values([0.0, -0.0], True, None)["verdict"] == "diverged"  # bitwise
    assert compare_values([0.0, -0.0], True, Tolerance("*"))["verdict"] == "within-tolerance"


# -- tolerances --------------------------------------------------------------------------------
def test_tolerances_parse_and_the_last_match_wins() -> None:
    assert parse_tolerance("*.accuracy=abs:0.01") == Tolerance("*.accuracy", 0.01, 0.0)
    assert parse_tolerance("torch.*.loss = abs:1e-4,rel:1e-6") == Tolerance("torch.*.loss", 1e-4, 1e-6)
    assert parse_tolerance("numpy.mlp.accuracy=exact") == Tolerance("numpy.mlp.accuracy")
    tols = [*DEFAULT_TOLERANCES, parse_tolerance("torch.*.accuracy=abs:0.1")]
    assert tolerance_for("torch.bilstm.accuracy", tols).absolute == 0.1
    assert tolerance_for("numpy.mlp.accuracy", tols).absolute == 0.005
    assert tolerance_for("numpy.mlp.weights_digest", tols).describe() == "exact"
    for bad in ("*.accuracy", "*.accuracy=", "=abs:1", "*.accuracy=abs:x", "*.accuracy=abs:-1",
                "*.accuracy=tol:1", "*.accuracy=abs:1,abs:2", "*.loss=rel:nan", "*.loss=abs 0.1"):
        with pytest.raises(InputError, match="tolerance"):
            parse_tolerance(bad)


def test_a_user_tolerance_turns_a_divergence_into_agreement() -> None:
    runs = [run(i, output([model("torch.bilstm", a, 0.3)])) for i, a in enumerate([0.81, 0.87])]
    assert metric(classify(runs), "torch.bilstm", "accuracy")["verdict"] == "diverged"
    report = valid(classify(runs, tolerances=["torch.bilstm.accuracy=abs:0.1"]))
    acc = metric(report, "torch.bilstm", "accuracy")
    assert acc["verdict"] == "within-tolerance"
    assert acc["tolerance"] == {"pattern": "torch.bilstm.accuracy", "abs": 0.1, "rel": 0.0, "source": "user"}
    assert report["tolerances"][-1]["source"] == "user"


def test_a_range_exactly_at_the_tolerance_is_within() -> None:
    assert compare_values([0.865, 0.87], True, DEFAULT_TOLERANCES[0])["verdict"] == "within-tolerance"
    assert compare_values([0.86, 0.87], True, DEFAULT_TOLERANCES[0])["verdict"] == "diverged"


# -- claims and the interpretation -------------------------------------------------------------
def test_claims_parse() -> None:
    assert parse_claim("torch.bilstm.accuracy > torch.dense.accuracy") == Claim(
        "torch.bilstm.accuracy > torch.dense.accuracy", MetricRef("torch.bilstm", "accuracy"), ">",
        MetricRef("torch.dense", "accuracy"))
    assert parse_claim("numpy.mlp.accuracy>=0.9").right == 0.9
    assert parse_claim("0.5 < numpy.mlp.loss").left == 0.5
    assert parse_claim("my-model_2.loss != 1e-3").op == "!="
    for bad in ("", "numpy.mlp.accuracy", "numpy.mlp.accuracy > ", "> 0.9", "0.9 > 0.8",
                "numpy.mlp.accuracy = 0.9", "numpy.mlp.accuracy => 0.9", "numpy.mlp.seconds > 1",
                "accuracy > 0.9", "numpy.mlp.accuracy > 0.9 and 1", "__import__('os').system('x') > 1",
                "numpy.mlp.accuracy > 0.9abc", "numpy..mlp.accuracy > 1", "numpy.mlp.accuracy > inf",
                "numpy.mlp.accuracy >> 1", "numpy.mlp.accuracy > > 1"):
        with pytest.raises(InputError, match="claim"):
            parse_claim(bad)


def test_claims_are_evaluated_in_every_run() -> None:
    runs = [run(i, output([model("torch.bilstm", a, 0.3), model("torch.dense", 0.84, 0.4)]))
            for i, a in enumerate([0.86, 0.87, 0.81])]
    report = valid(classify(runs, claims=["torch.bilstm.accuracy > torch.dense.accuracy",
                                          "torch.dense.accuracy >= 0.8"]))
    first, second = report["interpretation"]["claims"]
    assert first["holds"] is False
    assert [r["value"] for r in first["results"]] == [True, True, False]
    assert first["evidence"] == ("false in 1 of 3 runs; this machine #2: 0.81 > 0.84 is false")
    assert second["holds"] is True and second["evidence"] == "true in all 3 runs"
    assert the_model(report, "torch.bilstm")["levels"]["interpretation"]["holds"] is False
    # the ranking reverses beyond the tolerance too
    reversal = report["interpretation"]["ranking"]["reversals"][0]
    assert reversal["models"] == ["torch.bilstm", "torch.dense"]
    assert reversal["second_higher"] == ["this machine #2"]
    assert report["interpretation"]["ranking"]["same_order"] is False
    assert "claim torch.dense.accuracy >= 0.8: holds (true in all 3 runs)" in report["summary"]


def test_a_swap_within_tolerance_is_the_same_conclusion() -> None:
    runs = [run(i, output([model("a.m", a, 0.3), model("b.m", 0.85, 0.4)]))
            for i, a in enumerate([0.852, 0.848])]
    report = valid(classify(runs))
    ranking = report["interpretation"]["ranking"]
    assert ranking["same_order"] is False and ranking["reversals"] == []
    assert the_model(report, "a.m")["levels"]["interpretation"]["holds"] is True


def test_a_claim_on_an_unknown_model_is_an_input_error() -> None:
    runs = [run(0, output([model("numpy.mlp", 0.9, 0.2)]))]
    with pytest.raises(InputError, match=r"no model 'torch\.cnn' in the runs \(models: numpy\.mlp\)"):
        classify(runs, claims=["torch.cnn.accuracy > 0.5"])


def test_a_claim_on_a_model_that_failed_does_not_hold() -> None:
    runs = [run(0, output([], errors=[{"where": "torch.cnn", "error": "ImportError"}])),
            run(1, output([model("torch.cnn", 0.9, 0.2)]))]
    result = valid(classify(runs, claims=["torch.cnn.accuracy > 0.5"]))["interpretation"]["claims"][0]
    assert result["holds"] is False
    assert [r["value"] for r in result["results"]] == [None, True]
    assert "cannot be evaluated in this machine #0" in result["evidence"]


# -- baselines ---------------------------------------------------------------------------------
def report_of(image: dict[str, Any], accuracy: float = 0.9, **kwargs: Any) -> dict[str, Any]:
    runs = [run(i, output([model("numpy.mlp", accuracy, 0.2)])) for i in range(2)]
    return classify(runs, image=image, **kwargs)


def test_a_baseline_of_another_image_is_refused_without_force() -> None:
    baseline = report_of(IMAGE_B)
    with pytest.raises(InputError) as err:
        load_baseline(baseline, name="B.json", digest=IMAGE_A["digest"])
    assert str(err.value) == (f"baseline B.json is of image {IMAGE_B['digest']}, this is "
                              f"{IMAGE_A['digest']}; compare anyway with --force")
    runs = load_baseline(baseline, name="B.json", digest=IMAGE_A["digest"], force=True)
    assert [r["source"] for r in runs] == ["B.json", "B.json"]
    assert load_baseline(report_of(IMAGE_A), name="A.json", digest=IMAGE_A["digest"])


def test_a_baseline_of_another_version_or_shape_is_refused() -> None:
    doc = report_of(IMAGE_A)
    with pytest.raises(InputError, match=r"B\.json has schema_version '2'; this auditor reads version 1"):
        load_baseline({**doc, "schema_version": "2"}, name="B.json")
    with pytest.raises(InputError, match="not an auditor probe report"):
        load_baseline({"schema": "https://auditor.invalid/schemas/report.schema.json"}, name="B.json")
    with pytest.raises(InputError, match="not an auditor probe report"):
        load_baseline([1, 2], name="B.json")
    broken = copy.deepcopy(doc)
    broken["runs"][1]["output"] = "text"
    with pytest.raises(InputError, match=r"B\.json: run 1 is malformed"):
        load_baseline(broken, name="B.json")


def test_a_baseline_joins_this_machines_runs() -> None:
    baseline = load_baseline(report_of(IMAGE_A, accuracy=0.95), name="B.json", digest=IMAGE_A["digest"])
    ours = [run(i, output([model("numpy.mlp", 0.9, 0.2)])) for i in range(2)]
    report = valid(classify(ours + baseline, image=IMAGE_A))
    acc = metric(report, "numpy.mlp", "accuracy")
    assert report["sources"] == ["this machine", "B.json"]
    assert acc["explained_by"][0]["description"] == "the machine/environment (baseline B.json)"


def test_compare_reports_merges_runs_and_keeps_the_first_reports_standards() -> None:
    a = report_of(IMAGE_A, tolerances=["*.accuracy=abs:0.1"], claims=["numpy.mlp.accuracy >= 0.85"])
    b = report_of(IMAGE_A, accuracy=0.95)
    merged = valid(compare_reports([a, b], names=["A.json", "B.json"]))
    assert merged["sources"] == ["A.json", "B.json"] and merged["counts"]["runs"] == 4
    assert [r["source"] for r in merged["runs"]] == ["A.json"] * 2 + ["B.json"] * 2
    assert metric(merged, "numpy.mlp", "accuracy")["verdict"] == "within-tolerance"
    assert merged["interpretation"]["claims"][0]["holds"] is True
    strict = valid(compare_reports([a, b], names=["A.json", "B.json"], tolerances=[], claims=[]))
    acc = metric(strict, "numpy.mlp", "accuracy")
    assert acc["verdict"] == "diverged"
    assert acc["explained_by"][0]["description"] == "the machine/environment (baseline B.json)"
    assert [t["source"] for t in strict["tolerances"]] == ["default"] * len(DEFAULT_TOLERANCES)
    # a compared report compares again
    again = valid(compare_reports([merged, b], names=["AB.json", "B2.json"]))
    assert again["sources"] == ["AB.json: A.json", "AB.json: B.json", "B2.json"]


def test_compare_reports_of_different_images_needs_force() -> None:
    a, b = report_of(IMAGE_A), report_of(IMAGE_B)
    with pytest.raises(InputError, match=r"baseline B\.json is of image sha256:b+, this is sha256:a+; "
                                         r"compare anyway with --force"):
        compare_reports([a, b], names=["A.json", "B.json"])
    forced = valid(compare_reports([a, b], force=True, names=["A.json", "B.json"]))
    assert forced["image"]["digest"] == IMAGE_A["digest"]
    assert "compared anyway (--force)" in forced["notes"][0]
    with pytest.raises(InputError, match="at least one"):
        compare_reports([])
    with pytest.raises(InputError, match="same name"):
        compare_reports([a, a], names=["A.json", "A.json"])


# -- cross-checks ------------------------------------------------------------------------------
OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblasp-r0.3.21.so"


def test_crosscheck_maps_agrees_when_the_predicted_files_are_mapped() -> None:
    predicted = {"openblas": [OPENBLAS.lstrip("/")],
                 "cudnn": ["/usr/lib/x86_64-linux-gnu/libcudnn.so.8.9.2"]}
    mapped = [OPENBLAS, "/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/python3.11/lib-dynload/x.so"]
    # cuDNN not mapped on a CPU run is fine unless a framework that needs it ran and says so
    assert crosscheck_maps(predicted, mapped, needed_by={"openblas": ["numpy"]},
                           frameworks_used=["numpy"]) == []


def test_crosscheck_maps_flags_a_library_mapped_from_another_directory() -> None:
    predicted = {"openblas": [OPENBLAS]}
    mapped = ["/opt/custom/lib/libopenblas.so.0", "/usr/lib/x86_64-linux-gnu/libc.so.6"]
    findings = crosscheck_maps(predicted, mapped, needed_by={"openblas": ["numpy"]},
                               frameworks_used=["numpy"])
    assert findings == [{
        "id": "probe-linkage-mismatch", "severity": "medium", "component": "openblas",
        "message": f"openblas was loaded at run time from /opt/custom/lib/libopenblas.so.0, but static "
                   f"linkage predicted {OPENBLAS} (LD_LIBRARY_PATH, LD_PRELOAD or a dlopen by full path "
                   f"can explain it)",
        "locations": ["/opt/custom/lib/libopenblas.so.0", OPENBLAS]}]


def test_crosscheck_maps_flags_predicted_but_not_mapped_and_unpredicted_loads() -> None:
    predicted = {"openblas": [OPENBLAS]}
    findings = crosscheck_maps(predicted, ["/usr/lib/libgomp.so.1"], needed_by={"openblas": ["numpy"]},
                               frameworks_used=["numpy", "torch"])
    assert [(f["component"], f["message"]) for f in findings] == [
        ("gomp", "gomp was loaded at run time from /usr/lib/libgomp.so.1, but static linkage "
                 "predicted no copy of it (LD_LIBRARY_PATH, LD_PRELOAD or a dlopen by full path can "
                 "explain it)"),
        ("openblas", f"static linkage predicted openblas from {OPENBLAS}, but it was not mapped "
                     f"although numpy ran")]
    assert crosscheck_maps(predicted, [], needed_by={"openblas": ["numpy"]}, frameworks_used=["torch"]) == []


def test_crosscheck_maps_the_images_own_other_copies_are_not_a_mismatch() -> None:
    """NumPy's bundled OpenBLAS, mapped beside the framework's predicted one or where nothing
    was predicted, is a file of the image: code the linkage does not follow loaded it."""
    bundled = "/usr/local/lib/python3.11/site-packages/numpy.libs/libscipy_openblas64_-fdde5778.so"
    image = [bundled.lstrip("/"), OPENBLAS.lstrip("/")]
    assert crosscheck_maps({"openblas": [OPENBLAS]}, [OPENBLAS, bundled], in_image=image) == []
    assert crosscheck_maps({}, [bundled], in_image=image) == []
    # the predicted copy lost to the image's other copy: LD_LIBRARY_PATH won, a finding
    (lost,) = crosscheck_maps({"openblas": [OPENBLAS]}, [bundled], in_image=image)
    assert lost["message"].startswith(f"openblas was loaded at run time from {bundled}, but ")
    # a copy from outside the image beside the predicted one: a finding
    (outside,) = crosscheck_maps({"openblas": [OPENBLAS]}, [OPENBLAS, "/mnt/site/libopenblas.so.0"],
                                 in_image=image)
    assert outside["message"].startswith("openblas was also loaded at run time from /mnt/site/")
    assert outside["locations"] == ["/mnt/site/libopenblas.so.0", OPENBLAS]


def test_crosscheck_maps_takes_a_classifier() -> None:
    findings = crosscheck_maps({"blas": ["/a/libblas.so.3"]}, ["/b/libblas.so.3"],
                               component_of=lambda p: "blas" if "libblas" in p else None)
    assert [f["locations"] for f in findings] == [["/b/libblas.so.3", "/a/libblas.so.3"]]


def test_int_versions() -> None:
    assert int_version(8902) == "8.9.2"
    assert int_version(7605) == "7.6.5"
    assert int_version(90100) == "9.1.0"
    assert int_version(90501) == "9.5.1"
    assert int_version(2708) == "2.7.8"  # NCCL < 2.9
    assert int_version(21803) == "2.18.3"
    assert versions_agree("12.1", "12.1.105") and not versions_agree("12.1", "12.4.127")
    assert versions_agree("8.9.2", "8.9.2.26") and not versions_agree("8.9.2", "8.9.7.29")
    assert versions_agree("2.1.0+cu121", "2.1.0")


def test_crosscheck_versions_agreement() -> None:
    runtime = {"torch": {"version": "2.1.0+cu121", "cuda": "12.1", "cudnn": 8902, "nccl": [2, 18, 1]},
               "numpy": {"version": "1.24.2", "blas": "openblas 0.3.21 with DYNAMIC_ARCH"}}
    inventory = {"torch": "2.1.0", "cudnn": "8.9.2.26", "cudart": "12.1.105", "nccl": "2.18.1",
                 "openblas": "0.3.21", "numpy": "1.24.2"}
    assert crosscheck_versions(inventory, runtime) == []
    assert crosscheck_versions({}, runtime) == []


def test_crosscheck_versions_disagreement() -> None:
    runtime = {"torch": {"version": "2.1.0", "cuda": "12.1", "cudnn": 8902, "nccl": None},
               "tensorflow": {"version": "2.15.0",
                              "build_info": {"cudnn_version": "8", "cuda_version": "12.2"}},
               "numpy": {"version": "1.26.4", "blas": "scipy-openblas 0.3.23.dev"}}
    inventory = {"cudnn": ["8.9.7.29", "8.6.0"], "cudart": "12.1.105", "openblas": "0.3.21"}
    findings = crosscheck_versions(inventory, runtime)
    assert [(f["id"], f["component"]) for f in findings] == [
        ("probe-version-mismatch", "cudnn"), ("probe-version-mismatch", "cudart"),
        ("probe-version-mismatch", "openblas")]
    assert findings[0]["message"].startswith(
        "torch (cudnn) reports cudnn 8.9.2 (8902) at run time, but the inventory found cudnn 8.9.7.29, 8.6.0")
    assert findings[1]["message"].startswith("tensorflow (build_info cuda_version) reports cudart 12.2")
    assert all(f["severity"] == "medium" for f in findings)


def test_a_model_a_run_was_not_asked_to_run_is_not_missing() -> None:
    only_mlp = output([model("numpy.mlp", 0.9, 0.2)])
    only_mlp["config"] = {"seed": 0, "models": ["numpy.mlp"], "kernels": False}
    full = output([model("numpy.mlp", 0.9, 0.2), model("torch.cnn", 0.95, 0.1)], [kernel("numpy.matmul")])
    runs = [run(0, full), run(1, full), run(0, only_mlp, source="B.json")]
    report = valid(classify(runs, claims=["torch.cnn.accuracy > numpy.mlp.accuracy"]))
    cnn = the_model(report, "torch.cnn")
    assert cnn["metrics"]["accuracy"]["missing"] == []
    assert cnn["levels"]["outcome"]["holds"] is True
    assert metric(report, "numpy.matmul", "digest")["missing"] == []
    claim = report["interpretation"]["claims"][0]
    assert claim["holds"] is True and [r["label"] for r in claim["results"]] == [
        "this machine #0", "this machine #1"]
    # asked for and absent: missing, and the claim cannot be told there
    runs[2]["output"]["config"]["models"] = None
    report = valid(classify(runs, claims=["torch.cnn.accuracy > numpy.mlp.accuracy"]))
    assert the_model(report, "torch.cnn")["metrics"]["accuracy"]["missing"][0]["label"] == "B.json #0"
    assert report["interpretation"]["claims"][0]["evidence"] == (
        "true in 2 of 3 runs; cannot be evaluated in B.json #0 (a model is missing)")
