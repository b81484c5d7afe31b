"""Runs the probe payload in fresh containers of the audited image (docs/probe.md, Runner API).

Each run is one new container, created, started, waited for, read and removed (always, with
``force``): the image's own Python (``python3``, else ``python``) runs
``/auditor-probe/run.py CONFIG_JSON``, the payload folder bind-mounted read-only. The container
has no network (``network_mode="none"``: podman ignores ``network_disabled``), runs as
``65534:65534`` with ``HOME=/tmp`` on a read-only root file system with a tmpfs ``/tmp``, under
memory and process-count limits, and carries the label ``auditor.probe=1``. A result whose
payload reports a network interface other than ``lo`` is refused.

GPUs: Docker takes ``device_requests`` (the ``--gpus`` shape); podman takes CDI devices
(``nvidia.com/gpu=all``). Podman's Docker-compatible API drops ``DeviceRequests`` (before 5.4)
and reads a CDI name in ``HostConfig.Devices`` as a host path (``stat nvidia.com/gpu=all: no such
file or directory``), so a podman container with a GPU is created through podman's own API
(``/libpod/containers/create``), which resolves CDI names; everything after creation (start,
wait, logs, removal) goes through the Docker API as for any other container.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import docker.utils
import requests
import yaml

from auditor.errors import EnvironmentProblem, InputError, NotFoundError
from auditor.sources.engine import failure_reason

PAYLOAD_MOUNT = "/auditor-probe"
PAYLOAD_SCRIPT = f"{PAYLOAD_MOUNT}/run.py"
PAYLOAD_SCHEMA_PREFIX = "auditor-probe-payload/"
INTERPRETERS = ("python3", "python")
PROBE_LABEL = "auditor.probe"
DEFAULT_USER = "65534:65534"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: where podman (container-device-interface) reads CDI specs; the GPU check looks there
CDI_SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")
#: the CDI device kind NVIDIA's toolkit generates (``nvidia-ctk cdi generate``)
GPU_CDI_KIND = "nvidia.com/gpu"
#: Docker's ``--gpus`` needs NVIDIA's hook on the engine's host, or its runtime registered
DOCKER_GPU_HOOKS = ("nvidia-container-runtime-hook", "nvidia-container-toolkit")
LOG_TAIL_LINES = 20
LOG_LINE_CHARS = 400
ERROR_CHARS = 300
MAX_VARIATIONS = 256
NOT_FOUND_EXIT = 127

VARY_KEYS = ("threads", "seed", "deterministic")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass(frozen=True)
class ProbeConfig:
    """What the payload is asked to do; all but ``env`` is serialised as CONFIG_JSON."""

    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    deterministic: bool = True
    repeats: int = 1
    models: tuple[str, ...] | None = None
    kernels: bool = True
    epochs: int | None = None
    env: tuple[tuple[str, str], ...] = ()  # set in the container (after the runner's own)

    def payload_config(self) -> dict[str, Any]:
        """The CONFIG_JSON document (docs/probe.md, "Running the payload")."""
        return {"seed": self.seed, "device": self.device, "threads": self.threads,
                "deterministic": self.deterministic, "repeats": self.repeats,
                "models": None if self.models is None else list(self.models),
                "kernels": self.kernels, "epochs": self.epochs}

    def to_json(self) -> str:
        return json.dumps(self.payload_config(), separators=(",", ":"))


@dataclass(frozen=True)
class RunResult:
    """One fresh container's run. ``error`` is None exactly when ``output`` is usable (not None)."""

    run: int                        # the fresh container's number in the matrix, 0-based
    variation: dict[str, str]       # e.g. {"threads": "1"} or {"env.OPENBLAS_CORETYPE": "Haswell"}
    config: ProbeConfig
    exit_code: int | None           # None: killed at the timeout (or never started)
    output: dict[str, Any] | None   # the payload's JSON, when it printed one and it is usable
    error: str | None               # one line: why there is no usable output
    log_tail: str                   # last lines of stderr (and of stdout when it was not the JSON)
    seconds: float

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the config as CONFIG_JSON plus its ``env`` (a name -> value object)."""
        return {"run": self.run, "variation": dict(self.variation),
                "config": {**self.config.payload_config(), "env": dict(self.config.env)},
                "exit_code": self.exit_code, "output": self.output, "error": self.error,
                "log_tail": self.log_tail, "seconds": self.seconds}


@dataclass(frozen=True)
class ContainerLimits:
    """How each probe container is confined (beyond ``network_mode="none"``, always)."""

    user: str | None = DEFAULT_USER    # None: the image's own user
    mem_limit: str | int = "4g"
    nano_cpus: int | None = None       # 10**9 per CPU; None: no CPU limit
    pids_limit: int = 512
    read_only: bool = True             # read-only root file system, tmpfs /tmp
    tmp_size: str = "1g"


# -- variations ------------------------------------------------------------------------------

def parse_variations(values: Sequence[str]) -> list[dict[str, str]]:
    """``--vary`` values (``threads=1,2``, ``env.NAME=a,b``) -> their cartesian product, in order.

    No value gives one empty variation (``[{}]``). Raises :class:`InputError` (one line) on bad
    syntax, an unknown key, a key given twice, a repeated or invalid value, or too many runs.
    """
    axes: list[tuple[str, list[str]]] = []
    for raw in values:
        key, sep, rest = raw.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--vary {raw!r}: expected KEY=VALUE[,VALUE...] "
                             f"(KEY: {', '.join(VARY_KEYS)} or env.NAME)")
        _check_vary_key(raw, key)
        if any(key == seen for seen, _ in axes):
            raise InputError(f"--vary {raw!r}: {key} is varied twice; give its values in one --vary")
        options = [v.strip() for v in rest.split(",")]
        if any(not v for v in options):
            raise InputError(f"--vary {raw!r}: an empty value (values are separated by commas)")
        if len(set(options)) != len(options):
            raise InputError(f"--vary {raw!r}: a value is repeated")
        for option in options:
            _check_vary_value(raw, key, option)
        axes.append((key, options))
    count = 1
    for _, options in axes:
        count *= len(options)
    if count > MAX_VARIATIONS:
        raise InputError(f"--vary: {count} combinations; at most {MAX_VARIATIONS}")
    keys = [key for key, _ in axes]
    return [dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*(options for _, options in axes))]


def _check_vary_key(raw: str, key: str) -> None:
    if key.startswith("env."):
        if not _ENV_NAME.match(key[4:]):
            raise InputError(f"--vary {raw!r}: {key[4:]!r} is not an environment variable name")
    elif key not in VARY_KEYS:
        raise InputError(f"--vary {raw!r}: unknown key {key!r} "
                         f"(one of {', '.join(VARY_KEYS)} or env.NAME)")


def _check_vary_value(raw: str, key: str, value: str) -> None:
    if key == "threads":
        if not value.isdigit() or int(value) < 1:
            raise InputError(f"--vary {raw!r}: threads must be a positive integer, not {value!r}")
    elif key == "seed":
        if not re.fullmatch(r"-?\d+", value):
            raise InputError(f"--vary {raw!r}: seed must be an integer, not {value!r}")
    elif key == "deterministic":
        if value.lower() not in (*_TRUE, *_FALSE):
            raise InputError(f"--vary {raw!r}: deterministic must be true or false, not {value!r}")
    elif "\0" in value:
        raise InputError(f"--vary {raw!r}: a value holds a NUL character")


def apply_variation(base: ProbeConfig, variation: Mapping[str, str]) -> ProbeConfig:
    """``base`` with a variation's values (as parsed by :func:`parse_variations`) applied."""
    config = base
    env = dict(base.env)
    for key, value in variation.items():
        if key == "threads":
            config = replace(config, threads=int(value))
        elif key == "seed":
            config = replace(config, seed=int(value))
        elif key == "deterministic":
            config = replace(config, deterministic=value.lower() in _TRUE)
        elif key.startswith("env."):
            env[key[4:]] = value
        else:
            raise InputError(f"unknown variation key {key!r}")
    return replace(config, env=tuple(env.items()))


