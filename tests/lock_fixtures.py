"""Pytest plugin: a "source" image built by podman from loopback package servers, for ``auditor lock``.

``apt_repo`` and ``pypi_index`` serve packages on 127.0.0.1; ``lock_base`` is a Debian image in the
loopback ``registry`` and the ``engine``; ``lock_source_image`` is :func:`lock_dockerfile` built on it.
Tests using them carry ``slow``, ``engine`` and ``registry`` marks. Downloads are cached in the
fixture cache (``debs/lock``, ``debs/lock-older``, ``wheels``).
"""

from __future__ import annotations

import io
import re
import shlex
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from fixtures.debian import debian_layout, fixture_cache_dir
from fixtures.debs import debian_debs
from fixtures.elf_libs import wheel
from fixtures.package_servers import apt_flat_repository, normalize_name, serve_directory, simple_index
from fixtures.registry_server import RegistryServer, push_oci_layout
from tests.engine_fixtures import Engine

# What the source Dockerfile installs with apt, by name (apt picks the newest in the repository).
LOCK_APT_PACKAGES = ("jq", "libopenblas0-pthread")
# Everything in the repository: those two and what they need that the base image lacks (the base
# has libc6, libgcc-s1 and gcc-12-base already).
LOCK_APT_REPO_DEBS = ("jq", "libjq1", "libonig5", "libopenblas0-pthread", "libgfortran5",
                      "libquadmath0")
# A second, older version of these sits in the repository too when this machine's apt sources
# have one (bookworm: jq/libjq1 1.6-2.1+deb12u2 beside bookworm-security's +deb12u3). jq depends on
# libjq1 of exactly its own version, so they come as a pair.
LOCK_APT_OLDER_DEBS = ("jq", "libjq1")
# What the source Dockerfile installs with pip (pinned) and the newer version the index also has.
LOCK_WHEELS = ("six==1.16.0", "numpy==1.26.4")
LOCK_DRIFT_WHEELS = ("six==1.17.0",)
# The base image: Debian bookworm minbase with these, pushed to the registry as REPO:TAG.
LOCK_BASE_PACKAGES = ("python3", "python3-pip")
LOCK_BASE_REPO = "lock/base"
LOCK_BASE_TAG = "bookworm"
LOCK_SOURCE_TAG = "localhost/auditor-lock-source:t"
LOCK_ENV = {"OMP_NUM_THREADS": "1"}
LOCK_LABELS = {"org.example.team": "ml"}
BUILD_LOG_TAIL = 25
_STEP_ID_RE = re.compile(r"^--> ([0-9a-f]{11,64})$", re.MULTILINE)  # a step's image


# -- the servers -----------------------------------------------------------------------------

@dataclass(frozen=True)
class AptRepo:
    """A flat apt repository served on loopback.

    ``debs``: name → the version apt installs (the newest in the repository) of every package in
    it; ``other_versions``: name → the second, older version also there (may be empty)."""

    url: str  # http://127.0.0.1:PORT/
    directory: Path
    debs: dict[str, str]
    other_versions: dict[str, str] = field(default_factory=dict)

    @property
    def sources_line(self) -> str:
        """The one-line apt source: ``deb [trusted=yes] http://127.0.0.1:PORT/ ./``."""
        return f"deb [trusted=yes] {self.url} ./"


@dataclass(frozen=True)
class PypiIndex:
    """A PEP 503 simple index served on loopback.

    ``wheels``: name → the version the source image pins; ``other_versions``: name → the newer
    version the index also offers (what an unpinned or drifted install gets)."""

    url: str  # http://127.0.0.1:PORT/simple
    directory: Path
    wheels: dict[str, str]
    other_versions: dict[str, str] = field(default_factory=dict)
    files: tuple[Path, ...] = ()


def _deb_field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()


def _apt_versions(name: str) -> list[str]:
    """The versions this machine's apt sources offer for ``name``, newest first (no network)."""
    done = subprocess.run(["apt-cache", "madison", name], capture_output=True, text=True,
                          check=False, timeout=60)
    versions = []
    for line in done.stdout.splitlines():
        parts = [part.strip() for part in line.split("|")]
        if len(parts) >= 2 and parts[0] == name and parts[1] not in versions:
            versions.append(parts[1])
    return versions


def _older(version: str, than: str) -> bool:
    return subprocess.run(["dpkg", "--compare-versions", version, "lt", than],
                          check=False, timeout=60).returncode == 0


