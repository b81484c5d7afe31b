"""`auditor dockerfile` (the pre-commit hook) and the Dockerfile reader SARIF locations use."""

from __future__ import annotations

from pathlib import Path

from auditor.dockerfile import check_dockerfile, instructions, parse_dockerfile
from tests.test_cli import assert_one_line_error, run

DIGEST = "sha256:" + "a" * 64
TEXT = f"""\
# syntax=docker/dockerfile:1
FROM nvidia/cuda:11.2.2-cudnn8-runtime-ubuntu20.04 AS base
RUN apt-get update && apt-get install -y --no-install-recommends libcudnn8 \\
    # a comment inside the continuation
    libnccl2=2.8.4-1+cuda11.2 curl
ENV CUDNN_VERSION=8.1.0.77 \\
    NCCL_VERSION=2.8.4
ENV LEGACY value with spaces
RUN python3 -m pip install --no-cache-dir tensorflow-gpu==2.8.0 numpy "torch>=2" requests \\
    nvidia-cudnn-cu11 jax[cuda12]==0.4.30
FROM base AS app
FROM python:3.11@{DIGEST}
FROM ubuntu
"""


def test_instructions_keep_their_first_line() -> None:
    found = instructions(TEXT)
    assert [(i.line, i.keyword) for i in found] == [
        (2, "FROM"), (3, "RUN"), (6, "ENV"), (8, "ENV"), (9, "RUN"), (11, "FROM"), (12, "FROM"), (13, "FROM")]
    assert "libnccl2=2.8.4-1+cuda11.2" in found[1].args
    mapping = parse_dockerfile(TEXT)  # the final stage (FROM ubuntu) inherits nothing
    assert mapping.from_lines == (2, 11, 12, 13) and mapping.final_from == 13 and mapping.env == {}
    staged = parse_dockerfile(TEXT.rsplit("FROM python", 1)[0])  # ends with FROM base AS app
    assert staged.env == {"CUDNN_VERSION": 6, "NCCL_VERSION": 7, "LEGACY": 8}
    assert staged.package_line("libnccl2") == 5 and staged.package_line("nvidia_cudnn_cu11") == 10


def test_check_finds_unpinned_bases_and_numeric_packages() -> None:
    found = {(f.path, f.id, f.component, f.severity) for f in check_dockerfile(TEXT, "Dockerfile")}
    assert found == {
        ("Dockerfile:2", "dockerfile-unpinned-base", "nvidia/cuda:11.2.2-cudnn8-runtime-ubuntu20.04",
         "medium"),
        ("Dockerfile:3", "dockerfile-unpinned-numeric-package", "libcudnn8", "medium"),
        ("Dockerfile:9", "dockerfile-unpinned-numeric-package", "numpy", "medium"),
        ("Dockerfile:9", "dockerfile-unpinned-numeric-package", "torch", "medium"),
        ("Dockerfile:9", "dockerfile-unpinned-numeric-package", "nvidia-cudnn-cu11", "medium"),
        ("Dockerfile:13", "dockerfile-unpinned-base", "ubuntu", "high"),  # no tag: latest
    }  # not: FROM base (a stage), the digest-pinned python, requests, pinned tensorflow/jax/libnccl2


def test_the_hook_command(tmp_path: Path) -> None:
    bad, good = tmp_path / "Dockerfile", tmp_path / "Dockerfile.good"
    bad.write_text(TEXT)
    good.write_text(f"FROM python:3.11@{DIGEST}\nRUN pip install torch==2.14.1\n")
    proc = run("dockerfile", str(good), str(bad))
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert len(lines) == 6 and all(line.startswith(f"{bad}:") for line in lines)
    assert run("dockerfile", str(good)).returncode == 0
    assert run("dockerfile", "--fail-on", "high", str(bad)).returncode == 1
    assert run("dockerfile", "--fail-on", "none", str(bad)).returncode == 0
    assert_one_line_error(run("dockerfile", str(tmp_path / "missing")), 2, "no such file")