def container_environment(config: ProbeConfig) -> dict[str, str]:
    """The variables set in the container (added to the image's own ``Env``)."""
    env = {"HOME": "/tmp", "PYTHONHASHSEED": str(config.seed % (1 << 32))}
    if config.threads is not None:
        env.update(dict.fromkeys(THREAD_VARIABLES, str(config.threads)))
    env.update(dict(config.env))
    return env


# -- engines and GPUs ----------------------------------------------------------------------

def engine_kind(client: Any) -> tuple[str, str]:
    """("podman" or "docker", its version) from ``client.version()``.

    Raises :class:`EnvironmentProblem` (exit code 3) when the engine does not answer."""
    try:
        version = client.version()
    except (docker.errors.DockerException, requests.RequestException, OSError) as err:
        raise EnvironmentProblem(f"the container engine did not answer: {failure_reason(err)}") \
            from None
    for component in version.get("Components") or []:
        if "podman" in str(component.get("Name", "")).lower():
            return "podman", str(component.get("Version") or version.get("Version") or "")
    return "docker", str(version.get("Version") or "")


def gpu_run_kwargs(engine: str) -> dict[str, Any]:
    """The container options that give a container every GPU, for ``engine``.

    Docker: ``device_requests`` (what ``docker run --gpus all`` sends). Podman: the CDI device
    ``nvidia.com/gpu=all`` in ``devices`` (what ``podman run --device`` takes); :func:`run_matrix`
    sends it through podman's own API, the only one of podman 4 that resolves CDI names.
    """
    if engine == "docker":
        return {"device_requests": [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]}
    if engine == "podman":
        return {"devices": [f"{GPU_CDI_KIND}=all"]}
    raise ValueError(f"unknown engine {engine!r}: docker or podman")


