"""The command line as users and CI jobs call it: exit codes, one-line errors, formats."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from auditor.audit import AuditOptions, audit
from auditor.demo import build_demo_image
from auditor.report.document import report_schema
from auditor.sources.cache import BlobCache
from auditor.testing import PassRecorder


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "auditor", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("auditor: error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for word in words:
        assert word in lines[0]


def test_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("auditor, version ")


def test_demo_table(tmp_path: Path) -> None:
    proc = run("demo", "--cache-dir", str(tmp_path / "c"))
    assert proc.returncode == 0, proc.stderr
    for expected in ("Debian GNU/Linux 12 (bookworm)", "linux/amd64", "CUDNN_VERSION=8.1.0.77",
                     "COPY train.py", "1 whiteouts applied", "Numeric stack", "8.1.0.77",
                     "version-disagreement"):
        assert expected in proc.stdout
    assert proc.stderr == ""  # progress only on a terminal


def test_audit_without_reference_is_the_demo_and_json_validates(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    proc = run("audit", "--format", "json", "-o", str(out), "--cache-dir", str(tmp_path / "c"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    doc = json.loads(out.read_text())
    jsonschema.validate(doc, report_schema())
    assert doc["os"]["id"] == "debian" and doc["os"]["version_id"] == "12"
    assert [layer["index"] for layer in doc["layers"]] == [0, 1, 2, 3]
    # the numeric stack, read from the libraries; the build part from dpkg's libcudnn8
    stack = {(lib["component"], lib["path"].rsplit("/", 1)[1]): lib for lib in doc["numeric_stack"]}
    cudnn = stack[("cudnn", "libcudnn_ops_infer.so.8.1.0")]
    assert cudnn["version"] == "8.1.0.77" and cudnn["package"] == "deb:libcudnn8@8.1.0.77-1+cuda11.2"
    assert {"kind": "constant", "value": "8100"}.items() <= {
        k: v for e in cudnn["evidence"] if e["kind"] == "constant" for k, v in e.items()}.items()
    assert stack[("nccl", "libnccl.so.2.7.8")]["version"] == "2.7.8"
    # the Env line that lies is caught (the inventory's only finding; the rest are the rules')
    (lie,) = [f for f in doc["findings"] if "rule" not in f]
    assert (lie["id"], lie["component"]) == ("version-disagreement", "nccl")
    assert "2.8.4" in lie["message"] and "2.7.8" in lie["message"]
    assert "cudnn-8.1-birnn-nondeterminism" in {f["id"] for f in doc["findings"]}
    assert {fw["name"]: fw["built_for"]["cudnn"] for fw in doc["frameworks"]} == {"tensorflow": "8"}
    assert doc["config"]["Entrypoint"] == ["python3", "/opt/app/train.py"]
    assert doc["rootfs"]["entries"]["hardlink"] == 1
    assert not list(tmp_path.glob(".report.json.*"))  # no temp file left


def test_jobs_reads_layers_at_once_to_the_same_report(tmp_path: Path) -> None:
    reports = []
    for jobs in ("1", "3"):
        shutil.rmtree(tmp_path / "c" / "layers", ignore_errors=True)  # every layer read again
        out = tmp_path / f"jobs{jobs}.json"
        proc = run("demo", "--jobs", jobs, "--format", "json", "-o", str(out),
                   "--cache-dir", str(tmp_path / "c"))
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(out.read_text())
        for volatile in ("elapsed_seconds", "timings", "generated_at"):
            doc.pop(volatile, None)
        reports.append(doc)
    assert reports[0] == reports[1]
    assert_one_line_error(run("audit", "--jobs", "-1", "--cache-dir", str(tmp_path)), 2,
                          "Invalid value for '--jobs'", "auditor audit --help")


@pytest.mark.parametrize("args", [("audit", "--bogus"), ("diff", "a"), ("rules", "show"),
                                  ("audit", "--format", "xml"), ("nosuchcommand",),
                                  ("campaign", "run", "--backend", "x", "c.yaml", "-o", "d")])
def test_usage_errors_are_one_line_and_exit_2(args: tuple[str, ...]) -> None:
    assert_one_line_error(run(*args), 2, "--help")


def test_schema_rejects_a_broken_document(tmp_path: Path) -> None:
    proc = run("demo", "--format", "json", "--cache-dir", str(tmp_path / "c"))
    doc = json.loads(proc.stdout)
    doc["image"]["image_id"] = "not-a-digest"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, report_schema())


def test_warm_audit_reads_no_layer(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "c")
    ref = build_demo_image(cache)
    options = AuditOptions(cache_dir=str(cache.root))
    cold_progress = PassRecorder()
    cold = audit(ref, options, cold_progress)
    assert cold_progress.cached == [False] * len(cold.image.layers)
    # Remove the layer blobs from the layout: a warm audit must not need them.
    for layer in cold.image.layers:
        (Path(ref.path) / "blobs" / "sha256" / layer.digest.split(":")[1]).unlink()
    warm_progress = PassRecorder()
    warm = audit(ref, options, warm_progress)
    assert warm_progress.cached == [True] * len(cold.image.layers)
    assert warm.index.fingerprint() == cold.index.fingerprint()
    assert warm.inventory.os == cold.inventory.os


def test_bad_reference_exit_2(tmp_path: Path) -> None:
    assert_one_line_error(run("audit", "Bad Name", "--cache-dir", str(tmp_path)), 2,
                          "invalid image reference")


def test_missing_archive_exit_2_and_nothing_written(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    proc = run("audit", f"docker-archive:{tmp_path}/none.tar", "-o", str(out),
               "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(proc, 2, "does not exist")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_output_into_missing_directory_exit_2(tmp_path: Path) -> None:
    proc = run("demo", "-o", str(tmp_path / "no" / "such" / "dir.json"),
               "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(proc, 2, "does not exist")


def test_bad_platform_exit_2(tmp_path: Path) -> None:
    proc = run("demo", "--platform", "linux", "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(proc, 2, "invalid platform")
    proc = run("demo", "--platform", "linux/arm64", "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(proc, 2, "not linux/arm64")


def test_no_engine_exit_3(tmp_path: Path) -> None:
    proc = run("audit", "docker-daemon:x:y", "--engine-host", f"unix://{tmp_path}/none.sock",
               "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(proc, 3, "engine")


def test_registry_down_exit_3(tmp_path: Path) -> None:
    proc = run("audit", "127.0.0.1:9/x:y", "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(proc, 3, "127.0.0.1:9")


def test_cache_commands(tmp_path: Path) -> None:
    cache_dir = str(tmp_path / "c")
    assert run("demo", "--cache-dir", cache_dir).returncode == 0
    info = json.loads(run("cache", "info", "--format", "json", "--cache-dir", cache_dir).stdout)
    # manifest, config, and the 7 captured files (os-release, dpkg's status and libcudnn8.list,
    # numpy's and tensorflow's METADATA, INSTALLER, build_info.py); the layers of a local
    # layout are read in place, not copied, and the libraries leave only their facts
    assert (info["layer_indexes"], info["blobs"]) == (4, 9)
    assert run("cache", "prune", "--all", "--cache-dir", cache_dir).returncode == 0
    info = json.loads(run("cache", "info", "--format", "json", "--cache-dir", cache_dir).stdout)
    assert (info["blobs"], info["layer_indexes"]) == (0, 0)
