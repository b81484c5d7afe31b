"""`auditor rules …` and `auditor audit --rules/--gpu-arch` as users and CI jobs call them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from auditor.report.document import report_schema
from tests.rules.test_packs import GOOD
from tests.test_cli import assert_one_line_error, run

REPO = Path(__file__).resolve().parents[2]
SEED = "cudnn-8.1-birnn-nondeterminism"


def test_builtin_packs_lint_and_test_clean_from_the_repo_root() -> None:
    lint = run("rules", "lint", "rules/", cwd=REPO)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    rules_count = int(lint.stderr.split(", ")[1].split()[0])
    assert rules_count >= 30
    test = run("rules", "test", cwd=REPO)
    assert test.returncode == 0, test.stdout + test.stderr
    passed, total = test.stderr.split()[0].split("/")
    assert passed == total and int(total) >= 60  # a trigger and a clean case per rule at least


def test_list_names_every_pack_and_its_version() -> None:
    proc = run("rules", "list", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    names = {p["name"] for p in listing["packs"]}
    assert {"cudnn", "cublas", "nccl", "tensorflow", "pytorch", "jax", "cpu-blas", "environment"} <= names
    assert all(p["version"] and p["date"] and len(p["sha256"]) == 64 for p in listing["packs"])
    assert SEED in {r["id"] for r in listing["rules"]}
    table = run("rules", "list")
    assert table.returncode == 0 and SEED in table.stdout and "rules in" in table.stdout


def test_show_prints_the_rule_as_written() -> None:
    proc = run("rules", "show", SEED, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rule = json.loads(proc.stdout)
    assert rule["id"] == SEED and rule["pack"].startswith("cudnn@")
    assert rule["affected"][0]["fixed_in"] == "8.2.1" and rule["references"]
    assert_one_line_error(run("rules", "show", "no-such-rule"), 2, "no rule 'no-such-rule'")


def test_lint_reports_every_problem_with_file_and_line_and_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("severity: medium", "severity: urgent").replace('"<2.18.3"', '"<2.x"'))
    proc = run("rules", "lint", str(bad))
    assert proc.returncode == 1
    assert f"{bad}:9: rule extra-nccl: rules/0/severity: 'urgent' is not one of" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_lint_finds_ids_that_clash_with_the_builtin_packs(tmp_path: Path) -> None:
    clash = tmp_path / "clash.yaml"
    clash.write_text(GOOD.replace("extra-nccl", SEED))
    proc = run("rules", "lint", str(clash))
    expected = f"{clash}:7: rule {SEED}: duplicate rule id: also in builtin:cudnn.yaml"
    assert proc.returncode == 1 and expected in proc.stdout
    assert run("rules", "lint", "--alone", str(clash)).returncode == 0


def test_test_fails_on_a_wrong_case(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(GOOD.replace('clean: [{components: {nccl: "2.18.3"}}]',
                                  'clean: [{components: {nccl: "2.18.2"}}]'))
    proc = run("rules", "test", str(wrong))
    assert proc.returncode == 1
    assert "FAIL extra-nccl clean[0]: fired:" in proc.stdout and "1/2 cases passed" in proc.stderr


def test_audit_with_a_bad_extra_pack_fails_before_reading_the_image(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("confidence: reported", "confidence: maybe"))
    proc = run("audit", "oci:/nonexistent/layout", "--rules", str(bad))
    assert_one_line_error(proc, 2, f"{bad}:10: rule extra-nccl: rules/0/confidence")
    assert "nonexistent" not in proc.stderr


def test_audit_rejects_a_bad_gpu_arch() -> None:
    proc = run("demo", "--gpu-arch", "ampere")
    assert proc.returncode == 2 and "'ampere' is not a GPU architecture" in proc.stderr


def test_demo_shows_the_seed_finding_and_the_packs(tmp_path: Path) -> None:
    proc = run("demo", "--cache-dir", str(tmp_path / "cache"), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    jsonschema.validate(doc, report_schema())
    (seed,) = [f for f in doc["findings"] if f["id"] == SEED]
    assert seed["version"] == "8.1.0.77" and seed["fixed_in"] == "8.2.1" and seed["severity"] == "high"
    assert "loaded by tensorflow" in seed["message"] and "8.2.1" in seed["remediation"]
    assert seed["assumptions"] and seed["rule"]["pack"].startswith("cudnn@") and seed["rule"]["references"]
    assert {p["name"] for p in doc["rules"]["packs"]} >= {"cudnn", "nccl"}
    assert doc["rules"]["evaluated"] >= 30 and SEED in doc["rules"]["fired"]
    table = run("demo", "--cache-dir", str(tmp_path / "cache"))
    assert SEED in table.stdout and "fix:" in table.stdout and "Rules " in table.stdout


def test_gpu_arch_turns_an_assumption_into_a_decision(tmp_path: Path) -> None:
    """A rule conditioned on Ampere or newer states the GPU as an assumption without --gpu-arch,
    drops it with sm_80, and does not fire with sm_70."""
    pack = tmp_path / "gpu.yaml"
    pack.write_text(GOOD.replace("extra-nccl", "gpu-only").replace("name: extra", "name: gpu")
                    .replace("    effect:", "    when: {gpu_arch: {min: sm_80}}\n    effect:")
                    .replace('"<2.18.3"', '"<2.30.8"').replace('"2.18.3"', '"2.30.8"'))
    cache = str(tmp_path / "cache")

    def gpu_finding(*args: str) -> dict | None:
        proc = run("demo", "--cache-dir", cache, "--format", "json", "--rules", str(pack), *args)
        assert proc.returncode == 0, proc.stderr
        return next((f for f in json.loads(proc.stdout)["findings"] if f["id"] == "gpu-only"), None)

    unknown = gpu_finding()
    assert unknown is not None and unknown["assumptions"] == [
        "the GPU is sm_80 or newer (no --gpu-arch given)"]
    ampere = gpu_finding("--gpu-arch", "sm_80")
    assert ampere is not None and ampere["assumptions"] == []
    assert gpu_finding("--gpu-arch", "sm_70") is None


@pytest.mark.parametrize("args", [("rules", "lint", "/nonexistent.yaml"), ("rules", "test", "/nonexistent")])
def test_missing_pack_paths_are_one_line_errors(args: tuple[str, ...]) -> None:
    assert_one_line_error(run(*args), 2, "/nonexistent")


# -- import-notes ------------------------------------------------------------------------------
SHARED_NOTES = REPO.parent / "shared" / "data" / "relnotes" / "nccl-release-commits.txt"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.mark.skipif(not SHARED_NOTES.is_file(),
                    reason=f"the shared data folder is not beside this clone ({SHARED_NOTES} absent)")
def test_import_notes_writes_a_lintable_draft_pack_and_never_drafts_twice(tmp_path: Path) -> None:
    out = tmp_path / "nccl-drafts.yaml"
    first = run("rules", "import-notes", str(SHARED_NOTES), "--component", "nccl", "-o", str(out))
    assert first.returncode == 0, first.stderr
    assert "skipped: " in first.stderr and "draft rules from" in first.stderr
    text = out.read_text()
    assert "status: draft" in text and 'fixed_in: "2.29.3"' in text  # the CAS hang on ARM
    # rows the built-in nccl pack already has are skipped, naming the rule that covers them
    assert "covered by nccl-" in first.stderr and 'fixed_in: "2.12.7"' not in text
    assert run("rules", "lint", "--alone", str(out)).returncode == 0
    again = run("rules", "import-notes", str(SHARED_NOTES), "--component", "nccl", "-o", str(out))
    assert again.returncode == 0 and again.stderr.splitlines()[-1].startswith("0 draft rules")
    assert out.read_text() == text  # nothing rewritten


def test_import_notes_extends_an_existing_pack_keeping_its_text(tmp_path: Path) -> None:
    out = tmp_path / "cudnn-drafts.yaml"
    assert run("rules", "import-notes", str(FIXTURES / "cudnn-8.html"), "--component", "cudnn",
               "-o", str(out)).returncode == 0
    before = out.read_text().replace("# Draft rules", "# reviewed by hand\n# Draft rules", 1)
    out.write_text(before)
    proc = run("rules", "import-notes", str(FIXTURES / "cudnn-9.html"), "--component", "cudnn",
               "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    after = out.read_text()
    assert after.startswith(before) and len(after) > len(before)
    assert run("rules", "lint", "--alone", str(out)).returncode == 0


def test_import_notes_on_something_that_is_not_release_notes(tmp_path: Path) -> None:
    prose = tmp_path / "prose.txt"
    prose.write_text("Nothing here names a release.\n")
    proc = run("rules", "import-notes", str(prose), "--component", "nccl", "-o", str(tmp_path / "x.yaml"))
    assert proc.returncode == 2 and "no nccl release notes found" in proc.stderr.splitlines()[-1]
    assert not (tmp_path / "x.yaml").exists()
