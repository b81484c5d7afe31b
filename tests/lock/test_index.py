"""Hashes for requirements.lock from a real PEP 503 index served on loopback (http.server over
the project's own simple-index directory of real wheels), and a PEP 691 JSON page."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from auditor.lock.index import apt_versions, files_of_page, hash_lookup
from fixtures.elf_libs import wheel
from fixtures.package_servers import serve_directory, simple_index


def test_hashes_of_the_release_from_a_served_simple_index(tmp_path: Path) -> None:
    wheels = [wheel("six==1.16.0"), wheel("six==1.17.0")]
    simple_index(wheels, tmp_path / "index")
    with serve_directory(tmp_path / "index") as url:
        lookup = hash_lookup(f"{url}/simple")
        expected = "sha256:" + hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        assert lookup("six", "1.16.0") == (expected,)
        assert lookup("Six", "1.16") == (expected,)  # names and versions compare normalized
        assert lookup("six", "1.15.0") == ("six 1.15.0 is in none of the indexes given "
                                           f"({url}/simple)")
        assert lookup("not-there", "1.0").startswith("not-there 1.0 is in none")
    unreachable = hash_lookup(url + "/simple")("six", "1.16.0")  # the server is gone
    assert isinstance(unreachable, str) and unreachable.startswith("no index answered")


def test_pep_691_json_pages() -> None:
    body = json.dumps({"files": [{"filename": "six-1.16.0-py2.py3-none-any.whl",
                                  "hashes": {"sha256": "ab" * 32}}]}).encode()
    assert files_of_page(body, "application/vnd.pypi.simple.v1+json", "https://x/simple/six/") == [
        ("six-1.16.0-py2.py3-none-any.whl", "ab" * 32)]


def test_apt_versions_of_a_served_flat_repository_and_pins_it_lacks(tmp_path: Path) -> None:
    from auditor.lock.model import Base, LockPlan, Pin, Sources
    from auditor.lock.plan import check_apt_versions
    from fixtures.debs import debian_debs
    from fixtures.package_servers import apt_flat_repository

    debs = debian_debs(("libonig5",), "lock")
    apt_flat_repository(debs, tmp_path / "repo")
    version = subprocess.run(["dpkg-deb", "-f", str(debs[0]), "Version"], capture_output=True,
                             text=True, check=True).stdout.strip()
    with serve_directory(tmp_path / "repo") as url:
        line = f"deb [trusted=yes] {url}/ ./"
        offered, unread = apt_versions([line])
        assert offered == {"libonig5": {version}} and unread == []
        plan = LockPlan(source={}, os=None, base=Base("b", "sha256:" + "0" * 64, True, "", 1),
                        sources=Sources(apt=(line,)),
                        os_packages=[Pin("deb", "libonig5", version, "status"),
                                     Pin("deb", "libonig5-old", "1.0", "status")])
        check_apt_versions(plan, offered, unread)
        assert [p.name for p in plan.os_packages] == ["libonig5"]
        assert [(u.name, u.reason) for u in plan.unlockable] == [
            ("libonig5-old", "not in the apt sources given")]
    offered, unread = apt_versions([line])  # the server is gone: said, nothing checked
    assert unread == [line]
