"""The classifier table and the pure pieces of the numeric cataloger: encodings, version
choice, headers, and adding a library as a table edit."""

from __future__ import annotations

import io

import pytest
import yaml

from auditor.elf import elf_facts
from auditor.elfwriter import build_shared_object
from auditor.inventory import numeric
from auditor.model import Evidence


def test_every_library_glob_is_classified_once() -> None:
    names = [c.name for c in numeric.CLASSIFIERS]
    assert {"cudnn", "cublas", "cublasLt", "nccl", "cudart", "nvrtc", "nvjitlink", "tensorrt",
            "onednn", "mkl", "openblas", "gomp", "iomp5"} <= set(names)
    samples = {"usr/lib/x86_64-linux-gnu/libcudnn.so.8.1.0": "cudnn",
               "x/nvidia/cudnn/lib/libcudnn_graph.so.9": "cudnn",
               "usr/local/cuda/lib64/libcublasLt.so.11.4.1.1043": "cublasLt",
               "usr/local/cuda/lib64/libcublas.so.11": "cublas",
               "x/nvidia/cu13/lib/libnvJitLink.so.13": "nvjitlink",
               "x/numpy.libs/libopenblas64_p-r0-0cf96a72.3.23.dev.so": "openblas",
               "x/torch/lib/libgomp-a34b3233.so.1": "gomp", "opt/intel/lib/libmkl_core.so.2": "mkl",
               "usr/lib/libdnnl.so.3.3": "onednn", "usr/lib/libnvinfer.so.8.6.1": "tensorrt",
               "usr/lib/libcudart.so.11.0": "cudart", "usr/lib/libnccl.so.2.8.4": "nccl"}
    for path, component in samples.items():
        matching = [c.name for c in numeric.CLASSIFIERS if c.matches(path)]
        assert matching == [component], (path, matching)
    assert numeric.classify("usr/lib/libnvrtc-builtins.so.13.0") is None


@pytest.mark.parametrize(("value", "encodings", "major", "version"), [
    (8100, ["x1000", "x10000"], 8, (8, 1, 0)),  # cuDNN 8.1.0
    (8906, ["x1000", "x10000"], None, (8, 9, 6)),  # x10000 would give major 0
    (92400, ["x1000", "x10000"], 9, (9, 24, 0)),  # cuDNN 9
    (0x080906, ["packed"], 8, (8, 9, 6)),
    (21903, ["x10000", "x1000"], 2, (2, 19, 3)),  # NCCL 2.19.3
    (2804, ["x10000", "x1000"], 2, (2, 8, 4)),  # NCCL 2.8.4, before 2.9's encoding
    (111003, ["x10000", "x1000"], 11, (11, 10, 3)),  # cuBLASLt 11.10.3
    (10201, ["x10000", "x1000"], 10, (10, 2, 1)),  # cuBLAS 10.2.1: the SONAME decides
    (11080, ["cuda"], 11, (11, 8)),
])
def test_encodings(value: int, encodings: list[str], major: int | None, version: tuple) -> None:
    assert numeric.decode([value], encodings, major) == version


def test_parse_and_compare_versions() -> None:
    assert numeric.parse_version("8.1.0.77-1+cuda11.2") == (8, 1, 0, 77)
    assert numeric.parse_version("1:2.8.4-1") == (2, 8, 4)
    assert numeric.parse_version("latest") is None
    assert numeric.disagree("8.1.0.77", "8.9.6") and not numeric.disagree("8.9.6.50", "8.9.6")
    assert not numeric.disagree("11.2.2", "11.2", 2) and numeric.disagree("11.2.2", "11.8", 2)
    assert not numeric.disagree("12.9.79", "12.9.1", 2)


def test_a_getter_with_an_error_exit_is_read_by_the_soname_major() -> None:
    getter = numeric.Getter("f", ("returns",), ("x1000", "x10000"))
    assert numeric.getter_version(getter, {"returns": [8906, 3]}, 8) == ([8906], (8, 9, 6))
    assert numeric.getter_version(getter, {"returns": [8906, 8100]}, 8) is None  # ambiguous
    assert numeric.getter_version(getter, {"returns": [92400]}, 8) == ([92400], (9, 24, 0))
    parts = numeric.Getter("v", ("store0", "store1"), ("parts",))
    assert numeric.getter_version(parts, {"stores": {"0": [13], "1": [4]}}, 13) == ([13, 4], (13, 4))