def cdi_gpu_specs(spec_dirs: Sequence[str] | None = None) -> list[Path]:
    """CDI spec files under ``spec_dirs`` that define the device ``GPU_CDI_KIND=all``."""
    found = []
    for directory in CDI_SPEC_DIRS if spec_dirs is None else spec_dirs:
        with contextlib.suppress(OSError):
            for path in sorted(Path(directory).iterdir()):
                if path.suffix in (".yaml", ".yml", ".json") and _cdi_defines_all(path):
                    found.append(path)
    return found


def _cdi_defines_all(path: Path) -> bool:
    try:
        spec = yaml.safe_load(path.read_text(errors="replace"))
    except (OSError, yaml.YAMLError):
        return False
    if not isinstance(spec, dict) or spec.get("kind") != GPU_CDI_KIND:
        return False
    return any(isinstance(d, dict) and d.get("name") == "all" for d in spec.get("devices") or [])


def check_gpu(client: Any, engine: str, spec_dirs: Sequence[str] | None = None) -> None:
    """Raise :class:`InputError` when ``engine`` has no GPU to give a container.

    Podman: a CDI spec for ``nvidia.com/gpu`` with the device ``all`` under /etc/cdi or
    /var/run/cdi. Docker: NVIDIA's runtime in ``docker info`` or its hook on this host."""
    if engine == "podman":
        if cdi_gpu_specs(spec_dirs):
            return
        dirs = " or ".join(CDI_SPEC_DIRS if spec_dirs is None else spec_dirs)
        raise InputError(f"--gpu: no GPU is available to the engine (podman: no CDI spec for "
                         f"{GPU_CDI_KIND}=all under {dirs}; `nvidia-ctk cdi generate` writes one)")
    try:
        runtimes = client.info().get("Runtimes") or {}
    except (docker.errors.DockerException, requests.RequestException, OSError) as err:
        raise EnvironmentProblem(f"the container engine did not answer: {failure_reason(err)}") \
            from None
    if "nvidia" in runtimes or any(shutil.which(hook) for hook in DOCKER_GPU_HOOKS):
        return
    raise InputError("--gpu: no GPU is available to the engine (docker: no nvidia runtime in "
                     "`docker info` and no nvidia-container-runtime-hook on this host; install "
                     "the NVIDIA Container Toolkit)")


