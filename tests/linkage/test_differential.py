"""resolve_linkage against the real glibc loader tracing (``LD_TRACE_LOADED_OBJECTS=1 ld.so``) in
a container of the image.

One image = the Debian bookworm fixture's layer (reused, not copied) + a small layer of
gcc-built libraries and consumers, one directory per case under /opt/t. One container lists every
consumer (those of PRELOADS with their LD_PRELOAD or /etc/ld.so.preload); a second one runs
``ldconfig`` first (for the ld.so.cache cases). Every DT_NEEDED the loader printed must resolve
to the same file (symlinks followed inside the image) here, and every "not found" must be
not-found here. The resolver is told what ``ld.so --help`` and ``--version`` say of the CPU and
glibc (glibc-hwcaps and legacy hwcaps subdirectories, AT_PLATFORM, 2.36).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from auditor.audit import AuditOptions, audit
from auditor.elf.facts import elf_facts
from auditor.elfwriter import build_shared_object
from auditor.inventory.base import Cataloger, FileView
from auditor.linkage import CONF_GLOBS, linkage_of, loader_inputs
from auditor.linkage.ldcache import parse_ld_cache
from auditor.linkage.ldconf import parse_ld_preload
from auditor.linkage.model import ConsumerLinkage
from auditor.linkage.resolve import resolve_linkage
from auditor.testing import LayerBuilder
from tests.engine_fixtures import DebianImage, Engine, oci_to_docker_archive

pytestmark = [pytest.mark.engine, pytest.mark.slow]

OWNER = "difftest-elf"
LDSO = "/lib64/ld-linux-x86-64.so.2"
LLP = "/opt/llp"
RPATH, RUNPATH = "-Wl,--disable-new-dtags", "-Wl,--enable-new-dtags"


@dataclass
class Staging:
    """Builds the case layer: gcc libraries with given SONAME/NEEDED/RPATH, and consumers."""

    root: Path
    layer: LayerBuilder = field(default_factory=LayerBuilder)
    consumers: list[str] = field(default_factory=list)
    cc: str = "gcc"

    def __post_init__(self) -> None:
        (self.root / "stubs").mkdir(parents=True)

    def _stub(self, soname: str) -> None:
        stub = self.root / "stubs" / soname
        if not stub.exists():
            _gcc(self.root, ["-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(stub)],
                 f"int stub_{_ident(soname)}(void) {{ return 0; }}\n", self.cc)

    def _link_args(self, needed: list[str], paths: list[str], dtags: str) -> list[str]:
        for soname in needed:
            self._stub(soname)
        args = ["-Wl,--no-as-needed", f"-L{self.root / 'stubs'}", *(f"-l:{n}" for n in needed)]
        if paths:
            args += [dtags, f"-Wl,-rpath,{':'.join(paths)}"]
        return args

    def lib(self, path: str, soname: str, needed: list[str] = (),  # type: ignore[assignment]
            paths: list[str] = (), dtags: str = RPATH,  # type: ignore[assignment]
            extra: tuple[str, ...] = ()) -> None:
        out = self.root / "out.so"
        _gcc(self.root, ["-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(out),
                         *self._link_args(list(needed), list(paths), dtags), *extra],
             f"int lib_{_ident(path)}(void) {{ return 1; }}\n", self.cc)
        self.layer.file(path.lstrip("/"), out.read_bytes(), mode=0o755)

    def consumer(self, path: str, needed: list[str], paths: list[str] = (),  # type: ignore[assignment]
                 dtags: str = RPATH, extra: tuple[str, ...] = ()) -> None:
        out = self.root / "consumer"
        _gcc(self.root, ["-o", str(out), *self._link_args(needed, list(paths), dtags), *extra],
             "int main(void) { return 0; }\n", self.cc)
        self.layer.file(path.lstrip("/"), out.read_bytes(), mode=0o755)
        self.consumers.append(path)


def _ident(text: str) -> str:
    return re.sub(r"\W", "_", text)


def _gcc(cwd: Path, args: list[str], source: str, cc: str = "gcc") -> None:
    src = cwd / "src.c"
    src.write_text(source)
    subprocess.run([cc, str(src), *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _cases(stage: Staging) -> None:
    t = "/opt/t"
    # 1 RPATH beats LD_LIBRARY_PATH
    stage.lib(f"{t}/rpath/lib/libprec1.so.1", "libprec1.so.1")
    stage.lib(f"{LLP}/libprec1.so.1", "libprec1.so.1")
    stage.consumer(f"{t}/rpath/consumer", ["libprec1.so.1"], [f"{t}/rpath/lib"])
    # 2 LD_LIBRARY_PATH beats RUNPATH
    stage.lib(f"{t}/runpath/lib/libprec2.so.1", "libprec2.so.1")
    stage.lib(f"{t}/runpath/lib/librun.so.1", "librun.so.1")
    stage.lib(f"{LLP}/libprec2.so.1", "libprec2.so.1")
    stage.consumer(f"{t}/runpath/consumer", ["libprec2.so.1", "librun.so.1"],
                   [f"{t}/runpath/lib"], RUNPATH)
    # 3 RPATH inherited down the chain
    stage.lib(f"{t}/inh/lib/libinha.so.1", "libinha.so.1", ["libinhb.so.1"])
    stage.lib(f"{t}/inh/lib/libinhb.so.1", "libinhb.so.1")
    stage.consumer(f"{t}/inh/consumer", ["libinha.so.1"], [f"{t}/inh/lib"])
    # 4 RUNPATH not inherited: libnib.so.1 is not found
    stage.lib(f"{t}/noinh/lib/libnia.so.1", "libnia.so.1", ["libnib.so.1"])
    stage.lib(f"{t}/noinh/lib/libnib.so.1", "libnib.so.1")
    stage.consumer(f"{t}/noinh/consumer", ["libnia.so.1"], [f"{t}/noinh/lib"], RUNPATH)
    # 5 $ORIGIN, in a consumer (RUNPATH) and in a library (RPATH)
    stage.lib(f"{t}/origin/lib/liborig.so.1", "liborig.so.1", ["liborig2.so.1"],
              ["$ORIGIN/sub"])
    stage.lib(f"{t}/origin/lib/sub/liborig2.so.1", "liborig2.so.1")
    stage.consumer(f"{t}/origin/bin/consumer", ["liborig.so.1"], ["$ORIGIN/../lib"], RUNPATH)
    # 6 LD_LIBRARY_PATH from the image Env
    stage.lib(f"{LLP}/libllp.so.1", "libllp.so.1")
    stage.consumer(f"{t}/llp/consumer", ["libllp.so.1"])
    # 7 ld.so.conf.d entry without ldconfig: not found (and found after ldconfig: see below)
    stage.lib(f"{t}/conf/lib/libconf.so.1", "libconf.so.1")
    stage.layer.file("etc/ld.so.conf.d/zz-auditor.conf", f"{t}/conf/lib\n")
    stage.consumer(f"{t}/conf/consumer", ["libconf.so.1"])
    # 8 multiarch default directory before /usr/lib
    stage.lib("/usr/lib/x86_64-linux-gnu/libmulti.so.1", "libmulti.so.1")
    stage.lib("/usr/lib/libmulti.so.1", "libmulti.so.1")
    stage.consumer(f"{t}/multi/consumer", ["libmulti.so.1"])
    # 9 wrong-machine decoy earlier in the RPATH
    stage.layer.file("opt/t/decoy/a/libdecoy.so.1",
                     build_shared_object("libdecoy.so.1", machine="aarch64"), mode=0o755)
    stage.lib(f"{t}/decoy/b/libdecoy.so.1", "libdecoy.so.1")
    stage.consumer(f"{t}/decoy/consumer", ["libdecoy.so.1"], [f"{t}/decoy/a", f"{t}/decoy/b"])
    # 10 symlink chain, through an absolute link
    stage.lib(f"{t}/chain/real/libchain.so.1.0.0", "libchain.so.1")
    stage.layer.symlink("opt/t/chain/lib/libchain.so.1", "libchain.so.1.0")
    stage.layer.symlink("opt/t/chain/lib/libchain.so.1.0", f"{t}/chain/mid/libchain")
    stage.layer.symlink("opt/t/chain/mid/libchain", "../real/libchain.so.1.0.0")
    stage.consumer(f"{t}/chain/consumer", ["libchain.so.1"], [f"{t}/chain/lib"])
    # 11 the same SONAME in two RUNPATH dirs; a file named apart from its SONAME, loaded once
    stage.lib(f"{t}/dup/x/libdup.so.1", "libdup.so.1")
    stage.lib(f"{t}/dup/y/libdup.so.1", "libdup.so.1")
    stage.lib(f"{t}/dup/y/libalias.so", "libalias.so.1")
    stage.lib(f"{t}/dup/y/libuser.so.1", "libuser.so.1", ["libalias.so.1"])
    stage.lib("/usr/lib/x86_64-linux-gnu/libalias.so.1", "libalias.so.1")
    stage.consumer(f"{t}/dup/consumer", ["libdup.so.1", "libalias.so", "libuser.so.1"],
                   [f"{t}/dup/y", f"{t}/dup/x"], RUNPATH)
    # 12 a cycle of libraries
    stage.layer.file("opt/t/cycle/libcyca.so.1", build_shared_object(
        "libcyca.so.1", needed=["libcycb.so.1"]), mode=0o755)
    stage.layer.file("opt/t/cycle/libcycb.so.1", build_shared_object(
        "libcycb.so.1", needed=["libcyca.so.1", "libc.so.6"]), mode=0o755)
    stage.consumer(f"{t}/cycle/consumer", ["libcyca.so.1"], [f"{t}/cycle"])

    _more_cases(stage, t)


def _more_cases(stage: Staging, t: str) -> None:
    # 13 $LIB and 14 $PLATFORM
    for sub in ("lib/x86_64-linux-gnu", "x86_64-linux-gnu", "lib64"):
        stage.lib(f"{t}/dst/{sub}/libdstlib.so.1", "libdstlib.so.1")
    stage.lib(f"{t}/dst/x86_64/libdstplat.so.1", "libdstplat.so.1")
    stage.consumer(f"{t}/dst/consumer", ["libdstlib.so.1", "libdstplat.so.1"],
                   [f"{t}/dst/$LIB", f"{t}/dst/$PLATFORM"])
    # 15 an RPATH climbing above the root stops there
    stage.lib(f"{t}/climb/lib/libclimb.so.1", "libclimb.so.1")
    stage.consumer(f"{t}/climb/consumer", ["libclimb.so.1"], [f"/../../..{t}/climb/lib"])
    # 16 a self-referencing symlink is skipped; 17 a directory named like the library is fatal
    stage.layer.symlink("opt/t/loop/a/libloop.so.1", "libloop.so.1")
    stage.layer.dir("opt/t/loop/a/libdirlike.so.1")
    stage.lib(f"{t}/loop/b/libloop.so.1", "libloop.so.1")
    stage.lib(f"{t}/loop/b/libdirlike.so.1", "libdirlike.so.1")
    stage.consumer(f"{t}/loop/consumer", ["libloop.so.1", "libdirlike.so.1"],
                   [f"{t}/loop/a", f"{t}/loop/b"])
    # 18 breadth first: the consumer's own search wins over a dependency's RPATH
    stage.lib(f"{t}/bfs/y/libbfsa.so.1", "libbfsa.so.1", ["libbfsb.so.1"], [f"{t}/bfs/x"])
    stage.lib(f"{t}/bfs/x/libbfsb.so.1", "libbfsb.so.1")
    stage.lib(f"{t}/bfs/y/libbfsb.so.1", "libbfsb.so.1")
    stage.consumer(f"{t}/bfs/consumer", ["libbfsa.so.1", "libbfsb.so.1"], [f"{t}/bfs/y"])
    # 19 a library's own RPATH before its loader's
    stage.lib(f"{t}/own/p1/libowna.so.1", "libowna.so.1", ["libownb.so.1"], [f"{t}/own/p2"])
    stage.lib(f"{t}/own/p1/libownb.so.1", "libownb.so.1")
    stage.lib(f"{t}/own/p2/libownb.so.1", "libownb.so.1")
    stage.consumer(f"{t}/own/consumer", ["libowna.so.1"], [f"{t}/own/p1"])
    # 20 the RPATH chain passes through an object with RUNPATH
    stage.lib(f"{t}/via/s1/libvia1.so.1", "libvia1.so.1", ["libvia2.so.1"], [f"{t}/via/s2"],
              RUNPATH)
    stage.lib(f"{t}/via/s2/libvia2.so.1", "libvia2.so.1", ["libvia3.so.1"])
    stage.lib(f"{t}/via/s1/libvia3.so.1", "libvia3.so.1")
    stage.consumer(f"{t}/via/consumer", ["libvia1.so.1"], [f"{t}/via/s1"])
    # 21 a dependency with RUNPATH ignores the RPATH it inherits
    stage.lib(f"{t}/rr/r1/librr1.so.1", "librr1.so.1", ["librr2.so.1"], [f"{t}/rr/r2"], RUNPATH)
    stage.lib(f"{t}/rr/r1/librr2.so.1", "librr2.so.1")
    stage.lib(f"{t}/rr/r2/librr2.so.1", "librr2.so.1")
    stage.consumer(f"{t}/rr/consumer", ["librr1.so.1"], [f"{t}/rr/r1"])
    # 22 a DT_NEEDED with a slash is opened as it stands
    stage.lib(f"{t}/slash/lib/libslash.so.1", "libslash.so.1")
    stage.layer.file("opt/t/slash/consumer", build_shared_object(
        "consumer", needed=[f"{t}/slash/lib/libslash.so.1", "libc.so.6"]), mode=0o755)
    stage.consumers.append(f"{t}/slash/consumer")
    # 23 $ORIGIN in LD_LIBRARY_PATH is the consumer's directory
    stage.lib(f"{t}/llporigin/llp/libllpo.so.1", "libllpo.so.1")
    stage.consumer(f"{t}/llporigin/consumer", ["libllpo.so.1"])
    # 24 /usr/lib64 is not a default directory of Debian's loader
    stage.lib("/usr/lib64/liblib64.so.1", "liblib64.so.1")
    stage.consumer(f"{t}/lib64/consumer", ["liblib64.so.1"])
    # 25 a file that is not ELF, first in the RPATH, is fatal
    stage.layer.file("opt/t/notelf/a/libnotelf.so.1", "INPUT(-lc)\n")
    stage.lib(f"{t}/notelf/b/libnotelf.so.1", "libnotelf.so.1")
    stage.consumer(f"{t}/notelf/consumer", ["libnotelf.so.1"],
                   [f"{t}/notelf/a", f"{t}/notelf/b"])
    # 26 a glibc-hwcaps variant the CPU supports wins over the plain file in the same directory
    stage.lib(f"{t}/hw/lib/libhw.so.1", "libhw.so.1")
    stage.lib(f"{t}/hw/lib/glibc-hwcaps/x86-64-v2/libhw.so.1", "libhw.so.1")
    stage.consumer(f"{t}/hw/consumer", ["libhw.so.1"], [f"{t}/hw/lib"], RUNPATH)
    # 27 the same library asked under two names by two objects: one file, loaded once
    stage.lib(f"{t}/twice/lib/libtwa.so.1", "libtwa.so.1", ["libtw.so.1"])
    stage.lib(f"{t}/twice/lib/libtw.so.1.0", "libtw.so.1")
    stage.layer.symlink("opt/t/twice/lib/libtw.so.1", "libtw.so.1.0")
    stage.layer.symlink("opt/t/twice/lib/libtw-alt.so", "libtw.so.1.0")
    stage.consumer(f"{t}/twice/consumer", ["libtw-alt.so", "libtwa.so.1"], [f"{t}/twice/lib"])
    _loader_cases(stage, t)


def _loader_cases(stage: Staging, t: str) -> None:
    # 28 DF_1_NODEFLIB (ld's -z nodefaultlib): the consumer's own needs skip the default
    # directories and the cache entries in them (libc.so.6 too); its dependency's do not
    for name in ("libndef.so.1", "libndb.so.1"):
        stage.lib(f"/usr/lib/x86_64-linux-gnu/{name}", name)
    stage.lib(f"{t}/ndl/lib/libnda.so.1", "libnda.so.1", ["libndb.so.1"])
    stage.consumer(f"{t}/ndl/consumer", ["libnda.so.1", "libndef.so.1"], [f"{t}/ndl/lib"],
                   extra=("-Wl,-z,nodefaultlib",))
    # 29 LD_PRELOAD: a path whose SONAME satisfies the consumer's need, a name searched as the
    # consumer's own needs (its RPATH), a name not found (ignored); see PRELOADS
    stage.lib(f"{t}/pre/p/libpreload.so", "libprea.so.1")
    stage.lib(f"{t}/pre/lib/libprea.so.1", "libprea.so.1")
    stage.lib(f"{t}/pre/lib/libprenamed.so.1", "libprenamed.so.1", ["libpredep.so.1"])
    stage.lib(f"{t}/pre/lib/libpredep.so.1", "libpredep.so.1")
    stage.consumer(f"{t}/pre/consumer", ["libprea.so.1"], [f"{t}/pre/lib"])
    # 30 /etc/ld.so.preload, written when the container starts (every process loads it)
    stage.lib(f"{t}/prefile/p/libpf-pre.so", "libpf.so.1")
    stage.lib(f"{t}/prefile/lib/libpf.so.1", "libpf.so.1")
    stage.consumer(f"{t}/prefile/consumer", ["libpf.so.1"], [f"{t}/prefile/lib"])
    # 31 glibc 2.36 still searches the legacy tls/ subdirectory (before x86_64/, the plain file)
    for sub in ("tls/", "x86_64/", ""):
        stage.lib(f"{t}/lhw/a/{sub}liblhw.so.1", "liblhw.so.1")
    stage.consumer(f"{t}/lhw/consumer", ["liblhw.so.1"], [f"{t}/lhw/a"], RUNPATH)
    # 32 ... and the hwcap one (x86_64/, also AT_PLATFORM on AMD CPUs) before the plain file
    for sub in ("x86_64/", ""):
        stage.lib(f"{t}/lhp/b/{sub}liblhp.so.1", "liblhp.so.1")
    stage.consumer(f"{t}/lhp/consumer", ["liblhp.so.1"], [f"{t}/lhp/b"])
    # 33 a glibc-hwcaps subdirectory comes before the legacy ones
    for sub in ("glibc-hwcaps/x86-64-v2/", "tls/", ""):
        stage.lib(f"{t}/hwtls/c/{sub}libhwtls.so.1", "libhwtls.so.1")
    stage.consumer(f"{t}/hwtls/consumer", ["libhwtls.so.1"], [f"{t}/hwtls/c"])
    # 34 the legacy subdirectories of a default directory are searched too
    for sub in ("tls/", ""):
        stage.lib(f"/usr/lib/x86_64-linux-gnu/{sub}libdeftls.so.1", "libdeftls.so.1")
    stage.consumer(f"{t}/deftls/consumer", ["libdeftls.so.1"])
    # 35 a DT_NEEDED naming $ORIGIN is expanded, then opened as a path
    stage.lib(f"{t}/orgneed/sub/liborgneed.so.1", "liborgneed.so.1")
    stage.layer.file("opt/t/orgneed/consumer", build_shared_object(
        "consumer", needed=["$ORIGIN/sub/liborgneed.so.1", "libc.so.6"]), mode=0o755)
    stage.consumers.append(f"{t}/orgneed/consumer")
    # 36 DF_1_NODEFLIB on a dependency: its own needs skip the default directories
    stage.lib("/usr/lib/x86_64-linux-gnu/libndc.so.1", "libndc.so.1")
    stage.lib(f"{t}/ndlib/lib/libndlib.so.1", "libndlib.so.1", ["libndc.so.1", "libndd.so.1"],
              extra=("-Wl,-z,nodefaultlib",))
    stage.lib(f"{t}/ndlib/lib/libndd.so.1", "libndd.so.1")  # through the consumer's RPATH
    stage.consumer(f"{t}/ndlib/consumer", ["libndlib.so.1"], [f"{t}/ndlib/lib"])


# consumer -> (LD_PRELOAD, /etc/ld.so.preload text) they are traced with
PRELOADS = {
    "/opt/t/pre/consumer": ("/opt/t/pre/p/libpreload.so libprenamed.so.1:libpremissing.so.1",
                            None),
    "/opt/t/prefile/consumer": (None, "# preloaded by every process\n"
                                      "/opt/t/prefile/p/libpf-pre.so libpfmissing.so.1\n"),
}


# -- the image ----------------------------------------------------------------------------------

def _blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / digest.replace(":", "/")


def _put(layout: Path, data: bytes) -> dict[str, Any]:
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    _blob(layout, digest).write_bytes(data)
    return {"digest": digest, "size": len(data)}


def _share(source: Path, target: Path) -> None:
    """A hardlink (the auditor refuses a layout's symlinks out of it); a copy across devices."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _extend_layout(base: DebianImage, out: Path, layer: bytes, env: list[str]) -> str:
    """An OCI layout of the base image + ``layer``, its base blobs hardlinked, not copied."""
    index = json.loads((base.layout / "index.json").read_text())
    desc = next(m for m in index["manifests"]
                if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == base.tag)
    manifest = json.loads(_blob(base.layout, desc["digest"]).read_text())
    config = json.loads(_blob(base.layout, manifest["config"]["digest"]).read_text())
    (out / "blobs" / "sha256").mkdir(parents=True)
    (out / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    for layer_desc in manifest["layers"]:
        _share(_blob(base.layout, layer_desc["digest"]), _blob(out, layer_desc["digest"]))
    added = _put(out, layer)
    config["rootfs"]["diff_ids"].append(added["digest"])
    config["config"]["Env"] = [*config["config"].get("Env", []), *env]
    config["history"] = [*config.get("history", []), {"created_by": "linkage cases"}]
    manifest["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar", **added})
    manifest["config"] = {"mediaType": manifest["config"]["mediaType"],
                          **_put(out, json.dumps(config).encode())}
    new_desc = {"mediaType": desc["mediaType"], **_put(out, json.dumps(manifest).encode()),
                "annotations": {"org.opencontainers.image.ref.name": "cases"}}
    (out / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [new_desc]}))
    return "cases"


