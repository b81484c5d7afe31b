"""resolve_linkage over small synthetic images (auditor.elfwriter libraries), as glibc's ld.so."""

from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Any

from auditor.audit import AuditOptions, audit
from auditor.elf.facts import elf_facts
from auditor.elfwriter import build_shared_object
from auditor.inventory.base import Cataloger, FileView
from auditor.linkage import CONF_GLOBS, linkage_of
from auditor.linkage.hwcaps import glibc_version_tuple, legacy_cache_filter, legacy_hwcap_subdirs
from auditor.linkage.ldcache import CacheEntry, cache_lookup, parse_ld_cache
from auditor.linkage.ldconf import parse_ld_conf, parse_ld_preload, parse_ld_so_preload
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


def test_cache_lookup_ranks_hwcaps_entries_as_ld_so_does() -> None:
    def entry(path: str, hwcap: int) -> CacheEntry:
        return CacheEntry("libh.so.1", path, 0x0303, hwcap)

    tls, haswell, avx = entry("/l/tls/libh.so.1", 1 << 63), entry("/l/haswell/libh.so.1", 1 << 50), \
        entry("/l/avx512_1/libh.so.1", 1 << 2)
    v3 = entry("/l/glibc-hwcaps/x86-64-v3/libh.so.1", (1 << 62) | 1)
    v2 = entry("/l/glibc-hwcaps/x86-64-v2/libh.so.1", (1 << 62) | 0)
    plain = entry("/l/libh.so.1", 0)
    entries = [v2, v3, tls, haswell, avx, plain]
    amd = legacy_cache_filter("x86_64", None, "x86_64")
    assert cache_lookup(entries, "libh.so.1", "x86_64", 64, None, amd) == [tls, plain, v2, v3]
    cpu = ["glibc-hwcaps/x86-64-v3", "glibc-hwcaps/x86-64-v2"]
    assert cache_lookup(entries, "libh.so.1", "x86_64", 64, cpu, amd) == [v3, v2, tls, plain]
    assert cache_lookup(entries, "libh.so.1", "x86_64", 64, [], amd) == [tls, plain]
    intel = legacy_cache_filter("x86_64", ["x86_64", "avx512_1"], "haswell")
    assert cache_lookup(entries, "libh.so.1", "x86_64", 64, [], intel) == [tls, haswell, avx,
                                                                           plain]


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


# -- DF_1_NODEFLIB, preload, legacy hwcaps ------------------------------------------------------

def _dynamic(data: bytes) -> tuple[int, int]:
    """(offset, size) of an elfwriter object's PT_DYNAMIC (its fourth program header)."""
    offset, = struct.unpack_from("<Q", data, 64 + 56 * 3 + 8)
    size, = struct.unpack_from("<Q", data, 64 + 56 * 3 + 32)
    return offset, size


def _patch_dynamic(data: bytes, tag: int, value: int, nth: int = 0) -> bytes:
    """The ``nth`` entry with ``tag`` given ``value``; tag 0 (DT_NULL) adds an entry instead."""
    out = bytearray(data)
    offset, size = _dynamic(data)
    seen = 0
    for at in range(offset, offset + size, 16):
        entry_tag, = struct.unpack_from("<q", out, at)
        if entry_tag == (0 if tag not in _tags(data) else tag):
            if seen == nth:
                struct.pack_into("<qQ", out, at, tag, value)
                return bytes(out)
            seen += 1
    raise AssertionError(f"no dynamic entry {tag} #{nth}")


def _tags(data: bytes) -> list[int]:
    offset, size = _dynamic(data)
    return [struct.unpack_from("<q", data, at)[0] for at in range(offset, offset + size, 16)]


DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_FLAGS_1, DF_1_NODEFLIB = 1, 5, 10, 0x6FFFFFFB, 0x800


