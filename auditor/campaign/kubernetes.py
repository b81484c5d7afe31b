"""The Kubernetes backend of ``auditor campaign``: on a cluster the probe cannot start containers
itself, so every probe job (one target x one image) becomes a Kubernetes Job whose pods run the
payload directly in the audited image, pinned by digest.

- One pod per run: ``completions`` = repeats x variations, ``completionMode: Indexed``; a pod
  reads its index (``JOB_COMPLETION_INDEX``) and runs that run's configuration, in the order of
  :func:`auditor.probe.runner.run_matrix` (variation by variation, repeat by repeat). A tiny
  launcher (``python3 -c LAUNCHER PLAN_JSON``) picks the configuration, sets its environment
  (threads, ``PYTHONHASHSEED``, ``env.NAME`` variations) and ``exec``s
  ``python3 /auditor-probe/run.py CONFIG_JSON``, as the runner would.
- A failed run is not retried and does not stop the others: ``backoffLimitPerIndex: 0``
  (Kubernetes 1.29+, beta and on by default; GA in 1.33). ``backoffLimit: 0`` would end the whole
  Job at its first failed pod and kill the runs still going, so ``backoffLimit`` is the number of
  runs, which ``backoffLimitPerIndex: 0`` can never exceed. (An older API server drops the
  field: a failed run may then be retried, and an index's succeeded or newest pod is read.)
- The payload (``auditor/probe/payload/*.py``, about 80 kB) is one immutable ConfigMap per
  campaign mounted read-only at ``/auditor-probe``; a NetworkPolicy per campaign denies every
  ingress and egress of its pods. A pod always has an interface besides ``lo``, so the payload's
  ``has_network`` is true there and the runner's refusal of such results does not apply: the
  report's notes say the network was denied by policy (which only a network plugin that
  implements NetworkPolicy enforces).
- Pods run as 65534 (``runAsNonRoot``), read-only root with an emptyDir (memory) ``/tmp``, no
  service account token, no service links, all capabilities dropped, no privilege escalation,
  4 GiB of memory (the runner's limit), ``nvidia.com/gpu: 1`` and its toleration on a GPU
  target, the target's ``nodeSelector``. Deadlines: a pod gets the probe timeout plus
  ``PULL_SECONDS`` (its clock starts before the image is pulled), the Job as much per wave of
  ``parallelism`` pods.
- Results come from the pods' logs (stdout and stderr together; the payload's JSON is its last
  JSON line, :func:`auditor.probe.runner.parse_payload_output`), become the job's
  ``report.json`` (:func:`auditor.probe.compare.classify`) and ``job.json`` (as
  :mod:`auditor.campaign.jobs` writes them). Everything created is deleted at the end
  (propagation Background) unless ``keep``.

Building manifests is pure (:mod:`auditor.campaign.kube_manifests`); the API is used only by
:func:`run_kubernetes`, here, through the official ``kubernetes`` client, imported when it runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from auditor.campaign.jobs import now, record_lost, write_json
from auditor.campaign.kube_manifests import (
    CONTAINER,
    MANAGED_BY,
    MEMORY,
    PULL_SECONDS,
    campaign_objects,
    kubernetes_image,
    label_selector,
    network_policy_name,
    object_labels,
    probe_timeout,
)
from auditor.campaign.spec import JOB_SCHEMA, Campaign, Job
from auditor.errors import EnvironmentProblem
from auditor.probe.runner import (
    PAYLOAD_SCHEMA_PREFIX,
    ProbeConfig,
    RunResult,
    parse_payload_output,
)

Progress = Callable[[str], None]
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
STUCK_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
                           "CreateContainerConfigError", "CreateContainerError"})
HOPELESS_REASONS = frozenset({"InvalidImageName", "ErrImageNeverPull"})  # no waiting
STUCK_SECONDS = 180.0
REQUEST_SECONDS = 60
LOG_TAIL_LINES = 20
LOG_LINE_CHARS = 400
ERROR_CHARS = 300
THIS_MACHINE = "this machine"
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

# -- turning pods into runs (pure) -------------------------------------------------------------

@dataclass(frozen=True)
class PodOutcome:
    """What one pod of a Job showed: its index, where it ran, how its container ended."""

    name: str
    index: int | None
    job: str | None = None             # its Job's name (the job-name label)
    node: str | None = None
    phase: str | None = None
    reason: str | None = None          # the pod's (DeadlineExceeded, Evicted, ...)
    message: str | None = None
    exit_code: int | None = None       # the container's, once terminated
    terminated_reason: str | None = None  # Completed, Error, OOMKilled, StartError, ...
    terminated_message: str | None = None
    waiting_reason: str | None = None  # ImagePullBackOff, ContainerCreating, ...
    waiting_message: str | None = None
    scheduling: str | None = None      # why it is not scheduled (PodScheduled False)
    image_id: str | None = None
    seconds: float = 0.0
    created: str = ""

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed") or self.exit_code is not None

    def state(self) -> str:
        """One line: where the pod got to (for a run without a result)."""
        if self.waiting_reason:
            return _one_line(f"{self.waiting_reason}: {self.waiting_message}" if self.waiting_message
                             else self.waiting_reason)
        if self.scheduling:
            return _one_line(f"not scheduled: {self.scheduling}")
        if self.reason:
            return _one_line(f"{self.reason}: {self.message}" if self.message else self.reason)
        return f"pod {self.phase or 'unknown'}"


def _one_line(text: str, limit: int = ERROR_CHARS) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _last_lines(text: str, count: int = LOG_TAIL_LINES, skip: str | None = None) -> list[str]:
    lines = [line.rstrip() for line in text.splitlines() if line.strip() and line.strip() != skip]
    return [line if len(line) <= LOG_LINE_CHARS else line[: LOG_LINE_CHARS - 1] + "…"
            for line in lines[-count:]]


def run_result(index: int, variation: Mapping[str, str], config: ProbeConfig, pod: PodOutcome | None,
               log: str, timeout: float, gone: str | None = None) -> RunResult:
    """The runner's :class:`RunResult` for the run ``index`` from its pod and its log (stdout and
    stderr together); ``gone``: why the Job ended without this run (no pod, or a pod that never
    finished)."""
    output = parse_payload_output(log) if log else None
    json_line = None
    if output is not None:
        json_line = next((line.strip() for line in reversed(log.splitlines()) if line.lstrip().startswith("{")
                          and parse_payload_output(line) == output), None)
    tail = _last_lines(log, skip=json_line)
    last = tail[-1] if tail else "no output"
    error: str | None = None
    if pod is None:
        error = f"no pod ran: {gone or 'the Job ended without it'}"
    elif pod.reason == "DeadlineExceeded":
        error = (f"timed out: the pod outlived its deadline ({timeout:g} s and {PULL_SECONDS} s to start); "
                 f"last output: {last}")
    elif not pod.finished:
        error = f"the pod did not finish ({pod.state()}): {gone or 'the Job ended'}"
    elif pod.exit_code is None:
        error = f"the pod failed ({pod.state()})"
    elif pod.terminated_reason in ("StartError", "ContainerCannotRun") or (
            pod.exit_code in (127, 128) and not log.strip()):
        said = pod.terminated_message or pod.terminated_reason or f"exit code {pod.exit_code}"
        error = f"the payload could not start: {said}"
        if "python3" in said and ("not found" in said or "no such file" in said.lower()):
            error = f"the image has no python3: the probe needs Python 3.6+ in the image ({said})"
    elif pod.terminated_reason == "OOMKilled":
        error = f"the payload was killed: out of memory (limit {MEMORY}); last output: {last}"
    elif pod.exit_code != 0:
        error = f"the payload exited with code {pod.exit_code}: {last}"
    elif output is None:
        error = f"the payload printed no JSON: {last}"
    elif not str(output.get("schema", "")).startswith(PAYLOAD_SCHEMA_PREFIX):
        error = f"the payload's JSON is not a probe result (schema {output.get('schema')!r})"
    return RunResult(run=index, variation=dict(variation), config=config,
                     exit_code=pod.exit_code if pod else None, output=output if error is None else None,
                     error=None if error is None else _one_line(error), log_tail="\n".join(tail),
                     seconds=round(pod.seconds, 3) if pod else 0.0)


def pick_pods(pods: Sequence[PodOutcome]) -> dict[int, PodOutcome]:
    """Each index's pod: the one that succeeded, else the newest (a replaced pod's successor)."""
    chosen: dict[int, PodOutcome] = {}
    for pod in sorted(pods, key=lambda p: (p.phase == "Succeeded", p.created, p.name)):
        if pod.index is not None:
            chosen[pod.index] = pod
    return chosen


# -- the API (the official client, imported here) --------------------------------------------------

def _load_client() -> Any:
    """An ApiClient from KUBECONFIG (else ~/.kube/config), else the pod's service account; an
    :class:`EnvironmentProblem` saying what was tried when neither gives a cluster."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    tried = []
    given = os.environ.get("KUBECONFIG")
    files = [p for p in (given or "~/.kube/config").split(os.pathsep) if p]
    existing = [p for p in files if os.path.isfile(os.path.expanduser(p))]
    where = f"KUBECONFIG={given}" if given else "~/.kube/config"
    if existing:
        configuration = client.Configuration()
        try:
            config.load_kube_config(config_file=os.pathsep.join(existing), client_configuration=configuration,
                                    persist_config=False)
            return client.ApiClient(configuration)
        except (ConfigException, OSError, ValueError, yaml.YAMLError) as err:
            tried.append(f"{where}: {_one_line(str(err), 160)}")
    else:
        tried.append(f"{where}: no such file")
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)
    except ConfigException as err:
        tried.append(f"in-cluster service account: {_one_line(str(err), 160)}")
    raise EnvironmentProblem("the kubernetes backend found no cluster: " + "; ".join(tried)
                             + " (set KUBECONFIG, or run inside a pod with a service account)")