@dataclass
class Built:
    view: FileView
    image: Any
    consumers: list[str]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, engine: Engine,
          debian_image: DebianImage) -> Built:
    work = tmp_path_factory.mktemp("linkage")
    stage = Staging(work / "stage")
    _cases(stage)
    layout = work / "layout"
    env = [f"LD_LIBRARY_PATH={LLP}:$ORIGIN/llp"]
    tag = _extend_layout(debian_image, layout, stage.layer.tar_bytes(), env)
    views: list[FileView] = []
    cataloger = Cataloger(OWNER, 1, CONF_GLOBS, lambda view, _inv: views.append(view),
                          analyze_globs=("*.so*", "opt/t/*consumer"), analyze=elf_facts)
    audit(f"oci:{layout}:{tag}", AuditOptions(cache_dir=str(work / "cache")),
          catalogers=[cataloger])
    archive = oci_to_docker_archive(layout, tag, work / "cases.tar", "localhost/linkage-cases:t")
    (image,) = engine.load(archive)
    return Built(views[0], image, stage.consumers)


def _run(engine: Engine, image: Any, script: str) -> str:
    """The script's standard output, read once the container has exited (``run(remove=True)``
    can race podman's removal and return the output cut short)."""
    container = engine.client.containers.create(image.id, ["sh", "-c", script],
                                                network_mode="none")
    try:
        container.start()
        status = container.wait(timeout=600)
        assert status.get("StatusCode") == 0, status
        return container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
    finally:
        container.remove(force=True)


