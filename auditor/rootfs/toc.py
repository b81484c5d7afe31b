"""The table of contents of a zstd:chunked or eStargz layer: where each file's bytes lie in the blob.

containers/storage writes zstd:chunked layers (``podman push --compression-format zstd:chunked``,
``skopeo copy --dest-compress-format zstd:chunked``): a valid zstd stream of a tar, in which every
file's content starts a new frame and large files are cut into content-defined chunks, each a frame
of its own, followed by a zstd-compressed JSON table of contents (the CRFS/eStargz shape). The
layer's descriptor carries where the table lies and its SHA-256 (annotations, so the digest-pinned
manifest vouches for them); the table gives every entry's metadata and, for each chunk, its place in
the blob, its place in the file and the SHA-256 of its uncompressed bytes.

eStargz (containerd's stargz-snapshotter, BuildKit's ``compression=estargz``, nerdctl) is the gzip
form of the same table: a valid gzip stream of a tar whose files' contents (and chunks) start new
gzip members, the table itself the last tar entry (``stargz.index.json``) in a member of its own,
and a 51-byte footer, an empty gzip member whose extra field gives the table's offset. The
descriptor's annotation ``containerd.io/snapshot/stargz/toc.digest`` is the SHA-256 of the table's
JSON. A chunk's member may go on past the chunk (the tar's padding and the next headers), and newer
writers put several small files in one member (``innerOffset``: where the file starts in it).

So a file can be read without the rest of the layer, and every byte read is checked against a
digest the manifest vouches for. This module is pure: it parses and checks; fetching is the
caller's. Everything in the table is hostile input: counts, sizes and offsets are bounded and
checked against the blob before anything is fetched.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import ijson

from auditor.digest import digest_bytes
from auditor.errors import DigestMismatchError, InputError
from auditor.rootfs.decompress import INFLATE_ERRORS, inflating_reader

ZSTD_CHUNKED, ESTARGZ = "zstd:chunked", "estargz"  # the layer formats with a table

# the annotations' names: containers/image wrote the shorter prefix before 5.25
_PREFIXES = ("io.github.containers.zstd-chunked.", "io.containers.zstd-chunked.")
CHECKSUM_KEY = "manifest-checksum"
POSITION_KEY = "manifest-position"
MANIFEST_TYPE_CRFS = 1  # the only table format there is
MAX_TOC_BYTES = 256 << 20  # uncompressed JSON; a 100k-file layer's is about 40 MB
ESTARGZ_DIGEST_KEY = "containerd.io/snapshot/stargz/toc.digest"
ESTARGZ_FOOTER_BYTES = 51
ESTARGZ_TOC_NAME = "stargz.index.json"
MAX_INNER_OFFSET = 16 << 20  # bytes inflated and dropped before a file that shares its member
KINDS = {"reg": "file", "dir": "dir", "symlink": "symlink", "hardlink": "hardlink",
         "char": "char", "block": "block", "fifo": "fifo"}


@dataclass(frozen=True)
class TocPosition:
    """Where the table lies in the blob (compressed), how large it is, and its digest (for
    zstd:chunked, of its compressed bytes; for eStargz, of its JSON). An eStargz table's place is
    in the blob's footer, not in the annotations: until :func:`locate_estargz_toc` has read it,
    ``offset`` and ``length`` are 0."""

    offset: int
    length: int
    uncompressed: int
    checksum: str
    format: str = ZSTD_CHUNKED

    @property
    def located(self) -> bool:
        return self.length > 0


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a file: ``size`` bytes at ``at`` in the file, stored compressed (a zstd frame,
    a gzip member) in blob bytes ``[start, end)``, ``inner`` bytes into what they inflate to (for a
    run of zeros, a frame that is never read)."""

    at: int
    size: int
    start: int
    end: int
    digest: str | None
    zeros: bool = False
    inner: int = 0


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
        estargz = annotations.get(ESTARGZ_DIGEST_KEY)
        if estargz is None:
            return None
        _check_digest(estargz, f"{what}: eStargz {ESTARGZ_DIGEST_KEY}")
        if blob_size <= ESTARGZ_FOOTER_BYTES:
            raise InputError(f"{what}: a {blob_size}-byte blob cannot hold an eStargz footer")
        return TocPosition(0, 0, MAX_TOC_BYTES, estargz, ESTARGZ)
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
    _check_digest(checksum, f"{what}: zstd:chunked manifest-checksum")
    return TocPosition(offset, length, uncompressed, checksum)