def default_namespace() -> str:
    """The namespace of the kubeconfig's current context, else the pod's own (in a cluster), else
    ``default``: what kubectl would use."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    given = os.environ.get("KUBECONFIG")
    files = [p for p in (given or "~/.kube/config").split(os.pathsep)
             if p and os.path.isfile(os.path.expanduser(p))]
    if files:
        with contextlib.suppress(ConfigException, OSError, ValueError, yaml.YAMLError):
            _contexts, current = config.list_kube_config_contexts(config_file=os.pathsep.join(files))
            namespace = ((current or {}).get("context") or {}).get("namespace")
            if namespace:
                return str(namespace)
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return Path(SERVICE_ACCOUNT_NAMESPACE).read_text(encoding="utf-8").strip() or "default"
    return "default"


class _Api:
    """The calls the backend makes, each turning the client's failures into one line."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        from kubernetes import client

        self.namespace = namespace
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.networking = client.NetworkingV1Api(api_client)
        self.host = getattr(getattr(api_client, "configuration", None), "host", None) or "?"

    def call(self, doing: str, method: Callable[..., Any], *args: Any, gone_ok: bool = False,
             **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return method(*args, _request_timeout=REQUEST_SECONDS, **kwargs)
        except ApiException as err:
            if gone_ok and err.status == 404:
                return None
            raise self.refused(doing, err) from None
        except (HTTPError, OSError) as err:
            raise EnvironmentProblem(f"the Kubernetes API server at {self.host} did not answer ({doing}): "
                                     f"{_one_line(str(err), 200)}") from None

    def refused(self, doing: str, err: Any) -> EnvironmentProblem:
        said = str(err.reason or "")
        with contextlib.suppress(ValueError, AttributeError):
            said = json.loads(err.body or "").get("message") or said
        hint = ""
        if err.status == 409:
            hint = " (left by an earlier run? kubectl delete jobs,configmaps,networkpolicies " \
                   f"-n {self.namespace} -l {MANAGED_BY}=auditor)"
        elif err.status in (401, 403):
            hint = f" (the credentials may not {doing} in namespace {self.namespace})"
        return EnvironmentProblem(f"Kubernetes refused to {doing}: {err.status} {_one_line(said, 200)}{hint}")

    def create(self, manifest: Mapping[str, Any]) -> None:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        method = {"ConfigMap": self.core.create_namespaced_config_map,
                  "NetworkPolicy": self.networking.create_namespaced_network_policy,
                  "Job": self.batch.create_namespaced_job}[kind]
        self.call(f"create {kind} {name}", method, self.namespace, manifest)

    def delete(self, kind: str, name: str) -> None:
        method = {"ConfigMap": self.core.delete_namespaced_config_map,
                  "NetworkPolicy": self.networking.delete_namespaced_network_policy,
                  "Job": self.batch.delete_namespaced_job}[kind]
        self.call(f"delete {kind} {name}", method, name, self.namespace, gone_ok=True,
                  propagation_policy="Background")

    def jobs(self, selector: str) -> list[Any]:
        return self.call("list Jobs", self.batch.list_namespaced_job, self.namespace,
                         label_selector=selector).items or []

    def job_status(self, name: str) -> Any:
        return self.call(f"read Job {name}", self.batch.read_namespaced_job_status, name, self.namespace,
                         gone_ok=True)

    def pods(self, selector: str) -> list[PodOutcome]:
        found = self.call("list pods", self.core.list_namespaced_pod, self.namespace, label_selector=selector)
        return [_pod_outcome(pod) for pod in found.items or []]

    def log(self, pod: str) -> str:
        from kubernetes.client.exceptions import ApiException

        try:  # raw: the client would turn a log that is one JSON document into a Python repr
            response = self.core.read_namespaced_pod_log(pod, self.namespace, container=CONTAINER,
                                                         _preload_content=False,
                                                         _request_timeout=REQUEST_SECONDS)
        except ApiException as err:
            if err.status in (400, 404):  # gone, or its container never started
                return ""
            raise self.refused(f"read the log of pod {pod}", err) from None
        data = response.data if hasattr(response, "data") else response
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data or "")