def _listings(text: str) -> dict[str, dict[str, list[str | None]]]:
    """``== consumer`` sections of ``ld.so --list`` output: needed name -> the paths (None: not
    found) it is listed with, in load order (a name not found once may be found later)."""
    out: dict[str, dict[str, list[str | None]]] = {}
    current: dict[str, list[str | None]] = {}
    for line in text.splitlines():
        if line.startswith("== "):
            current = out.setdefault(line[3:].strip(), {})
        elif m := re.match(r"\s+(\S+) => not found", line):
            current.setdefault(m.group(1), []).append(None)
        elif m := re.match(r"\s+(\S+) => (\S+) \(0x", line):
            current.setdefault(m.group(1), []).append(m.group(2))
        elif (m := re.match(r"\s+(/\S+) \(0x", line)) and m.group(1) != LDSO:
            current.setdefault(m.group(1), []).append(m.group(1))  # a name with a slash
        elif m := re.match(r"ERROR: ld.so: object '(\S+)' from \S+ cannot be preloaded", line):
            current.setdefault(m.group(1), []).append(None)
        elif m := re.search(r"error while loading shared libraries: (\S+): (.*)", line):
            current["<fatal>"] = [f"{m.group(1)}: {m.group(2)}"]
    return out


def _list_script(consumers: list[str]) -> str:
    # ``--list`` stops at the first missing library; the trace variable (as ldd sets it) goes on
    lines = []
    for c in consumers:
        env, file_text = PRELOADS.get(c, (None, None))
        lines.append(f"echo '== {c}'")
        if file_text is not None:
            lines.append(f"printf '%s' '{file_text}' > /etc/ld.so.preload")
        lines.append(f"{f'LD_PRELOAD={env!r} ' if env else ''}LD_TRACE_LOADED_OBJECTS=1 "
                     f"{LDSO} {c} 2>&1")
        if file_text is not None:
            lines.append("rm -f /etc/ld.so.preload")
    return "; ".join(lines) + "; true"


