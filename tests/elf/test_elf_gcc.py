"""Libraries compiled by gcc (x86-64, and aarch64 with the cross compiler): each getter shape the
classifiers rely on is decoded from real compiler output, and read as the right version."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from auditor.inventory import numeric
from fixtures.elf_libs import SOURCES, compile_library, compiler_for

# fixture -> (component, version read, the kind of evidence it comes from)
EXPECTED = {
    "cudnn8": ("cudnn", "8.1.0", {"constant"}),
    "cudnn8_logged": ("cudnn", "8.9.6", {"constant", "data-symbol"}),
    "cudnn9_graph": ("cudnn", "9.1.0", {"constant", "data-symbol"}),
    "nccl": ("nccl", "2.18.3", {"constant", "string"}),
    "cudart": ("cudart", "12.2", {"constant"}),
    "nvrtc": ("nvrtc", "12.2.140", {"constant", "string"}),
    "cublaslt": ("cublasLt", "12.2.1", {"constant"}),
    "tensorrt": ("tensorrt", "8.6.1", {"constant"}),
    "onednn": ("onednn", "3.3.4", {"constant"}),
    "openblas": ("openblas", "0.3.21", {"string"}),
}


def machines() -> list[str]:
    out = ["x86_64"]
    if compiler_for("aarch64") or os.environ.get("CI"):
        out.append("aarch64")  # CI installs the cross compiler: missing there is a failure
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    out = {}
    root = tmp_path_factory.mktemp("gcc")
    for machine in machines():
        for name in SOURCES:
            out[(name, machine)] = compile_library(name, root / machine, machine)
    return out


def test_every_fixture_has_an_expectation() -> None:
    assert set(EXPECTED) == set(SOURCES)


@pytest.mark.parametrize("machine", machines())
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_gcc_library_reads_as_its_version(built: dict, name: str, machine: str) -> None:
    path = built[(name, machine)]
    with open(path, "rb") as stream:
        facts = numeric.analyze_library(stream, path.stat().st_size)
    assert facts["machine"] == machine and "problems" not in facts
    image_path = f"usr/lib/{SOURCES[name][0]}"
    classifier = numeric.classify(image_path)
    component, version, kinds = EXPECTED[name]
    assert classifier is not None and classifier.name == component
    evidence = numeric.file_evidence(classifier, image_path, facts)
    assert numeric.choose_version(evidence) == version
    read = {e.kind for e in evidence if e.kind in numeric.ELF_KINDS}
    assert read == kinds, evidence
    assert all(e.version and not numeric.disagree(e.version, version)
               for e in evidence if e.kind in numeric.ELF_KINDS)


def test_the_soname_picks_the_encoding(built: dict) -> None:
    """8906 is 8.9.6 (x1000) for a .so.8, 90100 is 9.1.0 (x10000) for a .so.9."""
    for name, major in (("cudnn8_logged", "8"), ("cudnn9_graph", "9")):
        path = built[(name, "x86_64")]
        with open(path, "rb") as stream:
            facts = numeric.analyze_library(stream, path.stat().st_size)
        image_path = f"opt/{SOURCES[name][0]}"
        evidence = numeric.file_evidence(numeric.CLASSIFIERS[0], image_path, facts)
        constant = next(e for e in evidence if e.kind == "constant")
        assert constant.version.split(".")[0] == major
