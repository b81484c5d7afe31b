"""Vendor release notes to DRAFT rules (``status: draft``) for a maintainer to review: the library
behind ``auditor rules import-notes``.

``parse_notes`` reads NVIDIA/nccl release-commit messages or an NVIDIA HTML release-notes page
(cuDNN, the CUDA Toolkit and its cuBLAS sections) into releases split by section;
``import_notes`` picks the items about wrong results, corruption, nondeterminism, hangs and
races and drafts a rule for each (with every skipped item and the reason); ``draft_pack_yaml``
writes drafts as a pack file. Anything else (a PDF, prose without versions, a page without
version headings) gives no drafts and says so in ``unparsed``; undecodable bytes raise
InputError."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from auditor.errors import InputError
from auditor.rules.notes import commits, nvhtml
from auditor.rules.notes.classify import Verdict, classify
from auditor.rules.notes.drafting import (
    add_known_version,
    base_id,
    build_draft,
    covered_by,
    normalized,
    title_of,
)
from auditor.rules.notes.model import COMPONENTS, DISPLAY, Item, Release, version_key

__all__ = ["COMPONENTS", "ImportResult", "Item", "Release", "draft_pack_yaml", "import_notes",
           "parse_notes"]

_CHARSET_RE = re.compile(rb"<meta[^>]{0,200}charset=[\"']?([A-Za-z0-9_-]{1,40})", re.IGNORECASE)
_HTML_RE = re.compile(r"<(?:!doctype\s+html|html|head|body|h[1-6]|ul|ol|li|p|div|table|section|article)\b",
                      re.IGNORECASE)


@dataclass
class ImportResult:
    drafts: list[dict[str, Any]] = field(default_factory=list)
    """rule dicts in the pack format (status: draft), ready to dump as YAML"""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(item text or rule id, why)"""
    unparsed: list[str] = field(default_factory=list)
    """what could not be parsed, one line each"""
    releases: int = 0
    """how many releases were read"""


@dataclass
class _Parsed:
    releases: list[Release]
    unparsed: list[str]
    empty: list[tuple[str, str]]  # releases without notes: (label, why)


def _check_component(component: str) -> None:
    if component not in COMPONENTS:
        raise InputError(f"unknown component {component!r}; expected one of {', '.join(COMPONENTS)}")


