"""The probe payload (``auditor/probe/payload``), which runs inside audited images.

On the host: the payload as a subprocess of this Python (standard library only, no frameworks
here) gives schema-valid JSON with its environment; every file has Python 3.6's grammar (and
``run.py`` Python 3.4's, for its version guard); a broken config exits 2 with one line; Python
3.6 and 2.7 themselves when this machine has them; the data generators and evaluation helpers
in-process.

In podman (slow, engine): Debian bookworm images with ``python3-numpy`` and with ``python3-torch``
(torch 1.13.1, CPU), built from Debian's packages by ``fixtures/debian.py``; the payload folder
bind-mounted read-only, the container without network, read-only, as nobody: two fresh
containers must agree bit for bit.
"""

from __future__ import annotations

import ast
import contextlib
import glob
import importlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from fixtures.debian import FixtureBuildError, debian_layout
from tests.engine_fixtures import Engine, oci_to_docker_archive

ROOT = Path(__file__).resolve().parents[2]
PAYLOAD = ROOT / "auditor" / "probe" / "payload"
SCHEMA = json.loads((ROOT / "auditor" / "schemas" / "probe-payload.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
STDLIB_ONLY = {"models": [], "kernels": False}
PAYLOAD_MODULES = ("probe_util", "probe_data", "probe_env", "probe_numpy", "probe_torch",
                   "probe_tf", "probe_jax", "probe_main")


def validate(document: dict[str, Any]) -> None:
    errors = sorted(VALIDATOR.iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message[:300]}" for e in errors[:10])


def run_payload(config: Any, python: str = sys.executable, payload: Path = PAYLOAD,
                raw: list[str] | None = None,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    argv = raw if raw is not None else [json.dumps(config)]
    return subprocess.run([python, str(payload / "run.py"), *argv], capture_output=True, text=True,
                          timeout=300, check=False, env=env, stdin=subprocess.DEVNULL)


def test_schema_is_valid() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


# -- on the host: the standard-library part -----------------------------------------------

def test_stdlib_run_is_valid_and_writes_nothing(tmp_path: Path) -> None:
    payload = tmp_path / "payload"
    shutil.copytree(PAYLOAD, payload, ignore=shutil.ignore_patterns("__pycache__"))
    before = sorted(p.relative_to(payload) for p in payload.rglob("*"))
    done = run_payload(STDLIB_ONLY, payload=payload)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    validate(document)
    assert sorted(p.relative_to(payload) for p in payload.rglob("*")) == before  # no __pycache__
    assert done.stdout.count("\n") == 1  # one line: the JSON

    assert document["schema"] == "auditor-probe-payload/1"
    assert document["config"]["models"] == [] and document["config"]["kernels"] is False
    assert document["config"]["seed"] == 0 and document["config"]["repeats"] == 1
    assert document["models"] == [] and document["kernels"] == []
    env = document["environment"]
    assert env["python"]["version"] == platform.python_version()
    assert env["python"]["implementation"] == "CPython"
    assert env["platform"]["system"] == "Linux"
    assert env["platform"]["libc"].startswith("glibc ")
    assert env["cpu"]["count"] >= 1 and env["cpu"]["flags"]
    assert any(path.rsplit("/", 1)[-1].startswith("libc.so") for path in env["maps"])
    network = env["network"]
    assert "lo" in network["interfaces"]
    assert network["has_network"] == any(name != "lo" for name in network["interfaces"])
    for name in ("numpy", "torch", "tensorflow", "jax"):
        if importlib.util.find_spec(name) is None:
            assert name not in env["frameworks"]


def test_environment_variables_are_filtered() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "3", "CUDA_VISIBLE_DEVICES": "", "XLA_FLAGS": "--x",
           "LD_PRELOAD": "", "PYTHONHASHSEED": "7", "AUDITOR_SECRET_TOKEN": "nope",
           "TF_ENABLE_ONEDNN_OPTS": "0"}
    done = run_payload(STDLIB_ONLY, env=env)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    found = document["environment"]["env"]
    assert {k: found[k] for k in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "XLA_FLAGS", "LD_PRELOAD",
                                  "PYTHONHASHSEED", "TF_ENABLE_ONEDNN_OPTS")} == {
        "OMP_NUM_THREADS": "3", "CUDA_VISIBLE_DEVICES": "", "XLA_FLAGS": "--x", "LD_PRELOAD": "",
        "PYTHONHASHSEED": "7", "TF_ENABLE_ONEDNN_OPTS": "0"}
    assert "AUDITOR_SECRET_TOKEN" not in found and "PATH" not in found and "HOME" not in found
    assert document["environment"]["threads"]["OMP_NUM_THREADS"] == "3"


def test_missing_framework_is_an_error_not_a_failure() -> None:
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed here")
    done = run_payload({"models": ["torch.dense"], "kernels": False, "repeats": 2})
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    validate(document)
    assert document["errors"] == [{"where": "torch.dense", "error": "torch is not installed"}]
    assert document["models"] == [] and document["config"]["models"] == []


def test_unshared_network_shows_only_loopback() -> None:
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-n", "true"], capture_output=True,
                                         check=False).returncode != 0:
        pytest.skip("no unshare -n here (needs root or user namespaces)")
    done = subprocess.run([unshare, "-n", sys.executable, str(PAYLOAD / "run.py"),
                           json.dumps(STDLIB_ONLY)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    network = json.loads(done.stdout)["environment"]["network"]
    assert network["interfaces"] == ["lo"]
    assert network["has_network"] is False


@pytest.mark.parametrize("argv", [
    [], ["{}", "{}"], ["not json"], ["[]"], ['{"seed": -1}'], ['{"seed": 1.5}'], ['{"seed": true}'],
    ['{"device": "tpu"}'], ['{"threads": 0}'], ['{"repeats": 0}'], ['{"deterministic": 1}'],
    ['{"kernels": "yes"}'], ['{"models": "numpy.mlp"}'], ['{"models": ["numpy.nope"]}'],
    ['{"epochs": 0}'],
])
def test_bad_config_exits_2_with_one_line(argv: list[str]) -> None:
    done = run_payload(None, raw=argv)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("auditor probe: bad config: ")


def test_unknown_keys_are_ignored_and_reported() -> None:
    done = run_payload({**STDLIB_ONLY, "env": [["OMP_NUM_THREADS", "1"]], "future": 1})
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    validate(document)
    assert document["config"]["ignored"] == ["env", "future"]


# -- the grammar: Python 3.6 everywhere, and run.py older still ---------------------------

NEWER_THAN_36 = {
    # modules, module functions, methods and builtins Python 3.6 lacks
    "modules": {"dataclasses", "contextvars", "importlib.metadata", "importlib.resources",
                "graphlib", "zoneinfo", "tomllib"},
    "qualified": {"math.prod", "math.isqrt", "math.dist", "math.comb", "math.perm", "math.lcm",
                  "contextlib.nullcontext", "functools.cached_property", "itertools.pairwise",
                  "asyncio.run", "asyncio.get_running_loop", "datetime.fromisoformat",
                  "time.perf_counter_ns", "time.time_ns", "os.add_dll_directory"},
    "methods": {"removeprefix", "removesuffix", "is_relative_to", "bit_count"},
    "names": {"breakpoint", "aiter", "anext"},
}


def payload_sources() -> list[Path]:
    files = sorted(PAYLOAD.glob("*.py"))
    assert PAYLOAD / "run.py" in files and len(files) >= 5
    return files


@pytest.mark.parametrize("path", payload_sources(), ids=lambda p: p.name)
def test_payload_has_python36_grammar(path: Path) -> None:
    source = path.read_text()
    tree = ast.parse(source, filename=str(path), feature_version=(3, 6))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.module != "__future__", f"{path.name}: a __future__ import"
            assert node.module not in NEWER_THAN_36["modules"], f"{path.name}: {node.module}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name not in NEWER_THAN_36["modules"], f"{path.name}: {alias.name}"
        elif isinstance(node, ast.Attribute):
            assert node.attr not in NEWER_THAN_36["methods"], f"{path.name}:{node.lineno} .{node.attr}"
            if isinstance(node.value, ast.Name):
                qualified = f"{node.value.id}.{node.attr}"
                assert qualified not in NEWER_THAN_36["qualified"], f"{path.name}:{node.lineno} {qualified}"
        elif isinstance(node, ast.Name):
            assert node.id not in NEWER_THAN_36["names"], f"{path.name}:{node.lineno} {node.id}"
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            # dict | dict (3.9): no operand may be a dict display or a dict() call
            for side in (node.left, node.right):
                assert not isinstance(side, ast.Dict), f"{path.name}:{node.lineno} dict |"
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            assert not node.args.posonlyargs, f"{path.name}: positional-only parameters"
        assert not isinstance(node, ast.AnnAssign), f"{path.name}:{node.lineno} a variable annotation"
        if isinstance(node, ast.arguments):
            for arg in node.args + node.kwonlyargs:
                assert arg.annotation is None, f"{path.name}: an annotation"
        if isinstance(node, ast.FunctionDef):
            assert node.returns is None, f"{path.name}:{node.lineno} a return annotation"


def test_run_py_parses_before_36() -> None:
    """The version guard must itself parse on Python 3.4/3.5 (and 2.7: no f-strings, no
    keyword-only arguments, no annotations in run.py)."""
    source = (PAYLOAD / "run.py").read_text()
    tree = ast.parse(source, feature_version=(3, 4))
    assert not any(isinstance(node, ast.JoinedStr | ast.AnnAssign) for node in ast.walk(tree))
    first = next(node for node in tree.body if not isinstance(node, ast.Import | ast.Expr))
    assert isinstance(first, ast.If) and "version_info" in ast.unparse(first.test)


def interpreter(version: str) -> str | None:
    """An interpreter of ``version`` that really runs (pyenv shims exist without one)."""
    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}*/bin/python{version}")))
    for candidate in candidates:
        if not candidate:
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                  capture_output=True, text=True, timeout=30, check=False)
            if done.returncode == 0 and done.stdout.strip() == version:
                return candidate
    return None


