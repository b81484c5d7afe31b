"""Layers read at once (``--jobs``): the same index as one after another, files a layer writes
through a lower layer's symlinked parent still handed over, a failure stopping the other reads,
and sources whose blobs are read from several threads (a tar's members, a registry)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from auditor.errors import InputError
from auditor.model import Layer
from auditor.reference import parse_reference
from auditor.rootfs.build import MAX_JOBS, Want, build_rootfs, default_jobs
from auditor.rootfs.decompress import Limits
from auditor.rootfs.index import RootfsIndex
from auditor.sources import BlobCache, SourceOptions, make_source, open_image
from auditor.sources.archive import DockerArchiveSource
from auditor.testing import (
    LayerBuilder,
    PassRecorder,
    build_docker_archive,
    build_oci_layout,
    random_layers,
)
from fixtures.registry_server import RegistryServer, push_oci_layout

ELF = b"\x7fELF" + bytes(60)


def _facts(stream: BinaryIO, size: int) -> dict[str, Any]:
    return {"size": size, "sha256": hashlib.sha256(stream.read()).hexdigest()}


WANTS = [Want("text", 1, ("etc/*", "usr/lib/*.txt")),
         Want("elf", 1, ("usr/lib/*.so*",), analyze=_facts, magic=b"\x7fELF"),
         Want("any", 1, ("opt/*",), analyze=_facts)]


def _rootfs(reference: str, cache: Path, jobs: int, progress: PassRecorder | None = None,
            wants: Sequence[Want] = WANTS) -> RootfsIndex:
    blobs = BlobCache(cache)
    source = make_source(parse_reference(reference), blobs, SourceOptions(insecure=True))
    try:
        image = open_image(source, blobs)
        return build_rootfs(image, blobs, wants, Limits(), progress, jobs=jobs)
    finally:
        source.close()


def _state(index: RootfsIndex) -> tuple[Any, ...]:
    return (index.fingerprint(), dict(index.captured), dict(index.analyzed),
            [(s.layer, s.path, s.reason) for s in index.skipped])


def _layers() -> list[LayerBuilder]:
    """Overwrites, whiteouts, a usrmerge base and random files: every merge rule in play."""
    base = (LayerBuilder().dir("usr").dir("usr/lib").symlink("lib", "usr/lib")
            .file("usr/lib/libc.so.6", ELF + b"libc").file("usr/lib/notes.txt", "n")
            .dir("etc").file("etc/os-release", "ID=debian\n").file("etc/motd", "hello"))
    middle = (LayerBuilder().dir("etc").file("etc/motd", "bye").whiteout("etc/os-release")
              .dir("opt").file("opt/tool", "t" * 3000).dir("usr").dir("usr/lib")
              .file("usr/lib/libz.so.1", ELF + b"z"))
    top = LayerBuilder().dir("etc").file("etc/os-release", "ID=ubuntu\n").dir("opt").file("opt/x", "x")
    return [base, *random_layers(seed=7, count=2), middle, *random_layers(seed=8, count=2), top]


class _Gathering(PassRecorder):
    """Lets no layer read start its bytes before ``count`` layer reads have started: the pass
    gets past it only if that many layers are read at once (else the barrier breaks)."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self._barrier = threading.Barrier(count, timeout=20)
        self.met = 0

    def layer_started(self, layer: Layer, total: int | None, cached: bool) -> None:
        super().layer_started(layer, total, cached)
        if not cached and self.starts[layer.index] == 1 and layer.index < self._barrier.parties:
            self._barrier.wait()
            self.met += 1


