"""Reading packs: every problem named by file, line and rule; remote packs only when pinned."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from auditor.errors import DigestMismatchError, InputError
from auditor.rules.pack import PackError, load_packs, pack_files, parse_pack

GOOD = """\
format: 1
pack:
  name: extra
  version: "1.2"
  date: 2026-11-24
rules:
  - id: extra-nccl
    title: An NCCL hazard
    severity: medium
    confidence: reported
    components: [nccl]
    affected:
      - component: nccl
        versions: "<2.18.3"
        fixed_in: "2.18.3"
    effect: Something goes wrong.
    remediation: Upgrade NCCL to 2.18.3.
    references:
      - url: https://github.com/NVIDIA/nccl/commit/ea38312273
    tests:
      trigger: [{components: {nccl: "2.18.1"}}]
      clean: [{components: {nccl: "2.18.3"}}]
"""


def problems_of(text: str, source: str = "p.yaml") -> list[str]:
    pack, problems = parse_pack(text.encode(), source)
    assert (pack is None) == bool(problems)
    return [str(p) for p in problems]


def test_a_good_pack_reads_with_its_date_as_written() -> None:
    pack, problems = parse_pack(GOOD.encode(), "good.yaml")
    assert problems == [] and pack is not None
    assert (pack.name, pack.version, pack.date, pack.ref) == ("extra", "1.2", "2026-11-24", "extra@1.2")
    (rule,) = pack.rules
    assert rule.line == 7 and rule.pack == "extra@1.2" and rule.affected[0].fixed_in == "2.18.3"
    assert pack.sha256 == hashlib.sha256(GOOD.encode()).hexdigest()


def test_schema_error_names_file_line_and_rule() -> None:
    text = GOOD.replace("severity: medium", "severity: urgent")
    assert problems_of(text) == ["p.yaml:9: rule extra-nccl: rules/0/severity: 'urgent' is not one of "
                                 "['critical', 'high', 'medium', 'low', 'info']"]


def test_missing_field_is_located_at_the_rule() -> None:
    (problem,) = problems_of(GOOD.replace("    effect: Something goes wrong.\n", ""))
    assert problem.startswith("p.yaml:7: rule extra-nccl: rules/0: 'effect' is a required property")


def test_unknown_scheme_is_an_error_naming_the_rule() -> None:
    fixed = '        fixed_in: "2.18.3"\n'
    text = GOOD.replace(fixed, fixed + "        scheme: semver\n")
    (problem,) = problems_of(text)
    assert problem.startswith("p.yaml:16: rule extra-nccl: rules/0/affected/0/scheme: 'semver' is not one of")


@pytest.mark.parametrize(("bad", "expected"), [
    ('versions: "<2.18.x"', "p.yaml:13: rule extra-nccl: "),
    ('versions: "~2.18"', "p.yaml:13: rule extra-nccl: "),
])
def test_unparsable_range_is_an_error(bad: str, expected: str) -> None:
    (problem,) = problems_of(GOOD.replace('versions: "<2.18.3"', bad))
    assert problem.startswith(expected) and "2.18" in problem


def test_package_without_a_default_scheme_needs_one() -> None:
    (problem,) = problems_of(GOOD.replace("      - component: nccl", "      - package: rpm:libnccl"))
    assert "no default versioning scheme for rpm packages" in problem


def test_bad_regex_and_duplicate_keys_and_yaml_errors() -> None:
    text = GOOD.replace("    effect:", "    when: {env: {name: X, matches: '(['}}\n    effect:")
    assert "invalid regex" in problems_of(text)[0]
    assert problems_of(GOOD.replace("    title: An NCCL hazard\n",
                                    "    title: An NCCL hazard\n    title: again\n")) == [
        "p.yaml:9: duplicate key 'title'"]
    assert problems_of("rules: [\n")[0].startswith("p.yaml:2: invalid YAML")
    assert problems_of("\xff".encode("latin-1").decode("latin-1")) != []


def test_duplicate_rule_ids_within_and_across_packs(tmp_path: Path) -> None:
    twice = GOOD + GOOD[GOOD.index("  - id:"):]
    assert "duplicate rule id (first at line 7)" in problems_of(twice)[0]
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(GOOD.replace("name: extra", "name: other"))
    with pytest.raises(PackError) as err:
        load_packs([str(tmp_path)], builtin=False)
    assert f"{tmp_path / 'b.yaml'}:7: rule extra-nccl: duplicate rule id: also in {tmp_path / 'a.yaml'}:7" \
        == str(err.value)


def test_pack_names_are_unique(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(GOOD.replace("extra-nccl", "extra-nccl-2"))
    with pytest.raises(PackError, match="pack name 'extra' is also used by"):
        load_packs([str(tmp_path)], builtin=False)


def test_missing_paths_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        pack_files(str(tmp_path / "nope.yaml"))
    with pytest.raises(InputError, match=r"no \*\.yaml rule packs"):
        pack_files(str(tmp_path))


# -- remote packs --------------------------------------------------------------------------------
@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "pack.yaml").write_text(GOOD)
    handler = partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/pack.yaml"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_remote_pack_with_matching_pin(served: str) -> None:
    pin = hashlib.sha256(GOOD.encode()).hexdigest()
    (pack,) = load_packs([f"{served}#sha256={pin}"], builtin=False)
    assert pack.source == served and pack.sha256 == pin and pack.rules[0].id == "extra-nccl"


def test_remote_pack_without_pin_or_with_wrong_pin_is_refused(served: str) -> None:
    with pytest.raises(InputError, match="must be pinned"):
        load_packs([served], builtin=False)
    with pytest.raises(DigestMismatchError, match="refused"):
        load_packs([f"{served}#sha256={'0' * 64}"], builtin=False)
    with pytest.raises(InputError, match="HTTP 404"):
        load_packs([f"{served.replace('pack', 'gone')}#sha256={'0' * 64}"], builtin=False)


def test_the_builtin_packs_pass_the_schema_that_audits_skip_for_them() -> None:
    from auditor.rules.pack import builtin_pack_files, parse_packs

    files = builtin_pack_files()
    assert files
    packs, problems = parse_packs(files, check_schema=True)
    assert problems == []
    assert [p.source for p in packs] == [source for source, _ in files]
    assert [p.name for p in load_packs()] == [p.name for p in packs]
