"""Layering semantics of the merged rootfs: overwrites, whiteouts, opaque directories, type changes,
symlinked parents, hardlinks, captured content, and symlink resolution confined to the image.

Most tests scan real tar bytes (``LayerBuilder.tar_bytes()``) with ``scan_layer`` and merge them
with ``RootfsIndex.apply``, exactly as ``build_rootfs`` does; a few go end to end through an OCI
layout and ``audit()``, cold and then from the layer cache.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import pytest

from auditor.audit import AuditOptions, audit
from auditor.digest import digest_bytes
from auditor.inventory import CATALOGERS, Cataloger, FileView, Inventory
from auditor.model import FileEntry
from auditor.report.document import build_document
from auditor.rootfs.build import Want, compile_wants, wanted_over
from auditor.rootfs.decompress import Limits
from auditor.rootfs.index import MAX_SYMLINK_HOPS, RootfsIndex
from auditor.rootfs.walker import LayerScan, scan_layer
from auditor.testing import LayerBuilder, build_oci_layout

EVERYTHING = ("*",)  # fnmatch's "*" crosses "/": every path


class Merged:
    """Layers scanned and merged in order, with captured content kept in memory."""

    def __init__(self, *layers: LayerBuilder, globs: Sequence[str] = EVERYTHING,
                 limits: Limits = Limits()) -> None:
        self.blobs: dict[str, bytes] = {}
        self.index = RootfsIndex()
        self.scans: list[LayerScan] = []
        want = compile_wants([Want("test", 1, tuple(globs))])
        for number, layer in enumerate(layers):
            scan = scan_layer(io.BytesIO(layer.tar_bytes()), number,
                              wanted_over(self.index, want), self._store, limits)
            self.scans.append(scan)
            self.index.apply(scan)

    def _store(self, data: bytes) -> str:
        digest = digest_bytes(data)
        self.blobs[digest] = data
        return digest

    def content(self, path: str) -> bytes | None:
        """What a cataloger reading ``path`` would get (following symlinks)."""
        return self.index.read(path, self.blobs.get)

    def entry(self, path: str) -> FileEntry | None:
        return self.index.entries.get(path)

    @property
    def paths(self) -> set[str]:
        return set(self.index.entries)


# -- overwrites ------------------------------------------------------------------------------
def test_upper_layer_file_overwrites_lower_and_takes_the_attribution() -> None:
    m = Merged(
        LayerBuilder().dir("etc").file("etc/app.conf", "old\n").file("etc/keep", "k"),
        LayerBuilder().dir("etc").file("etc/app.conf", "new content\n", mode=0o600),
    )
    entry = m.entry("etc/app.conf")
    assert entry is not None
    assert (entry.type, entry.layer, entry.size, entry.mode) == ("file", 1, 12, 0o600)
    assert m.content("etc/app.conf") == b"new content\n"
    # The untouched sibling keeps its own layer; the re-declared directory moves to layer 1.
    assert m.entry("etc/keep").layer == 0  # type: ignore[union-attr]
    assert m.entry("etc").layer == 1  # type: ignore[union-attr]
    assert m.index.counts() == {"dir": 1, "file": 2}


def test_three_layers_the_last_writer_wins() -> None:
    m = Merged(*(LayerBuilder().file("f", f"v{i}" * (i + 1)) for i in range(3)))
    assert m.entry("f") == FileEntry("f", "file", 2, 0o644, 6)
    assert m.content("f") == b"v2v2v2"
    assert m.index.total_bytes() == 6


# -- whiteouts -------------------------------------------------------------------------------
def test_whiteout_removes_a_file_and_only_that_file() -> None:
    m = Merged(
        LayerBuilder().dir("etc").file("etc/a", "a").file("etc/ab", "ab").file("etc/a.d", "x"),
        LayerBuilder().whiteout("etc/a"),
    )
    assert m.paths == {"etc", "etc/ab", "etc/a.d"}
    assert m.content("etc/a") is None
    assert m.index.whiteouts_applied == 1
    assert m.index.skipped == []


def test_whiteout_removes_a_whole_directory_subtree_but_not_its_prefix_siblings() -> None:
    lower = (LayerBuilder().dir("opt").dir("opt/app").dir("opt/app/lib").dir("opt/app/lib/deep")
             .file("opt/app/lib/deep/x.so", "x").file("opt/app/bin", "b")
             .symlink("opt/app/current", "lib").file("opt/app2", "sibling")
             .dir("opt/apple").file("opt/apple/y", "y"))
    m = Merged(lower, LayerBuilder().whiteout("opt/app"))
    assert m.paths == {"opt", "opt/app2", "opt/apple", "opt/apple/y"}
    assert not any(p.startswith("opt/app/") for p in m.index.captured)
    assert m.index.resolve("opt/app/lib") is None
    assert m.index.whiteouts_applied == 1
    assert list(m.index.glob("opt/app/*")) == []


def test_whiteout_then_recreate_in_the_same_layer_keeps_the_new_file() -> None:
    m = Merged(
        LayerBuilder().dir("d").file("d/old", "old").file("d/f", "v1"),
        LayerBuilder().whiteout("d").dir("d").file("d/f", "v2"),
    )
    assert m.paths == {"d", "d/f"}
    assert m.entry("d/f").layer == 1  # type: ignore[union-attr]
    assert m.content("d/f") == b"v2"


# -- opaque directories ----------------------------------------------------------------------
@pytest.mark.parametrize("marker_first", [True, False], ids=["marker-first", "marker-last"])
def test_opaque_directory_hides_lower_children_and_keeps_the_layers_own(marker_first: bool) -> None:
    lower = (LayerBuilder().dir("d").file("d/old", "old").dir("d/sub").file("d/sub/x", "x")
             .symlink("d/link", "old").file("d/same", "lower").dir("dd").file("dd/kept", "k"))
    upper = LayerBuilder().dir("d")
    if marker_first:
        upper.opaque("d")
    upper.file("d/new", "new").file("d/same", "upper")
    if not marker_first:
        upper.opaque("d")
    m = Merged(lower, upper)
    assert m.paths == {"d", "d/new", "d/same", "dd", "dd/kept"}
    assert m.content("d/same") == b"upper"
    assert m.content("d/sub/x") is None
    assert m.entry("d/new").layer == 1  # type: ignore[union-attr]
    assert m.entry("dd/kept").layer == 0  # type: ignore[union-attr]
    # An opaque marker is not a whiteout of a missing path: nothing is reported.
    assert m.index.skipped == []


def test_opaque_directory_in_a_middle_layer_keeps_what_upper_layers_add() -> None:
    m = Merged(
        LayerBuilder().dir("d").file("d/a", "a"),
        LayerBuilder().dir("d").opaque("d").file("d/b", "b"),
        LayerBuilder().dir("d").file("d/c", "c"),
    )
    assert m.paths == {"d", "d/b", "d/c"}
    assert [m.entry(p).layer for p in ("d/b", "d/c")] == [1, 2]  # type: ignore[union-attr]


# -- type changes ----------------------------------------------------------------------------
def test_file_replaced_by_a_directory() -> None:
    m = Merged(
        LayerBuilder().file("x", "i was a file"),
        LayerBuilder().dir("x").file("x/y", "child"),
    )
    assert m.entry("x").type == "dir"  # type: ignore[union-attr]
    assert m.entry("x").layer == 1  # type: ignore[union-attr]
    assert m.content("x") is None
    assert m.content("x/y") == b"child"


def test_directory_replaced_by_a_file_drops_the_whole_subtree() -> None:
    m = Merged(
        LayerBuilder().dir("x").dir("x/sub").file("x/sub/deep", "d").file("x/y", "y"),
        LayerBuilder().file("x", "now a file"),
    )
    assert m.paths == {"x"}
    assert m.entry("x") == FileEntry("x", "file", 1, 0o644, 10)
    assert m.index.captured.keys() == {"x"}
    assert m.index.resolve("x/y") is None
    # A later layer adding under "x" again must see a clean slate, not the old children.
    m2 = Merged(
        LayerBuilder().dir("x").file("x/y", "y"),
        LayerBuilder().file("x", "file"),
        LayerBuilder().dir("x").file("x/z", "z"),
    )
    assert m2.paths == {"x", "x/z"}


def test_file_replaced_by_a_symlink_and_symlink_replaced_by_a_file() -> None:
    m = Merged(
        LayerBuilder().file("real", "real content").file("a", "a content").symlink("b", "real"),
        LayerBuilder().symlink("a", "real").file("b", "b content"),
    )
    assert (m.entry("a").type, m.entry("a").link) == ("symlink", "real")  # type: ignore[union-attr]
    assert m.content("a") == b"real content"
    assert m.entry("b").type == "file"  # type: ignore[union-attr]
    assert m.content("b") == b"b content"


# -- symlinked parents -----------------------------------------------------------------------
def _usrmerge() -> LayerBuilder:
    return (LayerBuilder().dir("usr").dir("usr/lib").file("usr/lib/libc.so.6", "libc")
            .symlink("lib", "usr/lib").symlink("lib64", "/usr/lib").symlink("lib32", "lib"))


@pytest.mark.parametrize("parent", ["lib", "lib64", "lib32"],
                         ids=["relative-link", "absolute-link", "link-to-link"])
def test_entry_under_a_symlinked_parent_lands_at_the_links_target(parent: str) -> None:
    m = Merged(_usrmerge(), LayerBuilder().file(f"{parent}/x.so", "x"), globs=("*.so.6",))
    # As a container runtime applies it: through the symlink, into usr/lib.
    assert m.entry("usr/lib/x.so") == FileEntry("usr/lib/x.so", "file", 1, 0o644, 1)
    assert f"{parent}/x.so" not in m.paths
    assert m.entry(parent).type == "symlink"  # type: ignore[union-attr]  # the link survives
    assert m.index.lookup(f"{parent}/x.so") == m.entry("usr/lib/x.so")
    assert m.index.lookup("lib/x.so") == m.entry("usr/lib/x.so")
    assert m.content("usr/lib/libc.so.6") == b"libc"


def test_entry_under_a_symlinked_parent_overwrites_the_target_file() -> None:
    m = Merged(_usrmerge(), LayerBuilder().file("lib/libc.so.6", "patched libc"),
               globs=("usr/lib/*",))
    assert m.entry("usr/lib/libc.so.6").layer == 1  # type: ignore[union-attr]
    assert m.entry("usr/lib/libc.so.6").size == 12  # type: ignore[union-attr]
    # The old content must not survive under the path whose file was replaced.
    assert m.content("usr/lib/libc.so.6") != b"libc"


def test_captured_content_under_a_symlinked_parent_is_kept() -> None:
    m = Merged(_usrmerge(), LayerBuilder().file("lib/x.so", "x content"))
    assert "lib/x.so" in m.scans[1].captured  # the walker did capture it
    assert m.content("usr/lib/x.so") == b"x content"
    assert m.content("lib/x.so") == b"x content"


def test_want_on_the_canonical_path_captures_a_file_written_through_a_symlinked_parent() -> None:
    m = Merged(_usrmerge(), LayerBuilder().file("lib/x.so", "x content"), globs=("usr/lib/*",))
    assert m.content("usr/lib/x.so") == b"x content"


def test_directory_entry_replaces_a_symlink_as_runtimes_do() -> None:
    # containerd and moby remove an existing non-directory before creating a directory entry
    # (Lstat: a symlink is not a directory), so "lib/" in an upper layer replaces lib -> usr/lib.
    m = Merged(_usrmerge(), LayerBuilder().dir("lib").file("lib/x.so", "x"))
    assert m.entry("lib").type == "dir"  # type: ignore[union-attr]
    assert m.entry("lib/x.so").layer == 1  # type: ignore[union-attr]
    assert "usr/lib/x.so" not in m.paths
    assert m.content("usr/lib/libc.so.6") == b"libc"


def test_whiteout_through_a_symlinked_parent_removes_the_target() -> None:
    m = Merged(_usrmerge(), LayerBuilder().whiteout("lib/libc.so.6"))
    assert "usr/lib/libc.so.6" not in m.paths
    assert m.index.resolve("lib/libc.so.6") is None
    assert m.index.skipped == []  # not "whiteout of a path no lower layer has"


def test_opaque_marker_through_a_symlinked_parent_hides_the_targets_children() -> None:
    m = Merged(_usrmerge(), LayerBuilder().opaque("lib").file("lib/new.so", "n"))
    assert "usr/lib/libc.so.6" not in m.paths
    assert m.entry("usr/lib/new.so").layer == 1  # type: ignore[union-attr]


# -- hardlinks -------------------------------------------------------------------------------
def test_hardlink_to_a_file_in_a_lower_layer_is_kept_and_shares_size_and_content() -> None:
    m = Merged(
        LayerBuilder().dir("bin").file("bin/busybox", b"\x7fELF busybox", mode=0o755),
        LayerBuilder().hardlink("bin/sh", "bin/busybox").hardlink("bin/ls", "bin/busybox"),
    )
    for name in ("bin/sh", "bin/ls"):
        entry = m.entry(name)
        assert entry == FileEntry(name, "hardlink", 1, 0o755, 12, "bin/busybox")
        assert m.content(name) == b"\x7fELF busybox"
    assert m.index.skipped == []
    assert m.index.counts() == {"dir": 1, "file": 1, "hardlink": 2}


def test_hardlink_keeps_its_content_when_the_target_name_is_overwritten_later() -> None:
    m = Merged(
        LayerBuilder().file("a", "original"),
        LayerBuilder().hardlink("b", "a"),
        LayerBuilder().file("a", "replaced!!"),
    )
    assert m.content("a") == b"replaced!!"
    assert m.content("b") == b"original"  # same inode as the old "a", not the new one
    assert m.entry("b").size == 8  # type: ignore[union-attr]


def test_hardlink_whose_target_was_whited_out_is_skipped() -> None:
    m = Merged(
        LayerBuilder().file("a", "x"),
        LayerBuilder().whiteout("a").hardlink("b", "a"),
    )
    assert m.paths == set()
    assert [(s.layer, s.path) for s in m.index.skipped] == [(1, "b")]
    assert "missing" in m.index.skipped[0].reason


# -- captured content follows the merge ------------------------------------------------------
def test_captured_content_follows_overwrites_whiteouts_and_recreation() -> None:
    wants = ("etc/os-release",)
    layers = [
        LayerBuilder().dir("etc").file("etc/os-release", "ID=one\n"),
        LayerBuilder().file("etc/os-release", "ID=two\n"),
        LayerBuilder().whiteout("etc/os-release"),
        LayerBuilder().file("etc/os-release", "ID=four\n"),
    ]
    expected = [b"ID=one\n", b"ID=two\n", None, b"ID=four\n"]
    for upto, want in enumerate(expected, start=1):
        m = Merged(*layers[:upto], globs=wants)
        assert m.content("etc/os-release") == want, f"after {upto} layers"
        assert (m.index.content_digest("etc/os-release") is None) == (want is None)


def test_captured_content_is_dropped_when_an_upper_layer_makes_it_uncapturable() -> None:
    limits = Limits(max_capture_bytes=16)
    m = Merged(
        LayerBuilder().dir("etc").file("etc/os-release", "ID=small\n"),
        LayerBuilder().file("etc/os-release", "ID=big\n" + "#" * 100),
        globs=("etc/*",), limits=limits,
    )
    assert m.entry("etc/os-release").size == 107  # type: ignore[union-attr]
    assert m.content("etc/os-release") is None  # never the stale lower content
    assert [(s.layer, s.path) for s in m.index.skipped] == [(1, "etc/os-release")]


@pytest.mark.parametrize("upper", [
    LayerBuilder().dir("etc").opaque("etc"),
    LayerBuilder().whiteout("etc"),
    LayerBuilder().file("etc", "etc is a file now"),
    LayerBuilder().dir("etc/os-release").file("etc/os-release/x", "x"),
], ids=["opaque-parent", "whiteout-parent", "parent-now-file", "now-a-directory"])
def test_captured_content_disappears_with_its_file(upper: LayerBuilder) -> None:
    m = Merged(LayerBuilder().dir("etc").file("etc/os-release", "ID=x\n"), upper,
               globs=("etc/os-release",))
    assert m.content("etc/os-release") is None
    assert "etc/os-release" not in m.index.captured


def test_wanted_path_that_becomes_a_symlink_reads_the_link_target() -> None:
    m = Merged(
        LayerBuilder().dir("etc").file("etc/os-release", "ID=old\n").dir("usr").dir("usr/lib"),
        LayerBuilder().file("usr/lib/os-release", "ID=new\n")
                      .symlink("etc/os-release", "../usr/lib/os-release"),
        globs=("etc/os-release", "usr/lib/os-release"),
    )
    assert m.content("etc/os-release") == b"ID=new\n"
    assert m.index.content_digest("etc/os-release") == m.index.captured["usr/lib/os-release"]


# -- resolve ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def links() -> RootfsIndex:
    layer = (LayerBuilder().dir("etc").file("etc/passwd", "root:x:0:0::/root:/bin/sh\n")
             .dir("usr").dir("usr/lib").dir("usr/lib/x86_64-linux-gnu")
             .file("usr/lib/x86_64-linux-gnu/libc.so.6", "libc")
             .symlink("usr/lib/x86_64-linux-gnu/libc.so", "libc.so.6")  # relative, same dir
             .symlink("lib", "usr/lib")  # relative directory link
             .symlink("lib64", "/usr/lib/x86_64-linux-gnu")  # absolute directory link
             .symlink("usr/lib/libc.so", "x86_64-linux-gnu/./libc.so")  # relative, into a subdir
             .symlink("abs", "/lib/x86_64-linux-gnu/libc.so")  # absolute through a link
             .symlink("chain1", "chain2").symlink("chain2", "/chain3").symlink("chain3", "abs")
             .symlink("up", "usr/lib/../../etc/passwd")  # '..' inside the image
             .symlink("usr/lib/etc", "../../etc")
             .symlink("dangling", "usr/lib/nothing-here")
             .symlink("loop-a", "loop-b").symlink("loop-b", "loop-a").symlink("self", "self")
             .symlink("grow", "grow/x")  # expands forever
             .symlink("dirloop", ".").symlink("notadir", "etc/passwd/x"))
    index = RootfsIndex()
    index.apply(scan_layer(io.BytesIO(layer.tar_bytes()), 0, lambda _: False, digest_bytes))
    return index


@pytest.mark.parametrize(("path", "expected"), [
    ("usr/lib/x86_64-linux-gnu/libc.so", "usr/lib/x86_64-linux-gnu/libc.so.6"),
    ("lib/x86_64-linux-gnu/libc.so.6", "usr/lib/x86_64-linux-gnu/libc.so.6"),
    ("lib64/libc.so", "usr/lib/x86_64-linux-gnu/libc.so.6"),
    ("/lib64/libc.so", "usr/lib/x86_64-linux-gnu/libc.so.6"),
    ("usr/lib/libc.so", "usr/lib/x86_64-linux-gnu/libc.so.6"),
    ("abs", "usr/lib/x86_64-linux-gnu/libc.so.6"),
    ("chain1", "usr/lib/x86_64-linux-gnu/libc.so.6"),
    ("up", "etc/passwd"),
    ("usr/lib/etc/passwd", "etc/passwd"),
    ("lib/etc/passwd", "etc/passwd"),
    ("lib/../etc/passwd", None),  # lib/.. is usr (the kernel's rule), and usr/etc does not exist
    ("./usr//lib/./x86_64-linux-gnu/libc.so.6", "usr/lib/x86_64-linux-gnu/libc.so.6"),
    ("dirloop/dirloop/etc/passwd", "etc/passwd"),
    ("lib", "usr/lib"),
    ("", ""),
    ("dangling", None),
    ("nothing/at/all", None),
    ("notadir", None),
    ("loop-a", None),
    ("self", None),
    ("grow", None),
])
def test_resolve(links: RootfsIndex, path: str, expected: str | None) -> None:
    assert links.resolve(path) == expected


def test_resolve_without_following_the_final_link(links: RootfsIndex) -> None:
    assert links.resolve("chain1", follow_final=False) == "chain1"
    assert links.resolve("lib/libc.so", follow_final=False) == "usr/lib/libc.so"
    assert links.resolve("lib64", follow_final=False) == "lib64"
    assert links.resolve("loop-a", follow_final=False) == "loop-a"  # not followed: no loop


def test_lookup_and_read_follow_links(links: RootfsIndex) -> None:
    entry = links.lookup("abs")
    assert entry is not None and entry.path == "usr/lib/x86_64-linux-gnu/libc.so.6"
    assert entry.type == "file" and entry.size == 4
    assert links.lookup("loop-b") is None
    assert links.lookup("dangling") is None
    assert links.content_digest("self") is None


def test_symlink_hop_limit_is_the_kernels() -> None:
    def chain(length: int) -> RootfsIndex:
        layer = LayerBuilder().file("target", "t")
        for i in range(length):
            layer.symlink(f"s{i}", f"s{i + 1}" if i + 1 < length else "target")
        index = RootfsIndex()
        index.apply(scan_layer(io.BytesIO(layer.tar_bytes()), 0, lambda _: False, digest_bytes))
        return index

    assert chain(MAX_SYMLINK_HOPS).resolve("s0") == "target"  # 40 links: Linux follows them
    assert chain(MAX_SYMLINK_HOPS + 1).resolve("s0") is None  # 41: ELOOP


# -- end to end through a layout and audit() -------------------------------------------------
class Recorder:
    """A cataloger that reads every file it asked for, as the real ones do."""

    def __init__(self, globs: tuple[str, ...]) -> None:
        self.read: dict[str, bytes | None] = {}
        self.cataloger = Cataloger("recorder", 1, globs, self._run)

    def _run(self, view: FileView, inventory: Inventory) -> None:
        self.read = {}
        for path in view.index.glob("*"):
            data = view.read(path)
            if data is not None:
                self.read[path] = data


def test_layering_end_to_end_cold_and_from_the_layer_cache(tmp_path: Path) -> None:
    layers = [
        LayerBuilder().dir("etc").file("etc/os-release", 'ID=debian\nVERSION_ID="12"\n')
        .file("etc/motd", "hello").dir("var").dir("var/cache").file("var/cache/big", "cache")
        .dir("usr").dir("usr/lib").symlink("lib", "usr/lib").file("usr/lib/libz.so.1", "z1"),
        LayerBuilder().dir("etc").file("etc/motd", "bye").whiteout("var/cache")
        .dir("usr").dir("usr/lib").opaque("usr/lib").file("usr/lib/libz.so.2", "z2")
        .hardlink("etc/motd.link", "etc/motd"),
        LayerBuilder().dir("etc").file("etc/os-release", 'ID=ubuntu\nVERSION_ID="24.04"\n'),
    ]
    built = build_oci_layout(tmp_path / "layout", layers, tag="t")
    options = AuditOptions(cache_dir=str(tmp_path / "cache"))
    recorder = Recorder(("etc/*", "usr/lib/*"))
    results = []
    for _ in range(2):  # cold, then every layer from the cache
        result = audit(f"oci:{built.path}:t", options,
                       catalogers=[*CATALOGERS, recorder.cataloger])
        results.append((result.index.fingerprint(), dict(result.index.captured),
                        [(s.layer, s.path, s.reason) for s in result.index.skipped],
                        dict(recorder.read)))
        index = result.index
        assert set(index.entries) == {"etc", "etc/os-release", "etc/motd", "etc/motd.link",
                                      "var", "usr", "usr/lib", "usr/lib/libz.so.2", "lib"}
        assert {p: e.layer for p, e in index.entries.items() if e.type != "dir"} == {
            "etc/os-release": 2, "etc/motd": 1, "etc/motd.link": 1, "usr/lib/libz.so.2": 1,
            "lib": 0}
        assert recorder.read == {"etc/os-release": b'ID=ubuntu\nVERSION_ID="24.04"\n',
                                 "etc/motd": b"bye", "etc/motd.link": b"bye",
                                 "usr/lib/libz.so.2": b"z2"}
        assert index.whiteouts_applied == 1
        assert index.skipped == []
        document = build_document(result)
        assert [layer["files_visible"] for layer in document["layers"]] == [2, 5, 2]
        assert (document["os"]["id"], document["os"]["version_id"]) == ("ubuntu", "24.04")
    assert results[0] == results[1]


def test_files_resolve_when_the_tar_has_no_entries_for_their_directories() -> None:
    """Real layer tars may omit directory entries; their files are still there."""
    m = Merged(LayerBuilder().file("usr/lib/python3/x/METADATA", "m").symlink("lnk", "usr/lib"))
    assert m.index.resolve("usr/lib/python3/x/METADATA") == "usr/lib/python3/x/METADATA"
    assert m.content("lnk/python3/x/METADATA") == b"m"
    m.index.apply(scan_layer(io.BytesIO(LayerBuilder().whiteout("usr/lib").tar_bytes()), 1,
                             lambda p: True, m._store))
    assert m.paths == {"lnk"} and m.index.whiteouts_applied == 1
