"""The CI gate: reviewed, expiring ignore entries, and ``--fail-on`` over what remains.

``load_ignore_file`` reads and checks the file (I/O at the edge); ``apply_gate`` is pure: it
takes a report document and gives it ``findings`` without the suppressed ones (plus one
``ignore-expired`` finding per entry past its date, which no longer suppresses), ``suppressed``
(each finding with the entry that covers it) and ``gate`` (the threshold, counts, verdict)."""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from auditor.errors import InputError
from auditor.model import SEVERITIES
from auditor.rules.fetch import read_source
from auditor.rules.yamlsource import Document, YamlProblem

FAIL_ON = ("critical", "high", "medium", "low", "none")
EXPIRED_ID = "ignore-expired"


@dataclass(frozen=True)
class IgnoreEntry:
    rule: str
    reason: str
    expires: datetime.date
    component: str | None = None
    version: str | None = None
    source: str = ""  # FILE:LINE

    def covers(self, finding: dict[str, Any]) -> bool:
        if finding.get("id") != self.rule:
            return False
        if self.component and finding.get("component") != self.component:
            return False
        if self.version:
            version = finding.get("version") or ""
            return version == self.version or version.startswith(self.version + ".")
        return True


@cache
def _schema() -> dict[str, Any]:
    return json.loads(resources.files("auditor").joinpath("schemas/ignore-file.schema.json").read_text())


def load_ignore_file(path: str) -> list[IgnoreEntry]:
    """The entries of an ignore file; a file that fails its schema is an InputError naming
    the file and line."""
    try:
        doc = Document(read_source(path, 1024 * 1024).decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except YamlProblem as err:
        where = f"{path}:{err.line}" if err.line else path
        raise InputError(f"{where}: {err.message}") from None
    errors = doc.schema_errors(_schema())
    if errors:
        raise InputError(f"{path}:{errors[0].line}: {errors[0].message}")
    out = []
    for index, raw in enumerate(doc.data["ignore"]):
        line = doc.line(["ignore", index])
        try:
            expires = datetime.date.fromisoformat(raw["expires"])
        except ValueError:
            raise InputError(f"{path}:{line}: expires {raw['expires']!r} is not a date") from None
        out.append(IgnoreEntry(raw["rule"], raw["reason"], expires, raw.get("component"),
                               raw.get("version"), f"{path}:{line}"))
    return out


def apply_gate(document: dict[str, Any], entries: Sequence[IgnoreEntry], fail_on: str,
               today: datetime.date) -> dict[str, Any]:
    """The document with the ignore entries applied and the gate's verdict (a new dict)."""
    if fail_on not in FAIL_ON:
        raise InputError(f"--fail-on {fail_on}: expected one of {', '.join(FAIL_ON)}")
    live = [e for e in entries if e.expires >= today]
    expired = [e for e in entries if e.expires < today]
    findings, suppressed = [], []
    for finding in document.get("findings") or []:
        entry = next((e for e in live if e.covers(finding)), None)
        if entry is None:
            findings.append(finding)
        else:
            suppressed.append({"finding": finding, "ignore": _entry_json(entry)})
    for entry in expired:
        findings.append({
            "id": EXPIRED_ID, "severity": "low", "component": entry.rule,
            "message": f"the ignore entry for {entry.rule} ({entry.source}) expired on "
                       f"{entry.expires.isoformat()} and no longer suppresses it: review it "
                       f"(reason given: {entry.reason})",
            "path": None, "evidence": [{"kind": "ignore-file", "source": entry.source,
                                        "value": entry.reason, "version": None}]})
    counts = {s: sum(1 for f in findings if f["severity"] == s) for s in reversed(SEVERITIES)}
    failing = [] if fail_on == "none" else [
        f for f in findings if SEVERITIES.index(f["severity"]) >= SEVERITIES.index(fail_on)]
    return {**document, "findings": findings, "suppressed": suppressed,
            "gate": {"fail_on": fail_on, "failed": bool(failing), "failing": len(failing),
                     "counts": counts, "ignore_entries": len(entries), "expired_entries": len(expired)}}


def _entry_json(entry: IgnoreEntry) -> dict[str, Any]:
    return {"rule": entry.rule, "component": entry.component, "version": entry.version,
            "reason": entry.reason, "expires": entry.expires.isoformat(), "source": entry.source}
