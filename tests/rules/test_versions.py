"""auditor.rules.versions: the nvidia, pep440 and deb schemes and their ranges.

The deb scheme is checked two ways: against the examples of dpkg's own test suite (copied below
with where they come from), and differentially against the real ``dpkg --compare-versions`` on a
few hundred versions made by a seeded generator.
"""

from __future__ import annotations

import functools
import itertools
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from auditor.rules.versions import (
    SCHEMES,
    Range,
    RangeSet,
    UnknownSchemeError,
    VersionError,
    check_version,
    compare,
    parse_range,
    parse_ranges,
)


def test_schemes() -> None:
    assert SCHEMES == ("nvidia", "pep440", "deb")
    assert issubclass(UnknownSchemeError, VersionError)
    assert issubclass(VersionError, ValueError)


@pytest.mark.parametrize("call", [
    lambda: compare("semver", "1.0", "1.0"),
    lambda: check_version("semver", "1.0"),
    lambda: parse_range("semver", ">=1"),
    lambda: parse_ranges("semver", [">=1"]),
    lambda: Range("semver", ">=1"),
])
def test_unknown_scheme(call) -> None:
    with pytest.raises(UnknownSchemeError) as err:
        call()
    assert str(err.value) == "unknown versioning scheme 'semver' (known: nvidia, pep440, deb)"


# --- nvidia -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("ranges", "version", "expected"), [
    # cuDNN: the bidirectional-RNN bug of 8.1, fixed in 8.2.1
    (">=8.1.0, <8.2.1", "8.1.0.77", True),
    (">=8.1.0, <8.2.1", "8.2.0.53", True),
    (">=8.1.0, <8.2.1", "8.2.1.32", False),   # a build of 8.2.1 is == 8.2.1, not < 8.2.1
    (">=8.1.0, <8.2.1", "8.0.5.39", False),
    (">=8.1.0, <8.2.1", "8.1", True),         # 8.1 is 8.1.0
    (">=8.1.0, <8.2.1", "8", None),           # 8 is any 8.x: too coarse to decide
    ("==8.2.1", "8.2.1.32", True),
    (">8.2.1", "8.2.1.32", False),
    (">8.2.1", "8.2.2.1", True),
    ("<8.2.1", "8.2.1.32", False),
    ("<=8.9.6", "8.9.6.50", True),
    ("<8.9.6", "8.9.6.50", False),
    ("==8.1", "8.1.0.77", True),
    ("==8.1", "8.10.0.1", False),
    ("==8", "8.9.7.29", True),
    ("<9", "8.9.7.29", True),
    # a version shorter than the bound stands for every release under it: decided when they
    # all agree, else too coarse (None: VersionError, the rule is not evaluable)
    ("<11.2.1", "11.2", None),
    ("==11.2.0", "11.2", None),
    (">=11.2.1", "11.2", None),
    (">=11.2.0", "11.2", True),               # 11.2.x is never below 11.2.0
    ("<11.3", "11.2", True),
    (">=10.2", "11", True),                   # cuBLAS 11, major only: every 11.x is >= 10.2
    ("<11.4", "11", None),
    ("<12.1.3", "11", True),
    # cuBLAS: numeric parts, not strings
    (">=11.4.1", "11.10.3.66", True),
    ("<11.4.1", "11.10.3.66", False),
    ("<11.10", "11.9.2.110", True),
    (">=12.1", "12.1.3.1", True),
    # NCCL
    (">=2.18.1, <2.18.3", "2.18.3", False),
    (">=2.18.1, <2.18.3", "2.18.1", True),
    ("<2.18.3", "2.18.3-1", None),            # None: not an nvidia version
    # !=
    ("!=8.2.1", "8.2.1.32", False),
    ("!=8.2.1", "8.2.0.53", True),
    (">=8.0, !=8.1.1", "8.1.1.33", False),
    (">=8.0, !=8.1.1", "8.1.0.77", True),
    # *
    ("*", "8.1.0.77", True),
    ("*", "0", True),
    # whitespace around operators, versions and bounds
    ("  >= 8.1.0 ,<  8.2.1  ", "8.1.0.77", True),
    (">=8.1.0,<8.2.1", " 8.1.0.77 ", True),
    # unions
    ([">=7.6, <7.6.5", ">=8.1.0, <8.2.1"], "7.6.4.38", True),
    ([">=7.6, <7.6.5", ">=8.1.0, <8.2.1"], "7.6.5.32", False),
    ([">=7.6, <7.6.5", ">=8.1.0, <8.2.1"], "8.1.1.33", True),
    ([">=7.6, <7.6.5", ">=8.1.0, <8.2.1"], "9.0.0", False),
    ([], None, None),                         # no range at all: an error
])
def test_nvidia_ranges(ranges: str | list[str], version: str, expected: bool | None) -> None:
    if expected is None:
        with pytest.raises(VersionError):
            parse_ranges("nvidia", ranges).contains(version)
        return
    assert parse_ranges("nvidia", ranges).contains(version) is expected
    if isinstance(ranges, str):
        assert parse_range("nvidia", ranges).contains(version) is expected


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("8.1.0.77", "8.1.0.77", 0),
    ("8.1", "8.1.0.0", 0),                    # compare pads with zeros, it does not cut
    ("8.2.1.32", "8.2.1", 1),
    ("8.2.0.53", "8.2.1", -1),
    ("11.10.3.66", "11.4.1", 1),
    ("11.2", "11.2.1", -1),
    ("2.18.3", "2.18.10", -1),
    ("010.1", "10.1", 0),
    (" 8.1 ", "8.1", 0),
])
def test_nvidia_compare(a: str, b: str, expected: int) -> None:
    assert compare("nvidia", a, b) == expected
    assert compare("nvidia", b, a) == -expected


