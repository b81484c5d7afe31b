"""From a picked release-note item to a draft rule (a dict in the pack format), and the checks
against rules that already exist: never overwrite one, never repeat one."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from auditor.rules.notes.classify import Verdict, hazard_kinds, hazard_of
from auditor.rules.notes.model import (
    DISPLAY,
    GENERIC_PAGES,
    RULE_COMPONENTS,
    Item,
    Release,
    normalize_space,
    version_key,
    words,
)

TITLE_MAX = 90
EFFECT_MAX = 300
ID_MAX = 96
_SLUG_WORDS = 6
_SLUG_CHARS = 48
_ABBREVIATIONS = words("e.g i.e etc vs cf approx no nos fig incl resp al ca ver")
_STOP = words("""a an the and or of to in on at by for with from into onto than per as when where which
    that if is are was were be been being not no but so via under over between across through without
    within while because after before during using used use such its their our we can could may might
    will would should has have had do does this these those there it some any all also now only
    fix fixes fixed fixing issue issues bug bugs problem potential possible rare cause caused causing
    cases case""")
_FIX_VERB_RE = re.compile(r"^(?:fix(?:es|ed)?|work\s*around(?:s|ed)?|resolve[sd]?)\s+(?:(?:a|an|the)\s+)?",
                          re.IGNORECASE)
_FIX_REF_RE = re.compile(r"^(?:fix(?:es|ed)?|resolve[sd]?)\s*(?:(?:github\s*)?(?:issue|pr)\s*)?#\d+\s*:\s*",
                         re.IGNORECASE)
_BUG_NOUN = (r"(?:data\s+corruption|memory\s+corruption|corruption|hangs?|deadlocks?|race\s+conditions?|"
             r"races?|non-?determinism|nondeterministic|wrong|incorrect|inaccurate|numerical)\b")
_QUALIFIER = r"(?!(?:and|or|to|causing|that|which|avoid|prevent|when|with|in|on|for)\b)[\w/+.-]+\s+"
_BUG_NOUN_RE = re.compile(rf"^(?:{_QUALIFIER}){{0,3}}?{_BUG_NOUN}", re.IGNORECASE)
KNOWN_REMEDIATION = ("Check the release notes of later versions for a fix; no fixed version is known to "
                     "this draft.")


def first_sentence(text: str) -> str:
    text = normalize_space(text)
    for match in re.finditer(r"[.!?](?=\s+[A-Z0-9(\"'`\u201c])", text):
        before = text[: match.start()].rsplit(None, 1)
        word = before[-1].lower().lstrip("(\"'") if before else ""
        if word in _ABBREVIATIONS or re.fullmatch(r"[a-z]", word):
            continue
        return text[: match.end()]
    return text


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 3].rsplit(" ", 1)[0].rstrip(",;:-( ")
    return cut + "..."


def _drop_fix_verb(text: str) -> str:
    """"Fix a potential hang with X" -> "Potential hang with X", "Fix #394 : X" -> "X"; "Fix X and
    avoid Y" is left as it is."""
    reference = _FIX_REF_RE.match(text)
    if reference and text[reference.end():]:
        rest = text[reference.end():]
        return rest[:1].upper() + rest[1:]
    match = _FIX_VERB_RE.match(text)
    if match and _BUG_NOUN_RE.match(text[match.end():]):
        rest = text[match.end():]
        return rest[:1].upper() + rest[1:]
    return text


def effect_of(text: str) -> str:
    sentence = _drop_fix_verb(first_sentence(text))
    sentence = _shorten(sentence, EFFECT_MAX)
    return sentence if sentence.endswith((".", "!", "?", "...")) else sentence + "."


def title_of(text: str) -> str:
    clause = first_sentence(text).rstrip(".!? ")
    clause = re.split(r";\s+|\s+[\u2013\u2014]\s+", clause, maxsplit=1)[0]
    return _shorten(_drop_fix_verb(clause), TITLE_MAX)


