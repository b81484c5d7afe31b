"""OS package databases: dpkg (status and distroless status.d), apk, and the sqlite rpmdb.

dpkg is checked on the real Debian fixture image against ``dpkg-query`` reading the same status
file, and on synthetic layers for what that image does not have. The rpm databases are real ones,
written by Debian's ``rpm`` tools (``rpmbuild`` and ``rpm --justdb``). No Alpine mirror is
reachable from the test machines, so the apk database is written here by hand, following the
documented format of ``lib/apk/db/installed`` (apk-tools' "installed database": one-letter keys,
records separated by blank lines, ``F:`` directories and ``R:`` files within them).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from auditor.audit import AuditOptions, AuditResult, audit
from auditor.inventory import CATALOGERS, apk, dpkg, os_release, rpm
from auditor.inventory.base import MAX_BROKEN_LISTED, Cataloger
from auditor.model import Package
from auditor.testing import LayerBuilder, build_oci_layout
from tests.engine_fixtures import DebianImage

DEBIAN_OS = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
ALPINE_OS = 'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.19.1\n'
FEDORA_OS = 'NAME="Fedora Linux"\nID=fedora\nVERSION_ID=40\n'
RHEL_OS = 'NAME="Red Hat Enterprise Linux"\nID="rhel"\nID_LIKE="fedora"\nVERSION_ID="9.4"\n'


def _audit(tmp_path: Path, layers: list[LayerBuilder],
           catalogers: list[Cataloger] | None = None) -> AuditResult:
    build_oci_layout(tmp_path / "image", layers, tag="t")
    return audit(f"oci:{tmp_path / 'image'}:t", AuditOptions(cache_dir=str(tmp_path / "cache")),
                 catalogers=catalogers)


def _by_key(result: AuditResult, kind: str) -> dict[tuple[str, str | None], Package]:
    found = [p for p in result.inventory.packages if p.type == kind]
    keyed = {(p.name, p.arch): p for p in found}
    assert len(keyed) == len(found), "a package was reported twice"
    return keyed


def _unknowns(result: AuditResult, cataloger: str) -> list[tuple[str, int | None, str]]:
    return [(u.path, u.layer, u.reason) for u in result.inventory.unknowns
            if u.cataloger == cataloger]


# -- dpkg: synthetic ----------------------------------------------------------------------------

STATUS = """\
Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u4
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system.
 .
 A continuation paragraph.

Package: libc6
Status: install ok installed
Architecture: i386
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u4
Description: GNU C Library: Shared libraries (i386)

Package: bsdutils
Status: install ok installed
Architecture: amd64
Source: util-linux (2.38.1-5+deb12u1)
Version: 1:2.38.1-5+deb12u1+b1
Description: basic utilities from 4.4BSD-Lite

Package: libcudnn8
Status: hold ok installed
Architecture: amd64
Version: 8.9.7.29-1+cuda12.2
Description: cuDNN runtime libraries, pinned with apt-mark hold

Package: oldpkg
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1
Conffiles:
 /etc/oldpkg.conf 0123456789abcdef0123456789abcdef

Package: halfway
Status: install reinstreq half-installed
Architecture: amd64
Version: 2.0-1

Package: noversion
Status: install ok installed
Architecture: amd64

Status: install ok installed
Version: 3.0

