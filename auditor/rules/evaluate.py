"""The evaluator: (Stack, packs) -> one result per active rule, with findings. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from auditor.model import Evidence, Finding, Item, RuleRef, Stack
from auditor.rules.conditions import Outcome, evaluate_condition, match_versions, select_copies
from auditor.rules.pack import Pack, Rule

FIRED, PASSED, NOT_EVALUABLE = "fired", "passed", "not-evaluable"
MAX_ITEMS_EVIDENCED = 4  # copies of one version whose evidence a finding carries (all are in locations)


@dataclass(frozen=True)
class RuleResult:
    rule: Rule
    status: str  # fired, passed, not-evaluable
    findings: tuple[Finding, ...] = ()
    reasons: tuple[str, ...] = ()  # why not evaluable


@dataclass(frozen=True)
class Evaluation:
    packs: tuple[Pack, ...]
    results: tuple[RuleResult, ...]
    gpu_arch: tuple[str, ...] = ()  # what the rules were told of the GPU

    @property
    def findings(self) -> list[Finding]:
        return [f for r in self.results for f in r.findings]

    @property
    def not_evaluable(self) -> list[RuleResult]:
        return [r for r in self.results if r.status == NOT_EVALUABLE]


def evaluate(stack: Stack, packs: Iterable[Pack]) -> Evaluation:
    """Every active rule of ``packs`` against ``stack``; drafts and retired rules are skipped."""
    packs = tuple(packs)
    results = tuple(evaluate_rule(rule, stack) for pack in packs for rule in pack.rules if rule.active)
    return Evaluation(packs, results, stack.gpu_arch)


def evaluate_rule(rule: Rule, stack: Stack) -> RuleResult:
    matches: list[tuple[str, list[Item]]] = []  # (affected name, items at one version)
    unknown: list[str] = []
    for entry in rule.affected:
        items = select_copies(stack, entry.kind, entry.name, entry.copies)
        matched, undecided = match_versions(items, entry.ranges)
        unknown.extend(undecided)
        by_version: dict[str | None, list[Item]] = {}
        for item in matched:
            by_version.setdefault(item.version, []).append(item)
        matches.extend((entry.name, group) for group in by_version.values())
    if rule.affected and not matches:
        if unknown:
            return RuleResult(rule, NOT_EVALUABLE, reasons=tuple(unknown))
        return RuleResult(rule, PASSED)
    outcome = evaluate_condition(rule.when, stack) if rule.when else Outcome(True)
    if not outcome.evaluable:
        return RuleResult(rule, NOT_EVALUABLE, reasons=outcome.unknown)
    if not outcome.holds:
        return RuleResult(rule, PASSED)
    if not rule.affected:
        return RuleResult(rule, FIRED, (_finding(rule, None, [], outcome),))
    return RuleResult(rule, FIRED, tuple(_finding(rule, name, items, outcome) for name, items in matches))


def _finding(rule: Rule, name: str | None, items: list[Item], outcome: Outcome) -> Finding:
    items = sorted(items, key=lambda i: (not i.loaded_by, i.path or ""))
    first = items[0] if items else None
    entry = next((a for a in rule.affected if a.name == name), None)
    evidence: list[Evidence] = []
    for item in items[:MAX_ITEMS_EVIDENCED]:
        evidence.extend(e for e in _strongest(item) if e not in evidence)
    evidence.extend(e for e in outcome.evidence if e not in evidence)
    message = f"{_trigger(first, len(items), outcome)}: {rule.effect}"
    if outcome.assumptions:
        message += f" (applies if {'; and '.join(outcome.assumptions)})"
    return Finding(
        id=rule.id, severity=rule.severity,
        component=name or rule.components[0], message=message, evidence=tuple(evidence),
        path=first.path if first else None,
        rule=RuleRef(rule.pack, rule.title, rule.effect, rule.confidence, rule.references),
        version=first.version if first else None,
        fixed_in=entry.fixed_in if entry else None, remediation=rule.remediation,
        assumptions=outcome.assumptions,
        locations=tuple(i.path for i in items if i.path))


def _strongest(item: Item) -> list[Evidence]:
    """The evidence that says most about the item's version (the most version parts read)."""
    said = [e for e in item.evidence if e.version and item.version and
            (item.version == e.version or item.version.startswith(e.version + "."))]
    said.sort(key=lambda e: -len(e.version or ""))
    return said[:1] or list(item.evidence[:1])


def _trigger(item: Item | None, count: int, outcome: Outcome) -> str:
    """What triggered a finding, in a few words: the file and version, or the env vars."""
    if item is None:
        shown = [e.value for e in outcome.evidence if e.kind in ("env", "label", "gpu")]
        return "; ".join(shown) if shown else "this image"
    text = f"{item.title or item.name} {item.version}"
    if item.path:
        text += f" at /{item.path}"
        if count > 1:
            text += f" (and {count - 1} more {'file' if count == 2 else 'files'})"
    if item.loaded_by:
        text += f", loaded by {', '.join(item.loaded_by)}"
    return text