def _ours(linkage: ConsumerLinkage, skip: set[str]) -> dict[str, list[str | None]]:
    """Per name, the files ours maps for it in order, as the trace lists them: not what was
    already loaded (by name, or as the same file found under another name)."""
    seen = set(skip)
    out: dict[str, list[str | None]] = {}
    for r in linkage.resolutions:
        if r.how == "already-loaded" or (r.file is not None and r.file in seen):
            continue
        seen.add(r.file or "")
        # the trace names an object asked for by a path with $ORIGIN by the expanded path
        key = r.path if r.how == "direct" and "$" in r.needed and r.path else r.needed
        out.setdefault(key, []).append(r.file)
    return out


def _compare(view: FileView, real: dict[str, list[str | None]], ours: ConsumerLinkage) -> list[str]:
    mine = _ours(ours, {view.index.resolve(LDSO) or "", ours.consumer.lstrip("/")})
    diffs = []
    for needed, paths in real.items():
        want = [view.index.resolve(p) if p else None for p in paths]
        got = mine.get(needed)
        if got != want:
            diffs.append(f"{ours.consumer}: {needed}: ld.so {paths} ({want}), ours {got} "
                         f"({[r.how for r in ours.resolutions if r.needed == needed]})")
    diffs += [f"{ours.consumer}: {n} resolved here, not listed by ld.so" for n in set(mine) - set(real)
              if n != "ld-linux-x86-64.so.2"]
    return diffs


