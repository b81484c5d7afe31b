"""Builders of test images and the check every source's tests run (``validate_image``).

Shipped in the library, like go-containerregistry's ``random`` and ``validate`` packages, so that
users writing their own sources or catalogers test them the same way. Everything is built with
``tarfile`` in memory-bounded, deterministic steps: the same inputs give the same digests.

``build_oci_layout`` takes layers built in memory (small images); ``build_oci_layout_from_tars``
takes uncompressed layer tars on disk and streams them, a MiB at a time, into the same blobs:
both write every layer through one compressor and one manifest writer, so the same tar bytes
give the same digests either way.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import tarfile
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import zstandard

from auditor import mediatypes as mt
from auditor.digest import digest_bytes
from auditor.model import Layer, Platform
from auditor.rootfs.build import LayerProgress
from auditor.rootfs.decompress import LayerReader, Limits

EPOCH = 1_700_000_000  # fixed mtime so that builds are reproducible


class PassRecorder(LayerProgress):
    """A layer pass's progress that records, per layer, whether it came from the cache, how
    often it was started (a layer read ahead and found wanting is read again) and its bytes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # layers read at once report from their threads
        self._cached: dict[int, bool] = {}
        self.starts: dict[int, int] = {}
        self.bytes: dict[int, int] = {}
        self.done: list[int] = []

    @property
    def cached(self) -> list[bool]:
        """Whether each layer came from the cache, in layer order."""
        return [self._cached[i] for i in sorted(self._cached)]

    def layer_started(self, layer: Layer, total: int | None, cached: bool) -> None:
        with self._lock:
            self._cached[layer.index] = cached
            self.starts[layer.index] = self.starts.get(layer.index, 0) + 1

    def advance(self, layer: Layer, n: int) -> None:
        with self._lock:
            self.bytes[layer.index] = self.bytes.get(layer.index, 0) + n

    def layer_done(self, layer: Layer) -> None:
        self.done.append(layer.index)


class LayerBuilder:
    """A layer as a list of tar entries, in order. Methods return self so calls can be chained."""

    def __init__(self) -> None:
        self.entries: list[tuple[tarfile.TarInfo, bytes | None]] = []

    def _add(self, info: tarfile.TarInfo, data: bytes | None = None) -> LayerBuilder:
        info.mtime = info.mtime or EPOCH
        info.uname = info.gname = ""
        self.entries.append((info, data))
        return self

    def file(self, path: str, data: bytes | str, mode: int = 0o644) -> LayerBuilder:
        raw = data.encode() if isinstance(data, str) else data
        info = tarfile.TarInfo(path)
        info.size, info.mode = len(raw), mode
        return self._add(info, raw)

    def dir(self, path: str, mode: int = 0o755) -> LayerBuilder:
        info = tarfile.TarInfo(path)
        info.type, info.mode = tarfile.DIRTYPE, mode
        return self._add(info)

    def symlink(self, path: str, target: str) -> LayerBuilder:
        info = tarfile.TarInfo(path)
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
        return self._add(info)

    def hardlink(self, path: str, target: str) -> LayerBuilder:
        info = tarfile.TarInfo(path)
        info.type, info.linkname, info.mode = tarfile.LNKTYPE, target, 0o644
        return self._add(info)

    def whiteout(self, path: str) -> LayerBuilder:
        """Delete ``path`` of the lower layers (``.wh.NAME``)."""
        head, _, name = path.rstrip("/").rpartition("/")
        return self.file(f"{head}/.wh.{name}" if head else f".wh.{name}", b"")

    def opaque(self, directory: str) -> LayerBuilder:
        """Hide everything the lower layers have under ``directory``."""
        return self.file(f"{directory.rstrip('/')}/.wh..wh..opq", b"")

    def special(self, path: str, kind: str) -> LayerBuilder:
        info = tarfile.TarInfo(path)
        info.type = {"fifo": tarfile.FIFOTYPE, "char": tarfile.CHRTYPE,
                     "block": tarfile.BLKTYPE}[kind]
        info.devmajor, info.devminor, info.mode = 1, 3, 0o666
        return self._add(info)

    def tar_bytes(self) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for info, data in self.entries:
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()


