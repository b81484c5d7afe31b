"""ML frameworks and what they were built for.

Real files where this machine has them: ``torch/version.py`` and the dist-info of the CUDA torch
2.14.1 wheel and of torch 2.13.0+cpu, ``build_info.py`` of tensorflow-cpu 2.21.0, ``version.py``
of jax and jaxlib, and the ``jax-cuda12-plugin`` wheel (8 MB, downloaded once into the fixture
cache when no local index has it). The big wheels are never installed or copied: the few members
needed are read out of the wheel zip where pip's resolver finds it, and made into an image layer.

TensorFlow GPU wheels are too big to fetch here, so TF 2.8's ``build_info.py`` is reconstructed
in the shape its generator (``tensorflow/tools/build_info/gen_build_info.py``) wrote for the
Linux GPU wheel, ``collections.OrderedDict`` of sorted pairs, with the values TF 2.8.0 reports
(CUDA 11.2, cuDNN 8, TensorRT); older shapes (a dict literal on TF 2.3 Windows, module-level
names on TF 1.x) likewise, and the old ``jaxlib-0.3.25+cuda11.cudnn82`` naming.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from auditor.audit import AuditOptions, AuditResult, audit
from auditor.inventory import conda, frameworks, python
from auditor.inventory.base import Cataloger
from auditor.inventory.frameworks import NOT_LITERAL, module_constants
from auditor.model import Framework
from auditor.testing import LayerBuilder, build_oci_layout, files_layer
from fixtures.debian import fixture_cache_dir

SITE = "usr/local/lib/python3.11/site-packages"
CONDA_SITE = "opt/conda/lib/python3.11/site-packages"
OURS: list[Cataloger] = [python.CATALOGER, conda.CATALOGER, frameworks.CATALOGER]


def _audit(tmp_path: Path, layers: list[LayerBuilder], config: dict | None = None) -> AuditResult:
    build_oci_layout(tmp_path / "image", layers, tag="t", config=config)
    return audit(f"oci:{tmp_path / 'image'}:t", AuditOptions(cache_dir=str(tmp_path / "cache")),
                 catalogers=OURS)


def _frameworks(result: AuditResult) -> dict[str, Framework]:
    found = {f.name: f for f in result.inventory.frameworks}
    assert len(found) == len(result.inventory.frameworks)
    return found


def _unknowns(result: AuditResult) -> list[tuple[str, str]]:
    return sorted((u.cataloger, u.path) for u in result.inventory.unknowns)


# -- real wheels, read in place -----------------------------------------------------------------

def wheel_file(requirement: str, scratch: Path) -> Path:
    """The wheel pip would install for ``requirement``: where it lies when a local index has it
    (opened in place: torch's is 554 MB), else downloaded once into the fixture cache."""
    report = scratch / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-deps",
         "--ignore-installed", "--report", str(report), requirement],
        capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    url = json.loads(report.read_text())["install"][0]["download_info"]["url"]
    path = Path(unquote(urlsplit(url).path))
    if url.startswith("file://"):
        return path
    cache = fixture_cache_dir() / "wheels"
    if not (cache / path.name).is_file():
        cache.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                               "-d", str(cache), requirement],
                              capture_output=True, text=True, timeout=1800, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
    return cache / path.name


def wheel_members(wheel: Path, wanted: re.Pattern[str]) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as zf:
        return {name: zf.read(name) for name in zf.namelist() if wanted.fullmatch(name)}


def _literal(text: str, name: str) -> str | None:
    """``name = 'value'`` / ``name: T = 'value'`` read with a regular expression (not ast)."""
    match = re.search(rf"^{name}(?:: [^=]+)? = (?:'([^']*)'|None)$", text, re.MULTILINE)
    assert match, f"{name} not in the file"
    return match.group(1)


def _site(members: dict[str, bytes], site: str = SITE) -> dict[str, str | bytes]:
    return {f"{site}/{name}": data for name, data in members.items()}


TORCH_MEMBERS = re.compile(r"torch/version\.py|torch-[^/]+\.dist-info/(METADATA|WHEEL)")


