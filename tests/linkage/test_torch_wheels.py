"""A CUDA torch with its NVIDIA wheels: resolve_linkage against the real glibc loader in a
container of the image, with the image's ``LD_LIBRARY_PATH`` and without it.

The image: fixtures/pip_images.py's (torch 2.14.1, a CUDA 13 build, and its NVIDIA wheels over
the Debian bookworm fixture; its two gzip layers hardlinked, not copied) + one small layer of
gcc-built stubs with the SONAMEs libtorch_cuda.so's tree needs from the wheels, in
``/opt/override/lib``, which the config's Env puts on ``LD_LIBRARY_PATH``.

What the wheels' files say (``readelf -d``), hence what glibc does with the override:

- ``torch/lib/libtorch_cuda.so`` (and every ``torch/lib/*.so``, ``torch/_C.*.so``) carries
  ``DT_RPATH [$ORIGIN/../../nvidia/cudnn/lib:$ORIGIN/../../nvidia/nvshmem/lib:
  $ORIGIN/../../nvidia/nccl/lib:$ORIGIN/../../nvidia/cusparselt/lib:$ORIGIN/../../nvidia/cu13/lib:
  $ORIGIN]`` and no ``DT_RUNPATH``: RPATH is searched before ``LD_LIBRARY_PATH``, so its own
  ``libcudnn.so.9``, ``libcublas.so.13``, ``libcublasLt.so.13`` and ``libnccl.so.2`` stay the
  wheels' files with the override in place.
- ``nvidia/cu13/lib/libcusparse.so.12`` carries ``DT_RUNPATH [$ORIGIN]`` and is the first object
  to need ``libnvJitLink.so.13`` (breadth first). An object with RUNPATH ignores the RPATH it
  inherits, and ``LD_LIBRARY_PATH`` comes before RUNPATH: the override's stub wins there.

Each container runs ``LD_DEBUG=libs LD_TRACE_LOADED_OBJECTS=1 ld.so CONSUMER``: the listing gives
the file of every needed name (compared with ours after following symlinks inside the image);
the debug lines show, for the wheels' names, which search list came first (see :class:`Search`
for what they cannot show).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from auditor.audit import AuditOptions, AuditResult, audit
from auditor.elf.facts import elf_facts
from auditor.inventory import CATALOGERS
from auditor.inventory.base import Cataloger, FileView
from auditor.linkage import CONF_GLOBS, linkage_of, loader_inputs
from auditor.linkage.model import ConsumerLinkage
from auditor.linkage.resolve import resolve_linkage
from auditor.testing import LayerBuilder
from fixtures.pip_images import PipImage, torch_cuda_image
from tests.engine_fixtures import DebianImage, Engine
from tests.linkage.test_differential import LDSO, Cpu, _blob, _compare, _cpu, _extend_layout, _listings

pytestmark = [pytest.mark.engine, pytest.mark.slow,
              pytest.mark.timeout(1800)]  # a fresh machine builds the torch image first

OWNER = "torchtest-elf"
OVERRIDE = "/opt/override/lib"
# the names libtorch_cuda.so's tree takes from the NVIDIA wheels, and their wheel files
# (relative to site-packages); each has a stub of the same SONAME in OVERRIDE
WHEEL_FILES = {
    "libcudnn.so.9": "nvidia/cudnn/lib/libcudnn.so.9",
    "libcublas.so.13": "nvidia/cu13/lib/libcublas.so.13",
    "libcublasLt.so.13": "nvidia/cu13/lib/libcublasLt.so.13",
    "libnccl.so.2": "nvidia/nccl/lib/libnccl.so.2",
    "libnvJitLink.so.13": "nvidia/cu13/lib/libnvJitLink.so.13",
}
DIRECT = ("libcudnn.so.9", "libcublas.so.13", "libcublasLt.so.13", "libnccl.so.2")
# the search list that finds each name, ours (and the loader's LD_DEBUG, as far as it can tell)
EXPECTED_HOW = {
    "unset": {**dict.fromkeys(DIRECT, "rpath"), "libnvJitLink.so.13": "runpath"},
    "override": {**dict.fromkeys(DIRECT, "rpath"), "libnvJitLink.so.13": "ld_library_path"},
}


@dataclass
class Built:
    view: FileView
    image: Any
    site: str  # root-relative site-packages
    consumers: list[str]  # absolute paths
    cpu: Cpu  # what the image's ld.so says of this CPU and glibc, as resolve options
    result: AuditResult  # the audit with its own catalogers: linkage in the Stack
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def libtorch_cuda(self) -> str:
        return f"/{self.site}/torch/lib/libtorch_cuda.so"


def _stub_layer(work: Path) -> bytes:
    """A layer of OVERRIDE with one gcc stub per WHEEL_FILES name (its SONAME, nothing else)."""
    layer = LayerBuilder()
    (work / "stub.c").write_text("int auditor_override_stub(void) { return 0; }\n")
    for soname in WHEEL_FILES:
        out = work / soname
        subprocess.run(["gcc", "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(out),
                        str(work / "stub.c")], check=True, capture_output=True, timeout=60)
        layer.file(f"{OVERRIDE.lstrip('/')}/{soname}", out.read_bytes(), mode=0o755)
    return layer.tar_bytes()


def _config_digest(layout: Path) -> str:
    """The image ID podman gives the layout's one image: its config's digest."""
    (desc,) = json.loads((layout / "index.json").read_text())["manifests"]
    manifest = json.loads(_blob(layout, desc["digest"]).read_text())
    return str(manifest["config"]["digest"])


def _podman_load(engine: Engine, layout: Path) -> Any:
    """``podman load`` of the OCI layout directory into the service's storage (shared with the
    command line). About half the time of ``engine.load`` of a docker-archive for this image:
    no skopeo pass writing the 5.9 GB uncompressed archive, no upload of it through the API."""
    done = subprocess.run(["podman", "load", "--quiet", "--input", str(layout)],
                          env=engine.server.env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=1200, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"podman load {layout} failed: {done.stderr.strip()[-2000:]}")
    return engine.client.images.get(_config_digest(layout))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, engine: Engine) -> Iterator[Built]:
    seconds: dict[str, float] = {}
    started = time.monotonic()
    torch: PipImage = torch_cuda_image()
    seconds["torch image"] = time.monotonic() - started
    work = tmp_path_factory.mktemp("torch-wheels")
    (work / "stubs").mkdir()
    layout = work / "layout"
    tag = _extend_layout(DebianImage(torch.layout, torch.tag), layout, _stub_layer(work / "stubs"),
                         [f"LD_LIBRARY_PATH={OVERRIDE}"])

    started = time.monotonic()
    views: list[FileView] = []
    cataloger = Cataloger(OWNER, 1, CONF_GLOBS, lambda view, _inv: views.append(view),
                          analyze_globs=("*.so*",), analyze=elf_facts)
    result = audit(f"oci:{layout}:{tag}", AuditOptions(cache_dir=str(work / "cache")),
                   catalogers=[*CATALOGERS, cataloger])  # the audit's own, in the same pass
    seconds["audit"] = time.monotonic() - started

    started = time.monotonic()
    image = _podman_load(engine, layout)
    seconds["podman load"] = time.monotonic() - started
    try:
        view = views[0]
        consumers = [f"/{torch.site}/torch/lib/libtorch_cuda.so",
                     *(f"/{p}" for p in view.index.glob(f"{torch.site}/torch/_C.cpython-*.so"))]
        assert len(consumers) == 2, consumers
        cpu = _cpu(engine, image)
        print(f"torch wheels image: {', '.join(f'{k} {v:.1f} s' for k, v in seconds.items())}",
              file=sys.stderr)
        yield Built(view, image, torch.site, consumers, cpu, result, seconds)
    finally:
        with contextlib.suppress(docker.errors.DockerException):  # as Engine.remove_owned
            engine.client.images.remove(image.id, force=True)


# -- the real loader ------------------------------------------------------------------------------

DEBUG_LINE = re.compile(r"^\s*\d+:\t(.*)$")


def _captured(engine: Engine, image: Any, script: str) -> str:
    """``script``'s output (stdout and stderr) in a container of ``image``, through a file in the
    container. The log ``containers.run`` returns lost output of these runs (ld.so mapping the
    multi-GB libraries): with podman 4.3.1 and conmon 2.1.6, often all but the first line."""
    out = "/tmp/auditor-loader.out"
    container = engine.client.containers.run(
        image.id, ["sh", "-c", f"{{ {script}; echo '== end'; }} >{out} 2>&1"],
        network_mode="none", detach=True)
    try:
        status = container.wait(timeout=600)
        chunks, _ = container.get_archive(out)
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
            member = tar.extractfile(tar.getmembers()[0])
            text = member.read().decode("utf-8", "replace") if member else ""
    finally:
        container.remove(force=True)
    assert status.get("StatusCode") == 0 and text.endswith("== end\n"), (status, text[-2000:])
    return text.removesuffix("== end\n")


@dataclass
class Search:
    """One name's search, as ``LD_DEBUG=libs`` prints it: the labels of its search paths in
    order (``RPATH from file X``, ``LD_LIBRARY_PATH``, ``RUNPATH from file X``, ``system search
    path``; ``cache`` for ld.so.cache) and the last file tried (the one loaded, when found).

    A label names the list that first brought a directory into the process, not the list being
    searched: glibc shares one record per directory string (``fillin_rpath`` reuses a known
    ``r_search_path_elem`` with its ``what``/``where``), so libcusparse.so.12's RUNPATH
    ``$ORIGIN`` (the same string as libtorch_cuda.so's RPATH entry ``$ORIGIN/../../nvidia/cu13/lib``)
    prints as ``RPATH from file .../libtorch_cuda.so``. Only the first label of a search, and a
    label's absence, are evidence of the order."""

    labels: list[str]
    tried: str | None


@dataclass
class LoaderRun:
    listing: dict[str, list[str | None]]  # needed name -> its paths in load order (None: not found)
    searches: dict[str, Search]  # the first request of each name not already loaded
    debug: list[str]


def _loader(engine: Engine, built: Built, *, unset: bool) -> dict[str, LoaderRun]:
    """Each consumer's listing and LD_DEBUG=libs search in one container of the image, with
    the image's LD_LIBRARY_PATH or with it unset."""
    env = "env -u LD_LIBRARY_PATH " if unset else ""
    out = _captured(engine, built.image, "; ".join(
        f"echo '== {c}'; {env}LD_DEBUG=libs LD_TRACE_LOADED_OBJECTS=1 {LDSO} {c}"
        for c in built.consumers))
    listing_lines: list[str] = []
    debug: dict[str, list[str]] = {}
    current: list[str] = []
    for line in out.splitlines():
        if line.startswith("== "):
            current = debug.setdefault(line[3:].strip(), [])
        if m := DEBUG_LINE.match(line):
            current.append(m.group(1))
        else:
            listing_lines.append(line)
    listings = _listings("\n".join(listing_lines))
    assert set(listings) == set(built.consumers), out[-3000:]
    return {c: LoaderRun(listings[c], _searches(debug[c]), debug[c]) for c in built.consumers}


def _searches(lines: list[str]) -> dict[str, Search]:
    """Each ``find library=NAME`` block of ``LD_DEBUG=libs`` lines (a name already loaded is
    not searched; a name searched twice keeps its first block)."""
    out: dict[str, Search] = {}
    current: Search | None = None
    for line in lines:
        if m := re.match(r"find library=(\S+) \[\d+\]; searching", line):
            current = None if m.group(1) in out else out.setdefault(m.group(1), Search([], None))
        elif current is None:
            continue
        elif m := re.match(r" search path=.*\t\t\((.*)\)$", line):
            current.labels.append(m.group(1))
        elif line.startswith(" search cache="):
            current.labels.append("cache")
        elif m := re.match(r"  trying file=(.*)$", line):
            current.tried = m.group(1)
        elif not line.strip():
            current = None
    return out


# -- ours -----------------------------------------------------------------------------------------

def _ours(built: Built, consumer: str, *, unset: bool) -> ConsumerLinkage:
    if not unset:
        return linkage_of(built.view, OWNER, consumer, **built.cpu.options())
    inputs = loader_inputs(built.view)
    cache, conf_dirs = inputs.cache, inputs.conf_dirs

    def elf_of(path: str) -> dict[str, Any] | None:
        return built.view.index.facts(path, OWNER)

    return resolve_linkage(consumer, elf_of, built.view.index, None, cache, conf_dirs,
                           **built.cpu.options())


def _disagreements(built: Built, runs: dict[str, LoaderRun], *, unset: bool) -> list[str]:
    """Every needed name of each consumer's tree resolves to the file the loader loaded."""
    diffs: list[str] = []
    for consumer in built.consumers:
        real = runs[consumer]
        assert "libc.so.6" in real.listing and "<fatal>" not in real.listing, real.listing
        ours = _ours(built, consumer, unset=unset)
        assert not ours.fatal, ours.fatal
        diffs += _compare(built.view, real.listing, ours)
    return diffs


def _check_wheels(built: Built, runs: dict[str, LoaderRun], mode: str) -> None:
    """libtorch_cuda.so's names from the wheels: the files and search lists this mode expects,
    in the loader (its listing and LD_DEBUG) and here."""
    real = runs[built.libtorch_cuda]
    ours = _ours(built, built.libtorch_cuda, unset=mode == "unset")
    own_rpath = f"RPATH from file {built.libtorch_cuda}"
    for needed, how in EXPECTED_HOW[mode].items():
        want = (f"{OVERRIDE.lstrip('/')}/{needed}" if how == "ld_library_path"
                else f"{built.site}/{WHEEL_FILES[needed]}")
        path = (real.listing.get(needed) or [None])[0]
        assert path is not None and built.view.index.resolve(path) == want, (needed, path)
        search = real.searches[needed]
        assert search.tried == path, (needed, search)
        if how == "rpath":  # libtorch_cuda.so's RPATH first, and found before LD_LIBRARY_PATH
            assert search.labels[0] == own_rpath and "LD_LIBRARY_PATH" not in search.labels, \
                (needed, search)
        elif how == "ld_library_path":  # no inherited RPATH searched: the first list, found
            assert search.labels == ["LD_LIBRARY_PATH"], (needed, search)
        else:  # runpath, without LD_LIBRARY_PATH: no label to tell (see Search)
            assert "LD_LIBRARY_PATH" not in search.labels, (needed, search)
        mine = ours.of(needed)
        assert mine is not None and (mine.file, mine.how) == (want, how), (needed, mine)


def test_libtorch_cuda_declares_rpath_and_cusparse_runpath(built: Built) -> None:
    """The ELF facts the expectations rest on (``readelf -d`` of the wheels' files agrees)."""
    torch_cuda = built.view.index.facts(built.libtorch_cuda.lstrip("/"), OWNER)
    assert torch_cuda is not None and torch_cuda["runpath"] is None
    assert torch_cuda["rpath"][0] == "$ORIGIN/../../nvidia/cudnn/lib"
    assert "$ORIGIN/../../nvidia/nccl/lib" in torch_cuda["rpath"]
    assert "$ORIGIN/../../nvidia/cu13/lib" in torch_cuda["rpath"]
    assert set(DIRECT) <= set(torch_cuda["needed"])
    assert "libnvJitLink.so.13" not in torch_cuda["needed"]
    cusparse = built.view.index.facts(f"{built.site}/nvidia/cu13/lib/libcusparse.so.12", OWNER)
    assert cusparse is not None and cusparse["rpath"] is None
    assert cusparse["runpath"] == ["$ORIGIN"] and "libnvJitLink.so.13" in cusparse["needed"]
    assert built.view.env()["LD_LIBRARY_PATH"] == OVERRIDE
    for soname in WHEEL_FILES:
        stub = built.view.index.facts(f"{OVERRIDE.lstrip('/')}/{soname}", OWNER)
        assert stub is not None and stub["soname"] == soname


def test_without_ld_library_path_the_wheels_resolve_as_the_loader_does(
        built: Built, engine: Engine) -> None:
    runs = _loader(engine, built, unset=True)
    for run in runs.values():
        assert not any("(LD_LIBRARY_PATH)" in line for line in run.debug)
    _check_wheels(built, runs, "unset")
    diffs = _disagreements(built, runs, unset=True)
    assert not diffs, "\n".join(diffs)


def test_with_the_override_first_on_ld_library_path_ours_is_the_loader(
        built: Built, engine: Engine) -> None:
    runs = _loader(engine, built, unset=False)
    for run in runs.values():
        assert any("(LD_LIBRARY_PATH)" in line for line in run.debug)
    # DT_RPATH beats LD_LIBRARY_PATH: libcudnn.so.9 stays the wheel's, found in libtorch_cuda.so's
    # RPATH; libcusparse.so.12's DT_RUNPATH does not, so its libnvJitLink.so.13 is the override's
    _check_wheels(built, runs, "override")
    diffs = _disagreements(built, runs, unset=False)
    assert not diffs, "\n".join(diffs)


def test_the_audit_reports_the_wheels_winning_and_the_override_of_nvjitlink(built: Built) -> None:
    """The audit's own cataloger, on the same image: what the Stack and the findings say."""
    stack = built.result.inventory.linkage
    assert stack is not None and stack.ld_library_path == OVERRIDE
    consumers = {c.linkage.consumer: c for c in stack.consumers}
    assert built.libtorch_cuda in consumers and consumers[built.libtorch_cuda].framework == "torch"
    winners = {w.needed: w for w in stack.winners}
    cudnn = winners["libcudnn.so.9"]
    assert cudnn.loaded.file == f"{built.site}/{WHEEL_FILES['libcudnn.so.9']}"
    assert cudnn.loaded.version and cudnn.loaded.version.startswith("9.")
    assert cudnn.hows == ("rpath",)
    assert f"{OVERRIDE.lstrip('/')}/libcudnn.so.9" in [c.file for c in cudnn.shadowed]
    overrides = [f for f in built.result.inventory.findings
                 if f.id == "linkage-ld-library-path-override"]
    assert [f.component for f in overrides] == ["nvjitlink"], overrides
    assert f"{OVERRIDE}/libnvJitLink.so.13" in overrides[0].message
    assert f"/{built.site}/{WHEEL_FILES['libnvJitLink.so.13']}" in overrides[0].message