def test_runs_on_python36(tmp_path: Path) -> None:
    python = interpreter("3.6")
    if python is None:
        pytest.skip("no Python 3.6 on this machine")
    done = run_payload({"models": ["numpy.mlp"], "kernels": True, "repeats": 2}, python=python)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    validate(document)
    assert document["environment"]["python"]["version"].startswith("3.6.")
    wheres = {e["where"] for e in document["errors"]}
    has_numpy = subprocess.run([python, "-c", "import numpy"], capture_output=True,
                               check=False).returncode == 0
    if has_numpy:
        assert not wheres and document["models"]
    else:
        assert wheres == {"numpy.mlp"} and document["models"] == []


def test_python27_is_refused_with_exit_3() -> None:
    python = interpreter("2.7")
    if python is None:
        pytest.skip("no Python 2.7 on this machine")
    done = run_payload(STDLIB_ONLY, python=python)
    assert done.returncode == 3
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Python 3.6 or newer" in done.stderr


# -- in-process: data, randomness, evaluation ---------------------------------------------

@pytest.fixture
def payload_modules() -> Iterator[dict[str, Any]]:
    """The payload's modules imported from its folder (no bytecode written), then forgotten."""
    saved_path, saved_flag = list(sys.path), sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    sys.path.insert(0, str(PAYLOAD))
    try:
        yield {name: importlib.import_module(name) for name in PAYLOAD_MODULES}
    finally:
        for name in PAYLOAD_MODULES:
            sys.modules.pop(name, None)
        sys.path[:] = saved_path
        sys.dont_write_bytecode = saved_flag


