"""Conditions over a Stack, with three values: false, not evaluable, or true under assumptions
(what the image cannot show, stated rather than guessed). Pure: no I/O. See docs/rules.md."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from packaging.utils import canonicalize_name

from auditor.model import Evidence, Item, Stack
from auditor.rules.pack import scheme_of
from auditor.rules.versions import VersionError, parse_ranges

_ARCH_RE = re.compile(r"^sm_(\d+)([a-z]?)$")


@dataclass(frozen=True)
class Outcome:
    """``holds`` False: the condition is false. Else it holds, under ``assumptions`` (none:
    plainly). ``unknown``: why it could not be evaluated (then ``holds`` is False)."""

    holds: bool
    assumptions: tuple[str, ...] = ()
    evidence: tuple[Evidence, ...] = ()
    unknown: tuple[str, ...] = ()

    @property
    def evaluable(self) -> bool:
        return not self.unknown


TRUE = Outcome(True)
FALSE = Outcome(False)


def evaluate_condition(cond: Mapping[str, Any], stack: Stack) -> Outcome:
    (key, value), = cond.items()
    return _EVALUATORS[key](value, stack)


def _all(parts: list[Mapping[str, Any]], stack: Stack) -> Outcome:
    outcomes = [evaluate_condition(p, stack) for p in parts]
    if any(not o.holds and o.evaluable for o in outcomes):
        return FALSE
    unknown = _union(o.unknown for o in outcomes)
    if unknown:
        return Outcome(False, unknown=unknown)
    return Outcome(True, _union(o.assumptions for o in outcomes), _chain(o.evidence for o in outcomes))


def _any(parts: list[Mapping[str, Any]], stack: Stack) -> Outcome:
    outcomes = [evaluate_condition(p, stack) for p in parts]
    plain = [o for o in outcomes if o.holds and not o.assumptions]
    if plain:
        return Outcome(True, (), plain[0].evidence)
    qualified = [o for o in outcomes if o.holds]
    if len(qualified) == 1:
        return qualified[0]
    if qualified:
        either = "one of: " + "; or ".join(" and ".join(o.assumptions) for o in qualified)
        return Outcome(True, (either,), _chain(o.evidence for o in qualified))
    unknown = _union(o.unknown for o in outcomes)
    return Outcome(False, unknown=unknown) if unknown else FALSE


def _not(part: Mapping[str, Any], stack: Stack) -> Outcome:
    inner = evaluate_condition(part, stack)
    if not inner.evaluable:
        return inner
    if not inner.holds:
        return Outcome(True, (), inner.evidence)
    if inner.assumptions:
        return Outcome(True, (f"not ({' and '.join(inner.assumptions)})",))
    return FALSE


def _assume(text: str, _stack: Stack) -> Outcome:
    return Outcome(True, (" ".join(text.split()),))


# -- items -------------------------------------------------------------------------------------
def select_copies(stack: Stack, kind: str, name: str, copies: str = "effective") -> list[Item]:
    """The items a rule looks at: for numeric libraries, which copies count (docs/rules.md)."""
    wanted = _package_key(name) if kind == "package" else name
    items = [i for i in stack.items if i.kind == kind and
             (_package_key(i.name) if kind == "package" else i.name) == wanted]
    if kind != "component" or copies == "present":
        return items
    loaded = [i for i in items if i.loaded_by]
    if copies == "loaded" or (loaded and stack.linkage_known):
        return loaded
    return items


def _package_key(name: str) -> str:
    """Python and conda names compare normalised (PEP 503); others exactly."""
    kind, _, bare = name.partition(":")
    if kind in ("python", "conda"):
        return f"{kind}:{canonicalize_name(bare)}"
    return name


def match_versions(items: Iterable[Item], ranges: Any | None) -> tuple[list[Item], list[str]]:
    """(items whose version is in ``ranges``, reasons some could not be decided)."""
    matched, unknown = [], []
    if ranges is not None and all(r.text == "*" for r in ranges.ranges):
        ranges = None  # any version, even one the image does not show
    for item in items:
        if ranges is None:
            matched.append(item)
            continue
        where = f" at {item.path}" if item.path else ""
        if not item.version:
            unknown.append(f"{item.name}{where}: version unknown")
            continue
        try:
            if ranges.contains(item.version):
                matched.append(item)
        except VersionError as err:
            unknown.append(f"{item.name}{where}: {err}")
    return matched, unknown


def _present(kind: str) -> Callable[[Mapping[str, Any], Stack], Outcome]:
    def evaluate(value: Mapping[str, Any], stack: Stack) -> Outcome:
        name = value["name"]
        items = select_copies(stack, kind, name, value.get("copies", "effective"))
        if kind == "framework" and value.get("built_for"):
            items, unknown_bf = _built_for(items, value["built_for"])
        else:
            unknown_bf = []
        ranges = None
        if "versions" in value:
            ranges = parse_ranges(scheme_of(kind, name, value.get("scheme")), value["versions"])
        matched, unknown = match_versions(items, ranges)
        if matched:
            return Outcome(True, (), matched[0].evidence[:1])
        unknown += unknown_bf
        return Outcome(False, unknown=tuple(unknown)) if unknown else FALSE
    return evaluate


def _built_for(items: list[Item], wanted: Mapping[str, Any]) -> tuple[list[Item], list[str]]:
    out, unknown = [], []
    for item in items:
        built = dict(item.built_for)
        ok = True
        for component, ranges in wanted.items():
            version = built.get(component)
            if version is None:
                unknown.append(f"{item.name} at {item.path}: what {component} it was built for is unknown")
                ok = False
                break
            try:
                if not parse_ranges("nvidia", ranges).contains(version):
                    ok = False
                    break
            except VersionError as err:
                unknown.append(f"{item.name} built for {component}: {err}")
                ok = False
                break
        if ok:
            out.append(item)
    return out, unknown


def _loads(value: Mapping[str, Any], stack: Stack) -> Outcome:
    if not stack.linkage_known:
        return Outcome(False, unknown=("the linkage was not resolved",))
    items = [i for i in select_copies(stack, "component", value["component"], "loaded")
             if value.get("by") is None or value["by"] in i.loaded_by]
    ranges = parse_ranges("nvidia", value["versions"]) if "versions" in value else None
    matched, unknown = match_versions(items, ranges)
    if matched:
        return Outcome(True, (), matched[0].evidence[:1])
    return Outcome(False, unknown=tuple(unknown)) if unknown else FALSE


# -- env, labels, GPU --------------------------------------------------------------------------
def _match(source: str) -> Callable[[Mapping[str, Any], Stack], Outcome]:
    def evaluate(value: Mapping[str, Any], stack: Stack) -> Outcome:
        values = dict(stack.env if source == "env" else stack.labels)
        name = value["name"]
        current = values.get(name)
        ok = True
        if "set" in value:
            ok = (current is not None) == value["set"]
        if ok and "equals" in value:
            ok = current == value["equals"]
        if ok and "in" in value:
            ok = current in value["in"]
        if ok and "matches" in value:
            ok = current is not None and re.fullmatch(value["matches"], current) is not None
        origin = dict(stack.env_origin).get(name, "Env") if source == "env" else "Labels"
        shown = f"{name}={current}" if current is not None else f"{name} unset"
        # the evidence goes with a false outcome too: `not` turns it into the reason it holds
        return Outcome(ok, (), (Evidence(source, f"{origin}:{name}", shown),))
    return evaluate


def arch_number(arch: str) -> int:
    match = _ARCH_RE.match(arch)
    if not match:
        raise ValueError(f"{arch!r} is not a GPU architecture (expected sm_NN, e.g. sm_80)")
    return int(match.group(1))


def _gpu_arch(value: Mapping[str, Any], stack: Stack) -> Outcome:
    if not stack.gpu_arch:
        return Outcome(True, (f"the GPU is {_describe_arch(value)} (no --gpu-arch given)",))
    for arch in stack.gpu_arch:
        number = arch_number(arch)
        if "min" in value and number < arch_number(value["min"]):
            continue
        if "max" in value and number > arch_number(value["max"]):
            continue
        if "in" in value and arch not in value["in"]:
            continue
        return Outcome(True, (), (Evidence("gpu", "--gpu-arch", arch),))
    return FALSE


def _describe_arch(value: Mapping[str, Any]) -> str:
    parts = []
    if "min" in value:
        parts.append(f"{value['min']} or newer")
    if "max" in value:
        parts.append(f"{value['max']} or older")
    if "in" in value:
        parts.append("one of " + ", ".join(value["in"]))
    return " and ".join(parts)


def _union(groups: Iterable[tuple[str, ...]]) -> tuple[str, ...]:
    out: list[str] = []
    for group in groups:
        out.extend(x for x in group if x not in out)
    return tuple(out)


def _chain(groups: Iterable[tuple[Evidence, ...]]) -> tuple[Evidence, ...]:
    out: list[Evidence] = []
    for group in groups:
        out.extend(e for e in group if e not in out)
    return tuple(out)


_EVALUATORS: dict[str, Callable[[Any, Stack], Outcome]] = {
    "all": _all, "any": _any, "not": _not, "assume": _assume,
    "component": _present("component"), "framework": _present("framework"),
    "package": _present("package"), "loads": _loads,
    "env": _match("env"), "label": _match("label"), "gpu_arch": _gpu_arch,
}
