"""Analyzers: files handed over as they stream by, only their facts kept and cached per layer."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, BinaryIO

from auditor.audit import AuditOptions, audit
from auditor.inventory import CATALOGERS, Cataloger, FileView, Inventory
from auditor.rootfs.build import LayerProgress
from auditor.testing import LayerBuilder, build_oci_layout

BIG = os.urandom(1 << 20) * 12  # 12 MiB: over the in-memory bound, so it is spilled


class Probe:
    """A cataloger whose analyzer records what it was shown."""

    def __init__(self, globs: tuple[str, ...] = ("opt/*.bin",)) -> None:
        self.calls: list[int] = []
        self.found: list[tuple[str, dict[str, Any]]] = []
        self.cataloger = Cataloger("probe", 1, (), self._run, globs, self._analyze)

    def _analyze(self, stream: BinaryIO, size: int) -> dict[str, Any]:
        self.calls.append(size)
        head = stream.read(4)
        if head == b"BOOM":
            raise ValueError("hostile content")
        stream.seek(size - 4)  # random access, as ELF parsing needs
        tail = stream.read(4)
        stream.seek(0)
        return {"size": size, "head": head.hex(), "tail": tail.hex(),
                "sha256": hashlib.sha256(stream.read()).hexdigest()}

    def _run(self, view: FileView, inventory: Inventory) -> None:
        self.found = view.analyzed("probe")


def _audit(layout: Path, tmp_path: Path, probe: Probe, progress: LayerProgress | None = None):
    return audit(f"oci:{layout}:t", AuditOptions(cache_dir=str(tmp_path / "cache")), progress,
                 catalogers=[*CATALOGERS, probe.cataloger])


def test_large_file_is_spilled_analyzed_and_only_facts_kept(tmp_path: Path) -> None:
    layer = (LayerBuilder().dir("opt").file("opt/big.bin", BIG).file("opt/small.bin", b"abcdEFGH")
             .file("opt/other.txt", "not wanted").hardlink("opt/alias.bin", "opt/big.bin"))
    build_oci_layout(tmp_path / "l", [layer], tag="t")
    probe = Probe()
    result = _audit(tmp_path / "l", tmp_path, probe)
    facts = dict(probe.found)
    assert facts["opt/big.bin"] == {"size": len(BIG), "head": BIG[:4].hex(), "tail": BIG[-4:].hex(),
                                    "sha256": hashlib.sha256(BIG).hexdigest()}
    assert facts["opt/small.bin"]["tail"] == b"EFGH".hex()
    assert facts["opt/alias.bin"] == facts["opt/big.bin"]  # a hardlink is the same file
    assert "opt/other.txt" not in facts
    assert sorted(probe.calls) == [8, len(BIG)]  # analyzed once: the hardlink shares the facts
    assert result.index.captured.get("opt/big.bin") is None  # the bytes were not kept
    assert os.listdir(tmp_path / "cache" / "tmp") == []  # the spilled copy is gone
    blobs = tmp_path / "cache" / "blobs" / "sha256"
    assert all(p.stat().st_size < len(BIG) for p in blobs.iterdir())


def test_facts_are_cached_per_layer_and_follow_overwrites(tmp_path: Path) -> None:
    lower = LayerBuilder().dir("opt").file("opt/a.bin", b"AAAA1234").file("opt/b.bin", b"BBBB5678")
    upper = LayerBuilder().file("opt/a.bin", b"CCCC9999").whiteout("opt/b.bin")
    build_oci_layout(tmp_path / "l", [lower, upper], tag="t")
    probe = Probe()
    _audit(tmp_path / "l", tmp_path, probe)
    assert [(p, f["head"]) for p, f in probe.found] == [("opt/a.bin", b"CCCC".hex())]
    warm = Probe()
    _audit(tmp_path / "l", tmp_path, warm)
    assert warm.calls == [] and warm.found == probe.found  # from the layer cache, not re-read


def test_an_analyzer_that_fails_is_recorded_and_the_pass_goes_on(tmp_path: Path) -> None:
    layer = LayerBuilder().dir("opt").file("opt/bad.bin", b"BOOM and more").file("opt/ok.bin",
                                                                                 b"fine1234")
    build_oci_layout(tmp_path / "l", [layer], tag="t")
    probe = Probe()
    _audit(tmp_path / "l", tmp_path, probe)
    facts = dict(probe.found)
    assert facts["opt/bad.bin"] == {"error": "ValueError: hostile content"}
    assert facts["opt/ok.bin"]["head"] == b"fine".hex()


def test_a_file_over_the_analysis_limit_is_skipped_and_reported(tmp_path: Path) -> None:
    from auditor.rootfs.decompress import Limits

    layer = LayerBuilder().dir("opt").file("opt/big.bin", BIG)
    build_oci_layout(tmp_path / "l", [layer], tag="t")
    probe = Probe()
    result = audit(f"oci:{tmp_path / 'l'}:t",
                   AuditOptions(cache_dir=str(tmp_path / "c"), limits=Limits(max_analyze_bytes=1 << 20)),
                   catalogers=[probe.cataloger])
    assert probe.calls == [] and probe.found == []
    assert [s.path for s in result.index.skipped] == ["opt/big.bin"]
    assert "over the analysis limit" in result.index.skipped[0].reason


def test_magic_passes_other_files_over_without_copying_them(tmp_path: Path) -> None:
    elf = b"\x7fELF" + BIG  # spilled, like a big library
    layer = (LayerBuilder().dir("opt").file("opt/lib.bin", elf).file("opt/weights.bin", BIG)
             .file("opt/tiny.bin", b"\x7fE"))
    build_oci_layout(tmp_path / "l", [layer], tag="t")
    probe = Probe(globs=("*",))
    probe.cataloger = Cataloger("probe", 1, (), probe._run, ("*",), probe._analyze, b"\x7fELF")
    _audit(tmp_path / "l", tmp_path, probe)
    assert [p for p, _ in probe.found] == ["opt/lib.bin"]
    assert dict(probe.found)["opt/lib.bin"]["sha256"] == hashlib.sha256(elf).hexdigest()
    assert probe.calls == [len(elf)]  # the 12 MiB non-ELF file never reached an analyzer
