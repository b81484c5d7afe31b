"""NVIDIA and CPU numeric libraries (cuDNN, cuBLAS, NCCL, CUDA runtime, oneDNN, OpenBLAS, ...):
the version each file really is, read from the file itself, with every other claim beside it.

The classifiers are data (``classifiers.yaml``). During the rootfs pass each library is handed to
:func:`auditor.elf.elf_facts`, which decodes the getters, data symbols and strings the table
names, without executing anything; headers are captured whole. After the pass, each file becomes
one :class:`Library` whose version is its strongest evidence: ELF (constant, data symbol,
string) > header > package metadata > SONAME or file name (major only); the owning package adds
the build part (the fourth) when it agrees. Claims that disagree with what a file reads (the
image's Env or labels, headers, package versions) are findings.
"""

from __future__ import annotations

import functools
import hashlib
import posixpath
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, BinaryIO

from packaging.utils import canonicalize_name

from auditor.elf import Interest, elf_facts
from auditor.inventory.base import Cataloger, FileView, Inventory
from auditor.model import Evidence, Finding, Library, Package, Unknown
from auditor.rootfs.index import glob_matcher, glob_regex
from auditor.rules.yamlsource import safe_load

NAME = "numeric"
CODE_VERSION = 1  # bump when the facts or their reading change
ELF_KINDS = ("constant", "data-symbol", "string")
CLAIM_KINDS = ("env", "label", "header", "package")
_VERSION = re.compile(r"\d+(?:\.\d+)*")


# -- the table ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Getter:
    symbol: str
    reads: tuple[str, ...]  # returns, store0, store1, callee_store0, pointee
    decode: tuple[str, ...]


@dataclass(frozen=True)
class Header:
    files: tuple[str, ...]
    defines: dict[str, str] = field(default_factory=dict, hash=False)  # part -> macro
    define: str | None = None
    decode: str | None = None
    regex: re.Pattern[str] | None = None


@dataclass(frozen=True)
class Classifier:
    name: str
    title: str
    files: tuple[str, ...]
    soname: re.Pattern[str] | None
    soname_version: bool
    getters: tuple[Getter, ...]
    data: dict[str, str] = field(hash=False)  # symbol -> encoding
    strings: tuple[re.Pattern[str], ...]
    header: Header | None
    packages: tuple[re.Pattern[str], ...]
    env: dict[str, int] = field(hash=False)
    labels: dict[str, int] = field(hash=False)
    config_severity: str = "medium"

    def matches(self, path: str) -> bool:
        return any(_glob(g).match(path) for g in self.files)

    def string_key(self, index: int) -> str:
        """The facts' key for a string pattern: its text (shared patterns are searched once)."""
        return self.strings[index].pattern


@functools.lru_cache(maxsize=512)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(glob_regex(pattern))


def _tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(str(v) for v in (value if isinstance(value, list) else [value]))


def parse_classifiers(data: dict[str, Any]) -> list[Classifier]:
    """The table, checked: an unknown encoding or read is an error here, not a silent miss."""
    if not isinstance(data, dict) or data.get("schema") != 1:
        raise ValueError("classifiers: schema 1 expected")
    out = []
    for name, spec in data["components"].items():
        getters = tuple(Getter(g["symbol"], _tuple(g["read"]), _tuple(g["decode"]))
                        for g in spec.get("getters") or [])
        data_symbols = {symbol: str(d["decode"]) for d in spec.get("data") or []
                        for symbol in d["symbols"]}
        for encoding in [e for g in getters for e in g.decode] + list(data_symbols.values()):
            if encoding not in DECODINGS:
                raise ValueError(f"classifiers: {name}: unknown encoding {encoding!r}")
        for read in (r for g in getters for r in g.reads):
            if read not in READS:
                raise ValueError(f"classifiers: {name}: unknown read {read!r}")
        header = None
        if spec.get("headers"):
            h = spec["headers"]
            header = Header(_tuple(h["files"]), dict(h.get("defines") or {}), h.get("define"),
                            h.get("decode"), re.compile(h["regex"]) if h.get("regex") else None)
        out.append(Classifier(
            name, str(spec.get("title", name)), _tuple(spec["files"]),
            re.compile(spec["soname"]) if spec.get("soname") else None,
            bool(spec.get("soname_version", True)), getters, data_symbols,
            tuple(re.compile(s) for s in spec.get("strings") or []), header,
            tuple(re.compile(p) for p in spec.get("packages") or []),
            {str(k): int(v) for k, v in (spec.get("env") or {}).items()},
            {str(k): int(v) for k, v in (spec.get("labels") or {}).items()},
            str(spec.get("config_severity", "medium"))))
    return out


