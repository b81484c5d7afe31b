"""Version schemes and ranges for rule packs (docs/rules.md, "Version schemes and ranges").

Three schemes:

- ``nvidia``: dotted non-negative integers. A bound names a release at its own precision: the
  version is cut to the bound's number of parts before comparing, so ``8.2.1.32`` is
  ``== 8.2.1``; a shorter version stands for every release under it (``11`` is ``>= 10.2``, and
  too coarse for ``< 11.4``: a VersionError).
- ``pep440``: Python versions through ``packaging``; pre-releases match, a local label is ignored.
- ``deb``: Debian versions compared with dpkg's algorithm (deb-version(7), Policy 5.6.12).

A range is comma-separated bounds that must all hold (``>=8.1.0, <8.2.1``) or ``*`` for any
version; a :class:`RangeSet` is a union of ranges. Pure: no I/O.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import Any

from packaging.specifiers import InvalidSpecifier, Specifier
from packaging.version import InvalidVersion, Version

SCHEMES: tuple[str, ...] = ("nvidia", "pep440", "deb")


class VersionError(ValueError):
    """A version, range or scheme that cannot be used. ``str(err)`` is one user-facing line."""


class UnknownSchemeError(VersionError):
    """A scheme name that is not in :data:`SCHEMES`."""


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise UnknownSchemeError(f"unknown versioning scheme {scheme!r} (known: {', '.join(SCHEMES)})")


_ARTICLE = {"nvidia": "an"}  # "an nvidia version", "a deb version"


def _not_a(scheme: str, text: object) -> str:
    return f"{text!r} is not {_ARTICLE.get(scheme, 'a')} {scheme} version"


def _as_text(scheme: str, text: object) -> str:
    if not isinstance(text, str):
        raise VersionError(f"{_not_a(scheme, text)}: expected a string, got {type(text).__name__}")
    return text


# --- nvidia -----------------------------------------------------------------------------------

_NVIDIA = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def _parse_nvidia(text: str) -> tuple[int, ...]:
    stripped = text.strip()
    if not _NVIDIA.fullmatch(stripped):
        raise VersionError(_not_a("nvidia", text))
    return tuple(int(part) for part in stripped.split("."))


def _pad(parts: tuple[int, ...], length: int) -> tuple[int, ...]:
    return parts + (0,) * (length - len(parts))


def _compare_nvidia(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    length = max(len(a), len(b))
    return _sign(_pad(a, length), _pad(b, length))


def _at_precision(version: tuple[int, ...], bound: tuple[int, ...]) -> tuple[int, ...]:
    """``version`` cut or zero-padded to the number of parts of ``bound``."""
    return _pad(version, len(bound))[: len(bound)]


# --- pep440 -----------------------------------------------------------------------------------

def _parse_pep440(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise VersionError(_not_a("pep440", text)) from None


# --- deb --------------------------------------------------------------------------------------
# Written from deb-version(7): [epoch:]upstream[-revision]; the epoch is the text before the first
# colon, the revision the text after the last hyphen. Where dpkg only warns (an upstream version
# that does not start with a digit, a character outside the allowed set) this raises too.

_DEB_SPACE = " \t\n\v\f\r"
_DEB_EPOCH_MAX = 2**31 - 1  # dpkg keeps the epoch in a C int
_ALNUM = "0-9A-Za-z"
# ':' reaches the upstream version only after an epoch, '-' only before a revision
_DEB_UPSTREAM = re.compile(rf"[0-9][{_ALNUM}.+~:-]*")
_DEB_REVISION = re.compile(rf"[{_ALNUM}.+~]+")
_DEB_PARTS = re.compile(r"([^0-9]*)([0-9]*)")


@dataclass(frozen=True)
class _Deb:
    epoch: int
    upstream: str
    revision: str  # "" when absent: dpkg compares an absent revision as an empty one


def _parse_deb(text: str) -> _Deb:
    def bad(reason: str) -> VersionError:
        return VersionError(f"{_not_a('deb', text)}: {reason}")

    stripped = text.strip(_DEB_SPACE)
    if not stripped:
        raise bad("it is empty")
    if any(c in _DEB_SPACE for c in stripped):
        raise bad("it has embedded spaces")
    epoch = 0
    rest = stripped
    if ":" in stripped:
        epoch_text, rest = stripped.split(":", 1)
        if not epoch_text:
            raise bad("the epoch is empty")
        if not (epoch_text.isascii() and epoch_text.isdigit()):
            raise bad("the epoch is not a number")
        epoch = int(epoch_text)
        if epoch > _DEB_EPOCH_MAX:
            raise bad("the epoch is too big")
        if not rest:
            raise bad("nothing after the colon")
    upstream, hyphen, revision = rest.rpartition("-")
    if not hyphen:
        upstream, revision = rest, ""
    elif not revision:
        raise bad("the revision is empty")
    if not upstream:
        raise bad("the upstream version is empty")
    if upstream[0] not in "0123456789":
        raise bad("the upstream version does not start with a digit")
    if not _DEB_UPSTREAM.fullmatch(upstream):
        raise bad("invalid character in the upstream version")
    if hyphen and not _DEB_REVISION.fullmatch(revision):
        raise bad("invalid character in the revision")
    return _Deb(epoch, upstream, revision)


def _deb_weight(char: str) -> int:
    """Sort weight of one non-digit character: '~' first, then the end of a part, letters, others."""
    if char == "~":
        return -1
    if char.isascii() and char.isalpha():
        return ord(char)
    return ord(char) + 256


def _deb_key(part: str) -> list[tuple[tuple[int, ...], int]]:
    """``part`` as alternating (non-digit run, digit run) pairs; a non-digit run is its weights
    closed by 0 (the end of the run), a digit run its number (0 when empty)."""
    pairs = []
    for letters, digits in _DEB_PARTS.findall(part):
        if not letters and not digits:
            continue
        weights = (*(_deb_weight(c) for c in letters), 0)
        pairs.append((weights, int(digits) if digits else 0))
    return pairs


def _compare_deb_part(a: str, b: str) -> int:
    """dpkg's comparison of two upstream versions or two revisions."""
    empty = ((0,), 0)  # a missing pair compares as an empty non-digit run and the number 0
    for pair_a, pair_b in zip_longest(_deb_key(a), _deb_key(b), fillvalue=empty):
        if pair_a != pair_b:
            return -1 if pair_a < pair_b else 1
    return 0


