"""ELF shared libraries read as data: structure, linkage fields and version evidence.

Pure functions over a seekable stream, bounded against hostile files; nothing is executed.
"""

from auditor.elf.facts import Interest, elf_facts
from auditor.elf.layout import ElfError

__all__ = ["ElfError", "Interest", "elf_facts"]
