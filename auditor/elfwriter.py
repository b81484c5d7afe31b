"""A minimal ELF shared-object writer, for tests and for images built where no compiler is.

``build_shared_object`` lays out a little-endian ELF64 ``ET_DYN`` the way a linker would, in
small: a read-only segment (``.hash``, ``.dynsym``, ``.dynstr``, ``.rodata``), an executable one
(``.text``), a writable one (``.dynamic``, then ``.bss``), ``PT_DYNAMIC``, and section headers.
Getters are real instructions: on x86-64 ``mov eax, imm32; ret`` (or ``mov dword [rdi], imm32;
xor eax, eax; ret`` for one storing through its argument), on aarch64 ``movz``/``movk w0`` and
``ret`` (or ``str w1, [x0]``). binutils' ``readelf -a`` and pyelftools read the result.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

PAGE = 0x1000
MACHINES = {"x86_64": 62, "aarch64": 183}
ET_DYN, PT_LOAD, PT_DYNAMIC = 3, 1, 2
PF_X, PF_W, PF_R = 1, 2, 4
SHT_PROGBITS, SHT_STRTAB, SHT_HASH, SHT_DYNAMIC, SHT_NOBITS, SHT_DYNSYM = 1, 3, 5, 6, 8, 11
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4
STB_GLOBAL, STT_OBJECT, STT_FUNC = 1, 1, 2
DT = {"NULL": 0, "NEEDED": 1, "HASH": 4, "STRTAB": 5, "SYMTAB": 6, "STRSZ": 10, "SYMENT": 11,
      "SONAME": 14, "RPATH": 15, "RUNPATH": 29}


def x86_64_returning(value: int) -> bytes:
    return b"\xb8" + struct.pack("<I", value & 0xFFFFFFFF) + b"\xc3"


def x86_64_storing(value: int) -> bytes:
    return b"\xc7\x07" + struct.pack("<I", value & 0xFFFFFFFF) + b"\x31\xc0\xc3"


def _a64_mov(register: int, value: int) -> list[int]:
    words = [0x52800000 | (value & 0xFFFF) << 5 | register]  # movz wR, #lo
    if value >> 16 & 0xFFFF:
        words.append(0x72A00000 | (value >> 16 & 0xFFFF) << 5 | register)  # movk wR, #hi, lsl 16
    return words


def aarch64_returning(value: int) -> bytes:
    return b"".join(struct.pack("<I", w) for w in [*_a64_mov(0, value), 0xD65F03C0])


def aarch64_storing(value: int) -> bytes:
    words = [*_a64_mov(1, value), 0xB9000001, 0x52800000, 0xD65F03C0]  # str w1,[x0]; mov w0,#0
    return b"".join(struct.pack("<I", w) for w in words)


CODE = {"x86_64": (x86_64_returning, x86_64_storing),
        "aarch64": (aarch64_returning, aarch64_storing)}


@dataclass
class _Strings:
    data: bytearray = field(default_factory=lambda: bytearray(b"\0"))
    offsets: dict[str, int] = field(default_factory=dict)

    def add(self, text: str) -> int:
        if text not in self.offsets:
            self.offsets[text] = len(self.data)
            self.data += text.encode() + b"\0"
        return self.offsets[text]


def _align(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def _sysv_hash(name: bytes) -> int:
    h = 0
    for c in name:
        h = (h << 4) + c
        g = h & 0xF0000000
        if g:
            h ^= g >> 24
        h &= ~g
    return h


def _hash_section(names: Sequence[str]) -> bytes:
    """A SysV ``.hash`` (the loader's symbol index): one bucket per symbol, chained."""
    count = len(names) + 1
    nbucket = max(1, len(names))
    buckets, chains = [0] * nbucket, [0] * count
    for index, name in enumerate(names, start=1):
        b = _sysv_hash(name.encode()) % nbucket
        chains[index], buckets[b] = buckets[b], index
    return struct.pack(f"<II{nbucket}I{count}I", nbucket, count, *buckets, *chains)


def build_shared_object(soname: str, *, machine: str = "x86_64",
                        functions: Mapping[str, int] | None = None,
                        stores: Mapping[str, int] | None = None,
                        data: Mapping[str, int] | None = None,
                        strings: Sequence[str] = (), needed: Sequence[str] = (),
                        rpath: str | None = None, runpath: str | None = None,
                        bss: Sequence[str] = ()) -> bytes:
    """The bytes of a shared object named ``soname``. ``functions`` return their constant,
    ``stores`` write theirs through their first argument (``int f(int *out)``), ``data`` are
    exported ``const unsigned`` values, ``bss`` zero-initialised ones, ``strings`` go in
    ``.rodata``."""
    if machine not in MACHINES:
        raise ValueError(f"unsupported machine {machine!r}: one of {sorted(MACHINES)}")
    returning, storing = CODE[machine]
    functions, stores, data = dict(functions or {}), dict(stores or {}), dict(data or {})

    # .text and .rodata contents, with each symbol's offset inside its section
    text, func_offsets = bytearray(), {}
    for name, code in [*((n, returning(v)) for n, v in functions.items()),
                       *((n, storing(v)) for n, v in stores.items())]:
        func_offsets[name] = (len(text), len(code))
        text += code + b"\0" * (_align(len(code), 16) - len(code))
    rodata, data_offsets = bytearray(), {}
    for name, value in data.items():
        data_offsets[name] = len(rodata)
        rodata += struct.pack("<I", value & 0xFFFFFFFF)
    for s in strings:
        rodata += s.encode() + b"\0"

    dynstr = _Strings()
    dyn_entries = [("NEEDED", dynstr.add(n)) for n in needed]
    dyn_entries.append(("SONAME", dynstr.add(soname)))
    if rpath is not None:
        dyn_entries.append(("RPATH", dynstr.add(rpath)))
    if runpath is not None:
        dyn_entries.append(("RUNPATH", dynstr.add(runpath)))
    symbol_names = [*func_offsets, *data_offsets, *bss]
    for name in symbol_names:
        dynstr.add(name)

    # file layout: [ehdr phdrs .hash .dynsym .dynstr .rodata] [.text] [.dynamic] .shstrtab shdrs
    phnum = 4
    hash_off = 64 + 56 * phnum
    hash_data = _hash_section(symbol_names)
    dynsym_off = _align(hash_off + len(hash_data), 8)
    dynsym_size = 24 * (len(symbol_names) + 1)
    dynstr_off = dynsym_off + dynsym_size
    rodata_off = _align(dynstr_off + len(dynstr.data), 16)
    text_off = _align(rodata_off + len(rodata), PAGE)
    dynamic_off = _align(text_off + len(text), PAGE)
    dynamic_size = 16 * (len(dyn_entries) + 7)
    bss_off = _align(dynamic_off + dynamic_size, 16)
    bss_size = 4 * len(bss)
    shstr = _Strings()
    sections = [  # name, type, flags, offset, size, link, info, align, entsize
        (".hash", SHT_HASH, SHF_ALLOC, hash_off, len(hash_data), 2, 0, 8, 4),
        (".dynsym", SHT_DYNSYM, SHF_ALLOC, dynsym_off, dynsym_size, 3, 1, 8, 24),
        (".dynstr", SHT_STRTAB, SHF_ALLOC, dynstr_off, len(dynstr.data), 0, 0, 1, 0),
        (".rodata", SHT_PROGBITS, SHF_ALLOC, rodata_off, len(rodata), 0, 0, 16, 0),
        (".text", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, text_off, len(text), 0, 0, 16, 0),
        (".dynamic", SHT_DYNAMIC, SHF_ALLOC | SHF_WRITE, dynamic_off, dynamic_size, 3, 0, 8, 16),
        (".bss", SHT_NOBITS, SHF_ALLOC | SHF_WRITE, bss_off, bss_size, 0, 0, 4, 0),
        (".shstrtab", SHT_STRTAB, 0, 0, 0, 0, 0, 1, 0),
    ]
    for name, *_ in sections:
        shstr.add(name)
    shstrtab_off = dynamic_off + dynamic_size
    shoff = _align(shstrtab_off + len(shstr.data), 8)
    sections[-1] = (".shstrtab", SHT_STRTAB, 0, shstrtab_off, len(shstr.data), 0, 0, 1, 0)
    index = {name: i + 1 for i, (name, *_) in enumerate(sections)}

    # .dynsym
    symbols = bytearray(24)
    for name in symbol_names:
        if name in func_offsets:
            offset, size = func_offsets[name]
            entry = (text_off + offset, size, STT_FUNC, index[".text"])
        elif name in data_offsets:
            entry = (rodata_off + data_offsets[name], 4, STT_OBJECT, index[".rodata"])
        else:
            entry = (bss_off + 4 * list(bss).index(name), 4, STT_OBJECT, index[".bss"])
        value, size, kind, shndx = entry
        symbols += struct.pack("<IBBHQQ", dynstr.offsets[name], STB_GLOBAL << 4 | kind, 0, shndx,
                               value, size)

    # .dynamic (vaddr == file offset throughout)
    tags = [*dyn_entries, ("HASH", hash_off), ("STRTAB", dynstr_off), ("SYMTAB", dynsym_off),
            ("STRSZ", len(dynstr.data)), ("SYMENT", 24), ("NULL", 0), ("NULL", 0)]
    dynamic = b"".join(struct.pack("<qQ", DT[tag], value) for tag, value in tags)

    out = bytearray(shoff + 64 * (len(sections) + 1))
    e_ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # ELF64, little-endian, SysV
    out[0:64] = e_ident + struct.pack("<HHIQQQIHHHHHH", ET_DYN, MACHINES[machine], 1, 0, 64,
                                      shoff, 0, 64, 56, phnum, 64, len(sections) + 1,
                                      index[".shstrtab"])
    phdrs = [
        (PT_LOAD, PF_R, 0, rodata_off + len(rodata), rodata_off + len(rodata)),
        (PT_LOAD, PF_R | PF_X, text_off, len(text), len(text)),
        (PT_LOAD, PF_R | PF_W, dynamic_off, dynamic_size,
         bss_off + bss_size - dynamic_off if bss else dynamic_size),
        (PT_DYNAMIC, PF_R | PF_W, dynamic_off, dynamic_size, dynamic_size),
    ]
    for i, (ptype, flags, offset, filesz, memsz) in enumerate(phdrs):
        align = 8 if ptype == PT_DYNAMIC else PAGE
        out[64 + 56 * i:64 + 56 * (i + 1)] = struct.pack(
            "<IIQQQQQQ", ptype, flags, offset, offset, offset, filesz, memsz, align)
    for offset, blob in ((hash_off, hash_data), (dynsym_off, symbols), (dynstr_off, dynstr.data),
                         (rodata_off, rodata), (text_off, text), (dynamic_off, dynamic),
                         (shstrtab_off, shstr.data)):
        out[offset:offset + len(blob)] = blob
    for i, (name, stype, flags, offset, size, link, info, align, entsize) in enumerate(sections):
        addr = offset if flags & SHF_ALLOC else 0
        out[shoff + 64 * (i + 1):shoff + 64 * (i + 2)] = struct.pack(
            "<IIQQQQIIQQ", shstr.offsets[name], stype, flags, addr, offset, size, link, info,
            align, entsize)
    return bytes(out)


__all__ = ["build_shared_object"]
