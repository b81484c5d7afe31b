"""``build_oci_layout_from_tars`` (layers streamed from tar files on disk) writes the same image
as ``build_oci_layout`` (layers in memory) from the same bytes, and a valid one."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from auditor.reference import parse_reference
from auditor.sources import BlobCache, make_source, open_image
from auditor.testing import (
    CHUNK,
    LayerBuilder,
    build_oci_layout,
    build_oci_layout_from_tars,
    compress,
    random_layers,
    validate_image,
)

CONFIG = {"config": {"Env": ["CUDA_VERSION=13.0"]}}
HISTORY = ["base", "files", "big file"]


def layer_tars() -> list[bytes]:
    """Three layers, the last over three chunks long (so that it is compressed in pieces)."""
    big = LayerBuilder().dir("opt").file("opt/big.bin", random.Random(7).randbytes(3 * CHUNK + 123))
    return [layer.tar_bytes() for layer in random_layers(seed=11, count=2)] + [big.tar_bytes()]


def write_tars(folder: Path, tars: list[bytes]) -> list[Path]:
    folder.mkdir()
    paths = [folder / f"layer-{i}.tar" for i in range(len(tars))]
    for path, tar in zip(paths, tars, strict=True):
        path.write_bytes(tar)
    return paths


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_from_tars_equals_in_memory(tmp_path: Path, compression: str) -> None:
    tars = layer_tars()
    in_memory = build_oci_layout(tmp_path / "memory", tars, tag="t", compression=compression,
                                 config=CONFIG, history=HISTORY)
    streamed = build_oci_layout_from_tars(tmp_path / "streamed", write_tars(tmp_path / "tars", tars),
                                          tag="t", compression=compression, config=CONFIG,
                                          history=HISTORY)
    assert streamed.diff_ids == in_memory.diff_ids
    assert streamed.layer_digests == in_memory.layer_digests
    assert streamed.config_digest == in_memory.config_digest
    assert streamed.manifest_digest == in_memory.manifest_digest
    assert streamed.manifest == in_memory.manifest
    for digest in streamed.layer_digests:  # byte for byte, and nothing left but the blobs
        name = digest.split(":")[1]
        assert ((tmp_path / "streamed/blobs/sha256" / name).read_bytes()
                == (tmp_path / "memory/blobs/sha256" / name).read_bytes())
    assert sorted(p.name for p in (tmp_path / "streamed").iterdir()) == [
        "blobs", "index.json", "oci-layout"]
    index = json.loads((tmp_path / "streamed" / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [streamed.manifest_digest]

    cache = BlobCache(tmp_path / "cache")
    image = open_image(make_source(parse_reference(f"oci:{tmp_path / 'streamed'}:t"), cache), cache)
    validate_image(image)
    assert image.digest == streamed.manifest_digest
    assert [layer.diff_id for layer in image.layers] == streamed.diff_ids


def test_gzip_blobs_are_those_of_gzip_compress(tmp_path: Path) -> None:
    """Streaming did not move the digests the in-memory builder always gave."""
    tar = layer_tars()[-1]
    blob, _ = compress(tar, "gzip")
    assert blob == gzip.compress(tar, compresslevel=1, mtime=0)
    built = build_oci_layout_from_tars(tmp_path / "oci", write_tars(tmp_path / "tars", [tar]))
    assert (tmp_path / "oci/blobs/sha256" / built.layer_digests[0].split(":")[1]).read_bytes() == blob


def test_move_renames_uncompressed_tars_into_the_blobs(tmp_path: Path) -> None:
    tars = layer_tars()
    paths = write_tars(tmp_path / "tars", tars)
    first = build_oci_layout_from_tars(tmp_path / "oci", paths, tag="a", compression="none",
                                       move=True)
    assert not any(path.exists() for path in paths)
    blobs = [tmp_path / "oci/blobs/sha256" / d.split(":")[1] for d in first.layer_digests]
    assert [blob.read_bytes() for blob in blobs] == tars
    assert first.layer_digests == first.diff_ids
    # a second tag over the same layers, given as the layout's own blobs
    second = build_oci_layout_from_tars(tmp_path / "oci", blobs, tag="b", compression="none",
                                        move=True, config=CONFIG)
    assert second.diff_ids == first.diff_ids
    assert second.manifest_digest != first.manifest_digest
    tags = [m["annotations"]["org.opencontainers.image.ref.name"]
            for m in json.loads((tmp_path / "oci" / "index.json").read_text())["manifests"]]
    assert tags == ["a", "b"]
    with pytest.raises(ValueError, match="compression='none'"):
        build_oci_layout_from_tars(tmp_path / "other", blobs, compression="gzip", move=True)


def test_a_failed_build_leaves_no_partial_blob(tmp_path: Path) -> None:
    paths = write_tars(tmp_path / "tars", layer_tars()[:1])
    with pytest.raises(ValueError, match="unknown compression"):
        build_oci_layout_from_tars(tmp_path / "oci", paths, compression="lz4")
    assert list((tmp_path / "oci").glob(".layer-*")) == []
    assert list((tmp_path / "oci/blobs/sha256").iterdir()) == []
