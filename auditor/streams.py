"""A read-only, seekable stream of known size: the shape every random-access reader here takes
(a member of a tar file, a file of a lazily read layer), so parsers seek and read any of them."""

from __future__ import annotations

import io
from typing import Any


class SizedReader(io.RawIOBase):
    """``size`` bytes, read from ``position``; a subclass implements :meth:`read`."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.position = 0

    def read(self, n: int | None = -1) -> bytes:  # pragma: no cover - every subclass has its own
        raise NotImplementedError

    def wanted(self, n: int | None) -> int:
        """How many bytes a ``read(n)`` from the current position returns."""
        left = max(0, self.size - self.position)
        return left if n is None or n < 0 else min(n, left)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self.position = base + offset
        return self.position

    def tell(self) -> int:
        return self.position

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)
