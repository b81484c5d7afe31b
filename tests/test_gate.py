"""The CI gate: --fail-on, reviewed and expiring ignore entries, and where reports go (-o)."""

from __future__ import annotations

import datetime
import json
import os
import stat
from pathlib import Path

import jsonschema
import pytest

from auditor.errors import InputError
from auditor.gate import IgnoreEntry, apply_gate, load_ignore_file
from auditor.report.document import report_schema
from auditor.report.outputs import Output, open_output, parse_outputs
from tests.test_cli import assert_one_line_error, run

TODAY = datetime.date(2026, 11, 24)
SEED = "cudnn-8.1-birnn-nondeterminism"


def finding(rule: str, severity: str, component: str = "cudnn", version: str | None = "8.1.0.77") -> dict:
    return {"id": rule, "severity": severity, "component": component, "message": "m", "path": None,
            "evidence": [], "version": version}


DOC = {"findings": [finding(SEED, "high"), finding("nccl-x", "medium", "nccl", "2.7.8"),
                    finding("env-y", "low", "python", None)]}


def entry(rule: str, expires: datetime.date, **kw: str) -> IgnoreEntry:
    return IgnoreEntry(rule, "we checked", expires, source="ignore.yaml:3", **kw)


@pytest.mark.parametrize(("fail_on", "failed", "failing"), [
    ("critical", False, 0), ("high", True, 1), ("medium", True, 2), ("low", True, 3), ("none", False, 0)])
def test_fail_on_threshold(fail_on: str, failed: bool, failing: int) -> None:
    gate = apply_gate(DOC, [], fail_on, TODAY)["gate"]
    assert (gate["failed"], gate["failing"]) == (failed, failing)
    assert gate["counts"]["high"] == 1 and gate["counts"]["critical"] == 0


def test_a_live_entry_suppresses_and_says_why() -> None:
    doc = apply_gate(DOC, [entry(SEED, TODAY)], "high", TODAY)  # expires today: still live
    assert [f["id"] for f in doc["findings"]] == ["nccl-x", "env-y"]
    (suppressed,) = doc["suppressed"]
    assert suppressed["finding"]["id"] == SEED and suppressed["ignore"]["reason"] == "we checked"
    assert not doc["gate"]["failed"]


def test_an_expired_entry_no_longer_suppresses_and_is_reported() -> None:
    doc = apply_gate(DOC, [entry(SEED, TODAY - datetime.timedelta(days=1))], "high", TODAY)
    ids = [f["id"] for f in doc["findings"]]
    assert SEED in ids and "ignore-expired" in ids and doc["suppressed"] == []
    expired = next(f for f in doc["findings"] if f["id"] == "ignore-expired")
    assert "ignore.yaml:3" in expired["message"] and "2026-11-23" in expired["message"]
    assert doc["gate"]["failed"] and doc["gate"]["expired_entries"] == 1


@pytest.mark.parametrize(("kw", "covers"), [
    ({"component": "cudnn"}, True), ({"component": "nccl"}, False),
    ({"version": "8.1"}, True), ({"version": "8.1.0.77"}, True), ({"version": "8.1.1"}, False),
    ({"version": "8.10"}, False)])
def test_component_and_version_narrow_an_entry(kw: dict, covers: bool) -> None:
    doc = apply_gate(DOC, [entry(SEED, TODAY, **kw)], "none", TODAY)
    assert (len(doc["suppressed"]) == 1) is covers


