"""Python distributions (dist-info, egg-info) and conda packages.

Real inputs where this machine has them: wheels of ``six``, ``packaging`` and ``requests``
installed by pip (``pip install --no-deps --target``) into an image's site-packages; Debian
bookworm's own ``python3-*`` packages (``apt-get download``, their data tar used as a layer as
is); the Debian fixture image; the demo image. Expectations are read from those inputs directly
(the wheel's zip, the .deb's tar), not through the cataloger.

No conda channel is reachable from the test machines, so the ``conda-meta`` records below are
written here by hand, following the format conda/mamba write (one JSON per package: name,
version, build, build_number, channel URL, subdir, fn, url, license, depends, files,
paths_data, ...), with a conda-forge ``cudnn`` and a pytorch-channel ``pytorch`` whose build
string names its CUDA and cuDNN.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from auditor.audit import AuditOptions, AuditResult, audit
from auditor.demo import build_demo_image
from auditor.inventory import CATALOGERS, conda, python
from auditor.inventory.base import Cataloger
from auditor.inventory.python import parse_metadata, parse_record, resolve_inside
from auditor.model import Package
from auditor.sources.cache import BlobCache
from auditor.testing import LayerBuilder, build_oci_layout, files_layer
from fixtures.debs import deb_layers
from tests.engine_fixtures import DebianImage

SITE = "usr/local/lib/python3.11/site-packages"
DEBIAN_SITE = "usr/lib/python3/dist-packages"
CONDA_SITE = "opt/conda/lib/python3.11/site-packages"
OURS = [python.CATALOGER, conda.CATALOGER]


def _audit(tmp_path: Path, layers: list[LayerBuilder | bytes], config: dict | None = None,
           catalogers: list[Cataloger] | None = None) -> AuditResult:
    build_oci_layout(tmp_path / "image", layers, tag="t", config=config)
    return audit(f"oci:{tmp_path / 'image'}:t", AuditOptions(cache_dir=str(tmp_path / "cache")),
                 catalogers=OURS if catalogers is None else catalogers)


def _packages(result: AuditResult, kind: str = "python") -> dict[str, Package]:
    found = [p for p in result.inventory.packages if p.type == kind]
    keyed = {p.name: p for p in found}
    assert len(keyed) == len(found), "a package was reported twice"
    return keyed


def _unknowns(result: AuditResult) -> list[tuple[str, str, int | None]]:
    return sorted((u.cataloger, u.path, u.layer) for u in result.inventory.unknowns)


def _headers(text: str) -> dict[str, str]:
    """Name and Version of a metadata file, read line by line (independently of the cataloger)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(": ")
        if key in ("Name", "Version") and key not in out:
            out[key] = value.strip()
    return out


def tree_layer(root: Path, prefix: str) -> LayerBuilder:
    """Everything under ``root`` as a layer, placed at ``prefix`` (with its parent dirs)."""
    layer = LayerBuilder()
    parts = prefix.split("/")
    for i in range(1, len(parts) + 1):
        layer.dir("/".join(parts[:i]))
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = Path(dirpath).relative_to(root).as_posix()
        base = prefix if rel == "." else f"{prefix}/{rel}"
        if rel != ".":
            layer.dir(base)
        for name in sorted(filenames):
            layer.file(f"{base}/{name}", (Path(dirpath) / name).read_bytes())
    return layer


# -- real wheels, installed by pip --------------------------------------------------------------

WHEELS = ("six", "packaging", "requests")


