"""Catalogers: each declares the files it wants from the rootfs pass and parses them.

Adding one is a module with a ``CATALOGER`` plus one line in :data:`CATALOGERS`.
"""

from auditor.inventory import (
    apk,
    conda,
    crosscheck,
    dpkg,
    frameworks,
    linkage,
    numeric,
    os_release,
    python,
    rpm,
)
from auditor.inventory.base import Cataloger, FileView, Inventory, run_catalogers

CATALOGERS: list[Cataloger] = [
    os_release.CATALOGER,
    dpkg.CATALOGER,  # after os_release: the purl's distro
    apk.CATALOGER,
    rpm.CATALOGER,
    python.CATALOGER,
    conda.CATALOGER,
    frameworks.CATALOGER,
    numeric.CATALOGER,  # after the package catalogers: owners give the build part
    crosscheck.CATALOGER,  # reads what the others found
    linkage.CATALOGER,  # last: frameworks pick its consumers, the numeric libraries its versions
]



def catalogers_for(all_elf: bool = False) -> list[Cataloger]:
    """The catalogers of an audit; ``all_elf``: linkage for every ELF file, not frameworks'."""
    if not all_elf:
        return CATALOGERS
    return [linkage.cataloger(all_elf=True) if c is linkage.CATALOGER else c for c in CATALOGERS]


__all__ = ["CATALOGERS", "Cataloger", "FileView", "Inventory", "catalogers_for", "run_catalogers"]
