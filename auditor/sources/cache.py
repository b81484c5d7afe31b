"""A content-addressed store for blobs, and for per-layer results keyed by diff_id and blob.

Layout under the cache directory (``$AUDITOR_CACHE_DIR``, else ``$XDG_CACHE_HOME/auditor``, else
``~/.cache/auditor``)::

    blobs/sha256/<hex>     manifests, configs, layer blobs and captured files, verified
    layers/<diff_id hex>-<blob hex>-<key>.json  the rootfs index of one layer read from one blob
                           (key: indexer and catalogers' versions)
    tmp/                   partial downloads (resumable) and files being written
    locks/                 one lock file per digest being downloaded

Every write is a temporary file renamed into place, so a killed process never leaves a half
file under a digest's name, and two processes auditing the same image at once take turns on the
download through ``flock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from auditor.digest import VerifyingReader, parse_digest
from auditor.errors import DigestMismatchError, EnvironmentProblem
from auditor.sources.blobfile import SequentialFile

CHUNK = 1 << 20


def default_cache_dir() -> Path:
    if os.environ.get("AUDITOR_CACHE_DIR"):
        return Path(os.environ["AUDITOR_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "auditor"


@dataclass(frozen=True)
class CacheInfo:
    path: str
    blobs: int
    blob_bytes: int
    layer_indexes: int
    layer_index_bytes: int
    partials: int
    partial_bytes: int


# An opener returns a stream of the blob starting at the offset it was asked for, or at 0 when
# it cannot resume; the second value says which.
BlobOpener = Callable[[int], tuple[BinaryIO, int]]


class BlobCache:
    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root else default_cache_dir()
        try:
            for sub in ("blobs/sha256", "blobs/sha512", "layers", "tmp", "locks"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise EnvironmentProblem(f"cannot use cache directory {self.root}: {err.strerror}") from None

    # -- blobs -----------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        algorithm, hexpart = parse_digest(digest)
        return self.root / "blobs" / algorithm / hexpart

    def has(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def read_bytes(self, digest: str) -> bytes | None:
        path = self.blob_path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        _touch(path)
        return data

    def open(self, digest: str) -> BinaryIO:
        path = self.blob_path(digest)
        _touch(path)
        return open(path, "rb")

    def put_bytes(self, digest: str, data: bytes) -> Path:
        """Store bytes under their digest, after checking that they are what the digest says."""
        algorithm, hexpart = parse_digest(digest)
        if hashlib.new(algorithm, data).hexdigest() != hexpart:
            raise DigestMismatchError(f"blob {digest} does not match its content; not cached")
        path = self.blob_path(digest)
        if not path.exists():
            self._write_atomic(path, data)
        return path

    def ingest(self, digest: str, size: int | None, opener: BlobOpener,
               progress: Callable[[int], None] | None = None) -> Path:
        """Download a blob into the cache, resuming a partial download left by a killed run.

        The bytes are verified against ``digest`` (and ``size`` when known) before they get the
        digest's name; a mismatch deletes the partial file and raises, so nothing wrong enters.
        """
        algorithm, hexpart = parse_digest(digest)
        final = self.blob_path(digest)
        with self._lock(hexpart):
            if final.is_file():
                return final
            partial = self._partial_path(hexpart)
            for attempt in (0, 1):
                offset = partial.stat().st_size if partial.exists() else 0
                if size is not None and offset > size:
                    offset = 0
                try:
                    hasher, total = self._download(partial, offset, algorithm, opener,
                                                   progress, size)
                    _check(hasher, total, hexpart, size, digest)
                except DigestMismatchError:
                    partial.unlink(missing_ok=True)
                    if offset and attempt == 0:
                        continue  # the resumed bytes were bad: start over once
                    raise
                os.replace(partial, final)
                return final
        raise AssertionError("unreachable")

    def tee(self, digest: str, size: int | None, opener: BlobOpener, what: str,
            progress: Callable[[int], None] | None = None) -> VerifyingReader:
        """A blob's bytes as they download, written into the cache on the way.

        The reader the caller gets verifies ``digest`` (and ``size``) at its end; only then does
        the file get the digest's name, so a cold audit reads a remote layer once, decompressing
        while it downloads, instead of downloading it whole and reading it back. A download cut
        short stays as a partial file; the next run resumes it with :meth:`ingest` (which checks
        the resumed bytes before anyone reads them) and reads the cached file. Holds the
        digest's lock until the reader is closed."""
        _, hexpart = parse_digest(digest)
        lock = self._hold_lock(hexpart)
        try:
            if not self.has(digest) and not self._partial_path(hexpart).exists():
                return _TeeReader(self, digest, size, opener, what, progress, lock)
        except BaseException:
            lock.close()
            raise
        lock.close()
        path = self.ingest(digest, size, opener, progress)  # resumes, or another run fetched it
        return VerifyingReader(open(path, "rb"), digest, size, what)

    def _partial_path(self, hexpart: str) -> Path:
        return self.root / "tmp" / f"{hexpart}.partial"

    def _hold_lock(self, name: str) -> BinaryIO:
        """The lock file of ``name``, locked; closing it releases the lock."""
        f = open(self.root / "locks" / f"{name}.lock", "a")  # noqa: SIM115 - the caller closes it
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except BaseException:
            f.close()
            raise
        return f  # type: ignore[return-value]

    def _download(self, partial: Path, offset: int, algorithm: str, opener: BlobOpener,
                  progress: Callable[[int], None] | None,
                  size: int | None) -> tuple[Any, int]:
        """Write the blob to ``partial``, hashing it on the way: only the prefix a resumed
        download keeps is read back. Returns the hash and the number of bytes."""
        stream, start = opener(offset)
        hasher = hashlib.new(algorithm)
        with contextlib.closing(stream):
            if start:
                with open(partial, "rb") as kept:
                    while (left := start - kept.tell()) > 0 and (chunk := kept.read(min(CHUNK, left))):
                        hasher.update(chunk)
            written = start
            if progress and start:
                progress(start)
            with SequentialFile(partial, start) as out:
                while chunk := stream.read(CHUNK):
                    written += len(chunk)
                    if size is not None and written > size:
                        raise DigestMismatchError(f"blob is longer than its declared size {size}")
                    hasher.update(chunk)
                    out.write(chunk)
                    if progress:
                        progress(len(chunk))
        return hasher, written

    # -- per-layer results -----------------------------------------------------------------
    def layer_index_path(self, diff_id: str, blob: str, key: str) -> Path:
        """Where the scan of layer ``diff_id``, read from blob ``blob``, is kept."""
        _, layer_hex = parse_digest(diff_id)
        _, blob_hex = parse_digest(blob)
        return self.root / "layers" / f"{layer_hex}-{blob_hex}-{key}.json"

    def load_layer_index(self, diff_id: str, blob: str, key: str) -> dict[str, Any] | None:
        path = self.layer_index_path(diff_id, blob, key)
        try:
            with open(path, "rb") as f:
                data = json.load(f)
        except (FileNotFoundError, ValueError):
            return None
        _touch(path)
        return data

    def store_layer_index(self, diff_id: str, blobs: Sequence[str], key: str,
                          data: dict[str, Any]) -> None:
        """Keep one scan for each blob known to hold the layer's bytes."""
        payload = json.dumps(data, separators=(",", ":")).encode()
        for blob in blobs:
            self._write_atomic(self.layer_index_path(diff_id, blob, key), payload)

    # -- maintenance -----------------------------------------------------------------------
    def info(self) -> CacheInfo:
        def count(folder: Path, pattern: str = "*") -> tuple[int, int]:
            files = [p for p in folder.glob(pattern) if p.is_file()]
            return len(files), sum(p.stat().st_size for p in files)

        b1, s1 = count(self.root / "blobs" / "sha256")
        b2, s2 = count(self.root / "blobs" / "sha512")
        li, ls = count(self.root / "layers")
        pa, ps = count(self.root / "tmp")
        return CacheInfo(str(self.root), b1 + b2, s1 + s2, li, ls, pa, ps)

    def prune(self, older_than_days: float | None = None, everything: bool = False) -> int:
        """Remove partial downloads, and entries unused for ``older_than_days`` (or all)."""
        removed = 0
        cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
        for folder in ("blobs/sha256", "blobs/sha512", "layers", "tmp"):
            for path in (self.root / folder).iterdir():
                if not path.is_file():
                    continue
                stale = folder == "tmp" or everything or (
                    cutoff is not None and path.stat().st_mtime < cutoff)
                if stale:
                    with self._lock(path.name.split("-")[0].split(".")[0]):
                        path.unlink(missing_ok=True)
                    removed += 1
        if everything:
            shutil.rmtree(self.root / "demo", ignore_errors=True)
        return removed

    # -- helpers ---------------------------------------------------------------------------
    def temp_path(self, suffix: str = "") -> Path:
        fd, name = tempfile.mkstemp(dir=self.root / "tmp", suffix=suffix)
        os.close(fd)
        return Path(name)

    def _write_atomic(self, path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp", prefix=path.name[:16] + ".")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        with self._hold_lock(name):
            yield


def _check(hasher: Any, total: int, hexpart: str, size: int | None, digest: str) -> None:
    if size is not None and total != size:
        raise DigestMismatchError(f"blob {digest} has {total} bytes, expected {size}; not cached")
    if hasher.hexdigest() != hexpart:
        raise DigestMismatchError(
            f"blob {digest} does not match its content (got {hasher.name}:{hasher.hexdigest()}); "
            "not cached")


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)


