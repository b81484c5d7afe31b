"""Image references, parsed in one place.

Schemes (the public interface; users' scripts depend on these names):

- ``name[:tag][@sha256:…]`` or ``registry:REF`` or ``docker://REF`` — a registry (OCI Distribution).
  Docker Hub names are normalised: ``ubuntu`` → ``docker.io/library/ubuntu:latest``.
- ``docker-archive:PATH`` — a ``docker save`` tarball (classic or OCI-layout form).
- ``oci:DIR[:tag]`` — an OCI image layout directory.
- ``oci-archive:PATH[:tag]`` — an OCI image layout in a tar file.
- ``docker-daemon:REF`` / ``podman:REF`` — an image in a Docker or Podman engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from auditor.digest import validate_digest
from auditor.errors import ReferenceError_

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_NAME_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN_RE = re.compile(
    r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)(?::[0-9]+)?$"
)
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_ENGINE_ID_RE = re.compile(r"^(?:sha256:)?[a-f0-9]{12,64}$")

TRANSPORTS = ("registry", "docker-archive", "oci", "oci-archive", "engine")


@dataclass(frozen=True)
class ImageRef:
    """A parsed reference. ``transport`` says which source reads it."""

    transport: str
    original: str
    registry: str | None = None  # registry transport: host[:port]
    repository: str | None = None  # registry transport: path below the host
    tag: str | None = None
    digest: str | None = None
    path: str | None = None  # archive and layout transports
    engine: str | None = None  # "docker" or "podman"
    engine_ref: str | None = None  # what is handed to the engine

    @property
    def name(self) -> str:
        """``registry/repository`` for registry references."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        if self.transport == "registry":
            s = self.name
            if self.tag:
                s += f":{self.tag}"
            if self.digest:
                s += f"@{self.digest}"
            return s
        if self.transport == "engine":
            return f"{'docker-daemon' if self.engine == 'docker' else 'podman'}:{self.engine_ref}"
        s = f"{self.transport}:{self.path}"
        return f"{s}:{self.tag}" if self.tag else s


def parse_reference(text: str) -> ImageRef:
    """Parse any reference the CLI accepts; raise :class:`ReferenceError_` with the reason."""
    if not text or text != text.strip():
        raise ReferenceError_(f"invalid image reference {text!r}: empty or surrounded by spaces")
    for prefix, transport in (
        ("docker-archive:", "docker-archive"),
        ("oci-archive:", "oci-archive"),
        ("oci:", "oci"),
    ):
        if text.startswith(prefix):
            return _parse_path_reference(text, transport, text[len(prefix) :])
    if text.startswith("docker-daemon:"):
        return _parse_engine_reference(text, "docker", text[len("docker-daemon:") :])
    if text.startswith("podman:"):
        return _parse_engine_reference(text, "podman", text[len("podman:") :])
    if text.startswith("docker://"):
        return parse_registry_reference(text[len("docker://") :], original=text)
    if text.startswith("registry:"):
        return parse_registry_reference(text[len("registry:") :], original=text)
    return parse_registry_reference(text, original=text)


def parse_registry_reference(text: str, original: str | None = None) -> ImageRef:
    original = original or text
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        try:
            validate_digest(digest)
        except Exception as err:
            raise ReferenceError_(f"invalid image reference {original!r}: {err}") from None
    tag = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        if not _TAG_RE.match(tag):
            raise ReferenceError_(f"invalid image reference {original!r}: bad tag {tag!r}")
    parts = rest.split("/", 1)
    if len(parts) == 2 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"
                            or parts[0] != parts[0].lower()):
        registry, repository = parts
        if not _DOMAIN_RE.match(registry):
            raise ReferenceError_(f"invalid image reference {original!r}: bad registry {registry!r}")
    else:
        registry, repository = DOCKER_HUB, rest
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not _NAME_RE.match(repository):
        raise ReferenceError_(
            f"invalid image reference {original!r}: repository {repository!r} must be lowercase "
            "letters, digits and separators"
        )
    if tag is None and digest is None:
        tag = "latest"
    return ImageRef("registry", original, registry=registry, repository=repository, tag=tag,
                    digest=digest)


def _parse_path_reference(original: str, transport: str, rest: str) -> ImageRef:
    if not rest:
        raise ReferenceError_(f"invalid image reference {original!r}: no path after {transport}:")
    tag = None
    if transport in ("oci", "oci-archive"):
        # oci:DIR:tag — the tag is what follows the last colon, if it has no slash in it
        head, sep, tail = rest.rpartition(":")
        if sep and head and "/" not in tail:
            rest, tag = head, tail
            if not tag:
                raise ReferenceError_(f"invalid image reference {original!r}: empty tag")
    return ImageRef(transport, original, path=rest, tag=tag)


def _parse_engine_reference(original: str, engine: str, rest: str) -> ImageRef:
    if not rest:
        raise ReferenceError_(f"invalid image reference {original!r}: no image after {engine}:")
    if _ENGINE_ID_RE.match(rest):
        return ImageRef("engine", original, engine=engine, engine_ref=rest)
    parsed = parse_registry_reference(rest, original=original)
    return ImageRef("engine", original, engine=engine, engine_ref=rest,
                    registry=parsed.registry, repository=parsed.repository, tag=parsed.tag,
                    digest=parsed.digest)
