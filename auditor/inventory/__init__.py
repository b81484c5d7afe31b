"""Catalogers: each declares the files it wants from the rootfs pass and parses them.

Adding one is a module with a ``CATALOGER`` plus one line in :data:`CATALOGERS`.
"""

from auditor.inventory import crosscheck, os_release
from auditor.inventory.base import Cataloger, FileView, Inventory, run_catalogers

CATALOGERS: list[Cataloger] = [
    os_release.CATALOGER,
    crosscheck.CATALOGER,  # last: it reads what the others found
]

__all__ = ["CATALOGERS", "Cataloger", "FileView", "Inventory", "run_catalogers"]
