"""Hostile and broken files: elf_facts stays bounded, says what was wrong, and the audit goes on
(a file that cannot be read is an Unknown tied to its path and layer)."""

from __future__ import annotations

import io
import random
import struct
import time
from pathlib import Path

import pytest

from auditor.audit import AuditOptions, audit
from auditor.elf import ElfError, elf_facts
from auditor.elfwriter import build_shared_object
from auditor.inventory.numeric import INTEREST, analyze_library
from auditor.testing import LayerBuilder, build_oci_layout

EM_PPC64 = 21


def good() -> bytes:
    return build_shared_object("libcudnn_ops_infer.so.8", functions={"cudnnGetVersion": 8906},
                               data={"cudnn_ops_infer_version": 8 << 16 | 9 << 8 | 6},
                               strings=["NCCL version 2.18.3+cuda12.2"])


def sections(data: bytes) -> dict[str, int]:
    """Section name -> offset of its header in ``data``."""
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shnum, shstrndx = struct.unpack_from("<HH", data, 0x3C)
    names_off, = struct.unpack_from("<Q", data, shoff + 64 * shstrndx + 0x18)
    out = {}
    for i in range(shnum):
        header = shoff + 64 * i
        name, = struct.unpack_from("<I", data, header)
        end = data.index(b"\0", names_off + name)
        out[data[names_off + name:end].decode()] = header
    return out


def patched(data: bytes, section: str, field_offset: int, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into("<Q", out, sections(data)[section] + field_offset, value)
    return bytes(out)


SH_OFFSET, SH_SIZE = 0x18, 0x20


def garbage_tables() -> bytes:
    """A valid ELF header over program and section header tables of random bytes."""
    data = bytearray(good())
    rng = random.Random(4)
    shoff, = struct.unpack_from("<Q", data, 0x28)
    data[64:64 + 56 * 4] = rng.randbytes(56 * 4)
    data[shoff:] = rng.randbytes(len(data) - shoff)
    return bytes(data)


def other_machine() -> bytes:
    data = bytearray(good())
    struct.pack_into("<H", data, 0x12, EM_PPC64)
    return bytes(data)


def huge_claims() -> bytes:
    """Headers claiming terabytes, offsets past the end, 2^50 symbols."""
    data = patched(good(), ".rodata", SH_SIZE, 1 << 40)
    data = patched(data, ".dynsym", SH_SIZE, 24 << 50)
    data = patched(data, ".text", SH_OFFSET, 1 << 62)
    data = patched(data, ".shstrtab", SH_SIZE, 1 << 60)
    out = bytearray(data)
    struct.pack_into("<QQQQ", out, 64 + 56 + 8, 1 << 62, 0x1000, 0x1000, 1 << 40)  # the code segment
    return bytes(out)


def facts_of(data: bytes) -> dict:
    return elf_facts(io.BytesIO(data), len(data), INTEREST)


def test_not_elf_and_cut_headers_raise() -> None:
    with pytest.raises(ElfError, match="not an ELF file"):
        facts_of(b"!<arch>\n" + b"\0" * 100)
    with pytest.raises(ElfError, match="header"):
        facts_of(good()[:20])
    with pytest.raises(ElfError):
        facts_of(b"")


def test_garbage_tables_are_problems_not_crashes() -> None:
    facts = facts_of(garbage_tables())
    assert facts["machine"] == "x86_64" and facts["problems"]
    assert "symbols" not in facts


def test_truncated_file_reads_what_is_there() -> None:
    data = good()
    text_offset = 0x1000  # the writer puts .text on the second page
    facts = facts_of(data[:text_offset + 2])  # the getter's first bytes only
    assert facts["soname"] is None or facts["soname"] == "libcudnn_ops_infer.so.8"
    assert "returns" not in facts.get("symbols", {}).get("cudnnGetVersion", {})
    assert any("past the end" in p for p in facts["problems"])
    assert facts_of(data[:300])["problems"]  # cut inside the tables


def test_other_machine_is_recorded_and_its_data_still_read() -> None:
    facts = facts_of(other_machine())
    assert facts["machine"] == "ppc64" and facts["e_machine"] == "EM_PPC64"
    assert facts["symbols"]["cudnn_ops_infer_version"]["u32"] == 0x080906
    assert "returns" not in facts["symbols"]["cudnnGetVersion"]
    assert any("no instruction decoder" in p for p in facts["problems"])


def test_huge_claims_stay_bounded() -> None:
    started = time.monotonic()
    facts = facts_of(huge_claims())
    assert time.monotonic() - started < 2
    problems = " ".join(facts["problems"])
    assert "claims" in problems and "symbols" in problems
    assert "returns" not in facts["symbols"].get("cudnnGetVersion", {})  # code not in the file
    assert facts["strings"]  # .rodata read up to the end of the file


def test_more_tables_than_any_library_has() -> None:
    data = bytearray(good())
    struct.pack_into("<H", data, 0x38, 0xFFFF)  # e_phnum: PN_XNUM
    struct.pack_into("<H", data, 0x3C, 0xFF00)  # e_shnum
    facts = facts_of(bytes(data))
    assert any("program header table not read" in p for p in facts["problems"])
    assert any("section header table not read" in p for p in facts["problems"])


def test_an_image_of_bad_libraries_is_audited(tmp_path: Path) -> None:
    lib = "usr/lib/x86_64-linux-gnu"
    layer = LayerBuilder().dir("usr").dir("usr/lib").dir(lib)
    files = {
        "libcudnn_ops_infer.so.8": good(),
        "libcudnn_adv_infer.so.8": garbage_tables(),
        "libcudnn_cnn_infer.so.8": good()[:300],
        "libcudnn_ops_train.so.8": other_machine(),
        "libcudnn_adv_train.so.8": huge_claims(),
        "libcudnn.so.8": b"this is not an ELF file, whatever its name says\n",
    }
    for name, data in files.items():
        layer.file(f"{lib}/{name}", data, 0o755)
    build_oci_layout(tmp_path / "oci", [LayerBuilder().dir("etc"), layer], tag="t")
    result = audit(f"oci:{tmp_path / 'oci'}:t", AuditOptions(cache_dir=str(tmp_path / "cache")))
    inventory = result.inventory
    unknowns = {u.path.rpartition("/")[2]: u for u in inventory.unknowns if u.cataloger == "numeric"}
    assert set(unknowns) == {"libcudnn.so.8", "libcudnn_adv_infer.so.8", "libcudnn_cnn_infer.so.8",
                             "libcudnn_ops_train.so.8", "libcudnn_adv_train.so.8"}
    assert all(u.layer == 1 for u in unknowns.values())
    assert "not an ELF file" in unknowns["libcudnn.so.8"].reason
    libraries = {lib.path.rpartition("/")[2]: lib for lib in inventory.libraries}
    assert "libcudnn.so.8" not in libraries  # not a library at all
    assert libraries["libcudnn_ops_infer.so.8"].version == "8.9.6"
    other = libraries["libcudnn_ops_train.so.8"]
    assert other.machine == "ppc64" and other.component == "cudnn" and other.version == "8.9.6"
    assert libraries["libcudnn_adv_train.so.8"].component == "cudnn"


def test_the_analyzer_is_what_the_pass_runs() -> None:
    data = good()
    assert analyze_library(io.BytesIO(data), len(data)) == facts_of(data)
