"""EngineSource against a real podman service (Docker API through the docker SDK)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from auditor.errors import EnvironmentProblem, NotFoundError
from auditor.reference import parse_reference
from auditor.sources import engine as engine_module
from auditor.sources.base import open_image
from auditor.sources.cache import BlobCache
from auditor.sources.engine import EngineSource, engine_host, engine_name
from auditor.testing import build_docker_archive, random_image, random_layers, validate_image
from tests.engine_fixtures import Engine, oci_to_docker_archive


def unique(name: str) -> str:
    return f"localhost/auditor-test-{name}:{uuid.uuid4().hex[:12]}"


def leftover_archives(cache: BlobCache) -> list[Path]:
    return sorted((cache.root / "tmp").glob("*.tar"))


# -- which engine and where: no engine needed ---------------------------------------------

def test_podman_host_prefers_container_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "PODMAN_ROOT_SOCKET", str(tmp_path / "absent.sock"))
    env = {"CONTAINER_HOST": "unix:///x/podman.sock", "DOCKER_HOST": "unix:///y/docker.sock"}
    assert engine_host("podman", env) == "unix:///x/podman.sock"


def test_podman_host_finds_user_socket_then_docker_host(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "PODMAN_ROOT_SOCKET", str(tmp_path / "absent.sock"))
    runtime = tmp_path / "run"
    env = {"XDG_RUNTIME_DIR": str(runtime), "DOCKER_HOST": "tcp://127.0.0.1:2375"}
    assert engine_host("podman", env) == "tcp://127.0.0.1:2375"
    (runtime / "podman").mkdir(parents=True)
    (runtime / "podman" / "podman.sock").touch()
    assert engine_host("podman", env) == f"unix://{runtime}/podman/podman.sock"
    assert engine_host("podman", {}) == f"unix://{tmp_path}/absent.sock"


def test_docker_host_from_environment() -> None:
    assert engine_host("docker", {"DOCKER_HOST": "tcp://127.0.0.1:2375",
                                  "CONTAINER_HOST": "unix:///p.sock"}) == "tcp://127.0.0.1:2375"
    assert engine_host("docker", {}) == "unix:///var/run/docker.sock"


# -- no engine behind the address --------------------------------------------------------------

@pytest.mark.parametrize("text", ["podman:example/image:1", "docker-daemon:example/image:1"])
def test_missing_socket_is_an_environment_problem(text: str, tmp_path: Path,
                                                  cache: BlobCache) -> None:
    dead = f"unix://{tmp_path}/nothing.sock"
    started = time.monotonic()
    with pytest.raises(EnvironmentProblem, match="engine reachable at unix://") as caught:
        EngineSource(parse_reference(text), cache, base_url=dead)
    assert time.monotonic() - started < 5
    assert caught.value.exit_code == 3
    assert "nothing.sock" in str(caught.value) and "\n" not in str(caught.value)


def test_socket_nobody_listens_on(tmp_path: Path, cache: BlobCache,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bound.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))  # exists, never listens: connections are refused
        monkeypatch.setenv("CONTAINER_HOST", f"unix://{path}")
        started = time.monotonic()
        with pytest.raises(EnvironmentProblem, match="no podman engine reachable") as caught:
            EngineSource(parse_reference("podman:example/image:1"), cache)
        assert time.monotonic() - started < 5
        assert "refused" in str(caught.value).lower()


def test_unreachable_docker_host(cache: BlobCache, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))  # a port nobody listens on while we hold it
        port = sock.getsockname()[1]
        monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{port}")
        monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
        with pytest.raises(EnvironmentProblem, match=f"tcp://127.0.0.1:{port}"):
            EngineSource(parse_reference("docker-daemon:example/image:1"), cache)


# -- a real podman -----------------------------------------------------------------------------

@pytest.mark.engine
def test_podman_answers_as_podman(engine: Engine) -> None:
    assert engine_name(engine.client) == "podman"
    assert engine.client.ping()


@pytest.mark.engine
def test_loaded_image_is_read_and_verified(engine: Engine, tmp_path: Path,
                                           cache: BlobCache) -> None:
    name = unique("loaded")
    built = build_docker_archive(tmp_path / "image.tar", random_layers(seed=7), repo_tag=name)
    engine.load(built.path)

    source = EngineSource(parse_reference(f"podman:{name}"), cache, base_url=engine.base_url)
    image = open_image(source, cache)
    try:
        validate_image(image)
        assert image.image_id == built.config_digest
        assert [layer.diff_id for layer in image.layers] == built.diff_ids
        assert image.digest_synthesized
        facts = image.facts()
        assert facts["engine"] == "podman"
        assert facts["engine_host"] == engine.base_url
        assert facts["image_id"] == built.config_digest
        assert name in facts["repo_tags"]
        assert set(facts) == {"engine", "engine_host", "image_id", "repo_digests", "repo_tags"}
        # the save went to a file of the cache, not to memory
        saved = source.archive_path
        assert saved is not None and saved.parent == cache.root / "tmp" and saved.is_file()
    finally:
        image.close()
    assert not saved.exists()
    assert leftover_archives(cache) == []


@pytest.mark.engine
def test_image_by_id_and_docker_daemon_scheme(engine: Engine, tmp_path: Path,
                                              cache: BlobCache) -> None:
    """``docker-daemon:`` pointed at podman works, and the engine is named by what answered."""
    name = unique("by-id")
    built = build_docker_archive(tmp_path / "image.tar", random_layers(seed=8, count=2),
                                 repo_tag=name)
    engine.load(built.path)
    short_id = built.config_digest.split(":")[1][:12]
    for text in (f"docker-daemon:{short_id}", f"podman:{built.config_digest}"):
        source = EngineSource(parse_reference(text), cache, base_url=engine.base_url)
        image = open_image(source, cache)
        try:
            validate_image(image)
            assert image.image_id == built.config_digest
            assert source.facts()["engine"] == "podman"
        finally:
            image.close()
    assert leftover_archives(cache) == []


@pytest.mark.engine
def test_engine_address_from_container_host(engine: Engine, tmp_path: Path, cache: BlobCache,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    name = unique("env")
    built = build_docker_archive(tmp_path / "image.tar", random_layers(seed=9, count=1),
                                 repo_tag=name)
    engine.load(built.path)
    monkeypatch.setenv("CONTAINER_HOST", engine.base_url)
    source = EngineSource(parse_reference(f"podman:{name}"), cache)
    try:
        assert source.facts()["engine_host"] == engine.base_url
        assert source.facts()["image_id"] == built.config_digest
    finally:
        source.close()


@pytest.mark.engine
def test_image_not_in_engine(engine: Engine, cache: BlobCache) -> None:
    with pytest.raises(NotFoundError, match="not found in the podman engine"):
        EngineSource(parse_reference(f"podman:{unique('absent')}"), cache,
                     base_url=engine.base_url)
    with pytest.raises(NotFoundError):
        EngineSource(parse_reference("docker-daemon:" + "ab" * 32), cache,
                     base_url=engine.base_url)
    assert leftover_archives(cache) == []


@pytest.mark.engine
@pytest.mark.registry
def test_pulled_image_reports_repo_digest(engine: Engine, registry, tmp_path: Path,
                                          cache: BlobCache) -> None:
    from fixtures.registry_server import push_oci_layout

    built = random_image(tmp_path / "layout", seed=11, tag="v1")
    repo = f"auditor-test/pulled-{uuid.uuid4().hex[:8]}"
    digest = push_oci_layout(tmp_path / "layout", "v1", registry, repo)
    assert digest == built.manifest_digest
    reference = f"{registry.host}/{repo}:v1"
    engine.pull(reference)

    source = EngineSource(parse_reference(f"podman:{reference}"), cache, base_url=engine.base_url)
    image = open_image(source, cache)
    try:
        validate_image(image)
        assert image.image_id == built.config_digest
        facts = image.facts()
        assert f"{registry.host}/{repo}@{digest}" in facts["repo_digests"]
        assert reference in facts["repo_tags"]
    finally:
        image.close()


# -- a real Debian image ----------------------------------------------------------------------

PEAK_RSS_SCRIPT = textwrap.dedent("""
    import json, sys
    from auditor.reference import parse_reference
    from auditor.sources.base import open_image
    from auditor.sources.cache import BlobCache
    from auditor.sources.engine import EngineSource
    from auditor.testing import validate_image
    ref, base_url, cache_dir = sys.argv[1:4]
    cache = BlobCache(cache_dir)
    source = EngineSource(parse_reference(ref), cache, base_url=base_url)
    image = open_image(source, cache)
    saved = source.archive_path
    validate_image(image)
    size = saved.stat().st_size
    image.close()
    # VmHWM: this process's own peak. ru_maxrss would carry over pytest's, the parent's.
    peak = next(int(line.split()[1]) for line in open("/proc/self/status")
                if line.startswith("VmHWM:"))
    print(json.dumps({"image_id": image.image_id, "archive_bytes": size,
                      "archive_left": saved.exists(), "layers": len(image.layers),
                      "peak_rss_kib": peak}))
