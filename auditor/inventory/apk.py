"""Alpine packages, from apk's database ``lib/apk/db/installed`` (``usr/lib/apk/db/installed``
on newer, merged-/usr releases).

The database is a sequence of records separated by blank lines; each line is ``X:value`` with a
one-letter key (the apk "installed database" format): ``P`` name, ``V`` version, ``A`` arch,
``o`` origin (source) package, ``L`` license, ``F`` a directory and the ``R`` lines after it the
files in it. Every record there is installed. A record without P or V is recorded as an
:class:`Unknown` and the run goes on. The purl has syft's form:
``pkg:apk/<os ID>/NAME@VERSION?arch=ARCH&distro=<ID>-<VERSION_ID>&upstream=ORIGIN``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from packageurl import PackageURL

from auditor.inventory.base import BrokenRecords, Cataloger, FileView, Inventory, read_text_database
from auditor.inventory.os_release import PATHS as OS_RELEASE_PATHS
from auditor.inventory.os_release import distro_qualifier, os_identity
from auditor.model import Package

NAME = "apk"
DATABASES = ("lib/apk/db/installed", "usr/lib/apk/db/installed")
GLOBS = (*DATABASES, *OS_RELEASE_PATHS)
_EXPRESSION = re.compile(r"\s(AND|OR|WITH)\s|[()]")


@dataclass
class Record:
    """One package's lines: the first value of each key, and its files."""

    line: int
    fields: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def iter_records(text: str) -> Iterator[Record]:
    record: Record | None = None
    directory = ""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            if record is not None:
                yield record
            record, directory = None, ""
            continue
        if len(line) < 2 or line[1] != ":":
            continue  # not a key line: ignored, as apk does
        if record is None:
            record = Record(number)
        key, value = line[0], line[2:]
        if key == "F":
            directory = value.strip("/")
        elif key == "R":
            name = value.strip("/")
            if name:
                record.files.append(f"{directory}/{name}" if directory else name)
        else:
            record.fields.setdefault(key, value)
    if record is not None:
        yield record


def split_licenses(value: str) -> tuple[str, ...]:
    """An SPDX expression stays whole; an old-style list (``MIT BSD GPL2+``) is split."""
    value = value.strip()
    if not value:
        return ()
    return (value,) if _EXPRESSION.search(value) else tuple(value.split())


def apk_purl(name: str, version: str, arch: str | None, origin: str | None,
             release: dict[str, str]) -> str:
    qualifiers = {"arch": arch or "", "distro": distro_qualifier(release) or ""}
    if origin and origin != name:
        qualifiers["upstream"] = origin
    return PackageURL(type="apk", namespace=(release.get("id") or "alpine").lower(), name=name,
                      version=version, qualifiers={k: v for k, v in qualifiers.items() if v}
                      ).to_string()


def run(view: FileView, inventory: Inventory) -> None:
    seen: set[str] = set()
    for path in DATABASES:
        resolved = view.index.resolve(path)
        if resolved is None or resolved in seen:  # absent, or the other path's symlink
            continue
        seen.add(resolved)
        _packages_in(view, inventory, resolved)


def _packages_in(view: FileView, inventory: Inventory, path: str) -> None:
    layer = view.layer_of(path)
    text = read_text_database(view, inventory, NAME, path)
    if text is None:
        return
    release = os_identity(view, inventory)
    broken = BrokenRecords(inventory, NAME, path, layer)
    for record in iter_records(text):
        name, version = record.fields.get("P", ""), record.fields.get("V", "")
        if not name or not version:
            missing = " or ".join(k for k, v in (("P:", name), ("V:", version)) if not v)
            broken.add(f"record at line {record.line} has no {missing} line")
            continue
        arch = record.fields.get("A") or None
        origin = record.fields.get("o") or None
        inventory.packages.append(Package(
            type="apk", name=name, version=version,
            purl=apk_purl(name, version, arch, origin, release), path=path, layer=layer,
            arch=arch, source=origin, licenses=split_licenses(record.fields.get("L", "")),
            files=tuple(record.files)))
    broken.close()


CATALOGER = Cataloger(NAME, 1, GLOBS, run)
