"""Layer streams, decompressed on the fly, bounded against bombs, hashed for their diff_id.

The compression is read from the stream's first bytes, not trusted from the media type.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import zstandard

from auditor.errors import DigestMismatchError, InputError, LimitExceededError
from auditor.rootfs.prefetch import Prefetch

# gzip: the fastest inflate installed. ISA-L's igzip is about twice zlib's speed on x86-64;
# zlib-ng next; the standard library's zlib always works. All three release the GIL. igzip is
# used through its own decompressor: isal_zlib's zlib-style object, fed with a max_length from a
# thread, left peak RSS growing with the layer (170 MB over 3 GB; igzip_lib's stays at 45 MB).
try:
    from zlib_ng import zlib_ng as _zlib  # type: ignore[import-not-found]
    _ZLIB_LIBRARY = "zlib-ng"
except ImportError:
    import zlib as _zlib  # type: ignore[no-redef]
    _ZLIB_LIBRARY = "zlib"
try:
    from isal import igzip_lib
except ImportError:  # pragma: no cover - isal is a dependency; kept for platforms without wheels
    igzip_lib = None
GZIP_LIBRARY = "isal" if igzip_lib is not None else _ZLIB_LIBRARY


class _ZlibMember:
    """zlib's decompressobj in igzip_lib's shape: input it could not take yet is kept, and
    ``decompress(b"")`` goes on with it while ``needs_input`` is False."""

    def __init__(self) -> None:
        self._d = _zlib.decompressobj(wbits=31)
        self._tail = b""

    def decompress(self, data: bytes, max_length: int) -> bytes:
        out = self._d.decompress(self._tail + data if self._tail else data, max_length)
        self._tail = self._d.unconsumed_tail
        return out

    @property
    def needs_input(self) -> bool:
        return not self._tail

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data


def gzip_member() -> Any:
    """A decompressor for one gzip member."""
    if igzip_lib is not None:
        return igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)
    return _ZlibMember()


GZIP_ERRORS: tuple[type[Exception], ...] = (
    (igzip_lib.IsalError,) if igzip_lib is not None else (_zlib.error,))
INFLATE_ERRORS = (zstandard.ZstdError, *GZIP_ERRORS)


def inflating_reader(data: bytes, gzip: bool) -> Callable[[int], bytes]:
    """``read(n)`` over what ``data`` inflates to (one whole gzip member, or zstd frames held in
    memory: a lazily read chunk, a table of contents): at most ``n`` bytes at a time, ``b""`` at
    the end; it raises ``INFLATE_ERRORS``."""
    if not gzip:
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data),
                                                          read_across_frames=True).read
    inflater, pending = gzip_member(), data

    def read(n: int) -> bytes:
        nonlocal pending
        if inflater.eof or (inflater.needs_input and not pending):
            return b""
        out, pending = inflater.decompress(pending, n), b""  # all the input is there at once:
        return out  # nothing out is the end

    return read

CHUNK = 1 << 20  # compressed bytes per read
OUT_CHUNK = 4 << 20  # uncompressed bytes per decompression step, at most
READ_AHEAD = 8  # compressed chunks read ahead of decompression
DECOMPRESS_AHEAD = 4  # uncompressed chunks decompressed ahead of the tar reader
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True)
class Limits:
    """Bounds on what one layer may expand to. The defaults stop bombs, not real images."""

    max_layer_bytes: int = 64 << 30  # uncompressed bytes of one layer
    max_ratio: float = 200.0  # uncompressed / compressed, checked past ratio_floor bytes
    ratio_floor: int = 512 << 20
    max_entries: int = 2_000_000  # tar entries in one layer
    max_capture_bytes: int = 64 << 20  # one file handed to a cataloger
    max_analyze_bytes: int = 4 << 30  # one file spilled for an analyzer (an ELF library)


def format_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


class LayerReader:
    """Uncompressed bytes of a layer, read forward only.

    Counts what comes out and raises :class:`LimitExceededError` past the limits; hashes it, and
    :meth:`finish` checks the hash against the layer's diff_id (given ``diff_id=None``, nothing
    is hashed: the caller verifies the same bytes otherwise).

    With ``threads``, reading (and the blob's digest, hashed by ``compressed`` as it is read),
    decompression and the diff_id hash each run in a thread of their own (:class:`Prefetch`), a
    few chunks ahead of the reader: :meth:`close` stops them, and must be called before
    ``compressed`` is read by anyone else.
    """

    def __init__(self, compressed: BinaryIO, limits: Limits, what: str,
                 diff_id: str | None = None, threads: bool = True) -> None:
        self._src = compressed
        self._limits = limits
        self._what = what
        self._diff_id = diff_id
        self._hash = hashlib.sha256() if diff_id is not None else None
        self._buffer = b""
        self._offset = 0
        self._position = 0  # uncompressed bytes handed out (or skipped) so far
        self._eof = False
        self._stages: list[Prefetch] = []
        self.compressed_bytes = 0
        self.uncompressed_bytes = 0
        head = self._read_compressed(4)
        raw: Iterator[bytes] = self._compressed_chunks(head)
        if threads:
            raw = self._stage(raw, READ_AHEAD, "layer-read")
        if head[:2] == GZIP_MAGIC:
            self.compression = "gzip"
            out = self._gzip_chunks(raw)
        elif head == ZSTD_MAGIC:
            self.compression = "zstd"
            out = self._zstd_chunks(raw)
        else:
            self.compression = "none"
            out = raw
        out = self._accounted(out)
        if threads and self.compression != "none":
            out = self._stage(out, DECOMPRESS_AHEAD, "layer-decompress")
        if self._hash is not None:
            out = self._hashed(out, self._hash)
            if threads:
                out = self._stage(out, DECOMPRESS_AHEAD, "layer-hash")
        self._chunks = out

    def _stage(self, chunks: Iterator[bytes], depth: int, name: str) -> Iterator[bytes]:
        stage = Prefetch(chunks, depth, name)
        self._stages.append(stage)
        return iter(stage)

    def _read_compressed(self, n: int) -> bytes:
        data = self._src.read(n)
        self.compressed_bytes += len(data)
        return data

    def _compressed_chunks(self, head: bytes) -> Iterator[bytes]:
        data = head
        while data:
            yield data
            data = self._read_compressed(CHUNK)

    def _gzip_chunks(self, raw: Iterator[bytes]) -> Iterator[bytes]:
        # Multi-member gzip is legal: a member ends where its decompressor reports eof.
        d, fed = gzip_member(), False
        for chunk in raw:
            data: bytes | None = chunk
            if not fed and not chunk.strip(b"\0"):
                continue  # zero padding after the last member
            while data is not None:
                fed = True
                try:
                    out = d.decompress(data, OUT_CHUNK)
                except GZIP_ERRORS as err:
                    raise InputError(f"{self._what} is not valid gzip: {err}") from None
                if out:
                    yield out
                if d.eof:
                    data, d, fed = d.unused_data, gzip_member(), False
                    if not data.strip(b"\0"):
                        data = None
                else:  # b"": more output from the input already given
                    data = None if d.needs_input else b""
        if fed:
            raise InputError(f"{self._what} is truncated (the gzip stream ends early)")

    def _zstd_chunks(self, raw: Iterator[bytes]) -> Iterator[bytes]:
        # stream_reader bounds each read's output (a zstd block can expand 40000-fold) but does
        # not notice a stream cut short; the frame walker, fed the same compressed bytes, does.
        frames = ZstdFrameWalker(self._what)
        reader = zstandard.ZstdDecompressor().stream_reader(
            _Chunks(raw, frames), read_across_frames=True, closefd=False)
        while True:
            try:
                out = reader.read(OUT_CHUNK)
            except zstandard.ZstdError as err:
                raise InputError(f"{self._what} is not valid zstd: {err}") from None
            if not out:
                break
            yield out
        if not frames.at_frame_boundary():
            raise InputError(f"{self._what} is truncated (the zstd stream ends inside a frame)")

    def _accounted(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for out in chunks:
            self._account(out)
            yield out

    @staticmethod
    def _hashed(chunks: Iterator[bytes], hasher: Any) -> Iterator[bytes]:
        for out in chunks:
            hasher.update(out)
            yield out

    def _next_chunk(self) -> bytes:
        for out in self._chunks:
            if out:
                return out
        self._eof = True
        return b""

    def _account(self, out: bytes) -> None:
        self.uncompressed_bytes += len(out)
        limits = self._limits
        if self.uncompressed_bytes > limits.max_layer_bytes:
            raise LimitExceededError(
                f"{self._what} expands past {format_size(limits.max_layer_bytes)} "
                "(a decompression bomb?); raise --max-layer-size to read it")
        if (self.uncompressed_bytes > limits.ratio_floor and self.compression != "none"
                and self.uncompressed_bytes > limits.max_ratio * max(self.compressed_bytes, 1)):
            raise LimitExceededError(
                f"{self._what} expands more than {limits.max_ratio:g} times "
                f"({format_size(self.compressed_bytes)} to over "
                f"{format_size(self.uncompressed_bytes)}; a decompression bomb?); "
                "raise --max-ratio to read it")

    def read(self, n: int = -1) -> bytes:
        # The buffer is consumed by moving an offset: slicing off the rest of a 1 MiB chunk on
        # each 512-byte header read cost more than the decompression itself.
        if n is None or n < 0:
            parts = [self._buffer[self._offset:]]
            self._buffer, self._offset = b"", 0
            while chunk := self._next_chunk():
                parts.append(chunk)
            out = b"".join(parts)
        elif len(self._buffer) - self._offset >= n:
            out = self._buffer[self._offset:self._offset + n]
            self._offset += n
        else:  # gathered, then joined once: a large read spans several chunks
            parts, held = [self._buffer[self._offset:]], len(self._buffer) - self._offset
            self._buffer, self._offset = b"", 0
            while held < n and (chunk := self._next_chunk()):
                take = min(len(chunk), n - held)
                parts.append(chunk[:take] if take < len(chunk) else chunk)
                held += take
                if take < len(chunk):
                    self._buffer, self._offset = chunk, take
            out = b"".join(parts)
        self._position += len(out)
        return out

    def copy_to(self, out: BinaryIO, n: int) -> int:
        """Write the next ``n`` bytes (fewer at the end) to ``out`` straight from the chunks, with
        no copy made here: a spilled library of hundreds of MB passes through once."""
        copied = 0
        while copied < n:
            held = len(self._buffer) - self._offset
            if not held:
                chunk = self._next_chunk()
                if not chunk:
                    break
                self._buffer, self._offset, held = chunk, 0, len(chunk)
            take = min(held, n - copied)
            out.write(memoryview(self._buffer)[self._offset:self._offset + take])
            self._offset += take
            copied += take
        self._position += copied
        return copied

    def tell(self) -> int:
        return self._position

    def seekable(self) -> bool:
        return True

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        """Forward only: skips what lies between (still decompressed and hashed, never copied
        out), so a tar reader passes over file contents it does not want at C speed."""
        if whence == io.SEEK_CUR:
            position += self._position
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("a layer stream seeks forward from its start only")
        if position < self._position:
            raise io.UnsupportedOperation(
                f"a layer stream cannot seek back (from {self._position} to {position})")
        skip = position - self._position
        held = len(self._buffer) - self._offset
        if skip <= held:
            self._offset += skip
        else:
            skip -= held
            self._buffer, self._offset = b"", 0
            while skip and (chunk := self._next_chunk()):
                if len(chunk) > skip:
                    self._buffer, self._offset, skip = chunk, skip, 0
                else:
                    skip -= len(chunk)
            position -= skip  # the stream ended first
        self._position = position
        return position

    def finish(self) -> None:
        """Read to the end and check the uncompressed bytes against the diff_id."""
        while self._next_chunk():
            pass
        self._buffer, self._offset = b"", 0
        self.close()
        if self._hash is not None:
            actual = f"sha256:{self._hash.hexdigest()}"
            if actual != self._diff_id:
                raise DigestMismatchError(
                    f"{self._what}: uncompressed content does not match diff_id {self._diff_id} "
                    f"(got {actual})")

    def close(self) -> None:
        """Stop the background stages, the last one first (it reads from the one before)."""
        while self._stages:
            self._stages.pop().close()

    def __enter__(self) -> LayerReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Chunks:
    """The compressed chunks as a stream for zstandard's reader, shown to the frame walker on
    the way. A read may return more than it was asked for; zstandard takes it as input."""

    def __init__(self, chunks: Iterator[bytes], frames: ZstdFrameWalker) -> None:
        self._chunks, self._frames = chunks, frames

    def read(self, n: int = -1) -> bytes:
        out = next(self._chunks, b"")
        self._frames.feed(out)
        return out


_ZSTD_SKIPPABLE_TAIL = b"\x2a\x4d\x18"  # skippable frames: magic 0x184D2A50..5F, little endian
_DICT_ID_BYTES = (0, 1, 2, 4)
_CONTENT_SIZE_BYTES = (0, 2, 4, 8)


class ZstdFrameWalker:
    """Follows the frame and block headers of a zstd stream (RFC 8878) without decompressing,
    to tell whether the stream ended on a frame boundary. Block headers give each block's size,
    so this costs a few operations per block."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._state = "magic"
        self._buffer = b""
        self._skip = 0
        self._checksum = False

    def _need(self) -> int:
        return {"magic": 4, "descriptor": 1, "skippable": 4, "block": 3}[self._state]

    def feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            need = self._need() - len(self._buffer)
            self._buffer += data[pos:pos + need]
            pos += min(need, end - pos)
            if len(self._buffer) == self._need():
                header, self._buffer = self._buffer, b""
                self._advance(header)

    def _advance(self, header: bytes) -> None:
        if self._state == "magic":
            if header == ZSTD_MAGIC:
                self._state = "descriptor"
            elif header[0] & 0xF0 == 0x50 and header[1:] == _ZSTD_SKIPPABLE_TAIL:
                self._state = "skippable"
            else:
                raise InputError(f"{self._what} is not valid zstd: no frame magic after a frame")
        elif self._state == "skippable":
            self._skip, self._state = int.from_bytes(header, "little"), "magic"
        elif self._state == "descriptor":
            d = header[0]
            single_segment = bool(d & 0x20)
            content_size = _CONTENT_SIZE_BYTES[d >> 6] or (1 if single_segment else 0)
            self._checksum = bool(d & 0x04)
            self._skip = (0 if single_segment else 1) + _DICT_ID_BYTES[d & 0x03] + content_size
            self._state = "block"
        else:  # block header: last-block bit, type, size
            value = int.from_bytes(header, "little")
            last, kind, size = value & 1, (value >> 1) & 3, value >> 3
            if kind == 3:
                raise InputError(f"{self._what} is not valid zstd: reserved block type")
            self._skip = 1 if kind == 1 else size
            if last:
                self._skip += 4 if self._checksum else 0
                self._state = "magic"

    def at_frame_boundary(self) -> bool:
        return self._state == "magic" and not self._buffer and not self._skip
