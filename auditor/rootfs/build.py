"""Build the merged rootfs index of an image: one pass per layer, cached per layer blob.

A layer's cached scan is filed under its diff_id *and* the blob it was read from: the blob's digest
is always verified, the config's diff_id only with ``verify_diff_ids``. A scan is therefore reused
only for the very bytes it was made from, never for another blob that merely claims the same
diff_id. A blob checked against its diff_id (hashed on the way, or stored uncompressed, where the
two are one) is filed under the diff_id's own name too, so the uncompressed form of the same layer
(a ``docker save`` tarball, an engine's image) finds it."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from auditor.digest import digest_bytes
from auditor.errors import InputError, LimitExceededError
from auditor.model import Layer
from auditor.rootfs.decompress import LayerReader, Limits
from auditor.rootfs.index import RootfsIndex, glob_matcher
from auditor.rootfs.lazy import scan_toc
from auditor.rootfs.toc import (
    ESTARGZ_FOOTER_BYTES,
    TocPosition,
    locate_estargz_toc,
    parse_toc,
    toc_position,
)
from auditor.rootfs.walker import Analyzer, Handler, LayerScan, scan_layer
from auditor.sources.base import Image
from auditor.sources.cache import BlobCache

# Bump when the walker's output changes: cached layer indexes of other versions are ignored.
INDEXER_VERSION = 2  # 2: filed per (diff_id, blob)


@dataclass(frozen=True)
class Want:
    """Files a cataloger wants handed over: shell globs over root-relative paths.

    Without ``analyze``, the file's bytes are captured (up to ``--max-file-size``) for the
    cataloger to parse after the pass. With it, the file (up to ``max_analyze_bytes``: NVIDIA
    libraries run to hundreds of MB) is handed to ``analyze`` as it streams by, as a seekable
    copy, and only the facts it returns are kept, cached per layer like everything else."""

    owner: str  # cataloger name
    version: int  # its version: bumping it invalidates cached layer results
    globs: tuple[str, ...]
    analyze: Analyzer | None = field(default=None, compare=False)
    magic: bytes = b""  # analyze only files that start with these bytes (b"\x7fELF")


@dataclass(frozen=True)
class Plan:
    """Which files the pass hands over, and how: the wants compiled."""

    capture: Callable[[str], bool]
    analyzers: Callable[[str], Sequence[Handler]]


class LayerProgress:
    """What the pass reports as it goes; the CLI replaces it with a rich renderer."""

    def layer_started(self, layer: Layer, total: int | None, cached: bool) -> None: ...
    def advance(self, layer: Layer, n: int) -> None: ...
    def layer_done(self, layer: Layer) -> None: ...


def compile_wants(wants: Sequence[Want]) -> Callable[[str], bool]:
    """Whether a path is one whose bytes some cataloger wants captured."""
    return glob_matcher([g for w in wants if w.analyze is None for g in w.globs])


def compile_plan(wants: Sequence[Want]) -> Plan:
    analyzing = [((w.owner, w.analyze, w.magic), glob_matcher(w.globs)) for w in wants
                 if w.analyze is not None]

    def analyzers(path: str) -> list[Handler]:
        return [handler for handler, match in analyzing if match(path)]

    return Plan(compile_wants(wants), analyzers)


def wanted_over(index: RootfsIndex, want: Callable[[str], Any]) -> Callable[[str], Any]:
    """A file written through a symlinked parent lands elsewhere (``lib/x`` over ``lib ->
    usr/lib`` is ``usr/lib/x``): it is wanted if its tar path or where it lands matches, given
    the layers merged into ``index`` so far. Works for any path predicate or lookup."""
    def wanted(path: str) -> Any:
        if found := want(path):
            return found
        landing = index.canonical_path(path)
        return want(landing) if landing != path else found

    return wanted


def cache_key(wants: Sequence[Want], limits: Limits) -> str:
    spec = {"indexer": INDEXER_VERSION, "capture_limit": limits.max_capture_bytes,
            "analyze_limit": limits.max_analyze_bytes,
            "wants": sorted([w.owner, w.version, sorted(w.globs), w.analyze is not None,
                             w.magic.hex()] for w in wants)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def default_jobs() -> int:
    """How many layers to read at once: one per core this process may run on, at most
    ``MAX_JOBS``. Even on two cores two reads gain a little (one read's threads wait on one
    another: the 2x bench image, two big layers, is 6 to 20% faster); each read in flight holds
    its own buffers and analyses (~60 MB), and the cap keeps a cold audit's peak RSS under
    300 MB."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(MAX_JOBS, cores))


