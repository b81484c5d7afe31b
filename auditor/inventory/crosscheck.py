"""Cross-checks over what the other catalogers found: a framework built for one version of a
library, with another version in the image. Runs last; reads only the inventory."""

from __future__ import annotations

from auditor.inventory.base import Cataloger, FileView, Inventory
from auditor.linkage.stack import BUILT_FOR, version_prefix_matches
from auditor.model import Evidence, Finding


def run(view: FileView, inventory: Inventory) -> None:
    for framework in inventory.frameworks:
        for key, version in sorted(framework.built_for.items()):
            components = BUILT_FOR.get(key)
            if not components or not version:
                continue
            present = [lib for lib in inventory.libraries
                       if lib.component in components and lib.version]
            if not present or any(version_prefix_matches(version, lib.version or "")
                                  for lib in present):
                continue
            versions = sorted({lib.version or "" for lib in present})
            inventory.findings.append(Finding(
                "built-for-mismatch", "high", key,
                f"{framework.name} {framework.version} was built for {key} {version}, but the "
                f"image holds {key} {', '.join(versions)} "
                f"({', '.join(sorted(lib.path for lib in present))})",
                (Evidence("framework-build", framework.path, f"{key}={version}", version),
                 *(Evidence("library", lib.path, lib.version or "", lib.version)
                   for lib in present)),
                framework.path))


CATALOGER = Cataloger("crosscheck", 1, (), run)