def test_ignore_file_schema_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "ignore.yaml"
    path.write_text(f"version: 1\nignore:\n  - rule: {SEED}\n    reason: checked\n")
    with pytest.raises(InputError, match=rf"{path}:3: ignore/0: 'expires' is a required property"):
        load_ignore_file(str(path))
    path.write_text(f"version: 1\nignore:\n  - rule: {SEED}\n    reason: checked\n    expires: 2026-02-30\n")
    with pytest.raises(InputError, match=rf"{path}:3: expires '2026-02-30' is not a date"):
        load_ignore_file(str(path))
    path.write_text("version: 1\nignore: [\n")
    with pytest.raises(InputError, match="invalid YAML"):
        load_ignore_file(str(path))


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_outputs_are_written_whole_with_the_mode_of_a_plain_file(tmp_path: Path, umask: int) -> None:
    from auditor.campaign.jobs import write_json

    before = os.umask(umask)
    try:
        with open_output(tmp_path / "report.json") as out:
            out.write("{}")
            assert not (tmp_path / "report.json").exists()  # not before it is whole
        write_json(tmp_path / "job.json", {"a": 1})  # the campaign's writer is the same one
    finally:
        os.umask(before)
    for name in ("report.json", "job.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask
    assert json.loads((tmp_path / "job.json").read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.json", "report.json"]


def test_outputs_parse_formats_and_refuse_one_file_twice(tmp_path: Path) -> None:
    formats = ("table", "json", "sarif")
    assert parse_outputs("table", (), formats) == [Output("table", None)]
    assert parse_outputs("json", ("out.json",), formats) == [Output("json", "out.json")]
    assert parse_outputs("table", ("sarif=a.sarif", "json=b.json"), formats) == [
        Output("table", None), Output("sarif", "a.sarif"), Output("json", "b.json")]
    assert parse_outputs("table", ("dir/x=y.json",), formats) == [Output("table", "dir/x=y.json")]
    with pytest.raises(InputError, match="two formats to the same file"):
        parse_outputs("table", ("sarif=a", "json=./a"), formats)
    with pytest.raises(InputError, match="unknown format 'xml'"):
        parse_outputs("table", ("xml=a",), formats)


# -- end to end, on the TF 2.8 GPU-style fixture image ----------------------------------------
@pytest.fixture(scope="module")
def tf_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    from fixtures.tf_image import tf_gpu_image

    return tf_gpu_image(tmp_path_factory.mktemp("tf") / "img")


@pytest.mark.slow
def test_gate_over_the_tf_image(tf_image: str, tmp_path: Path) -> None:
    cache = ["--cache-dir", str(tmp_path / "cache")]
    report = tmp_path / "report.json"
    failed = run("audit", tf_image, *cache, "--fail-on", "high", "-o", f"json={report}")
    assert failed.returncode == 1, failed.stderr
    assert "findings at or above high" in failed.stderr.splitlines()[-1]
    doc = json.loads(report.read_text())  # written before the gate exits
    jsonschema.validate(doc, report_schema())
    highs = sorted({(f["id"], f["component"]) for f in doc["findings"] if f["severity"] == "high"})
    assert (SEED, "cudnn") in highs
    assert run("audit", tf_image, *cache, "--fail-on", "critical").returncode == 0
    assert run("audit", tf_image, *cache).returncode == 0  # no gate unless asked

    future = (datetime.date.today() + datetime.timedelta(days=30)).isoformat()
    past = (datetime.date.today() - datetime.timedelta(days=1)).isoformat()
    ignore = tmp_path / "ignore.yaml"
    ignore.write_text("version: 1\nignore:\n" + "".join(
        f"  - rule: {rule}\n    component: {component}\n    reason: reviewed for this image\n"
        f"    expires: \"{future}\"\n" for rule, component in highs))
    passed = run("audit", tf_image, *cache, "--fail-on", "high", "--ignore-file", str(ignore),
                 "-o", f"json={report}")
    assert passed.returncode == 0, passed.stderr
    doc = json.loads(report.read_text())
    assert {s["finding"]["id"] for s in doc["suppressed"]} == {rule for rule, _ in highs}
    assert doc["gate"] == {**doc["gate"], "failed": False, "fail_on": "high"}

    ignore.write_text(ignore.read_text().replace(future, past, 1))  # the first entry expires
    expired = run("audit", tf_image, *cache, "--fail-on", "high", "--ignore-file", str(ignore),
                  "-o", f"json={report}")
    assert expired.returncode == 1
    doc = json.loads(report.read_text())
    assert highs[0][0] in {f["id"] for f in doc["findings"]}
    assert any(f["id"] == "ignore-expired" and highs[0][0] in f["message"] for f in doc["findings"])


@pytest.mark.slow
def test_bad_outputs_and_ignore_files_fail_before_the_work(tf_image: str, tmp_path: Path) -> None:
    assert_one_line_error(run("audit", tf_image, "-o", str(tmp_path / "missing" / "r.json")), 2,
                          "does not exist")
    bad = tmp_path / "ignore.yaml"
    bad.write_text("version: 2\nignore: []\n")
    assert_one_line_error(run("audit", tf_image, "--ignore-file", str(bad)), 2, f"{bad}:1: version")
    same = tmp_path / "same"
    assert_one_line_error(run("audit", tf_image, "-o", f"json={same}", "-o", f"table={same}"), 2,
                          "two formats to the same file")
    assert not same.exists()
