"""Linkage: for each framework's ELF files (every ELF file with ``--all-elf``), the file the
loader would load for each library they need or open at run time, and what it shadows.

The pass hands every shared library (or every ELF file) to ``elf_facts``; ``ld.so.cache`` and
``ld.so.conf`` are captured. Resolution itself is :mod:`auditor.linkage` (pure); this module
picks the consumers, gathers the inputs and records the answer in the Stack.
"""

from __future__ import annotations

import posixpath
import re
from functools import partial
from typing import Any

from auditor.elf.facts import elf_facts
from auditor.inventory.base import Cataloger, FileView, Inventory
from auditor.linkage import CONF_GLOBS, linkage_of, loader_inputs
from auditor.linkage.model import Consumer, ConsumerLinkage, Copy, LinkageStack
from auditor.linkage.runtime import LinkageRules, framework_dlopens, load_rules, site_of, under
from auditor.linkage.stack import Context, findings, winners
from auditor.model import Unknown

NAME = "linkage"
VERSION = 2  # 2: ELF facts schema 2 (flags_1, interp, strict strings)
ELF_MAGIC = b"\x7fELF"
SHARED_GLOBS = ("*.so", "*.so.*")
ALL_GLOBS = ("*",)
CONSUMER_TYPES = ("ET_DYN", "ET_EXEC")
MAX_PROBLEMS_RECORDED = 200


def cataloger(all_elf: bool = False) -> Cataloger:
    """The linkage cataloger: framework consumers, or with ``all_elf`` every ELF file."""
    return Cataloger(NAME, VERSION, CONF_GLOBS, partial(run, all_elf=all_elf),
                     analyze_globs=ALL_GLOBS if all_elf else SHARED_GLOBS, analyze=elf_facts,
                     magic=ELF_MAGIC)


def run(view: FileView, inventory: Inventory, all_elf: bool = False,
        rules: LinkageRules | None = None) -> None:
    rules = rules or load_rules()
    facts = {path: f for path, f in view.analyzed(NAME) if "class" in f}
    chosen, opens_by_caller, problems = _consumers(view, inventory, rules, facts, all_elf)

    def opens(file: str) -> list[str]:
        soname = (facts.get(file) or {}).get("soname")
        return [*opens_by_caller.get(file, ()), *rules.library_dlopens(file, soname)]

    inputs = loader_inputs(view)
    llp = view.env().get("LD_LIBRARY_PATH") or None
    glibc = glibc_version(inventory)
    consumers = tuple(Consumer(linkage_of(view, NAME, path, inputs, llp, dlopen=opens,
                                          glibc_version=glibc),
                               framework, view.layer_of(path))
                      for path, framework in chosen)
    without = {c.linkage.consumer: linkage_of(view, NAME, c.linkage.consumer, inputs, None,
                                              dlopen=opens, glibc_version=glibc)
               for c in consumers if c.framework} if llp else None
    copy_of = _copies(view, inventory)
    named: dict[str, list[str]] = {}
    for path, f in facts.items():
        for name in {f.get("soname"), posixpath.basename(path)} - {None}:
            named.setdefault(str(name), []).append(path)
    won = winners(consumers, copy_of, lambda name: named.get(name, []))
    ctx = Context(inventory.frameworks, rules.is_host_provided, copy_of, llp)
    inventory.findings.extend(findings(consumers, won, ctx, without,
                                       ((p, f.get("soname")) for p, f in facts.items())))
    _record_problems(view, inventory, consumers, problems)
    inventory.linkage = LinkageStack(
        consumers, won, llp, "--env" if "LD_LIBRARY_PATH" in view.env_overrides else "image",
        all_elf)


def glibc_version(inventory: Inventory) -> str | None:
    """The image's glibc (Debian's libc6, an rpm glibc), which decides the legacy hwcaps search:
    ``2.36-9+deb12u4`` -> ``2.36``."""
    for package in inventory.packages:
        if (package.type, package.name) in (("deb", "libc6"), ("rpm", "glibc")):
            match = re.match(r"(?:\d+:)?(\d+\.\d+)", package.version)
            if match:
                return match.group(1)
    return None


def _consumers(view: FileView, inventory: Inventory, rules: LinkageRules,
               facts: dict[str, dict[str, Any]], all_elf: bool
               ) -> tuple[list[tuple[str, str | None]], dict[str, list[str]], list[str]]:
    """(consumer path, framework) in order, framework first; dlopen names per caller file."""
    chosen: dict[str, str | None] = {}
    opens: dict[str, list[str]] = {}
    problems: list[str] = []

    def present(glob: str) -> list[str]:
        return [p for p in view.glob(glob) if p in facts]

    for framework in inventory.frameworks:
        spec = rules.frameworks.get(framework.name)
        site = site_of(framework, spec) if spec else None
        if spec is None or site is None:
            continue
        for glob in spec.consumers:
            for path in present(under(site, glob)):
                if facts[path].get("type") in CONSUMER_TYPES:
                    chosen.setdefault(path, framework.name)
        calls, missing = framework_dlopens(framework, spec, site, present)
        for caller, names in calls.items():
            opens.setdefault(caller, []).extend(names)
        problems.extend(missing)
    if all_elf:
        for path in sorted(facts):
            if facts[path].get("type") in CONSUMER_TYPES:
                chosen.setdefault(path, None)
    return [("/" + p, fw) for p, fw in chosen.items()], opens, problems


def _copies(view: FileView, inventory: Inventory) -> Any:
    libraries = {lib.path: lib for lib in inventory.libraries}
    memo: dict[str, Copy] = {}

    def copy_of(file: str) -> Copy:
        if file not in memo:
            lib = libraries.get(file)
            memo[file] = Copy(file, view.layer_of(file), lib.version if lib else None,
                              lib.component if lib else None, lib.package if lib else None)
        return memo[file]

    return copy_of


def _record_problems(view: FileView, inventory: Inventory, consumers: tuple[Consumer, ...],
                     problems: list[str]) -> None:
    seen: set[str] = set()
    for text in problems:
        inventory.unknowns.append(Unknown(NAME, "", None, text))
    for consumer in consumers:
        linkage: ConsumerLinkage = consumer.linkage
        for text in linkage.problems:
            if text in seen or len(seen) >= MAX_PROBLEMS_RECORDED:
                continue
            seen.add(text)
            inventory.unknowns.append(Unknown(NAME, linkage.consumer, consumer.layer, text))
    if len(seen) >= MAX_PROBLEMS_RECORDED:
        inventory.unknowns.append(Unknown(NAME, "", None, "more linkage problems, not listed"))


CATALOGER = cataloger()
