"""One image, five ways in: registry by tag, registry by digest, docker-archive, OCI layout and
the podman engine. Each reads its layers itself (a cache of its own) and all must agree on the
identity of the image and on every entry of its merged filesystem."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import docker.errors
import pytest

from auditor.audit import AuditOptions, AuditResult, audit
from auditor.testing import LayerBuilder, build_oci_layout, random_layers
from fixtures.registry_server import push_oci_layout
from tests.engine_fixtures import oci_to_docker_archive

pytestmark = [pytest.mark.registry, pytest.mark.engine]


def _synthetic(tmp_path: Path) -> tuple[Path, str]:
    layers = [*random_layers(seed=7, count=3),
              LayerBuilder().file("etc/os-release", "ID=example\nVERSION_ID=1\n")
              .file("d9/a", b"same file").hardlink("d9/hard", "d9/a").opaque("d1")]
    build_oci_layout(tmp_path / "synthetic", layers, tag="v1")
    return tmp_path / "synthetic", "v1"


def _audit_five_ways(layout: Path, tag: str, name: str, registry, engine,
                     tmp_path: Path) -> dict[str, AuditResult]:
    digest = push_oci_layout(layout, tag, registry, name)
    remote = f"{registry.host}/{name}"
    # podman lists every repository with every manifest digest it has seen for an image, so an
    # earlier test's copy would make the recorded digest ambiguous: start from none.
    image_id = json.loads((Path(layout) / "blobs" / "sha256" / digest.split(":")[1]).read_text())[
        "config"]["digest"]
    for present in engine.client.images.list():
        if present.id == image_id:
            with contextlib.suppress(docker.errors.NotFound):
                engine.client.images.remove(present.id, force=True)
    engine.pull(f"{remote}:{tag}")
    archive = oci_to_docker_archive(layout, tag, tmp_path / f"{tag}.tar", f"{name}:{tag}")
    refs = {
        "registry-tag": f"{remote}:{tag}",
        "registry-digest": f"{remote}@{digest}",
        "docker-archive": f"docker-archive:{archive}",
        "oci": f"oci:{layout}:{tag}",
        "podman": f"podman:{remote}:{tag}",
    }
    from auditor.reference import parse_reference
    from auditor.sources import BlobCache, SourceOptions, make_source, open_image
    from auditor.testing import validate_image

    options = SourceOptions(engine_host=engine.base_url)
    for way, ref in refs.items():  # every source passes the same check on the same image
        cache = BlobCache(tmp_path / f"validate-{way}")
        source = make_source(parse_reference(ref), cache, options)
        try:
            validate_image(open_image(source, cache))
        finally:
            source.close()
    return {way: audit(ref, AuditOptions(cache_dir=str(tmp_path / f"cache-{way}"),
                                         source=SourceOptions(engine_host=engine.base_url)))
            for way, ref in refs.items()}


def _assert_agree(results: dict[str, AuditResult], manifest_digest: str) -> None:
    oci = results["oci"]
    assert oci.image.digest == manifest_digest
    for way, result in results.items():
        image = result.image
        assert image.image_id == oci.image.image_id, way
        assert [layer.diff_id for layer in image.layers] == [
            layer.diff_id for layer in oci.image.layers], way
        assert result.index.entries == oci.index.entries, way
        assert result.index.fingerprint() == oci.index.fingerprint(), way
        assert result.inventory.os == oci.inventory.os, way
        if way != "docker-archive":  # a docker save tarball has no manifest, so no digest
            assert image.identity_digest == manifest_digest, way
    repo_digests = results["podman"].facts["repo_digests"]
    assert any(d.endswith(f"@{manifest_digest}") for d in repo_digests), repo_digests
    assert results["docker-archive"].image.identity_digest is None
    # podman's save has no manifest either; the digest is the one it recorded when it pulled
    assert results["podman"].image.digest_synthesized


def test_synthetic_image_five_ways(tmp_path: Path, registry, engine) -> None:
    layout, tag = _synthetic(tmp_path)
    from auditor.reference import parse_reference
    from auditor.sources import BlobCache, make_source, open_image

    cache = BlobCache(tmp_path / "probe")
    manifest_digest = open_image(make_source(parse_reference(f"oci:{layout}:{tag}"), cache),
                                 cache).digest
    results = _audit_five_ways(layout, tag, "five/synthetic", registry, engine, tmp_path)
    _assert_agree(results, manifest_digest)
    assert results["oci"].inventory.os == {"id": "example", "version_id": "1",
                                           "path": "etc/os-release"}
    assert results["oci"].index.entries["d9/hard"].type == "hardlink"


@pytest.mark.slow
def test_debian_image_five_ways(tmp_path: Path, registry, engine, debian_image) -> None:
    from auditor.reference import parse_reference
    from auditor.sources import BlobCache, make_source, open_image

    cache = BlobCache(tmp_path / "probe")
    manifest_digest = open_image(make_source(parse_reference(debian_image.oci_ref), cache),
                                 cache).digest
    results = _audit_five_ways(debian_image.layout, debian_image.tag, "five/debian", registry,
                               engine, tmp_path)
    _assert_agree(results, manifest_digest)
    oci = results["oci"]
    assert oci.inventory.os["id"] == "debian" and oci.inventory.os["version_id"] == "12"
    assert oci.index.lookup("usr/bin/python3") is not None
    assert len(oci.index.entries) > 3000