# -- the payload folder --------------------------------------------------------------------

def payload_source() -> Traversable:
    """The payload folder inside the installed ``auditor`` package."""
    return resources.files("auditor") / "probe" / "payload"


@contextlib.contextmanager
def staged_payload(source: str | os.PathLike[str] | Traversable | None = None) -> Iterator[Path]:
    """A private copy of the payload folder, world-readable (the container runs as 65534), for
    the length of the block: the bind mount never exposes the installed package itself, and a
    package inside a zip works too. ``source``: another folder (tests)."""
    root: Traversable = payload_source() if source is None else (
        Path(source) if isinstance(source, str | os.PathLike) else source)
    if not root.is_dir() or not (root / "run.py").is_file():
        raise EnvironmentProblem(f"the probe payload is missing: no run.py in {root} "
                                 "(a broken auditor install)")
    staging = Path(tempfile.mkdtemp(prefix="auditor-probe-"))
    try:
        target = staging / "payload"
        _copy_tree(root, target)
        yield target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _copy_tree(source: Traversable, target: Path) -> None:
    target.mkdir()
    target.chmod(0o755)
    for entry in source.iterdir():
        if entry.name == "__pycache__" or entry.name.startswith(".") \
                or entry.name.endswith((".pyc", ".pyo")):
            continue
        if entry.is_dir():
            _copy_tree(entry, target / entry.name)
        elif entry.is_file():
            (target / entry.name).write_bytes(entry.read_bytes())
            (target / entry.name).chmod(0o644)


# -- one container -------------------------------------------------------------------------

@dataclass(frozen=True)
class _Outcome:
    exit_code: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    start_error: str | None = None     # the engine could not start the process
    not_found: bool = False            # the interpreter is not in the image


