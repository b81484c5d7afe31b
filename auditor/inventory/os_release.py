"""The distribution, from os-release(5)."""

from __future__ import annotations

import shlex

from auditor.inventory.base import Cataloger, FileView, Inventory
from auditor.model import Unknown

NAME = "os-release"
PATHS = ("etc/os-release", "usr/lib/os-release")
KEYS = ("ID", "ID_LIKE", "VERSION_ID", "VERSION_CODENAME", "PRETTY_NAME", "NAME", "VERSION")


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value lines with shell quoting; comments and malformed lines are ignored."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            parts = shlex.split(value, comments=False, posix=True)
        except ValueError:
            continue
        if key.isidentifier() and len(parts) <= 1:
            out[key] = parts[0] if parts else ""
    return out


def run(view: FileView, inventory: Inventory) -> None:
    for path in PATHS:
        data = view.read(path)
        if data is None:
            continue
        try:
            fields = parse_os_release(data.decode("utf-8"))
        except UnicodeDecodeError:
            inventory.unknowns.append(Unknown(NAME, path, view.layer_of(path), "not UTF-8 text"))
            continue
        if "ID" not in fields:
            inventory.unknowns.append(Unknown(NAME, path, view.layer_of(path), "no ID= line"))
            continue
        inventory.os = {key.lower(): fields[key] for key in KEYS if key in fields}
        inventory.os["path"] = path
        return


def os_identity(view: FileView, inventory: Inventory) -> dict[str, str]:
    """The image's os-release as the os-release cataloger found it, else read here (when that
    cataloger is not in the run): keys ``id``, ``version_id``, ... (lower case)."""
    if inventory.os:
        return {k: str(v) for k, v in inventory.os.items()}
    for path in PATHS:
        data = view.read(path)
        if data is None:
            continue
        fields = parse_os_release(data.decode("utf-8", "replace"))
        if "ID" in fields:
            return {key.lower(): value for key, value in fields.items()}
    return {}


def distro_qualifier(release: dict[str, str]) -> str | None:
    """``ID-VERSION_ID`` (``debian-12``, ``alpine-3.19.1``), as syft writes it."""
    parts = [p for p in (release.get("id"), release.get("version_id")) if p]
    return "-".join(parts) or None


CATALOGER = Cataloger(NAME, 1, PATHS, run)