MAX_JOBS = 3


@dataclass(frozen=True)
class _LayerRead:
    """How a layer is read when no cached scan serves: whole, or by its table of contents;
    and the cache keys its scan is found and filed under."""

    layer: Layer
    key: str  # the key a scan made now is filed under
    keys: tuple[str, ...]  # keys an earlier scan may be found under, preferred first
    toc: TocPosition | None = None
    diff_id: str | None = None  # hash the uncompressed bytes against it


def _layer_read(layer: Layer, key: str, lazy: bool, verify_diff_ids: bool) -> _LayerRead:
    what = f"layer {layer.index} ({layer.digest})"
    toc = toc_position(layer.annotations, layer.size, what) if lazy else None
    if toc is not None:
        toc_key = f"{key}-toc{toc.checksum[7:23]}"
        return _LayerRead(layer, toc_key, (key, toc_key), toc)  # a whole read serves too, first
    # A layer stored uncompressed has its diff_id for digest: the blob's check covers it.
    hashed = verify_diff_ids and layer.digest != layer.diff_id
    return _LayerRead(layer, key, (key,), diff_id=layer.diff_id if hashed else None)


def build_rootfs(image: Image, cache: BlobCache, wants: Sequence[Want] = (),
                 limits: Limits = Limits(), progress: LayerProgress | None = None,
                 verify_diff_ids: bool = False, lazy: bool = False, jobs: int = 1) -> RootfsIndex:
    """Stream every layer once (or take its cached scan) into one merged index, in order.

    ``verify_diff_ids`` hashes each compressed layer's content against the config's diff_id
    (a SHA-256 over every uncompressed byte, about a fifth of a cold pass's CPU); without it, what is
    read is still exactly the manifest's blobs, each checked against its digest.

    ``lazy`` reads a zstd:chunked or eStargz layer by its table of contents instead
    (:mod:`auditor.rootfs.lazy`): only the chunks catalogers read are fetched, each checked
    against the table, the table against the manifest's annotation; the blob's digest is then
    not checked.

    ``jobs`` > 1 reads up to that many uncached layers at once, ahead of the merge. Which files
    a layer must hand over can depend on the layers below it (a file written through a
    symlinked parent lands elsewhere), and those are not merged yet when it is read ahead: it is
    read by the wants alone, then checked at its turn as a cached scan is, and read again in the
    rare case it missed a file its landing makes wanted. The index is the same as with one job."""
    if lazy and verify_diff_ids:
        raise InputError("a lazily read layer is not read whole, so its diff_id cannot be "
                         "verified: use --lazy or --verify-diff-ids, not both")
    progress = progress or LayerProgress()
    compiled = compile_plan(wants)
    key = cache_key(wants, limits)
    index = RootfsIndex()
    plan = Plan(wanted_over(index, compiled.capture), wanted_over(index, compiled.analyzers))
    reads = [_layer_read(layer, key, lazy, verify_diff_ids) for layer in image.layers]
    with _ReadAhead(jobs, progress) as ahead:
        if ahead.running:
            submitted: set[str] = set()
            for read in reads:  # a blob twice in one image is read once: its second turn finds its scan
                if read.layer.digest not in submitted and not _any_cached(cache, read):
                    submitted.add(read.layer.digest)
                    ahead.submit(read.layer, functools.partial(
                        _read_layer, image, read, compiled, cache, limits, ahead.progress))
        for read in reads:
            layer, made = read.layer, True
            scan = ahead.take(layer)
            if scan is not None and not _holds_wanted(scan, plan, limits, index, compiled):
                scan = None  # it missed a file its landing makes wanted: read over the merge
            elif scan is None and (scan := _cached(cache, read, plan, limits, index)) is not None:
                made = False
                progress.layer_started(layer, None, cached=True)
            if scan is None:
                scan = _read_layer(image, read, plan, cache, limits, progress)
            if made:
                blobs = [layer.digest, layer.diff_id] if read.diff_id else [layer.digest]
                cache.store_layer_index(layer.diff_id, blobs, read.key, scan.to_json())
            index.apply(scan)
            progress.layer_done(layer)
    return index


