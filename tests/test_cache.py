"""The blob cache: verified, atomic, resumable, safe with two processes at once."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
from pathlib import Path

import pytest

from auditor.errors import DigestMismatchError
from auditor.sources.cache import BlobCache

DATA = os.urandom(3 << 20)
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


def opener_from(data: bytes, calls: list[int] | None = None, honour_range: bool = True):
    def opener(offset: int):
        if calls is not None:
            calls.append(offset)
        start = offset if honour_range else 0
        return io.BytesIO(data[start:]), start
    return opener


def test_ingest_verifies_and_names_by_digest(cache: BlobCache) -> None:
    path = cache.ingest(DIGEST, len(DATA), opener_from(DATA))
    assert path.read_bytes() == DATA and cache.has(DIGEST)
    calls: list[int] = []
    cache.ingest(DIGEST, len(DATA), opener_from(DATA, calls))
    assert calls == []  # second time: nothing fetched


def test_wrong_bytes_never_enter(cache: BlobCache) -> None:
    bad = bytearray(DATA)
    bad[100] ^= 1
    with pytest.raises(DigestMismatchError, match=DIGEST):
        cache.ingest(DIGEST, len(DATA), opener_from(bytes(bad)))
    assert not cache.has(DIGEST)
    assert list((cache.root / "tmp").iterdir()) == []
    with pytest.raises(DigestMismatchError):
        cache.put_bytes(DIGEST, b"other")
    with pytest.raises(DigestMismatchError, match="longer than its declared size"):
        cache.ingest(DIGEST, len(DATA) - 1, opener_from(DATA))


def test_resume_after_a_killed_download(cache: BlobCache) -> None:
    half = len(DATA) // 2
    (cache.root / "tmp" / f"{DIGEST.split(':')[1]}.partial").write_bytes(DATA[:half])
    calls: list[int] = []
    cache.ingest(DIGEST, len(DATA), opener_from(DATA, calls))
    assert calls == [half] and cache.blob_path(DIGEST).read_bytes() == DATA


def test_resume_refused_by_server_restarts(cache: BlobCache) -> None:
    (cache.root / "tmp" / f"{DIGEST.split(':')[1]}.partial").write_bytes(DATA[:1000])
    cache.ingest(DIGEST, len(DATA), opener_from(DATA, honour_range=False))
    assert cache.blob_path(DIGEST).read_bytes() == DATA


def test_corrupt_partial_is_discarded_and_refetched(cache: BlobCache) -> None:
    (cache.root / "tmp" / f"{DIGEST.split(':')[1]}.partial").write_bytes(b"\0" * 5000)
    calls: list[int] = []
    cache.ingest(DIGEST, len(DATA), opener_from(DATA, calls))
    assert calls == [5000, 0] and cache.blob_path(DIGEST).read_bytes() == DATA


def _ingest_in_child(root: str, results: multiprocessing.Queue) -> None:
    calls: list[int] = []
    BlobCache(root).ingest(DIGEST, len(DATA), opener_from(DATA, calls))
    results.put(len(calls))


def test_two_processes_at_once_download_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_ingest_in_child, args=(str(tmp_path), results)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert sorted(results.get() for _ in procs) == [0, 0, 0, 1]
    assert BlobCache(tmp_path).blob_path(DIGEST).read_bytes() == DATA


def test_info_and_prune(cache: BlobCache) -> None:
    cache.ingest(DIGEST, len(DATA), opener_from(DATA))
    (cache.root / "tmp" / "leftover.partial").write_bytes(b"x")
    info = cache.info()
    assert (info.blobs, info.blob_bytes, info.partials) == (1, len(DATA), 1)
    assert cache.prune() == 1  # only the partial
    assert cache.has(DIGEST)
    os.utime(cache.blob_path(DIGEST), (1, 1))
    assert cache.prune(older_than_days=30) == 1
    assert not cache.has(DIGEST)


def test_unusable_cache_dir_is_an_environment_error(tmp_path: Path) -> None:
    from auditor.errors import EnvironmentProblem

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(EnvironmentProblem, match="cannot use cache directory"):
        BlobCache(blocker / "sub")


def test_tee_caches_a_blob_as_it_is_read_once(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "c")
    data, digest, calls = DATA, DIGEST, []
    seen: list[int] = []
    with cache.tee(digest, len(data), opener_from(data, calls), "layer 0", seen.append) as reader:
        assert not cache.has(digest)  # named only once verified
        read = b"".join(iter(lambda: reader.read(1 << 20), b""))
    assert read == data and calls == [0] and sum(seen) == len(data)
    assert cache.blob_path(digest).read_bytes() == data
    assert not list((cache.root / "tmp").iterdir())


def test_tee_cut_short_leaves_a_partial_that_the_next_run_resumes(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "c")
    data, digest, calls = DATA, DIGEST, []
    with cache.tee(digest, len(data), opener_from(data, calls), "layer 0") as reader:
        reader.read(1 << 20)  # the audit stops here (killed, or an error)
    assert not cache.has(digest)
    assert (cache.root / "tmp" / f"{digest.split(':')[1]}.partial").stat().st_size == 1 << 20
    with cache.tee(digest, len(data), opener_from(data, calls), "layer 0") as reader:
        assert reader.read() == data
    assert calls == [0, 1 << 20]  # resumed where the first run stopped
    assert cache.blob_path(digest).read_bytes() == data


def test_tee_of_the_wrong_bytes_raises_and_keeps_nothing(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "c")
    data, digest = DATA, DIGEST
    tampered = bytes([data[0] ^ 1]) + data[1:]
    with cache.tee(digest, len(data), opener_from(tampered), "layer 0") as reader, \
            pytest.raises(DigestMismatchError, match="does not match"):
        reader.drain()
    assert not cache.has(digest)
    assert not list((cache.root / "tmp").iterdir())