EXPECTED_HOW = {  # the step that decides each case's library
    "/opt/t/rpath/consumer": ("libprec1.so.1", "rpath"),
    "/opt/t/runpath/consumer": ("libprec2.so.1", "ld_library_path"),
    "/opt/t/inh/consumer": ("libinhb.so.1", "rpath"),
    "/opt/t/noinh/consumer": ("libnib.so.1", "not-found"),
    "/opt/t/origin/bin/consumer": ("liborig2.so.1", "rpath"),
    "/opt/t/llp/consumer": ("libllp.so.1", "ld_library_path"),
    "/opt/t/conf/consumer": ("libconf.so.1", "not-found"),
    "/opt/t/multi/consumer": ("libmulti.so.1", "default"),
    "/opt/t/decoy/consumer": ("libdecoy.so.1", "rpath"),
    "/opt/t/chain/consumer": ("libchain.so.1", "rpath"),
    "/opt/t/dup/consumer": ("libalias.so.1", "already-loaded"),
    "/opt/t/cycle/consumer": ("libcyca.so.1", "already-loaded"),
    "/opt/t/dst/consumer": ("libdstplat.so.1", "rpath"),
    "/opt/t/climb/consumer": ("libclimb.so.1", "rpath"),
    "/opt/t/loop/consumer": ("libdirlike.so.1", "not-found"),  # fatal: a directory
    "/opt/t/bfs/consumer": ("libbfsb.so.1", "already-loaded"),
    "/opt/t/own/consumer": ("libownb.so.1", "rpath"),
    "/opt/t/via/consumer": ("libvia3.so.1", "rpath"),
    "/opt/t/rr/consumer": ("librr2.so.1", "runpath"),
    "/opt/t/slash/consumer": ("/opt/t/slash/lib/libslash.so.1", "direct"),
    "/opt/t/llporigin/consumer": ("libllpo.so.1", "ld_library_path"),
    "/opt/t/lib64/consumer": ("liblib64.so.1", "not-found"),  # not a Debian default dir
    "/opt/t/notelf/consumer": ("libnotelf.so.1", "not-found"),  # fatal: not ELF
    "/opt/t/hw/consumer": ("libhw.so.1", "runpath"),
    "/opt/t/twice/consumer": ("libtw.so.1", "already-loaded"),
    "/opt/t/ndl/consumer": ("libndef.so.1", "not-found"),  # DF_1_NODEFLIB
    "/opt/t/pre/consumer": ("libprea.so.1", "already-loaded"),  # LD_PRELOAD's SONAME
    "/opt/t/prefile/consumer": ("libpf.so.1", "already-loaded"),  # /etc/ld.so.preload's
    "/opt/t/lhw/consumer": ("liblhw.so.1", "runpath"),  # in tls/
    "/opt/t/lhp/consumer": ("liblhp.so.1", "rpath"),  # in x86_64/
    "/opt/t/hwtls/consumer": ("libhwtls.so.1", "rpath"),  # in glibc-hwcaps/x86-64-v2/
    "/opt/t/deftls/consumer": ("libdeftls.so.1", "default"),  # in tls/
    "/opt/t/orgneed/consumer": ("$ORIGIN/sub/liborgneed.so.1", "direct"),
    "/opt/t/ndlib/consumer": ("libndc.so.1", "not-found"),
}
EXPECTED_FILE = {  # where the legacy hwcaps cases' library must come from
    "/opt/t/lhw/consumer": ("liblhw.so.1", "opt/t/lhw/a/tls/liblhw.so.1"),
    "/opt/t/lhp/consumer": ("liblhp.so.1", "opt/t/lhp/b/x86_64/liblhp.so.1"),
    "/opt/t/ndl/consumer": ("libndb.so.1", "usr/lib/x86_64-linux-gnu/libndb.so.1"),
    "/opt/t/hwtls/consumer": ("libhwtls.so.1", "opt/t/hwtls/c/glibc-hwcaps/x86-64-v2/libhwtls.so.1"),
    "/opt/t/deftls/consumer": ("libdeftls.so.1", "usr/lib/x86_64-linux-gnu/tls/libdeftls.so.1"),
}