def _read_layer(image: Image, read: _LayerRead, plan: Plan, cache: BlobCache, limits: Limits,
                progress: LayerProgress) -> LayerScan:
    layer = read.layer
    if read.toc is not None:
        progress.layer_started(layer, None, cached=False)
        return scan_lazy_layer(image, layer, read.toc, plan, cache, limits, progress)
    progress.layer_started(layer, layer.size, cached=False)
    return scan_one_layer(image, layer, plan, cache, limits, progress, read.diff_id)


def _cached(cache: BlobCache, read: _LayerRead, plan: Plan, limits: Limits,
            index: RootfsIndex) -> LayerScan | None:
    return next(filter(None, (_cached_scan(cache, read.layer, key, plan, limits, index)
                              for key in read.keys)), None)


def _any_cached(cache: BlobCache, read: _LayerRead) -> bool:
    return any(cache.layer_index_path(read.layer.diff_id, read.layer.digest, k).is_file()
               for k in read.keys)


class LayerReadStopped(BaseException):
    """Raised inside a layer read ahead when the pass stopped (an error, an interrupt) and its
    scan is no longer wanted: a BaseException, so no handler of content errors takes it."""


class _ReadAhead:
    """Layers read in worker threads, ahead of the merge, which takes their scans in order.

    Leaving the block stops the reads still running (at their next chunk) and waits for them,
    so nothing reads from the source or writes to the cache after the pass has ended."""

    def __init__(self, jobs: int, progress: LayerProgress) -> None:
        self._stop = threading.Event()
        self._pool = (ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="layer-read")
                      if jobs > 1 else None)
        self._futures: dict[int, Future[LayerScan]] = {}
        self.progress = _Stoppable(progress, self._stop)

    @property
    def running(self) -> bool:
        return self._pool is not None

    def submit(self, layer: Layer, read: Callable[[], LayerScan]) -> None:
        assert self._pool is not None
        self._futures[layer.index] = self._pool.submit(read)

    def take(self, layer: Layer) -> LayerScan | None:
        """The scan read ahead for ``layer`` (waiting for it), or None if none was."""
        future = self._futures.pop(layer.index, None)
        return future.result() if future is not None else None

    def __enter__(self) -> _ReadAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


class _Stoppable(LayerProgress):
    """A layer's progress that stops its read once the pass has stopped."""

    def __init__(self, progress: LayerProgress, stop: threading.Event) -> None:
        self._progress, self._stop = progress, stop

    def layer_started(self, layer: Layer, total: int | None, cached: bool) -> None:
        self._check()
        self._progress.layer_started(layer, total, cached)

    def advance(self, layer: Layer, n: int) -> None:
        self._check()
        self._progress.advance(layer, n)

    def layer_done(self, layer: Layer) -> None:
        self._progress.layer_done(layer)

    def _check(self) -> None:
        if self._stop.is_set():
            raise LayerReadStopped


def _cached_scan(cache: BlobCache, layer: Layer, key: str, plan: Plan, limits: Limits,
                 index: RootfsIndex) -> LayerScan | None:
    """The layer's cached scan, if it holds every file wanted over these lower layers."""
    data = cache.load_layer_index(layer.diff_id, layer.digest, key)
    if data is None or not all(cache.has(d) for d in data["captured"].values()):
        return None
    scan = LayerScan.from_json(data, layer.index)
    return scan if _holds_wanted(scan, plan, limits, index) else None


