"""Rule packs: read a pack (file, folder, pinned URL), check it against its JSON Schema and what
the schema cannot say (version ranges parse under their scheme, regexes compile, rule ids are
unique across packs), and hold it as plain data. See docs/rules.md."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from auditor.errors import DigestMismatchError, InputError
from auditor.rules.fetch import fetch_bytes, is_url, read_source
from auditor.rules.versions import RangeSet, VersionError, check_version, parse_ranges
from auditor.rules.yamlsource import Document, YamlProblem

FORMAT = 1
MAX_PACK_BYTES = 8 * 1024 * 1024
DEFAULT_SCHEMES = {"component": "nvidia", "framework": "pep440", "built_for": "nvidia",
                   "deb": "deb", "python": "pep440", "conda": "pep440"}
_PIN_RE = re.compile(r"^(?P<url>https?://[^#]+)#sha256=(?P<hex>[0-9a-f]{64})$")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a pack, located: ``file:line: rule ID: message``."""

    source: str
    line: int | None
    rule: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: rule {self.rule}: {self.message}" if self.rule else f"{where}: {self.message}"


class PackError(InputError):
    def __init__(self, problems: Sequence[Problem]) -> None:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        super().__init__(f"{problems[0]}{more}")
        self.problems = tuple(problems)


@dataclass(frozen=True)
class Affected:
    """One affected entry: a component, framework or package at some versions."""

    kind: str  # component, framework, package
    name: str
    ranges: RangeSet
    fixed_in: str | None = None
    copies: str = "effective"


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    status: str
    severity: str
    confidence: str
    components: tuple[str, ...]
    affected: tuple[Affected, ...]
    effect: str
    remediation: str
    references: tuple[str, ...]
    pack: str  # name@version
    source: str  # the pack's file or URL
    line: int | None
    when: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)
    fix: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    tests: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    raw: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True)
class Pack:
    name: str
    version: str
    date: str
    description: str
    source: str  # path or URL it was read from; "builtin:NAME.yaml" for the packaged ones
    sha256: str
    rules: tuple[Rule, ...]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@cache
def pack_schema() -> dict[str, Any]:
    text = resources.files("auditor").joinpath("schemas/rule-pack.schema.json").read_text()
    return json.loads(text)


def parse_pack(data: bytes, source: str, check_schema: bool = True) -> tuple[Pack | None, list[Problem]]:
    """A pack from its bytes, and every problem found (the pack is None when there are any).

    ``check_schema=False`` is for the packs shipped with the tool: the tests hold them to the
    schema, and skipping it spares every audit JSON Schema's import and walk (about 0.5 s)."""
    digest = hashlib.sha256(data).hexdigest()
    try:
        doc = Document(data.decode("utf-8"))
    except UnicodeDecodeError:
        return None, [Problem(source, None, None, "not UTF-8 text")]
    except YamlProblem as err:
        return None, [Problem(source, err.line, None, err.message)]
    problems = _schema_problems(doc, source) if check_schema else []
    if problems:
        return None, problems
    meta = doc.data["pack"]
    ref = f"{meta['name']}@{meta['version']}"
    rules = []
    for index, raw in enumerate(doc.data["rules"]):
        rule, rule_problems = _rule(raw, ref, source, doc, index)
        problems.extend(rule_problems)
        if rule is not None:
            rules.append(rule)
    seen: dict[str, int | None] = {}
    for rule in rules:
        if rule.id in seen:
            problems.append(Problem(source, rule.line, rule.id,
                                    f"duplicate rule id (first at line {seen[rule.id]})"))
        seen.setdefault(rule.id, rule.line)
    if problems:
        return None, problems
    return Pack(meta["name"], meta["version"], meta["date"], meta.get("description", ""),
                source, digest, tuple(rules)), []


def _schema_problems(doc: Document, source: str) -> list[Problem]:
    out = []
    for err in doc.schema_errors(pack_schema()):
        rule_id = None
        if len(err.path) >= 2 and err.path[0] == "rules" and isinstance(err.path[1], int):
            raw = doc.data["rules"][err.path[1]]
            rule_id = raw.get("id") if isinstance(raw, dict) else None
        out.append(Problem(source, err.line, rule_id, err.message))
    return out


def _rule(raw: dict[str, Any], ref: str, source: str, doc: Document,
          index: int) -> tuple[Rule | None, list[Problem]]:
    rule_id = raw["id"]
    base = ["rules", index]
    problems: list[Problem] = []

    def problem(path: list[str | int], message: str) -> None:
        problems.append(Problem(source, doc.line(base + path), rule_id, message))

    affected = []
    for i, entry in enumerate(raw.get("affected") or []):
        kind = next(k for k in ("component", "framework", "package") if k in entry)
        name = entry[kind]
        try:
            scheme = _scheme(kind, name, entry.get("scheme"))
            ranges = parse_ranges(scheme, entry["versions"])
            if entry.get("fixed_in"):
                check_version(scheme, entry["fixed_in"])
        except VersionError as err:
            problem(["affected", i], str(err))
            continue
        affected.append(Affected(kind, name, ranges, entry.get("fixed_in"),
                                 entry.get("copies", "effective")))
    if raw.get("when") is not None:
        for path, message in check_condition(raw["when"]):
            problem(["when", *path], message)
    if problems:
        return None, problems
    return Rule(
        id=rule_id, title=raw["title"], status=raw.get("status", "active"),
        severity=raw["severity"], confidence=raw["confidence"],
        components=tuple(raw["components"]), affected=tuple(affected),
        effect=" ".join(raw["effect"].split()), remediation=" ".join(raw["remediation"].split()),
        references=tuple(r["url"] for r in raw["references"]), pack=ref, source=source,
        line=doc.line(base), when=raw.get("when"), fix=raw.get("fix") or {},
        tests=raw.get("tests") or {}, raw=raw), problems


