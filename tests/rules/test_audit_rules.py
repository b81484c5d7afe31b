"""The built-in packs on real images: the seed bug on a TF 2.8 GPU-style image (Debian base,
gcc-built cuDNN, dpkg's record), and NCCL/cuBLAS rules on NVIDIA's real wheels from PyPI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest

from auditor.audit import AuditOptions, audit
from auditor.digest import digest_bytes
from auditor.model import Finding
from auditor.report.document import build_document, report_schema
from auditor.testing import LayerBuilder
from fixtures.elf_libs import WHEELS, wheel, wheel_layer, wheel_metadata, write_oci_layout
from fixtures.tf_image import tf_gpu_image

pytestmark = pytest.mark.slow
SEED = "cudnn-8.1-birnn-nondeterminism"
SITE = "usr/local/lib/python3.11/site-packages"


def audited(ref: str, tmp_path: Path, **options: Any) -> tuple[list[Finding], dict[str, Any]]:
    result = audit(ref, AuditOptions(cache_dir=str(tmp_path / "cache"), **options))
    document = build_document(result)
    jsonschema.validate(document, report_schema())
    return result.findings, document


def test_tf_2_8_image_with_cudnn_8_1_gets_the_bidirectional_rnn_finding(tmp_path: Path) -> None:
    findings, document = audited(tf_gpu_image(tmp_path / "img"), tmp_path)
    (seed,) = [f for f in findings if f.id == SEED]
    assert seed.severity == "high" and seed.component == "cudnn"
    assert (seed.version, seed.fixed_in) == ("8.1.0.77", "8.2.1")
    assert seed.path == "usr/lib/x86_64-linux-gnu/libcudnn.so.8.1.0"
    assert len(seed.locations) == 7  # the dispatcher and its six sub-libraries, one finding
    assert "loaded by tensorflow" in seed.message
    assert "CUDA 11.3" in (seed.remediation or "") and "8.2.1" in (seed.remediation or "")
    assert any("bidirectional" in a.lower() for a in seed.assumptions)
    assert seed.rule is not None and seed.rule.confidence == "verified" and seed.rule.references
    # the version came from the image, with what said it: dpkg's record and the ELF getter
    assert {e.kind for e in seed.evidence} & {"package", "constant"}
    # the stack is whole: nothing the framework loads is missing
    assert not [f for f in findings if f.id == "linkage-missing-library"]
    assert SEED in document["rules"]["fired"]
    assert any(p["name"] == "cudnn" for p in document["rules"]["packs"])


def test_the_same_image_with_cudnn_8_2_1_does_not(tmp_path: Path) -> None:
    findings, document = audited(tf_gpu_image(tmp_path / "img", cudnn="8.2.1.32", cuda="11.3"), tmp_path)
    cudnn = [lib for lib in document["numeric_stack"] if lib["component"] == "cudnn"]
    assert cudnn and {lib["version"] for lib in cudnn} == {"8.2.1.32"}
    assert SEED not in {f.id for f in findings}
    assert SEED in document["rules"]["passed"]


def test_determinism_asked_in_env_makes_the_cublas_rule_plain(tmp_path: Path) -> None:
    """With TF_DETERMINISTIC_OPS=1 in the image and no CUBLAS_WORKSPACE_CONFIG, the cuBLAS
    workspace rule fires on the toolkit's cuBLAS 11.4 and names the env var it read."""
    findings, _ = audited(tf_gpu_image(tmp_path / "img", env=("TF_DETERMINISTIC_OPS=1",)), tmp_path)
    workspace = [f for f in findings if f.component in ("cublas", "cublasLt") and f.rule
                 and "CUBLAS_WORKSPACE_CONFIG" in (f.remediation or "")]
    assert workspace, [f.id for f in findings]
    assert any(e.source == "Env:TF_DETERMINISTIC_OPS" for f in workspace for e in f.evidence)


# -- NVIDIA's real wheels --------------------------------------------------------------------
def wheels_image(tmp_path: Path, keys: tuple[str, ...], env: tuple[str, ...] = ()) -> str:
    base = tmp_path / "base.tar"
    data = LayerBuilder().dir("etc").file("etc/os-release", 'ID=debian\nVERSION_ID="12"\n').tar_bytes()
    base.write_bytes(data)
    layers = [(base, digest_bytes(data)),
              wheel_layer([wheel(WHEELS[k]) for k in keys], SITE, tmp_path / "wheels.tar")]
    write_oci_layout(tmp_path / "oci", layers, {"wheels": {"config": {"Env": list(env)}}})
    return f"oci:{tmp_path / 'oci'}:wheels"


def by_fixed_in(findings: list[Finding], component: str) -> dict[str, Finding]:
    return {f.fixed_in: f for f in findings if f.component == component and f.rule and f.fixed_in}


def test_nccl_2_19_and_cublas_11_wheels_trip_their_rules(tmp_path: Path) -> None:
    nccl_version = wheel_metadata(wheel(WHEELS["nccl2_19"]))["Version"]
    findings, _ = audited(wheels_image(tmp_path, ("nccl2_19", "cublas11")), tmp_path)
    nccl = by_fixed_in(findings, "nccl")
    # the CPUID register clobber (fixed 2.20.3), and not the vNIC reduce_scatter nondeterminism
    # (fixed 2.30.7), which came with 2.24's virtual NICs
    assert "2.20.3" in nccl and "2.30.7" not in nccl, sorted(nccl)
    assert all(f.version == nccl_version for f in nccl.values())
    assert all("site-packages/nvidia/nccl/lib/libnccl.so.2" in (f.path or "") for f in nccl.values())
    cublas = [f for f in findings if f.component in ("cublas", "cublasLt") and f.rule]
    assert any("CUBLAS_WORKSPACE_CONFIG" in (f.remediation or "") for f in cublas)


def test_nccl_2_30_7_and_a_pinned_cublas_workspace_do_not(tmp_path: Path) -> None:
    findings, _ = audited(wheels_image(tmp_path, ("nccl2_30", "cublas11"),
                                       env=("CUBLAS_WORKSPACE_CONFIG=:4096:8",)), tmp_path)
    nccl = by_fixed_in(findings, "nccl")
    assert "2.30.7" not in nccl and "2.20.3" not in nccl
    cublas = [f for f in findings if f.component in ("cublas", "cublasLt") and f.rule
              and "CUBLAS_WORKSPACE_CONFIG" in (f.remediation or "")]
    assert cublas == []
