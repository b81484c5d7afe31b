"""Hostile and broken images: one test per bad input, each asserting its specific outcome.

The rule for every case: a clear one-line ``AuditorError`` (exit 2 through the CLI), or a recorded
and reported skip, and never a traceback, a read outside the image or a write outside the cache
and the report file. Images are real files: OCI layouts from ``build_oci_layout``, edited the way
an attacker would (every digest and size updated, so that verification passes and the content
problem itself is what gets detected), and decompression bombs written streaming to disk.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import struct
import subprocess
import sys
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import zstandard

from auditor import mediatypes as mt
from auditor.audit import AuditOptions, AuditResult, audit
from auditor.digest import digest_bytes
from auditor.errors import DigestMismatchError, InputError, LimitExceededError
from auditor.inventory import CATALOGERS, Cataloger, FileView, Inventory
from auditor.model import Platform, Skipped
from auditor.report.document import build_document
from auditor.rootfs.build import Want, compile_wants
from auditor.rootfs.decompress import Limits
from auditor.rootfs.index import RootfsIndex
from auditor.rootfs.walker import LayerScan, scan_layer
from auditor.testing import LayerBuilder, PassRecorder, build_docker_archive, build_oci_layout, image_config

MiB = 1 << 20
GiB = 1 << 30
REPO = Path(__file__).resolve().parents[2]


# -- helpers ---------------------------------------------------------------------------------
def scan(layer: LayerBuilder | bytes, globs: Sequence[str] = ("*",), limits: Limits = Limits(),
         number: int = 0, blobs: dict[str, bytes] | None = None) -> LayerScan:
    data = layer.tar_bytes() if isinstance(layer, LayerBuilder) else layer
    store = {} if blobs is None else blobs

    def keep(content: bytes) -> str:
        store[digest_bytes(content)] = content
        return digest_bytes(content)

    return scan_layer(io.BytesIO(data), number, compile_wants([Want("t", 1, tuple(globs))]), keep,
                      limits)


def merge(*layers: LayerBuilder, globs: Sequence[str] = ("*",)) -> tuple[RootfsIndex, dict[str, bytes]]:
    index, blobs = RootfsIndex(), {}
    for number, layer in enumerate(layers):
        index.apply(scan(layer, globs, number=number, blobs=blobs))
    return index, blobs


def tar_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


def run_audit(layout: Path, tmp_path: Path, limits: Limits = Limits(),
              catalogers: list[Cataloger] | None = None, verify_diff_ids: bool = False) -> AuditResult:
    return audit(f"oci:{layout}:t", AuditOptions(cache_dir=str(tmp_path / "cache"), limits=limits,
                                                 verify_diff_ids=verify_diff_ids),
                 catalogers=catalogers)


def cached_layer_indexes(tmp_path: Path, diff_id: str | None = None) -> list[str]:
    folder = tmp_path / "cache" / "layers"
    names = sorted(os.listdir(folder)) if folder.is_dir() else []
    if diff_id is None:
        return names
    return [n for n in names if n.startswith(diff_id.split(":")[1])]


class Layout:
    """An OCI layout from ``build_oci_layout``, edited with every digest and size kept right."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def blob(self, digest: str) -> Path:
        return self.path / "blobs" / "sha256" / digest.split(":")[1]

    def put(self, data: bytes) -> str:
        digest = digest_bytes(data)
        self.blob(digest).write_bytes(data)
        return digest

    def index(self) -> dict[str, Any]:
        return json.loads((self.path / "index.json").read_text())

    def manifest(self) -> dict[str, Any]:
        return json.loads(self.blob(self.index()["manifests"][0]["digest"]).read_bytes())

    def config(self) -> dict[str, Any]:
        return json.loads(self.blob(self.manifest()["config"]["digest"]).read_bytes())

    def layer_blob(self, number: int = 0) -> Path:
        return self.blob(self.manifest()["layers"][number]["digest"])

    def set_manifest(self, data: bytes, media_type: str | None = None) -> None:
        index = self.index()
        digest = self.put(data)
        index["manifests"][0].update(digest=digest, size=len(data))
        if media_type:
            index["manifests"][0]["mediaType"] = media_type
        (self.path / "index.json").write_text(json.dumps(index))

    def set_config(self, data: bytes, manifest: dict[str, Any] | None = None) -> None:
        manifest = manifest or self.manifest()
        manifest["config"].update(digest=self.put(data), size=len(data))
        self.set_manifest(json.dumps(manifest).encode())

    def set_layer(self, number: int, data: bytes, diff_id: str | None = None,
                  media_type: str | None = None) -> None:
        manifest, config = self.manifest(), self.config()
        manifest["layers"][number].update(digest=self.put(data), size=len(data))
        if media_type:
            manifest["layers"][number]["mediaType"] = media_type
        if diff_id:
            config["rootfs"]["diff_ids"][number] = diff_id
        self.set_config(json.dumps(config).encode(), manifest)


def small_image(path: Path, compression: str = "gzip", *extra: LayerBuilder | bytes) -> Layout:
    build_oci_layout(path, [LayerBuilder().dir("etc").file("etc/os-release", "ID=base\n"), *extra],
                     tag="t", compression=compression)
    return Layout(path)


# -- the CLI, watched for tracebacks and stray writes ----------------------------------------
def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


