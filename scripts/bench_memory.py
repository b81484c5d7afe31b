#!/usr/bin/env python3
"""Peak memory and wall time of ``auditor audit`` on an image with a layer of over a GiB.

Builds, streaming to disk (no layer is ever held in memory), an OCI layout with a small base
layer and one large gzip layer (about 200 files of compressible pseudo-random data plus a few
~200 MB files), then audits it twice in a subprocess with a fresh cache: cold (every layer
decompressed and indexed) and warm (the same cache: layer indexes reused). Peak RSS is the
kernel's high-water mark of that child's own address space (``VmHWM``).

Prints a table, writes the figures as JSON with ``--json FILE``, and exits 1 if a run fails or
its peak RSS reaches ``--max-rss-mb`` (default 300), so that it can serve as a check::

    .venv/bin/python scripts/bench_memory.py              # 1.2 GiB, the target check
    .venv/bin/python scripts/bench_memory.py --size-gib 0.3 --json bench.json
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import shutil
import sys
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import MB, GiB, MiB, audit_once, machine, run_figures

BIG_FILE = 200 * MB
SMALL_FILES = 200
TAG = "bench"
EPOCH = 1_700_000_000
WORDS = ["tensor", "kernel", "cuda", "cudnn", "nccl", "layer", "weight", "bias", "gradient",
         "batch", "epoch", "float16", "bfloat16", "matmul", "conv2d", "attention", "softmax",
         "dropout", "optimizer", "adam", "checkpoint", "shard", "rank", "device", "stream",
         "graph", "fusion", "autotune", "workspace", "allocator", "library", "version", "symbol"]


# -- data: compressible, deterministic, generated a MiB at a time -----------------------------
def make_pool(seed: int, blocks: int = 8) -> list[bytes]:
    """MiB blocks, each a quarter random bytes and three quarters word salad (gzip: ~2x)."""
    rng = random.Random(seed)
    pool = []
    for _ in range(blocks):
        text = bytearray()
        while len(text) < 3 * MiB // 4:
            text += " ".join(rng.choice(WORDS) for _ in range(64)).encode() + b"\n"
        pool.append(rng.randbytes(MiB // 4) + bytes(text[: 3 * MiB // 4]))
    return pool


def file_chunks(size: int, rng: random.Random, pool: list[bytes]):
    """``size`` bytes of one file: a header that makes it unique, then pool blocks."""
    head = f"file {rng.getrandbits(64):016x}\n".encode()
    yield head[:size]
    left = size - len(head[:size])
    while left > 0:
        block = rng.choice(pool)
        start = rng.randrange(0, MiB // 2)
        piece = block[start: start + min(left, MiB - start)]
        yield piece
        left -= len(piece)


# -- writing a layer streaming ---------------------------------------------------------------
class GzipSink:
    """Uncompressed tar bytes in; gzip to a file out; both hashed on the way."""

    def __init__(self, path: Path, level: int = 1) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._deflate = zlib.compressobj(level, zlib.DEFLATED, 31)
        self.diff_id = hashlib.sha256()
        self.digest = hashlib.sha256()
        self.uncompressed = 0
        self.compressed = 0

    def write(self, data: bytes) -> None:
        self.diff_id.update(data)
        self.uncompressed += len(data)
        self._emit(self._deflate.compress(data))

    def _emit(self, out: bytes) -> None:
        if out:
            self.digest.update(out)
            self.compressed += len(out)
            self._file.write(out)

    def close(self) -> None:
        self._emit(self._deflate.flush())
        self._file.close()


def tar_entry(sink: GzipSink, name: str, kind: bytes = tarfile.REGTYPE, size: int = 0,
              link: str = "", chunks: Any = (), mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mode, info.mtime = kind, size, link, mode, EPOCH
    sink.write(info.tobuf(format=tarfile.PAX_FORMAT))
    written = 0
    for chunk in chunks:
        sink.write(chunk)
        written += len(chunk)
    assert written == size, (name, written, size)
    if size % tarfile.BLOCKSIZE:
        sink.write(bytes(tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE))


@dataclass
class Plan:
    """What the big layer holds."""

    total: int
    big: list[int] = field(default_factory=list)
    small: list[int] = field(default_factory=list)

    @classmethod
    def for_size(cls, total: int, seed: int) -> Plan:
        big_total = total // 2
        count = max(1, round(big_total / BIG_FILE))
        big = [big_total // count] * count
        rng = random.Random(seed)
        weights = [rng.uniform(0.2, 1.8) for _ in range(SMALL_FILES)]
        rest = total - sum(big)
        small = [int(rest * w / sum(weights)) for w in weights]
        small[0] += rest - sum(small)
        return cls(total, big, small)

    @property
    def files(self) -> int:
        return len(self.big) + len(self.small)


def write_big_layer(path: Path, plan: Plan, seed: int) -> GzipSink:
    rng = random.Random(seed)
    pool = make_pool(seed)
    sink = GzipSink(path)
    dirs = ["opt", "opt/models", "opt/data"] + [f"opt/data/d{i:02}" for i in range(10)]
    for d in dirs:
        tar_entry(sink, d + "/", tarfile.DIRTYPE, mode=0o755)
    for i, size in enumerate(plan.big):
        tar_entry(sink, f"opt/models/shard-{i}.bin", size=size,
                  chunks=file_chunks(size, rng, pool))
    for i, size in enumerate(plan.small):
        tar_entry(sink, f"opt/data/d{i % 10:02}/part-{i:03}.bin", size=size,
                  chunks=file_chunks(size, rng, pool))
    tar_entry(sink, "opt/current", tarfile.SYMTYPE, link="models", mode=0o777)
    sink.write(bytes(2 * tarfile.BLOCKSIZE))
    sink.close()
    return sink


BASE_FILES = {"etc/os-release": b'ID=debian\nVERSION_ID="12"\n', "etc/hostname": b"bench\n"}


def base_layer() -> tuple[bytes, bytes]:
    """A small first layer: (tar, gzip)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in BASE_FILES.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), EPOCH
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = buf.getvalue()
    return tar_bytes, zlib.compress(tar_bytes, 6, wbits=31)


