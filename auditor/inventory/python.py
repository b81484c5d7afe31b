"""Python distributions: ``*.dist-info`` (wheels, PEP 376/610/627) and ``*.egg-info`` (setuptools,
Debian's ``python3-*`` packages), in the directories Python imports from.

Only what is directly in a ``site-packages`` or ``dist-packages`` directory, or in a directory the
image's ``PYTHONPATH`` names, counts: copies vendored inside other packages
(``setuptools/_vendor/*.dist-info``) and conda's extracted package cache (``pkgs/NAME/``) are not
installed distributions. Nothing is imported or executed; METADATA is parsed as the header block
it is (``email.parser``), bounded.
"""

from __future__ import annotations

import csv
import json
import posixpath
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32

from packageurl import PackageURL
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from auditor.inventory.base import Cataloger, FileView, Inventory
from auditor.model import Evidence, Finding, Package, Unknown

NAME = "python"
SITE_DIR_NAMES = frozenset({"site-packages", "dist-packages"})
GLOBS = (
    "*.dist-info/METADATA",
    "*.dist-info/RECORD",
    "*.dist-info/INSTALLER",
    "*.dist-info/direct_url.json",
    "*.egg-info/PKG-INFO",
    "*.egg-info/installed-files.txt",
    "*.egg-info",  # a file: distutils' and Debian's single-file PKG-INFO
)
MAX_HEADER_BYTES = 1 << 20  # the header block of a METADATA; the long description is not read
MAX_RECORD_ROWS = 1_000_000
MAX_LICENSE_CHARS = 120  # longer "License:" values are the licence's text, not its name


# -- where Python looks ------------------------------------------------------------------------
def pythonpath_dirs(view: FileView) -> frozenset[str]:
    """The image's ``PYTHONPATH`` entries as root-relative paths."""
    value = view.env().get("PYTHONPATH", "")
    dirs = {posixpath.normpath(p.strip("/")) for p in value.split(":") if p.strip("/")}
    return frozenset(d for d in dirs if d != "." and not d.startswith(".."))


def in_conda_package_cache(view: FileView, path: str) -> bool:
    """Whether ``path`` lies in conda's extracted-package cache (``PREFIX/pkgs/NAME/...``, the
    directory holding an ``info/index.json``), whose files are linked into environments."""
    parts = path.split("/")
    for i, part in enumerate(parts[:-2]):
        if part == "pkgs":
            package = "/".join(parts[: i + 2])
            if view.index.lookup(f"{package}/info/index.json") is not None:
                return True
    return False


def is_import_dir(view: FileView, directory: str, extra: frozenset[str]) -> bool:
    """Whether Python would import distributions from ``directory``."""
    if directory.rpartition("/")[2] not in SITE_DIR_NAMES and directory not in extra:
        return False
    return not in_conda_package_cache(view, directory)


def resolve_inside(base: str, entry: str) -> str | None:
    """``entry`` (relative to ``base``, or absolute in the image) as a root-relative path, with
    ``..`` normalised away; None if it names nothing or climbs above the image root."""
    if not entry or "\x00" in entry:
        return None
    joined = entry.lstrip("/") if entry.startswith("/") else posixpath.join(base, entry)
    path = posixpath.normpath(joined) if joined else ""
    if path in ("", ".", "..") or path.startswith("../"):
        return None
    return path


# -- parsing -----------------------------------------------------------------------------------
class MetadataError(ValueError):
    """A METADATA/PKG-INFO that cannot be read as one."""


@dataclass(frozen=True)
class Metadata:
    name: str
    version: str
    licenses: tuple[str, ...]


def parse_metadata(data: bytes) -> Metadata:
    """Core metadata (PEP 241 to 643): Name, Version, licences. Raises MetadataError."""
    if b"\x00" in data[:MAX_HEADER_BYTES]:
        raise MetadataError("binary content, not a metadata header block")
    head = data[:MAX_HEADER_BYTES]
    for end in (b"\n\n", b"\r\n\r\n"):
        cut = head.find(end)
        if cut >= 0:
            head = head[:cut]
            break
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("latin-1")  # PEP 241-era PKG-INFO had no declared encoding
    message = HeaderParser(policy=compat32).parsestr(text)
    name = (message.get("Name") or "").strip()
    version = (message.get("Version") or "").strip()
    if not name:
        raise MetadataError("no Name: header")
    if not version:
        raise MetadataError(f"no Version: header for {name}")
    return Metadata(name, version, _licenses(message))


def _licenses(message: Message) -> tuple[str, ...]:
    out: list[str] = []
    expression = (message.get("License-Expression") or "").strip()
    if expression:
        out.append(expression)
    else:
        value = (message.get("License") or "").strip()
        if value and value.upper() != "UNKNOWN" and "\n" not in value \
                and len(value) <= MAX_LICENSE_CHARS:
            out.append(value)
    for classifier in message.get_all("Classifier") or []:
        parts = [p.strip() for p in str(classifier).split("::")]
        if len(parts) >= 2 and parts[0] == "License" and parts[-1] not in ("OSI Approved", ""):
            out.append(parts[-1])
    return tuple(dict.fromkeys(out))


