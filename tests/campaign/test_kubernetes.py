"""The Kubernetes backend of `auditor campaign` (auditor/campaign/kube_manifests.py, kubernetes.py).

No real cluster can exist here (no kube-apiserver, kind, k3s or minikube is installable on this
machine; see shared/ENVIRONMENT.md), so:

- the manifests are validated against the Kubernetes 1.30 OpenAPI schemas that PyPI's
  ``kubernetes-validate`` ships, in strict mode (an unknown field fails);
- the client path runs the official ``kubernetes`` client against a FAKE API server on
  127.0.0.1 (``FakeCluster``) that serves only the REST paths the backend calls, validates what
  it is sent with the same schemas, and "runs" each Job as a kubelet would: one pod per
  completion index, scheduled by nodeSelector and GPU limit, its container's command executed
  on this machine's Python with the payload ConfigMap's files at the mount path, the pod's log
  being what the real payload printed. Faults are injected per (job, index): a pod OOM-killed
  mid-run, an image without python3, an image that cannot be pulled.
"""

from __future__ import annotations

import contextlib
import datetime
import http.server
import itertools
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes import client

from auditor.campaign.jobs import prepare_results
from auditor.campaign.kube_manifests import (
    CAMPAIGN_LABEL,
    JOB_LABEL,
    MANAGED_BY,
    NAME_LIMIT,
    campaign_manifests,
    dns_label,
    job_name,
    kubernetes_image,
    label_value,
    manifests,
    plan_runs,
    write_manifests,
)
from auditor.campaign.kubernetes import INDEX_ANNOTATION, default_namespace, run_kubernetes
from auditor.campaign.spec import JOB_SCHEMA, Campaign, parse_campaign, probe_jobs
from auditor.errors import EXIT_ENVIRONMENT, EnvironmentProblem, InputError
from auditor.probe.compare import load_baseline

ROOT = Path(__file__).resolve().parents[2]
PAYLOAD = ROOT / "auditor" / "probe" / "payload"
REPORT_SCHEMA = json.loads((ROOT / "auditor" / "schemas" / "probe-report.schema.json").read_text())
K8S_VERSION = "1.30"
NAMESPACE = "auditor-test"
DIGEST = "sha256:" + "ab" * 32
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
LABEL_VALUE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")

CAMPAIGN = f"""\
campaign: 1
name: k8s-study
images:
  - {{name: numpy, reference: "registry.example/lab/numpy:1.26@{DIGEST}"}}
probe: {{repeats: 2, vary: ["threads=1,2"], models: [numpy.mlp], timeout: 120}}
targets:
  - {{name: cpu-a, node_selector: {{kubernetes.io/arch: amd64}}}}
  - {{name: a100, gpu: true, node_selector: {{nvidia.com/gpu.product: A100}}}}
"""