@dataclass
class _Launcher:
    """Creates, runs and removes one container per call of :meth:`run`."""

    client: Any
    engine: str
    image: str
    payload_dir: Path
    limits: ContainerLimits = ContainerLimits()
    labels: Mapping[str, str] = field(default_factory=dict)
    device_kwargs: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = 600.0
    network_mode: str = "none"   # tests only: anything else shows the network check refusing
    libpod: bool = False         # create through podman's own API (podman with CDI devices)

    def create_kwargs(self, interpreter: str, config: ProbeConfig) -> dict[str, Any]:
        """The ``containers.create`` keyword arguments (Docker API) of one run."""
        limits = self.limits
        kwargs: dict[str, Any] = {
            "image": self.image,
            "entrypoint": [interpreter],   # replaces the image's entrypoint (podman keeps it for [])
            "command": [PAYLOAD_SCRIPT, config.to_json()],
            "network_mode": self.network_mode,
            "volumes": {str(self.payload_dir): {"bind": PAYLOAD_MOUNT, "mode": "ro,z"}},
            "environment": container_environment(config),
            "labels": {PROBE_LABEL: "1", **self.labels},
            "working_dir": "/tmp",
            "mem_limit": limits.mem_limit,
            "pids_limit": limits.pids_limit,
        }
        if limits.user:
            kwargs["user"] = limits.user
        if limits.nano_cpus:
            kwargs["nano_cpus"] = limits.nano_cpus
        if limits.read_only:
            kwargs["read_only"] = True
            kwargs["tmpfs"] = {"/tmp": f"rw,nosuid,nodev,size={limits.tmp_size},mode=1777"}
        kwargs.update(self.device_kwargs)
        return kwargs

    def libpod_spec(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The same container as podman's SpecGenerator (``/libpod/containers/create``)."""
        limits = self.limits
        resource_limits: dict[str, Any] = {
            "memory": {"limit": docker.utils.parse_bytes(limits.mem_limit)
                       if isinstance(limits.mem_limit, str) else limits.mem_limit},
            "pids": {"limit": limits.pids_limit}}
        if limits.nano_cpus:
            resource_limits["cpu"] = {"period": 100_000, "quota": limits.nano_cpus // 10_000}
        mounts = [{"destination": PAYLOAD_MOUNT, "type": "bind", "source": str(self.payload_dir),
                   "options": ["ro", "z"]}]
        spec: dict[str, Any] = {
            "image": kwargs["image"], "entrypoint": kwargs["entrypoint"],
            "command": kwargs["command"], "env": kwargs["environment"],
            "labels": kwargs["labels"], "work_dir": kwargs["working_dir"],
            "netns": {"nsmode": kwargs["network_mode"]}, "resource_limits": resource_limits,
            "devices": [{"path": d} for d in kwargs.get("devices", [])], "mounts": mounts}
        if kwargs.get("user"):
            spec["user"] = kwargs["user"]
        if limits.read_only:
            spec["read_only_filesystem"] = True
            mounts.append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                           "options": ["rw", "nosuid", "nodev", f"size={limits.tmp_size}",
                                       "mode=1777"]})
        return spec

    def _create(self, interpreter: str, config: ProbeConfig) -> Any:
        kwargs = self.create_kwargs(interpreter, config)
        try:
            if not self.libpod:
                return self.client.containers.create(**kwargs)
            response = self.client.api.post(
                f"{self.client.api.base_url}/v4.0.0/libpod/containers/create",
                data=json.dumps(self.libpod_spec(kwargs)),
                headers={"Content-Type": "application/json"})
            if response.status_code == 404:
                raise docker.errors.ImageNotFound(_libpod_message(response))
            if response.status_code != 201:
                raise EnvironmentProblem(
                    f"podman could not create the probe container: {_libpod_message(response)}")
            return self.client.containers.get(response.json()["Id"])
        except docker.errors.ImageNotFound:
            raise NotFoundError(f"image {self.image} is not in the {self.engine} engine") from None
        except docker.errors.APIError as err:
            raise EnvironmentProblem(
                f"the {self.engine} engine could not create the probe container: "
                f"{_one_line(str(err.explanation or err))}") from None
        except (requests.RequestException, OSError) as err:
            raise _gone(err) from None

    def run(self, interpreter: str, config: ProbeConfig) -> _Outcome:
        container = self._create(interpreter, config)
        try:
            return self._run_created(container, interpreter)
        finally:
            with contextlib.suppress(docker.errors.DockerException, requests.RequestException,
                                     OSError):
                container.remove(force=True)

    def _run_created(self, container: Any, interpreter: str) -> _Outcome:
        started = time.monotonic()
        try:
            container.start()
        except docker.errors.APIError as err:
            text = _one_line(str(err.explanation or err))
            return _Outcome(None, "", "", time.monotonic() - started, start_error=text,
                            not_found=_says_not_found(text, interpreter))
        except (requests.RequestException, OSError) as err:
            raise _gone(err) from None
        exit_code: int | None
        timed_out = False
        try:
            status = container.wait(timeout=self.timeout)
            exit_code = status.get("StatusCode")
        except (requests.RequestException, docker.errors.APIError):
            # a read timeout comes as requests' ConnectionError: is the container still running?
            try:
                container.reload()
            except (docker.errors.DockerException, requests.RequestException, OSError) as err:
                raise _gone(err) from None
            if container.status in ("running", "created", "restarting", "paused"):
                timed_out = True
                with contextlib.suppress(docker.errors.APIError):
                    container.kill()
                exit_code = None
            else:
                exit_code = container.attrs.get("State", {}).get("ExitCode")
        seconds = time.monotonic() - started
        try:
            stdout = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
            stderr = container.logs(stdout=False, stderr=True).decode("utf-8", "replace")
        except docker.errors.APIError:
            stdout = stderr = ""
        except (requests.RequestException, OSError) as err:
            raise _gone(err) from None
        not_found = exit_code == NOT_FOUND_EXIT and not stdout.strip()
        return _Outcome(exit_code, stdout, stderr, seconds, timed_out=timed_out,
                        not_found=not_found)


