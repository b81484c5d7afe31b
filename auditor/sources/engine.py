"""Images in a Docker or Podman engine, read through the engine's Docker API (the ``docker`` SDK).

Like go-containerregistry's daemon source, this one only wraps ``docker save``: the engine streams
the image as a docker-archive into a temporary file inside the cache directory (never the whole
tar in memory), and :class:`~auditor.sources.archive.DockerArchiveSource` reads it from there.

Which engine is asked:

- ``podman:REF``: ``$CONTAINER_HOST``; else podman's root socket ``/run/podman/podman.sock`` or
  the user's ``$XDG_RUNTIME_DIR/podman/podman.sock`` when one exists; else ``$DOCKER_HOST``.
- ``docker-daemon:REF``: ``$DOCKER_HOST`` (with ``$DOCKER_TLS_VERIFY``/``$DOCKER_CERT_PATH``),
  else Docker's default socket.

Either may be answered by the other engine (``DOCKER_HOST`` often points at podman's socket);
:func:`engine_name` says which one did, and :meth:`EngineSource.facts` reports it.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import docker
import docker.errors
import requests

from auditor.errors import EnvironmentProblem, InputError, NotFoundError
from auditor.model import Descriptor
from auditor.reference import ImageRef
from auditor.sources.base import Root, Source
from auditor.sources.cache import BlobCache

DOCKER_DEFAULT_HOST = "unix:///var/run/docker.sock"
PODMAN_ROOT_SOCKET = "/run/podman/podman.sock"

#: seconds to wait for the engine to answer its version (a dead TCP host must fail quickly)
CONNECT_TIMEOUT = 15.0
#: seconds to wait between two reads of ``docker save``; podman exports the whole image to a
#: temporary file before it sends the first byte, which takes minutes for a large image
SAVE_TIMEOUT = 900.0
SAVE_CHUNK = 1 << 20


def save_timeout() -> float:
    """``$AUDITOR_ENGINE_TIMEOUT`` seconds if it is a positive number, else :data:`SAVE_TIMEOUT`."""
    try:
        value = float(os.environ.get("AUDITOR_ENGINE_TIMEOUT", ""))
    except ValueError:
        return SAVE_TIMEOUT
    return value if value > 0 else SAVE_TIMEOUT


def engine_host(engine: str, environ: Mapping[str, str] | None = None) -> str:
    """The address the SDK will be pointed at for ``engine`` ("docker" or "podman")."""
    env = os.environ if environ is None else environ
    if engine == "podman":
        if env.get("CONTAINER_HOST"):
            return env["CONTAINER_HOST"]
        candidates = [PODMAN_ROOT_SOCKET]
        if env.get("XDG_RUNTIME_DIR"):
            candidates.append(os.path.join(env["XDG_RUNTIME_DIR"], "podman", "podman.sock"))
        for path in candidates:
            if os.path.exists(path):
                return f"unix://{path}"
        return env.get("DOCKER_HOST") or f"unix://{PODMAN_ROOT_SOCKET}"
    return env.get("DOCKER_HOST") or DOCKER_DEFAULT_HOST


def engine_name(client: docker.DockerClient) -> str:
    """Which engine answered: "podman" when its version lists a Podman component, else "docker"."""
    version = client.version()
    for component in version.get("Components") or []:
        if "podman" in str(component.get("Name", "")).lower():
            return "podman"
    return "docker"


def connect_engine(engine: str, base_url: str | None = None,
                   timeout: float = CONNECT_TIMEOUT) -> tuple[docker.DockerClient, str]:
    """A client of a live engine and the address it answered at.

    Raises :class:`EnvironmentProblem` (exit code 3) with one line when nothing answers there.
    """
    host = base_url or engine_host(engine)
    # DOCKER_HOST goes through from_env(), which also applies DOCKER_TLS_VERIFY and DOCKER_CERT_PATH.
    from_env = base_url is None and host == os.environ.get("DOCKER_HOST", DOCKER_DEFAULT_HOST)
    client = None
    try:
        if from_env:
            client = docker.from_env(timeout=timeout)
        else:
            client = docker.DockerClient(base_url=host, timeout=timeout)
        client.ping()
    except (docker.errors.DockerException, requests.RequestException, OSError, ValueError) as err:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        raise EnvironmentProblem(
            f"no {engine} engine reachable at {host}: {failure_reason(err)}") from None
    return client, host


def failure_reason(err: BaseException) -> str:
    """The most telling line of a connection failure (the OS error under the SDK's wrapping)."""
    seen: set[int] = set()
    pending: list[BaseException] = [err]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        pending.extend(a for a in current.args if isinstance(a, BaseException))
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    text = str(err).strip() or err.__class__.__name__
    return text.splitlines()[0][:300]


class EngineSource(Source):
    """An image in a Docker or Podman engine, read from its ``docker save`` archive."""

    cache_blobs = False  # the archive is a local file; per-layer results are cached by layer

    def __init__(self, ref: ImageRef, cache: BlobCache, base_url: str | None = None) -> None:
        super().__init__(ref)
        if ref.transport != "engine" or not ref.engine_ref:
            raise InputError(f"{ref.original} is not an engine reference")
        self.cache = cache
        self.client, self.host = connect_engine(ref.engine or "docker", base_url)
        self._archive: Source | None = None
        self._archive_path: Path | None = None
        try:
            self.engine = engine_name(self.client)
            self.image = self._lookup(ref.engine_ref)
        except (docker.errors.DockerException, requests.RequestException, OSError) as err:
            self.client.close()
            raise EnvironmentProblem(
                f"{self._engine_label()} at {self.host} failed while looking up "
                f"{ref.engine_ref}: {failure_reason(err)}") from None
        except BaseException:
            self.client.close()
            raise

    # -- the engine ------------------------------------------------------------------------
    def _engine_label(self) -> str:
        return f"the {getattr(self, 'engine', self.ref.engine or 'docker')} engine"

    def _lookup(self, name: str) -> Any:
        # A bare 64-hex ID is an ID to Docker but an invalid name to podman's compat API.
        query = f"sha256:{name}" if re.fullmatch(r"[a-f0-9]{64}", name) else name
        try:
            return self.client.images.get(query)
        except docker.errors.ImageNotFound:
            raise NotFoundError(
                f"image {name} not found in {self._engine_label()} at {self.host}") from None
        except docker.errors.APIError as err:
            status = err.status_code or 0
            detail = (err.explanation or str(err)).strip()
            if status == 404:
                raise NotFoundError(
                    f"image {name} not found in {self._engine_label()} at {self.host}") from None
            if 400 <= status < 500:
                raise InputError(f"{self._engine_label()} refused image {name!r}: {detail}") from None
            raise EnvironmentProblem(
                f"{self._engine_label()} at {self.host} failed to inspect {name}: {detail}") from None

    @property
    def image_id(self) -> str:
        return str(self.image.attrs.get("Id") or self.image.id)

    def _save(self) -> Path:
        """Stream ``docker save`` into a temporary file of the cache; return its path."""
        tags = list(self.image.attrs.get("RepoTags") or [])
        named: str | bool = self.ref.engine_ref if self.ref.engine_ref in tags else False
        path = self.cache.temp_path(".tar")
        self.client.api.timeout = save_timeout()
        try:
            with open(path, "wb") as out:
                for chunk in self.image.save(chunk_size=SAVE_CHUNK, named=named):
                    out.write(chunk)
        except (docker.errors.DockerException, requests.RequestException) as err:
            path.unlink(missing_ok=True)
            raise EnvironmentProblem(
                f"{self._engine_label()} at {self.host} failed to save {self.ref.engine_ref}: "
                f"{failure_reason(err)}") from None
        except OSError as err:
            path.unlink(missing_ok=True)
            raise EnvironmentProblem(
                f"cannot write the saved image to {path}: {err.strerror or err}") from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path

    def _source(self) -> Source:
        if self._archive is None:
            from auditor.sources.archive import DockerArchiveSource

            path = self._save()
            try:
                self._archive = DockerArchiveSource(str(path))
            except BaseException:
                path.unlink(missing_ok=True)
                raise
            self._archive_path = path
        return self._archive

    # -- Source ----------------------------------------------------------------------------
    def root(self) -> Root:
        return self._source().root()

    def manifest(self, descriptor: Descriptor) -> bytes:
        return self._source().manifest(descriptor)

    def blob(self, descriptor: Descriptor, offset: int = 0) -> tuple[BinaryIO, int]:
        return self._source().blob(descriptor, offset)

    def facts(self) -> dict[str, Any]:
        attrs = self.image.attrs
        return {
            "engine": self.engine,
            "engine_host": self.host,
            "image_id": self.image_id,
            "repo_digests": list(attrs.get("RepoDigests") or []),
            "repo_tags": list(attrs.get("RepoTags") or []),
        }

    def recorded_digest(self) -> str | None:
        return recorded_digest(self.image.attrs.get("RepoDigests") or [], self.ref)

    @property
    def archive_path(self) -> Path | None:
        """The temporary ``docker save`` file while the source holds one (for tests)."""
        return self._archive_path

    def close(self) -> None:
        archive, self._archive = self._archive, None
        if archive is not None:
            with contextlib.suppress(Exception):
                archive.close()
        path, self._archive_path = self._archive_path, None
        if path is not None:
            path.unlink(missing_ok=True)
        with contextlib.suppress(Exception):
            self.client.close()


def recorded_digest(repo_digests: list[str], ref: ImageRef) -> str | None:
    """The digest an engine recorded for the repository ``ref`` names, if there is exactly one.

    It is the digest of what the engine pulled: the manifest, or for a multi-platform pull the
    index (Docker records only that). podman lists every repository with every manifest digest
    it has seen for the image (say, pulled from a registry and also loaded from an archive): then
    no single digest can be named, and None is said rather than a guess."""
    digests: dict[str, set[str]] = {}
    for entry in repo_digests:
        name, _, digest = str(entry).rpartition("@")
        if name and digest.startswith("sha256:"):
            digests.setdefault(digest, set()).add(name)
    wanted = {f"{ref.registry}/{ref.repository}", str(ref.repository)}
    if ref.registry == "docker.io":
        wanted.add(str(ref.repository).removeprefix("library/"))
    matching = sorted(d for d, names in digests.items() if names & wanted)
    if len(matching) == 1:
        return matching[0]
    return next(iter(digests)) if len(digests) == 1 and not matching else None
