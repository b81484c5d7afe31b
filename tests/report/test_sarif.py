"""The ``sarif`` format: valid against the official SARIF 2.1.0 schema, one descriptor per rule,
results pointing into the image and at the Dockerfile line behind them; the demo's golden file.

Golden files: ``AUDITOR_UPDATE_GOLDEN=1 .venv/bin/pytest tests/report`` rewrites them (see
``tests/report/golden.py``)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from auditor.dockerfile import parse_dockerfile
from auditor.report.formats import RenderContext, render
from auditor.report.sarif import fingerprint
from tests.report.golden import REDACTED_VERSION, assert_golden, demo_document

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "shared/data/schemas/sarif-schema-2.1.0.json"

# A multi-stage Dockerfile: continuation lines (with a comment inside), both ENV forms, and a final
# stage built FROM an earlier one (so it inherits that stage's ENV and RUN lines).
DOCKERFILE = """\
# syntax=docker/dockerfile:1
ARG CUDA=11.2.2
FROM nvidia/cuda:${CUDA}-cudnn8-runtime-ubuntu20.04 AS base
ENV CUDA_VERSION=11.2.152 \\
    # NCCL as the base image ships it
    NCCL_VERSION=2.8.4 \\
    LD_LIBRARY_PATH=/usr/local/cuda/lib64
