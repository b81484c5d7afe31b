"""docker-archive, OCI layout directories and OCI archives: the same image, the same view."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from auditor.errors import InputError, NotFoundError, PlatformError
from auditor.model import Platform
from auditor.reference import parse_reference
from auditor.rootfs.build import build_rootfs
from auditor.sources import BlobCache, make_source, open_image
from auditor.testing import (
    build_docker_archive,
    build_multiarch_layout,
    build_oci_layout,
    random_layers,
    validate_image,
)

AMD64, ARM64 = Platform("linux", "amd64"), Platform("linux", "arm64")


def _open(text: str, cache: BlobCache, platform: Platform | None = None):
    return open_image(make_source(parse_reference(text), cache), cache, platform)


def _tar_dir(src: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w") as tar:
        for path in sorted(src.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(src)), recursive=False)
    return dest


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_oci_layout_directory(tmp_path: Path, cache: BlobCache, compression: str) -> None:
    built = build_oci_layout(tmp_path / "oci", random_layers(3), tag="v1", compression=compression)
    image = _open(f"oci:{tmp_path / 'oci'}:v1", cache)
    validate_image(image)
    assert image.digest == built.manifest_digest
    assert image.image_id == built.config_digest
    assert [layer.diff_id for layer in image.layers] == built.diff_ids
    assert [layer.digest for layer in image.layers] == built.layer_digests


def test_oci_archive_and_directory_agree(tmp_path: Path, cache: BlobCache) -> None:
    build_oci_layout(tmp_path / "oci", random_layers(4), tag="t")
    archive = _tar_dir(tmp_path / "oci", tmp_path / "oci.tar")
    from_dir = _open(f"oci:{tmp_path / 'oci'}:t", cache)
    from_tar = _open(f"oci-archive:{archive}:t", cache)
    validate_image(from_tar)
    assert from_dir.digest == from_tar.digest
    assert build_rootfs(from_dir, cache).fingerprint() == build_rootfs(from_tar, cache).fingerprint()


def test_docker_archive_classic(tmp_path: Path, cache: BlobCache) -> None:
    built = build_docker_archive(tmp_path / "img.tar", random_layers(5), repo_tag="x/y:1")
    image = _open(f"docker-archive:{tmp_path / 'img.tar'}", cache)
    validate_image(image)
    assert image.digest_synthesized  # no manifest in a docker save tarball
    assert image.image_id == built.config_digest
    assert image.facts()["repo_tags"] == ["x/y:1"]
    # the same layers as an OCI layout give the same filesystem
    build_oci_layout(tmp_path / "oci", random_layers(5))
    oci = _open(f"oci:{tmp_path / 'oci'}:latest", cache)
    assert build_rootfs(image, cache).fingerprint() == build_rootfs(oci, cache).fingerprint()


def test_docker_archive_in_oci_form(tmp_path: Path, cache: BlobCache) -> None:
    """Docker 25+ writes `docker save` as an OCI layout (index.json) plus manifest.json."""
    layout = tmp_path / "saved"
    built = build_oci_layout(layout, random_layers(6), tag="latest")
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0]["annotations"] = {"io.containerd.image.name": "docker.io/x/y:latest",
                                            "org.opencontainers.image.ref.name": "latest"}
    (layout / "index.json").write_text(json.dumps(index))
    archive = _tar_dir(layout, tmp_path / "saved.tar")
    image = _open(f"docker-archive:{archive}", cache)
    validate_image(image)
    assert image.digest == built.manifest_digest and not image.digest_synthesized


def test_multiarch_layout_picks_platform(tmp_path: Path, cache: BlobCache) -> None:
    built = build_multiarch_layout(tmp_path / "multi", {AMD64: random_layers(1),
                                                        ARM64: random_layers(2)})
    ref = f"oci:{tmp_path / 'multi'}:latest"
    arm = _open(ref, cache, ARM64)
    validate_image(arm)
    assert arm.digest == built[ARM64].manifest_digest
    assert arm.index_digest == built[ARM64].index_digest
    assert str(arm.platform) == "linux/arm64"
    assert _open(ref, cache, AMD64).digest == built[AMD64].manifest_digest
    with pytest.raises(PlatformError, match=r"linux/s390x.*available: linux/amd64, linux/arm64"):
        _open(ref, cache, Platform("linux", "s390x"))


def test_single_platform_image_refuses_other_platform(tmp_path: Path, cache: BlobCache) -> None:
    build_oci_layout(tmp_path / "oci", random_layers(1))
    with pytest.raises(PlatformError, match="single-platform image for linux/amd64"):
        _open(f"oci:{tmp_path / 'oci'}:latest", cache, ARM64)


def test_layout_tags(tmp_path: Path, cache: BlobCache) -> None:
    build_oci_layout(tmp_path / "oci", random_layers(1), tag="a")
    build_oci_layout(tmp_path / "oci", random_layers(2), tag="b")
    assert _open(f"oci:{tmp_path / 'oci'}:b", cache).digest != _open(f"oci:{tmp_path / 'oci'}:a",
                                                                      cache).digest
    with pytest.raises(NotFoundError, match="no image tagged 'c'; tags: a, b"):
        _open(f"oci:{tmp_path / 'oci'}:c", cache)
    with pytest.raises(InputError, match="holds 2 images"):
        _open(f"oci:{tmp_path / 'oci'}", cache)


@pytest.mark.parametrize("ref", ["oci:{p}/missing", "docker-archive:{p}/missing.tar",
                                 "oci-archive:{p}/missing.tar"])
def test_missing_paths(tmp_path: Path, cache: BlobCache, ref: str) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        _open(ref.format(p=tmp_path), cache)


def test_not_an_archive(tmp_path: Path, cache: BlobCache) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar file" * 100)
    with pytest.raises(InputError, match="not a readable tar"):
        _open(f"docker-archive:{junk}", cache)
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(InputError, match=r"no index\.json"):
        _open(f"oci:{empty_dir}", cache)
