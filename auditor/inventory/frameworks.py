"""ML frameworks and what they were built for, read from the files their builds generate.

- PyTorch: ``torch/version.py`` (``__version__``, ``cuda``, ``hip``, ``rocm``, ``xpu``,
  ``git_version``, ``debug``); a conda ``pytorch`` record's build string adds cuDNN when it names
  it (``py3.11_cuda12.1_cudnn8.9.2_0``). cuDNN is otherwise not in version.py: linkage tells.
- TensorFlow: ``tensorflow/python/platform/build_info.py`` in each of its generated shapes
  (``collections.OrderedDict([...])`` since 2.4, a dict literal before, module-level names in 1.x);
  the version from the ``tensorflow*`` / ``tf-nightly*`` distribution beside it, or a literal in
  ``versions.py`` / ``__init__.py``.
- JAX: ``jax/version.py`` and ``jaxlib/version.py``; jaxlib's GPU build from its version's local
  part (``0.3.25+cuda11.cudnn82``), ``_cuda_version`` / ``_cudnn_version`` literals, a
  ``jaxlib/cuda`` directory, and the ``jax-cuda12-plugin`` / ``jax-cuda12-pjrt`` (or ``rocm``)
  distributions beside it.

Python files are parsed with :mod:`ast` and only literal values are taken; nothing is executed.
A version that is not a literal is an Unknown.
"""

from __future__ import annotations

import ast
import glob
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from auditor.inventory.base import Cataloger, FileView, Inventory
from auditor.inventory.conda import CondaMetaError, parse_conda_meta
from auditor.inventory.python import (
    MetadataError,
    is_import_dir,
    parse_metadata,
    pythonpath_dirs,
)
from auditor.model import Evidence, Finding, Framework, Unknown

NAME = "frameworks"
TORCH_VERSION = "torch/version.py"
TF_BUILD_INFO = "tensorflow/python/platform/build_info.py"
TF_VERSION_FILES = ("tensorflow/python/framework/versions.py", "tensorflow/__init__.py")
JAX_VERSION, JAXLIB_VERSION = "jax/version.py", "jaxlib/version.py"
DIST_GLOBS = ("*/torch-*.dist-info/METADATA", "*/tensorflow*.dist-info/METADATA",
              "*/tf_nightly*.dist-info/METADATA", "*/intel_tensorflow*.dist-info/METADATA",
              "*/jax*.dist-info/METADATA")
CONDA_TORCH = "*/conda-meta/pytorch-*.json"
GLOBS = (f"*/{TORCH_VERSION}", f"*/{TF_BUILD_INFO}", *(f"*/{p}" for p in TF_VERSION_FILES),
         f"*/{JAX_VERSION}", f"*/{JAXLIB_VERSION}", *DIST_GLOBS, CONDA_TORCH)
MAX_SOURCE_BYTES = 2 << 20

# Distributions that install the ``tensorflow`` package, most usual first.
TF_DISTRIBUTIONS = ("tensorflow", "tensorflow-gpu", "tensorflow-cpu", "tf-nightly",
                    "tf-nightly-gpu", "tf-nightly-cpu", "tensorflow-intel", "intel-tensorflow",
                    "tensorflow-rocm", "tensorflow-aarch64", "tensorflow-cpu-aws",
                    "tensorflow-macos")
JAX_PLUGIN = re.compile(r"^jax-(cuda|rocm)(\d+)-(plugin|pjrt)$")
JAXLIB_LOCAL = re.compile(r"^cuda(\d+)(?:\.cudnn(\d+))?$")
CONDA_BUILD = {"cuda": re.compile(r"(?:^|_)cuda(\d+(?:\.\d+)*)(?=_|$)"),
               "cudnn": re.compile(r"(?:^|_)cudnn(\d+(?:\.\d+)*)(?=_|$)")}
# build_info keys -> the component they give the version of
TF_KEYS = {"cuda_version": "cuda", "cuda_version_number": "cuda", "cudnn_version": "cudnn",
           "cudnn_version_number": "cudnn", "rocm_version": "rocm", "tensorrt_version": "tensorrt",
           "nccl_version": "nccl"}
TF_FLAGS = ("is_cuda_build", "is_rocm_build", "is_tensorrt_build", "cuda_compute_capabilities")


class SourceError(ValueError):
    """A Python file that cannot be parsed."""


class NotLiteral:
    """The value of an assignment that is not a literal (a call, a name, an expression)."""

    def __repr__(self) -> str:
        return "<not a literal>"


NOT_LITERAL = NotLiteral()