Package: purged
Status: purge ok not-installed
Priority: optional
"""


def _debian_layers(status: str | bytes = STATUS) -> list[LayerBuilder]:
    base = (LayerBuilder().dir("etc").file("etc/os-release", DEBIAN_OS)
            .dir("usr").dir("usr/lib").dir("usr/lib/x86_64-linux-gnu").dir("usr/bin")
            .symlink("lib", "usr/lib"))
    db = (LayerBuilder().dir("var").dir("var/lib").dir("var/lib/dpkg").dir("var/lib/dpkg/info")
          .file("var/lib/dpkg/status", status)
          .file("var/lib/dpkg/info/libc6:amd64.list",
                "/.\n/lib\n/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu/libc.so.6\n")
          .file("var/lib/dpkg/info/libc6:i386.list", "/.\n/lib/i386-linux-gnu/libc.so.6\n")
          .file("var/lib/dpkg/info/bsdutils.list", "/.\n/usr\n/usr/bin\n/usr/bin/logger\n")
          .file("var/lib/dpkg/info/oldpkg.list", "/etc/oldpkg.conf\n"))
    return [base, db]


def test_dpkg_status_installed_packages_with_source_arch_files_and_layer(tmp_path: Path) -> None:
    result = _audit(tmp_path, _debian_layers())
    found = _by_key(result, "deb")
    assert sorted(found) == [("bsdutils", "amd64"), ("libc6", "amd64"), ("libc6", "i386"),
                             ("libcudnn8", "amd64")]
    libc = found[("libc6", "amd64")]
    assert (libc.version, libc.source, libc.path, libc.layer) == (
        "2.36-9+deb12u4", "glibc", "var/lib/dpkg/status", 1)
    assert libc.purl == ("pkg:deb/debian/libc6@2.36-9%2Bdeb12u4"
                         "?arch=amd64&distro=debian-12&upstream=glibc")
    # ownership from NAME:ARCH.list; the directories (through the lib -> usr/lib link) left out
    assert libc.files == ("lib/x86_64-linux-gnu/libc.so.6",)
    assert found[("libc6", "i386")].files == ("lib/i386-linux-gnu/libc.so.6",)
    bsd = found[("bsdutils", "amd64")]
    assert (bsd.version, bsd.source, bsd.files) == ("1:2.38.1-5+deb12u1+b1", "util-linux",
                                                     ("usr/bin/logger",))
    assert bsd.purl == ("pkg:deb/debian/bsdutils@1:2.38.1-5%2Bdeb12u1%2Bb1?arch=amd64"
                        "&distro=debian-12&upstream=util-linux%402.38.1-5%2Bdeb12u1")
    assert found[("libcudnn8", "amd64")].files == ()  # held, installed, no .list in this image
    assert _unknowns(result, "dpkg") == [
        ("var/lib/dpkg/status", 1, "stanza at line 47 has no Version field"),
        ("var/lib/dpkg/status", 1, "stanza at line 51 has no Package field"),
    ]


def test_dpkg_reads_os_release_itself_without_that_cataloger(tmp_path: Path) -> None:
    result = _audit(tmp_path, _debian_layers(), catalogers=[dpkg.CATALOGER])
    assert result.inventory.os is None
    purls = {p.purl for p in result.inventory.packages}
    assert "pkg:deb/debian/libcudnn8@8.9.7.29-1%2Bcuda12.2?arch=amd64&distro=debian-12" in purls


def test_dpkg_package_layer_is_the_layer_that_last_wrote_the_database(tmp_path: Path) -> None:
    upgrade = LayerBuilder().file("var/lib/dpkg/status", STATUS.replace("2.36-9+deb12u4",
                                                                        "2.36-9+deb12u7"))
    result = _audit(tmp_path, [*_debian_layers(), upgrade])
    libc = _by_key(result, "deb")[("libc6", "amd64")]
    assert (libc.version, libc.layer) == ("2.36-9+deb12u7", 2)
    assert libc.files == ("lib/x86_64-linux-gnu/libc.so.6",)  # the .list of the lower layer


def test_dpkg_distroless_status_d(tmp_path: Path) -> None:
    """gcr.io/distroless: one file per package under status.d, md5sums beside it, no Status."""
    base_files = ("Package: base-files\nVersion: 12.4+deb12u5\nArchitecture: amd64\n"
                  "Maintainer: Santiago Vila <sanvila@debian.org>\n")
    libssl = ("Package: libssl3\nSource: openssl\nVersion: 3.0.11-1~deb12u2\n"
              "Architecture: amd64\nMulti-Arch: same\nDescription: Secure Sockets Layer toolkit\n"
              " - shared libraries\n")
    layer = (LayerBuilder().dir("etc").file("etc/os-release", DEBIAN_OS)
             .dir("var").dir("var/lib").dir("var/lib/dpkg").dir("var/lib/dpkg/status.d")
             .file("var/lib/dpkg/status.d/base-files", base_files)
             .file("var/lib/dpkg/status.d/base-files.md5sums",
                   "d41d8cd98f00b204e9800998ecf8427e  etc/debian_version\n"
                   "0123456789abcdef0123456789abcdef  usr/share/doc/base-files/copyright\n")
             .file("var/lib/dpkg/status.d/libssl3", libssl)
             .file("var/lib/dpkg/status.d/broken", "Description: no package here\n"))
    result = _audit(tmp_path, [layer])
    found = _by_key(result, "deb")
    assert sorted(found) == [("base-files", "amd64"), ("libssl3", "amd64")]
    assert found[("base-files", "amd64")].files == ("etc/debian_version",
                                                    "usr/share/doc/base-files/copyright")
    assert found[("base-files", "amd64")].path == "var/lib/dpkg/status.d/base-files"
    ssl = found[("libssl3", "amd64")]
    assert (ssl.source, ssl.layer) == ("openssl", 0)
    assert ssl.purl == ("pkg:deb/debian/libssl3@3.0.11-1~deb12u2"
                        "?arch=amd64&distro=debian-12&upstream=openssl")
    assert _unknowns(result, "dpkg") == [
        ("var/lib/dpkg/status.d/broken", 0, "stanza at line 1 has no Package or Version field")]


def test_dpkg_status_not_utf8_is_recorded_and_read(tmp_path: Path) -> None:
    latin1 = STATUS.replace("4.4BSD-Lite", "4.4BSD-Lite, Jürgen's").encode("latin-1")
    result = _audit(tmp_path, _debian_layers(latin1))
    assert ("bsdutils", "amd64") in _by_key(result, "deb")
    assert ("var/lib/dpkg/status", 1, "not UTF-8 text; read as Latin-1") in _unknowns(result, "dpkg")


def test_dpkg_status_of_random_bytes_gives_unknowns_not_a_crash(tmp_path: Path) -> None:
    garbage = random.Random(7).randbytes(20000)
    result = _audit(tmp_path, _debian_layers(garbage + b"\n\nPackage: x\nStatus: install ok\n"))
    assert _by_key(result, "deb") == {}
    assert _unknowns(result, "dpkg")[0][2] == "not UTF-8 text; read as Latin-1"


def test_dpkg_broken_stanzas_are_listed_up_to_a_bound(tmp_path: Path) -> None:
    status = "".join(f"Status: install ok installed\nVersion: {i}\n\n" for i in range(500))
    result = _audit(tmp_path, _debian_layers(status))
    unknowns = _unknowns(result, "dpkg")
    assert len(unknowns) == MAX_BROKEN_LISTED + 1
    assert unknowns[-1][2] == "400 more broken entries, not listed one by one"


def test_iter_stanzas_continuations_duplicates_and_junk() -> None:
    text = ("Package: a\nVersion: 1\nDescription: one\n two\n\tthree\nPackage: dup\n"
            "junk line without colon\n\n\n \n# comment\nPackage: b\nVersion: 2\n")
    stanzas = list(dpkg.iter_stanzas(text))
    assert [s.fields for s in stanzas] == [
        {"Package": "a", "Version": "1", "Description": "one\ntwo\nthree"},
        {"Package": "b", "Version": "2"}]
    assert [s.line for s in stanzas] == [1, 12]
    assert dpkg.split_source("glibc (2.36-9)") == ("glibc", "2.36-9")
    assert dpkg.split_source("acl") == ("acl", None)


# -- dpkg: the real Debian image ---------------------------------------------------------------

def _layer_files(image: DebianImage, wanted: set[str]) -> dict[str, bytes]:
    """Read files out of the fixture image's layer blobs with tarfile (test-side truth only)."""
    index = json.loads((image.layout / "index.json").read_text())
    blobs = image.layout / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_text())
    out: dict[str, bytes] = {}
    for layer in manifest["layers"]:
        with tarfile.open(blobs / layer["digest"].split(":")[1], "r|*") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if name in wanted and member.isfile():
                    out[name] = tar.extractfile(member).read()  # type: ignore[union-attr]
    return out