def test_version_choice_prefers_the_file_and_takes_the_build_from_an_agreeing_package() -> None:
    soname = Evidence("soname", "p", "libcudnn.so.8", "8")
    elf = Evidence("constant", "p:cudnnGetVersion()", "8100", "8.1.0")
    header = Evidence("header", "h", "...", "8.1.0")
    deb = Evidence("package", "deb:libcudnn8", "8.1.0.77-1+cuda11.2", "8.1.0.77")
    other = Evidence("package", "deb:libcudnn8", "8.9.6.50-1", "8.9.6.50")
    assert numeric.choose_version([soname, elf, header, deb]) == "8.1.0.77"
    assert numeric.choose_version([soname, elf, other]) == "8.1.0"
    assert numeric.choose_version([soname, header]) == "8.1.0"
    assert numeric.choose_version([soname, other]) == "8.9.6.50"
    assert numeric.choose_version([soname]) == "8"
    assert numeric.choose_version([]) is None


def test_headers() -> None:
    cudnn = next(c for c in numeric.CLASSIFIERS if c.name == "cudnn").header
    text = "#define CUDNN_MAJOR 9\n#define CUDNN_MINOR 24\n#define CUDNN_PATCHLEVEL 0\n"
    assert numeric.header_version(cudnn, text)[1] == "9.24.0"
    assert numeric.header_version(cudnn, "#include <cudnn_version.h>\n") is None
    trt = next(c for c in numeric.CLASSIFIERS if c.name == "tensorrt").header
    aliased = ("#define TRT_MAJOR_ENTERPRISE 10\n#define NV_TENSORRT_MAJOR TRT_MAJOR_ENTERPRISE\n"
               "#define NV_TENSORRT_MINOR 3\n#define NV_TENSORRT_PATCH 0\n#define NV_TENSORRT_BUILD 26\n")
    assert numeric.header_version(trt, aliased)[1] == "10.3.0.26"
    cudart = next(c for c in numeric.CLASSIFIERS if c.name == "cudart").header
    assert numeric.header_version(cudart, "#define CUDART_VERSION 12020\n")[1] == "12.2"
    blas = next(c for c in numeric.CLASSIFIERS if c.name == "openblas").header
    assert numeric.header_version(blas, '#define OPENBLAS_VERSION " OpenBLAS 0.3.21 "\n')[1] == "0.3.21"


def test_adding_a_library_is_a_table_edit() -> None:
    table = yaml.safe_load("""
schema: 1
components:
  cutensor:
    title: cuTENSOR
    files: ["**/libcutensor.so*"]
    soname: '^libcutensor\\.so\\.(\\d+)'
    getters:
      - {symbol: cutensorGetVersion, read: returns, decode: [x10000, x1000]}
    packages: ['^nvidia-cutensor(-cu\\d+)?$']
""")
    classifiers = numeric.parse_classifiers(table)
    interest = numeric.interest_of(classifiers)
    assert interest.functions == {"cutensorGetVersion"}
    data = build_shared_object("libcutensor.so.2", functions={"cutensorGetVersion": 20103})
    facts = elf_facts(io.BytesIO(data), len(data), interest)
    evidence = numeric.file_evidence(classifiers[0], "opt/libcutensor.so.2", facts)
    assert numeric.choose_version(evidence) == "2.1.3"


@pytest.mark.parametrize("bad", [
    {"schema": 2, "components": {}},
    {"schema": 1, "components": {"x": {"files": ["a"], "getters": [
        {"symbol": "f", "read": "returns", "decode": "x999"}]}}},
    {"schema": 1, "components": {"x": {"files": ["a"], "getters": [
        {"symbol": "f", "read": "stdout", "decode": "x1000"}]}}},
])
def test_a_wrong_table_is_an_error(bad: dict) -> None:
    with pytest.raises(ValueError):
        numeric.parse_classifiers(bad)