@pytest.mark.parametrize("text", [
    "8.x", "-1", "", "  ", "8.", ".8", "8..1", "v8.1", "8.1-1", "8.1.0a", "8 1", "8,1", "+8",
    "\uff18.1",   # a fullwidth digit is a digit to Python's \d, not to this scheme
    "8.1.0.77-1+cuda11.2",
])
def test_nvidia_bad_versions(text: str) -> None:
    with pytest.raises(VersionError) as err:
        check_version("nvidia", text)
    assert str(err.value) == f"{text!r} is not an nvidia version"
    with pytest.raises(VersionError):
        compare("nvidia", text, "8.1")
    with pytest.raises(VersionError):
        parse_range("nvidia", ">=8.1").contains(text)
    with pytest.raises(VersionError):   # even "*" needs a version it can read
        parse_ranges("nvidia", "*").contains(text)


@pytest.mark.parametrize("text", [
    "", "   ", ">=8.x", "8.1", ">=8.1,", ",<8.1", ">=8.1,,<9", "=>8.1", "=8.1", "<<8.1", "<", ">= ",
    "~=8.1", "===8.1", "*, <9", "* *", ">=8.1 <9",
])
def test_nvidia_bad_ranges(text: str) -> None:
    with pytest.raises(VersionError) as err:
        parse_range("nvidia", text)
    assert repr(text) in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(VersionError):
        parse_ranges("nvidia", [">=1", text])


def test_error_messages_are_one_readable_line() -> None:
    with pytest.raises(VersionError) as err:
        parse_range("nvidia", ">=8.1.0, <8.x")
    assert str(err.value) == "bad nvidia range '>=8.1.0, <8.x': '8.x' is not an nvidia version"
    with pytest.raises(VersionError) as err:
        parse_range("nvidia", "8.1")
    assert str(err.value) == "bad nvidia range '8.1': '8.1' has no operator (one of <, <=, >, >=, ==, !=)"
    with pytest.raises(VersionError) as err:
        check_version("nvidia", 8.1)  # type: ignore[arg-type]  # what YAML makes of an unquoted 8.1
    assert str(err.value) == "8.1 is not an nvidia version: expected a string, got float"