def validate(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def campaign() -> Campaign:
    return parse_campaign(CAMPAIGN, "k8s.yaml")


def all_manifests(spec: Campaign, parallelism: int | None = 2) -> list[dict[str, Any]]:
    return [*campaign_manifests(spec.name, NAMESPACE),
            *(m for job in probe_jobs(spec)
              for m in manifests(spec.name, job, spec.probe, NAMESPACE, plan_runs(spec.probe, job.target.gpu),
                                 parallelism))]


# -- manifests ----------------------------------------------------------------------------------

def test_manifests_are_valid_kubernetes_objects_with_the_probes_confinement() -> None:
    spec = campaign()
    documents = all_manifests(spec)
    shared = documents[:2]
    jobs = {m["metadata"]["annotations"][JOB_LABEL]: [m] for m in documents[2:]}
    for manifest in documents:
        validate(manifest)
        assert DNS_LABEL.match(manifest["metadata"]["name"]) and len(manifest["metadata"]["name"]) <= 63
        assert manifest["metadata"]["namespace"] == NAMESPACE
        assert manifest["metadata"]["labels"][MANAGED_BY] == "auditor"
        assert manifest["metadata"]["labels"][CAMPAIGN_LABEL] == "k8s-study"
    with pytest.raises(kubernetes_validate.ValidationError):  # strict: an unknown field fails
        validate({**documents[-1], "spec": {**documents[-1]["spec"], "backofLimit": 0}})

    policy, configmap = shared
    assert policy["kind"] == "NetworkPolicy"
    assert policy["spec"] == {
        "podSelector": {"matchLabels": {MANAGED_BY: "auditor", CAMPAIGN_LABEL: "k8s-study"}},
        "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}
    assert configmap["kind"] == "ConfigMap" and configmap["immutable"] is True
    assert configmap["data"] == {p.name: p.read_text(encoding="utf-8") for p in sorted(PAYLOAD.glob("*.py"))}
    assert len(json.dumps(configmap).encode()) < 1024 * 1024 // 4  # far below a ConfigMap's 1 MiB

    (cpu,), (gpu,) = jobs["cpu-a--numpy"], jobs["a100--numpy"]
    assert cpu["kind"] == "Job" and cpu["metadata"]["name"] == "auditor-k8s-study-cpu-a--numpy"
    assert cpu["metadata"]["labels"][JOB_LABEL] == "cpu-a--numpy"
    assert cpu["metadata"]["annotations"]["auditor.image"] == f"registry.example/lab/numpy:1.26@{DIGEST}"
    js = cpu["spec"]
    assert (js["completions"], js["parallelism"], js["completionMode"]) == (4, 2, "Indexed")
    assert js["backoffLimitPerIndex"] == 0 and js["backoffLimit"] == 4  # a failed run ends alone
    assert js["activeDeadlineSeconds"] == 2 * (120 + 900)
    assert js["template"]["metadata"]["labels"] == cpu["metadata"]["labels"]
    pod = js["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False and pod["activeDeadlineSeconds"] == 120 + 900
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 65534
    assert pod["nodeSelector"] == {"kubernetes.io/arch": "amd64"} and "tolerations" not in pod
    (container,) = pod["containers"]
    assert container["image"] == f"registry.example/lab/numpy@{DIGEST}"
    assert container["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534, "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert container["resources"] == {"limits": {"memory": "4Gi"}}
    assert container["volumeMounts"] == [{"name": "payload", "mountPath": "/auditor-probe", "readOnly": True},
                                         {"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [
        {"name": "payload", "configMap": {"name": configmap["metadata"]["name"], "defaultMode": 0o444}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}]
    assert container["command"][:2] == ["python3", "-c"]
    plan = json.loads(container["command"][3])
    assert plan["runs"] == [0, 0, 1, 1]  # variation by variation, repeat by repeat
    assert [c["config"]["threads"] for c in plan["configs"]] == [1, 2]
    assert plan["configs"][1]["env"]["OPENBLAS_NUM_THREADS"] == "2"
    assert plan["configs"][0]["config"]["models"] == ["numpy.mlp"]

    gpod = gpu["spec"]["template"]["spec"]
    assert gpod["containers"][0]["resources"]["limits"] == {"memory": "4Gi", "nvidia.com/gpu": "1"}
    assert gpod["nodeSelector"] == {"nvidia.com/gpu.product": "A100"}
    assert gpod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert json.loads(gpod["containers"][0]["command"][3])["configs"][0]["config"]["device"] == "gpu"

    assert json.dumps(all_manifests(spec)) == json.dumps(documents)  # deterministic, key order included


def test_names_and_label_values_are_valid_and_stay_distinct() -> None:
    long_id = "Target_With.Dots--" + "image-name-that-is-rather-long" * 3
    names = {job_name("k8s-study", long_id), job_name("k8s-study", long_id + "x"),
             job_name("k8s-study", "a--b"), job_name("k8s-study", "A--b"), job_name("K8s-Study", "a--b")}
    assert len(names) == 5
    for name in names:
        assert DNS_LABEL.match(name) and len(name) <= NAME_LIMIT, name
    assert job_name("k8s-study", "a--b") == "auditor-k8s-study-a--b"  # unchanged when already valid
    assert dns_label("---") .startswith("x-") and DNS_LABEL.match(dns_label("___"))
    for text in ("plain", "ends-with-dash-", "x" * 100, "a b", ".dot"):
        value = label_value(text)
        assert LABEL_VALUE.match(value) and len(value) <= 63, value
    assert label_value("plain") == "plain" and label_value("x" * 100) != label_value("x" * 101)


@pytest.mark.parametrize(("reference", "image"), [
    (f"registry.example/lab/numpy:1.26@{DIGEST}", f"registry.example/lab/numpy@{DIGEST}"),
    (f"python@{DIGEST}", f"docker.io/library/python@{DIGEST}"),
    (f"docker-daemon:localhost:5000/torch@{DIGEST}", f"localhost:5000/torch@{DIGEST}"),
    (f"registry:ghcr.io/o/i@{DIGEST}", f"ghcr.io/o/i@{DIGEST}"),
])
def test_the_pod_runs_the_image_by_digest(reference: str, image: str) -> None:
    assert kubernetes_image(reference) == (image, DIGEST)


@pytest.mark.parametrize(("reference", "says"), [
    ("registry.example/numpy:1.26", "pin it"),
    ("oci:/tmp/layout:t", "from a registry"),
    ("docker-archive:/tmp/a.tar", "from a registry"),
    ("Bad Name", "invalid image reference"),
])
def test_an_image_the_kubelet_cannot_pull_by_digest_is_an_input_error(reference: str, says: str) -> None:
    with pytest.raises(InputError) as raised:
        kubernetes_image(reference)
    assert says in str(raised.value) and "\n" not in str(raised.value)


def test_dry_run_writes_yaml_that_kubectl_would_apply(tmp_path: Path) -> None:
    spec = campaign()
    paths = write_manifests(tmp_path, spec, probe_jobs(spec), NAMESPACE, parallelism=2)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "kubernetes/campaign.yaml", "kubernetes/cpu-a--numpy.yaml", "kubernetes/a100--numpy.yaml"]
    loaded = [doc for path in paths for doc in yaml.safe_load_all(path.read_text())]
    assert loaded == all_manifests(spec)
    for doc in loaded:
        validate(doc)
    assert "run.py: |" in paths[0].read_text()  # the payload files stay readable


# -- a fake API server ------------------------------------------------------------------------

def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


NODES = {"node-cpu-1": {"labels": {"kubernetes.io/arch": "amd64"}, "gpus": 0},
         "node-gpu-1": {"labels": {"kubernetes.io/arch": "amd64", "nvidia.com/gpu.product": "A100"},
                        "gpus": 1}}
PATH_RE = re.compile(r"/(api/v1|apis/[a-z0-9.]+/v1)/namespaces/([^/]+)/([a-z]+)"
                     r"(?:/([^/]+))?(?:/(status|log))?")
NO_PYTHON = ('failed to create containerd task: failed to create shim task: OCI runtime create failed: '
             'runc create failed: unable to start container process: exec: "python3": executable file not '
             'found in $PATH: unknown')


class FakeCluster:
    """The API server's state and a kubelet that runs Jobs' pods on this machine (see the module
    docstring). ``faults``: (auditor.job label, index) -> "oom" | "no-python"; an image whose
    name holds "missing" cannot be pulled."""

    RESOURCES = {("api/v1", "configmaps"): "ConfigMap", ("api/v1", "pods"): "Pod",
                 ("apis/networking.k8s.io/v1", "networkpolicies"): "NetworkPolicy",
                 ("apis/batch/v1", "jobs"): "Job"}

    def __init__(self, work: Path, faults: dict[tuple[str, int], str] | None = None) -> None:
        self.work = work
        self.faults = dict(faults or {})
        self.lock = threading.RLock()
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}  # (kind, name) in NAMESPACE
        self.logs: dict[str, str] = {}
        self.requests: list[tuple[str, str]] = []
        self.created: list[dict[str, Any]] = []
        self.unknown: list[str] = []
        self.threads: list[threading.Thread] = []
        self.deleted: list[tuple[str, str, str | None]] = []
        self.serial = itertools.count(1)
        self.stopping = threading.Event()

    # -- REST
    def handle(self, method: str, raw_path: str, body: bytes) -> tuple[int, Any]:
        url = urllib.parse.urlsplit(raw_path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        with self.lock:
            self.requests.append((method, url.path))
        match = PATH_RE.fullmatch(url.path)
        kind = self.RESOURCES.get((match.group(1), match.group(3))) if match else None
        if match is None or kind is None:
            self.unknown.append(f"{method} {url.path}")
            return 404, _status(404, "NotFound", f"the server could not find the resource ({url.path})")
        _api, namespace, _plural, name, sub = match.groups()
        if namespace != NAMESPACE:
            return 404, _status(404, "NotFound", f'namespaces "{namespace}" not found')
        with self.lock:
            if method == "POST" and name is None and kind != "Pod":
                return self.create(kind, json.loads(body))
            if method == "GET" and name is None:
                items = [o for (k, _n), o in sorted(self.objects.items()) if k == kind
                         and _selected(o, query.get("labelSelector", ""))]
                return 200, {"kind": f"{kind}List", "apiVersion": "v1", "metadata": {}, "items": items}
            found = self.objects.get((kind, name or ""))
            if found is None:
                return 404, _status(404, "NotFound", f'{kind.lower()}s "{name}" not found')
            if method == "GET" and sub == "log" and kind == "Pod":
                if query.get("container") not in (None, "probe"):
                    return 400, _status(400, "BadRequest", "no such container")
                return 200, self.logs.get(name or "", "")
            if method == "GET" and sub in (None, "status"):
                return 200, found
            if method == "DELETE" and sub is None:
                self.deleted.append((kind, name or "", query.get("propagationPolicy")))
                self.objects.pop((kind, name or ""))
                if kind == "Job":  # the garbage collector takes its pods
                    for key in [k for k, o in self.objects.items() if k[0] == "Pod"
                                and o["metadata"]["labels"].get("job-name") == name]:
                        self.objects.pop(key)
                return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
        self.unknown.append(f"{method} {url.path}")
        return 405, _status(405, "MethodNotAllowed", "not served by the fake")

    def create(self, kind: str, body: dict[str, Any]) -> tuple[int, Any]:
        try:
            kubernetes_validate.validate(body, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            return 422, _status(422, "Invalid", f"{kind} is invalid: {err.message}")
        name = body["metadata"]["name"]
        if (kind, name) in self.objects:
            return 409, _status(409, "AlreadyExists", f'{kind.lower()}s "{name}" already exists')
        self.created.append(json.loads(json.dumps(body)))
        stored = json.loads(json.dumps(body))
        stored["metadata"].update(uid=f"uid-{next(self.serial)}", creationTimestamp=_now(),
                                  resourceVersion="1")
        self.objects[(kind, name)] = stored
        if kind == "Job":
            stored["status"] = {"active": 0}
            thread = threading.Thread(target=self.kubelet, args=(name,), daemon=True)
            self.threads.append(thread)
            thread.start()
        return 201, stored

    # -- the Job controller and kubelet
    def kubelet(self, job: str) -> None:
        with self.lock:
            spec = self.objects[("Job", job)]["spec"]
        per_index = spec.get("backoffLimitPerIndex") is not None
        failed: list[int] = []
        succeeded: list[int] = []
        indices = list(range(spec["completions"]))
        while indices and not self.stopping.is_set():
            wave, indices = indices[: spec["parallelism"]], indices[spec["parallelism"]:]
            workers = [threading.Thread(target=self.run_pod, args=(job, spec, i, failed, succeeded))
                       for i in wave]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            with self.lock:
                if ("Job", job) not in self.objects:
                    return
                if not per_index and len(failed) > spec.get("backoffLimit", 6):
                    indices = []  # the whole Job fails: no more pods
        with self.lock:
            stored = self.objects.get(("Job", job))
            if stored is None or self.stopping.is_set():
                return
            done = "Failed" if failed else "Complete"
            reason = ("FailedIndexes" if per_index else "BackoffLimitExceeded") if failed else None
            why = {"reason": reason, "message": "Job has failed indexes"} if reason else {}
            stored["status"] = {
                "active": 0, "succeeded": len(succeeded), "failed": len(failed),
                "completedIndexes": ",".join(map(str, sorted(succeeded))),
                **({"failedIndexes": ",".join(map(str, sorted(failed)))} if per_index else {}),
                "conditions": [{"type": done, "status": "True", "lastTransitionTime": _now(), **why}]}

    def run_pod(self, job: str, spec: dict[str, Any], index: int, failed: list[int],
                succeeded: list[int]) -> None:
        template = spec["template"]
        labels = {**template["metadata"]["labels"], "job-name": job, "batch.kubernetes.io/job-name": job,
                  INDEX_ANNOTATION: str(index)}
        name = f"{job}-{index}-{next(self.serial):05d}"
        container = template["spec"]["containers"][0]
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels, "uid": f"uid-{name}",
                            "annotations": {INDEX_ANNOTATION: str(index)}, "creationTimestamp": _now()},
               "spec": json.loads(json.dumps(template["spec"])),
               "status": {"phase": "Pending"}}
        node = _schedule(template["spec"])
        with self.lock:
            if ("Job", job) not in self.objects:
                return
            self.objects[("Pod", name)] = pod
            if node is None:
                pod["status"]["conditions"] = [{
                    "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": "0/2 nodes are available: node(s) didn't match Pod's node affinity/selector."}]
            else:
                pod["spec"]["nodeName"] = node
        if node is None:
            self.wait_gone(job)
            return
        waiting = {"name": "probe", "image": container["image"], "imageID": "", "ready": False,
                   "restartCount": 0}
        if "missing" in container["image"]:
            with self.lock:
                pod["status"]["containerStatuses"] = [{**waiting, "state": {"waiting": {
                    "reason": "ImagePullBackOff",
                    "message": f'Back-off pulling image "{container["image"]}": not found'}}}]
            self.wait_gone(job)  # as a kubelet would, until the Job goes
            return
        fault = self.faults.get((labels[JOB_LABEL], index))
        started = _now()
        image_id = container["image"]
        if fault == "no-python":
            log, code, reason, message = "", 128, "StartError", NO_PYTHON
        else:
            with self.lock:
                pod["status"].update(phase="Running", startTime=started, containerStatuses=[
                    {**waiting, "imageID": image_id, "state": {"running": {"startedAt": started}}}])
            log, code = self.execute(name, template["spec"], container, index, kill=fault == "oom")
            reason = "OOMKilled" if fault == "oom" else ("Completed" if code == 0 else "Error")
            message = None
        terminated = {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": _now()}
        if message:
            terminated["message"] = message
        with self.lock:
            self.logs[name] = log
            pod["status"].update(phase="Succeeded" if code == 0 else "Failed", containerStatuses=[
                {**waiting, "imageID": image_id, "state": {"terminated": terminated}}])
            (succeeded if code == 0 else failed).append(index)

    def wait_gone(self, job: str) -> None:
        while not self.stopping.is_set():
            with self.lock:
                if ("Job", job) not in self.objects:
                    return
            time.sleep(0.02)

    def execute(self, pod: str, pod_spec: dict[str, Any], container: dict[str, Any], index: int,
                kill: bool) -> tuple[str, int]:
        """The container's command with its volumes at their mount paths (the payload ConfigMap's
        files written out) and the image's python3 being this machine's."""
        mounts: dict[str, Path] = {}
        for mount in container["volumeMounts"]:
            volume = next(v for v in pod_spec["volumes"] if v["name"] == mount["name"])
            folder = self.work / pod / mount["name"]
            folder.mkdir(parents=True)
            if "configMap" in volume:
                with self.lock:
                    data = self.objects[("ConfigMap", volume["configMap"]["name"])]["data"]  # created first
                for key, text in data.items():
                    (folder / key).write_text(text)
            mounts[mount["mountPath"]] = folder

        longest_first = sorted(mounts, key=len, reverse=True)
        at_mount = re.compile(r"(?<![\w/.-])(" + "|".join(map(re.escape, longest_first)) + r")(?=/)")

        def local(arg: str) -> str:  # one pass: a path put in is never rewritten again
            return at_mount.sub(lambda m: str(mounts[m.group(1)]), arg)

        command = [sys.executable if container["command"][0] == "python3" else container["command"][0],
                   *map(local, container["command"][1:])]
        env = {"PATH": "/usr/bin:/bin", "JOB_COMPLETION_INDEX": str(index),
               **{e["name"]: e["value"] for e in container.get("env", [])}}
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env, cwd=mounts.get(container["workingDir"]))
        if kill:  # the kernel's OOM killer, once the payload is under way
            assert process.stdout is not None
            first = process.stdout.readline()
            process.kill()
            return first.decode() + process.stdout.read().decode(), 137
        out, _ = process.communicate(timeout=120)
        return out.decode("utf-8", "replace"), process.returncode


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


def _selected(obj: dict[str, Any], selector: str) -> bool:
    labels = obj["metadata"].get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value.lstrip("="):
            return False
    return True


def _schedule(pod_spec: dict[str, Any]) -> str | None:
    wants_gpu = "nvidia.com/gpu" in pod_spec["containers"][0]["resources"].get("limits", {})
    for node, facts in NODES.items():
        if all(facts["labels"].get(k) == v for k, v in (pod_spec.get("nodeSelector") or {}).items()) \
                and (facts["gpus"] > 0 or not wants_gpu):
            return node
    return None


@contextlib.contextmanager
def fake_api_server(cluster: FakeCluster) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            code, payload = cluster.handle(self.command, self.path, body)
            text = payload if isinstance(payload, str) else json.dumps(payload)
            data = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain" if isinstance(payload, str) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        cluster.stopping.set()
        server.shutdown()
        server.server_close()
        for worker in cluster.threads:
            worker.join(timeout=30)


def api_client(url: str) -> client.ApiClient:
    return client.ApiClient(client.Configuration(host=url))


# -- the client path --------------------------------------------------------------------------

def test_a_campaign_runs_as_indexed_jobs_against_a_fake_api_server(tmp_path: Path) -> None:
    spec = campaign()
    jobs = probe_jobs(spec)
    results = tmp_path / "results"
    prepare_results(results, {"name": spec.name, "backend": "kubernetes"}, jobs, force=False)
    cluster = FakeCluster(tmp_path / "kubelet",
                          faults={("cpu-a--numpy", 1): "oom", ("a100--numpy", 3): "no-python"})
    done: list[str] = []
    with fake_api_server(cluster) as url:
        names = run_kubernetes(results, spec, jobs, NAMESPACE, done.append, api_client=api_client(url),
                               poll=0.05, timeout=120, parallelism=2)
    assert names == ["auditor-k8s-study-cpu-a--numpy", "auditor-k8s-study-a100--numpy"]
    assert sorted(done) == ["a100--numpy", "cpu-a--numpy"]
    assert not cluster.unknown
    # the server got exactly the manifests, the NetworkPolicy before anything else
    assert cluster.created == all_manifests(spec) and cluster.created[0]["kind"] == "NetworkPolicy"
    # and everything is gone at the end, the Jobs with propagation Background
    assert not cluster.objects
    assert ("Job", names[0], "Background") in cluster.deleted

    reports = {}
    for job in jobs:
        folder = results / "jobs" / job.job_id
        record = json.loads((folder / "job.json").read_text())
        assert record["schema"] == JOB_SCHEMA and record["error"] is None and record["exit_code"] == 0
        assert record["image"] == {"name": "numpy", "reference": job.image[1]}
        assert record["kubernetes"]["namespace"] == NAMESPACE
        report = json.loads((folder / "report.json").read_text())
        jsonschema.validate(report, REPORT_SCHEMA)
        load_baseline(report, name="report.json", force=True)  # what `campaign report` accepts
        assert report["image"]["digest"] == DIGEST
        reports[job.target.name] = (record, report)

    record, report = reports["cpu-a"]
    assert record["host"] == "node-cpu-1"
    assert report["counts"] == {"runs": 4, "successful": 3, "failed": 1, "sources": 1, "groups": 2}
    runs = report["runs"]
    assert [r["variation"] for r in runs] == [{"threads": "1"}] * 2 + [{"threads": "2"}] * 2
    for run in runs:  # each pod ran its own index's configuration (the launcher picked it)
        if run["output"] is not None:
            assert run["output"]["config"]["threads"] == int(run["variation"]["threads"])
            assert run["output"]["environment"]["env"].get("OPENBLAS_NUM_THREADS") in (None,
                                                                                      run["variation"]["threads"])
            assert [m["name"] for m in run["output"]["models"]] == ["numpy.mlp"]
    assert runs[1]["output"] is None and runs[1]["exit_code"] == 137
    assert "out of memory" in runs[1]["error"]
    assert [f["run"] for f in report["failures"] if f["where"] is None] == [1]
    (model,) = report["models"]
    assert model["name"] == "numpy.mlp"
    assert any("NetworkPolicy auditor-k8s-study-no-network" in note for note in report["notes"])

    record, report = reports["a100"]
    assert record["host"] == "node-gpu-1"
    assert report["counts"]["successful"] == 3
    assert report["runs"][3]["error"].startswith("the image has no python3")
    assert all(r["config"]["device"] == "gpu" for r in report["runs"])


def test_a_job_whose_image_cannot_be_pulled_is_given_up_against_a_fake_api_server(tmp_path: Path) -> None:
    text = CAMPAIGN.replace("lab/numpy:1.26", "lab/missing").replace('"threads=1,2"', '"threads=1"')
    spec = parse_campaign(re.sub(r"  - \{name: a100.*\n", "", text), "k8s.yaml")
    jobs = probe_jobs(spec)
    results = tmp_path / "results"
    prepare_results(results, {"name": spec.name}, jobs, force=False)
    cluster = FakeCluster(tmp_path / "kubelet")
    with fake_api_server(cluster) as url:
        run_kubernetes(results, spec, jobs, NAMESPACE, None, api_client=api_client(url), poll=0.05,
                       timeout=60, stuck_seconds=0.3)
    folder = results / "jobs" / "cpu-a--numpy"
    record = json.loads((folder / "job.json").read_text())
    assert record["schema"] == JOB_SCHEMA and record["exit_code"] is None
    assert record["error"].startswith(f"Kubernetes Job {NAMESPACE}/{job_name(spec.name, jobs[0].job_id)}: "
                                      "no pod ran")
    assert "ImagePullBackOff" in record["error"] and "\n" not in record["error"]
    assert not (folder / "report.json").exists()
    assert not cluster.objects and not cluster.unknown


def test_objects_left_by_an_earlier_run_are_a_clear_error_against_a_fake_api_server(tmp_path: Path) -> None:
    spec = campaign()
    jobs = probe_jobs(spec)
    prepare_results(tmp_path, {"name": spec.name}, jobs, force=False)
    cluster = FakeCluster(tmp_path / "kubelet")
    with fake_api_server(cluster) as url:
        (left,) = manifests(spec.name, jobs[0], spec.probe, NAMESPACE, plan_runs(spec.probe, False))
        cluster.objects[("Job", left["metadata"]["name"])] = {**left, "status": {}}
        with pytest.raises(EnvironmentProblem) as raised:
            run_kubernetes(tmp_path, spec, jobs, NAMESPACE, None, api_client=api_client(url), poll=0.05)
    message = str(raised.value)
    assert raised.value.exit_code == EXIT_ENVIRONMENT and "\n" not in message
    assert "409" in message and "already exists" in message and f"-n {NAMESPACE}" in message
    # what this run had created is deleted again; the earlier run's Job is left alone
    assert [c["kind"] for c in cluster.created] == ["NetworkPolicy", "ConfigMap"]
    assert set(cluster.objects) == {("Job", left["metadata"]["name"])}


def test_a_namespace_that_does_not_exist_against_a_fake_api_server(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    spec = campaign()
    jobs = probe_jobs(spec)
    prepare_results(tmp_path, {"name": spec.name}, jobs, force=False)
    cluster = FakeCluster(tmp_path / "kubelet")
    with fake_api_server(cluster) as url, pytest.raises(EnvironmentProblem) as raised:
        # the client configured from KUBECONFIG, as `auditor campaign run` has it
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", url, "nope")))
        run_kubernetes(tmp_path, spec, jobs, default_namespace(), None)
    assert str(raised.value) == ('Kubernetes refused to create NetworkPolicy auditor-k8s-study-no-network: '
                                 '404 namespaces "nope" not found')
    assert not cluster.created
    assert cluster.requests[0] == ("POST", "/apis/networking.k8s.io/v1/namespaces/nope/networkpolicies")


# -- no cluster ---------------------------------------------------------------------------------

def test_no_cluster_configured_is_an_environment_problem(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "no-such-kubeconfig"
    monkeypatch.setenv("KUBECONFIG", str(missing))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    spec = campaign()
    jobs = probe_jobs(spec)
    prepare_results(tmp_path, {"name": spec.name}, jobs, force=False)
    with pytest.raises(EnvironmentProblem) as raised:
        run_kubernetes(tmp_path, spec, jobs, NAMESPACE, None)
    message = str(raised.value)
    assert raised.value.exit_code == EXIT_ENVIRONMENT and "\n" not in message
    assert message.startswith("the kubernetes backend found no cluster: ")
    assert f"KUBECONFIG={missing}: no such file" in message and "in-cluster service account" in message


def test_an_api_server_that_does_not_answer_is_an_environment_problem(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spec = campaign()
    jobs = probe_jobs(spec)
    prepare_results(tmp_path, {"name": spec.name}, jobs, force=False)
    configuration = client.Configuration(host=f"http://127.0.0.1:{port}")
    configuration.retries = 0
    with pytest.raises(EnvironmentProblem) as raised:
        run_kubernetes(tmp_path, spec, jobs, NAMESPACE, None, api_client=client.ApiClient(configuration))
    message = str(raised.value)
    assert raised.value.exit_code == EXIT_ENVIRONMENT and "\n" not in message
    assert message.startswith(f"the Kubernetes API server at http://127.0.0.1:{port} did not answer")


def test_the_campaign_timeout_records_what_never_ran_against_a_fake_api_server(tmp_path: Path) -> None:
    text = CAMPAIGN.replace("nvidia.com/gpu.product: A100", "nvidia.com/gpu.product: H100")  # no such node
    spec = parse_campaign(re.sub(r"  - \{name: cpu-a.*\n", "", text), "k8s.yaml")
    jobs = probe_jobs(spec)
    prepare_results(tmp_path, {"name": spec.name}, jobs, force=False)
    cluster = FakeCluster(tmp_path / "kubelet")
    with fake_api_server(cluster) as url, pytest.raises(EnvironmentProblem) as raised:
        run_kubernetes(tmp_path, spec, jobs, NAMESPACE, None, api_client=api_client(url), poll=0.05,
                       timeout=0.3)
    assert str(raised.value) == "the campaign's Kubernetes Jobs did not finish in 0.3 s: a100--numpy"
    record = json.loads((tmp_path / "jobs" / "a100--numpy" / "job.json").read_text())
    assert record["schema"] == JOB_SCHEMA and record["exit_code"] is None
    assert "no pod ran: the campaign's timeout (0.3 s) passed first" in record["error"]
    assert "not scheduled: Unschedulable: 0/2 nodes are available" in record["error"]
    assert not cluster.objects  # deleted on the way out all the same


def write_kubeconfig(path: Path, server: str, namespace: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "lab", "context": {"cluster": "c", "user": "u", "namespace": namespace}}]}))
    return path


def test_the_default_namespace_is_the_kubeconfig_contexts(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "config", "https://127.0.0.1:6443", "probes")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert default_namespace() == "probes"
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setattr("auditor.campaign.kubernetes.SERVICE_ACCOUNT_NAMESPACE", str(tmp_path / "missing"))
    assert default_namespace() == "default"