ENV CUDNN_VERSION 8.1.0.77
RUN apt-get update && apt-get install -y --no-install-recommends \\
        libcudnn8=8.1.0.77-1+cuda11.2 \\
        libnccl2 \\
    && rm -rf /var/lib/apt/lists/*

FROM python:3.11-slim AS tools
ENV NCCL_VERSION=9.9.9

FROM base
RUN pip install --no-cache-dir "tensorflow-gpu==2.8.0"
COPY train.py /opt/app/
"""


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return demo_document(tmp_path_factory)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft4Validator:
    if not SCHEMA_PATH.is_file():
        pytest.skip(f"the official SARIF schema is not at {SCHEMA_PATH}")
    return jsonschema.Draft4Validator(json.loads(SCHEMA_PATH.read_text()))


def sarif(document: dict[str, Any], context: RenderContext | None = None) -> dict[str, Any]:
    return json.loads(render("audit", "sarif", document, context or RenderContext()))


def assert_valid(validator: jsonschema.Draft4Validator, log: dict[str, Any]) -> None:
    errors = sorted(validator.iter_errors(log), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])


def test_golden(document: dict[str, Any]) -> None:
    context = RenderContext(dockerfile="docker/Dockerfile", dockerfile_text=DOCKERFILE)
    assert_golden("demo.sarif", render("audit", "sarif", document, context))


def test_valid_against_the_official_schema(document: dict[str, Any],
                                           validator: jsonschema.Draft4Validator) -> None:
    assert_valid(validator, sarif(document))
    assert_valid(validator, sarif(document, RenderContext(dockerfile="./Dockerfile",
                                                          dockerfile_text=DOCKERFILE)))


def test_rules_results_and_levels(document: dict[str, Any]) -> None:
    run = sarif(document)["runs"][0]
    driver = run["tool"]["driver"]
    assert (driver["name"], driver["version"]) == ("auditor", REDACTED_VERSION)
    rules = driver["rules"]
    ids = [r["id"] for r in rules]
    assert len(ids) == len(set(ids))
    evaluated = [r["rule"] for r in document["rules"]["results"]]
    assert ids[:len(evaluated)] == evaluated  # every evaluated rule, fired or not
    assert set(ids) == set(evaluated) | {f["id"] for f in document["findings"]}
    assert "version-disagreement" in ids  # the inventory's own finding has a descriptor too
    assert len(run["results"]) == len(document["findings"])

    birnn = rules[ids.index("cudnn-8.1-birnn-nondeterminism")]
    assert birnn["defaultConfiguration"]["level"] == "error"  # high
    assert birnn["shortDescription"]["text"].startswith("Bidirectional RNNs")
    assert birnn["helpUri"] == "https://doi.org/10.1109/eScience55777.2022.00056"
    assert "cuDNN 8.2.1" in birnn["help"]["text"] and "**Remediation:**" in birnn["help"]["markdown"]
    assert birnn["properties"]["pack"].startswith("cudnn@")
    assert birnn["properties"]["confidence"] == "verified"
    levels = {r["id"]: r["defaultConfiguration"]["level"] for r in rules}
    assert levels["env-pythonhashseed-unset"] == "note"  # low
    assert levels["version-disagreement"] == "warning"  # medium

    for result in run["results"]:
        assert ids[result["ruleIndex"]] == result["ruleId"]
    (result,) = [r for r in run["results"] if r["ruleId"] == "cudnn-8.1-birnn-nondeterminism"]
    assert result["level"] == "error"
    assert " Fix: Rebuild the image on CUDA 11.3" in result["message"]["text"]
    (location,) = result["locations"]
    assert location["physicalLocation"]["artifactLocation"] == {
        "uri": "usr/lib/x86_64-linux-gnu/libcudnn.so.8.1.0", "uriBaseId": "IMAGEROOT"}
    assert len(result["relatedLocations"]) == 6  # the other cuDNN files
    assert result["properties"]["fixed_in"] == "8.2.1"
    assert run["originalUriBaseIds"]["IMAGEROOT"]["uri"] == "file:///"
    assert run["properties"]["image"]["digest"] == document["image"]["digest"]
    assert run["invocations"] == [{"executionSuccessful": True}]


def test_every_result_has_a_location(document: dict[str, Any]) -> None:
    """GitHub's code scanning refuses the whole file when one result has none
    (github/codeql-action#1738): a finding no file holds points at the image's configuration."""
    assert any(not f.get("path") for f in document["findings"])  # PYTHONHASHSEED unset
    for context in (None, RenderContext(dockerfile="Dockerfile", dockerfile_text=DOCKERFILE)):
        run = sarif(document, context)["runs"][0]
        assert all(r["locations"] for r in run["results"])
        unset = next(r for r in run["results"] if r["ruleId"] == "env-pythonhashseed-unset")
        uri = unset["locations"][0]["physicalLocation"]["artifactLocation"]
        if context is None:
            assert uri == {"uri": "config.json", "uriBaseId": "IMAGECONFIG"}
            assert "IMAGECONFIG" in run["originalUriBaseIds"]
        else:  # the Dockerfile's final FROM, where an ENV for it would go
            assert uri == {"uri": "Dockerfile"}


def test_fingerprints_are_stable_and_distinct(document: dict[str, Any]) -> None:
    first, second = sarif(document), sarif(copy.deepcopy(document))
    prints = [r["partialFingerprints"] for r in first["runs"][0]["results"]]
    assert prints == [r["partialFingerprints"] for r in second["runs"][0]["results"]]
    values = [next(iter(p.values())) for p in prints]
    assert len(values) == len(set(values))  # cublas and cublasLt differ, same rule
    finding = document["findings"][0]
    moved = {**finding, "message": "reworded", "severity": "critical"}
    assert fingerprint(moved) == fingerprint(finding)  # the wording is not the identity
    assert fingerprint({**finding, "version": "9.9"}) != fingerprint(finding)


def test_dockerfile_map() -> None:
    mapping = parse_dockerfile(DOCKERFILE)
    assert mapping.from_lines == (3, 14, 17)
    assert mapping.final_from == 17
    # the final stage inherits "base" (not "tools", whose NCCL_VERSION it never sees)
    assert mapping.env == {"CUDA_VERSION": 4, "NCCL_VERSION": 6, "LD_LIBRARY_PATH": 7,
                           "CUDNN_VERSION": 8}
    assert mapping.package_line("libcudnn8") == 10
    assert mapping.package_line("libnccl2") == 11
    assert mapping.package_line("tensorflow_gpu") == 18  # compared PEP 503-style
    assert mapping.package_line("torch") is None


def test_dockerfile_forms() -> None:
    text = ("# escape=`\nFROM scratch\nENV A=1 `\n    B=\"two words\" C=x\nENV LEGACY a value\n"
            "ENV D=4\t\nRUN <<EOF\npip install jax==0.4.1\nEOF\nENV E=5\n")
    mapping = parse_dockerfile(text)
    assert mapping.env == {"A": 3, "B": 4, "C": 4, "LEGACY": 5, "D": 6, "E": 10}
    assert mapping.package_line("jax") == 8
    assert parse_dockerfile("").final_from is None
    assert parse_dockerfile("RUN x \\").env == {}


def test_dockerfile_locations(document: dict[str, Any], validator: jsonschema.Draft4Validator) -> None:
    context = RenderContext(dockerfile="./docker/Dockerfile", dockerfile_text=DOCKERFILE)
    log = sarif(document, context)
    assert_valid(validator, log)
    first: dict[tuple[str, str], dict[str, Any]] = {}
    for result in log["runs"][0]["results"]:
        location = result["locations"][0]  # the Dockerfile first: code scanning shows the first
        assert location["physicalLocation"]["artifactLocation"] == {"uri": "docker/Dockerfile"}
        first.setdefault((result["ruleId"], result["properties"]["component"]), location)

    def line(rule: str, component: str) -> tuple[int, str]:
        location = first[(rule, component)]
        return location["physicalLocation"]["region"]["startLine"], location["message"]["text"]

    # evidence from Env:NCCL_VERSION -> the continuation line of the ENV that sets it
    assert line("version-disagreement", "nccl") == (6, "sets NCCL_VERSION")
    # a library from a Debian package -> the line of the RUN naming the package
    assert line("cudnn-8.1-birnn-nondeterminism", "cudnn") == (10, "installs libcudnn8")
    # a framework from a wheel's metadata -> the pip install
    assert line("tensorflow-2.5-2.8-conv-determinism-lost", "tensorflow") == (18, "installs tensorflow-gpu")
    # no package known (cuBLAS from the CUDA toolkit) -> the final stage's FROM
    assert line("cublas-multistream-workspace-nondeterminism", "cublas")[0] == 17
    # a variable the Dockerfile never sets -> the final FROM, saying so
    assert line("env-pythonhashseed-unset", "python") == (
        17, "the final stage, which does not set PYTHONHASHSEED")


def test_dockerfile_uris(document: dict[str, Any]) -> None:
    for given, uri in (("Dockerfile", "Dockerfile"), ("/src/my app/Dockerfile", "file:///src/my%20app/Dockerfile"),
                       ("docker\\gpu.Dockerfile", "docker/gpu.Dockerfile")):
        log = sarif(document, RenderContext(dockerfile=given, dockerfile_text="FROM x\n"))
        result = log["runs"][0]["results"][0]
        assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == uri
        assert result["locations"][0]["physicalLocation"]["region"] == {"startLine": 1}


def test_suppressed_and_gate(document: dict[str, Any], validator: jsonschema.Draft4Validator) -> None:
    doc = copy.deepcopy(document)
    hidden = doc["findings"].pop(0)
    doc["suppressed"] = [{"finding": hidden, "ignore": {
        "rule": hidden["id"], "reason": "the base image's Env is stale; tracked in JIRA-1",
        "expires": "2099-01-01", "source": ".auditor-ignore.yaml"}}]
    doc["gate"] = {"fail_on": "high", "failed": True, "failing": 7, "counts": {"high": 7}}
    log = sarif(doc)
    assert_valid(validator, log)
    run = log["runs"][0]
    assert len(run["results"]) == len(document["findings"])
    (quiet,) = [r for r in run["results"] if "suppressions" in r]
    assert quiet["ruleId"] == hidden["id"]
    assert quiet["suppressions"][0]["kind"] == "external"
    assert quiet["suppressions"][0]["justification"].startswith("the base image's Env is stale")
    assert run["properties"]["gate"]["failed"] is True


def test_hostile_and_sparse_documents(document: dict[str, Any],
                                      validator: jsonschema.Draft4Validator) -> None:
    doc = copy.deepcopy(document)
    doc["findings"][0]["path"] = "opt/we ird/#lib?.so"
    doc["rules"]["results"][0]["status"] = "not-evaluable"
    doc["rules"]["not_evaluable"] = [{"rule": doc["rules"]["results"][0]["rule"],
                                      "reasons": ["no GPU architecture known"]}]
    log = sarif(doc)
    assert_valid(validator, log)
    run = log["runs"][0]
    uri = run["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == "opt/we%20ird/%23lib%3F.so"
    (note,) = run["invocations"][0]["toolExecutionNotifications"]
    assert "no GPU architecture known" in note["message"]["text"]
    bare = {"auditor_version": "1", "reference": {}, "image": {}, "findings": [
        {"id": "linkage-missing-library", "severity": "high", "component": "libfoo.so.1",
         "message": "libfoo.so.1 is needed but not found.", "path": None, "evidence": []}]}
    log = sarif(bare, RenderContext(dockerfile="Dockerfile", dockerfile_text="# no FROM here\n"))
    assert_valid(validator, log)
    (result,) = log["runs"][0]["results"]
    (location,) = result["locations"]  # no file, no FROM line: the image's configuration
    assert location["physicalLocation"]["artifactLocation"]["uriBaseId"] == "IMAGECONFIG"
    assert log["runs"][0]["tool"]["driver"]["rules"][0]["shortDescription"]["text"].startswith(
        "A library a consumer needs")


def test_an_expired_ignore_entry_points_at_its_line(validator: jsonschema.Draft4Validator) -> None:
    doc = {"auditor_version": "1", "reference": {}, "image": {}, "findings": [
        {"id": "ignore-expired", "severity": "low", "component": "version-disagreement",
         "message": "the ignore entry for version-disagreement expired", "path": None,
         "evidence": [{"kind": "ignore-file", "source": ".auditor-ignore.yaml:7", "value": "old",
                       "version": None}]}]}
    log = sarif(doc)
    assert_valid(validator, log)
    (result,) = log["runs"][0]["results"]
    assert result["locations"] == [{"physicalLocation": {
        "artifactLocation": {"uri": ".auditor-ignore.yaml"}, "region": {"startLine": 7}}}]