class Cli:
    """Runs ``python -m auditor`` in an empty working directory with HOME, XDG_CACHE_HOME and
    TMPDIR pointing at empty directories, and checks where it wrote."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.cache = tmp_path / "cache"
        self.out = tmp_path / "out"
        self.cwd = tmp_path / "cwd"
        self.env = dict(os.environ)
        for key in [k for k in self.env if k.startswith("AUDITOR_")]:
            del self.env[key]
        for name in ("HOME", "XDG_CACHE_HOME", "TMPDIR"):
            folder = tmp_path / "env" / name.lower()
            folder.mkdir(parents=True)
            self.env[name] = str(folder)
        self.env["PYTHONDONTWRITEBYTECODE"] = "1"
        self.env["PYTHONPATH"] = str(REPO)
        self.out.mkdir()
        self.cwd.mkdir()

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        before, before_parent = _files(self.tmp), set(os.listdir(self.tmp.parent))
        command = [sys.executable, "-m", "auditor", *args, "--cache-dir", str(self.cache),
                   "--format", "json", "-o", str(self.out / "report.json")]
        result = subprocess.run(command, cwd=self.cwd, env=self.env, capture_output=True,
                                text=True, timeout=300)
        assert "Traceback" not in result.stdout + result.stderr
        new = _files(self.tmp) - before
        stray = sorted(p for p in new if p != "out/report.json"
                       and p != "cache" and not p.startswith("cache/"))
        assert stray == [], f"wrote outside --cache-dir and -o: {stray}"
        assert set(os.listdir(self.tmp.parent)) == before_parent
        return result

    def fails(self, *args: str, match: str) -> str:
        result = self.run(*args)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("auditor: error: ")
        assert match in lines[0], lines[0]
        assert result.stdout == ""
        assert not (self.out / "report.json").exists()
        return lines[0]

    def passes(self, *args: str) -> dict[str, Any]:
        result = self.run(*args)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        return json.loads((self.out / "report.json").read_text())


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


# -- tar entries that would escape the root --------------------------------------------------
HOSTILE_NAMES = ["../../etc/passwd", "a/../../b", "/etc/shadow", "./../escape", "a/b/../../../c"]


@pytest.mark.parametrize("kind", ["file", "dir", "symlink"])
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_tar_entry_escaping_the_root_is_skipped_and_nothing_else_is_affected(name: str,
                                                                             kind: str) -> None:
    layer = LayerBuilder().dir("etc").file("etc/ok", "fine")
    {"file": lambda: layer.file(name, "evil"), "dir": lambda: layer.dir(name),
     "symlink": lambda: layer.symlink(name, "etc/ok")}[kind]()
    layer.file("after", "still read")
    assert name in tar_names(layer.tar_bytes())  # the builder kept the hostile name as is
    index, blobs = merge(layer)
    assert set(index.entries) == {"etc", "etc/ok", "after"}
    assert sorted(blobs.values()) == [b"fine", b"still read"]
    assert len(index.skipped) == 1
    skipped = index.skipped[0]
    assert (skipped.layer, skipped.path) == (0, name)
    assert ("absolute" if name.startswith("/") else "'..'") in skipped.reason


def test_hostile_entries_are_reported_in_the_cli_report(cli: Cli) -> None:
    layer = (LayerBuilder().file("../../etc/passwd", "evil").file("/etc/shadow", "evil")
             .hardlink("etc/x", "../outside").dir("etc"))
    small_image(cli.tmp / "layout", "gzip", layer)
    document = cli.passes("audit", f"oci:{cli.tmp / 'layout'}:t")
    assert {(s["layer"], s["path"]) for s in document["skipped"]} == {
        (1, "../../etc/passwd"), (1, "/etc/shadow"), (1, "etc/x")}
    assert all(s["reason"] for s in document["skipped"])
    assert document["rootfs"]["entries"] == {"dir": 1, "file": 1}
    assert document["os"]["id"] == "base"


# -- symlinks pointing outside the root ------------------------------------------------------
HOST_PASSWD = Path("/etc/passwd").read_bytes()


class Recorder:
    """A cataloger that reads every path it asked for, as the real ones do."""

    def __init__(self, *globs: str) -> None:
        self.read: dict[str, bytes | None] = {}
        self.cataloger = Cataloger("recorder", 1, globs, self._run)

    def _run(self, view: FileView, inventory: Inventory) -> None:
        for path in view.index.glob("*"):
            self.read[path] = view.read(path)


@pytest.mark.parametrize("with_passwd", [True, False], ids=["image-has-passwd", "no-passwd"])
def test_symlinks_pointing_outside_the_root_stay_inside_the_image(tmp_path: Path,
                                                                  with_passwd: bool) -> None:
    assert HOST_PASSWD  # the host's file is there to be leaked
    image_passwd = b"root:x:0:0:the image's own passwd:/root:/bin/sh\n"
    layer = LayerBuilder().dir("etc")
    if with_passwd:
        layer.file("etc/passwd", image_passwd)
    (layer.symlink("etc/evil", "../../../../../etc/passwd")
     .symlink("etc/evil-abs", "/../../etc/passwd").symlink("etc/shadow-link", "/../../etc/shadow")
     .symlink("etc/proc", "/proc/self/root/etc/passwd").symlink("etc/up", "../../../../../../")
     .dir("usr").symlink("usr/deep", "../../../../../../../../etc/passwd"))
    build_oci_layout(tmp_path / "layout", [layer], tag="t")
    recorder = Recorder("etc/*", "usr/*")
    result = run_audit(tmp_path / "layout", tmp_path, catalogers=[*CATALOGERS, recorder.cataloger])
    index = result.index
    inside = "etc/passwd" if with_passwd else None
    for link in ("etc/evil", "etc/evil-abs", "usr/deep", "etc/up/etc/passwd"):
        assert index.resolve(link) == inside, link
    for link in ("etc/evil", "etc/evil-abs", "usr/deep"):  # what a cataloger reads through them
        assert link in recorder.read
        assert recorder.read[link] == (image_passwd if with_passwd else None), link
    assert index.resolve("etc/shadow-link") is None
    assert recorder.read["etc/shadow-link"] is None
    assert index.resolve("etc/proc") is None
    assert index.resolve("etc/up") == ""  # the image's root, not the host's
    # Nothing of the host's file anywhere: not read, not cached, not in the report.
    assert all(HOST_PASSWD not in (data or b"") for data in recorder.read.values())
    for blob in (tmp_path / "cache" / "blobs" / "sha256").iterdir():
        assert HOST_PASSWD not in blob.read_bytes()
    host_line = HOST_PASSWD.splitlines()[0].decode()
    assert host_line not in json.dumps(build_document(result))


# -- hardlinks -------------------------------------------------------------------------------
@pytest.mark.parametrize(("target", "reason"), [
    ("missing/file", "missing"),
    ("../x", "'..'"),
    ("../../etc/passwd", "'..'"),
    ("/etc/passwd", "absolute"),
    ("etc", "a dir"),
])
def test_hardlink_to_a_missing_or_outside_target_is_skipped(target: str, reason: str) -> None:
    layer = (LayerBuilder().dir("etc").file("etc/passwd", "image passwd")
             .hardlink("etc/link", target).file("etc/after", "a"))
    index, _ = merge(layer)
    assert set(index.entries) == {"etc", "etc/passwd", "etc/after"}
    assert [(s.layer, s.path) for s in index.skipped] == [(0, "etc/link")]
    assert reason in index.skipped[0].reason
    assert index.content_digest("etc/link") is None


@pytest.mark.parametrize("layer", [
    LayerBuilder().hardlink("a", "a"),
    LayerBuilder().hardlink("a", "b").hardlink("b", "a"),
], ids=["self", "cycle"])
def test_hardlink_with_no_file_behind_it_is_skipped(layer: LayerBuilder) -> None:
    index, _ = merge(layer)
    assert index.entries == {}
    assert {s.path for s in index.skipped} == {e[0].name for e in layer.entries}


# -- special files ---------------------------------------------------------------------------
def test_device_nodes_and_fifos_are_indexed_with_their_types_and_nothing_is_read(tmp_path: Path) -> None:
    layer = (LayerBuilder().dir("dev").special("dev/null", "char").special("dev/sda", "block")
             .special("dev/fifo", "fifo").dir("etc").special("etc/os-release", "fifo")
             .file("etc/hostname", "box\n"))
    build_oci_layout(tmp_path / "layout", [layer], tag="t")
    recorder = Recorder("*")
    result = run_audit(tmp_path / "layout", tmp_path, catalogers=[*CATALOGERS, recorder.cataloger])
    index = result.index
    assert {p: (e.type, e.size) for p, e in index.entries.items() if p.startswith("dev/")} == {
        "dev/null": ("char", 0), "dev/sda": ("block", 0), "dev/fifo": ("fifo", 0)}
    assert index.entries["etc/os-release"].type == "fifo"
    assert set(index.captured) == {"etc/hostname"}
    assert {p for p, data in recorder.read.items() if data is not None} == {"etc/hostname"}
    assert index.skipped == []
    assert result.inventory.os is None  # a FIFO named os-release is not read, nor an error
    assert index.counts() == {"block": 1, "char": 1, "dir": 2, "fifo": 2, "file": 1}


# -- whiteouts of nothing --------------------------------------------------------------------
def test_whiteout_of_a_missing_path_is_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    upper = (LayerBuilder().whiteout("etc/not-there").whiteout("no/such/dir")
             .file("etc/added", "added"))
    small_image(tmp_path / "layout", "gzip", upper)
    result = run_audit(tmp_path / "layout", tmp_path)
    assert set(result.index.entries) == {"etc", "etc/os-release", "etc/added"}
    assert [(s.layer, s.path) for s in result.index.skipped] == [(1, "etc/not-there"),
                                                                 (1, "no/such/dir")]
    assert all("whiteout" in s.reason for s in result.index.skipped)
    reported = build_document(result)["skipped"]
    assert [s["path"] for s in reported] == ["etc/not-there", "no/such/dir"]
    assert result.inventory.os is not None and result.inventory.os["id"] == "base"


# -- decompression bombs ---------------------------------------------------------------------
BOMB_SIZE = GiB


def write_zero_bomb(path: Path, compression: str, size: int = BOMB_SIZE) -> str:
    """A tar of one member of ``size`` zero bytes, compressed, written streaming to ``path``.

    The uncompressed tar is a header then nothing but zeros (the data, then the end-of-archive
    blocks). Each MiB of zeros compresses to the same bytes once the compressor's state is
    reset (a deflate full flush; a zstd frame), so the stream is written by repeating them, as a
    bomb-maker would, without compressing a GiB. Returns the diff_id.
    """
    info = tarfile.TarInfo("zeros")
    info.size, info.mtime, info.mode = size, 1_700_000_000, 0o644
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    chunks, rest = divmod(size + 2 * tarfile.BLOCKSIZE, MiB)
    chunk = bytes(MiB)
    diff_id = hashlib.sha256(header)
    for _ in range(chunks):
        diff_id.update(chunk)
    diff_id.update(bytes(rest))
    with open(path, "wb") as out:
        if compression == "gzip":
            deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
            out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")  # gzip header, mtime 0
            out.write(deflate.compress(header) + deflate.flush(zlib.Z_FULL_FLUSH))
            block = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
            crc = zlib.crc32(header)
            for _ in range(chunks):  # the state was reset by the flush: the same bytes each MiB
                out.write(block)
                crc = zlib.crc32(chunk, crc)
            tail = bytes(rest)
            out.write(deflate.compress(tail) + deflate.flush())
            crc = zlib.crc32(tail, crc)
            out.write(struct.pack("<II", crc, (len(header) + chunks * MiB + rest) & 0xFFFFFFFF))
        else:
            frames = zstandard.ZstdCompressor(level=1)
            out.write(frames.compress(header))
            block = frames.compress(chunk)
            for _ in range(chunks):
                out.write(block)
            out.write(frames.compress(bytes(rest)))
    return f"sha256:{diff_id.hexdigest()}"


def layout_from_files(path: Path, layers: list[tuple[Path, str, str]], tag: str = "t") -> Path:
    """An OCI layout whose layer blobs are files already on disk (moved in, hashed streaming)."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    descriptors, diff_ids = [], []
    for file, media_type, diff_id in layers:
        digest = hashlib.sha256()
        with open(file, "rb") as f:
            while data := f.read(MiB):
                digest.update(data)
        size = file.stat().st_size
        file.rename(blobs / digest.hexdigest())
        descriptors.append({"mediaType": media_type, "digest": f"sha256:{digest.hexdigest()}",
                            "size": size})
        diff_ids.append(diff_id)

    def put(data: bytes) -> dict[str, Any]:
        (blobs / digest_bytes(data).split(":")[1]).write_bytes(data)
        return {"digest": digest_bytes(data), "size": len(data)}

    config = json.dumps(image_config(diff_ids, Platform("linux", "amd64"))).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                           "config": {"mediaType": mt.OCI_CONFIG, **put(config)},
                           "layers": descriptors}).encode()
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {"mediaType": mt.OCI_MANIFEST, **put(manifest),
         "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (path / "index.json").write_text(json.dumps(index))
    return path


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """OCI layouts of a small base layer and a 1 GiB-of-zeros layer, gzip and zstd."""
    layouts = {}
    for compression in ("gzip", "zstd"):
        folder = tmp_path_factory.mktemp(f"bomb-{compression}")
        base_tar = LayerBuilder().dir("etc").file("etc/os-release", "ID=bomb\n").tar_bytes()
        base = folder / "base.tar.gz"
        base.write_bytes(gzip.compress(base_tar, mtime=0))
        bomb = folder / f"bomb.tar.{compression}"
        diff_id = write_zero_bomb(bomb, compression)
        assert bomb.stat().st_size < 2 * MiB  # a GiB in under two MiB
        media_type = mt.OCI_LAYER_GZIP if compression == "gzip" else mt.OCI_LAYER_ZSTD
        layouts[compression] = layout_from_files(folder / "layout", [
            (base, mt.OCI_LAYER_GZIP, digest_bytes(base_tar)), (bomb, media_type, diff_id)])
    return layouts


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_bomb_trips_the_ratio_limit_by_default(bombs: dict[str, Path], tmp_path: Path,
                                               compression: str) -> None:
    with pytest.raises(LimitExceededError, match="--max-ratio") as caught:
        run_audit(bombs[compression], tmp_path)
    message = str(caught.value)
    assert "layer 1" in message and "expands more than 200 times" in message
    assert "\n" not in message
    diff_ids = Layout(bombs[compression]).config()["rootfs"]["diff_ids"]
    assert len(cached_layer_indexes(tmp_path, diff_ids[0])) == 1  # the base layer was fine
    assert cached_layer_indexes(tmp_path, diff_ids[1]) == []


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_bomb_trips_the_size_limit(bombs: dict[str, Path], tmp_path: Path, compression: str) -> None:
    limits = Limits(max_layer_bytes=100 * MiB, max_ratio=1e9)
    with pytest.raises(LimitExceededError, match="--max-layer-size") as caught:
        run_audit(bombs[compression], tmp_path, limits)
    assert "100.0 MiB" in str(caught.value)


def test_bomb_is_read_with_raised_limits(bombs: dict[str, Path], tmp_path: Path) -> None:
    result = run_audit(bombs["zstd"], tmp_path, Limits(max_ratio=100_000))
    zeros = result.index.entries["zeros"]
    assert (zeros.type, zeros.size, zeros.layer) == ("file", BOMB_SIZE, 1)
    assert result.inventory.os is not None and result.inventory.os["id"] == "bomb"


def test_bomb_through_the_cli_fails_in_one_line(bombs: dict[str, Path], cli: Cli) -> None:
    line = cli.fails("audit", f"oci:{bombs['gzip']}:t", match="--max-ratio")
    assert "decompression bomb" in line
    bomb_diff_id = Layout(bombs["gzip"]).config()["rootfs"]["diff_ids"][1]
    assert cached_layer_indexes(cli.tmp, bomb_diff_id) == []


def test_bomb_through_the_cli_passes_with_max_ratio(bombs: dict[str, Path], cli: Cli) -> None:
    document = cli.passes("audit", f"oci:{bombs['zstd']}:t", "--max-ratio", "100000")
    assert document["rootfs"]["file_bytes"] == BOMB_SIZE + len("ID=bomb\n")
    assert document["rootfs"]["entries"] == {"dir": 1, "file": 2}


def test_zstd_bomb_through_the_cli_trips_the_size_limit(bombs: dict[str, Path], cli: Cli) -> None:
    cli.fails("audit", f"oci:{bombs['zstd']}:t", "--max-layer-size", "64M",
              "--max-ratio", "1000000", match="--max-layer-size")


# -- truncated layers ------------------------------------------------------------------------
def _partial_decompress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return zlib.decompressobj(wbits=31).decompress(data)
    if compression == "zstd":
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
        out = []
        while chunk := reader.read(MiB):
            out.append(chunk)
        return b"".join(out)
    return data


def _big_layer() -> LayerBuilder:
    # Incompressible content, so that half of any blob ends inside this file's data.
    return LayerBuilder().dir("opt").file("opt/blob.bin", os.urandom(256 * 1024)).file("opt/z", "z")


def _truncated_image(path: Path, compression: str) -> Layout:
    layer = _big_layer()
    layout = small_image(path, compression, layer)
    blob = layout.layer_blob(1).read_bytes()
    cut = blob[: len(blob) // 2]
    tar = _partial_decompress(cut, compression)
    with tarfile.open(fileobj=io.BytesIO(layer.tar_bytes())) as full:
        member = full.getmember("opt/blob.bin")
    assert member.offset_data < len(tar) < member.offset_data + member.size  # cut inside the data
    # Every digest made consistent: the blob's, the manifest's and the config's diff_id.
    layout.set_layer(1, cut, diff_id=digest_bytes(tar))
    return layout


@pytest.mark.parametrize("compression", ["gzip", "none", "zstd"])
def test_truncated_layer_with_consistent_digests_is_detected_as_truncated(
        tmp_path: Path, compression: str) -> None:
    layout = _truncated_image(tmp_path / "layout", compression)
    with pytest.raises(InputError, match="truncated") as caught:
        run_audit(layout.path, tmp_path)
    assert not isinstance(caught.value, DigestMismatchError)
    assert "layer 1" in str(caught.value)
    assert cached_layer_indexes(tmp_path, layout.config()["rootfs"]["diff_ids"][1]) == []


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_truncated_layer_through_the_cli(cli: Cli, compression: str) -> None:
    layout = _truncated_image(cli.tmp / "layout", compression)
    cli.fails("audit", f"oci:{layout.path}:t", match="truncated")


def test_uncompressed_layer_cut_inside_a_header_is_detected(tmp_path: Path) -> None:
    layer = LayerBuilder().dir("opt").file("opt/a", b"a" * 1000).file("opt/b", "b")
    tar = layer.tar_bytes()
    with tarfile.open(fileobj=io.BytesIO(tar)) as full:
        cut = tar[: full.getmember("opt/b").offset + 100]  # 100 bytes into opt/b's header
    layout = small_image(tmp_path / "layout", "none", layer)
    layout.set_layer(1, cut, diff_id=digest_bytes(cut))
    with pytest.raises(InputError, match="truncated"):
        run_audit(layout.path, tmp_path)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_layer_cut_a_few_bytes_short_is_detected(tmp_path: Path, compression: str) -> None:
    layer = LayerBuilder().dir("opt").file("opt/a", "a" * 5000).file("opt/b", "b")
    layout = small_image(tmp_path / "layout", compression, layer)
    cut = layout.layer_blob(1).read_bytes()[:-3]
    layout.set_layer(1, cut, diff_id=digest_bytes(_partial_decompress(cut, compression)))
    with pytest.raises(InputError, match="truncated"):
        run_audit(layout.path, tmp_path)


@pytest.mark.parametrize("compression", ["gzip", "none", "zstd"])
def test_cut_blob_under_its_old_descriptor_is_a_digest_mismatch(tmp_path: Path,
                                                                compression: str) -> None:
    layout = small_image(tmp_path / "layout", compression, _big_layer())
    digest = layout.manifest()["layers"][1]["digest"]
    blob = layout.layer_blob(1)
    blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])
    with pytest.raises(DigestMismatchError) as caught:
        run_audit(layout.path, tmp_path)
    assert digest in str(caught.value)
    assert cached_layer_indexes(tmp_path, layout.config()["rootfs"]["diff_ids"][1]) == []


