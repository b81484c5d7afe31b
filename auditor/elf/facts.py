"""``elf_facts``: what a shared library says about itself, as JSON-able facts.

Structure (class, machine, OS ABI, type), the dynamic section (SONAME, NEEDED, RPATH, RUNPATH;
``flags_1``, the DT_FLAGS_1 bits, when set), the program interpreter (``interp``, PT_INTERP, when
there is one) and the version evidence a caller asks for in an :class:`Interest`: getter
functions decoded from their machine code, data symbols read from the file, version strings in
read-only data. Nothing is executed and the file is never read whole: every read is a bounded
seek and read.

Malformed parts are listed under ``problems`` and the rest is still read; a file that is not ELF
at all raises :class:`ElfError` (the rootfs pass records it as the file's ``error``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from auditor.elf.constants import DECODERS, call_targets, decode_function
from auditor.elf.dynamic import Symbol, read_dynamic, read_interp, read_symbols
from auditor.elf.layout import ElfError, ElfLayout
from auditor.elf.strings import search_strings

SCHEMA = 2  # 2: flags_1 and interp
MAX_FUNCTION_BYTES = 4096  # of one getter's code
UNSIZED_FUNCTION_BYTES = 64  # when st_size is 0
CALLEE_BYTES = 64  # read at each followed call target
MAX_CALLEES = 64
POINTEE_BYTES = 16  # read at an address a getter returns (4 words)
MAX_ADDRESSES = 4


@dataclass(frozen=True)
class Interest:
    """What to look for besides structure: getter functions to decode (``follow``: and the
    functions they call directly), data symbols to read, and byte patterns to search for."""

    functions: frozenset[str] = frozenset()
    follow: frozenset[str] = frozenset()
    data: frozenset[str] = frozenset()
    patterns: Mapping[str, re.Pattern[bytes]] = field(default_factory=dict, hash=False)


NOTHING = Interest()


def elf_facts(stream: BinaryIO, size: int, interest: Interest = NOTHING) -> dict[str, Any]:
    """The facts of one ELF file (``stream`` is seekable and ``size`` bytes long)."""
    layout = ElfLayout(stream, size)
    facts: dict[str, Any] = {
        "schema": SCHEMA,
        "class": layout.elfclass,
        "endian": "little" if layout.little_endian else "big",
        "machine": layout.machine,
        "e_machine": layout.e_machine,
        "osabi": layout.osabi,
        "type": layout.type,
    }
    dynamic = read_dynamic(layout)
    facts.update(soname=dynamic.soname, needed=list(dynamic.needed),
                 rpath=list(dynamic.rpath) if dynamic.rpath is not None else None,
                 runpath=list(dynamic.runpath) if dynamic.runpath is not None else None)
    if dynamic.flags_1:
        facts["flags_1"] = dynamic.flags_1
    interp = read_interp(layout)
    if interp is not None:
        facts["interp"] = interp
    symbols = read_symbols(layout, interest.functions | interest.data)
    described = {name: _describe(layout, symbol, interest) for name, symbol in sorted(symbols.items())}
    if described:
        facts["symbols"] = described
    strings = search_strings(layout, interest.patterns)
    if strings:
        facts["strings"] = strings
    if layout.problems:
        facts["problems"] = list(dict.fromkeys(layout.problems))[:32]
    return facts


def _describe(layout: ElfLayout, symbol: Symbol, interest: Interest) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": symbol.kind, "size": symbol.size}
    if symbol.name in interest.functions and symbol.kind != "object":
        out.update(_function(layout, symbol, symbol.name in interest.follow))
    elif symbol.name in interest.data:
        out.update(_datum(layout, symbol.value, symbol.size))
    return out


def _function(layout: ElfLayout, symbol: Symbol, follow: bool) -> dict[str, Any]:
    if layout.machine not in DECODERS or not layout.little_endian or layout.elfclass != 64:
        layout.problems.append(f"no instruction decoder for {layout.elfclass}-bit "
                               f"{'little' if layout.little_endian else 'big'}-endian "
                               f"{layout.machine}: getters not read")
        return {}
    length = min(symbol.size or UNSIZED_FUNCTION_BYTES, MAX_FUNCTION_BYTES)
    code = layout.read_vaddr(symbol.value, length)
    if not code:
        return {"unreadable": "code not in the file"}
    out: dict[str, Any] = _json_keys(decode_function(layout.machine, code, symbol.value))
    addresses = out.get("addresses", [])[:MAX_ADDRESSES]
    if addresses:
        out["pointees"] = [_words(layout, layout.read_vaddr(a, POINTEE_BYTES)) for a in addresses]
    if follow:
        callees = _callee_stores(layout, call_targets(layout.machine, code, symbol.value))
        if callees:
            out["callee_stores"] = callees
    return out


def _callee_stores(layout: ElfLayout, targets: Collection[int]) -> dict[str, list[int]]:
    merged: dict[str, list[int]] = {}
    for target in list(targets)[:MAX_CALLEES]:
        if not layout.is_executable(target):
            continue
        code = layout.read_vaddr(target, CALLEE_BYTES)
        stores = decode_function(layout.machine, code, target).get("stores") or {}
        for arg, values in stores.items():  # type: ignore[union-attr]
            bucket = merged.setdefault(str(arg), [])
            bucket.extend(v for v in values if v not in bucket)
    return merged


def _datum(layout: ElfLayout, vaddr: int, size: int) -> dict[str, Any]:
    if layout.vaddr_to_offset(vaddr, 4) is not None:
        return {"u32": _words(layout, layout.read_vaddr(vaddr, 4))[0]}
    if layout.in_bss(vaddr):
        return {"bss": True}  # zero-filled at load: its value is set at run time, if ever
    return {"unreadable": "not in the file"}


def _words(layout: ElfLayout, data: bytes) -> list[int]:
    order = "little" if layout.little_endian else "big"
    return [int.from_bytes(data[i:i + 4], order) for i in range(0, len(data) - 3, 4)]  # type: ignore[arg-type]


def _json_keys(decoded: dict[str, object]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in decoded.items():
        out[key] = {str(k): v for k, v in value.items()} if isinstance(value, dict) else value
    return out


__all__ = ["ElfError", "Interest", "elf_facts"]
