"""From resolved consumers to the Stack's linkage: which copy of each numeric library wins, which
copies lose, and the findings (a library missing, a loader error, a framework loading another
version than it was built for, one library in several versions, ``LD_LIBRARY_PATH`` changing
what a framework loads, the host's driver library baked into the image). Pure."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from auditor.linkage.model import Consumer, ConsumerLinkage, Copy, Winner
from auditor.model import Evidence, Finding, Framework

# framework build key -> the library components that carry that version
BUILT_FOR = {"cuda": ("cudart",), "cudnn": ("cudnn",), "nccl": ("nccl",)}
MAX_LISTED = 5  # consumers named in one finding


def version_prefix_matches(built_for: str, present: str) -> bool:
    """A build's version matches a library's if every part the build names is equal:
    built for cuDNN "8" is satisfied by 8.1.0; built for CUDA "11.2" is not by 11.8.89."""
    want = built_for.split("+")[0].split(".")
    have = present.split("+")[0].split(".")
    return len(have) >= len(want) and have[: len(want)] == want


def winners(consumers: Sequence[Consumer], copy_of: Callable[[str], Copy],
            copies_named: Callable[[str], list[str]]) -> tuple[Winner, ...]:
    """One winner per (name asked for, file loaded) among numeric libraries, with the other
    files of that name in the image as the copies it shadows."""
    found: dict[tuple[str, str], tuple[set[str], set[str]]] = {}
    for consumer in consumers:
        for r in consumer.linkage.resolutions:
            if r.file is None or copy_of(r.file).component is None:
                continue
            hows, users = found.setdefault((r.needed, r.file), (set(), set()))
            if r.how != "already-loaded":
                hows.add(r.how)
            users.add(consumer.linkage.consumer)
    out = []
    for (needed, file), (hows, users) in sorted(found.items()):
        others = [copy_of(f) for f in copies_named(needed) if f != file]
        out.append(Winner(needed, copy_of(file), tuple(sorted(hows)), tuple(sorted(users)),
                          tuple(others)))
    return tuple(out)


def _consumers_text(names: Iterable[str]) -> str:
    names = sorted(set(names))
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def _copy_text(copy: Copy) -> str:
    return f"/{copy.file} ({copy.version or 'version unknown'})"


@dataclass(frozen=True)
class Context:
    """What the findings are judged against."""

    frameworks: Sequence[Framework]
    is_host_provided: Callable[[str], bool]
    copy_of: Callable[[str], Copy]
    ld_library_path: str | None = None


def findings(consumers: Sequence[Consumer], won: Sequence[Winner], ctx: Context,
             without_llp: Mapping[str, ConsumerLinkage] | None = None,
             image_files: Iterable[tuple[str, str | None]] = ()) -> list[Finding]:
    """Every linkage finding; ``without_llp``: each consumer resolved again with no
    ``LD_LIBRARY_PATH`` (when the image sets one); ``image_files``: (path, SONAME or None)
    of every ELF file."""
    out = _missing(consumers, ctx) + _fatal(consumers) + _built_for(consumers, ctx)
    out += _mixed(won)
    if without_llp:
        out += _llp_override(consumers, without_llp, ctx)
    out += _driver(image_files, ctx)
    return out


def _missing(consumers: Sequence[Consumer], ctx: Context) -> list[Finding]:
    missing: dict[tuple[str, str], list[str]] = {}
    for consumer in consumers:
        for r in consumer.linkage.resolutions:
            if r.how == "not-found" and not ctx.is_host_provided(r.needed):
                missing.setdefault((r.needed, r.kind), []).append(consumer.linkage.consumer)
    out = []
    for (needed, kind), users in sorted(missing.items()):
        framework_users = [c for c in consumers if c.framework and c.linkage.consumer in users]
        # a framework's module fails to import; any other ELF file (--all-elf) may be a plugin
        # whose loader provides the library first: worth knowing, rarely a defect
        severity = ("high" if kind == "needed" else "medium") if framework_users else "low"
        how = "needs" if kind == "needed" else "opens at run time"
        effect = "fails to load" if kind == "needed" else "fails when it is first used"
        out.append(Finding(
            "linkage-missing-library", severity, needed,
            f"{_consumers_text(users)} {how} {needed}, which no file in the image provides "
            f"where the loader looks: it {effect}",
            tuple(Evidence("linkage", u, f"{needed} => not found") for u in sorted(set(users))
                  [:MAX_LISTED]),
            sorted(users)[0].lstrip("/")))
    return out


def _fatal(consumers: Sequence[Consumer]) -> list[Finding]:
    return [Finding("linkage-loader-error", "high", c.linkage.consumer,
                    f"the loader stops on {c.linkage.consumer}: {c.linkage.fatal}",
                    (Evidence("linkage", c.linkage.consumer, c.linkage.fatal or ""),),
                    c.linkage.consumer.lstrip("/"))
            for c in consumers if c.linkage.fatal]


def _built_for(consumers: Sequence[Consumer], ctx: Context) -> list[Finding]:
    out = []
    for framework in ctx.frameworks:
        mine = [c for c in consumers if c.framework == framework.name]
        for key, want in sorted(framework.built_for.items()):
            components = BUILT_FOR.get(key, ())
            loaded: dict[str, set[str]] = {}
            for consumer in mine:
                for r in consumer.linkage.resolutions:
                    copy = ctx.copy_of(r.file) if r.file else None
                    if copy and copy.component in components and copy.version \
                            and not version_prefix_matches(want, copy.version):
                        loaded.setdefault(r.file or "", set()).add(consumer.linkage.consumer)
            for file, users in sorted(loaded.items()):
                copy = ctx.copy_of(file)
                out.append(Finding(
                    "linkage-built-for-mismatch", "high", key,
                    f"{framework.name} {framework.version} was built for {key} {want}, but "
                    f"{_consumers_text(users)} load {_copy_text(copy)}",
                    (Evidence("framework-build", framework.path, f"{key}={want}", want),
                     Evidence("linkage", sorted(users)[0], f"/{file}", copy.version)),
                    framework.path))
    return out


def _mixed(won: Sequence[Winner]) -> list[Finding]:
    by_component: dict[str, list[Winner]] = {}
    for winner in won:
        if winner.loaded.component:
            by_component.setdefault(winner.loaded.component, []).append(winner)
    out = []
    for component, group in sorted(by_component.items()):
        versions = {w.loaded.version for w in group if w.loaded.version}
        if len(versions) < 2:
            continue
        parts = "; ".join(f"{_consumers_text(w.consumers)} load {_copy_text(w.loaded)}"
                          for w in group)
        out.append(Finding(
            "linkage-mixed-versions", "high", component,
            f"{component} is loaded in {len(versions)} versions ({', '.join(sorted(versions))}): "
            f"{parts}",
            tuple(Evidence("linkage", w.consumers[0], f"/{w.loaded.file}", w.loaded.version)
                  for w in group),
            group[0].loaded.file))
    return out


def _llp_override(consumers: Sequence[Consumer], without: Mapping[str, ConsumerLinkage],
                  ctx: Context) -> list[Finding]:
    changes: dict[tuple[str, str, str], set[str]] = {}
    for consumer in consumers:
        plain = without.get(consumer.linkage.consumer)
        if plain is None:
            continue
        instead = plain.loaded()
        for r in consumer.linkage.resolutions:
            if r.how != "ld_library_path" or r.file is None:
                continue
            other = instead.get(r.needed)
            if other and other != r.file:
                changes.setdefault((r.needed, r.file, other), set()).add(consumer.linkage.consumer)
    out = []
    for (needed, file, other), users in sorted(changes.items()):
        got, meant = ctx.copy_of(file), ctx.copy_of(other)
        same = got.version is not None and got.version == meant.version
        out.append(Finding(
            "linkage-ld-library-path-override", "medium" if same else "high",
            got.component or needed,
            f"LD_LIBRARY_PATH={ctx.ld_library_path} makes {_consumers_text(users)} load "
            f"{_copy_text(got)} instead of {_copy_text(meant)}, which it loads without it",
            (Evidence("env", "Env:LD_LIBRARY_PATH", ctx.ld_library_path or ""),
             Evidence("linkage", f"/{file}", needed, got.version),
             Evidence("linkage", f"/{other}", needed, meant.version)),
            file))
    return out


def _driver(files: Iterable[tuple[str, str | None]], ctx: Context) -> list[Finding]:
    baked = sorted(f for f, soname in files
                   if (ctx.is_host_provided(f.rsplit("/", 1)[-1])
                       or (soname and ctx.is_host_provided(soname)))
                   and "/stubs/" not in f"/{f}")
    if not baked:
        return []
    return [Finding(
        "driver-library-in-image", "high", "cuda-driver",
        f"the image holds the GPU driver's {', '.join('/' + f for f in baked[:MAX_LISTED])}: "
        "the driver library must come from the host at run time (the NVIDIA container toolkit "
        "mounts it); a copy in the image can shadow it and mismatch the host's kernel module",
        tuple(Evidence("file", f"/{f}", f.rsplit("/", 1)[-1]) for f in baked[:MAX_LISTED]),
        baked[0])]
