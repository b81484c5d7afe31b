"""The Kubernetes objects of a campaign (pure): names, the payload ConfigMap, the deny-all
NetworkPolicy and one indexed Job per probe job, and ``--dry-run``'s YAML files. How they are
applied and followed is :mod:`auditor.campaign.kubernetes`; the design is in its docstring."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from auditor.campaign.spec import Campaign, Job
from auditor.errors import EnvironmentProblem, InputError, ReferenceError_
from auditor.probe.runner import (
    PAYLOAD_MOUNT,
    PAYLOAD_SCRIPT,
    ProbeConfig,
    apply_variation,
    container_environment,
    parse_variations,
    payload_source,
)
from auditor.reference import parse_reference

MANAGED_BY = "app.kubernetes.io/managed-by"
CAMPAIGN_LABEL = "auditor.campaign"
JOB_LABEL = "auditor.job"
CONTAINER = "probe"
USER = 65534
MEMORY = "4Gi"
TMP_SIZE = "1Gi"
GPU_RESOURCE = "nvidia.com/gpu"
PULL_SECONDS = 900            # added to a pod's deadline: it starts before the image is pulled
TTL_SECONDS = 86400           # a finished Job left behind (kept, or the auditor died) goes after a day
NAME_LIMIT = 52               # a Job's pods are NAME-INDEX-xxxxx; their hostnames NAME-INDEX (<= 63)
CONFIGMAP_LIMIT = 1024 * 1024  # what the API server stores of one object (etcd), roughly

#: picks this pod's run (JOB_COMPLETION_INDEX) and becomes the payload; Python 2.7 syntax so
#: that run.py's own version guard is what an old image's Python prints
LAUNCHER = f"""\
import json, os, sys
plan = json.loads(sys.argv[1])
run = plan["configs"][plan["runs"][int(os.environ["JOB_COMPLETION_INDEX"])]]
env = dict(os.environ)
env.update(run["env"])
python = sys.executable or "python3"
os.execve(python, [python, "{PAYLOAD_SCRIPT}", json.dumps(run["config"])], env)
"""


# -- names -------------------------------------------------------------------------------------

def _digest8(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def dns_label(text: str, limit: int = 63) -> str:
    """``text`` as a DNS-1123 label (lowercase alphanumerics and '-', at most ``limit``); when it
    had to change, a hash of the original is appended so distinct texts stay distinct."""
    slug = re.sub(r"[^a-z0-9-]", "-", text.lower()).strip("-")
    if slug == text and len(slug) <= limit:
        return slug
    head = slug[: limit - 9].rstrip("-")
    return f"{head}-{_digest8(text)}" if head else f"x-{_digest8(text)}"


def label_value(text: str) -> str:
    """``text`` as a label value (at most 63 of ``[A-Za-z0-9._-]``, alphanumeric at both ends),
    with a hash of the original when it had to change."""
    if re.fullmatch(r"(?:[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?", text):
        return text
    slug = re.sub(r"[^A-Za-z0-9._-]", "-", text)[:54]
    slug = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", slug)
    return f"{slug}-{_digest8(text)}" if slug else _digest8(text)


def configmap_name(campaign_name: str) -> str:
    return dns_label(f"auditor-{campaign_name}-payload")


def network_policy_name(campaign_name: str) -> str:
    return dns_label(f"auditor-{campaign_name}-no-network")


def job_name(campaign_name: str, job_id: str) -> str:
    return dns_label(f"auditor-{campaign_name}-{job_id}", NAME_LIMIT)


def object_labels(campaign_name: str, job_id: str | None = None) -> dict[str, str]:
    labels = {MANAGED_BY: "auditor", CAMPAIGN_LABEL: label_value(campaign_name)}
    if job_id is not None:
        labels[JOB_LABEL] = label_value(job_id)
    return labels


def label_selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in labels.items())


# -- what runs ---------------------------------------------------------------------------------

def kubernetes_image(reference: str) -> tuple[str, str]:
    """The image a pod runs for a campaign's ``reference`` (``NAME@sha256:…``, also behind
    ``registry:``, ``docker://``, ``docker-daemon:`` or ``podman:``) and its digest. The kubelet
    pulls it from its registry; a reference without a digest, an archive or a layout is an
    :class:`InputError`."""
    try:
        ref = parse_reference(reference)
    except ReferenceError_ as err:
        raise InputError(f"{reference}: {err}") from None
    if ref.transport not in ("registry", "engine") or not ref.repository:
        raise InputError(f"{reference}: the kubernetes backend runs images from a registry; "
                         "give REGISTRY/NAME@sha256:…")
    if not ref.digest:
        raise InputError(f"{reference}: the kubernetes backend runs the image by digest; "
                         "pin it (NAME@sha256:…)")
    return f"{ref.registry}/{ref.repository}@{ref.digest}", ref.digest


def payload_files() -> dict[str, str]:
    """The payload's ``*.py`` files (name -> text), as the ConfigMap holds them."""
    root = payload_source()
    files = {entry.name: entry.read_text(encoding="utf-8") for entry in root.iterdir()
             if entry.is_file() and entry.name.endswith(".py")}
    if "run.py" not in files:
        raise EnvironmentProblem(f"the probe payload is missing: no run.py in {root} "
                                 "(a broken auditor install)")
    return dict(sorted(files.items()))


