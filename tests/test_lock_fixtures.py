"""The lock round trip's fixtures: the package servers' files, and the source image podman builds."""

from __future__ import annotations

import gzip
import hashlib
import html.parser
import io
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import pytest

from fixtures.package_servers import apt_flat_repository, serve_directory, simple_index
from tests.lock_fixtures import LockSourceImage


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _wheel(directory: Path, filename: str) -> Path:
    path = directory / filename
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x/__init__.py", f"# {filename}\n")
    return path


class _Anchors(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(value for name, value in attrs if name == "href" and value)


def _anchors(page: str) -> list[str]:
    parser = _Anchors()
    parser.feed(page)
    return parser.hrefs


def test_simple_index_links_each_wheel_with_its_sha256(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    wheels = [_wheel(source, "six-1.16.0-py2.py3-none-any.whl"),
              _wheel(source, "six-1.17.0-py2.py3-none-any.whl"),
              _wheel(source, "Zope.Interface-6.0-cp311-cp311-manylinux_2_17_x86_64.whl")]
    out = simple_index(wheels, tmp_path / "index")

    assert sorted(_anchors((out / "simple" / "index.html").read_text())) == [
        "six/", "zope-interface/"]
    for project, expected in (("six", wheels[:2]), ("zope-interface", wheels[2:])):
        page = out / "simple" / project / "index.html"
        hrefs = _anchors(page.read_text())
        assert len(hrefs) == len(expected)
        for href, wheel in zip(sorted(hrefs), sorted(expected), strict=True):
            path, _, fragment = href.partition("#")
            target = (page.parent / path).resolve()
            assert target == (out / "files" / wheel.name).resolve()
            assert fragment == f"sha256={_sha256(wheel)}" == f"sha256={_sha256(target)}"

    with serve_directory(out) as base:  # what pip fetches: the project page, then the file
        page = urllib.request.urlopen(f"{base}/simple/six/", timeout=10).read().decode()
        href = sorted(_anchors(page))[0].partition("#")[0]
        data = urllib.request.urlopen(urllib.parse.urljoin(f"{base}/simple/six/", href),
                                      timeout=10).read()
        assert data == wheels[0].read_bytes()


def _paragraphs(text: str) -> list[dict[str, str]]:
    entries = []
    for block in text.strip().split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if not line.startswith(" "):
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        entries.append(fields)
    return entries


def test_apt_flat_repository_lists_each_deb(tmp_path: Path) -> None:
    from fixtures.debs import debian_debs

    debs = debian_debs(("libonig5", "libquadmath0"), "lock")
    out = apt_flat_repository(debs, tmp_path / "repo")

    packages = (out / "Packages").read_text()
    assert gzip.decompress((out / "Packages.gz").read_bytes()).decode() == packages
    entries = {entry["Package"]: entry for entry in _paragraphs(packages)}
    assert sorted(entries) == ["libonig5", "libquadmath0"]
    for deb in debs:
        name, version = deb.name.split("_")[:2]
        entry = entries[name]
        assert entry["Version"].replace(":", "%3a") == version
        assert entry["SHA256"] == _sha256(deb)
        assert entry["Size"] == str(deb.stat().st_size)
        assert (out / entry["Filename"]).read_bytes() == deb.read_bytes()


@pytest.mark.slow
@pytest.mark.engine
@pytest.mark.registry
def test_source_image_has_the_servers_versions(engine, lock_source_image: LockSourceImage) -> None:
    source = lock_source_image
    out = engine.client.containers.run(source.name, [
        "sh", "-c", "dpkg-query -W -f '${Package}\\t${Version}\\n' jq libopenblas0-pthread libjq1; "
        "python3 -c 'import six, numpy; print(six.__version__, numpy.__version__)'"],
        remove=True, network_mode="none").decode()
    *dpkg_lines, python_line = out.strip().splitlines()
    installed = dict(line.split("\t") for line in dpkg_lines)
    debs = source.apt_repo.debs
    assert installed == {name: debs[name] for name in ("jq", "libopenblas0-pthread", "libjq1")}
    wheels = source.pypi_index.wheels
    assert python_line.split() == [wheels["six"], wheels["numpy"]] == ["1.16.0", "1.26.4"]
    # the newer six in the index is not what was pinned; the older jq (if any) not what apt took
    assert source.pypi_index.other_versions == {"six": "1.17.0"}
    assert all(debs[name] != version for name, version in source.apt_repo.other_versions.items())

    attrs = engine.client.images.get(source.name).attrs
    assert "OMP_NUM_THREADS=1" in attrs["Config"]["Env"]
    assert attrs["Config"]["Labels"]["org.example.team"] == "ml"
    assert source.base.digest_ref in source.dockerfile
    assert io.StringIO(source.dockerfile).readline().strip() == f"FROM {source.base.digest_ref}"
