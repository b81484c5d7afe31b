"""RPM packages (Fedora, RHEL and its rebuilds, SUSE, Amazon Linux, ...), from the rpm database.

rpm 4.16 and later keep the database in SQLite: ``var/lib/rpm/rpmdb.sqlite`` or, on newer
systems, ``usr/lib/sysimage/rpm/rpmdb.sqlite``. Its ``Packages(hnum, blob)`` table holds one
RPM header per package. The database is opened in memory (``sqlite3`` ``deserialize``: no file
is written) and each header is parsed here with :mod:`struct`, bounded and defensively, since a
hostile image may hold anything there.

A header blob is ``il`` and ``dl`` (big-endian int32: index entries, data bytes), ``il`` index
entries of 16 bytes (tag, type, offset into the data store, count) and the data store. Strings
are NUL-terminated; integers are big-endian and aligned to their size in the data store.

Older databases (Berkeley DB ``Packages``, SUSE's NDB ``Packages.db``) are recorded as
:class:`Unknown`, never guessed at. The purl has syft's form: ``pkg:rpm/<os ID>/NAME@VERSION-
RELEASE?arch=ARCH&epoch=EPOCH&distro=<ID>-<VERSION_ID>&upstream=SOURCERPM``.
"""

from __future__ import annotations

import posixpath
import sqlite3
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from packageurl import PackageURL

from auditor.inventory.base import BrokenRecords, Cataloger, FileView, Inventory, read_database
from auditor.inventory.os_release import PATHS as OS_RELEASE_PATHS
from auditor.inventory.os_release import distro_qualifier, os_identity
from auditor.model import Package, Unknown

NAME = "rpm"
DIRECTORIES = ("var/lib/rpm", "usr/lib/sysimage/rpm")
SQLITE = "rpmdb.sqlite"
OLD_FORMATS = {"Packages": "Berkeley DB", "Packages.db": "NDB"}
GLOBS = (*(f"{d}/{SQLITE}" for d in DIRECTORIES), *OS_RELEASE_PATHS)

# Header tags (rpmtag.h) and types.
TAG_NAME, TAG_VERSION, TAG_RELEASE, TAG_EPOCH = 1000, 1001, 1002, 1003
TAG_LICENSE, TAG_ARCH, TAG_OLDFILENAMES, TAG_SOURCERPM = 1014, 1022, 1027, 1044
TAG_DIRINDEXES, TAG_BASENAMES, TAG_DIRNAMES = 1116, 1117, 1118
WANTED_TAGS = frozenset({TAG_NAME, TAG_VERSION, TAG_RELEASE, TAG_EPOCH, TAG_LICENSE, TAG_ARCH,
                         TAG_OLDFILENAMES, TAG_SOURCERPM, TAG_DIRINDEXES, TAG_BASENAMES,
                         TAG_DIRNAMES})
CHAR, INT8, INT16, INT32, INT64, STRING, BIN, STRING_ARRAY, I18NSTRING = range(1, 10)
_INTS = {CHAR: ("B", 1), INT8: ("B", 1), INT16: ("H", 2), INT32: ("I", 4), INT64: ("Q", 8)}
MAX_INDEX_ENTRIES = 0xFFFF  # rpm's own bounds (header.c)
MAX_DATA_BYTES = 0x0FFFFFFF
SQLITE_MAGIC = b"SQLite format 3\x00"
MAX_SQLITE_STEPS = 50_000_000  # virtual-machine steps for reading the table: stops hostile schemas


class HeaderError(ValueError):
    """A header blob that is not a well-formed RPM header."""


def parse_header(blob: bytes, wanted: frozenset[int] = WANTED_TAGS) -> dict[int, Any]:
    """The values of the ``wanted`` tags of one header blob (the first entry of each tag).

    Strings come back as ``str``, string arrays and I18N strings as ``list[str]``, integers as
    ``list[int]``, binary as ``bytes``. Raises :class:`HeaderError` for anything out of bounds.
    """
    if len(blob) < 8:
        raise HeaderError(f"header of {len(blob)} bytes: shorter than its 8-byte preamble")
    il, dl = struct.unpack_from(">II", blob, 0)
    if not 1 <= il <= MAX_INDEX_ENTRIES or dl > MAX_DATA_BYTES:
        raise HeaderError(f"header claims {il} index entries and {dl} data bytes")
    start = 8 + 16 * il
    end = start + dl
    if end > len(blob):
        raise HeaderError(f"header needs {end} bytes, blob has {len(blob)} (truncated)")
    out: dict[int, Any] = {}
    for i in range(il):
        tag, kind, offset, count = struct.unpack_from(">IIII", blob, 8 + 16 * i)
        if tag not in wanted or tag in out:
            continue
        if offset >= dl or count == 0 or count > dl:
            raise HeaderError(f"tag {tag}: offset {offset}, count {count} outside {dl} data bytes")
        out[tag] = _value(blob, start + offset, end, kind, count, tag)
    return out


