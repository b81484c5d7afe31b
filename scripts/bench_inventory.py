#!/usr/bin/env python3
"""Wall time, peak RSS and findings of ``auditor audit`` on a CUDA PyTorch image.

Builds once, and keeps under ``$AUDITOR_FIXTURE_CACHE/bench-inventory/`` (default
``~/.cache/auditor-fixtures/bench-inventory/``) in a folder named by a hash of the recipe, an OCI
layout of two gzip layers: the Debian bookworm fixture's (fixtures/debian.py), then torch 2.14.1
with its CUDA 13 NVIDIA wheels installed as pip would (``pip download``, then ``pip install
--no-deps --no-index --target``) under ``usr/local/lib/python3.11/site-packages``. Layers are
tar files on disk, compressed streaming (``auditor.testing.build_oci_layout_from_tars``).

Then audits it in a child process: cold (a fresh cache per run) and warm (the last cold run's
cache), ``--runs`` times each, with each run's wall time and own peak RSS (``VmHWM``, see
scripts/benchlib.py), and checks every report: torch found built for CUDA 13.0; cuDNN, cuBLAS,
NCCL and the CUDA runtime in the numeric stack with the versions of their wheels' METADATA (read
from the installed ``.dist-info`` when the image was built); every file of the image indexed.

Prints a table, writes the figures as JSON with ``--json FILE``, exits 1 if a check fails::

    .venv/bin/python scripts/bench_inventory.py --json bench-inventory.json
    .venv/bin/python scripts/bench_inventory.py --quick   # two small NVIDIA wheels, no torch
    .venv/bin/python scripts/bench_inventory.py --profile cold.prof   # + one cold run profiled
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from benchlib import GiB, Run, audit_args, audit_once, emit, machine, run_figures, summary

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the fixtures package, beside the scripts folder
    sys.path.insert(0, str(REPO))

from auditor.testing import EPOCH, LayerBuilder, build_oci_layout_from_tars  # noqa: E402
from fixtures.debian import PATH_ENV, debian_base_tar, fixture_cache_dir, locked  # noqa: E402
from fixtures.debian import recipe_key as debian_recipe_key  # noqa: E402

TAG = "bench"
SITE = "usr/local/lib/python3.11/site-packages"
BIN = "usr/local/bin"
RECIPE_VERSION = 1


@dataclass(frozen=True)
class Recipe:
    """What goes into the image, and what its audit must find."""

    name: str
    requirements: tuple[str, ...]
    with_dependencies: bool  # pip download resolves the requirements' dependencies
    base: str  # "debian": the Debian fixture's layer; "small": an os-release file
    wheels: tuple[tuple[str, str], ...]  # (numeric component, the wheel that must provide it)
    torch_cuda: str | None  # torch must be found built for this CUDA version
    env: tuple[str, ...] = ()  # more of the config's Env (after PATH), e.g. PYTHONPATH=/SITE

    def key(self) -> str:
        """A hash of everything that decides the image (the base's own recipe included). Fields
        added since a recipe was first cached enter the key only when set, so caches stay valid."""
        fields = {k: v for k, v in asdict(self).items() if k != "env" or v}
        recipe = {"version": RECIPE_VERSION, **fields, "site": SITE, "compression": "gzip",
                  "base_recipe": debian_recipe_key() if self.base == "debian" else "os-release"}
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


FULL = Recipe("torch-2.14.1-cu13", ("torch==2.14.1",), True, "debian",
              (("cudnn", "nvidia-cudnn-cu13"), ("cublas", "nvidia-cublas"),
               ("nccl", "nvidia-nccl-cu13"), ("cudart", "nvidia-cuda-runtime")), "13.0")
QUICK = Recipe("quick-cudart-nvjitlink",
               ("nvidia-cuda-runtime==13.0.96", "nvidia-nvjitlink==13.4.92"), False, "small",
               (("cudart", "nvidia-cuda-runtime"), ("nvjitlink", "nvidia-nvjitlink")), None)


# -- building the image, once -----------------------------------------------------------------
def cache_root() -> Path:
    return fixture_cache_dir() / "bench-inventory"


def cached_image(recipe: Recipe) -> tuple[Path, dict[str, Any]]:
    """The image's folder (``oci/`` and ``build.json``), built the first time, and its facts."""
    root = cache_root()
    final = root / f"{recipe.name}-{recipe.key()}"
    if not (final / "build.json").is_file():
        root.mkdir(parents=True, exist_ok=True)
        with locked(root / ".lock"):
            if not (final / "build.json").is_file():  # not built by another process meanwhile
                build_once(recipe, root, final)
    return final, json.loads((final / "build.json").read_text())


def build_once(recipe: Recipe, root: Path, final: Path) -> None:
    for stale in root.glob(".building-*"):  # left by a killed build; none runs now (locked)
        shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        facts = build_image(recipe, work)
        (work / "build.json").write_text(json.dumps(facts, indent=2) + "\n")
        work.chmod(0o755)
        if final.exists():  # incomplete (no build.json): not renamed into place by a build
            shutil.rmtree(final)
        os.rename(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build_image(recipe: Recipe, work: Path) -> dict[str, Any]:
    """Build the layout in ``work/oci``; return what the checks need (METADATA versions,
    file counts) and the build's figures."""
    seconds: dict[str, float] = {}
    started = time.monotonic()
    wheels, site = work / "wheels", work / "site"
    pip_download(recipe, wheels)
    seconds["pip_download"] = time.monotonic() - started
    pip_install(wheels, site)
    seconds["pip_install"] = time.monotonic() - started - sum(seconds.values())
    dists = installed_dists(site)
    wheel_bytes = sum(p.stat().st_size for p in wheels.glob("*.whl"))
    shutil.rmtree(wheels)
    base_tar, history = work / "base.tar", []
    base = write_base_layer(recipe.base, base_tar)
    history.append(base.pop("created_by"))
    site_layer = write_site_layer(site, work / "site.tar")
    history.append(f"pip install {' '.join(recipe.requirements)}")
    shutil.rmtree(site)
    seconds["layer_tars"] = time.monotonic() - started - sum(seconds.values())
    built = build_oci_layout_from_tars(
        work / "oci", [base_tar, site_layer["path"]], tag=TAG, compression="gzip",
        config={"config": {"Env": [PATH_ENV, *recipe.env], "Cmd": ["python3"]}}, history=history)
    seconds["gzip_layout"] = time.monotonic() - started - sum(seconds.values())
    uncompressed = base_tar.stat().st_size + site_layer["path"].stat().st_size
    base_tar.unlink()
    site_layer["path"].unlink()
    return {
        "recipe": asdict(recipe), "key": recipe.key(), "tag": TAG, "dists": dists,
        "wheels": len(dists), "wheel_bytes": wheel_bytes,
        "layers": [{"digest": d["digest"], "size": d["size"]} for d in built.manifest["layers"]],
        "compressed_bytes": sum(d["size"] for d in built.manifest["layers"]),
        "uncompressed_bytes": uncompressed,
        "files": base["files"] + site_layer["files"],
        "file_bytes": base["file_bytes"] + site_layer["file_bytes"],
        "site_files": site_layer["files"],
        "build_seconds": {k: round(v, 1) for k, v in seconds.items()},
        "machine": machine(),
    }


def pip_download(recipe: Recipe, dest: Path) -> None:
    """The wheels, as ``pip download`` resolves them on this machine (its configured indexes)."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
               "--dest", str(dest), *recipe.requirements]
    if not recipe.with_dependencies:
        command.insert(4, "--no-deps")
    subprocess.run(command, check=True, timeout=3600)


def pip_install(wheels: Path, site: Path) -> None:
    """Install the downloaded wheels as pip does (``.pyc`` compiled), into a plain folder."""
    files = sorted(str(p) for p in wheels.glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--target", str(site), *files], check=True, timeout=3600)


def installed_dists(site: Path) -> dict[str, str]:
    """Name -> Version from every ``*.dist-info/METADATA`` under ``site``."""
    out = {}
    for metadata in sorted(site.glob("*.dist-info/METADATA")):
        headers = HeaderParser().parsestr(metadata.read_text(encoding="utf-8"))
        out[str(headers["Name"])] = str(headers["Version"])
    return out


def normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime, info.uid, info.gid, info.uname, info.gname = EPOCH, 0, 0, "", ""
    return info


class FileCounter:
    """A ``tarfile.add`` filter that normalizes entries and counts the regular files."""

    def __init__(self) -> None:
        self.files = self.file_bytes = 0

    def __call__(self, info: tarfile.TarInfo) -> tarfile.TarInfo:
        if info.isreg():
            self.files += 1
            self.file_bytes += info.size
        return normalize(info)


def write_site_layer(site: Path, out: Path) -> dict[str, Any]:
    """A layer tar of what ``pip install --target`` put in ``site``: packages under SITE, scripts
    under usr/local/bin, as ``pip install`` would place them in the image. Streamed to disk:
    ``tarfile.add`` copies each file in pieces."""
    counter = FileCounter()
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        parts = SITE.split("/")
        for i in range(1, len(parts)):
            tar.addfile(dir_entry("/".join(parts[:i])))
        tar.add(site, arcname=SITE, recursive=False, filter=normalize)
        for path in sorted(site.iterdir()):
            arcname = BIN if path.name == "bin" and path.is_dir() else f"{SITE}/{path.name}"
            tar.add(path, arcname=arcname, filter=counter)  # members in sorted order
    return {"path": out, "files": counter.files, "file_bytes": counter.file_bytes}


def dir_entry(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, EPOCH
    return info


def write_base_layer(base: str, out: Path) -> dict[str, Any]:
    """The first layer as a tar at ``out``: the Debian fixture's (decompressed) or os-release."""
    if base == "small":
        layer = LayerBuilder().dir("etc").file("etc/os-release", 'ID=debian\nVERSION_ID="12"\n')
        out.write_bytes(layer.tar_bytes())
        created_by = "an os-release file"
    else:
        blob = debian_base_tar(out)
        created_by = f"debian bookworm minbase + python3 (fixtures/debian.py, {blob.name[:12]})"
    files, file_bytes = count_files(out)
    return {"files": files, "file_bytes": file_bytes, "created_by": created_by}


def count_files(tar_path: Path) -> tuple[int, int]:
    files = file_bytes = 0
    with tarfile.open(tar_path, "r|") as tar:
        for info in tar:
            if info.isreg():
                files += 1
                file_bytes += info.size
    return files, file_bytes


# -- checking a report ------------------------------------------------------------------------
def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def owner_name(package: str | None) -> str | None:
    """``python:nvidia-cudnn-cu13@9.24.0.43`` -> ``nvidia-cudnn-cu13``."""
    if not package or not package.startswith("python:"):
        return None
    return canonical(package.partition(":")[2].rpartition("@")[0])


def check_report(document: dict[str, Any], facts: dict[str, Any], recipe: Recipe) -> list[str]:
    """What is wrong in a report (nothing: an empty list)."""
    problems = []
    rootfs = document.get("rootfs") or {}
    if (rootfs.get("entries") or {}).get("file") != facts["files"]:
        problems.append(f"rootfs has {(rootfs.get('entries') or {}).get('file')} files, "
                        f"the image {facts['files']}")
    if rootfs.get("file_bytes") != facts["file_bytes"]:
        problems.append(f"rootfs has {rootfs.get('file_bytes')} file bytes, "
                        f"the image {facts['file_bytes']}")
    dists = {canonical(name): version for name, version in facts["dists"].items()}
    if recipe.torch_cuda:
        problems += check_torch(document, dists.get("torch"), recipe.torch_cuda)
    for component, wheel in recipe.wheels:
        problems += check_component(document, component, canonical(wheel), dists.get(canonical(wheel)))
    return problems


def check_torch(document: dict[str, Any], version: str | None, cuda: str) -> list[str]:
    torches = [f for f in document.get("frameworks") or [] if f["name"] == "torch"]
    if not torches:
        return ["torch not found"]
    problems = check_torch_linkage(document)
    for fw in torches:
        if fw["built_for"].get("cuda") != cuda:
            problems.append(f"torch at {fw['path']} built for {fw['built_for']}, not cuda {cuda}")
        if version is None or fw["version"].partition("+")[0] != version.partition("+")[0]:
            problems.append(f"torch {fw['version']}, its METADATA says {version}")
    return problems


TORCH_CUDA_NEEDS = {"libcudnn.so.9": "nvidia/cudnn/lib/", "libnccl.so.2": "nvidia/nccl/lib/"}


def check_torch_linkage(document: dict[str, Any]) -> list[str]:
    """libtorch_cuda.so's cuDNN and NCCL (and its cuBLAS) resolve to the NVIDIA wheels' files."""
    consumers = [c for c in (document.get("linkage") or {}).get("consumers") or []
                 if c["path"].endswith("/torch/lib/libtorch_cuda.so")]
    if not consumers:
        return ["no linkage for torch/lib/libtorch_cuda.so"]
    resolved = {r["needed"]: r["file"] or "" for r in consumers[0]["resolutions"]}
    wants = dict(TORCH_CUDA_NEEDS)
    wants.update({n: "nvidia/" for n in resolved if n.startswith("libcublas")})
    return [f"libtorch_cuda.so: {needed} resolves to {resolved.get(needed)!r}, not a wheel file "
            f"under {where}" for needed, where in wants.items()
            if where not in (resolved.get(needed) or "")]


def check_component(document: dict[str, Any], component: str, wheel: str,
                    version: str | None) -> list[str]:
    """``component``'s libraries from ``wheel``: found, each with the wheel's METADATA version."""
    if version is None:
        return [f"{wheel} was not installed"]
    libraries = [lib for lib in document.get("numeric_stack") or []
                 if lib["component"] == component and owner_name(lib["package"]) == wheel]
    if not libraries:
        return [f"no {component} library of {wheel} in the numeric stack"]
    return [f"{lib['path']}: {component} {lib['version']}, {wheel}'s METADATA says {version}"
            for lib in libraries if lib["version"] != version]


def found(document: dict[str, Any]) -> dict[str, Any]:
    """What the report holds, in brief: the numeric stack per component, frameworks, counts."""
    stack: dict[str, dict[str, Any]] = {}
    for lib in document.get("numeric_stack") or []:
        entry = stack.setdefault(lib["component"], {"libraries": 0, "versions": []})
        entry["libraries"] += 1
        if lib["version"] not in entry["versions"]:
            entry["versions"].append(lib["version"])
    return {
        "numeric_libraries": len(document.get("numeric_stack") or []),
        "numeric_stack": dict(sorted(stack.items())),
        "frameworks": [{"name": f["name"], "version": f["version"], "built_for": f["built_for"]}
                       for f in document.get("frameworks") or []],
        "packages": len(document.get("packages") or []),
        "findings": len(document.get("findings") or []),
        "unknowns": len(document.get("unknowns") or []),
        "os": (document.get("os") or {}).get("id"),
        "linkage": linkage_figures(document),
    }


def linkage_figures(document: dict[str, Any]) -> dict[str, Any]:
    linkage = document.get("linkage") or {}
    consumers = linkage.get("consumers") or []
    return {"consumers": len(consumers),
            "resolutions": sum(len(c["resolutions"]) for c in consumers),
            "not_found": sum(r["how"] == "not-found" for c in consumers for r in c["resolutions"]),
            "all_elf": linkage.get("all_elf"),
            "seconds": (document.get("timings") or {}).get("catalogers", {}).get("linkage")}


# -- measuring --------------------------------------------------------------------------------
def tree_bytes(folder: Path) -> int:
    """Bytes on disk of the files under ``folder``."""
    return sum(p.lstat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


def measured(name: str, reference: str, cache: Path, report: Path, facts: dict[str, Any],
             recipe: Recipe, extra: Sequence[str] = ()) -> tuple[Run, list[str], dict[str, Any] | None]:
    print(f"auditing ({name}) ...", file=sys.stderr)
    run = audit_once(name, reference, cache, report, extra)
    if run.exit_code != 0:
        return run, [f"exit {run.exit_code}: {run.stderr[-2000:]}"], None
    document = json.loads(report.read_text())
    problems = check_report(document, facts, recipe)
    run.report_ok = not problems
    return run, problems, document


def profile_cold(reference: str, work: Path, out: Path, top: int = 20) -> dict[str, Any]:
    """One more cold audit under cProfile: its wall time and the functions with most own time."""
    print("auditing (cold, under cProfile) ...", file=sys.stderr)
    cache = work / "cache-profile"
    command = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "auditor",
               *audit_args(reference, cache, work / "report-profile.json")]
    started = time.monotonic()
    subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
    wall = time.monotonic() - started
    shutil.rmtree(cache, ignore_errors=True)
    stats = pstats.Stats(str(out))
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    entries = [{"function": f"{Path(file).name}:{line}({func})", "calls": calls,
                "own_seconds": round(own, 2), "cumulative_seconds": round(cumulative, 2)}
               for (file, line, func), (_, calls, own, cumulative, _) in rows[:top]]
    return {"wall_seconds": round(wall, 2), "profiled_seconds": round(total, 2), "top_own": entries}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="two small NVIDIA wheels (cudart, nvJitLink) on a small base, no torch")
    parser.add_argument("--runs", type=int, default=3, help="cold and warm runs each [default: 3]")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the audit caches and reports go [default: a temp dir]")
    parser.add_argument("--keep", action="store_true", help="keep the audit caches and reports")
    parser.add_argument("--json", type=Path, default=None, help="write the figures to FILE")
    parser.add_argument("--profile", type=Path, default=None,
                        help="also profile one cold run with cProfile into FILE")
    parser.add_argument("--all-elf", action="store_true",
                        help="audit with --all-elf: the linkage of every ELF file in the image")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    recipe = QUICK if args.quick else FULL
    extra_args = ["--all-elf"] if args.all_elf else []

    print(f"image {recipe.name}: building or reusing it under {cache_root()} ...", file=sys.stderr)
    folder, facts = cached_image(recipe)
    reference = f"oci:{folder / 'oci'}:{TAG}"
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-inventory-", dir=args.workdir))
    runs: list[Run] = []
    problems: dict[str, list[str]] = {}
    document: dict[str, Any] | None = None
    extra: dict[str, Any] = {}
    try:
        for i in range(1, args.runs + 1):  # cold: a fresh cache each
            cache = work / f"cache-cold-{i}"
            run, problems[f"cold-{i}"], document = measured(
                f"cold-{i}", reference, cache, work / f"report-cold-{i}.json", facts, recipe, extra_args)
            runs.append(run)
            extra["audit_cache_bytes"] = tree_bytes(cache) if cache.exists() else 0
            if i < args.runs and not args.keep:
                shutil.rmtree(cache)
        for i in range(1, args.runs + 1):  # warm: the last cold run's cache
            run, problems[f"warm-{i}"], _ = measured(
                f"warm-{i}", reference, cache, work / f"report-warm-{i}.json", facts, recipe, extra_args)
            runs.append(run)
        if args.profile:
            extra["profile"] = profile_cold(reference, work, args.profile)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    ok = all(r.exit_code == 0 and r.report_ok for r in runs)
    figures = {"recipe": recipe.name, "all_elf": args.all_elf, "image": image_figures(folder, facts),
               "found": found(document) if document else None,
               "runs": [run_figures(r) for r in runs],
               "cold": summary([r for r in runs if r.name.startswith("cold")]),
               "warm": summary([r for r in runs if r.name.startswith("warm")]),
               **extra, "problems": {k: v for k, v in problems.items() if v}, "ok": ok,
               "machine": machine()}
    return emit(figures, print_figures, work if args.keep else None, args.json)


def image_figures(folder: Path, facts: dict[str, Any]) -> dict[str, Any]:
    keys = ("key", "wheels", "wheel_bytes", "compressed_bytes", "uncompressed_bytes", "files",
            "file_bytes", "site_files", "build_seconds", "layers")
    return {"path": str(folder), **{k: facts[k] for k in keys}, "disk_bytes": tree_bytes(folder)}


def print_figures(figures: dict[str, Any]) -> None:
    image = figures["image"]
    print(f"\nimage {figures['recipe']}: {len(image['layers'])} layers, "
          f"{image['compressed_bytes'] / GiB:.2f} GiB gzip, "
          f"{image['uncompressed_bytes'] / GiB:.2f} GiB uncompressed, {image['files']} files "
          f"({image['wheels']} wheels); on disk {image['disk_bytes'] / GiB:.2f} GiB at {image['path']}")
    print(f"{'run':<7} {'exit':>4} {'wall s':>8} {'peak RSS MB':>12} {'report':>7}")
    for r in figures["runs"]:
        print(f"{r['name']:<7} {r['exit_code']:>4} {r['wall_seconds']:>8.2f} "
              f"{r['peak_rss_mb']:>12.1f} {'ok' if r['report_ok'] else 'WRONG':>7}")
    for kind in ("cold", "warm"):
        s = figures[kind]
        print(f"{kind}: wall min {s['wall_min_s']:.2f} s, median {s['wall_median_s']:.2f} s; "
              f"peak RSS median {s['peak_rss_median_mb']:.1f} MB, max {s['peak_rss_max_mb']:.1f} MB")
    if figures.get("found"):
        f = figures["found"]
        print(f"found: {f['numeric_libraries']} numeric libraries, {f['packages']} packages, "
              f"{f['findings']} findings, {f['unknowns']} unknowns")
        for component, entry in f["numeric_stack"].items():
            print(f"  {component:<10} {entry['libraries']:>3} x {', '.join(map(str, entry['versions']))}")
        for fw in f["frameworks"]:
            print(f"  framework {fw['name']} {fw['version']} built for {fw['built_for']}")
        link = f["linkage"]
        print(f"linkage{' (--all-elf)' if link['all_elf'] else ''}: {link['consumers']} consumers, "
              f"{link['resolutions']} resolutions ({link['not_found']} not found) "
              f"in {link['seconds']} s")
    if "profile" in figures:
        p = figures["profile"]
        print(f"profile (one cold run, {p['wall_seconds']:.1f} s wall): most own time")
        for e in p["top_own"][:12]:
            print(f"  {e['own_seconds']:>8.2f} s own {e['cumulative_seconds']:>8.2f} s cum "
                  f"{e['calls']:>9}  {e['function']}")
    for name, found_problems in figures["problems"].items():
        print(f"{name}: " + "; ".join(found_problems))
    print("checks: " + ("PASS" if figures["ok"] else "FAIL"))


if __name__ == "__main__":
    sys.exit(main())
