"""The probe runner (auditor/probe/runner.py): variations, GPU requests, and real containers.

Unit tests need nothing. The engine tests run real podman containers (Docker API) of the Debian
bookworm + python3 fixture (no numpy): the packaged payload where the test is about the payload's
view of its container (fresh containers, no network, thread variables), and small stand-in
payloads written here where the test needs a payload that misbehaves (sleeps, crashes) or
reports what the payload does not (uid, read-only root, limits).

No GPU is on these machines: the tests named ``test_gpu_request_building_without_a_real_gpu_*``
check what would be sent for each engine kind, the clear error when the engine has no GPU, and
(podman) that a CDI device request really reaches the container through a CDI spec of a fake
vendor (an environment variable as its only edit, no device node).
"""

from __future__ import annotations

import contextlib
import json
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.types
import pytest

import auditor
from auditor.errors import EnvironmentProblem, InputError, NotFoundError
from auditor.probe import runner
from auditor.probe.runner import (
    ContainerLimits,
    ProbeConfig,
    RunResult,
    apply_variation,
    check_gpu,
    container_environment,
    gpu_run_kwargs,
    network_refusal,
    parse_payload_output,
    parse_variations,
    run_matrix,
)
from auditor.testing import LayerBuilder, build_docker_archive
from tests.engine_fixtures import DebianImage, Engine, build_image, oci_to_docker_archive

PACKAGED_PAYLOAD = Path(auditor.__file__).parent / "probe" / "payload" / "run.py"

# -- parse_variations ------------------------------------------------------------------------


def test_no_vary_is_one_empty_variation() -> None:
    assert parse_variations([]) == [{}]


def test_threads_values_in_order() -> None:
    assert parse_variations(["threads=1,2"]) == [{"threads": "1"}, {"threads": "2"}]


def test_several_vary_make_the_cartesian_product() -> None:
    assert parse_variations(["threads=1,4", "env.OPENBLAS_CORETYPE=Haswell,Prescott"]) == [
        {"threads": "1", "env.OPENBLAS_CORETYPE": "Haswell"},
        {"threads": "1", "env.OPENBLAS_CORETYPE": "Prescott"},
        {"threads": "4", "env.OPENBLAS_CORETYPE": "Haswell"},
        {"threads": "4", "env.OPENBLAS_CORETYPE": "Prescott"},
    ]


def test_values_are_stripped_and_env_values_kept_verbatim() -> None:
    assert parse_variations([" seed = 0, 7 ", "env.X=a b,c=d"]) == [
        {"seed": "0", "env.X": "a b"}, {"seed": "0", "env.X": "c=d"},
        {"seed": "7", "env.X": "a b"}, {"seed": "7", "env.X": "c=d"}]


