"""auditor rules import-notes (the library): release notes in, draft rules out.

Real inputs only: the NVIDIA/nccl release-commit messages in the shared data folder beside this
clone, and HTML fixtures written for these tests that imitate the structure of NVIDIA's cuDNN and
CUDA Toolkit release-notes pages (their item texts are made up)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from auditor.errors import InputError
from auditor.rules.notes import (
    COMPONENTS,
    ImportResult,
    Item,
    Release,
    draft_pack_yaml,
    import_notes,
    parse_notes,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
NCCL_COMMITS = Path(__file__).resolve().parents[3] / "shared/data/relnotes/nccl-release-commits.txt"
SCHEMA = json.loads((ROOT / "auditor/schemas/rule-pack.schema.json").read_text())


def validate(drafts: list[dict[str, Any]]) -> None:
    """Every draft, wrapped in a pack (directly and through draft_pack_yaml), fits the schema."""
    validator = jsonschema.Draft202012Validator(SCHEMA)
    pack = {"format": 1, "pack": {"name": "drafts", "version": "1", "date": "2026-11-24"}, "rules": drafts}
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(pack)]
    assert not errors, errors[:5]
    dumped = yaml.safe_load(draft_pack_yaml(drafts, "drafts", "2026.11.0", "2026-11-24"))
    assert not list(validator.iter_errors(dumped))
    assert dumped["rules"] == drafts


def by_fixed(result: ImportResult, version: str) -> list[dict[str, Any]]:
    return [d for d in result.drafts if d["affected"][0].get("fixed_in") == version]


def find(result: ImportResult, version: str, *patterns: str) -> dict[str, Any]:
    """The one draft fixed in ``version`` whose title + effect match every pattern."""
    found = [d for d in by_fixed(result, version)
             if all(re.search(p, d["title"] + " " + d["effect"], re.IGNORECASE) for p in patterns)]
    assert len(found) == 1, (version, patterns, [d["title"] for d in by_fixed(result, version)])
    return found[0]


def load_fixture(name: str) -> tuple[bytes, str]:
    path = FIXTURES / name
    return path.read_bytes(), str(path)


# --- NCCL release commits --------------------------------------------------------------------

@pytest.fixture(scope="module")
def nccl_text() -> bytes:
    if not NCCL_COMMITS.is_file():
        pytest.skip(f"the shared data folder is not beside this clone ({NCCL_COMMITS} is missing)")
    return NCCL_COMMITS.read_bytes()


@pytest.fixture(scope="module")
def nccl(nccl_text: bytes) -> ImportResult:
    return import_notes(nccl_text, str(NCCL_COMMITS), "nccl")


def test_nccl_reads_every_release_commit(nccl_text: bytes, nccl: ImportResult) -> None:
    entries = re.findall(r"^==== ", nccl_text.decode(), re.MULTILINE)
    releases = parse_notes(nccl_text, str(NCCL_COMMITS), "nccl")
    assert nccl.releases == len(releases) == len(entries) > 60
    assert not nccl.unparsed
    by_version = {r.version: r for r in releases}
    # the subjects vary: "NCCL 2.30.7-1", "NCCL v2.29.3-1 Release", "2.18.3-1"; the -1 revision goes
    assert {"2.30.7", "2.29.3", "2.18.3", "2.4.7", "2.3.5"} <= set(by_version)
    assert by_version["2.29.3"].title == "NCCL v2.29.3-1 Release"
    assert by_version["2.18.3"].date == "2023-06-13"
    assert by_version["2.18.3"].source == "https://github.com/NVIDIA/nccl/commit/ea38312273"
    # wrapped lines are joined into one item; the trailers are not items
    items = by_version["2.18.3"].sections[""]
    assert "Fix hang with Collnet on bfloat16 on systems with less than one NIC per GPU." in items
    assert not any("Signed-off-by" in t or "Mirrored-from" in t for r in releases
                   for texts in r.sections.values() for t in texts)
    # "Heading:" lines and bullet groups become sections
    assert "Fixes potential data corruption with built-in symmetric kernels for small messages with size " \
           "granularity under 8 bytes or when multiple symmetric operations were aggregated in a group." \
           in by_version["2.28.7"].sections["Other notable improvements"]
    assert "Known Limitations" in by_version["2.29.2"].sections


def test_nccl_drafts_the_hazards_table_rows_the_file_holds(nccl_text: bytes, nccl: ImportResult) -> None:
    n1 = find(nccl, "2.8.3", r"LL128", r"2\^31", r"\bhang")
    n2 = find(nccl, "2.12.7", r"corruption", r"NVLinks are down")
    n3 = find(nccl, "2.15.5", r"corruption", r"LL128", r"unaligned")
    n4 = find(nccl, "2.18.3", r"corruption", r"Tree/LL128", r"1GPU:1NIC")
    n5_corruption = find(nccl, "2.18.3", r"corruption", r"Collnet", r"multi-GPU per process")
    n5_hang = find(nccl, "2.18.3", r"\bhang", r"Collnet", r"bfloat16")
    n7 = find(nccl, "2.28.7", r"corruption", r"symmetric kernels")
    for draft in (n2, n3, n4, n5_corruption, n7):
        assert draft["severity"] == "high"
    for draft in (n1, n5_hang):
        assert draft["severity"] == "medium"
    assert n4["affected"] == [{"component": "nccl", "versions": "<2.18.3", "fixed_in": "2.18.3"}]
    assert n4["tests"] == {"trigger": [{"components": {"nccl": "2.18.1"}}],
                           "clean": [{"components": {"nccl": "2.18.3"}}]}
    assert n4["references"][0]["url"] == "https://github.com/NVIDIA/nccl/commit/ea38312273"
    assert n1["remediation"] == "Upgrade NCCL to 2.8.3 or later."
    assert n4["title"] == "Data corruption with Tree/LL128 on systems with 1GPU:1NIC"
    for draft in nccl.drafts:
        assert draft["status"] == "draft" and draft["confidence"] == "reported"
        assert draft["id"].startswith(f"nccl-{draft['affected'][0]['fixed_in']}-")
        assert len(draft["title"]) <= 90 and len(draft["effect"]) <= 300 and len(draft["id"]) <= 96
        assert "review the affected range and write test cases" in draft["notes"]
    # Rows N6 (CPUID clobber, 2.20.3), N8 (symmetric LL kernels, 2.30.3) and N9 (vNIC cache,
    # 2.30.7) are not in this file: the 2.20.3 message does not mention CPUID and the 2.30.x
    # commit messages carry no notes. If the file gains them, this test must grow.
    text = nccl_text.decode()
    assert "CPUID" not in text and "vNIC" not in text
    releases = {r.version: r for r in parse_notes(nccl_text, str(NCCL_COMMITS), "nccl")}
    assert releases["2.30.3"].sections == {} and releases["2.30.7"].sections == {}
    assert not by_fixed(nccl, "2.30.3") and not by_fixed(nccl, "2.30.7")
    assert ("NCCL 2.30.7-1 (commit e7fcc7da24)", "no release notes in the commit message") in nccl.skipped


def test_nccl_skips_features_crashes_and_performance_with_reasons(nccl: ImportResult) -> None:
    reasons = dict(nccl.skipped)
    feature = "a feature or improvement, not a fix or known issue"
    assert reasons["2.10.3: Add support for bfloat16."] == feature
    assert reasons["2.18.3: Fix crash when shared memory creation fails."].startswith("a crash or error")
    assert reasons["2.18.3: Fix performance for DGX H800."].startswith("performance")
    assert reasons["2.18.3: Fix NVTX3 compilation issues on Debian 10."].startswith("build")
    # a race that ends in a crash is a crash, not a silent hazard
    assert reasons["2.18.3: Fix race condition in connection progress causing a crash."].startswith(
        "a crash or error")
    assert not any("bfloat16" in d["title"] and "Add" in d["title"] for d in nccl.drafts)
    # the release listed twice (2.23.4, two commits) gives its skipped items once
    assert len(nccl.skipped) == len(set(nccl.skipped))


def test_nccl_drafts_validate_and_ids_are_unique_and_stable(nccl_text: bytes, nccl: ImportResult) -> None:
    validate(nccl.drafts)
    ids = [d["id"] for d in nccl.drafts]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9.-]*", i) for i in ids)
    again = import_notes(nccl_text, str(NCCL_COMMITS), "nccl")
    assert [d["id"] for d in again.drafts] == ids


def test_nccl_reimport_over_its_own_drafts_drafts_nothing(nccl_text: bytes, nccl: ImportResult) -> None:
    again = import_notes(nccl_text, str(NCCL_COMMITS), "nccl", existing=nccl.drafts)
    assert again.drafts == []
    reasons = dict(again.skipped)
    for draft in nccl.drafts:
        assert reasons[draft["id"]] == f"already in pack: rule {draft['id']} exists and is not overwritten"


def test_nccl_draft_covered_by_a_handwritten_rule_is_skipped(nccl_text: bytes) -> None:
    handwritten = {
        "id": "nccl-tree-ll128-corrupts-1gpu-1nic",
        "title": "NCCL Tree/LL128 corrupts data on systems with one NIC per GPU",
        "severity": "high", "confidence": "verified", "components": ["nccl"],
        "affected": [{"component": "nccl", "versions": ">=2.18.1, <2.18.3", "fixed_in": "2.18.3"}],
        "effect": "Allreduce results are corrupted on HGX H100 systems.",
        "remediation": "Upgrade NCCL to 2.18.3 or later.",
        "references": [{"url": "https://github.com/NVIDIA/nccl/commit/ea38312273abcdef"}],
        "tests": {"trigger": [{"components": {"nccl": "2.18.1"}}],
                  "clean": [{"components": {"nccl": "2.18.3"}}]},
    }
    result = import_notes(nccl_text, str(NCCL_COMMITS), "nccl", existing=[handwritten])
    covered = [(rid, why) for rid, why in result.skipped if why.startswith("covered by")]
    assert covered == [("nccl-2.18.3-data-corruption-tree-ll128-systems-1gpu",
                        "covered by nccl-tree-ll128-corrupts-1gpu-1nic (an existing rule)")]
    # the release's other items share its commit URL but not its subject: still drafted
    find(result, "2.18.3", r"corruption", r"Collnet")
    find(result, "2.18.3", r"\bhang", r"Collnet")
    # a near-identical title covers it whatever the references say
    renamed = {**handwritten, "id": "nccl-x",
               "title": "Data corruption with Tree/LL128 on systems with 1 GPU:1 NIC",
               "references": [{"url": "https://example.org/elsewhere"}]}
    result = import_notes(nccl_text, str(NCCL_COMMITS), "nccl", existing=[renamed])
    assert ("nccl-2.18.3-data-corruption-tree-ll128-systems-1gpu", "covered by nccl-x (an existing rule)") \
        in result.skipped
    # one rule may say two things the release fixed: it covers both
    collnet = {**handwritten, "id": "nccl-collnet",
               "title": "IB SHARP (CollNet) allreduce corrupts data or hangs in some layouts",
               "effect": "Corrupted sums when one process drives several GPUs; bfloat16 reductions hang."}
    result = import_notes(nccl_text, str(NCCL_COMMITS), "nccl", existing=[collnet])
    assert sorted(rid for rid, why in result.skipped if why.startswith("covered by nccl-collnet")) == [
        "nccl-2.18.3-data-corruption-collnet-mixing-multi-process",
        "nccl-2.18.3-hang-collnet-bfloat16-systems-less-one"]
    find(result, "2.18.3", r"corruption", r"Tree/LL128")
    # another fixed version is another bug
    elsewhere = {**handwritten,
                 "affected": [{"component": "nccl", "versions": "<2.19", "fixed_in": "2.19.1"}]}
    result = import_notes(nccl_text, str(NCCL_COMMITS), "nccl", existing=[elsewhere])
    find(result, "2.18.3", r"corruption", r"Tree/LL128")


def test_nccl_commit_text_with_another_component_is_refused(nccl_text: bytes) -> None:
    result = import_notes(nccl_text, "nccl.txt", "cudnn")
    assert result.drafts == [] and result.releases == 0
    assert result.unparsed == ["nccl.txt holds NCCL release commit messages, not cuDNN release notes; "
                               "import it with --component nccl"]


def test_commit_bodies_of_every_shape() -> None:
    text = (
        b"# Source: made up for this test\n\n"
        b"==== NCCL 9.1.2-1  (2030-01-02, commit abcdef1234)\n"
        b"Fixes:\n"
        b" - Hang in allgather when\n"
        b"   two communicators overlap.\n"
        b" - Add a new tuning knob.\n"
        b"Fix a race in the proxy thread\n"
        b" * Results could be corrupted when the proxy\n"
        b"   restarted.\n"
        b"Fix #42: wrong results of ncclAvg with\n"
        b"int8 inputs.\n"
        b"\n"
        b"==== 9.1.0-1  (2029-12-01, commit 1234567abc)\n"
        b"    Add support for frobnication.\n"
        b"    Fix nondeterministic reduction order on\n"
        b"      multi-node jobs.\n"
    )
    releases = parse_notes(text, "t.txt", "nccl")
    assert [r.version for r in releases] == ["9.1.2", "9.1.0"]
    assert releases[0].sections == {
        "Fixes": ("Hang in allgather when two communicators overlap.", "Add a new tuning knob."),
        "": ("Fix a race in the proxy thread. Results could be corrupted when the proxy restarted.",
             "Fix #42: wrong results of ncclAvg with int8 inputs."),
    }
    assert releases[1].sections == {"": ("Add support for frobnication.",
                                         "Fix nondeterministic reduction order on multi-node jobs.")}
    assert releases[0].items("nccl")[0] == Item("nccl", "9.1.2", "Fixes",
                                                "Hang in allgather when two communicators overlap.",
                                                "https://github.com/NVIDIA/nccl/commit/abcdef1234")
    result = import_notes(text, "t.txt", "nccl")
    drafts = {d["title"]: d for d in result.drafts}
    assert set(drafts) == {"Hang in allgather when two communicators overlap", "Race in the proxy thread",
                           "Wrong results of ncclAvg with int8 inputs",
                           "Nondeterministic reduction order on multi-node jobs"}
    assert drafts["Race in the proxy thread"]["severity"] == "high"  # corrupted, said in its detail
    assert drafts["Nondeterministic reduction order on multi-node jobs"]["severity"] == "medium"
    assert drafts["Wrong results of ncclAvg with int8 inputs"]["tests"] == {
        "trigger": [{"components": {"nccl": "9.1.0"}}], "clean": [{"components": {"nccl": "9.1.2"}}]}
    assert drafts["Nondeterministic reduction order on multi-node jobs"]["tests"] == {
        "trigger": [], "clean": []}
    assert ("9.1.2: Add a new tuning knob.", "not about wrong results/nondeterminism/corruption/hang/race") \
        in result.skipped  # under "Fixes:", so a candidate, but not a hazard
    validate(result.drafts)


# --- HTML release notes ----------------------------------------------------------------------

def test_cudnn8_page_versions_sections_and_drafts() -> None:
    data, source = load_fixture("cudnn-8.html")
    releases = parse_notes(data, source, "cudnn")
    assert [r.version for r in releases] == ["8.2.1", "8.2.0", "8.1.1", "8.1.0", "8.0.1"]
    first = releases[0]
    assert first.title == "cuDNN Release 8.2.1"
    assert first.source == "https://docs.nvidia.com/deeplearning/cudnn/release-notes/rel_8.html#rel-821"
    assert list(first.sections) == ["Key Features and Enhancements", "Fixed Issues", "Known Issues"]
    assert len(first.sections["Fixed Issues"]) == 4  # <li><p>…</p></li> and bare <li>; not the table
    assert releases[4].title == "cuDNN Release 8.0.1 Preview"
    # a nested list folds into its item
    assert releases[3].sections["Fixed Issues"][0] == (
        "cudnnMultiHeadAttnForward() returned wrong results in two cases: when the sequence length was not "
        "a multiple of 8, when the query and key projections had different sizes.")

    result = import_notes(data, source, "cudnn")
    assert result.releases == 5
    assert result.unparsed == ["section 'Known Issues' under 8.1.0 has no list items"]
    rnn = find(result, "8.2.1", r"bidirectional RNN", r"nondeterministic")
    assert rnn["severity"] == "medium" and rnn["components"] == ["cudnn"]
    assert rnn["affected"] == [{"component": "cudnn", "versions": "<8.2.1", "fixed_in": "8.2.1"}]
    assert rnn["tests"] == {"trigger": [{"components": {"cudnn": "8.2.0"}}],
                            "clean": [{"components": {"cudnn": "8.2.1"}}]}
    assert rnn["references"][0]["url"].endswith("rel_8.html#rel-821")
    assert rnn["notes"].startswith(
        f"Drafted by auditor rules import-notes from {source} (Fixed Issues, 8.2.1)")
    assert find(result, "8.2.1", r"incorrect values")["severity"] == "high"
    assert find(result, "8.2.0", r"wrong running variance")["severity"] == "high"
    assert find(result, "8.1.1", r"\bhang")["severity"] == "medium"
    find(result, "8.1.0", r"wrong results")
    # known issues: "==X", no fixed_in, the known-issue remediation; one listed by two releases is one draft
    known = {d["id"]: d for d in result.drafts if "fixed_in" not in d["affected"][0]}
    assert set(known) == {"cudnn-8.2.1-cudnnpoolingbackward-average-pooling-produce-nan",
                          "cudnn-8.1.1-rnn-multi-head-attention-calls-give"}
    nan = known["cudnn-8.2.1-cudnnpoolingbackward-average-pooling-produce-nan"]
    assert nan["affected"] == [{"component": "cudnn", "versions": ["==8.2.0", "==8.2.1"]}]
    assert nan["remediation"] == ("Check the release notes of later versions for a fix; no fixed version is "
                                  "known to this draft.")
    assert "known issue" in nan["notes"]
    limitation = known["cudnn-8.1.1-rnn-multi-head-attention-calls-give"]
    assert limitation["affected"] == [{"component": "cudnn", "versions": "==8.1.1"}]
    assert limitation["severity"] == "medium"
    reasons = dict(result.skipped)
    feature = ("in section 'Key Features and Enhancements': a feature, enhancement or note, not a fixed or "
               "known issue")
    heuristics = "8.2.1: Added a new heuristics mode that picks tensor-core kernels for small batch sizes."
    assert reasons[heuristics] == feature
    assert reasons["8.2.1: A crash in cudnnCreate() when the process had no visible GPU has been fixed."] \
        .startswith("a crash or error")
    assert reasons["8.2.1: Some grouped convolutions run up to 30% slower on Turing GPUs than with 8.1.1."] \
        .startswith("performance")
    assert not any("Table cells" in text for text, _ in result.skipped)
    assert len(result.drafts) == 7
    validate(result.drafts)


def test_cudnn9_page_rubrics_and_bold_labels() -> None:
    data, source = load_fixture("cudnn-9.html")
    releases = parse_notes(data, source, "cudnn")
    assert [(r.version, r.title) for r in releases] == [("9.2.0", "cuDNN 9.2.0"), ("9.1.1", "cuDNN 9.1.1"),
                                                        ("9.0.0", "cuDNN 9.0.0")]
    assert list(releases[0].sections) == ["Key Features And Enhancements", "Fixed Issues", "Known Issues"]
    assert list(releases[1].sections) == ["Fixed Issues", "Known Issues"]  # <p><strong>…</strong></p>
    assert list(releases[2].sections) == ["Deprecated and Removed Features", "Fixed Issues"]
    assert releases[1].source.endswith("release-notes.html#cudnn-9-1-1")

    result = import_notes(data, source, "cudnn")
    assert result.unparsed == []
    assert find(result, "9.2.0", r"incorrect dQ gradients")["severity"] == "high"
    assert find(result, "9.2.0", r"deadlock")["severity"] == "medium"
    grouped = find(result, "9.1.1", r"only the first group")
    assert grouped["severity"] == "high" and grouped["title"] == (
        "Grouped convolution data gradients with FP8 inputs wrote only the first group")
    race = find(result, "9.0.0", r"race")
    assert race["tests"] == {"trigger": [], "clean": []}  # no earlier release on the page
    nondeterministic = [d for d in result.drafts if d["affected"][0]["versions"] == "==9.2.0"]
    assert [d["severity"] for d in nondeterministic] == ["medium"]
    reasons = dict(result.skipped)
    removed = "9.0.0: The legacy RNN API entry points that were deprecated in 8.x are removed."
    assert reasons[removed].startswith("in section 'Deprecated and Removed Features'")
    assert reasons["9.2.0: A memory leak when destroying an execution plan has been fixed."].startswith(
        "a crash or error")
    assert not any("Added paged key-value caches" in d["effect"] for d in result.drafts)
    assert len(result.drafts) == 5
    validate(result.drafts)


def test_cuda_toolkit_page_cublas_sections() -> None:
    data, source = load_fixture("cuda-toolkit.html")
    releases = parse_notes(data, source, "cublas")
    assert [(r.version, r.title) for r in releases] == [
        ("12.4.1", "cuBLAS: Release 12.4 Update 1"), ("12.4", "cuBLAS: Release 12.4"),
        ("12.3.1", "cuBLAS: Release 12.3 Update 1")]
    assert list(releases[0].sections) == ["New Features", "Known Issues", "Resolved Issues"]
    everything = " ".join(t for r in releases for texts in r.sections.values() for t in texts)
    assert "cudaMemcpy2DAsync" not in everything and "Multi-GPU real-to-complex" not in everything

    result = import_notes(data, source, "cublas")
    assert result.releases == 3 and result.unparsed == []
    gemm = find(result, "12.4.1", r"not bitwise reproducible")
    assert gemm["components"] == ["cublas", "cublasLt"]
    assert gemm["affected"] == [{"component": "cublas", "versions": "<12.4.1", "fixed_in": "12.4.1"},
                                {"component": "cublasLt", "versions": "<12.4.1", "fixed_in": "12.4.1"}]
    assert gemm["tests"] == {"trigger": [{"components": {"cublas": "12.4"}}],
                             "clean": [{"components": {"cublas": "12.4.1"}}]}
    assert gemm["remediation"] == "Upgrade cuBLAS to the version shipped with CUDA Toolkit 12.4.1 or later."
    assert "convert them to cuBLAS library versions" in gemm["notes"]
    # no canonical link and a local file: the generic page, said in the notes
    assert gemm["references"][0]["url"] == "https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/index.html"
    assert "no canonical URL" in gemm["notes"]
    find(result, "12.4", r"incorrect results", r"65535")
    find(result, "12.3.1", r"\bhang")
    amax = [d for d in result.drafts if d["affected"][0]["versions"] == "==12.4.1"]
    assert len(amax) == 1 and "incorrect amax" in amax[0]["effect"]
    assert "12.4.1: Faster FP8 matrix multiplication on Hopper for small N." in dict(result.skipped)
    assert len(result.drafts) == 4
    validate(result.drafts)


def test_cuda_toolkit_page_own_sections() -> None:
    data, source = load_fixture("cuda-toolkit.html")
    releases = parse_notes(data, source, "cuda")
    assert [(r.version, r.title) for r in releases] == [("12.4.1", "CUDA 12.4 Update 1 Release Notes")]
    assert list(releases[0].sections) == ["New Features / General CUDA", "Deprecated or Dropped Features",
                                          "Resolved Issues / General CUDA", "Resolved Issues / CUDA Compiler",
                                          "Known Issues / General CUDA"]
    everything = " ".join(t for texts in releases[0].sections.values() for t in texts)
    assert "cublas" not in everything.lower() and "12.4.127" not in everything  # libraries, tables

    result = import_notes(data, source, "cuda")
    assert result.unparsed == []
    copy = find(result, "12.4.1", r"cudaMemcpy2DAsync", r"incorrect data")
    assert copy["components"] == ["cudart"] and copy["severity"] == "high"
    assert copy["affected"] == [{"component": "cudart", "versions": "<12.4.1", "fixed_in": "12.4.1"}]
    assert copy["remediation"] == "Upgrade CUDA Toolkit to 12.4.1 or later."
    assert find(result, "12.4.1", r"stream-ordered allocator")["severity"] == "high"  # corrupting
    find(result, "12.4.1", r"miscompile")
    known = [d for d in result.drafts if d["affected"][0]["versions"] == "==12.4.1"]
    assert [d["title"] for d in known] == ["cudaGraphInstantiate may hang when a graph holds more than 65536 "
                                           "memory nodes"]
    reasons = dict(result.skipped)
    assert reasons["12.4.1: Added a per-stream priority query to the runtime API."].startswith(
        "in section 'New Features / General CUDA'")
    build = "12.4.1: Fixed a build failure of the samples with recent host compilers."
    assert reasons[build].startswith("build")
    assert len(result.drafts) == 4
    validate(result.drafts)


def test_older_toolkit_page_with_cublas_under_the_toolkits_sections() -> None:
    page = (b"<html><body><h1>CUDA Toolkit Release Notes</h1>"
            b"<h2 id='cuda-11-8'>2. CUDA 11.8 Release Notes</h2>"
            b"<h3>2.1. General CUDA</h3><ul><li>Added lazy loading of kernels.</li></ul>"
            b"<h3>2.5. Resolved Issues</h3>"
            b"<h4>2.5.1. General CUDA</h4><ul><li>cudaStreamSynchronize could return early, a race.</li></ul>"
            b"<h4 id='cublas-resolved'>2.5.2. cuBLAS Library</h4><ul><li>cublasGemmStridedBatchedEx "
            b"returned incorrect results for strides above 2^31.</li></ul>"
            b"<h3>2.6. Known Issues</h3><h4>2.6.1. cuBLAS Library</h4><ul><li>cublasLt heuristics may hang "
            b"for very large k.</li></ul></body></html>")
    [cublas] = parse_notes(page, "cuda-11.8.html", "cublas")
    assert cublas.version == "11.8" and cublas.source == "cuda-11.8.html#cublas-resolved"
    assert list(cublas.sections) == ["Resolved Issues", "Known Issues"]
    assert [d["affected"][0] for d in import_notes(page, "cuda-11.8.html", "cublas").drafts] == [
        {"component": "cublas", "versions": "<11.8", "fixed_in": "11.8"},
        {"component": "cublas", "versions": "==11.8"}]
    [toolkit] = parse_notes(page, "cuda-11.8.html", "cuda")
    assert list(toolkit.sections) == ["General CUDA", "Resolved Issues / General CUDA"]
    result = import_notes(page, "cuda-11.8.html", "cuda")
    assert [d["id"] for d in result.drafts] == ["cuda-11.8-cudastreamsynchronize-return-early-race"]
    assert result.unparsed == []  # "Known Issues" only held cuBLAS's


def test_page_without_the_components_headings() -> None:
    data, source = load_fixture("cudnn-8.html")
    result = import_notes(data, source, "cuda")
    assert result.drafts == [] and result.releases == 0
    assert result.unparsed == [
        f"no CUDA Toolkit version headings found in {source} (looked for headings like 'CUDA 12.4 Update 1 "
        "Release Notes'); it has cuDNN release headings: try --component cudnn"]
    page = (b"<!DOCTYPE html><html><head><title>Release notes</title></head><body>"
            b"<h1>What's new</h1><h2>Fixed Issues</h2><ul><li>Fixed incorrect results in GEMM.</li></ul>"
            b"</body></html>")
    for component in COMPONENTS:
        result = import_notes(page, "whatsnew.html", component)
        assert result.drafts == [] and result.releases == 0 and result.skipped == []
        assert len(result.unparsed) == 1
        assert result.unparsed[0].startswith("no ") and "version headings found in whatsnew.html" in \
            result.unparsed[0]


def test_other_inputs_give_a_clear_message_or_an_input_error() -> None:
    prose = b"We fixed lots of bugs this year, including some that gave wrong results. Upgrade soon.\n"
    result = import_notes(prose, "blog.txt", "cudnn")
    assert result.drafts == [] and result.releases == 0
    assert result.unparsed == ["no version headings found in blog.txt: it is neither an HTML release-notes "
                               "page nor NCCL release commit messages ('==== <subject> (<date>, commit "
                               "<sha>)' entries)"]
    pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"
    result = import_notes(pdf, "notes.pdf", "cudnn")
    assert result.drafts == [] and result.unparsed == [
        "notes.pdf is a PDF; import-notes reads the HTML release-notes page (or NCCL release commit "
        "messages), not PDF"]
    assert import_notes(b"  \n", "empty.txt", "nccl").unparsed == ["empty.txt is empty"]
    junk = bytes(range(256)) * 8
    with pytest.raises(InputError, match=r"junk\.bin: not text \(undecodable bytes at offset 128\)"):
        import_notes(junk, "junk.bin", "cudnn")
    with pytest.raises(InputError, match="NUL bytes"):
        parse_notes(b"==== NCCL 2.1.1-1 (2020-01-01, commit abcdef1)\x00\n", "nul.txt", "nccl")
    with pytest.raises(InputError, match="unknown component 'nvjpeg'"):
        parse_notes(b"x", "x.txt", "nvjpeg")


def test_nccl_html_release_page() -> None:
    page = (b"<html><head><link rel='canonical' href='https://docs.nvidia.com/deeplearning/nccl/"
            b"release-notes/rel_9-1-1.html'></head><body><h1 id='rel_9-1-1'>NCCL Release 9.1.1</h1>"
            b"<h2>Fixed Issues</h2><ul><li>Fixed a hang in ncclGroupEnd with zero-sized sends.</li></ul>"
            b"<h2>Known Issues</h2><ul><li>Tree allreduce may corrupt data when a NIC is shared by two "
            b"GPUs; set NCCL_PROTO=^LL128 as a workaround.</li></ul></body></html>")
    result = import_notes(page, "rel_9-1-1.html", "nccl")
    assert [r.version for r in parse_notes(page, "rel_9-1-1.html", "nccl")] == ["9.1.1"]
    fixed, known = result.drafts
    assert fixed["affected"] == [{"component": "nccl", "versions": "<9.1.1", "fixed_in": "9.1.1"}]
    assert fixed["references"][0]["url"] == ("https://docs.nvidia.com/deeplearning/nccl/release-notes/"
                                             "rel_9-1-1.html#rel_9-1-1")
    assert known["affected"] == [{"component": "nccl", "versions": "==9.1.1"}]
    assert known["severity"] == "high" and known["tests"]["trigger"] == [{"components": {"nccl": "9.1.1"}}]
    validate(result.drafts)


def test_latin1_page_with_declared_charset() -> None:
    page = ("<html><head><meta charset=\"iso-8859-1\"></head><body><h2>cuDNN 9.3.0</h2>"
            "<p class=\"rubric\">Fixed Issues</p><ul><li>Softmax returned wrong values for tensors "
            "larger than 2\u00b3\u00b9 elements.</li></ul></body></html>").encode("latin-1")
    result = import_notes(page, "https://docs.example/cudnn.html", "cudnn")
    assert [d["references"][0]["url"] for d in result.drafts] == ["https://docs.example/cudnn.html"]
    assert "2\u00b3\u00b9" in result.drafts[0]["effect"]


# --- writing the pack ------------------------------------------------------------------------

def test_draft_pack_yaml_is_a_readable_pack_in_documented_order() -> None:
    data, source = load_fixture("cudnn-8.html")
    drafts = import_notes(data, source, "cudnn").drafts
    text = draft_pack_yaml(drafts, "cudnn-drafts", "2026.11.0", "2026-11-24")
    doc = yaml.safe_load(text)
    assert list(doc) == ["format", "pack", "rules"] and doc["format"] == 1
    assert doc["pack"]["name"] == "cudnn-drafts" and doc["pack"]["version"] == "2026.11.0"
    assert doc["pack"]["date"] == "2026-11-24"
    assert doc["rules"] == drafts
    assert list(doc["rules"][0]) == ["id", "title", "status", "severity", "confidence", "components",
                                     "affected", "effect", "remediation", "references", "notes", "tests"]
    assert text.startswith("# Draft rules")
    assert "\n  components: [cudnn]\n" in text
    assert '    versions: "<8.2.1"\n    fixed_in: "8.2.1"\n' in text
    assert '    - components: {cudnn: "8.2.0"}\n' in text
    assert "{" not in text.split("rules:")[0]  # block style, flow only for short lists and version maps
    validate(drafts)
    with pytest.raises(InputError, match="pack name"):
        draft_pack_yaml(drafts, "Bad Name", "1", "2026-11-24")
    with pytest.raises(InputError, match="pack date"):
        draft_pack_yaml(drafts, "ok", "1", "24/11/2026")


def test_release_and_item_are_plain_values() -> None:
    release = Release(version="1.2.3", title="X 1.2.3", date=None, sections={"Fixed Issues": ("a",)},
                      source="s#a")
    assert release.items("cudnn") == [Item("cudnn", "1.2.3", "Fixed Issues", "a", "s#a")]
    assert hash(Item("cudnn", "1", None, "t", "s")) == hash(Item("cudnn", "1", None, "t", "s"))
    assert hash(release) == hash(Release("1.2.3", "X 1.2.3", None, {}, "s#a"))