def test_range_and_rangeset_values() -> None:
    one = parse_range("nvidia", "  >=8.1.0, <8.2.1 ")
    assert one == Range("nvidia", ">=8.1.0, <8.2.1")
    assert one.text == ">=8.1.0, <8.2.1"
    assert str(one) == ">=8.1.0, <8.2.1"
    assert hash(one) == hash(Range("nvidia", ">=8.1.0, <8.2.1"))
    union = parse_ranges("pep440", [">=2.5, <2.9", ">=3.0"])
    assert union.ranges == (Range("pep440", ">=2.5, <2.9"), Range("pep440", ">=3.0"))
    assert str(union) == ">=2.5, <2.9 | >=3.0"
    assert str(parse_ranges("nvidia", ">=8.1.0, <8.2.1")) == ">=8.1.0, <8.2.1"
    assert parse_ranges("pep440", str(union)) == union         # str() reads back
    assert parse_ranges("pep440", (">=2.5, <2.9", ">=3.0")) == union
    with pytest.raises(VersionError):
        RangeSet(())
    with pytest.raises(VersionError):
        RangeSet((Range("nvidia", "*"), Range("deb", "*")))
    with pytest.raises(VersionError):
        parse_ranges("nvidia", 8)  # type: ignore[arg-type]
    with pytest.raises(VersionError):
        parse_ranges("nvidia", [">=8", None])  # type: ignore[list-item]


# --- pep440 -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("ranges", "version", "expected"), [
    (">=2.8, <2.10", "2.8.0", True),
    (">=2.8, <2.10", "2.9.3", True),
    (">=2.8, <2.10", "2.10.0", False),
    (">=2.8, <2.10", "2.7.4", False),
    (">=2.8, <2.10", "2.10", False),
    # pre-releases match
    (">=2.8", "2.9.0rc1", True),
    (">=2.8, <2.10", "2.9.0rc1", True),
    (">=2.8", "2.8.0rc1", False),             # 2.8.0rc1 comes before 2.8
    (">=2.8", "2.9.0.dev20240101", True),
    ("<2.10", "2.10.0rc1", False),            # PEP 440: <V excludes the pre-releases of V
    ("<2.10rc2", "2.10.0rc1", True),
    # a local label does not stop the bounds from matching
    ("<2.15", "2.14.1+cu128", True),
    (">=2.14", "2.14.1+cu128", True),
    (">=2.14, <2.15", "2.14.1+cu128", True),
    ("==2.14.1", "2.14.1+cu128", True),
    ("<=2.14.1", "2.14.1+cu128", True),
    (">2.14.1", "2.14.1+cu128", False),      # the local label is ignored: 2.14.1 is not > 2.14.1
    ("!=2.14.1", "2.14.1+cu128", False),
    ("==2.14.1+cu121", "2.14.1+cu128", False),
    (">=2.1, <2.2", "2.1.0+cpu", True),
    (">=1.12, <1.13", "1.12.1+cu113", True),
    # ~= and ===, as packaging has them
    ("~=2.8", "2.9", True),
    ("~=2.8", "3.0", False),
    ("~=2.8.1", "2.8.5", True),
    ("~=2.8.1", "2.9.0", False),
    ("===2.8.0", "2.8.0", True),
    ("===2.8.0", "2.8", False),
    ("==2.*", "2.9.1", True),
    ("!=2.9.*", "2.9.1", False),
    # *, spaces, unions, normalisation
    ("*", "0.0.1a1", True),
    (" >= 2.8 , < 2.10 ", "2.9", True),
    (">=1.0", "v1.0", True),
    ([">=2.5, <2.9", ">=3.0"], "2.9.1", False),
    ([">=2.5, <2.9", ">=3.0"], "3.1", True),
    ([">=2.5, <2.9", ">=3.0"], "2.6", True),
    # not pep440 versions
    (">=2.8", "2.x", None),
    (">=2.8", "", None),
    ("*", "latest", None),
])
def test_pep440_ranges(ranges: str | list[str], version: str, expected: bool | None) -> None:
    if expected is None:
        with pytest.raises(VersionError) as err:
            parse_ranges("pep440", ranges).contains(version)
        assert str(err.value) == f"{version!r} is not a pep440 version"
        return
    assert parse_ranges("pep440", ranges).contains(version) is expected


