"""A zstd:chunked or eStargz layer read by its table of contents: the entries from the table, and of
the files catalogers want only the chunks they read, fetched by byte range (``--lazy``).

Every fetched chunk is checked against its SHA-256 in the table, and the table against the digest
the manifest's annotation gives, so what is audited is what the digest-pinned manifest vouches for.
What is *not* checked is the blob's own digest (that would take every byte) nor the tar stream the
table describes: an engine pulling the layer whole unpacks the tar, and a layer whose table lies
about its tar would show the engine other files than the audit saw. Lazy reading is therefore
asked for, never the default, and the report marks each layer read this way.
"""

from __future__ import annotations

import bisect
import hashlib
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from auditor.errors import DigestMismatchError, InputError, LimitExceededError
from auditor.rootfs.decompress import INFLATE_ERRORS, Limits, inflating_reader
from auditor.rootfs.toc import ESTARGZ, KINDS, ZSTD_CHUNKED, Chunk, TocEntry
from auditor.rootfs.walker import (
    AnalyzersFn,
    LayerScan,
    StoreFn,
    WantFn,
    magic_length,
    record_entry,
    run_analyzer,
    within_limits,
)
from auditor.streams import SizedReader

# blob bytes [start, end) -> those bytes (unverified: every use checks them against a digest)
Fetch = Callable[[int, int], bytes]

MAX_CHUNK_BYTES = 16 << 20  # a chunk held in memory whole; a file with a larger one is spilled
CHUNKS_KEPT = 8  # decompressed chunks kept for the next reads (ELF parsing jumps back and forth)
KEPT_BYTES = 16 << 20  # and their bytes at most (eStargz's chunks are 4 MiB), beyond one read's
SPILL_PIECE = 1 << 20
READERS = 4  # files read at once (their requests' latency overlaps)
WHOLE_FILE_BYTES = 1 << 20  # a file stored in at most this many bytes is fetched in one request
READ_AHEAD_BYTES = 256 << 10  # a request for a larger file's chunks extends to this many bytes


