"""The parts of an ELF file the other modules read: header, segments, sections, bounded reads.

pyelftools identifies the file and parses the header and each table entry (its structs know
every class and byte order); the bytes of the tables are read here, through bounded seeks and
reads, so a hostile count or offset costs at most the caps below and never the whole file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, BinaryIO

from elftools.common.exceptions import ELFError as _PyElfError
from elftools.elf.elffile import ELFFile

MAX_SEGMENTS = 512  # real libraries have about 10
MAX_SECTIONS = 8192  # real libraries have under 100
MAX_NAMES_BYTES = 1 << 20  # .shstrtab
PF_X, PF_W, PF_R = 1, 2, 4
PT_LOAD, PT_DYNAMIC = 1, 2
SHT_NOBITS = 8

# e_machine (pyelftools' name) -> the name platforms use
MACHINES = {
    "EM_X86_64": "x86_64", "EM_AARCH64": "aarch64", "EM_386": "i386", "EM_ARM": "arm",
    "EM_PPC64": "ppc64", "EM_PPC": "ppc", "EM_S390": "s390x", "EM_RISCV": "riscv",
    "EM_MIPS": "mips", "EM_SPARCV9": "sparc64", "EM_LOONGARCH": "loongarch",
}


class ElfError(ValueError):
    """The file is not an ELF file we can read at all (not ELF, or its header is cut)."""


@dataclass(frozen=True)
class Segment:
    type: int
    flags: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int


@dataclass(frozen=True)
class Section:
    index: int
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int
    entsize: int


class ElfLayout:
    """An ELF file opened for bounded reading. ``problems`` collects what was malformed."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self.stream = stream
        self.size = size
        self.problems: list[str] = []
        stream.seek(0)
        magic = stream.read(4)
        if magic != b"\x7fELF":
            raise ElfError("not an ELF file (no \\x7fELF magic)")
        stream.seek(0)
        try:
            self.elf = ELFFile(stream)
        except (_PyElfError, ValueError, KeyError, EOFError) as err:
            raise ElfError(f"unreadable ELF header: {err}") from None
        except Exception as err:  # construct's errors on a cut header
            raise ElfError(f"unreadable ELF header: {err.__class__.__name__}") from None
        header = self.elf.header
        self.elfclass: int = self.elf.elfclass
        self.little_endian: bool = self.elf.little_endian
        self.e_machine: str = str(header["e_machine"])
        self.machine: str = MACHINES.get(self.e_machine, self.e_machine.removeprefix("EM_").lower())
        self.osabi: str = str(header["e_ident"]["EI_OSABI"])
        self.type: str = str(header["e_type"])
        self.segments = self._read_segments()
        self.sections = self._read_sections()

    # -- bounded I/O ---------------------------------------------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset``, cut at the end of the file."""
        if offset < 0 or length <= 0 or offset >= self.size:
            return b""
        self.stream.seek(offset)
        return self.stream.read(min(length, self.size - offset))

    def _table(self, offset: int, count: int, entsize: int, what: str) -> list[bytes]:
        if not count:
            return []
        data = self.read(offset, count * entsize)
        if len(data) < count * entsize:
            self.problems.append(f"{what} table runs past the end of the file")
        return [data[i:i + entsize] for i in range(0, len(data) - entsize + 1, entsize)]

    # -- tables --------------------------------------------------------------------------------
    def _read_segments(self) -> list[Segment]:
        header = self.elf.header
        count, entsize = int(header["e_phnum"]), int(header["e_phentsize"])
        struct = self.elf.structs.Elf_Phdr
        if not count:
            return []
        if count > MAX_SEGMENTS or entsize < struct.sizeof():
            self.problems.append(f"program header table not read ({count} entries of {entsize} bytes)")
            return []
        out = []
        for raw in self._table(int(header["e_phoff"]), count, entsize, "program header"):
            ph = _parse(struct, raw)
            out.append(Segment(_int(ph["p_type"], _PT), int(ph["p_flags"]), int(ph["p_offset"]),
                               int(ph["p_vaddr"]), int(ph["p_filesz"]), int(ph["p_memsz"])))
        return out

    def _read_sections(self) -> list[Section]:
        header = self.elf.header
        count, entsize = int(header["e_shnum"]), int(header["e_shentsize"])
        struct = self.elf.structs.Elf_Shdr
        if not header["e_shoff"] or not count:
            return []  # none, or more than 0xff00 (counted in section 0): not a real library
        if count > MAX_SECTIONS or entsize < struct.sizeof():
            self.problems.append(f"section header table not read ({count} entries of {entsize} bytes)")
            return []
        raw_headers = [_parse(struct, raw) for raw in
                       self._table(int(header["e_shoff"]), count, entsize, "section header")]
        names = b""
        strndx = header["e_shstrndx"]
        if isinstance(strndx, int) and 0 < strndx < len(raw_headers):
            names_header = raw_headers[strndx]
            names = self.read(int(names_header["sh_offset"]),
                              min(int(names_header["sh_size"]), MAX_NAMES_BYTES))
        out = []
        for index, sh in enumerate(raw_headers):
            out.append(Section(index, _cstring(names, int(sh["sh_name"])), _int(sh["sh_type"], _SHT),
                               int(sh["sh_flags"]), int(sh["sh_addr"]), int(sh["sh_offset"]),
                               int(sh["sh_size"]), int(sh["sh_link"]), int(sh["sh_entsize"])))
        return out

    # -- addresses -----------------------------------------------------------------------------
    def loads(self) -> list[Segment]:
        return [s for s in self.segments if s.type == PT_LOAD]

    def vaddr_to_offset(self, vaddr: int, length: int = 1) -> int | None:
        """The file offset of ``length`` bytes at ``vaddr``, if a PT_LOAD holds them in the file
        (not in its zero-filled tail, the .bss)."""
        for seg in self.loads():
            if seg.vaddr <= vaddr and vaddr + length <= seg.vaddr + seg.filesz:
                offset = seg.offset + (vaddr - seg.vaddr)
                return offset if offset + length <= self.size else None
        return None

    def in_bss(self, vaddr: int) -> bool:
        return any(s.vaddr + s.filesz <= vaddr < s.vaddr + s.memsz for s in self.loads())

    def is_executable(self, vaddr: int) -> bool:
        return any(s.flags & PF_X and s.vaddr <= vaddr < s.vaddr + s.filesz for s in self.loads())

    def read_vaddr(self, vaddr: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``vaddr`` from the file, cut at the end of its segment."""
        for seg in self.loads():
            if seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                available = seg.vaddr + seg.filesz - vaddr
                return self.read(seg.offset + (vaddr - seg.vaddr), min(length, available))
        return b""

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)


_PT = {"PT_LOAD": PT_LOAD, "PT_DYNAMIC": PT_DYNAMIC}
_SHT = {"SHT_NULL": 0, "SHT_PROGBITS": 1, "SHT_SYMTAB": 2, "SHT_STRTAB": 3, "SHT_RELA": 4,
        "SHT_HASH": 5, "SHT_DYNAMIC": 6, "SHT_NOTE": 7, "SHT_NOBITS": SHT_NOBITS, "SHT_REL": 9,
        "SHT_DYNSYM": 11, "SHT_GNU_HASH": 0x6FFFFFF6}


def _parse(struct: Any, raw: bytes) -> Any:
    try:
        return struct.parse(raw)
    except Exception as err:  # construct raises its own family on bad bytes
        raise ElfError(f"unparseable table entry: {err.__class__.__name__}") from None


def _int(value: Any, names: dict[str, int]) -> int:
    """pyelftools gives enum names for known values and ints for others."""
    return value if isinstance(value, int) else names.get(str(value), -1)


def _cstring(table: bytes, offset: int) -> str:
    if offset < 0 or offset >= len(table):
        return ""
    end = table.find(b"\0", offset)
    return table[offset:end if end >= 0 else len(table)].decode("utf-8", "replace")