# -- reading Python without running it ---------------------------------------------------------
def _literal(node: ast.expr) -> Any:
    """A literal's value; ``collections.OrderedDict([...])`` / ``dict(...)`` of literals as a
    dict (TensorFlow's build_info). Raises ValueError for anything else."""
    if isinstance(node, ast.Call):
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else \
            func.id if isinstance(func, ast.Name) else None
        if called in ("OrderedDict", "dict") and len(node.args) <= 1:
            out = dict(ast.literal_eval(node.args[0])) if node.args else {}
            for keyword in node.keywords:
                if keyword.arg is None:
                    raise ValueError("** in a call")
                out[keyword.arg] = ast.literal_eval(keyword.value)
            return out
        raise ValueError("a call")
    return ast.literal_eval(node)


def module_constants(data: bytes) -> dict[str, Any]:
    """Top-level ``NAME = literal`` and ``NAME: T = literal`` of a module; names assigned
    anything else map to NOT_LITERAL. Raises SourceError."""
    if len(data) > MAX_SOURCE_BYTES:
        raise SourceError(f"{len(data)} bytes, over the {MAX_SOURCE_BYTES} read for constants")
    try:
        tree = ast.parse(data)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise SourceError(f"not parseable as Python ({err.__class__.__name__})") from None
    out: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            names = [node.target.id]
        else:
            continue
        try:
            value = _literal(node.value)  # type: ignore[arg-type]
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
            value = NOT_LITERAL
        for name in names:
            out[name] = value
    return out


