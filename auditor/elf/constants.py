"""Constants a getter function returns, read from its machine code without executing anything.

Getters such as ``cudnnGetVersion`` are compiled to a few instructions that put a constant in the
return register and return, possibly behind a logging prologue and an epilogue that restores
registers. Rather than decode whole functions, each decoder looks for the one shape that matters,
anchored on the instruction that ends it:

- *returns*: the return register set to an immediate (x86-64 ``mov eax, imm32``; aarch64
  ``movz``/``movn`` plus ``movk`` into ``w0``) and then, through instructions that do not touch it
  (register restores, stack adjustment, hints), ``ret``;
- *stores*: an immediate stored through a pointer argument (x86-64 ``mov dword [rdi], imm32``;
  aarch64 ``mov wN, #imm; str wN, [x0]``) and then ``ret`` (``ncclGetVersion(int *)``,
  ``nvrtcVersion(int *major, int *minor)``);
- *address*: the address of a datum returned (x86-64 ``lea rax, [rip+disp32]``; aarch64
  ``adrp x0``, ``add x0, x0, #lo12``) (``dnnl_version()`` returns a pointer to a struct);
- *calls*: direct call and jump targets, so a getter that delegates to an internal function
  (``cudaRuntimeGetVersion``) can be followed one step.

Every decoder returns the distinct values found, in order; more than one value means the function
has several constant exits, and the reader decides.
"""

from __future__ import annotations

from collections.abc import Callable

MAX_TAIL = 16  # instructions between the constant and ret

# -- x86-64 -----------------------------------------------------------------------------------
_X86_ARG_MODRM = {0x07: 0, 0x06: 1, 0x02: 2, 0x01: 3}  # [rdi], [rsi], [rdx], [rcx]
_X86_FIXED: list[tuple[bytes, bool]] = [  # (instruction, writes eax)
    (b"\xc9", False),  # leave
    (b"\x90", False), (b"\x66\x90", False),  # nop
    (b"\xc5\xf8\x77", False),  # vzeroupper
    (b"\x31\xc0", True), (b"\x33\xc0", True),  # xor eax, eax
    (b"\x64\x48\x2b\x14\x25\x28\x00\x00\x00", False),  # sub rdx, fs:[0x28] (stack protector)
    (b"\x64\x48\x33\x14\x25\x28\x00\x00\x00", False),  # xor rdx, fs:[0x28]
]


def _x86_length(code: bytes, i: int, eax_free: bool) -> int:
    """Length of a benign instruction at ``i`` (one that neither jumps away nor, unless
    ``eax_free``, writes eax), or 0."""
    b = code[i]
    if 0x59 <= b <= 0x5F:  # pop rcx..rdi (not rax)
        return 1
    rest = code[i:i + 16]
    for raw, writes_eax in _X86_FIXED:
        if rest.startswith(raw) and (eax_free or not writes_eax):
            return len(raw)
    if b == 0x41 and len(rest) > 1 and 0x58 <= rest[1] <= 0x5F:  # pop r8..r15
        return 2
    if rest[:3] == b"\x48\x83\xc4":  # add rsp, imm8
        return 4
    if rest[:3] == b"\x48\x81\xc4":  # add rsp, imm32
        return 7
    if rest[:3] == b"\x48\x8d\x65":  # lea rsp, [rbp+disp8]
        return 4
    if rest[:4] == b"\x48\x8d\x64\x24":  # lea rsp, [rsp+disp8]
        return 5
    if rest[:3] in (b"\x48\x8b\x55", b"\x48\x8b\x54"):  # mov rdx, [rbp/rsp+disp8] (canary)
        return 4 if rest[2] == 0x55 else 5
    if b == 0x75 and len(rest) > 1:  # jne short (the canary check falls through)
        return 2
    if b == 0xC7 and len(rest) >= 6 and rest[1] in _X86_ARG_MODRM and eax_free:
        return 6  # another store through an argument
    if b == 0xB8 and eax_free:  # mov eax, imm32 (a status code)
        return 5
    return 0


def _x86_reaches_ret(code: bytes, i: int, eax_free: bool) -> bool:
    for _ in range(MAX_TAIL):
        if i >= len(code):
            return False
        if code[i] == 0xC3 or code[i:i + 2] == b"\xf3\xc3" or code[i] == 0xC2:
            return True
        step = _x86_length(code, i, eax_free)
        if not step:
            return False
        i += step
    return False


def x86_returns(code: bytes, vaddr: int = 0) -> list[int]:
    """Immediates moved into eax on a path that then returns."""
    out = []
    for i in _find_all(code, b"\xb8"):
        if i + 5 <= len(code) and _x86_reaches_ret(code, i + 5, eax_free=False):
            out.append(int.from_bytes(code[i + 1:i + 5], "little"))
    return _distinct(out)