def _pip(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def pip_target(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """The wheels (pip download: from this machine's local index), installed with --target."""
    wheels = tmp_path_factory.mktemp("wheels")
    _pip("download", "--no-deps", "--quiet", "-d", str(wheels), *WHEELS)
    files = sorted(wheels.glob("*.whl"))
    assert len(files) == len(WHEELS)
    target = tmp_path_factory.mktemp("target")
    _pip("install", "--no-deps", "--no-index", "--quiet", "--target", str(target),
         *map(str, files))
    return target, files


def test_pip_installed_wheels(tmp_path: Path, pip_target: tuple[Path, list[Path]]) -> None:
    target, wheels = pip_target
    result = _audit(tmp_path, [LayerBuilder().dir("usr"), tree_layer(target, SITE)])
    found = _packages(result)
    expected = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            headers = _headers(zf.read(meta).decode())
        expected[headers["Name"]] = headers["Version"]
    assert {name: p.version for name, p in found.items()} == expected
    assert _unknowns(result) == []
    six = found["six"]
    assert six.purl == f"pkg:pypi/six@{expected['six']}"
    assert six.path == f"{SITE}/six-{expected['six']}.dist-info/METADATA"
    assert six.layer == 1
    assert "MIT" in six.licenses
    assert f"{SITE}/six.py" in six.files
    # installed from a local wheel file: pip wrote INSTALLER and a PEP 610 direct_url.json
    assert six.source is not None and six.source.startswith("pip: file://")
    assert "#sha256=" in six.source
    assert found["packaging"].licenses[0] == "Apache-2.0 OR BSD-2-Clause"  # License-Expression
    # every file pip put down is owned by exactly the distribution whose RECORD lists it
    on_disk = {f"{SITE}/{p.relative_to(target).as_posix()}" for p in target.rglob("*")
               if p.is_file()}
    owned = [f for p in found.values() for f in p.files]
    assert sorted(owned) == sorted(on_disk)


def test_purl_name_is_normalised_and_name_kept_as_written(tmp_path: Path) -> None:
    layer = files_layer({f"{SITE}/Foo_Bar.Baz-1.0.dist-info/METADATA":
                         "Metadata-Version: 2.1\nName: Foo_Bar.Baz\nVersion: 1.0\n"})
    package = _packages(_audit(tmp_path, [layer]))["Foo_Bar.Baz"]
    assert package.purl == "pkg:pypi/foo-bar-baz@1.0"
    assert package.source is None and package.files == ()


# -- Debian's python3-* packages ----------------------------------------------------------------

DEBS = ("python3-numpy", "python3-six", "python3-packaging", "python3-requests")


def _metadata_in_tar(data: bytes) -> dict[str, tuple[str, str]]:
    """path -> (Name, Version) of each distribution's metadata directly in a site directory."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            path = member.name.removeprefix("./")
            parent, _, name = path.rpartition("/")
            site = parent.rpartition("/")[0] if name in ("METADATA", "PKG-INFO") else parent
            is_meta = (name == "METADATA" and parent.endswith(".dist-info")) or \
                (name == "PKG-INFO" and parent.endswith(".egg-info")) or name.endswith(".egg-info")
            if member.isfile() and is_meta and site.rpartition("/")[2] in python.SITE_DIR_NAMES:
                headers = _headers(tar.extractfile(member).read().decode("utf-8", "replace"))
                out[path] = (headers["Name"], headers["Version"])
    return out


@pytest.mark.slow
def test_debian_python3_packages(tmp_path: Path) -> None:
    """Debian installs egg-info directories (numpy, six, requests) and dist-info (packaging)
    under usr/lib/python3/dist-packages; each .deb's data tar is one layer, as apt would add."""
    tars = deb_layers(DEBS, "bookworm-python3")
    expected = {}
    for data in tars:
        expected.update(_metadata_in_tar(data))
    assert len(expected) == len(DEBS)
    result = _audit(tmp_path, tars)
    found = {p.path: (p.name, p.version) for p in result.inventory.packages}
    assert found == expected
    assert _unknowns(result) == []
    numpy = _packages(result)["numpy"]
    assert numpy.path.startswith(f"{DEBIAN_SITE}/numpy-") and numpy.path.endswith(
        ".egg-info/PKG-INFO")
    assert numpy.purl == f"pkg:pypi/numpy@{numpy.version}"
    assert numpy.layer == 0


def _layer_tars(layout: Path, tag: str) -> list[bytes]:
    index = json.loads((layout / "index.json").read_text())
    desc = next(m for m in index["manifests"]
                if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
    blob = layout / "blobs" / "sha256"
    manifest = json.loads((blob / desc["digest"].split(":")[1]).read_bytes())
    return [gzip.decompress((blob / layer["digest"].split(":")[1]).read_bytes())
            for layer in manifest["layers"]]


@pytest.mark.slow
def test_debian_fixture_image(tmp_path: Path, debian_image: DebianImage) -> None:
    """Whatever distributions Debian's python3 puts in the image are found, and nothing else
    (the standard library's tree is not taken for packages). Bookworm's minbase + python3 ships
    none: usr/lib/python3/dist-packages is there, empty."""
    expected: dict[str, tuple[str, str]] = {}
    names: set[str] = set()
    for data in _layer_tars(debian_image.layout, debian_image.tag):
        expected.update(_metadata_in_tar(data))
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            names.update(m.name.removeprefix("./").rstrip("/") for m in tar)
    assert DEBIAN_SITE in names
    result = audit(debian_image.oci_ref, AuditOptions(cache_dir=str(tmp_path / "cache")),
                   catalogers=OURS)
    assert {p.path: (p.name, p.version) for p in result.inventory.packages} == expected
    assert _unknowns(result) == []


# -- the demo image -----------------------------------------------------------------------------

def test_demo_numpy_is_found_by_the_registered_catalogers(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    result = audit(build_demo_image(cache), AuditOptions(cache_dir=str(cache.root)),
                   catalogers=CATALOGERS)
    numpy = _packages(result)["numpy"]
    assert (numpy.version, numpy.purl, numpy.layer) == ("1.24.2", "pkg:pypi/numpy@1.24.2", 2)
    assert numpy.path == f"{DEBIAN_SITE}/numpy-1.24.2.dist-info/METADATA"


# -- where distributions count ------------------------------------------------------------------

def _meta(name: str, version: str) -> str:
    return f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"


def test_only_import_directories_count(tmp_path: Path) -> None:
    layer = files_layer({
        f"{SITE}/a-1.dist-info/METADATA": _meta("a", "1"),
        # vendored inside a package: not an installed distribution
        f"{SITE}/setuptools/_vendor/b-2.dist-info/METADATA": _meta("b", "2"),
        # not on any path Python imports from
        "opt/src/c-3.dist-info/METADATA": _meta("c", "3"),
        # on PYTHONPATH (pip install --target /app/deps)
        "app/deps/d-4.dist-info/METADATA": _meta("d", "4"),
        # conda's package cache (noarch: site-packages at the top), and its index.json
        "opt/conda/pkgs/e-5-pyhd8ed1ab_0/info/index.json": '{"name": "e"}',
        "opt/conda/pkgs/e-5-pyhd8ed1ab_0/site-packages/e-5.dist-info/METADATA": _meta("e", "5"),
        f"{CONDA_SITE}/e-5.dist-info/METADATA": _meta("e", "5"),
    })
    result = _audit(tmp_path, [layer], config={"config": {"Env": ["PYTHONPATH=/app/deps:"]}})
    assert sorted((p.name, p.path) for p in result.inventory.packages) == [
        ("a", f"{SITE}/a-1.dist-info/METADATA"), ("d", "app/deps/d-4.dist-info/METADATA"),
        ("e", f"{CONDA_SITE}/e-5.dist-info/METADATA")]


def test_egg_info_file_directory_and_installed_files(tmp_path: Path) -> None:
    pkg_info = ("Metadata-Version: 1.1\nName: argparse\nVersion: 1.2.1\n"
                "License: Python Software Foundation License\n")
    layer = files_layer({
        f"{DEBIAN_SITE}/argparse.egg-info": pkg_info,  # distutils: one file
        f"{SITE}/legacy-0.9.egg-info/PKG-INFO": _meta("legacy", "0.9"),
        f"{SITE}/legacy-0.9.egg-info/installed-files.txt":
            "../legacy/__init__.py\n../../../../bin/legacy\nPKG-INFO\n",
    })
    found = _packages(_audit(tmp_path, [layer]))
    assert found["argparse"].version == "1.2.1"
    assert found["argparse"].licenses == ("Python Software Foundation License",)
    assert found["legacy"].files == (f"{SITE}/legacy/__init__.py", "usr/local/bin/legacy",
                                     f"{SITE}/legacy-0.9.egg-info/PKG-INFO")


def test_direct_url_vcs_and_editable(tmp_path: Path) -> None:
    vcs = {"url": "https://github.com/psf/requests", "vcs_info": {
        "vcs": "git", "commit_id": "0e322af87745eff34caffe4df68456ebc20d9068",
        "requested_revision": "main"}}
    editable = {"url": "file:///src/mylib", "dir_info": {"editable": True}}
    layer = files_layer({
        f"{SITE}/requests-2.32.0.dist-info/METADATA": _meta("requests", "2.32.0"),
        f"{SITE}/requests-2.32.0.dist-info/INSTALLER": "uv\n",
        f"{SITE}/requests-2.32.0.dist-info/direct_url.json": json.dumps(vcs),
        f"{SITE}/mylib-0.1.dist-info/METADATA": _meta("mylib", "0.1"),
        f"{SITE}/mylib-0.1.dist-info/direct_url.json": json.dumps(editable),
    })
    found = _packages(_audit(tmp_path, [layer]))
    assert found["requests"].source == (
        "uv: git+https://github.com/psf/requests@0e322af87745eff34caffe4df68456ebc20d9068")
    assert found["mylib"].source == "file:///src/mylib (editable)"


# -- bad input ----------------------------------------------------------------------------------

def test_bad_metadata_is_unknown_and_the_run_goes_on(tmp_path: Path) -> None:
    garbage = bytes(range(256)) * 8
    layer = files_layer({
        f"{SITE}/noversion-1.dist-info/METADATA": "Metadata-Version: 2.1\nName: noversion\n",
        f"{SITE}/garbage-1.dist-info/METADATA": garbage,
        f"{SITE}/latin-1.dist-info/METADATA": "Name: ga\xdfe\nVersion: 1\n".encode("latin-1"),
        f"{SITE}/baddirect-1.dist-info/METADATA": _meta("baddirect", "1"),
        f"{SITE}/baddirect-1.dist-info/direct_url.json": b"{not json",
        f"{SITE}/odd-1.dist-info/METADATA": _meta("odd", "2.0.0-dev-abc"),
        f"{SITE}/good-1.dist-info/METADATA": _meta("good", "1.0"),
    })
    result = _audit(tmp_path, [LayerBuilder().dir("usr"), layer])
    assert _unknowns(result) == [
        ("python", f"{SITE}/baddirect-1.dist-info/direct_url.json", 1),
        ("python", f"{SITE}/garbage-1.dist-info/METADATA", 1),
        ("python", f"{SITE}/noversion-1.dist-info/METADATA", 1)]
    found = _packages(result)
    assert sorted(found) == ["baddirect", "gaße", "good", "odd"]
    assert found["baddirect"].source is None
    # a version that is not PEP 440 is kept as written, and said to be so
    assert found["odd"].version == "2.0.0-dev-abc"
    assert [(f.id, f.component) for f in result.inventory.findings] == [
        ("python-version-not-pep440", "odd")]


def test_record_entries_climbing_out_of_the_image_are_dropped(tmp_path: Path) -> None:
    record = "\n".join([
        "evil/__init__.py,sha256=abc,10",
        "../../../../../../../etc/passwd,,",  # above the root from a depth-5 site-packages
        "../../../../../../../../../../../../root/.ssh/authorized_keys,,",
        "/../../etc/shadow,,",
        "../../../bin/evil,,",  # usr/local/bin/evil: inside the image, kept as a name
        "/usr/share/evil/data.txt,,",  # absolute: from the image root
        "",
        "nul\x00byte.py,,",  # last: a reader may stop at it, and keeps what it read before
    ])
    layer = files_layer({
        f"{SITE}/evil-1.dist-info/METADATA": _meta("evil", "1"),
        f"{SITE}/evil-1.dist-info/RECORD": record,
        "etc/passwd": "root:x:0:0::/root:/bin/sh\n",
    })
    found = _packages(_audit(tmp_path, [layer]))
    assert found["evil"].files == (f"{SITE}/evil/__init__.py", "usr/local/bin/evil",
                                   "usr/share/evil/data.txt")


def test_parsers_directly() -> None:
    assert resolve_inside("a/b", "../../x") == "x"
    assert resolve_inside("a/b", "../../../x") is None
    assert resolve_inside("a", "/x/../y") == "y"
    assert resolve_inside("a", "x\x00y") is None
    assert parse_record(b"x.py,,\n../y.py,,\n", "s") == ("s/x.py", "y.py")
    # only the header block is read: a body that looks like headers changes nothing
    meta = parse_metadata(b"Name: a\nVersion: 1\nLicense: BSD\n\nVersion: 2\nName: b\n" + b"x" * 10**6)
    assert (meta.name, meta.version, meta.licenses) == ("a", "1", ("BSD",))
    long_text = "Name: a\nVersion: 1\nLicense: " + "Copyright (c) someone\n        " * 20 + "\n"
    assert parse_metadata(long_text.encode()).licenses == ()


# -- conda --------------------------------------------------------------------------------------

def _conda_record(name: str, version: str, build: str, channel: str, files: list[str],
                  **extra: object) -> dict[str, object]:
    fn = f"{name}-{version}-{build}.conda"
    subdir = channel.rstrip("/").rsplit("/", 1)[-1] if "://" in channel else "linux-64"
    record: dict[str, object] = {
        "build": build, "build_number": int(build.rsplit("_", 1)[-1]), "channel": channel,
        "constrains": [], "depends": [], "extracted_package_dir": f"/opt/conda/pkgs/{fn[:-6]}",
        "features": "", "files": files, "fn": fn, "license": "",
        "link": {"source": f"/opt/conda/pkgs/{fn[:-6]}", "type": 1},
        "md5": "0" * 32, "name": name, "package_tarball_full_path": f"/opt/conda/pkgs/{fn}",
        "paths_data": {"paths": [{"_path": f, "path_type": "hardlink", "sha256": "0" * 64,
                                  "size_in_bytes": 1} for f in files], "paths_version": 1},
        "requested_spec": name, "sha256": "0" * 64, "size": 1, "subdir": subdir,
        "timestamp": 1709000000000, "track_features": "",
        "url": f"{channel}/{fn}" if "://" in channel else "", "version": version,
    }
    record.update(extra)
    return record


CUDNN = _conda_record(
    "cudnn", "8.9.7.29", "h092f7fd_3", "https://conda.anaconda.org/conda-forge/linux-64",
    ["include/cudnn.h", "lib/libcudnn.so.8", "lib/libcudnn.so.8.9.7"],
    license="LicenseRef-cuDNN-Software-License-Agreement",
    depends=["__glibc >=2.17,<3.0.a0", "cuda-version >=12.0,<13", "libzlib >=1.2.13,<2.0.0a0"])
PYTORCH = _conda_record(
    "pytorch", "2.1.0", "py3.11_cuda12.1_cudnn8.9.2_0",
    "https://conda.anaconda.org/pytorch/linux-64",
    ["lib/python3.11/site-packages/torch/__init__.py",
     "lib/python3.11/site-packages/torch/version.py", "../../../etc/cron.d/evil"],
    license="BSD 3-Clause", depends=["pytorch-cuda >=12.1,<12.2", "python >=3.11,<3.12.0a0"])
NUMPY_MAIN = _conda_record(
    "numpy", "1.26.4", "py311h08b1b3b_0", "https://repo.anaconda.com/pkgs/main/linux-64", [],
    license="BSD-3-Clause")
SIX_MAMBA = _conda_record("six", "1.16.0", "pyh6c4a22f_0", "conda-forge", [], subdir="noarch")
del SIX_MAMBA["files"]  # only paths_data, as some writers leave it
SIX_MAMBA["paths_data"] = {"paths": [{"_path": "site-packages/six.py"}], "paths_version": 1}


def test_conda_meta_records(tmp_path: Path) -> None:
    meta = "opt/conda/conda-meta"
    files: dict[str, str | bytes] = {
        f"{meta}/{r['name']}-{r['version']}-{r['build']}.json": json.dumps(r, indent=2)
        for r in (CUDNN, PYTORCH, NUMPY_MAIN, SIX_MAMBA)}
    files[f"{meta}/history"] = "==> 2024-03-01 00:00:00 <==\n+conda-forge/linux-64::cudnn\n"
    files[f"{meta}/broken-1.0-0.json"] = "{this is not json"
    files[f"{meta}/nameless-1.0-0.json"] = json.dumps({"version": "1.0"})
    files["envs/tiny/conda-meta/zlib-1.3-0.json"] = json.dumps(_conda_record(  # another prefix
        "zlib", "1.3", "h0_0", "https://conda.anaconda.org/conda-forge/linux-64",
        ["lib/libz.so.1"]))
    result = _audit(tmp_path, [files_layer(files)])
    found = _packages(result, "conda")
    assert sorted(found) == ["cudnn", "numpy", "pytorch", "six", "zlib"]
    cudnn, torch = found["cudnn"], found["pytorch"]
    assert cudnn.purl == ("pkg:conda/cudnn@8.9.7.29?build=h092f7fd_3&channel=conda-forge"
                          "&subdir=linux-64")
    assert (cudnn.version, cudnn.source, cudnn.arch) == ("8.9.7.29", "conda-forge", "linux-64")
    assert cudnn.licenses == ("LicenseRef-cuDNN-Software-License-Agreement",)
    assert cudnn.files == ("opt/conda/include/cudnn.h", "opt/conda/lib/libcudnn.so.8",
                           "opt/conda/lib/libcudnn.so.8.9.7")
    assert torch.purl == ("pkg:conda/pytorch@2.1.0?build=py3.11_cuda12.1_cudnn8.9.2_0"
                          "&channel=pytorch&subdir=linux-64")
    # the entry climbing out of the image is dropped; ../ inside it is normalised
    assert torch.files == (f"{CONDA_SITE}/torch/__init__.py", f"{CONDA_SITE}/torch/version.py")
    assert "channel=main" in found["numpy"].purl
    assert found["six"].purl == "pkg:conda/six@1.16.0?build=pyh6c4a22f_0&channel=conda-forge&subdir=noarch"
    assert found["six"].files == ("opt/conda/site-packages/six.py",)
    assert found["zlib"].files == ("envs/tiny/lib/libz.so.1",)
    assert _unknowns(result) == [("conda", f"{meta}/broken-1.0-0.json", 0),
                                 ("conda", f"{meta}/nameless-1.0-0.json", 0)]


def test_conda_channel_names() -> None:
    assert conda.channel_name("https://conda.anaconda.org/nvidia/label/cuda-12.1.0/linux-64",
                              "linux-64") == "nvidia"
    assert conda.channel_name("https://repo.anaconda.com/pkgs/main/noarch", "noarch") == "main"
    assert conda.channel_name("https://mirror.example/conda/internal/linux-64/",
                              "linux-64") == "https://mirror.example/conda/internal"
    assert conda.channel_name("pytorch") == "pytorch"


def test_registered_before_crosscheck_and_numeric_lines() -> None:
    names = [c.name for c in CATALOGERS]
    for ours in ("python", "conda", "frameworks"):
        assert ours in names
        later = [n for n in ("numeric", "crosscheck") if n in names]
        assert all(names.index(ours) < names.index(n) for n in later)
