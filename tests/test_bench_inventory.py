"""scripts/bench_inventory.py --quick as a check: two small NVIDIA wheels installed as pip would,
in an image built streaming, audit with their METADATA versions (the full torch benchmark is too
big for CI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_inventory_quick(tmp_path: Path) -> None:
    figures_file = tmp_path / "bench.json"
    workdir = tmp_path / "work"
    env = {**os.environ, "AUDITOR_FIXTURE_CACHE": str(tmp_path / "fixtures")}  # built here
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_inventory.py"), "--quick", "--runs", "2",
         "--json", str(figures_file), "--workdir", str(workdir)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    figures = json.loads(figures_file.read_text())
    assert figures["ok"] is True and figures["problems"] == {}
    assert [run["name"] for run in figures["runs"]] == ["cold-1", "cold-2", "warm-1", "warm-2"]
    assert all(run["report_ok"] and 10 < run["peak_rss_mb"] < 300 for run in figures["runs"])
    stack = figures["found"]["numeric_stack"]
    assert set(stack) >= {"cudart", "nvjitlink"}
    assert figures["image"]["files"] > 2 and figures["image"]["compressed_bytes"] > 0
    assert "PASS" in result.stdout
    assert list(workdir.iterdir()) == []  # without --keep, only the cached image is left
    assert len(list((tmp_path / "fixtures" / "bench-inventory").glob("quick-*/oci"))) == 1