def _value(blob: bytes, at: int, end: int, kind: int, count: int, tag: int) -> Any:
    if kind in _INTS:
        code, size = _INTS[kind]
        if at + size * count > end:
            raise HeaderError(f"tag {tag}: {count} integers run past the data store")
        return list(struct.unpack_from(f">{count}{code}", blob, at))
    if kind == BIN:
        if at + count > end:
            raise HeaderError(f"tag {tag}: {count} bytes run past the data store")
        return blob[at:at + count]
    if kind in (STRING, STRING_ARRAY, I18NSTRING):
        if kind == STRING and count != 1:
            raise HeaderError(f"tag {tag}: a string with count {count}")
        strings = []
        for _ in range(count):
            nul = blob.find(b"\x00", at, end)
            if nul < 0:
                raise HeaderError(f"tag {tag}: string without its NUL inside the data store")
            strings.append(blob[at:nul].decode("utf-8", "replace"))
            at = nul + 1
        return strings[0] if kind == STRING else strings
    raise HeaderError(f"tag {tag}: unknown type {kind}")


@dataclass(frozen=True)
class RpmHeader:
    name: str
    version: str
    release: str | None
    epoch: int | None
    arch: str | None
    license: str | None
    source_rpm: str | None
    files: tuple[str, ...]

    @property
    def full_version(self) -> str:
        """``[EPOCH:]VERSION-RELEASE``, as rpm and syft write it (epoch only when recorded)."""
        evr = f"{self.version}-{self.release}" if self.release else self.version
        return f"{self.epoch}:{evr}" if self.epoch is not None else evr


def _string(values: dict[int, Any], tag: int) -> str | None:
    value = values.get(tag)
    if isinstance(value, list) and value and isinstance(value[0], str):
        value = value[0]  # an I18N string: the first locale
    if value is not None and not isinstance(value, str):
        raise HeaderError(f"tag {tag} is not a string")
    return value or None


