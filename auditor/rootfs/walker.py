"""One streaming pass over one layer's tar: entries, whiteouts, and the files catalogers want.

Nothing is extracted to disk and a layer is never held in memory: ``tarfile`` reads the stream
forward, and only files whose path a cataloger declared (and within a size bound) are read out.
Hostile entries (absolute paths, ``..``, unknown types) are recorded as skipped, never applied.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from auditor.errors import AuditorError, InputError, LimitExceededError
from auditor.model import FileEntry, Skipped
from auditor.rootfs.decompress import Limits

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_TYPES = {
    tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file",
    tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo",
}

# path -> capture this file's content?
WantFn = Callable[[str], bool]
# content -> content digest; where captured bytes go (the blob cache, or memory)
StoreFn = Callable[[bytes], str]
# (a seekable copy of a file, its size) -> facts (JSON-able); may raise on hostile content
Analyzer = Callable[[BinaryIO, int], dict[str, Any]]
# (owner, analyzer, magic): the analyzer sees only files that start with ``magic`` (b"": all)
Handler = tuple[str, Analyzer, bytes]
# path -> the handlers that want to see this file
AnalyzersFn = Callable[[str], Sequence[Handler]]

IN_MEMORY_BYTES = 8 << 20  # files an analyzer reads from memory; larger ones are spilled
ANALYSES_AHEAD = 4  # copies handed to the analyzing thread and not yet analyzed, at most


@dataclass
class LayerScan:
    """What one layer holds, before it is merged over the layers below."""

    layer: int
    entries: list[FileEntry] = field(default_factory=list)
    whiteouts: list[str] = field(default_factory=list)
    opaque_dirs: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    captured: dict[str, str] = field(default_factory=dict)  # path -> content digest
    analyzed: dict[str, dict[str, Any]] = field(default_factory=dict)  # path -> owner -> facts
    uncompressed_bytes: int = 0
    toc: str | None = None  # read by its table of contents (its digest): see auditor.rootfs.lazy
    toc_format: str = "zstd:chunked"  # then: the layer's format (zstd:chunked, estargz)
    fetched_bytes: int = 0  # and the compressed bytes fetched

    def lazy(self) -> dict[str, Any]:
        """How the layer was read lazily (the report's ``lazy``); empty if it was read whole."""
        if not self.toc:
            return {}
        return {"toc": self.toc, "format": self.toc_format, "fetched_bytes": self.fetched_bytes}

    def to_json(self) -> dict[str, Any]:
        lazy = self.lazy()
        return {
            "layer": self.layer,
            "entries": [[e.path, e.type, e.mode, e.size, e.link, e.uid, e.gid]
                        for e in self.entries],
            "whiteouts": self.whiteouts,
            "opaque_dirs": self.opaque_dirs,
            "skipped": [[s.path, s.reason] for s in self.skipped],
            "captured": self.captured,
            "analyzed": self.analyzed,
            "uncompressed_bytes": self.uncompressed_bytes,
            **lazy,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], layer: int) -> LayerScan:
        return cls(
            layer=layer,
            entries=[FileEntry(p, t, layer, m, s, link, u, g)
                     for p, t, m, s, link, u, g in data["entries"]],
            whiteouts=list(data["whiteouts"]),
            opaque_dirs=list(data["opaque_dirs"]),
            skipped=[Skipped(layer, p, r) for p, r in data["skipped"]],
            captured=dict(data["captured"]),
            analyzed=dict(data.get("analyzed") or {}),
            uncompressed_bytes=int(data.get("uncompressed_bytes", 0)),
            toc=data.get("toc"),
            toc_format=str(data.get("format", "zstd:chunked")),
            fetched_bytes=int(data.get("fetched_bytes", 0)),
        )