@pytest.mark.slow
@pytest.mark.parametrize("requirement", ["torch==2.14.1", "torch==2.13.0+cpu"])
def test_real_torch(tmp_path: Path, requirement: str) -> None:
    members = wheel_members(wheel_file(requirement, tmp_path), TORCH_MEMBERS)
    assert len(members) == 3
    text = members["torch/version.py"].decode()
    version, cuda = _literal(text, "__version__"), _literal(text, "cuda")
    result = _audit(tmp_path, [LayerBuilder().dir("usr"), files_layer(_site(members))])
    torch = _frameworks(result)["torch"]
    assert (torch.version, torch.path, torch.layer) == (version, f"{SITE}/torch/version.py", 1)
    assert torch.built_for.get("cuda") == cuda
    if requirement == "torch==2.14.1":  # the machine's CUDA build
        assert (version, cuda) == ("2.14.1+cu130", "13.0")
        assert torch.built_for == {"cuda": "13.0"}
    else:
        assert cuda is None and torch.built_for == {}
    assert ("constant", f"__version__ = {version!r}") in [(e.kind, e.value) for e in torch.evidence]
    metadata = [e for e in torch.evidence if e.kind == "metadata"]
    assert [e.version for e in metadata] == [version.split("+")[0] if cuda else version]
    assert result.inventory.findings == []  # 2.14.1 (dist-info) is 2.14.1+cu130's public part
    assert _unknowns(result) == []


TF_MEMBERS = re.compile(r"tensorflow/python/platform/build_info\.py|"
                        r"tensorflow_cpu-[^/]+\.dist-info/METADATA")


@pytest.mark.slow
def test_real_tensorflow_cpu(tmp_path: Path) -> None:
    members = wheel_members(wheel_file("tensorflow-cpu", tmp_path), TF_MEMBERS)
    assert len(members) == 2
    meta = next(v for k, v in members.items() if k.endswith("METADATA")).decode()
    version = re.search(r"^Version: (\S+)$", meta, re.MULTILINE).group(1)  # type: ignore[union-attr]
    build_info = members["tensorflow/python/platform/build_info.py"].decode()
    assert "('is_cuda_build', False)" in build_info
    result = _audit(tmp_path, [files_layer(_site(members))])
    tf = _frameworks(result)["tensorflow"]
    assert (tf.version, tf.built_for) == (version, {})
    assert ("constant", "is_cuda_build = False") in [(e.kind, e.value) for e in tf.evidence]
    assert _unknowns(result) == []


JAX_MEMBERS = re.compile(r"(jax|jaxlib|jax_cuda12_plugin)/(version|__init__)\.py|"
                         r"(jax|jaxlib|jax_cuda12_plugin)-[^/]+\.dist-info/(METADATA|RECORD)")


@pytest.mark.slow
def test_real_jax_jaxlib_and_cuda_plugin(tmp_path: Path) -> None:
    jaxlib_wheel = wheel_file("jaxlib", tmp_path)
    jaxlib_version = jaxlib_wheel.name.split("-")[1]
    members: dict[str, bytes] = {}
    for wheel in (wheel_file("jax", tmp_path), jaxlib_wheel,
                  wheel_file(f"jax-cuda12-plugin=={jaxlib_version}", tmp_path)):
        members.update(wheel_members(wheel, JAX_MEMBERS))
    jax_text = members["jax/version.py"].decode()
    release = re.search(r"^_release_version: str = '([^']+)'$", jax_text, re.MULTILINE)
    assert release is not None
    result = _audit(tmp_path, [files_layer(_site(members))])
    found = _frameworks(result)
    assert found["jax"].version == release.group(1)
    assert found["jax"].built_for == {}
    jaxlib = found["jaxlib"]
    assert jaxlib.version == jaxlib_version
    assert jaxlib.built_for == {"cuda": "12"}  # from the jax-cuda12-plugin distribution
    assert ("package", f"jax-cuda12-plugin {jaxlib_version}", "12") in [
        (e.kind, e.value, e.version) for e in jaxlib.evidence]
    assert result.inventory.findings == []
    assert _unknowns(result) == []
    python_names = {p.name for p in result.inventory.packages}
    assert {"jax", "jaxlib", "jax-cuda12-plugin"} <= python_names