@pytest.mark.parametrize("text", [
    "", ">=2.x", "2.8", "=>2.8", ">=2.8,", "~=2", ">=2.*", "<<2.8", "*, <3", ">=2.8 <3",
])
def test_pep440_bad_ranges(text: str) -> None:
    with pytest.raises(VersionError) as err:
        parse_range("pep440", text)
    assert repr(text) in str(err.value)


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("2.14.1+cu128", "2.14.1", 1),
    ("2.9.0rc1", "2.9.0", -1),
    ("2.9", "2.9.0", 0),
    ("2.10", "2.9", 1),
    ("1.0.post1", "1.0", 1),
    ("1!0.1", "2.0", 1),
])
def test_pep440_compare(a: str, b: str, expected: int) -> None:
    assert compare("pep440", a, b) == expected
    assert compare("pep440", b, a) == -expected


# --- deb: dpkg's own examples -----------------------------------------------------------------

# The comparison table of dpkg's scripts/t/Dpkg_Version.t (its __DATA__ section: A B result),
# read from the dpkg source repository. Two of its rows are left out because the dpkg of Debian
# bookworm (1.21.22) rejects one of their versions outright, as does this module:
#   "0foo- 0foo 0" and "0foo- 0foo-0 0": "revision number is empty";
#   "-0.6.5 0.9.1 -1": "version number is empty".
DPKG_VERSION_T = """
1.0-1 2.0-2 -1
2.2~rc-4 2.2-1 -1
2.2-1 2.2~rc-4 1
1.0000-1 1.0-1 0
1 0:1 0
0 0:0-0 0
2:2.5 1:7.5 1
1:0foo 0foo 1
0:0foo 0foo 0
0foo 0foo 0
0foo 0fo 1
0foo~1 0foo -1
0foo~foo+Bar 0foo~foo+bar -1
0foo~~ 0foo~ -1
1~ 1 -1
12345+that-really-is-some-ver-0 12345+that-really-is-some-ver-10 -1
0foo-0 0foo-01 -1
0foo.bar 0foobar 1
0foo.bar 0foo1bar 1
0foo.bar 0foo0bar 1
0foo1bar-1 0foobar-1 -1
0foo2.0 0foo2 1
0foo2.0.0 0foo2.10.0 -1
0foo2.0 0foo2.0.0 -1
0foo2.0 0foo2.10 -1
0foo2.1 0foo2.10 -1
1.09 1.9 0
1.0.8+nmu1 1.0.8 1
3.11 3.10+nmu1 1
0.9j-20080306-4 0.9i-20070324-2 1
1.2.0~b7-1 1.2.0~b6-1 1
1.011-1 1.06-2 1
0.0.9+dfsg1-1 0.0.8+dfsg1-3 1
4.6.99+svn6582-1 4.6.99+svn6496-1 1
53 52 1
0.9.9~pre122-1 0.9.9~pre111-1 1
2:2.3.2-2+lenny2 2:2.3.2-2 1
1:3.8.1-1 3.8.GA-1 1
1.0.1+gpl-1 1.0.1-2 1
1a 1000a -1
"""