class ProgressReader:
    """A stream that reports how many bytes were read from it."""

    def __init__(self, raw: BinaryIO, progress: Callable[[int], None] | None) -> None:
        self._raw, self._progress = raw, progress

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if self._progress and data:
            self._progress(len(data))
        return data

    def close(self) -> None:
        self._raw.close()


class _TeeSource:
    """The network's bytes, written to the partial file as they are read."""

    def __init__(self, partial: Path, opener: BlobOpener) -> None:
        self._stream, start = opener(0)
        if start:
            self._stream.close()
            raise EnvironmentProblem(f"asked for a blob from its start, the source sent from {start}")
        self._out = SequentialFile(partial)
        self._closed = False

    def read(self, n: int = -1) -> bytes:
        if self._closed:
            return b""
        data = self._stream.read(n if n is not None and n > 0 else CHUNK)
        if data:
            self._out.write(data)
        return data

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._stream.close()
        finally:
            self._out.close()


class _TeeReader(VerifyingReader):
    def __init__(self, cache: BlobCache, digest: str, size: int | None, opener: BlobOpener,
                 what: str, progress: Callable[[int], None] | None, lock: BinaryIO) -> None:
        self._lock = lock
        self._partial = cache._partial_path(parse_digest(digest)[1])
        self._final = cache.blob_path(digest)
        super().__init__(ProgressReader(_TeeSource(self._partial, opener), progress), digest, size,
                         what)

    def read(self, n: int = -1) -> bytes:
        try:
            return super().read(n)
        except DigestMismatchError:
            self._raw.close()
            self._partial.unlink(missing_ok=True)
            raise

    def _check(self) -> None:
        already = self.verified
        super()._check()
        if not already:
            self._raw.close()  # flushes what was written
            os.replace(self._partial, self._final)

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            self._lock.close()