def older_debs(names: Sequence[str], newest: str) -> list[Path]:
    """The ``.deb`` files of ``names`` at one version older than ``newest`` that every one of them
    has in this machine's apt sources, downloaded once (cache folder ``debs/lock-older``);
    ``[]`` when there is none."""
    folder = fixture_cache_dir() / "debs" / "lock-older"
    cached = {p.name.split("_")[0]: p for p in folder.glob("*.deb")} if folder.is_dir() else {}
    if all(name in cached for name in names):
        found = [cached[name] for name in names]
        versions = {_deb_field(deb, "Version") for deb in found}
        if len(versions) == 1 and _older(versions.pop(), newest):
            return found
    offered = [set(_apt_versions(name)) for name in names]
    candidates = [v for v in _apt_versions(names[0])
                  if _older(v, newest) and all(v in o for o in offered)]
    if not candidates:
        return []
    version = candidates[0]
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.deb"):
        stale.unlink()
    done = subprocess.run(["apt-get", "download", *(f"{name}={version}" for name in names)],
                          cwd=folder, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"apt-get download of {names} at {version} failed: {done.stderr[-2000:]}")
    found_by_name = {p.name.split("_")[0]: p for p in folder.glob("*.deb")}
    return [found_by_name[name] for name in names]


@pytest.fixture(scope="session")
def apt_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AptRepo]:
    """A flat apt repository of :data:`LOCK_APT_REPO_DEBS` (and an older jq/libjq1 when there is
    one), served on 127.0.0.1 for the session."""
    debs = debian_debs(LOCK_APT_REPO_DEBS, "lock")
    versions = {_deb_field(deb, "Package"): _deb_field(deb, "Version") for deb in debs}
    older = older_debs(LOCK_APT_OLDER_DEBS, versions[LOCK_APT_OLDER_DEBS[0]])
    other = {_deb_field(deb, "Package"): _deb_field(deb, "Version") for deb in older}
    directory = apt_flat_repository([*debs, *older], tmp_path_factory.mktemp("apt-repo"))
    with serve_directory(directory) as base_url:
        yield AptRepo(f"{base_url}/", directory, versions, other)


def _wheel_version(path: Path) -> tuple[str, str]:
    name, version = path.name.split("-")[:2]
    return normalize_name(name), version


@pytest.fixture(scope="session")
def pypi_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PypiIndex]:
    """A simple index of :data:`LOCK_WHEELS` and :data:`LOCK_DRIFT_WHEELS`, served on 127.0.0.1
    for the session."""
    pinned = [wheel(requirement) for requirement in LOCK_WHEELS]
    drift = [wheel(requirement) for requirement in LOCK_DRIFT_WHEELS]
    directory = simple_index([*pinned, *drift], tmp_path_factory.mktemp("pypi-index"))
    with serve_directory(directory) as base_url:
        yield PypiIndex(f"{base_url}/simple", directory, dict(map(_wheel_version, pinned)),
                        dict(map(_wheel_version, drift)), tuple(pinned + drift))


# -- the base image --------------------------------------------------------------------------

@dataclass(frozen=True)
class LockBase:
    """The base image, in the loopback registry and pulled into the engine.

    ``name`` is ``127.0.0.1:PORT/lock/base``; ``digest`` the manifest digest as pushed."""

    name: str
    tag: str
    digest: str
    image_id: str
    layout: Path

    @property
    def tag_ref(self) -> str:
        """``127.0.0.1:PORT/lock/base:bookworm`` (a registry reference for the auditor as is)."""
        return f"{self.name}:{self.tag}"

    @property
    def digest_ref(self) -> str:
        """``127.0.0.1:PORT/lock/base@sha256:…``: what the Dockerfiles put in ``FROM``."""
        return f"{self.name}@{self.digest}"

    @property
    def registry_ref(self) -> str:
        """``registry:127.0.0.1:PORT/lock/base:bookworm``, the auditor's explicit scheme."""
        return f"registry:{self.tag_ref}"

    @property
    def registry_digest_ref(self) -> str:
        """``registry:127.0.0.1:PORT/lock/base@sha256:…``."""
        return f"registry:{self.digest_ref}"