# dpkg's lib/dpkg/t/t-version.c, test_version_compare and test_version_parse, written as version
# strings: DPKG_VERSION_OBJECT(epoch, upstream, revision) is "epoch:upstream-revision".
T_VERSION_C_COMPARE = [
    ("0:1-1", "0:2-1", -1),
    ("0:1-1", "0:1-2", -1),
    ("0:0-0", "0:0-0", 0),
    ("0:0-00", "0:00-0", 0),
    ("1:2-3", "1:2-3", 0),
    ("0:0-0", "1:0-0", -1),
    ("0:a-0", "0:b-0", None),     # upstream "a" only makes dpkg warn; rejected here
    ("0:0-a", "0:0-b", -1),
    # test_version_parse: each string parses to the version object next to it
    ("0", "0:0", 0),
    ("0:0-0", "0-0", 0),
    ("0:0.0-0.0", "0.0-0.0", 0),
    ("1:0", "1:0", 0),
    ("5:1", "0:1", 1),
    ("0:0-0-0", "0:0-0-0", 0),
    ("0:0:0-0", "0:0:0-0", 0),
    ("0:0:0:0-0", "0:0:0:0-0", 0),
    ("0:0:0-0-0", "0:0:0-0-0", 0),
    ("0:0-0:0-0", "0:0-0:0-0", 0),
    ("0:09azAZ.-+~:-0", "0:09azAZ.-+~:-0", 0),
    ("0:0-azAZ09.+~", "0:0-azAZ09.+~", 0),
    ("  \t0:0-1", "0-1", 0),
    ("0:0-1\t  ", "0-1", 0),
    ("\t  0:0-1  \t", "0-1", 0),
]

# What t-version.c's test_version_parse refuses (test_error) or warns about (test_warn); dpkg only
# warns, and still compares, for an upstream version not starting with a digit and for characters
# outside the allowed sets. Both are errors here: such a version cannot be trusted to sort right.
T_VERSION_C_INVALID = [
    "", "  ", "0:", ":1.0", "1.0-", "0:0 0-1", "-1:0-1", "999999999999999999999999:0-1",
    "a:0-0", "A:0-0", "-0", "0:-0", "0:abc3-0", "0:0-0:0",
    *(f"0:0{c}-0" for c in "!#@$%&/|\\<>()[]{};,_=*^'"),
    *(f"0:0-{c}" for c in "!#@$%&/|\\<>()[]{}:;,_=*^'"),
]


def _dpkg_version_t_rows() -> list[tuple[str, str, int]]:
    rows = []
    for line in DPKG_VERSION_T.strip().splitlines():
        a, b, result = line.split()
        rows.append((a, b, int(result)))
    return rows


@pytest.mark.parametrize(("a", "b", "expected"), _dpkg_version_t_rows())
def test_deb_dpkg_version_t(a: str, b: str, expected: int) -> None:
    assert compare("deb", a, b) == expected
    assert compare("deb", b, a) == -expected


@pytest.mark.parametrize(("a", "b", "expected"), T_VERSION_C_COMPARE)
def test_deb_t_version_c(a: str, b: str, expected: int | None) -> None:
    if expected is None:
        with pytest.raises(VersionError):
            compare("deb", a, b)
        return
    assert compare("deb", a, b) == expected
    assert compare("deb", b, a) == -expected


@pytest.mark.parametrize("text", T_VERSION_C_INVALID)
def test_deb_t_version_c_invalid(text: str) -> None:
    with pytest.raises(VersionError) as err:
        check_version("deb", text)
    assert str(err.value).startswith(f"{text!r} is not a deb version: ")


def test_deb_man_page_order() -> None:
    """deb-version(7): the parts '~~', '~~a', '~', the empty part, 'a' are in sorted order."""
    ordered = ["1.0~~", "1.0~~a", "1.0~", "1.0", "1.0a"]
    for i, a in enumerate(ordered):
        for j, b in enumerate(ordered):
            assert compare("deb", a, b) == (i > j) - (i < j), (a, b)
    revisions = ["1.0-1~~", "1.0-1~~a", "1.0-1~", "1.0-1", "1.0-1a"]
    for a, b in itertools.pairwise(revisions):
        assert compare("deb", a, b) == -1


