"""The probe's payload: runs inside the audited image as a script (``run.py``), not as a package."""
