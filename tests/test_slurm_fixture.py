"""The ``slurm`` fixture: a real one-node cluster runs array jobs and reports their exit codes."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from fixtures.slurm_cluster import SlurmCluster, TaskState, job_states, parse_job_records

FOLLOW_TIMEOUT = 60.0


def _slurm(cluster: SlurmCluster, *argv: str, cwd: Path | None = None) -> str:
    done = subprocess.run(list(argv), env={**os.environ, **cluster.env}, cwd=cwd,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0, f"{argv} failed: {done.stderr}\n{cluster.logs()}"
    return done.stdout


def _submit(cluster: SlurmCluster, tmp_path: Path, *options: str, wrap: str) -> str:
    """``sbatch --parsable``; returns the job id."""
    out = _slurm(cluster, "sbatch", "--parsable", *options, "--wrap", wrap,
                 "-o", str(tmp_path / "out-%A_%a.txt"), cwd=tmp_path)
    return out.strip().split(";")[0]


def _follow(cluster: SlurmCluster, job_id: str) -> dict[int | None, TaskState]:
    """Poll ``squeue -h -j ID`` until the job has left the queue, then ``scontrol show job``."""
    deadline = time.monotonic() + FOLLOW_TIMEOUT
    while _slurm(cluster, "squeue", "-h", "-j", job_id).strip():
        assert time.monotonic() < deadline, (
            f"job {job_id} still queued: {job_states(cluster, job_id)}\n{cluster.logs()}")
        time.sleep(0.5)
    states = job_states(cluster, job_id)
    assert states and all(task.finished for task in states.values()), states
    return states


@pytest.mark.slurm
def test_array_job_runs_every_task(slurm: SlurmCluster, tmp_path: Path) -> None:
    job_id = _submit(slurm, tmp_path, "--array=0-2",
                     wrap='echo "task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID on $(hostname -s)"')

    states = _follow(slurm, job_id)

    assert states == {task: ("COMPLETED", "0:0") for task in range(3)}
    for task in range(3):
        out = (tmp_path / f"out-{job_id}_{task}.txt").read_text()
        assert out == f"task {task} of {job_id} on {slurm.node}\n"
    shown = _slurm(slurm, "scontrol", "show", "job", job_id)
    assert shown.count("JobState=COMPLETED") == 3 and "ExitCode=0:0" in shown


@pytest.mark.slurm
def test_exit_codes_are_visible_without_accounting(slurm: SlurmCluster, tmp_path: Path) -> None:
    single = _submit(slurm, tmp_path, wrap="exit 3")
    array = _submit(slurm, tmp_path, "--array=0-2", wrap="exit $SLURM_ARRAY_TASK_ID")
    killed = _submit(slurm, tmp_path, wrap="kill -9 $$")

    assert _follow(slurm, single) == {None: ("FAILED", "3:0")}
    shown = _slurm(slurm, "scontrol", "show", "job", single)
    assert "JobState=FAILED Reason=NonZeroExitCode" in shown and "ExitCode=3:0" in shown

    states = _follow(slurm, array)
    assert states == {0: ("COMPLETED", "0:0"), 1: ("FAILED", "1:0"), 2: ("FAILED", "2:0")}
    assert [states[task].returncode for task in range(3)] == [0, 1, 2]

    (task,) = _follow(slurm, killed).values()
    assert task == ("FAILED", "0:9") and task.returncode == -9

    # Finished jobs stay in `scontrol show job` (MinJobAge) but leave plain `squeue`; sacct is off.
    assert _slurm(slurm, "squeue", "-h", "-t", "all", "-j", array).count("\n") == 3
    sacct = subprocess.run(["sacct", "-j", array], env={**os.environ, **slurm.env},
                           capture_output=True, text=True, timeout=30, check=False)
    assert sacct.returncode != 0 and "accounting storage is disabled" in sacct.stderr


def test_parse_job_records_expands_pending_tasks() -> None:
    text = ("JobId=7 ArrayJobId=7 ArrayTaskId=4-8:2%1 JobName=wrap JobState=PENDING Reason=Resources "
            "ExitCode=0:0 RunTime=00:00:00\n"
            "JobId=9 ArrayJobId=7 ArrayTaskId=1 JobName=a b JobState=RUNNING Reason=None ExitCode=0:0\n"
            "JobId=8 ArrayJobId=7 ArrayTaskId=0 JobName=wrap JobState=CANCELLED Reason=None ExitCode=0:15\n")

    states = parse_job_records(text)

    assert states == {4: ("PENDING", "0:0"), 6: ("PENDING", "0:0"), 8: ("PENDING", "0:0"),
                      1: ("RUNNING", "0:0"), 0: ("CANCELLED", "0:15")}
    assert states[0].returncode == -15 and states[0].finished and not states[1].finished
    assert parse_job_records("JobId=3 JobName=x JobState=COMPLETED ExitCode=0:0\n") == {
        None: ("COMPLETED", "0:0")}
