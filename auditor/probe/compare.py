"""Classify probe results (pure; no I/O): is a model reproducible, and if not, what explains it.

Input: runs, the runner's ``RunResult`` as JSON plus a ``source`` ("this machine", or the file
name of a baseline), each ``{"run", "variation", "source", "output", "error", ...}``; ``output``
is the payload's JSON (``docs/probe.md``). Output: the probe report document shaped by
``auditor/schemas/probe-report.schema.json``.

Every metric (models: accuracy, loss, weights_digest, predictions_digest; kernels: digest, sum)
is compared across all successful observations (one observation: one run, or one in-process
repeat of it), within each variation group (the repeats of one variation from one source), across
the groups of one source, and across sources for the same variation. A comparison's verdict is
``identical`` (equal digests, bitwise equal floats), ``within-tolerance`` (the range is within
the metric's abs or rel tolerance), ``diverged``, or ``insufficient`` (fewer than two values).
A divergence is explained by the narrowest comparison that shows it: repeats of one variation
(run to run: nondeterminism), else the groups of one source (the variation), else the same
variation on two sources (the machine/environment of a baseline).

Per model, the three reproducibility levels: ``outcome`` (every digest identical), ``analysis``
(accuracy and loss within tolerance), ``interpretation`` (the same conclusion: no two models swap
their order by accuracy beyond tolerance in any run, and every user claim that names the model
holds in every run). Claims are a tiny language parsed here, never evaluated by Python:
``<model>.<accuracy|loss> <op> <model>.<accuracy|loss>|<number>`` with op one of
``> >= < <= == !=``.

Also the cross-checks of a payload against static analysis: :func:`crosscheck_maps` (the files a
run mapped against the files linkage predicted) and :func:`crosscheck_versions` (versions the
frameworks report at run time against the inventory's).
"""

from __future__ import annotations

import fnmatch
import math
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from auditor import __version__
from auditor.errors import InputError

SCHEMA_ID = "https://auditor.invalid/schemas/probe-report.schema.json"
SCHEMA_VERSION = "1"
THIS_MACHINE = "this machine"

MODEL_NUMBERS = ("accuracy", "loss")
MODEL_DIGESTS = ("weights_digest", "predictions_digest")
MODEL_METRICS = (*MODEL_NUMBERS, *MODEL_DIGESTS)
KERNEL_METRICS = ("digest", "sum")
RANK_BY = "accuracy"

VERDICTS = ("insufficient", "identical", "within-tolerance", "diverged")  # from best to worst
_RANK = {v: i for i, v in enumerate(VERDICTS)}
_EPSILON = 1e-12  # slack when comparing a range with a tolerance (0.87 - 0.865 > 0.005 in floats)
_MAX_REPEAT = 100_000
DASH = "\u2013"  # between a range's ends: 0.81\u20130.87


# -- tolerances --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tolerance:
    """How far apart a metric's values may be and still agree: within ``absolute`` or within
    ``relative`` times the larger magnitude. ``pattern`` is a glob over ``<name>.<metric>``."""

    pattern: str
    absolute: float = 0.0
    relative: float = 0.0
    source: str = "user"  # default | user

    def allows(self, low: float, high: float) -> bool:
        spread = high - low
        scale = max(abs(low), abs(high))
        slack = _EPSILON * max(1.0, scale)
        return spread <= self.absolute + slack or spread <= self.relative * scale + slack

    def describe(self) -> str:
        parts = [f"abs {self.absolute:g}" if self.absolute else "",
                 f"rel {self.relative:g}" if self.relative else ""]
        return " or ".join(p for p in parts if p) or "exact"

    def as_dict(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "abs": self.absolute, "rel": self.relative,
                "source": self.source}


DEFAULT_TOLERANCES = (
    Tolerance("*.accuracy", absolute=0.005, source="default"),
    Tolerance("*.loss", relative=1e-6, source="default"),
    Tolerance("*.sum", relative=1e-5, source="default"),
)
EXACT = Tolerance("*", source="default")
_TOLERANCE_HELP = "expected GLOB=abs:NUMBER, GLOB=rel:NUMBER, both (GLOB=abs:0.01,rel:1e-6) or GLOB=exact"


def parse_tolerance(text: str) -> Tolerance:
    """``*.accuracy=abs:0.01``, ``torch.*.loss=rel:1e-5``, ``*.loss=abs:1e-4,rel:1e-6``,
    ``numpy.mlp.accuracy=exact``. An error is one line (:class:`InputError`)."""
    pattern, sep, spec = str(text).partition("=")
    pattern, spec = pattern.strip(), spec.strip()
    if not sep or not pattern or not spec:
        raise InputError(f"tolerance {text!r}: {_TOLERANCE_HELP}")
    if spec == "exact":
        return Tolerance(pattern)
    values: dict[str, float] = {}
    for part in spec.split(","):
        kind, colon, number = part.strip().partition(":")
        if not colon or kind not in ("abs", "rel") or kind in values:
            raise InputError(f"tolerance {text!r}: {_TOLERANCE_HELP}")
        try:
            value = float(number)
        except ValueError:
            raise InputError(f"tolerance {text!r}: {number.strip()!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise InputError(f"tolerance {text!r}: {kind} must be a finite number >= 0")
        values[kind] = value
    return Tolerance(pattern, values.get("abs", 0.0), values.get("rel", 0.0))


def _tolerances(given: Iterable[str | Tolerance | Mapping[str, Any]]) -> list[Tolerance]:
    out = list(DEFAULT_TOLERANCES)
    for item in given:
        if isinstance(item, Tolerance):
            out.append(item)
        elif isinstance(item, Mapping):  # as a report lists them (a baseline's own)
            if item.get("source") == "default":
                continue
            try:
                out.append(Tolerance(str(item["pattern"]), float(item.get("abs", 0.0)),
                                     float(item.get("rel", 0.0))))
            except (KeyError, TypeError, ValueError):
                raise InputError(f"tolerance {item!r}: needs pattern, abs and rel") from None
        else:
            out.append(parse_tolerance(item))
    return out


def tolerance_for(metric_id: str, tolerances: Sequence[Tolerance]) -> Tolerance:
    """The last tolerance whose glob matches (user tolerances come after the defaults)."""
    for tol in reversed(tolerances):
        if fnmatch.fnmatchcase(metric_id, tol.pattern):
            return tol
    return EXACT


# -- claims ------------------------------------------------------------------------------------
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
}
_TOKEN = re.compile(r"\s*(?:(?P<op>>=|<=|==|!=|>|<)|(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
                    r"(?![\w.])|(?P<name>[A-Za-z_][\w.\-]*)|(?P<bad>\S))")
