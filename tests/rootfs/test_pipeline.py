"""The layer pass's machinery: background stages, the forward-seeking layer stream, path globs."""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import itertools
import os
import re
import threading
import time

import pytest

from auditor.errors import InputError
from auditor.rootfs.decompress import GZIP_LIBRARY, LayerReader, Limits
from auditor.rootfs.index import glob_matcher
from auditor.rootfs.prefetch import Prefetch


def test_prefetch_hands_over_every_chunk_in_order_and_raises_the_producers_error() -> None:
    def chunks():
        yield from (bytes([i]) for i in range(50))
        raise InputError("layer 3 is not valid gzip")

    stage = Prefetch(chunks(), depth=4, name="test")
    got = []
    with pytest.raises(InputError, match="not valid gzip"):
        for chunk in stage:
            got.append(chunk)
    assert got == [bytes([i]) for i in range(50)]
    stage.close()


def test_prefetch_stays_bounded_and_close_stops_a_blocked_producer() -> None:
    produced = []
    closed = threading.Event()

    def chunks():
        try:
            for i in itertools.count():
                produced.append(i)
                yield b"x"
        finally:
            closed.set()

    stage = Prefetch(chunks(), depth=3, name="test")
    first = next(iter(stage))
    time.sleep(0.3)
    assert first == b"x" and len(produced) <= 3 + 2  # the queue, the one taken, the one waiting
    stage.close()
    assert closed.wait(2) and not stage._thread.is_alive()


def _layer(payload: bytes) -> tuple[bytes, str]:
    return gzip.compress(payload, mtime=0), f"sha256:{hashlib.sha256(payload).hexdigest()}"


@pytest.mark.parametrize("threads", [True, False])
def test_layer_reader_seeks_forward_reads_across_chunks_and_checks_the_diff_id(threads: bool) -> None:
    payload = bytes(range(256)) * (40 << 10)  # 10 MiB: several chunks
    blob, diff_id = _layer(payload)
    reader = LayerReader(io.BytesIO(blob), Limits(), "layer 0", diff_id, threads=threads)
    assert reader.read(10) == payload[:10]
    assert reader.seek(5 << 20) == 5 << 20 and reader.tell() == 5 << 20
    assert reader.read(3 << 20) == payload[5 << 20:8 << 20]  # one read over chunk boundaries
    with pytest.raises(io.UnsupportedOperation):
        reader.seek(0)
    assert reader.seek(len(payload) + 100) == len(payload)  # the stream ends first
    reader.finish()
    assert reader.uncompressed_bytes == len(payload) and reader.compression == "gzip"


def test_layer_reader_refuses_content_that_is_not_its_diff_id() -> None:
    blob, _ = _layer(b"a" * 5000)
    reader = LayerReader(io.BytesIO(blob), Limits(), "layer 0", "sha256:" + "0" * 64)
    with pytest.raises(Exception, match="does not match diff_id"):
        reader.finish()


def test_gzip_is_inflated_by_the_fastest_library_installed() -> None:
    assert GZIP_LIBRARY == "isal"  # a dependency: the lock file installs it


def test_glob_matcher_agrees_with_fnmatch() -> None:
    globs = ["**/libcudnn.so*", "usr/lib/**", "*.py", "a/**/b/*.so", "**", "**/libcudnn_*.so*", "*/x*",
             "**/lib[ab].so*", "usr/*/q", "**/a+b(c).so*", "/etc/os-release"]
    paths = ["usr/lib/libcudnn.so.8", "libcudnn.so", "a/x/b/c.so", "usr/lib/q", "z.py", "x/y",
             "q/libcudnn_ops.so.8", "a/libcudnn.so.d/f", "usr/libb.so", "w/liba.so.1", "usr\nq/x",
             "e/a+b(c).so.1", "etc/os-release"]
    for n in (1, 2):
        for chosen in itertools.combinations(globs, n):
            matches = glob_matcher(chosen)
            for path in paths:
                expected = any(re.match(fnmatch.translate(g.strip("/")), path) for g in chosen)
                assert matches(path) == expected, (chosen, path)


@pytest.mark.parametrize("library", ["isal", "zlib"])
def test_both_inflaters_read_members_padding_and_notice_a_cut(library: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import auditor.rootfs.decompress as decompress

    if library == "zlib":
        monkeypatch.setattr(decompress, "igzip_lib", None)
        monkeypatch.setattr(decompress, "GZIP_ERRORS", (decompress._zlib.error,))
    first, second = bytes(range(256)) * 8192, b"second member " * 50000  # 2 MiB, 700 kB
    blob = gzip.compress(first, mtime=0) + gzip.compress(second, mtime=0) + b"\0" * 1024
    digest = f"sha256:{hashlib.sha256(first + second).hexdigest()}"
    reader = LayerReader(io.BytesIO(blob), Limits(), "layer 0", digest)
    assert reader.read() == first + second
    reader.finish()
    cut = LayerReader(io.BytesIO(blob[:len(blob) // 3]), Limits(), "layer 0", digest)
    with pytest.raises(InputError, match="truncated"):
        cut.read()
    cut.close()
    garbage = LayerReader(io.BytesIO(b"\x1f\x8b\x08\x00" + b"\xff" * 5000), Limits(), "layer 0")
    with pytest.raises(InputError, match="not valid gzip"):
        garbage.read()
    garbage.close()


def test_a_pass_that_fails_midway_leaves_no_analysis_waiting_or_thread_running() -> None:
    from auditor.rootfs.walker import scan_layer
    from auditor.testing import LayerBuilder

    started = threading.Event()

    def slow(stream, size):
        started.set()
        time.sleep(0.2)
        return {"size": size}

    layer = LayerBuilder()
    for i in range(12):
        layer.file(f"lib/lib{i}.so", os.urandom(4096))
    data = layer.tar_bytes()
    with pytest.raises(InputError, match="truncated"):
        scan_layer(io.BytesIO(data[:len(data) * 2 // 3]), 0, lambda p: False, lambda b: "",
                   analyzers=lambda p: [("t", slow, b"")])
    assert started.is_set()
    assert not [t for t in threading.enumerate() if t.name.startswith("layer-analyze")]
    whole = scan_layer(io.BytesIO(data), 0, lambda p: False, lambda b: "",
                       analyzers=lambda p: [("t", slow, b"")])
    assert [whole.analyzed[f"lib/lib{i}.so"]["t"] for i in range(12)] == [{"size": 4096}] * 12
