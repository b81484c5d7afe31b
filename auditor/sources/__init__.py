"""Image sources. Adding one is a new module implementing ``Source`` plus one line below."""

from __future__ import annotations

from dataclasses import dataclass

from auditor.reference import ImageRef
from auditor.sources.base import Image, Source, open_image
from auditor.sources.cache import BlobCache


@dataclass(frozen=True)
class SourceOptions:
    insecure: bool = False  # plain HTTP / no TLS verification for registries
    engine_host: str | None = None  # overrides DOCKER_HOST / CONTAINER_HOST
    keep_layers: bool = True  # keep downloaded registry layers in the blob cache


def make_source(ref: ImageRef, cache: BlobCache, options: SourceOptions = SourceOptions()) -> Source:
    """The source that reads ``ref``, by its transport."""
    if ref.transport == "registry":
        from auditor.sources.registry import RegistrySource

        return RegistrySource(ref, insecure=options.insecure, keep_layers=options.keep_layers)
    if ref.transport == "docker-archive":
        from auditor.sources.archive import DockerArchiveSource

        return DockerArchiveSource(ref)
    if ref.transport in ("oci", "oci-archive"):
        from auditor.sources.archive import OciLayoutSource

        return OciLayoutSource(ref)
    if ref.transport == "engine":
        from auditor.sources.engine import EngineSource

        return EngineSource(ref, cache, base_url=options.engine_host)
    raise AssertionError(f"no source for transport {ref.transport!r}")


__all__ = ["BlobCache", "Image", "SourceOptions", "make_source", "open_image"]