def test_data_is_seeded_and_labelled_by_its_rule(payload_modules: dict[str, Any]) -> None:
    data = payload_modules["probe_data"]
    util = payload_modules["probe_util"]
    tokens = data._tokens(0)
    assert tokens.count == data.TOKENS_TRAIN + data.TOKENS_TEST
    assert len(tokens.x) == tokens.count * data.TOKENS_LENGTH
    for i in range(tokens.count):
        row = tokens.x[i * data.TOKENS_LENGTH:(i + 1) * data.TOKENS_LENGTH]
        good = sum(1 for t in row if t in data.TOKENS_GOOD)
        bad = sum(1 for t in row if t in data.TOKENS_BAD)
        assert tokens.y[i] == (1 if good > bad else 0)
        assert all(0 < t < data.TOKENS_VOCABULARY for t in row)
    assert 0.3 < sum(tokens.y) / tokens.count < 0.7

    tabular = data._tabular(0)
    positives = sum(tabular.y) / tabular.count
    assert 0.13 < positives < 0.17  # imbalanced
    assert util.chance(tabular.split_y()[1]) > 0.8

    digits = data._digits(0)
    assert len(digits.x) == digits.count * 28 * 28 and digits.shape == (1, 28, 28)
    assert sorted(set(digits.y)) == list(range(10))
    # the same seed gives the same numbers; another seed others
    assert data._tabular(0).x == tabular.x and data._tabular(1).x != tabular.x
    assert data._digits(0).x == digits.x