def _decode(data: bytes, source: str) -> str:
    for bom, codec in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16"),
                       (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            try:
                return data.decode(codec).lstrip("\ufeff")
            except UnicodeDecodeError:
                break
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        declared = _CHARSET_RE.search(data[:4096])
        if declared:
            try:
                return data.decode(declared.group(1).decode("ascii"))
            except (LookupError, UnicodeDecodeError):
                pass
        raise InputError(f"{source}: not text (undecodable bytes at offset {err.start}); expected an "
                         "HTML release-notes page or NCCL release commit messages") from None
    if "\x00" in text:
        raise InputError(f"{source}: not text (NUL bytes); expected an HTML release-notes page or NCCL "
                         "release commit messages")
    return text


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _parse(data: bytes, source: str, component: str) -> _Parsed:
    _check_component(component)
    if data[:1024].lstrip().startswith(b"%PDF-"):
        return _Parsed([], [f"{source} is a PDF; import-notes reads the HTML release-notes page (or NCCL "
                            "release commit messages), not PDF"], [])
    text = _decode(data, source)
    if not text.strip():
        return _Parsed([], [f"{source} is empty"], [])
    if commits.looks_like_commits(text):
        if component != "nccl":
            return _Parsed([], [f"{source} holds NCCL release commit messages, not {DISPLAY[component]} "
                                "release notes; import it with --component nccl"], [])
        releases, unparsed, empty = commits.parse_commits(text, source)
        if not releases:
            unparsed.append(f"no NCCL versions found in the commit subjects of {source}")
        return _Parsed(releases, unparsed, empty)
    if _HTML_RE.search(text[:200_000]):
        page = nvhtml.parse_page(text)
        base = source if _is_url(source) else (page.canonical if page.canonical and
                                                _is_url(page.canonical) else source)
        releases, unparsed = nvhtml.releases_of(page, component, base)
        if not releases:
            return _Parsed([], [nvhtml.describe_missing(component, page, source)], [])
        return _Parsed(releases, unparsed, [])
    return _Parsed([], [f"no version headings found in {source}: it is neither an HTML release-notes page "
                        "nor NCCL release commit messages ('==== <subject> (<date>, commit <sha>)' "
                        "entries)"], [])


def parse_notes(data: bytes, source: str, component: str) -> list[Release]:
    """The releases in ``data``: NCCL release-commit text or an NVIDIA HTML release-notes page
    (told apart by content). Empty when nothing could be read (``import_notes`` says why)."""
    return _parse(data, source, component).releases


def _label(item: Item) -> str:
    text = item.text if len(item.text) <= 160 else item.text[:157].rsplit(" ", 1)[0] + "..."
    return f"{item.version}: {text}"


def import_notes(data: bytes, source: str, component: str,
                 existing: Iterable[Mapping[str, Any]] = ()) -> ImportResult:
    """Draft rules from the release notes in ``data`` (read from ``source``, a path or URL). Rules in
    ``existing`` (already in packs) are never overwritten nor repeated: a draft with an existing
    id, or one an existing rule covers, is skipped with the reason."""
    parsed = _parse(data, source, component)
    result = ImportResult(skipped=list(parsed.empty), unparsed=list(parsed.unparsed),
                          releases=len(parsed.releases))
    rules = [r for r in existing if isinstance(r, Mapping)]
    existing_ids = {str(r.get("id")) for r in rules}
    versions = sorted({r.version for r in parsed.releases}, key=version_key)
    previous: dict[str, str | None] = {}  # the release before each, in version order
    last_smaller: str | None = None
    for i, version in enumerate(versions):
        if i and version_key(versions[i - 1]) < version_key(version):
            last_smaller = versions[i - 1]
        previous[version] = last_smaller
    used_ids: set[str] = set()
    skipped_seen: set[tuple[str, str]] = set()
    fixed_seen: dict[tuple[str, str], str] = {}
    known_seen: dict[str, dict[str, Any] | None] = {}
    for release in parsed.releases:
        for item in release.items(component):
            verdict = classify(item)
            if verdict.kind is None:
                entry = (_label(item), verdict.reason or "not picked")
                if entry not in skipped_seen:  # a release listed twice says the same things twice
                    skipped_seen.add(entry)
                    result.skipped.append(entry)
                continue
            key = normalized(item.text)
            if verdict.known and key in known_seen:
                draft = known_seen[key]
                if draft is not None:
                    add_known_version(draft, item.version)
                continue
            if not verdict.known and (item.version, key) in fixed_seen:
                result.skipped.append((_label(item), "the same item appears again in these notes "
                                       f"(as {fixed_seen[item.version, key]})"))
                continue
            draft = _draft(item, verdict, release, previous[item.version], source, used_ids)
            if verdict.known:
                known_seen[key] = None
            else:
                fixed_seen[item.version, key] = draft["id"]
            if draft["id"] in existing_ids:
                result.skipped.append((draft["id"], f"already in pack: rule {draft['id']} exists and is "
                                                    "not overwritten"))
                continue
            cover = covered_by(draft, rules)
            if cover is not None:
                result.skipped.append((draft["id"], f"covered by {cover} (an existing rule)"))
                continue
            if verdict.known:
                known_seen[key] = draft
            result.drafts.append(draft)
    return result


def _draft(item: Item, verdict: Verdict, release: Release, previous: str | None, source: str,
           used_ids: set[str]) -> dict[str, Any]:
    rule_id = base_id(component=item.component, version=item.version, title=title_of(item.text))
    candidate, n = rule_id, 1
    while candidate in used_ids:
        n += 1
        candidate = f"{rule_id[:90]}-{n}"
    used_ids.add(candidate)
    return build_draft(item, verdict, release, previous, source, candidate)


# --- writing a pack --------------------------------------------------------------------------

_RULE_KEYS = ("id", "title", "status", "severity", "confidence", "components", "affected", "when",
              "effect", "remediation", "fix", "references", "notes", "tests")
_AFFECTED_KEYS = ("component", "framework", "package", "versions", "fixed_in", "scheme", "copies")
_CASE_KEYS = ("note", "components", "frameworks", "packages", "env", "labels", "gpu_arch")


class _FlowList(list):  # type: ignore[type-arg]
    pass


class _FlowMap(dict):  # type: ignore[type-arg]
    pass


class _Dumper(yaml.SafeDumper):
    pass


_VERSIONISH_RE = re.compile(r"(?:[<>=!]=?\s*)?[0-9][0-9.-]*(?:\s*,\s*[<>=!]=?\s*[0-9][0-9.]*)*")


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    if _VERSIONISH_RE.fullmatch(value):
        style: str | None = '"'  # versions, ranges and dates, quoted as in docs/rules.md
    elif len(value) > 80 and "\n" not in value and value == value.strip() and "  " not in value:
        style = ">"
    else:
        style = None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(_FlowList, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v,
                                                                     flow_style=True))
