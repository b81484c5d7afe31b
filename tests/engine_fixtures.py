"""Pytest plugin: a real podman engine (Docker API) and a real Debian image, once per session.

List it in ``pytest_plugins`` (or run ``pytest -p tests.engine_fixtures``). Tests that use
``engine`` carry ``pytest.mark.engine``; tests that use ``debian_image`` also ``pytest.mark.slow``.

The podman service has a socket of its own and is stopped by process id at the end of the
session; images go to podman's default storage for root, and every image a test loads or pulls
through :class:`Engine` is removed again at the end.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from fixtures.debian import debian_python_layout
from fixtures.engine_server import EngineServer, start_podman_service


@dataclass
class Engine:
    """A running podman service and a docker SDK client of it."""

    server: EngineServer
    client: docker.DockerClient
    _owned: set[str] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def load(self, archive: str | os.PathLike[str]) -> list[Any]:
        """``docker load`` a docker-archive file (streamed); the images are removed at the end."""
        with open(archive, "rb") as stream:
            images = self.client.images.load(stream)
        self._owned.update(image.id for image in images)
        return images

    def pull(self, reference: str) -> Any:
        """Pull from a registry on loopback over plain HTTP; returns the image."""
        image_id = self.server.pull(reference, tls_verify=False)
        self._owned.add(image_id)
        return self.client.images.get(reference)

    def remove_owned(self) -> None:
        for image_id in sorted(self._owned):
            with contextlib.suppress(docker.errors.DockerException):
                self.client.images.remove(image_id, force=True)
        self._owned.clear()


def oci_to_docker_archive(layout: str | os.PathLike[str], tag: str, archive: Path,
                          name: str) -> Path:
    """``skopeo copy oci:LAYOUT:TAG docker-archive:ARCHIVE:NAME`` (the form ``docker load`` takes)."""
    done = subprocess.run(
        ["skopeo", "--insecure-policy", "copy", "--quiet", f"oci:{layout}:{tag}",
         f"docker-archive:{archive}:{name}"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"skopeo copy to docker-archive failed: {done.stderr.strip()}")
    return archive


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    """A podman service on a socket of its own, with a docker SDK client."""
    server = start_podman_service()
    try:
        client = server.client()
        handle = Engine(server, client)
        try:
            yield handle
        finally:
            handle.remove_owned()
            client.close()
    finally:
        server.stop()


@dataclass(frozen=True)
class DebianImage:
    """The Debian bookworm + python3 fixture as an OCI layout: ``oci:{layout}:{tag}``."""

    layout: Path
    tag: str

    @property
    def oci_ref(self) -> str:
        return f"oci:{self.layout}:{self.tag}"


@pytest.fixture(scope="session")
def debian_image() -> DebianImage:
    """Debian bookworm minbase with python3, built once (cached outside the repository)."""
    layout, tag = debian_python_layout()
    return DebianImage(layout, tag)


def build_image(engine: Engine, dockerfile: str, tag: str) -> Any:
    """``docker build`` a context-less Dockerfile (``FROM`` a local image); removed at the end."""
    image, _logs = engine.client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag,
                                              rm=True, pull=False)
    engine._owned.add(image.id)
    return image