def _pod_outcome(pod: Any) -> PodOutcome:
    meta, status = pod.metadata, pod.status
    annotations = meta.annotations or {}
    index_text = annotations.get(INDEX_ANNOTATION) or (meta.labels or {}).get(INDEX_ANNOTATION)
    index = int(index_text) if index_text is not None and str(index_text).isdigit() else None
    labels = meta.labels or {}
    fields: dict[str, Any] = {"name": meta.name, "index": index,
                              "job": labels.get("job-name") or labels.get("batch.kubernetes.io/job-name"),
                              "node": getattr(pod.spec, "node_name", None) if pod.spec else None,
                              "created": str(meta.creation_timestamp or "")}
    if status is not None:
        fields.update(phase=status.phase, reason=status.reason, message=status.message)
        for condition in status.conditions or []:
            if condition.type == "PodScheduled" and condition.status == "False":
                fields["scheduling"] = _one_line(f"{condition.reason}: {condition.message}")
        for container in status.container_statuses or []:
            if container.name != CONTAINER:
                continue
            fields["image_id"] = container.image_id or None
            state = container.state
            if state and state.terminated:
                done = state.terminated
                fields.update(exit_code=done.exit_code, terminated_reason=done.reason,
                              terminated_message=_one_line(done.message) if done.message else None)
                if done.started_at and done.finished_at:
                    fields["seconds"] = max(0.0, (done.finished_at - done.started_at).total_seconds())
            elif state and state.waiting:
                fields.update(waiting_reason=state.waiting.reason, waiting_message=state.waiting.message)
    return PodOutcome(**fields)