DEB_COMPARE = [
    ("1.0~rc1", "1.0", -1),
    ("1.0", "1.0-0", 0),                       # an absent revision compares as an empty one: as 0
    ("1.0", "1.0-1", -1),
    ("1.0-0.1", "1.0", 1),
    ("1:0.1", "9.9", 1),
    ("8.1.0.77-1+cuda11.2", "8.2.1.32-1+cuda11.3", -1),
    ("8.1.0.77-1+cuda11.2", "8.1.0.77-1+cuda11.8", -1),
    ("8.9.7.29-1+cuda12.2", "8.9.7.29-1+cuda11.8", 1),
    ("2.18.3-1+cuda12.1", "2.18.3-1+cuda12.1", 0),
    ("2.18.3-1+cuda12.1", "2.18.1-1+cuda12.1", 1),
    ("2.18.3-1+cuda12.1", "2.19.3-1+cuda12.2", -1),
    ("11.10.3.66-1", "11.4.1.1043-1", 1),
    ("2.36-9+deb12u4", "2.36-9+deb12u10", -1),
    ("1:2.36-9", "2.37-1", 1),
]


@pytest.mark.parametrize(("a", "b", "expected"), DEB_COMPARE)
def test_deb_compare(a: str, b: str, expected: int) -> None:
    assert compare("deb", a, b) == expected
    assert compare("deb", b, a) == -expected


@pytest.mark.parametrize(("ranges", "version", "expected"), [
    (">=8.1.0, <8.2.1", "8.1.0.77-1+cuda11.2", True),
    (">=8.1.0, <8.2.1", "8.2.1.32-1+cuda11.3", False),   # deb compares full versions: > 8.2.1
    ("<8.2.1", "8.2.1~rc1-1", True),
    ("==8.2.1.32-1+cuda11.3", "8.2.1.32-1+cuda11.3", True),
    ("==8.2.1", "8.2.1.32-1+cuda11.3", False),           # no cutting in deb
    ("!=2.18.3-1+cuda12.1", "2.18.3-1+cuda12.1", False),
    (">= 1:2.0", "2.9", False),
    ("*", "0:1", True),
    ([">=2.0, <2.1", ">=2.18.1-1+cuda12.1"], "2.18.3-1+cuda12.1", True),
    ("*", "a1.0", None),
    (">=1", "1.0-", None),
])
def test_deb_ranges(ranges: str | list[str], version: str, expected: bool | None) -> None:
    if expected is None:
        with pytest.raises(VersionError):
            parse_ranges("deb", ranges).contains(version)
        return
    assert parse_ranges("deb", ranges).contains(version) is expected


@pytest.mark.parametrize("text", ["", ">=1:", ">=a1.0", ">=1.0-", ">=1 0", "~=1.0", "1.0", ">=1.0, *"])
def test_deb_bad_ranges(text: str) -> None:
    with pytest.raises(VersionError) as err:
        parse_range("deb", text)
    assert repr(text) in str(err.value)


@pytest.mark.parametrize(("text", "reason"), [
    ("1:", "nothing after the colon"),
    (":1.0", "the epoch is empty"),
    ("a1.0", "the upstream version does not start with a digit"),
    ("1.0-", "the revision is empty"),
    ("-1.0", "the upstream version is empty"),
    ("1 0", "it has embedded spaces"),
    ("", "it is empty"),
    ("1a:1.0", "the epoch is not a number"),
    ("+1:1.0", "the epoch is not a number"),   # dpkg's strtol reads this as epoch 1; refused here
    ("2147483648:1", "the epoch is too big"),
    ("1.0:1", "the epoch is not a number"),
    ("1.0_1", "invalid character in the upstream version"),
    ("1.0:1-1", "the epoch is not a number"),
    ("1:1.0-1:1", "invalid character in the revision"),
    ("1:1.0-1-", "the revision is empty"),
    ("1.0é", "invalid character in the upstream version"),
])
def test_deb_bad_versions(text: str, reason: str) -> None:
    with pytest.raises(VersionError) as err:
        check_version("deb", text)
    assert str(err.value) == f"{text!r} is not a deb version: {reason}"


@pytest.mark.parametrize("text", ["2147483647:1", "00:1", "1:1:1", "1.0-1-1", "0:0-0:0-0", " 1.0 "])
def test_deb_good_edge_versions(text: str) -> None:
    check_version("deb", text)


