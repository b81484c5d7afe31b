"""`auditor probe` end to end against a real podman engine: Debian bookworm with python3-numpy,
3 fresh containers per configuration and a threads variation; the report says what reproduced."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from fixtures.debs import debian_debs
from fixtures.pip_images import tensorflow_cpu_image
from tests.engine_fixtures import Engine, oci_to_docker_archive
from tests.probe.test_payload import TORCH_PACKAGES, load_debian

ROOT = Path(__file__).resolve().parents[2]
REPORT_SCHEMA = json.loads((ROOT / "auditor/schemas/probe-report.schema.json").read_text())
NUMPY_TAG = "localhost/auditor-probe-numpy:t"


@pytest.fixture(scope="module")
def numpy_image(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return load_debian(engine, tmp_path_factory, ("python3", "python3-numpy"), "numpy")


def probe(engine: Engine, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_HOST": engine.server.base_url, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "auditor", "probe", *args], capture_output=True,
                          text=True, env=env, timeout=900, check=False)


@pytest.mark.slow
@pytest.mark.engine
def test_probe_numpy_image_repeats_and_threads(engine: Engine, numpy_image: Any, tmp_path: Path) -> None:
    out = tmp_path / "probe.json"
    proc = probe(engine, f"docker-daemon:{NUMPY_TAG}", "--repeats", "3", "--vary", "threads=1,2",
                 "--no-crosscheck", "-o", f"json={out}", "-o", f"markdown={tmp_path / 'probe.md'}")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    jsonschema.validate(report, REPORT_SCHEMA)
    assert report["counts"]["runs"] == 6 and report["counts"]["failed"] == 0
    for run in report["runs"]:  # no network inside, in every container
        assert run["output"]["environment"]["network"]["has_network"] is False
    models = {m["name"]: m for m in report["models"]}
    assert {"numpy.mlp", "numpy.rnn"} <= set(models)
    for name in ("numpy.mlp", "numpy.rnn"):  # deterministic, whatever the thread count
        assert models[name]["verdict"] == "identical", models[name]["summary"]
        assert models[name]["levels"]["outcome"]["holds"] is True
    assert "numpy.mlp" in proc.stdout and "identical" in proc.stdout  # the table on stdout
    assert "| `numpy.mlp` | identical |" in (tmp_path / "probe.md").read_text()

    # the same report compared with itself as a baseline from "another machine"
    other = tmp_path / "other-machine.json"
    other.write_text(out.read_text())
    again = probe(engine, "compare", str(out), str(other), "--format", "json")
    assert again.returncode == 0, again.stderr
    merged = json.loads(again.stdout)
    assert merged["counts"]["runs"] == 12 and len(merged["sources"]) == 2


@pytest.mark.slow
@pytest.mark.engine
def test_probe_refuses_what_it_cannot_run(engine: Engine, numpy_image: Any, tmp_path: Path) -> None:
    missing = probe(engine, "docker-daemon:localhost/no-such-image:t", "--no-crosscheck")
    assert missing.returncode == 2 and "no such image" in missing.stderr
    gpu = probe(engine, f"docker-daemon:{NUMPY_TAG}", "--gpu", "--no-crosscheck")
    assert gpu.returncode == 2 and "--gpu: no GPU is available" in gpu.stderr
    archive = probe(engine, "oci:/some/layout", "--no-crosscheck")
    assert archive.returncode == 2 and "load or pull it there first" in archive.stderr


@pytest.mark.slow
@pytest.mark.engine
def test_probe_crosscheck_audits_the_same_image(engine: Engine, numpy_image: Any, tmp_path: Path) -> None:
    """The default cross-check audits the engine's image too; Debian's numpy image has no
    framework consumer the linkage predicts for, so there is nothing to disagree about."""
    out = tmp_path / "probe.json"
    proc = probe(engine, f"docker-daemon:{NUMPY_TAG}", "--repeats", "1", "--cache-dir",
                 str(tmp_path / "cache"), "-o", f"json={out}")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    jsonschema.validate(report, REPORT_SCHEMA)
    assert report["findings"] == []


@pytest.mark.slow
@pytest.mark.engine
def test_probe_names_a_real_divergence_across_thread_counts(engine: Engine, tmp_path: Path,
                                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    """Debian's CPU torch 1.13 with OpenBLAS: the same seeded models and kernels, in fresh
    containers with 1 and with 2 threads. Some results differ between the thread counts (while
    their repeats agree), and the report says the variation explains it."""
    load_debian(engine, tmp_path_factory, TORCH_PACKAGES, "torch-openblas")
    out = tmp_path / "probe.json"
    proc = probe(engine, "docker-daemon:localhost/auditor-probe-torch-openblas:t", "--repeats", "2",
                 "--vary", "threads=1,2", "--no-crosscheck", "-o", f"json={out}", "--fail-on-divergence")
    assert proc.returncode == 1, proc.stderr  # the gate: written first, then exit 1
    assert proc.stderr.splitlines()[-1].startswith("auditor: probe: diverged: ")
    report = json.loads(out.read_text())
    jsonschema.validate(report, REPORT_SCHEMA)
    assert report["counts"]["failed"] == 0
    results = [*report["models"], *report["kernels"]]
    shown = report["summary"]
    diverged = [r for r in results if r["verdict"] == "diverged"]
    # some result differs between the thread counts, and the report says the variation explains it
    by_threads = [r for r in diverged if "run to run" not in r.get("summary", "")]
    assert by_threads, shown
    assert any("threads" in line and "diverged" in line for line in shown), shown


@pytest.mark.slow
@pytest.mark.engine
def test_dockerfile_probe_builds_and_prints_what_the_runner_gets(engine: Engine, numpy_image: Any,
                                                                 tmp_path: Path) -> None:
    """Dockerfile.probe, built with podman on the numpy image from a context holding the payload
    (as its header says), prints the same models as `auditor probe` gets from the runner."""
    context = tmp_path / "context"
    shutil.copytree(ROOT / "auditor" / "probe" / "payload", context / "payload",
                    ignore=shutil.ignore_patterns("__pycache__", ".*"))
    shutil.copy(ROOT / "Dockerfile.probe", context / "Dockerfile")
    image, _logs = engine.client.images.build(path=str(context), buildargs={"IMAGE": NUMPY_TAG},
                                              tag="localhost/auditor-probe-built:t", rm=True, pull=False)
    engine._owned.add(image.id)
    printed = engine.client.containers.run(image.id, network_mode="none", remove=True, stdout=True,
                                           stderr=False)
    built = json.loads(printed)
    out = tmp_path / "probe.json"
    proc = probe(engine, f"docker-daemon:{NUMPY_TAG}", "--repeats", "1", "--no-crosscheck",
                 "-o", f"json={out}")
    assert proc.returncode == 0, proc.stderr
    ran = json.loads(out.read_text())["runs"][0]["output"]

    def models(document: dict[str, Any]) -> dict[str, tuple[str, str, float]]:
        return {m["name"]: (m["weights_digest"], m["predictions_digest"], m["accuracy"])
                for m in document["models"]}

    assert models(built) and models(built) == models(ran)
    assert built["environment"]["network"]["has_network"] is False


ALT_BLAS = "/opt/alt-blas"


@pytest.fixture(scope="module")
def torch_alt_blas_image(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The Debian torch image plus Debian's *serial* OpenBLAS build in /opt/alt-blas, where no
    loader path points (as a site's module tree would sit); returns the image's name."""
    load_debian(engine, tmp_path_factory, TORCH_PACKAGES, "torch-openblas")
    (deb,) = debian_debs(("libopenblas0-serial",))
    context = tmp_path_factory.mktemp("alt-blas")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(context / "deb")], check=True, timeout=120)
    shutil.copytree(context / "deb/usr/lib/x86_64-linux-gnu/openblas-serial", context / "alt-blas",
                    symlinks=True)
    (context / "Dockerfile").write_text("FROM localhost/auditor-probe-torch-openblas:t\n"
                                        f"COPY alt-blas/ {ALT_BLAS}/\n")
    name = "localhost/auditor-probe-torch-alt-blas:t"
    image, _logs = engine.client.images.build(path=str(context), tag=name, rm=True, pull=False)
    engine._owned.add(image.id)
    return name