def files_layer(files: Mapping[str, str | bytes]) -> LayerBuilder:
    """A layer of these files, with entries for their parent directories (as real layer tars
    usually have)."""
    layer, dirs = LayerBuilder(), set()
    for path in files:
        parts = path.split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    for directory in sorted(dirs):
        layer.dir(directory)
    for path, data in files.items():
        layer.file(path, data)
    return layer


@dataclass(frozen=True)
class BuiltImage:
    """What a builder wrote, for tests to compare against what a source reads."""

    path: Path
    tag: str
    manifest_digest: str
    config_digest: str
    diff_ids: list[str]
    layer_digests: list[str]
    platform: Platform
    index_digest: str | None = None
    manifest: dict[str, Any] = field(default_factory=dict, compare=False)


# -- layer blobs, compressed a chunk at a time ---------------------------------------------------
CHUNK = 1 << 20


class _Compressor(Protocol):
    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _Uncompressed:
    def compress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


def _compressor(compression: str, size: int) -> tuple[_Compressor, str]:
    """A compressor for a layer of ``size`` uncompressed bytes, and the layer's media type."""
    if compression == "gzip":  # wbits 31: zlib's gzip wrapper, as gzip.compress(tar, 1, mtime=0)
        return zlib.compressobj(1, zlib.DEFLATED, 31), mt.OCI_LAYER_GZIP
    if compression == "zstd":  # the size goes into the frame header, as a one-shot compress does
        return zstandard.ZstdCompressor(level=1).compressobj(size=size), mt.OCI_LAYER_ZSTD
    if compression == "none":
        return _Uncompressed(), mt.OCI_LAYER
    raise ValueError(f"unknown compression {compression!r}")


def compress(tar: bytes, compression: str) -> tuple[bytes, str]:
    """A layer blob in memory (the same bytes as the layout builders write) and its media type."""
    out = io.BytesIO()
    _, media_type = _compress_stream(io.BytesIO(tar), len(tar), compression, out.write)
    return out.getvalue(), media_type


def _compress_stream(source: BinaryIO, size: int, compression: str,
                     write: Callable[[bytes], object]) -> tuple[str, str]:
    """Read ``size`` bytes of uncompressed tar from ``source`` a chunk at a time, hand them to
    ``write`` compressed; return (diff_id, media type)."""
    compressor, media_type = _compressor(compression, size)
    diff_id, read = hashlib.sha256(), 0
    while chunk := source.read(CHUNK):
        diff_id.update(chunk)
        read += len(chunk)
        write(compressor.compress(chunk))
    write(compressor.flush())
    if read != size:
        raise ValueError(f"layer tar changed while read: {read} bytes, expected {size}")
    return f"sha256:{diff_id.hexdigest()}", media_type


class _HashingFile:
    """Write-only: bytes go to ``out``, counted and hashed on the way."""

    def __init__(self, out: BinaryIO) -> None:
        self.out, self.sha, self.size = out, hashlib.sha256(), 0

    def write(self, data: bytes) -> None:
        if data:
            self.sha.update(data)
            self.size += len(data)
            self.out.write(data)


def image_config(diff_ids: list[str], platform: Platform, extra: Mapping[str, Any] | None = None,
                 history: list[str] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "created": "2023-11-14T22:13:20Z",
        "architecture": platform.architecture,
        "os": platform.os,
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": step}
                    for step in (history or [f"layer {i}" for i in range(len(diff_ids))])],
    }
    if platform.variant:
        config["variant"] = platform.variant
    for key, value in (extra or {}).items():
        if key == "config":
            config["config"].update(value)
        else:
            config[key] = value
    return config


def _as_tar(layer: LayerBuilder | bytes) -> bytes:
    return layer.tar_bytes() if isinstance(layer, LayerBuilder) else layer