def test_cut_blob_under_its_old_descriptor_through_the_cli(cli: Cli) -> None:
    layout = small_image(cli.tmp / "layout", "gzip", _big_layer())
    digest = layout.manifest()["layers"][1]["digest"]
    blob = layout.layer_blob(1)
    blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])
    line = cli.fails("audit", f"oci:{layout.path}:t", match=digest)
    assert "does not match" in line


# -- not what it claims to be ----------------------------------------------------------------
@pytest.mark.parametrize(("payload", "match"), [
    (b"\x1f\x8b" + b"this is no deflate stream" * 40, "not valid gzip"),
    (b"\x28\xb5\x2f\xfd" + b"this is no zstd frame" * 40, "not valid zstd"),
    (b"just some text, labelled as a gzip layer\n" * 40, "not a tar archive"),
], ids=["gzip-magic", "zstd-magic", "no-magic"])
def test_garbage_instead_of_gzip(tmp_path: Path, payload: bytes, match: str) -> None:
    layout = small_image(tmp_path / "layout", "gzip")
    layout.set_layer(0, payload, diff_id=digest_bytes(payload), media_type=mt.OCI_LAYER_GZIP)
    with pytest.raises(InputError, match=match) as caught:
        run_audit(layout.path, tmp_path)
    assert "layer 0" in str(caught.value)
    assert not isinstance(caught.value, DigestMismatchError)


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_layer_that_is_not_a_tar(tmp_path: Path, compression: str) -> None:
    text = b"#!/bin/sh\necho this is a shell script, not a layer\n" * 50
    layout = small_image(tmp_path / "layout", compression, text)
    with pytest.raises(InputError, match="not a tar archive") as caught:
        run_audit(layout.path, tmp_path)
    assert "layer 1" in str(caught.value)