_CLAIM_HELP = ("expected <model>.<metric> <op> <model>.<metric>|<number>, metric accuracy or loss, "
               "op one of > >= < <= == != (e.g. torch.bilstm.accuracy > torch.dense.accuracy)")


@dataclass(frozen=True)
class MetricRef:
    model: str
    metric: str

    def __str__(self) -> str:
        return f"{self.model}.{self.metric}"


@dataclass(frozen=True)
class Claim:
    text: str
    left: MetricRef | float
    op: str
    right: MetricRef | float

    def models(self) -> list[str]:
        return [side.model for side in (self.left, self.right) if isinstance(side, MetricRef)]


def parse_claim(text: str) -> Claim:
    """One claim; anything else is an :class:`InputError` naming the claim."""
    tokens: list[tuple[str, str]] = []
    for match in _TOKEN.finditer(str(text)):
        kind = match.lastgroup or "bad"
        tokens.append((kind, match.group(kind)))
    if len(tokens) != 3 or tokens[1][0] != "op" or any(t[0] == "op" for t in (tokens[0], tokens[2])):
        raise InputError(f"claim {text!r}: {_CLAIM_HELP}")
    sides = [_operand(text, *tokens[0]), _operand(text, *tokens[2])]
    if not any(isinstance(s, MetricRef) for s in sides):
        raise InputError(f"claim {text!r}: compares two numbers; name a model's metric")
    return Claim(" ".join(t[1] for t in tokens), sides[0], tokens[1][1], sides[1])


def _operand(text: str, kind: str, value: str) -> MetricRef | float:
    if kind == "number":
        number = float(value)
        if not math.isfinite(number):
            raise InputError(f"claim {text!r}: {value} is not a finite number")
        return number
    if kind != "name":
        raise InputError(f"claim {text!r}: unexpected {value!r}; {_CLAIM_HELP}")
    model, dot, metric = value.rpartition(".")
    if not dot or not model or metric not in MODEL_NUMBERS or model.endswith(".") \
            or ".." in model:
        raise InputError(f"claim {text!r}: {value!r} is not <model>.accuracy or <model>.loss")
    return MetricRef(model, metric)


# -- observations ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Obs:
    index: int  # into the report's runs
    repeat: int
    label: str
    group: int
    source: str


@dataclass
class _Group:
    source: str
    variation: dict[str, str]
    label: str
    indices: list[int]