class _Layout:
    """Writes blobs and an index.json in OCI image layout form."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.blobs = self.path / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        (self.path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        index_file = self.path / "index.json"
        self.index = (json.loads(index_file.read_text()) if index_file.exists()
                      else {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []})

    def blob(self, data: bytes) -> str:
        digest = digest_bytes(data)
        target = self.blobs / digest.split(":")[1]
        if not target.exists():
            target.write_bytes(data)
        return digest

    def layer(self, source: BinaryIO, size: int, compression: str) -> _Layer:
        """A layer blob from its uncompressed tar (``size`` bytes read from ``source``), never
        whole in memory: compressed into a temp file in the layout, hashed as it is written, then
        renamed to its digest."""
        fd, temp = tempfile.mkstemp(prefix=".layer-", suffix=".partial", dir=self.path)
        try:
            os.fchmod(fd, 0o644)  # as the other blobs (mkstemp makes it 0600)
            with os.fdopen(fd, "wb") as raw:
                out = _HashingFile(raw)
                diff_id, media_type = _compress_stream(source, size, compression, out.write)
            digest = f"sha256:{out.sha.hexdigest()}"
            os.replace(temp, self.blobs / digest.split(":")[1])
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        return _Layer({"mediaType": media_type, "digest": digest, "size": out.size}, diff_id)

    def layer_from_file(self, tar_path: Path, compression: str, move: bool) -> _Layer:
        size = tar_path.stat().st_size
        if not move:
            with open(tar_path, "rb") as source:
                return self.layer(source, size, compression)
        if compression != "none":
            raise ValueError("move=True needs compression='none' (the tar is the blob)")
        digest = file_digest(tar_path)
        os.replace(tar_path, self.blobs / digest.split(":")[1])  # a no-op when it is the blob
        return _Layer({"mediaType": mt.OCI_LAYER, "digest": digest, "size": size}, digest)

    def tag(self, descriptor: dict[str, Any], tag: str) -> None:
        key = "org.opencontainers.image.ref.name"
        self.index["manifests"] = [m for m in self.index["manifests"]
                                   if (m.get("annotations") or {}).get(key) != tag]
        self.index["manifests"].append({**descriptor, "annotations": {key: tag}})
        (self.path / "index.json").write_text(json.dumps(self.index, indent=2))


@dataclass(frozen=True)
class _Layer:
    descriptor: dict[str, Any]
    diff_id: str


def file_digest(path: Path) -> str:
    """A file's ``sha256:`` digest, read a chunk at a time."""
    sha = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(CHUNK):
            sha.update(chunk)
    return f"sha256:{sha.hexdigest()}"


def _in_memory(layout: _Layout, layers: Iterable[LayerBuilder | bytes],
               compression: str) -> list[_Layer]:
    tars = (_as_tar(layer) for layer in layers)
    return [layout.layer(io.BytesIO(tar), len(tar), compression) for tar in tars]


def _write_image(layout: _Layout, layers: list[_Layer], platform: Platform,
                 config: Mapping[str, Any] | None, history: list[str] | None,
                 annotations: Mapping[str, str] | None = None) -> tuple[dict[str, Any], BuiltImage]:
    """The config and manifest around layers already in the layout: (manifest descriptor, image)."""
    diff_ids = [layer.diff_id for layer in layers]
    descs = [layer.descriptor for layer in layers]
    config_bytes = json.dumps(image_config(diff_ids, platform, config, history),
                              sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": layout.blob(config_bytes),
                   "size": len(config_bytes)},
        "layers": descs,
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    manifest_bytes = json.dumps(manifest, indent=2).encode()
    desc = {"mediaType": mt.OCI_MANIFEST, "digest": layout.blob(manifest_bytes),
            "size": len(manifest_bytes)}
    built = BuiltImage(layout.path, "", desc["digest"], manifest["config"]["digest"], diff_ids,
                       [d["digest"] for d in descs], platform, manifest=manifest)
    return desc, built


def _tagged_image(layout: _Layout, layers: list[_Layer], tag: str, platform: Platform,
                  config: Mapping[str, Any] | None, history: list[str] | None,
                  annotations: Mapping[str, str] | None = None) -> BuiltImage:
    desc, built = _write_image(layout, layers, platform, config, history, annotations)
    layout.tag(desc, tag)
    return BuiltImage(**{**built.__dict__, "tag": tag})


