"""The lock round trip on real parts: a source image built by podman from a loopback apt
repository and PEP 503 index over a base in a loopback registry -> `auditor lock` -> `auditor
lock --verify` rebuilds the recipe with podman against the same servers and finds the same
stack; a drifted recipe (six 1.17.0 instead of the image's 1.16.0) is caught with a clear diff,
and a recipe that cannot build says why (the build log's tail)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from auditor.dockerfile import check_dockerfile
from fixtures.elf_libs import wheel
from tests.engine_fixtures import Engine

ROOT = Path(__file__).resolve().parents[2]
LOCK_SCHEMA = json.loads((ROOT / "auditor/schemas/lock.schema.json").read_text())
pytestmark = [pytest.mark.slow, pytest.mark.engine, pytest.mark.registry]


def auditor(engine: Engine, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_HOST": engine.base_url, "COLUMNS": "200",
           "AUDITOR_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "auditor", *args], capture_output=True, text=True,
                          env=env, timeout=1200, check=False)


def remove_verify_images(engine: Engine) -> None:
    for image in engine.client.images.list(name="localhost/auditor-lock-verify"):
        engine._owned.add(image.id)


def test_lock_rebuilds_the_same_stack_and_catches_drift(engine: Engine, lock_source_image: Any,
                                                       tmp_path: Path) -> None:
    source = lock_source_image
    out = tmp_path / "recipe"
    proc = auditor(engine, tmp_path, "lock", f"docker-daemon:{source.name}",
                   "--base", source.base.registry_digest_ref, "--insecure",
                   "--apt-source", source.apt_repo.sources_line, "--index-url", source.pypi_index.url,
                   "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    dockerfile = (out / "Dockerfile.lock").read_text()
    assert f"FROM {source.base.name}@{source.base.digest}" in dockerfile
    assert check_dockerfile(dockerfile, "Dockerfile.lock") == []  # nothing unpinned
    for name in ("jq", "libopenblas0-pthread", "libjq1", "libonig5"):
        assert f"        {name}={source.apt_repo.debs[name]} \\" in dockerfile, name
    requirements = (out / "requirements.lock").read_text()
    for name, version in source.pypi_index.wheels.items():
        digest = hashlib.sha256(wheel(f"{name}=={version}").read_bytes()).hexdigest()
        assert f"{name}=={version} \\\n    --hash=sha256:{digest}" in requirements
    lock = json.loads((out / "lock.json").read_text())
    jsonschema.validate(lock, LOCK_SCHEMA)
    assert lock["base"]["proved"] is True and lock["unlockable"] == []
    assert {s["name"]: s["value"] for s in lock["env"]}["OMP_NUM_THREADS"] == "1"
    assert {s["name"]: s["value"] for s in lock["labels"]}["org.example.team"] == "ml"

    try:
        verified = auditor(engine, tmp_path, "lock", "--verify", str(out), "--build-network", "host")
        assert verified.returncode == 0, verified.stderr
        assert "has the source's numeric stack and package sets" in verified.stdout

        drifted = tmp_path / "drifted"
        shutil.copytree(out, drifted)
        newer = wheel("six==1.17.0")
        old_line = next(line for line in requirements.splitlines() if line.startswith("six=="))
        text = requirements.replace(old_line, "six==1.17.0 \\")
        old_hash = text.split("six==1.17.0 \\\n    --hash=", 1)[1].split("\n", 1)[0]
        text = text.replace(old_hash, "sha256:" + hashlib.sha256(newer.read_bytes()).hexdigest())
        (drifted / "requirements.lock").write_text(text)
        caught = auditor(engine, tmp_path, "lock", "--verify", str(drifted), "--build-network", "host")
        assert caught.returncode == 1, caught.stderr
        assert "differs: python package six: locked 1.16.0, rebuilt 1.17.0" in caught.stderr
        assert "differs from the source (1 differences)" in caught.stderr

        broken = tmp_path / "broken"  # a version no archive has: the build fails, its log shown
        shutil.copytree(out, broken)
        jq = source.apt_repo.debs["jq"]
        (broken / "Dockerfile.lock").write_text(dockerfile.replace(f"jq={jq} ", "jq=0.0-0 "))
        failed = auditor(engine, tmp_path, "lock", "--verify", str(broken), "--build-network", "host")
        assert failed.returncode == 1, failed.stderr
        assert f"auditor: error: the recipe in {broken} did not build" in failed.stderr
        # apt's stdout and stderr share the log: its error may follow "Reading package lists..."
        # on the same line.
        logged = [line for line in failed.stderr.splitlines() if line.startswith("  | ")]
        assert any("E: Version '0.0-0' for 'jq' was not found" in line for line in logged), failed.stderr
        assert "Traceback" not in failed.stderr
    finally:
        remove_verify_images(engine)
