"""NVIDIA's HTML release notes (cuDNN, the CUDA Toolkit with its cuBLAS sections, NCCL), read
with the standard library's html.parser.

A page is a tree of headings (h1-h6); a release is a heading naming a version ("cuDNN Release
8.2.1", "1.1. cuDNN Release 8.9.7", "cuDNN 9.1.1", "CUDA 12.4 Update 1 Release Notes",
"cuBLAS: Release 12.4 Update 1"). Its sections are the headings below it, "rubric" or bold-only
paragraphs ("Known Issues"), and list items whose own text is such a label with a list under it.
The items are the list items (a nested list folds into its item's text, unless the item is a
label); tables, navigation and scripts are ignored."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

from auditor.rules.notes.classify import section_kind
from auditor.rules.notes.commits import join_sentences
from auditor.rules.notes.model import DISPLAY, UNSECTIONED, Release, normalize_space, words

_VOID = words("area base br col embed hr img input link meta param source track wbr")
_SKIP = words("script style noscript template svg nav header footer aside table head button "
                  "form select textarea")
_SKIP_CLASSES = words("toc toctree-wrapper sidebar bd-sidebar bd-sidebar-primary "
                          "bd-sidebar-secondary wy-nav-side breadcrumbs headerlink related "
                          "prev-next-area footer")
_BLOCKS = words("address article aside blockquote dd div dl dt fieldset figure footer form h1 h2 h3 "
                    "h4 h5 h6 header hr li main nav ol p pre section table ul")
_MAX_DEPTH = 256
_NUMBERING_RE = re.compile(r"^(?:(?:chapter|section)\s+)?\d+(?:\.\d+)*\.?\s+", re.IGNORECASE)
_LABEL_WORDS_RE = re.compile(r"\b(?:issues?|features?|fix(?:es|ed)?|limitations?|deprecat\w*|"
                             r"enhancements?|changes|compatibility|announcements?|dropped|removed|"
                             r"resolved|improvements?|notes)\b", re.IGNORECASE)
_UPDATE = r"(?P<major>\d+)\.(?P<minor>\d+)(?:\.(?P<patch>\d+))?(?:\s+Update\s+(?P<update>\d+))?"
HEADING_PATTERNS = {
    "cudnn": re.compile(r"^cuDNN\s+(?:Backend\s+)?(?:Release\s+)?v?(?P<version>\d+\.\d+\.\d+)"
                        r"(?:\s+(?:Preview|EA|GA|RC\s*\d*))?(?:\s+Release Notes)?$", re.IGNORECASE),
    "nccl": re.compile(r"^NCCL\s+(?:Release\s+)?v?(?P<version>\d+\.\d+\.\d+)(?:-\d+)?"
                       r"(?:\s+Release Notes)?$", re.IGNORECASE),
    "cuda": re.compile(r"^CUDA\s+(?:Toolkit\s+)?" + _UPDATE + r"(?:\s+(?:GA|Release Notes|Release))?$",
                       re.IGNORECASE),
    "cublas": re.compile(r"^cuBLAS:?\s+Release\s+" + _UPDATE + r"$", re.IGNORECASE),
}
EXAMPLES = {"cudnn": "cuDNN Release 8.2.1 / cuDNN 9.1.1", "nccl": "NCCL Release 2.18.3",
            "cuda": "CUDA 12.4 Update 1 Release Notes", "cublas": "cuBLAS: Release 12.4 Update 1"}
_CUBLAS_RE = re.compile(r"\bcuBLAS(?:Lt)?\b", re.IGNORECASE)
_LIBRARY_RE = re.compile(r"^(?:CUDA\s+Libraries|CUDA\s+Math\s+(?:API|Library)|"
                         r"(?:cuBLAS|cuFFT|cuRAND|cuSOLVER|cuSPARSE|cuTENSOR|nvJPEG|NPP|nvJitLink|"
                         r"nvFatbin|NVRTC|Thrust|CUB|libcu\+\+|CCCL)\w*\b)", re.IGNORECASE)


@dataclass
class _Element:
    tag: str
    attrs: dict[str, str]
    children: list[_Element | str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


class _TreeBuilder(HTMLParser):
    """A forgiving tree: unclosed <p>/<li> close at the next block or item, stray end tags are
    ignored, and nesting deeper than _MAX_DEPTH is flattened."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = _Element("#root", {})
        self.stack = [self.root]
        self.canonical: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: (v or "") for k, v in attrs}
        if tag == "link" and "canonical" in values.get("rel", "").lower().split():
            self.canonical = self.canonical or values.get("href") or None
        if tag == "meta" and values.get("property") == "og:url" and values.get("content"):
            self.canonical = self.canonical or values["content"]
        if tag in _BLOCKS and self.stack[-1].tag == "p":
            self.stack.pop()
        if tag in ("li", "dt", "dd"):
            for i in range(len(self.stack) - 1, 0, -1):
                if self.stack[i].tag in ("ul", "ol", "dl"):
                    break
                if self.stack[i].tag in ("li", "dt", "dd"):
                    del self.stack[i:]
                    break
        element = _Element(tag, values)
        self.stack[-1].children.append(element)
        if tag not in _VOID and len(self.stack) < _MAX_DEPTH:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID and self.stack[-1].tag == tag and len(self.stack) > 1:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def _skipped(element: _Element) -> bool:
    return element.tag in _SKIP or bool(element.classes & _SKIP_CLASSES) or (
        element.attrs.get("role") in ("navigation", "banner", "contentinfo"))