def test_layer_that_is_not_a_tar_through_the_cli(cli: Cli) -> None:
    small_image(cli.tmp / "layout", "gzip", b"\x00\x01 definitely not a tar" * 100)
    cli.fails("audit", f"oci:{cli.tmp / 'layout'}:t", match="not a tar archive")


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_empty_layer_is_valid_and_holds_nothing(tmp_path: Path, compression: str) -> None:
    build_oci_layout(tmp_path / "layout",
                     [b"", LayerBuilder().dir("etc").file("etc/os-release", "ID=top\n"), b""],
                     tag="t", compression=compression)
    result = run_audit(tmp_path / "layout", tmp_path)
    assert set(result.index.entries) == {"etc", "etc/os-release"}
    assert {e.layer for e in result.index.entries.values()} == {1}
    assert result.index.skipped == []
    assert result.inventory.os is not None and result.inventory.os["id"] == "top"
    assert [layer["files_visible"] for layer in build_document(result)["layers"]] == [0, 2, 0]


def _claim_diff_id(layout: Layout, number: int, diff_id: str) -> None:
    config = layout.config()
    config["rootfs"]["diff_ids"][number] = diff_id
    layout.set_config(json.dumps(config).encode())


def test_diff_id_that_does_not_match_the_content_is_a_digest_mismatch_when_verified(
        tmp_path: Path) -> None:
    layout = small_image(tmp_path / "layout")
    wrong = digest_bytes(b"some other layer")
    _claim_diff_id(layout, 0, wrong)
    with pytest.raises(DigestMismatchError, match="diff_id") as caught:
        run_audit(layout.path, tmp_path, verify_diff_ids=True)
    assert wrong in str(caught.value)
    assert cached_layer_indexes(tmp_path, wrong) == []


