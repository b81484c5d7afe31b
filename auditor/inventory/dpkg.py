"""Debian and Ubuntu packages, from dpkg's database.

Read: ``var/lib/dpkg/status`` (one stanza per package, deb822 / RFC 822 style, with continuation
lines), the distroless layout ``var/lib/dpkg/status.d/*`` (one file per package, stanzas in the
same format, and no Status field: every stanza there is installed), and the files each package
owns, from ``var/lib/dpkg/info/NAME[:ARCH].list`` (``status.d/NAME.md5sums`` in distroless).

Only installed packages are kept: Status ``install ok installed``, or ``hold ok installed`` (a
package pinned with ``apt-mark hold``, as CUDA images pin cuDNN and NCCL), or installed with
triggers still pending. Removed packages whose configuration files remain (``deinstall ok
config-files``), and unpacked or half-installed ones, are not in the image as packages. A
stanza without Package or Version is recorded as an :class:`Unknown` and the run goes on.

The purl follows syft's form (the purl spec's, plus syft's ``upstream``), so that both agree:
``pkg:deb/<os ID>/NAME@VERSION?arch=ARCH&distro=<ID>-<VERSION_ID>&upstream=SOURCE[@SRCVERSION]``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from packageurl import PackageURL

from auditor.inventory.base import BrokenRecords, Cataloger, FileView, Inventory, read_text_database
from auditor.inventory.os_release import PATHS as OS_RELEASE_PATHS
from auditor.inventory.os_release import distro_qualifier, os_identity
from auditor.model import Package

NAME = "dpkg"
STATUS = "var/lib/dpkg/status"
STATUS_D = "var/lib/dpkg/status.d"
INFO = "var/lib/dpkg/info"
GLOBS = (STATUS, f"{STATUS_D}/*", f"{INFO}/*.list", *OS_RELEASE_PATHS)
WANTED = ("install", "hold")  # the first Status word; deinstall and purge are on their way out
INSTALLED = ("installed", "triggers-awaited", "triggers-pending")  # files on disk, configured
_SOURCE = re.compile(r"^(?P<name>\S+)(?:\s*\((?P<version>[^)]*)\))?\s*$")


@dataclass(frozen=True)
class Stanza:
    """One paragraph of a deb822 file: its fields (first of each key kept) and first line."""

    fields: dict[str, str]
    line: int


def iter_stanzas(text: str) -> Iterator[Stanza]:
    """Paragraphs separated by blank lines; ``Key: value`` fields with continuation lines
    (starting with a space or a tab) appended, newline-joined. Comment lines and lines that are
    neither are ignored."""
    fields: dict[str, str] = {}
    key: str | None = None
    start = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            if fields:
                yield Stanza(fields, start)
            fields, key = {}, None
            continue
        if line[0] in " \t":
            if key is not None:
                fields[key] += "\n" + line.strip()
            continue
        if line.startswith("#"):
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not name or " " in name:
            key = None
            continue
        if not fields:
            start = number
        if name in fields:  # dpkg refuses duplicates; the first one stands
            key = None
            continue
        fields[name] = value.strip()
        key = name
    if fields:
        yield Stanza(fields, start)


def is_installed(status: str) -> bool:
    """Whether a Status field (``want error state``) says the package is in the image."""
    words = status.split()
    return len(words) == 3 and words[0] in WANTED and words[1] == "ok" and words[2] in INSTALLED


def split_source(value: str) -> tuple[str | None, str | None]:
    """``Source: glibc (2.36-9)`` -> ("glibc", "2.36-9"); ``Source: acl`` -> ("acl", None)."""
    match = _SOURCE.match(value.strip())
    if not match:
        return None, None
    return match["name"], match["version"] or None


def deb_purl(name: str, version: str, arch: str | None, source: str | None,
             source_version: str | None, release: dict[str, str]) -> str:
    qualifiers = {"arch": arch or "", "distro": distro_qualifier(release) or ""}
    if source:
        qualifiers["upstream"] = f"{source}@{source_version}" if source_version else source
    return PackageURL(type="deb", namespace=release.get("id") or "debian", name=name,
                      version=version, qualifiers={k: v for k, v in qualifiers.items() if v}
                      ).to_string()


def parse_owned_files(data: bytes, view: FileView, md5sums: bool = False) -> tuple[str, ...]:
    """Root-relative paths from a ``.list`` (one absolute path a line) or ``.md5sums`` file
    (``HASH  path``), as recorded; paths that are directories in the image (following symlinks:
    ``lib`` is ``usr/lib`` on merged-/usr systems) are left out."""
    out: list[str] = []
    for raw in data.decode("utf-8", "surrogateescape").splitlines():
        line = raw.strip()
        if md5sums:
            line = line.partition(" ")[2].strip()
        path = line.strip("/")
        if not path or path == ".":
            continue
        entry = view.index.lookup(path)
        if entry is not None and entry.type == "dir":
            continue
        out.append(path)
    return tuple(out)


def _owned_files(view: FileView, directory: str, suffix: str, name: str,
                 arch: str | None) -> tuple[str, ...]:
    """The files a package owns: ``NAME:ARCH<suffix>`` (Multi-Arch: same), else ``NAME<suffix>``."""
    for key in ([f"{name}:{arch}"] if arch else []) + [name]:
        data = view.read(f"{directory}/{key}{suffix}")
        if data is not None:
            return parse_owned_files(data, view, md5sums=suffix == ".md5sums")
    return ()


def _packages_in(view: FileView, inventory: Inventory, path: str, release: dict[str, str],
                 distroless: bool) -> None:
    layer = view.layer_of(path)
    text = read_text_database(view, inventory, NAME, path)
    if text is None:
        return
    broken = BrokenRecords(inventory, NAME, path, layer)
    for stanza in iter_stanzas(text):
        fields = stanza.fields
        name, version = fields.get("Package", ""), fields.get("Version", "")
        installed = distroless or is_installed(fields.get("Status", ""))
        if name and not installed:
            continue  # (a not-installed package's stanza has no Version: not broken)
        if not name or not version or not name.isascii() or not version.isascii():
            missing = [k for k, v in (("Package", name), ("Version", version)) if not v]
            broken.add(f"stanza at line {stanza.line} has no {' or '.join(missing)} field"
                       if missing else
                       f"stanza at line {stanza.line} has a non-ASCII Package or Version")
            continue
        arch = fields.get("Architecture") or None
        source, source_version = split_source(fields.get("Source", ""))
        if distroless:
            files = _owned_files(view, STATUS_D, ".md5sums", name, arch)
        else:
            files = _owned_files(view, INFO, ".list", name, arch)
        inventory.packages.append(Package(
            type="deb", name=name, version=version,
            purl=deb_purl(name, version, arch, source, source_version, release),
            path=path, layer=layer, arch=arch, source=source, files=files))
    broken.close()


def run(view: FileView, inventory: Inventory) -> None:
    release = os_identity(view, inventory)
    if view.index.lookup(STATUS) is not None:
        _packages_in(view, inventory, STATUS, release, distroless=False)
    for path in view.glob(f"{STATUS_D}/*"):
        entry = view.index.entries.get(path)
        if (path.endswith(".md5sums") or "/" in path[len(STATUS_D) + 1:] or entry is None
                or entry.type not in ("file", "hardlink", "symlink")):
            continue
        _packages_in(view, inventory, path, release, distroless=True)


CATALOGER = Cataloger(NAME, 1, GLOBS, run)
