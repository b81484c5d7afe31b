"""Every module of the package imports on its own, first, in a fresh interpreter: an import
cycle that only some import orders reach (auditor.linkage.runtime did) fails here, not in a
user's script."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import auditor

# The probe's payload is not imported here: its scripts run inside the probe container, beside
# one another (``import probe_util``).
MODULES = sorted(m.name for m in pkgutil.walk_packages(auditor.__path__, "auditor.")
                 if not m.name.endswith("__main__") and not m.name.startswith("auditor.probe.payload."))


def _import_alone(module: str) -> tuple[str, str]:
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                          text=True, timeout=120)
    return module, done.stderr.strip().splitlines()[-1] if done.returncode else ""


def test_every_module_imports_alone() -> None:
    assert len(MODULES) > 50  # the walk found the package
    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = {m: err for m, err in pool.map(_import_alone, MODULES) if err}
    assert failures == {}