def locate_estargz_toc(footer: bytes, position: TocPosition, blob_size: int,
                       what: str) -> TocPosition:
    """An eStargz table's place, from the blob's last 51 bytes: an empty gzip member whose extra
    field is ``SG``, its length, and the table's offset as 16 hex digits followed by ``STARGZ``."""
    # gzip's 10-byte header with FEXTRA set, XLEN 26, then the one subfield: SG, 22, its data
    if (len(footer) != ESTARGZ_FOOTER_BYTES or footer[:4] != b"\x1f\x8b\x08\x04"
            or footer[10:16] != b"\x1a\x00SG\x16\x00" or footer[32:38] != b"STARGZ"):
        raise InputError(f"{what}: no eStargz footer at the end of the blob")
    try:
        offset = int(footer[16:32].decode("ascii"), 16)
    except (UnicodeDecodeError, ValueError):
        raise InputError(f"{what}: malformed eStargz footer") from None
    length = blob_size - ESTARGZ_FOOTER_BYTES - offset
    if not 0 < length <= MAX_TOC_BYTES:
        raise InputError(f"{what}: eStargz table of contents at {offset} lies outside the "
                         f"{blob_size}-byte blob")
    return dataclasses.replace(position, offset=offset, length=length)


def parse_toc(compressed: bytes, position: TocPosition, what: str,
              max_entries: int) -> list[TocEntry]:
    """The table's entries, its bytes checked against the annotated digest. The JSON is parsed
    as it inflates (ijson): neither its tens of MB nor an object per entry are ever held whole;
    an eStargz table's entries are returned only once the JSON's digest has been checked."""
    estargz = position.format == ESTARGZ
    try:
        if estargz:
            read = inflating_reader(compressed, gzip=True)
            header = _table_header(read, what)
            stream = _TableStream(read, header.size, hashlib.sha256(), what)
        else:
            _check(digest_bytes(compressed), position.checksum, f"{what}: table of contents")
            stream = _TableStream(inflating_reader(compressed, gzip=False), position.uncompressed,
                                  None, what)
        items = _counted(ijson.items(stream, "entries.item", use_float=True), max_entries * 8,
                         what)
        entries = _entries(items, position.offset, what, estargz)
        stream.drain()
    except (ijson.JSONError, UnicodeDecodeError, *INFLATE_ERRORS) as err:
        raise InputError(f"{what}: unreadable table of contents ({err})") from None
    if not estargz:
        return entries
    if stream.read_bytes != header.size:
        raise InputError(f"{what}: the eStargz table's member holds {stream.read_bytes} of its "
                         f"{header.size} bytes")
    _check(stream.digest(), position.checksum, f"{what}: eStargz table of contents")
    # the table is a file of the tar too, its last: its bytes are 512 into its member
    table = TocEntry(header.name, "reg", header.mode, header.size, "", header.uid, header.gid,
                     position.checksum, (Chunk(0, header.size, position.offset,
                                               position.offset + position.length,
                                               position.checksum, inner=tarfile.BLOCKSIZE),))
    return [*_place_members(entries, position.offset), table]


class _TableStream:
    """The table's JSON, as a file the streaming parser reads: at most ``size`` bytes of what
    ``source`` inflates to (zstd:chunked: more is an error; eStargz: the tar's padding follows,
    and is not read), hashed as it goes when a ``hasher`` is given."""

    def __init__(self, source: Callable[[int], bytes], size: int, hasher: Any, what: str) -> None:
        self._source, self._left, self._hasher, self._what = source, size, hasher, what
        self._exact = hasher is not None
        self.read_bytes = 0

    def read(self, n: int = -1) -> bytes:
        if n == 0:  # the parser asks, to tell bytes from text
            return b""
        if self._left == 0:
            if not self._exact and self._source(1):
                raise InputError(f"{self._what}: table of contents larger than its annotated "
                                 f"{self.read_bytes} bytes")
            return b""
        data = self._source(self._left if n < 0 else min(n, self._left))
        self._left -= len(data)
        self.read_bytes += len(data)
        if self._hasher is not None:
            self._hasher.update(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 16):
            pass

    def digest(self) -> str:
        """The digest of what was read (with a hasher)."""
        return f"sha256:{self._hasher.hexdigest()}"


def _table_header(read: Callable[[int], bytes], what: str) -> tarfile.TarInfo:
    """The tar header before an eStargz table's JSON, in the first 512 bytes of its member."""
    block = b""
    while len(block) < tarfile.BLOCKSIZE and (piece := read(tarfile.BLOCKSIZE - len(block))):
        block += piece
    try:
        header = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.TarError as err:
        raise InputError(f"{what}: unreadable eStargz table of contents ({err})") from None
    if header.name != ESTARGZ_TOC_NAME or not header.isreg():
        raise InputError(f"{what}: the eStargz table's member does not hold {ESTARGZ_TOC_NAME}")
    if not 0 < header.size <= MAX_TOC_BYTES:
        raise InputError(f"{what}: eStargz table of contents of {header.size} bytes "
                         f"(at most {MAX_TOC_BYTES})")
    return header


