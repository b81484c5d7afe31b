"""`auditor rules test`: every rule's embedded cases, each a small Stack the rule must fire on
(`trigger`) or stay quiet on (`clean`). Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from auditor.rules.evaluate import FIRED, NOT_EVALUABLE, evaluate_rule
from auditor.rules.pack import Pack, Rule
from auditor.rules.stack import stack_of_case


@dataclass(frozen=True)
class CaseResult:
    rule: Rule
    kind: str  # trigger, clean
    index: int
    passed: bool
    detail: str  # what happened, one line

    @property
    def name(self) -> str:
        return f"{self.rule.id} {self.kind}[{self.index}]"


def run_rule_cases(rule: Rule) -> list[CaseResult]:
    out = []
    for kind in ("trigger", "clean"):
        for index, case in enumerate(rule.tests.get(kind) or []):
            result = evaluate_rule(rule, stack_of_case(case))
            if result.status == NOT_EVALUABLE:
                passed, detail = False, "not evaluable: " + "; ".join(result.reasons)
            elif kind == "trigger":
                passed = result.status == FIRED
                detail = result.findings[0].message if passed else "did not fire"
            else:
                passed = result.status != FIRED
                detail = "did not fire" if passed else f"fired: {result.findings[0].message}"
            out.append(CaseResult(rule, kind, index, passed, detail))
    return out


def run_pack_cases(packs: Iterable[Pack]) -> list[CaseResult]:
    """Cases of every rule that is not retired (drafts included: their cases, if any, must hold)."""
    return [r for pack in packs for rule in pack.rules if rule.status != "retired"
            for r in run_rule_cases(rule)]