@dataclass
class _Item:
    """A model or a kernel: its entries per observation and the runs that lack it."""

    kind: str  # model | kernel
    name: str
    info: dict[str, Any]
    entries: dict[tuple[int, int], dict[str, Any]]
    missing: list[dict[str, Any]]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _variation(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def variation_label(variation: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(variation.items())) or "default"


def _repeat(entry: Mapping[str, Any]) -> int:
    value = entry.get("repeat", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) \
        and 0 <= value < _MAX_REPEAT else 0


class _Runs:
    """The runs, their groups and sources, and every model's and kernel's entries."""

    def __init__(self, runs: Sequence[Mapping[str, Any]]) -> None:
        self.runs: list[dict[str, Any]] = []
        self.groups: list[_Group] = []
        self.sources: list[str] = []
        self.ok: list[int] = []
        self.failures: list[dict[str, Any]] = []
        self.payload_errors: dict[tuple[int, str], str] = {}
        group_of: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        for index, given in enumerate(runs):
            if not isinstance(given, Mapping):
                raise InputError(f"run {index} is not an object")
            run = dict(given)
            run["source"] = str(run.get("source") or THIS_MACHINE)
            run["variation"] = _variation(run.get("variation"))
            if not isinstance(run.get("run"), int) or isinstance(run.get("run"), bool):
                run["run"] = index
            self.runs.append(run)
            source = run["source"]
            if source not in self.sources:
                self.sources.append(source)
            key = (source, tuple(sorted(run["variation"].items())))
            if key not in group_of:
                group_of[key] = len(self.groups)
                label = f"{source} {variation_label(run['variation'])}"
                self.groups.append(_Group(source, run["variation"], label, []))
            self.groups[group_of[key]].indices.append(index)
            run_ref = {"index": index, "run": run.get("run"), "source": source,
                       "variation": run["variation"]}
            output, error = run.get("output"), run.get("error")
            if error is not None or not isinstance(output, Mapping):
                self.failures.append({**run_ref, "where": None,
                                      "error": str(error or "no output from the payload")})
                continue
            self.ok.append(index)
            for problem in output.get("errors") or []:
                if isinstance(problem, Mapping):
                    where = str(problem.get("where") or "payload")
                    self.payload_errors.setdefault((index, where), str(problem.get("error") or ""))
                    self.failures.append({**run_ref, "where": where,
                                          "error": str(problem.get("error") or "")})
        self._group_of = {i: g for g, group in enumerate(self.groups) for i in group.indices}
        self.models = self._items("model", "models")
        self.kernels = self._items("kernel", "kernels")

    def label(self, index: int, repeat: int = 0) -> str:
        run = self.runs[index]
        text = f"{run['source']} #{run['run']}"
        return f"{text} repeat {repeat}" if repeat else text

    def obs(self, index: int, repeat: int) -> _Obs:
        return _Obs(index, repeat, self.label(index, repeat), self._group_of[index],
                    self.runs[index]["source"])

    def _items(self, kind: str, key: str) -> list[_Item]:
        items: dict[str, _Item] = {}
        for index in self.ok:
            entries = self.runs[index]["output"].get(key)
            for entry in entries if isinstance(entries, list) else []:
                if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
                    continue
                name = entry["name"]
                if name not in items:
                    info = {k: entry[k] for k in ("framework", "kind", "dtype", "shape")
                            if k in entry and isinstance(entry[k], str | list)}
                    items[name] = _Item(kind, name, info, {}, [])
                items[name].entries.setdefault((index, _repeat(entry)), dict(entry))
        for item in items.values():
            present = {index for index, _ in item.entries}
            for index in self.ok:
                if index not in present and self.expects(index, kind, item.name):
                    item.missing.append({"index": index, "label": self.label(index),
                                         "error": self.payload_errors.get((index, item.name))})
        return sorted(items.values(), key=lambda i: i.name)

    def expects(self, index: int, kind: str, name: str) -> bool:
        """Whether run ``index`` was asked to run the model or kernel (its config as applied)."""
        config = self.runs[index]["output"].get("config")
        if not isinstance(config, Mapping):
            config = self.runs[index].get("config")  # the runner's, when the payload left it out
        if not isinstance(config, Mapping):
            return True
        if kind == "kernel":
            return config.get("kernels") is not False
        models = config.get("models")
        return not isinstance(models, list) or name in models

    def known_models(self) -> set[str]:
        return {m.name for m in self.models} | {where for _, where in self.payload_errors}


# -- comparisons -------------------------------------------------------------------------------
def _worst(verdicts: Iterable[str]) -> str:
    return max(verdicts, key=lambda v: _RANK[v], default="insufficient")


def compare_values(values: Sequence[Any], numeric: bool, tolerance: Tolerance | None) -> dict[str, Any]:
    """The verdict and statistics of one set of values (digests, or numbers under a tolerance)."""
    count = len(values)
    out: dict[str, Any] = {"count": count}
    if numeric:
        distinct = len({float(v).hex() for v in values})
        finite = [float(v) for v in values if math.isfinite(v)]
        low = min(finite) if finite else None
        high = max(finite) if finite else None
        spread = scale = None
        if low is not None and high is not None:
            spread, scale = high - low, max(abs(low), abs(high))
        out.update({"distinct": distinct, "min": low, "max": high, "range": spread,
                    "relative_range": None if spread is None else spread / scale if scale else 0.0})
        if count < 2:
            verdict = "insufficient"
        elif distinct == 1:
            verdict = "identical"
        elif len(finite) == count and tolerance is not None and low is not None and high is not None \
                and tolerance.allows(low, high):
            verdict = "within-tolerance"
        else:
            verdict = "diverged"
    else:
        distinct = len(set(values))
        out["distinct"] = distinct
        verdict = "insufficient" if count < 2 else "identical" if distinct == 1 else "diverged"
    out["verdict"] = verdict
    return out


class _Context:
    def __init__(self, runs: _Runs, tolerances: Sequence[Tolerance]) -> None:
        self.runs = runs
        self.tolerances = tolerances
        self.reference = runs.sources[0] if runs.sources else THIS_MACHINE


def _metric(ctx: _Context, item: _Item, metric: str) -> dict[str, Any]:
    numeric = metric in MODEL_NUMBERS or metric == "sum"
    metric_id = f"{item.name}.{metric}"
    tol = tolerance_for(metric_id, ctx.tolerances) if numeric else None
    points: list[tuple[_Obs, Any]] = []
    missing = [dict(m) for m in item.missing]
    for (index, repeat), entry in sorted(item.entries.items()):
        value = entry.get(metric)
        if (numeric and _is_number(value)) or (not numeric and isinstance(value, str) and value):
            points.append((ctx.runs.obs(index, repeat), value))
        else:
            missing.append({"index": index, "label": ctx.runs.label(index, repeat),
                            "error": entry.get("error") if isinstance(entry.get("error"), str)
                            else f"no {metric} recorded"})

    def cmp(pts: Iterable[tuple[_Obs, Any]]) -> dict[str, Any]:
        return compare_values([v for _, v in pts], numeric, tol)

    by_group: dict[int, list[tuple[_Obs, Any]]] = {}
    for point in points:
        by_group.setdefault(point[0].group, []).append(point)
    groups = [{"group": g, "label": ctx.runs.groups[g].label, **cmp(pts)}
              for g, pts in sorted(by_group.items())]
    across_variations = []
    for source in ctx.runs.sources:
        mine = [g for g in by_group if ctx.runs.groups[g].source == source]
        if len(mine) > 1:
            variations = [ctx.runs.groups[g].variation for g in mine]
            keys = sorted({k for v in variations for k in v})
            differs = [k for k in keys if len({v.get(k) for v in variations}) > 1]
            across_variations.append({
                "source": source, "groups": sorted(mine), "differs_in": differs,
                "labels": [variation_label(ctx.runs.groups[g].variation) for g in sorted(mine)],
                **cmp(p for g in mine for p in by_group[g])})
    across_sources = []
    for source in ctx.runs.sources[1:]:
        for g in sorted(by_group):
            if ctx.runs.groups[g].source != source:
                continue
            same = [r for r in by_group if ctx.runs.groups[r].source == ctx.reference
                    and ctx.runs.groups[r].variation == ctx.runs.groups[g].variation]
            if same:
                across_sources.append({
                    "source": source, "reference": ctx.reference,
                    "variation": ctx.runs.groups[g].variation, "groups": [*same, g],
                    **cmp([*by_group[same[0]], *by_group[g]])})
    overall = cmp(points)
    out: dict[str, Any] = {
        "id": metric_id, "metric": metric, "type": "number" if numeric else "digest",
        "tolerance": tol.as_dict() if tol is not None else None,
        "values": [{"index": o.index, "repeat": o.repeat, "label": o.label, "group": o.group,
                    "value": v} for o, v in points],
        "missing": missing,
        **overall,
        "groups": groups, "across_variations": across_variations, "across_sources": across_sources,
    }
    out["explained_by"] = _explain(ctx, out, by_group)
    return out


def _explain(ctx: _Context, metric: dict[str, Any], by_group: dict[int, list[Any]]) -> list[dict[str, Any]]:
    level = metric["verdict"]
    if level in ("identical", "insufficient"):
        return []
    within = [g for g in metric["groups"] if g["verdict"] == level]
    if within:
        phrase = "run to run (nondeterminism)" if level == "diverged" else \
            "run to run (nondeterminism within tolerance)"
        return [{"factor": "run-to-run", "verdict": level, "description": phrase,
                 "detail": f"repeats of the same variation differ: "
                           f"{', '.join(g['label'] for g in within)}"}]
    repeated = any(len(pts) > 1 for pts in by_group.values())
    caveat = "" if repeated else \
        "; no variation was repeated, so run-to-run nondeterminism is not ruled out"
    out: list[dict[str, Any]] = []
    for across in metric["across_variations"]:
        if across["verdict"] == level:
            what = " vs ".join(across["labels"]) if len(across["labels"]) <= 4 \
                else ", ".join(across["differs_in"])
            out.append({"factor": "variation", "verdict": level,
                        "description": f"the variation ({what})",
                        "detail": f"on {across['source']}, repeats of each variation agree but the "
                                  f"variations differ ({', '.join(across['differs_in']) or 'variation'})"
                                  + caveat})
    for source in ctx.runs.sources[1:]:
        hits = [a for a in metric["across_sources"] if a["source"] == source and a["verdict"] == level]
        if hits:
            out.append({"factor": "environment", "verdict": level,
                        "description": f"the machine/environment (baseline {source})",
                        "detail": f"the same variation ("
                                  f"{', '.join(variation_label(a['variation']) for a in hits)}) "
                                  f"differs between {ctx.reference} and {source}" + caveat})
    if not out:
        out.append({"factor": "confounded", "verdict": level,
                    "description": "the variation and the machine/environment together",
                    "detail": "no comparison of one factor alone shows the difference: the sources "
                              "did not run the same variations" + caveat})
    return out


# -- levels, ranking, claims -------------------------------------------------------------------
def _value(item: _Item | None, key: tuple[int, int], metric: str) -> float | None:
    if item is None:
        return None
    value = item.entries.get(key, {}).get(metric)
    return float(value) if _is_number(value) else None


def _ranking(ctx: _Context) -> dict[str, Any]:
    keys = sorted({key for m in ctx.runs.models for key in m.entries})
    per_run = []
    for key in keys:
        present = sorted(((v, m.name) for m in ctx.runs.models
                          if (v := _value(m, key, RANK_BY)) is not None and math.isfinite(v)),
                         key=lambda p: (-p[0], p[1]))
        order = ""
        for i, (value, name) in enumerate(present):
            order += name if i == 0 else f" {'=' if value == present[i - 1][0] else '>'} {name}"
        per_run.append({"index": key[0], "repeat": key[1], "label": ctx.runs.label(*key),
                        "order": order})
    reversals = []
    for a, b in combinations(ctx.runs.models, 2):
        tol_a = tolerance_for(f"{a.name}.{RANK_BY}", ctx.tolerances)
        tol_b = tolerance_for(f"{b.name}.{RANK_BY}", ctx.tolerances)
        a_higher, b_higher = [], []
        for key in keys:
            va, vb = _value(a, key, RANK_BY), _value(b, key, RANK_BY)
            if va is None or vb is None or not (math.isfinite(va) and math.isfinite(vb)):
                continue
            low, high = min(va, vb), max(va, vb)
            if va == vb or tol_a.allows(low, high) or tol_b.allows(low, high):
                continue
            (a_higher if va > vb else b_higher).append(ctx.runs.label(*key))
        if a_higher and b_higher:
            reversals.append({"models": [a.name, b.name], "first_higher": a_higher,
                              "second_higher": b_higher})
    orders = {r["order"] for r in per_run}
    return {"metric": RANK_BY, "per_run": per_run, "same_order": len(orders) <= 1,
            "reversals": reversals}


def _evaluate_claim(ctx: _Context, claim: Claim) -> dict[str, Any]:
    known = ctx.runs.known_models()
    for model in claim.models():
        if model not in known:
            raise InputError(f"claim {claim.text!r}: no model {model!r} in the runs (models: "
                             f"{', '.join(sorted(known)) or 'none'})")
    items = {m.name: m for m in ctx.runs.models}
    keys = sorted(key for key in {key for name in claim.models() if name in items
                                  for key in items[name].entries} | {(i, 0) for i in ctx.runs.ok}
                  if all(ctx.runs.expects(key[0], "model", name) for name in claim.models()))
    results = []
    for key in keys:
        sides = [side if isinstance(side, float) else _value(items.get(side.model), key, side.metric)
                 for side in (claim.left, claim.right)]
        left, right = sides
        value = None if left is None or right is None else OPERATORS[claim.op](left, right)
        results.append({"index": key[0], "repeat": key[1], "label": ctx.runs.label(*key),
                        "left": sides[0], "right": sides[1], "value": value})
    false = [r for r in results if r["value"] is False]
    unknown = [r for r in results if r["value"] is None]
    holds = bool(results) and not false and not unknown
    if not results:
        evidence = "no successful run to evaluate it on"
    elif holds:
        evidence = f"true in all {len(results)} runs"
    else:
        true = len(results) - len(false) - len(unknown)
        parts = [f"false in {len(false)} of {len(results)} runs" if false
                 else f"true in {true} of {len(results)} runs"]
        parts += [f"{r['label']}: {r['left']:.6g} {claim.op} {r['right']:.6g} is false"
                  for r in false[:3]]
        if unknown:
            parts.append(f"cannot be evaluated in {', '.join(r['label'] for r in unknown[:3])}"
                         f"{' …' if len(unknown) > 3 else ''} (a model is missing)")
        evidence = "; ".join(parts)
    return {"claim": claim.text, "left": _side(claim.left), "op": claim.op,
            "right": _side(claim.right), "holds": holds, "evidence": evidence, "results": results}


def _side(side: MetricRef | float) -> str | float:
    return str(side) if isinstance(side, MetricRef) else side


def _levels(ctx: _Context, item: _Item, metrics: dict[str, dict[str, Any]], ranking: dict[str, Any],
            claims: list[dict[str, Any]], parsed: list[Claim]) -> dict[str, Any]:
    observations = max((m["count"] for m in metrics.values()), default=0)

    def level(names: Sequence[str], ok: tuple[str, ...]) -> dict[str, Any]:
        evidence, holds = [], True
        for name in names:
            m = metrics[name]
            if m["missing"]:
                holds = False
                evidence.append(f"{name}: missing in {len(m['missing'])} of "
                                f"{m['count'] + len(m['missing'])} runs")
            elif m["verdict"] == "insufficient":
                evidence.append(f"{name}: {m['count']} value(s), nothing to compare")
            else:
                holds = holds and m["verdict"] in ok
                evidence.append(f"{name}: {_verdict_text(m)}")
        return {"holds": None if holds and observations < 2 else holds, "evidence": evidence}

    outcome = level(MODEL_DIGESTS, ("identical",))
    analysis = level(MODEL_NUMBERS, ("identical", "within-tolerance"))
    evidence, holds = [], True
    mine = [r for r in ranking["reversals"] if item.name in r["models"]]
    for r in mine:
        holds = False
        other = r["models"][1] if r["models"][0] == item.name else r["models"][0]
        evidence.append(f"its order by {RANK_BY} against {other} reverses beyond tolerance "
                        f"({r['models'][0]} higher in {len(r['first_higher'])} runs, "
                        f"{r['models'][1]} in {len(r['second_higher'])})")
    if not mine:
        evidence.append(f"no reversal of its order by {RANK_BY} against another model"
                        if len(ctx.runs.models) > 1 else "the only model: its ranking is trivial")
    for claim, result in zip(parsed, claims, strict=True):
        if item.name in claim.models():
            holds = holds and result["holds"]
            evidence.append(f"{claim.text}: {result['evidence']}")
    if metrics[RANK_BY]["missing"]:
        holds = False
        missing = len(metrics[RANK_BY]["missing"])
        evidence.append(f"{RANK_BY} missing in {missing} of {metrics[RANK_BY]['count'] + missing} runs")
    interpretation = {"holds": None if holds and observations < 2 else holds, "evidence": evidence}
    return {"outcome": outcome, "analysis": analysis, "interpretation": interpretation}


# -- words -------------------------------------------------------------------------------------
def _percent(fraction: float) -> str:
    points = fraction * 100
    return f"{points:.1f} %" if points >= 0.1 or points == 0 else f"{points:.2g} %"


def _verdict_text(m: dict[str, Any]) -> str:
    if m["type"] == "digest":
        if m["verdict"] == "identical":
            return "identical"
        return f"{m['distinct']} distinct values in {m['count']} runs"
    if m["verdict"] == "identical":
        return "identical"
    if m["min"] is None:
        return f"{m['verdict']} (no finite value)"
    spread = _percent(m["range"]) if m["metric"] == "accuracy" else f"{m['relative_range']:.2g} relative"
    text = f"range {spread} ({m['min']:.4g}{DASH}{m['max']:.4g})"
    if m["verdict"] == "within-tolerance":
        return f"within tolerance ({text}, {m['tolerance']['pattern']}: {_describe_tol(m)})"
    if any(not math.isfinite(v["value"]) for v in m["values"]):
        text += ", not all finite"
    return f"diverged ({text})"


def _describe_tol(m: dict[str, Any]) -> str:
    t = m["tolerance"]
    return Tolerance(t["pattern"], t["abs"], t["rel"]).describe()


def _because(metric: dict[str, Any]) -> str:
    words = []
    for f in metric["explained_by"]:
        words.append("run to run (nondeterminism)" if f["factor"] == "run-to-run"
                     else f"by {f['description']}")
    return " and ".join(words)


def _model_summary(item: _Item, metrics: dict[str, dict[str, Any]], runs: int) -> str:
    head = f"{item.name}:"
    missing = max(len(m["missing"]) for m in metrics.values())
    tail = f"; missing or failed in {missing} of {runs} runs" if missing else ""
    counted = max(m["count"] for m in metrics.values())
    worst = _worst(m["verdict"] for m in metrics.values())
    if counted < 2:
        return f"{head} {counted} successful run(s), nothing to compare{tail}"
    if worst == "identical":
        return f"{head} identical across {counted} runs{tail}"
    acc = metrics["accuracy"]
    first = next(metrics[n] for n in ("accuracy", "loss", "predictions_digest", "weights_digest")
                 if metrics[n]["verdict"] == worst)
    parts = []
    if acc["verdict"] in ("within-tolerance", "diverged") and acc["range"] is not None:
        parts.append(f"accuracy range {_percent(acc['range'])} ({acc['min']:.4g}{DASH}{acc['max']:.4g})")
    elif acc["verdict"] == "identical":
        parts.append("accuracy identical")
    for name in ("predictions_digest", "weights_digest"):
        if metrics[name]["verdict"] == "diverged":
            parts.append(f"{metrics[name]['distinct']} distinct {name.replace('_', ' ')}s")
            break
    if first["metric"] == "loss" and acc["verdict"] != "diverged":
        parts.append(f"loss {_verdict_text(first)}")
    word = "diverged" if worst == "diverged" else "within tolerance"
    because = _because(first)
    return f"{head} {', '.join(parts)} across {counted} runs: {word}" \
           f"{' ' + because if because else ''}{tail}"


def _kernel_summary(kernels: list[dict[str, Any]]) -> str | None:
    if not kernels:
        return None
    verdicts = [(k["name"], k["metrics"]["digest"]) for k in kernels]
    same = [n for n, m in verdicts if m["verdict"] in ("identical", "insufficient")]
    other = [f"{n} {'diverged' if m['verdict'] == 'diverged' else m['verdict']}"
             f"{' ' + _because(m) if m['explained_by'] else ''}" for n, m in verdicts
             if m["verdict"] not in ("identical", "insufficient")]
    counted = max(m["count"] for _, m in verdicts)
    text = f"kernels: {len(same)} of {len(kernels)} with identical digests across {counted} runs"
    return text + (f"; {'; '.join(other)}" if other else "")


# -- the document ------------------------------------------------------------------------------
def classify(runs: Sequence[Mapping[str, Any]], *, image: Mapping[str, Any] | None = None,
             tolerances: Iterable[str | Tolerance | Mapping[str, Any]] = (),
             claims: Iterable[str] = (), notes: Iterable[str] = ()) -> dict[str, Any]:
    """The probe report document from runs (this machine's first, then any baselines').

    ``tolerances``: ``GLOB=abs:X`` strings (or :class:`Tolerance`), after the defaults; the last
    match wins. ``claims``: user claims for the interpretation level. Bad input: InputError."""
    parsed_claims = [parse_claim(c) for c in claims]
    tols = _tolerances(tolerances)
    data = _Runs(runs)
    ctx = _Context(data, tols)
    ranking = _ranking(ctx)
    claim_results = [_evaluate_claim(ctx, c) for c in parsed_claims]
    models, summary = [], []
    if data.failures:
        failed = [f for f in data.failures if f["where"] is None]
        if failed:
            summary.append(f"{len(failed)} of {len(data.runs)} runs failed: "
                           + "; ".join(f"{data.label(f['index'])}: {f['error']}" for f in failed[:3])
                           + (" …" if len(failed) > 3 else ""))
    for item in data.models:
        metrics = {name: _metric(ctx, item, name) for name in MODEL_METRICS}
        model_summary = _model_summary(item, metrics, len(data.ok))
        summary.append(model_summary)
        models.append({"name": item.name, **item.info, "metrics": metrics,
                       "verdict": _worst(m["verdict"] for m in metrics.values()),
                       "levels": _levels(ctx, item, metrics, ranking, claim_results, parsed_claims),
                       "summary": model_summary})
    kernels = []
    for item in data.kernels:
        metrics = {name: _metric(ctx, item, name) for name in KERNEL_METRICS}
        kernels.append({"name": item.name, **item.info, "metrics": metrics,
                        "verdict": _worst(m["verdict"] for m in metrics.values())})
    kernel_line = _kernel_summary(kernels)
    if kernel_line:
        summary.append(kernel_line)
    if not data.ok:
        summary.append("no successful run: nothing to compare")
    for result in claim_results:
        summary.append(f"claim {result['claim']}: {'holds' if result['holds'] else 'does not hold'}"
                       f" ({result['evidence']})")
    image = dict(image or {})
    return {
        "schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "auditor_version": __version__,
        "image": {"reference": image.get("reference"), "digest": image.get("digest"),
                  **{k: v for k, v in image.items() if k not in ("reference", "digest")}},
        "notes": list(notes),
        "counts": {"runs": len(data.runs), "successful": len(data.ok),
                   "failed": len(data.runs) - len(data.ok), "sources": len(data.sources),
                   "groups": len(data.groups)},
        "sources": data.sources,
        "reference_source": ctx.reference,
        "groups": [{"source": g.source, "variation": g.variation, "label": g.label,
                    "runs": g.indices} for g in data.groups],
        "runs": data.runs,
        "failures": data.failures,
        "tolerances": [t.as_dict() for t in tols],
        "models": models,
        "kernels": kernels,
        "interpretation": {"ranking": ranking, "claims": claim_results},
        "summary": summary,
    }


# -- baselines ---------------------------------------------------------------------------------
def load_baseline(doc: Any, *, name: str = "baseline", digest: str | None = None,
                  force: bool = False) -> list[dict[str, Any]]:
    """The runs of an earlier probe report, checked, with ``source`` set to ``name`` (to
    ``name: source`` when the report itself merged several sources). ``digest``: this probe's
    image digest; a baseline of another image is refused unless ``force``."""
    if not isinstance(doc, Mapping) or doc.get("schema") != SCHEMA_ID:
        schema = doc.get("schema") if isinstance(doc, Mapping) else type(doc).__name__
        raise InputError(f"{name} is not an auditor probe report (schema {schema!r})")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"{name} has schema_version {doc.get('schema_version')!r}; this auditor "
                         f"reads version {SCHEMA_VERSION}")
    theirs = (doc.get("image") or {}).get("digest") if isinstance(doc.get("image"), Mapping) else None
    if digest and theirs and theirs != digest and not force:
        raise InputError(f"baseline {name} is of image {theirs}, this is {digest}; "
                         f"compare anyway with --force")
    runs = doc.get("runs")
    if not isinstance(runs, list):
        raise InputError(f"{name}: runs is not a list")
    sources = {str(r.get("source") or THIS_MACHINE) for r in runs if isinstance(r, Mapping)}
    out = []
    for k, run in enumerate(runs):
        if not isinstance(run, Mapping) or not isinstance(run.get("run"), int) \
                or not isinstance(run.get("variation", {}), Mapping) \
                or not isinstance(run.get("output"), Mapping | None) \
                or not isinstance(run.get("error"), str | None):
            raise InputError(f"{name}: run {k} is malformed (needs run, variation, output, error)")
        source = str(run.get("source") or THIS_MACHINE)
        out.append({**run, "source": name if len(sources) <= 1 else f"{name}: {source}"})
    return out