def _counted(items: Iterable[Any], limit: int, what: str) -> Iterator[Any]:
    for count, item in enumerate(items, 1):
        if count > limit:  # chunks included; the walker counts files itself
            raise InputError(f"{what}: table of contents lists more than {limit} entries")
        yield item


def _place_members(entries: list[TocEntry], data_end: int) -> list[TocEntry]:
    """eStargz chunks' ends: a member ends where the next one (of any file) starts, or the
    table's; between them lie the tar's padding and the next headers."""
    starts = sorted({c.start for e in entries for c in e.chunks} | {data_end})
    out = []
    for entry in entries:
        if entry.chunks:
            chunks = tuple(dataclasses.replace(c, end=starts[bisect.bisect_right(starts, c.start)])
                           for c in entry.chunks)  # every start is below data_end: checked
            entry = dataclasses.replace(entry, chunks=chunks)
        out.append(entry)
    return out


def _check(actual: str, expected: str, what: str) -> None:
    if actual != expected:
        raise DigestMismatchError(f"{what} does not match its annotated digest {expected} "
                                  f"(got {actual})")


def _check_digest(value: str, what: str) -> None:
    if not value.startswith("sha256:") or len(value) != 71:
        raise InputError(f"{what} {value!r} is not a sha256 digest")


def _entries(raw: Iterable[Any], data_end: int, what: str, estargz: bool) -> list[TocEntry]:
    """The table's entries. A zstd:chunked chunk's frame ends at the next chunk's offset, then
    at the file's ``endOffset``; an eStargz chunk's member end is set by ``_place_members``
    once every offset is known (``data_end`` until then)."""
    out: list[TocEntry] = []
    pending: dict[str, Any] | None = None  # the regular file whose chunks are being gathered
    chunks: list[dict[str, Any]] = []

    def close() -> None:
        if pending is not None:
            out[-1] = _with_chunks(out[-1], pending, chunks, data_end, what, estargz)

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
                 data_end: int, what: str, estargz: bool) -> TocEntry:
    """A regular file's chunks: the file's own entry is the first, then its chunk entries. A
    chunk's size may be left out on the last one (the rest of the file). In zstd:chunked a
    chunk's frame ends where the next one's starts, the last one's at the file's endOffset; a
    run of zeros (``chunkType: zeros``) is not read: it is that many zero bytes."""
    if entry.size == 0:
        return entry
    where = f"{what}: {entry.name!r}"
    chunks: list[Chunk] = []
    at = 0
    if not estargz:  # a frame ends where the next chunk's starts (zeros have one too)
        end_of_file = _int(file, "endOffset", what)
        ends = [_int(items[k + 1], "offset", what) if k + 1 < len(items) else end_of_file
                for k in range(len(items))]
    for n, item in enumerate(items):
        zeros = item.get("chunkType", "") == "zeros"
        if item.get("chunkType", "") not in ("", "zeros"):
            raise InputError(f"{where}: unknown chunk type {item.get('chunkType')!r}")
        size = _int(item, "chunkSize", what) or (entry.size - at if n == len(items) - 1 else 0)
        if _int(item, "chunkOffset", what) != at or size <= 0:
            raise InputError(f"{where}: chunks do not tile the file")
        start = _int(item, "offset", what)
        end = data_end if estargz else ends[n]
        if not 0 <= start <= end <= data_end or (start == end and not zeros):
            raise InputError(f"{where}: chunk at {start}..{end} outside the layer's data")
        inner = _int(item, "innerOffset", what)
        if inner > MAX_INNER_OFFSET:
            raise InputError(f"{where}: chunk {inner} bytes into its member (at most "
                             f"{MAX_INNER_OFFSET})")
        digest = _digest(item.get("chunkDigest"), what)
        if digest is None and not zeros:
            digest = entry.digest if len(items) == 1 else None
        if digest is None and not zeros:
            raise InputError(f"{where}: chunk without a digest")
        chunks.append(Chunk(at, size, start, end, digest, zeros, inner))
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


__all__ = ["ESTARGZ", "ESTARGZ_FOOTER_BYTES", "KINDS", "ZSTD_CHUNKED", "Chunk", "TocEntry",
           "TocPosition", "locate_estargz_toc", "parse_toc", "toc_position"]