class _StrictTarInfo(tarfile.TarInfo):
    """Python's tarfile takes a cut or garbled header after the first as the end of the archive;
    Go's archive/tar (containerd, moby) fails instead, and so do we. A clean end is a zero block,
    or the stream ending exactly on a block boundary."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tarfile_)
        except (tarfile.TruncatedHeaderError, tarfile.InvalidHeaderError) as err:  # type: ignore[attr-defined]
            if tarfile_.offset:
                raise tarfile.ReadError(f"bad header at offset {tarfile_.offset}: {err}") from None
            raise


def normalize_path(name: str) -> tuple[str | None, str | None]:
    """A tar member name as a root-relative path, or (None, reason) when it must not be applied."""
    if "\0" in name:
        return None, "path contains a NUL byte"
    if name.startswith("/"):
        return None, "absolute path in a layer"
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None, "path with a '..' component (would escape the root)"
    return "/".join(parts), None


def scan_layer(stream: BinaryIO, layer: int, wants: WantFn, store: StoreFn,
               limits: Limits = Limits(), what: str | None = None,
               analyzers: AnalyzersFn | None = None, spill_dir: str | None = None) -> LayerScan:
    """Read one uncompressed layer tar from ``stream`` to its end. ``stream`` must ``tell`` and
    ``seek`` forward (a :class:`~auditor.rootfs.decompress.LayerReader`, a file, ``BytesIO``).

    Files ``wants`` names are captured (their bytes stored through ``store``); files
    ``analyzers`` names are handed, as a seekable copy (in memory, or spilled to an anonymous
    temporary file in ``spill_dir``), to each analyzer, and only its facts are kept."""
    what = what or f"layer {layer}"
    scan = LayerScan(layer)
    try:
        # "r:" (not the stream mode "r|"): tarfile then seeks past the contents it does not
        # read, which a layer stream does in whole chunks; the stream mode reads them through
        # in 10 KiB records. Nothing here seeks back (no extraction of links, no member list).
        tar = tarfile.open(fileobj=stream, mode="r:", errorlevel=2,  # noqa: SIM115 - member by member
                           tarinfo=_StrictTarInfo)
    except tarfile.ReadError as err:
        if not _nonempty(err):
            return scan  # an empty layer: valid, holds nothing
        raise InputError(f"{what} is not a tar archive ({err})") from None
    count = 0
    with _Analyses(scan) as analyses:
        handover = _Handover(wants, store, analyzers, spill_dir, analyses)
        try:
            while True:
                member = tar.next()
                if member is None:
                    break
                tar.members = []  # tarfile keeps every member otherwise: O(entries) memory
                count += 1
                if count > limits.max_entries:
                    raise LimitExceededError(
                        f"{what} has more than {limits.max_entries} entries; raise --max-entries")
                _take(tar, member, scan, handover, limits)
        except tarfile.ReadError as err:
            raise InputError(f"{what} is truncated or corrupt ({err})") from None
        except EOFError:
            raise InputError(f"{what} is truncated (unexpected end of the tar stream)") from None
        analyses.finish()
    return scan


class _Analyses:
    """Analyzers run in a worker thread while the pass reads on, so the layer stream does not
    wait for them (an ELF library's analysis takes a fraction of a second; decompression goes on
    meanwhile). At most ``ANALYSES_AHEAD`` copies wait for their turn (memory and temporary
    files stay bounded); :meth:`finish` collects the facts in the order the files came."""

    def __init__(self, scan: LayerScan) -> None:
        self._scan = scan
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="layer-analyze")
        self._slots = threading.BoundedSemaphore(ANALYSES_AHEAD)
        self._pending: list[tuple[str, Future[dict[str, dict[str, Any]]], BinaryIO]] = []

    def submit(self, path: str, copy: BinaryIO, size: int, owners: Sequence[Handler]) -> None:
        self._slots.acquire()
        try:
            future = self._pool.submit(self._analyze, copy, size, owners)
        except BaseException:
            self._slots.release()
            copy.close()
            raise
        self._pending.append((path, future, copy))

    def _analyze(self, copy: BinaryIO, size: int, owners: Sequence[Handler]) -> dict[str, dict[str, Any]]:
        try:
            with copy:
                facts = {}
                for owner, analyze, _magic in owners:
                    copy.seek(0)
                    facts[owner] = run_analyzer(analyze, copy, size)
                return facts
        finally:
            self._slots.release()

    def finish(self) -> None:
        for path, future, _ in self._pending:
            self._scan.analyzed.setdefault(path, {}).update(future.result())
        self._pending.clear()

    def __enter__(self) -> _Analyses:
        return self

    def __exit__(self, *exc: object) -> None:
        for _, future, copy in self._pending:  # an error stopped the pass: drop what waits
            if future.cancel():
                copy.close()
                self._slots.release()
        self._pool.shutdown(wait=True)


def _nonempty(err: tarfile.ReadError) -> bool:
    return "empty file" not in str(err)


@dataclass(frozen=True)
class _Handover:
    wants: WantFn
    store: StoreFn
    analyzers: AnalyzersFn | None
    spill_dir: str | None
    analyses: _Analyses


def _take(tar: tarfile.TarFile, member: tarfile.TarInfo, scan: LayerScan, handover: _Handover,
          limits: Limits) -> None:
    path = record_entry(scan, member.name, _TYPES.get(member.type), f"tar entry type {member.type!r}",
                        member.mode, member.size, member.linkname, member.uid, member.gid)
    if path is not None:
        capture = handover.wants(path)
        owners = handover.analyzers(path) if handover.analyzers else ()
        if capture or owners:
            _hand_over(tar, member, scan, path, member.size, capture, owners, handover, limits)


def record_entry(scan: LayerScan, name: str, kind: str | None, type_text: str, mode: int,
                 size: int, linkname: str, uid: int, gid: int) -> str | None:
    """Record one layer entry (``kind``: file, dir, symlink, ...; None for a type we do not
    apply, named ``type_text``) as it stands in the layer: a path, a whiteout, an opaque marker,
    or a skipped hostile entry. Returns the path of a regular file, whose bytes may be wanted."""
    path, reason = normalize_path(name)
    if reason:
        scan.skipped.append(Skipped(scan.layer, name, reason))
        return None
    if not path:
        return None  # the root directory itself
    head, _, base = path.rpartition("/")
    if base == OPAQUE_MARKER:
        scan.opaque_dirs.append(head)
        return None
    if base.startswith(WHITEOUT_PREFIX):
        target = base[len(WHITEOUT_PREFIX):]
        if target.startswith(WHITEOUT_PREFIX):  # aufs metadata such as .wh..wh.plnk
            scan.skipped.append(Skipped(scan.layer, path, "aufs metadata entry"))
        elif target:
            scan.whiteouts.append(f"{head}/{target}" if head else target)
        return None
    if kind is None:
        scan.skipped.append(Skipped(scan.layer, path, f"unsupported {type_text}"))
        return None
    link = None
    if kind == "symlink":
        link = linkname
        if not link:
            scan.skipped.append(Skipped(scan.layer, path, "symlink with an empty target"))
            return None
    elif kind == "hardlink":
        link, reason = normalize_path(linkname)
        if reason or not link:
            scan.skipped.append(Skipped(scan.layer, path, f"hardlink target {linkname!r}: "
                                        f"{reason or 'empty'}"))
            return None
    scan.entries.append(FileEntry(path, kind, scan.layer, mode & 0o7777,
                                  size if kind == "file" else 0, link, uid, gid))
    return path if kind == "file" else None


def within_limits(scan: LayerScan, path: str, size: int, capture: bool,
                  owners: Sequence[Handler], limits: Limits) -> tuple[bool, Sequence[Handler]]:
    """What may still be done with a wanted file of ``size`` bytes under ``limits``; what may
    not is recorded as skipped."""
    if capture and size > limits.max_capture_bytes:
        capture = False
        scan.skipped.append(Skipped(
            scan.layer, path, f"{size} bytes, over the capture limit of "
            f"{limits.max_capture_bytes}; not cataloged (raise --max-file-size)"))
    if owners and size > limits.max_analyze_bytes:
        owners = ()
        scan.skipped.append(Skipped(
            scan.layer, path, f"{size} bytes, over the analysis limit of "
            f"{limits.max_analyze_bytes}; not analyzed"))
    return capture, owners


def magic_length(owners: Sequence[Handler]) -> int:
    """How many first bytes decide which of ``owners`` look at a file."""
    return max((len(m) for _, _, m in owners), default=0)


def _hand_over(tar: tarfile.TarFile, member: tarfile.TarInfo, scan: LayerScan, path: str,
               size: int, capture: bool, owners: Sequence[Handler],
               handover: _Handover, limits: Limits) -> None:
    capture, owners = within_limits(scan, path, size, capture, owners, limits)
    if not capture and not owners:
        return
    direct = _in_place(tar, member)
    extracted = direct or tar.extractfile(member)
    if extracted is None:
        return
    # the first bytes decide which analyzers look at the file: a non-ELF file among "*" is
    # passed over without being copied anywhere
    head = extracted.read(min(size, magic_length(owners)))
    owners = [h for h in owners if head.startswith(h[2])]
    if not capture and not owners:
        return
    if capture or size <= IN_MEMORY_BYTES:
        data = head + extracted.read(size - len(head))
        if len(data) != size:
            raise EOFError
        if capture:
            scan.captured[path] = handover.store(data)
        copy: BinaryIO = io.BytesIO(data)
    else:
        copy = tempfile.TemporaryFile(dir=handover.spill_dir)  # noqa: SIM115 - closed below
        copy.write(head)
        copied = len(head)
        if direct is not None:  # a library of hundreds of MB: no copy on the way to the file
            copied += direct.copy_to(copy, size - copied)
        while chunk := extracted.read(min(SPILL_CHUNK, size - copied)):
            copy.write(chunk)
            copied += len(chunk)
        if copied != size:
            copy.close()
            raise EOFError
    if owners:
        handover.analyses.submit(path, copy, size, owners)
    else:
        copy.close()


SPILL_CHUNK = 1 << 20


def _in_place(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Any:
    """The layer stream itself at the member's first byte, when it can be read there: a
    :class:`~auditor.rootfs.decompress.LayerReader` (which writes its chunks out without copying
    them) and a member stored as one run of bytes (not a GNU sparse file). The caller reads no
    more than the member's size. Else None: tarfile's own reader serves."""
    stream = tar.fileobj
    if not hasattr(stream, "copy_to") or member.issparse():
        return None
    stream.seek(member.offset_data)
    return stream


def run_analyzer(analyze: Analyzer, stream: BinaryIO, size: int) -> dict[str, Any]:
    """An analyzer's facts; hostile content that breaks it is recorded, and the pass goes on."""
    try:
        return analyze(stream, size)
    except AuditorError:
        raise  # the stream's own failure (a fetched chunk that is not what it should be)
    except Exception as err:  # image content is hostile: any parser may fail on it
        return {"error": f"{err.__class__.__name__}: {err}"[:500]}