# -- TensorFlow's build_info shapes -------------------------------------------------------------

TF28_BUILD_INFO = '''
# Copyright 2020 The TensorFlow Authors. All Rights Reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# ==============================================================================
"""Auto-generated module providing information about the build."""
import collections

build_info = collections.OrderedDict([('cpu_compiler', '/dt9/usr/bin/gcc'), \
('cuda_compute_capabilities', ['sm_35', 'sm_50', 'sm_60', 'sm_70', 'sm_75', 'compute_80']), \
('cuda_version', '11.2'), ('cudnn_version', '8'), ('is_cuda_build', True), \
('is_rocm_build', False), ('is_tensorrt_build', True)])
'''.replace("\\\n", "")
TF28_METADATA = """Metadata-Version: 2.1
Name: tensorflow-gpu
Version: 2.8.0
Summary: TensorFlow is an open source machine learning framework for everyone.
License: Apache 2.0
Classifier: License :: OSI Approved :: Apache Software License

TensorFlow is an open source software library for high performance numerical computation.
"""
TF23_WINDOWS_BUILD_INFO = '''"""Auto-generated module providing information about the build."""
from __future__ import absolute_import

build_info = {'cuda_version': '64_101', 'cudnn_version': '64_7', \
'cuda_compute_capabilities': ['sm_35', 'sm_37', 'sm_52', 'sm_60', 'sm_61', 'compute_70'], \
'cpu_compiler': 'cl.exe', 'is_rocm_build': False, 'is_cuda_build': True, \
'cudart_dll_name': 'cudart64_101.dll', 'cudnn_dll_name': 'cudnn64_7.dll'}
'''.replace("\\\n", "")
TF1_BUILD_INFO = """# Generated by build_info.py
is_rocm_build = False
is_cuda_build = True
cuda_version_number = '10.0'
cudnn_version_number = '7'
"""


def test_tensorflow_2_8_gpu(tmp_path: Path) -> None:
    files = {f"{SITE}/tensorflow/python/platform/build_info.py": TF28_BUILD_INFO,
             f"{SITE}/tensorflow_gpu-2.8.0.dist-info/METADATA": TF28_METADATA,
             f"{SITE}/tensorflow_estimator-2.8.0.dist-info/METADATA":
                 "Metadata-Version: 2.1\nName: tensorflow-estimator\nVersion: 2.8.0\n"}
    result = _audit(tmp_path, [files_layer(files)])
    tf = _frameworks(result)["tensorflow"]
    assert tf.version == "2.8.0"
    assert tf.built_for == {"cuda": "11.2", "cudnn": "8",
                            "cuda_arch": "sm_35,sm_50,sm_60,sm_70,sm_75,compute_80"}
    kinds = {(e.kind, e.source, e.version) for e in tf.evidence}
    assert ("metadata", f"{SITE}/tensorflow_gpu-2.8.0.dist-info/METADATA", "2.8.0") in kinds
    assert ("constant", f"{SITE}/tensorflow/python/platform/build_info.py", "11.2") in kinds
    assert ("constant", "is_tensorrt_build = True") in [(e.kind, e.value) for e in tf.evidence]
    assert tf.layer == 0


@pytest.mark.parametrize(("build_info", "built_for"), [
    (TF23_WINDOWS_BUILD_INFO, {"cuda": "10.1", "cudnn": "7",
                               "cuda_arch": "sm_35,sm_37,sm_52,sm_60,sm_61,compute_70"}),
    (TF1_BUILD_INFO, {"cuda": "10.0", "cudnn": "7"}),
])
def test_tensorflow_older_build_info_shapes(tmp_path: Path, build_info: str,
                                            built_for: dict[str, str]) -> None:
    files = {f"{SITE}/tensorflow/python/platform/build_info.py": build_info,
             f"{SITE}/tensorflow/python/framework/versions.py":
                 "VERSION = '1.15.5'\nGIT_VERSION = 'v1.15.4-39-g3db52be'\n"}
    result = _audit(tmp_path, [files_layer(files)])
    tf = _frameworks(result)["tensorflow"]
    assert (tf.version, tf.built_for) == ("1.15.5", built_for)
    assert _unknowns(result) == []


