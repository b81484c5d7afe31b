"""What the release-notes parsers produce: releases split by section, and their items."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

COMPONENTS = ("nccl", "cudnn", "cublas", "cuda")

# How each component is named in prose, in rules (`components:`), and where its notes live.
DISPLAY = {"nccl": "NCCL", "cudnn": "cuDNN", "cublas": "cuBLAS", "cuda": "CUDA Toolkit"}
RULE_COMPONENTS = {"nccl": ("nccl",), "cudnn": ("cudnn",), "cublas": ("cublas", "cublasLt"),
                   "cuda": ("cudart",)}
GENERIC_PAGES = {
    "nccl": "https://docs.nvidia.com/deeplearning/nccl/release-notes/index.html",
    "cudnn": "https://docs.nvidia.com/deeplearning/cudnn/backend/latest/release-notes.html",
    "cublas": "https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/index.html",
    "cuda": "https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/index.html",
}
UNSECTIONED = ""  # the key of Release.sections for items under no sub-heading


@dataclass(frozen=True)
class Item:
    """One bullet (or line) of release notes. ``source``: the URL or file, plus an anchor if any."""

    component: str
    version: str
    section: str | None
    text: str
    source: str


@dataclass(frozen=True)
class Release:
    """One version's notes. ``sections`` maps a section name (sub-headings joined with " / ";
    "" for items under no sub-heading) to its items' texts, in the order of the notes."""

    version: str
    title: str
    date: str | None
    sections: dict[str, tuple[str, ...]] = field(hash=False)
    source: str

    def items(self, component: str) -> list[Item]:
        return [Item(component, self.version, name or None, text, self.source)
                for name, texts in self.sections.items() for text in texts]


def version_key(version: str) -> tuple[int, ...]:
    """A sortable key for a dotted version: trailing zeros do not count (12.4 == 12.4.0)."""
    parts = [int(p) for p in re.findall(r"\d+", version)]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def normalize_space(text: str) -> str:
    return " ".join(text.replace("\u00a0", " ").replace("\u200b", "").split())


def words(text: str) -> frozenset[str]:
    """The whitespace-separated words of ``text``, as a set (for keyword tables)."""
    return frozenset(text.split())
