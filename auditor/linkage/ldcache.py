"""``/etc/ld.so.cache``, the file ldconfig writes and ld.so reads: parsed defensively.

Formats (glibc ``sysdeps/generic/dl-cache.h``): the new one, ``glibc-ld.so.cache`` + ``1.1``, and
the old ``ld.so-1.7.0`` one, which older ldconfigs write before the new table (string offsets then
count from the start of the new header). Every offset is checked; counts are bounded."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

OLD_MAGIC = b"ld.so-1.7.0"
NEW_MAGIC = b"glibc-ld.so.cache1.1"
NEW_HEADER = struct.Struct("<20sIIB3xI12x")  # magic+version, nlibs, len_strings, flags, ext
NEW_ENTRY = struct.Struct("<iIIIQ")  # flags, key, value, osversion, hwcap
OLD_ENTRY = struct.Struct("<iII")  # flags, key, value
MAX_ENTRIES = 1 << 18
MAX_STRING = 4096

FLAG_TYPE_MASK = 0x00FF
FLAG_ELF_LIBC6 = 0x0003
FLAG_REQUIRED_MASK = 0xFF00
FLAG_X8664_LIB64 = 0x0300
FLAG_AARCH64_LIB64 = 0x0A00
# what ld.so accepts on each machine (_DL_CACHE_DEFAULT_ID); 32-bit x86 has no arch bits
DEFAULT_ID = {("x86_64", 64): FLAG_ELF_LIBC6 | FLAG_X8664_LIB64,
              ("aarch64", 64): FLAG_ELF_LIBC6 | FLAG_AARCH64_LIB64,
              ("i386", 32): FLAG_ELF_LIBC6}
HWCAP_EXTENSION = 1 << 62  # the entry is in a glibc-hwcaps subdirectory


@dataclass(frozen=True)
class CacheEntry:
    key: str  # the SONAME (file name) looked up
    path: str  # absolute
    flags: int
    hwcap: int = 0

    def fits(self, machine: str, elfclass: int) -> bool:
        """Whether ld.so on this machine and class would take the entry."""
        wanted = DEFAULT_ID.get((machine, elfclass))
        return wanted is not None and self.flags == wanted


def parse_ld_cache(data: bytes) -> tuple[list[CacheEntry], list[str]]:
    """(entries in file order, problems). Unknown or truncated input gives what could be read."""
    problems: list[str] = []
    if data.startswith(NEW_MAGIC):
        return _new(data, 0, problems), problems
    if data.startswith(OLD_MAGIC):
        return _old_then_new(data, problems), problems
    problems.append("not an ld.so.cache (unknown magic)")
    return [], problems


def _string(data: bytes, offset: int) -> str | None:
    if offset < 0 or offset >= len(data):
        return None
    end = data.find(b"\0", offset, offset + MAX_STRING)
    if end < 0:
        return None
    return data[offset:end].decode("utf-8", "surrogateescape")


def _new(data: bytes, base: int, problems: list[str]) -> list[CacheEntry]:
    if len(data) - base < NEW_HEADER.size:
        problems.append("new-format header truncated")
        return []
    _magic, nlibs, _len_strings, _flags, _ext = NEW_HEADER.unpack_from(data, base)
    room = (len(data) - base - NEW_HEADER.size) // NEW_ENTRY.size
    if nlibs > min(room, MAX_ENTRIES):
        problems.append(f"new format claims {nlibs} entries; {min(room, MAX_ENTRIES)} read")
        nlibs = min(room, MAX_ENTRIES)
    view = data[base:]
    entries: list[CacheEntry] = []
    bad = 0
    for i in range(nlibs):
        flags, key, value, _os, hwcap = NEW_ENTRY.unpack_from(view, NEW_HEADER.size + i * NEW_ENTRY.size)
        k, v = _string(view, key), _string(view, value)
        if k is None or v is None:
            bad += 1
            continue
        entries.append(CacheEntry(k, v, flags, hwcap))
    if bad:
        problems.append(f"{bad} entries with string offsets outside the file")
    return entries


def _old_then_new(data: bytes, problems: list[str]) -> list[CacheEntry]:
    header = 12 + 4  # char magic[11], padded to 4, uint32 nlibs
    if len(data) < header:
        problems.append("old-format header truncated")
        return []
    (nlibs,) = struct.unpack_from("<I", data, 12)
    room = (len(data) - header) // OLD_ENTRY.size
    if nlibs > min(room, MAX_ENTRIES):
        problems.append(f"old format claims {nlibs} entries; {min(room, MAX_ENTRIES)} read")
        nlibs = min(room, MAX_ENTRIES)
    end = header + nlibs * OLD_ENTRY.size
    new_at = (end + 7) & ~7  # ALIGN_CACHE: alignof(struct cache_file_new) is 8
    if data.startswith(NEW_MAGIC, new_at):
        return _new(data, new_at, problems)  # ld.so prefers the new table
    strings = data[end:]
    entries: list[CacheEntry] = []
    for i in range(nlibs):
        flags, key, value = OLD_ENTRY.unpack_from(data, header + i * OLD_ENTRY.size)
        k, v = _string(strings, key), _string(strings, value)
        if k is not None and v is not None:
            entries.append(CacheEntry(k, v, flags))
    return entries


def cache_lookup(entries: list[CacheEntry], name: str, machine: str, elfclass: int,
                 hwcaps: Sequence[str] | None = None,
                 legacy_ok: Callable[[int], bool] | None = None) -> list[CacheEntry]:
    """The entries ld.so would consider for ``name`` (matching key and flags), best first, as
    ``search_cache`` in ``elf/dl-cache.c`` ranks them: glibc-hwcaps entries the CPU supports
    (``hwcaps``: the subdirectories, best first) before the others, which keep file order.
    Legacy hwcaps entries (``tls``, ``x86_64``, ``haswell``... subdirectories of glibc before
    2.37) only when ``legacy_ok(hwcap)`` accepts their bits. With ``hwcaps`` unknown, the
    glibc-hwcaps entries come last (see the resolver's notes)."""
    hits = [e for e in entries if e.key == name and e.fits(machine, elfclass)]
    named = [e for e in hits if e.hwcap & HWCAP_EXTENSION]
    others = [e for e in hits if not e.hwcap & HWCAP_EXTENSION
              and (not e.hwcap or legacy_ok is None or legacy_ok(e.hwcap))]
    if hwcaps is None:
        return others + named
    rank = {sub: i for i, sub in enumerate(hwcaps)}
    usable = [e for e in named if _hwcaps_subdir(e.path) in rank]
    return sorted(usable, key=lambda e: rank[_hwcaps_subdir(e.path)]) + others


def _hwcaps_subdir(path: str) -> str | None:
    """``glibc-hwcaps/x86-64-v3`` for ``/usr/lib/glibc-hwcaps/x86-64-v3/libz.so.1`` (ldconfig
    names the entry's subdirectory in the cache's extension; its path says the same)."""
    parts = path.split("/")
    return f"glibc-hwcaps/{parts[-2]}" if len(parts) >= 3 and parts[-3] == "glibc-hwcaps" \
        else None
