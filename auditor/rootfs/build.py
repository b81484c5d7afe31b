"""Build the merged rootfs index of an image: one pass per layer, cached per layer blob.

A layer's cached scan is filed under its diff_id *and* the blob it was read from: the blob's digest
is always verified, the config's diff_id only with ``verify_diff_ids``. A scan is therefore reused
only for the very bytes it was made from, never for another blob that merely claims the same
diff_id. A blob checked against its diff_id (hashed on the way, or stored uncompressed, where the
two are one) is filed under the diff_id's own name too, so the uncompressed form of the same layer
(a ``docker save`` tarball, an engine's image) finds it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
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
    def advance(self, n: int) -> None: ...
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


def build_rootfs(image: Image, cache: BlobCache, wants: Sequence[Want] = (),
                 limits: Limits = Limits(), progress: LayerProgress | None = None,
                 verify_diff_ids: bool = False, lazy: bool = False) -> RootfsIndex:
    """Stream every layer once (or take its cached scan), in order, into one merged index.

    ``verify_diff_ids`` hashes each compressed layer's content against the config's diff_id
    (a SHA-256 over every uncompressed byte, about a fifth of a cold pass's CPU); without it, what is
    read is still exactly the manifest's blobs, each checked against its digest.

    ``lazy`` reads a zstd:chunked or eStargz layer by its table of contents instead
    (:mod:`auditor.rootfs.lazy`): only the chunks catalogers read are fetched, each checked
    against the table, the table against the manifest's annotation; the blob's digest is then
    not checked."""
    if lazy and verify_diff_ids:
        raise InputError("a lazily read layer is not read whole, so its diff_id cannot be "
                         "verified: use --lazy or --verify-diff-ids, not both")
    progress = progress or LayerProgress()
    compiled = compile_plan(wants)
    key = cache_key(wants, limits)
    index = RootfsIndex()
    plan = Plan(wanted_over(index, compiled.capture), wanted_over(index, compiled.analyzers))
    for layer in image.layers:
        what = f"layer {layer.index} ({layer.digest})"
        toc = toc_position(layer.annotations, layer.size, what) if lazy else None
        toc_key = f"{key}-toc{toc.checksum[7:23]}" if toc else None
        scan = _cached_scan(cache, layer, key, plan, limits, index)
        if scan is None and toc_key:  # a whole read of the blob serves too, and first
            scan = _cached_scan(cache, layer, toc_key, plan, limits, index)
        if scan is not None:
            progress.layer_started(layer, None, cached=True)
        elif toc is not None and toc_key is not None:
            progress.layer_started(layer, None, cached=False)
            scan = scan_lazy_layer(image, layer, toc, plan, cache, limits, progress)
            cache.store_layer_index(layer.diff_id, [layer.digest], toc_key, scan.to_json())
        else:
            progress.layer_started(layer, layer.size, cached=False)
            # A layer stored uncompressed has its diff_id for digest: the blob's check covers it.
            hashed = verify_diff_ids and layer.digest != layer.diff_id
            scan = scan_one_layer(image, layer, plan, cache, limits, progress,
                                  layer.diff_id if hashed else None)
            blobs = [layer.digest, layer.diff_id] if hashed else [layer.digest]
            cache.store_layer_index(layer.diff_id, blobs, key, scan.to_json())
        index.apply(scan)
        progress.layer_done(layer)
    return index


def _cached_scan(cache: BlobCache, layer: Layer, key: str, plan: Plan, limits: Limits,
                 index: RootfsIndex) -> LayerScan | None:
    """The layer's cached scan, if it holds every file wanted over these lower layers.

    A scan is cached by its layer's bytes alone, but which files it had to hand over can depend
    on the symlinks of the layers below it; a scan made over other lower layers may lack one."""
    data = cache.load_layer_index(layer.diff_id, layer.digest, key)
    if data is None or not all(cache.has(d) for d in data["captured"].values()):
        return None
    scan = LayerScan.from_json(data, layer.index)
    for entry in scan.entries:
        # A path that lands where it says was judged by the same wants when the scan was made
        # (the cache key holds them); only one moved by a symlinked parent needs a second look.
        if entry.type != "file" or index.canonical_path(entry.path) == entry.path:
            continue
        if (entry.size <= limits.max_capture_bytes and entry.path not in scan.captured
                and plan.capture(entry.path)):
            return None
        # (a handler with a magic may have passed the file over: only one without counts)
        if (entry.size <= limits.max_analyze_bytes and entry.path not in scan.analyzed
                and any(not magic for _, _, magic in plan.analyzers(entry.path))):
            return None
    return scan


def scan_lazy_layer(image: Image, layer: Layer, toc: TocPosition, plan: Plan, cache: BlobCache,
                    limits: Limits, progress: LayerProgress) -> LayerScan:
    """One zstd:chunked or eStargz layer read by its table of contents."""
    what = f"layer {layer.index} ({layer.digest})"
    kept = cache.has(layer.digest)  # asked once: a layer's reads are a thousand ranges

    def fetch(start: int, end: int) -> bytes:
        data = image.read_range(layer, start, end, kept)
        progress.advance(len(data))
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
    with image.open_layer(layer, progress.advance) as compressed:
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