@pytest.mark.slow
def test_dpkg_on_the_debian_image_agrees_with_dpkg_query(debian_image: DebianImage,
                                                         tmp_path: Path) -> None:
    if shutil.which("dpkg-query") is None:
        pytest.fail("dpkg-query is needed for this test (Debian's dpkg package)")
    lists = {"var/lib/dpkg/info/python3.11-minimal.list", "var/lib/dpkg/info/libc6:amd64.list"}
    files = _layer_files(debian_image, {"var/lib/dpkg/status", *lists})
    admin = tmp_path / "admindir"
    admin.mkdir()
    (admin / "status").write_bytes(files["var/lib/dpkg/status"])
    query = subprocess.run(
        ["dpkg-query", f"--admindir={admin}", "-W",
         "-f", "${Package}\t${Version}\t${Architecture}\t${db:Status-Abbrev}\n"],
        capture_output=True, text=True, check=True, timeout=60)
    expected = {tuple(line.split("\t")[:3]) for line in query.stdout.splitlines()
                if line.split("\t")[3].strip() in ("ii", "hi")}
    assert len(expected) > 100

    result = audit(debian_image.oci_ref, AuditOptions(cache_dir=str(tmp_path / "cache")))
    debs = [p for p in result.inventory.packages if p.type == "deb"]
    assert {(p.name, p.version, p.arch) for p in debs} == expected
    assert len(debs) == len(expected)
    assert _unknowns(result, "dpkg") == []
    assert all(p.layer == 0 and p.path == "var/lib/dpkg/status" for p in debs)
    assert all(p.purl.startswith("pkg:deb/debian/") and "distro=debian-12" in p.purl
               for p in debs)
    by_name = {p.name: p for p in debs}
    for path in lists:
        owner = path.rsplit("/", 1)[1].removesuffix(".list").split(":")[0]
        recorded = [line.strip("/") for line in files[path].decode().splitlines()]
        owned = set(by_name[owner].files)
        assert owned <= set(recorded)
        assert {p for p in recorded if result.index.lookup(p) is not None
                and result.index.lookup(p).type != "dir"} <= owned  # type: ignore[union-attr]
    assert "usr/bin/python3.11" in by_name["python3.11-minimal"].files
    assert by_name["libc6"].source == "glibc"


