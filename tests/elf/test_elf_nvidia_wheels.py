"""NVIDIA's real libraries (and OpenBLAS), from their PyPI wheels: every version read from an
ELF file equals the version in the wheel's own METADATA (never typed here).

The wheels are downloaded once into the fixture cache (fixtures/elf_libs.py). Members are
extracted to a temporary directory by the test; the tool itself never extracts anything.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from auditor.inventory import numeric
from fixtures.elf_libs import WHEELS, extract_member, wheel, wheel_libraries, wheel_metadata

pytestmark = pytest.mark.slow

# wheel -> the libraries that must read the version from their own bytes, and how many parts
# they carry (the CUDA runtime says major.minor only)
CARRIERS: dict[str, tuple[tuple[str, ...], int]] = {
    "cudnn8": (("libcudnn_ops_infer.so.8", "libcudnn_ops_train.so.8", "libcudnn_adv_infer.so.8",
                "libcudnn_cnn_infer.so.8"), 3),
    "cudnn9": (("libcudnn_graph.so.9", "libcudnn_ops.so.9", "libcudnn_adv.so.9"), 3),
    "cublas11": (("libcublasLt.so.11",), 3),
    "cublas13": (("libcublasLt.so.13",), 3),
    "nccl2_19": (("libnccl.so.2",), 3),
    "nccl2_30": (("libnccl.so.2",), 3),
    "cudart11": (("libcudart.so.11.0",), 2),
    "cudart12": (("libcudart.so.12",), 2),
    "cudart13": (("libcudart.so.13",), 2),
    "nvrtc13": (("libnvrtc.so.13",), 3),
    "nvjitlink13": (("libnvJitLink.so.13",), 3),
    "cufft12": (("libcufft.so.12",), 3),
    "curand10": (("libcurand.so.10",), 3),
    "cusolver12": (("libcusolver.so.12",), 3),
    "openblas": (("libscipy_openblas64_.so",), 3),
}


def read_wheel(key: str, tmp_path: Path) -> tuple[str, dict[str, tuple[str | None, list]]]:
    """(METADATA version, {library file name: (ELF version, evidence)}) for one wheel."""
    path = wheel(WHEELS[key])
    metadata = wheel_metadata(path)
    assert metadata["Name"].lower() == WHEELS[key].partition("==")[0]
    out = {}
    for member in wheel_libraries(path):
        image_path = f"usr/local/lib/python3.11/site-packages/{member}"
        classifier = numeric.classify(image_path)
        if classifier is None:
            continue
        extracted = extract_member(path, member, tmp_path)
        try:
            with open(extracted, "rb") as stream:
                facts = numeric.analyze_library(stream, extracted.stat().st_size)
        finally:
            extracted.unlink()
        assert "problems" not in facts, (member, facts["problems"])
        evidence = numeric.file_evidence(classifier, image_path, facts)
        reading = numeric.elf_version(evidence)
        out[member.rpartition("/")[2]] = (reading.version if reading else None, evidence)
    return metadata["Version"], out


def test_every_pinned_wheel_has_carriers() -> None:
    assert set(CARRIERS) == set(WHEELS)


@pytest.mark.parametrize("key", sorted(WHEELS))
def test_wheel_libraries_read_as_their_metadata_version(key: str, tmp_path: Path) -> None:
    expected, read = read_wheel(key, tmp_path)
    carriers, parts = CARRIERS[key]
    want = ".".join(re.split(r"[.+]", expected)[:parts])
    for name in carriers:
        version, evidence = read[name]
        assert version == want, f"{name}: read {version}, METADATA says {expected}: {evidence}"
    for name, (version, evidence) in read.items():  # no library in the wheel reads otherwise
        if version is not None:
            assert not numeric.disagree(version, expected), (name, version, expected, evidence)
            assert numeric.version_text(numeric.parse_version(version) or ()) == version
        for e in evidence:  # and every single piece agrees, not just the chosen one
            if e.kind in numeric.ELF_KINDS:
                assert not numeric.disagree(e.version, expected), (name, e)