def build_layout(folder: Path, size: int, seed: int) -> dict[str, Any]:
    blobs = folder / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (folder / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))

    def put(data: bytes) -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    gzip_type = "application/vnd.oci.image.layer.v1.tar+gzip"
    base_tar, base_gz = base_layer()
    layers = [{"mediaType": gzip_type, **put(base_gz)}]
    diff_ids = [f"sha256:{hashlib.sha256(base_tar).hexdigest()}"]

    plan = Plan.for_size(size, seed)
    partial = folder / "big-layer.partial"
    sink = write_big_layer(partial, plan, seed)
    digest = sink.digest.hexdigest()
    partial.rename(blobs / digest)
    layers.append({"mediaType": gzip_type, "digest": f"sha256:{digest}", "size": sink.compressed})
    diff_ids.append(f"sha256:{sink.diff_id.hexdigest()}")

    config = {"architecture": "amd64", "os": "linux", "created": "2023-11-14T22:13:20Z",
              "config": {"Env": ["PATH=/usr/bin:/bin"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids},
              "history": [{"created_by": "base"}, {"created_by": "big layer"}]}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           **put(json.dumps(config).encode())},
                "layers": layers}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": manifest["mediaType"], **put(json.dumps(manifest).encode()),
                            "annotations": {"org.opencontainers.image.ref.name": TAG}}]}
    (folder / "index.json").write_text(json.dumps(index))
    return {
        "uncompressed_bytes": sink.uncompressed + len(base_tar),
        "compressed_bytes": sink.compressed + len(base_gz),
        "big_layer_uncompressed_bytes": sink.uncompressed,
        "files": plan.files + len(BASE_FILES),
        "file_bytes": sum(plan.big) + sum(plan.small) + sum(map(len, BASE_FILES.values())),
    }


# -- measuring (benchlib: the child process and its VmHWM) ---------------------------------
def check_report(report: Path, expected: dict[str, Any]) -> bool:
    """The audit really read the big layer: every file, every byte accounted for."""
    try:
        document = json.loads(report.read_text())
    except (OSError, ValueError):
        return False
    rootfs = document.get("rootfs", {})
    return (rootfs.get("entries", {}).get("file") == expected["files"]
            and rootfs.get("file_bytes") == expected["file_bytes"]
            and (document.get("os") or {}).get("id") == "debian")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gib", type=float, default=1.2,
                        help="uncompressed size of the big layer in GiB [default: 1.2]")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to build the layout and the cache [default: a temp dir]")
    parser.add_argument("--keep", action="store_true", help="keep the layout, cache and reports")
    parser.add_argument("--json", type=Path, default=None, help="write the figures to FILE")
    parser.add_argument("--max-rss-mb", type=float, default=300.0,
                        help="fail if a run's peak RSS reaches this many MB (10^6 B) [default: 300]")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.size_gib <= 0:
        parser.error("--size-gib must be positive")

    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="bench-memory-", dir=args.workdir))
    try:
        print(f"building a {args.size_gib:g} GiB layer in {folder} ...", file=sys.stderr)
        started = time.monotonic()
        layout = build_layout(folder / "layout", int(args.size_gib * GiB), args.seed)
        layout["build_seconds"] = round(time.monotonic() - started, 2)
        cache = folder / "cache"
        runs = []
        for name in ("cold", "warm"):
            print(f"auditing ({name}) ...", file=sys.stderr)
            report = folder / f"report-{name}.json"
            run = audit_once(name, f"oci:{folder / 'layout'}:{TAG}", cache, report)
            run.report_ok = run.exit_code == 0 and check_report(report, layout)
            runs.append(run)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)

    ok = all(r.exit_code == 0 and r.report_ok and r.peak_rss_mb < args.max_rss_mb for r in runs)
    print(f"\nlayer: {layout['big_layer_uncompressed_bytes'] / GiB:.2f} GiB uncompressed, "
          f"{layout['compressed_bytes'] / GiB:.2f} GiB gzip, {layout['files']} files "
          f"(built in {layout['build_seconds']:.1f} s)")
    print(f"{'run':<6} {'exit':>4} {'wall s':>8} {'peak RSS MB':>12} {'report':>7}")
    for r in runs:
        print(f"{r.name:<6} {r.exit_code:>4} {r.wall_seconds:>8.2f} {r.peak_rss_mb:>12.1f} "
              f"{'ok' if r.report_ok else 'WRONG':>7}")
        if r.exit_code != 0:
            print(f"       stderr: {r.stderr}")
    print(f"target: peak RSS < {args.max_rss_mb:g} MB -> {'PASS' if ok else 'FAIL'}")
    if args.keep:
        print(f"kept: {folder}")

    if args.json:
        figures = {
            "size_gib": args.size_gib,
            "layout": layout,
            "runs": [run_figures(r) for r in runs],
            "max_rss_mb": args.max_rss_mb,
            "ok": ok,
            "machine": machine(),
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