def _condition(job: Any) -> tuple[str, str] | None:
    """("Complete" or "Failed", why) once the Job has finished."""
    for condition in (job.status.conditions if job is not None and job.status else None) or []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            why = condition.reason or condition.type
            return condition.type, _one_line(f"{why}: {condition.message}" if condition.message else why)
    return None


@dataclass
class _Tracked:
    job: Job
    manifest: dict[str, Any]
    runs: list[tuple[dict[str, str], ProbeConfig]]
    started: str
    last_seen: dict[int, PodOutcome]
    stuck_since: float | None = None

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])


def run_kubernetes(results: Path, campaign: Campaign, jobs: Sequence[Job], namespace: str,
                   progress: Progress | None = None, api_client: Any = None, poll: float = 2.0,
                   timeout: float | None = None, *, parallelism: int | None = None, keep: bool = False,
                   stuck_seconds: float = STUCK_SECONDS) -> list[str]:
    """Run the campaign's probe jobs as Kubernetes Jobs in ``namespace``, follow them, and write
    each job's ``report.json`` and ``job.json`` in ``results`` (prepared by
    :func:`auditor.campaign.jobs.prepare_results`); returns the Jobs' names.

    ``api_client``: a ``kubernetes.client.ApiClient`` (default: from KUBECONFIG or the pod's
    service account). A job whose pods stay unable to start (image pull, container config) for
    ``stuck_seconds`` is given up. ``timeout``: for the whole campaign; the jobs still running
    then are recorded with what they have and an :class:`EnvironmentProblem` is raised. Everything
    created is deleted at the end unless ``keep``."""
    shared, per_job = campaign_objects(campaign, jobs, namespace, parallelism)
    api = _Api(api_client if api_client is not None else _load_client(), namespace)
    created: list[tuple[str, str]] = []
    tracked: dict[str, _Tracked] = {}
    try:
        for manifest in shared:  # the NetworkPolicy first: no pod of ours is ever without it
            api.create(manifest)
            created.append((manifest["kind"], manifest["metadata"]["name"]))
        for job, manifest, runs in per_job:
            api.create(manifest)
            created.append(("Job", manifest["metadata"]["name"]))
            tracked[manifest["metadata"]["name"]] = _Tracked(job, manifest, runs, now(), {})
        _follow(results, api, campaign, tracked, progress, poll, timeout, stuck_seconds, keep)
    finally:
        if not keep:
            for kind, name in reversed(created):
                with contextlib.suppress(EnvironmentProblem):  # best effort: a Job's TTL is a day
                    api.delete(kind, name)
    return [name for kind, name in created if kind == "Job"]


