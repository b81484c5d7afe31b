import pytest

from auditor.errors import ReferenceError_
from auditor.reference import parse_reference

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(("text", "canonical"), [
    ("ubuntu", "docker.io/library/ubuntu:latest"),
    ("ubuntu:22.04", "docker.io/library/ubuntu:22.04"),
    ("library/ubuntu", "docker.io/library/ubuntu:latest"),
    ("index.docker.io/nvidia/cuda:12.2.0-runtime", "docker.io/nvidia/cuda:12.2.0-runtime"),
    ("nvcr.io/nvidia/pytorch:24.01-py3", "nvcr.io/nvidia/pytorch:24.01-py3"),
    ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
    ("127.0.0.1:5000/x:t", "127.0.0.1:5000/x:t"),
    (f"ubuntu@{D}", f"docker.io/library/ubuntu@{D}"),
    (f"ubuntu:22.04@{D}", f"docker.io/library/ubuntu:22.04@{D}"),
    ("registry:ghcr.io/o/r:1", "ghcr.io/o/r:1"),
    ("docker://quay.io/o/r", "quay.io/o/r:latest"),
    ("[::1]:5000/x", "[::1]:5000/x:latest"),
])
def test_registry_references_normalise_like_docker(text: str, canonical: str) -> None:
    ref = parse_reference(text)
    assert ref.transport == "registry"
    assert str(ref) == canonical


def test_digest_pins_and_tag_default() -> None:
    ref = parse_reference(f"localhost:5000/x@{D}")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == ("localhost:5000", "x", None, D)


@pytest.mark.parametrize(("text", "transport", "path", "tag"), [
    ("docker-archive:/tmp/a.tar", "docker-archive", "/tmp/a.tar", None),
    ("oci:/tmp/layout", "oci", "/tmp/layout", None),
    ("oci:/tmp/layout:v1", "oci", "/tmp/layout", "v1"),
    ("oci:./rel/dir:latest", "oci", "./rel/dir", "latest"),
    ("oci-archive:/tmp/x.tar:t", "oci-archive", "/tmp/x.tar", "t"),
    ("oci-archive:img.tar", "oci-archive", "img.tar", None),
])
def test_path_references(text: str, transport: str, path: str, tag: str | None) -> None:
    ref = parse_reference(text)
    assert (ref.transport, ref.path, ref.tag) == (transport, path, tag)
    assert str(ref) == text


@pytest.mark.parametrize(("text", "engine", "engine_ref"), [
    ("docker-daemon:ubuntu:22.04", "docker", "ubuntu:22.04"),
    ("podman:localhost/base:numpy", "podman", "localhost/base:numpy"),
    ("podman:0123456789ab", "podman", "0123456789ab"),
])
def test_engine_references(text: str, engine: str, engine_ref: str) -> None:
    ref = parse_reference(text)
    assert (ref.transport, ref.engine, ref.engine_ref) == ("engine", engine, engine_ref)


@pytest.mark.parametrize("text", [
    "", " ubuntu", "library/UPPER", "ubuntu:bad tag", "ubuntu@sha256:short", "ubuntu@md5:" + "a" * 32,
    "oci:", "docker-archive:", "podman:", "a//b", "-leading/x",
])
def test_bad_references_are_one_clear_error(text: str) -> None:
    with pytest.raises(ReferenceError_) as err:
        parse_reference(text)
    assert "invalid image reference" in str(err.value)
    assert "\n" not in str(err.value)
