"""NCCL release notes in changelog form: the messages of NVIDIA/nccl release commits.

The input is a list of entries ``==== <subject> (<date>, commit <sha>)`` each followed by the
commit message body. A body is free text: one change per line (wrapped lines continue it),
``-``/``*`` bullets, and headings (``Fixes:``, ``Profiler improvements``) whose bullets are the
changes. A line that fixes something and has bullets under it is one change, its bullets the
details."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from auditor.rules.notes.model import UNSECTIONED, Release, normalize_space, words

ENTRY_RE = re.compile(r"^====[ \t]+(?P<subject>.*?)[ \t]+\((?P<date>\d{4}-\d{2}-\d{2}),[ \t]*"
                      r"commit[ \t]+(?P<sha>[0-9a-fA-F]{7,40})\)[ \t]*$", re.MULTILINE)
_VERSION_RE = re.compile(r"(?<![\d.])v?(?P<version>\d+\.\d+\.\d+)(?:-(?P<rev>\d+))?(?![\d.])")
_TRAILER_RE = re.compile(r"^(?:Signed-off-by|Mirrored-from|Co-authored-by|Reviewed-by|Change-Id|"
                         r"Acked-by|Tested-by|Cherry-picked-from)\s*:", re.IGNORECASE)
_LINK_RE = re.compile(r"^Release notes:\s*(?P<url>https?://\S+)\s*$", re.IGNORECASE)
_BULLET_RE = re.compile(r"^(?P<indent>[ \t]*)(?:[-*\u2022]|\d{1,2}[.)])[ \t]+(?P<text>\S.*)$")
_FIX_START_RE = re.compile(r"^(?:fix(?:es|ed)?|work[- ]?around(?:s|ed)?|resolve[sd]?)\b", re.IGNORECASE)
_FIX_GROUP_RE = re.compile(r"^fix(?:es)?\s+(?:to|for)\b", re.IGNORECASE)
_SAME_ITEM_RE = re.compile(r"^(?:The|This) (?:issue|bug|problem|fix|change)\b")
_IDENTIFIER_RE = re.compile(r"^(?:[A-Z0-9]{2,}\b|\S*[_\d])")
_FUNCTION_WORDS = words("""a an the and or of to in on at by for with from into onto than per as
    when where which that if is are was were be been not no but so via under over between across
    through without within while because after before during using such its their our we can could
    may might will would should has have had do does""")
COMMIT_URL = "https://github.com/NVIDIA/nccl/commit/{sha}"


def looks_like_commits(text: str) -> bool:
    return ENTRY_RE.search(text) is not None


@dataclass
class _Node:
    indent: int
    bullet: bool
    lines: list[str]
    children: list[_Node] = field(default_factory=list)

    @property
    def text(self) -> str:
        joined = ""
        for line in self.lines:
            line = line.strip()
            if re.search(r"[A-Za-z]-$", joined) and line[:1].islower():
                joined += line  # a word hyphenated across lines: "non-" + "blocking"
            else:
                joined = f"{joined} {line}" if joined else line
        return normalize_space(joined)

    def full_text(self) -> str:
        return join_sentences([self.text, *(child.full_text() for child in self.children)])


def join_sentences(parts: list[str]) -> str:
    """Parts joined as sentences: a part that ends without punctuation gets a full stop (one that
    ends with a colon or comma runs on into the next)."""
    out = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        if out and out[-1][-1] not in ".:;!?,":
            out[-1] += "."
        out.append(part)
    return " ".join(out)


def _indent(line: str) -> int:
    expanded = line.expandtabs(8)
    return len(expanded) - len(expanded.lstrip(" "))


def _continues(node: _Node, indent: int, text: str, raw_previous: str) -> bool:
    """Whether a non-bullet line continues ``node`` (a wrapped line) rather than starting a new one."""
    if node.bullet and indent > node.indent:
        return True
    if indent < node.indent:
        return False
    previous = node.lines[-1].rstrip()
    first = text[0]
    if first.islower() or first.isdigit() or first in "([{\"'`<&/,.;:+-=_%$#\u201c\u2018":
        return previous[-1] not in ".!?" or first.islower()
    if _SAME_ITEM_RE.match(text) and not node.bullet:
        return True  # "Fixes X, which caused a hang." + "The issue affects ..."
    if previous[-1] in ".:;!?":
        return False
    if previous[-1] in ",-(/&+":
        return True
    last_word = re.sub(r"[^a-z]", "", previous.rsplit(None, 1)[-1].lower())
    if _IDENTIFIER_RE.match(text):
        return True  # "... when using a custom" + "NCCL_DEBUG_TIMESTAMP_FORMAT setting."
    return last_word in _FUNCTION_WORDS or len(raw_previous.rstrip().expandtabs(8)) >= 70


def parse_body(lines: list[str]) -> list[_Node]:
    """The top-level entries of a commit message body; bullets (or deeper lines) under an entry
    are its children, deeper ones fold into their child."""
    present = [line for line in lines if line.strip()]
    base = min((_indent(line) for line in present), default=0)
    tops: list[_Node] = []
    top: _Node | None = None
    child: _Node | None = None
    last: _Node | None = None
    raw_last = ""
    for raw in lines:
        if not raw.strip():
            last = None
            if top is not None and not top.text.endswith(":"):
                top, child = None, None
            continue
        indent = _indent(raw) - base
        bullet = _BULLET_RE.match(raw)
        if bullet:
            node = _Node(indent, True, [bullet["text"].strip()])
            if top is None or (top.bullet and indent <= top.indent):
                tops.append(node)
                top, child = node, None
            elif child is not None and indent > child.indent:
                child.children.append(node)
            else:
                top.children.append(node)
                child = node
            last = node
        else:
            text = raw.strip()
            if last is not None and _continues(last, indent, text, raw_last):
                last.lines.append(text)
            elif top is not None and indent > top.indent:
                node = _Node(indent, False, [text])
                if child is not None and indent > child.indent:
                    child.children.append(node)
                else:
                    top.children.append(node)
                    child = node
                last = node
            else:
                node = _Node(indent, False, [text])
                tops.append(node)
                top, child, last = node, None, node
        raw_last = raw
    return tops


def is_group_heading(node: _Node) -> bool:
    """A top-level entry whose children are the changes (``Fixes:``, ``RAS fixes``), as opposed to a
    change whose children are its details (``Fix a race in X`` + how it showed)."""
    text = node.text
    if text.endswith(":"):
        return True
    return not (_FIX_START_RE.match(text) and not _FIX_GROUP_RE.match(text))


def sections_of(tops: list[_Node]) -> dict[str, tuple[str, ...]]:
    sections: dict[str, list[str]] = {}
    for node in tops:
        if node.children and is_group_heading(node):
            name = node.text.rstrip(":;").strip() or UNSECTIONED
            sections.setdefault(name, []).extend(child.full_text() for child in node.children)
        elif node.children or not node.text.endswith(":"):
            sections.setdefault(UNSECTIONED, []).append(node.full_text())
    return {name: tuple(texts) for name, texts in sections.items() if texts}


@dataclass
class CommitEntry:
    subject: str
    date: str
    sha: str
    body: list[str]


def split_entries(text: str) -> list[CommitEntry]:
    matches = list(ENTRY_RE.finditer(text))
    entries = []
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end():end].splitlines()
        entries.append(CommitEntry(match["subject"].strip(), match["date"], match["sha"].lower(), body))
    return entries


def parse_commits(text: str, source: str) -> tuple[list[Release], list[str], list[tuple[str, str]]]:
    """Releases, what could not be parsed, and releases with no notes (label, why)."""
    releases: list[Release] = []
    unparsed: list[str] = []
    empty: list[tuple[str, str]] = []
    for entry in split_entries(text):
        url = COMMIT_URL.format(sha=entry.sha)
        found = _VERSION_RE.search(entry.subject)
        if found is None:
            unparsed.append(f"no NCCL version in the commit subject '{entry.subject}' "
                            f"(commit {entry.sha}) in {source}")
            continue
        version = found["version"]
        body, links = [], []
        for line in entry.body:
            if _TRAILER_RE.match(line.strip()):
                continue
            link = _LINK_RE.match(line.strip())
            if link:
                links.append(link["url"])
                continue
            body.append(line)
        sections = sections_of(parse_body(body))
        release = Release(version=version, title=entry.subject, date=entry.date, sections=sections,
                          source=url)
        releases.append(release)
        if not sections:
            label = f"{entry.subject} (commit {entry.sha})"
            if links:
                empty.append((label, "the commit message only points to release notes elsewhere ("
                              + ", ".join(links) + "); import those separately"))
            else:
                empty.append((label, "no release notes in the commit message"))
    return releases, unparsed, empty