def _strings(values: dict[int, Any], tag: int) -> list[str]:
    value = values.get(tag, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise HeaderError(f"tag {tag} is not a string array")
    return value


def read_header(blob: bytes) -> RpmHeader:
    """The fields the inventory needs from one header; :class:`HeaderError` if it is broken."""
    values = parse_header(blob)
    name, version = _string(values, TAG_NAME), _string(values, TAG_VERSION)
    if not name or not version:
        raise HeaderError("header has no NAME" if not name else f"package {name} has no VERSION")
    epoch = values.get(TAG_EPOCH)
    if epoch is not None and not (isinstance(epoch, list) and all(isinstance(e, int) for e in epoch)):
        raise HeaderError("EPOCH is not an integer")
    return RpmHeader(name, version, _string(values, TAG_RELEASE), epoch[0] if epoch else None,
                     _string(values, TAG_ARCH), _string(values, TAG_LICENSE),
                     _string(values, TAG_SOURCERPM), _files(values))


def _files(values: dict[int, Any]) -> tuple[str, ...]:
    basenames = _strings(values, TAG_BASENAMES)
    if not basenames:
        return tuple(p.lstrip("/") for p in _strings(values, TAG_OLDFILENAMES))
    dirnames = _strings(values, TAG_DIRNAMES)
    indexes = values.get(TAG_DIRINDEXES, [])
    if not isinstance(indexes, list) or len(indexes) != len(basenames):
        raise HeaderError("DIRINDEXES does not match BASENAMES")
    out = []
    for base, index in zip(basenames, indexes, strict=True):
        if not isinstance(index, int) or not 0 <= index < len(dirnames):
            raise HeaderError(f"DIRINDEXES entry {index} outside {len(dirnames)} DIRNAMES")
        out.append(posixpath.join(dirnames[index], base).lstrip("/"))
    return tuple(out)


def read_sqlite_rpmdb(data: bytes, on_error: Callable[[str], None]) -> list[tuple[int, bytes]]:
    """``(hnum, blob)`` of every row of the ``Packages`` table of an rpmdb.sqlite image, read in
    memory. Rows read before a failure are kept; the failure goes to ``on_error``."""
    if not data.startswith(SQLITE_MAGIC) or len(data) < 100:
        on_error("not an SQLite database (bad magic)")
        return []
    image = bytearray(data)
    if image[18] == 2 and image[19] == 2:  # WAL mode: an in-memory database cannot open it
        image[18] = image[19] = 1  # as a rollback-journal database; the -wal file is not read
    connection = sqlite3.connect(":memory:")
    rows: list[tuple[int, bytes]] = []
    steps = 0

    def bounded() -> int:
        nonlocal steps
        steps += 1000
        return 1 if steps > MAX_SQLITE_STEPS else 0

    try:
        connection.deserialize(image)  # copied by SQLite; a bytearray will do
        connection.execute("PRAGMA trusted_schema = OFF")
        connection.execute("PRAGMA query_only = ON")
        connection.set_progress_handler(bounded, 1000)
        connection.text_factory = bytes  # text in a hostile file need not be UTF-8
        for hnum, blob, kind in connection.execute(
                "SELECT hnum, blob, typeof(blob) FROM Packages"):
            if kind == b"blob" and isinstance(blob, bytes) and isinstance(hnum, int):
                rows.append((hnum, blob))
            else:
                on_error(f"row hnum={hnum!r}: blob is not binary")
    except (sqlite3.Error, ValueError, OverflowError, MemoryError) as err:
        reason = "too much work reading it" if steps > MAX_SQLITE_STEPS else str(err)
        on_error(f"SQLite: {reason}" + (f" (after {len(rows)} rows)" if rows else ""))
    finally:
        connection.close()
    return rows


def rpm_purl(header: RpmHeader, release: dict[str, str]) -> str:
    namespace = (release.get("id") or "").lower()
    if namespace in ("rhel", "hummingbird"):
        namespace = "redhat"
    elif namespace.startswith("opensuse"):
        namespace = "opensuse"
    qualifiers = {"arch": header.arch or "", "distro": distro_qualifier(release) or "",
                  "epoch": str(header.epoch) if header.epoch is not None else "",
                  "upstream": header.source_rpm or ""}
    version = f"{header.version}-{header.release}" if header.release else header.version
    return PackageURL(type="rpm", namespace=namespace or None, name=header.name, version=version,
                      qualifiers={k: v for k, v in qualifiers.items() if v}).to_string()


def _packages_in(view: FileView, inventory: Inventory, path: str, release: dict[str, str]) -> None:
    layer = view.layer_of(path)
    data = read_database(view, inventory, NAME, path)
    if data is None:
        return
    broken = BrokenRecords(inventory, NAME, path, layer)
    for hnum, blob in read_sqlite_rpmdb(data, broken.add):
        try:
            header = read_header(blob)
        except HeaderError as err:
            broken.add(f"package header {hnum}: {err}")
            continue
        inventory.packages.append(Package(
            type="rpm", name=header.name, version=header.full_version,
            purl=rpm_purl(header, release), path=path, layer=layer, arch=header.arch,
            source=header.source_rpm, licenses=(header.license,) if header.license else (),
            files=header.files))
    broken.close()


def run(view: FileView, inventory: Inventory) -> None:
    seen: set[str] = set()
    for directory in DIRECTORIES:
        resolved = view.index.resolve(directory)
        if resolved is None or resolved in seen:  # absent, or a symlink to the other one
            continue  # (the path reported is the real one: usr/lib/sysimage/rpm on Fedora)
        seen.add(resolved)
        path = f"{resolved}/{SQLITE}"
        if view.index.lookup(path) is not None:
            _packages_in(view, inventory, path, os_identity(view, inventory))
            continue
        for name, kind in OLD_FORMATS.items():
            old = f"{resolved}/{name}"
            if view.index.lookup(old) is not None:
                inventory.unknowns.append(Unknown(
                    NAME, old, view.layer_of(old),
                    f"rpm database in {kind} format is not read (only rpmdb.sqlite is)"))


CATALOGER = Cataloger(NAME, 1, GLOBS, run)