@dataclass(frozen=True)
class Cpu:
    """What ``ld.so --help`` and ``--version`` say of this CPU and glibc, as resolve options."""

    hwcaps: list[str]
    platform: str
    legacy: list[str]
    glibc: str

    def options(self) -> dict[str, Any]:
        return {"hwcaps": self.hwcaps, "platform": self.platform,
                "legacy_hwcaps": self.legacy, "glibc_version": self.glibc}


def _cpu(engine: Engine, image: Any) -> Cpu:
    text = _run(engine, image, f"{LDSO} --help; {LDSO} --version")
    block = text.split("Subdirectories of glibc-hwcaps directories, in priority order:", 1)[1]
    block, legacy = block.split("Legacy HWCAP subdirectories", 1)
    hwcaps = [f"glibc-hwcaps/{line.split()[0]}" for line in block.splitlines()
              if "searched" in line]
    lines = [line.split()[0] for line in legacy.splitlines()[1:] if "searched" in line
             and "AT_PLATFORM" not in line and not line.strip().startswith("tls ")]
    platform = re.search(r"^\s+(\S+) \(AT_PLATFORM", legacy, re.M)
    version = re.search(r"release version (\d+\.\d+)", text)
    assert platform and version, text
    return Cpu(hwcaps, platform.group(1), lines[::-1], version.group(1))  # help: highest bit first