def test_layers_read_at_once_merge_into_the_index_one_read_at_a_time_gives(tmp_path: Path) -> None:
    built = build_oci_layout(tmp_path / "image", _layers(), tag="t")
    reference = f"oci:{built.path}:t"
    one = _rootfs(reference, tmp_path / "one", jobs=1)
    gathering = _Gathering(3)
    three = _rootfs(reference, tmp_path / "three", jobs=3, progress=gathering)
    assert gathering.met == 3  # three reads were in flight together
    assert _state(three) == _state(one)
    assert three.lookup("etc/os-release").layer == 6  # type: ignore[union-attr]
    assert set(three.analyzed) == {"usr/lib/libc.so.6", "usr/lib/libz.so.1", "opt/tool", "opt/x"}
    assert gathering.done == list(range(7))  # merged in order
    assert all(count == 1 for count in gathering.starts.values())
    # the scans read ahead were filed for the next pass like any other
    warm = PassRecorder()
    assert _state(_rootfs(reference, tmp_path / "three", jobs=3, progress=warm)) == _state(one)
    assert warm.cached == [True] * 7


def test_a_blob_twice_in_one_image_is_read_once(tmp_path: Path) -> None:
    same = LayerBuilder().dir("opt").file("opt/a", "a")
    built = build_oci_layout(tmp_path / "image", [same, LayerBuilder().file("opt/b", "b"), same],
                             tag="t")
    passes = PassRecorder()
    index = _rootfs(f"oci:{built.path}:t", tmp_path / "cache", jobs=3, progress=passes)
    assert passes.cached == [False, False, True]  # its second turn finds the first one's scan
    assert index.lookup("opt/a").layer == 2  # type: ignore[union-attr]