def x86_stores(code: bytes, vaddr: int = 0) -> dict[int, list[int]]:
    """Immediates stored through pointer arguments (0 = rdi, 1 = rsi, ...) before a return."""
    found: dict[int, list[int]] = {}
    for i in _find_all(code, b"\xc7"):
        if i + 6 > len(code) or code[i + 1] not in _X86_ARG_MODRM:
            continue
        if _x86_reaches_ret(code, i + 6, eax_free=True):
            found.setdefault(_X86_ARG_MODRM[code[i + 1]], []).append(
                int.from_bytes(code[i + 2:i + 6], "little"))
    return {arg: _distinct(values) for arg, values in sorted(found.items())}


def x86_addresses(code: bytes, vaddr: int) -> list[int]:
    """Addresses loaded into rax (``lea rax, [rip+disp32]``) on a path that then returns."""
    out = []
    for i in _find_all(code, b"\x48\x8d\x05"):
        if i + 7 <= len(code) and _x86_reaches_ret(code, i + 7, eax_free=False):
            disp = int.from_bytes(code[i + 3:i + 7], "little", signed=True)
            out.append(vaddr + i + 7 + disp)
    return _distinct(out)


def x86_calls(code: bytes, vaddr: int) -> list[int]:
    """Targets of direct ``call rel32`` and ``jmp rel32`` instructions (candidates: the bytes are
    scanned, not decoded, so the caller checks each target lands in code)."""
    out = []
    for opcode in (b"\xe8", b"\xe9"):
        for i in _find_all(code, opcode):
            if i + 5 <= len(code):
                out.append(vaddr + i + 5 + int.from_bytes(code[i + 1:i + 5], "little", signed=True))
    return _distinct(out)


# -- aarch64 ----------------------------------------------------------------------------------
_A64_RET = 0xD65F03C0


def _a64_words(code: bytes) -> list[int]:
    return [int.from_bytes(code[i:i + 4], "little") for i in range(0, len(code) - 3, 4)]


def _a64_move(word: int) -> tuple[str, int, int, int] | None:
    """(kind, register, imm16, shift) of a 32- or 64-bit MOVZ/MOVN/MOVK, else None."""
    kinds = {0x52800000: "movz", 0x12800000: "movn", 0x72800000: "movk"}
    kind = kinds.get(word & 0x7F800000)
    if kind is None:
        return None
    return kind, word & 31, (word >> 5) & 0xFFFF, ((word >> 21) & 3) * 16


def _a64_apply(value: int, move: tuple[str, int, int, int]) -> int:
    kind, _reg, imm, shift = move
    if kind == "movz":
        return imm << shift
    if kind == "movn":
        return ~(imm << shift) & 0xFFFFFFFF
    return (value & ~(0xFFFF << shift) & 0xFFFFFFFFFFFFFFFF) | (imm << shift)


def _a64_benign(word: int) -> bool:
    """An epilogue instruction that writes neither w0 nor memory: register restores from sp,
    sp adjustment, hints (nop, bti, autiasp)."""
    rt, rn, rt2 = word & 31, (word >> 5) & 31, (word >> 10) & 31
    if (word & 0xFFFFF01F) == 0xD503201F:  # hint space
        return True
    if (word & 0xFF8003FF) == 0x910003FF:  # add sp, sp, #imm
        return True
    top = word & 0xFFC00000
    if top in (0xA8C00000, 0xA9400000, 0xA9C00000):  # ldp x, x, [sp...]
        return rn == 31 and rt != 0 and rt2 != 0
    if top in (0x6CC00000, 0x6D400000, 0x6DC00000):  # ldp d, d, [sp...]
        return rn == 31
    if top == 0xF9400000 or (word & 0xFFE00C00) == 0xF8400400:  # ldr x, [sp...]
        return rn == 31 and rt != 0
    return False


def _a64_store(word: int) -> tuple[int, int] | None:
    """(value register, base register) of ``str wT, [xN]`` (unsigned offset 0), else None."""
    if (word & 0xFFFFFC00) == 0xB9000000:
        return word & 31, (word >> 5) & 31
    return None


def _a64_tail(words: list[int], k: int, w0_free: bool) -> bool:
    for word in words[k:k + MAX_TAIL]:
        if word == _A64_RET:
            return True
        move = _a64_move(word)
        if _a64_benign(word) or (move and (w0_free or move[1] != 0)):
            continue
        if w0_free and (word == 0x2A1F03E0 or _a64_store(word)):  # mov w0, wzr; str
            continue
        return False
    return False


def _a64_constant(words: list[int], k: int, register: int) -> tuple[int, int] | None:
    """The value built into ``register`` by a MOVZ/MOVN at ``k`` and the MOVKs right after it,
    and the index of the first word past them."""
    move = _a64_move(words[k])
    if move is None or move[0] == "movk" or move[1] != register:
        return None
    value, k = _a64_apply(0, move), k + 1
    while k < len(words) and (nxt := _a64_move(words[k])) and nxt[0] == "movk" and nxt[1] == register:
        value, k = _a64_apply(value, nxt), k + 1
    return value & 0xFFFFFFFF, k


