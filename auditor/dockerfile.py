"""Dockerfiles, read (never built): instructions with their line numbers, and the checks of
`auditor dockerfile` (the pre-commit hook): a base image without a digest, and numeric packages
installed without an exact version, drift silently between two builds of the same file."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from auditor.model import Finding

# packages whose version moves the numeric stack (pip names normalised, apt names as written)
NUMERIC_PIP = re.compile(r"^(torch|torchvision|tensorflow(-gpu|-cpu)?|tf-nightly|jax|jaxlib|"
                         r"jax-cuda\d+-(plugin|pjrt)|nvidia-[a-z0-9-]+|cupy(-cuda\d+x?)?|numpy|scipy|"
                         r"mkl|intel-openmp|onnxruntime(-gpu)?|tensorrt)$")
NUMERIC_APT = re.compile(r"^(libcudnn\d*(-dev)?|libnccl\d*(-dev)?|libcublas[a-z-]*|cuda-[a-z0-9-]+|"
                         r"libnvinfer\d*|libopenblas[a-z0-9-]*|intel-mkl[a-z0-9-]*|libmkl[a-z0-9-]*|"
                         r"libdnnl\d*)$")


@dataclass(frozen=True)
class Instruction:
    line: int  # 1-based line of its first physical line
    keyword: str  # upper case: FROM, ENV, RUN, ...
    args: str  # continuation lines joined


def parse_dockerfile(text: str) -> list[Instruction]:
    """Logical instructions: comments and blank lines dropped, `\\` continuations joined (the
    default escape character; a `# escape=` directive is honoured)."""
    escape = "\\"
    directive = re.match(r"\s*#\s*escape\s*=\s*(\S)", text)
    if directive:
        escape = directive.group(1)
    out: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not parts and (not stripped or stripped.startswith("#")):
            continue
        if parts and stripped.startswith("#"):  # comments inside a continuation are skipped
            continue
        if not parts:
            start = number
        if stripped.endswith(escape):
            parts.append(stripped[:-1])
            continue
        parts.append(stripped)
        logical = " ".join(p.strip() for p in parts if p.strip())
        parts = []
        keyword, _, args = logical.partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
    if parts:
        logical = " ".join(p.strip() for p in parts if p.strip())
        keyword, _, args = logical.partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
    return out


def env_lines(instructions: list[Instruction]) -> dict[str, int]:
    """ENV name -> the line of the last ENV (or ARG default) that set it."""
    out: dict[str, int] = {}
    for ins in instructions:
        if ins.keyword != "ENV":
            continue
        try:
            words = shlex.split(ins.args)
        except ValueError:
            words = ins.args.split()
        if words and "=" not in words[0]:  # the legacy form: ENV NAME value with spaces
            out[words[0]] = ins.line
            continue
        for word in words:
            name, sep, _ = word.partition("=")
            if sep:
                out[name] = ins.line
    return out


def from_instructions(instructions: list[Instruction]) -> list[Instruction]:
    return [ins for ins in instructions if ins.keyword == "FROM"]


def check_dockerfile(text: str, path: str) -> list[Finding]:
    """What makes two builds of this Dockerfile differ: findings with ``path`` = ``FILE:LINE``."""
    instructions = parse_dockerfile(text)
    stages: set[str] = set()
    findings = []
    for ins in instructions:
        where = f"{path}:{ins.line}"
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            image = words[0] if words else ""
            if len(words) >= 3 and words[1].lower() == "as":
                stages.add(words[2].lower())
            if not image or image.lower() in stages or image == "scratch" or "$" in image:
                continue
            if "@sha256:" not in image:
                tag = image.rsplit("/", 1)[-1].partition(":")[2]
                floating = not tag or tag == "latest" or tag.endswith("-latest")
                findings.append(Finding(
                    "dockerfile-unpinned-base", "high" if floating else "medium", image,
                    f"FROM {image} is not pinned by digest: the tag can move to another image (and "
                    f"another CUDA/cuDNN) between builds; pin it as {image.split('@')[0]}@sha256:…",
                    path=where))
        elif ins.keyword == "RUN":
            findings.extend(_unpinned_packages(ins, where))
    return findings


def _unpinned_packages(ins: Instruction, where: str) -> list[Finding]:
    out = []
    for command in re.split(r"&&|\|\||;", ins.args):
        try:
            words = shlex.split(command)
        except ValueError:
            words = command.split()
        if not words:
            continue
        tool = None
        if "install" in words:
            head = words[: words.index("install")]
            if any(w in ("pip", "pip3") or w.endswith(("/pip", "/pip3")) for w in head):
                tool = "pip"  # pip, pip3, /usr/bin/pip, python -m pip
            elif any(w in ("apt-get", "apt") for w in head):
                tool = "apt"
        if tool is None:
            continue
        for word in words[words.index("install") + 1:]:
            if word.startswith("-"):
                continue
            if tool == "pip":
                name = re.split(r"[<>=!~\[;@ ]", word, maxsplit=1)[0]
                normal = re.sub(r"[-_.]+", "-", name).lower()
                if NUMERIC_PIP.match(normal) and not re.search(r"===?[^=*]+$|@", word.split(";")[0]):
                    out.append(_unpinned(word, normal, "pip", f"{normal}==VERSION", where))
            else:
                name = word.partition("=")[0]
                if NUMERIC_APT.match(name) and "=" not in word:
                    out.append(_unpinned(word, name, "apt", f"{name}=VERSION", where))
    return out


def _unpinned(word: str, name: str, tool: str, pinned: str, where: str) -> Finding:
    return Finding("dockerfile-unpinned-numeric-package", "medium", name,
                   f"{tool} installs {word} without an exact version: the next build may get another "
                   f"release of the numeric stack; pin it ({pinned})", path=where)