def plan_runs(probe_settings: Mapping[str, Any], gpu: bool) -> list[tuple[dict[str, str], ProbeConfig]]:
    """(variation, configuration) of each run, in completion-index order: as ``auditor probe``
    with the campaign's ``probe`` settings (repeats, vary, seed, models) would run them."""
    repeats = int(probe_settings.get("repeats", 3))
    if repeats < 1:
        raise InputError(f"repeats must be at least 1, not {repeats}")
    models = [str(m).strip() for m in probe_settings.get("models") or [] if str(m).strip()]
    base = ProbeConfig(seed=int(probe_settings.get("seed", 0)), device="gpu" if gpu else "cpu",
                       models=tuple(models) if models else None)
    runs = []
    for variation in parse_variations(list(probe_settings.get("vary") or [])) or [{}]:
        config = apply_variation(base, variation)
        runs += [(dict(variation), config) for _ in range(repeats)]
    return runs


def probe_timeout(probe_settings: Mapping[str, Any]) -> int:
    timeout = float(probe_settings.get("timeout", 600))
    if not timeout > 0:
        raise InputError(f"the probe timeout must be positive, not {timeout:g}")
    return math.ceil(timeout)


# -- manifests (pure) ------------------------------------------------------------------------

def campaign_manifests(campaign_name: str, namespace: str,
                       payload: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """What every job of a campaign shares: the NetworkPolicy denying its pods all traffic, and
    the payload's ConfigMap (``payload``: name -> text, default :func:`payload_files`)."""
    files = dict(sorted((payload if payload is not None else payload_files()).items()))
    size = sum(len(k.encode()) + len(v.encode()) for k, v in files.items())
    if size > CONFIGMAP_LIMIT - 64 * 1024:
        raise EnvironmentProblem(f"the probe payload is {size} bytes: too large for a ConfigMap (1 MiB)")
    labels = object_labels(campaign_name)
    policy = {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": network_policy_name(campaign_name), "namespace": namespace, "labels": labels},
        "spec": {"podSelector": {"matchLabels": dict(labels)}, "policyTypes": ["Ingress", "Egress"],
                 "ingress": [], "egress": []},
    }
    configmap = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": configmap_name(campaign_name), "namespace": namespace, "labels": dict(labels)},
        "immutable": True,
        "data": files,
    }
    return [policy, configmap]


