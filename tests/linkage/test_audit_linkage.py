"""Linkage in the audit: the consumers chosen, the copy of each numeric library that wins and what
it shadows, the findings, ``--env`` and ``--all-elf``, and the report (JSON schema and table).

Images are synthetic (auditor.elfwriter libraries whose versions are real ELF getters); the
resolver itself is checked against the real loader in test_differential.py."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from auditor.audit import AuditOptions, AuditResult, audit
from auditor.cli import main
from auditor.elfwriter import build_shared_object
from auditor.linkage.runtime import expand_names, load_rules, parse_rules
from auditor.model import Finding
from auditor.report.document import build_document, report_schema
from auditor.testing import LayerBuilder, build_oci_layout

SITE = "usr/local/lib/python3.11/site-packages"
TORCH_LIB = f"{SITE}/torch/lib"
X86 = "usr/lib/x86_64-linux-gnu"
TORCH_VERSION_PY = "__version__ = '2.5.1+cu124'\ncuda = '12.4'\ndebug = False\n"


def _so(soname: str, **kwargs: object) -> bytes:
    return build_shared_object(soname, **kwargs)  # type: ignore[arg-type]


def _cudnn9(minor: int) -> bytes:
    return _so("libcudnn.so.9", functions={"cudnnGetVersion": 90000 + minor * 100})


def _torch(rpath: str | None = None, runpath: str | None = None,
           needed: tuple[str, ...] = ("libcudnn.so.9",)) -> LayerBuilder:
    return (LayerBuilder()
            .file(f"{SITE}/torch/version.py", TORCH_VERSION_PY)
            .file(f"{TORCH_LIB}/libtorch_cuda.so", _so("libtorch_cuda.so", needed=list(needed),
                                                       rpath=rpath, runpath=runpath), mode=0o755)
            .file(f"{SITE}/torch/_C.cpython-311-x86_64-linux-gnu.so",
                  _so("_C.so", needed=["libtorch_cuda.so"], runpath="$ORIGIN/lib"), mode=0o755))


def _wheel(name: str, version: str, files: dict[str, bytes]) -> LayerBuilder:
    layer = LayerBuilder()
    dist = f"{SITE}/{name.replace('-', '_')}-{version}.dist-info"
    layer.file(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    record = "".join(f"{path.removeprefix(SITE + '/')},,\n" for path in files)
    layer.file(f"{dist}/RECORD", record)
    for path, data in files.items():
        layer.file(path, data, mode=0o755)
    return layer


def _audit(tmp_path: Path, layers: list[LayerBuilder], env: list[str] | None = None,
           **options: object) -> AuditResult:
    config = {"config": {"Env": env}} if env else None
    build_oci_layout(tmp_path / "image", layers, tag="t", config=config)
    return audit(f"oci:{tmp_path / 'image'}:t",
                 AuditOptions(cache_dir=str(tmp_path / "cache"), **options))  # type: ignore[arg-type]


def _findings(result: AuditResult, rule: str) -> list[Finding]:
    return [f for f in result.inventory.findings if f.id == rule]


WHEEL_CUDNN = f"{SITE}/nvidia/cudnn/lib/libcudnn.so.9"
WHEEL_RPATH = "$ORIGIN/../../nvidia/cudnn/lib"
# what cuDNN 9's shim and graph library open at run time, as the rules say
CUDNN9_PARTS = [*load_rules().library_dlopens("x/libcudnn.so.9"),
                *load_rules().library_dlopens("x/libcudnn_graph.so.9")]


def _cudnn_wheel(minor: int) -> LayerBuilder:
    parts = {f"{SITE}/nvidia/cudnn/lib/{name}": _so(name) for name in CUDNN9_PARTS}
    return _wheel("nvidia-cudnn-cu12", f"9.{minor}.0.75", {WHEEL_CUDNN: _cudnn9(minor), **parts})


def test_the_wheel_copy_wins_by_rpath_and_shadows_the_system_copy(tmp_path: Path) -> None:
    result = _audit(tmp_path, [
        LayerBuilder().file(f"{X86}/libcudnn.so.9.1.0", _cudnn9(1)).symlink(
            f"{X86}/libcudnn.so.9", "libcudnn.so.9.1.0"),
        _cudnn_wheel(3),
        _torch(rpath=WHEEL_RPATH)])
    stack = result.inventory.linkage
    assert stack is not None
    consumers = {c.linkage.consumer: c.framework for c in stack.consumers}
    assert consumers == {f"/{TORCH_LIB}/libtorch_cuda.so": "torch",
                         f"/{SITE}/torch/_C.cpython-311-x86_64-linux-gnu.so": "torch"}
    (winner,) = [w for w in stack.winners if w.needed == "libcudnn.so.9"]
    assert (winner.loaded.file, winner.loaded.version, winner.hows) == (WHEEL_CUDNN,
                                                                        "9.3.0.75", ("rpath",))
    assert winner.loaded.package == "python:nvidia-cudnn-cu12@9.3.0.75"
    assert [(c.file, c.version) for c in winner.shadowed] == [(f"{X86}/libcudnn.so.9.1.0",
                                                               "9.1.0")]
    assert len(winner.consumers) == 2  # _C.so gets it through libtorch_cuda.so
    assert not _findings(result, "linkage-mixed-versions")
    assert not _findings(result, "linkage-missing-library")

    document = build_document(result)
    jsonschema.validate(document, report_schema())
    (line,) = [n for n in document["linkage"]["numeric"] if n["needed"] == "libcudnn.so.9"]
    assert line["loaded"]["path"] == WHEEL_CUDNN and line["shadowed"][0]["version"] == "9.1.0"
    torch_cuda = next(c for c in document["linkage"]["consumers"]
                      if c["path"].endswith("libtorch_cuda.so"))
    (cudnn,) = [r for r in torch_cuda["resolutions"] if r["needed"] == "libcudnn.so.9"]
    assert (cudnn["how"], cudnn["version"], cudnn["layer"], cudnn["component"]) == (
        "rpath", "9.3.0.75", 1, "cudnn")
    assert cudnn["path"] == f"/{TORCH_LIB}/../../nvidia/cudnn/lib/libcudnn.so.9"


def test_ld_library_path_overriding_the_bundled_copy(tmp_path: Path) -> None:
    layers = [_cudnn_wheel(3),
              LayerBuilder().file("opt/cudnn/lib/libcudnn.so.9", _cudnn9(0)),
              _torch(runpath=WHEEL_RPATH)]  # RUNPATH: LD_LIBRARY_PATH comes first
    result = _audit(tmp_path, layers, env=["LD_LIBRARY_PATH=/opt/cudnn/lib"])
    (finding,) = _findings(result, "linkage-ld-library-path-override")
    assert finding.severity == "high" and finding.component == "cudnn"
    assert "/opt/cudnn/lib/libcudnn.so.9 (9.0.0) instead of" in finding.message
    assert f"/{WHEEL_CUDNN} (9.3.0.75)" in finding.message
    (mixed,) = _findings(result, "linkage-mixed-versions") or [None]
    assert mixed is None  # both consumers load the same (overriding) copy

    # --env clears it: the bundled copy wins again, and the report says where the value came from
    cleared = audit(f"oci:{tmp_path / 'image'}:t", AuditOptions(
        cache_dir=str(tmp_path / "cache"), env=(("LD_LIBRARY_PATH", ""),)))
    assert not _findings(cleared, "linkage-ld-library-path-override")
    (winner,) = [w for w in cleared.inventory.linkage.winners if w.needed == "libcudnn.so.9"]
    assert (winner.loaded.file, winner.hows) == (WHEEL_CUDNN, ("runpath",))
    assert cleared.inventory.linkage.env_source == "--env"


def test_rpath_is_not_overridden_by_ld_library_path(tmp_path: Path) -> None:
    layers = [_cudnn_wheel(3),
              LayerBuilder().file("opt/cudnn/lib/libcudnn.so.9", _cudnn9(0)),
              _torch(rpath=WHEEL_RPATH)]
    result = _audit(tmp_path, layers, env=["LD_LIBRARY_PATH=/opt/cudnn/lib"])
    assert not _findings(result, "linkage-ld-library-path-override")
    (winner,) = [w for w in result.inventory.linkage.winners if w.needed == "libcudnn.so.9"]
    assert winner.loaded.file == WHEEL_CUDNN
    assert [c.file for c in winner.shadowed] == ["opt/cudnn/lib/libcudnn.so.9"]


def test_mixed_versions_built_for_mismatch_and_a_missing_library(tmp_path: Path) -> None:
    cudart = f"{SITE}/nvidia/cuda_runtime/lib/libcudart.so.12"
    layers = [
        LayerBuilder().file(f"{X86}/libcudnn.so.9", _cudnn9(1)),
        _cudnn_wheel(3),
        _wheel("nvidia-cuda-runtime-cu12", "12.1.105", {cudart: _so("libcudart.so.12")}),
        _torch(rpath=f"{WHEEL_RPATH}:$ORIGIN/../../nvidia/cuda_runtime/lib",
               needed=("libcudnn.so.9", "libcudart.so.12", "libmissing.so.3", "libcuda.so.1")),
        # another torch library found by no RPATH: it gets the system cuDNN
        LayerBuilder().file(f"{TORCH_LIB}/libtorch_other.so",
                            _so("libtorch_other.so", needed=["libcudnn.so.9"]), mode=0o755)]
    result = _audit(tmp_path, layers)
    (mixed,) = _findings(result, "linkage-mixed-versions")
    assert mixed.component == "cudnn" and "2 versions (9.1.0, 9.3.0.75)" in mixed.message
    (mismatch,) = _findings(result, "linkage-built-for-mismatch")
    assert "built for cuda 12.4" in mismatch.message and "12.1.105" in mismatch.message
    missing = {f.component: f for f in _findings(result, "linkage-missing-library")}
    assert missing["libmissing.so.3"].severity == "high"
    # the system cuDNN's shim finds none of its parts beside it: they fail when first used
    assert missing["libcudnn_graph.so.9"].severity == "medium"
    assert "libtorch_other.so" in missing["libcudnn_graph.so.9"].message
    # libcuda.so.1 comes from the host's driver: its absence is expected, not a finding
    assert not any(f.component == "libcuda.so.1" for f in result.inventory.findings)


def test_driver_library_in_the_image_but_not_the_link_stub(tmp_path: Path) -> None:
    layers = [LayerBuilder()
              .file(f"{X86}/libcuda.so.535.104.05", _so("libcuda.so.1"))
              .symlink(f"{X86}/libcuda.so.1", "libcuda.so.535.104.05")
              .file("usr/local/cuda/lib64/stubs/libcuda.so", _so("libcuda.so.1"))]
    result = _audit(tmp_path, layers)
    (finding,) = _findings(result, "driver-library-in-image")
    assert finding.path == f"{X86}/libcuda.so.535.104.05" and "stubs" not in finding.message


def test_run_time_loads_follow_the_framework_build(tmp_path: Path) -> None:
    tf = f"{SITE}/tensorflow"
    build_info = ("import collections\nbuild_info = collections.OrderedDict([('cuda_version', "
                  "'11.2'), ('cudnn_version', '8'), ('is_cuda_build', True)])\n")
    layers = [LayerBuilder()
              .file(f"{SITE}/tensorflow_gpu-2.8.0.dist-info/METADATA",
                    "Metadata-Version: 2.1\nName: tensorflow-gpu\nVersion: 2.8.0\n")
              .file(f"{tf}/python/platform/build_info.py", build_info)
              .file(f"{tf}/python/_pywrap_tensorflow_internal.so",
                    _so("_pywrap_tensorflow_internal.so"), mode=0o755)
              .file(f"{X86}/libcudnn.so.8", _so("libcudnn.so.8",
                                                functions={"cudnnGetVersion": 8100}))
              .file(f"{X86}/libcudnn_ops_infer.so.8", _so("libcudnn_ops_infer.so.8"))]
    result = _audit(tmp_path, layers)
    (consumer,) = result.inventory.linkage.consumers
    opened = {r.needed: r for r in consumer.linkage.resolutions if r.kind == "dlopen"}
    assert opened["libcudnn.so.8"].file == f"{X86}/libcudnn.so.8"
    assert opened["libcudnn_ops_infer.so.8"].requester == f"{X86}/libcudnn.so.8"  # the shim
    assert opened["libcublas.so.11"].how == "not-found"
    missing = {f.component: f for f in _findings(result, "linkage-missing-library")}
    assert missing["libcublas.so.11"].severity == "medium"  # fails at first use, not import
    assert "libcudnn_cnn_infer.so.8" in missing


def test_all_elf_adds_every_elf_file_as_a_consumer(tmp_path: Path) -> None:
    layers = [LayerBuilder()
              .file("usr/bin/tool", _so("tool", needed=["libtool.so.1", "libplugin.so.2"]),
                    mode=0o755)
              .file(f"{X86}/libtool.so.1", _so("libtool.so.1"))
              .file("opt/weights.bin", b"\x7fELX not an ELF file" * 100)]
    plain = _audit(tmp_path, layers)
    assert plain.inventory.linkage.consumers == ()
    every = audit(f"oci:{tmp_path / 'image'}:t",
                  AuditOptions(cache_dir=str(tmp_path / "cache"), all_elf=True))
    consumers = {c.linkage.consumer: c for c in every.inventory.linkage.consumers}
    assert set(consumers) == {"/usr/bin/tool", f"/{X86}/libtool.so.1"}
    assert consumers["/usr/bin/tool"].linkage.of("libtool.so.1").file == f"{X86}/libtool.so.1"
    assert every.inventory.linkage.all_elf and consumers["/usr/bin/tool"].framework is None
    (missing,) = _findings(every, "linkage-missing-library")
    assert (missing.component, missing.severity) == ("libplugin.so.2", "low")  # not a framework


def test_cli_env_and_all_elf_options(tmp_path: Path) -> None:
    layers = [_cudnn_wheel(3),
              LayerBuilder().file("opt/cudnn/lib/libcudnn.so.9", _cudnn9(0)),
              _torch(runpath=WHEEL_RPATH)]
    build_oci_layout(tmp_path / "image", layers, tag="t",
                     config={"config": {"Env": ["LD_LIBRARY_PATH=/opt/cudnn/lib"]}})
    ref, cache = f"oci:{tmp_path / 'image'}:t", str(tmp_path / "cache")
    runner = CliRunner()
    out = runner.invoke(main, ["audit", ref, "--cache-dir", cache, "--format", "json",
                               "--env", "LD_LIBRARY_PATH=/nowhere", "--all-elf"])
    assert out.exit_code == 0, out.output
    document = json.loads(out.stdout)
    jsonschema.validate(document, report_schema())
    linkage = document["linkage"]
    assert (linkage["ld_library_path"], linkage["env_source"], linkage["all_elf"]) == (
        "/nowhere", "--env", True)
    assert linkage["numeric"][0]["loaded"]["path"] == WHEEL_CUDNN
    table = runner.invoke(main, ["audit", ref, "--cache-dir", cache])
    assert table.exit_code == 0
    assert "Linkage" in table.stdout and "cudnn" in table.stdout
    assert "ld_library_path" in table.stdout  # the image's own LD_LIBRARY_PATH wins here
    bad = runner.invoke(main, ["audit", ref, "--cache-dir", cache, "--env", "NOEQUALS"])
    assert bad.exit_code == 2 and "NAME=VALUE" in bad.output


def test_shipped_rules_validate_and_templates_need_their_values() -> None:
    rules = load_rules()
    assert rules.is_host_provided("libcuda.so.1") and not rules.is_host_provided("libcudnn.so.8")
    assert rules.library_dlopens("x/libcudnn.so.8.9.6", "libcudnn.so.8")[0] == \
        "libcudnn_ops_infer.so.8"
    assert expand_names(["libcudnn.so.{cudnn.major}", "libcublas.so.{cuda.major}"],
                        {"cudnn": "8.1", "cuda": ""}) == (["libcudnn.so.8"],
                                                           ["libcublas.so.{cuda.major}"])
    text = (Path(__file__).parents[2] / "auditor/rules/linkage.yaml").read_text()
    assert parse_rules(yaml.safe_load(text)) == rules  # audits skip the schema for this file
    broken = yaml.safe_load(text)
    del broken["frameworks"]["torch"]["consumers"]
    with pytest.raises(jsonschema.ValidationError):
        parse_rules(broken)


def test_ld_preload_and_ld_so_preload_reach_the_resolver(tmp_path: Path) -> None:
    layers = [LayerBuilder()
              .file("opt/pre/libpre.so.1", _so("libpre.so.1"))
              .file("opt/pre/libetc.so.1", _so("libetc.so.1"))
              .file("etc/ld.so.preload", "/opt/pre/libetc.so.1\n"),
              _cudnn_wheel(3), _torch(rpath=WHEEL_RPATH, needed=("libcudnn.so.9", "libpre.so.1"))]
    result = _audit(tmp_path, layers, env=["LD_PRELOAD=/opt/pre/libpre.so.1"])
    consumer = next(c for c in result.inventory.linkage.consumers
                    if c.linkage.consumer.endswith("libtorch_cuda.so"))
    preloads = {r.needed: r.file for r in consumer.linkage.resolutions if r.kind == "preload"}
    assert preloads == {"/opt/pre/libpre.so.1": "opt/pre/libpre.so.1",
                        "/opt/pre/libetc.so.1": "opt/pre/libetc.so.1"}
    assert consumer.linkage.of("libpre.so.1").how == "already-loaded"  # the preload serves it
