"""--lazy on eStargz layers, written by the format's reference writer (containerd's estargz
package, built from Debian's source by fixtures/estargz.py): the same audit as a whole read of the
same blobs, from a fraction of their bytes, every chunk and the table checked."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from auditor.audit import AuditOptions, audit
from auditor.digest import digest_bytes
from auditor.errors import DigestMismatchError, InputError
from auditor.report.document import build_document, report_schema
from auditor.rootfs.lazy import open_content
from auditor.rootfs.toc import (
    ESTARGZ,
    ESTARGZ_FOOTER_BYTES,
    TocPosition,
    locate_estargz_toc,
    parse_toc,
    toc_position,
)
from auditor.testing import build_oci_layout_from_blobs
from fixtures.estargz import TOC_DIGEST, to_estargz
from fixtures.registry_server import RegistryServer
from tests.rootfs.test_hostile import Cli, Layout
from tests.rootfs.test_lazy import check_lazy_over_a_registry, lazy_layers, without_volatile

CHUNK_BYTES = 256 << 10  # BuildKit's default is 4 MiB; smaller shows what ELF parsing skips


@pytest.fixture(scope="module")
def estargz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OCI layout of the lazy tests' two layers as eStargz, and the same layout read whole."""
    root = tmp_path_factory.mktemp("estargz")
    blobs = [to_estargz(layer.tar_bytes(), root / f"layer{n}.blob", CHUNK_BYTES).layer_blob()
             for n, layer in enumerate(lazy_layers(root))]
    build_oci_layout_from_blobs(root / "oci", blobs, tag="t")
    return root / "oci"


def _document(reference: str, cache: Path, lazy: bool) -> dict[str, Any]:
    return build_document(audit(reference, AuditOptions(cache_dir=str(cache), lazy=lazy)))


def test_the_reference_writer_makes_annotated_estargz_layers(estargz: Path) -> None:
    layout = Layout(estargz)
    for descriptor in layout.manifest()["layers"]:
        blob = layout.blob(descriptor["digest"]).read_bytes()
        assert blob[-ESTARGZ_FOOTER_BYTES:][32:38] == b"STARGZ"
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
            names = tar.getnames()
        assert names[-1] == "stargz.index.json" and ".no.prefetch.landmark" in names
        assert descriptor["annotations"][TOC_DIGEST].startswith("sha256:")


def test_a_lazy_estargz_audit_is_the_whole_audit_from_a_fraction_of_the_bytes(
        estargz: Path, tmp_path: Path) -> None:
    whole = _document(f"oci:{estargz}:t", tmp_path / "whole", lazy=False)
    lazy = _document(f"oci:{estargz}:t", tmp_path / "lazy", lazy=True)
    # every section, the fingerprint too: the table and the landmark are files of the tar
    assert without_volatile(lazy) == without_volatile(whole)
    assert [c["version"] for c in lazy["numeric_stack"] if c["component"] == "nccl"] == ["2.18.3"]
    big = lazy["layers"][1]
    annotations = Layout(estargz).manifest()["layers"][1]["annotations"]
    assert big["lazy"]["toc"] == annotations[TOC_DIGEST]
    assert big["lazy"]["format"] == "estargz"
    jsonschema.validate(lazy, report_schema())
    assert 0 < big["lazy"]["fetched_bytes"] < big["size"] // 4


@pytest.mark.registry
def test_lazy_estargz_over_a_registry(estargz: Path, registry: RegistryServer,
                                      tmp_path: Path) -> None:
    check_lazy_over_a_registry(estargz, registry, "lazy/estargz", tmp_path)


# -- hostile tables ----------------------------------------------------------------------------
def _rewrite_table(estargz: Path, tmp_path: Path, edit: Any) -> Layout:
    """A copy of the layout whose big layer's table is edited by ``edit``, every digest, size,
    footer and annotation kept right: what a hostile author can publish."""
    shutil.copytree(estargz, tmp_path / "image")
    layout = Layout(tmp_path / "image")
    manifest = layout.manifest()
    descriptor = manifest["layers"][1]
    blob = layout.blob(descriptor["digest"]).read_bytes()
    footer = blob[-ESTARGZ_FOOTER_BYTES:]
    offset = int(footer[16:32], 16)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob[offset:-51]))) as tar:
        document = json.loads(tar.extractfile("stargz.index.json").read())  # type: ignore[union-attr]
    edit(document)
    raw = json.dumps(document).encode()
    data = blob[:offset] + _table_member(raw) + footer
    descriptor.update(digest=layout.put(data), size=len(data))
    descriptor["annotations"][TOC_DIGEST] = digest_bytes(raw)
    layout.set_manifest(json.dumps(manifest).encode())
    return layout