def _libpod_message(response: Any) -> str:
    try:
        return _one_line(str(response.json().get("message") or response.text))
    except ValueError:
        return _one_line(response.text or f"HTTP {response.status_code}")


def _gone(err: BaseException) -> EnvironmentProblem:
    return EnvironmentProblem(f"the container engine stopped answering: {failure_reason(err)}")


def _says_not_found(text: str, interpreter: str) -> bool:
    lowered = text.lower()
    return interpreter in text and ("not found" in lowered or "no such file" in lowered)


def _one_line(text: str, limit: int = ERROR_CHARS) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _last_lines(text: str, count: int = LOG_TAIL_LINES) -> list[str]:
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return [line if len(line) <= LOG_LINE_CHARS else line[: LOG_LINE_CHARS - 1] + "…"
            for line in lines[-count:]]


def parse_payload_output(stdout: str) -> dict[str, Any] | None:
    """The payload's JSON document: all of stdout, else its last line that is a JSON object."""
    text = stdout.strip()
    if not text:
        return None
    with contextlib.suppress(ValueError):
        document = json.loads(text)
        return document if isinstance(document, dict) else None
    for line in reversed(text.splitlines()):
        if line.lstrip().startswith("{"):
            with contextlib.suppress(ValueError):
                document = json.loads(line)
                if isinstance(document, dict):
                    return document
    return None


def network_refusal(output: Mapping[str, Any]) -> str | None:
    """Why a payload's result must be refused for its network (None: it showed only ``lo``)."""
    environment = output.get("environment")
    network = environment.get("network") if isinstance(environment, dict) else None
    if not isinstance(network, dict) or not isinstance(network.get("has_network"), bool):
        return "the payload did not report the container's network; refusing its result"
    if network["has_network"]:
        names = [n for n in network.get("up") or network.get("interfaces") or [] if n != "lo"]
        return f"the container had a network: {', '.join(map(str, names)) or 'an interface besides lo'}"
    return None


def _result(run: int, variation: Mapping[str, str], config: ProbeConfig, outcome: _Outcome,
            interpreter: str, timeout: float) -> RunResult:
    output = parse_payload_output(outcome.stdout) if not outcome.timed_out else None
    tail = _last_lines(outcome.stderr)
    if output is None:
        tail += _last_lines(outcome.stdout)
    last = tail[-1] if tail else "no output"
    error: str | None = None
    if outcome.timed_out:
        error = f"timed out after {timeout:g}s (killed); last output: {last}"
    elif outcome.start_error is not None:
        error = f"the engine could not start the payload: {outcome.start_error}"
    elif outcome.exit_code != 0:
        stderr_last = (_last_lines(outcome.stderr, 1) or [last])[0]
        error = f"the payload exited with code {outcome.exit_code}: {stderr_last}"
        if interpreter == "python" and "SyntaxError" in outcome.stderr:
            error += " (is the image's python Python 3.6 or later?)"
    elif output is None:
        error = f"the payload printed no JSON: {last}"
    elif not str(output.get("schema", "")).startswith(PAYLOAD_SCHEMA_PREFIX):
        error = f"the payload's JSON is not a probe result (schema {output.get('schema')!r})"
    else:
        error = network_refusal(output)
    return RunResult(run=run, variation=dict(variation), config=config,
                     exit_code=outcome.exit_code, output=output if error is None else None,
                     error=None if error is None else _one_line(error), log_tail="\n".join(tail),
                     seconds=round(outcome.seconds, 3))


# -- the matrix ----------------------------------------------------------------------------