def _follow(results: Path, api: _Api, campaign: Campaign, tracked: dict[str, _Tracked],
            progress: Progress | None, poll: float, timeout: float | None, stuck_seconds: float,
            keep: bool) -> None:
    selector = label_selector(object_labels(campaign.name))
    pending = dict(tracked)
    started = time.monotonic()
    while pending:
        statuses = {job.metadata.name: job for job in api.jobs(selector)}
        pods: dict[str, list[PodOutcome]] = {}
        for pod in api.pods(selector):
            pods.setdefault(pod.job or "", []).append(pod)
        for name, entry in list(pending.items()):
            status = statuses.get(name) or api.job_status(name)
            for index, pod in pick_pods(pods.get(name, [])).items():
                entry.last_seen[index] = pod
            finished = _condition(status) if status is not None else ("Failed", "the Job was deleted")
            given_up = False
            if finished is None:
                finished = _stuck(entry, time.monotonic(), stuck_seconds)
                given_up = finished is not None
            if finished is not None:
                _collect(results, api, campaign, entry, finished[1] if finished[0] == "Failed" else None)
                if given_up and not keep:
                    api.delete("Job", name)  # its pods would wait until the Job's deadline
                pending.pop(name)
                if progress:
                    progress(entry.job.job_id)
        if not pending:
            break
        if timeout is not None and time.monotonic() - started > timeout:
            for entry in pending.values():
                _collect(results, api, campaign, entry,
                         f"the campaign's timeout ({timeout:g} s) passed first")
            raise EnvironmentProblem(f"the campaign's Kubernetes Jobs did not finish in {timeout:g} s: "
                                     + ", ".join(sorted(e.job.job_id for e in pending.values())))
        time.sleep(poll)


