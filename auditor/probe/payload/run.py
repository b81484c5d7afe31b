# The probe payload's entry point: python3 /auditor-probe/run.py CONFIG_JSON (docs/probe.md).
#
# This file must parse on old Pythons (2.7, 3.5) so that the version guard below can speak: no
# f-strings, no annotations, nothing newer than 2.7 syntax. The real work is in the sibling
# modules (Python 3.6+), imported only once the guard has passed.
import sys

if sys.version_info < (3, 6):  # noqa: UP036 (this guard is for older Pythons)
    sys.stderr.write("auditor probe: the payload needs Python 3.6 or newer; this is Python "
                     + sys.version.split()[0] + "\n")
    sys.exit(3)

import os

if __name__ == "__main__":
    sys.dont_write_bytecode = True  # the payload folder is read-only, and we write nothing else
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from probe_main import main

    sys.exit(main(sys.argv[1:]))
