"""The table of contents of a zstd:chunked layer: where each file's bytes lie in the blob.

containers/storage writes such layers (``podman push --compression-format zstd:chunked``,
``skopeo copy --dest-compress-format zstd:chunked``): a valid zstd stream of a tar, in which every
file's content starts a new frame and large files are cut into content-defined chunks, each a frame
of its own, followed by a zstd-compressed JSON table of contents (the CRFS/eStargz shape). The
layer's descriptor carries where the table lies and its SHA-256 (annotations, so the digest-pinned
manifest vouches for them); the table gives every entry's metadata and, for each chunk, its place in
the blob, its place in the file and the SHA-256 of its uncompressed bytes.

So a file can be read without the rest of the layer, and every byte read is checked against a
digest the manifest vouches for. This module is pure: it parses and checks; fetching is the
caller's. Everything in the table is hostile input: counts, sizes and offsets are bounded and
checked against the blob before anything is fetched.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import zstandard

from auditor.errors import DigestMismatchError, InputError

# the annotations' names: containers/image wrote the shorter prefix before 5.25
_PREFIXES = ("io.github.containers.zstd-chunked.", "io.containers.zstd-chunked.")
CHECKSUM_KEY = "manifest-checksum"
POSITION_KEY = "manifest-position"
MANIFEST_TYPE_CRFS = 1  # the only table format there is
MAX_TOC_BYTES = 256 << 20  # uncompressed JSON; a 100k-file layer's is about 40 MB
KINDS = {"reg": "file", "dir": "dir", "symlink": "symlink", "hardlink": "hardlink",
         "char": "char", "block": "block", "fifo": "fifo"}


@dataclass(frozen=True)
class TocPosition:
    """Where the table lies in the blob (compressed), how large it is, and its digest."""

    offset: int
    length: int
    uncompressed: int
    checksum: str


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a file: ``size`` bytes at ``at`` in the file, stored as one zstd frame in
    blob bytes ``[start, end)`` (for a run of zeros, a frame that is never read)."""

    at: int
    size: int
    start: int
    end: int
    digest: str | None
    zeros: bool = False


@dataclass(frozen=True, slots=True)
class TocEntry:
    name: str
    type: str  # as the table writes it: reg, dir, symlink, hardlink, char, block, fifo, ...
    mode: int
    size: int
    link: str
    uid: int
    gid: int
    digest: str | None  # of a regular file's whole content
    chunks: tuple[Chunk, ...] = ()


def toc_position(annotations: Mapping[str, str], blob_size: int, what: str) -> TocPosition | None:
    """The table's place from a layer descriptor's annotations; None if the layer has none (it
    is then read whole). Annotations that are there but malformed are an error."""
    def get(key: str) -> str | None:
        return next((annotations[p + key] for p in _PREFIXES if p + key in annotations), None)

    position, checksum = get(POSITION_KEY), get(CHECKSUM_KEY)
    if position is None and checksum is None:
        return None
    if position is None or checksum is None:
        raise InputError(f"{what}: zstd:chunked annotations name the table of contents' "
                         f"{'digest' if position is None else 'position'} but not its "
                         f"{'position' if position is None else 'digest'}")
    try:
        offset, length, uncompressed, kind = (int(x) for x in position.split(":"))
    except ValueError:
        raise InputError(f"{what}: malformed zstd:chunked manifest-position {position!r}") from None
    if kind != MANIFEST_TYPE_CRFS:
        raise InputError(f"{what}: zstd:chunked table of contents of unknown type {kind}")
    if offset < 0 or length <= 0 or offset + length > blob_size:
        raise InputError(f"{what}: zstd:chunked table of contents at {offset}+{length} lies "
                         f"outside the {blob_size}-byte blob")
    if not 0 < uncompressed <= MAX_TOC_BYTES:
        raise InputError(f"{what}: zstd:chunked table of contents of {uncompressed} bytes "
                         f"(at most {MAX_TOC_BYTES})")
    if not checksum.startswith("sha256:") or len(checksum) != 71:
        raise InputError(f"{what}: zstd:chunked manifest-checksum {checksum!r} is not a sha256 digest")
    return TocPosition(offset, length, uncompressed, checksum)