def _table_member(raw: bytes) -> bytes:
    """The table as eStargz stores it: a tar of the one file, in a gzip member of its own."""
    table = io.BytesIO()
    with tarfile.open(fileobj=table, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("stargz.index.json")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    return gzip.compress(table.getvalue())


def _library(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in document["entries"] if e["name"].endswith("libnccl.so.2")]


def test_an_estargz_chunk_that_is_not_what_the_table_says_stops_the_audit(
        estargz: Path, tmp_path: Path) -> None:
    layout = _rewrite_table(estargz, tmp_path,
                            lambda d: _library(d)[0].update(chunkDigest="sha256:" + "0" * 64))
    result = Cli(tmp_path).run("audit", f"oci:{layout.path}:t", "--lazy")
    assert result.returncode == 2 and "does not match its digest" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("edit, message", [
    (lambda d: _library(d)[1].update(chunkOffset=1), "chunks do not tile the file"),
    (lambda d: _library(d)[0].update(offset=10**12), "outside the layer's data"),
    (lambda d: _library(d)[1].update(innerOffset=1 << 30), "bytes into its member"),
])
def test_malformed_estargz_tables_are_input_errors(estargz: Path, tmp_path: Path, edit: Any,
                                                   message: str) -> None:
    layout = _rewrite_table(estargz, tmp_path, edit)
    with pytest.raises(InputError, match=message):
        audit(f"oci:{layout.path}:t", AuditOptions(cache_dir=str(tmp_path / "c"), lazy=True))


def test_a_table_that_does_not_match_its_annotation_is_refused(estargz: Path,
                                                               tmp_path: Path) -> None:
    shutil.copytree(estargz, tmp_path / "image")
    layout = Layout(tmp_path / "image")
    manifest = layout.manifest()
    manifest["layers"][1]["annotations"][TOC_DIGEST] = "sha256:" + "1" * 64
    layout.set_manifest(json.dumps(manifest).encode())
    with pytest.raises(DigestMismatchError, match="eStargz table of contents does not match"):
        audit(f"oci:{layout.path}:t", AuditOptions(cache_dir=str(tmp_path / "c"), lazy=True))


def test_footers_are_checked_before_the_table_is_fetched(estargz: Path) -> None:
    layout = Layout(estargz)
    blob = layout.layer_blob(1).read_bytes()
    digest = layout.manifest()["layers"][1]["annotations"][TOC_DIGEST]
    position = toc_position({TOC_DIGEST: digest}, len(blob), "l")
    assert position is not None and not position.located and position.format == ESTARGZ
    footer = blob[-ESTARGZ_FOOTER_BYTES:]
    located = locate_estargz_toc(footer, position, len(blob), "l")
    assert located.offset + located.length == len(blob) - ESTARGZ_FOOTER_BYTES
    for bad, message in [(footer[:-1], "no eStargz footer"),
                         (footer.replace(b"STARGZ", b"STARGX"), "no eStargz footer"),
                         (footer[:16] + b"g" * 16 + footer[32:], "malformed"),
                         (footer[:16] + b"%016x" % len(blob) + footer[32:], "outside")]:
        with pytest.raises(InputError, match=message):
            locate_estargz_toc(bad, position, len(blob), "l")
    with pytest.raises(InputError, match="not a sha256"):
        toc_position({TOC_DIGEST: "md5:00"}, len(blob), "l")
    with pytest.raises(InputError, match="cannot hold"):
        toc_position({TOC_DIGEST: digest}, 40, "l")


def _hand_made(entries: list[dict[str, Any]], data: bytes) -> tuple[bytes, TocPosition]:
    """A blob of ten bytes of nothing, ``data`` as one gzip member at offset 10, then the table."""
    member = gzip.compress(data)
    raw = json.dumps({"version": 1, "entries": entries}).encode()
    blob = bytes(10) + member + _table_member(raw)
    return blob, TocPosition(10 + len(member), len(blob) - 10 - len(member), 1 << 20,
                             digest_bytes(raw), ESTARGZ)


def test_files_sharing_one_member_are_read_from_their_inner_offsets() -> None:
    """Newer writers (--estargz-min-chunk-size) put small files in one gzip member, each at an
    ``innerOffset``; the reference writer here predates that, so the table is written by hand."""
    first, second = b"libcudnn 8.2.1\n" * 3, b"\x7fELF" + bytes(range(200))
    entries = [{"name": "a", "type": "reg", "size": len(first), "offset": 10,
                "digest": digest_bytes(first), "chunkDigest": digest_bytes(first)},
               {"name": "b", "type": "reg", "size": len(second), "offset": 10,
                "innerOffset": len(first), "digest": digest_bytes(second)}]
    blob, position = _hand_made(entries, first + second)
    parsed = parse_toc(blob[position.offset:], position, "l", 10)
    assert [e.name for e in parsed] == ["a", "b", "stargz.index.json"]
    raw = json.dumps({"version": 1, "entries": entries}).encode()
    for entry, content in zip(parsed, [first, second, raw], strict=True):
        with open_content(entry, lambda s, e: blob[s:e], "l", None, ESTARGZ) as f:
            assert f.read() == content
    entries[1]["innerOffset"] = 1  # b read from the wrong place: its digest says so
    blob, position = _hand_made(entries, first + second)
    wrong = parse_toc(blob[position.offset:], position, "l", 10)[1]
    with pytest.raises(DigestMismatchError, match="does not match its digest"):
        open_content(wrong, lambda s, e: blob[s:e], "l", None, ESTARGZ).read()
