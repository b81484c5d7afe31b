"""--lazy: zstd:chunked layers (written by skopeo, as podman pushes them) read by their table of
contents: the same audit as a whole read, from a fraction of the bytes, every chunk verified."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import zstandard
from rich.console import Console

from auditor.audit import AuditOptions, audit
from auditor.digest import digest_bytes
from auditor.errors import DigestMismatchError, InputError
from auditor.report.document import build_document
from auditor.report.table import render_table
from auditor.rootfs.decompress import format_size
from auditor.rootfs.lazy import KEPT_BYTES, READ_AHEAD_BYTES, ChunkedFile
from auditor.rootfs.toc import Chunk, TocEntry, TocPosition, parse_toc, toc_position
from auditor.sources import SourceOptions
from auditor.testing import LayerBuilder, PassRecorder, build_oci_layout
from fixtures.elf_libs import compile_library
from fixtures.registry_server import RegistryServer, push_oci_layout
from tests.rootfs.test_hostile import Cli, Layout

PADDING = 6 << 20  # random bytes in the library: many chunks, of which ELF parsing reads few
POSITION = "io.containers.zstd-chunked.manifest-position"
CHECKSUM = "io.containers.zstd-chunked.manifest-checksum"
VOLATILE = ("elapsed_seconds", "timings", "generated_at", "lazy")


def _skopeo() -> str:
    found = shutil.which("skopeo")
    assert found, "skopeo is missing: scripts/setup-system.sh installs it"
    return found


def lazy_layers(root: Path) -> list[LayerBuilder]:
    """Two layers: a base, and a large gcc-built libnccl (version string, getter, and random
    padding in a section of its own) beside a large unwanted file."""
    lib = compile_library("nccl", root / "gcc")
    padding = root / "padding.bin"
    padding.write_bytes(os.urandom(PADDING))
    subprocess.run(["objcopy", "--add-section", f".padding={padding}", str(lib)], check=True,
                   capture_output=True, timeout=60)
    base = (LayerBuilder().dir("etc").file("etc/os-release", "ID=debian\nVERSION_ID=12\n")
            .file("usr/lib/python3/dist-packages/demo-1.0.dist-info/METADATA",
                  "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"))
    libs = (LayerBuilder().dir("usr/lib/x86_64-linux-gnu")
            .file("usr/lib/x86_64-linux-gnu/libnccl.so.2", lib.read_bytes(), mode=0o755)
            .symlink("usr/lib/x86_64-linux-gnu/libnccl.so", "libnccl.so.2")
            .file("opt/weights.bin", os.urandom(3 << 20))
            .whiteout("usr/lib/python3/dist-packages/demo-1.0.dist-info/METADATA"))
    return [base, libs]


@pytest.fixture(scope="module")
def chunked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OCI layout of the two layers as zstd:chunked, written by skopeo."""
    root = tmp_path_factory.mktemp("lazy")
    build_oci_layout(root / "gzip", lazy_layers(root), tag="t")
    subprocess.run([_skopeo(), "copy", "--dest-compress", "--dest-compress-format", "zstd:chunked",
                    f"oci:{root / 'gzip'}:t", f"oci:{root / 'zstd'}:t"], check=True,
                   capture_output=True, timeout=300)
    return root / "zstd"


def _document(reference: str, cache: Path, lazy: bool,
              progress: PassRecorder | None = None) -> dict[str, Any]:
    return build_document(audit(reference, AuditOptions(cache_dir=str(cache), lazy=lazy), progress))


