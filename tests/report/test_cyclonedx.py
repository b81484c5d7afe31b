"""``--format cyclonedx``: the report document as a CycloneDX 1.6 BOM, checked with
cyclonedx-python-lib's own strict validator, on the demo image, on hand-made documents, and
(slow) on an image of NVIDIA's real wheels."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from auditor.audit import AuditOptions, audit
from auditor.demo import build_demo_image
from auditor.report.cyclonedx import render
from auditor.report.document import build_document
from auditor.report.formats import RenderContext
from auditor.report.formats import render as render_format
from auditor.sources.cache import BlobCache

Doc = dict[str, Any]
DIGEST = "sha256:" + "ab" * 32
TF_CONSUMER = "/usr/local/lib/python3.11/dist-packages/tensorflow/python/_pywrap_tensorflow_internal.so"
CUDNN = "usr/lib/x86_64-linux-gnu/libcudnn.so.8.1.0"


def validate(text: str) -> None:
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
    assert errors is None, [str(e) for e in errors]


def redacted(text: str) -> Doc:
    bom = json.loads(text)
    assert bom["metadata"].pop("timestamp")
    return bom


def props(component: Doc, name: str) -> list[str]:
    return [p["value"] for p in component.get("properties", []) if p["name"] == name]


def by_ref(bom: Doc) -> dict[str, Doc]:
    return {c["bom-ref"]: c for c in bom["components"]}


def depends_on(bom: Doc, ref: str) -> list[str]:
    return next((d.get("dependsOn", []) for d in bom["dependencies"] if d["ref"] == ref), [])


def library_at(bom: Doc, path: str) -> Doc:
    (found,) = [c for c in bom["components"] if props(c, "auditor:path") == [path]
                and c["bom-ref"].startswith("numeric:")]
    return found


# -- the demo image --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Doc:
    cache = BlobCache(tmp_path_factory.mktemp("cdx") / "cache")
    result = audit(build_demo_image(cache), AuditOptions(cache_dir=str(cache.root)))
    return build_document(result)


@pytest.fixture(scope="module")
def demo_text(demo: Doc) -> str:
    return render_format("audit", "cyclonedx", demo, RenderContext())


@pytest.fixture(scope="module")
def demo_bom(demo_text: str) -> Doc:
    return json.loads(demo_text)


def test_the_demo_bom_is_valid_cyclonedx_1_6(demo_text: str) -> None:
    validate(demo_text)
    bom = json.loads(demo_text)
    assert (bom["bomFormat"], bom["specVersion"], bom["version"]) == ("CycloneDX", "1.6", 1)
    assert list(bom)[:3] == ["$schema", "bomFormat", "specVersion"]
    refs = [c["bom-ref"] for c in bom["components"]]
    assert len(refs) == len(set(refs)) and not any(r.startswith("BomRef") for r in refs)


def test_the_image_is_the_container_component_with_its_digest(demo: Doc, demo_bom: Doc) -> None:
    image = demo_bom["metadata"]["component"]
    digest = demo["image"]["digest"]
    assert image["type"] == "container" and image["version"] == digest
    assert image["purl"].startswith("pkg:oci/") and "@sha256%3A" in image["purl"]
    purl = PackageURL.from_string(image["purl"])
    assert purl.version == digest and purl.qualifiers == {"tag": "demo", "arch": "amd64"}
    assert props(image, "auditor:platform") == ["linux/amd64"]
    (tool,) = demo_bom["metadata"]["tools"]["components"]
    assert (tool["name"], tool["version"]) == ("auditor", demo["auditor_version"])
    assert demo_bom["serialNumber"].startswith("urn:uuid:")
    assert uuid.UUID(demo_bom["serialNumber"][len("urn:uuid:"):]).version == 5


def test_every_package_is_a_component_named_by_its_purl(demo: Doc, demo_bom: Doc) -> None:
    components = by_ref(demo_bom)
    assert demo["packages"]
    for package in demo["packages"]:
        component = components[package["purl"]]
        assert component["type"] == "library" and component["purl"] == package["purl"]
        assert (component["name"], component["version"]) == (package["name"], package["version"])
        assert props(component, "auditor:path") == [package["path"]]
        assert props(component, "auditor:layer") == [str(package["layer"])]
    (os_component,) = [c for c in demo_bom["components"] if c["type"] == "operating-system"]
    assert (os_component["name"], os_component["version"]) == ("debian", "12")


def test_the_numeric_libraries_with_their_versions_purls_and_evidence(demo: Doc, demo_bom: Doc) -> None:
    for lib in demo["numeric_stack"]:
        component = library_at(demo_bom, lib["path"])
        assert (component["type"], component["name"], component["version"]) == \
            ("library", lib["component"], lib["version"])
        assert props(component, "auditor:layer") == [str(lib["layer"])]
        occurrences = component["evidence"]["occurrences"]
        assert occurrences[0] == {"bom-ref": f"{component['bom-ref']}|occurrence:0", "location": lib["path"]}
        assert {o["location"] for o in occurrences} == {lib["path"]}
    cudnn = library_at(demo_bom, CUDNN)
    (libcudnn8,) = [p["purl"] for p in demo["packages"] if p["name"] == "libcudnn8"]
    assert cudnn["purl"] == libcudnn8 and props(cudnn, "auditor:package") == [libcudnn8]
    assert (cudnn["name"], cudnn["version"]) == ("cudnn", "8.1.0.77")
    (identity,) = cudnn["evidence"]["identity"]
    assert (identity["field"], identity["concludedValue"]) == ("version", "8.1.0.77")
    techniques = {m["value"].split()[0]: m["technique"] for m in identity["methods"]}
    assert techniques == {"soname": "binary-analysis", "filename": "filename",
                          "package": "manifest-analysis", "env": "other"}
    assert identity["confidence"] == 0.8  # dpkg's record is the best reading cuDNN 8.1 has here
    # cuBLASLt's version came from calling into the library: its symbol is an occurrence
    cublaslt = next(c for c in demo_bom["components"] if c["name"] == "cublasLt")
    assert cublaslt["version"] == "11.4.1" and "purl" not in cublaslt  # no package owns it
    assert any(o.get("symbol") == "cublasLtGetVersion()" for o in cublaslt["evidence"]["occurrences"])
    methods = cublaslt["evidence"]["identity"][0]["methods"]
    (constant,) = [m for m in methods if m["value"].startswith("constant")]
    assert (constant["technique"], constant["confidence"]) == ("binary-analysis", 0.9)


def test_the_linkage_is_the_dependency_graph(demo: Doc, demo_bom: Doc) -> None:
    (tensorflow,) = [c for c in demo_bom["components"] if c["type"] == "framework"]
    assert tensorflow["name"] == "tensorflow" and tensorflow["version"] == "2.8.0"
    assert props(tensorflow, "auditor:built-for:cudnn") == ["8"]
    assert props(tensorflow, "auditor:built-for:cuda") == ["11.2"]
    assert tensorflow["purl"] == "pkg:pypi/tensorflow-gpu@2.8.0"
    cudnn = library_at(demo_bom, CUDNN)
    cublas = next(c for c in demo_bom["components"] if c["name"] == "cublas")
    cublaslt = next(c for c in demo_bom["components"] if c["name"] == "cublasLt")
    # tensorflow dlopens cuDNN and cuBLAS; cuBLAS needs cuBLASLt; cuDNN opens its sub-libraries
    assert {cudnn["bom-ref"], cublas["bom-ref"]} <= set(depends_on(demo_bom, tensorflow["bom-ref"]))
    assert depends_on(demo_bom, cublas["bom-ref"]) == [cublaslt["bom-ref"]]
    assert library_at(demo_bom, "usr/lib/x86_64-linux-gnu/libcudnn_ops_infer.so.8.1.0")["bom-ref"] in \
        depends_on(demo_bom, cudnn["bom-ref"])
    assert props(cudnn, "auditor:loaded-by") == [TF_CONSUMER]
    assert props(cudnn, "auditor:shadowed") == []
    # the image depends on every component
    assert set(depends_on(demo_bom, "image")) == set(by_ref(demo_bom))
    assert {d["ref"] for d in demo_bom["dependencies"]} == set(by_ref(demo_bom)) | {"image"}


def test_findings_are_properties_not_vulnerabilities(demo: Doc, demo_bom: Doc) -> None:
    assert "vulnerabilities" not in demo_bom
    assert "cudnn-8.1-birnn-nondeterminism" in props(library_at(demo_bom, CUDNN), "auditor:finding")
    assert "env-pythonhashseed-unset" in props(demo_bom["metadata"]["component"], "auditor:finding")
    placed = [v for c in [*demo_bom["components"], demo_bom["metadata"]["component"]]
              for v in props(c, "auditor:finding")]
    assert sorted(placed) == sorted(f["id"] for f in demo["findings"])


def test_the_output_is_reproducible(demo: Doc, demo_text: str, tmp_path: Path) -> None:
    again = render(copy.deepcopy(demo), None)
    assert redacted(again) == redacted(demo_text)
    assert again.endswith("}\n")
    # and from one process to the next (hash seeds differ; nothing may order by id or hash)
    (tmp_path / "demo.json").write_text(json.dumps(demo))
    script = ("import json, sys; from auditor.report.cyclonedx import render; "
              "sys.stdout.write(render(json.load(open(sys.argv[1])), None))")
    outputs = [subprocess.run([sys.executable, "-c", script, str(tmp_path / "demo.json")], check=True,
                              capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": seed},
                              timeout=300).stdout for seed in ("1", "2")]
    assert redacted(outputs[0]) == redacted(outputs[1]) == redacted(demo_text)
    other = copy.deepcopy(demo)
    other["image"]["digest"] = DIGEST
    assert json.loads(render(other, None))["serialNumber"] != json.loads(demo_text)["serialNumber"]


# -- hand-made documents ---------------------------------------------------------------------------
def document(**over: Any) -> Doc:
    base: Doc = {
        "auditor_version": "9.9.9",
        "reference": {"input": "ghcr.io/acme/trainer:1.2", "canonical": "ghcr.io/acme/trainer:1.2",
                      "transport": "registry"},
        "image": {"digest": DIGEST, "image_id": "sha256:" + "cd" * 32, "platform": "linux/arm64",
                  "source": {}},
        "layers": [], "os": None, "numeric_stack": [], "frameworks": [], "packages": [],
        "linkage": None, "findings": [],
    }
    base.update(over)
    return base


def nccl(path: str, version: str, package: str | None = None) -> Doc:
    return {"component": "nccl", "version": version, "path": path, "layer": 1, "soname": "libnccl.so.2",
            "machine": "x86_64", "package": package,
            "evidence": [{"kind": "string", "source": path, "value": f"NCCL version {version}",
                          "version": version},
                         {"kind": "label", "source": "Label:nccl", "value": "2.0", "version": "2.0"}]}


def test_a_registry_image_gets_its_repository_and_tag_in_the_purl() -> None:
    text = render(document(), None)
    validate(text)
    image = json.loads(text)["metadata"]["component"]
    assert image["name"] == "ghcr.io/acme/trainer"
    assert image["purl"] == (f"pkg:oci/trainer@sha256%3A{'ab' * 32}"
                             "?arch=arm64&repository_url=ghcr.io/acme/trainer&tag=1.2")


def test_without_a_digest_no_purl_and_the_image_id_as_version() -> None:
    doc = document(reference={"input": "docker-archive:/x/img.tar", "canonical": "docker-archive:/x/img.tar",
                              "transport": "docker-archive"})
    doc["image"].update(digest=None, source={"repo_tags": ["pytorch/pytorch:2.3.0-cuda12.1"]})
    text = render(doc, None)
    validate(text)
    image = json.loads(text)["metadata"]["component"]
    assert "purl" not in image and image["version"] == doc["image"]["image_id"]
    assert image["name"] == "docker.io/pytorch/pytorch"  # the archive's recorded tag names it
    doc["image"]["source"] = {}
    assert json.loads(render(doc, None))["metadata"]["component"]["name"] == "img"


def test_shadowed_copies_duplicate_purls_and_licenses() -> None:
    pip = "usr/local/lib/python3.11/site-packages/nvidia/nccl/lib/libnccl.so.2"
    deb = "usr/lib/x86_64-linux-gnu/libnccl.so.2.18.1"
    purl = "pkg:pypi/nvidia-nccl-cu12@2.19.3"
    packages = [
        {"type": "python", "name": "nvidia-nccl-cu12", "version": "2.19.3", "purl": purl, "layer": 2,
         "path": "usr/local/lib/python3.11/site-packages/nvidia_nccl_cu12-2.19.3.dist-info/METADATA",
         "licenses": ["Apache-2.0", "MIT License", "bad\nlicense"]},
        {"type": "python", "name": "nvidia-nccl-cu12", "version": "2.19.3", "purl": purl, "layer": 3,
         "path": "opt/venv/lib/python3.11/site-packages/nvidia_nccl_cu12-2.19.3.dist-info/METADATA",
         "licenses": ["Apache-2.0 OR MIT", "BSD-3-Clause"]},
    ]
    consumer = "/usr/local/lib/python3.11/site-packages/torch/lib/libtorch_cuda.so"
    linkage = {"numeric": [{"needed": "libnccl.so.2", "how": ["rpath"], "consumers": [consumer],
                            "loaded": {"path": pip, "layer": 2, "version": "2.19.3", "component": "nccl",
                                       "package": "python:nvidia-nccl-cu12@2.19.3"},
                            "shadowed": [{"path": deb, "layer": 1, "version": "2.18.1", "component": "nccl",
                                          "package": None}]}],
               "consumers": [{"path": consumer, "framework": "torch", "layer": 2, "fatal": None,
                              "problems": [],
                              "resolutions": [{"needed": "libnccl.so.2", "kind": "needed",
                                               "requester": consumer.lstrip("/"), "how": "rpath",
                                               "path": "/" + pip, "file": pip, "layer": 2,
                                               "component": "nccl", "version": "2.19.3"}]}]}
    frameworks = [{"name": "torch", "version": "2.3.0", "layer": 2, "built_for": {"cuda": "12.1"},
                   "path": "usr/local/lib/python3.11/site-packages/torch/version.py", "evidence": []}]
    findings = [{"id": "nccl-something", "severity": "high", "component": "nccl", "message": "m", "path": pip,
                 "evidence": []}]
    doc = document(packages=packages, linkage=linkage, frameworks=frameworks, findings=findings,
                   numeric_stack=[nccl(deb, "2.18.1"), nccl(pip, "2.19.3", "python:nvidia-nccl-cu12@2.19.3")])
    text = render(doc, None)
    validate(text)
    bom = json.loads(text)
    # the same purl twice: two components, two bom-refs
    twins = [c for c in bom["components"] if c.get("purl") == purl and c["name"] == "nvidia-nccl-cu12"]
    assert sorted(c["bom-ref"] for c in twins) == [purl, f"{purl}#{packages[1]['path']}"]
    first = next(c for c in twins if c["bom-ref"] == purl)
    assert first["licenses"] == [{"license": {"id": "Apache-2.0"}}, {"license": {"name": "MIT License"}}]
    second = next(c for c in twins if c is not first)
    assert second["licenses"] == [{"expression": "(Apache-2.0 OR MIT) AND BSD-3-Clause"}]
    # the copy that wins, the copy it shadows
    winner, loser = library_at(bom, pip), library_at(bom, deb)
    assert winner["purl"] == purl and props(winner, "auditor:package") == [purl]
    assert props(winner, "auditor:loaded-by") == [consumer] and props(winner, "auditor:shadowed") == []
    assert props(loser, "auditor:shadowed") == [f"by {pip}"] and "purl" not in loser
    assert props(winner, "auditor:finding") == ["nccl-something"]
    # a label that claims another version contradicts the version found: confidence 0
    (identity,) = winner["evidence"]["identity"]
    confidence = {m["value"].split()[0]: m["confidence"] for m in identity["methods"]}
    assert confidence == {"string": 0.8, "label": 0}
    (torch,) = [c for c in bom["components"] if c["type"] == "framework"]
    assert depends_on(bom, torch["bom-ref"]) == [winner["bom-ref"]]
    assert depends_on(bom, loser["bom-ref"]) == []


def test_an_image_with_nothing_in_it_is_still_a_valid_bom() -> None:
    text = render(document(image={"digest": None, "image_id": None, "source": {}}), None)
    validate(text)
    bom = json.loads(text)
    assert "components" not in bom or bom["components"] == []


# -- NVIDIA's real wheels --------------------------------------------------------------------------
@pytest.mark.slow
def test_an_image_of_nvidia_wheels(tmp_path: Path) -> None:
    from auditor.digest import digest_bytes
    from auditor.testing import LayerBuilder
    from fixtures.elf_libs import WHEELS, wheel, wheel_layer, write_oci_layout

    site = "usr/local/lib/python3.11/site-packages"
    base = tmp_path / "base.tar"
    data = LayerBuilder().dir("etc").file("etc/os-release", 'ID=debian\nVERSION_ID="12"\n').tar_bytes()
    base.write_bytes(data)
    wheels = [wheel(WHEELS[k]) for k in ("cudart11", "cublas11")]
    layers = [(base, digest_bytes(data)), wheel_layer(wheels, site, tmp_path / "wheels.tar")]
    write_oci_layout(tmp_path / "oci", layers, {"wheels": {"config": {"Env": []}}})
    result = audit(f"oci:{tmp_path / 'oci'}:wheels",
                   AuditOptions(cache_dir=str(tmp_path / "cache"), all_elf=True))
    text = render(build_document(result), None)
    validate(text)
    bom = json.loads(text)
    cublas = library_at(bom, f"{site}/nvidia/cublas/lib/libcublas.so.11")
    cublaslt = library_at(bom, f"{site}/nvidia/cublas/lib/libcublasLt.so.11")
    cudart = library_at(bom, f"{site}/nvidia/cuda_runtime/lib/libcudart.so.11.0")
    assert (cublas["version"], cublas["purl"]) == ("11.10.3.66", "pkg:pypi/nvidia-cublas-cu11@11.10.3.66")
    assert cublaslt["purl"] == cublas["purl"]
    assert (cudart["version"], cudart["purl"]) == ("11.8.89", "pkg:pypi/nvidia-cuda-runtime-cu11@11.8.89")
    assert depends_on(bom, cublas["bom-ref"]) == [cublaslt["bom-ref"]]
    wheel_package = by_ref(bom)["pkg:pypi/nvidia-cublas-cu11@11.10.3.66"]
    assert {"license": {"name": "NVIDIA Proprietary Software"}} in wheel_package["licenses"]
    assert redacted(render(build_document(result), None)) == redacted(text)