def parse_record(data: bytes, base: str) -> tuple[str, ...]:
    """Paths a RECORD (CSV: path, hash, size) lists, resolved against ``base`` (the directory
    the distribution was installed into); entries climbing out of the image are dropped."""
    text = data.decode("utf-8", errors="replace")
    out: list[str] = []
    try:
        for i, row in enumerate(csv.reader(text.splitlines())):
            if i >= MAX_RECORD_ROWS:
                break
            if row:
                path = resolve_inside(base, row[0])
                if path is not None:
                    out.append(path)
    except csv.Error:
        pass  # keep what was read before the malformed line
    return tuple(dict.fromkeys(out))


def parse_installed_files(data: bytes, base: str) -> tuple[str, ...]:
    """setuptools' ``installed-files.txt``: one path a line, relative to the egg-info dir."""
    lines = data.decode("utf-8", errors="replace").splitlines()[:MAX_RECORD_ROWS]
    paths = (resolve_inside(base, line.strip()) for line in lines)
    return tuple(dict.fromkeys(p for p in paths if p is not None))


def parse_direct_url(data: bytes) -> str:
    """PEP 610 ``direct_url.json`` as a direct reference: ``git+URL@COMMIT``, an archive URL
    with ``#sha256=...``, or a local directory URL (`` (editable)`` when it is one)."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as err:
        raise MetadataError(f"not JSON ({err.__class__.__name__})") from None
    url = doc.get("url") if isinstance(doc, dict) else None
    if not isinstance(url, str) or not url:
        raise MetadataError("no url")
    vcs = doc.get("vcs_info")
    if isinstance(vcs, dict) and isinstance(vcs.get("vcs"), str):
        commit = vcs.get("commit_id") or vcs.get("requested_revision")
        return f"{vcs['vcs']}+{url}" + (f"@{commit}" if isinstance(commit, str) and commit else "")
    archive = doc.get("archive_info")
    if isinstance(archive, dict):
        hashes = archive.get("hashes")
        if isinstance(hashes, dict) and isinstance(hashes.get("sha256"), str):
            return f"{url}#sha256={hashes['sha256']}"
        if isinstance(archive.get("hash"), str):
            return f"{url}#{archive['hash'].replace(':', '=', 1)}"
        return url
    directory = doc.get("dir_info")
    if isinstance(directory, dict) and directory.get("editable") is True:
        return f"{url} (editable)"
    return url


def pypi_purl(name: str, version: str) -> str:
    return PackageURL(type="pypi", name=str(canonicalize_name(name)), version=version).to_string()


# -- the cataloger -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """One installed distribution's metadata file and its directory."""

    metadata: str  # the METADATA / PKG-INFO file (or single-file .egg-info)
    directory: str  # the .dist-info / .egg-info directory ("" for a single-file .egg-info)
    site: str  # the directory it is installed in


def find_candidates(view: FileView) -> list[Candidate]:
    extra = pythonpath_dirs(view)
    found: list[Candidate] = []
    for pattern, kind in (("*.dist-info/METADATA", "dir"), ("*.egg-info/PKG-INFO", "dir"),
                          ("*.egg-info", "file")):
        for path in view.captured(pattern):
            directory = posixpath.dirname(path) if kind == "dir" else ""
            site = posixpath.dirname(directory or path)
            if is_import_dir(view, site, extra):
                found.append(Candidate(path, directory, site))
    return found


def _read_text_field(view: FileView, path: str) -> str | None:
    data = view.read(path)
    if data is None:
        return None
    line = data[:256].decode("utf-8", errors="replace").strip().splitlines()
    return line[0].strip() if line and line[0].strip() else None


def catalog_distribution(view: FileView, inventory: Inventory, candidate: Candidate) -> None:
    path = candidate.metadata
    layer = view.layer_of(path)
    data = view.read(path)
    if data is None:
        return
    try:
        meta = parse_metadata(data)
    except MetadataError as err:
        inventory.unknowns.append(Unknown(NAME, path, layer, str(err)))
        return
    files: tuple[str, ...] = ()
    installer = direct = None
    if candidate.directory.endswith(".dist-info"):
        record = view.read(f"{candidate.directory}/RECORD")
        if record is not None:
            files = parse_record(record, candidate.site)
        installer = _read_text_field(view, f"{candidate.directory}/INSTALLER")
        direct_path = f"{candidate.directory}/direct_url.json"
        direct_data = view.read(direct_path)
        if direct_data is not None:
            try:
                direct = parse_direct_url(direct_data)
            except MetadataError as err:
                inventory.unknowns.append(Unknown(NAME, direct_path, view.layer_of(direct_path),
                                                  str(err)))
    elif candidate.directory:
        listed = view.read(f"{candidate.directory}/installed-files.txt")
        if listed is not None:
            files = parse_installed_files(listed, candidate.directory)
    # "pip", a direct reference, or both as "pip: git+https://...@commit"
    source = ": ".join(s for s in (installer, direct) if s) or None
    try:
        Version(meta.version)
    except InvalidVersion:
        inventory.findings.append(Finding(
            "python-version-not-pep440", "info", meta.name,
            f"{meta.name} has version {meta.version!r}, which is not a PEP 440 version; "
            "version ranges cannot be matched against it",
            (Evidence("metadata", path, meta.version, None),), path))
    inventory.packages.append(Package(
        "python", meta.name, meta.version, pypi_purl(meta.name, meta.version), path, layer,
        source=source, licenses=meta.licenses, files=files))


def run(view: FileView, inventory: Inventory) -> None:
    for candidate in find_candidates(view):
        catalog_distribution(view, inventory, candidate)


CATALOGER = Cataloger(NAME, 1, GLOBS, run)
