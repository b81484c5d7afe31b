"""SequentialFile: every byte lands where it was written, past the page cache where it can."""

from __future__ import annotations

import errno
import os
import random
import resource
import signal
from pathlib import Path

import pytest

from auditor.sources import blobfile
from auditor.sources.blobfile import BLOCK, STAGE_BYTES, SequentialFile


def _direct_supported(folder: Path) -> bool:
    if not hasattr(os, "O_DIRECT"):
        return False
    try:
        fd = os.open(folder / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    except OSError as err:
        assert err.errno == errno.EINVAL
        return False
    os.close(fd)
    return True


def _chunks(total: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    sizes = [1, BLOCK - 1, BLOCK, BLOCK + 1, STAGE_BYTES - 5, 3, STAGE_BYTES, 70_000]
    out, left = [], total
    while left:
        n = min(left, sizes[len(out) % len(sizes)] if len(out) < 40 else rng.randint(1, 1 << 20))
        out.append(rng.randbytes(n))
        left -= n
    return out


def test_chunks_of_every_alignment_land_in_order(tmp_path: Path) -> None:
    chunks = _chunks(3 * STAGE_BYTES + 12_345, seed=1)
    path = tmp_path / "blob"
    with SequentialFile(path) as out:
        for chunk in chunks:
            assert out.write(chunk) == len(chunk)
        assert out.direct == _direct_supported(tmp_path)
    assert path.read_bytes() == b"".join(chunks)


def test_a_resumed_write_keeps_the_prefix_and_replaces_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"k" * 5000 + b"stale tail")
    more = _chunks(STAGE_BYTES + 777, seed=2)
    with SequentialFile(path, offset=3001) as out:  # off a block boundary
        for chunk in more:
            out.write(chunk)
    assert path.read_bytes() == b"k" * 3001 + b"".join(more)


def test_without_o_direct_the_page_cache_serves(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blobfile, "_DIRECT", 0)  # as on a system that has no O_DIRECT
    path = tmp_path / "blob"
    data = random.Random(3).randbytes(STAGE_BYTES + BLOCK + 9)
    with SequentialFile(path) as out:
        out.write(data)
        assert not out.direct
    assert path.read_bytes() == data


def test_a_failed_write_is_raised_and_the_file_keeps_a_prefix(tmp_path: Path) -> None:
    limit = 2 * STAGE_BYTES + BLOCK  # the file may grow no further (RLIMIT_FSIZE: EFBIG)
    data = random.Random(4).randbytes(4 * STAGE_BYTES)
    path = tmp_path / "blob"
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        out = SequentialFile(path)
        with pytest.raises(OSError) as raised:
            for start in range(0, len(data), 1 << 20):
                out.write(data[start:start + (1 << 20)])
            out.close()
        out.close()  # closing again is harmless
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert raised.value.errno == errno.EFBIG
    kept = path.read_bytes()
    assert 0 < len(kept) <= limit and data.startswith(kept)


def test_writing_after_close_is_refused(tmp_path: Path) -> None:
    out = SequentialFile(tmp_path / "blob")
    out.write(b"abc")
    out.close()
    with pytest.raises(ValueError):
        out.write(b"more")
    assert (tmp_path / "blob").read_bytes() == b"abc"