def _preload(consumer: str) -> dict[str, str | None]:
    """LD_PRELOAD and /etc/ld.so.preload as the caller hands them over: raw."""
    env, file_text = PRELOADS.get(consumer, (None, None))
    return {"ld_preload": env, "ld_so_preload": file_text}


def test_resolution_matches_the_real_loader(built: Built, engine: Engine) -> None:
    text = _run(engine, built.image, _list_script(built.consumers))
    listings = _listings(text)
    assert set(listings) == set(built.consumers)
    cpu = _cpu(engine, built.image)
    assert "glibc-hwcaps/x86-64-v2" in cpu.hwcaps  # any x86-64 CPU of the last 15 years
    assert cpu.glibc == "2.36" and "x86_64" in cpu.legacy  # bookworm's loader, any x86-64 CPU
    compared = 0
    diffs: list[str] = []
    for consumer in built.consumers:
        ours = linkage_of(built.view, OWNER, consumer, **_preload(consumer), **cpu.options())
        compared += len(listings[consumer])
        if "<fatal>" in listings[consumer]:
            path = str(listings[consumer]["<fatal>"][0]).split(": ", 1)[0]
            if not ours.fatal or not ours.fatal.startswith(f"{path}: "):
                diffs.append(f"{consumer}: ld.so stops with {listings[consumer]['<fatal>']!r}, "
                             f"ours {ours.fatal!r}")
            continue
        if "libc.so.6" not in listings[consumer]:
            diffs.append(f"{consumer}: the loader listed no libc.so.6: "
                         f"{text.split(f'== {consumer}', 1)[1].split('== ', 1)[0]!r}")
            continue
        diffs += _compare(built.view, listings[consumer], ours)
        needed, how = EXPECTED_HOW[consumer]
        hows = [r.how for r in ours.resolutions if r.needed == needed]
        if how not in hows:
            diffs.append(f"{consumer}: {needed} expected by {how}, got {hows}")
        if consumer in EXPECTED_FILE and ours.loaded().get(EXPECTED_FILE[consumer][0]) != \
                EXPECTED_FILE[consumer][1]:
            diffs.append(f"{consumer}: expected {EXPECTED_FILE[consumer]}, got {ours.loaded()}")
    assert not diffs, "\n".join(diffs)
    assert compared >= 2 * len(built.consumers)
    assert len(EXPECTED_HOW) >= 32 and set(EXPECTED_HOW) == set(built.consumers)
    plain = linkage_of(built.view, OWNER, "/opt/t/hw/consumer")  # the CPU unknown: noted
    assert any("x86-64-v2 (glibc-hwcaps)" in p for p in plain.problems)
    # the glibc version unknown: the legacy variant is noted, the plain file taken
    plain = linkage_of(built.view, OWNER, "/opt/t/lhp/consumer", hwcaps=cpu.hwcaps)
    assert plain.loaded()["liblhp.so.1"] == "opt/t/lhp/b/liblhp.so.1"
    assert any("x86_64/liblhp.so.1 is loaded instead by glibc before 2.37" in p
               for p in plain.problems)
    # preloads as the loader takes them: the missing one tried, and ignored
    env, _ = PRELOADS["/opt/t/pre/consumer"]
    pre = linkage_of(built.view, OWNER, "/opt/t/pre/consumer", preload=parse_ld_preload(env),
                     **cpu.options())
    assert [(r.needed, r.how) for r in pre.resolutions if r.kind == "preload"] == [
        ("/opt/t/pre/p/libpreload.so", "direct"), ("libprenamed.so.1", "rpath"),
        ("libpremissing.so.1", "not-found")]
    assert pre.fatal is None


