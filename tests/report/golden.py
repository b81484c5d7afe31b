"""Golden files for the report formats: the demo image's document, redacted, rendered and compared
with ``tests/report/golden/<name>``.

To accept a change of a format (or of the demo image), rewrite the files and review the diff:

    AUDITOR_UPDATE_GOLDEN=1 .venv/bin/pytest tests/report

Redacted before rendering (they change from run to run or machine to machine): ``auditor_version``,
``elapsed_seconds``, ``timings``, and the cache directory in every string (the demo's OCI layout
lives under it, so it shows in ``reference`` and ``image.source``).
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from pathlib import Path
from typing import Any

import pytest

from auditor.audit import AuditOptions, audit
from auditor.demo import build_demo_image
from auditor.report.document import build_document
from auditor.sources.cache import BlobCache

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
UPDATE_ENV = "AUDITOR_UPDATE_GOLDEN"
REDACTED_VERSION = "0.0.0+golden"
CACHE = "<cache>"
# A user's cache directory, wherever it is: /root/.cache/auditor, /home/x/.cache/auditor, ...
_USER_CACHE = re.compile(r"(?:/[^/\s:'\"]+)*/\.cache/auditor")

_documents: dict[str, dict[str, Any]] = {}


def redact(document: dict[str, Any], roots: tuple[str, ...] = ()) -> dict[str, Any]:
    """A copy of ``document`` without what varies between runs and machines; each of ``roots``
    (and any ``.../.cache/auditor``) becomes ``<cache>`` wherever it appears in a string."""
    out = copy.deepcopy(document)
    if "auditor_version" in out:
        out["auditor_version"] = REDACTED_VERSION
    if "elapsed_seconds" in out:
        out["elapsed_seconds"] = 0.0
    if "timings" in out:
        out["timings"] = {"rootfs_seconds": 0.0, "catalogers": {}}
    ordered = sorted((r.rstrip("/") for r in roots if r), key=len, reverse=True)

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            for root in ordered:
                value = value.replace(root, CACHE)
            return _USER_CACHE.sub(CACHE, value)
        if isinstance(value, list):
            return [scrub(v) for v in value]
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        return value

    return scrub(out)


def demo_document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The demo image's report document, redacted; audited once per test session."""
    if "demo" not in _documents:
        root = tmp_path_factory.mktemp("golden-demo")
        cache = BlobCache(root / "cache")
        reference = build_demo_image(cache)
        result = audit(reference, AuditOptions(cache_dir=str(cache.root)))
        _documents["demo"] = redact(build_document(result), roots=(str(root), str(root.resolve())))
    return copy.deepcopy(_documents["demo"])


def assert_golden(name: str, actual: str) -> None:
    """``actual`` equals the golden file ``name``; with ``AUDITOR_UPDATE_GOLDEN=1``, it becomes it."""
    path = GOLDEN_DIR / name
    if os.environ.get(UPDATE_ENV) == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != actual:
            path.write_text(actual, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(f"no golden file {path}; create it with {UPDATE_ENV}=1 and review it")
    expected = path.read_text(encoding="utf-8")
    if expected != actual:
        diff = "".join(difflib.unified_diff(expected.splitlines(keepends=True),
                                            actual.splitlines(keepends=True),
                                            f"golden/{name}", "rendered", n=2))
        if len(diff) > 6000:
            diff = diff[:6000] + "\n... (diff cut)\n"
        pytest.fail(f"{name} differs from its golden file (if intended, rerun with {UPDATE_ENV}=1 "
                    f"and review the change):\n{diff}")