def test_tensorflow_without_a_version_is_kept_and_said(tmp_path: Path) -> None:
    files = {f"{SITE}/tensorflow/python/platform/build_info.py": TF1_BUILD_INFO}
    result = _audit(tmp_path, [files_layer(files)])
    assert _frameworks(result)["tensorflow"].version == ""
    unknowns = _unknowns(result)
    assert [u for u in unknowns if u[0] != "rules"] == [
        ("frameworks", f"{SITE}/tensorflow/python/platform/build_info.py")]
    # and the TensorFlow rules say they could not be evaluated, rather than passing
    assert any(u[0] == "rules" and "tensorflow" in u[1] for u in unknowns)


# -- PyTorch from conda, JAX's older names, disagreements ---------------------------------------

TORCH_VERSION_PY = """from typing import Optional

__all__ = ['__version__', 'debug', 'cuda', 'git_version', 'hip']
__version__ = '{version}'
debug = False
cuda: Optional[str] = '{cuda}'
git_version = '7bcf7da3a268b435777fe87c7794c382f444e86d'
hip: Optional[str] = None
"""


def test_conda_pytorch_build_string_adds_cudnn(tmp_path: Path) -> None:
    """The pytorch channel's build string names cuDNN, which torch/version.py does not."""
    record = {"name": "pytorch", "version": "2.1.0", "build": "py3.11_cuda12.1_cudnn8.9.2_0",
              "build_number": 0, "channel": "https://conda.anaconda.org/pytorch/linux-64",
              "subdir": "linux-64", "files": ["lib/python3.11/site-packages/torch/version.py"]}
    files = {f"{CONDA_SITE}/torch/version.py":
                 TORCH_VERSION_PY.format(version="2.1.0", cuda="12.1"),
             "opt/conda/conda-meta/pytorch-2.1.0-py3.11_cuda12.1_cudnn8.9.2_0.json":
                 json.dumps(record)}
    result = _audit(tmp_path, [files_layer(files)])
    torch = _frameworks(result)["torch"]
    assert torch.built_for == {"cuda": "12.1", "cudnn": "8.9.2"}
    assert ("package", "8.9.2") in [(e.kind, e.version) for e in torch.evidence]
    assert [p.name for p in result.inventory.packages if p.type == "conda"] == ["pytorch"]


def test_torch_version_disagreeing_with_its_distribution_is_a_finding(tmp_path: Path) -> None:
    files = {f"{SITE}/torch/version.py": TORCH_VERSION_PY.format(version="2.14.1+cu130",
                                                                 cuda="13.0"),
             f"{SITE}/torch-2.13.0.dist-info/METADATA":
                 "Metadata-Version: 2.1\nName: torch\nVersion: 2.13.0\n"}
    result = _audit(tmp_path, [files_layer(files)])
    assert [(f.id, f.component) for f in result.inventory.findings] == [
        ("version-disagreement", "torch")]
    assert "2.13.0" in result.inventory.findings[0].message


def test_old_jaxlib_cuda_local_version_and_plugin_mismatch(tmp_path: Path) -> None:
    files = {f"{SITE}/jaxlib/version.py": "__version__ = '0.3.25'\n",
             f"{SITE}/jaxlib-0.3.25+cuda11.cudnn82.dist-info/METADATA":
                 "Metadata-Version: 2.1\nName: jaxlib\nVersion: 0.3.25+cuda11.cudnn82\n",
             f"{SITE}/jax_cuda11_plugin-0.4.1.dist-info/METADATA":
                 "Metadata-Version: 2.1\nName: jax-cuda11-plugin\nVersion: 0.4.1\n"}
    result = _audit(tmp_path, [files_layer(files)])
    jaxlib = _frameworks(result)["jaxlib"]
    assert jaxlib.version == "0.3.25+cuda11.cudnn82"
    assert jaxlib.built_for == {"cuda": "11", "cudnn": "8.2"}
    assert [(f.id, f.component) for f in result.inventory.findings] == [
        ("version-disagreement", "jaxlib")]


