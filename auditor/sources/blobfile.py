"""A large file written once, front to back, past the page cache where the filesystem allows.

A layer blob kept in the cache is written once, while the pass reads it from the network, and read
back rarely (a later pass with other catalogers). Written through the page cache, each GiB costs
the kernel a second or more of copying and writeback (3 GiB: 3.4 to 7 s of system time on the
bench machine, on the same two cores as the pass) and pushes out pages the pass is reading. With
``O_DIRECT`` the device reads whole blocks straight from our buffer: 0.4 s for the same 3 GiB.

So :class:`SequentialFile` gathers what it is given in a page-aligned staging buffer and writes
whole blocks with ``O_DIRECT``, in a thread of its own, a bounded number of chunks behind the
caller. A head before the first block boundary (a resumed download) and the tail after the last
go through the page cache; so does everything where ``O_DIRECT`` is refused (tmpfs on older
kernels, FUSE, systems without it). What :meth:`SequentialFile.close` returns from is on the file
whichever way it went, and a file closed after an error holds a prefix of what was written, so a
cut download still resumes.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import queue
import threading
from pathlib import Path

BLOCK = 4096  # a multiple of every device's logical block size in use
STAGE_BYTES = 8 << 20  # written to the device at once
QUEUE_DEPTH = 8  # chunks handed over and not yet staged, at most

_DIRECT = getattr(os, "O_DIRECT", 0)


class SequentialFile:
    """Writes ``path`` from ``offset`` on (truncating it there): :meth:`write`, then
    :meth:`close`, which waits for every byte and raises the first error the writing met."""

    def __init__(self, path: str | os.PathLike[str], offset: int = 0) -> None:
        self._fd, self._direct = _open(Path(path))
        try:
            os.ftruncate(self._fd, offset)
            os.lseek(self._fd, offset, os.SEEK_SET)
        except BaseException:
            os.close(self._fd)
            raise
        self._unaligned = -offset % BLOCK  # written through the page cache, up to a boundary
        self._flag_direct = self._direct  # O_DIRECT as set on the descriptor now
        self._stage = mmap.mmap(-1, STAGE_BYTES)  # page-aligned, as O_DIRECT wants
        self._fill = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_DEPTH)
        self._error: OSError | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="blob-write", daemon=True)
        self._thread.start()

    @property
    def direct(self) -> bool:
        """Whether whole blocks go past the page cache."""
        return self._direct

    def write(self, data: bytes) -> int:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise ValueError("write to a closed SequentialFile")
        if data:
            self._queue.put(data)
        return len(data)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        os.close(self._fd)
        self._stage.close()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> SequentialFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the writing thread --------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            data = self._queue.get()
            if self._error is None:
                try:
                    if data is None:
                        self._flush(final=True)
                    else:
                        self._take(memoryview(data))
                except OSError as err:  # raised in the caller; what follows is only drained
                    # (without its frames, which hold views of the staging buffer)
                    self._error = err.with_traceback(None)
            if data is None:
                return

    def _take(self, view: memoryview) -> None:
        if self._unaligned:
            n = min(len(view), self._unaligned)
            self._write(view[:n], direct=False)
            self._unaligned -= n
            view = view[n:]
        while view:
            n = min(len(view), STAGE_BYTES - self._fill)
            self._stage[self._fill:self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            if self._fill == STAGE_BYTES:
                self._flush(final=False)

    def _flush(self, final: bool) -> None:
        staged = memoryview(self._stage)[:self._fill]
        whole = len(staged) - len(staged) % BLOCK
        self._write(staged[:whole], direct=self._direct)
        if final:
            self._write(staged[whole:], direct=False)
        elif whole != len(staged):  # only a full stage is flushed before the end
            raise AssertionError("a partial stage flushed before the end")
        self._fill = 0

    def _write(self, view: memoryview, direct: bool) -> None:
        while view:
            self._set_direct(direct)
            try:
                n = os.write(self._fd, view)
            except OSError as err:
                if direct and err.errno == errno.EINVAL:  # refused after all: page cache from now on
                    self._direct = direct = False
                    continue
                raise
            view = view[n:]
            if direct and n % BLOCK:
                direct = False  # a short write off a block boundary: the rest goes buffered

    def _set_direct(self, on: bool) -> None:
        if on == self._flag_direct:
            return
        flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
        fcntl.fcntl(self._fd, fcntl.F_SETFL, flags | _DIRECT if on else flags & ~_DIRECT)
        self._flag_direct = on


def _open(path: Path) -> tuple[int, bool]:
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    if _DIRECT:
        try:
            return os.open(path, flags | _DIRECT, 0o644), True
        except OSError as err:
            if err.errno != errno.EINVAL:
                raise
    return os.open(path, flags, 0o644), False
