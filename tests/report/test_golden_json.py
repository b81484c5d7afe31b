"""Golden files for the machine formats without a renderer module of their own: the report JSON
(its schema is checked everywhere else; this pins its content) and the CycloneDX BOM (timestamp
redacted). Update with AUDITOR_UPDATE_GOLDEN=1, as tests/report/golden.py says."""

from __future__ import annotations

import json
import re

import pytest

from auditor.report.formats import RenderContext, render
from tests.report.golden import assert_golden, demo_document


def test_report_json_golden(tmp_path_factory: pytest.TempPathFactory) -> None:
    document = demo_document(tmp_path_factory)
    assert_golden("demo.json", render("audit", "json", document, RenderContext()))


def test_cyclonedx_golden(tmp_path_factory: pytest.TempPathFactory) -> None:
    bom = json.loads(render("audit", "cyclonedx", demo_document(tmp_path_factory), RenderContext()))
    bom["metadata"]["timestamp"] = "1970-01-01T00:00:00+00:00"
    text = json.dumps(bom, indent=2, sort_keys=True) + "\n"
    assert not re.search(r"/\.cache/auditor", text)
    assert_golden("demo.cdx.json", text)