# --- deb: differential against dpkg --compare-versions ----------------------------------------

SEED = 20261124
_DIGIT_RUNS = ["0", "1", "2", "9", "10", "01", "00", "12345"]
_OTHER = ["a", "b", "z", "A", "Z", ".", ".", "+", "~", "~~"]


@pytest.fixture(scope="module")
def dpkg() -> str:
    path = shutil.which("dpkg")
    if path is None:
        pytest.fail("dpkg is not installed: the deb scheme is tested against Debian's dpkg "
                    "(install it: apt-get install dpkg)")
    return path


def _run_dpkg(dpkg: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LC_ALL": "C"}
    return subprocess.run([dpkg, "--compare-versions", "--", *args], capture_output=True, text=True,
                          env=env, timeout=30, check=False)


def _dpkg_relation(dpkg: str, a: str, b: str) -> int:
    """-1/0/1 as dpkg orders a and b (gt, then lt, else eq, checked too)."""
    for op, result in (("lt", -1), ("gt", 1), ("eq", 0)):
        done = _run_dpkg(dpkg, a, op, b)
        assert done.returncode in (0, 1) and not done.stderr, (a, op, b, done.returncode, done.stderr)
        if done.returncode == 0:
            return result
    raise AssertionError(f"dpkg says {a!r} is neither lt, gt nor eq {b!r}")


def _dpkg_accepts(dpkg: str, text: str) -> bool:
    """dpkg neither refuses (exit 2) nor warns about ``text``."""
    done = _run_dpkg(dpkg, text, "eq", text)
    return done.returncode == 0 and not done.stderr


def _parallel(function, items: list) -> list:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(function, items))


def _random_upstream(rng: random.Random, epoch: bool, revision: bool) -> str:
    parts = [rng.choice(_DIGIT_RUNS)]
    for _ in range(rng.randint(0, 5)):
        parts.append(rng.choice(_DIGIT_RUNS) if rng.random() < 0.45 else rng.choice(_OTHER))
        if revision and rng.random() < 0.05:
            parts.append("-")
        if epoch and rng.random() < 0.05:
            parts.append(":")
    return "".join(parts)


def _random_revision(rng: random.Random) -> str:
    tokens = [*_DIGIT_RUNS, "a", "b", "Z", ".", "+", "~", "ubuntu", "deb12u", "+cuda"]
    return "".join(rng.choice(tokens) for _ in range(rng.randint(1, 3)))


def _random_deb_version(rng: random.Random) -> str:
    epoch = rng.choice(["", "", "", "", "0", "1", "2", "10"])
    revision = _random_revision(rng) if rng.random() < 0.6 else ""
    upstream = _random_upstream(rng, bool(epoch), bool(revision))
    return f"{epoch + ':' if epoch else ''}{upstream}{'-' + revision if revision else ''}"


def _near(rng: random.Random, version: str) -> str:
    """A version close to ``version``: the pairs where the ordering rules matter."""
    body, hyphen, revision = version.rpartition("-")
    if not hyphen:
        body, revision = version, ""
    choice = rng.randrange(9)
    if choice == 0:
        return version + rng.choice(["~", "~~", "~a", "a", "+", ".", "0", ".0"])
    if choice == 1:
        return f"{body}{rng.choice(['~', 'a', '.0', '+b1', '0'])}{hyphen}{revision}"
    if choice == 2:
        return f"{body}-{rng.choice(['0', '1', '00', '0~', '~'])}" if not hyphen else body
    if choice == 3:
        return f"0:{version}" if ":" not in version else version.split(":", 1)[1]
    if choice == 4:
        return version.replace("1", "01", 1)
    if choice == 5:
        return version.replace(".", "~", 1)
    if choice == 6:
        return version.replace("a", "A", 1).replace("+", ".", 1)
    if choice == 7:
        return version[:-1] if len(version) > 1 and version[-2] not in "-:" else version + "1"
    return _random_deb_version(rng)


