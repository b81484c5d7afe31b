"""The Stack the rules see, built two ways: from an audit's inventory, and from a rule's embedded
test case (docs/rules.md, "Test cases"). Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from auditor.inventory import Inventory
from auditor.inventory.numeric import CLASSIFIERS
from auditor.model import Evidence, Item, Stack

FRAMEWORK_TITLES = {"torch": "PyTorch", "tensorflow": "TensorFlow", "jax": "JAX", "jaxlib": "jaxlib"}


def stack_of(inventory: Inventory, env: Mapping[str, str], overridden: Iterable[str] = (),
             labels: Mapping[str, str] | None = None, gpu_arch: Iterable[str] = ()) -> Stack:
    """The Stack of an audited image. ``overridden``: env names the user set with ``--env``."""
    loaded_by = _loaded_by(inventory)
    titles = {c.name: c.title for c in CLASSIFIERS}
    items: list[Item] = []
    for lib in inventory.libraries:
        items.append(Item("component", lib.component, lib.version, lib.path, lib.layer,
                          loaded_by.get(lib.path, ()), (), lib.evidence, titles.get(lib.component)))
    for fw in inventory.frameworks:
        items.append(Item("framework", fw.name, fw.version or None, fw.path, fw.layer, (),
                          tuple(sorted(fw.built_for.items())), fw.evidence,
                          FRAMEWORK_TITLES.get(fw.name)))
    for pkg in inventory.packages:
        items.append(Item("package", f"{pkg.type}:{pkg.name}", pkg.version, pkg.path, pkg.layer, (), (),
                          (Evidence("package", pkg.path, f"{pkg.name} {pkg.version}", pkg.version),)))
    overridden = set(overridden)
    return Stack(
        items=tuple(items),
        env=tuple(sorted(env.items())),
        env_origin=tuple((name, "--env" if name in overridden else "Env") for name in sorted(env)),
        labels=tuple(sorted((labels or {}).items())),
        gpu_arch=tuple(gpu_arch),
        linkage_known=inventory.linkage is not None)


def _loaded_by(inventory: Inventory) -> dict[str, tuple[str, ...]]:
    """Root-relative file -> the frameworks (or, for other ELF consumers, their paths) that
    load it, from the linkage winners."""
    stack = inventory.linkage
    if stack is None:
        return {}
    framework_of = {c.linkage.consumer: c.framework for c in stack.consumers}
    out: dict[str, set[str]] = {}
    for winner in stack.winners:
        for consumer in winner.consumers:
            out.setdefault(winner.loaded.file, set()).add(framework_of.get(consumer) or consumer)
    return {path: tuple(sorted(names)) for path, names in out.items()}


def stack_of_case(case: Mapping[str, Any]) -> Stack:
    """The Stack a test case describes: ``components``/``frameworks``/``packages`` map a name
    to a version or to {version, loaded_by, built_for}; ``env``, ``labels``, ``gpu_arch``."""
    items: list[Item] = []
    for kind, key in (("component", "components"), ("framework", "frameworks"), ("package", "packages")):
        for name, spec in (case.get(key) or {}).items():
            spec = spec if isinstance(spec, Mapping) else {"version": spec}
            version = str(spec["version"])
            items.append(Item(kind, name, version, None, None, tuple(spec.get("loaded_by") or ()),
                              tuple(sorted((k, str(v)) for k, v in (spec.get("built_for") or {}).items())),
                              (Evidence("test-case", f"{key}.{name}", version, version),)))
    arch = case.get("gpu_arch") or ()
    env = {str(k): str(v) for k, v in (case.get("env") or {}).items()}
    return Stack(items=tuple(items), env=tuple(sorted(env.items())),
                 env_origin=tuple((k, "Env") for k in sorted(env)),
                 labels=tuple(sorted((str(k), str(v)) for k, v in (case.get("labels") or {}).items())),
                 gpu_arch=(arch,) if isinstance(arch, str) else tuple(arch), linkage_known=True)
