"""Content digests (``algorithm:hex``) and streams verified against them."""

from __future__ import annotations

import hashlib
import re
from typing import BinaryIO

from auditor.errors import DigestMismatchError, InputError

_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^(sha256|sha512):([a-f0-9]+)$")


def parse_digest(digest: str) -> tuple[str, str]:
    """Split ``sha256:abc…`` into (algorithm, hex); reject anything malformed or unsupported."""
    m = _DIGEST_RE.match(digest or "")
    if not m or len(m.group(2)) != _HEX_LENGTH[m.group(1)]:
        raise InputError(f"not a valid digest: {digest!r} (expected sha256:<64 hex> or sha512:<128 hex>)")
    return m.group(1), m.group(2)


def validate_digest(digest: str) -> str:
    parse_digest(digest)
    return digest


def digest_bytes(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def verify_bytes(data: bytes, expected: str, what: str) -> bytes:
    algorithm, _ = parse_digest(expected)
    actual = digest_bytes(data, algorithm)
    if actual != expected:
        raise DigestMismatchError(f"{what} {expected} does not match its content (got {actual})")
    return data


class VerifyingReader:
    """A read-only stream that hashes what passes through and checks size and digest at EOF.

    Reading past the end raises :class:`DigestMismatchError` if the bytes were not the expected
    ones, so a consumer that reads to EOF can never silently accept tampered content.
    """

    def __init__(self, raw: BinaryIO, expected: str, size: int | None, what: str) -> None:
        algorithm, _ = parse_digest(expected)
        self._raw = raw
        self._hash = hashlib.new(algorithm)
        self._algorithm = algorithm
        self.expected = expected
        self.size = size
        self.what = what
        self.bytes_read = 0
        self.verified = False

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n) if n is not None and n >= 0 else self._raw.read()
        if data:
            self._hash.update(data)
            self.bytes_read += len(data)
            if self.size is not None and self.bytes_read > self.size:
                raise DigestMismatchError(
                    f"{self.what} {self.expected} is longer than its declared size {self.size}"
                )
        elif n != 0:
            self._check()
        return data

    def drain(self, chunk: int = 1 << 20) -> None:
        """Read whatever is left (tar padding, trailing zeros) so the digest covers every byte."""
        while self.read(chunk):
            pass

    def _check(self) -> None:
        if self.verified:
            return
        actual = f"{self._algorithm}:{self._hash.hexdigest()}"
        if actual != self.expected:
            raise DigestMismatchError(
                f"{self.what} {self.expected} does not match its content (got {actual})"
            )
        if self.size is not None and self.bytes_read != self.size:
            raise DigestMismatchError(
                f"{self.what} {self.expected} has {self.bytes_read} bytes, expected {self.size}"
            )
        self.verified = True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> VerifyingReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