def slug_of(title: str) -> str:
    tokens = [t for t in re.findall(r"[a-z0-9]+", title.lower())
              if t not in _STOP and (len(t) > 1 or t.isdigit())]
    chosen: list[str] = []
    for token in tokens:
        if len(chosen) == _SLUG_WORDS or len("-".join([*chosen, token])) > _SLUG_CHARS:
            break
        chosen.append(token)
    return "-".join(chosen) or "item"


def base_id(component: str, version: str, title: str) -> str:
    prefix = f"{component}-{version}-"
    return (prefix + slug_of(title))[:ID_MAX].rstrip("-.")


def normalized(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def _section_label(item: Item) -> str:
    if item.section:
        return item.section
    return "commit message" if item.component == "nccl" else "release notes"


def reference_of(item: Item, release: Release) -> tuple[dict[str, str], str | None]:
    """The reference for the draft and, when it is only the component's generic page, why."""
    if item.component == "nccl" and "github.com/NVIDIA/nccl/commit/" in item.source:
        title = f"NCCL {release.version} release notes (release commit {release.title})"
    elif item.component == "cublas":
        title = f"CUDA Toolkit release notes: {release.title}"
    else:
        title = f"{DISPLAY[item.component]} {release.version} release notes ({release.title})"
    if item.source.startswith(("http://", "https://")):
        return {"url": item.source, "title": title}, None
    return ({"url": GENERIC_PAGES[item.component], "title": title},
            f"The reference is {DISPLAY[item.component]}'s generic release-notes page: the notes were "
            f"read from a file with no canonical URL ({item.source}); replace it with the page's address.")


def build_draft(item: Item, verdict: Verdict, release: Release, previous: str | None,
                source: str, rule_id: str) -> dict[str, Any]:
    assert verdict.kind is not None and verdict.severity is not None
    components = list(RULE_COMPONENTS[item.component])
    version = item.version
    if verdict.known:
        affected = [{"component": c, "versions": f"=={version}"} for c in components]
        remediation = KNOWN_REMEDIATION
    else:
        affected = [{"component": c, "versions": f"<{version}", "fixed_in": version} for c in components]
        if item.component == "cublas":
            remediation = f"Upgrade cuBLAS to the version shipped with CUDA Toolkit {version} or later."
        else:
            remediation = f"Upgrade {DISPLAY[item.component]} to {version} or later."
    reference, reference_note = reference_of(item, release)
    notes = [f"Drafted by auditor rules import-notes from {source} ({_section_label(item)}, {version}); "
             "review the affected range and write test cases before setting status: active.",
             f"Picked as: {verdict.kind}."]
    if verdict.known:
        notes.append("Listed as a known issue with no fix in these notes, so the range holds only the "
                     "release(s) that list it.")
    if item.component == "cublas":
        notes.append("The versions are CUDA Toolkit releases (cuBLAS notes are part of the toolkit's); "
                     "convert them to cuBLAS library versions before activating.")
    if item.component == "cuda":
        notes.append("cudart is seen as major.minor in images, so an Update release cannot be told "
                     "from its base release; adjust the range before activating.")
    if reference_note:
        notes.append(reference_note)
    first = components[0]
    if verdict.known:
        tests: dict[str, list[Any]] = {"trigger": [{"components": {first: version}}], "clean": []}
    elif previous is not None:
        tests = {"trigger": [{"components": {first: previous}}], "clean": [{"components": {first: version}}]}
    else:
        tests = {"trigger": [], "clean": []}
    return {
        "id": rule_id,
        "title": title_of(item.text),
        "status": "draft",
        "severity": verdict.severity,
        "confidence": "reported",
        "components": components,
        "affected": affected,
        "effect": effect_of(item.text),
        "remediation": remediation,
        "references": [reference],
        "notes": " ".join(notes),
        "tests": tests,
    }


def add_known_version(draft: dict[str, Any], version: str) -> None:
    """The same known issue listed again by a later release: widen the draft to that release."""
    for entry in draft["affected"]:
        ranges = entry["versions"] if isinstance(entry["versions"], list) else [entry["versions"]]
        if f"=={version}" not in ranges:
            ranges = sorted([*ranges, f"=={version}"], key=lambda r: version_key(r[2:]))
        entry["versions"] = ranges if len(ranges) > 1 else ranges[0]


# --- rules that already exist ---------------------------------------------------------------

def _url_key(url: str) -> str:
    url = url.strip().lower()
    url = re.sub(r"^https?://(?:www\.)?", "", url).rstrip("/")
    return url


def _same_url(a: str, b: str) -> bool:
    ka, kb = _url_key(a), _url_key(b)
    if ka == kb:
        return True
    commit = re.compile(r"^github\.com/([^/]+/[^/]+)/commit/([0-9a-f]{7,40})$")
    ma, mb = commit.match(ka), commit.match(kb)
    if ma and mb and ma[1] == mb[1]:
        short = min(len(ma[2]), len(mb[2]))
        return ma[2][:short] == mb[2][:short]
    return False


# words too common in these notes to tell two bugs apart (kinds of hazard, hardware, products)
_GENERIC = words("""data corrupt corrupts corrupted corruption hang hangs hung race races condition
    conditions wrong incorrect incorrectly results result values nondeterministic nondeterminism
    deterministic reproducible deadlock deadlocks silent silently gpu gpus nic nics system systems
    node nodes one two per less more multi nccl cudnn cublas cublaslt cuda toolkit release version
    operation operations output outputs""")


def _stems(text: str) -> set[str]:
    return {t[:5] for t in re.findall(r"[a-z0-9]+", text.lower())
            if t not in _STOP and t not in _GENERIC and len(t) > 1}


def _kind(text: str) -> str | None:
    hazard = hazard_of(text)
    if hazard is None:
        return None
    return "wrong" if hazard[0] in ("corruption", "wrong results") else hazard[0]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _similar_titles(a: str, b: str) -> bool:
    na, nb = normalized(a), normalized(b)
    return bool(na) and difflib.SequenceMatcher(None, na, nb).ratio() >= 0.85


def _versions_match(draft: Mapping[str, Any], entry: Mapping[str, Any]) -> bool:
    fixed = draft["affected"][0].get("fixed_in")
    if fixed is not None:
        other = entry.get("fixed_in")
        return isinstance(other, str) and version_key(other) == version_key(fixed)
    ranges = entry.get("versions")
    texts = ranges if isinstance(ranges, list) else [ranges]
    known = draft["affected"][0]["versions"]
    known_versions = [r[2:] for r in (known if isinstance(known, list) else [known])]
    return any(isinstance(t, str) and v in t for t in texts for v in known_versions)


def covered_by(draft: Mapping[str, Any], existing: Sequence[Mapping[str, Any]]) -> str | None:
    """The id of an existing rule that already says what the draft says: the same component and
    fixed version (or known-issue release), and a near-identical title or a shared reference plus
    shared distinctive words and no other kind of hazard (a release's URL is shared by all its
    items, so it is not enough alone)."""
    components = set(draft["components"])
    draft_urls = [r["url"] for r in draft["references"]]
    draft_stems = _stems(draft["title"])
    for rule in existing:
        affected = rule.get("affected") or []
        if not any(isinstance(e, Mapping) and e.get("component") in components and _versions_match(draft, e)
                   for e in affected):
            continue
        title = str(rule.get("title", ""))
        if _similar_titles(title, draft["title"]):
            return str(rule.get("id"))
        urls = [r.get("url", "") for r in rule.get("references") or [] if isinstance(r, Mapping)]
        if any(_same_url(u, d) for u in urls for d in draft_urls):
            text = " ".join(_strings([rule.get("title"), rule.get("effect"), rule.get("when")]))
            kinds, kind = hazard_kinds(text), _kind(f"{draft['title']} {draft['effect']}")
            if kinds and kind is not None and kind not in kinds:
                continue  # a hang and a corruption fixed by one release are two bugs
            shared = draft_stems & _stems(f"{text} {rule.get('notes', '')}")
            if (draft_stems and len(shared) >= min(2, len(draft_stems))
                    and len(shared) / len(draft_stems) >= 0.4):
                return str(rule.get("id"))
    return None