def test_diff_id_mismatch_through_the_cli_with_verify_diff_ids(cli: Cli) -> None:
    layout = small_image(cli.tmp / "layout")
    wrong = digest_bytes(b"some other layer")
    _claim_diff_id(layout, 0, wrong)
    line = cli.fails("audit", f"oci:{layout.path}:t", "--verify-diff-ids", match=wrong)
    assert "does not match diff_id" in line
    # Without the flag the blobs, checked against their digests, are what is audited.
    assert cli.passes("audit", f"oci:{layout.path}:t")["os"]["id"] == "base"


def test_a_claimed_diff_id_never_serves_the_scan_of_another_blob(tmp_path: Path) -> None:
    """Cache poisoning both ways: a hostile image claiming a known layer's diff_id is read for
    what it holds, and a legitimate image audited after it is not served the hostile scan."""
    real = small_image(tmp_path / "real", "gzip", LayerBuilder().dir("opt").file("opt/real", "r"))
    fake = small_image(tmp_path / "fake", "gzip", LayerBuilder().dir("opt").file("opt/fake", "f"))
    _claim_diff_id(fake, 1, real.config()["rootfs"]["diff_ids"][1])
    for layout, present, absent in ((real, "opt/real", "opt/fake"), (fake, "opt/fake", "opt/real"),
                                    (real, "opt/real", "opt/fake")):
        passes = PassRecorder()
        result = audit(f"oci:{layout.path}:t", AuditOptions(cache_dir=str(tmp_path / "cache")),
                       passes)
        assert present in result.index.entries and absent not in result.index.entries
    assert passes.cached == [True, True]  # the real image's own scans, not the fake's