# -- apk -----------------------------------------------------------------------------------------

APK_INSTALLED = """\
C:Q1w2Zr7l1Yh5eWSCh6OjpVlDs0zJY=
P:musl
V:1.2.4_git20230717-r4
A:x86_64
S:407180
I:663552
T:the musl c library (libc) implementation
U:https://musl.libc.org/
L:MIT
o:musl
m:Timo Teräs <timo.teras@iki.fi>
t:1703156545
c:9c8c52ba4eaeaa54bcbbe1d5e8e2c5c0ab1e5b13
p:so:libc.musl-x86_64.so.1=1
F:lib
R:ld-musl-x86_64.so.1
a:0:0:755
Z:Q1hyGdqfDFdDiIjAFt5rDv2J3pXv8=
R:libc.musl-x86_64.so.1
a:0:0:777
Z:Q17yJ3JFNypA4mxhJJr0ou6CzsJVI=

C:Q1OeuGxMX7Pgh7jKfcGSSE6M3v3UU=
P:musl-utils
V:1.2.4_git20230717-r4
A:x86_64
S:36938
L:MIT AND BSD-2-Clause AND GPL-2.0-or-later
o:musl
D:scanelf so:libc.musl-x86_64.so.1
F:sbin
R:ldconfig
a:0:0:755
F:usr/bin
R:getconf
R:ldd

P:ssl_client
V:3.1.4-r5
A:x86_64
L:GPL-2.0-only BSD
o:busybox
F:usr/bin
R:ssl_client

C:Q1brokenrecord=
V:0.0-r0
A:x86_64

P:ca-certificates-bundle
V:20240226-r0
A:x86_64
L:MPL-2.0 AND MIT
o:ca-certificates
F:etc/ssl/certs
R:ca-certificates.crt
"""


