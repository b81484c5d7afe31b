"""The instruction decoders, on byte sequences shaped like those in NVIDIA's libraries."""

from __future__ import annotations

import struct

from auditor.elf.constants import (
    a64_addresses,
    a64_calls,
    a64_returns,
    a64_stores,
    x86_addresses,
    x86_calls,
    x86_returns,
    x86_stores,
)


def words(*values: int) -> bytes:
    return b"".join(struct.pack("<I", v) for v in values)


# -- x86-64 -----------------------------------------------------------------------------------
def test_x86_plain_and_endbr64_getters() -> None:
    assert x86_returns(bytes.fromhex("b8a41f0000c3")) == [8100]
    assert x86_returns(bytes.fromhex("f30f1efa b8a41f0000 c3")) == [8100]


def test_x86_constant_before_an_epilogue() -> None:
    # ... add rsp, 0x10020; mov eax, 92400; pop rbx; pop r12; pop r13; pop r14; pop rbp; ret
    code = bytes.fromhex("e8ad5f0000 4881c420000100 b8f0680100 5b 415c 415d 415e 5d c3")
    assert x86_returns(code) == [92400]
    # two exits returning the same constant count once
    exit_ = bytes.fromhex("b89bb10100 5b 5d 415c 415d c3")
    assert x86_returns(exit_ + b"\x90" * 3 + exit_) == [111003]


def test_x86_constant_not_followed_by_ret_is_not_returned() -> None:
    assert x86_returns(bytes.fromhex("b8a41f0000 e800000000 c3")) == []  # a call clobbers eax
    assert x86_returns(bytes.fromhex("b8a41f0000 31c0 c3")) == []  # xor eax, eax
    assert x86_returns(bytes.fromhex("b8a41f0000")) == []  # cut


def test_x86_stores_through_arguments() -> None:
    nccl = bytes.fromhex("4885ff 7409 c7078f550000 31c0 c3 b804000000 c3")
    assert x86_stores(nccl) == {0: [21903]}
    assert x86_returns(nccl) == [4]  # the error path: why NCCL is read through its store
    nvrtc = bytes.fromhex("4885ff741b 4885f67416 c7070d000000 31c0 c70600000000 c3")
    assert x86_stores(nvrtc) == {0: [13], 1: [0]}


def test_x86_addresses_and_calls() -> None:
    # at 0x1000: lea rax, [rip+0x100]; ret -> 0x1007 + 0x100
    assert x86_addresses(bytes.fromhex("488d0500010000 c3"), 0x1000) == [0x1107]
    # call rel32 -0x10 from 0x2000 -> 0x2005 - 0x10; jmp rel32 +0 -> next instruction
    code = bytes.fromhex("e8f0ffffff e900000000")
    assert x86_calls(code, 0x2000) == [0x1FF5, 0x200A]


# -- aarch64 ----------------------------------------------------------------------------------
RET = 0xD65F03C0


def test_a64_movz_movk_ret() -> None:
    assert a64_returns(words(0x528FD480, RET)) == [0x7EA4]  # mov w0, #0x7ea4
    assert a64_returns(words(0x528D1E00, 0x72A00020, RET)) == [92400]  # movz + movk lsl 16
    assert a64_returns(words(0x12800000, RET)) == [0xFFFFFFFF]  # movn w0, #0: -1


def test_a64_constant_before_an_epilogue() -> None:
    # mov w0, #8906; ldr x19, [sp, #16]; ldp x29, x30, [sp], #32; autiasp; ret
    code = words(0x528458A0 | 0, 0xF9400BF3, 0xA8C27BFD, 0xD50323BF, RET)
    assert a64_returns(code) == [(0x528458A0 >> 5) & 0xFFFF]


def test_a64_constant_clobbered_is_not_returned() -> None:
    assert a64_returns(words(0x528458A0, 0x94000000, RET)) == []  # bl in between


def test_a64_stores_through_a_copied_pointer() -> None:
    # gcc -O2: mov x1, x0; cbz x0, +; mov w2, #21803; mov w0, #0; str w2, [x1]; ret
    code = words(0xAA0003E1, 0xB40000A0, 0x528AA562, 0x52800000, 0xB9000022, RET,
                 0x52800080, RET)
    assert a64_stores(code) == {0: [21803]}
    assert a64_returns(code) == [4]


def test_a64_stores_to_two_arguments() -> None:
    # mov w2, #12; str w2, [x0]; mov w2, #2; mov w0, #0; str w2, [x1]; ret
    code = words(0x52800182, 0xB9000002, 0x52800042, 0x52800000, 0xB9000022, RET)
    assert a64_stores(code) == {0: [12], 1: [2]}


def test_a64_addresses_and_calls() -> None:
    # at 0x10000: adrp x0, +1 page; add x0, x0, #0x10; ret -> 0x11010
    code = words(0xB0000000, 0x91004000, RET)
    assert a64_addresses(code, 0x10000) == [0x11010]
    assert a64_calls(words(0x97FFFFF5), 0x30C) == [0x30C - 4 * 11]  # bl -11 words