@pytest.mark.parametrize(("value", "says"), [
    ("threads", "expected KEY=VALUE"),
    ("=1,2", "expected KEY=VALUE"),
    ("cores=1,2", "unknown key 'cores'"),
    ("env.1X=a", "not an environment variable name"),
    ("env.=a", "not an environment variable name"),
    ("threads=1,,2", "an empty value"),
    ("threads=", "an empty value"),
    ("threads=1,1", "repeated"),
    ("threads=0", "positive integer"),
    ("threads=two", "positive integer"),
    ("seed=1.5", "seed must be an integer"),
    ("deterministic=maybe", "true or false"),
])
def test_bad_vary_is_one_line_input_error(value: str, says: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_variations([value])
    assert says in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_key_varied_twice_is_refused() -> None:
    with pytest.raises(InputError, match="varied twice"):
        parse_variations(["threads=1", "threads=2"])


def test_too_many_combinations_are_refused() -> None:
    many = ",".join(str(i) for i in range(1, 20))
    with pytest.raises(InputError, match="combinations"):
        parse_variations([f"threads={many}", f"seed={many}"])


# -- configs, environment, output checks ----------------------------------------------------


def test_config_json_is_the_contract_document() -> None:
    config = ProbeConfig(seed=3, threads=2, models=("numpy.mlp",), env=(("X", "1"),))
    assert json.loads(config.to_json()) == {
        "seed": 3, "device": "cpu", "threads": 2, "deterministic": True, "repeats": 1,
        "models": ["numpy.mlp"], "kernels": True, "epochs": None}


def test_variation_applies_to_the_config_and_the_environment() -> None:
    base = ProbeConfig(seed=5, env=(("A", "base"),))
    config = apply_variation(base, {"threads": "2", "deterministic": "false", "env.A": "varied"})
    assert (config.threads, config.deterministic, dict(config.env)) == (2, False, {"A": "varied"})
    env = container_environment(config)
    assert env == {"HOME": "/tmp", "PYTHONHASHSEED": "5", "OMP_NUM_THREADS": "2",
                   "MKL_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "A": "varied"}


def test_no_threads_sets_no_thread_variables_and_env_wins() -> None:
    env = container_environment(ProbeConfig(seed=-1, env=(("PYTHONHASHSEED", "random"),)))
    assert env == {"HOME": "/tmp", "PYTHONHASHSEED": "random"}
    assert container_environment(ProbeConfig(seed=-1))["PYTHONHASHSEED"] == str(2**32 - 1)


def test_payload_output_whole_or_last_json_line() -> None:
    assert parse_payload_output('{"a": 1}\n') == {"a": 1}
    assert parse_payload_output('a warning on stdout\n{"a": 2}\n') == {"a": 2}
    assert parse_payload_output("Traceback ...\nValueError\n") is None
    assert parse_payload_output("[1, 2]") is None
    assert parse_payload_output("") is None


def test_network_refusal() -> None:
    def out(network: Any) -> dict[str, Any]:
        return {"environment": {"network": network}}

    assert network_refusal(out({"interfaces": ["lo"], "up": ["lo"], "has_network": False})) is None
    refused = network_refusal(out({"interfaces": ["eth0", "lo"], "up": ["eth0", "lo"],
                                   "has_network": True}))
    assert refused == "the container had a network: eth0"
    assert "did not report" in str(network_refusal(out(None)))
    assert "did not report" in str(network_refusal({}))


def test_run_result_as_dict_is_json() -> None:
    result = RunResult(0, {"threads": "1"}, ProbeConfig(threads=1, env=(("X", "y"),)), 0,
                       {"schema": "auditor-probe-payload/1"}, None, "", 1.5)
    back = json.loads(json.dumps(result.as_dict()))
    assert back["config"]["env"] == {"X": "y"} and back["config"]["threads"] == 1
    assert back["variation"] == {"threads": "1"} and result.ok


def test_engine_unreachable_is_an_environment_problem(tmp_path: Path) -> None:
    client = docker.DockerClient(base_url=f"unix://{tmp_path}/no-engine.sock", version="1.41",
                                 timeout=5)
    with pytest.raises(EnvironmentProblem) as caught:
        run_matrix(client, "any", ProbeConfig(), 1, None)
    assert caught.value.exit_code == 3
    assert "did not answer" in str(caught.value) and "\n" not in str(caught.value)


def test_bad_requests_are_input_errors() -> None:
    with pytest.raises(InputError, match="repeats"):
        run_matrix(None, "any", ProbeConfig(), 0, None)
    with pytest.raises(InputError, match="no GPU was requested"):
        run_matrix(None, "any", ProbeConfig(device="gpu"), 1, None)


# -- GPU requests, without a GPU --------------------------------------------------------------


@dataclass
class FakeEngineAnswers:
    """Stands in for a client's ``version()``/``info()`` answers: no GPU is on these machines."""

    components: list[dict[str, Any]]
    runtimes: dict[str, Any]

    def version(self) -> dict[str, Any]:
        return {"Version": "27.1.0", "Components": self.components}

    def info(self) -> dict[str, Any]:
        return {"Runtimes": self.runtimes}


DOCKER = FakeEngineAnswers([{"Name": "Engine", "Version": "27.1.0"}], {"runc": {}})
PODMAN = FakeEngineAnswers([{"Name": "Podman Engine", "Version": "4.3.1"}], {"runc": {}})


def test_gpu_request_building_without_a_real_gpu_engine_kind() -> None:
    assert runner.engine_kind(DOCKER) == ("docker", "27.1.0")
    assert runner.engine_kind(PODMAN) == ("podman", "4.3.1")


def test_gpu_request_building_without_a_real_gpu_docker_device_requests() -> None:
    kwargs = gpu_run_kwargs("docker")
    assert list(kwargs) == ["device_requests"]
    (request,) = kwargs["device_requests"]
    assert isinstance(request, docker.types.DeviceRequest)
    assert (request.count, request.capabilities, request.driver) == (-1, [["gpu"]], "")


def test_gpu_request_building_without_a_real_gpu_podman_cdi_devices(tmp_path: Path) -> None:
    assert gpu_run_kwargs("podman") == {"devices": ["nvidia.com/gpu=all"]}
    with pytest.raises(ValueError, match="unknown engine"):
        gpu_run_kwargs("containerd")
    # podman's own API gets the CDI name as a device path, besides everything else of the run
    launcher = runner._Launcher(None, "podman", "img", tmp_path, device_kwargs=gpu_run_kwargs("podman"),
                                libpod=True)
    kwargs = launcher.create_kwargs("python3", ProbeConfig(device="gpu"))
    spec = launcher.libpod_spec(kwargs)
    assert spec["devices"] == [{"path": "nvidia.com/gpu=all"}]
    assert spec["netns"] == {"nsmode": "none"} and spec["user"] == "65534:65534"
    assert spec["entrypoint"] == ["python3"] and spec["command"][0] == "/auditor-probe/run.py"
    assert json.loads(spec["command"][1])["device"] == "gpu"
    assert spec["resource_limits"] == {"memory": {"limit": 4 << 30}, "pids": {"limit": 512}}
    assert spec["read_only_filesystem"] is True
    assert {m["destination"]: m["type"] for m in spec["mounts"]} == {
        "/auditor-probe": "bind", "/tmp": "tmpfs"}


def test_gpu_request_building_without_a_real_gpu_docker_without_nvidia_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner.shutil, "which", lambda _name: None)
    with pytest.raises(InputError) as caught:
        check_gpu(DOCKER, "docker")
    assert str(caught.value).startswith("--gpu: no GPU is available to the engine (docker:")
    check_gpu(FakeEngineAnswers([], {"runc": {}, "nvidia": {"path": "nvidia-container-runtime"}}),
              "docker")


def test_gpu_request_building_without_a_real_gpu_podman_without_cdi_spec_is_refused(
        tmp_path: Path) -> None:
    cdi = tmp_path / "cdi"
    cdi.mkdir()
    (cdi / "other.yaml").write_text('cdiVersion: "0.5.0"\nkind: vendor.example/fpga\n'
                                    "devices: [{name: all, containerEdits: {env: [A=1]}}]\n")
    (cdi / "broken.json").write_text("{not json")
    with pytest.raises(InputError) as caught:
        check_gpu(PODMAN, "podman", [str(cdi), str(tmp_path / "absent")])
    assert str(caught.value).startswith("--gpu: no GPU is available to the engine (podman:")
    assert "\n" not in str(caught.value)
    (cdi / "nvidia.yaml").write_text(
        'cdiVersion: "0.5.0"\nkind: nvidia.com/gpu\ndevices:\n'
        "- name: \"0\"\n  containerEdits: {deviceNodes: [{path: /dev/nvidia0}]}\n"
        "- name: all\n  containerEdits: {deviceNodes: [{path: /dev/nvidia0}]}\n")
    check_gpu(PODMAN, "podman", [str(cdi)])
    assert runner.cdi_gpu_specs([str(cdi)]) == [cdi / "nvidia.yaml"]


# -- real containers ------------------------------------------------------------------------

STANDIN = '''\
import json, os, sys
config = json.loads(sys.argv[1])
names = sorted(os.listdir("/sys/class/net"))
MODE
def can_write(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        os.unlink(path)
        return True
    except OSError:
        return False
def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None
print(json.dumps({
    "schema": "auditor-probe-payload/1", "payload_version": "stand-in", "config": config,
    "environment": {
        "threads": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        "env": dict(os.environ),
        "network": {"interfaces": names, "up": names, "has_network": any(n != "lo" for n in names)},
    },
    "container": {"uid": os.getuid(), "gid": os.getgid(), "cwd": os.getcwd(),
                  "root_writable": can_write("/etc/auditor-probe-test"),
                  "tmp_writable": can_write("/tmp/auditor-probe-test"),
                  "payload_writable": can_write("/auditor-probe/x"),
                  "pids_max": read("/sys/fs/cgroup/pids/pids.max") or read("/sys/fs/cgroup/pids.max"),
                  "memory_max": read("/sys/fs/cgroup/memory/memory.limit_in_bytes")
                                or read("/sys/fs/cgroup/memory.max")},
    "kernels": [], "models": [], "errors": [], "seconds": 0.0}))
'''


def standin(root: Path, mode: str = "") -> Path:
    """A payload folder whose run.py prints a contract-shaped JSON; ``mode``: code run first."""
    root.mkdir(parents=True)
    (root / "run.py").write_text(STANDIN.replace("MODE", textwrap.dedent(mode).strip() or "pass"))
    return root


@dataclass(frozen=True)
class ProbeImages:
    debian: str          # bookworm + python3, no numpy
    entrypoint: str      # the same with ENTRYPOINT ["/bin/false"]
    no_python: str       # a file or two, no interpreter


@pytest.fixture(scope="module")
def images(engine: Engine, debian_image: DebianImage,
           tmp_path_factory: pytest.TempPathFactory) -> ProbeImages:
    work = tmp_path_factory.mktemp("probe-images")
    archive = oci_to_docker_archive(debian_image.layout, debian_image.tag, work / "debian.tar",
                                    "localhost/auditor-probe-test-debian:t")
    (debian,) = engine.load(archive)
    build_image(engine, 'FROM localhost/auditor-probe-test-debian:t\nENTRYPOINT ["/bin/false"]\n',
                "localhost/auditor-probe-test-entrypoint:t")
    layer = LayerBuilder().dir("etc").file("etc/os-release", "ID=nopython\n").dir("bin")
    build_docker_archive(work / "nopython.tar", [layer], repo_tag="localhost/auditor-probe-test-nopy:t",
                         config={"config": {"Cmd": ["/bin/sh"]}})
    engine.load(work / "nopython.tar")
    return ProbeImages(debian.id, "localhost/auditor-probe-test-entrypoint:t",
                       "localhost/auditor-probe-test-nopy:t")


@pytest.fixture
def token() -> str:
    """A label value of this test's own: other sessions may run probe containers meanwhile."""
    return uuid.uuid4().hex


def probe_containers(engine: Engine, token: str) -> list[Any]:
    return engine.client.containers.list(all=True, filters={"label": f"auditor.probe.test={token}"})


def created_containers(engine: Engine, token: str, since: float, expected: int) -> set[str]:
    """Ids of the containers the engine created with this test's label (its event log).

    podman writes its event log behind the API: a query right after the runs can come back
    empty (seen once in a full run), so ask again for a few seconds until ``expected`` show."""
    deadline = time.monotonic() + 10
    while True:
        events = engine.client.events(since=int(since) - 1, until=int(time.time()) + 1, decode=True,
                                      filters={"label": f"auditor.probe.test={token}",
                                               "event": "create"})
        created = {event.get("id") or event.get("Actor", {}).get("ID") for event in events}
        if len(created) >= expected or time.monotonic() > deadline:
            return created
        time.sleep(0.5)


@pytest.fixture
def no_leftovers(engine: Engine, token: str) -> Iterator[None]:
    assert not probe_containers(engine, token)
    yield
    assert not probe_containers(engine, token), "a probe container was left behind"


def matrix(engine: Engine, image: str, token: str, repeats: int = 1,
           variations: list[dict[str, str]] | None = None, payload: Path | None = None,
           **kwargs: Any) -> list[RunResult]:
    return run_matrix(engine.client, image, kwargs.pop("base", ProbeConfig()), repeats, variations,
                      labels={"auditor.probe.test": token}, payload_dir=payload, **kwargs)


def packaged_or(tmp_path: Path) -> Path | None:
    """The packaged payload (None) once it exists; until then a stand-in of the contract."""
    return None if PACKAGED_PAYLOAD.is_file() else standin(tmp_path / "standin")


@pytest.mark.engine
@pytest.mark.slow
@pytest.mark.usefixtures("no_leftovers")
class TestRealContainers:
    def test_two_repeats_are_two_fresh_containers(self, engine: Engine, images: ProbeImages,
                                                  token: str, tmp_path: Path) -> None:
        seen: list[int] = []
        since = time.time()
        results = matrix(engine, images.debian, token, repeats=2, payload=packaged_or(tmp_path),
                         progress=lambda r: seen.append(r.run))
        assert [r.run for r in results] == seen == [0, 1]
        for result in results:
            assert result.error is None, (result.error, result.log_tail)
            assert result.exit_code == 0 and result.variation == {}
            assert result.output is not None
            assert result.output["schema"] == "auditor-probe-payload/1"
            assert result.output["config"]["seed"] == 0
        created = created_containers(engine, token, since, 2)
        assert len(created) == 2, created   # two containers, each run once, both removed

    def test_the_container_has_no_network(self, engine: Engine, images: ProbeImages, token: str,
                                          tmp_path: Path) -> None:
        (result,) = matrix(engine, images.debian, token, payload=packaged_or(tmp_path))
        assert result.error is None, (result.error, result.log_tail)
        network = result.output["environment"]["network"]
        assert network["has_network"] is False
        assert [n for n in network["interfaces"] if n != "lo"] == []

    def test_deliberately_networked_container_is_refused(self, engine: Engine, images: ProbeImages,
                                                         token: str, tmp_path: Path) -> None:
        """NOT how the probe runs: the same internals with the engine's default network instead
        of ``none``, to show that the check refuses a payload that saw an interface."""
        config = ProbeConfig()
        with runner.staged_payload(packaged_or(tmp_path)) as staged:
            launcher = runner._Launcher(engine.client, "podman", images.debian, staged,
                                        labels={"auditor.probe.test": token}, timeout=120,
                                        network_mode="bridge")
            outcome = launcher.run("python3", config)
        assert outcome.exit_code == 0, outcome.stderr
        result = runner._result(0, {}, config, outcome, "python3", 120)
        assert result.output is None
        assert result.error is not None and result.error.startswith("the container had a network: ")
        assert "eth0" in result.error

    def test_threads_variation_sets_the_thread_variables(self, engine: Engine, images: ProbeImages,
                                                         token: str, tmp_path: Path) -> None:
        results = matrix(engine, images.debian, token, variations=parse_variations(["threads=1,3"]),
                         payload=packaged_or(tmp_path))
        assert [r.variation for r in results] == [{"threads": "1"}, {"threads": "3"}]
        for result, threads in zip(results, ("1", "3"), strict=True):
            assert result.error is None, (result.error, result.log_tail)
            assert str(result.output["environment"]["threads"]["OMP_NUM_THREADS"]) == threads
            assert result.output["config"]["threads"] == int(threads)

    def test_a_sleeping_payload_is_killed_at_the_timeout(self, engine: Engine, images: ProbeImages,
                                                         token: str, tmp_path: Path) -> None:
        payload = standin(tmp_path / "p", 'import time\nprint("going to sleep", flush=True)\n'
                                          "time.sleep(120)")
        started = time.monotonic()
        (result,) = matrix(engine, images.debian, token, payload=payload, timeout=3)
        assert time.monotonic() - started < 60
        assert result.exit_code is None and result.output is None
        assert result.error is not None and result.error.startswith("timed out after 3s")
        assert "going to sleep" in result.log_tail

    def test_a_crashing_payload_gives_its_exit_code_and_last_lines(
            self, engine: Engine, images: ProbeImages, token: str, tmp_path: Path) -> None:
        payload = standin(tmp_path / "p", """
            print("partial output")
            sys.stderr.write("first line\\nRuntimeError: the payload broke\\n")
            sys.exit(1)""")
        (result,) = matrix(engine, images.debian, token, payload=payload)
        assert result.exit_code == 1 and result.output is None
        assert result.error == "the payload exited with code 1: RuntimeError: the payload broke"
        assert result.log_tail.splitlines() == ["first line", "RuntimeError: the payload broke",
                                                "partial output"]

    def test_no_json_is_an_error_with_the_last_line(self, engine: Engine, images: ProbeImages,
                                                    token: str, tmp_path: Path) -> None:
        payload = standin(tmp_path / "p", 'print("just text")\nsys.exit(0)')
        (result,) = matrix(engine, images.debian, token, payload=payload)
        assert result.exit_code == 0
        assert result.error == "the payload printed no JSON: just text"

    def test_an_image_without_python_is_said_clearly(self, engine: Engine, images: ProbeImages,
                                                     token: str, tmp_path: Path) -> None:
        since = time.time()
        results = matrix(engine, images.no_python, token, repeats=2,
                         payload=standin(tmp_path / "p"))
        assert [r.error for r in results] == [
            "the image has no python3 or python: the probe needs Python 3.6+ in the image"] * 2
        assert all(r.output is None and r.exit_code is None for r in results)
        assert "executable file not found" in results[0].log_tail
        # python3 then python, once: the second repeat does not try again
        assert len(created_containers(engine, token, since, 2)) == 2

    def test_the_image_entrypoint_is_replaced(self, engine: Engine, images: ProbeImages, token: str,
                                              tmp_path: Path) -> None:
        (result,) = matrix(engine, images.entrypoint, token, payload=standin(tmp_path / "p"))
        assert result.error is None, (result.error, result.log_tail)

    @pytest.mark.parametrize("libpod", [False, True], ids=["docker-api", "libpod-api"])
    def test_the_container_is_confined(self, engine: Engine, images: ProbeImages, token: str,
                                       tmp_path: Path, libpod: bool) -> None:
        """Both ways of creating the container (podman's own API is the GPU path) confine it alike."""
        config = ProbeConfig(seed=11, env=(("AUDITOR_X", "y"),))
        with runner.staged_payload(standin(tmp_path / "p")) as staged:
            launcher = runner._Launcher(engine.client, "podman", images.debian, staged,
                                        limits=ContainerLimits(mem_limit="512m", pids_limit=100),
                                        labels={"auditor.probe.test": token}, timeout=120,
                                        libpod=libpod)
            outcome = launcher.run("python3", config)
        result = runner._result(0, {}, config, outcome, "python3", 120)
        assert result.error is None, (result.error, result.log_tail)
        inside = result.output["container"]
        assert (inside["uid"], inside["gid"], inside["cwd"]) == (65534, 65534, "/tmp")
        assert inside["root_writable"] is False and inside["payload_writable"] is False
        assert inside["tmp_writable"] is True
        assert inside["pids_max"] == "100" and int(inside["memory_max"]) == 512 << 20
        env = result.output["environment"]["env"]
        assert (env["HOME"], env["PYTHONHASHSEED"], env["AUDITOR_X"]) == ("/tmp", "11", "y")
        assert "OMP_NUM_THREADS" not in env
        assert result.output["environment"]["network"]["has_network"] is False

    def test_a_missing_image_is_not_found(self, engine: Engine, token: str, tmp_path: Path) -> None:
        with pytest.raises(NotFoundError, match="is not in the podman engine"):
            matrix(engine, "localhost/auditor-probe-test-absent:none", token,
                   payload=standin(tmp_path / "p"))

    def test_gpu_request_building_without_a_real_gpu_podman_here_is_refused(
            self, engine: Engine, images: ProbeImages, token: str, tmp_path: Path) -> None:
        if runner.cdi_gpu_specs():
            pytest.skip("this machine has a CDI spec for nvidia.com/gpu")
        with pytest.raises(InputError, match=r"^--gpu: no GPU is available to the engine \(podman"):
            matrix(engine, images.debian, token, payload=standin(tmp_path / "p"), gpu=True)

    def test_gpu_request_building_without_a_real_gpu_podman_cdi_device_reaches_the_container(
            self, engine: Engine, images: ProbeImages, token: str, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> None:
        """A CDI spec of a fake vendor (its device sets one variable) stands in for NVIDIA's: the
        GPU request goes through the check, podman's own API and podman's CDI resolution."""
        cdi_dir = Path("/var/run/cdi")
        made_dir = not cdi_dir.exists()
        spec = cdi_dir / f"auditor-test-{token}.yaml"
        try:
            cdi_dir.mkdir(parents=True, exist_ok=True)
            spec.write_text(f'cdiVersion: "0.5.0"\nkind: auditor-test.example/gpu{token[:8]}\n'
                            "devices:\n- name: all\n  containerEdits:\n"
                            f"    env: [AUDITOR_FAKE_GPU={token}]\n")
        except OSError as err:
            pytest.skip(f"cannot write a CDI spec under {cdi_dir}: {err}")
        try:
            monkeypatch.setattr(runner, "GPU_CDI_KIND", f"auditor-test.example/gpu{token[:8]}")
            (result,) = matrix(engine, images.debian, token, payload=standin(tmp_path / "p"),
                               gpu=True)
        finally:
            spec.unlink()
            if made_dir:
                with contextlib.suppress(OSError):
                    cdi_dir.rmdir()
        assert result.error is None, (result.error, result.log_tail)
        assert result.output["environment"]["env"]["AUDITOR_FAKE_GPU"] == token
