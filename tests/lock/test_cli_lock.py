"""`auditor lock` from the command line: --fix on the TensorFlow 2.8 GPU-style image (the seed
bug) and the bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from auditor.dockerfile import check_dockerfile
from fixtures.tf_image import tf_gpu_image

ROOT = Path(__file__).resolve().parents[2]
LOCK_SCHEMA = json.loads((ROOT / "auditor/schemas/lock.schema.json").read_text())
SEED = "cudnn-8.1-birnn-nondeterminism"
NO_INDEX = "http://127.0.0.1:9/simple"  # nothing listens: Python upgrades are listed as not locked


def auditor(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI, run in ``cwd`` with its blob cache there."""
    env = {**os.environ, "COLUMNS": "200", "AUDITOR_CACHE_DIR": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", "auditor", *args], capture_output=True, text=True,
                          timeout=600, check=False, cwd=cwd, env=env)


@pytest.mark.slow
def test_fix_moves_the_tf_2_8_image_to_cudnn_8_2_1_on_cuda_11_3(tmp_path: Path) -> None:
    image = tf_gpu_image(tmp_path / "img")
    out = tmp_path / "recipe"
    proc = auditor("lock", image, "--fix", "-o", str(out), "--index-url", NO_INDEX, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    dockerfile = (out / "Dockerfile.lock").read_text()
    assert f"# libcudnn8=8.2.1.32-1+cuda11.3: --fix for {SEED}" in dockerfile
    assert "        libcudnn8=8.2.1.32-1+cuda11.3 \\" in dockerfile
    assert "apt-mark hold libcudnn8" in dockerfile
    assert f"# --fix: {SEED} (CUDA 11.2 -> 11.3)\nENV CUDA_VERSION=\"11.3\"" in dockerfile
    assert "ENV TF_DETERMINISTIC_OPS=\"1\"" in dockerfile  # the settings the findings ask for, cited
    assert "# answers env-tensorflow-determinism-switch-missing (tensorflow)" in dockerfile
    assert check_dockerfile(dockerfile, "Dockerfile.lock") == []
    lock = json.loads((out / "lock.json").read_text())
    jsonschema.validate(lock, LOCK_SCHEMA)
    assert {(c["finding"], c["change"]) for c in lock["changes"]} == {
        (SEED, "libcudnn8 8.1.0.77-1+cuda11.2 -> 8.2.1.32-1+cuda11.3"),
        (SEED, "CUDA 11.2 -> 11.3 (cudnn 8.2.1.32 is built for CUDA 10.2, 11.3)")}
    (pin,) = [p for p in lock["os_packages"] if p["name"] == "libcudnn8"]
    assert (pin["version"], pin["fix"], pin["installed"]) == ("8.2.1.32-1+cuda11.3", SEED, True)
    # the other cuDNN requests are said, not silently dropped
    assert any(u["reason"].endswith(f"not applied: cudnn 8.2.1 was chosen for {SEED}")
               for u in lock["unlockable"])
    assert f"fixed: libcudnn8 8.1.0.77-1+cuda11.2 -> 8.2.1.32-1+cuda11.3  ({SEED})" in proc.stderr
    # without --fix the recipe keeps the image's cuDNN (FROM the image itself: nothing reinstalled)
    plain = auditor("lock", image, "--dry-run", "--index-url", NO_INDEX, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "libcudnn8=8.2.1" not in plain.stdout and "[recorded]" in plain.stdout


def test_lock_bad_input_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    existing = tmp_path / "recipe"
    existing.mkdir()
    (existing / "keep").write_text("x")
    cases = [
        (("lock",), "give the image to lock"),
        (("lock", "oci:/nowhere:t"), "give the recipe's directory with -o DIR"),
        (("lock", "oci:/nowhere:t", "-o", str(existing)), "exists; give --force"),
        (("lock", "oci:/nowhere:t", "--dry-run", "--apt-source", "http://x/ ./"),
         "expected one sources line"),
        (("lock", "--verify", str(existing)), "not a recipe written by auditor lock"),
        (("lock", "oci:/x:t", "--verify", str(existing)), "--verify DIR takes no image"),
    ]
    for args, says in cases:
        proc = auditor(*args, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        assert says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert [p.name for p in existing.iterdir()] == ["keep"]


def test_the_base_annotations_reach_the_report_and_name_the_base_candidate(tmp_path: Path) -> None:
    from auditor.audit import AuditOptions, audit
    from auditor.lock.plan import base_candidate
    from auditor.report.document import build_document, report_schema
    from auditor.testing import LayerBuilder, build_oci_layout

    digest = "sha256:" + "e" * 64
    build_oci_layout(tmp_path / "layout", [LayerBuilder().file("etc/os-release", "ID=debian\n")],
                     tag="app", annotations={"org.opencontainers.image.base.name": "127.0.0.1:5000/base:1",
                                             "org.opencontainers.image.base.digest": digest})
    result = audit(f"oci:{tmp_path / 'layout'}:app", AuditOptions(cache_dir=str(tmp_path / "cache")))
    document = build_document(result)
    jsonschema.validate(document, report_schema())
    assert document["image"]["annotations"]["org.opencontainers.image.base.digest"] == digest
    assert base_candidate(document) == f"127.0.0.1:5000/base@{digest}"
