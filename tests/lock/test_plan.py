"""The lock plan and its files, from report documents: base proof, what is added on top, Python
pins with hashes, settings from findings, and the files' shape (no unpinned reference)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from auditor.dockerfile import check_dockerfile, instructions
from auditor.errors import InputError
from auditor.lock.fix import add_finding_settings
from auditor.lock.output import print_recipe, write_recipe
from auditor.lock.plan import LockOptions, base_candidate, plan_lock, prove_base
from auditor.lock.writers import recipe_files

ROOT = Path(__file__).resolve().parents[2]
LOCK_SCHEMA = json.loads((ROOT / "auditor/schemas/lock.schema.json").read_text())
D = "sha256:" + "d" * 64
HASH = "sha256:" + "a" * 64
OPTIONS = LockOptions(apt_sources=("deb [trusted=yes] http://127.0.0.1:8000/ ./",),
                      index_url="http://127.0.0.1:8001/simple", lock_date="2026-11-24")


def layer(n: int) -> dict[str, Any]:
    return {"index": n, "digest": f"sha256:{n:064x}", "diff_id": f"sha256:{n + 100:064x}"}


def deb(name: str, version: str) -> dict[str, Any]:
    return {"type": "deb", "name": name, "version": version, "path": "var/lib/dpkg/status", "layer": 0,
            "arch": "amd64"}


def py(name: str, version: str, path: str, source: str | None = "pip") -> dict[str, Any]:
    return {"type": "python", "name": name, "version": version, "path": path, "layer": 2, "source": source}


BASE_DOC = {
    "reference": {"canonical": "127.0.0.1:5000/lock/base:bookworm"},
    "image": {"digest": "sha256:" + "b" * 64, "created": "2026-11-01T10:00:00Z"},
    "layers": [layer(0)], "os": {"id": "debian", "version_codename": "bookworm"},
    "config": {"Env": ["PATH=/usr/bin"], "Labels": {"base.label": "x"}},
    "packages": [deb("python3", "3.11.2-1+b1"), deb("libgomp1", "12.2.0-14")],
}
SOURCE_DOC = {
    "reference": {"canonical": "docker-daemon:localhost/ml:1"},
    "image": {"digest": D, "image_id": "sha256:" + "c" * 64, "created": "2026-11-20T08:30:15Z"},
    "layers": [layer(0), layer(1), layer(2)], "os": BASE_DOC["os"],
    "config": {"Env": ["PATH=/usr/bin", "OMP_NUM_THREADS=1", "PRICE=$5"],
               "Labels": {"base.label": "x", "team": "ml"}, "Cmd": ["python3"]},
    "packages": [deb("python3", "3.11.2-1+b1"), deb("libgomp1", "12.2.0-14"), deb("jq", "1.6-2.1"),
                 py("six", "1.16.0", "usr/local/lib/python3.11/dist-packages/six-1.16.0.dist-info/METADATA"),
                 py("mylib", "0.1", "usr/local/lib/python3.11/dist-packages/mylib-0.1.dist-info/METADATA",
                    "pip: git+https://example.invalid/mylib@0123abc"),
                 py("numpy", "1.24.2", "usr/lib/python3/dist-packages/numpy-1.24.2.egg-info/PKG-INFO", None)],
    "findings": [{"id": "env-pythonhashseed-unset", "component": "python", "severity": "low"}],
    "rules": {"packs": [{"name": "environment", "version": "2026.11.0"}]},
}
FIXES = {"env-pythonhashseed-unset": {"env": {"PYTHONHASHSEED": "0"}}}


def lookup(name: str, version: str) -> tuple[str, ...] | str:
    return (HASH,) if (name, version) == ("six", "1.16.0") else f"{name} {version} is in none of the indexes"


def planned(source: dict[str, Any] = SOURCE_DOC) -> Any:
    base = prove_base(source, BASE_DOC, "127.0.0.1:5000/lock/base:bookworm")
    plan = plan_lock(source, base, BASE_DOC, OPTIONS, lookup)
    add_finding_settings(plan, source["findings"], FIXES)
    return plan


def rendered(plan: Any) -> dict[str, str]:
    return {name: "\n".join(lines()) + "\n" for name, lines in recipe_files(plan, "2026-11-24").items()}


def test_base_proved_by_leading_layers_and_pinned_by_digest() -> None:
    base = prove_base(SOURCE_DOC, BASE_DOC, "127.0.0.1:5000/lock/base:bookworm")
    assert (base.name, base.digest, base.proved, base.layers) == (
        "127.0.0.1:5000/lock/base", BASE_DOC["image"]["digest"], True, 1)


def test_a_base_that_is_not_the_images_is_refused() -> None:
    other = {**BASE_DOC, "layers": [layer(7)]}
    with pytest.raises(InputError, match="not the image's leading layers"):
        prove_base(SOURCE_DOC, other, "127.0.0.1:5000/other:1")


def test_without_a_base_the_image_itself_is_the_base_and_nothing_is_reinstalled() -> None:
    base = prove_base(SOURCE_DOC, None, None)
    assert (base.name, base.digest, base.proved) == ("localhost/ml", D, False)
    plan = plan_lock(SOURCE_DOC, base, None, OPTIONS, lookup)
    files = rendered(plan)
    assert f"FROM localhost/ml@{D}" in files["Dockerfile.lock"]
    assert "apt-get" not in files["Dockerfile.lock"] and "pip install" not in files["Dockerfile.lock"]
    assert "[recorded]\njq=1.6-2.1" in files["apt.lock"]
    assert any("No base was proved" in note for note in plan.notes)


def test_base_candidate_from_annotations_then_labels() -> None:
    annotated = {**SOURCE_DOC, "image": {**SOURCE_DOC["image"], "annotations": {
        "org.opencontainers.image.base.name": "docker.io/library/debian:bookworm",
        "org.opencontainers.image.base.digest": D}}}
    assert base_candidate(annotated) == f"docker.io/library/debian@{D}"
    labelled = {**SOURCE_DOC, "config": {"Labels": {"org.opencontainers.image.base.name": "debian:12"}}}
    assert base_candidate(labelled) == "debian:12"
    assert base_candidate(SOURCE_DOC) is None


def test_only_what_is_added_on_top_of_the_base_is_pinned() -> None:
    plan = planned()
    assert [(p.name, p.version) for p in plan.os_packages] == [("jq", "1.6-2.1")]
    assert [(p.name, p.version, p.hashes) for p in plan.python_packages] == [("six", "1.16.0", (HASH,))]
    assert [(u.name, u.reason) for u in plan.unlockable] == [
        ("mylib", "installed from git+https://example.invalid/mylib@0123abc, not an index")]
    env = {s.name: (s.value, s.why) for s in plan.env}
    assert env == {"OMP_NUM_THREADS": ("1", "the image's Env"), "PRICE": ("$5", "the image's Env"),
                   "PYTHONHASHSEED": ("0", "answers env-pythonhashseed-unset (python)")}
    labels = {s.name: s.value for s in plan.labels}
    assert labels["team"] == "ml" and "base.label" not in labels
    assert labels["io.auditor.lock.source"] == f"docker-daemon:localhost/ml:1@{D}"
    assert labels["io.auditor.rule-packs"] == "environment@2026.11.0"


def test_a_version_in_no_index_is_listed_not_dropped() -> None:
    source = copy.deepcopy(SOURCE_DOC)
    site = "usr/local/lib/python3.11/dist-packages"
    source["packages"].append(py("gone", "9.9", f"{site}/gone-9.9.dist-info/METADATA"))
    plan = planned(source)
    assert ("gone", "gone 9.9 is in none of the indexes") in [(u.name, u.reason) for u in plan.unlockable]


def test_dockerfile_lock_has_no_unpinned_reference() -> None:
    files = rendered(planned())
    dockerfile = files["Dockerfile.lock"]
    assert check_dockerfile(dockerfile, "Dockerfile.lock") == []  # the same checker as `auditor dockerfile`
    froms = [i.args for i in instructions(dockerfile) if i.keyword == "FROM"]
    assert froms == [f"127.0.0.1:5000/lock/base@{BASE_DOC['image']['digest']}"]
    assert "jq=1.6-2.1" in dockerfile and "apt-mark hold jq" in dockerfile
    assert 'ENV PRICE="\\$5"' in dockerfile  # kept literal
    assert "--require-hashes -r /auditor-lock/requirements.lock" in dockerfile
    requirements = [line for line in files["requirements.lock"].splitlines()
                    if line and not line.startswith(("#", "--", "    "))]
    assert requirements == ["six==1.16.0 \\"]
    assert f"    --hash={HASH}" in files["requirements.lock"]
    assert "--index-url http://127.0.0.1:8001/simple" in files["requirements.lock"]
    assert files["apt.lock"].splitlines()[1:] == [
        "[sources]", "deb [trusted=yes] http://127.0.0.1:8000/ ./", "[install]", "jq=1.6-2.1"]
    document = json.loads(files["lock.json"])
    jsonschema.validate(document, LOCK_SCHEMA)
    assert document["python_packages"][0]["hashes"] == [HASH]


def test_snapshot_archive_dated_when_the_packages_were_installed() -> None:
    base = prove_base(SOURCE_DOC, BASE_DOC, "127.0.0.1:5000/lock/base:bookworm")
    plan = plan_lock(SOURCE_DOC, base, BASE_DOC, LockOptions(lock_date="2026-11-24"), lookup)
    assert plan.sources.snapshot == "20261120T083015Z"  # no history: the image's creation time
    assert plan.sources.apt[0] == ("deb [check-valid-until=no] http://snapshot.debian.org/archive/debian/"
                                   "20261120T083015Z/ bookworm main")
    history = [{"created": "2026-11-01T10:00:00Z", "created_by": "debootstrap"},
               {"created": "2026-11-02T00:00:00Z", "created_by": "ENV A=1", "empty_layer": True},
               {"created": "2026-11-03T12:00:00Z", "created_by": "RUN apt-get install jq"},
               {"created": "2026-11-20T08:30:15Z", "created_by": "RUN pip install six"}]
    source = copy.deepcopy(SOURCE_DOC)
    source["history"] = history
    for package in source["packages"]:
        package["layer"] = 1 if package["name"] == "jq" else package["layer"]
    plan = plan_lock(source, base, BASE_DOC, LockOptions(lock_date="2026-11-24"), lookup)
    assert plan.sources.snapshot == "20261103T120000Z"  # the layer that wrote dpkg's status


def test_recipe_directory_is_written_whole_and_never_over_an_existing_one(tmp_path: Path) -> None:
    files = recipe_files(planned(), "2026-11-24")
    out = tmp_path / "recipe"
    write_recipe(files, out, force=False)
    assert sorted(p.name for p in out.iterdir()) == ["Dockerfile.lock", "apt.lock", "lock.json",
                                                    "requirements.lock"]
    (out / "mine.txt").write_text("kept?")
    with pytest.raises(InputError, match="exists; give --force"):
        write_recipe(files, out, force=False)
    assert (out / "mine.txt").exists()

    def broken() -> Any:
        yield "half"
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError):
        write_recipe({**files, "bad": broken}, out, force=True)
    assert (out / "mine.txt").exists()  # the previous recipe is untouched
    write_recipe(files, out, force=True)
    assert not (out / "mine.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["recipe"]  # no temporary left behind


def test_dry_run_prints_exactly_the_files(tmp_path: Path) -> None:
    import io

    files = recipe_files(planned(), "2026-11-24")
    stream = io.StringIO()
    print_recipe(files, stream)
    write_recipe(files, tmp_path / "r", force=False)
    for name in files:
        assert f"==> {name} <==\n" + (tmp_path / "r" / name).read_text() in stream.getvalue()


def test_no_package_database_is_said_and_apk_rpm_pins_are_written() -> None:
    bare = {**SOURCE_DOC, "packages": [], "findings": []}
    plan = plan_lock(bare, prove_base(bare, BASE_DOC, "127.0.0.1:5000/lock/base:bookworm"), BASE_DOC,
                     OPTIONS, lookup)
    assert "The image has no package database: no OS package is locked." in plan.notes
    assert plan.os_packages == [] and "apt-get" not in rendered(plan)["Dockerfile.lock"]
    alpine = {**SOURCE_DOC, "packages": [{**deb("musl", "1.2.3-r0"), "type": "apk"},
                                         {**deb("openblas", "0.3.21-1.el9"), "type": "rpm"}],
              "findings": []}
    files = rendered(plan_lock(alpine, prove_base(alpine, BASE_DOC, "127.0.0.1:5000/lock/base:bookworm"),
                               BASE_DOC, OPTIONS, lookup))
    assert "RUN apk add --no-cache musl=1.2.3-r0" in files["Dockerfile.lock"]
    assert "RUN dnf install -y openblas-0.3.21-1.el9 && dnf clean all" in files["Dockerfile.lock"]
    assert files["apk.lock"].splitlines()[1:] == ["[install]", "musl=1.2.3-r0"]
    assert check_dockerfile(files["Dockerfile.lock"], "Dockerfile.lock") == []


def test_verify_compares_locked_sets_and_the_numeric_stack() -> None:
    from auditor.lock.verify import verify_rebuild

    def report(packages: list[dict[str, Any]], numeric: list[dict[str, Any]]) -> dict[str, Any]:
        return {"schema_version": "1", "findings": [], "image": {"digest": D, "image_id": "x",
                "platform": "linux/amd64"}, "layers": [], "packages": packages, "numeric_stack": numeric,
                "reference": {"canonical": "x"}, "config": {}}

    openblas = [{"component": "openblas", "version": "0.3.21", "path": "usr/lib/libopenblas.so.0"}]
    source = report([deb("jq", "1.6"), py("Six", "1.16.0", "x")], openblas)
    same = report([deb("jq", "1.6"), py("six", "1.16.0", "x")], openblas)
    assert verify_rebuild(source, same, {})["ok"] is True
    drifted = report([deb("jq", "1.7"), py("six", "1.16.0", "x"), deb("extra", "1")],
                     [{**openblas[0], "version": "0.3.26"}])
    result = verify_rebuild(source, drifted, {})
    assert result["ok"] is False
    assert result["problems"] == ["numeric stack: openblas: 0.3.21 -> 0.3.26 (versions)",
                                  "OS package extra 1: in the rebuilt image only",
                                  "OS package jq: locked 1.6, rebuilt 1.7"]
    fixed = {"os_packages": [{"kind": "deb", "name": "jq", "version": "1.7", "fix": "some-rule"}],
             "changes": [{"finding": "some-rule", "component": "openblas", "change": "..."}]}
    assert verify_rebuild(source, {**drifted, "packages": drifted["packages"][:2]}, fixed)["ok"] is True
