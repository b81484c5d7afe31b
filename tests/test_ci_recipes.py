"""The CI recipes in docs/ci/ and the pre-commit hooks run what they say: every `auditor` line
of the GitHub Actions workflow and the GitLab job, against the TF 2.8 GPU-style fixture images
(the PR's image with cuDNN 8.2.1, main's with cuDNN 8.1), in a folder with a Dockerfile and an
ignore file, exits 0 or 1 (the gate), never 2 or an internal error, and writes its files."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "docs" / "ci"
BIN = Path(sys.executable).parent


def github_commands() -> list[str]:
    workflow = yaml.safe_load((RECIPES / "github-actions.yml").read_text())
    lines = [line.strip() for job in workflow["jobs"].values() for step in job["steps"]
             for line in (step.get("run") or "").splitlines()]
    return [line for line in lines if line.startswith("auditor ")]


def gitlab_commands() -> list[str]:
    job = yaml.safe_load((RECIPES / "gitlab-ci.yml").read_text())["auditor"]
    return [line for line in job["script"] if line.startswith("auditor ")]


def test_recipes_are_valid_yaml_and_run_auditor() -> None:
    assert len(github_commands()) >= 3 and len(gitlab_commands()) >= 2
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert {h["id"] for h in hooks} >= {"auditor-dockerfile", "auditor-rules-lint"}
    assert all(h["entry"].startswith("auditor ") and h["language"] == "python" for h in hooks)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    from fixtures.tf_image import tf_gpu_image

    root = tmp_path_factory.mktemp("ci")
    main = tf_gpu_image(root / "main", cudnn="8.1.0.77", cuda="11.2")
    pr = tf_gpu_image(root / "pr", cudnn="8.2.1.32", cuda="11.3")
    work = root / "checkout"
    work.mkdir()
    (work / "Dockerfile").write_text(
        "FROM tensorflow/tensorflow:2.8.0-gpu\nENV TF_DETERMINISTIC_OPS=1\n")
    expires = (datetime.date.today() + datetime.timedelta(days=30)).isoformat()
    (work / ".auditor-ignore.yaml").write_text(
        "version: 1\nignore:\n  - rule: env-pythonhashseed-unset\n"
        f"    reason: the training script sets its own seeds\n    expires: \"{expires}\"\n")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "IMAGE": pr, "BASE_IMAGE": main,
           "AUDITOR_CACHE_DIR": str(root / "cache"), "COLUMNS": "200"}
    return work, env


def run_recipe_line(line: str, work: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # the recipes read the PR's image from the engine; here the same image is an OCI layout
    line = line.replace('"docker-daemon:$IMAGE"', '"$IMAGE"')
    return subprocess.run(["bash", "-c", line], cwd=work, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["github", "gitlab"])
def test_every_recipe_command_runs(recipe: str, workspace: tuple[Path, dict[str, str]]) -> None:
    work, env = workspace
    commands = github_commands() if recipe == "github" else gitlab_commands()
    for line in commands:
        proc = run_recipe_line(line, work, env)
        assert proc.returncode in (0, 1), f"{line}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
        if proc.returncode == 1:  # a gate, said in one line
            last = proc.stderr.splitlines()[-1]
            assert "gate:" in last or "--fail-on-change" in last
    outputs = {"github": ["auditor.sarif", "auditor.md", "auditor.junit.xml", "diff.md", "gate.md"],
               "gitlab": ["auditor.junit.xml", "auditor.md", "auditor.json", "diff.md"]}[recipe]
    for name in outputs:
        assert (work / name).stat().st_size > 0, name
    if recipe == "github":
        sarif = json.loads((work / "auditor.sarif").read_text())
        assert sarif["version"] == "2.1.0" and sarif["runs"][0]["results"]
        assert "cudnn" in (work / "diff.md").read_text().lower()
