"""Dockerfiles, read (never built or run).

- ``parse_dockerfile``: where the final stage sets things: the line of each ``ENV`` variable, of
  each ``FROM``, and of each word of the ``RUN`` instructions (to find the line that installed a
  package); SARIF locations use it. Only the final stage counts, with what it inherits from an
  earlier stage it is built ``FROM`` (``FROM base AS x`` ... ``FROM x``). Handles line
  continuations (the escape character, ``\\`` or the one a ``# escape=`` directive names), comment
  lines inside continuations, ``ENV A=1 B=2`` and ``ENV A 1``, quotes, and here-documents after
  ``RUN``. Line numbers are 1-based and point at the physical line where the word is.
- ``check_dockerfile``: the checks of `auditor dockerfile` (the pre-commit hook): a base image
  without a digest, and numeric packages installed without an exact version, drift silently
  between two builds of the same file.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from packaging.utils import canonicalize_name

from auditor.model import Finding

# packages whose version moves the numeric stack (pip names normalised, apt names as written)
NUMERIC_PIP = re.compile(r"^(torch|torchvision|tensorflow(-gpu|-cpu)?|tf-nightly|jax|jaxlib|"
                         r"jax-cuda\d+-(plugin|pjrt)|nvidia-[a-z0-9-]+|cupy(-cuda\d+x?)?|numpy|scipy|"
                         r"mkl|intel-openmp|onnxruntime(-gpu)?|tensorrt)$")
NUMERIC_APT = re.compile(r"^(libcudnn\d*(-dev)?|libnccl\d*(-dev)?|libcublas[a-z-]*|cuda-[a-z0-9-]+|"
                         r"libnvinfer\d*|libopenblas[a-z0-9-]*|intel-mkl[a-z0-9-]*|libmkl[a-z0-9-]*|"
                         r"libdnnl\d*)$")


_DIRECTIVE = re.compile(r"#\s*([A-Za-z]+)\s*=\s*(\S*)\s*$")
_HEREDOC = re.compile(r"<<(-?)([\"']?)([A-Za-z_][A-Za-z0-9_]*)\2")
_NAME_END = re.compile(r"[=<>!~@\[:;,(]")
_PACKAGE_WORD = re.compile(r"^[a-z0-9][a-z0-9+._-]*$")


@dataclass(frozen=True)
class Stage:
    line: int  # the FROM line
    base: str  # the image (or stage) it starts from
    name: str | None
    env: dict[str, int] = field(default_factory=dict)  # variable -> line that set it in this stage
    words: dict[str, int] = field(default_factory=dict)  # package-like RUN word -> last line


@dataclass(frozen=True)
class DockerfileMap:
    """What the final stage of a Dockerfile sets, and where."""

    env: dict[str, int]  # variable -> the line that last set it (inherited stages included)
    from_lines: tuple[int, ...]  # every FROM, in order
    words: dict[str, int]  # normalised package-like word of a RUN -> the last line it is on
    stages: tuple[Stage, ...] = ()

    @property
    def final_from(self) -> int | None:
        """The FROM line of the last stage (the image's base)."""
        return self.from_lines[-1] if self.from_lines else None

    def package_line(self, name: str) -> int | None:
        """The line of the last RUN that names the package (``apt-get install libcudnn8=...``)."""
        return self.words.get(normalise_package(name))


def normalise_package(name: str) -> str:
    """A package name compared loosely: lower case, ``_`` and ``.`` as ``-`` (PEP 503-like)."""
    return canonicalize_name(name.strip())


def parse_dockerfile(text: str) -> DockerfileMap:
    """The lines of ``text`` (a Dockerfile) that set each variable and start each stage."""
    stages: list[Stage] = []
    for keyword, chars, lines in _instructions(text):
        if keyword == "FROM":
            base, name = _from_words([w for w, _ in _words(chars, lines)])
            stages.append(Stage(line=lines[0] if lines else 1, base=base, name=name))
        elif not stages:
            continue  # ARG before the first FROM, or a broken file
        elif keyword == "ENV":
            stages[-1].env.update(_env_lines(chars, lines))
        elif keyword == "RUN":
            for word, line in _words(chars, lines, split_shell=True):
                for part in word.split("/")[-1:]:  # a path to a .deb or wheel: its file name
                    candidate = normalise_package(_NAME_END.split(part, 1)[0])
                    if _PACKAGE_WORD.match(candidate):
                        stages[-1].words[candidate] = line
    if not stages:
        return DockerfileMap(env={}, from_lines=(), words={})
    chain = _chain(stages)
    env: dict[str, int] = {}
    words: dict[str, int] = {}
    for stage in chain:
        env.update(stage.env)
        words.update(stage.words)
    return DockerfileMap(env=env, from_lines=tuple(s.line for s in stages), words=words,
                         stages=tuple(stages))


def _chain(stages: list[Stage]) -> list[Stage]:
    """The final stage and the earlier stages it is built on, the oldest first."""
    chain = [stages[-1]]
    earlier = stages[:-1]
    while True:
        base = chain[0].base.lower()
        parents = [s for s in earlier if s.name is not None and s.name.lower() == base]
        if not parents:
            return chain
        parent = parents[-1]
        earlier = earlier[:earlier.index(parent)]
        chain.insert(0, parent)


def _from_words(words: list[str]) -> tuple[str, str | None]:
    plain = [w for w in words if not w.startswith("--")]
    base = plain[0] if plain else ""
    name = plain[2] if len(plain) >= 3 and plain[1].lower() == "as" else None
    return base, name


def _env_lines(chars: str, lines: list[int]) -> dict[str, int]:
    words = _words(chars, lines)
    if not words:
        return {}
    first, line = words[0]
    if "=" not in first:  # ENV NAME value with spaces
        return {first: line}
    out: dict[str, int] = {}
    for word, line in words:
        name, eq, _ = word.partition("=")
        if eq and name:
            out[name] = line
    return out


def _words(chars: str, lines: list[int], split_shell: bool = False) -> list[tuple[str, int]]:
    """Whitespace-separated words (quotes kept together, quote characters dropped), each with the
    line it starts on; with ``split_shell``, also split at ``;``, ``&``, ``|`` and parentheses."""
    out: list[tuple[str, int]] = []
    word: list[str] = []
    start = 0
    quote = ""
    i = 0
    breakers = ";&|()" if split_shell else ""
    while i < len(chars):
        c = chars[i]
        if quote:
            if c == quote:
                quote = ""
            elif c == "\\" and quote == '"' and i + 1 < len(chars):
                i += 1
                word.append(chars[i])
            else:
                word.append(c)
        elif c == "\\" and i + 1 < len(chars):  # an escaped character, e.g. a space
            if not word:
                start = i
            i += 1
            word.append(chars[i])
        elif c in "\"'":
            if not word:
                start = i
            quote = c
            word.append("")
        elif c.isspace() or c in breakers:
            if word:
                out.append(("".join(word), lines[start]))
                word = []
        else:
            if not word:
                start = i
            word.append(c)
        i += 1
    if word:
        out.append(("".join(word), lines[start]))
    return [(w, line) for w, line in out if w]


def _instructions(text: str) -> list[tuple[str, str, list[int]]]:
    """Each instruction: its keyword (upper case), its arguments as one string, and for each
    character of that string the physical line it comes from."""
    physical = text.splitlines()
    escape = "\\"
    i = 0
    while i < len(physical):  # parser directives: only at the very top
        match = _DIRECTIVE.match(physical[i].strip())
        if not match:
            break
        if match.group(1).lower() == "escape" and match.group(2) in ("\\", "`"):
            escape = match.group(2)
        i += 1
    out: list[tuple[str, str, list[int]]] = []
    while i < len(physical):
        raw = physical[i]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        chars: list[str] = []
        lines: list[int] = []
        while True:
            body = raw.rstrip()
            more = body.endswith(escape)
            if more:
                body = body[:-1]
            if chars:
                chars.append(" ")
                lines.append(i + 1)
            chars.extend(body)
            lines.extend([i + 1] * len(body))
            i += 1
            if not more:
                break
            while i < len(physical) and (not physical[i].strip()
                                         or physical[i].lstrip().startswith("#")):
                i += 1  # comment and empty lines inside a continuation are dropped
            if i >= len(physical):
                break
            raw = physical[i]
        joined = "".join(chars)
        lead = len(joined) - len(joined.lstrip())
        keyword, _, _ = joined.lstrip().partition(" ")
        keyword = keyword.split("\t", 1)[0]
        args_at = lead + len(keyword)
        args, arg_lines = joined[args_at:], lines[args_at:]
        if keyword.upper() == "RUN":
            i, args, arg_lines = _heredocs(physical, i, args, arg_lines)
        out.append((keyword.upper(), args, arg_lines))
    return out


def _heredocs(physical: list[str], i: int, args: str,
              arg_lines: list[int]) -> tuple[int, str, list[int]]:
    """Append the bodies of ``<<EOF`` here-documents that follow a RUN line to its arguments."""
    chars, lines = list(args), list(arg_lines)
    for match in _HEREDOC.finditer(args):
        dash, word = match.group(1), match.group(3)
        while i < len(physical):
            line = physical[i]
            i += 1
            if (line.lstrip("\t") if dash else line) == word:
                break
            chars.extend("\n" + line)
            lines.extend([i] * (len(line) + 1))
    return i, "".join(chars), lines


@dataclass(frozen=True)
class Instruction:
    line: int  # 1-based line of its first physical line
    keyword: str  # upper case: FROM, ENV, RUN, ...
    args: str  # continuation lines joined


def instructions(text: str) -> list[Instruction]:
    """Every instruction, with the line it starts on."""
    return [Instruction(lines[0] if lines else 1, keyword, args.strip())
            for keyword, args, lines in _instructions(text)]


def check_dockerfile(text: str, path: str) -> list[Finding]:
    """What makes two builds of this Dockerfile differ: findings with ``path`` = ``FILE:LINE``."""
    stages: set[str] = set()
    findings = []
    for ins in instructions(text):
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
                normal = normalise_package(name)
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