def _str(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def public(version: str) -> str:
    """The version without its local part (``2.14.1+cu130`` -> ``2.14.1``), normalised."""
    try:
        return Version(version).public
    except InvalidVersion:
        return version.split("+")[0]


def dotted_cuda(digits: str) -> str:
    """``112`` -> ``11.2``, ``120`` -> ``12.0``, ``12`` -> ``12`` (how builds abbreviate CUDA)."""
    return f"{digits[:-1]}.{digits[-1]}" if len(digits) >= 3 and "." not in digits else digits


# -- what is in the image ----------------------------------------------------------------------
@dataclass(frozen=True)
class Dist:
    name: str  # canonical
    version: str
    path: str


@dataclass
class Scan:
    """The framework files and distributions found, by the directory they are installed in."""

    view: FileView
    inventory: Inventory
    dists: dict[str, dict[str, Dist]] = field(default_factory=dict)  # site -> name -> dist
    extra: frozenset[str] = frozenset()

    def files(self, suffix: str) -> list[tuple[str, str]]:
        """(path, site) of each captured ``SITE/suffix`` in an import directory."""
        out = []
        for path in self.view.captured(f"*/{suffix}"):
            site = path[: -len(suffix) - 1]
            if path.endswith(f"/{suffix}") and is_import_dir(self.view, site, self.extra):
                out.append((path, site))
        return out

    def constants(self, path: str) -> dict[str, Any] | None:
        data = self.view.read(path)
        if data is None:
            return None
        try:
            return module_constants(data)
        except SourceError as err:
            self.unknown(path, str(err))
            return None

    def unknown(self, path: str, reason: str) -> None:
        self.inventory.unknowns.append(Unknown(NAME, path, self.view.layer_of(path), reason))

    def disagreement(self, component: str, path: str, primary: Evidence,
                     others: list[Evidence]) -> None:
        """A finding when other evidence names another (public) version than ``primary``."""
        differ = [e for e in others if e.version and primary.version
                  and public(e.version) != public(primary.version)]
        if differ:
            self.inventory.findings.append(Finding(
                "version-disagreement", "medium", component,
                f"{component} is version {primary.version} by {primary.source}, but "
                + ", ".join(f"{e.version} by {e.source}" for e in differ),
                (primary, *differ), path))


def collect_dists(view: FileView, extra: frozenset[str]) -> dict[str, dict[str, Dist]]:
    out: dict[str, dict[str, Dist]] = {}
    for pattern in DIST_GLOBS:
        for path in view.captured(pattern):
            site = posixpath.dirname(posixpath.dirname(path))
            data = view.read(path)
            if data is None or not is_import_dir(view, site, extra):
                continue
            try:
                meta = parse_metadata(data)
            except MetadataError:
                continue  # the python cataloger records it as an Unknown
            name = str(canonicalize_name(meta.name))
            out.setdefault(site, {}).setdefault(name, Dist(name, meta.version, path))
    return out


def _constant(path: str, name: str, value: Any, version: str | None = None) -> Evidence:
    return Evidence("constant", path, f"{name} = {value!r}", version)


def _metadata(dist: Dist) -> Evidence:
    return Evidence("metadata", dist.path, f"{dist.name} {dist.version}", dist.version)


# -- PyTorch -----------------------------------------------------------------------------------
def conda_prefix(site: str) -> str | None:
    """``opt/conda`` for ``opt/conda/lib/python3.11/site-packages``."""
    match = re.fullmatch(r"(?:(.*)/)?lib/python[^/]+/site-packages", site)
    return (match.group(1) or "") if match else None


def conda_build_evidence(scan: Scan, site: str) -> list[tuple[str, Evidence]]:
    """(component, evidence) from the build string of a conda ``pytorch`` in the same prefix."""
    prefix = conda_prefix(site)
    if prefix is None:
        return []
    meta_dir = f"{prefix}/conda-meta" if prefix else "conda-meta"
    out = []
    for path in scan.view.captured(f"{glob.escape(meta_dir)}/pytorch-*.json"):
        data = scan.view.read(path)
        if data is None or posixpath.dirname(path) != meta_dir:
            continue
        try:
            package = parse_conda_meta(data, prefix, path)
        except CondaMetaError:
            continue  # the conda cataloger records it as an Unknown
        build = package.purl.partition("build=")[2].partition("&")[0]
        for component, pattern in CONDA_BUILD.items():
            match = pattern.search(build)
            if package.name == "pytorch" and match:
                version = dotted_cuda(match.group(1)) if component == "cuda" else match.group(1)
                out.append((component, Evidence("package", path, f"build {build}", version)))
    return out


def catalog_torch(scan: Scan) -> None:
    for path, site in scan.files(TORCH_VERSION):
        consts = scan.constants(path)
        if consts is None:
            continue
        version = _str(consts.get("__version__"))
        if version is None:
            scan.unknown(path, "no __version__ assignment" if "__version__" not in consts else
                         "__version__ is not a string literal (an expression is never evaluated)")
            continue
        primary = _constant(path, "__version__", version, version)
        evidence, built_for = [primary], {}
        for key in ("cuda", "hip", "rocm", "xpu"):
            value = _str(consts.get(key))
            if value:
                built_for[key] = value
                evidence.append(_constant(path, key, value, value))
        for key in ("git_version", "debug"):
            if key in consts and consts[key] is not NOT_LITERAL:
                evidence.append(_constant(path, key, consts[key]))
        others = []
        dist = scan.dists.get(site, {}).get("torch")
        if dist:
            others.append(_metadata(dist))
        for component, item in conda_build_evidence(scan, site):
            if item.version:
                built_for.setdefault(component, item.version)
            evidence.append(item)
        evidence.extend(others)
        scan.disagreement("torch", path, primary, others)
        scan.inventory.frameworks.append(Framework(
            "torch", version, path, scan.view.layer_of(path), built_for, tuple(evidence)))


# -- TensorFlow --------------------------------------------------------------------------------
def tf_build_values(consts: dict[str, Any]) -> dict[str, Any]:
    """The build facts, from ``build_info = {...}`` / ``OrderedDict([...])`` or module names."""
    info = consts.get("build_info")
    if isinstance(info, dict):
        return {str(k): v for k, v in info.items()}
    return {k: v for k, v in consts.items() if k in TF_KEYS or k in TF_FLAGS}


def tf_component_version(component: str, value: Any) -> str | None:
    """``'11.2'`` as is; Windows builds' ``'64_112'`` (from cudart64_112.dll) as ``11.2``."""
    if isinstance(value, bool):
        return None
    text = str(value) if isinstance(value, int | float) else _str(value)
    if text is None:
        return None
    windows = re.fullmatch(r"64_(\d+)", text)
    if windows:
        return dotted_cuda(windows.group(1)) if component == "cuda" else windows.group(1)
    return text


def tf_version(scan: Scan, site: str) -> tuple[str | None, list[Evidence]]:
    dists = scan.dists.get(site, {})
    found = [dists[name] for name in TF_DISTRIBUTIONS if name in dists]
    if found:
        return found[0].version, [_metadata(d) for d in found]
    for suffix in TF_VERSION_FILES:
        path = f"{site}/{suffix}"
        consts = scan.constants(path) or {}
        for name in ("__version__", "VERSION", "_VERSION"):
            value = _str(consts.get(name))
            if value:
                return value, [_constant(path, name, value, value)]
    return None, []


def catalog_tensorflow(scan: Scan) -> None:
    for path, site in scan.files(TF_BUILD_INFO):
        consts = scan.constants(path)
        if consts is None:
            continue
        values = tf_build_values(consts)
        if not values:
            scan.unknown(path, "no build_info dict or build constants with literal values")
            continue
        evidence, built_for = [], {}
        for key, value in values.items():
            component = TF_KEYS.get(key)
            version = tf_component_version(component, value) if component else None
            if component and version:
                built_for.setdefault(component, version)
            if component or key in TF_FLAGS:
                evidence.append(_constant(path, key, value, version))
        if values.get("is_cuda_build") is False:
            built_for.pop("cuda", None)
            built_for.pop("cudnn", None)
        arch = values.get("cuda_compute_capabilities")
        if isinstance(arch, list | tuple) and arch and "cuda" in built_for:
            built_for["cuda_arch"] = ",".join(str(a) for a in arch)
        version, version_evidence = tf_version(scan, site)
        if version is None:
            scan.unknown(path, "tensorflow build info without a version: no tensorflow "
                         "distribution beside it and no version literal")
        scan.inventory.frameworks.append(Framework(
            "tensorflow", version or "", path, scan.view.layer_of(path), built_for,
            tuple(version_evidence + evidence)))


# -- JAX ---------------------------------------------------------------------------------------
def jax_version(path: str, consts: dict[str, Any],
                dist: Dist | None) -> tuple[str | None, Evidence | None, list[Evidence]]:
    """(version, the evidence it was taken from, all evidence): ``_release_version`` (what a
    release's ``__version__`` returns), else the distribution's version (a dev build's
    ``__version__`` is computed at import), else a literal ``__version__``, else ``_version``."""
    evidence = [_constant(path, name, _str(consts.get(name)), _str(consts.get(name)))
                for name in ("_release_version", "__version__", "_version")
                if _str(consts.get(name))]
    if dist:
        evidence.append(_metadata(dist))
    for item in evidence:
        if item.value.startswith("_release_version") or item.kind == "metadata":
            return item.version, item, evidence
    for item in evidence:
        return item.version, item, evidence
    return None, None, evidence


def jaxlib_built_for(scan: Scan, site: str, version: str, consts: dict[str, Any],
                     path: str) -> tuple[dict[str, str], list[Evidence], list[Dist]]:
    built_for: dict[str, str] = {}
    evidence: list[Evidence] = []
    for key, component in (("_cuda_version", "cuda"), ("_cudnn_version", "cudnn")):
        value = _str(consts.get(key))
        if value:
            built_for[component] = value
            evidence.append(_constant(path, key, value, value))
    local = version.partition("+")[2]
    match = JAXLIB_LOCAL.fullmatch(local)
    if match:  # jaxlib 0.3.25+cuda11.cudnn82: CUDA 11, cuDNN 8.2
        built_for.setdefault("cuda", match.group(1))
        evidence.append(Evidence("metadata", path, f"jaxlib {version}", match.group(1)))
        if match.group(2):
            cudnn = f"{match.group(2)[0]}.{match.group(2)[1:]}" if len(match.group(2)) > 1 \
                else match.group(2)
            built_for.setdefault("cudnn", cudnn)
    plugins = []
    for name, dist in sorted(scan.dists.get(site, {}).items()):
        plugin = JAX_PLUGIN.fullmatch(name)
        if plugin:
            kind, digits = plugin.group(1), plugin.group(2)
            implied = digits if kind == "cuda" else f"{digits[0]}.{digits[1:] or '0'}"
            built_for.setdefault(kind, implied)
            evidence.append(Evidence("package", dist.path, f"{dist.name} {dist.version}", implied))
            plugins.append(dist)
    cuda_dir = f"{site}/jaxlib/cuda"
    if "cuda" not in built_for and scan.view.index.resolve(cuda_dir) is not None:
        evidence.append(Evidence("filename", cuda_dir, "jaxlib/cuda", None))
    return built_for, evidence, plugins


def catalog_jax(scan: Scan) -> None:
    for suffix, name in ((JAX_VERSION, "jax"), (JAXLIB_VERSION, "jaxlib")):
        for path, site in scan.files(suffix):
            consts = scan.constants(path)
            if consts is None:
                continue
            dist = scan.dists.get(site, {}).get(name)
            version, primary, evidence = jax_version(path, consts, dist)
            if version is None or primary is None:
                scan.unknown(path, "no version literal (_release_version, __version__, _version)")
                continue
            if dist and primary.kind == "constant":
                scan.disagreement(name, path, primary, [_metadata(dist)])
            built_for: dict[str, str] = {}
            if name == "jaxlib":
                built_for, more, plugins = jaxlib_built_for(scan, site, version, consts, path)
                evidence.extend(more)
                # jaxlib loads its GPU plugin only at the very same version
                scan.disagreement("jaxlib", path, primary, [_metadata(p) for p in plugins])
            scan.inventory.frameworks.append(Framework(
                name, version, path, scan.view.layer_of(path), built_for, tuple(evidence)))


def run(view: FileView, inventory: Inventory) -> None:
    extra = pythonpath_dirs(view)
    scan = Scan(view, inventory, collect_dists(view, extra), extra)
    catalog_torch(scan)
    catalog_tensorflow(scan)
    catalog_jax(scan)


CATALOGER = Cataloger(NAME, 1, GLOBS, run)
