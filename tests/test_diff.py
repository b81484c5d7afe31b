"""`auditor diff`: the diff document from hand-made reports, its schema, its renderings, the gate,
and end to end on two TensorFlow GPU images that differ in cuDNN."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import auditor.cli  # noqa: F401  (first: auditor.cli registers the diff command of auditor.cli_diff)
from auditor.cli_diff import load_report
from auditor.diff import describe_change, diff_documents
from auditor.errors import InputError
from auditor.report.formats import RenderContext, render
from tests.test_cli import run

SCHEMA = json.loads((Path(__file__).parents[1] / "auditor/schemas/diff.schema.json").read_text())
SEED = "cudnn-8.1-birnn-nondeterminism"
LIB = "usr/lib/x86_64-linux-gnu"


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def lib(component: str, version: str | None, path: str) -> dict[str, Any]:
    return {"component": component, "version": version, "path": path, "layer": 1, "soname": None,
            "machine": "x86_64", "package": None, "evidence": []}


def winner(component: str, version: str | None, path: str) -> dict[str, Any]:
    return {"needed": path.rsplit("/", 1)[-1], "how": ["default"], "consumers": ["/app/_ext.so"],
            "shadowed": [], "loaded": {"path": path, "layer": 1, "version": version,
                                       "component": component, "package": None}}


def package(name: str, version: str, kind: str = "deb", arch: str | None = "amd64") -> dict[str, Any]:
    return {"type": kind, "name": name, "version": version, "purl": None, "path": "var/lib/dpkg/status",
            "layer": 0, "arch": arch, "source": None, "licenses": [], "files": 0}


def finding(fid: str, component: str, message: str = "it is wrong", severity: str = "high") -> dict[str, Any]:
    return {"id": fid, "severity": severity, "component": component, "message": message,
            "path": None, "evidence": []}


def report(**over: Any) -> dict[str, Any]:
    """A small report document: Debian base, cuDNN 8.1 loaded by TensorFlow."""
    doc: dict[str, Any] = {
        "schema": "https://auditor.invalid/schemas/report.schema.json",
        "schema_version": "1",
        "auditor_version": "0.1.0",
        "reference": {"input": "img:old", "canonical": "registry.example/img:old", "transport": "registry"},
        "image": {"digest": digest(1), "digest_source": "manifest", "index_digest": None,
                  "image_id": digest(2), "media_type": "application/vnd.oci.image.manifest.v1+json",
                  "platform": "linux/amd64", "compressed_size": 10, "source": {}},
        "layers": [{"index": i, "digest": digest(10 + i), "diff_id": digest(20 + i),
                    "media_type": "x", "size": 1} for i in range(3)],
        "config": {"Env": ["PATH=/usr/bin", "CUDA_VERSION=11.2", "LD_LIBRARY_PATH=/usr/local/cuda/lib64"],
                   "Labels": {"maintainer": "a", "com.nvidia.cudnn.version": "8.1.0.77"}},
        "history": [],
        "os": {"id": "debian", "pretty_name": "Debian GNU/Linux 12 (bookworm)"},
        "numeric_stack": [lib("cudnn", "8.1.0.77", f"{LIB}/libcudnn.so.8.1.0"),
                          lib("cublasLt", "11.4.1", "usr/local/cuda/lib64/libcublasLt.so.11")],
        "frameworks": [{"name": "tensorflow", "version": "2.8.0", "path": "site/tensorflow/build_info.py",
                        "layer": 2, "built_for": {"cuda": "11.2", "cudnn": "8"}, "evidence": []}],
        "linkage": {"ld_library_path": None, "env_source": "image", "all_elf": False,
                    "numeric": [winner("cudnn", "8.1.0.77", f"{LIB}/libcudnn.so.8.1.0"),
                                winner("cublasLt", "11.4.1", "usr/local/cuda/lib64/libcublasLt.so.11")],
                    "consumers": []},
        "findings": [finding(SEED, "cudnn", "cuDNN 8.1.0.77 at /usr/lib/x/libcudnn.so.8.1.0"),
                     finding("env-pythonhashseed-unset", "python", severity="low")],
        "rules": {},
        "packages": [package("libc6", "2.36"), package("libcudnn8", "8.1.0.77-1+cuda11.2"),
                     package("Tensorflow_GPU", "2.8.0", "python", None)],
        "rootfs": {}, "skipped": [], "unknowns": [],
    }
    doc.update(over)
    return doc


def new_report(**over: Any) -> dict[str, Any]:
    doc = report()
    doc["reference"] = {"input": "img:new", "canonical": "registry.example/img:new", "transport": "registry"}
    doc["image"] = {**doc["image"], "digest": digest(3), "image_id": digest(4)}
    doc.update(over)
    return doc


def diffed(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    result = diff_documents(old, new)
    jsonschema.Draft202012Validator(SCHEMA).validate(result)
    for fmt in ("table", "markdown"):  # every diff renders
        assert render("diff", fmt, result, RenderContext(width=120))
    return result


def component(diff: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in diff["numeric"] if c["component"] == name]
    return found


# -- the document ------------------------------------------------------------------------------
def test_the_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_an_image_against_itself_has_no_changes() -> None:
    diff = diffed(report(), report())
    assert diff["changes"] == [] and diff["identical"] and not diff["platform_mismatch"]
    assert diff["base"] == {**diff["base"], "changed": False, "shared_layers": 3}
    assert diff["findings"] == {"new": [], "resolved": [], "unchanged": 2}
    assert not any(c["changed"] or c["moved"] for c in diff["numeric"])
    assert "No changes" in render("diff", "markdown", diff)


def test_packages_added_removed_and_changed() -> None:
    new = new_report(packages=[
        package("libcudnn8", "8.2.1.32-1+cuda11.3"),
        package("libcudnn8", "8.2.1.32-1+cuda11.3", arch="arm64"),
        package("tensorflow-gpu", "2.8.0", "python", None),  # the same package, its name normalized
        package("numpy", "1.26.4", "python", None)])
    packages = diffed(report(), new)["packages"]
    assert packages["changed"] == [{"type": "deb", "name": "libcudnn8", "arch": "amd64",
                                    "old": "8.1.0.77-1+cuda11.2", "new": "8.2.1.32-1+cuda11.3"}]
    assert {(p["type"], p["name"], p.get("arch")) for p in packages["added"]} == {
        ("deb", "libcudnn8", "arm64"), ("python", "numpy", None)}
    assert packages["removed"] == [{"type": "deb", "name": "libc6", "arch": "amd64", "version": "2.36"}]
    assert packages["counts"] == {"old": 3, "new": 4, "added": 2, "removed": 1, "changed": 1,
                                  "unchanged": 1}
    assert diff_documents(report(), new)["changes"] == ["packages"]


def test_a_version_change_of_cudnn_is_a_cudnn_change() -> None:
    new = new_report(
        numeric_stack=[lib("cudnn", "8.2.1.32", f"{LIB}/libcudnn.so.8.2.1"), report()["numeric_stack"][1]],
        linkage={**report()["linkage"], "numeric": [winner("cudnn", "8.2.1.32", f"{LIB}/libcudnn.so.8.2.1"),
                                                    report()["linkage"]["numeric"][1]]})
    diff = diffed(report(), new)
    cudnn = component(diff, "cudnn")
    assert (cudnn["old"], cudnn["new"], cudnn["changed"]) == (["8.1.0.77"], ["8.2.1.32"], True)
    assert cudnn["why"] == ["versions", "loaded-version"]
    assert cudnn["loaded"]["old"]["path"] == f"{LIB}/libcudnn.so.8.1.0"
    assert cudnn["loaded"]["new"] == {"version": "8.2.1.32", "path": f"{LIB}/libcudnn.so.8.2.1",
                                      "versions": ["8.2.1.32"], "paths": [f"{LIB}/libcudnn.so.8.2.1"]}
    assert diff["changes"] == ["cudnn"]
    assert describe_change(diff, "cudnn") == "cudnn 8.1.0.77 -> 8.2.1.32"
    assert not component(diff, "cublasLt")["changed"]


def test_the_winning_copy_changes_while_the_same_versions_are_present() -> None:
    """Both images hold cuDNN 8.1 and 8.9; the old loads 8.9 (a wheel), the new 8.1 (the deb)."""
    wheel = "usr/local/lib/python3.11/site-packages/nvidia/cudnn/lib/libcudnn.so.8"
    stack = [lib("cudnn", "8.1.0.77", f"{LIB}/libcudnn.so.8.1.0"), lib("cudnn", "8.9.6", wheel)]
    old = report(numeric_stack=stack, linkage={**report()["linkage"], "numeric": [
        winner("cudnn", "8.9.6", wheel)]})
    new = new_report(numeric_stack=stack, linkage={**report()["linkage"], "numeric": [
        winner("cudnn", "8.1.0.77", f"{LIB}/libcudnn.so.8.1.0")]})
    diff = diffed(old, new)
    cudnn = component(diff, "cudnn")
    assert cudnn["old"] == cudnn["new"] == ["8.1.0.77", "8.9.6"]
    assert cudnn["changed"] and cudnn["why"] == ["loaded-version"]
    assert (cudnn["loaded"]["old"]["version"], cudnn["loaded"]["new"]["version"]) == ("8.9.6", "8.1.0.77")
    assert "cudnn" in diff["changes"] and "cublas" not in diff["changes"]
    assert "loaded 8.9.6 -> 8.1.0.77" in describe_change(diff, "cudnn")
    text = render("diff", "table", diff, RenderContext(width=200))
    assert f"8.9.6 /{wheel} → 8.1.0.77 /{LIB}/libcudnn.so.8.1.0" in text


def test_a_copy_that_moved_counts_only_when_its_version_is_imprecise() -> None:
    old_path = "usr/local/cuda-11.2/lib64/libcublasLt.so.11"
    new_path = "usr/local/cuda-11.3/lib64/libcublasLt.so.11"
    old = report(numeric_stack=[lib("cublasLt", "11.4.1", old_path), lib("cublas", "11", old_path + "x")],
                 linkage={**report()["linkage"], "numeric": [winner("cublasLt", "11.4.1", old_path),
                                                             winner("cublas", "11", old_path + "x")]})
    new = new_report(numeric_stack=[lib("cublasLt", "11.4.1", new_path), lib("cublas", "11", new_path + "x")],
                     linkage={**report()["linkage"], "numeric": [winner("cublasLt", "11.4.1", new_path),
                                                                 winner("cublas", "11", new_path + "x")]})
    diff = diffed(old, new)
    lt, blas = component(diff, "cublasLt"), component(diff, "cublas")
    assert lt["moved"] and not lt["changed"]
    assert blas["moved"] and blas["changed"] and blas["why"] == ["loaded-copy"]
    assert "cublas" in diff["changes"] and "cublasLt" not in diff["changes"]


def test_cublaslt_counts_as_cublas_and_cudart_as_cuda() -> None:
    new = new_report(numeric_stack=[report()["numeric_stack"][0],
                                    lib("cublasLt", "11.5.1", "usr/local/cuda/lib64/libcublasLt.so.11"),
                                    lib("cudart", "11.3", "usr/local/cuda/lib64/libcudart.so.11.0")])
    diff = diffed(report(), new)
    assert diff["changes"] == ["cublas", "cuda", "cublasLt", "cudart"]
    assert describe_change(diff, "cuda") == "cudart absent -> 11.3"
    assert "cublasLt 11.4.1 -> 11.5.1" in describe_change(diff, "cublas")


def test_a_framework_built_for_another_cuda_is_a_framework_and_cuda_change() -> None:
    new = new_report(frameworks=[{**report()["frameworks"][0], "version": "2.9.1",
                                  "built_for": {"cuda": "11.3", "cudnn": "8"}}])
    diff = diffed(report(), new)
    (tf,) = diff["frameworks"]
    assert tf["changed"] and tf["version_changed"] and tf["built_for_changed"] == ["cuda"]
    assert diff["changes"] == ["cuda", "framework"]
    assert describe_change(diff, "framework") == "tensorflow 2.8.0 -> 2.9.1 (built for cuda 11.2 -> 11.3)"
    assert "tensorflow built for CUDA 11.2 -> 11.3" in describe_change(diff, "cuda")


def test_numerically_relevant_env_and_labels() -> None:
    new = new_report(config={
        "Env": ["PATH=/usr/local/bin:/usr/bin", "CUDA_VERSION=11.3", "LD_LIBRARY_PATH=/usr/local/cuda/lib64",
                "CUBLAS_WORKSPACE_CONFIG=:4096:8", "TF_DETERMINISTIC_OPS=1", "HOME=/root"],
        "Labels": {"maintainer": "b", "com.nvidia.cudnn.version": "8.2.1.32"}})
    diff = diffed(report(), new)
    assert diff["env"] == [
        {"kind": "env", "name": "CUBLAS_WORKSPACE_CONFIG", "old": None, "new": ":4096:8"},
        {"kind": "env", "name": "CUDA_VERSION", "old": "11.2", "new": "11.3"},
        {"kind": "env", "name": "TF_DETERMINISTIC_OPS", "old": None, "new": "1"},
        {"kind": "label", "name": "com.nvidia.cudnn.version", "old": "8.1.0.77", "new": "8.2.1.32"}]
    assert diff["changes"] == ["env"]
    markdown = render("diff", "markdown", diff)
    assert "<summary>Env and labels: 4 changed</summary>" in markdown
    assert "| env | `CUBLAS_WORKSPACE_CONFIG` | (unset) | :4096:8 |" in markdown


def test_platform_mismatch_is_said_in_every_format() -> None:
    new = new_report(image={**new_report()["image"], "platform": "linux/arm64"})
    diff = diffed(report(), new)
    assert diff["platform_mismatch"] and "linux/amd64" in diff["platform_note"]
    assert "linux/arm64" in diff["platform_note"]
    assert "Platform mismatch" in render("diff", "table", diff, RenderContext(width=200))
    assert "platform mismatch" in render("diff", "markdown", diff)
    assert json.loads(render("diff", "json", diff))["platform_note"] == diff["platform_note"]
    assert not diffed(report(), report())["platform_note"]


def test_findings_new_and_resolved_by_id_and_component_not_message() -> None:
    new = new_report(findings=[
        finding(SEED, "cudnn", "cuDNN 8.1.0.77 at /another/path/libcudnn.so.8.1.0"),  # the same finding
        finding("cudnn-masked-rnn-corruption", "cudnn", "a | pipe")])
    diff = diffed(report(), new)
    findings = diff["findings"]
    assert [f["id"] for f in findings["new"]] == ["cudnn-masked-rnn-corruption"]
    assert [f["id"] for f in findings["resolved"]] == ["env-pythonhashseed-unset"]
    assert findings["unchanged"] == 1
    assert diff["changes"] == ["findings"]
    markdown = render("diff", "markdown", diff)
    assert "**New findings (1)**" in markdown and "a \\| pipe" in markdown
    assert "**Resolved findings (1)**" in markdown


def test_base_is_the_shared_prefix_of_diff_ids() -> None:
    layers = report()["layers"]
    appended = new_report(layers=[*layers, {**layers[0], "index": 3, "diff_id": digest(99)}])
    base = diffed(report(), appended)["base"]
    assert (base["changed"], base["shared_layers"]) == (False, 3)
    assert (base["old_layers"], base["new_layers"]) == (3, 4)
    rebased = new_report(layers=[{**layer, "diff_id": digest(50 + i)} for i, layer in enumerate(layers)])
    diff = diffed(report(), rebased)
    assert diff["base"]["changed"] and diff["base"]["shared_layers"] == 0
    assert diff["changes"] == ["base"]
    new_os = new_report(os={"id": "ubuntu", "pretty_name": "Ubuntu 22.04.4 LTS"},
                        layers=[layers[0], {**layers[1], "diff_id": digest(77)}])
    diff = diffed(report(), new_os)
    assert diff["base"]["changed"] and diff["base"]["os_changed"] and diff["base"]["shared_layers"] == 1
    assert "Ubuntu 22.04.4 LTS" in describe_change(diff, "base")


def test_a_report_without_linkage_compares_versions_only() -> None:
    diff = diffed(report(linkage=None), new_report())
    assert not component(diff, "cudnn")["changed"] and diff["changes"] == []


def test_a_document_that_is_not_a_version_1_report_is_refused() -> None:
    with pytest.raises(InputError, match="schema_version"):
        diff_documents(report(schema_version="2"), report())
    broken = report()
    del broken["layers"]
    with pytest.raises(InputError, match="layers"):
        diff_documents(report(), broken)


def test_the_table_lists_the_change_and_truncates_packages() -> None:
    many = new_report(packages=[package(f"lib{i}", "1.0") for i in range(60)])
    text = render("diff", "table", diffed(report(), many), RenderContext(width=140))
    assert "Packages: 0 changed, 60 added, 3 removed" in text
    assert "23 more in --format json" in text


# -- the command on saved reports (fast) -------------------------------------------------------
def saved(tmp_path: Path, name: str, doc: dict[str, Any]) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def cudnn_82() -> dict[str, Any]:
    return new_report(numeric_stack=[lib("cudnn", "8.2.1.32", f"{LIB}/libcudnn.so.8.2.1")],
                      linkage={**report()["linkage"], "numeric": [
                          winner("cudnn", "8.2.1.32", f"{LIB}/libcudnn.so.8.2.1")]})


def test_load_report_reads_saved_reports_and_passes_references_on(tmp_path: Path) -> None:
    assert load_report(saved(tmp_path, "r.json", report()))["schema_version"] == "1"
    assert load_report("registry.example/img:1") is None
    (tmp_path / "layout").mkdir()
    assert load_report(str(tmp_path / "layout")) is None
    with pytest.raises(InputError, match="not an auditor report"):
        load_report(saved(tmp_path, "other.json", {"name": "x"}))


def test_cli_on_saved_reports_gates_on_the_categories_asked(tmp_path: Path) -> None:
    old, new = saved(tmp_path, "old.json", report()), saved(tmp_path, "new.json", cudnn_82())
    proc = run("diff", old, new, "--format", "json", "--fail-on-change", "nccl,cuda")
    assert proc.returncode == 0, proc.stderr
    diff = json.loads(proc.stdout)
    jsonschema.validate(diff, SCHEMA)
    assert "cudnn" in diff["changes"]
    proc = run("diff", old, new, "--fail-on-change", "nccl,CUDNN", "-o", str(tmp_path / "d.md"),
               "--format", "markdown")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "auditor: diff: --fail-on-change cudnn: cudnn 8.1.0.77 -> 8.2.1.32"]
    assert "| **cudnn** | 8.1.0.77 | 8.2.1.32 |" in (tmp_path / "d.md").read_text()
    assert proc.stdout == ""


def test_cli_refuses_an_unknown_category_and_a_bad_report(tmp_path: Path) -> None:
    old = saved(tmp_path, "old.json", report())
    proc = run("diff", old, old, "--fail-on-change", "cudnn,bogus")
    assert proc.returncode == 2 and "bogus" in proc.stderr
    proc = run("diff", old, saved(tmp_path, "v2.json", report(schema_version="2")))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "auditor: error: the new report has schema_version '2'; this auditor reads version 1"]


def test_cli_says_platform_mismatch_on_stderr(tmp_path: Path) -> None:
    arm = new_report(image={**new_report()["image"], "platform": "linux/arm64"})
    proc = run("diff", saved(tmp_path, "a.json", report()), saved(tmp_path, "b.json", arm))
    assert proc.returncode == 0, proc.stderr
    assert "auditor: warning: the images are for different platforms" in proc.stderr
    assert "Platform mismatch" in proc.stdout


# -- end to end: two TensorFlow GPU images -------------------------------------------------------
@pytest.fixture(scope="module")
def tf_images(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    from fixtures.tf_image import tf_gpu_image

    work = tmp_path_factory.mktemp("tf-diff")
    old = tf_gpu_image(work / "old", cudnn="8.1.0.77", cuda="11.2")
    new = tf_gpu_image(work / "new", cudnn="8.2.1.32", cuda="11.3")
    return old, new, str(work / "cache")


@pytest.mark.slow
def test_diff_of_two_tf_images_reports_the_cudnn_change(tf_images: tuple[str, str, str],
                                                        tmp_path: Path) -> None:
    old, new, cache = tf_images
    proc = run("diff", old, new, "--format", "json", "--cache-dir", cache)
    assert proc.returncode == 0, proc.stderr
    diff = json.loads(proc.stdout)
    jsonschema.validate(diff, SCHEMA)
    cudnn = component(diff, "cudnn")
    assert (cudnn["old"], cudnn["new"], cudnn["changed"]) == (["8.1.0.77"], ["8.2.1.32"], True)
    assert cudnn["loaded"]["old"]["path"] == f"{LIB}/libcudnn.so.8.1.0"
    assert cudnn["loaded"]["new"]["path"] == f"{LIB}/libcudnn.so.8.2.1"
    assert SEED in {f["id"] for f in diff["findings"]["resolved"]} and not diff["findings"]["new"]
    assert {"cudnn", "packages", "env"} <= set(diff["changes"]) and "nccl" not in diff["changes"]
    assert not diff["base"]["changed"] and diff["base"]["shared_layers"] >= 1
    assert {"type": "deb", "name": "libcudnn8", "arch": "amd64", "old": "8.1.0.77-1+cuda11.2",
            "new": "8.2.1.32-1+cuda11.3"} in diff["packages"]["changed"]

    gate = run("diff", old, new, "--fail-on-change", "cudnn", "--cache-dir", cache,
               "-o", str(tmp_path / "diff.txt"))
    assert gate.returncode == 1
    assert "--fail-on-change cudnn: cudnn 8.1.0.77 -> 8.2.1.32" in gate.stderr
    table = (tmp_path / "diff.txt").read_text()
    assert "Numeric stack changes" in table and "8.1.0.77" in table and "8.2.1.32" in table
    assert "Resolved findings" in table and SEED in table

    proc = run("diff", old, new, "--fail-on-change", "nccl", "--format", "markdown", "--cache-dir", cache)
    assert proc.returncode == 0, proc.stderr
    assert "| **cudnn** | 8.1.0.77 | 8.2.1.32 |" in proc.stdout
    assert f"`{SEED}`" in proc.stdout and "<details>" in proc.stdout


@pytest.mark.slow
def test_diff_of_a_tf_image_with_itself_has_no_changes(tf_images: tuple[str, str, str],
                                                       tmp_path: Path) -> None:
    old, _, cache = tf_images
    saved_report = tmp_path / "old.json"
    audit = run("audit", old, "--format", "json", "--cache-dir", cache, "-o", str(saved_report))
    assert audit.returncode == 0, audit.stderr
    for other in (old, str(saved_report)):  # the image itself, or its saved report
        proc = run("diff", old, other, "--format", "json", "--cache-dir", cache,
                   "--fail-on-change", "cudnn,cublas,nccl,cuda,framework,packages,env,base,findings")
        assert proc.returncode == 0, proc.stderr
        diff = json.loads(proc.stdout)
        assert diff["changes"] == [] and diff["identical"]
        assert diff["findings"]["new"] == diff["findings"]["resolved"] == []
    # every image option of `audit` is the diff's too (one declaration serves both)
    proc = run("diff", old, old, "--format", "json", "--cache-dir", str(tmp_path / "fresh"),
               "--no-keep-layers", "--all-elf", "--max-entries", "100000")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["identical"]
    proc = run("diff", old, old, "--max-entries", "5", "--cache-dir", str(tmp_path / "other"))
    assert proc.returncode == 2 and "--max-entries" in proc.stderr  # the limit was applied


def test_the_document_is_not_changed_by_diffing() -> None:
    old, new = report(), cudnn_82()
    before = copy.deepcopy((old, new))
    diff_documents(old, new)
    assert (old, new) == before