def _holds_wanted(scan: LayerScan, plan: Plan, limits: Limits, index: RootfsIndex,
                  alone: Plan | None = None) -> bool:
    """Whether a scan holds every file wanted over the lower layers in ``index``.

    A scan is cached by its layer's bytes alone, but which files it had to hand over can depend
    on the symlinks of the layers below it: a scan made over other lower layers (or, ``alone``,
    by the wants alone, ahead of them) may lack one."""
    for entry in scan.entries:
        # A path that lands where it says was judged by the same wants when the scan was made
        # (the cache key holds them); only one moved by a symlinked parent needs a second look.
        if entry.type != "file" or index.canonical_path(entry.path) == entry.path:
            continue
        if (entry.size <= limits.max_capture_bytes and entry.path not in scan.captured
                and plan.capture(entry.path)):
            return False
        if entry.size > limits.max_analyze_bytes or entry.path in scan.analyzed:
            continue
        handlers = plan.analyzers(entry.path)
        # A handler with a magic may have passed the file over, having looked at it: only one
        # without counts, unless the scan was made by the wants alone, which for a file its
        # own path does not match did not look at all.
        if any(not magic for _, _, magic in handlers) or (
                handlers and alone is not None and not alone.analyzers(entry.path)):
            return False
    return True


def scan_lazy_layer(image: Image, layer: Layer, toc: TocPosition, plan: Plan, cache: BlobCache,
                    limits: Limits, progress: LayerProgress) -> LayerScan:
    """One zstd:chunked or eStargz layer read by its table of contents."""
    what = f"layer {layer.index} ({layer.digest})"
    kept = cache.has(layer.digest)  # asked once: a layer's reads are a thousand ranges

    def fetch(start: int, end: int) -> bytes:
        data = image.read_range(layer, start, end, kept)
        progress.advance(layer, len(data))
        return data

    footer = 0
    if not toc.located:  # eStargz: the table's place is in the blob's footer
        footer = ESTARGZ_FOOTER_BYTES
        toc = locate_estargz_toc(fetch(layer.size - footer, layer.size), toc, layer.size, what)
    entries = parse_toc(fetch(toc.offset, toc.offset + toc.length), toc, what, limits.max_entries)
    scan = scan_toc(entries, layer.index, plan.capture, _storer(cache), fetch, limits, what,
                    plan.analyzers, str(cache.root / "tmp"), toc.format)
    scan.toc, scan.toc_format = toc.checksum, toc.format
    scan.fetched_bytes += toc.length + footer
    return scan


def _storer(cache: BlobCache) -> Callable[[bytes], str]:
    """Where captured files go: the blob cache, under their digest."""
    def store(data: bytes) -> str:
        digest = digest_bytes(data)
        cache.put_bytes(digest, data)
        return digest

    return store


def scan_one_layer(image: Image, layer: Layer, plan: Plan, cache: BlobCache,
                   limits: Limits, progress: LayerProgress, diff_id: str | None = None) -> LayerScan:
    """One layer's pass; with ``diff_id``, its uncompressed bytes are hashed against it."""
    what = f"layer {layer.index} ({layer.digest})"
    with image.open_layer(layer, functools.partial(progress.advance, layer)) as compressed:
        reader = LayerReader(compressed, limits, what, diff_id)
        try:
            scan = scan_layer(reader, layer.index, plan.capture, _storer(cache),  # type: ignore[arg-type]
                              limits, what, plan.analyzers, str(cache.root / "tmp"))
            reader.finish()  # the tar's end is not the stream's: every byte inflated (and hashed)
        except LimitExceededError:
            raise
        except InputError:
            # Bytes that fail to decode may simply not be the blob's: say so when it is the case.
            reader.close()
            compressed.drain()
            raise
        finally:
            reader.close()
        compressed.drain()
    scan.uncompressed_bytes = reader.uncompressed_bytes
    return scan