@pytest.fixture(scope="session")
def lock_base(registry: RegistryServer, engine: Engine) -> LockBase:
    """Debian bookworm minbase with python3 and python3-pip (built once, cached), pushed to the
    loopback registry as ``lock/base:bookworm`` and pulled into the engine (by tag and digest)."""
    layout, tag = debian_layout(LOCK_BASE_PACKAGES, "python3-pip")
    digest = push_oci_layout(layout, tag, registry, LOCK_BASE_REPO, dest_tag=LOCK_BASE_TAG)
    name = f"{registry.host}/{LOCK_BASE_REPO}"
    engine.pull(f"{name}:{LOCK_BASE_TAG}")
    image = engine.pull(f"{name}@{digest}")
    return LockBase(name, LOCK_BASE_TAG, digest, image.id, layout)


# -- building --------------------------------------------------------------------------------

def lock_dockerfile(base: str, sources_line: str, index_url: str,
                    apt_packages: Sequence[str] = LOCK_APT_PACKAGES,
                    requirements: Sequence[str] = LOCK_WHEELS) -> str:
    """The source image's Dockerfile: ``FROM base``, apt from ``sources_line`` only (the base's own
    Debian sources are left out with ``Dir::Etc::SourceParts=-``), pip from ``index_url`` only."""
    apt = ("apt-get -o Dir::Etc::SourceList=/etc/apt/sources.list.d/lock.list "
           "-o Dir::Etc::SourceParts=-")
    env = " ".join(f"{key}={value}" for key, value in LOCK_ENV.items())
    labels = " ".join(f"{key}={value}" for key, value in LOCK_LABELS.items())
    return (
        f"FROM {base}\n"
        f"RUN printf '%s\\n' {shlex.quote(sources_line)} > /etc/apt/sources.list.d/lock.list \\\n"
        f" && {apt} update \\\n"
        f" && DEBIAN_FRONTEND=noninteractive {apt} install -y --no-install-recommends "
        f"{' '.join(apt_packages)} \\\n"
        " && rm /etc/apt/sources.list.d/lock.list && rm -rf /var/lib/apt/lists/*\n"
        f"RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir "
        f"--index-url {index_url} {' '.join(requirements)}\n"
        f"ENV {env}\n"
        f"LABEL {labels}\n"
    )


def _log_text(log: Any) -> str:
    return "".join(str(entry.get("stream") or entry.get("error") or "") if isinstance(entry, dict)
                   else str(entry) for entry in (log or ()))


def build_dockerfile(engine: Engine, text: str, tag: str, nocache: bool = False) -> Any:
    """Build a context-less Dockerfile with the engine (``network_mode="host"``, so ``RUN`` steps
    reach the loopback servers; ``pull=False``, so ``FROM`` must be in the engine); the image is
    removed at the end of the session. podman reuses the layers of an earlier build of the same
    steps: ``nocache=True`` runs every step again. A failed build fails the test with a one-line
    summary and the log's tail (its intermediate images are removed at the end too)."""
    try:
        image, _logs = engine.client.images.build(
            fileobj=io.BytesIO(text.encode()), tag=tag, network_mode="host", pull=False,
            rm=True, forcerm=True, nocache=nocache)
    except docker.errors.BuildError as error:
        log = _log_text(error.build_log)
        summary = (str(error.msg).strip().splitlines() or ["no message"])[-1]
        failure = f"podman build of {tag} failed: {summary}"
    else:
        engine._owned.add(image.id)
        return image
    engine._owned.update(_STEP_ID_RE.findall(log))  # the steps that did complete
    tail = "\n".join(log.rstrip().splitlines()[-BUILD_LOG_TAIL:])
    pytest.fail(f"{failure}\n{tail}", pytrace=False)


@dataclass(frozen=True)
class LockSourceImage:
    """The built source image (``name`` is its tag in the engine) and what it was built from."""

    name: str
    image_id: str
    dockerfile: str
    base: LockBase
    apt_repo: AptRepo
    pypi_index: PypiIndex


@pytest.fixture(scope="session")
def lock_source_image(engine: Engine, lock_base: LockBase, apt_repo: AptRepo,
                      pypi_index: PypiIndex) -> LockSourceImage:
    """:func:`lock_dockerfile` on ``lock_base`` built as ``localhost/auditor-lock-source:t``."""
    text = lock_dockerfile(lock_base.digest_ref, apt_repo.sources_line, pypi_index.url)
    image = build_dockerfile(engine, text, LOCK_SOURCE_TAG)
    return LockSourceImage(LOCK_SOURCE_TAG, image.id, text, lock_base, apt_repo, pypi_index)