def test_rocm_plugin_and_jax_dev_build(tmp_path: Path) -> None:
    dev = "_version = '0.4.31'\n_release_version: str = None\n__version__ = _get_version_string()\n"
    files = {f"{SITE}/jax/version.py": dev, f"{SITE}/jaxlib/version.py": dev,
             f"{SITE}/jax-0.4.31.dev20240701.dist-info/METADATA":
                 "Metadata-Version: 2.1\nName: jax\nVersion: 0.4.31.dev20240701\n",
             f"{SITE}/jax_rocm60_plugin-0.4.31.dist-info/METADATA":
                 "Metadata-Version: 2.1\nName: jax-rocm60-plugin\nVersion: 0.4.31\n"}
    found = _frameworks(_audit(tmp_path, [files_layer(files)]))
    assert found["jax"].version == "0.4.31.dev20240701"  # the distribution's, not the base
    assert (found["jaxlib"].version, found["jaxlib"].built_for) == ("0.4.31", {"rocm": "6.0"})


# -- bad input ----------------------------------------------------------------------------------

def test_bad_version_files_are_unknown_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    call = f"__import__('pathlib').Path({str(marker)!r}).write_text('ran')"
    files = {
        f"{SITE}/torch/version.py": f"__version__ = {call}\ncuda = '12.1'\n",
        "venv/lib/python3.11/site-packages/torch/version.py": "__version__ = '2.0.0\n",
        f"{SITE}/tensorflow/python/platform/build_info.py": f"build_info = {call}\n",
        f"{SITE}/jax/version.py": b"\x00\xff garbage",
        f"{SITE}/jaxlib/version.py": "(" * 5000 + ")" * 5000 + "\n",
    }
    result = _audit(tmp_path, [files_layer(files)])
    assert not marker.exists()
    assert result.inventory.frameworks == []
    assert _unknowns(result) == sorted([
        ("frameworks", f"{SITE}/torch/version.py"),
        ("frameworks", "venv/lib/python3.11/site-packages/torch/version.py"),
        ("frameworks", f"{SITE}/tensorflow/python/platform/build_info.py"),
        ("frameworks", f"{SITE}/jax/version.py"),
        ("frameworks", f"{SITE}/jaxlib/version.py"),
    ])
    reasons = {u.path: u.reason for u in result.inventory.unknowns}
    assert "not a string literal" in reasons[f"{SITE}/torch/version.py"]


def test_module_constants() -> None:
    consts = module_constants(b"a = 1\nb: str = 'x'\nc = f()\nd, e = 1, 2\nif x:\n    g = 3\n"
                              b"h = collections.OrderedDict([('k', 1)], z=2)\n")
    assert consts == {"a": 1, "b": "x", "c": NOT_LITERAL, "h": {"k": 1, "z": 2}}


@pytest.mark.slow
def test_debian_python3_torch(tmp_path: Path) -> None:
    """Debian's own CPU build of torch, the package's data tar as the layer apt would add; the
    expectation is read from the package's own torch/version.py and Debian's version."""
    import io
    import tarfile

    from fixtures.debs import deb_layers

    (layer,) = deb_layers(("python3-torch",))
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        member = next(m for m in tar if m.name.endswith("dist-packages/torch/version.py"))
        version_py = tar.extractfile(member).read().decode()
    expected = _literal(version_py, "__version__")
    assert expected  # Debian's 1.13.1+dfsg-4 ships a version.py that says "1.13.0a0": the file wins
    result = _audit(tmp_path, [layer])  # type: ignore[list-item]
    torch = _frameworks(result)["torch"]
    assert torch.version == expected
    assert torch.path == member.name.removeprefix("./")
    assert torch.built_for.get("cuda") in (None, "")  # a CPU build says no CUDA