def parse_toc(compressed: bytes, position: TocPosition, what: str,
              max_entries: int) -> list[TocEntry]:
    """The table's entries, after checking its bytes against the annotated digest."""
    actual = "sha256:" + hashlib.sha256(compressed).hexdigest()
    if actual != position.checksum:
        raise DigestMismatchError(f"{what}: table of contents does not match its annotated "
                                  f"digest {position.checksum} (got {actual})")
    try:
        raw = zstandard.ZstdDecompressor().decompress(compressed, max_output_size=position.uncompressed)
        document = json.loads(raw)
        del raw  # tens of MB for a large layer: not held while the entries are built
    except (zstandard.ZstdError, ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{what}: unreadable table of contents ({err})") from None
    entries = document.get("entries") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise InputError(f"{what}: table of contents has no entries list")
    if len(entries) > max_entries * 8:  # chunks included; the walker counts files itself
        raise InputError(f"{what}: table of contents lists {len(entries)} entries")
    return _entries(entries, position.offset, what)


def _entries(raw: list[Any], data_end: int, what: str) -> list[TocEntry]:
    out: list[TocEntry] = []
    pending: dict[str, Any] | None = None  # the regular file whose chunks are being gathered
    chunks: list[dict[str, Any]] = []

    def close() -> None:
        if pending is not None:
            out[-1] = _with_chunks(out[-1], pending, chunks, data_end, what)

    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InputError(f"{what}: malformed table of contents entry")
        kind = str(item.get("type", ""))
        if kind == "chunk":
            if pending is None or item["name"] != pending["name"]:
                raise InputError(f"{what}: chunk of {item['name']!r} does not follow its file")
            chunks.append(item)
            continue
        close()
        pending, chunks = (item, [item]) if kind == "reg" else (None, [])
        out.append(TocEntry(
            name=item["name"], type=kind, mode=_int(item, "mode", what), size=_int(item, "size", what),
            link=str(item.get("linkName") or ""), uid=_int(item, "uid", what),
            gid=_int(item, "gid", what), digest=_digest(item.get("digest"), what)))
    close()
    return out


def _with_chunks(entry: TocEntry, file: dict[str, Any], items: list[dict[str, Any]],
                 data_end: int, what: str) -> TocEntry:
    """A regular file's chunks: the file's own entry is the first, then its chunk entries; a
    chunk's frame ends where the next one's starts, the last one's at the file's endOffset.
    A run of zeros (``chunkType: zeros``) is not read: it is that many zero bytes."""
    if entry.size == 0:
        return entry
    where = f"{what}: {entry.name!r}"
    end_of_file = _int(file, "endOffset", what)
    chunks: list[Chunk] = []
    at = 0
    # a frame ends where the next chunk's starts (a run of zeros has a frame too, never read)
    ends = [_int(items[k + 1], "offset", what) if k + 1 < len(items) else end_of_file
            for k in range(len(items))]
    for n, item in enumerate(items):
        zeros = item.get("chunkType", "") == "zeros"
        if item.get("chunkType", "") not in ("", "zeros"):
            raise InputError(f"{where}: unknown chunk type {item.get('chunkType')!r}")
        size = _int(item, "chunkSize", what) if "chunkSize" in item or n else entry.size
        if _int(item, "chunkOffset", what) != at or size <= 0:
            raise InputError(f"{where}: chunks do not tile the file")
        start, end = _int(item, "offset", what), ends[n]  # a run of zeros has a frame too
        if not 0 <= start <= end <= data_end or (start == end and not zeros):
            raise InputError(f"{where}: chunk at {start}..{end} outside the layer's data")
        digest = _digest(item.get("chunkDigest"), what)
        if digest is None and not zeros:
            digest = entry.digest if len(items) == 1 else None
        if digest is None and not zeros:
            raise InputError(f"{where}: chunk without a digest")
        chunks.append(Chunk(at, size, start, end, digest, zeros))
        at += size
    if at != entry.size:
        raise InputError(f"{where}: chunks hold {at} bytes, the file {entry.size}")
    return TocEntry(entry.name, entry.type, entry.mode, entry.size, entry.link, entry.uid,
                    entry.gid, entry.digest, tuple(chunks))


def _int(item: dict[str, Any], key: str, what: str) -> int:
    value = item.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InputError(f"{what}: table of contents entry {item.get('name')!r} has a bad {key}")
    return value


def _digest(value: Any, what: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.startswith("sha256:") or len(value) != 71:
        raise InputError(f"{what}: table of contents digest {value!r} is not a sha256 digest")
    return value


__all__ = ["KINDS", "Chunk", "TocEntry", "TocPosition", "parse_toc", "toc_position"]