def _stuck(entry: _Tracked, clock: float, stuck_seconds: float) -> tuple[str, str] | None:
    """("Failed", why) when the Job's pods cannot start and waiting will not help."""
    stuck = [p for p in entry.last_seen.values() if not p.finished and p.waiting_reason in STUCK_REASONS]
    if not stuck:
        entry.stuck_since = None
        return None
    if entry.stuck_since is None:
        entry.stuck_since = clock
    hopeless = any(p.waiting_reason in HOPELESS_REASONS for p in stuck)
    if hopeless or clock - entry.stuck_since >= stuck_seconds:
        return "Failed", f"its pods cannot start: {stuck[0].state()}"
    return None


def _collect(results: Path, api: _Api, campaign: Campaign, entry: _Tracked, failure: str | None) -> None:
    """report.json (when a pod ran) and job.json of a finished (or given up) Job."""
    job, name = entry.job, entry.name
    pods = pick_pods(api.pods(f"job-name={name}"))
    chosen = {**entry.last_seen, **pods}
    timeout = probe_timeout(campaign.probe)
    outcomes = []
    for index, (variation, config) in enumerate(entry.runs):
        pod = chosen.get(index)
        log = api.log(pod.name) if pod is not None and (pod.finished or pod.phase == "Running") else ""
        outcomes.append((run_result(index, variation, config, pod, log, timeout, failure), pod))
    ran = [pod for _r, pod in outcomes if pod is not None and pod.node and (pod.exit_code is not None or
                                                                            pod.phase == "Running")]
    nodes = sorted({pod.node for pod in ran if pod.node})
    folder = results / "jobs" / job.job_id
    kubernetes = {"namespace": api.namespace, "job": name, "nodes": nodes, "outcome": failure or "Complete",
                  "pods": {str(i): p.name for i, p in sorted(chosen.items())}}
    if not ran:
        error = f"Kubernetes Job {api.namespace}/{name}: no pod ran" + (f": {failure}" if failure else "")
        seen = [p.state() for p in chosen.values()]
        record_lost(results, job.job_id, error + (f" (a pod: {seen[0]})" if seen else ""))
        return
    _image, digest = kubernetes_image(job.image[1])
    image_ids = sorted({p.image_id for p in ran if p.image_id})
    image: dict[str, Any] = {"reference": job.image[1], "digest": digest}
    if len(image_ids) == 1:
        image["image_id"] = image_ids[0]
    runs = [{**result.as_dict(),
             "source": THIS_MACHINE if len(nodes) <= 1 else f"node {pod.node if pod and pod.node else '?'}"}
            for result, pod in outcomes]
    notes = _notes(campaign, api.namespace, name, nodes, failure)
    write_json(folder / "report.json", _classify(runs, image, notes))
    write_json(folder / "job.json", {
        "schema": JOB_SCHEMA, "job_id": job.job_id, "kind": job.kind, "target": job.target.name,
        "image": {"name": job.image[0], "reference": job.image[1]}, "host": ",".join(nodes),
        "exit_code": 0, "error": None, "started": entry.started, "finished": now(), "command": [],
        "kubernetes": kubernetes})


def _notes(campaign: Campaign, namespace: str, name: str, nodes: Sequence[str],
           failure: str | None) -> list[str]:
    notes = [f"ran on Kubernetes as Job {namespace}/{name}, one pod per run, on "
             + (f"node{'s' if len(nodes) > 1 else ''} {', '.join(nodes)}" if nodes else "no known node"),
             f"network: every pod ran under NetworkPolicy {network_policy_name(campaign.name)} (no "
             "ingress, no egress), enforced where the cluster's network plugin implements NetworkPolicy; "
             "a pod always has an interface besides lo, so the payload reports one"]
    if failure:
        notes.append(f"the Job ended: {failure}")
    if campaign.probe.get("crosscheck", False):
        notes.append("no cross-check with a static audit: the kubernetes backend only runs the payload")
    return notes


def _classify(runs: list[dict[str, Any]], image: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    from auditor.probe.compare import classify

    return classify(runs, image=image, notes=notes)