def run_matrix(client: Any, image: str, base: ProbeConfig, repeats: int,
               variations: Sequence[Mapping[str, str]] | None, *, gpu: bool = False,
               timeout: float = 600, progress: Callable[[RunResult], None] | None = None,
               limits: ContainerLimits = ContainerLimits(),
               labels: Mapping[str, str] | None = None,
               payload_dir: str | os.PathLike[str] | None = None) -> list[RunResult]:
    """Run the payload in ``repeats`` fresh containers per variation (``[{}]`` or empty: none).

    Results come in order (variation by variation, repeat by repeat; ``run`` counts them all);
    ``progress`` is called with each as it is done. ``labels`` are added to ``auditor.probe=1``;
    ``payload_dir`` replaces the packaged payload (tests). Raises :class:`EnvironmentProblem`
    when the engine does not answer, :class:`NotFoundError` when it lacks ``image`` and
    :class:`InputError` for a bad request (``--gpu`` without a GPU).
    """
    if repeats < 1:
        raise InputError(f"repeats must be at least 1, not {repeats}")
    if timeout <= 0:
        raise InputError(f"the timeout must be positive, not {timeout}")
    if base.device not in ("cpu", "gpu"):
        raise InputError(f"device must be cpu or gpu, not {base.device!r}")
    if base.device == "gpu" and not gpu:
        raise InputError("the payload's device is gpu but no GPU was requested (--gpu)")
    plan = list(variations or [{}])
    engine, _version = engine_kind(client)
    device_kwargs: dict[str, Any] = {}
    if gpu:
        check_gpu(client, engine)
        device_kwargs = gpu_run_kwargs(engine)
    _require_image(client, engine, image)
    results: list[RunResult] = []
    with staged_payload(payload_dir) as staged:
        launcher = _Launcher(client, engine, image, staged, limits, dict(labels or {}),
                             device_kwargs, float(timeout), libpod=engine == "podman" and gpu)
        interpreter: str | None = None
        missing = False
        for variation in plan:
            config = apply_variation(base, variation)
            for _ in range(repeats):
                run = len(results)
                if missing:
                    result = _no_python(run, variation, config)
                else:
                    outcome, interpreter = _run_with_interpreter(launcher, interpreter, config)
                    if interpreter is None:
                        missing = True
                        result = _no_python(run, variation, config, outcome)
                    else:
                        result = _result(run, variation, config, outcome, interpreter, timeout)
                results.append(result)
                if progress is not None:
                    progress(result)
    return results


def _require_image(client: Any, engine: str, image: str) -> None:
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise NotFoundError(f"image {image} is not in the {engine} engine") from None
    except docker.errors.APIError as err:
        raise EnvironmentProblem(f"the {engine} engine could not look up {image}: "
                                 f"{_one_line(str(err.explanation or err))}") from None
    except (requests.RequestException, OSError) as err:
        raise _gone(err) from None


def _run_with_interpreter(launcher: _Launcher, known: str | None,
                          config: ProbeConfig) -> tuple[_Outcome, str | None]:
    """Run with the interpreter found before, or find one: ``python3``, then ``python``.
    Returns the outcome and the interpreter (None: the image has neither)."""
    if known:
        return launcher.run(known, config), known
    outcome = None
    for interpreter in INTERPRETERS:
        outcome = launcher.run(interpreter, config)
        if not outcome.not_found:
            return outcome, interpreter
    assert outcome is not None
    return outcome, None


def _no_python(run: int, variation: Mapping[str, str], config: ProbeConfig,
               outcome: _Outcome | None = None) -> RunResult:
    detail = outcome.start_error if outcome and outcome.start_error else ""
    return RunResult(run=run, variation=dict(variation), config=config,
                     exit_code=outcome.exit_code if outcome else None, output=None,
                     error="the image has no python3 or python: the probe needs Python 3.6+ in "
                           "the image", log_tail=detail,
                     seconds=round(outcome.seconds, 3) if outcome else 0.0)