def test_stream_is_portable(payload_modules: dict[str, Any]) -> None:
    util = payload_modules["probe_util"]
    stream = util.Stream(0, "x")
    order = stream.permutation(100)
    assert sorted(order) == list(range(100)) and order != list(range(100))
    # pinned (the same on CPython 3.6 and 3.8): changing them changes every digest of every
    # baseline, so it must be deliberate (and the payload_version bumped)
    assert util.Stream(0, "tabular").uniforms(3) == [
        0.7681655969869718, -0.13686872315315357, 0.5643628840283623]
    assert util.Stream(0, "x").permutation(10) == [4, 1, 3, 7, 6, 2, 8, 9, 5, 0]
    assert util.stream_seed(1, "tabular") == 6355483528


def test_evaluation_helpers(payload_modules: dict[str, Any]) -> None:
    util = payload_modules["probe_util"]
    loss, accuracy, predictions = util.evaluate_binary([2.0, -1.0, 0.5, -3.0], [1, 0, 0, 0])
    assert predictions == [1, 0, 1, 0] and accuracy == 0.75
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0)) + 0.5
                + math.log1p(math.exp(-0.5)) + math.log1p(math.exp(-3.0))) / 4
    assert loss == pytest.approx(expected, rel=1e-15)
    loss, accuracy, predictions = util.evaluate_multiclass([[0.0, 1.0, 1.0], [3.0, 0.0, 0.0]], [2, 0])
    assert predictions == [1, 0] and accuracy == 0.5  # the first maximum wins
    assert loss == pytest.approx((math.log(1 + 2 * math.e) - 1 + math.log(1 + 2 * math.exp(-3))) / 2)
    assert util.json_safe({"a": float("nan"), "b": [float("inf"), 1.5], "c": (1, True)}) == {
        "a": "NaN", "b": ["Infinity", 1.5], "c": [1, True]}
    assert util.one_line(ValueError("two\nlines")) == "ValueError: two lines"
    assert util.pack_float32([1.0]) == b"\x00\x00\x80\x3f"


def test_numpy_models_when_numpy_is_here() -> None:
    if importlib.util.find_spec("numpy") is None:
        pytest.skip("no numpy in this Python (the engine tests run them in Debian's)")
    done = run_payload({"models": ["numpy.mlp", "numpy.rnn"], "repeats": 2})
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    validate(document)
    check_numpy_models(document)


# -- in podman: the payload inside Debian images ------------------------------------------

PAYLOAD_MOUNT = "/auditor-probe"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
NUMPY_PACKAGES = ("python3", "python3-numpy")
#: Debian's python3-numpy alone gets the reference BLAS (minbase installs no Recommends); the
#: torch image gets OpenBLAS too, as a Debian system with Recommends would
TORCH_PACKAGES = ("python3", "python3-numpy", "python3-torch", "libopenblas0-pthread")


def check_numpy_models(document: dict[str, Any]) -> None:
    models = {(m["name"], m["repeat"]): m for m in document["models"]}
    for name in ("numpy.mlp", "numpy.rnn"):
        model = models[(name, 0)]
        assert model["accuracy"] > model["chance"] + 0.05, model
        assert model["accuracy"] > 0.8, model
        assert len(model["epochs"]) >= 1


def digests(document: dict[str, Any]) -> dict[str, Any]:
    """What two runs of the same config must reproduce bit for bit."""
    found: dict[str, Any] = {}
    for model in document["models"]:
        key = f"{model['name']}#{model['repeat']}"
        found[key] = (model["weights_digest"], model["predictions_digest"], model["outputs_digest"],
                      model["loss"], model["accuracy"], json.dumps(model["epochs"]))
    for kernel in document["kernels"]:
        found[f"{kernel['name']}[{kernel['dtype']}]#{kernel['repeat']}"] = (kernel["digest"], kernel["sum"])
    return found


