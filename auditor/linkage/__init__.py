"""Which file the dynamic loader would load for each DT_NEEDED, computed from facts.

``ldconf`` reads ``/etc/ld.so.conf`` (with ``include``), ``ldcache`` reads ``/etc/ld.so.cache``,
``resolve`` walks a consumer's dependency tree as glibc's ``ld.so`` does, confined to the image.
:func:`linkage_of` gathers their inputs from a cataloger's :class:`FileView`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import posixpath
from typing import TYPE_CHECKING, Any

from auditor.linkage import musl
from auditor.linkage.ldcache import CacheEntry, parse_ld_cache
from auditor.linkage.ldconf import parse_ld_conf
from auditor.linkage.model import ConsumerLinkage, Resolution
from auditor.linkage.resolve import resolve_linkage

if TYPE_CHECKING:  # only a type here; importing auditor.inventory would import this package back
    from auditor.inventory.base import FileView

CONF_GLOBS = ("etc/ld.so.cache", "etc/ld.so.conf", "etc/ld.so.conf.d/*", "etc/ld.so.preload",
              "etc/ld-musl-*.path")


_IMAGE_ENV = object()


@dataclasses.dataclass(frozen=True)
class LoaderInputs:
    """What every consumer of one image shares: the parsed ld.so.cache (None: the image has
    none), the ld.so.conf directories, their problems, and the small loader files read so far
    (``/etc/ld.so.preload``, musl's path files), each read from the cache once."""

    cache: list[CacheEntry] | None
    conf_dirs: list[str]
    problems: list[str]
    texts: dict[str, str | None] = dataclasses.field(default_factory=dict)

    def text(self, view: FileView, path: str) -> str | None:
        """A loader file's text (root-relative ``path``), or None when the image has none."""
        if path not in self.texts:
            data = view.read(path) if view.index.lookup(path) is not None else None
            self.texts[path] = data.decode("utf-8", "replace") if data is not None else None
        return self.texts[path]


def linkage_of(view: FileView, owner: str, consumer: str, inputs: LoaderInputs | None = None,
               ld_library_path: Any = _IMAGE_ENV, **options: Any) -> ConsumerLinkage:
    """``consumer``'s linkage, with the ELF facts analyzer ``owner`` found and the cache, conf
    files (captured by ``CONF_GLOBS``) and Env of the image in ``view`` (``inputs``: those of
    :func:`loader_inputs`, when resolving many consumers; ``ld_library_path``: a value other
    than the Env's, None for none); ``options`` go to :func:`resolve_linkage` (``hwcaps``,
    ``dlopen``...)."""
    inputs = inputs if inputs is not None else loader_inputs(view)

    def elf_of(path: str) -> dict[str, Any] | None:
        return view.index.facts(path, owner)

    env = view.env()
    llp = env.get("LD_LIBRARY_PATH") if ld_library_path is _IMAGE_ENV else ld_library_path
    options.setdefault("ld_preload", env.get("LD_PRELOAD"))
    options.setdefault("ld_so_preload", inputs.text(view, "etc/ld.so.preload"))
    if "musl_path" not in options:
        options["musl_path"] = _musl_path(view, consumer, owner, inputs)
    result = resolve_linkage(consumer, elf_of, view.index, llp, inputs.cache, inputs.conf_dirs,
                             **options)
    return dataclasses.replace(result, problems=(*inputs.problems, *result.problems))


def _musl_path(view: FileView, consumer: str, owner: str, inputs: LoaderInputs) -> str | None:
    """The text of musl's path file for the consumer's loader (its PT_INTERP, else the
    image's musl loader), or None."""
    facts = view.index.facts(consumer.lstrip("/"), owner) or {}
    interp = facts.get("interp")
    if not interp:
        machine = str(facts.get("machine") or "")
        interp = next((p for p in musl.loader_paths(machine)
                       if view.index.lookup(p.lstrip("/")) is not None), None)
    if not interp or not musl.is_musl_loader(str(interp)):
        return None
    return inputs.text(view, musl.path_file(str(interp)).lstrip("/"))


def loader_inputs(view: FileView) -> LoaderInputs:
    """(parsed ld.so.cache or None, ld.so.conf directories, problems) of the image."""
    problems: list[str] = []
    cache: list[CacheEntry] | None = None
    if view.index.lookup("etc/ld.so.cache") is not None:
        data = view.read("etc/ld.so.cache")
        if data is None:
            problems.append("/etc/ld.so.cache: present but not captured")
        else:
            cache, cache_problems = parse_ld_cache(data)
            problems.extend(f"/etc/ld.so.cache: {p}" for p in cache_problems)

    inputs = LoaderInputs(cache, [], problems)

    def read(path: str) -> str | None:
        return inputs.text(view, path.lstrip("/"))

    def glob(pattern: str) -> list[str]:
        directory = view.index.resolve(posixpath.dirname(pattern))
        if directory is None:
            return []
        prefix = f"{directory}/" if directory else ""
        names = [p[len(prefix):] for p in view.index.entries if p.startswith(prefix)
                 and "/" not in p[len(prefix):]]
        base = posixpath.basename(pattern)
        return ["/" + prefix + n for n in names if fnmatch.fnmatchcase(n, base)]

    conf_dirs, conf_problems = parse_ld_conf("/etc/ld.so.conf", read, glob)
    problems.extend(conf_problems)
    return dataclasses.replace(inputs, conf_dirs=conf_dirs)


__all__ = ["CONF_GLOBS", "ConsumerLinkage", "LoaderInputs", "Resolution", "linkage_of",
           "loader_inputs", "resolve_linkage"]