def without_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_volatile(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [without_volatile(v) for v in value]
    return value


def test_skopeo_writes_annotated_zstd_chunked_layers(chunked: Path) -> None:
    layers = Layout(chunked).manifest()["layers"]
    assert [layer["mediaType"] for layer in layers] == ["application/vnd.oci.image.layer.v1.tar+zstd"] * 2
    assert all(POSITION in layer["annotations"] and CHECKSUM in layer["annotations"]
               for layer in layers)


def test_a_lazy_audit_is_the_whole_audit_from_a_fraction_of_the_bytes(chunked: Path,
                                                                       tmp_path: Path) -> None:
    whole = _document(f"oci:{chunked}:t", tmp_path / "whole", lazy=False)
    lazy = _document(f"oci:{chunked}:t", tmp_path / "lazy", lazy=True)
    assert without_volatile(lazy) == without_volatile(whole)
    assert [c["version"] for c in lazy["numeric_stack"] if c["component"] == "nccl"] == ["2.18.3"]
    assert "lazy" not in json.dumps(whole["layers"])
    big = lazy["layers"][1]
    assert big["lazy"]["toc"] == Layout(chunked).manifest()["layers"][1]["annotations"][CHECKSUM]
    # the library's headers, dynamic section and strings, not its padding or the unwanted file
    assert 0 < big["lazy"]["fetched_bytes"] < big["size"] // 4
    console = Console(file=io.StringIO(), width=200, color_system=None)
    render_table(lazy, console)
    assert f"(lazy: {format_size(big['lazy']['fetched_bytes'])} read)" in console.file.getvalue()


def test_a_lazy_scan_is_cached_apart_and_a_whole_read_is_preferred(chunked: Path,
                                                                   tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first, warm, whole, after = PassRecorder(), PassRecorder(), PassRecorder(), PassRecorder()
    _document(f"oci:{chunked}:t", cache, lazy=True, progress=first)
    _document(f"oci:{chunked}:t", cache, lazy=True, progress=warm)
    assert (first.cached, warm.cached) == ([False, False], [True, True])
    document = _document(f"oci:{chunked}:t", cache, lazy=False, progress=whole)
    assert whole.cached == [False, False]  # a lazy scan never stands for a verified whole read
    assert "lazy" not in json.dumps(document["layers"])
    lazy_again = _document(f"oci:{chunked}:t", cache, lazy=True, progress=after)
    assert after.cached == [True, True]
    assert "lazy" not in json.dumps(lazy_again["layers"])  # the whole read serves, and first


def check_lazy_over_a_registry(layout: Path, registry: RegistryServer, repository: str,
                               tmp_path: Path) -> None:
    """The layout pushed, then audited lazily from the registry: the same numeric stack, linkage
    and files as a whole read of the layout, from ranges (no layer blob kept)."""
    push_oci_layout(layout, "t", registry, repository, dest_tag="v1")
    options = AuditOptions(cache_dir=str(tmp_path / "cache"), lazy=True,
                           source=SourceOptions(insecure=True))
    document = build_document(audit(f"{registry.host}/{repository}:v1", options))
    whole = _document(f"oci:{layout}:t", tmp_path / "whole", lazy=False)
    assert without_volatile(document["numeric_stack"]) == without_volatile(whole["numeric_stack"])
    assert without_volatile(document["linkage"]) == without_volatile(whole["linkage"])
    assert document["rootfs"]["fingerprint"] == whole["rootfs"]["fingerprint"]
    big = document["layers"][1]
    assert 0 < big["lazy"]["fetched_bytes"] < big["size"] // 4
    blobs = tmp_path / "cache" / "blobs" / "sha256"
    assert all(p.stat().st_size < big["size"] // 4 for p in blobs.iterdir())  # no layer kept


@pytest.mark.registry
def test_lazy_over_a_registry_fetches_ranges(chunked: Path, registry: RegistryServer,
                                             tmp_path: Path) -> None:
    check_lazy_over_a_registry(chunked, registry, "lazy/chunked", tmp_path)


# -- hostile tables ----------------------------------------------------------------------------
def _copy(chunked: Path, tmp_path: Path) -> Layout:
    shutil.copytree(chunked, tmp_path / "image")
    return Layout(tmp_path / "image")


def _rewrite_toc(layout: Layout, number: int, edit: Any) -> None:
    """Replace a layer's table (edited by ``edit``) and keep every digest, size and annotation
    right: what a hostile author can publish."""
    manifest = layout.manifest()
    descriptor = manifest["layers"][number]
    blob = layout.blob(descriptor["digest"]).read_bytes()
    offset, length, _, kind = (int(x) for x in descriptor["annotations"][POSITION].split(":"))
    document = json.loads(zstandard.ZstdDecompressor().decompress(blob[offset:offset + length]))
    edit(document)
    raw = json.dumps(document).encode()
    table = zstandard.ZstdCompressor().compress(raw)
    data = blob[:offset] + table + blob[offset + length:]
    descriptor.update(digest=layout.put(data), size=len(data))
    descriptor["annotations"][POSITION] = f"{offset}:{len(table)}:{len(raw)}:{kind}"
    descriptor["annotations"][CHECKSUM] = digest_bytes(table)
    layout.set_manifest(json.dumps(manifest).encode())


def _library(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in document["entries"] if e["name"].endswith("libnccl.so.2")]


def test_a_chunk_that_is_not_what_the_table_says_stops_the_audit(chunked: Path,
                                                                 tmp_path: Path) -> None:
    layout = _copy(chunked, tmp_path)
    _rewrite_toc(layout, 1, lambda d: _library(d)[0].update(chunkDigest="sha256:" + "0" * 64))
    with pytest.raises(DigestMismatchError, match=r"libnccl\.so\.2.*does not match its digest"):
        audit(f"oci:{layout.path}:t", AuditOptions(cache_dir=str(tmp_path / "c"), lazy=True))
    cli = Cli(tmp_path)
    result = cli.run("audit", f"oci:{layout.path}:t", "--lazy")
    assert result.returncode == 2 and "does not match its digest" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_table_that_does_not_match_its_annotation_is_refused(chunked: Path,
                                                               tmp_path: Path) -> None:
    layout = _copy(chunked, tmp_path)
    manifest = layout.manifest()
    manifest["layers"][1]["annotations"][CHECKSUM] = "sha256:" + "1" * 64
    layout.set_manifest(json.dumps(manifest).encode())
    with pytest.raises(DigestMismatchError, match="table of contents does not match"):
        audit(f"oci:{layout.path}:t", AuditOptions(cache_dir=str(tmp_path / "c"), lazy=True))
    # read whole, the same image is fine: the annotation is only a claim about the table
    document = _document(f"oci:{layout.path}:t", tmp_path / "whole", lazy=False)
    assert document["numeric_stack"]


@pytest.mark.parametrize("edit, message", [
    (lambda d: _library(d)[1].update(chunkOffset=1), "chunks do not tile the file"),
    (lambda d: _library(d)[0].update(offset=10**12), "outside the layer's data"),
    (lambda d: d["entries"].insert(0, {"type": "chunk", "name": "x"}), "does not follow its file"),
    (lambda d: _library(d)[0].update(size=-1), "bad size"),
    (lambda d: d["entries"].append(1), "malformed table of contents entry"),
])
def test_malformed_tables_are_input_errors(chunked: Path, tmp_path: Path, edit: Any,
                                           message: str) -> None:
    layout = _copy(chunked, tmp_path)
    _rewrite_toc(layout, 1, edit)
    with pytest.raises(InputError, match=message):
        audit(f"oci:{layout.path}:t", AuditOptions(cache_dir=str(tmp_path / "c"), lazy=True))


def test_table_positions_are_checked_before_anything_is_fetched() -> None:
    good = {POSITION: "10:20:30:1", CHECKSUM: "sha256:" + "a" * 64}
    assert toc_position(good, 100, "l") == TocPosition(10, 20, 30, "sha256:" + "a" * 64)
    assert toc_position({}, 100, "l") is None
    for given, message in [
        ({POSITION: "90:20:30:1", CHECKSUM: good[CHECKSUM]}, "outside"),
        ({POSITION: "10:20:30:2", CHECKSUM: good[CHECKSUM]}, "unknown type"),
        ({POSITION: "10:20:x:1", CHECKSUM: good[CHECKSUM]}, "malformed"),
        ({POSITION: "10:20:30:1"}, "but not its digest"),
        ({POSITION: "10:20:30:1", CHECKSUM: "md5:00"}, "not a sha256"),
        ({POSITION: f"10:20:{1 << 40}:1", CHECKSUM: good[CHECKSUM]}, "at most"),
    ]:
        with pytest.raises(InputError, match=message):
            toc_position(given, 100, "l")
    table = zstandard.ZstdCompressor().compress(b"[]")
    position = TocPosition(0, len(table), 2, "sha256:" + "b" * 64)
    with pytest.raises(DigestMismatchError):
        parse_toc(table, position, "l", 10)


def test_tables_are_parsed_within_their_bounds() -> None:
    raw = json.dumps({"version": 1, "entries": [{"name": f"d{n}", "type": "dir"}
                                                for n in range(100)]}).encode()
    table = zstandard.ZstdCompressor().compress(raw)
    position = TocPosition(0, len(table), len(raw), digest_bytes(table))
    assert [e.name for e in parse_toc(table, position, "l", 100)][-1] == "d99"
    with pytest.raises(InputError, match="more than 80 entries"):
        parse_toc(table, position, "l", 10)
    with pytest.raises(InputError, match="larger than its annotated"):
        parse_toc(table, TocPosition(0, len(table), len(raw) - 1, digest_bytes(table)), "l", 100)
    cut = zstandard.ZstdCompressor().compress(raw[:-40])
    with pytest.raises(InputError, match="unreadable table of contents"):
        parse_toc(cut, TocPosition(0, len(cut), len(raw), digest_bytes(cut)), "l", 100)


def test_lazy_and_verify_diff_ids_do_not_go_together(chunked: Path, tmp_path: Path) -> None:
    result = Cli(tmp_path).run("audit", f"oci:{chunked}:t", "--lazy", "--verify-diff-ids")
    assert result.returncode == 2
    assert "--lazy or --verify-diff-ids" in result.stderr


# -- ChunkedFile: reads, requests ----------------------------------------------------------------
def _chunked_entry(pieces: list[bytes | int]) -> tuple[TocEntry, bytes, bytes]:
    """A file of ``pieces`` (bytes: a stored chunk, int: a run of that many zeros), its blob (a
    frame per chunk, as containers/storage writes them) and its content."""
    blob, content, chunks = b"", b"", []
    for piece in pieces:
        data = bytes(piece) if isinstance(piece, int) else piece
        frame = zstandard.ZstdCompressor().compress(b"" if isinstance(piece, int) else data)
        chunks.append(Chunk(len(content), len(data), len(blob), len(blob) + len(frame),
                            digest_bytes(data), isinstance(piece, int)))
        blob, content = blob + frame, content + data
    return TocEntry("f", "reg", 0o644, len(content), "", 0, 0, digest_bytes(content),
                    tuple(chunks)), blob, content


def test_a_chunked_file_reads_like_the_file_and_batches_its_requests() -> None:
    rng = random.Random(7)
    pieces: list[bytes | int] = [rng.randbytes(rng.randint(20_000, 90_000)) for _ in range(60)]
    pieces[5] = 70_000  # a run of zeros: never fetched
    entry, blob, content = _chunked_entry(pieces)
    requests: list[tuple[int, int]] = []

    def fetch(start: int, end: int) -> bytes:
        requests.append((start, end))
        return blob[start:end]

    with ChunkedFile(entry, fetch, "layer") as f:
        assert f.read(64) == content[:64]
        assert len(requests) == 1 and requests[0][1] - requests[0][0] <= READ_AHEAD_BYTES
        assert f.read(1000) == content[64:1064]  # read ahead: no new request
        assert len(requests) == 1
        for _ in range(200):  # as a parser jumps about: every read is the file's bytes
            at, n = rng.randrange(entry.size), rng.randint(1, 300_000)
            f.seek(at)
            assert f.read(n) == content[at:at + n] and f.tell() == min(at + n, entry.size)
        f.seek(entry.size - 10)
        assert f.read() == content[-10:] and f.read(5) == b""
    assert f.fetched == sum(end - start for start, end in requests)
    assert all(start < end for start, end in requests)

    small, small_blob, small_content = _chunked_entry([b"x" * 5000, 3000, b"y" * 7000])
    calls: list[int] = []
    with ChunkedFile(small, lambda s, e: calls.append(e - s) or small_blob[s:e], "layer") as f:
        f.seek(small.size - 4)
        assert f.read(4) == small_content[-4:]
        f.seek(0)
        assert f.read() == small_content
    assert len(calls) == 1  # a small file comes whole, in one request


def test_a_chunked_file_keeps_a_bounded_number_of_chunk_bytes() -> None:
    """eStargz writes 4 MiB chunks: eight of them kept per file, four files at a time, would
    be a quarter of the memory bound; what is kept is bounded in bytes too."""
    size = 3 << 20
    pieces: list[bytes | int] = [bytes([n]) * size for n in range(12)]
    entry, blob, content = _chunked_entry(pieces)
    requests: list[int] = []
    with ChunkedFile(entry, lambda s, e: requests.append(s) or blob[s:e], "layer") as f:
        for n in range(12):
            f.seek(n * size)
            assert f.read(10) == content[n * size:n * size + 10]
        fetched = len(requests)
        f.seek(11 * size - 5)  # the newest two: still kept
        assert f.read(10) == content[11 * size - 5:11 * size + 5] and len(requests) == fetched
        f.seek(0)  # the oldest: dropped (KEPT_BYTES), fetched again
        assert f.read(10) == content[:10] and len(requests) == fetched + 1
    assert 8 * size > KEPT_BYTES  # so the count (CHUNKS_KEPT) is not what dropped it


def test_a_chunk_whose_bytes_lie_is_refused() -> None:
    entry, blob, _ = _chunked_entry([b"a" * 1000, b"b" * 1000])
    forged = blob.replace(zstandard.ZstdCompressor().compress(b"b" * 1000),
                          zstandard.ZstdCompressor().compress(b"c" * 1000))
    with ChunkedFile(entry, lambda s, e: forged[s:e], "layer") as f, \
            pytest.raises(DigestMismatchError, match="at 1000 does not match its digest"):
        f.read()
