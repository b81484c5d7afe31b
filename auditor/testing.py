"""Builders of test images and the check every source's tests run (``validate_image``).

Shipped in the library, like go-containerregistry's ``random`` and ``validate`` packages, so that
users writing their own sources or catalogers test them the same way. Everything is built with
``tarfile`` in memory-bounded, deterministic steps: the same inputs give the same digests.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from auditor import mediatypes as mt
from auditor.digest import digest_bytes
from auditor.model import Platform
from auditor.rootfs.decompress import LayerReader, Limits

EPOCH = 1_700_000_000  # fixed mtime so that builds are reproducible


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


def compress(tar: bytes, compression: str) -> tuple[bytes, str]:
    if compression == "gzip":
        return gzip.compress(tar, compresslevel=1, mtime=0), mt.OCI_LAYER_GZIP
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=1).compress(tar), mt.OCI_LAYER_ZSTD
    if compression == "none":
        return tar, mt.OCI_LAYER
    raise ValueError(f"unknown compression {compression!r}")


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
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        index_file = self.path / "index.json"
        self.index = (json.loads(index_file.read_text()) if index_file.exists()
                      else {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []})

    def blob(self, data: bytes) -> str:
        digest = digest_bytes(data)
        target = self.path / "blobs" / "sha256" / digest.split(":")[1]
        if not target.exists():
            target.write_bytes(data)
        return digest

    def tag(self, descriptor: dict[str, Any], tag: str) -> None:
        key = "org.opencontainers.image.ref.name"
        self.index["manifests"] = [m for m in self.index["manifests"]
                                   if (m.get("annotations") or {}).get(key) != tag]
        self.index["manifests"].append({**descriptor, "annotations": {key: tag}})
        (self.path / "index.json").write_text(json.dumps(self.index, indent=2))


def _write_image(layout: _Layout, layers: Iterable[LayerBuilder | bytes], compression: str,
                 platform: Platform, config: Mapping[str, Any] | None,
                 history: list[str] | None) -> tuple[dict[str, Any], BuiltImage]:
    diff_ids, descs = [], []
    for layer in layers:
        tar = _as_tar(layer)
        diff_ids.append(digest_bytes(tar))
        blob, media_type = compress(tar, compression)
        descs.append({"mediaType": media_type, "digest": layout.blob(blob), "size": len(blob)})
    config_bytes = json.dumps(image_config(diff_ids, platform, config, history),
                              sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": layout.blob(config_bytes),
                   "size": len(config_bytes)},
        "layers": descs,
    }
    manifest_bytes = json.dumps(manifest, indent=2).encode()
    desc = {"mediaType": mt.OCI_MANIFEST, "digest": layout.blob(manifest_bytes),
            "size": len(manifest_bytes)}
    built = BuiltImage(layout.path, "", desc["digest"], manifest["config"]["digest"], diff_ids,
                       [d["digest"] for d in descs], platform, manifest=manifest)
    return desc, built


def build_oci_layout(path: str | os.PathLike[str], layers: Iterable[LayerBuilder | bytes],
                     tag: str = "latest", compression: str = "gzip",
                     platform: Platform = Platform("linux", "amd64"),
                     config: Mapping[str, Any] | None = None,
                     history: list[str] | None = None) -> BuiltImage:
    """Write (or add to) an OCI image layout holding one image under ``tag``."""
    layout = _Layout(Path(path))
    desc, built = _write_image(layout, layers, compression, platform, config, history)
    layout.tag(desc, tag)
    return BuiltImage(**{**built.__dict__, "tag": tag})


def build_multiarch_layout(path: str | os.PathLike[str],
                           images: Mapping[Platform, Iterable[LayerBuilder | bytes]],
                           tag: str = "latest", compression: str = "gzip") -> dict[Platform, BuiltImage]:
    """Write an OCI layout whose ``tag`` names an image index with one image per platform."""
    layout = _Layout(Path(path))
    entries, built = [], {}
    for platform, layers in images.items():
        desc, image = _write_image(layout, layers, compression, platform, None, None)
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


__all__ = ["BuiltImage", "LayerBuilder", "build_docker_archive", "build_multiarch_layout",
           "build_oci_layout", "random_image", "random_layers", "validate_image"]
