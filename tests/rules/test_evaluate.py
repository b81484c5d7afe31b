"""The evaluator and its conditions, on Stacks built from test cases: pure, no files."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from auditor.model import Item, Stack
from auditor.rules.conditions import evaluate_condition
from auditor.rules.evaluate import FIRED, NOT_EVALUABLE, PASSED, evaluate, evaluate_rule
from auditor.rules.pack import Pack, parse_pack
from auditor.rules.stack import stack_of_case


def pack_of(rules_yaml: str) -> Pack:
    text = textwrap.dedent("""\
        format: 1
        pack: {name: unit, version: "1", date: "2026-11-24"}
        rules:
        """) + textwrap.indent(textwrap.dedent(rules_yaml), "  ")
    pack, problems = parse_pack(text.encode(), "unit.yaml")
    assert pack is not None, [str(p) for p in problems]
    return pack


def rule_yaml(rule_id: str = "r", affected: str = "", when: str = "") -> str:
    body = f"""\
        - id: {rule_id}
          title: A rule
          severity: high
          confidence: verified
          components: [cudnn]
          effect: Results change.
          remediation: Upgrade.
          references: [{{url: "https://example.org/r"}}]
          tests: {{trigger: [{{}}], clean: [{{}}]}}
        """
    body = textwrap.dedent(body)
    if affected:
        body += "  affected:\n" + textwrap.indent(textwrap.dedent(affected), "    ")
    if when:
        body += "  when:\n" + textwrap.indent(textwrap.dedent(when), "    ")
    return body


SEED = rule_yaml("seed", affected="""\
    - component: cudnn
      versions: ">=8.1.0, <8.2.1"
      fixed_in: "8.2.1"
    """, when="assume: the model has bidirectional RNN layers\n")


@pytest.mark.parametrize(("version", "fires"), [
    ("8.1.0.77", True), ("8.1.0", True), ("8.2.0.53", True),
    ("8.2.1.32", False), ("8.2.1", False), ("8.4.1.50", False), ("8.0.5.39", False)])
def test_affected_range_at_the_bounds(version: str, fires: bool) -> None:
    (rule,) = pack_of(SEED).rules
    result = evaluate_rule(rule, stack_of_case({"components": {"cudnn": version}}))
    assert result.status == (FIRED if fires else PASSED)


def test_finding_says_what_triggered_it_the_effect_the_fix_and_the_assumption() -> None:
    (rule,) = pack_of(SEED).rules
    stack = Stack(items=(Item("component", "cudnn", "8.1.0.77", "usr/lib/libcudnn.so.8", 1,
                              ("tensorflow",), title="cuDNN"),), linkage_known=True)
    (finding,) = evaluate_rule(rule, stack).findings
    assert finding.id == "seed" and finding.severity == "high" and finding.component == "cudnn"
    assert finding.message.startswith("cuDNN 8.1.0.77 at /usr/lib/libcudnn.so.8, loaded by tensorflow: ")
    assert "Results change." in finding.message
    assert finding.assumptions == ("the model has bidirectional RNN layers",)
    assert finding.fixed_in == "8.2.1" and finding.version == "8.1.0.77"
    assert finding.remediation == "Upgrade."
    assert finding.rule is not None and finding.rule.pack == "unit@1"
    assert finding.rule.references == ("https://example.org/r",)


def test_effective_copies_are_the_loaded_ones_when_the_linkage_knows() -> None:
    (rule,) = pack_of(SEED).rules
    old = Item("component", "cudnn", "8.1.0.77", "usr/lib/old/libcudnn.so.8")
    new = Item("component", "cudnn", "8.9.7.29", "wheels/libcudnn.so.8", loaded_by=("torch",))
    assert evaluate_rule(rule, Stack(items=(old, new), linkage_known=True)).status == PASSED
    # nothing loads either: every copy counts
    unloaded = dataclasses.replace(new, loaded_by=())
    assert evaluate_rule(rule, Stack(items=(old, unloaded), linkage_known=True)).status == FIRED


def test_present_copies_count_every_file() -> None:
    (rule,) = pack_of(rule_yaml(affected="""\
        - component: cudnn
          versions: "<8.2.1"
          copies: present
        """)).rules
    old = Item("component", "cudnn", "8.1.0.77", "usr/lib/old/libcudnn.so.8")
    new = Item("component", "cudnn", "8.9.7.29", "wheels/libcudnn.so.8", loaded_by=("torch",))
    (finding,) = evaluate_rule(rule, Stack(items=(old, new), linkage_known=True)).findings
    assert finding.path == "usr/lib/old/libcudnn.so.8"


def test_one_finding_per_version_with_every_file_located() -> None:
    (rule,) = pack_of(SEED).rules
    items = (*(Item("component", "cudnn", "8.1.0.77", f"usr/lib/libcudnn_{p}.so.8")
               for p in ("ops", "cnn", "adv")), Item("component", "cudnn", "8.2.0.53", "x/libcudnn.so.8"))
    findings = evaluate_rule(rule, Stack(items=items)).findings
    assert sorted((f.version, len(f.locations)) for f in findings) == [("8.1.0.77", 3), ("8.2.0.53", 1)]
    assert "(and 2 more files)" in next(f for f in findings if f.version == "8.1.0.77").message


@pytest.mark.parametrize("version", [None, "8.x", ""])
def test_unknown_or_unparsable_version_is_not_evaluable_never_a_pass(version: str | None) -> None:
    (rule,) = pack_of(SEED).rules
    result = evaluate_rule(rule, Stack(items=(Item("component", "cudnn", version, "lib/libcudnn.so"),)))
    assert result.status == NOT_EVALUABLE
    assert "lib/libcudnn.so" in result.reasons[0]


def test_any_version_matches_a_copy_whose_version_is_unknown() -> None:
    (rule,) = pack_of(rule_yaml(affected="""\
        - component: openblas
          versions: "*"
        """)).rules
    unknown = Item("component", "openblas", None, "lib/libopenblas.so.0")
    (finding,) = evaluate_rule(rule, Stack(items=(unknown,))).findings
    assert finding.path == "lib/libopenblas.so.0"


def test_a_decided_copy_wins_over_an_undecided_one() -> None:
    (rule,) = pack_of(SEED).rules
    stack = Stack(items=(Item("component", "cudnn", None, "a/libcudnn.so"),
                         Item("component", "cudnn", "8.1.0.77", "b/libcudnn.so")))
    assert evaluate_rule(rule, stack).status == FIRED


def test_absent_component_passes() -> None:
    (rule,) = pack_of(SEED).rules
    assert evaluate_rule(rule, stack_of_case({"components": {"nccl": "2.18.1"}})).status == PASSED


def test_drafts_and_retired_rules_are_not_evaluated() -> None:
    pack = pack_of(SEED + rule_yaml("draft-one").replace("  severity:", "  status: draft\n  severity:", 1)
                   + rule_yaml("old-one").replace("  severity:", "  status: retired\n  severity:", 1))
    assert [r.rule.id for r in evaluate(Stack(), [pack]).results] == ["seed"]


# -- conditions ---------------------------------------------------------------------------------
WS = {"env": {"name": "CUBLAS_WORKSPACE_CONFIG", "matches": r":[0-9]+:[0-9]+"}}
DETERMINISTIC = {"any": [{"env": {"name": "TF_DETERMINISTIC_OPS", "in": ["1", "true"]}},
                         {"assume": "the code calls enable_op_determinism()"}]}


@pytest.mark.parametrize(("env", "holds", "assumptions"), [
    ({}, True, ("the code calls enable_op_determinism()",)),
    ({"TF_DETERMINISTIC_OPS": "1"}, True, ()),
    ({"TF_DETERMINISTIC_OPS": "0"}, True, ("the code calls enable_op_determinism()",)),
    ({"TF_DETERMINISTIC_OPS": "1", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}, False, ()),
    ({"CUBLAS_WORKSPACE_CONFIG": ":4096:8:16:8"}, True, ("the code calls enable_op_determinism()",)),
])
def test_three_valued_env_and_assumptions(env: dict[str, str], holds: bool, assumptions: tuple) -> None:
    outcome = evaluate_condition({"all": [{"not": WS}, DETERMINISTIC]}, stack_of_case({"env": env}))
    assert (outcome.holds, outcome.assumptions) == (holds, assumptions)


def test_env_evidence_names_the_variable_and_where_it_came_from() -> None:
    stack = Stack(env=(("TF_DETERMINISTIC_OPS", "1"),), env_origin=(("TF_DETERMINISTIC_OPS", "--env"),))
    outcome = evaluate_condition({"env": {"name": "TF_DETERMINISTIC_OPS", "equals": "1"}}, stack)
    assert [(e.source, e.value) for e in outcome.evidence] == [("--env:TF_DETERMINISTIC_OPS",
                                                                "TF_DETERMINISTIC_OPS=1")]
    assert not evaluate_condition({"env": {"name": "X", "set": True}}, stack).holds
    assert evaluate_condition({"env": {"name": "X", "set": False}}, stack).holds
    assert evaluate_condition({"env": {"name": "TF_DETERMINISTIC_OPS", "set": True}}, stack).holds


def test_any_of_two_assumptions_states_both() -> None:
    outcome = evaluate_condition({"any": [{"assume": "a"}, {"assume": "b"}]}, Stack())
    assert outcome.holds and outcome.assumptions == ("one of: a; or b",)
    negated = evaluate_condition({"not": {"assume": "a"}}, Stack())
    assert negated.holds and negated.assumptions == ("not (a)",)


@pytest.mark.parametrize(("arch", "holds"), [(("sm_80",), True), (("sm_90a",), True), (("sm_75",), False),
                                             (("sm_70", "sm_86"), True)])
def test_gpu_arch_given(arch: tuple[str, ...], holds: bool) -> None:
    outcome = evaluate_condition({"gpu_arch": {"min": "sm_80"}}, Stack(gpu_arch=arch))
    assert outcome.holds is holds and outcome.assumptions == ()


def test_gpu_arch_unknown_is_an_assumption_not_a_guess() -> None:
    outcome = evaluate_condition({"gpu_arch": {"min": "sm_80"}}, Stack())
    assert outcome.holds and outcome.assumptions == ("the GPU is sm_80 or newer (no --gpu-arch given)",)


def test_framework_versions_and_built_for() -> None:
    stack = stack_of_case({"frameworks": {"tensorflow": {"version": "2.8.0",
                                                         "built_for": {"cuda": "11.2", "cudnn": "8"}}}})
    cond = {"framework": {"name": "tensorflow", "versions": ">=2.5, <2.11",
                          "built_for": {"cudnn": "==8"}}}
    assert evaluate_condition(cond, stack).holds
    cond["framework"]["built_for"] = {"cuda": ">=11.3"}
    assert not evaluate_condition(cond, stack).holds
    cond["framework"]["built_for"] = {"rocm": "*"}
    assert not evaluate_condition(cond, stack).evaluable
    torch = stack_of_case({"frameworks": {"torch": "2.14.1+cu128"}})
    assert evaluate_condition({"framework": {"name": "torch", "versions": ">=1.12"}}, torch).holds


def test_loads_condition_follows_the_linkage() -> None:
    stack = stack_of_case({"components": {"cudnn": {"version": "8.1.0.77", "loaded_by": ["tensorflow"]}}})
    assert evaluate_condition({"loads": {"component": "cudnn", "by": "tensorflow",
                                         "versions": "<8.2.1"}}, stack).holds
    assert not evaluate_condition({"loads": {"component": "cudnn", "by": "torch"}}, stack).holds
    unresolved = Stack(items=stack.items, linkage_known=False)
    assert not evaluate_condition({"loads": {"component": "cudnn"}}, unresolved).evaluable


def test_packages_match_by_normalised_python_names_and_debian_versions() -> None:
    stack = stack_of_case({"packages": {"python:NVIDIA_cudnn.cu11": "8.9.6.50",
                                        "deb:libcudnn8": "8.1.0.77-1+cuda11.2"}})
    wheel = {"package": {"name": "python:nvidia-cudnn-cu11", "versions": "<9"}}
    assert evaluate_condition(wheel, stack).holds
    assert evaluate_condition({"package": {"name": "deb:libcudnn8",
                                           "versions": ">=8.1.0.77-1, <8.2.1"}}, stack).holds
    assert not evaluate_condition({"package": {"name": "deb:libcudnn8", "versions": "<8.1"}}, stack).holds


def test_labels() -> None:
    stack = stack_of_case({"labels": {"com.nvidia.cudnn.version": "8.1.0.77"}})
    assert evaluate_condition({"label": {"name": "com.nvidia.cudnn.version", "matches": r"8\.1\..*"}},
                              stack).holds