def manifests(campaign_name: str, job: Job, probe_settings: Mapping[str, Any], namespace: str,
              runs: Sequence[tuple[Mapping[str, str], ProbeConfig]],
              parallelism: int | None = None) -> list[dict[str, Any]]:
    """The Kubernetes objects of one probe job: its Job (one pod per run of ``runs``, see
    :func:`plan_runs`; ``parallelism`` pods at once, default 1, as the runner runs them). The
    objects it shares with the campaign's other jobs come from :func:`campaign_manifests`."""
    if job.kind != "probe":
        raise InputError(f"job {job.job_id}: the kubernetes backend runs probe jobs, not {job.kind} jobs")
    if not runs:
        raise InputError(f"job {job.job_id}: no run to make")
    image, _digest = kubernetes_image(job.image[1])
    timeout = probe_timeout(probe_settings)
    count = len(runs)
    at_once = max(1, min(int(parallelism or 1), count))
    labels = object_labels(campaign_name, job.job_id)
    configs: list[dict[str, Any]] = []
    indices = []
    for _variation, config in runs:
        entry = {"config": config.payload_config(), "env": container_environment(config)}
        if entry not in configs:
            configs.append(entry)
        indices.append(configs.index(entry))
    plan = json.dumps({"configs": configs, "runs": indices}, sort_keys=True, separators=(",", ":"))
    limits = {"memory": MEMORY}
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "activeDeadlineSeconds": timeout + PULL_SECONDS,
        "securityContext": {"runAsNonRoot": True, "runAsUser": USER, "runAsGroup": USER,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": CONTAINER,
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["python3", "-c", LAUNCHER, plan],
            "workingDir": "/tmp",
            "env": [{"name": "HOME", "value": "/tmp"}],
            "resources": {"limits": limits},
            "securityContext": {"runAsNonRoot": True, "runAsUser": USER, "runAsGroup": USER,
                                "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [{"name": "payload", "mountPath": PAYLOAD_MOUNT, "readOnly": True},
                             {"name": "tmp", "mountPath": "/tmp"}],
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }],
        "volumes": [{"name": "payload",
                     "configMap": {"name": configmap_name(campaign_name), "defaultMode": 0o444}},
                    {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": TMP_SIZE}}],
    }
    if job.target.node_selector:
        pod["nodeSelector"] = dict(sorted(job.target.node_selector.items()))
    if job.target.gpu:
        limits[GPU_RESOURCE] = "1"
        pod["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    waves = math.ceil(count / at_once)
    return [{
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": job_name(campaign_name, job.job_id), "namespace": namespace, "labels": labels,
                     "annotations": {CAMPAIGN_LABEL: campaign_name, JOB_LABEL: job.job_id,
                                     "auditor.target": job.target.name, "auditor.image": job.image[1]}},
        "spec": {
            "completions": count,
            "parallelism": at_once,
            "completionMode": "Indexed",
            "backoffLimitPerIndex": 0,
            "backoffLimit": count,
            "activeDeadlineSeconds": waves * (timeout + PULL_SECONDS),
            "ttlSecondsAfterFinished": TTL_SECONDS,
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
        },
    }]


def campaign_objects(campaign: Campaign, jobs: Sequence[Job], namespace: str, parallelism: int | None,
                      ) -> tuple[list[dict[str, Any]], list[tuple[Job, dict[str, Any],
                                                              list[tuple[dict[str, str], ProbeConfig]]]]]:
    shared = campaign_manifests(campaign.name, namespace)
    per_job = []
    for job in jobs:
        runs = plan_runs(campaign.probe, job.target.gpu)
        (manifest,) = manifests(campaign.name, job, campaign.probe, namespace, runs, parallelism)
        per_job.append((job, manifest, runs))
    names = [m["metadata"]["name"] for _j, m, _r in per_job]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"two jobs get the same Kubernetes name: {', '.join(twice)}")
    return shared, per_job


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def write_manifests(results: Path, campaign: Campaign, jobs: Sequence[Job], namespace: str,
                    parallelism: int | None = None) -> list[Path]:
    """``--dry-run``: the manifests as YAML under ``RESULTS/kubernetes/`` (``campaign.yaml``, then
    one ``<job id>.yaml`` per job), for ``kubectl apply -f``; returns the files written."""
    shared, per_job = campaign_objects(campaign, jobs, namespace, parallelism)
    folder = results / "kubernetes"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, documents in [("campaign", shared), *((job.job_id, [m]) for job, m, _r in per_job)]:
        path = folder / f"{name}.yaml"
        path.write_text(yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, width=110,
                                      allow_unicode=True), encoding="utf-8")
        written.append(path)
    return written