def _text(node: _Element | str, exclude_lists: bool = False) -> str:
    parts: list[str] = []

    def walk(n: _Element | str) -> None:
        if isinstance(n, str):
            parts.append(n)
            return
        if _skipped(n) or (exclude_lists and n.tag in ("ul", "ol")):
            return
        if n.tag in _BLOCKS or n.tag == "br":
            parts.append(" ")
        for child in n.children:
            walk(child)
        if n.tag in _BLOCKS:
            parts.append(" ")

    walk(node)
    return normalize_space("".join(parts))


def _heading_text(element: _Element) -> str:
    text = _text(element).rstrip("#\u00b6 ").strip()
    return _NUMBERING_RE.sub("", text).strip()


def _is_label(text: str) -> bool:
    return 0 < len(text) <= 60 and not text.endswith(".") and _LABEL_WORDS_RE.search(text) is not None


@dataclass
class Node:
    """A heading and what lies under it until the next heading of its level or above."""

    level: int
    title: str
    anchor: str | None
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    entries: list[tuple[str | None, str]] = field(default_factory=list)  # (label, item text)
    labels: list[str] = field(default_factory=list)  # labels seen, with or without items

    def path_from(self, ancestor: Node) -> list[str]:
        path: list[str] = []
        node: Node | None = self
        while node is not None and node is not ancestor:
            path.append(node.title)
            node = node.parent
        return path[::-1]


class _Outline:
    def __init__(self) -> None:
        self.root = Node(0, "", None)
        self.current = self.root
        self.label: str | None = None

    def heading(self, level: int, title: str, anchor: str | None) -> None:
        while self.current.level >= level:
            assert self.current.parent is not None
            self.current = self.current.parent
        node = Node(level, title, anchor, self.current)
        self.current.children.append(node)
        self.current = node
        self.label = None

    def set_label(self, text: str) -> None:
        self.label = text
        self.current.labels.append(text)

    def item(self, text: str, label: str | None = None) -> None:
        if text:
            self.current.entries.append((label or self.label, text))


def _anchor(element: _Element, enclosing: str | None) -> str | None:
    if element.attrs.get("id"):
        return element.attrs["id"]
    for child in element.children:
        if isinstance(child, _Element) and child.tag == "a" and (child.attrs.get("id")
                                                                   or child.attrs.get("name")):
            return child.attrs.get("id") or child.attrs.get("name")
    return enclosing


