"""The dynamic section (SONAME, NEEDED, RPATH, RUNPATH, FLAGS_1), PT_INTERP and the dynamic
symbol table.

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
MAX_STRING_BYTES = 4096  # one SONAME or NEEDED string; PT_INTERP
MAX_PATH_LIST_BYTES = 64 << 10  # one RPATH or RUNPATH string

DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_SONAME, DT_RPATH, DT_RUNPATH = 0, 1, 5, 10, 14, 15, 29
DT_FLAGS_1 = 0x6FFFFFFB
DF_1_NODEFLIB = 0x800
PT_INTERP = 3
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
    flags_1: int = 0


TAG_NAMES = {DT_NEEDED: "DT_NEEDED", DT_SONAME: "DT_SONAME", DT_RPATH: "DT_RPATH",
             DT_RUNPATH: "DT_RUNPATH"}


def read_dynamic(layout: ElfLayout) -> Dynamic:
    """The loader's view: the PT_DYNAMIC segment, strings through DT_STRTAB (section headers
    are optional at run time; fall back to them only when the segment is missing).

    A string the loader could not read as the file says (offset outside DT_STRSZ or the file,
    no NUL before the end of the table) is left out, or cut, and named in ``problems``."""
    entries = _dynamic_entries(layout)
    strtab_addr = next((v for t, v in entries if t == DT_STRTAB), None)
    strsz = next((v for t, v in entries if t == DT_STRSZ), None)
    base = layout.vaddr_to_offset(strtab_addr) if strtab_addr is not None else None
    if strtab_addr is not None and base is None:
        layout.problems.append("DT_STRTAB points outside the file")
    elif strtab_addr is None and any(t in TAG_NAMES for t, _ in entries):
        layout.problems.append("DT_STRTAB missing: names in the dynamic section not read")

    def string(tag: int, offset: int, limit: int) -> str | None:
        what = TAG_NAMES[tag]
        if base is None:
            return None
        if offset < 0 or (strsz is not None and offset >= strsz) or base + offset >= layout.size:
            layout.problems.append(f"{what} string offset {offset:#x} outside the string table")
            return None
        room = min(limit, strsz - offset if strsz is not None else limit)
        data = layout.read(base + offset, room)
        end = data.find(b"\0")
        if end < 0:
            layout.problems.append(f"{what} string at {offset:#x} has no NUL within "
                                   f"{len(data)} bytes; cut there")
            end = len(data)
        return data[:end].decode("utf-8", "replace")

    def strings(tag: int, limit: int = MAX_STRING_BYTES) -> list[str]:
        offsets = [v for t, v in entries if t == tag]
        if len(offsets) > MAX_LIST:
            layout.problems.append(f"{len(offsets)} {TAG_NAMES[tag]} entries; "
                                   f"first {MAX_LIST} kept")
        values = (string(tag, v, limit) for v in offsets[:MAX_LIST])
        return [v for v in values if v is not None]

    def paths(tag: int) -> tuple[str, ...] | None:
        values = strings(tag, MAX_PATH_LIST_BYTES)
        if not values:
            return None
        parts = [p for value in values for p in value.split(":")]
        if len(parts) > MAX_LIST:
            layout.problems.append(f"{TAG_NAMES[tag]} of {len(parts)} directories; "
                                   f"first {MAX_LIST} kept")
        return tuple(parts[:MAX_LIST])

    sonames = strings(DT_SONAME)
    flags_1 = next((v for t, v in entries if t == DT_FLAGS_1), 0)
    return Dynamic(sonames[0] if sonames and sonames[0] else None, tuple(strings(DT_NEEDED)),
                   paths(DT_RPATH), paths(DT_RUNPATH), flags_1)


def read_interp(layout: ElfLayout) -> str | None:
    """The PT_INTERP path (the program interpreter an executable asks for), if any. The program
    header table is read again here for its types (``layout.segments`` keeps only those
    other readers need), only when the layout found it sane."""
    if not layout.segments:
        return None
    header = layout.elf.header
    count, entsize = int(header["e_phnum"]), int(header["e_phentsize"])
    fmt = _fmt(layout, "IIQQQQ" if layout.elfclass == 64 else "IIIIII")
    table = layout.read(int(header["e_phoff"]), count * entsize)
    for start in range(0, len(table) - struct.calcsize(fmt) + 1, entsize):
        fields = struct.unpack_from(fmt, table, start)
        if fields[0] != PT_INTERP:
            continue
        offset, filesz = (fields[2], fields[5]) if layout.elfclass == 64 else (fields[1], fields[4])
        data = layout.read(offset, min(filesz, MAX_STRING_BYTES))
        end = data.find(b"\0")
        if end < 0 or not data:
            layout.problems.append("PT_INTERP is not a NUL-terminated path inside the file")
            return None
        return data[:end].decode("utf-8", "replace")
    return None


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

