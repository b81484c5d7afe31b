"""Run a producer of chunks in a background thread, a bounded number of chunks ahead.

The layer pass is a chain of stages (read and hash the blob, decompress, parse the tar); each
stage's heavy work is C code that releases the GIL (file and socket reads, hashlib, igzip/zlib,
zstd), so on a machine with more than one core the stages overlap and a cold audit costs about
as long as its slowest stage (decompression) instead of the sum of all of them.

Memory stays bounded: a stage runs at most ``depth`` chunks ahead of the one reading it. An
error in the producer is raised in the consumer, at the point in the stream where it happened.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator

_DATA, _END, _ERROR = 0, 1, 2
_POLL_SECONDS = 0.1


class Prefetch:
    """Iterates ``chunks`` in a daemon thread; iterate this object for the same chunks.

    :meth:`close` stops the thread (and closes ``chunks`` in it) whether or not the consumer
    read to the end; call it before touching anything the producer reads from."""

    def __init__(self, chunks: Iterator[bytes], depth: int, name: str) -> None:
        self._queue: queue.Queue[tuple[int, object]] = queue.Queue(max(depth, 1))
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, args=(chunks,), name=name, daemon=True)
        self._thread.start()

    def _run(self, chunks: Iterator[bytes]) -> None:
        try:
            for chunk in chunks:
                if not self._put((_DATA, chunk)):
                    return
            self._put((_END, None))
        except BaseException as err:  # handed to the consumer, raised there
            self._put((_ERROR, err))
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def _put(self, item: tuple[int, object]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[bytes]:
        while not self._done:
            kind, value = self._queue.get()
            if kind == _DATA:
                yield value  # type: ignore[misc]
                continue
            self._done = True
            if kind == _ERROR:
                raise value  # type: ignore[misc]

    def close(self) -> None:
        """Stop the producer and wait for it (it finishes the read it is in, if any)."""
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):  # make room for a producer blocked on a full queue
                self._queue.get_nowait()
            self._thread.join(_POLL_SECONDS)