def test_nodeflib_skips_default_dirs_and_cache_entries_in_them(tmp_path: Path) -> None:
    cache = _cache([("libz.so.1", f"/{X86}/libz.so.1", 0x0303),
                    ("libq.so.1", "/opt/q/libq.so.1", 0x0303)])
    app = _patch_dynamic(_so("app", needed=["libz.so.1", "libq.so.1", "libdep.so.1"],
                             rpath="/d"), DT_FLAGS_1, DF_1_NODEFLIB)
    files = {APP: app, "etc/ld.so.cache": cache, f"{X86}/libz.so.1": _so("libz.so.1"),
             "opt/q/libq.so.1": _so("libq.so.1"), f"{X86}/libdef.so.1": _so("libdef.so.1"),
             # a dependency without the flag searches the default directories as usual
             "d/libdep.so.1": _so("libdep.so.1", needed=["libz.so.1", "libdef.so.1"])}
    linkage = _linkage(tmp_path, files)
    resolutions = [(r.needed, r.how, r.requester) for r in linkage.resolutions]
    assert resolutions[:3] == [("libz.so.1", "not-found", APP), ("libq.so.1", "ld.so.cache", APP),
                               ("libdep.so.1", "rpath", APP)]
    assert (linkage.resolutions[3].file, linkage.resolutions[3].how) == (f"{X86}/libz.so.1",
                                                                          "ld.so.cache")
    assert _where(linkage, "libdef.so.1") == (f"{X86}/libdef.so.1", "default")
    assert any("DF_1_NODEFLIB rejects the ld.so.cache entry" in p for p in linkage.problems)
    assert not any(s.startswith(f"/{X86}/") for s in linkage.of("libz.so.1").searched)


def test_preloads_load_first_satisfy_later_needs_and_failures_are_ignored(tmp_path: Path) -> None:
    files = {APP: _so("app", needed=["libfoo.so.1", "libc2.so.1"], rpath="/r"),
             "p/libpre.so": _so("libfoo.so.1", needed=["libpredep.so.1"]),
             "r/libfoo.so.1": _so("libfoo.so.1"), "r/libc2.so.1": _so("libc2.so.1"),
             "r/libpredep.so.1": _so("libpredep.so.1"), "r/libnamed.so.1": _so("libnamed.so.1"),
             "x/libdir.so.1/f": ""}
    # LD_PRELOAD's objects, then those given as names (ld.so --preload), then the file's
    linkage = _linkage(tmp_path, files, ld_preload="/p/libpre.so",
                       preload=["libnamed.so.1", "libmissing.so.1"],
                       ld_so_preload="/x/libdir.so.1  # a directory\n")
    assert linkage.fatal is None
    order = [(r.needed, r.kind, r.how) for r in linkage.resolutions]
    assert order == [
        ("/p/libpre.so", "preload", "direct"),
        ("libnamed.so.1", "preload", "rpath"),  # searched as the consumer's own needs
        ("libmissing.so.1", "preload", "not-found"),
        ("/x/libdir.so.1", "preload", "not-found"),  # a directory: ignored, not fatal
        ("libfoo.so.1", "needed", "already-loaded"),  # the preload's SONAME
        ("libc2.so.1", "needed", "rpath"),
        # the preload's needs after the consumer's, through the consumer's RPATH (its loader)
        ("libpredep.so.1", "needed", "rpath"),
    ]
    assert linkage.of("libfoo.so.1").file == "p/libpre.so"
    assert any("/x/libdir.so.1" in p and "ignored" in p for p in linkage.problems)


def test_preload_lists_are_split_as_the_loaders_do() -> None:
    assert parse_ld_preload("/a/libx.so libb.so:libc2.so  ::") == ["/a/libx.so", "libb.so",
                                                                   "libc2.so"]
    assert parse_ld_preload("liba.so\tlibb.so") == ["liba.so\tlibb.so"]  # glibc: not a separator
    assert parse_ld_preload("liba.so\tlibb.so\n", musl=True) == ["liba.so", "libb.so"]
    assert parse_ld_preload("x" * 5000 + ":liby.so") == ["liby.so"]
    assert parse_ld_preload(None) == [] and parse_ld_preload("") == []
    text = "# comment libz.so\n/lib/liba.so libb.so:libc2.so\t# libd.so\n\n  libe.so"
    assert parse_ld_so_preload(text) == ["/lib/liba.so", "libb.so", "libc2.so", "libe.so"]