@pytest.mark.parametrize("verify", [True, False])
def test_a_verified_compressed_scan_serves_the_same_layer_stored_uncompressed(
        tmp_path: Path, verify: bool) -> None:
    layer = LayerBuilder().dir("opt").file("opt/a", "a" * 5000)
    gz, plain = small_image(tmp_path / "gz", "gzip", layer), small_image(tmp_path / "plain", "none", layer)
    assert gz.config()["rootfs"]["diff_ids"] == plain.config()["rootfs"]["diff_ids"]
    options = AuditOptions(cache_dir=str(tmp_path / "cache"), verify_diff_ids=verify)
    audit(f"oci:{gz.path}:t", options)
    passes = PassRecorder()
    result = audit(f"oci:{plain.path}:t", options, passes)
    assert "opt/a" in result.index.entries
    # Hashed on the way, the gzip layers' content is known to be the diff_id's; unverified, the
    # uncompressed blobs are other bytes and are read.
    assert passes.cached == [verify, verify]


# -- limits ----------------------------------------------------------------------------------
def _many_entries(count: int) -> LayerBuilder:
    layer = LayerBuilder().dir("many")
    for i in range(count - 1):
        layer.file(f"many/f{i:03}", str(i))
    return layer


def test_layer_with_more_entries_than_the_limit(tmp_path: Path) -> None:
    small_image(tmp_path / "layout", "gzip", _many_entries(51))
    with pytest.raises(LimitExceededError, match="more than 50 entries; raise --max-entries"):
        run_audit(tmp_path / "layout", tmp_path, Limits(max_entries=50))
    assert len(run_audit(tmp_path / "layout", tmp_path, Limits(max_entries=51)).index.entries) == 53


