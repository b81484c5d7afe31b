"""The ``markdown`` format (a PR comment): the demo's golden file, the findings table, escaping,
the size cap; and the ``table`` format's golden file (plain text at 132 columns).

Golden files: ``AUDITOR_UPDATE_GOLDEN=1 .venv/bin/pytest tests/report`` rewrites them (see
``tests/report/golden.py``)."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from auditor.report.formats import RenderContext, render
from auditor.report.markdown import MAX_BYTES, code, text
from tests.report.golden import assert_golden, demo_document


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return demo_document(tmp_path_factory)


def markdown(document: dict[str, Any]) -> str:
    return render("audit", "markdown", document)


def table_rows(md: str, header: str) -> list[list[str]]:
    """The cells of the table whose header line starts with ``header`` (GFM: ``\\|`` is no cell break)."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def test_golden(document: dict[str, Any]) -> None:
    assert_golden("demo.md", markdown(document))


def test_table_golden(document: dict[str, Any]) -> None:
    rendered = render("audit", "table", document, RenderContext(width=132))
    # rich pads lines to the width; trailing blanks would not survive editors and hooks
    assert_golden("demo.table.txt", "".join(line.rstrip() + "\n" for line in rendered.splitlines()))


def test_heading_verdict_and_findings_table(document: dict[str, Any]) -> None:
    md = markdown(document)
    first = md.splitlines()[0]
    assert first.startswith("### ") and "demo/v3:demo" in first
    assert f"`{document['image']['digest'][:19]}`" in first  # sha256: and 12 hex digits
    findings = document["findings"]
    assert f"**{len(findings)} findings**" in md
    rows = table_rows(md, "| Severity |")
    assert len(rows) == len(findings)
    assert all(len(row) == 5 for row in rows)
    ids = [row[1].strip("`") for row in rows]
    assert "cudnn-8.1-birnn-nondeterminism" in ids
    (birnn,) = [row for row in rows if row[1] == "`cudnn-8.1-birnn-nondeterminism`"]
    assert birnn[0] == "**high**" and birnn[2] == "cudnn" and birnn[3] == "8.1.0.77 → 8.2.1"
    order = ["critical", "high", "medium", "low", "info"]
    ranks = [order.index(row[0].strip("*")) for row in rows]
    assert ranks == sorted(ranks)  # the worst first
    for section in ("Remediation and references", "Numeric stack", "Frameworks", "Rule packs"):
        assert f"<details><summary>{section}" in md
    assert md.count("<details>") == md.count("</details>")
    assert "gate" not in md  # no gate in the document, none in the comment


def test_cells_are_escaped(document: dict[str, Any]) -> None:
    doc = copy.deepcopy(document)
    finding = next(f for f in doc["findings"] if f["id"] == "cudnn-8.1-birnn-nondeterminism")
    finding["component"] = "cu|dnn <b>x</b> *y*\nnext"
    finding["rule"]["effect"] = "a | b"
    finding["id"] = "weird`|id"
    md = markdown(doc)
    rows = table_rows(md, "| Severity |")
    (row,) = [r for r in rows if "weird" in r[1]]
    assert len(row) == 5
    assert row[1] == "``weird`\\|id``"
    assert row[2] == "cu\\|dnn \\<b\\>x\\</b\\> \\*y\\* next"
    assert row[4] == "a \\| b"
    assert text("a_b _c_") == "a_b \\_c\\_"  # intra-word underscores stay readable
    assert code("`x`") == "`` `x` ``"


def test_gate_suppressed_and_not_evaluable(document: dict[str, Any]) -> None:
    doc = copy.deepcopy(document)
    hidden = doc["findings"].pop()
    doc["suppressed"] = [{"finding": hidden, "ignore": {"rule": hidden["id"], "reason": "known | fine",
                                                        "expires": "2099-01-01", "source": "ignore.yaml"}}]
    doc["gate"] = {"fail_on": "high", "failed": True, "failing": 7, "counts": {"high": 7}}
    doc["rules"]["not_evaluable"] = [{"rule": "torch-magma-lu-wrong-results",
                                      "reasons": ["no MAGMA version found"]}]
    md = markdown(doc)
    verdict = md.split("\n\n")[2]
    assert "1 suppressed" in verdict and "gate `--fail-on high` **failed** (7 at high or above)" in verdict
    assert "<details><summary>Suppressed (1)</summary>" in md
    assert "known \\| fine" in md
    assert "<details><summary>Rules not evaluable (1)</summary>" in md
    assert "`torch-magma-lu-wrong-results`: no MAGMA version found" in md


def test_stays_under_the_comment_limit(document: dict[str, Any]) -> None:
    doc = copy.deepcopy(document)
    template = doc["findings"][1]
    doc["findings"] = [{**template, "id": f"rule-{n}", "message": "m" * 2000,
                        "rule": {**template["rule"], "effect": "e " * 1500}} for n in range(3000)]
    doc["numeric_stack"] = [{**doc["numeric_stack"][0], "component": f"c{n}", "path": f"lib/{n}.so"}
                            for n in range(5000)]
    md = markdown(doc)
    assert len(md.encode("utf-8")) <= MAX_BYTES
    assert "… and " in md and " more findings" in md
    assert md.count("<details>") == md.count("</details>")
    assert len(markdown(document).encode("utf-8")) < 30_000  # the demo is far from it


def test_one_huge_field_is_still_cut_to_fit(document: dict[str, Any]) -> None:
    doc = copy.deepcopy(document)
    for f in doc["findings"]:
        f["component"] = "x" * 100_000
        f["remediation"] = "fix " * 50_000
        f["assumptions"] = ["a " * 50_000] * 20
    md = markdown(doc)
    assert len(md.encode("utf-8")) <= MAX_BYTES
    assert md.count("<details>") == md.count("</details>")


def test_a_bare_document() -> None:
    md = markdown({"reference": {"canonical": "x:1"}, "image": {}, "findings": []})
    assert md.startswith("### Image audit: `x:1`\n\n**No findings**.")
    assert "<details>" not in md