def test_legacy_hwcaps_subdirs_in_glibc_order() -> None:
    # as LD_DEBUG=libs prints them on glibc 2.36, AT_PLATFORM x86_64
    assert legacy_hwcap_subdirs(["x86_64"], "x86_64") == [
        "tls/x86_64/x86_64", "tls/x86_64", "tls/x86_64", "tls", "x86_64/x86_64", "x86_64",
        "x86_64"]
    assert legacy_hwcap_subdirs(["x86_64"], "haswell")[:2] == ["tls/haswell/x86_64",
                                                               "tls/haswell"]
    assert legacy_hwcap_subdirs([], None) == ["tls"]
    assert len(legacy_hwcap_subdirs(["x86_64", "avx512_1"], "haswell")) == 15
    assert glibc_version_tuple("2.36-9+deb12u4") == (2, 36) == glibc_version_tuple((2, 36))
    assert glibc_version_tuple("unknown") is None


def test_legacy_hwcaps_subdirectories_follow_the_glibc_version(tmp_path: Path) -> None:
    files = {APP: _so("app", needed=["libh.so.1"], runpath="/h"), "h/libh.so.1": _so("libh.so.1"),
             "h/tls/libh.so.1": _so("libh.so.1"), "h/x86_64/libh.so.1": _so("libh.so.1"),
             "h/haswell/libh.so.1": _so("libh.so.1"),
             "h/glibc-hwcaps/x86-64-v2/libh.so.1": _so("libh.so.1")}
    v2 = ["glibc-hwcaps/x86-64-v2"]
    old = _linkage(tmp_path / "old", files, glibc_version="2.36", hwcaps=v2)
    assert _where(old, "libh.so.1") == ("h/glibc-hwcaps/x86-64-v2/libh.so.1", "runpath")
    old = _linkage(tmp_path / "old2", files, glibc_version="2.36", hwcaps=[])
    assert _where(old, "libh.so.1") == ("h/tls/libh.so.1", "runpath")
    assert old.of("libh.so.1").searched[:2] == ("/h/tls/x86_64/x86_64/libh.so.1",
                                                "/h/tls/x86_64/libh.so.1")
    haswell = _linkage(tmp_path / "hw", files, glibc_version="2.36", hwcaps=[],
                       platform="haswell", legacy_hwcaps=["x86_64"])
    assert _where(haswell, "libh.so.1") == ("h/tls/libh.so.1", "runpath")
    no_tls = {k: v for k, v in files.items() if "/tls/" not in k}
    haswell = _linkage(tmp_path / "hw2", no_tls, glibc_version="2.36", hwcaps=[],
                       platform="haswell", legacy_hwcaps=["x86_64"])
    assert _where(haswell, "libh.so.1") == ("h/haswell/libh.so.1", "runpath")
    amd = _linkage(tmp_path / "amd", no_tls, glibc_version="2.36", hwcaps=[])
    assert _where(amd, "libh.so.1") == ("h/x86_64/libh.so.1", "runpath")
    plain = {k: v for k, v in no_tls.items() if "/x86_64/" not in k}
    amd = _linkage(tmp_path / "amd2", plain, glibc_version="2.36", hwcaps=[])
    assert _where(amd, "libh.so.1") == ("h/libh.so.1", "runpath")
    assert any("h/haswell/libh.so.1 is loaded instead on CPUs with other legacy hwcaps" in p
               for p in amd.problems)
    new = _linkage(tmp_path / "new", files, glibc_version="2.37", hwcaps=[])
    assert _where(new, "libh.so.1") == ("h/libh.so.1", "runpath")
    assert not any("legacy" in p for p in new.problems)
    unknown = _linkage(tmp_path / "unknown", files, hwcaps=[])
    assert _where(unknown, "libh.so.1") == ("h/libh.so.1", "runpath")
    assert any("h/tls/libh.so.1 is loaded instead by glibc before 2.37" in p
               for p in unknown.problems)
    ancient = _linkage(tmp_path / "ancient", files, glibc_version="2.31", hwcaps=v2)
    assert _where(ancient, "libh.so.1") == ("h/tls/libh.so.1", "runpath")  # no glibc-hwcaps yet


# -- bad input ----------------------------------------------------------------------------------