def _alpine_layers(installed: str | bytes = APK_INSTALLED) -> list[LayerBuilder]:
    base = LayerBuilder().dir("etc").file("etc/os-release", ALPINE_OS)
    db = (LayerBuilder().dir("lib").dir("lib/apk").dir("lib/apk/db")
          .file("lib/apk/db/installed", installed))
    return [base, db]


def test_apk_installed_database(tmp_path: Path) -> None:
    result = _audit(tmp_path, _alpine_layers())
    found = _by_key(result, "apk")
    assert sorted(name for name, _ in found) == ["ca-certificates-bundle", "musl", "musl-utils",
                                                 "ssl_client"]
    musl = found[("musl", "x86_64")]
    assert (musl.version, musl.source, musl.licenses, musl.layer, musl.path) == (
        "1.2.4_git20230717-r4", "musl", ("MIT",), 1, "lib/apk/db/installed")
    assert musl.files == ("lib/ld-musl-x86_64.so.1", "lib/libc.musl-x86_64.so.1")
    assert musl.purl == "pkg:apk/alpine/musl@1.2.4_git20230717-r4?arch=x86_64&distro=alpine-3.19.1"
    utils = found[("musl-utils", "x86_64")]
    assert utils.files == ("sbin/ldconfig", "usr/bin/getconf", "usr/bin/ldd")
    assert utils.licenses == ("MIT AND BSD-2-Clause AND GPL-2.0-or-later",)
    assert utils.purl == ("pkg:apk/alpine/musl-utils@1.2.4_git20230717-r4"
                          "?arch=x86_64&distro=alpine-3.19.1&upstream=musl")
    assert found[("ssl_client", "x86_64")].licenses == ("GPL-2.0-only", "BSD")
    assert _unknowns(result, "apk") == [("lib/apk/db/installed", 1,
                                         "record at line 46 has no P: line")]


def test_apk_database_not_utf8_and_garbage(tmp_path: Path) -> None:
    latin1 = APK_INSTALLED.replace("Teräs", "Ter\xe4s").encode("latin-1")
    result = _audit(tmp_path / "a", _alpine_layers(latin1))
    assert len(_by_key(result, "apk")) == 4
    assert ("lib/apk/db/installed", 1, "not UTF-8 text; read as Latin-1") in _unknowns(result, "apk")
    garbage = random.Random(3).randbytes(5000)
    result = _audit(tmp_path / "b", _alpine_layers(garbage), catalogers=[apk.CATALOGER])
    assert all(p.type == "apk" for p in result.inventory.packages)  # whatever it made of it
    assert _unknowns(result, "apk")


# -- rpm -----------------------------------------------------------------------------------------