@pytest.mark.slow
@pytest.mark.engine
def test_probe_crosscheck_agrees_until_ld_library_path_changes_the_blas(
        engine: Engine, torch_alt_blas_image: str, tmp_path: Path) -> None:
    """Static linkage predicts torch loads the pthread OpenBLAS (its RUNPATH); a run of the
    image as it is maps exactly that. The same image run with LD_LIBRARY_PATH pointing at the
    serial build (as `module load` would) maps the other file, and the cross-check says so."""
    common = (f"docker-daemon:{torch_alt_blas_image}", "--repeats", "1", "--models", "torch.dense",
              "--cache-dir", str(tmp_path / "cache"))
    agree = probe(engine, *common, "-o", f"json={tmp_path / 'agree.json'}")
    assert agree.returncode == 0, agree.stderr
    report = json.loads((tmp_path / "agree.json").read_text())
    jsonschema.validate(report, REPORT_SCHEMA)
    mapped = report["runs"][0]["output"]["environment"]["maps"]
    assert any("openblas-pthread/libopenblas" in path for path in mapped), mapped
    assert report["findings"] == []

    differ = probe(engine, *common, "--env", f"LD_LIBRARY_PATH={ALT_BLAS}",
                   "-o", f"json={tmp_path / 'differ.json'}")
    assert differ.returncode == 0, differ.stderr
    report = json.loads((tmp_path / "differ.json").read_text())
    jsonschema.validate(report, REPORT_SCHEMA)
    assert report["runs"][0]["config"]["env"]["LD_LIBRARY_PATH"] == ALT_BLAS
    (finding,) = report["findings"]
    assert finding["id"] == "probe-linkage-mismatch" and finding["component"] == "openblas"
    assert finding["locations"][0].startswith(f"{ALT_BLAS}/libopenblas")
    assert "openblas-pthread/libopenblas" in finding["locations"][1]
    assert finding["runs"] == [0]
    assert "probe-linkage-mismatch" in differ.stdout and ALT_BLAS in differ.stdout