def _compare_deb(a: _Deb, b: _Deb) -> int:
    return (_sign(a.epoch, b.epoch)
            or _compare_deb_part(a.upstream, b.upstream)
            or _compare_deb_part(a.revision, b.revision))


# --- dispatch ---------------------------------------------------------------------------------

def _sign(a: Any, b: Any) -> int:
    return (a > b) - (a < b)


_PARSERS: dict[str, Callable[[str], Any]] = {
    "nvidia": _parse_nvidia, "pep440": _parse_pep440, "deb": _parse_deb,
}
_COMPARERS: dict[str, Callable[[Any, Any], int]] = {
    "nvidia": _compare_nvidia, "pep440": _sign, "deb": _compare_deb,
}


def _parse(scheme: str, text: object) -> Any:
    _check_scheme(scheme)
    return _PARSERS[scheme](_as_text(scheme, text))


def check_version(scheme: str, text: str) -> None:
    """Raise :class:`VersionError` unless ``text`` is a version under ``scheme``."""
    _parse(scheme, text)


def compare(scheme: str, a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is older than, the same as or newer than ``b`` (nvidia: zero-padded)."""
    parsed_a, parsed_b = _parse(scheme, a), _parse(scheme, b)
    return _COMPARERS[scheme](parsed_a, parsed_b)


# --- ranges -----------------------------------------------------------------------------------

_OPERATORS: dict[str, Callable[[int, int], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "!=": operator.ne,
}
_PEP440_ONLY = ("~=", "===")
_BOUND = re.compile(r"(===|~=|<=|>=|==|!=|<|>)?\s*(.*)", re.DOTALL)


@dataclass(frozen=True)
class _Bound:
    op: str
    version: Any  # the parsed bound version; a packaging Specifier for pep440


def _parse_bound(scheme: str, range_text: str, bound_text: str) -> _Bound:
    def bad(reason: str) -> VersionError:
        return VersionError(f"bad {scheme} range {range_text!r}: {reason}")

    if not bound_text:
        raise bad("empty bound")
    match = _BOUND.fullmatch(bound_text)
    assert match is not None  # the pattern matches every string
    op, version = match.group(1), match.group(2)
    if op is None:
        raise bad(f"{bound_text!r} has no operator (one of <, <=, >, >=, ==, !=)")
    if not version:
        raise bad(f"{bound_text!r} has no version")
    if scheme == "pep440":
        try:
            return _Bound(op, Specifier(f"{op}{version}", prereleases=True))
        except InvalidSpecifier:
            raise bad(f"{bound_text!r} is not a pep440 bound") from None
    if op in _PEP440_ONLY:
        raise bad(f"operator {op} is only for pep440 versions")
    try:
        return _Bound(op, _parse(scheme, version))
    except VersionError as err:
        raise bad(str(err)) from None


def _holds(scheme: str, bound: _Bound, version: Any) -> bool:
    if scheme == "pep440":
        return bound.version.contains(version, prereleases=True)
    if scheme == "nvidia":
        if len(version) < len(bound.version):
            return _holds_coarse(bound, version)
        cmp = _sign(_at_precision(version, bound.version), bound.version)
    else:
        cmp = _COMPARERS[scheme](version, bound.version)
    return _OPERATORS[bound.op](cmp, 0)


def _holds_coarse(bound: _Bound, version: tuple[int, ...]) -> bool:
    """An nvidia version with fewer parts than the bound (``11`` against ``<11.4``) stands for
    every release under it: the bound holds or fails when it does so for all of them, else the
    version is too coarse to decide (a VersionError, so the rule is not evaluable)."""
    head, rest = bound.version[: len(version)], bound.version[len(version):]
    first = _sign(version, head)
    possible = {first} if first else ({0, 1} if not any(rest) else {-1, 0, 1})
    answers = {_OPERATORS[bound.op](cmp, 0) for cmp in possible}
    if len(answers) == 1:
        return answers.pop()
    shown = ".".join(map(str, version))
    wanted = ".".join(map(str, bound.version))
    raise VersionError(f"version {shown} is too coarse to compare with {bound.op}{wanted}")


@dataclass(frozen=True)
class Range:
    """Comma-separated bounds that must all hold, or ``*`` for any version. Validated when made."""

    scheme: str
    text: str
    _bounds: tuple[_Bound, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_scheme(self.scheme)
        if not isinstance(self.text, str):
            raise VersionError(f"bad {self.scheme} range {self.text!r}: expected a string")
        text = self.text.strip()
        if not text:
            raise VersionError(f"bad {self.scheme} range {self.text!r}: it is empty")
        bounds: tuple[_Bound, ...] = ()
        if text != "*":
            bounds = tuple(_parse_bound(self.scheme, self.text, part.strip()) for part in text.split(","))
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "_bounds", bounds)

    def contains(self, version: str) -> bool:
        """Whether ``version`` satisfies every bound; :class:`VersionError` if it does not parse."""
        return self._matches(_parse(self.scheme, version))

    def _matches(self, parsed: Any) -> bool:
        return all(_holds(self.scheme, bound, parsed) for bound in self._bounds)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class RangeSet:
    """A union of ranges of one scheme."""

    ranges: tuple[Range, ...]

    def __post_init__(self) -> None:
        if not self.ranges:
            raise VersionError("no version range given")
        schemes = {r.scheme for r in self.ranges}
        if len(schemes) > 1:
            raise VersionError(f"version ranges mix schemes: {', '.join(sorted(schemes))}")

    @property
    def scheme(self) -> str:
        return self.ranges[0].scheme

    def contains(self, version: str) -> bool:
        """Whether any range holds ``version``; :class:`VersionError` if it does not parse."""
        parsed = _parse(self.scheme, version)
        return any(r._matches(parsed) for r in self.ranges)

    def __str__(self) -> str:
        return " | ".join(r.text for r in self.ranges)


def parse_range(scheme: str, text: str) -> Range:
    """One range; :class:`VersionError` naming ``text`` if an operator or version is bad."""
    return Range(scheme, text)


def parse_ranges(scheme: str, texts: str | Sequence[str]) -> RangeSet:
    """The union of ``texts``: one range, a list of ranges, or ranges joined by ``|`` (as ``str``
    of a :class:`RangeSet` writes them)."""
    _check_scheme(scheme)
    if isinstance(texts, str):
        texts = [texts]
    elif not isinstance(texts, Sequence):
        raise VersionError(f"bad {scheme} ranges {texts!r}: expected a string or a list of strings")
    pieces = [piece for item in texts for piece in (item.split("|") if isinstance(item, str) else [item])]
    return RangeSet(tuple(parse_range(scheme, piece) for piece in pieces))