class ChunkedFile(SizedReader):
    """A regular file of the layer as a seekable, read-only stream; chunks are fetched (in one
    request for a run of adjacent ones), decompressed and verified when a read first needs them."""

    def __init__(self, entry: TocEntry, fetch: Fetch, what: str, codec: str = ZSTD_CHUNKED) -> None:
        super().__init__(entry.size)
        self._entry, self._fetch, self._what, self._codec = entry, fetch, what, codec
        self._starts = [c.at for c in entry.chunks]
        self._kept: OrderedDict[int, bytes] = OrderedDict()
        self._kept_bytes = 0
        self.fetched = 0  # compressed bytes fetched
        stored = [c for c in entry.chunks if not c.zeros]
        # A small file comes whole in its first request: a parser's dozen reads would each cost
        # the registry's latency, for fewer bytes than the request's own overhead.
        self._whole = (bool(stored) and stored[-1].end - stored[0].start <= WHOLE_FILE_BYTES
                       and entry.size <= 8 * WHOLE_FILE_BYTES)  # held whole: bounded both ways
        self._keep_at_most = len(entry.chunks) if self._whole else CHUNKS_KEPT

    # -- the stream ----------------------------------------------------------------------------
    def read(self, n: int | None = -1) -> bytes:
        n = self.wanted(n)
        if n == 0:
            return b""
        start, end = self.position, self.position + n
        first = bisect.bisect_right(self._starts, start) - 1
        last = bisect.bisect_right(self._starts, end - 1) - 1
        self._load(first, last)
        parts = []
        for i in range(first, last + 1):
            chunk, data = self._entry.chunks[i], self._kept[i]
            lo, hi = max(start, chunk.at) - chunk.at, min(end, chunk.at + chunk.size) - chunk.at
            parts.append(data[lo:hi])
        self.position = end
        return b"".join(parts)

    def close(self) -> None:
        self._kept.clear()
        self._kept_bytes = 0
        super().close()

    # -- chunks --------------------------------------------------------------------------------
    def _load(self, first: int, last: int) -> None:
        chunks = self._entry.chunks
        if self._whole:
            first, last = 0, len(chunks) - 1
        run: list[int] = []
        for i in (i for i in range(first, last + 1) if i not in self._kept):
            if run and chunks[run[-1]].end != chunks[i].start:  # adjacent frames: one request
                self._fetch_run(run)
                run = []
            run.append(i)
        if run:
            self._fetch_run(self._ahead(run))
        for i in range(first, last + 1):
            self._kept.move_to_end(i)
        reading = last - first + 1  # the newest: never dropped
        while len(self._kept) > reading and (len(self._kept) > self._keep_at_most or (
                self._kept_bytes > KEPT_BYTES and not self._whole)):
            self._kept_bytes -= len(self._kept.popitem(last=False)[1])

    def _ahead(self, run: list[int]) -> list[int]:
        """The run, and the adjacent chunks after it while the request stays under
        ``READ_AHEAD_BYTES``: the next read is most often just past this one."""
        chunks, out = self._entry.chunks, list(run)
        i = out[-1] + 1
        while (i < len(chunks) and i not in self._kept and chunks[i].start == chunks[i - 1].end
               and chunks[i].end - chunks[out[0]].start <= READ_AHEAD_BYTES):
            out.append(i)
            i += 1
        return out

    def _fetch_run(self, run: list[int]) -> None:
        chunks = self._entry.chunks
        stored = [i for i in run if not chunks[i].zeros]
        for i in run:
            if chunks[i].zeros:  # a run of zeros: nothing to fetch
                self._keep(i, bytes(chunks[i].size))
        if not stored:
            return
        start, end = chunks[stored[0]].start, chunks[stored[-1]].end
        data = self._fetch(start, end)
        self.fetched += len(data)
        for i in stored:
            c = chunks[i]
            self._keep(i, inflate_chunk(data[c.start - start:c.end - start], c, self._what,
                                        self._entry.name, self._codec))

    def _keep(self, i: int, data: bytes) -> None:
        self._kept[i] = data
        self._kept_bytes += len(data)


def inflate_chunk(frame: bytes, chunk: Chunk, what: str, name: str,
                  codec: str = ZSTD_CHUNKED) -> bytes:
    """One chunk's bytes from its frame(s) or member, checked against its digest."""
    pieces: list[bytes] = []
    _verified(frame, chunk, codec, what, name, pieces.append)
    return b"".join(pieces)


def open_content(entry: TocEntry, fetch: Fetch, what: str, spill_dir: str | None,
                 codec: str = ZSTD_CHUNKED) -> Any:
    """A file's bytes, seekable: read chunk by chunk where the chunks are small enough to hold;
    otherwise fetched whole into a temporary file, each chunk verified on the way."""
    if all(c.size <= MAX_CHUNK_BYTES for c in entry.chunks):
        return ChunkedFile(entry, fetch, what, codec)
    copy = tempfile.TemporaryFile(dir=spill_dir)  # noqa: SIM115 - the caller closes it
    try:
        for chunk in entry.chunks:
            if chunk.zeros:
                for at in range(0, chunk.size, SPILL_PIECE):
                    copy.write(bytes(min(SPILL_PIECE, chunk.size - at)))
                continue
            _verified(fetch(chunk.start, chunk.end), chunk, codec, what, entry.name, copy.write)
        copy.seek(0)
    except BaseException:
        copy.close()
        raise
    return copy


def _verified(frame: bytes, chunk: Chunk, codec: str, what: str, name: str,
              sink: Callable[[bytes], object]) -> None:
    """The chunk's bytes, in pieces, into ``sink``; an error if they are fewer than its size or
    do not match its digest (what a frame or member holds past the chunk is not the file's:
    in eStargz, the tar's padding and the next headers)."""
    hasher, total = hashlib.sha256(), 0
    try:
        for piece in _inflated(frame, chunk, codec):
            hasher.update(piece)
            sink(piece)
            total += len(piece)
    except INFLATE_ERRORS as err:
        raise InputError(f"{what}: chunk of {name!r} at {chunk.at} is not valid "
                         f"{'gzip' if codec == ESTARGZ else 'zstd'} ({err})") from None
    actual = "sha256:" + hasher.hexdigest()
    if total != chunk.size or actual != chunk.digest:
        raise DigestMismatchError(f"{what}: chunk of {name!r} at {chunk.at} does not match its "
                                  f"digest {chunk.digest} (got {actual}, {total} bytes)")