def compare_reports(reports: Sequence[Mapping[str, Any]], force: bool = False, *,
                    names: Sequence[str] | None = None,
                    tolerances: Iterable[str | Tolerance | Mapping[str, Any]] | None = None,
                    claims: Iterable[str] | None = None) -> dict[str, Any]:
    """``auditor probe compare A.json B.json …``: the runs of every report (source: its name, the
    file name), classified together; the first report is the reference. Without ``tolerances``
    or ``claims``, the first report's own are used."""
    if not reports:
        raise InputError("nothing to compare: give at least one probe report")
    names = list(names) if names is not None else [f"report {k + 1}" for k in range(len(reports))]
    if len(names) != len(reports):
        raise InputError("one name per report")
    if len(set(names)) != len(names):
        raise InputError(f"two reports have the same name: {', '.join(names)}")
    runs = load_baseline(reports[0], name=names[0])
    first = reports[0]
    image = dict(first.get("image") or {})
    digest = image.get("digest")
    notes = []
    for report, name in zip(reports[1:], names[1:], strict=True):
        runs += load_baseline(report, name=name, digest=digest, force=force)
        theirs = (report.get("image") or {}).get("digest")
        if digest and theirs and theirs != digest:
            notes.append(f"{name} is of another image ({theirs}, {names[0]} is {digest}); "
                         f"compared anyway (--force): differences may come from the image")
        elif not (digest and theirs):
            notes.append(f"{name}: the image digest of {'it' if not theirs else names[0]} is unknown; "
                         f"it may be another image")
    if tolerances is None:
        tolerances = [t for t in first.get("tolerances") or [] if isinstance(t, Mapping)]
    if claims is None:
        found = (first.get("interpretation") or {}).get("claims") or []
        claims = [c["claim"] for c in found if isinstance(c, Mapping) and isinstance(c.get("claim"), str)]
    return classify(runs, image=image, tolerances=tolerances, claims=claims, notes=notes)


