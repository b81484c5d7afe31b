"""The numeric cataloger in whole audits: images holding gcc-built libraries (fast) and a real
cuDNN wheel installed as pip would (slow): versions, evidence, owners, and disagreements."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from auditor.audit import AuditOptions, AuditResult, audit
from auditor.elfwriter import build_shared_object
from auditor.model import Library
from auditor.testing import LayerBuilder, build_oci_layout
from fixtures.elf_libs import WHEELS, compile_library, wheel, wheel_layer, wheel_metadata, write_oci_layout

LIB = "usr/lib/x86_64-linux-gnu"
TF28_ENV = ["CUDA_VERSION=11.2.2", "CUDNN_VERSION=8.1.0.77", "NCCL_VERSION=2.8.4-1"]
DPKG_STATUS = """\
Package: libcudnn8
Status: install ok installed
Priority: optional
Section: multiverse/libs
Installed-Size: 2000
Maintainer: cudatools <cudatools@nvidia.com>
Architecture: amd64
Version: 8.1.0.77-1+cuda11.2
Description: cuDNN runtime libraries

"""


def run(tmp_path: Path, layers: list, env: list[str] | None = None,
        labels: dict[str, str] | None = None) -> AuditResult:
    config: dict = {"config": {"Env": env or []}}
    if labels:
        config["config"]["Labels"] = labels
    build_oci_layout(tmp_path / "oci", layers, tag="t", config=config)
    return audit(f"oci:{tmp_path / 'oci'}:t", AuditOptions(cache_dir=str(tmp_path / "cache")))


def libraries(result: AuditResult) -> dict[str, Library]:
    return {lib.path.rpartition("/")[2]: lib for lib in result.inventory.libraries}


def cudnn_layer(tmp_path: Path, name: str, file_name: str, dpkg: bool = False) -> LayerBuilder:
    built = compile_library(name, tmp_path / "gcc")
    layer = LayerBuilder().dir("usr").dir("usr/lib").dir(LIB)
    layer.file(f"{LIB}/{file_name}", built.read_bytes(), 0o755)
    layer.symlink(f"{LIB}/{file_name.rsplit('.', 2)[0]}", file_name)  # libx.so.8 -> libx.so.8.1.0
    if dpkg:
        layer.dir("var").dir("var/lib").dir("var/lib/dpkg").dir("var/lib/dpkg/info")
        layer.file("var/lib/dpkg/status", DPKG_STATUS)
        layer.file("var/lib/dpkg/info/libcudnn8.list",
                   f"/usr/lib/x86_64-linux-gnu/{file_name}\n"
                   f"/usr/lib/x86_64-linux-gnu/{file_name.rsplit('.', 2)[0]}\n")
    return layer


def test_the_seed_case_reads_cudnn_8_1_0_with_the_build_from_dpkg(tmp_path: Path) -> None:
    """The TF 2.8 GPU image: Env and dpkg say cuDNN 8.1.0.77; the library reads 8.1.0."""
    layer = cudnn_layer(tmp_path, "cudnn8", "libcudnn.so.8.1.0", dpkg=True)
    result = run(tmp_path, [layer], TF28_ENV)
    lib = libraries(result)["libcudnn.so.8.1.0"]
    assert (lib.component, lib.version, lib.machine) == ("cudnn", "8.1.0.77", "x86_64")
    assert lib.package == "deb:libcudnn8@8.1.0.77-1+cuda11.2"
    kinds = {e.kind: e for e in lib.evidence}
    assert kinds["constant"].version == "8.1.0" and kinds["constant"].value == "8100"
    assert kinds["package"].version == "8.1.0.77"
    assert kinds["env"].source == "Env:CUDNN_VERSION" and kinds["soname"].version == "8"
    assert [f for f in result.inventory.findings if f.component == "cudnn"] == []
    assert "libcudnn.so.8" not in libraries(result)  # the symlink is the same file


def test_env_that_lies_about_cudnn_is_one_finding(tmp_path: Path) -> None:
    layer = cudnn_layer(tmp_path, "cudnn8_logged", "libcudnn_ops_infer.so.8.9.6")
    result = run(tmp_path, [layer], TF28_ENV)
    findings = [f for f in result.inventory.findings if f.id == "version-disagreement"]
    assert len(findings) == 1, findings
    finding = findings[0]
    assert (finding.component, finding.severity) == ("cudnn", "high")
    assert finding.path == f"{LIB}/libcudnn_ops_infer.so.8.9.6"
    assert "8.1.0.77" in finding.message and "8.9.6" in finding.message
    assert "Env CUDNN_VERSION" in finding.message and "libcudnn_ops_infer.so.8.9.6" in finding.message
    assert [e.kind for e in finding.evidence] == ["env", "constant"]
    assert libraries(result)["libcudnn_ops_infer.so.8.9.6"].version == "8.9.6"


def test_config_keys_stating_the_same_value_make_one_finding(tmp_path: Path) -> None:
    layer = cudnn_layer(tmp_path, "cudnn8_logged", "libcudnn_ops_infer.so.8.9.6")
    result = run(tmp_path, [layer], [*TF28_ENV, "NV_CUDNN_VERSION=8.1.0.77"],
                 {"com.nvidia.cudnn.version": "8.1.0.77"})
    findings = [f for f in result.inventory.findings if f.component == "cudnn"]
    assert len(findings) == 1, [f.message for f in findings]
    assert findings[0].message.startswith(
        "cuDNN: the image's Env CUDNN_VERSION, Env NV_CUDNN_VERSION and label "
        "com.nvidia.cudnn.version say 8.1.0.77, but")
    assert [e.kind for e in findings[0].evidence] == ["env", "env", "label", "constant"]


def test_package_and_header_that_disagree_with_the_file(tmp_path: Path) -> None:
    layer = cudnn_layer(tmp_path, "cudnn8_logged", "libcudnn_ops_infer.so.8.9.6", dpkg=True)
    layer.dir("usr/include").file("usr/include/cudnn_version.h",
                                  "#define CUDNN_MAJOR 8\n#define CUDNN_MINOR 1\n"
                                  "#define CUDNN_PATCHLEVEL 0\n")
    result = run(tmp_path, [layer])
    lib = libraries(result)["libcudnn_ops_infer.so.8.9.6"]
    assert lib.version == "8.9.6"  # the file wins; the package's build part does not apply
    messages = sorted(f.message for f in result.inventory.findings if f.component == "cudnn")
    assert len(messages) == 2
    assert messages[0].startswith("cuDNN: header usr/include/cudnn_version.h says 8.1.0, but")
    assert messages[1].startswith("cuDNN: package deb:libcudnn8 says 8.1.0.77-1+cuda11.2, but")
    assert all(f.severity == "medium" for f in result.inventory.findings)


def test_cuda_and_nccl_env_compared_on_their_own_parts(tmp_path: Path) -> None:
    layer = LayerBuilder().dir("usr").dir("usr/lib").dir(LIB)
    for name in ("cudart", "nccl"):
        built = compile_library(name, tmp_path / "gcc")
        layer.file(f"{LIB}/{built.name}", built.read_bytes(), 0o755)
    result = run(tmp_path, [layer], ["CUDA_VERSION=12.2.2", "NCCL_VERSION=2.18.3-1"],
                 {"com.nvidia.cuda.version": "11.8.0"})
    libs = libraries(result)
    assert libs["libcudart.so.12"].version == "12.2" and libs["libnccl.so.2"].version == "2.18.3"
    findings = result.inventory.findings
    assert [(f.component, f.severity) for f in findings] == [("cudart", "high")]
    assert "label com.nvidia.cuda.version says 11.8.0" in findings[0].message


def test_written_library_for_the_demo_reads_as_8_1_0(tmp_path: Path) -> None:
    """Without a compiler: the ELF writer's libcudnn.so.8 audits as cuDNN 8.1.0, on both
    machines."""
    layer = LayerBuilder().dir("usr").dir("usr/lib").dir(LIB).dir("usr/lib/aarch64-linux-gnu")
    for machine, directory in (("x86_64", LIB), ("aarch64", "usr/lib/aarch64-linux-gnu")):
        data = build_shared_object("libcudnn.so.8", machine=machine,
                                   functions={"cudnnGetVersion": 8100})
        layer.file(f"{directory}/libcudnn.so.8.1.0", data, 0o755)
    result = run(tmp_path, [layer])
    found = sorted((lib.machine, lib.version) for lib in result.inventory.libraries)
    assert found == [("aarch64", "8.1.0"), ("x86_64", "8.1.0")]


# -- a real wheel ------------------------------------------------------------------------------
SITE = "usr/local/lib/python3.11/site-packages"


@pytest.fixture(scope="module")
def cudnn_wheel_images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """One layer with nvidia-cudnn-cu11 installed as pip would, under two tags: as is, and with
    the TF 2.8 image's Env."""
    root = tmp_path_factory.mktemp("cudnn-wheel")
    path = wheel(WHEELS["cudnn8"])
    layer = wheel_layer([path], SITE, root / "layer.tar")
    write_oci_layout(root / "oci", [layer], {"plain": None, "tf28": {"config": {"Env": TF28_ENV}}})
    return root, wheel_metadata(path)


