"""What ELF headers do not say, from ``auditor/rules/linkage.yaml``: each framework's consumer
files, the libraries frameworks and libraries open with ``dlopen`` at run time, the objects a
framework's Python package loads before its extension module, and the libraries the host
provides. Data, not code: a new framework or library is an edit to that file. Pure."""

from __future__ import annotations

import fnmatch
import json
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from auditor.model import Framework
from auditor.rules.yamlsource import safe_load

TEMPLATE = re.compile(r"\{([a-z_]+)\.major\}")


@dataclass(frozen=True)
class Runtime:
    """dlopen calls: files whose path matches ``callers`` (the first one present, per site)
    open ``names``."""

    callers: tuple[str, ...]
    names: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class Before:
    objects: tuple[str, ...]
    consumers: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class FrameworkRules:
    packages: tuple[str, ...]
    consumers: tuple[str, ...]
    runtime: tuple[Runtime, ...] = ()
    loaded_before: tuple[Before, ...] = ()


@dataclass(frozen=True)
class LinkageRules:
    frameworks: Mapping[str, FrameworkRules]
    libraries: tuple[tuple[str, tuple[str, ...], str], ...]  # (glob, names, source)
    host_provided: tuple[str, ...]

    def is_host_provided(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.host_provided)

    def library_dlopens(self, file: str, soname: str | None = None) -> list[str]:
        """Names a library opens at run time (cuDNN's shim opens its sub-libraries); the
        globs match its file, or its SONAME in the file's directory (``libcudnn.so.8.1.0``
        is ``libcudnn.so.8``)."""
        paths = [file] + ([posixpath.join(posixpath.dirname(file), soname)] if soname else [])
        return [n for glob, names, _ in self.libraries if any(_match(glob, p) for p in paths)
                for n in names]


def _match(glob: str, path: str) -> bool:
    return fnmatch.fnmatchcase(path, glob.lstrip("/")) or fnmatch.fnmatchcase("/" + path, glob)


def parse_rules(data: Any, check_schema: bool = True) -> LinkageRules:
    """Validated rules; raises ``jsonschema.ValidationError`` on a malformed file.
    ``check_schema=False`` for the shipped file: the tests hold it to the schema."""
    if check_schema:
        import jsonschema  # slow to import; audits read only the shipped rules

        jsonschema.validate(data, _schema())
    frameworks = {
        name: FrameworkRules(
            tuple(spec["packages"]), tuple(spec["consumers"]),
            tuple(Runtime(tuple(r["callers"]), tuple(r["names"]), r["source"])
                  for r in spec.get("runtime") or []),
            tuple(Before(tuple(b["objects"]), tuple(b["consumers"]), b["source"])
                  for b in spec.get("loaded_before") or []))
        for name, spec in data["frameworks"].items()}
    libraries = tuple((glob, tuple(spec["names"]), spec["source"])
                      for glob, spec in data["libraries"].items())
    return LinkageRules(frameworks, libraries, tuple(data["host_provided"]))


@cache
def _schema() -> dict[str, Any]:
    text = resources.files("auditor").joinpath("schemas/linkage-rules.schema.json").read_text()
    return json.loads(text)


@cache
def load_rules() -> LinkageRules:
    """The rules shipped with the tool."""
    text = resources.files("auditor").joinpath("rules/linkage.yaml").read_text()
    return parse_rules(safe_load(text), check_schema=False)


def site_of(framework: Framework, rules: FrameworkRules) -> str | None:
    """The directory holding the framework's package (``.../site-packages``)."""
    package = rules.packages[0]
    parts = framework.path.split("/")
    if package not in parts:
        return None
    return "/".join(parts[:len(parts) - parts[::-1].index(package) - 1])


def under(site: str, glob: str) -> str:
    return posixpath.join(site, glob) if site else glob


def expand_names(names: Iterable[str], built_for: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(names with ``{x.major}`` filled from ``built_for``, names left out for want of a value)."""
    out, missing = [], []
    for name in names:
        values: dict[str, str] = {}
        for key in TEMPLATE.findall(name):
            version = built_for.get(key)
            if version:
                values[key] = version.split(".")[0]
        if len(values) < len(set(TEMPLATE.findall(name))):
            missing.append(name)
            continue
        out.append(TEMPLATE.sub(lambda m, v=values: v[m.group(1)], name))
    return out, missing


def framework_dlopens(framework: Framework, rules: FrameworkRules, site: str,
                      present: Callable[[str], list[str]]) -> tuple[dict[str, list[str]], list[str]]:
    """(caller file -> names it opens, problems). ``present(glob)`` lists matching files."""
    calls: dict[str, list[str]] = {}
    problems: list[str] = []
    for runtime in rules.runtime:
        caller = next((found[0] for glob in runtime.callers
                       if (found := sorted(present(under(site, glob))))), None)
        if caller is None:
            continue
        names, missing = expand_names(runtime.names, framework.built_for)
        calls.setdefault(caller, []).extend(names)
        if missing:
            problems.append(f"{framework.name} {framework.version}: does not say the version "
                            f"for {', '.join(missing)}; those run-time loads are not followed")
    return calls, problems