def test_ld_so_cache_after_ldconfig_matches(built: Built, engine: Engine) -> None:
    consumer, nodeflib, deftls = ("/opt/t/conf/consumer", "/opt/t/ndl/consumer",
                                  "/opt/t/deftls/consumer")
    script = "ldconfig && " + " && ".join(
        f"echo '== {c}' && LD_TRACE_LOADED_OBJECTS=1 {LDSO} {c}"
        for c in (consumer, nodeflib, deftls)) \
        + " && echo '== cache' && base64 -w0 /etc/ld.so.cache"
    text = _run(engine, built.image, script)
    cache_b64 = text.split("== cache", 1)[1].strip()
    entries, problems = parse_ld_cache(base64.b64decode(cache_b64))
    assert not problems and any(e.key == "libconf.so.1" for e in entries)
    assert any(e.key == "libndef.so.1" for e in entries)
    conf_dirs = loader_inputs(built.view).conf_dirs
    assert "/opt/t/conf/lib" in conf_dirs

    def elf_of(path: str) -> dict[str, Any] | None:
        return built.view.index.facts(path, OWNER)

    llp = built.view.env()["LD_LIBRARY_PATH"]
    listings = _listings(text.split("== cache", 1)[0])
    ours = resolve_linkage(consumer, elf_of, built.view.index, llp, entries, conf_dirs)
    assert listings[consumer]["libconf.so.1"] == ["/opt/t/conf/lib/libconf.so.1"]
    assert ours.of("libconf.so.1").how == "ld.so.cache"
    assert not _compare(built.view, listings[consumer], ours)
    # DF_1_NODEFLIB: the cache entries in default directories are rejected, libc.so.6's too
    ours = resolve_linkage(nodeflib, elf_of, built.view.index, llp, entries, conf_dirs)
    assert listings[nodeflib]["libndef.so.1"] == [None]
    assert listings[nodeflib]["libc.so.6"][0] is None
    assert ours.of("libndef.so.1").how == "not-found"
    assert any("DF_1_NODEFLIB rejects the ld.so.cache entry" in p for p in ours.problems)
    assert not _compare(built.view, listings[nodeflib], ours)
    # ldconfig 2.36 still lists the legacy tls/ copy (hwcap bit 63), first; ld.so takes it
    tls = [e.hwcap for e in entries if e.key == "libdeftls.so.1"]
    assert tls == [1 << 63, 0]
    ours = resolve_linkage(deftls, elf_of, built.view.index, llp, entries, conf_dirs,
                           glibc_version="2.36", hwcaps=[])
    assert listings[deftls]["libdeftls.so.1"] == ["/lib/x86_64-linux-gnu/tls/libdeftls.so.1"]
    assert ours.of("libdeftls.so.1").how == "ld.so.cache"
    assert not _compare(built.view, listings[deftls], ours)