@pytest.mark.slow
@pytest.mark.engine
def test_probe_tensorflow_cpu_image_from_pypi(engine: Engine, tmp_path: Path) -> None:
    """PyPI's tensorflow-cpu (Keras 3) over the Debian python3 layer: the payload's TensorFlow
    models train in the image's own interpreter, TensorFlow reports its build, the repeats agree
    bit for bit on the CPU, and the cross-check finds the versions and linkage it saw agree."""
    image = tensorflow_cpu_image()
    archive = oci_to_docker_archive(image.layout, image.tag, tmp_path / "tf.tar",
                                    "localhost/auditor-probe-tensorflow-cpu:t")
    engine.load(archive)
    archive.unlink()
    out = tmp_path / "probe.json"
    proc = probe(engine, "docker-daemon:localhost/auditor-probe-tensorflow-cpu:t", "--repeats", "2",
                 "--cache-dir", str(tmp_path / "cache"), "-o", f"json={out}")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    jsonschema.validate(report, REPORT_SCHEMA)
    assert report["counts"]["failed"] == 0, report["failures"]
    tf = report["runs"][0]["output"]["environment"]["frameworks"]["tensorflow"]
    assert tf["version"] == image.facts["dists"]["tensorflow_cpu"]
    models = {m["name"]: m for m in report["models"]}
    assert {"tensorflow.cnn", "tensorflow.bilstm", "tensorflow.dense"} <= set(models), sorted(models)
    for name in ("tensorflow.cnn", "tensorflow.bilstm", "tensorflow.dense"):
        assert models[name]["verdict"] == "identical", models[name]["summary"]
    for trained in report["runs"][0]["output"]["models"]:  # they learned something
        assert trained["accuracy"] > trained["chance"] + 0.05, trained
    assert report["findings"] == [], report["findings"]