# -- encodings ---------------------------------------------------------------------------------
def _x10000(v: int) -> tuple[int, ...]:
    return v // 10000, v // 100 % 100, v % 100


def _x1000(v: int) -> tuple[int, ...]:
    return v // 1000, v // 100 % 10, v % 100


DECODINGS: dict[str, Callable[[int], tuple[int, ...]]] = {
    "packed": lambda v: (v >> 16 & 0xFF, v >> 8 & 0xFF, v & 0xFF),
    "x10000": _x10000,
    "x1000": _x1000,
    "cuda": lambda v: (v // 1000, v % 1000 // 10),
    "number": lambda v: (v,),
}
LIST_DECODINGS = ("words", "parts")  # take several values at once
READS = ("returns", "store0", "store1", "callee_store0", "pointee")
for _name in LIST_DECODINGS:
    DECODINGS[_name] = lambda v: (v,)


def decode(values: list[int], encodings: Iterable[str], major: int | None) -> tuple[int, ...] | None:
    """A version from raw values; of several encodings, the one agreeing with the SONAME's major
    (else the one giving the smallest non-zero major)."""
    encodings = list(encodings)
    if not values:
        return None
    if encodings[0] in LIST_DECODINGS:
        return tuple(values[:3])
    candidates = [DECODINGS[e](values[0]) for e in encodings]
    if major is not None:
        for version in candidates:
            if version[0] == major:
                return version
    plausible = [v for v in candidates if v[0] > 0]  # else the smallest major: 92400 is 9.24.0
    return min(plausible, key=lambda v: v[0]) if plausible else None


def _raw(symbol_facts: dict[str, Any], read: str) -> list[int]:
    """The candidate values of one read of a getter's facts (a pointee: its words)."""
    if read == "returns":
        return list(symbol_facts.get("returns") or [])
    if read.startswith("store"):
        return list((symbol_facts.get("stores") or {}).get(read[5:]) or [])
    if read.startswith("callee_store"):
        return list((symbol_facts.get("callee_stores") or {}).get(read[12:]) or [])
    pointees = symbol_facts.get("pointees") or []  # pointee
    return list(pointees[0][:3]) if len(pointees) == 1 and len(pointees[0]) >= 3 else []


def getter_version(getter: Getter, symbol_facts: dict[str, Any], major: int | None
                   ) -> tuple[list[int], tuple[int, ...]] | None:
    """(values used, version) of one getter. A function with several constant exits (an error
    code beside the version) is read when exactly one of them decodes to the SONAME's major.
    (There is no reading of which exit is which: that would take decoding control flow.)"""
    reads = [_raw(symbol_facts, read) for read in getter.reads]
    if getter.decode[0] in LIST_DECODINGS:
        if len(reads) == 1:
            values = reads[0]
        elif all(len(r) == 1 for r in reads):
            values = [r[0] for r in reads]
        else:
            return None
        version = decode(values, getter.decode, major)
        return (values, version) if version else None
    values = list(dict.fromkeys(reads[0]))
    if len(values) == 1:  # one exit: read it, even against the SONAME (that is a finding)
        version = decode(values, getter.decode, major)
        return (values, version) if version else None
    found = {}
    for value in values:
        version = decode([value], getter.decode, major)
        if version and (major is None or version[0] == major):
            found[version] = value
    if len(found) != 1:
        return None
    version, value = next(iter(found.items()))
    return [value], version


def version_text(parts: Iterable[int]) -> str:
    return ".".join(str(p) for p in parts)


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """The leading dotted number of a version as written (``8.1.0.77-1+cuda11.2`` -> 8.1.0.77;
    a Debian epoch is dropped)."""
    if not text:
        return None
    match = _VERSION.match(text.split(":", 1)[1] if re.match(r"^\d+:", text) else text)
    return tuple(int(p) for p in match.group(0).split(".")) if match else None


def disagree(a: str | None, b: str | None, parts: int = 3) -> bool:
    pa, pb = parse_version(a), parse_version(b)
    if pa is None or pb is None:
        return False
    n = min(parts, len(pa), len(pb))
    return pa[:n] != pb[:n]


# -- the analyzer ------------------------------------------------------------------------------
def interest_of(classifiers: list[Classifier]) -> Interest:
    return Interest(
        functions=frozenset(g.symbol for c in classifiers for g in c.getters),
        follow=frozenset(g.symbol for c in classifiers for g in c.getters
                         if any(r.startswith("callee_") for r in g.reads)),
        data=frozenset(s for c in classifiers for s in c.data),
        patterns={c.string_key(i): re.compile(p.pattern.encode())
                  for c in classifiers for i, p in enumerate(c.strings)})


def load_classifiers() -> tuple[list[Classifier], bytes]:
    raw = resources.files("auditor.inventory").joinpath("classifiers.yaml").read_bytes()
    return parse_classifiers(safe_load(raw)), raw


CLASSIFIERS, _RAW = load_classifiers()
INTEREST = interest_of(CLASSIFIERS)


def analyze_library(stream: BinaryIO, size: int) -> dict[str, Any]:
    return elf_facts(stream, size, INTEREST)


# -- evidence from one file --------------------------------------------------------------------
def file_evidence(c: Classifier, path: str, facts: dict[str, Any]) -> list[Evidence]:
    """Evidence from the file itself: SONAME and name, getters, data symbols, strings."""
    out: list[Evidence] = []
    major = None
    base = posixpath.basename(path)
    soname = facts.get("soname")
    for kind, value in (("soname", soname), ("filename", base if base != soname else None)):
        match = c.soname.match(value) if c.soname and value else None
        if match and match.groups():
            out.append(Evidence(kind, path, value, match.group(1) if c.soname_version else None))
            major = major if major is not None else int(match.group(1))
    major = major if c.soname_version else None
    symbols = facts.get("symbols") or {}
    for getter in c.getters:
        sym = symbols.get(getter.symbol)
        if not sym:
            continue
        read = getter_version(getter, sym, major)
        if read:
            shown = ", ".join(str(v) for v in read[0])
            out.append(Evidence("constant", f"{path}:{getter.symbol}()", shown, version_text(read[1])))
    for symbol, encoding in c.data.items():
        value = (symbols.get(symbol) or {}).get("u32")
        if value is not None:
            version = decode([value], [encoding], major)
            if version:
                out.append(Evidence("data-symbol", f"{path}:{symbol}", hex(value), version_text(version)))
    strings = facts.get("strings") or {}
    for index, pattern in enumerate(c.strings):
        for text in sorted(strings.get(c.string_key(index)) or {}):
            match = pattern.search(text)
            if match:
                out.append(Evidence("string", path, text, match.group(1)))
    return out


def elf_version(evidence: list[Evidence]) -> Evidence | None:
    """The ELF reading a file's version rests on: the most precise, first found."""
    readings = [e for e in evidence if e.kind in ELF_KINDS and e.version]
    return max(readings, key=lambda e: len(e.version.split(".")), default=None)  # type: ignore[union-attr]


def choose_version(evidence: list[Evidence]) -> str | None:
    """ELF > header > package > SONAME/file name; a longer claim that agrees adds the build."""
    tiers = (ELF_KINDS, ("header",), ("package",), ("soname", "filename"))
    chosen: str | None = None
    for kinds in tiers:
        found = [e for e in evidence if e.kind in kinds and e.version]
        if found:
            best = elf_version(found) if kinds == ELF_KINDS else found[0]
            chosen = best.version if best else None
            break
    if chosen is None:
        return None
    for e in evidence:
        if e.kind in ("package", "header") and e.version and len(e.version.split(".")) > \
                len(chosen.split(".")) and not disagree(e.version, chosen, 4):
            chosen = e.version
    return chosen


# -- claims beside the file: headers, packages, config ------------------------------------------
def header_version(h: Header, text: str) -> tuple[str, str] | None:
    """(what was read, version) from a header's text, or None."""
    if h.regex:
        match = h.regex.search(text)
        return (match.group(0), match.group(1)) if match else None
    defines: dict[str, str] = dict(re.findall(r"^\s*#\s*define\s+(\w+)\s+(\w+)", text, re.M))

    def value(name: str) -> int | None:
        raw = defines.get(name)
        raw = defines.get(raw, raw) if raw and not raw.isdigit() else raw  # one alias level
        return int(raw) if raw and raw.isdigit() else None

    if h.define:
        number = value(h.define)
        if number is None or not h.decode:
            return None
        return f"{h.define} {number}", version_text(DECODINGS[h.decode](number))
    parts = [(macro, value(macro)) for macro in h.defines.values()]
    known = [(m, v) for m, v in parts if v is not None]
    if len(known) < min(3, len(parts)) or parts[0][1] is None:
        return None
    return ", ".join(f"{m} {v}" for m, v in known), version_text(v for _, v in known)


def read_headers(view: FileView, c: Classifier) -> list[Evidence]:
    if c.header is None:
        return []
    out, seen = [], set()
    for pattern in c.header.files:
        for path in view.captured(pattern):
            data = view.read(path)
            resolved = view.index.resolve(path)
            if data is None or resolved in seen:
                continue
            seen.add(resolved)
            read = header_version(c.header, data[:1 << 20].decode("utf-8", "replace"))
            if read:
                out.append(Evidence("header", path, read[0], read[1]))
    return out


def _header_for(path: str, headers: list[Evidence]) -> list[Evidence]:
    """Headers sharing the longest path prefix with a library (a wheel's include/ beside its
    lib/; /usr/include for /usr/lib)."""
    def shared(header: Evidence) -> int:
        return len([p for p in posixpath.commonpath([path, header.source]).split("/") if p])

    if not headers:
        return []
    best = max(shared(h) for h in headers)
    return [h for h in headers if shared(h) == best]


def package_owners(view: FileView, inventory: Inventory, matches: Callable[[str], bool]
                   ) -> dict[str, Package]:
    """Real file path -> the package that owns it (owned paths resolved through symlinks)."""
    owners: dict[str, Package] = {}
    for package in inventory.packages:
        for owned in package.files:
            path = owned.lstrip("/")
            if not matches(path):
                continue
            owners.setdefault(path, package)
            resolved = view.index.resolve(path)
            if resolved:
                owners.setdefault(resolved, package)
    return owners


def package_evidence(c: Classifier, package: Package) -> Evidence:
    name = canonicalize_name(package.name)
    says = any(p.match(name) for p in c.packages)
    version = parse_version(package.version) if says else None
    return Evidence("package", f"{package.type}:{package.name}", package.version,
                    version_text(version) if version else None)


def config_evidence(view: FileView, c: Classifier) -> list[tuple[Evidence, int]]:
    out = []
    env, labels = view.env(), view.labels()
    for key, parts in c.env.items():
        if env.get(key) and parse_version(env[key]):
            out.append((Evidence("env", f"Env:{key}", env[key],
                                 version_text(parse_version(env[key]) or ())), parts))
    for key, parts in c.labels.items():
        if labels.get(key) and parse_version(labels[key]):
            out.append((Evidence("label", f"Label:{key}", labels[key],
                                 version_text(parse_version(labels[key]) or ())), parts))
    return out


# -- the cataloger -----------------------------------------------------------------------------
def classify(path: str) -> Classifier | None:
    return next((c for c in CLASSIFIERS if c.matches(path)), None)


def run(view: FileView, inventory: Inventory) -> None:
    owners = package_owners(view, inventory, glob_matcher(LIBRARY_GLOBS))
    by_component: dict[str, list[Library]] = {}
    claims: dict[str, list[tuple[Evidence, int]]] = {}
    for path, facts in view.analyzed(NAME):
        c = classify(path)
        if c is None:
            continue
        layer = view.layer_of(path)
        if "error" in facts:
            inventory.unknowns.append(Unknown(NAME, path, layer, f"not read as ELF: {facts['error']}"))
            continue
        if facts.get("problems"):
            inventory.unknowns.append(Unknown(NAME, path, layer,
                                              "ELF read in part: " + "; ".join(facts["problems"])))
        if c.name not in claims:
            claims[c.name] = [(h, 3) for h in read_headers(view, c)] + config_evidence(view, c)
        evidence = file_evidence(c, path, facts)
        evidence += [h for h in _header_for(path, [e for e, _ in claims[c.name] if e.kind == "header"])]
        package = owners.get(path)
        if package is not None:
            evidence.append(package_evidence(c, package))
        evidence += [e for e, _ in claims[c.name] if e.kind in ("env", "label")]
        library = Library(c.name, path, layer, choose_version(evidence), tuple(evidence),
                          facts.get("soname"),
                          f"{package.type}:{package.name}@{package.version}" if package else None,
                          facts.get("machine"))
        inventory.libraries.append(library)
        by_component.setdefault(c.name, []).append(library)
    for c in CLASSIFIERS:
        libraries = by_component.get(c.name)
        if libraries:
            inventory.findings.extend(disagreements(c, libraries, claims.get(c.name, [])))


# -- findings ----------------------------------------------------------------------------------
def _describe(e: Evidence) -> str:
    key = e.source.partition(":")[2]
    if e.kind == "env":
        return f"the image's Env {key}"
    if e.kind == "label":
        return f"the image's label {key}"
    if e.kind == "header":
        return f"header {e.source}"
    if e.kind == "package":
        return f"package {e.source}"
    if e.kind == "constant":
        return f"constant returned by {e.source.rpartition(':')[2]}"
    if e.kind == "data-symbol":
        return f"data symbol {e.source.rpartition(':')[2]}"
    return f"string {e.value!r}"


def disagreements(c: Classifier, libraries: list[Library],
                  claims: list[tuple[Evidence, int]]) -> list[Finding]:
    """One finding per (claim, distinct ELF version) that disagree, and per file whose own ELF
    readings disagree with each other."""
    out: list[Finding] = []
    readings: list[tuple[Library, Evidence]] = []
    for lib in libraries:
        elf = [e for e in lib.evidence if e.kind in ELF_KINDS and e.version]
        best = elf_version(elf)
        if best is None:
            continue
        readings.append((lib, best))
        for other in elf:
            if disagree(other.version, best.version):
                out.append(_finding(c, "medium", other, best, lib,
                                    f"{c.title}: {lib.path} holds two versions, {other.version} "
                                    f"({_describe(other)}) and {best.version} ({_describe(best)})."))
                break
    package_claims = {(e.source, e.version): e for lib in libraries for e in lib.evidence
                      if e.kind == "package" and e.version}
    for group, parts in _claim_groups(claims, list(package_claims.values())):
        scope = [(lib, e) for lib, e in readings if group[0] in lib.evidence]
        by_version: dict[str, list[tuple[Library, Evidence]]] = {}
        for lib, e in scope:
            if disagree(group[0].version, e.version, parts):
                by_version.setdefault(e.version or "", []).append((lib, e))
        for version, members in by_version.items():
            lib, e = members[0]
            more = f" (and {len(members) - 1} more files)" if len(members) > 1 else ""
            config = group[0].kind in ("env", "label")
            said = group[0].version if group[0].kind == "header" else group[0].value
            verb = "say" if len(group) > 1 else "says"
            out.append(Finding(
                "version-disagreement", c.config_severity if config else "medium", c.name,
                f"{c.title}: {_describe_all(group)} {verb} {said}, but {lib.path} reads {version} "
                f"({_describe(e)}){more}.", (*group, e), lib.path))
    return out


def _claim_groups(config: list[tuple[Evidence, int]], packages: list[Evidence]
                  ) -> list[tuple[list[Evidence], int]]:
    """Claims to compare, the image config's grouped by the value they state (Env CUDNN_VERSION
    and NV_CUDNN_VERSION and a label saying the same thing make one finding, not three)."""
    groups: list[tuple[list[Evidence], int]] = []
    by_value: dict[str, tuple[list[Evidence], int]] = {}
    for e, parts in config:
        if e.kind in ("env", "label"):
            key = e.version or e.value
            if key in by_value:
                members, known = by_value[key]
                members.append(e)
                by_value[key] = (members, min(known, parts))
                continue
            by_value[key] = ([e], parts)
        else:
            groups.append(([e], parts))
    return [*by_value.values(), *groups, *(([e], 3) for e in packages)]


def _describe_all(group: list[Evidence]) -> str:
    if len(group) == 1:
        return _describe(group[0])
    names = [f"{'Env' if e.kind == 'env' else 'label'} {e.source.partition(':')[2]}" for e in group]
    return f"the image's {', '.join(names[:-1])} and {names[-1]}"


def _finding(c: Classifier, severity: str, claim: Evidence, reading: Evidence, lib: Library,
             message: str) -> Finding:
    return Finding("version-disagreement", severity, c.name, message, (claim, reading), lib.path)


def _cache_version() -> int:
    """The cataloger's version for the layer cache: the code's, and the table's digest (a YAML
    edit re-reads the libraries)."""
    return CODE_VERSION * 10**9 + int(hashlib.sha256(_RAW).hexdigest()[:7], 16)


HEADER_GLOBS = tuple(dict.fromkeys(g for c in CLASSIFIERS if c.header for g in c.header.files))
LIBRARY_GLOBS = tuple(dict.fromkeys(g for c in CLASSIFIERS for g in c.files))
CATALOGER = Cataloger(NAME, _cache_version(), HEADER_GLOBS, run,
                      analyze_globs=LIBRARY_GLOBS, analyze=analyze_library)
