"""conda packages, from the ``conda-meta/*.json`` records of each environment (prefix).

One JSON per installed package, as conda, mamba and micromamba write it: ``name``, ``version``,
``build``, ``channel`` (a URL such as ``https://conda.anaconda.org/conda-forge/linux-64`` or a bare
name), ``subdir``, ``license``, ``files`` (relative to the prefix, the directory holding
``conda-meta``), and ``paths_data`` when ``files`` is absent.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any
from urllib.parse import urlsplit

from packageurl import PackageURL

from auditor.inventory.base import Cataloger, FileView, Inventory
from auditor.inventory.python import resolve_inside
from auditor.model import Package, Unknown

NAME = "conda"
GLOBS = ("conda-meta/*.json", "*/conda-meta/*.json")
MAX_FILES = 1_000_000
ANACONDA_HOSTS = ("conda.anaconda.org", "anaconda.org")


class CondaMetaError(ValueError):
    """A conda-meta record that cannot be read as one."""


def channel_name(channel: str, subdir: str = "") -> str:
    """The channel as the purl spec names it: ``conda-forge`` for
    ``https://conda.anaconda.org/conda-forge/linux-64``, ``main`` for
    ``https://repo.anaconda.com/pkgs/main/linux-64``; other URLs without their subdir."""
    channel = channel.strip().rstrip("/")
    if "://" not in channel:
        return channel
    parts = urlsplit(channel)
    segments = [s for s in parts.path.split("/") if s]
    if segments and subdir and segments[-1] == subdir:
        segments.pop()
    host = (parts.hostname or "").lower()
    if host in ANACONDA_HOSTS and segments:
        return segments[0]
    if host == "repo.anaconda.com" and len(segments) >= 2 and segments[0] == "pkgs":
        return segments[1]
    return f"{parts.scheme}://{parts.netloc}/{'/'.join(segments)}".rstrip("/")


def _text(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    return value.strip() if isinstance(value, str) else ""


def _listed_files(record: dict[str, Any]) -> list[str]:
    files = record.get("files")
    if isinstance(files, list):
        return [f for f in files[:MAX_FILES] if isinstance(f, str)]
    paths = record.get("paths_data")
    entries = paths.get("paths") if isinstance(paths, dict) else None
    if isinstance(entries, list):
        return [e["_path"] for e in entries[:MAX_FILES]
                if isinstance(e, dict) and isinstance(e.get("_path"), str)]
    return []


def parse_conda_meta(data: bytes, prefix: str, path: str = "", layer: int | None = None) -> Package:
    """One conda-meta record as a Package. Raises CondaMetaError."""
    try:
        record = json.loads(data)
    except (ValueError, RecursionError) as err:
        raise CondaMetaError(f"not JSON ({err.__class__.__name__})") from None
    if not isinstance(record, dict):
        raise CondaMetaError("not a JSON object")
    name, version = _text(record, "name"), _text(record, "version")
    if not name or not version:
        raise CondaMetaError("no name or version")
    build, subdir = _text(record, "build"), _text(record, "subdir")
    channel = _text(record, "channel")
    if not channel:
        url = _text(record, "url")  # .../CHANNEL/SUBDIR/FILE.conda
        channel = posixpath.dirname(url) if "://" in url else ""
    channel = channel_name(channel, subdir) if channel else ""
    qualifiers = {k: v for k, v in (("build", build), ("channel", channel), ("subdir", subdir)) if v}
    purl = PackageURL(type="conda", name=name, version=version, qualifiers=qualifiers).to_string()
    licenses = (_text(record, "license"),) if _text(record, "license") else ()
    files = (resolve_inside(prefix, f) for f in _listed_files(record))
    return Package("conda", name, version, purl, path, layer, arch=subdir or None,
                   source=channel or None, licenses=licenses,
                   files=tuple(dict.fromkeys(f for f in files if f is not None)))


def run(view: FileView, inventory: Inventory) -> None:
    for pattern in GLOBS:
        for path in view.captured(pattern):
            directory = posixpath.dirname(path)
            if posixpath.basename(directory) != "conda-meta" or not path.endswith(".json"):
                continue  # conda-meta/x/y.json: not a record
            data = view.read(path)
            if data is None:
                continue
            layer = view.layer_of(path)
            try:
                inventory.packages.append(
                    parse_conda_meta(data, posixpath.dirname(directory), path, layer))
            except CondaMetaError as err:
                inventory.unknowns.append(Unknown(NAME, path, layer, str(err)))


CATALOGER = Cataloger(NAME, 1, GLOBS, run)