def _walk(element: _Element, outline: _Outline, enclosing: str | None) -> None:
    for child in element.children:
        if isinstance(child, str) or _skipped(child):
            continue
        tag = child.tag
        if re.fullmatch(r"h[1-6]", tag):
            outline.heading(int(tag[1]), _heading_text(child), _anchor(child, enclosing))
        elif tag in ("ul", "ol"):
            for li in _list_items(child):
                _item(li, outline, None)
        elif tag in ("p", "dt") and ("rubric" in child.classes or _bold_only(child)):
            text = _text(child).rstrip(":").strip()
            if _is_label(text):
                outline.set_label(text)
        elif tag == "a" and child.attrs.get("name") and not child.children:
            enclosing = child.attrs["name"]
        else:
            inner = child.attrs.get("id") if tag in ("section", "div", "article", "main") else None
            _walk(child, outline, inner or enclosing)


def _bold_only(element: _Element) -> bool:
    bold = [c for c in element.children if isinstance(c, _Element) and c.tag in ("strong", "b")]
    rest = "".join(c for c in element.children if isinstance(c, str)).strip()
    others = [c for c in element.children if isinstance(c, _Element) and c.tag not in ("strong", "b")]
    return bool(bold) and not rest and not others


def _list_items(lst: _Element) -> list[_Element]:
    return [c for c in lst.children if isinstance(c, _Element) and c.tag == "li"]


def _nested_lists(element: _Element) -> list[_Element]:
    found: list[_Element] = []
    for child in element.children:
        if isinstance(child, _Element) and not _skipped(child):
            if child.tag in ("ul", "ol"):
                found.append(child)
            else:
                found.extend(_nested_lists(child))
    return found


def _folded(li: _Element) -> str:
    own = _text(li, exclude_lists=True)
    nested = [_folded(sub) for lst in _nested_lists(li) for sub in _list_items(lst)]
    return join_sentences([own, *nested])


def _item(li: _Element, outline: _Outline, label: str | None) -> None:
    own = _text(li, exclude_lists=True)
    nested = _nested_lists(li)
    if nested and _is_label(own.rstrip(":").strip()):
        sub_label = own.rstrip(":").strip()
        outline.current.labels.append(sub_label)
        for lst in nested:
            for sub in _list_items(lst):
                _item(sub, outline, sub_label)
        return
    outline.item(_folded(li), label)


@dataclass
class Page:
    outline: Node
    canonical: str | None


def parse_page(text: str) -> Page:
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    outline = _Outline()
    _walk(builder.root, outline, None)
    return Page(outline.root, builder.canonical)


def _version(match: re.Match[str]) -> str:
    if "version" in match.groupdict() and match["version"]:
        return match["version"]
    parts = [match["major"], match["minor"]]
    if match["update"]:
        parts.append(match["update"])
    elif match["patch"]:
        parts.append(match["patch"])
    return ".".join(parts)


def _walk_nodes(node: Node) -> list[Node]:
    out = [node]
    for child in node.children:
        out.extend(_walk_nodes(child))
    return out


class _Collector:
    """Releases of one component, in page order, built from headings and their subtrees."""

    def __init__(self, component: str, base: str) -> None:
        self.component = component
        self.base = base
        self.order: list[str] = []
        self.titles: dict[str, str] = {}
        self.sources: dict[str, str] = {}
        self.sections: dict[str, dict[str, list[str]]] = {}
        self.labelled: dict[str, set[str]] = {}  # sections named by a heading or label
        self.excluded: dict[str, set[str]] = {}  # sub-sections left out (another component's)

    def release(self, version: str, title: str, anchor: str | None) -> None:
        if version not in self.sections:
            self.order.append(version)
            self.titles[version] = title
            self.sources[version] = f"{self.base}#{anchor}" if anchor else self.base
            self.sections[version] = {}
            self.labelled[version] = set()
            self.excluded[version] = set()

    def add_subtree(self, version: str, top: Node, prefix: list[str], skip: re.Pattern[str] | None) -> None:
        for node in _walk_nodes(top):
            if node is not top and skip is not None and any(
                    skip.search(title) for title in node.path_from(top)):
                self.excluded[version].add(" / ".join([*prefix, *node.path_from(top)]))
                continue
            path = [*prefix, *node.path_from(top)]
            if path:
                self.labelled[version].add(" / ".join(path))
            for label in node.labels:
                self.labelled[version].add(" / ".join([*path, label]))
            for label, text in node.entries:
                name = " / ".join([*path, label] if label else path) or UNSECTIONED
                self.sections[version].setdefault(name, []).append(text)

    def releases(self) -> tuple[list[Release], list[str]]:
        out, empty = [], []
        for version in self.order:
            sections = {name: tuple(texts) for name, texts in self.sections[version].items()}
            for name in sorted(self.labelled[version] - set(sections)):
                has_subsections = any(other.startswith(name + " / ")
                                      for other in [*sections, *self.excluded[version]])
                if section_kind(name) is not None and not has_subsections:
                    empty.append((version, name))
            out.append(Release(version=version, title=self.titles[version], date=None,
                               sections=sections, source=self.sources[version]))
        return out, [f"section '{name}' under {version} has no list items" for version, name in empty]


