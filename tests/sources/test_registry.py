"""RegistrySource against a real registry (Debian's docker-registry) on loopback.

Also: small fake HTTP servers for what a real registry with a filesystem driver never does
(redirects to blob storage, 503s), and the credential and challenge parsing of ``auth``.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from auditor import mediatypes as mt
from auditor.audit import AuditOptions, audit
from auditor.digest import digest_bytes
from auditor.errors import (
    AuthError,
    DigestMismatchError,
    EnvironmentProblem,
    InputError,
    NotFoundError,
    PlatformError,
)
from auditor.model import Descriptor, Platform, host_platform
from auditor.reference import parse_reference
from auditor.sources import SourceOptions
from auditor.sources.auth import (
    find_credentials,
    normalize_config_key,
    parse_challenges,
)
from auditor.sources.base import open_image
from auditor.sources.cache import BlobCache
from auditor.sources.registry import RegistrySource, is_loopback, list_tags
from auditor.testing import (
    BuiltImage,
    build_multiarch_layout,
    build_oci_layout,
    random_layers,
    validate_image,
)
from fixtures.registry_server import RegistryServer, free_port, push_oci_layout
from tests.registry_fixtures import CredentialStore


def _source(server_or_host: RegistryServer | str, name: str, **kwargs) -> RegistrySource:
    host = server_or_host.host if isinstance(server_or_host, RegistryServer) else server_or_host
    return RegistrySource(parse_reference(f"{host}/{name}"), **kwargs)


def _push(server: RegistryServer, tmp: Path, repo: str, seed: int, count: int = 2) -> BuiltImage:
    built = build_oci_layout(tmp / f"layout-{seed}", random_layers(seed, count), tag="v1")
    pushed = push_oci_layout(built.path, "v1", server, repo)
    assert pushed == built.manifest_digest
    return built


def _audit(source: RegistrySource, cache: BlobCache, platform: Platform | None = None):
    image = open_image(source, cache, platform)
    validate_image(image)
    return image


@pytest.fixture(scope="module")
def plain(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    return _push(registry, tmp_path_factory.mktemp("plain"), "sources/plain", seed=101)


# -- anonymous ---------------------------------------------------------------------------------

@pytest.mark.registry
def test_pull_by_tag_and_by_digest_give_the_pushed_image(
        registry: RegistryServer, plain: BuiltImage, tmp_path: Path,
        docker_config: CredentialStore) -> None:
    by_tag = _audit(_source(registry, "sources/plain:v1"), BlobCache(tmp_path / "a"))
    by_digest = _audit(_source(registry, f"sources/plain@{plain.manifest_digest}"),
                       BlobCache(tmp_path / "b"))

    assert by_tag.digest == by_digest.digest == plain.manifest_digest
    assert by_tag.image_id == plain.config_digest
    assert [layer.digest for layer in by_tag.layers] == plain.layer_digests
    assert [layer.diff_id for layer in by_tag.layers] == plain.diff_ids
    assert by_tag.facts() == {"registry": registry.host, "repository": "sources/plain"}


@pytest.mark.registry
def test_every_manifest_request_accepts_oci_and_docker_types(
        registry: RegistryServer, plain: BuiltImage, docker_config: CredentialStore) -> None:
    # The registry answers 404 for an OCI manifest unless Accept lists its type.
    root = _source(registry, "sources/plain:v1").root()
    assert root.digest == plain.manifest_digest
    assert json.loads(root.data)["mediaType"] == mt.OCI_MANIFEST


@pytest.mark.registry
def test_missing_tag_and_repository_are_not_found(
        registry: RegistryServer, plain: BuiltImage, docker_config: CredentialStore) -> None:
    with pytest.raises(NotFoundError) as tag_err:
        _source(registry, "sources/plain:nope").root()
    assert "nope" in str(tag_err.value) and "sources/plain" in str(tag_err.value)
    assert "MANIFEST_UNKNOWN" in str(tag_err.value)

    with pytest.raises(NotFoundError) as repo_err:
        _source(registry, "sources/absent:v1").root()
    assert "sources/absent" in str(repo_err.value)


@pytest.mark.registry
def test_registry_down_is_an_environment_problem_and_fails_fast(
        tmp_path: Path, docker_config: CredentialStore) -> None:
    host = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(EnvironmentProblem) as err:
        open_image(_source(host, "x/y:1"), BlobCache(tmp_path), None)
    assert time.monotonic() - started < 5
    assert str(err.value).startswith(f"registry {host} is not reachable: ")
    assert "Connection refused" in str(err.value)
    assert "\n" not in str(err.value) and "HTTPConnectionPool" not in str(err.value)
    assert err.value.exit_code == 3


@pytest.mark.registry
def test_list_tags(registry: RegistryServer, tmp_path: Path,
                   docker_config: CredentialStore) -> None:
    built = build_oci_layout(tmp_path / "layout", random_layers(102, 1), tag="v1")
    for tag in ("a", "b", "c"):
        push_oci_layout(built.path, "v1", registry, "sources/tags", dest_tag=tag)

    # distribution 2.8 ignores ?n= and sends one page; pagination: see the fake-server test
    assert sorted(list_tags(parse_reference(f"{registry.host}/sources/tags"), page_size=1)) == [
        "a", "b", "c"]
    with pytest.raises(NotFoundError):
        list_tags(parse_reference(f"{registry.host}/sources/never-pushed"))


# -- caching and resuming ----------------------------------------------------------------------

@pytest.mark.registry
def test_second_audit_with_the_same_cache_fetches_no_blob(
        registry: RegistryServer, tmp_path: Path, docker_config: CredentialStore) -> None:
    built = _push(registry, tmp_path, "sources/cached", seed=103)
    cache = BlobCache(tmp_path / "cache")
    ref = f"sources/cached@{built.manifest_digest}"
    _audit(_source(registry, ref), cache)
    fetched = registry.count_requests("GET", "/v2/sources/cached/blobs/")
    assert fetched == 1 + len(built.layer_digests)  # the config and each layer, once

    _audit(_source(registry, ref), cache)

    assert registry.count_requests("GET", "/v2/sources/cached/blobs/") == fetched


@pytest.mark.registry
def test_layers_not_kept_stream_through_and_only_their_results_are_cached(
        registry: RegistryServer, tmp_path: Path, docker_config: CredentialStore) -> None:
    built = _push(registry, tmp_path, "sources/streamed", seed=104)
    ref = f"{registry.host}/sources/streamed@{built.manifest_digest}"
    layer_gets = [f"/v2/sources/streamed/blobs/{d}" for d in built.layer_digests]

    def run(**options: bool) -> int:
        before = sum(registry.count_requests("GET", path) for path in layer_gets)
        result = audit(ref, AuditOptions(cache_dir=str(tmp_path / "cache"), source=SourceOptions(
            insecure=True, keep_layers=False), **options))
        assert len(result.image.layers) == len(built.layer_digests)
        return sum(registry.count_requests("GET", path) for path in layer_gets) - before

    assert run() == len(built.layer_digests)
    cache = BlobCache(tmp_path / "cache")
    assert not any(cache.has(d) for d in built.layer_digests)
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []
    assert run() == 0  # the per-layer results serve the warm audit
    assert run(all_elf=True) == len(built.layer_digests)  # other catalogers: downloaded again
    shutil.rmtree(tmp_path / "cache" / "layers")  # no results: a keeping audit downloads
    audit(ref, AuditOptions(cache_dir=str(tmp_path / "cache"), source=SourceOptions(insecure=True)))
    assert all(cache.has(d) for d in built.layer_digests)
    shutil.rmtree(tmp_path / "cache" / "layers")  # the results gone again, the blobs kept
    assert run() == 0  # a layer an earlier run kept is read from the cache, not downloaded


@pytest.mark.registry
def test_no_keep_layers_through_the_cli(registry: RegistryServer, tmp_path: Path,
                                        docker_config: CredentialStore) -> None:
    built = _push(registry, tmp_path, "sources/streamed-cli", seed=105)
    cache, report = tmp_path / "cache", tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "auditor", "audit", f"{registry.host}/sources/streamed-cli:v1",
         "--insecure", "--no-keep-layers", "--cache-dir", str(cache), "--format", "json",
         "-o", str(report)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert [layer["digest"] for layer in json.loads(report.read_text())["layers"]] == built.layer_digests
    assert not any(BlobCache(cache).has(d) for d in built.layer_digests)


def _layer_bytes(built: BuiltImage, index: int = 0) -> tuple[str, bytes]:
    digest = built.layer_digests[index]
    return digest, (built.path / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()


@pytest.mark.registry
def test_partial_download_resumes_with_a_range_request(
        registry: RegistryServer, tmp_path: Path, docker_config: CredentialStore) -> None:
    built = _push(registry, tmp_path, "sources/resume", seed=104)
    digest, data = _layer_bytes(built)
    cache = BlobCache(tmp_path / "cache")
    (cache.root / "tmp" / f"{digest.split(':')[1]}.partial").write_bytes(data[: len(data) // 2])

    _audit(_source(registry, "sources/resume:v1"), cache)

    blob_path = f"/v2/sources/resume/blobs/{digest}"
    assert registry.count_requests("GET", blob_path, status=206) == 1
    assert registry.count_requests("GET", blob_path, status=200) == 0
    assert cache.blob_path(digest).read_bytes() == data


@pytest.mark.registry
def test_corrupt_partial_download_is_fetched_again_whole(
        registry: RegistryServer, tmp_path: Path, docker_config: CredentialStore) -> None:
    built = _push(registry, tmp_path, "sources/badpartial", seed=105)
    digest, data = _layer_bytes(built)
    cache = BlobCache(tmp_path / "cache")
    garbage = bytes(b ^ 0xFF for b in data[: len(data) // 2])
    (cache.root / "tmp" / f"{digest.split(':')[1]}.partial").write_bytes(garbage)

    _audit(_source(registry, "sources/badpartial:v1"), cache)

    blob_path = f"/v2/sources/badpartial/blobs/{digest}"
    assert registry.count_requests("GET", blob_path, status=206) == 1
    assert registry.count_requests("GET", blob_path, status=200) == 1
    assert cache.blob_path(digest).read_bytes() == data


@pytest.mark.registry
def test_blob_that_does_not_match_its_digest_is_refused_and_not_cached(
        registry: RegistryServer, tmp_path: Path, docker_config: CredentialStore) -> None:
    built = _push(registry, tmp_path, "sources/tampered", seed=106)
    digest, data = _layer_bytes(built)
    stored = registry.blob_data_path(digest)
    assert stored.read_bytes() == data
    stored.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])  # same size, other bytes
    cache = BlobCache(tmp_path / "cache")
    image = open_image(_source(registry, "sources/tampered:v1"), cache, None)

    with pytest.raises(DigestMismatchError) as err:
        validate_image(image)

    assert digest in str(err.value)
    assert not cache.has(digest)
    assert not list((cache.root / "tmp").glob(f"{digest.split(':')[1]}*"))


# -- multi-arch --------------------------------------------------------------------------------

AMD64, ARM64 = Platform("linux", "amd64"), Platform("linux", "arm64")


@pytest.fixture(scope="module")
def multiarch(registry: RegistryServer,
              tmp_path_factory: pytest.TempPathFactory) -> dict[Platform, BuiltImage]:
    layout = tmp_path_factory.mktemp("multiarch") / "layout"
    built = build_multiarch_layout(layout, {AMD64: random_layers(107, 2),
                                            ARM64: random_layers(108, 2)}, tag="v1")
    pushed = push_oci_layout(layout, "v1", registry, "sources/multi", all_platforms=True)
    assert pushed == built[AMD64].index_digest
    return built


@pytest.mark.registry
@pytest.mark.parametrize("platform", [ARM64, AMD64], ids=str)
def test_platform_picks_its_manifest_from_the_index(
        registry: RegistryServer, multiarch: dict[Platform, BuiltImage], platform: Platform,
        tmp_path: Path, docker_config: CredentialStore) -> None:
    image = _audit(_source(registry, "sources/multi:v1"), BlobCache(tmp_path), platform)

    assert image.digest == multiarch[platform].manifest_digest
    assert image.platform == platform
    assert image.index_digest == multiarch[platform].index_digest
    assert set(image.platforms) == {AMD64, ARM64}


@pytest.mark.registry
def test_default_platform_is_the_hosts(
        registry: RegistryServer, multiarch: dict[Platform, BuiltImage], tmp_path: Path,
        docker_config: CredentialStore) -> None:
    if host_platform() not in multiarch:
        pytest.skip(f"this host is {host_platform()}, not in the test index")
    image = _audit(_source(registry, "sources/multi:v1"), BlobCache(tmp_path))
    assert image.digest == multiarch[host_platform()].manifest_digest


@pytest.mark.registry
def test_platform_missing_from_the_index_lists_the_available_ones(
        registry: RegistryServer, multiarch: dict[Platform, BuiltImage], tmp_path: Path,
        docker_config: CredentialStore) -> None:
    with pytest.raises(PlatformError) as err:
        open_image(_source(registry, "sources/multi:v1"), BlobCache(tmp_path),
                   Platform("linux", "s390x"))
    assert "linux/s390x" in str(err.value)
    assert "linux/amd64" in str(err.value) and "linux/arm64" in str(err.value)


# -- basic auth --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def basic_image(registry_basic: RegistryServer,
                tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    return _push(registry_basic, tmp_path_factory.mktemp("basic"), "sources/private", seed=109)


@pytest.mark.registry
def test_basic_auth_with_stored_credentials(
        registry_basic: RegistryServer, basic_image: BuiltImage, tmp_path: Path,
        docker_config: CredentialStore) -> None:
    docker_config.login(registry_basic.host, "alice", "s3cret")
    image = _audit(_source(registry_basic, "sources/private:v1"), BlobCache(tmp_path))
    assert image.digest == basic_image.manifest_digest


@pytest.mark.registry
def test_basic_auth_credentials_under_a_url_key(
        registry_basic: RegistryServer, basic_image: BuiltImage, tmp_path: Path,
        docker_config: CredentialStore) -> None:
    docker_config.write({"auths": {f"https://{registry_basic.host}/v1/":
                                   {"username": "alice", "password": "s3cret"}}})
    image = _audit(_source(registry_basic, "sources/private:v1"), BlobCache(tmp_path))
    assert image.digest == basic_image.manifest_digest


@pytest.mark.registry
def test_basic_auth_without_credentials_says_to_log_in(
        registry_basic: RegistryServer, basic_image: BuiltImage,
        docker_config: CredentialStore) -> None:
    with pytest.raises(AuthError) as err:
        _source(registry_basic, "sources/private:v1").root()
    assert "requires authentication" in str(err.value)
    assert "docker login" in str(err.value)


@pytest.mark.registry
def test_basic_auth_with_wrong_credentials_names_the_registry(
        registry_basic: RegistryServer, basic_image: BuiltImage,
        docker_config: CredentialStore) -> None:
    docker_config.login(registry_basic.host, "alice", "wrong")
    with pytest.raises(AuthError) as err:
        _source(registry_basic, "sources/private:v1").root()
    assert registry_basic.host in str(err.value)
    assert "refused the credentials" in str(err.value)


@pytest.mark.registry
def test_podman_auth_file_is_used(
        registry_basic: RegistryServer, basic_image: BuiltImage, tmp_path: Path,
        docker_config: CredentialStore, monkeypatch: pytest.MonkeyPatch) -> None:
    auth_file = tmp_path / "auth.json"
    auth = base64.b64encode(b"alice:s3cret").decode()
    auth_file.write_text(json.dumps({"auths": {f"{registry_basic.host}/sources": {"auth": auth}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    image = _audit(_source(registry_basic, "sources/private:v1"), BlobCache(tmp_path / "c"))
    assert image.digest == basic_image.manifest_digest


# -- bearer tokens -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def token_image(registry_token: RegistryServer,
                tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    return _push(registry_token, tmp_path_factory.mktemp("token"), "sources/tokened", seed=110)


@pytest.mark.registry
def test_bearer_token_with_credentials_is_fetched_once_per_scope(
        registry_token: RegistryServer, token_image: BuiltImage, tmp_path: Path,
        docker_config: CredentialStore) -> None:
    docker_config.login(registry_token.host, "alice", "s3cret")
    assert registry_token.token_server is not None
    asked = len(registry_token.token_server.requests)

    image = _audit(_source(registry_token, "sources/tokened:v1"), BlobCache(tmp_path))

    assert image.digest == token_image.manifest_digest
    new = registry_token.token_server.requests[asked:]
    assert [r["scope"] for r in new] == [["repository:sources/tokened:pull"]]
    assert new[0]["user"] == "alice"


@pytest.mark.registry
def test_bearer_token_without_credentials_says_to_log_in(
        registry_token: RegistryServer, token_image: BuiltImage,
        docker_config: CredentialStore) -> None:
    with pytest.raises(AuthError) as err:
        _source(registry_token, "sources/tokened:v1").root()
    assert f"{registry_token.host}/sources/tokened requires authentication" in str(err.value)


@pytest.mark.registry
def test_bearer_token_with_wrong_credentials_names_the_registry(
        registry_token: RegistryServer, token_image: BuiltImage,
        docker_config: CredentialStore) -> None:
    docker_config.login(registry_token.host, "alice", "nope")
    with pytest.raises(AuthError) as err:
        _source(registry_token, "sources/tokened:v1").root()
    assert registry_token.host in str(err.value) and "refused" in str(err.value)


def _helper(directory: Path, name: str, body: str) -> None:
    script = directory / f"docker-credential-{name}"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)


@pytest.mark.registry
def test_credential_helper_from_cred_helpers(
        registry_token: RegistryServer, token_image: BuiltImage, tmp_path: Path,
        docker_config: CredentialStore, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _helper(bin_dir, "test", f"""read host
