"""One interface for every image source, in the manner of go-containerregistry.

A source implements a small core (:class:`Source`): the manifest or index its reference names,
a child manifest by descriptor, and a blob stream by descriptor. The shared adapter
(:class:`Image`) supplies the rest for every source alike: platform selection from an index,
digest verification of every manifest, config and layer, the blob cache, and parsing of the
config into layers with both their compressed ``digest`` and their uncompressed ``diff_id``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from auditor import mediatypes as mt
from auditor.digest import VerifyingReader, digest_bytes, validate_digest, verify_bytes
from auditor.errors import InputError, PlatformError
from auditor.model import Descriptor, Layer, Platform, host_platform
from auditor.reference import ImageRef
from auditor.sources.cache import BlobCache, ProgressReader

# Manifests and configs are small; a larger one is hostile.
MAX_MANIFEST_BYTES = 4 << 20
MAX_CONFIG_BYTES = 32 << 20


@dataclass(frozen=True)
class Root:
    """What a reference names: a manifest or an index, with what is known of its digest."""

    data: bytes
    media_type: str | None  # from the transport (Content-Type, descriptor); None if unknown
    digest: str | None = None  # the digest the bytes must have, when the reference pins one
    # A synthesized manifest (docker-archive has none): its digest is not an identity.
    synthesized: bool = False


class Source(ABC):
    """The core every image source implements."""

    #: copy blobs into the cache as they are read (remote sources); local ones are read in place
    cache_blobs: bool = False
    #: a blob already in the cache is read from there rather than fetched (remote sources)
    remote: bool = False

    def __init__(self, ref: ImageRef) -> None:
        self.ref = ref

    @abstractmethod
    def root(self) -> Root:
        """The manifest or index the reference names."""

    @abstractmethod
    def manifest(self, descriptor: Descriptor) -> bytes:
        """A manifest named by an index entry (unverified; the adapter verifies)."""

    @abstractmethod
    def blob(self, descriptor: Descriptor, offset: int = 0) -> tuple[BinaryIO, int]:
        """A stream of a blob from ``offset``, or from 0 if it cannot resume; returns the start."""

    def blob_range(self, descriptor: Descriptor, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of a blob, unverified (the caller holds digests of what it
        asks for). This default opens the blob at ``start`` and reads on; a remote source asks
        for just the range."""
        stream, at = self.blob(descriptor, start)
        try:
            return read_span(stream, at, start, end)
        finally:
            stream.close()

    def facts(self) -> dict[str, Any]:
        """Extra facts a source knows (an engine's RepoDigests); shown in the report."""
        return {}

    def recorded_digest(self) -> str | None:
        """For a source without a manifest (a docker save), the manifest digest someone recorded
        for this image: an engine's RepoDigest from when it pulled it. None if nobody did."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the source holds (temporary files, connections)."""


ProgressHook = Callable[[int], None]


