"""Adding draft rules to an existing pack file without rewriting what is there: the drafts are
appended to its `rules:` list as text, and the result must parse as the old rules plus the new."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import yaml

from auditor.errors import InputError
from auditor.rules.pack import parse_pack

_ITEM_RE = re.compile(r"^(?P<indent>[ ]*)- ", re.MULTILINE)


def append_drafts(text: str, drafts: Sequence[dict[str, Any]], source: str) -> str:
    """``text`` (a pack) with ``drafts`` appended to its rules; raises InputError when the file's
    shape does not allow it (its ``rules:`` list is not the last block, or is written inline)."""
    before, problems = parse_pack(text.encode(), source)
    if before is None:
        raise InputError(f"cannot extend {source}: {problems[0]}")
    match = re.search(r"^rules:[ \t]*(#.*)?$", text, re.MULTILINE)
    items = _ITEM_RE.search(text, match.end()) if match else None
    indent = items["indent"] if items else "  "
    dumped = yaml.safe_dump(list(drafts), sort_keys=False, allow_unicode=True, width=100,
                            default_flow_style=False)
    block = "".join(indent + line if line.strip() else line for line in dumped.splitlines(True))
    joined = text if text.endswith("\n") else text + "\n"
    if not before.rules and match and text[match.end():].strip() == "":
        joined = text[: match.end()] + "\n"
    combined = joined + block
    after, problems = parse_pack(combined.encode(), source)
    expected = [r.id for r in before.rules] + [d["id"] for d in drafts]
    if after is None or [r.id for r in after.rules] != expected:
        why = problems[0] if problems else "its rules: list is not the last block of the file"
        raise InputError(f"cannot append drafts to {source} ({why}); write them to a new file "
                         "with -o and merge by hand")
    return combined
