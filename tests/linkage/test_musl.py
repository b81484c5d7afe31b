"""musl's loader: resolve_linkage over synthetic images, then against the real musl 1.2.3 loader
(``ld-musl-x86_64.so.1 --list``, its ldd mode) in a container of a musl image: Debian's musl
package, busybox for a shell, and musl-gcc-built libraries and consumers under /opt/m."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from auditor.audit import AuditOptions, audit
from auditor.elf.facts import elf_facts
from auditor.elfwriter import build_shared_object
from auditor.inventory.base import Cataloger, FileView
from auditor.linkage import CONF_GLOBS, linkage_of
from auditor.linkage.ldconf import parse_ld_preload
from auditor.linkage.model import ConsumerLinkage
from auditor.linkage.musl import RESERVED, is_musl_loader, path_file, split_path
from auditor.testing import LayerBuilder, build_oci_layout
from tests.engine_fixtures import Engine, oci_to_docker_archive
from tests.linkage.test_differential import RUNPATH, Built, Staging, _run

OWNER = "test-musl-elf"
LOADER = "/lib/ld-musl-x86_64.so.1"
PATH_FILE = "etc/ld-musl-x86_64.path"
APP = "opt/m/bin/app"
MUSL_GLOBS = (*CONF_GLOBS, "etc/ld-musl-*.path", "opt/m/*/etc/ld-musl-*.path")


def _so(soname: str, **kwargs: Any) -> bytes:
    return build_shared_object(soname, **kwargs)


def _view(tmp_path: Path, layers: list[LayerBuilder | bytes], env: list[str] | None = None,
          analyze: tuple[str, ...] = ("*.so*", "opt/m/bin/*")) -> FileView:
    views: list[FileView] = []
    cataloger = Cataloger(OWNER, 1, MUSL_GLOBS, lambda view, _inv: views.append(view),
                          analyze_globs=analyze, analyze=elf_facts)
    config = {"config": {"Env": env}} if env else None
    build_oci_layout(tmp_path / "image", layers, tag="t", config=config)
    audit(f"oci:{tmp_path / 'image'}:t", AuditOptions(cache_dir=str(tmp_path / "cache")),
          catalogers=[cataloger])
    return views[0]


def _musl_path(view: FileView, interp: str = LOADER) -> str | None:
    data = view.read(path_file(interp).lstrip("/"))
    return data.decode() if data is not None else None


def _linkage(tmp_path: Path, files: dict[str, bytes | str], symlinks: dict[str, str] | None = None,
             env: list[str] | None = None, consumer: str = APP, **options: Any) -> ConsumerLinkage:
    layer = LayerBuilder()
    layer.file("lib/x86_64-linux-musl/libc.so", _so("libc.so"), mode=0o755)
    layer.symlink(LOADER.lstrip("/"), "x86_64-linux-musl/libc.so")
    for path, data in files.items():
        layer.file(path, data, mode=0o755)
    for path, target in (symlinks or {}).items():
        layer.symlink(path, target)
    view = _view(tmp_path, [layer], env)
    options.setdefault("musl_path", _musl_path(view))
    return linkage_of(view, OWNER, consumer, **options)


def _where(linkage: ConsumerLinkage, needed: str) -> tuple[str | None, str]:
    resolution = linkage.of(needed)
    assert resolution is not None, linkage
    return resolution.file, resolution.how


# -- the rules, on synthetic images ------------------------------------------------------------

def test_loader_names_and_path_file() -> None:
    assert is_musl_loader("/lib/ld-musl-x86_64.so.1") and is_musl_loader("ld-musl-armhf.so.1")
    assert not is_musl_loader("/lib64/ld-linux-x86-64.so.2")
    assert path_file("/lib/ld-musl-x86_64.so.1") == "/etc/ld-musl-x86_64.path"
    assert path_file("/ld-musl-aarch64.so.1") == "/etc/ld-musl-aarch64.path"
    assert path_file("/opt/m/alt/lib/ld-musl-x86_64.so.1") == "/opt/m/alt/etc/ld-musl-x86_64.path"
    assert split_path("/a:/b\n\n/c::") == ["/a", "/b", "/c"]
    assert parse_ld_preload(" /a/x.so\tlibb.so\n:libc2.so", musl=True) == ["/a/x.so", "libb.so",
                                                                           "libc2.so"]


def test_search_order_and_what_musl_ignores(tmp_path: Path) -> None:
    files = {APP: _so("app", needed=["liba.so.1", "libm.so.6", "libsn.so.1", "libsn-alt.so",
                                     "libpathdir.so.1", "libusrlocal.so.1"], runpath="/r"),
             "r/liba.so.1": _so("liba.so.1", needed=["libb.so.1", "libc.musl-x86_64.so.1"]),
             "llp/liba.so.1": _so("liba.so.1", needed=["libb.so.1"]),
             "r/libb.so.1": _so("libb.so.1"),  # found through the consumer's RUNPATH: inherited
             "r/libsn.so.1": _so("libsn.so.1"), "r/libsn-alt.so": _so("libsn.so.1"),
             "p/libpathdir.so.1": _so("libpathdir.so.1"),
             "usr/local/lib/libusrlocal.so.1": _so("libusrlocal.so.1"),
             PATH_FILE: "/p\n/usr/lib"}
    linkage = _linkage(tmp_path, files, env=["LD_LIBRARY_PATH=/llp"])
    assert _where(linkage, "liba.so.1") == ("llp/liba.so.1", "ld_library_path")  # before RUNPATH
    assert _where(linkage, "libb.so.1") == ("r/libb.so.1", "runpath")
    assert linkage.of("libb.so.1").requester == "llp/liba.so.1"
    assert _where(linkage, "libm.so.6") == ("lib/x86_64-linux-musl/libc.so", "already-loaded")
    # SONAMEs play no part: two files, both loaded
    assert _where(linkage, "libsn.so.1") == ("r/libsn.so.1", "runpath")
    assert _where(linkage, "libsn-alt.so") == ("r/libsn-alt.so", "runpath")
    assert _where(linkage, "libpathdir.so.1") == ("p/libpathdir.so.1", "default")
    # with a path file, the built-in /lib:/usr/local/lib:/usr/lib is not searched
    assert _where(linkage, "libusrlocal.so.1") == (None, "not-found")
    assert linkage.of("libusrlocal.so.1").searched[-2:] == ("/p/libusrlocal.so.1",
                                                            "/usr/lib/libusrlocal.so.1")
    assert linkage.fatal is None
    without = _linkage(tmp_path / "nopath", {k: v for k, v in files.items() if k != PATH_FILE})
    assert _where(without, "libusrlocal.so.1") == ("usr/local/lib/libusrlocal.so.1", "default")
    empty = _linkage(tmp_path / "empty", {**files, PATH_FILE: ""})
    assert _where(empty, "libpathdir.so.1") == (None, "not-found")
    assert empty.of("libpathdir.so.1").searched == ("/r/libpathdir.so.1",)


def test_a_dollar_token_other_than_origin_drops_the_whole_list(tmp_path: Path) -> None:
    files = {APP: _so("app", needed=["libx.so.1", "liby.so.1"], rpath="$LIB/x:/d"),
             "d/libx.so.1": _so("libx.so.1", needed=["libz.so.1"], rpath="${ORIGIN}/sub"),
             "lib/libx.so.1": _so("libx.so.1"), "d/sub/libz.so.1": _so("libz.so.1"),
             "d/liby.so.1": _so("liby.so.1")}
    linkage = _linkage(tmp_path, files)
    assert _where(linkage, "libx.so.1") == ("lib/libx.so.1", "default")
    assert _where(linkage, "liby.so.1") == (None, "not-found")
    assert any("musl ignores the whole list" in p for p in linkage.problems)
    files[APP] = _so("app", needed=["libx.so.1"], rpath="/d")
    linkage = _linkage(tmp_path / "origin", files)
    assert _where(linkage, "libz.so.1") == ("d/sub/libz.so.1", "rpath")


def test_unusable_files_fail_only_their_name(tmp_path: Path) -> None:
    files = {APP: _so("app", needed=["libdir.so.1", "libne.so.1", "libloop.so.1", "libdec.so.1",
                                     "libok.so.1"], rpath="/a:/b"),
             "a/libdir.so.1/x": "", "a/libne.so.1": "INPUT(-lc)\n",
             "a/libdec.so.1": _so("libdec.so.1", machine="aarch64"),
             **{f"b/{n}": _so(n) for n in ("libdir.so.1", "libne.so.1", "libloop.so.1",
                                           "libdec.so.1", "libok.so.1")}}
    linkage = _linkage(tmp_path, files, {"a/libloop.so.1": "libloop.so.1"})
    assert linkage.fatal is None
    for name in ("libdir.so.1", "libne.so.1", "libloop.so.1"):
        assert _where(linkage, name) == (None, "not-found"), name
    assert _where(linkage, "libdec.so.1") == ("a/libdec.so.1", "rpath")  # no machine check
    assert _where(linkage, "libok.so.1") == ("b/libok.so.1", "rpath")
    assert any("a symlink loop; musl stops searching for libloop.so.1" in p
               for p in linkage.problems)
    assert any("no machine check" in p for p in linkage.problems)


def test_preload_dlopen_and_limits(tmp_path: Path) -> None:
    files = {APP: _so("app", needed=["libmp.so.1"], rpath="/r"),
             "pre/libmp-pre.so": _so("libmp.so.1", needed=["libpdep.so.1"]),
             "r/libmp.so.1": _so("libmp.so.1"), "r/libpdep.so.1": _so("libpdep.so.1"),
             "usr/lib/libpdep.so.1": _so("libpdep.so.1"), "r/libnamed.so.1": _so("libnamed.so.1"),
             "usr/lib/libnamed.so.1": _so("libnamed.so.1"),
             "r/libopen.so.1": _so("libopen.so.1"), "r/libshim.so.1": _so("libshim.so.1"),
             "s/libopen.so.1": _so("libopen.so.1")}
    # a tab separates LD_PRELOAD's names for musl; /etc/ld.so.preload is glibc's alone
    linkage = _linkage(tmp_path, files, ld_preload="/pre/libmp-pre.so\tlibnamed.so.1",
                       preload=["libmissing.so.1", "x" * 300], ld_so_preload="libmp.so.1")
    pre = [(r.needed[:8], r.how, r.file) for r in linkage.resolutions if r.kind == "preload"]
    assert pre == [("/pre/lib", "direct", "pre/libmp-pre.so"),
                   ("libnamed", "default", "usr/lib/libnamed.so.1"),  # no requester: no RPATH
                   ("libmissi", "not-found", None), ("xxxxxxxx", "not-found", None)]
    assert _where(linkage, "libmp.so.1") == ("r/libmp.so.1", "rpath")  # by name, not SONAME
    # the preload's own need: its chain has no RPATH
    assert _where(linkage, "libpdep.so.1") == ("usr/lib/libpdep.so.1", "default")
    # dlopen from a library searches with the consumer's RPATH, not the caller's
    files["r/libshim.so.1"] = _so("libshim.so.1", rpath="/s")
    files[APP] = _so("app", needed=["libshim.so.1"], rpath="/r")

    def opens(file: str) -> list[str]:
        return ["libopen.so.1"] if file == "r/libshim.so.1" else []

    linkage = _linkage(tmp_path / "dl", files, dlopen=opens)
    opened = linkage.of("libopen.so.1")
    assert (opened.file, opened.kind, opened.requester) == ("r/libopen.so.1", "dlopen",
                                                            "r/libshim.so.1")
    long_dir = "/" + "d" * 600
    files[APP] = _so("app", needed=["libok.so.1"], rpath=f"{long_dir}:/r")
    files["r/libok.so.1"] = _so("libok.so.1")
    linkage = _linkage(tmp_path / "long", files)
    assert _where(linkage, "libok.so.1") == ("r/libok.so.1", "rpath")
    assert any("over musl's 511; skipped" in p for p in linkage.problems)


def test_cycles_and_a_consumer_asking_for_itself_end(tmp_path: Path) -> None:
    files = {APP: _so("app", needed=["libcya.so.1"], rpath="/c:/opt/m/bin"),
             "c/libcya.so.1": _so("libcya.so.1", needed=["libcyb.so.1", "libcya.so.1"]),
             "c/libcyb.so.1": _so("libcyb.so.1", needed=["libcya.so.1", "app"])}
    linkage = _linkage(tmp_path, files)
    assert [(r.needed, r.how) for r in linkage.resolutions] == [
        ("libcya.so.1", "rpath"), ("libcyb.so.1", "rpath"), ("libcya.so.1", "already-loaded"),
        ("libcya.so.1", "already-loaded"),
        ("app", "rpath"),  # the consumer is not among the names musl checks: mapped again
        ("libcya.so.1", "already-loaded")]  # (that copy's own need)
    assert linkage.of("app").file == APP


def test_a_path_file_not_captured_or_a_directory(tmp_path: Path) -> None:
    files = {APP: _so("app", needed=["libq.so.1"]), "usr/lib/libq.so.1": _so("libq.so.1"),
             PATH_FILE: "/nowhere\n"}
    linkage = _linkage(tmp_path, files, musl_path=None)
    assert _where(linkage, "libq.so.1") == ("usr/lib/libq.so.1", "default")
    assert any("its text was not given" in p for p in linkage.problems)
    linkage = _linkage(tmp_path / "dir", {APP: files[APP], "usr/lib/libq.so.1": files[
        "usr/lib/libq.so.1"], f"{PATH_FILE}/x": ""})
    assert _where(linkage, "libq.so.1") == (None, "not-found")
    assert any("a directory; musl reads no path" in p for p in linkage.problems)


# -- against the real musl loader --------------------------------------------------------------

M = "/opt/m"
ALT = f"{M}/alt/lib/ld-musl-x86_64.so.1"  # a loader whose path file is absent: defaults
EMPTY = f"{M}/empty/lib/ld-musl-x86_64.so.1"  # a loader whose path file is empty
LLP = f"{M}/llp"
PRELOADS = {f"{M}/pre/consumer": f"{M}/pre/p/libmp-pre.so\tlibmpnamed.so.1 libmpmissing.so.1"}


def _musl_cases(stage: Staging) -> None:
    stage.layer.file(PATH_FILE, f"{M}/pathdir\n/lib/x86_64-linux-musl:/usr/lib/x86_64-linux-musl\n")
    for alt in (ALT, EMPTY):
        stage.layer.symlink(alt.lstrip("/"), "/lib/x86_64-linux-musl/libc.so")
    stage.layer.file("opt/m/empty/etc/ld-musl-x86_64.path", "")
    # m1 a directory of the path file; m2 /usr/local/lib is not searched with a path file
    stage.lib(f"{M}/pathdir/libmpath.so.1", "libmpath.so.1")
    stage.lib("/usr/local/lib/libmlocal.so.1", "libmlocal.so.1")
    stage.consumer(f"{M}/path/consumer", ["libmpath.so.1"])
    stage.consumer(f"{M}/nolocal/consumer", ["libmlocal.so.1"])
    # m3 without a path file, the defaults; m4 an empty path file searches nothing
    stage.consumer(f"{M}/alt/consumer", ["libmlocal.so.1"],
                   extra=(f"-Wl,--dynamic-linker={ALT}",))
    stage.lib("/usr/lib/libmempty.so.1", "libmempty.so.1")
    stage.consumer(f"{M}/empty/consumer", ["libmempty.so.1"],
                   extra=(f"-Wl,--dynamic-linker={EMPTY}",))
    # m5 LD_LIBRARY_PATH before RPATH; m6 no $ORIGIN in LD_LIBRARY_PATH
    stage.lib(f"{M}/llprec/lib/libmllp.so.1", "libmllp.so.1")
    stage.lib(f"{LLP}/libmllp.so.1", "libmllp.so.1")
    stage.consumer(f"{M}/llprec/consumer", ["libmllp.so.1"], [f"{M}/llprec/lib"])
    stage.lib(f"{M}/llporg/llp/libmllporg.so.1", "libmllporg.so.1")
    stage.consumer(f"{M}/llporg/consumer", ["libmllporg.so.1"])
    # m7 DT_RUNPATH is inherited too; m8 $ORIGIN in a library's RPATH
    stage.lib(f"{M}/inh/lib/libminha.so.1", "libminha.so.1", ["libminhb.so.1"], ["$ORIGIN/sub"])
    stage.lib(f"{M}/inh/lib/libminhb.so.1", "libminhb.so.1", ["libminhc.so.1"])
    stage.lib(f"{M}/inh/lib/sub/libminhc.so.1", "libminhc.so.1")
    stage.consumer(f"{M}/inh/consumer", ["libminha.so.1"], [f"{M}/inh/lib"], RUNPATH)
    # m9 a '$' token other than $ORIGIN: the whole RPATH ignored
    stage.lib(f"{M}/dollar/lib/libmdollar.so.1", "libmdollar.so.1")
    stage.consumer(f"{M}/dollar/consumer", ["libmdollar.so.1"],
                   ["$LIB/x", f"{M}/dollar/lib"])
    # m10 SONAMEs play no part: libmsn-alt.so (SONAME libmsn.so.1) does not stand for it
    stage.lib(f"{M}/sn/lib/libmsn.so.1", "libmsn.so.1")
    stage.consumer(f"{M}/sn/consumer", ["libmsn-alt.so", "libmsn.so.1"], [f"{M}/sn/lib"])
    stage.lib(f"{M}/sn/lib/libmsn-alt.so", "libmsn.so.1")  # deployed under the other SONAME
    # m11 no machine check: an aarch64 file first in the RPATH is taken
    stage.layer.file("opt/m/dec/a/libmdec.so.1", build_shared_object(
        "libmdec.so.1", machine="aarch64"), mode=0o755)
    stage.lib(f"{M}/dec/b/libmdec.so.1", "libmdec.so.1")
    stage.consumer(f"{M}/dec/consumer", ["libmdec.so.1"], [f"{M}/dec/a", f"{M}/dec/b"])
    # m12 a directory, a non-ELF file, a symlink loop: each fails its name, the rest load
    stage.layer.dir("opt/m/bad/a/libmbdir.so.1")
    stage.layer.file("opt/m/bad/a/libmbne.so.1", "INPUT(-lc)\n")
    stage.layer.symlink("opt/m/bad/a/libmbloop.so.1", "libmbloop.so.1")
    for name in ("libmbdir.so.1", "libmbne.so.1", "libmbloop.so.1", "libmbok.so.1"):
        stage.lib(f"{M}/bad/b/{name}", name)
    stage.consumer(f"{M}/bad/consumer", ["libmbdir.so.1", "libmbne.so.1", "libmbloop.so.1",
                                          "libmbok.so.1"], [f"{M}/bad/a", f"{M}/bad/b"])
    # m13 libc, libm, libpthread, libdl... are the loader itself
    stage.consumer(f"{M}/self/consumer", ["libm.so.6", "libpthread.so.0", "libdl.so.2"])
    # m14 LD_PRELOAD (a tab separates): a path, and a name searched without any RPATH
    stage.lib(f"{M}/pre/p/libmp-pre.so", "libmpa.so.1")
    stage.lib(f"{M}/pre/lib/libmpa.so.1", "libmpa.so.1")
    stage.lib(f"{M}/pre/lib/libmpnamed.so.1", "libmpnamed.so.1")
    stage.lib(f"{M}/pathdir/libmpnamed.so.1", "libmpnamed.so.1")
    stage.consumer(f"{M}/pre/consumer", ["libmpa.so.1"], [f"{M}/pre/lib"])


EXPECTED_HOW = {  # the step that decides each case's library
    f"{M}/path/consumer": ("libmpath.so.1", "default", f"{M}/pathdir/libmpath.so.1"),
    f"{M}/nolocal/consumer": ("libmlocal.so.1", "not-found", None),
    f"{M}/alt/consumer": ("libmlocal.so.1", "default", "/usr/local/lib/libmlocal.so.1"),
    f"{M}/empty/consumer": ("libmempty.so.1", "not-found", None),
    f"{M}/llprec/consumer": ("libmllp.so.1", "ld_library_path", f"{LLP}/libmllp.so.1"),
    f"{M}/llporg/consumer": ("libmllporg.so.1", "not-found", None),
    f"{M}/inh/consumer": ("libminhb.so.1", "runpath", f"{M}/inh/lib/libminhb.so.1"),
    f"{M}/dollar/consumer": ("libmdollar.so.1", "not-found", None),
    f"{M}/sn/consumer": ("libmsn.so.1", "rpath", f"{M}/sn/lib/libmsn.so.1"),
    f"{M}/dec/consumer": ("libmdec.so.1", "rpath", f"{M}/dec/a/libmdec.so.1"),
    f"{M}/bad/consumer": ("libmbok.so.1", "rpath", f"{M}/bad/b/libmbok.so.1"),
    f"{M}/self/consumer": ("libpthread.so.0", "already-loaded", "/lib/x86_64-linux-musl/libc.so"),
    f"{M}/pre/consumer": ("libmpnamed.so.1", "default", f"{M}/pathdir/libmpnamed.so.1"),
}


@pytest.fixture(scope="module")
def musl_built(tmp_path_factory: pytest.TempPathFactory, engine: Engine) -> Built:
    from fixtures.debs import deb_layers

    work = tmp_path_factory.mktemp("musl")
    stage = Staging(work / "stage", cc="musl-gcc")
    stage.layer.symlink("bin/sh", "busybox")
    _musl_cases(stage)
    musl, busybox = deb_layers(("musl", "busybox-static"))
    env = ["PATH=/bin", f"LD_LIBRARY_PATH={LLP}:$ORIGIN/llp"]
    view = _view(work, [musl, busybox, stage.layer], env,
                 analyze=("*.so*", "opt/m/*consumer"))
    archive = oci_to_docker_archive(work / "image", "t", work / "musl.tar", "localhost/musl-cases:t")
    (image,) = engine.load(archive)
    return Built(view, image, stage.consumers)


def _ldd(text: str) -> dict[str, dict[str, list[str | None]]]:
    """``== consumer`` sections of musl's ldd output: name -> paths (None: an error) in order."""
    out: dict[str, dict[str, list[str | None]]] = {}
    current: dict[str, list[str | None]] = {}
    for line in text.splitlines():
        if line.startswith("== "):
            current = out.setdefault(line[3:].strip(), {})
        elif m := re.match(r"\s+(\S+) => (\S+) \(0x", line):
            current.setdefault(m.group(1), []).append(m.group(2))
        elif m := re.search(r"Error loading shared library (\S+): ", line):
            current.setdefault(m.group(1), []).append(None)
    return out


