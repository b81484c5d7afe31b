"""Every report format, by name: one renderer per format, all from the same report document
(``auditor/report/document.py``; a diff has its own document, ``auditor/diff.py``).

A renderer is ``render(document, context) -> str``; the modules are imported when used."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

AUDIT_FORMATS = ("table", "json", "sarif", "junit", "markdown", "cyclonedx")
DIFF_FORMATS = ("table", "json", "markdown")
PROBE_FORMATS = ("table", "json", "markdown")
_RENDERERS = {
    ("audit", "table"): "auditor.report.table:render_table_text",
    ("audit", "json"): "auditor.report.document:render_document",
    ("audit", "sarif"): "auditor.report.sarif:render",
    ("audit", "junit"): "auditor.report.junit:render",
    ("audit", "markdown"): "auditor.report.markdown:render",
    ("audit", "cyclonedx"): "auditor.report.cyclonedx:render",
    ("diff", "table"): "auditor.report.diff_text:render_table",
    ("diff", "json"): "auditor.report.document:render_document",
    ("diff", "markdown"): "auditor.report.diff_text:render_markdown",
    ("probe", "table"): "auditor.report.probe_text:render_table",
    ("probe", "json"): "auditor.report.document:render_document",
    ("probe", "markdown"): "auditor.report.probe_text:render_markdown",
}


@dataclass(frozen=True)
class RenderContext:
    """What a renderer may need besides the document."""

    terminal: bool = False  # the table goes to an interactive terminal (colours, its width)
    width: int | None = None  # columns for the table when not a terminal
    dockerfile: str | None = None  # --dockerfile PATH as given (SARIF locations)
    dockerfile_text: str | None = None


def render(kind: str, fmt: str, document: dict[str, Any], context: RenderContext = RenderContext()) -> str:
    module, _, name = _RENDERERS[(kind, fmt)].partition(":")
    return getattr(importlib.import_module(module), name)(document, context)
