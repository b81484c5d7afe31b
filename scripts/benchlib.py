"""What the benchmark scripts share: ``auditor audit`` run in a child process, timed, with that
process's own peak RSS (``VmHWM``), and a description of the machine.

Imported by scripts/bench_memory.py and scripts/bench_inventory.py (as ``benchlib``: a script's
own folder is first on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MiB = 1 << 20
GiB = 1 << 30
MB = 1_000_000


@dataclass
class Run:
    name: str
    exit_code: int
    wall_seconds: float
    peak_rss_bytes: int
    stderr: str
    report_ok: bool = False

    @property
    def peak_rss_mb(self) -> float:
        return self.peak_rss_bytes / MB


# Runs ``auditor`` and, at exit, writes its own peak RSS (VmHWM, in KiB) as the last line of
# stderr. VmHWM belongs to the address space made at exec, unlike wait4's ru_maxrss, which Linux
# carries over from a large parent (say, pytest) and would report instead of the audit's own.
HWM_LAUNCHER = """
import atexit, runpy, sys
def report():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                sys.stderr.write("VmHWM " + line.split()[1] + "\\n")
atexit.register(report)
sys.argv = ["auditor", *sys.argv[1:]]
runpy.run_module("auditor", run_name="__main__")
"""


def audit_args(reference: str, cache: Path, report: Path, extra: Sequence[str] = ()) -> list[str]:
    """``auditor``'s arguments for a JSON report of ``reference`` with the given cache."""
    return ["audit", reference, "--format", "json", "-o", str(report), "--cache-dir", str(cache),
            *extra]


def audit_once(name: str, reference: str, cache: Path, report: Path,
               extra: Sequence[str] = ()) -> Run:
    """One ``auditor audit`` in a child process, and that process's own peak RSS."""
    command = [sys.executable, "-c", HWM_LAUNCHER, *audit_args(reference, cache, report, extra)]
    started = time.monotonic()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          check=False)
    wall = time.monotonic() - started
    lines = done.stderr.strip().splitlines()
    peak = 0
    if lines and lines[-1].startswith("VmHWM "):
        peak = int(lines.pop().split()[1]) * 1024
    return Run(name, done.returncode, wall, peak, "\n".join(lines).strip())


def summary(runs: list[Run]) -> dict[str, float]:
    """Min and median of wall time and peak RSS over runs of one kind."""
    walls = [r.wall_seconds for r in runs]
    peaks = [r.peak_rss_mb for r in runs]
    return {"runs": len(runs), "wall_min_s": round(min(walls), 2),
            "wall_median_s": round(statistics.median(walls), 2),
            "peak_rss_max_mb": round(max(peaks), 1),
            "peak_rss_median_mb": round(statistics.median(peaks), 1)}


def run_figures(run: Run) -> dict[str, Any]:
    """A run as JSON (stderr left out)."""
    return {"name": run.name, "exit_code": run.exit_code, "report_ok": run.report_ok,
            "wall_seconds": round(run.wall_seconds, 3), "peak_rss_bytes": run.peak_rss_bytes,
            "peak_rss_mb": round(run.peak_rss_mb, 1)}


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


def emit(figures: dict[str, Any], print_figures: Callable[[dict[str, Any]], None], kept: Path | None,
         json_file: Path | None) -> int:
    """Print the figures, say where the kept work is, write the JSON; the exit code (0 when
    ``figures["ok"]``, else 1)."""
    print_figures(figures)
    if kept is not None:
        print(f"kept: {kept}")
    if json_file is not None:
        json_file.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["ok"] else 1