def build_oci_layout(path: str | os.PathLike[str], layers: Iterable[LayerBuilder | bytes],
                     tag: str = "latest", compression: str = "gzip",
                     platform: Platform = Platform("linux", "amd64"),
                     config: Mapping[str, Any] | None = None,
                     history: list[str] | None = None,
                     annotations: Mapping[str, str] | None = None) -> BuiltImage:
    """Write (or add to) an OCI image layout holding one image under ``tag`` (``annotations``:
    the manifest's, e.g. ``org.opencontainers.image.base.name``).

    Layers are built in memory: for small images. Big ones: ``build_oci_layout_from_tars``."""
    layout = _Layout(Path(path))
    return _tagged_image(layout, _in_memory(layout, layers, compression), tag, platform, config,
                         history, annotations)


def build_oci_layout_from_tars(path: str | os.PathLike[str],
                               tar_paths: Sequence[str | os.PathLike[str]], tag: str = "latest",
                               compression: str = "gzip",
                               platform: Platform = Platform("linux", "amd64"),
                               config: Mapping[str, Any] | None = None,
                               history: list[str] | None = None,
                               move: bool = False) -> BuiltImage:
    """``build_oci_layout`` for layers given as uncompressed tar files on disk, of any size.

    Each tar is read a MiB at a time: hashed (its diff_id) and compressed into a temp file in
    the layout, itself hashed as it is written and renamed to its digest; memory holds a chunk,
    never a layer. The same bytes give the same blobs and digests as ``build_oci_layout``.
    ``move=True`` (with ``compression="none"`` only) renames each tar into the blobs instead of
    copying it: the tar files are gone afterwards (the layout's own blob paths may be given).
    """
    layout = _Layout(Path(path))
    layers = [layout.layer_from_file(Path(p), compression, move) for p in tar_paths]
    return _tagged_image(layout, layers, tag, platform, config, history)


@dataclass(frozen=True)
class LayerBlob:
    """A layer already compressed by some other writer (an eStargz converter, say): its blob file,
    media type, the diff_id of what it inflates to, and the descriptor's annotations."""

    path: Path
    media_type: str
    diff_id: str
    annotations: Mapping[str, str] = field(default_factory=dict)


def build_oci_layout_from_blobs(path: str | os.PathLike[str], blobs: Sequence[LayerBlob],
                                tag: str = "latest",
                                platform: Platform = Platform("linux", "amd64"),
                                config: Mapping[str, Any] | None = None,
                                history: list[str] | None = None) -> BuiltImage:
    """``build_oci_layout`` for layers given as blobs: each is copied into the layout under its
    digest, its descriptor carrying its annotations."""
    layout = _Layout(Path(path))
    layers = []
    for blob in blobs:
        digest = file_digest(blob.path)
        shutil.copyfile(blob.path, layout.blobs / digest.split(":")[1])
        descriptor = {"mediaType": blob.media_type, "digest": digest,
                      "size": blob.path.stat().st_size}
        if blob.annotations:
            descriptor["annotations"] = dict(blob.annotations)
        layers.append(_Layer(descriptor, blob.diff_id))
    return _tagged_image(layout, layers, tag, platform, config, history)


def build_multiarch_layout(path: str | os.PathLike[str],
                           images: Mapping[Platform, Iterable[LayerBuilder | bytes]],
                           tag: str = "latest", compression: str = "gzip") -> dict[Platform, BuiltImage]:
    """Write an OCI layout whose ``tag`` names an image index with one image per platform."""
    layout = _Layout(Path(path))
    entries, built = [], {}
    for platform, layers in images.items():
        desc, image = _write_image(layout, _in_memory(layout, layers, compression), platform,
                                   None, None)
        plat = {"os": platform.os, "architecture": platform.architecture}
        if platform.variant:
            plat["variant"] = platform.variant
        entries.append({**desc, "platform": plat})
        built[platform] = image
    index_bytes = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                              "manifests": entries}, indent=2).encode()
    index_desc = {"mediaType": mt.OCI_INDEX, "digest": layout.blob(index_bytes),
                  "size": len(index_bytes)}
    layout.tag(index_desc, tag)
    return {p: BuiltImage(**{**b.__dict__, "tag": tag, "index_digest": index_desc["digest"]})
            for p, b in built.items()}