def _printed(linkage: ConsumerLinkage, loader_file: str | None) -> dict[str, list[str | None]]:
    """What musl's ldd prints for ours: each newly mapped object, each failure but a preload's,
    and the loader once per reserved family (libc, libm, ...)."""
    seen = {linkage.consumer.lstrip("/"), loader_file}
    families: set[str] = set()
    out: dict[str, list[str | None]] = {}
    for r in linkage.resolutions:
        if r.how == "already-loaded":
            family = next((f for f in RESERVED if r.needed[3:].startswith(f)), None)
            if r.file == loader_file and r.needed.startswith("lib") and family \
                    and family not in families:
                families.add(family)
                out.setdefault(r.needed, []).append(r.file)
        elif r.file is None:
            if r.kind != "preload":
                out.setdefault(r.needed, []).append(None)
        elif r.file not in seen:
            seen.add(r.file)
            out.setdefault(r.needed, []).append(r.file)
    return out


@pytest.mark.engine
@pytest.mark.slow
def test_resolution_matches_the_real_musl_loader(musl_built: Built, engine: Engine) -> None:
    script = "; ".join(
        f"echo '== {c}'; " + (f"LD_PRELOAD='{PRELOADS[c]}' " if c in PRELOADS else "")
        + f"{LOADER} --list {c} 2>&1" for c in musl_built.consumers) + "; true"
    text = _run(engine, musl_built.image, script)
    listings = _ldd(text)
    assert set(listings) == set(musl_built.consumers) == set(EXPECTED_HOW)
    view = musl_built.view
    diffs: list[str] = []
    for consumer in musl_built.consumers:
        interp = (view.index.facts(consumer, OWNER) or {}).get("interp")
        assert interp and is_musl_loader(interp), consumer
        ours = linkage_of(view, OWNER, consumer, musl_path=_musl_path(view, interp),
                          ld_preload=PRELOADS.get(consumer))
        real = {name: [view.index.resolve(p) if p else None for p in paths]
                for name, paths in listings[consumer].items()}
        mine = _printed(ours, view.index.resolve(interp))
        if real != mine:
            diffs.append(f"{consumer}: musl {listings[consumer]}\n  ours {mine}\n  "
                         f"{[(r.needed, r.how, r.file) for r in ours.resolutions]}")
        needed, how, path = EXPECTED_HOW[consumer]
        got = ours.of(needed)
        want = view.index.resolve(path) if path else None
        if got is None or (got.how, got.file) != (how, want):
            diffs.append(f"{consumer}: {needed} expected {how} {want}, got {got}")
        if "libc.so" not in listings[consumer]:
            diffs.append(f"{consumer}: musl did not list libc.so: {listings[consumer]}")
    assert not diffs, "\n".join(diffs)
    assert len(EXPECTED_HOW) >= 13
