"""The Slurm backend on a real one-node cluster (slurm-wlm + munge, started by the tests): a
fleet audit of five fixture images as one sbatch array, followed with squeue, every job's
result written by the job itself on the node; a task that dies without a result is recorded."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from auditor.campaign.backends import run_slurm
from auditor.campaign.jobs import prepare_results
from auditor.campaign.spec import audit_jobs
from auditor.errors import EnvironmentProblem
from tests.campaign.test_spec_jobs import small_images

pytestmark = pytest.mark.slurm
AUDITOR = [sys.executable, "-m", "auditor"]


def test_a_fleet_audit_of_five_images_runs_as_a_slurm_array(slurm: Any, tmp_path: Path) -> None:
    results = tmp_path / "results"
    jobs = audit_jobs(small_images(tmp_path, 5))
    prepare_results(results, {"name": "fleet"}, jobs, force=False)
    seen: list[str] = []
    (array,) = run_slurm(results, jobs, AUDITOR, "fleet", {"partition": slurm.partition},
                         progress=seen.append, env=slurm.env, timeout=300)
    assert sorted(seen) == sorted(j.job_id for j in jobs)
    for i, job in enumerate(jobs):
        record = json.loads((results / "jobs" / job.job_id / "job.json").read_text())
        assert record["error"] is None and record["exit_code"] == 0, record
        assert record["host"] == slurm.node or record["host"].split(".")[0] == slurm.node
        report = json.loads((results / "jobs" / job.job_id / "report.json").read_text())
        assert report["reference"]["canonical"].endswith(f":img{i}")
    assert (results / "slurm" / f"fleet-{array}_0.out").exists()


def test_a_task_that_dies_without_a_result_is_recorded(slurm: Any, tmp_path: Path) -> None:
    results = tmp_path / "results"
    jobs = audit_jobs(small_images(tmp_path, 2))
    prepare_results(results, {"name": "fleet"}, jobs, force=False)
    # a worker command that cannot run auditor: the task fails before any job.json is written
    killer = ["/bin/sh", "-c", 'echo "worker lost: $0" >&2; exit 7']
    run_slurm(results, jobs, killer, "fleet", {}, env=slurm.env, timeout=300)
    for job in jobs:
        record = json.loads((results / "jobs" / job.job_id / "job.json").read_text())
        assert record["exit_code"] is None
        assert "ended without a result: worker lost:" in record["error"], record


def test_no_reachable_scheduler_is_an_environment_problem(tmp_path: Path) -> None:
    """A cluster configuration whose controller does not answer (a closed port on loopback): one
    line, exit-3 class, naming the configuration tried. (A missing slurm.conf makes Slurm look
    for a configuration server for a minute before it gives up, so the test uses this.)"""
    from fixtures.registry_server import free_port

    conf = tmp_path / "slurm.conf"
    conf.write_text(f"ClusterName=gone\nSlurmctldHost=gone(127.0.0.1)\nSlurmctldPort={free_port()}\n"
                    "MessageTimeout=2\nNodeName=gone CPUs=1\nPartitionName=p Nodes=gone\n")
    results = tmp_path / "results"
    jobs = audit_jobs(small_images(tmp_path, 1))
    prepare_results(results, {"name": "fleet"}, jobs, force=False)
    env = {"SLURM_CONF": str(conf), "PATH": os.environ["PATH"]}
    with pytest.raises(EnvironmentProblem) as raised:
        run_slurm(results, jobs, AUDITOR, "fleet", {}, env=env, timeout=30)
    message = str(raised.value)
    assert message.startswith("sbatch failed") and "Unable to contact slurm controller" in message
    assert str(conf) in message and "\n" not in message


@pytest.mark.slow
def test_auditor_campaign_audit_of_five_fixture_images_through_slurm(slurm: Any, tmp_path: Path) -> None:
    """`auditor campaign audit --images FILE --backend slurm`: five fixture images (Debian with
    python3, numpy, torch; the TF 2.8 GPU-style image with cuDNN 8.1 and the same with 8.2.1),
    audited as one sbatch array; the report says which image carries which finding."""
    import subprocess

    from fixtures.debian import debian_layout, debian_python_layout
    from fixtures.tf_image import tf_gpu_image
    from tests.probe.test_payload import NUMPY_PACKAGES, TORCH_PACKAGES

    layouts = [("python3", *debian_python_layout()), ("numpy", *debian_layout(NUMPY_PACKAGES, "numpy")),
               ("torch", *debian_layout(TORCH_PACKAGES, "torch-openblas"))]
    lines = [f"{name} oci:{layout}:{tag}" for name, layout, tag in layouts]
    lines += [f"tf-cudnn81 {tf_gpu_image(tmp_path / 'tf81')}",
              f"tf-cudnn821 {tf_gpu_image(tmp_path / 'tf821', cudnn='8.2.1.32')}"]
    (tmp_path / "images.txt").write_text("# the fleet\n" + "\n".join(lines) + "\n")
    results = tmp_path / "results"
    env = {**os.environ, **slurm.env, "AUDITOR_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "auditor", "campaign", "audit", "--images",
                           str(tmp_path / "images.txt"), "-o", str(results), "--backend", "slurm",
                           "--partition", slurm.partition], capture_output=True, text=True, env=env,
                          timeout=1200, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "campaign: 5 jobs (5 ok, 0 partial, 0 failed)" in proc.stderr
    fleet = json.loads((results / "report.json").read_text())["fleet"]
    assert fleet["counts"] == {"images": 5, "audited": 5, "failed": 0}
    findings = {f["id"]: f["images"] for f in fleet["findings"]}
    assert findings["cudnn-8.1-birnn-nondeterminism"] == ["tf-cudnn81"]  # the seed bug, in one image
    assert "torch" in findings["openblas-thread-count-unpinned"]
    stacks = {i["image"]: {c["component"]: c["version"] for c in i["numeric_stack"]} for i in fleet["images"]}
    assert stacks["tf-cudnn81"]["cudnn"].startswith("8.1.0")
    assert stacks["tf-cudnn821"]["cudnn"].startswith("8.2.1")
    assert "cudnn-8.1-birnn-nondeterminism" in (results / "report.md").read_text()


def test_a_target_no_node_can_serve_fails_its_cells_and_the_campaign_goes_on(slurm: Any,
                                                                              tmp_path: Path) -> None:
    """A GPU target on a cluster without GPUs: sbatch refuses that array; its jobs are recorded
    with Slurm's reason, and the other target's jobs run."""
    from auditor.campaign.spec import Target

    results = tmp_path / "results"
    images = small_images(tmp_path, 1)
    gpu_target = Target("a100", gpu=True, gres="gpu:a100:1")
    jobs = [*audit_jobs(images, Target("cpu")), *audit_jobs(images, gpu_target)]
    prepare_results(results, {"name": "mixed"}, jobs, force=False)
    run_slurm(results, jobs, AUDITOR, "mixed", {}, env=slurm.env, timeout=300)
    cpu, gpu = (json.loads((results / "jobs" / job.job_id / "job.json").read_text()) for job in jobs)
    assert cpu["error"] is None and cpu["exit_code"] == 0, cpu
    assert gpu["error"] == "target a100: Invalid generic resource (gres) specification", gpu
