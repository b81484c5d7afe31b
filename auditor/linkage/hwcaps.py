"""The hardware-capability subdirectories glibc's ld.so searches in every directory.

glibc 2.33 on: ``glibc-hwcaps/<level>`` (x86-64-v4, v3, v2...), those the CPU supports, best
first. Before glibc 2.37 (which removed them) also the legacy ones ``_dl_important_hwcaps``
builds: every subset of the HWCAP_IMPORTANT names the CPU sets, the AT_PLATFORM name and
``tls``, as a power set (on x86-64 with AT_PLATFORM x86_64: ``tls/x86_64/x86_64``,
``tls/x86_64``, ``tls/x86_64``, ``tls``, ``x86_64/x86_64``, ``x86_64``, ``x86_64``). Which ones
apply depends on the CPU, so a caller that knows it passes them (``ld.so --help`` lists both
kinds); otherwise the variants that exist are only noted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

HWCAPS = {"x86_64": ("glibc-hwcaps/x86-64-v4", "glibc-hwcaps/x86-64-v3", "glibc-hwcaps/x86-64-v2"),
          "ppc64le": ("glibc-hwcaps/power10", "glibc-hwcaps/power9"),
          "s390x": ("glibc-hwcaps/z16", "glibc-hwcaps/z15", "glibc-hwcaps/z14", "glibc-hwcaps/z13")}
# machine -> (the HWCAP_IMPORTANT names every CPU sets, each set some CPU has (in bit order), the
# AT_PLATFORM names ld.so may use: on Intel CPUs with AVX2 it replaces the kernel's x86_64 with
# haswell; sysdeps/x86/cpu-features.c)
LEGACY_HWCAPS: dict[str, tuple[tuple[str, ...], tuple[tuple[str, ...], ...], tuple[str, ...]]] = {
    "x86_64": (("x86_64",), (("x86_64",), ("x86_64", "avx512_1")),
               ("x86_64", "haswell", "xeon_phi")),
    "aarch64": ((), ((), ("atomics",)), ("aarch64",)),
}
MAX_LEGACY_NAMES = 4
# the bits ldconfig gives legacy hwcaps cache entries: hwcap names by bit, AT_PLATFORM names by
# index above bit 48 (sysdeps/x86/dl-procinfo.c, sysdeps/unix/sysv/linux/aarch64)
LEGACY_BITS = {"x86_64": ({0: "sse2", 1: "x86_64", 2: "avx512_1"},
                          ("i586", "i686", "haswell", "xeon_phi")),
               "aarch64": ({8: "atomics"}, ())}
HWCAP_TLS = 1 << 63
FIRST_PLATFORM = 48


def legacy_hwcap_subdirs(hwcaps: Sequence[str], platform: str | None) -> list[str]:
    """The legacy subdirectories glibc before 2.37 searches in each directory, best first (the
    directory itself, last, left out), from the hwcap names in bit order and AT_PLATFORM."""
    names = [*hwcaps[:MAX_LEGACY_NAMES], *([platform] if platform else []), "tls"]
    full = (1 << len(names)) - 1
    return ["/".join(names[i] for i in reversed(range(len(names))) if (full - k) >> i & 1)
            for k in range(full)]


def glibc_version_tuple(version: str | Sequence[int] | None) -> tuple[int, int] | None:
    """``"2.36"``, ``"2.36-9+deb12u4"``, ``(2, 36)`` -> (2, 36); None when unknown."""
    if version is None:
        return None
    if not isinstance(version, str):
        return (int(version[0]), int(version[1])) if len(version) >= 2 else None
    m = re.search(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def hwcaps_plan(machine: str, platform: str, version: tuple[int, int] | None,
                hwcaps: Iterable[str] | None, legacy_hwcaps: Iterable[str] | None,
                ) -> tuple[tuple[str, ...] | None, tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(glibc-hwcaps subdirectories searched, None when unknown; legacy subdirectories searched;
    (legacy subdirectory, when ld.so would search it) pairs to note when a variant exists)."""
    searched = None if hwcaps is None else tuple(hwcaps)
    if version is not None and version < (2, 33):  # before glibc-hwcaps existed
        searched = ()
    old = version is not None and version < (2, 37)
    certain, variants, platforms = LEGACY_HWCAPS.get(machine, ((), ((),), (platform,)))
    legacy: tuple[str, ...] = ()
    if old:
        names = tuple(legacy_hwcaps) if legacy_hwcaps is not None else certain
        legacy = tuple(legacy_hwcap_subdirs(names, platform))
    if (old and legacy_hwcaps is not None) or (version is not None and not old):
        return searched, legacy, ()
    when = "on CPUs with other legacy hwcaps" if old else "by glibc before 2.37 (legacy hwcaps)"
    notes = dict.fromkeys(s for names in variants for plat in dict.fromkeys((platform, *platforms))
                          for s in legacy_hwcap_subdirs(names, plat) if s not in legacy)
    return searched, legacy, tuple((s, when) for s in notes)


def legacy_cache_filter(machine: str, hwcaps: Iterable[str] | None,
                        platform: str) -> Callable[[int], bool]:
    """Whether ld.so takes an ld.so.cache entry of a legacy hwcaps subdirectory (``search_cache``:
    its hwcap bits among the CPU's, its platform bit, if any, AT_PLATFORM's); ``hwcaps`` as
    :func:`hwcaps_plan` takes them (None: those every CPU of the machine has)."""
    names, platforms = LEGACY_BITS.get(machine, ({}, ()))
    active = set(hwcaps if hwcaps is not None else LEGACY_HWCAPS.get(machine, ((),))[0])
    allowed = HWCAP_TLS | sum(1 << bit for bit, name in names.items() if name in active)
    mine = 1 << (FIRST_PLATFORM + platforms.index(platform)) if platform in platforms else 0
    platform_bits = ((1 << len(platforms)) - 1) << FIRST_PLATFORM

    def accepts(hwcap: int) -> bool:
        if hwcap & ~(allowed | platform_bits):
            return False
        return not platform_bits or not hwcap & platform_bits or hwcap & platform_bits == mine

    return accepts