# -- cross-checks against static analysis ------------------------------------------------------
def _norm(path: str) -> str:
    return posixpath.normpath("/" + str(path).lstrip("/"))


def _component_of(path: str) -> str | None:
    from auditor.inventory.numeric import classify as classify_library  # the classifiers' table

    found = classify_library(path)
    return found.name if found else None


def crosscheck_maps(predicted: Mapping[str, Iterable[str]], mapped: Iterable[str], *,
                    needed_by: Mapping[str, Iterable[str]] | None = None,
                    frameworks_used: Iterable[str] = (),
                    in_image: Iterable[str] | None = None,
                    component_of: Callable[[str], str | None] | None = None) -> list[dict[str, Any]]:
    """Findings where the files a run mapped (``environment.maps``) disagree with what static
    linkage predicted (component -> files; root-relative or absolute, after symlinks).

    A numeric library mapped from another file than the one linkage predicted for its component,
    while the predicted one was not mapped (another directory won: LD_LIBRARY_PATH, LD_PRELOAD, a
    dlopen by full path), is a finding; so is a component predicted but not mapped at all, when
    a framework that needs it (``needed_by``: component -> frameworks) ran (``frameworks_used``).
    A further copy mapped beside the predicted one, or a copy of a component nothing was
    predicted for, is a finding only when it is not a file of the image (``in_image``: the
    inventory's library paths; None: unknown, so every such copy is one): the image's own copies
    are loaded by code the linkage does not follow (NumPy's bundled OpenBLAS, a dlopen).
    ``component_of``: file -> component (default: the inventory's classifiers)."""
    which = component_of or _component_of
    known = None if in_image is None else {_norm(p) for p in in_image}
    mapped_files = sorted({_norm(p) for p in mapped if isinstance(p, str) and p})
    by_component: dict[str, list[str]] = {}
    for path in mapped_files:
        component = which(path)
        if component:
            by_component.setdefault(component, []).append(path)
    used = set(frameworks_used)
    findings = []
    for component in sorted(set(predicted) | set(by_component)):
        want = sorted({_norm(p) for p in predicted.get(component) or ()})
        have = by_component.get(component, [])
        other = [p for p in have if p not in want]
        if other and (not want or len(other) < len(have)):  # the prediction won, or there was none
            other = [p for p in other if known is None or p not in known]
        if other:
            expected = ", ".join(want) if want else "no copy of it"
            loaded = "also loaded" if len(other) < len(have) else "loaded"
            findings.append({
                "id": "probe-linkage-mismatch", "severity": "medium", "component": component,
                "message": f"{component} was {loaded} at run time from {', '.join(other)}, but static "
                           f"linkage predicted {expected} (LD_LIBRARY_PATH, LD_PRELOAD or a dlopen "
                           f"by full path can explain it)",
                "locations": [*other, *want]})
        elif want and not have:
            users = sorted(set((needed_by or {}).get(component) or ()) & used)
            if users:
                findings.append({
                    "id": "probe-linkage-mismatch", "severity": "medium", "component": component,
                    "message": f"static linkage predicted {component} from {', '.join(want)}, but "
                               f"it was not mapped although {', '.join(users)} ran",
                    "locations": want})
    return findings


