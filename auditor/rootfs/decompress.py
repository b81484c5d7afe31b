"""Layer streams, decompressed on the fly, bounded against bombs, hashed for their diff_id.

The compression is read from the stream's first bytes, not trusted from the media type.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

from auditor.errors import DigestMismatchError, InputError, LimitExceededError

CHUNK = 1 << 20
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
    :meth:`finish` checks the hash against the layer's diff_id.
    """

    def __init__(self, compressed: BinaryIO, limits: Limits, what: str,
                 diff_id: str | None = None) -> None:
        self._src = compressed
        self._limits = limits
        self._what = what
        self._diff_id = diff_id
        self._hash = hashlib.sha256()
        self._buffer = b""
        self._offset = 0
        self._eof = False
        self.compressed_bytes = 0
        self.uncompressed_bytes = 0
        head = self._read_compressed(4)
        if head[:2] == GZIP_MAGIC:
            self.compression = "gzip"
            self._chunks = self._gzip_chunks(head)
        elif head == ZSTD_MAGIC:
            self.compression = "zstd"
            self._chunks = self._zstd_chunks(head)
        else:
            self.compression = "none"
            self._chunks = self._plain_chunks(head)

    def _read_compressed(self, n: int) -> bytes:
        data = self._src.read(n)
        self.compressed_bytes += len(data)
        return data

    def _plain_chunks(self, head: bytes):
        data = head
        while data:
            yield data
            data = self._read_compressed(CHUNK)

    def _gzip_chunks(self, head: bytes):
        # Multi-member gzip is legal: a member ends where its decompressor reports eof.
        d, fed = zlib.decompressobj(wbits=31), False
        data = head
        while data:
            while data:
                fed = True
                try:
                    out = d.decompress(data, CHUNK)
                except zlib.error as err:
                    raise InputError(f"{self._what} is not valid gzip: {err}") from None
                yield out
                if d.eof:
                    data, d, fed = d.unused_data, zlib.decompressobj(wbits=31), False
                    if data and not data.strip(b"\0"):
                        data = b""  # zero padding after the last member
                else:
                    data = d.unconsumed_tail
            data = self._read_compressed(CHUNK)
        if fed:
            raise InputError(f"{self._what} is truncated (the gzip stream ends early)")

    def _zstd_chunks(self, head: bytes):
        # stream_reader bounds each read's output (a zstd block can expand 40000-fold) but does
        # not notice a stream cut short; the frame walker, fed the same compressed bytes, does.
        frames = ZstdFrameWalker(self._what)
        reader = zstandard.ZstdDecompressor().stream_reader(
            _CountingPrefixed(head, self, frames), read_across_frames=True, closefd=False)
        while True:
            try:
                out = reader.read(CHUNK)
            except zstandard.ZstdError as err:
                raise InputError(f"{self._what} is not valid zstd: {err}") from None
            if not out:
                break
            yield out
        if not frames.at_frame_boundary():
            raise InputError(f"{self._what} is truncated (the zstd stream ends inside a frame)")

    def _next_chunk(self) -> bytes:
        for out in self._chunks:
            if out:
                self._account(out)
                return out
        self._eof = True
        return b""

    def _account(self, out: bytes) -> None:
        self.uncompressed_bytes += len(out)
        self._hash.update(out)
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
        # each 10 KiB read of tarfile's cost more than the decompression itself.
        if n is None or n < 0:
            parts = [self._buffer[self._offset:]]
            self._buffer, self._offset = b"", 0
            while chunk := self._next_chunk():
                parts.append(chunk)
            return b"".join(parts)
        while len(self._buffer) - self._offset < n and not self._eof:
            chunk = self._next_chunk()
            if not chunk:
                break
            rest = self._buffer[self._offset:]
            self._buffer, self._offset = (rest + chunk if rest else chunk), 0
        out = self._buffer[self._offset:self._offset + n]
        self._offset += len(out)
        return out

    def finish(self) -> None:
        """Read to the end and check the uncompressed bytes against the diff_id."""
        while self._next_chunk():
            pass
        self._buffer, self._offset = b"", 0
        if self._diff_id is not None:
            actual = f"sha256:{self._hash.hexdigest()}"
            if actual != self._diff_id:
                raise DigestMismatchError(
                    f"{self._what}: uncompressed content does not match diff_id {self._diff_id} "
                    f"(got {actual})")

    @property
    def diff_id(self) -> str:
        return f"sha256:{self._hash.hexdigest()}"


class _CountingPrefixed:
    """The compressed stream again, with the bytes already read for sniffing put back in front,
    shown to the frame walker on the way."""

    def __init__(self, head: bytes, owner: LayerReader, frames: ZstdFrameWalker) -> None:
        self._head, self._owner, self._frames = head, owner, frames

    def read(self, n: int = -1) -> bytes:
        if self._head:
            out, self._head = self._head, b""
        else:
            out = self._owner._read_compressed(n if n and n > 0 else CHUNK)
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