if [ "$host" = "{registry_token.host}" ]; then
  echo '{{"ServerURL": "'"$host"'", "Username": "alice", "Secret": "s3cret"}}'
else
  echo "credentials not found in native keychain"; exit 1
fi
""")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    docker_config.write({"credHelpers": {registry_token.host: "test"}})

    image = _audit(_source(registry_token, "sources/tokened:v1"), BlobCache(tmp_path / "c"))
    assert image.digest == token_image.manifest_digest


@pytest.mark.registry
def test_missing_credential_helper_is_one_clear_line(
        registry_token: RegistryServer, token_image: BuiltImage,
        docker_config: CredentialStore) -> None:
    docker_config.write({"credHelpers": {registry_token.host: "absent-helper"}})
    with pytest.raises(EnvironmentProblem) as err:
        _source(registry_token, "sources/tokened:v1").root()
    assert "docker-credential-absent-helper" in str(err.value)
    assert "not on PATH" in str(err.value)


# -- what a filesystem-backed registry never does: fake servers --------------------------------

@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


Answer = tuple[int, dict[str, str], bytes]


@dataclass
class FakeServer:
    """A loopback HTTP server answering with a function; records every request."""

    answer: Callable[[Seen], Answer]
    address: str = "127.0.0.1"
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                request = Seen("GET", self.path, {k.lower(): v for k, v in self.headers.items()})
                fake.seen.append(request)
                status, headers, body = fake.answer(request)
                self.send_response(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((self.address, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_servers() -> Iterator[Callable[[Callable[[Seen], Answer]], FakeServer]]:
    started: list[FakeServer] = []

    def start(answer: Callable[[Seen], Answer], address: str = "127.0.0.1") -> FakeServer:
        started.append(FakeServer(answer, address))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def _ranged(data: bytes, request: Seen) -> Answer:
    spec = request.headers.get("range", "")
    if spec.startswith("bytes=") and spec.endswith("-"):
        start = int(spec[len("bytes="):-1])
        return 206, {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}, data[start:]
    return 200, {}, data


def test_redirect_to_blob_storage_does_not_carry_the_registry_credentials(
        fake_servers, docker_config: CredentialStore) -> None:
    data = b"layer bytes " * 1000
    digest = digest_bytes(data)
    storage = fake_servers(lambda request: _ranged(data, request))
    expected = "Basic " + base64.b64encode(b"alice:s3cret").decode()

    def registry_answer(request: Seen) -> Answer:
        if request.headers.get("authorization") != expected:
            return 401, {"WWW-Authenticate": 'Basic realm="fake"'}, b"{}"
        return 307, {"Location": f"http://localhost:{storage.port}/store/{digest}?sig=x"}, b""

    front = fake_servers(registry_answer)
    docker_config.login(f"127.0.0.1:{front.port}", "alice", "s3cret")
    source = _source(f"127.0.0.1:{front.port}", "a/b:1")
    desc = Descriptor(mt.OCI_LAYER_GZIP, digest, len(data))

    stream, start = source.blob(desc, 0)
    whole = stream.read()
    stream.close()
    stream, resumed_at = source.blob(desc, 100)
    rest = stream.read()
    stream.close()

    assert (start, whole) == (0, data)
    assert (resumed_at, rest) == (100, data[100:])
    assert all("authorization" not in r.headers for r in storage.seen)
    assert storage.seen[-1].headers["range"] == "bytes=100-"
    assert front.seen[-1].headers["authorization"] == expected


def test_interrupted_download_is_one_line_and_the_next_run_resumes(
        fake_servers, tmp_path: Path, docker_config: CredentialStore) -> None:
    data = os.urandom(3 << 20)
    digest = digest_bytes(data)
    cut = (5 << 20) // 2

    def answer(request: Seen) -> Answer:
        if len(server.seen) == 1:  # the first answer promises everything and stops short
            return 200, {"Content-Length": str(len(data))}, data[:cut]
        return _ranged(data, request)

    server = fake_servers(answer)
    source = _source(f"127.0.0.1:{server.port}", "a/b:1")
    desc = Descriptor(mt.OCI_LAYER_GZIP, digest, len(data))
    cache = BlobCache(tmp_path / "cache")
    partial = cache.root / "tmp" / f"{digest.split(':')[1]}.partial"

    with pytest.raises(EnvironmentProblem) as err:
        cache.ingest(digest, len(data), lambda offset: source.blob(desc, offset))
    assert "interrupted" in str(err.value) and "\n" not in str(err.value)
    kept = partial.stat().st_size
    assert 0 < kept <= cut

    path = cache.ingest(digest, len(data), lambda offset: source.blob(desc, offset))

    assert path.read_bytes() == data
    assert server.seen[-1].headers["range"] == f"bytes={kept}-"


def test_transient_errors_are_retried_with_the_full_accept_list(
        fake_servers, docker_config: CredentialStore) -> None:
    manifest = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                           "manifests": []}).encode()
    replies = iter([503, 429])

    def answer(request: Seen) -> Answer:
        status = next(replies, 200)
        if status != 200:
            return status, {"Retry-After": "0"}, b""
        return 200, {"Content-Type": mt.OCI_INDEX,
                     "Docker-Content-Digest": digest_bytes(manifest)}, manifest

    server = fake_servers(answer)
    root = _source(f"127.0.0.1:{server.port}", "a/b:1").root()

    assert root.data == manifest and root.digest == digest_bytes(manifest)
    assert len(server.seen) == 3
    accepted = {t.strip() for t in server.seen[-1].headers["accept"].split(",")}
    assert accepted == {mt.OCI_INDEX, mt.OCI_MANIFEST, mt.DOCKER_MANIFEST_LIST,
                        mt.DOCKER_MANIFEST}


def test_registry_that_stays_unavailable_gives_up_after_the_retries(
        fake_servers, docker_config: CredentialStore) -> None:
    server = fake_servers(lambda request: (503, {}, b'{"errors":[{"code":"UNAVAILABLE",'
                                                   b'"message":"try later"}]}'))
    started = time.monotonic()
    with pytest.raises(EnvironmentProblem) as err:
        _source(f"127.0.0.1:{server.port}", "a/b:1", retries=2).root()
    assert len(server.seen) == 3
    assert time.monotonic() - started < 5
    assert "503" in str(err.value) and "try later" in str(err.value)


def test_list_tags_follows_link_pagination(fake_servers, docker_config: CredentialStore) -> None:
    pages = {
        "/v2/a/b/tags/list?n=2": ({"Link": '</v2/a/b/tags/list?n=2&last=t2>; rel="next"'},
                                  ["t1", "t2"]),
        "/v2/a/b/tags/list?n=2&last=t2": ({}, ["t3"]),
    }

    def answer(request: Seen) -> Answer:
        headers, tags = pages[request.path]
        return 200, {"Content-Type": "application/json", **headers}, json.dumps(
            {"name": "a/b", "tags": tags}).encode()

    server = fake_servers(answer)
    tags = list_tags(parse_reference(f"127.0.0.1:{server.port}/a/b"), page_size=2)
    assert tags == ["t1", "t2", "t3"]
    assert [r.path for r in server.seen] == list(pages)


def test_insecure_registry_without_tls_is_spoken_to_in_plain_http(
        fake_servers, docker_config: CredentialStore) -> None:
    """A registry that is not loopback gets HTTPS first; with --insecure, plain HTTP when its
    TLS fails. 0.0.0.0 is not a loopback address to the client, yet Linux delivers it to the
    server listening on 127.0.0.1: no packet leaves this machine's loopback."""
    manifest = b'{"schemaVersion": 2, "manifests": []}'
    server = fake_servers(lambda request: (200, {}, manifest))
    host = f"0.0.0.0:{server.port}"
    assert not is_loopback(host)

    with pytest.raises(EnvironmentProblem, match=r"^TLS error talking to registry"):
        _source(host, "a/b:1").root()
    assert _source(host, "a/b:1", insecure=True).root().data == manifest