def test_layer_with_more_entries_than_the_limit_through_the_cli(cli: Cli) -> None:
    small_image(cli.tmp / "layout", "gzip", _many_entries(30))
    cli.fails("audit", f"oci:{cli.tmp / 'layout'}:t", "--max-entries", "20",
              match="--max-entries")


def test_wanted_file_over_the_capture_limit_is_indexed_not_captured_and_reported(
        tmp_path: Path) -> None:
    big = "ID=big\n" + "# padding\n" * 200
    small_image(tmp_path / "layout", "gzip", LayerBuilder().dir("etc").file("etc/os-release", big))
    result = run_audit(tmp_path / "layout", tmp_path, Limits(max_capture_bytes=1024))
    entry = result.index.entries["etc/os-release"]
    assert (entry.layer, entry.size) == (1, len(big))
    assert result.index.content_digest("etc/os-release") is None  # nor the base layer's
    assert result.inventory.os is None
    assert result.index.skipped == [Skipped(1, "etc/os-release", result.index.skipped[0].reason)]
    reason = result.index.skipped[0].reason
    assert str(len(big)) in reason and "1024" in reason and "--max-file-size" in reason
    assert build_document(result)["skipped"] == [
        {"layer": 1, "path": "etc/os-release", "reason": reason}]


# -- manifests and configs -------------------------------------------------------------------
SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"


def _schema1_manifest() -> bytes:
    return json.dumps({"schemaVersion": 1, "name": "library/x", "tag": "t",
                       "architecture": "amd64", "fsLayers": [], "history": [],
                       "signatures": []}).encode()


@pytest.mark.parametrize(("edit", "match"), [
    (lambda layout: layout.set_manifest(b'{"schemaVersion": 2, "layers": [', mt.OCI_MANIFEST),
     "is not valid JSON"),
    (lambda layout: layout.set_manifest(b"\xff\xfe not even text"), "is not valid JSON"),
    (lambda layout: layout.set_manifest(b'["a", "list"]'), "is not a JSON object"),
    (lambda layout: layout.set_manifest(_schema1_manifest(), SCHEMA1),
     f"unsupported media type '{SCHEMA1}'"),
    (lambda layout: layout.set_config(b"config? no: {{{"), "is not valid JSON"),
    (lambda layout: layout.set_config(json.dumps({
        **layout.config(), "rootfs": {"type": "layers", "diff_ids": []}}).encode()),
     "lists 0 diff_ids for 1 layers"),
    (lambda layout: layout.set_config(json.dumps({
        **layout.config(), "rootfs": {"type": "layers",
                                      "diff_ids": layout.config()["rootfs"]["diff_ids"] * 3}})
                                      .encode()),
     "lists 3 diff_ids for 1 layers"),
], ids=["manifest-truncated-json", "manifest-binary", "manifest-list", "schema1",
        "config-not-json", "no-diff-ids", "too-many-diff-ids"])
def test_broken_manifest_or_config_is_an_input_error(tmp_path: Path, edit: Any, match: str) -> None:
    layout = small_image(tmp_path / "layout")
    edit(layout)
    with pytest.raises(InputError, match=re.escape(match)) as caught:
        run_audit(layout.path, tmp_path)
    assert not isinstance(caught.value, DigestMismatchError)  # the content, not the digest
    assert "\n" not in str(caught.value)
    assert cached_layer_indexes(tmp_path) == []


def test_broken_manifest_through_the_cli(cli: Cli) -> None:
    layout = small_image(cli.tmp / "layout")
    layout.set_manifest(b"<html>not a manifest</html>")
    cli.fails("audit", f"oci:{layout.path}:t", match="is not valid JSON")


# -- blobs that do not match their digest ----------------------------------------------------
@pytest.mark.parametrize("compression", ["gzip", "none", "zstd"])
def test_tampered_layer_blob_is_a_digest_mismatch_and_nothing_is_cached(tmp_path: Path,
                                                                        compression: str) -> None:
    content = os.urandom(4096)
    layout = small_image(tmp_path / "layout", compression,
                         LayerBuilder().dir("opt").file("opt/data", content))
    digest = layout.manifest()["layers"][1]["digest"]
    diff_id = layout.config()["rootfs"]["diff_ids"][1]
    blob = layout.layer_blob(1)
    data = bytearray(blob.read_bytes())
    # A change every decoder still accepts, so that only the digest can catch it.
    if compression == "gzip":
        data[4] ^= 0xFF  # the header's mtime
    else:
        data[data.index(content[1000:1032]) + 7] ^= 0xFF  # raw file bytes (zstd: raw literals)
    blob.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError) as caught:
        run_audit(layout.path, tmp_path)
    assert digest in str(caught.value) and "does not match" in str(caught.value)
    assert cached_layer_indexes(tmp_path, diff_id) == []


