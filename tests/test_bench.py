"""scripts/bench.py --quick as a smoke test: the QUICK image read as an OCI layout, a docker-archive
and from a loopback registry, audited cold and warm, one new layer on a warmed cache, syft on the
same three, the floor and the 2x image; every run must succeed and every report check out. No
assertion is made on a timing. Plus the pure table and targets arithmetic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import bench  # noqa: E402


@pytest.mark.slow
@pytest.mark.registry
def test_bench_quick(tmp_path: Path) -> None:
    figures_file = tmp_path / "bench.json"
    env = {**os.environ, "AUDITOR_FIXTURE_CACHE": str(tmp_path / "fixtures"),  # built here
           "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench.py"), "--quick", "--synthetic",
         "--json", str(figures_file)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    figures = json.loads(figures_file.read_text())
    assert figures["ok"] is True and figures["problems"] == {}
    series = {(s["tool"], s["form"], s["mode"]): s["runs"] for s in figures["series"]}
    for form in bench.FORMS:
        assert form in figures["forms"]
        for mode in ("cold", "warm"):
            runs = series[("auditor", form, mode)]
            assert len(runs) == 1  # --quick: one run each
            assert all(r["exit_code"] == 0 and r["report_ok"] and r["peak_rss_mb"] > 0 for r in runs)
        syft = series[("syft", form, "cold")]
        assert all(r["exit_code"] == 0 and r["artifacts"] and r["peak_rss_mb"] > 0 for r in syft)
    streamed = series[("auditor", "registry", "streamed")]  # --no-keep-layers
    assert len(streamed) == 1 and streamed[0]["exit_code"] == 0 and streamed[0]["report_ok"]
    lazy, lazy_warm = series[("auditor", "registry", "lazy")], series[("auditor", "registry", "lazy warm")]
    assert lazy[0]["exit_code"] == 0 and lazy[0]["report_ok"] and lazy_warm[0]["report_ok"]
    chunked = figures["derived"]["zstd-chunked"]  # skopeo's zstd:chunked copy, read by its tables
    assert 0 < lazy[0]["fetched_bytes"] < chunked["compressed_bytes"]
    assert lazy_warm[0]["fetched_bytes"] == lazy[0]["fetched_bytes"]  # the cached scans' record
    lazy, lazy_warm = (series[("auditor", "registry", "estargz lazy")],
                       series[("auditor", "registry", "estargz lazy warm")])
    assert lazy[0]["exit_code"] == 0 and lazy[0]["report_ok"] and lazy_warm[0]["report_ok"]
    assert 0 < lazy[0]["fetched_bytes"] < figures["derived"]["estargz"]["compressed_bytes"]
    floor = series[("floor", "oci", "all layers")]
    assert all(r["wall_seconds"] > 0 and r["bytes"] == figures["image"]["uncompressed_bytes"]
               for r in floor)
    assert floor[0]["library"] in ("isal", "zlib-ng", "zlib")
    new_layer = series[("auditor", "oci+1", "new layer")]
    assert all(r["exit_code"] == 0 and r["report_ok"] for r in new_layer)
    assert new_layer[0]["layers_indexed"] == 1  # the warm cache held every other layer
    assert series[("floor", "oci+1", "new layer")][0]["exit_code"] == 0
    for mode in ("cold", "cold --jobs 1"):  # layers read at once, and one at a time
        double = series[("auditor", "2x", mode)]
        assert double[0]["exit_code"] == 0 and double[0]["report_ok"] and double[0]["peak_rss_mb"] > 0
    floor_2x = series[("floor", "2x", "all layers")]
    assert floor_2x[0]["bytes"] == figures["derived"]["2x"]["uncompressed_bytes"]
    assert figures["derived"]["2x"]["files"] == 2 * figures["image"]["files"]
    assert {(r["tool"], r["form"], r["mode"]) for r in figures["rows"]} == set(series)
    assert figures["targets"] and "targets" in result.stdout and "checks: PASS" in result.stdout
    assert list((tmp_path / "tmp").iterdir()) == []  # without --keep, no temp dir is left
    # built once, beside the cached layout: a second run reuses them
    image = next((tmp_path / "fixtures" / "bench-inventory").glob("quick-*"))
    assert {p.name for p in image.glob("bench1-*")} >= {
        "bench1-docker-archive.tar", "bench1-new-layer", "bench1-double", "bench1-zstd-chunked",
        "bench1-estargz"}
    assert not list(image.glob(".building-*"))


def run(wall: float, rss: float = 50.0, ok: bool = True) -> dict[str, Any]:
    return {"wall_seconds": wall, "peak_rss_mb": rss, "exit_code": 0, "report_ok": ok}


def series(tool: str, form: str, mode: str, *walls: float, rss: float = 50.0) -> dict[str, Any]:
    return {"tool": tool, "form": form, "mode": mode, "runs": [run(w, rss) for w in walls]}


def test_rows_and_targets() -> None:
    rows = bench.table_rows([
        series("floor", "oci", "all layers", 10.0, 12.0, 11.0),
        series("floor", "oci+1", "new layer", 0.01),
        series("auditor", "oci", "cold", 14.0, 16.0, 15.0, rss=120.0),
        series("auditor", "oci", "warm", 1.0, 3.0, 1.5),
        series("auditor", "oci+1", "new layer", 2.5),
        series("auditor", "registry", "cold", 20.0),
        series("auditor", "registry", "streamed", 16.0),
        series("syft", "oci", "cold", 90.0, 80.0, 100.0, rss=900.0),
        series("auditor", "2x", "cold", 30.0, rss=310.0),
        series("auditor", "2x", "cold --jobs 1", 36.0, rss=200.0),
        series("floor", "2x", "all layers", 24.0),
    ])
    by_key = {(r["tool"], r["form"], r["mode"]): r for r in rows}
    cold = by_key[("auditor", "oci", "cold")]
    assert (cold["wall_min_s"], cold["wall_median_s"], cold["peak_rss_max_mb"]) == (14.0, 15.0, 120.0)
    assert cold["x_floor"] == round(15 / 11, 2) and cold["syft_speedup"] == 6.0
    assert by_key[("auditor", "oci", "warm")]["syft_speedup"] == 60.0
    assert by_key[("auditor", "registry", "cold")]["syft_speedup"] is None  # no syft row
    assert by_key[("syft", "oci", "cold")]["syft_speedup"] is None
    assert by_key[("auditor", "2x", "cold")]["x_floor"] == 1.25  # over the 2x image's own floor
    assert by_key[("auditor", "2x", "cold --jobs 1")]["x_floor"] == 1.5
    assert all(r["ok"] for r in rows)

    met = {t["target"].split(" (")[0] + " " + t["target"].split("(")[1].split(")")[0]: t["met"]
           for t in bench.targets(rows)}
    assert met == {
        "cold <= 1.5x floor oci": True,  # 1.36
        "cold <= 1.5x floor registry": False,  # 1.82
        "cold <= 1.5x floor registry, --no-keep-layers": True,  # 1.45
        ">= 5x faster than syft oci, cold": True,
        "warm <= 2 s oci": True,  # the median, 1.5
        "one new layer <= 2 s + its floor 2.01 s": False,
        "peak RSS <= 300 MB the image": True,
        "peak RSS <= 300 MB the 2x image": False,
    }


def test_prefixed_names() -> None:
    assert bench.prefixed("./usr/lib/x.so") == "opt/copy/usr/lib/x.so"
    assert bench.prefixed("usr/") == "opt/copy/usr"
    assert bench.prefixed("./") == bench.prefixed("") == "opt/copy"