def int_version(value: int) -> str:
    """A library's integer version code as text: cuDNN < 9 and NCCL < 2.9 encode
    major*1000+minor*100+patch (8902: 8.9.2), later ones major*10000+minor*100+patch (90100)."""
    if value >= 10000:
        return f"{value // 10000}.{value % 10000 // 100}.{value % 100}"
    return f"{value // 1000}.{value % 1000 // 100}.{value % 100}"


def _runtime_version(value: Any) -> str | None:
    if _is_number(value) and float(value).is_integer() and value > 0:
        return int_version(int(value))
    if isinstance(value, list | tuple) and value and all(isinstance(v, int) for v in value):
        return ".".join(str(v) for v in value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit() and len(text) >= 4:
            return int_version(int(text))
        if re.fullmatch(r"\d+(?:\.\d+)*(?:[+.\-]\S*)?", text):
            return text
    return None


def _parts(version: str) -> list[str]:
    return re.findall(r"\d+", version.split("+")[0])


def versions_agree(runtime: str, inventory: str) -> bool:
    """Equal in every part both name (12.1 agrees with 12.1.105; 8.9.2 not with 8.9.7.29)."""
    a, b = _parts(runtime), _parts(inventory)
    n = min(len(a), len(b))
    return n > 0 and [int(x) for x in a[:n]] == [int(x) for x in b[:n]]


_OPENBLAS = re.compile(r"openblas\D{0,20}?(\d+\.\d+\.\d+)", re.IGNORECASE)


def crosscheck_versions(inventory_versions: Mapping[str, str | Sequence[str] | None],
                        runtime: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Findings where a framework's run-time report (the payload's ``environment.frameworks``)
    disagrees with the versions the inventory read from the files (component -> version, or
    versions when there are several copies: a finding only when none agrees)."""
    claims: list[tuple[str, str, str, str]] = []  # component, runtime version, who says, as said
    for framework in ("torch", "tensorflow", "jax", "numpy"):
        info = runtime.get(framework) if isinstance(runtime, Mapping) else None
        if not isinstance(info, Mapping):
            continue
        version = _runtime_version(info.get("version")) if isinstance(info.get("version"), str) else None
        if version:
            claims.append((framework, version, framework, str(info.get("version"))))
        if framework == "torch":
            for key, component in (("cudnn", "cudnn"), ("nccl", "nccl"), ("cuda", "cudart")):
                said = _runtime_version(info.get(key))
                if said:
                    claims.append((component, said, f"torch ({key})", str(info.get(key))))
        if framework == "tensorflow" and isinstance(info.get("build_info"), Mapping):
            for key, component in (("cudnn_version", "cudnn"), ("cuda_version", "cudart")):
                said = _runtime_version(info["build_info"].get(key))
                if said:
                    claims.append((component, said, f"tensorflow (build_info {key})",
                                   str(info["build_info"].get(key))))
        if framework == "numpy" and isinstance(info.get("blas"), str):
            match = _OPENBLAS.search(info["blas"])
            if match:
                claims.append(("openblas", match.group(1), "numpy (blas)", match.group(1)))
    findings = []
    for component, said, who, raw in claims:
        known = inventory_versions.get(component)
        versions = [known] if isinstance(known, str) else [v for v in known or () if isinstance(v, str)]
        versions = [v for v in versions if _parts(v)]
        if not versions or any(versions_agree(said, v) for v in versions):
            continue
        shown = said if said == raw else f"{said} ({raw})"
        findings.append({
            "id": "probe-version-mismatch", "severity": "medium", "component": component,
            "message": f"{who} reports {component} {shown} at run time, but the inventory found "
                       f"{component} {', '.join(versions)}: the run loads another copy than the one "
                       f"inventoried, or one of them misreads it",
            "locations": []})
    return findings
