"""Which release-note items describe a hazard worth a draft rule, and how severe it is.

Picked: wrong results, silent data corruption, nondeterminism, hangs and races, in a Fixed /
Resolved / Known Issues / Limitations section, or (NCCL changelogs, which have no such sections)
on any line that fixes something. Skipped, with the reason: features and enhancements,
performance, crashes and errors, build and packaging, and anything else."""

from __future__ import annotations

import re
from dataclasses import dataclass

from auditor.rules.notes.model import Item

_FIXED_SECTION_RE = re.compile(r"\b(?:fixed|resolved|fixes|bug\s*fixes)\b", re.IGNORECASE)
_KNOWN_SECTION_RE = re.compile(r"\b(?:known\s+(?:issues?|limitations?|problems?|bugs?)|limitations?)\b",
                               re.IGNORECASE)
_FIX_LINE_RE = re.compile(r"^(?:fix(?:es|ed)?|work[- ]?around(?:s|ed)?|resolve[sd]?)\b|\bfix(?:es|ed)?\b",
                          re.IGNORECASE)
_FEATURE_START_RE = re.compile(
    r"^(?:adds?|added|supports?|introduc\w+|new|enabl\w+|allows?|improv\w+|extends?|expos\w+|implement\w*|"
    r"optimi[sz]\w*|increas\w+|reduc\w+|decreas\w+|updat\w+|upgrad\w+|uses?|makes?|moves?|remov\w+|"
    r"drops?|deprecat\w+|rework\w*|accelerat\w+|expand\w*|provid\w+|generali[sz]\w+|harmoni[sz]\w+|"
    r"simplif\w+|refactor\w*|renam\w+|change[sd]?|prints?|revert\w*|clean\w*)\b", re.IGNORECASE)

_CORRUPT_RE = re.compile(r"\bcorrupt(?:s|ed|ing|ion|ions)?\b", re.IGNORECASE)
_WRONG_RE = re.compile(
    r"\b(?:wrong|incorrect|inaccurate|erroneous|invalid|bad|garbage)\s+(?:[\w/-]+\s+){0,3}?"
    r"(?:results?|outputs?|values?|answers?|gradients?|data|numbers|computations?|sums?|reductions?)\b"
    r"|\b(?:results?|outputs?|values?|gradients?)\s+(?:\w+\s+){0,3}?(?:wrong|incorrect|inaccurate)\b"
    r"|\b(?:incorrectly|wrongly)\s+(?:computed|calculated|reduced|produced|returned|rounded|scaled|summed|"
    r"written|copied)\b"
    r"|\bNaNs?\b|\bnumerical\s+(?:errors?|issues?|mismatch\w*)"
    r"|\b(?:loss\s+of|lost)\s+(?:accuracy|precision)\b|\baccuracy\s+(?:issues?|problems?|loss|drop|regression)"
    r"|\b(?:only|just)\s+(?:the\s+)?first\s+\w+\s+(?:is|are|was|were)\s+(?:written|computed)"
    r"|\b(?:remaining|rest|others?)\s+(?:\w+\s+){0,2}(?:are|is|were|was|left)\s+(?:\w+\s+){0,2}?"
    r"(?:zero|zeros|zeroes|uninitiali[sz]ed)\b",
    re.IGNORECASE)
_NONDET_RE = re.compile(
    r"\bnon-?determinis\w*|\bnot\s+deterministic|\bnon-?reproducib\w*|\bnot\s+(?:bitwise[- ])?reproducible"
    r"|\birreproducib\w*|\brun[- ]to[- ]run\s+(?:variation|difference|variabilit)\w*"
    r"|\bdifferent\s+results\s+(?:between|across|from|on)\s+(?:runs|repeated|each)", re.IGNORECASE)
_HANG_RE = re.compile(r"\bhang(?:s|ing)?\b|\bhung\b|\bdeadlock\w*|\blivelock\w*|\bstuck\b"
                      r"|\bspinning\s+indefinitely|\bnever\s+(?:returns?|completes?|finish\w*)",
                      re.IGNORECASE)
_RACE_RE = re.compile(r"\brace(?:s|\s+conditions?)?\b|\bdata\s+races?\b"
                      r"|\b(?:missing|improper|insufficient|incorrect|lack\s+of)\s+(?:stream\s+|thread\s+)?"
                      r"synchroni[sz]\w*|\bnot\s+(?:properly\s+)?synchroni[sz]ed|\bnot\s+synced\b|\bthread-?sync",
                      re.IGNORECASE)
