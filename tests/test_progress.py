"""The rich layer progress: one bar per layer in flight (layers are read at once), a layer read
again starting its bar over, every bar gone when its layer is merged."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from auditor.model import Layer
from auditor.progress import RichLayerProgress
from auditor.reference import parse_reference
from auditor.rootfs.build import build_rootfs
from auditor.sources import BlobCache, SourceOptions, make_source, open_image
from auditor.testing import build_oci_layout, random_layers


def _layer(index: int) -> Layer:
    return Layer(index, f"sha256:{index:064x}", f"sha256:{index:064x}", "", 1000)


def test_one_bar_per_layer_in_flight_and_none_left() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with RichLayerProgress(console) as progress:
        bars = progress._progress
        first, second = _layer(0), _layer(1)
        progress.layer_started(first, 1000, cached=False)
        progress.layer_started(second, 1000, cached=False)
        progress.advance(first, 300)
        progress.advance(second, 700)
        assert sorted(t.completed for t in bars.tasks) == [300, 700]
        progress.layer_started(second, 1000, cached=False)  # read again: its bar starts over
        assert sorted(t.completed for t in bars.tasks) == [0, 300]
        progress.layer_done(first)
        progress.layer_done(second)
        progress.layer_done(second)  # twice: nothing left to remove
        assert bars.tasks == []


def test_a_pass_with_layers_read_at_once_leaves_no_bar(tmp_path: Path) -> None:
    built = build_oci_layout(tmp_path / "image", random_layers(seed=3, count=4), tag="t")
    cache = BlobCache(tmp_path / "cache")
    source = make_source(parse_reference(f"oci:{built.path}:t"), cache, SourceOptions())
    out = io.StringIO()
    try:
        image = open_image(source, cache)
        with RichLayerProgress(Console(file=out, force_terminal=True, width=120)) as progress:
            index = build_rootfs(image, cache, progress=progress, jobs=3)
            assert progress._progress.tasks == []
    finally:
        source.close()
    assert len(index.entries) > 40
