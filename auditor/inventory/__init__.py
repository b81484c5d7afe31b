"""Catalogers: each declares the files it wants from the rootfs pass and parses them.

Adding one is a module with a ``CATALOGER`` plus one line in :data:`CATALOGERS`.
"""

from auditor.inventory import apk, conda, crosscheck, dpkg, frameworks, numeric, os_release, python, rpm
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
    crosscheck.CATALOGER,  # last: it reads what the others found
]

__all__ = ["CATALOGERS", "Cataloger", "FileView", "Inventory", "run_catalogers"]
