"""The pure-Python ELF writer: binutils and pyelftools accept its output, and elf_facts reads the
getters back as real instructions."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from auditor.elf import Interest, elf_facts
from auditor.elfwriter import build_shared_object

INTEREST = Interest(functions=frozenset({"cudnnGetVersion", "ncclGetVersion"}),
                    data=frozenset({"cudnn_graph_version", "cudnn_late_version"}),
                    patterns={"nccl": re.compile(rb"NCCL version \d+\.\d+\.\d+[^\x00\s]*")})


def build(machine: str) -> bytes:
    return build_shared_object(
        "libcudnn.so.8", machine=machine, functions={"cudnnGetVersion": 8100},
        stores={"ncclGetVersion": 21803}, data={"cudnn_graph_version": 9 << 16 | 1 << 8},
        strings=["NCCL version 2.18.3+cuda12.2"], needed=["libc.so.6", "libm.so.6"],
        rpath="$ORIGIN", runpath="$ORIGIN/../lib", bss=["cudnn_late_version"])


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_readelf_accepts_it(tmp_path: Path, machine: str) -> None:
    readelf = shutil.which("readelf")
    assert readelf, "binutils' readelf is needed (installed with gcc)"
    path = tmp_path / "libcudnn.so.8"
    path.write_bytes(build(machine))
    run = subprocess.run([readelf, "-a", "-W", str(path)], capture_output=True, text=True,
                         check=True)
    assert "warning" not in run.stderr.lower() and "error" not in run.stderr.lower(), run.stderr
    out = run.stdout
    assert "DYN (Shared object file)" in out
    assert ("AArch64" if machine == "aarch64" else "X86-64") in out
    assert "Library soname: [libcudnn.so.8]" in out
    assert "Shared library: [libm.so.6]" in out
    assert "Library rpath: [$ORIGIN]" in out and "Library runpath: [$ORIGIN/../lib]" in out
    for name in ("cudnnGetVersion", "ncclGetVersion", "cudnn_graph_version"):
        assert re.search(rf"GLOBAL\s+DEFAULT\s+\d+ {name}$", out, re.M), name


def test_objdump_sees_the_instructions(tmp_path: Path) -> None:
    path = tmp_path / "lib.so"
    path.write_bytes(build("x86_64"))
    out = subprocess.run(["objdump", "-d", str(path)], capture_output=True, text=True,
                         check=True).stdout
    assert re.search(r"mov\s+\$0x1fa4,%eax", out) and re.search(r"movl\s+\$0x552b,\(%rdi\)", out)


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_pyelftools_and_elf_facts_read_it(machine: str) -> None:
    data = build(machine)
    elf = ELFFile(io.BytesIO(data))
    assert elf["e_type"] == "ET_DYN" and elf.get_section_by_name(".dynsym").num_symbols() == 5
    facts = elf_facts(io.BytesIO(data), len(data), INTEREST)
    assert facts["machine"] == machine and facts["class"] == 64 and facts["type"] == "ET_DYN"
    assert facts["soname"] == "libcudnn.so.8"
    assert facts["needed"] == ["libc.so.6", "libm.so.6"]
    assert facts["rpath"] == ["$ORIGIN"] and facts["runpath"] == ["$ORIGIN/../lib"]
    symbols = facts["symbols"]
    assert symbols["cudnnGetVersion"]["returns"] == [8100]
    assert symbols["ncclGetVersion"]["stores"] == {"0": [21803]}
    assert symbols["cudnn_graph_version"]["u32"] == 0x090100
    assert symbols["cudnn_late_version"] == {"kind": "object", "size": 4, "bss": True}
    assert facts["strings"] == {"nccl": {"NCCL version 2.18.3+cuda12.2": 1}}
    assert "problems" not in facts


def test_large_values_and_unknown_machines() -> None:
    data = build_shared_object("libx.so.1", machine="aarch64", functions={"f": 0xDEADBEEF})
    facts = elf_facts(io.BytesIO(data), len(data), Interest(functions=frozenset({"f"})))
    assert facts["symbols"]["f"]["returns"] == [0xDEADBEEF]
    with pytest.raises(ValueError, match="unsupported machine"):
        build_shared_object("libx.so.1", machine="riscv")