def test_symlinks_out_of_the_root_stay_inside(tmp_path: Path) -> None:
    files = {APP: _so("app", needed=["libout.so.1", "libabs.so.1", "libdangle.so.1"], rpath="/l"),
             "etc/libout.so.1": _so("libout.so.1"), "libabs.so.1": _so("libabs.so.1")}
    links = {"l/libout.so.1": "../../../../../../../etc/libout.so.1",
             "l/libabs.so.1": "/../../../../libabs.so.1",
             "l/libdangle.so.1": "/../../host/lib/libdangle.so.1"}
    linkage = _linkage(tmp_path, files, links)
    assert _where(linkage, "libout.so.1") == ("etc/libout.so.1", "rpath")
    assert _where(linkage, "libabs.so.1") == ("libabs.so.1", "rpath")
    assert _where(linkage, "libdangle.so.1") == (None, "not-found")
    assert any("/l/libdangle.so.1: a symlink that dangles" in p for p in linkage.problems)


def test_absurd_rpaths_are_cut_with_a_problem_and_end_quickly(tmp_path: Path) -> None:
    long_one = "/" + "x" * 100_000
    many = ":".join(f"/{i}" for i in range(10_000))
    files = {APP: _so("app", needed=["libfoo.so.1"], rpath=f"{long_one}:/a"),
             "opt/t/bin/many": _so("many", needed=["libfoo.so.1", "libbar.so.1"],
                                   runpath=f"{many}:/a"),
             "a/libfoo.so.1": _so("libfoo.so.1"), "5/libbar.so.1": _so("libbar.so.1")}
    started = time.monotonic()
    linkage = _linkage(tmp_path, files)
    # the string is cut at 64 KiB: /a is lost, and said
    assert _where(linkage, "libfoo.so.1") == (None, "not-found")
    assert any("DT_RPATH string at" in p and "no NUL within" in p for p in linkage.problems)
    linkage = _linkage(tmp_path / "many", files, consumer="opt/t/bin/many")
    assert _where(linkage, "libbar.so.1") == ("5/libbar.so.1", "runpath")
    assert _where(linkage, "libfoo.so.1") == (None, "not-found")  # /a was element 10,001
    assert any("DT_RUNPATH of 10001 directories; first 256 kept" in p for p in linkage.problems)
    assert time.monotonic() - started < 30


def _malformed() -> dict[str, bytes]:
    base = _so("app", needed=["libok.so.1", "libgone.so.1"], rpath="/a")
    dyn_offset, _ = _dynamic(base)
    strsz = next(v for t, v in _dynamic_entries(base) if t == DT_STRSZ)
    gone = next(v for t, v in _dynamic_entries(base) if t == DT_NEEDED and v > 1)
    return {
        "truncated": base[:dyn_offset + 16],  # one DT_NEEDED left, and no DT_STRTAB
        "strtab-outside": _patch_dynamic(base, DT_STRTAB, 0x7FFF_0000),
        "needed-outside": _patch_dynamic(base, DT_NEEDED, 0x10_0000, nth=1),
        "no-nul": _patch_dynamic(base, DT_STRSZ, gone + 3),  # libgone.so.1 cut after "lib"
        "strsz": _patch_dynamic(base, DT_STRSZ, strsz),  # unchanged: the control
    }


def _dynamic_entries(data: bytes) -> list[tuple[int, int]]:
    offset, size = _dynamic(data)
    return [struct.unpack_from("<qQ", data, at) for at in range(offset, offset + size, 16)]


def test_malformed_dynamic_sections_are_problems_not_crashes(tmp_path: Path) -> None:
    cases = _malformed()
    files: dict[str, bytes | str] = {f"opt/t/bin/{name}": data for name, data in cases.items()}
    files["a/libok.so.1"] = _so("libok.so.1")
    expect = {
        "truncated": ("dynamic section runs past the end of the file", []),
        "strtab-outside": ("DT_STRTAB points outside the file", []),
        "needed-outside": ("DT_NEEDED string offset 0x100000 outside the string table",
                           ["libok.so.1"]),
        "no-nul": ("has no NUL within 3 bytes; cut there", ["libok.so.1", "lib"]),
        "strsz": (None, ["libok.so.1", "libgone.so.1"]),
    }
    for name, (problem, needed) in expect.items():
        linkage = _linkage(tmp_path / name, files, consumer=f"opt/t/bin/{name}")
        assert [r.needed for r in linkage.resolutions] == needed, name
        malformed = [p for p in linkage.problems if "malformed ELF" in p]
        if problem is None:
            assert not malformed, name
        else:
            assert any(problem in p for p in malformed), (name, linkage.problems)