_SILENT_RE = re.compile(r"\bsilent(?:ly)?\b", re.IGNORECASE)
_CRASH_RE = re.compile(r"\bcrash\w*|\bsegfault\w*|\bsegmentation\s+fault|\bbus\s+error"
                       r"|\billegal\s+(?:memory\s+)?(?:address|access|instruction)|\bdouble[- ]free|\bleak\w*"
                       r"|\bout[- ]of[- ]memory|\berrors?\b|\bfail\w*|\babort\w*|\bexceptions?\b"
                       r"|\bCUDNN_STATUS_\w+|\bNOT_SUPPORTED\b|\bassert\w*",
                       re.IGNORECASE)
_PERF_RE = re.compile(r"\bperformance\b|\bslow\w*|\bspeed\w*|\blatency\b|\bbandwidth\b|\boptimi[sz]\w*"
                      r"|\bfaster\b|\bthroughput\b|\boverheads?\b|\binitiali[sz]ation\s+time", re.IGNORECASE)
_BUILD_RE = re.compile(r"\bcompil\w*|\bbuild\w*|\bpackag\w*|\blink(?:ing|er|age)\b|\bwarnings?\b|\binstall\w*"
                       r"|\bheaders?\b|\bdocument\w*|\btypos?\b|\bcmake\b|\bmakefile\b|\bgencode\b|\blicen[cs]e\b"
                       r"|\breadme\b|\bdebian\b|\brpm\b", re.IGNORECASE)

_BUILD_FAILURE_RE = re.compile(r"\b(?:build|compil\w*|link(?:ing|er)?|install\w*)\s+(?:failures?|errors?)\b"
                               r"|\bfail\w*\s+to\s+(?:build|compile|link|install)\b", re.IGNORECASE)

WHAT = "not about wrong results/nondeterminism/corruption/hang/race"


@dataclass(frozen=True)
class Verdict:
    """``kind`` (corruption, wrong results, nondeterminism, hang, race) and ``severity`` for a
    picked item; ``reason`` for a skipped one. ``known``: a known issue, not a fix."""

    kind: str | None
    severity: str | None
    known: bool
    reason: str | None = None


def section_kind(section: str | None) -> str | None:
    """'fixed', 'known' or None, from the innermost part of the section path that says."""
    if not section:
        return None
    for part in reversed(section.split(" / ")):
        if _KNOWN_SECTION_RE.search(part):
            return "known"
        if _FIXED_SECTION_RE.search(part):
            return "fixed"
    return None


def hazard_of(text: str) -> tuple[str, str] | None:
    """(kind, severity) of the hazard the text describes, or None."""
    if _CORRUPT_RE.search(text):
        return "corruption", "high"
    if _WRONG_RE.search(text):
        return "wrong results", "high"
    if _NONDET_RE.search(text):
        return "nondeterminism", "high" if _SILENT_RE.search(text) else "medium"
    if _HANG_RE.search(text):
        return "hang", "medium"
    if _RACE_RE.search(text) and not _CRASH_RE.search(text):
        return "race", "medium"
    return None


def hazard_kinds(text: str) -> set[str]:
    """Every kind of hazard the text mentions ("wrong" for corruption and wrong results)."""
    kinds = set()
    if _CORRUPT_RE.search(text) or _WRONG_RE.search(text):
        kinds.add("wrong")
    if _NONDET_RE.search(text):
        kinds.add("nondeterminism")
    if _HANG_RE.search(text):
        kinds.add("hang")
    if _RACE_RE.search(text):
        kinds.add("race")
    return kinds


def classify(item: Item) -> Verdict:
    kind = section_kind(item.section)
    known = kind == "known"
    if kind is None:
        fix_line = item.component == "nccl" and _FIX_LINE_RE.search(item.text) is not None
        if not fix_line:
            where = f"in section '{item.section}'" if item.section else "under no Fixed/Known Issues heading"
            if item.component == "nccl" and _FEATURE_START_RE.match(item.text):
                return Verdict(None, None, False, "a feature or improvement, not a fix or known issue")
            if item.component == "nccl":
                return Verdict(None, None, False, "not a fix or known issue")
            return Verdict(None, None, False,
                           f"{where}: a feature, enhancement or note, not a fixed or known issue")
    hazard = hazard_of(item.text)
    if hazard is not None:
        return Verdict(hazard[0], hazard[1], known)
    if _BUILD_FAILURE_RE.search(item.text):
        reason = f"build, packaging or documentation, {WHAT}"
    elif _CRASH_RE.search(item.text):
        reason = f"a crash or error, {WHAT}"
    elif _PERF_RE.search(item.text):
        reason = f"performance, {WHAT}"
    elif _BUILD_RE.search(item.text):
        reason = f"build, packaging or documentation, {WHAT}"
    else:
        reason = WHAT
    return Verdict(None, None, known, reason)