@pytest.mark.parametrize(("name", "data", "wanted"), [
    ("lib/notes2.txt", b"captured", "captured"),  # a capture want on the landing only
    ("lib/libnew.so.1", ELF + b"new", "analyzed"),  # an ELF analyzer's glob, on the landing only
    ("lib/libfake.so.1", b"not an ELF", None),  # looked at, and passed over by its magic
], ids=["capture", "elf", "not-elf"])
def test_a_layer_read_ahead_that_missed_a_file_its_landing_wants_is_read_again(
        tmp_path: Path, name: str, data: bytes, wanted: str | None) -> None:
    """Read ahead, the upper layer is judged by its tar paths alone (``lib/...`` matches no
    want); merged over ``lib -> usr/lib`` the file lands in ``usr/lib``, which is wanted."""
    layers = [_layers()[0], LayerBuilder().file(name, data)]  # no "lib" entry: it would replace the link
    built = build_oci_layout(tmp_path / "image", layers, tag="t")
    reference = f"oci:{built.path}:t"
    one = _rootfs(reference, tmp_path / "one", jobs=1)
    passes = PassRecorder()
    two = _rootfs(reference, tmp_path / "two", jobs=2, progress=passes)
    assert passes.starts == {0: 1, 1: 2}  # the upper layer read again, over the merged base
    assert _state(two) == _state(one)
    landing = "usr/lib/" + name.rpartition("/")[2]
    assert two.lookup(landing).layer == 1  # type: ignore[union-attr]
    assert (landing in two.captured, landing in two.analyzed) == (wanted == "captured",
                                                                  wanted == "analyzed")
    if wanted == "analyzed":
        assert two.analyzed[landing]["elf"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_layer_read_ahead_whose_files_land_where_they_say_is_not_read_again(tmp_path: Path) -> None:
    layers = [_layers()[0], LayerBuilder().dir("usr").dir("usr/lib").file("usr/lib/more.txt", "m")
              .dir("lib2").file("lib2/x.txt", "not wanted")]
    built = build_oci_layout(tmp_path / "image", layers, tag="t")
    passes = PassRecorder()
    index = _rootfs(f"oci:{built.path}:t", tmp_path / "cache", jobs=2, progress=passes)
    assert passes.starts == {0: 1, 1: 1}
    assert "usr/lib/more.txt" in index.captured


class _SlowLayer(PassRecorder):
    """Reads ``slow`` at about 20 chunks a second, so that it is still being read when the
    pass stops; the merge goes past layer 0 only once that read has begun."""

    def __init__(self, slow: int) -> None:
        super().__init__()
        self._slow = slow
        self._reading = threading.Event()

    def advance(self, layer: Layer, n: int) -> None:
        super().advance(layer, n)
        if layer.index == self._slow:
            self._reading.set()
            time.sleep(0.05)

    def layer_done(self, layer: Layer) -> None:
        super().layer_done(layer)
        if layer.index == 0:
            assert self._reading.wait(20)


def test_a_failing_layer_stops_the_reads_ahead_and_is_the_one_reported(tmp_path: Path) -> None:
    big = LayerBuilder().dir("opt").file("opt/big", bytes(range(256)) * (64 << 12))  # 64 MiB
    good = LayerBuilder().dir("etc").file("etc/motd", "m")
    built = build_oci_layout(tmp_path / "image", [good, b"not a tar, and not gzip", big,
                                                  b"neither is this"], tag="t",
                             compression="none")
    slow = _SlowLayer(slow=2)
    with pytest.raises(InputError, match=r"^layer 1 .* is not a tar archive"):
        _rootfs(f"oci:{built.path}:t", tmp_path / "cache", jobs=3, progress=slow)
    assert 0 < slow.bytes.get(2, 0) < 32 << 20  # stopped well before its end
    assert not [t for t in threading.enumerate() if t.name.startswith("layer-")]
    # only the layer merged before the failure was filed
    filed = [p.name for p in (tmp_path / "cache" / "layers").iterdir()]
    assert [name[:64] for name in filed] == [built.diff_ids[0].split(":")[1]]


def test_default_jobs_is_one_per_core_up_to_the_cap() -> None:
    import os

    assert default_jobs() == max(1, min(MAX_JOBS, len(os.sched_getaffinity(0))))


def test_blobs_of_one_docker_archive_read_from_threads_at_once(tmp_path: Path) -> None:
    """The members of a tar file are read with pread, each at its own place: two threads
    reading two layers in small steps get each layer's own bytes."""
    layers = [LayerBuilder().file(f"f{i}", bytes([i]) * 300_000) for i in range(2)]
    built = build_docker_archive(tmp_path / "image.tar", layers)
    source = DockerArchiveSource(built.path)
    try:
        image = open_image(source, None)
        digests: dict[int, str] = {}

        def read(layer: Layer) -> None:
            h = hashlib.sha256()
            with image.open_layer(layer) as stream:
                while chunk := stream.read(1000):
                    h.update(chunk)
            digests[layer.index] = f"sha256:{h.hexdigest()}"

        threads = [threading.Thread(target=read, args=(layer,)) for layer in image.layers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert digests == {0: built.diff_ids[0], 1: built.diff_ids[1]}
    finally:
        source.close()


def test_an_archive_read_at_once_gives_the_index_of_one_read_at_a_time(tmp_path: Path) -> None:
    built = build_docker_archive(tmp_path / "image.tar", _layers())
    one = _rootfs(f"docker-archive:{built.path}", tmp_path / "one", jobs=1)
    three = _rootfs(f"docker-archive:{built.path}", tmp_path / "three", jobs=3)
    assert _state(three) == _state(one)


@pytest.mark.registry
@pytest.mark.parametrize("keep", [True, False], ids=["kept", "streamed"])
def test_layers_pulled_at_once_from_a_registry(tmp_path: Path, registry: RegistryServer,
                                               keep: bool) -> None:
    built = build_oci_layout(tmp_path / "image", _layers(), tag="t")
    repository = f"concurrent/{'kept' if keep else 'streamed'}"
    push_oci_layout(built.path, "t", registry, repository, dest_tag="v1")
    one = _rootfs(f"oci:{built.path}:t", tmp_path / "one", jobs=1)
    blobs = BlobCache(tmp_path / "cache")
    source = make_source(parse_reference(f"{registry.host}/{repository}:v1"), blobs,
                         SourceOptions(insecure=True, keep_layers=keep))
    gathering = _Gathering(3)
    try:
        image = open_image(source, blobs)
        index = build_rootfs(image, blobs, WANTS, Limits(), gathering, jobs=3)
    finally:
        source.close()
    assert gathering.met == 3
    assert _state(index) == _state(one)
    kept = [layer.digest for layer in image.layers if blobs.has(layer.digest)]
    assert kept == ([layer.digest for layer in image.layers] if keep else [])