SPECS = {
    "hello-auditor": """\
Name: hello-auditor
Version: 1.2.3
Release: 4.fc40
Epoch: 2
Summary: A tiny test package
License: MIT AND Apache-2.0
BuildArch: noarch

%description
A tiny package for the auditor's rpm tests.

%install
mkdir -p %{buildroot}/usr/share/hello-auditor %{buildroot}/etc
echo hi > %{buildroot}/usr/share/hello-auditor/README
echo conf > %{buildroot}/etc/hello-auditor.conf

%files
/usr/share/hello-auditor
%config /etc/hello-auditor.conf
""",
    "tiny-tool": """\
%global debug_package %{nil}
Name: tiny-tool
Version: 0.9
Release: 1
Summary: Another tiny test package
License: GPL-2.0-or-later
BuildArch: x86_64

%description
Another tiny package.

%install
mkdir -p %{buildroot}/usr/bin
printf '#!/bin/sh\\necho tiny\\n' > %{buildroot}/usr/bin/tiny-tool

%files
%attr(0755,root,root) /usr/bin/tiny-tool
""",
}


@dataclass(frozen=True)
class RpmDb:
    sqlite: bytes  # the rpmdb.sqlite file rpm wrote (WAL mode, as rpm leaves it)


@pytest.fixture(scope="session")
def rpmdb(tmp_path_factory: pytest.TempPathFactory) -> RpmDb:
    """A real sqlite rpmdb: two packages built with rpmbuild, installed with ``rpm --justdb``."""
    for tool in ("rpm", "rpmbuild"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (apt-get install rpm; scripts/setup-system.sh)")
    work = tmp_path_factory.mktemp("rpm")
    env = {**os.environ, "HOME": str(work)}  # rpm reads ~/.rpmmacros; none of the user's
    top, db = work / "top", work / "db"
    (top / "SPECS").mkdir(parents=True)
    db.mkdir()
    defines = ["--define", f"_topdir {top}", "--define", "_db_backend sqlite"]
    for name, spec in SPECS.items():
        (top / "SPECS" / f"{name}.spec").write_text(spec)
        subprocess.run(["rpmbuild", *defines, "-bb", str(top / "SPECS" / f"{name}.spec")],
                       env=env, capture_output=True, check=True, timeout=120)
    subprocess.run(["rpm", *defines, "--dbpath", str(db), "--initdb"], env=env,
                   capture_output=True, check=True, timeout=60)
    packages = sorted(str(p) for p in (top / "RPMS").rglob("*.rpm"))
    assert len(packages) == 2
    subprocess.run(["rpm", *defines, "--dbpath", str(db), "-i", "--justdb", "--nodeps",
                    "--ignoreos", "--ignorearch", *packages],
                   env=env, capture_output=True, check=True, timeout=60)
    return RpmDb((db / "rpmdb.sqlite").read_bytes())


def _rpm_layers(database: bytes, os_release_text: str = FEDORA_OS,
                directory: str = "usr/lib/sysimage/rpm") -> list[LayerBuilder]:
    base = LayerBuilder().dir("etc").file("etc/os-release", os_release_text)
    parts = directory.split("/")
    db = LayerBuilder()
    for i in range(1, len(parts) + 1):
        db.dir("/".join(parts[:i]))
    db.file(f"{directory}/rpmdb.sqlite", database)
    if directory == "usr/lib/sysimage/rpm":  # Fedora's compatibility link
        db.dir("var").dir("var/lib").symlink("var/lib/rpm", "../../usr/lib/sysimage/rpm")
    return [base, db]


def test_rpm_sqlite_database_from_real_rpm_tools(tmp_path: Path, rpmdb: RpmDb) -> None:
    assert rpmdb.sqlite[18:20] == b"\x02\x02"  # rpm left it in WAL mode
    result = _audit(tmp_path, _rpm_layers(rpmdb.sqlite))
    found = _by_key(result, "rpm")  # once: var/lib/rpm is a link to the same database
    assert sorted(found) == [("hello-auditor", "noarch"), ("tiny-tool", "x86_64")]
    hello = found[("hello-auditor", "noarch")]
    assert (hello.version, hello.source, hello.licenses, hello.layer, hello.path) == (
        "2:1.2.3-4.fc40", "hello-auditor-1.2.3-4.fc40.src.rpm", ("MIT AND Apache-2.0",), 1,
        "usr/lib/sysimage/rpm/rpmdb.sqlite")
    assert hello.files == ("etc/hello-auditor.conf", "usr/share/hello-auditor",
                           "usr/share/hello-auditor/README")
    assert hello.purl == ("pkg:rpm/fedora/hello-auditor@1.2.3-4.fc40?arch=noarch&distro=fedora-40"
                          "&epoch=2&upstream=hello-auditor-1.2.3-4.fc40.src.rpm")
    tool = found[("tiny-tool", "x86_64")]
    assert (tool.version, tool.files) == ("0.9-1", ("usr/bin/tiny-tool",))
    assert tool.purl == ("pkg:rpm/fedora/tiny-tool@0.9-1?arch=x86_64&distro=fedora-40"
                         "&upstream=tiny-tool-0.9-1.src.rpm")
    assert _unknowns(result, "rpm") == []


def test_rpm_var_lib_rpm_on_rhel_is_namespaced_redhat(tmp_path: Path, rpmdb: RpmDb) -> None:
    result = _audit(tmp_path, _rpm_layers(rpmdb.sqlite, RHEL_OS, "var/lib/rpm"))
    purls = sorted(p.purl for p in result.inventory.packages)
    assert purls[1] == ("pkg:rpm/redhat/tiny-tool@0.9-1?arch=x86_64&distro=rhel-9.4"
                        "&upstream=tiny-tool-0.9-1.src.rpm")


def _real_blobs(database: bytes) -> list[bytes]:
    rows = rpm.read_sqlite_rpmdb(database, lambda reason: pytest.fail(reason))
    return [blob for _, blob in rows]


def _sqlite_with(tmp_path: Path, blobs: list[object]) -> bytes:
    """An rpmdb-shaped sqlite file holding the given blobs (written by the test, read as bytes)."""
    path = tmp_path / "made.sqlite"
    path.unlink(missing_ok=True)
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, "
                           "blob BLOB NOT NULL)")
        connection.executemany("INSERT INTO Packages (blob) VALUES (?)", [(b,) for b in blobs])
    connection.close()
    return path.read_bytes()