def a64_returns(code: bytes, vaddr: int = 0) -> list[int]:
    words = _a64_words(code)
    out = []
    for k in range(len(words)):
        built = _a64_constant(words, k, 0)
        if built and _a64_tail(words, built[1], w0_free=False):
            out.append(built[0])
    return _distinct(out)


def _a64_copy(word: int) -> tuple[int, int] | None:
    """(destination, source) of ``mov xD, xS`` (``orr xD, xzr, xS``), else None."""
    if (word & 0xFFE0FFE0) == 0xAA0003E0:
        return word & 31, (word >> 16) & 31
    return None


def _a64_last_constant(words: list[int], k: int, register: int) -> int | None:
    """The constant ``register`` holds just before word ``k``: built by a MOVZ/MOVN (and MOVKs)
    among the few words before, with only moves to other registers, stores and hints between."""
    for start in range(k - 1, max(k - 8, -1), -1):
        move = _a64_move(words[start])
        if move and move[1] == register and move[0] != "movk":
            value = _a64_apply(0, move)
            for word in words[start + 1:k]:
                other = _a64_move(word)
                if other and other[1] == register:
                    if other[0] != "movk":
                        return None
                    value = _a64_apply(value, other)
                elif not (other or _a64_store(word) or _a64_benign(word)):
                    return None
            return value & 0xFFFFFFFF
        copy = _a64_copy(words[start])
        if copy and copy[0] == register:
            return None
    return None


def a64_stores(code: bytes, vaddr: int = 0) -> dict[int, list[int]]:
    words = _a64_words(code)
    alias = {r: r for r in range(8)}  # register -> the argument whose pointer it holds
    found: dict[int, list[int]] = {}
    for k, word in enumerate(words):
        copy, move, store = _a64_copy(word), _a64_move(word), _a64_store(word)
        if copy:
            if copy[1] in alias:
                alias[copy[0]] = alias[copy[1]]
            else:
                alias.pop(copy[0], None)
        elif move:
            alias.pop(move[1], None)
        elif store and store[1] in alias and _a64_tail(words, k + 1, w0_free=True):
            value = _a64_last_constant(words, k, store[0])
            if value is not None:
                found.setdefault(alias[store[1]], []).append(value)
    return {arg: _distinct(values) for arg, values in sorted(found.items())}


def a64_addresses(code: bytes, vaddr: int) -> list[int]:
    words = _a64_words(code)
    out = []
    for k in range(len(words) - 1):
        adrp, add = words[k], words[k + 1]
        if (adrp & 0x9F00001F) != 0x90000000 or (add & 0xFFC003FF) != 0x91000000:
            continue
        imm = ((adrp >> 5) & 0x7FFFF) << 2 | (adrp >> 29) & 3
        imm = (imm - (1 << 21) if imm & (1 << 20) else imm) << 12
        page = (vaddr + 4 * k) & ~0xFFF
        if _a64_tail(words, k + 2, w0_free=False):
            out.append(page + imm + ((add >> 10) & 0xFFF))
    return _distinct(out)


def a64_calls(code: bytes, vaddr: int) -> list[int]:
    out = []
    for k, word in enumerate(_a64_words(code)):
        if (word & 0x7C000000) == 0x14000000:  # b / bl imm26
            imm = word & 0x3FFFFFF
            imm = imm - (1 << 26) if imm & (1 << 25) else imm
            out.append(vaddr + 4 * k + 4 * imm)
    return _distinct(out)


# -- dispatch ---------------------------------------------------------------------------------
DECODERS: dict[str, dict[str, Callable[..., object]]] = {
    "x86_64": {"returns": x86_returns, "stores": x86_stores, "addresses": x86_addresses,
               "calls": x86_calls},
    "aarch64": {"returns": a64_returns, "stores": a64_stores, "addresses": a64_addresses,
                "calls": a64_calls},
}


def decode_function(machine: str, code: bytes, vaddr: int) -> dict[str, object]:
    """Everything the decoders for ``machine`` find in ``code`` (which starts at ``vaddr``);
    raises ``KeyError`` for a machine without decoders."""
    decoders = DECODERS[machine]
    out: dict[str, object] = {}
    for what in ("returns", "stores", "addresses"):
        value = decoders[what](code, vaddr)
        if value:
            out[what] = value
    return out


def call_targets(machine: str, code: bytes, vaddr: int) -> list[int]:
    return DECODERS[machine]["calls"](code, vaddr)  # type: ignore[return-value]


def _find_all(code: bytes, needle: bytes) -> list[int]:
    out, i = [], code.find(needle)
    while i >= 0:
        out.append(i)
        i = code.find(needle, i + 1)
    return out


def _distinct(values: list[int]) -> list[int]:
    return list(dict.fromkeys(values))
