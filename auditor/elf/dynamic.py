"""The dynamic section (SONAME, NEEDED, RPATH, RUNPATH) and the dynamic symbol table.

Tables are read as bytes with caps and unpacked with :mod:`struct` (a library such as
``libcudnn_cnn_infer.so.8`` exports 40,000 symbols: parsing each through construct takes seconds).
"""

from __future__ import annotations

import struct
from collections.abc import Collection
from dataclasses import dataclass

from auditor.elf.layout import PT_DYNAMIC, ElfLayout

MAX_DYNAMIC_ENTRIES = 4096
MAX_STRTAB_BYTES = 64 << 20
MAX_SYMBOLS = 500_000
MAX_LIST = 256  # NEEDED entries, RPATH parts kept
MAX_STRING_BYTES = 4096  # one SONAME, NEEDED or RPATH string

DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_SONAME, DT_RPATH, DT_RUNPATH = 0, 1, 5, 10, 14, 15, 29
STT_OBJECT, STT_FUNC = 1, 2
STB_GLOBAL, STB_WEAK = 1, 2
SHN_UNDEF = 0
SHT_DYNSYM = 11


@dataclass(frozen=True)
class Symbol:
    name: str
    kind: str  # func, object, other
    value: int
    size: int
    section: int


@dataclass(frozen=True)
class Dynamic:
    soname: str | None
    needed: tuple[str, ...]
    rpath: tuple[str, ...] | None
    runpath: tuple[str, ...] | None


def read_dynamic(layout: ElfLayout) -> Dynamic:
    """The loader's view: the PT_DYNAMIC segment, strings through DT_STRTAB (section headers
    are optional at run time; fall back to them only when the segment is missing)."""
    entries = _dynamic_entries(layout)
    strtab_addr = next((v for t, v in entries if t == DT_STRTAB), None)
    strsz = next((v for t, v in entries if t == DT_STRSZ), None)
    base = layout.vaddr_to_offset(strtab_addr) if strtab_addr is not None else None
    if strtab_addr is not None and base is None:
        layout.problems.append("DT_STRTAB points outside the file")

    def string(offset: int) -> str:
        if base is None or offset < 0 or (strsz is not None and offset >= strsz):
            return ""
        return _cstring(layout.read(base + offset, MAX_STRING_BYTES), 0)

    def strings(tag: int) -> list[str]:
        return [string(v) for t, v in entries if t == tag][:MAX_LIST]

    def paths(tag: int) -> tuple[str, ...] | None:
        values = strings(tag)
        if not values:
            return None
        return tuple(p for value in values for p in value.split(":"))[:MAX_LIST]

    sonames = strings(DT_SONAME)
    return Dynamic(sonames[0] if sonames and sonames[0] else None, tuple(strings(DT_NEEDED)),
                   paths(DT_RPATH), paths(DT_RUNPATH))


def _dynamic_entries(layout: ElfLayout) -> list[tuple[int, int]]:
    segment = next((s for s in layout.segments if s.type == PT_DYNAMIC), None)
    if segment is not None:
        offset, size = segment.offset, segment.filesz
    else:
        section = layout.section(".dynamic")
        if section is None:
            return []
        offset, size = section.offset, section.size
    fmt = _fmt(layout, "qQ" if layout.elfclass == 64 else "iI")
    entsize = struct.calcsize(fmt)
    count = min(size // entsize, MAX_DYNAMIC_ENTRIES)
    data = layout.read(offset, count * entsize)
    if len(data) < count * entsize:
        layout.problems.append("dynamic section runs past the end of the file")
    out = []
    for tag, value in struct.iter_unpack(fmt, data[:len(data) - len(data) % entsize]):
        if tag == DT_NULL:
            break
        out.append((tag, value))
    return out


def read_symbols(layout: ElfLayout, wanted: Collection[str]) -> dict[str, Symbol]:
    """The defined dynamic symbols named in ``wanted`` (the first definition of each)."""
    if not wanted:
        return {}
    section = next((s for s in layout.sections if s.type == SHT_DYNSYM), None)
    if section is None:
        if layout.sections:
            layout.problems.append("no dynamic symbol table")
        else:
            layout.problems.append("no section headers: dynamic symbols not read")
        return {}
    if not 0 <= section.link < len(layout.sections):
        layout.problems.append("dynamic symbol table names no string table")
        return {}
    strings = layout.sections[section.link]
    strtab = layout.read(strings.offset, min(strings.size, MAX_STRTAB_BYTES))
    fmt = _fmt(layout, "IBBHQQ" if layout.elfclass == 64 else "IIIBBH")
    entsize = struct.calcsize(fmt)
    count = section.size // entsize
    if count > MAX_SYMBOLS:
        layout.problems.append(f"dynamic symbol table claims {count} symbols; read {MAX_SYMBOLS}")
        count = MAX_SYMBOLS
    data = layout.read(section.offset, count * entsize)
    if len(data) < count * entsize:
        layout.problems.append("dynamic symbol table runs past the end of the file")
    names = {name.encode(): name for name in wanted}
    found: dict[str, Symbol] = {}
    for entry in struct.iter_unpack(fmt, data[:len(data) - len(data) % entsize]):
        if layout.elfclass == 64:
            st_name, st_info, _other, st_shndx, st_value, st_size = entry
        else:
            st_name, st_value, st_size, st_info, _other, st_shndx = entry
        if st_shndx == SHN_UNDEF or (st_info >> 4) not in (STB_GLOBAL, STB_WEAK):
            continue
        end = strtab.find(b"\0", st_name) if st_name < len(strtab) else -1
        name = names.get(strtab[st_name:end]) if end >= 0 else None
        if name is None or name in found:
            continue
        kind = {STT_FUNC: "func", STT_OBJECT: "object"}.get(st_info & 0xF, "other")
        found[name] = Symbol(name, kind, st_value, st_size, st_shndx)
        if len(found) == len(names):
            break
    return found


def _fmt(layout: ElfLayout, codes: str) -> str:
    return ("<" if layout.little_endian else ">") + codes


def _cstring(table: bytes, offset: int) -> str:
    if offset < 0 or offset >= len(table):
        return ""
    end = table.find(b"\0", offset)
    return table[offset:end if end >= 0 else len(table)].decode("utf-8", "replace")