""")


@pytest.mark.engine
@pytest.mark.slow
def test_debian_image_streams_through_a_file(engine: Engine, debian_image, tmp_path: Path) -> None:
    layout = debian_image.layout
    index = json.loads((layout / "index.json").read_text())
    entry = next(m for m in index["manifests"]
                 if m.get("annotations", {}).get("org.opencontainers.image.ref.name")
                 == debian_image.tag)
    manifest = json.loads((layout / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_text())
    name = unique("debian")
    archive = oci_to_docker_archive(layout, debian_image.tag, tmp_path / "debian.tar", name)
    engine.load(archive)
    archive.unlink()

    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_SCRIPT, f"podman:{name}", engine.base_url,
         str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["image_id"] == manifest["config"]["digest"]
    assert result["layers"] == 1
    assert not result["archive_left"]
    # The whole docker-save tar (over 200 MB) never sits in memory.
    assert result["archive_bytes"] > 150 << 20
    assert result["peak_rss_kib"] < 150 << 10, result


A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


@pytest.mark.parametrize(("repo_digests", "ref", "expected"), [
    ([f"127.0.0.1:5000/x@{A}"], "podman:127.0.0.1:5000/x:t", A),
    ([f"127.0.0.1:5000/x@{A}", f"localhost/y@{B}"], "podman:127.0.0.1:5000/x:t", A),
    ([f"ubuntu@{A}"], "docker-daemon:ubuntu:22.04", A),  # Docker Hub, as Docker shows it
    ([f"localhost/y@{A}"], "podman:127.0.0.1:5000/x:t", A),  # the only one there is
    # podman pairs every repository with every digest it has seen: ambiguous, so nothing
    ([f"127.0.0.1:5000/x@{A}", f"127.0.0.1:5000/x@{B}"], "podman:127.0.0.1:5000/x:t", None),
    ([], "podman:x", None),
])
def test_recorded_digest_is_named_only_when_unambiguous(repo_digests: list[str], ref: str,
                                                        expected: str | None) -> None:
    from auditor.reference import parse_reference
    from auditor.sources.engine import recorded_digest

    assert recorded_digest(repo_digests, parse_reference(ref)) == expected