def read_span(stream: BinaryIO, at: int, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of a stream standing at ``at`` (at most ``start``): it is moved to
    ``start`` by a seek where it can seek, else by reading on."""
    if at < start:
        seekable = getattr(stream, "seekable", None)
        if seekable is not None and seekable():
            stream.seek(start)
        else:
            while at < start and (skipped := stream.read(min(1 << 20, start - at))):
                at += len(skipped)
    return stream.read(end - start)


@dataclass
class Image:
    """The same view of an image, whichever source it came from."""

    source: Source
    cache: BlobCache | None
    ref: ImageRef
    digest: str  # of the manifest (synthesized for docker-archive: see digest_synthesized)
    digest_synthesized: bool
    media_type: str
    manifest: dict[str, Any]
    manifest_bytes: bytes
    config: dict[str, Any]
    config_bytes: bytes
    config_descriptor: Descriptor
    layers: list[Layer]
    platform: Platform
    index_digest: str | None = None
    platforms: list[Platform] = field(default_factory=list)

    @property
    def identity_digest(self) -> str | None:
        """The manifest digest that names this image: its own, or where the source had no
        manifest, the one an engine recorded when it pulled the image (else None)."""
        return self.source.recorded_digest() if self.digest_synthesized else self.digest

    @property
    def image_id(self) -> str:
        """The config's digest: the same for one image in every source and engine."""
        return self.config_descriptor.digest

    def layer_descriptor(self, layer: Layer) -> Descriptor:
        return Descriptor(layer.media_type, layer.digest, layer.size)

    def open_layer(self, layer: Layer, progress: ProgressHook | None = None) -> VerifyingReader:
        """The layer's compressed bytes, verified against its digest as they are read."""
        return self._open_blob(self.layer_descriptor(layer), f"layer {layer.index}", progress)

    def read_range(self, layer: Layer, start: int, end: int, kept: bool | None = None) -> bytes:
        """Bytes ``[start, end)`` of a layer's blob, unverified (from the cache when it holds
        the blob, which was verified on the way in; ``kept``: whether it does, when known)."""
        what = f"layer {layer.index} ({layer.digest})"
        if not 0 <= start < end <= layer.size:
            raise InputError(f"{what}: bytes {start}..{end} asked for, outside its {layer.size} bytes")
        if kept is None:
            kept = self.cache is not None and self.cache.has(layer.digest)
        if kept and self.cache is not None:
            with self.cache.open(layer.digest) as cached:
                cached.seek(start)
                data = cached.read(end - start)
        else:
            data = self.source.blob_range(self.layer_descriptor(layer), start, end)
        if len(data) != end - start:
            raise InputError(f"{what}: blob ends before byte {end} (got {len(data)} of "
                             f"{end - start} bytes at {start})")
        return data

    def _open_blob(self, desc: Descriptor, what: str, progress: ProgressHook | None) -> VerifyingReader:
        remote = self.source.cache_blobs or self.source.remote
        if self.cache is not None and remote and self.cache.has(desc.digest):
            # verified on the way in; again as it is read
            return VerifyingReader(ProgressReader(self.cache.open(desc.digest), progress),
                                   desc.digest, desc.size, what)
        if self.cache is not None and self.source.cache_blobs:
            return self.cache.tee(desc.digest, desc.size, lambda off: self.source.blob(desc, off),
                                  what, progress)
        stream, _ = self.source.blob(desc, 0)
        return VerifyingReader(ProgressReader(stream, progress), desc.digest, desc.size, what)

    def facts(self) -> dict[str, Any]:
        return self.source.facts()

    def close(self) -> None:
        self.source.close()


def load_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{what} is not valid JSON ({err.__class__.__name__}: {err})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{what} is not a JSON object")
    return obj


def media_type_of(obj: dict[str, Any], transport_type: str | None) -> str:
    """The media type of a manifest: its own ``mediaType``, else the transport's, else by shape."""
    declared = obj.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if transport_type and transport_type.split(";")[0].strip() in mt.INDEX_TYPES | mt.MANIFEST_TYPES:
        return transport_type.split(";")[0].strip()
    if "manifests" in obj:
        return mt.OCI_INDEX
    if "config" in obj and "layers" in obj:
        return mt.OCI_MANIFEST
    if obj.get("schemaVersion") == 1:
        return "application/vnd.docker.distribution.manifest.v1+json"
    return str(transport_type or "unknown")


def open_image(source: Source, cache: BlobCache | None, platform: Platform | None = None,
               cache_metadata: bool = True) -> Image:
    """Resolve a source to one platform's image, verifying every manifest and the config."""
    root = source.root()
    if len(root.data) > MAX_MANIFEST_BYTES:
        raise InputError(f"manifest of {source.ref.original} is larger than {MAX_MANIFEST_BYTES} bytes")
    if root.digest:
        verify_bytes(root.data, root.digest, "manifest")
    top_digest = root.digest or digest_bytes(root.data)
    obj = load_json(root.data, f"manifest of {source.ref.original}")
    media_type = media_type_of(obj, root.media_type)
    if cache is not None and cache_metadata and not root.synthesized:
        cache.put_bytes(top_digest, root.data)

    index_digest = None
    platforms: list[Platform] = []
    manifest_bytes, digest = root.data, top_digest
    if media_type in mt.INDEX_TYPES:
        index_digest = top_digest
        chosen, platforms = select_platform(obj, platform, source.ref.original)
        manifest_bytes = source.manifest(chosen)
        if len(manifest_bytes) > MAX_MANIFEST_BYTES:
            raise InputError(f"manifest {chosen.digest} is larger than {MAX_MANIFEST_BYTES} bytes")
        verify_bytes(manifest_bytes, chosen.digest, "manifest")
        digest = chosen.digest
        obj = load_json(manifest_bytes, f"manifest {chosen.digest}")
        media_type = media_type_of(obj, chosen.media_type)
        if cache is not None and cache_metadata:
            cache.put_bytes(digest, manifest_bytes)
    if media_type not in mt.MANIFEST_TYPES:
        raise InputError(
            f"manifest of {source.ref.original} has unsupported media type {media_type!r} "
            f"(supported: {', '.join(sorted(mt.MANIFEST_TYPES | mt.INDEX_TYPES))})")

    config_desc = Descriptor.from_json(obj.get("config"), f"manifest {digest} config")
    if config_desc.size > MAX_CONFIG_BYTES:
        raise InputError(f"config {config_desc.digest} is larger than {MAX_CONFIG_BYTES} bytes")
    config_bytes = _read_small_blob(source, cache, config_desc, "config")
    config = load_json(config_bytes, f"config {config_desc.digest}")
    layers = _layers(obj, config, digest)
    image_platform = Platform(str(config.get("os") or "unknown"),
                              str(config.get("architecture") or "unknown"),
                              config.get("variant") or None)
    if platform is not None and index_digest is None and not platform.matches(image_platform):
        raise PlatformError(
            f"{source.ref.original} is a single-platform image for {image_platform}, "
            f"not {platform}")
    return Image(source=source, cache=cache, ref=source.ref, digest=digest,
                 digest_synthesized=root.synthesized, media_type=media_type, manifest=obj,
                 manifest_bytes=manifest_bytes, config=config, config_bytes=config_bytes,
                 config_descriptor=config_desc, layers=layers, platform=image_platform,
                 index_digest=index_digest, platforms=platforms)


def select_platform(index: dict[str, Any], wanted: Platform | None,
                    what: str) -> tuple[Descriptor, list[Platform]]:
    """Pick the index entry for ``wanted`` (default: the host's platform)."""
    entries = index.get("manifests")
    if not isinstance(entries, list) or not entries:
        raise InputError(f"index of {what} lists no manifests")
    descriptors = [Descriptor.from_json(e, f"index of {what}") for e in entries]
    images = [d for d in descriptors if d.platform is not None
              and d.platform.architecture != "unknown"]  # attestation manifests say unknown
    available = sorted({d.platform for d in images if d.platform})
    target = wanted or host_platform()
    for d in images:
        if d.platform and target.matches(d.platform):
            return d, available
    if wanted is None and not images and len(descriptors) == 1:
        return descriptors[0], available
    names = ", ".join(str(p) for p in available) or "none"
    raise PlatformError(f"{what} has no image for platform {target}; available: {names}")


def _read_small_blob(source: Source, cache: BlobCache | None, desc: Descriptor, what: str) -> bytes:
    if cache is not None:
        cached = cache.read_bytes(desc.digest)
        if cached is not None:
            return cached
    stream, _ = source.blob(desc, 0)
    try:
        data = stream.read(desc.size + 1)
    finally:
        stream.close()
    verify_bytes(data, desc.digest, what)
    if cache is not None:
        cache.put_bytes(desc.digest, data)
    return data


def _layers(manifest: dict[str, Any], config: dict[str, Any], digest: str) -> list[Layer]:
    raw_layers = manifest.get("layers")
    if not isinstance(raw_layers, list):
        raise InputError(f"manifest {digest} has no layers list")
    descs = [Descriptor.from_json(x, f"manifest {digest} layer {i}") for i, x in enumerate(raw_layers)]
    rootfs = config.get("rootfs") if isinstance(config.get("rootfs"), dict) else {}
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs.get("diff_ids"), list) else None
    if diff_ids is None or len(diff_ids) != len(descs):
        raise InputError(
            f"config of {digest} lists {len(diff_ids or [])} diff_ids for {len(descs)} layers")
    history = [h for h in config.get("history") or [] if isinstance(h, dict)]
    created_by = [h.get("created_by") for h in history if not h.get("empty_layer")]
    layers = []
    for i, (desc, diff_id) in enumerate(zip(descs, diff_ids, strict=True)):
        try:
            validate_digest(diff_id)
        except InputError:
            raise InputError(f"config of {digest}: layer {i} has invalid diff_id {diff_id!r}") from None
        if desc.media_type and desc.media_type not in mt.LAYER_TYPES:
            raise InputError(f"layer {i} ({desc.digest}) has unsupported media type {desc.media_type!r}")
        layers.append(Layer(i, desc.digest, diff_id, desc.media_type or mt.OCI_LAYER, desc.size,
                            created_by[i] if i < len(created_by) else None, desc.annotations))
    return layers