def _has_versioned_descendant(node: Node, pattern: re.Pattern[str]) -> bool:
    return any(pattern.match(n.title) for n in _walk_nodes(node) if n is not node)


def releases_of(page: Page, component: str, base: str) -> tuple[list[Release], list[str]]:
    """The releases of ``component`` on the page and the messages for relevant sections that had
    no list items. ``base`` is the page's URL (or file) that anchors are appended to."""
    collector = _Collector(component, base)
    pattern = HEADING_PATTERNS[component]
    if component == "cublas":
        _collect_cublas(page.outline, collector)
    else:
        skip = _LIBRARY_RE if component == "cuda" else None
        for node in _walk_nodes(page.outline):
            match = pattern.match(node.title)
            if match and not _inside(node, pattern):
                version = _version(match)
                collector.release(version, node.title, node.anchor)
                collector.add_subtree(version, node, [], skip)
    return collector.releases()


def _inside(node: Node, pattern: re.Pattern[str]) -> bool:
    parent = node.parent
    while parent is not None:
        if pattern.match(parent.title):
            return True
        parent = parent.parent
    return False


def _collect_cublas(root: Node, collector: _Collector) -> None:
    own = HEADING_PATTERNS["cublas"]
    toolkit = HEADING_PATTERNS["cuda"]

    def visit(node: Node, toolkit_version: str | None, toolkit_node: Node | None) -> None:
        match = own.match(node.title)
        if match:
            version = _version(match)
            collector.release(version, node.title, node.anchor)
            collector.add_subtree(version, node, [], None)
            return
        if _CUBLAS_RE.search(node.title) and not _has_versioned_descendant(node, own):
            if toolkit_version is not None and toolkit_node is not None:
                # an older toolkit page: "cuBLAS Library" under the toolkit's "Resolved Issues"
                prefix = [t for t in node.path_from(toolkit_node)[:-1]]
                collector.release(toolkit_version, f"{toolkit_node.title}: {node.title}", node.anchor)
                collector.add_subtree(toolkit_version, node, prefix, None)
            return
        found = toolkit.match(node.title)
        if found:
            toolkit_version, toolkit_node = _version(found), node
        for child in node.children:
            visit(child, toolkit_version, toolkit_node)

    visit(root, None, None)


def components_on(page: Page) -> list[str]:
    """Which components have version headings on the page (for a hint when none match)."""
    titles = [n.title for n in _walk_nodes(page.outline)]
    return [c for c, p in HEADING_PATTERNS.items() if any(p.match(t) for t in titles)]


def describe_missing(component: str, page: Page, source: str) -> str:
    others = [c for c in components_on(page) if c != component]
    message = (f"no {DISPLAY[component]} version headings found in {source} "
               f"(looked for headings like '{EXAMPLES[component]}')")
    if others:
        message += f"; it has {', '.join(DISPLAY[c] for c in others)} release headings: try --component " \
                   + " or ".join(others)
    return message
