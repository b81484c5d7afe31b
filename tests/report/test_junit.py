"""The ``junit`` format: well-formed XML whose counts are the rules' statuses; suppressed findings
skipped; the demo's golden file.

Golden files: ``AUDITOR_UPDATE_GOLDEN=1 .venv/bin/pytest tests/report`` rewrites them (see
``tests/report/golden.py``)."""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from auditor.report.formats import render
from auditor.report.junit import INVENTORY_SUITE
from tests.report.golden import assert_golden, demo_document


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return demo_document(tmp_path_factory)


def junit(document: dict[str, Any]) -> ET.Element:
    text = render("audit", "junit", document)
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n')
    return ET.fromstring(text.encode("utf-8"))


def counts(element: ET.Element) -> dict[str, int]:
    return {key: int(element.get(key, "-1")) for key in ("tests", "failures", "errors", "skipped")}


def test_golden(document: dict[str, Any]) -> None:
    assert_golden("demo.junit.xml", render("audit", "junit", document))


def test_counts_are_the_rule_statuses(document: dict[str, Any]) -> None:
    root = junit(document)
    assert root.tag == "testsuites"
    rules = document["rules"]
    packs = [f"{p['name']}@{p['version']}" for p in rules["packs"]]
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert list(suites) == [*packs, INVENTORY_SUITE]
    for pack in packs:
        results = [r for r in rules["results"] if r["pack"] == pack]
        suite = suites[pack]
        assert counts(suite) == {
            "tests": len(results), "errors": 0,
            "failures": sum(r["status"] == "fired" for r in results),
            "skipped": sum(r["status"] == "not-evaluable" for r in results)}, pack
        for result, case in zip(results, suite.findall("testcase"), strict=True):
            assert case.get("classname") == pack.split("@")[0]
            assert case.get("name") == f"{result['rule']}: {result['title']}"
            assert (case.find("failure") is not None) == (result["status"] == "fired")
    inventory = [f for f in document["findings"] if "rule" not in f]
    assert counts(suites[INVENTORY_SUITE]) == {"tests": len(inventory), "failures": len(inventory),
                                               "errors": 0, "skipped": 0}
    assert counts(root) == {"tests": rules["evaluated"] + len(inventory),
                            "failures": len(rules["fired"]) + len(inventory), "errors": 0,
                            "skipped": len(rules["not_evaluable"])}
    assert root.find(".//testcase[@timestamp]") is None and root.get("timestamp") is None


def test_failure_carries_message_fix_and_path(document: dict[str, Any]) -> None:
    root = junit(document)
    (case,) = [c for c in root.iter("testcase")
               if c.get("name", "").startswith("cudnn-8.1-birnn-nondeterminism:")]
    failure = case.find("failure")
    assert failure is not None
    assert failure.get("type") == "high"
    assert failure.get("message") == "1 finding: cudnn 8.1.0.77 (fixed in 8.2.1)"
    body = failure.text or ""
    assert "bidirectional RNN" in body
    assert "Fix: Rebuild the image on CUDA 11.3" in body
    assert "Path: /usr/lib/x86_64-linux-gnu/libcudnn.so.8.1.0" in body
    (cublas,) = [c for c in root.iter("testcase")
                 if c.get("name", "").startswith("cublas-multistream-workspace-nondeterminism:")]
    assert cublas.find("failure").get("message") == "2 findings: cublas 11; cublasLt 11.4.1"
    (inventory,) = [s for s in root.findall("testsuite") if s.get("name") == INVENTORY_SUITE]
    (case,) = inventory.findall("testcase")
    assert case.get("name") == "version-disagreement: nccl"
    assert case.find("failure").get("type") == "medium"


def test_not_evaluable_suppressed_and_hostile_text(document: dict[str, Any]) -> None:
    doc = copy.deepcopy(document)
    passed = next(r for r in doc["rules"]["results"] if r["status"] == "passed")
    passed.update(status="not-evaluable", reasons=["the GPU architecture is unknown"])
    doc["rules"]["passed"].remove(passed["rule"])
    doc["rules"]["not_evaluable"].append({"rule": passed["rule"], "reasons": passed["reasons"]})
    # every finding of the cuDNN BiRNN rule and the inventory's finding go to the ignore file
    hidden = [f for f in doc["findings"] if f["id"] in ("cudnn-8.1-birnn-nondeterminism",
                                                        "version-disagreement")]
    doc["findings"] = [f for f in doc["findings"] if f not in hidden]
    doc["suppressed"] = [{"finding": f, "ignore": {"rule": f["id"], "reason": "accepted <risk> & co",
                                                   "expires": "2099-01-01", "source": "ignore.yaml"}}
                         for f in hidden]
    doc["findings"][0]["message"] = "bad \x00 bytes \x1b[31m and \ud800 surrogate"
    root = junit(doc)
    skipped = {c.get("name").split(":")[0]: c.find("skipped") for c in root.iter("testcase")
               if c.find("skipped") is not None}
    assert skipped[passed["rule"]].get("message") == "not evaluable: the GPU architecture is unknown"
    assert "accepted <risk> & co" in skipped["cudnn-8.1-birnn-nondeterminism"].get("message")
    assert "expires 2099-01-01" in skipped["version-disagreement"].get("message")
    assert counts(root)["skipped"] == 3
    assert counts(root)["failures"] == len(document["rules"]["fired"]) - 1  # the BiRNN rule is skipped
    assert "\ufffd" in ET.tostring(root, encoding="unicode")


def test_a_document_without_rules() -> None:
    bare = {"reference": {"canonical": "docker.io/library/x:1"}, "image": {}, "findings": [
        {"id": "linkage-missing-library", "severity": "high", "component": "libfoo.so.1",
         "message": "libfoo.so.1 is needed but not found.", "path": None, "evidence": []}]}
    root = junit(bare)
    assert [s.get("name") for s in root.findall("testsuite")] == [INVENTORY_SUITE]
    assert counts(root) == {"tests": 1, "failures": 1, "errors": 0, "skipped": 0}
    assert counts(junit({"findings": []})) == {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