def build_docker_archive(path: str | os.PathLike[str], layers: Iterable[LayerBuilder | bytes],
                         repo_tag: str = "example/image:latest",
                         platform: Platform = Platform("linux", "amd64"),
                         config: Mapping[str, Any] | None = None) -> BuiltImage:
    """Write a classic ``docker save`` tarball (manifest.json, config, uncompressed layer tars)."""
    tars = [_as_tar(layer) for layer in layers]
    diff_ids = [digest_bytes(t) for t in tars]
    config_bytes = json.dumps(image_config(diff_ids, platform, config), sort_keys=True).encode()
    config_digest = digest_bytes(config_bytes)
    layer_names = [f"{d.split(':')[1]}/layer.tar" for d in diff_ids]
    manifest = [{"Config": f"{config_digest.split(':')[1]}.json", "RepoTags": [repo_tag],
                 "Layers": layer_names}]
    with tarfile.open(path, "w") as out:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), EPOCH
            out.addfile(info, io.BytesIO(data))

        add(manifest[0]["Config"], config_bytes)
        for name, tar in zip(layer_names, tars, strict=True):
            add(name, tar)
        add("manifest.json", json.dumps(manifest).encode())
    return BuiltImage(Path(path), repo_tag, "", config_digest, diff_ids, diff_ids, platform)


def random_layers(seed: int = 0, count: int = 3, files: int = 20,
                  max_size: int = 4096) -> list[LayerBuilder]:
    """Layers of random files, links and a whiteout, the same for the same seed."""
    rng = random.Random(seed)
    layers = []
    names: list[str] = []
    for i in range(count):
        layer = LayerBuilder().dir(f"d{i}")
        for j in range(files):
            name = f"d{i}/f{j}.bin"
            layer.file(name, rng.randbytes(rng.randrange(0, max_size)))
            names.append(name)
        if i and names:
            layer.symlink(f"d{i}/link", f"/{rng.choice(names)}")
            layer.whiteout(names.pop(0))
        layers.append(layer)
    return layers


def random_image(path: str | os.PathLike[str], seed: int = 0, count: int = 3,
                 compression: str = "gzip", tag: str = "latest") -> BuiltImage:
    """An OCI layout holding one random image."""
    return build_oci_layout(path, random_layers(seed, count), tag=tag, compression=compression)


def validate_image(image: Any) -> None:
    """Check what every source must give: verified manifest, config and layers, consistent.

    Reads every layer to its end, so each layer's digest and uncompressed diff_id are checked.
    Raises AssertionError describing the first inconsistency.
    """
    assert digest_bytes(image.manifest_bytes, image.digest.split(":")[0]) == image.digest or \
        image.digest_synthesized, "manifest digest does not match the manifest bytes"
    assert digest_bytes(image.config_bytes) == image.image_id, "config digest mismatch"
    diff_ids = image.config["rootfs"]["diff_ids"]
    assert [layer.diff_id for layer in image.layers] == diff_ids, "diff_ids differ from config"
    assert len(image.layers) == len(image.manifest["layers"]), "layer count differs from manifest"
    assert str(image.platform) != "unknown/unknown", "config names no platform"
    for layer in image.layers:
        with image.open_layer(layer) as stream:
            # finish() raises DigestMismatchError if the content does not match the diff_id.
            LayerReader(stream, Limits(), f"layer {layer.index}", layer.diff_id).finish()
            stream.drain()
            assert stream.verified, f"layer {layer.index} was not verified against its digest"


__all__ = [
    "BuiltImage",
    "LayerBlob",
    "LayerBuilder",
    "build_docker_archive",
    "build_multiarch_layout",
    "build_oci_layout",
    "build_oci_layout_from_blobs",
    "build_oci_layout_from_tars",
    "file_digest",
    "files_layer",
    "random_image",
    "random_layers",
    "validate_image",
]