def test_rpm_garbage_header_is_an_unknown_and_the_others_are_read(tmp_path: Path,
                                                                  rpmdb: RpmDb) -> None:
    good = _real_blobs(rpmdb.sqlite)
    database = _sqlite_with(tmp_path, [good[0], os.urandom(300), good[1][:40], "text, not a blob"])
    result = _audit(tmp_path, _rpm_layers(database), catalogers=[os_release.CATALOGER,
                                                                 rpm.CATALOGER])
    assert len(result.inventory.packages) == 1
    reasons = sorted(reason for _, _, reason in _unknowns(result, "rpm"))
    assert len(reasons) == 3
    assert reasons[0].startswith("package header 2: ")
    assert reasons[1].startswith("package header 3: ") and "truncated" in reasons[1]
    assert reasons[2] == "row hnum=4: blob is not binary"


def test_rpm_truncated_and_non_sqlite_databases(tmp_path: Path, rpmdb: RpmDb) -> None:
    half = rpmdb.sqlite[: len(rpmdb.sqlite) // 2]
    result = _audit(tmp_path / "a", _rpm_layers(half), catalogers=[rpm.CATALOGER])
    assert result.inventory.packages == []
    [(path, layer, reason)] = _unknowns(result, "rpm")
    assert (path, layer) == ("usr/lib/sysimage/rpm/rpmdb.sqlite", 1)
    assert reason.startswith("SQLite: ")
    result = _audit(tmp_path / "b", _rpm_layers(b"\x00" * 4096), catalogers=[rpm.CATALOGER])
    assert _unknowns(result, "rpm") == [("usr/lib/sysimage/rpm/rpmdb.sqlite", 1,
                                         "not an SQLite database (bad magic)")]


def test_rpm_berkeley_db_and_ndb_are_reported_not_guessed(tmp_path: Path) -> None:
    layer = (LayerBuilder().dir("var").dir("var/lib").dir("var/lib/rpm")
             .file("var/lib/rpm/Packages", b"\x00\x06\x15\x61" + os.urandom(4092))
             .dir("usr").dir("usr/lib").dir("usr/lib/sysimage").dir("usr/lib/sysimage/rpm")
             .file("usr/lib/sysimage/rpm/Packages.db", b"RpmP" + os.urandom(60)))
    result = _audit(tmp_path, [layer], catalogers=[rpm.CATALOGER])
    assert result.inventory.packages == []
    assert _unknowns(result, "rpm") == [
        ("var/lib/rpm/Packages", 0,
         "rpm database in Berkeley DB format is not read (only rpmdb.sqlite is)"),
        ("usr/lib/sysimage/rpm/Packages.db", 0,
         "rpm database in NDB format is not read (only rpmdb.sqlite is)")]


def test_rpm_header_parser_is_bounded_on_hostile_blobs(rpmdb: RpmDb) -> None:
    blob = _real_blobs(rpmdb.sqlite)[0]
    assert rpm.read_header(blob).name in ("hello-auditor", "tiny-tool")
    hostile = [b"", b"\x00" * 7, b"\xff\xff\xff\xff\x00\x00\x00\x10", b"\x00\x00\x00\x01" + b"\x7f" * 4,
               b"\x00\x00\x00\x00\x00\x00\x00\x00", blob[:len(blob) // 2]]
    for bad in hostile:
        with pytest.raises(rpm.HeaderError):
            rpm.read_header(bad)
    rng = random.Random(11)
    for _ in range(2000):  # mutated real headers: a HeaderError or a header, nothing else
        mutated = bytearray(blob)
        for _ in range(rng.randrange(1, 8)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        with contextlib.suppress(rpm.HeaderError):
            rpm.read_header(bytes(mutated))


def test_rpm_mutated_sqlite_files_never_raise(rpmdb: RpmDb) -> None:
    rng = random.Random(5)
    for _ in range(200):
        mutated = bytearray(rpmdb.sqlite)
        for _ in range(rng.randrange(1, 32)):
            mutated[rng.randrange(100, len(mutated))] = rng.randrange(256)
        errors: list[str] = []
        for _, blob in rpm.read_sqlite_rpmdb(bytes(mutated), errors.append):
            with contextlib.suppress(rpm.HeaderError):
                rpm.read_header(blob)


def _syft_purls(layout: Path, work: Path) -> set[str]:
    """The purls syft (the reference cataloger, ``.venv/bin/syft``) finds in an OCI layout."""
    syft = Path(sys.executable).parent / "syft"
    if not syft.exists():
        pytest.fail(f"{syft} is missing: install the dev lock (requirements-dev.lock)")
    output = work / "syft.json"
    subprocess.run([str(syft), "scan", f"oci-dir:{layout}", "-q", "-o", f"syft-json={output}"],
                   env={**os.environ, "SYFT_CHECK_FOR_APP_UPDATE": "false"}, check=True,
                   capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
    return {a["purl"] for a in json.loads(output.read_text())["artifacts"]}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["apk", "rpm"])
def test_apk_and_rpm_agree_with_syft(kind: str, tmp_path: Path, rpmdb: RpmDb) -> None:
    """Same packages, same purls, as syft reads from the same databases (it drops the broken
    apk record silently; we record it as an Unknown)."""
    layers = _alpine_layers() if kind == "apk" else _rpm_layers(rpmdb.sqlite)
    result = _audit(tmp_path, layers)
    ours = {p.purl for p in result.inventory.packages if p.type == kind}
    assert len(ours) == (4 if kind == "apk" else 2)
    assert ours == _syft_purls(tmp_path / "image", tmp_path)


def test_catalogers_are_registered_after_os_release() -> None:
    names = [c.name for c in CATALOGERS]
    for name in ("dpkg", "apk", "rpm"):
        assert names.index(name) > names.index("os-release")