def test_manifest_whose_digest_header_lies_is_refused(
        fake_servers, docker_config: CredentialStore) -> None:
    body = b'{"schemaVersion": 2}'
    server = fake_servers(lambda request: (200, {"Docker-Content-Digest":
                                                 digest_bytes(b"other")}, body))
    with pytest.raises(DigestMismatchError):
        _source(f"127.0.0.1:{server.port}", "a/b:1").root()


def test_oversized_manifest_is_refused(fake_servers, docker_config: CredentialStore) -> None:
    server = fake_servers(lambda request: (200, {}, b" " * ((4 << 20) + 1)))
    with pytest.raises(InputError, match="larger than"):
        _source(f"127.0.0.1:{server.port}", "a/b:1").root()


# -- credentials and challenges (auditor.sources.auth) -----------------------------------------

def test_bearer_challenge_with_quoted_commas() -> None:
    [challenge] = parse_challenges(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:a/b:pull,push",error="insufficient_scope"')
    assert challenge.scheme == "bearer"
    assert challenge.params == {"realm": "https://auth.example.com/token",
                                "service": "registry.example.com",
                                "scope": "repository:a/b:pull,push",
                                "error": "insufficient_scope"}


def test_several_challenges_and_escapes() -> None:
    basic, bearer = parse_challenges('Basic realm="say \\"hi\\"", Bearer realm="r", service=s')
    assert (basic.scheme, basic.get("realm")) == ("basic", 'say "hi"')
    assert (bearer.scheme, bearer.get("realm"), bearer.get("service")) == ("bearer", "r", "s")


@pytest.mark.parametrize(("key", "normal"), [
    ("https://index.docker.io/v1/", "docker.io"),
    ("registry-1.docker.io", "docker.io"),
    ("http://127.0.0.1:5000/v2/", "127.0.0.1:5000"),
    ("quay.io/team", "quay.io/team"),
])
def test_config_keys_are_normalised(key: str, normal: str) -> None:
    assert normalize_config_key(key) == normal


def test_docker_hub_credentials_and_identity_tokens(docker_config: CredentialStore) -> None:
    auth = base64.b64encode(b"bob:pw:with:colons").decode()
    docker_config.write({"auths": {"https://index.docker.io/v1/": {"auth": auth},
                                   "ghcr.io": {"identitytoken": "tok"}}})
    hub = find_credentials("docker.io")
    assert hub is not None and (hub.username, hub.password) == ("bob", "pw:with:colons")
    ghcr = find_credentials("ghcr.io")
    assert ghcr is not None and ghcr.identity_token == "tok"
    assert find_credentials("quay.io") is None


def test_credential_helpers_failures_and_identity_tokens(
        tmp_path: Path, docker_config: CredentialStore, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _helper(bin_dir, "broken", 'echo "keychain is locked" >&2; exit 1\n')
    _helper(bin_dir, "tokens", 'read host; echo \'{"Username": "<token>", "Secret": "T"}\'\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    docker_config.write({"credHelpers": {"a.example": "broken", "b.example": "tokens"}})

    with pytest.raises(AuthError) as err:
        find_credentials("a.example")
    assert str(err.value) == ("credential helper docker-credential-broken failed for a.example: "
                              "keychain is locked")
    tokens = find_credentials("b.example")
    assert tokens is not None and tokens.identity_token == "T" and tokens.username is None


def test_unreadable_auth_entry_is_an_auth_error(docker_config: CredentialStore) -> None:
    docker_config.write({"auths": {"a.example": {"auth": base64.b64encode(b"nocolon").decode()}}})
    with pytest.raises(AuthError) as err:
        find_credentials("a.example")
    assert "a.example" in str(err.value) and "user:password" in str(err.value)


@pytest.mark.parametrize(("host", "loopback"), [
    ("localhost:5000", True), ("127.0.0.1", True), ("127.1.2.3:80", True), ("[::1]:5000", True),
    ("::1", True), ("registry.example.com", False), ("10.0.0.1:5000", False),
])
def test_loopback_hosts_speak_plain_http(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.registry
def test_platform_option_through_the_cli(registry: RegistryServer,
                                         multiarch: dict[Platform, BuiltImage],
                                         tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    ref = f"{registry.host}/sources/multi:v1"
    base = [sys.executable, "-m", "auditor", "audit", ref, "--cache-dir", str(tmp_path)]
    done = subprocess.run([*base, "--platform", "linux/arm64", "--format", "json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["image"]["platform"] == "linux/arm64"
    assert doc["image"]["digest"] == multiarch[ARM64].manifest_digest
    assert doc["image"]["index_digest"] == multiarch[ARM64].index_digest
    assert doc["image"]["platforms_available"] == ["linux/amd64", "linux/arm64"]
    done = subprocess.run([*base, "--platform", "linux/s390x"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"auditor: error: {ref} has no image for platform linux/s390x; "
        "available: linux/amd64, linux/arm64"]