def _scheme(kind: str, name: str, scheme: str | None) -> str:
    """The versioning scheme of an affected entry or condition: given, or the kind's default."""
    if scheme:
        return scheme
    key = name.partition(":")[0] if kind == "package" else kind
    if key not in DEFAULT_SCHEMES:
        raise VersionError(f"{name}: no default versioning scheme for {key} packages; give `scheme`")
    return DEFAULT_SCHEMES[key]


def scheme_of(kind: str, name: str, scheme: str | None = None) -> str:
    return _scheme(kind, name, scheme)


def check_condition(cond: Mapping[str, Any], path: tuple[str | int, ...] = ()
                    ) -> list[tuple[list[str | int], str]]:
    """What the schema cannot check in a condition: ranges parse, regexes compile."""
    out: list[tuple[list[str | int], str]] = []
    (key, value), = cond.items()
    here = [*path, key]
    if key in ("all", "any"):
        for i, sub in enumerate(value):
            out.extend(check_condition(sub, (*here, i)))
    elif key == "not":
        out.extend(check_condition(value, tuple(here)))
    elif key in ("component", "framework", "package", "loads") and "versions" in value:
        kind = "component" if key == "loads" else key
        name = value.get("name") or value.get("component")
        try:
            parse_ranges(_scheme(kind, name, value.get("scheme")), value["versions"])
        except VersionError as err:
            out.append(([*here, "versions"], str(err)))
    if key == "framework":
        for component, ranges in (value.get("built_for") or {}).items():
            try:
                parse_ranges("nvidia", ranges)
            except VersionError as err:
                out.append(([*here, "built_for", component], str(err)))
    if key in ("env", "label") and "matches" in value:
        try:
            re.compile(value["matches"])
        except re.error as err:
            out.append(([*here, "matches"], f"invalid regex {value['matches']!r}: {err}"))
    return out


# -- where packs come from ---------------------------------------------------------------------
def builtin_pack_files() -> list[tuple[str, bytes]]:
    folder = resources.files("auditor").joinpath("rules/packs")
    return sorted((f"builtin:{entry.name}", entry.read_bytes()) for entry in folder.iterdir()
                  if entry.name.endswith(".yaml"))


def pack_files(spec: str) -> list[tuple[str, bytes]]:
    """(source, bytes) of the pack(s) a ``--rules`` value names: a file, a folder of ``*.yaml``,
    or ``https://…#sha256=HEX`` (refused without the pin or when the bytes do not match it)."""
    if is_url(spec):
        match = _PIN_RE.match(spec)
        if not match:
            raise InputError(f"remote rule pack {spec} must be pinned: append #sha256=<64 hex digits> "
                             "of the pack file")
        data = fetch_bytes(match["url"], MAX_PACK_BYTES)
        actual = hashlib.sha256(data).hexdigest()
        if actual != match["hex"]:
            raise DigestMismatchError(f"remote rule pack {match['url']}: sha256 is {actual}, "
                                      f"the pin says {match['hex']}; refused")
        return [(match["url"], data)]
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        if not files:
            raise InputError(f"{spec}: no *.yaml rule packs in this folder")
        return [(str(p), read_source(str(p), MAX_PACK_BYTES)) for p in files]
    return [(spec, read_source(spec, MAX_PACK_BYTES))]


def load_packs(specs: Iterable[str] = (), builtin: bool = True) -> list[Pack]:
    """The built-in packs and those ``specs`` name, checked; the first problem raises
    PackError naming its file, line and rule."""
    packs, problems = parse_packs(builtin_pack_files(), check_schema=False) if builtin else ([], [])
    more, more_problems = parse_packs([f for s in specs for f in pack_files(s)])
    packs, problems = packs + more, problems + more_problems
    problems.extend(cross_pack_problems(packs))
    if problems:
        raise PackError(problems)
    return packs


def parse_packs(files: Iterable[tuple[str, bytes]],
                check_schema: bool = True) -> tuple[list[Pack], list[Problem]]:
    """Every pack that reads cleanly, and every problem of those that do not."""
    packs, problems = [], []
    for source, data in files:
        pack, found = parse_pack(data, source, check_schema)
        problems.extend(found)
        if pack is not None:
            packs.append(pack)
    return packs, problems


def cross_pack_problems(packs: Sequence[Pack]) -> list[Problem]:
    """Pack names and rule ids must be unique across the packs of one run."""
    out = []
    names: dict[str, str] = {}
    rules: dict[str, Rule] = {}
    for pack in packs:
        if pack.name in names:
            out.append(Problem(pack.source, None, None,
                               f"pack name {pack.name!r} is also used by {names[pack.name]}"))
        names.setdefault(pack.name, pack.source)
        for rule in pack.rules:
            first = rules.get(rule.id)
            if first is not None:
                out.append(Problem(rule.source, rule.line, rule.id,
                                   f"duplicate rule id: also in {first.source}:{first.line}"))
            rules.setdefault(rule.id, rule)
    return out