@pytest.mark.parametrize("where", ["deflate-data", "tar-header"])
def test_tampered_blob_that_breaks_decoding_is_still_a_digest_mismatch(tmp_path: Path,
                                                                       where: str) -> None:
    layout = small_image(tmp_path / "layout", "gzip" if where == "deflate-data" else "none",
                         LayerBuilder().dir("opt").file("opt/data", "compressible text " * 400))
    digest = layout.manifest()["layers"][1]["digest"]
    blob = layout.layer_blob(1)
    data = bytearray(blob.read_bytes())
    data[len(data) // 3 if where == "deflate-data" else 0] ^= 0x55
    blob.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError, match=digest):
        run_audit(layout.path, tmp_path)


def test_tampered_layer_blob_through_the_cli(cli: Cli) -> None:
    layout = small_image(cli.tmp / "layout", "gzip")
    digest = layout.manifest()["layers"][0]["digest"]
    blob = layout.layer_blob(0)
    data = bytearray(blob.read_bytes())
    data[5] ^= 0x01
    blob.write_bytes(bytes(data))
    cli.fails("audit", f"oci:{layout.path}:t", match=digest)
    assert os.listdir(cli.cache / "layers") == []


# -- layouts and archives that point outside themselves --------------------------------------
@pytest.mark.parametrize("which", ["layer", "config", "manifest", "blobs-dir", "index.json"])
def test_symlink_in_an_oci_layout_pointing_outside_is_refused(tmp_path: Path, which: str) -> None:
    layout = small_image(tmp_path / "layout")
    outside = tmp_path / "outside"
    outside.mkdir()
    manifest_digest = layout.index()["manifests"][0]["digest"]
    path = {"layer": lambda: layout.layer_blob(0),
            "config": lambda: layout.blob(layout.manifest()["config"]["digest"]),
            "manifest": lambda: layout.blob(manifest_digest),
            "blobs-dir": lambda: layout.path / "blobs" / "sha256",
            "index.json": lambda: layout.path / "index.json"}[which]()
    # The target holds exactly the right bytes: only refusing to follow the link stops the audit.
    target = outside / path.name
    path.rename(target)
    path.symlink_to(target)
    with pytest.raises(InputError, match="outside") as caught:
        run_audit(layout.path, tmp_path)
    assert "\n" not in str(caught.value)


def test_symlinked_blob_through_the_cli(cli: Cli) -> None:
    layout = small_image(cli.tmp / "layout")
    blob = layout.layer_blob(0)
    secret = cli.tmp / "secret"
    blob.rename(secret)
    blob.symlink_to(secret)
    cli.fails("audit", f"oci:{layout.path}:t", match="links outside")


def _docker_archive_manifest(config: str, layers: list[str]) -> bytes:
    return json.dumps([{"Config": config, "RepoTags": ["evil:latest"], "Layers": layers}]).encode()


def _docker_archive_members(tmp_path: Path) -> dict[str, bytes]:
    good = build_docker_archive(tmp_path / "good.tar",
                                [LayerBuilder().dir("etc").file("etc/os-release", "ID=d\n")])
    with tarfile.open(good.path) as tar:
        return {m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers() if m.isfile()}


def _write_tree(folder: Path, members: dict[str, bytes]) -> Path:
    for name, data in members.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


@pytest.mark.parametrize(("config", "layers"), [
    (None, ["../../etc/passwd"]),
    (None, ["/etc/passwd"]),
    (None, ["ok/layer.tar", "ok/../../../etc/passwd"]),
    ("../../etc/passwd", ["ok/layer.tar"]),
], ids=["layer-dotdot", "layer-absolute", "second-layer-dotdot", "config-dotdot"])
@pytest.mark.parametrize("form", ["tar", "directory"])
def test_docker_archive_naming_paths_outside_is_an_input_error(
        tmp_path: Path, form: str, config: str | None, layers: list[str]) -> None:
    members = _docker_archive_members(tmp_path)
    config_name = next(n for n in members if n.endswith(".json") and n != "manifest.json")
    members["ok/layer.tar"] = next(data for n, data in members.items() if n.endswith("layer.tar"))
    members["manifest.json"] = _docker_archive_manifest(config or config_name, layers)
    if form == "tar":
        archive = tmp_path / "evil.tar"
        with tarfile.open(archive, "w") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    else:
        archive = _write_tree(tmp_path / "evil", members)
    with pytest.raises(InputError, match="bad path") as caught:
        audit(f"docker-archive:{archive}", AuditOptions(cache_dir=str(tmp_path / "cache")))
    assert "etc/passwd" in str(caught.value)


def test_docker_archive_directory_with_a_layer_symlinked_outside(tmp_path: Path) -> None:
    archive = _write_tree(tmp_path / "archive", _docker_archive_members(tmp_path))
    audit(f"docker-archive:{archive}", AuditOptions(cache_dir=str(tmp_path / "cache")))  # sound
    layer = next(archive.glob("*/layer.tar"))
    outside = tmp_path / "outside.tar"
    layer.rename(outside)  # the right bytes, outside the archive
    layer.symlink_to(outside)
    with pytest.raises(InputError, match="outside"):
        audit(f"docker-archive:{archive}", AuditOptions(cache_dir=str(tmp_path / "cache")))


def test_docker_archive_traversal_through_the_cli(cli: Cli) -> None:
    archive = cli.tmp / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": [digest_bytes(b"")]}}).encode()
        for name, data in (("c.json", config),
                           ("manifest.json", _docker_archive_manifest("c.json", ["../../etc/passwd"]))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    cli.fails("audit", f"docker-archive:{archive}", match="../../etc/passwd")
