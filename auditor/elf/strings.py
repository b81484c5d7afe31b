"""Version strings in a library's read-only data, found by regular expressions.

Only bounded windows are read (``.rodata``, or the read-only segments of a file without section
headers), in chunks that overlap by more than the longest match, never the whole file. What is
kept is each distinct matching text and how often it occurs; the reader re-applies its pattern to
take the groups.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from auditor.elf.layout import PF_W, PF_X, SHT_NOBITS, ElfLayout

MAX_WINDOW_BYTES = 64 << 20  # read from all windows of one file together
CHUNK_BYTES = 4 << 20
OVERLAP_BYTES = 512  # longer than any match kept
MAX_MATCH_BYTES = 256
MAX_DISTINCT = 16  # distinct texts kept per pattern
WINDOW_SECTIONS = (".rodata",)


def string_windows(layout: ElfLayout) -> list[tuple[int, int]]:
    """(offset, size) of the regions searched, cut to the file."""
    sections = [s for s in layout.sections if s.name in WINDOW_SECTIONS and s.type != SHT_NOBITS]
    if sections:
        regions = [(s.offset, s.size) for s in sections]
    else:  # no section headers: the segments that are neither writable nor code
        regions = [(s.offset, s.filesz) for s in layout.loads() if not s.flags & (PF_W | PF_X)]
    out = []
    for offset, size in regions:
        if 0 <= offset < layout.size:
            out.append((offset, min(size, layout.size - offset)))
    return out


def search_strings(layout: ElfLayout, patterns: Mapping[str, re.Pattern[bytes]],
                   max_bytes: int = MAX_WINDOW_BYTES) -> dict[str, dict[str, int]]:
    """pattern id -> {matched text: occurrences}, over at most ``max_bytes`` of the windows."""
    found: dict[str, dict[str, int]] = {}
    if not patterns:
        return found
    budget = max_bytes
    for offset, size in string_windows(layout):
        if budget <= 0:
            break  # a bound, not a defect: cuDNN's 80 MB .rodata holds no string we look for
        size = min(size, budget)
        budget -= size
        _search_window(layout, offset, size, patterns, found)
    return found


def _search_window(layout: ElfLayout, offset: int, size: int,
                   patterns: Mapping[str, re.Pattern[bytes]],
                   found: dict[str, dict[str, int]]) -> None:
    start = 0
    while start < size:
        length = min(CHUNK_BYTES, size - start)
        data = layout.read(offset + start, min(length + OVERLAP_BYTES, size - start))
        if not data:
            return
        for key, pattern in patterns.items():
            for match in pattern.finditer(data):
                if match.start() >= length:  # in the overlap: the next chunk counts it
                    break
                text = match.group(0)[:MAX_MATCH_BYTES].decode("utf-8", "replace")
                counts = found.setdefault(key, {})
                if text in counts or len(counts) < MAX_DISTINCT:
                    counts[text] = counts.get(text, 0) + 1
        start += length