@pytest.mark.slow
def test_real_cudnn_wheel_in_an_image(cudnn_wheel_images: tuple[Path, dict[str, str]]) -> None:
    root, metadata = cudnn_wheel_images
    result = audit(f"oci:{root / 'oci'}:plain", AuditOptions(cache_dir=str(root / "cache")))
    version = metadata["Version"]  # 8.9.6.50
    three = ".".join(version.split(".")[:3])
    libs = {lib.path.rpartition("/")[2]: lib for lib in result.inventory.libraries
            if lib.component == "cudnn"}
    assert set(libs) == {"libcudnn.so.8", "libcudnn_ops_infer.so.8", "libcudnn_ops_train.so.8",
                         "libcudnn_adv_infer.so.8", "libcudnn_adv_train.so.8",
                         "libcudnn_cnn_infer.so.8", "libcudnn_cnn_train.so.8"}
    owned = [p for p in result.inventory.packages if p.name.lower() == metadata["Name"].lower()]
    assert owned, "the python cataloger should find the wheel's dist-info"
    for name, lib in libs.items():
        elf = [e for e in lib.evidence if e.kind in ("constant", "data-symbol")]
        assert lib.package == f"python:{owned[0].name}@{version}", name
        assert lib.version == version, (name, lib.evidence)  # the 4th part from METADATA
        assert all(e.version == three for e in elf), (name, elf)
    assert {e.kind for e in libs["libcudnn_ops_infer.so.8"].evidence} >= {
        "soname", "constant", "data-symbol", "package"}
    assert not [e for e in libs["libcudnn.so.8"].evidence if e.kind == "constant"]  # dispatcher
    headers = {e.source.rpartition("/")[2]: e.version for e in libs["libcudnn.so.8"].evidence
               if e.kind == "header"}
    assert headers and set(headers.values()) == {three}, headers  # the wheel's include/
    assert not result.inventory.findings or all(
        f.component != "cudnn" for f in result.inventory.findings)
    assert not [u for u in result.inventory.unknowns if u.cataloger == "numeric"]


@pytest.mark.slow
def test_real_cudnn_wheel_under_a_lying_env(cudnn_wheel_images: tuple[Path, dict[str, str]]) -> None:
    root, metadata = cudnn_wheel_images
    result = audit(f"oci:{root / 'oci'}:tf28", AuditOptions(cache_dir=str(root / "cache")))
    three = ".".join(metadata["Version"].split(".")[:3])
    findings = [f for f in result.inventory.findings if f.component == "cudnn"]
    assert len(findings) == 1, [f.message for f in findings]
    message = findings[0].message
    assert findings[0].severity == "high"
    assert re.search(rf"Env CUDNN_VERSION says 8\.1\.0\.77, but .*reads {re.escape(three)} ", message)
    assert "(and 3 more files)" in message  # four cuDNN 8.9 libraries carry the version
