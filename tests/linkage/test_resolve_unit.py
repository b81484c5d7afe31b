"""resolve_linkage over small synthetic images (auditor.elfwriter libraries), as glibc's ld.so."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from auditor.audit import AuditOptions, audit
from auditor.elf.facts import elf_facts
from auditor.elfwriter import build_shared_object
from auditor.inventory.base import Cataloger, FileView
from auditor.linkage import CONF_GLOBS, linkage_of
from auditor.linkage.ldcache import cache_lookup, parse_ld_cache
from auditor.linkage.ldconf import parse_ld_conf
from auditor.linkage.model import ConsumerLinkage
from auditor.testing import LayerBuilder, build_oci_layout

OWNER = "test-elf"
APP = "opt/t/bin/app"
X86 = "usr/lib/x86_64-linux-gnu"


def _so(soname: str, **kwargs: Any) -> bytes:
    return build_shared_object(soname, **kwargs)


def _linkage(tmp_path: Path, files: dict[str, bytes | str], symlinks: dict[str, str] | None = None,
             env: list[str] | None = None, consumer: str = APP,
             **options: Any) -> ConsumerLinkage:
    views: list[FileView] = []
    cataloger = Cataloger(OWNER, 1, CONF_GLOBS, lambda view, _inv: views.append(view),
                          analyze_globs=("*.so*", "opt/t/bin/*"), analyze=elf_facts)
    layer = LayerBuilder()
    for path, data in files.items():
        layer.file(path, data, mode=0o755)
    for path, target in (symlinks or {}).items():
        layer.symlink(path, target)
    config = {"config": {"Env": env}} if env else None
    build_oci_layout(tmp_path / "image", [layer], tag="t", config=config)
    audit(f"oci:{tmp_path / 'image'}:t", AuditOptions(cache_dir=str(tmp_path / "cache")),
          catalogers=[cataloger])
    return linkage_of(views[0], OWNER, consumer, **options)


def _where(linkage: ConsumerLinkage, needed: str) -> tuple[str | None, str]:
    resolution = linkage.of(needed)
    assert resolution is not None, linkage
    return resolution.file, resolution.how


def _cache(entries: list[tuple[str, str, int]], old: bool = False) -> bytes:
    """An ld.so.cache in the new format (after an old-format table when ``old``)."""
    strings = bytearray()
    offsets: list[tuple[int, int]] = []
    head = 48 + 24 * len(entries)
    for key, path, _flags in entries:
        k = head + len(strings)
        strings += key.encode() + b"\0"
        v = head + len(strings)
        strings += path.encode() + b"\0"
        offsets.append((k, v))
    new = struct.pack("<20sIIB3xI12x", b"glibc-ld.so.cache1.1", len(entries), len(strings), 2, 0)
    for (k, v), (_key, _path, flags) in zip(offsets, entries, strict=True):
        new += struct.pack("<iIIIQ", flags, k, v, 0, 0)
    new += bytes(strings)
    if not old:
        return new
    prefix = b"ld.so-1.7.0\0" + struct.pack("<I", 1) + struct.pack("<iII", 3, 0, 0)
    return prefix + b"\0" * (-len(prefix) % 8) + new


# -- search order -------------------------------------------------------------------------------

def test_rpath_before_ld_library_path_and_default(tmp_path: Path) -> None:
    files = {APP: _so("app", needed=["libfoo.so.1"], rpath="/a"),
             "a/libfoo.so.1": _so("libfoo.so.1"), "c/libfoo.so.1": _so("libfoo.so.1"),
             f"{X86}/libfoo.so.1": _so("libfoo.so.1")}
    linkage = _linkage(tmp_path, files, env=["LD_LIBRARY_PATH=/c"])
    assert _where(linkage, "libfoo.so.1") == ("a/libfoo.so.1", "rpath")


def test_runpath_makes_rpath_ignored_and_comes_after_ld_library_path(tmp_path: Path) -> None:
    files = {APP: _so("app", needed=["libfoo.so.1", "libbar.so.1"], rpath="/a", runpath="/b"),
             "a/libfoo.so.1": _so("libfoo.so.1"), "b/libfoo.so.1": _so("libfoo.so.1"),
             "a/libbar.so.1": _so("libbar.so.1"), "b/libbar.so.1": _so("libbar.so.1"),
             "c/libbar.so.1": _so("libbar.so.1")}
    linkage = _linkage(tmp_path, files, env=["LD_LIBRARY_PATH=/nowhere:/c"])
    assert _where(linkage, "libfoo.so.1") == ("b/libfoo.so.1", "runpath")
    assert _where(linkage, "libbar.so.1") == ("c/libbar.so.1", "ld_library_path")
    assert linkage.of("libfoo.so.1").searched == ("/nowhere/libfoo.so.1", "/c/libfoo.so.1")


def test_runpath_is_not_inherited(tmp_path: Path) -> None:
    files = {APP: _so("app", needed=["liba.so.1"], runpath="/b"),
             "b/liba.so.1": _so("liba.so.1", needed=["libb.so.1"]),
             "b/libb.so.1": _so("libb.so.1")}
    linkage = _linkage(tmp_path, files)
    assert _where(linkage, "liba.so.1") == ("b/liba.so.1", "runpath")
    assert _where(linkage, "libb.so.1") == (None, "not-found")
    assert "/usr/lib/libb.so.1" in linkage.of("libb.so.1").searched


def test_rpath_is_inherited_down_the_chain(tmp_path: Path) -> None:
    files = {APP: _so("app", needed=["liba.so.1"], rpath="/a"),
             "a/liba.so.1": _so("liba.so.1", needed=["libb.so.1"]),
             "a/libb.so.1": _so("libb.so.1", needed=["libc2.so.1"], runpath="/nowhere"),
             "a/libc2.so.1": _so("libc2.so.1")}
    linkage = _linkage(tmp_path, files)
    assert _where(linkage, "libb.so.1") == ("a/libb.so.1", "rpath")
    # an object with DT_RUNPATH does not look at its loaders' DT_RPATH
    assert _where(linkage, "libc2.so.1") == (None, "not-found")


def test_origin_expansion(tmp_path: Path) -> None:
    files = {APP: _so("app", needed=["liba.so.1"], runpath="$ORIGIN/../lib"),
             "opt/t/lib/liba.so.1": _so("liba.so.1", needed=["libb.so.1"],
                                        rpath="${ORIGIN}/sub"),
             "opt/t/lib/sub/libb.so.1": _so("libb.so.1")}
    linkage = _linkage(tmp_path, files)
    assert _where(linkage, "liba.so.1") == ("opt/t/lib/liba.so.1", "runpath")
    assert _where(linkage, "libb.so.1") == ("opt/t/lib/sub/libb.so.1", "rpath")


def test_default_dirs_in_order(tmp_path: Path) -> None:
    files = {APP: _so("app", needed=["libz.so.1"]), "usr/lib/libz.so.1": _so("libz.so.1"),
             f"{X86}/libz.so.1": _so("libz.so.1")}
    assert _where(_linkage(tmp_path, files), "libz.so.1") == (f"{X86}/libz.so.1", "default")


def test_ld_so_cache_before_default_dirs_and_conf_include(tmp_path: Path) -> None:
    cache = _cache([("libq.so.1", "/opt/q/lib/libq.so.1", 0x0303),
                    ("libq.so.1", "/opt/wrong/libq.so.1", 0x0A03)])
    files = {APP: _so("app", needed=["libq.so.1", "libr.so.1"]),
             "opt/q/lib/libq.so.1": _so("libq.so.1"), f"{X86}/libq.so.1": _so("libq.so.1"),
             "opt/r/libr.so.1": _so("libr.so.1"), "etc/ld.so.cache": cache,
             "etc/ld.so.conf": "include /etc/ld.so.conf.d/*.conf\n",
             "etc/ld.so.conf.d/q.conf": "/opt/q/lib\n", "etc/ld.so.conf.d/r.conf": "/opt/r # x\n"}
    linkage = _linkage(tmp_path, files)
    assert _where(linkage, "libq.so.1") == ("opt/q/lib/libq.so.1", "ld.so.cache")
    # in an ld.so.conf directory but not in the cache: ld.so does not find it (ldconfig not run)
    assert _where(linkage, "libr.so.1") == (None, "not-found")
    assert any("libr.so.1: in /opt/r (ld.so.conf)" in p for p in linkage.problems)


def test_old_format_cache_prefix(tmp_path: Path) -> None:
    cache = _cache([("libq.so.1", "/opt/q/libq.so.1", 0x0303)], old=True)
    files = {APP: _so("app", needed=["libq.so.1"]), "opt/q/libq.so.1": _so("libq.so.1"),
             "etc/ld.so.cache": cache}
    assert _where(_linkage(tmp_path, files), "libq.so.1") == ("opt/q/libq.so.1", "ld.so.cache")


def test_wrong_machine_decoy_is_skipped(tmp_path: Path) -> None:
    files = {APP: _so("app", needed=["libfoo.so.1"], rpath="/a"),
             "a/libfoo.so.1": _so("libfoo.so.1", machine="aarch64"),
             f"{X86}/libfoo.so.1": _so("libfoo.so.1"), "a/libbar.so.1": "not elf"}
    linkage = _linkage(tmp_path, files)
    assert _where(linkage, "libfoo.so.1") == (f"{X86}/libfoo.so.1", "default")
    assert linkage.of("libfoo.so.1").searched[0] == "/a/libfoo.so.1"
    assert any("aarch64" in p for p in linkage.problems)


def test_symlink_chain_resolves_inside_the_root(tmp_path: Path) -> None:
    files = {APP: _so("app", needed=["libz.so.1"]), "opt/real/libz.so.1.2.13": _so("libz.so.1")}
    links = {f"{X86}/libz.so.1": "libz.so.1.2", f"{X86}/libz.so.1.2": "../../../../../opt/real/x",
             "opt/real/x": "/opt/real/libz.so.1.2.13"}
    linkage = _linkage(tmp_path, files, links)
    resolution = linkage.of("libz.so.1")
    assert (resolution.path, resolution.file) == (f"/{X86}/libz.so.1", "opt/real/libz.so.1.2.13")


def test_already_loaded_by_name_soname_and_file(tmp_path: Path) -> None:
    files = {APP: _so("app", needed=["libx.so", "liby.so.1"], runpath="/a"),
             "a/libx.so": _so("libx.so.1"), "a/liby.so.1": _so("liby.so.1", needed=["libx.so.1"]),
             f"{X86}/libx.so.1": _so("libx.so.1")}
    linkage = _linkage(tmp_path, files)
    assert _where(linkage, "libx.so.1") == ("a/libx.so", "already-loaded")


def test_cycles_and_looping_symlinks_end(tmp_path: Path) -> None:
    files = {APP: _so("app", needed=["liba.so.1", "libloop.so.1"], rpath="/a"),
             "a/liba.so.1": _so("liba.so.1", needed=["libb.so.1"]),
             "a/libb.so.1": _so("libb.so.1", needed=["liba.so.1", "libb.so.1"])}
    links = {"a/libloop.so.1": "libloop.so.1"}
    linkage = _linkage(tmp_path, files, links)
    assert [r.how for r in linkage.resolutions] == ["rpath", "not-found", "rpath",
                                                    "already-loaded", "already-loaded"]
    assert any("dangles or loops" in p for p in linkage.problems)


def test_missing_library_lists_what_was_searched(tmp_path: Path) -> None:
    linkage = _linkage(tmp_path, {APP: _so("app", needed=["libnone.so.9"])})
    resolution = linkage.of("libnone.so.9")
    assert resolution.how == "not-found" and resolution.path is None
    assert resolution.searched[0] == f"/{X86.replace('usr/', '')}/libnone.so.9"


def test_hostile_paths_are_bounded(tmp_path: Path) -> None:
    long_dir = "/" + "d" * 5000
    files = {APP: _so("app", needed=["libfoo.so.1"], rpath=f"/../../../a:{long_dir}:" * 300),
             "a/libfoo.so.1": _so("libfoo.so.1")}
    linkage = _linkage(tmp_path, files)
    assert _where(linkage, "libfoo.so.1") == ("a/libfoo.so.1", "rpath")
    assert any("climbs above the image root" in p for p in linkage.problems)


def test_a_directory_or_non_elf_file_where_a_library_is_looked_for_is_fatal(
        tmp_path: Path) -> None:
    files = {APP: _so("app", needed=["libok.so.1", "libnotelf.so.1", "libafter.so.1"],
                      rpath="/a:/b"),
             "b/libok.so.1": _so("libok.so.1"), "a/libnotelf.so.1": "INPUT(-lc)\n",
             "b/libnotelf.so.1": _so("libnotelf.so.1"), "b/libafter.so.1": _so("libafter.so.1")}
    linkage = _linkage(tmp_path, files)
    assert linkage.fatal is not None and linkage.fatal.startswith("/a/libnotelf.so.1: not an ELF")
    assert [r.how for r in linkage.resolutions] == ["rpath", "not-found"]
    layer_dir = {APP: _so("app", needed=["libd.so.1"], rpath="/a:/b"), "a/libd.so.1/x": "",
                 "b/libd.so.1": _so("libd.so.1")}
    linkage = _linkage(tmp_path / "dir", layer_dir)
    assert linkage.fatal == "/a/libd.so.1: cannot read file data (a directory)"


def test_default_dirs_follow_where_the_loader_lives(tmp_path: Path) -> None:
    interp = _so("ld-linux-x86-64.so.2")
    fedora = {APP: _so("app", needed=["libz.so.1"]), "usr/lib64/ld-linux-x86-64.so.2": interp,
              "usr/lib/x86_64-linux-gnu/libz.so.1": _so("libz.so.1"),
              "usr/lib64/libz.so.1": _so("libz.so.1")}
    linkage = _linkage(tmp_path, fedora, {"lib64": "usr/lib64"})
    assert _where(linkage, "libz.so.1") == ("usr/lib64/libz.so.1", "default")
    debian = {APP: _so("app", needed=["libz.so.1"]), f"{X86}/ld-linux-x86-64.so.2": interp,
              "usr/lib64/libz.so.1": _so("libz.so.1")}
    linkage = _linkage(tmp_path / "d", debian,
                       {"lib64/ld-linux-x86-64.so.2": f"/{X86}/ld-linux-x86-64.so.2"})
    assert _where(linkage, "libz.so.1") == (None, "not-found")


def test_interpreter_soname_is_already_loaded_and_slash_needed_is_direct(tmp_path: Path) -> None:
    files = {APP: _so("app", needed=["/opt/x/libx.so", "ld-linux-x86-64.so.2"]),
             "opt/x/libx.so": _so("libx.so.1"),
             f"{X86}/ld-linux-x86-64.so.2": _so("ld-linux-x86-64.so.2")}
    linkage = _linkage(tmp_path, files, {"lib64/ld-linux-x86-64.so.2": f"/{X86}/ld-linux-x86-64.so.2"})
    assert _where(linkage, "/opt/x/libx.so") == ("opt/x/libx.so", "direct")
    assert _where(linkage, "ld-linux-x86-64.so.2") == (f"{X86}/ld-linux-x86-64.so.2",
                                                       "already-loaded")


def test_glibc_hwcaps_subdirectories(tmp_path: Path) -> None:
    files = {APP: _so("app", needed=["libh.so.1"], runpath="/h"), "h/libh.so.1": _so("libh.so.1"),
             "h/glibc-hwcaps/x86-64-v3/libh.so.1": _so("libh.so.1")}
    linkage = _linkage(tmp_path, files)  # the CPU unknown: the plain file, the variant noted
    assert _where(linkage, "libh.so.1") == ("h/libh.so.1", "runpath")
    assert any("x86-64-v3 (glibc-hwcaps)" in p for p in linkage.problems)
    subdirs = ["glibc-hwcaps/x86-64-v3", "glibc-hwcaps/x86-64-v2"]
    linkage = _linkage(tmp_path / "cpu", files, hwcaps=subdirs)
    assert _where(linkage, "libh.so.1") == ("h/glibc-hwcaps/x86-64-v3/libh.so.1", "runpath")


# -- parsers ------------------------------------------------------------------------------------

def test_ld_cache_parser_is_defensive() -> None:
    good = _cache([("liba.so.1", "/lib/liba.so.1", 0x0303)])
    entries, problems = parse_ld_cache(good)
    assert [(e.key, e.path) for e in entries] == [("liba.so.1", "/lib/liba.so.1")] and not problems
    assert cache_lookup(entries, "liba.so.1", "aarch64", 64) == []
    for bad in (b"", b"garbage", good[:40], good[:60], b"ld.so-1.7.0\0\xff\xff\xff\xff"):
        entries, problems = parse_ld_cache(bad)
        assert problems or entries == []
    lying = bytearray(good)
    lying[20:24] = struct.pack("<I", 10**9)
    assert parse_ld_cache(bytes(lying))[1]


def test_ld_conf_includes_globs_and_cycles() -> None:
    files = {"/etc/ld.so.conf": "include /etc/ld.so.conf.d/*.conf\n/usr/local/lib\n",
             "/etc/ld.so.conf.d/b.conf": "/opt/b\ninclude /etc/ld.so.conf\n",
             "/etc/ld.so.conf.d/a.conf": "# comment\n/opt/a/ /opt/a2,/opt/a3\n"}

    def glob(pattern: str) -> list[str]:
        prefix = pattern.split("*")[0]
        return [p for p in files if p.startswith(prefix) and p.endswith(".conf")]

    dirs, problems = parse_ld_conf("/etc/ld.so.conf", files.get, glob)
    assert dirs == ["/opt/a", "/opt/a2", "/opt/a3", "/opt/b", "/usr/local/lib"]
    assert any("cycle" in p for p in problems)


def test_dlopen_names_are_searched_as_the_consumers_own_needs(tmp_path: Path) -> None:
    files = {APP: _so("app", needed=["liba.so.1"], runpath="/r"),
             "r/liba.so.1": _so("liba.so.1"), "r/libdl.so.7": _so("libdl.so.7",
                                                                   needed=["libdep.so.1"]),
             "r/libdep.so.1": _so("libdep.so.1"), "c/libdl.so.7": _so("libdl.so.7")}
    linkage = _linkage(tmp_path, files, env=["LD_LIBRARY_PATH=/c"],
                       dlopen=["libdl.so.7", "liba.so.1", "libnone.so.1"])
    opened = {r.needed: r for r in linkage.resolutions if r.kind == "dlopen"}
    assert set(opened) == {"libdl.so.7", "liba.so.1", "libnone.so.1"}
    assert (opened["libdl.so.7"].file, opened["libdl.so.7"].how) == ("c/libdl.so.7",
                                                                       "ld_library_path")
    assert opened["liba.so.1"].how == "already-loaded"  # mapped by DT_NEEDED before
    assert opened["libnone.so.1"].how == "not-found"
    assert linkage.of("libdep.so.1") is None  # the LD_LIBRARY_PATH copy needs nothing
    # DT_NEEDED entries come first, in load order
    assert [r.kind for r in linkage.resolutions][:1] == ["needed"]


def test_a_loaded_library_may_dlopen_too_with_its_own_search(tmp_path: Path) -> None:
    # libshim is found by RUNPATH; it opens libpart by name, found by its own RPATH ($ORIGIN)
    files = {APP: _so("app", needed=["libshim.so.9"], runpath="/s"),
             "s/libshim.so.9": _so("libshim.so.9", rpath="$ORIGIN/parts"),
             "s/parts/libpart.so.9": _so("libpart.so.9", needed=["libpartdep.so.1"]),
             "s/parts/libpartdep.so.1": _so("libpartdep.so.1"),
             f"{X86}/libpart.so.9": _so("libpart.so.9")}

    def opens(file: str) -> list[str]:
        return {"s/libshim.so.9": ["libpart.so.9"],
                "s/parts/libpart.so.9": ["libshim.so.9"]}.get(file, [])

    linkage = _linkage(tmp_path, files, dlopen=opens)
    part = linkage.of("libpart.so.9")
    assert (part.file, part.how, part.kind, part.requester) == (
        "s/parts/libpart.so.9", "rpath", "dlopen", "s/libshim.so.9")
    assert _where(linkage, "libpartdep.so.1") == ("s/parts/libpartdep.so.1", "rpath")  # inherited
    back = [r for r in linkage.resolutions if r.needed == "libshim.so.9" and r.kind == "dlopen"]
    assert [r.how for r in back] == ["already-loaded"]  # and the loop ends