def _inflated(frame: bytes, chunk: Chunk, codec: str) -> Iterator[bytes]:
    """What the frame inflates to, ``chunk.inner`` bytes in, ``chunk.size`` bytes at most, in
    pieces of at most ``SPILL_PIECE``."""
    read = inflating_reader(frame, gzip=codec == ESTARGZ)
    skip, left = chunk.inner, chunk.size
    while skip:
        dropped = len(read(min(skip, SPILL_PIECE)))
        if not dropped:
            return
        skip -= dropped
    while left and (piece := read(min(left, SPILL_PIECE))):
        left -= len(piece)
        yield piece


def scan_toc(entries: Sequence[TocEntry], layer: int, wants: WantFn, store: StoreFn,
             fetch: Fetch, limits: Limits = Limits(), what: str | None = None,
             analyzers: AnalyzersFn | None = None, spill_dir: str | None = None,
             codec: str = ZSTD_CHUNKED) -> LayerScan:
    """The layer's scan from its table: the same record the stream pass makes, with the wanted
    files' bytes fetched as catalogers and analyzers read them.

    Files are read ``READERS`` at a time: a file's reads follow one another (an ELF parser reads
    its header before it knows where the dynamic section is), and each is a request with the
    registry's latency, so it is files that go side by side. Their results are recorded in the
    table's order, whatever order they finish in."""
    what = what or f"layer {layer}"
    scan = LayerScan(layer)
    jobs: list[tuple[str, Future[tuple[str | None, dict[str, Any], int]]]] = []
    with ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="lazy-read") as pool:
        try:
            for count, entry in enumerate(entries, 1):
                if count > limits.max_entries:
                    raise LimitExceededError(
                        f"{what} has more than {limits.max_entries} entries; raise --max-entries")
                path = record_entry(scan, entry.name, KINDS.get(entry.type),
                                    f"entry type {entry.type!r}", entry.mode, entry.size,
                                    entry.link, entry.uid, entry.gid)
                if path is None:
                    continue
                capture = wants(path)
                owners: Sequence[Any] = analyzers(path) if analyzers else ()
                if not capture and not owners:
                    continue
                capture, owners = within_limits(scan, path, entry.size, capture, owners, limits)
                if capture or owners:
                    jobs.append((path, pool.submit(_read_file, entry, capture, owners, fetch, store,
                                                   what, spill_dir, codec)))
            for path, job in jobs:
                captured, facts, fetched = job.result()
                if captured is not None:
                    scan.captured[path] = captured
                if facts:
                    scan.analyzed[path] = facts
                scan.fetched_bytes += fetched
        except BaseException:
            for _, job in jobs:
                job.cancel()
            raise
    return scan


def _read_file(entry: TocEntry, capture: bool, owners: Sequence[Any], fetch: Fetch,
               store: StoreFn, what: str, spill_dir: str | None, codec: str
               ) -> tuple[str | None, dict[str, Any], int]:
    """One wanted file: (its captured content's digest, its analyzers' facts, bytes fetched)."""
    content = open_content(entry, fetch, what, spill_dir, codec)
    try:
        head = content.read(min(entry.size, magic_length(owners)))
        owners = [h for h in owners if head.startswith(h[2])]
        captured = None
        if capture:
            content.seek(0)
            captured = store(content.read())
        facts = {}
        for owner, analyze, _magic in owners:
            content.seek(0)
            facts[owner] = run_analyzer(analyze, content, entry.size)
        return captured, facts, getattr(content, "fetched", sum(c.end - c.start for c in entry.chunks))
    finally:
        content.close()