def staged_payload(tmp_path: Path) -> Path:
    """A world-readable copy of the payload (the container runs as nobody)."""
    target = tmp_path / "payload"
    shutil.copytree(PAYLOAD, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    target.chmod(0o755)
    for path in target.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


def run_in_container(engine: Engine, image: Any, payload: Path, config: dict[str, Any],
                     env: dict[str, str] | None = None) -> dict[str, Any]:
    """One fresh container as the runner starts it: no network, read-only root, as nobody, the
    payload read-only, ``HOME=/tmp`` (and with ``threads``, the thread variables set)."""
    environment = {"HOME": "/tmp", "PYTHONHASHSEED": str(config["seed"])}
    if config.get("threads"):
        environment.update(dict.fromkeys(THREAD_VARIABLES, str(config["threads"])))
    environment.update(env or {})
    container = engine.client.containers.create(
        image.id, ["python3", f"{PAYLOAD_MOUNT}/run.py", json.dumps(config)],
        network_mode="none", user="65534:65534", read_only=True, tmpfs={"/tmp": "rw,size=64m"},
        environment=environment,
        volumes={str(payload): {"bind": PAYLOAD_MOUNT, "mode": "ro"}})
    try:
        container.start()
        status = container.wait(timeout=600)
        stdout = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
        stderr = container.logs(stdout=False, stderr=True).decode("utf-8", "replace")
    finally:
        container.remove(force=True)
    assert status.get("StatusCode") == 0, (status, stderr[-3000:])
    document = json.loads(stdout)
    validate(document)
    return document


_LOADED: dict[tuple[int, str, tuple[str, ...]], Any] = {}  # (engine, tag, packages) -> image, per session


def load_debian(engine: Engine, tmp_path_factory: pytest.TempPathFactory, packages: tuple[str, ...],
                tag: str) -> Any:
    """The Debian image of ``packages`` loaded into the engine as ``localhost/auditor-probe-TAG:t``,
    once per session (modules share it; the engine removes it at the end)."""
    key = (id(engine), tag, tuple(packages))
    if key in _LOADED:
        return _LOADED[key]
    try:
        layout, built_tag = debian_layout(packages, tag)
    except FixtureBuildError as error:  # mmdebstrap and umoci are installed by scripts/setup-system.sh
        pytest.fail(f"cannot build the Debian {tag} image: {error}")
    archive = tmp_path_factory.mktemp(f"debian-{tag}") / "image.tar"
    oci_to_docker_archive(layout, built_tag, archive, f"localhost/auditor-probe-{tag}:t")
    (image,) = engine.load(archive)
    archive.unlink()
    _LOADED[key] = image
    return image


@pytest.fixture(scope="module")
def numpy_image(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Debian bookworm with python3-numpy (1.24, on the reference BLAS)."""
    return load_debian(engine, tmp_path_factory, NUMPY_PACKAGES, "numpy")


@pytest.fixture(scope="module")
def torch_image(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Debian bookworm with python3-torch (1.13.1, CPU) and OpenBLAS: about 180 packages,
    150 MB of downloads, 470 MB unpacked; two to four minutes to build the first time."""
    return load_debian(engine, tmp_path_factory, TORCH_PACKAGES, "torch-openblas")


def common_container_checks(document: dict[str, Any]) -> None:
    env = document["environment"]
    assert env["network"]["has_network"] is False
    assert env["network"]["interfaces"] == ["lo"]
    assert env["python"]["version"].startswith("3.11.")
    assert env["platform"]["libc"] == "glibc 2.36"
    assert env["gpus"] == []
    assert document["config"]["payload_env"] == {}  # only numpy/torch here: nothing to set
    assert not document["errors"], document["errors"]


@pytest.mark.slow
@pytest.mark.engine
def test_numpy_image_runs_reproducibly(engine: Engine, numpy_image: Any, tmp_path: Path) -> None:
    payload = staged_payload(tmp_path)
    config = {"seed": 0, "device": "cpu", "threads": None, "deterministic": True, "repeats": 1,
              "models": None, "kernels": True, "epochs": None}
    first = run_in_container(engine, numpy_image, payload, config)
    second = run_in_container(engine, numpy_image, payload, config)

    for document in (first, second):
        common_container_checks(document)
        env = document["environment"]
        assert set(env["frameworks"]) == {"numpy"}
        assert env["frameworks"]["numpy"]["version"].startswith("1.24.")
        assert [m["name"] for m in document["models"]] == ["numpy.mlp", "numpy.rnn"]
        check_numpy_models(document)
        assert {k["name"] for k in document["kernels"]} >= {"numpy.matmul", "numpy.sum", "numpy.conv2d"}
        blas = [p for p in env["maps"] if "openblas" in p.lower() or "/libblas.so" in p]
        assert blas == ["/usr/lib/x86_64-linux-gnu/blas/libblas.so.3.11.0"], env["maps"]
        assert env["frameworks"]["numpy"]["blas"] == "blas_opt_info: blas", env["frameworks"]
        assert env["threads"]["blas_runtime"] == []  # the reference BLAS says nothing of itself
    assert digests(first) == digests(second)
    # the payload's data do not depend on the machine: the same everywhere for the seed
    assert first["models"][0]["samples"] == {"train": 1024, "test": 512}


@pytest.mark.slow
@pytest.mark.engine
def test_torch_image_runs_reproducibly(engine: Engine, torch_image: Any, tmp_path: Path) -> None:
    payload = staged_payload(tmp_path)
    # one thread: torch's OpenMP pool and OpenBLAS's both spinning on a small machine slow the
    # CNN down tenfold (the runner sets the thread variables with --threads as done here)
    config = {"seed": 0, "device": "cpu", "threads": 1, "deterministic": True, "repeats": 1,
              "models": None, "kernels": True, "epochs": None}
    first = run_in_container(engine, torch_image, payload, config)
    second = run_in_container(engine, torch_image, payload, config)

    for document in (first, second):
        common_container_checks(document)
        env = document["environment"]
        torch = env["frameworks"]["torch"]
        assert torch["version"].startswith("1.13.")  # Debian 1.13.1+dfsg says 1.13.0a0
        assert torch["cuda"] is None and torch["deterministic"] is True
        assert torch["num_threads"] == 1 and env["threads"]["torch"] == 1
        assert env["threads"]["OMP_NUM_THREADS"] == "1" and env["env"]["OPENBLAS_NUM_THREADS"] == "1"
        (openblas, *_) = env["threads"]["blas_runtime"]
        assert openblas["config"].startswith("OpenBLAS 0.3.21") and openblas["core"]
        assert openblas["threads"] == 1 and "OpenBLAS 0.3.21" in env["threads"]["numpy_blas"]
        assert torch["cudnn_benchmark"] is False and "PyTorch built with" in torch["config"]
        names = [m["name"] for m in document["models"]]
        assert names == ["numpy.mlp", "numpy.rnn", "torch.cnn", "torch.bilstm", "torch.dense"]
        check_numpy_models(document)
        for model in document["models"]:
            assert model["accuracy"] > model["chance"] + 0.05, model
        assert any("libtorch" in p for p in env["maps"]), env["maps"]
        assert {k["name"] for k in document["kernels"]} >= {"torch.matmul", "torch.sum", "torch.conv2d"}
    assert digests(first) == digests(second)
    # float64 sums of the same float32 values agree between NumPy and PyTorch exactly
    sums = {(k["name"], k["dtype"]): k["sum"] for k in first["kernels"]}
    assert sums[("numpy.sum", "float64")] == sums[("torch.sum", "float64")]

    # device gpu without a GPU: the torch model is an error, NumPy's still runs (on the CPU)
    gpu = run_in_container(engine, torch_image, payload, {**config, "device": "gpu", "kernels": False,
                                                          "models": ["numpy.mlp", "torch.dense"]})
    assert gpu["errors"] == [{"where": "torch.dense", "error": "no GPU visible", "repeat": 0}]
    assert [(m["name"], m["device"]) for m in gpu["models"]] == [("numpy.mlp", "cpu")]
    assert gpu["models"][0]["weights_digest"] == first["models"][0]["weights_digest"]
    assert gpu["config"]["payload_env"] == {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    assert gpu["environment"]["gpus"] == []