def _corpus() -> list[str]:
    rng = random.Random(SEED)
    hand = [
        "8.1.0.77-1+cuda11.2", "8.2.1.32-1+cuda11.3", "8.2.1.32-1+cuda11.2", "8.9.7.29-1+cuda12.2",
        "2.18.3-1+cuda12.1", "2.18.1-1+cuda12.1", "2.18.3-1+cuda12.2", "11.10.3.66-1",
        "11.4.1.1043-1", "12.1.3.1-1", "1.0~rc1", "1.0", "1.0-0", "1.0-1", "1:0.1", "1.0~~",
        "1.0~~a", "1.0~", "1.0a", "1.0+", "1.0.", "2.36-9+deb12u4", "2.36-9+deb12u10",
        *(v for a, b, _ in _dpkg_version_t_rows() for v in (a, b)),
    ]
    versions = list(hand)
    for _ in range(220):
        base = _random_deb_version(rng)
        versions += [base, _near(rng, base)]
    versions += [_near(rng, rng.choice(hand)) for _ in range(80)]
    return sorted(set(versions))


def _valid(versions: list[str]) -> list[str]:
    good = []
    for version in versions:
        try:
            check_version("deb", version)
        except VersionError:
            continue
        good.append(version)
    return good


def test_deb_validity_agrees_with_dpkg(dpkg: str) -> None:
    """Every string this module accepts, dpkg takes without error or warning, and the other way."""
    rng = random.Random(SEED + 1)
    alphabet = "0123456789abZ.+~-:_@ \t"
    texts = _corpus() + T_VERSION_C_INVALID
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(300)]
    # dpkg --compare-versions reads an empty argument as "no version"; only parsing refuses it
    texts = sorted({t for t in texts if t.strip()})
    accepted = _parallel(functools.partial(_dpkg_accepts, dpkg), texts)
    disagree = []
    for text, dpkg_ok in zip(texts, accepted, strict=True):
        try:
            check_version("deb", text)
            ours = True
        except VersionError:
            ours = False
        if ours != dpkg_ok:
            disagree.append((text, ours, dpkg_ok))
    assert not disagree, f"(version, accepted here, accepted by dpkg): {disagree}"
    assert 50 < sum(accepted) < len(texts) - 50   # both kinds were tried


def test_deb_order_agrees_with_dpkg(dpkg: str) -> None:
    """Sorted by ``compare``, each neighbour is lt or eq the next by dpkg too: by transitivity
    the two orders agree on every pair of the corpus. Random pairs are checked directly as well."""
    versions = _valid(_corpus())
    assert len(versions) > 400
    ordered = sorted(versions, key=functools.cmp_to_key(functools.partial(compare, "deb")))
    neighbours = list(itertools.pairwise(ordered))
    rng = random.Random(SEED + 2)
    pairs = neighbours + [(rng.choice(versions), rng.choice(versions)) for _ in range(1200)]
    theirs = _parallel(lambda pair: _dpkg_relation(dpkg, *pair), pairs)
    disagree = [(a, b, compare("deb", a, b), dpkg_says)
                for (a, b), dpkg_says in zip(pairs, theirs, strict=True)
                if compare("deb", a, b) != dpkg_says]
    assert not disagree, f"(a, b, compare, dpkg): {disagree[:20]}"
    assert sum(1 for a, b in neighbours if compare("deb", a, b) == 0) > 5  # equal-but-different too


def test_deb_examples_agree_with_dpkg(dpkg: str) -> None:
    """The hand-written expectations above are what the installed dpkg says as well."""
    cases: Iterator[tuple[str, str, int]] = (
        (a, b, e) for a, b, e in [*_dpkg_version_t_rows(), *T_VERSION_C_COMPARE, *DEB_COMPARE]
        if e is not None
    )
    for a, b, expected in cases:
        assert _dpkg_relation(dpkg, a.strip(), b.strip()) == expected, (a, b)