_Dumper.add_representer(_FlowMap, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v,
                                                                   flow_style=True))


def _ordered(mapping: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    out = {k: mapping[k] for k in keys if k in mapping}
    out.update({k: v for k, v in mapping.items() if k not in out})
    return out


def _case(case: Mapping[str, Any]) -> dict[str, Any]:
    out = _ordered(case, _CASE_KEYS)
    for key in ("components", "frameworks", "packages", "env", "labels"):
        value = out.get(key)
        if isinstance(value, Mapping) and all(isinstance(v, str) for v in value.values()):
            out[key] = _FlowMap(value)
    return out


def _rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    out = _ordered(rule, _RULE_KEYS)
    if isinstance(out.get("components"), list):
        out["components"] = _FlowList(out["components"])
    if isinstance(out.get("affected"), list):
        out["affected"] = [_ordered(e, _AFFECTED_KEYS) if isinstance(e, Mapping) else e
                           for e in out["affected"]]
    if isinstance(out.get("references"), list):
        out["references"] = [_ordered(r, ("url", "title")) if isinstance(r, Mapping) else r
                             for r in out["references"]]
    tests = out.get("tests")
    if isinstance(tests, Mapping):
        out["tests"] = {k: [_case(c) if isinstance(c, Mapping) else c for c in tests.get(k, [])]
                        for k in ("trigger", "clean")}
        out["tests"].update({k: v for k, v in tests.items() if k not in ("trigger", "clean")})
    return out


def draft_pack_yaml(drafts: list[dict[str, Any]], name: str, version: str, date: str) -> str:
    """A whole pack file (format 1) holding ``drafts``, as YAML text: keys in the documented order,
    block style, long texts folded."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name) or len(name) > 64:
        raise InputError(f"pack name {name!r}: expected lowercase letters, digits and '-' (at most 64)")
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", version):
        raise InputError(f"pack version {version!r}: expected dotted numbers, e.g. 2026.11.0")
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", date):
        raise InputError(f"pack date {date!r}: expected YYYY-MM-DD")
    pack = {
        "format": 1,
        "pack": {"name": name, "version": version, "date": date,
                 "description": "Draft rules imported from vendor release notes by auditor rules "
                                "import-notes; review each before setting status: active."},
        "rules": [_rule(d) for d in drafts],
    }
    body = yaml.dump(pack, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
                     width=100, indent=2)
    header = ("# Draft rules from vendor release notes (auditor rules import-notes). Drafts are not\n"
              "# evaluated: review each, write its test cases, then set status: active.\n")
    return header + body
