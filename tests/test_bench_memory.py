"""scripts/bench_memory.py as a check: a 0.3 GiB layer audits under the 300 MB peak RSS target."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_memory_small_layer_stays_under_the_rss_target(tmp_path: Path) -> None:
    figures_file = tmp_path / "bench.json"
    workdir = tmp_path / "work"
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_memory.py"), "--size-gib", "0.3",
         "--json", str(figures_file), "--workdir", str(workdir)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    figures = json.loads(figures_file.read_text())
    assert figures["ok"] is True
    assert figures["layout"]["big_layer_uncompressed_bytes"] >= 0.3 * (1 << 30)
    runs = {run["name"]: run for run in figures["runs"]}
    assert set(runs) == {"cold", "warm"}
    for run in runs.values():
        assert run["exit_code"] == 0
        assert run["report_ok"] is True  # every file and byte of the layer was accounted for
        assert 10 < run["peak_rss_mb"] < 300  # measured (a Python process is over 10 MB), and low
    assert "PASS" in result.stdout
    assert list(workdir.iterdir()) == []  # without --keep, nothing is left behind


def test_bench_memory_fails_when_the_target_is_not_met(tmp_path: Path) -> None:
    """The exit code is the check: an impossible target must fail it."""
    figures_file = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_memory.py"), "--size-gib", "0.01",
         "--max-rss-mb", "1", "--json", str(figures_file), "--workdir", str(tmp_path / "work")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    figures = json.loads(figures_file.read_text())
    assert figures["ok"] is False
    assert all(run["exit_code"] == 0 and run["report_ok"] for run in figures["runs"])
    assert "FAIL" in result.stdout
