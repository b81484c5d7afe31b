"""Where a campaign's jobs run. Each backend starts ``auditor campaign job RESULTS ID`` for
every job and reports progress as job.json files appear:

- ``local``: processes on this machine, a few at a time;
- ``slurm``: one ``sbatch`` array per target (its ``--constraint``/``--gres``/partition), results
  in the shared results directory, followed by polling ``squeue``; a task that leaves the
  queue without a result is recorded as failed with the tail of its Slurm output file.
"""

from __future__ import annotations

import concurrent.futures
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from auditor.campaign.jobs import done, record_lost
from auditor.campaign.spec import Job, Target
from auditor.errors import EnvironmentProblem

Progress = Callable[[str], None]  # called with a job id once it is done
POLL_SECONDS = 2.0


def run_local(results: Path, jobs: Sequence[Job], auditor: Sequence[str], parallel: int = 1,
              progress: Progress | None = None, env: dict[str, str] | None = None) -> None:
    def one(job: Job) -> None:
        subprocess.run([*auditor, "campaign", "job", str(results), job.job_id], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                       env={**os.environ, **(env or {})})
        if not done(results, job.job_id):
            record_lost(results, job.job_id, "the job's process ended without recording a result")
        if progress:
            progress(job.job_id)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        for future in [pool.submit(one, job) for job in jobs]:
            future.result()


def slurm_script(results: Path, target: Target, job_ids: Sequence[str], auditor: Sequence[str],
                 campaign: str, backend: dict[str, Any]) -> str:
    """The sbatch script of one target's array: task i runs the i-th job of ``<target>.jobs``."""
    folder = results / "slurm"
    lines = ["#!/bin/sh", f"#SBATCH --job-name=auditor-{campaign}-{target.name}",
             f"#SBATCH --array=0-{len(job_ids) - 1}",
             f"#SBATCH --output={folder / (target.name + '-%A_%a.out')}"]
    partition = target.partition or backend.get("partition")
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    if target.constraint:
        lines.append(f"#SBATCH --constraint={target.constraint}")
    if target.gres:
        lines.append(f"#SBATCH --gres={target.gres}")
    if backend.get("time"):
        lines.append(f"#SBATCH --time={backend['time']}")
    command = " ".join(shlex.quote(word) for word in [*auditor, "campaign", "job", str(results)])
    listing = shlex.quote(str(folder / (target.name + ".jobs")))
    lines += ["set -eu", f'JOB=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {listing})', f'exec {command} "$JOB"']
    return "\n".join(lines) + "\n"


def _slurm(command: list[str], env: dict[str, str], gone_ok: bool = False) -> str:
    tool = shutil.which(command[0])
    if tool is None:
        raise EnvironmentProblem(f"{command[0]} not found: the slurm backend needs Slurm's client tools "
                                 "(sbatch, squeue, scancel) on this machine")
    try:
        proc = subprocess.run([tool, *command[1:]], capture_output=True, text=True, env=env, timeout=60,
                              check=False)
    except subprocess.TimeoutExpired:
        raise EnvironmentProblem(f"{' '.join(command[:2])} did not answer in 60 s") from None
    if proc.returncode != 0 and gone_ok and "Invalid job id" in proc.stderr:
        return ""  # every job asked about has left the controller's memory
    if proc.returncode != 0:
        said = " ".join(proc.stderr.split()) or f"exit code {proc.returncode}"
        raise EnvironmentProblem(f"{command[0]} failed ({said}): is slurmctld reachable "
                                 f"(SLURM_CONF={env.get('SLURM_CONF', 'default')})?")
    return proc.stdout


def _submission_error(problem: EnvironmentProblem) -> str:
    """What sbatch said, without the reachability hint (the scheduler answered)."""
    text = str(problem).rsplit("): is slurmctld reachable", 1)[0]
    text = text.removeprefix("sbatch failed (")
    return text.replace("sbatch: error: ", "")


def run_slurm(results: Path, jobs: Sequence[Job], auditor: Sequence[str], campaign: str,
              backend: dict[str, Any], progress: Progress | None = None,
              env: dict[str, str] | None = None, timeout: float | None = None) -> list[str]:
    """Submit one array per target and follow it; returns the Slurm job ids."""
    environment = {**os.environ, **(env or {})}
    folder = results / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    arrays: list[tuple[str, Target, list[str]]] = []
    by_target: dict[str, tuple[Target, list[str]]] = {}
    for job in jobs:
        by_target.setdefault(job.target.name, (job.target, []))[1].append(job.job_id)
    try:
        for target, job_ids in by_target.values():
            (folder / f"{target.name}.jobs").write_text("\n".join(job_ids) + "\n")
            script = folder / f"{target.name}.sh"
            script.write_text(slurm_script(results, target, job_ids, auditor, campaign, backend))
            try:
                slurm_id = _slurm(["sbatch", "--parsable", str(script)], environment).strip().split(";")[0]
            except EnvironmentProblem as problem:
                try:  # does the scheduler answer at all? if not, nothing of the campaign can run
                    _slurm(["squeue", "-h", "-o", "%i"], environment)
                except EnvironmentProblem:
                    raise problem from None
                for job_id in job_ids:  # the request itself (a GPU, a constraint no node has)
                    record_lost(results, job_id, f"target {target.name}: {_submission_error(problem)}")
                    if progress:
                        progress(job_id)
                continue
            arrays.append((slurm_id, target, job_ids))
        _follow(results, arrays, environment, progress, timeout)
    except BaseException:
        for slurm_id, _target, _ids in arrays:  # do not leave a campaign running behind us
            subprocess.run(["scancel", slurm_id], env=environment, capture_output=True, check=False)
        raise
    return [slurm_id for slurm_id, _t, _i in arrays]


def _follow(results: Path, arrays: list[tuple[str, Target, list[str]]], env: dict[str, str],
            progress: Progress | None, timeout: float | None) -> None:
    pending = {job_id: (slurm_id, target, i) for slurm_id, target, ids in arrays
               for i, job_id in enumerate(ids)}
    started = time.monotonic()
    while pending:
        for job_id in [j for j in pending if done(results, j)]:
            pending.pop(job_id)
            if progress:
                progress(job_id)
        if not pending:
            break
        queued = set(_slurm(["squeue", "-h", "-r", "-o", "%i", "-j",
                             ",".join(sorted({s for s, _t, _i in pending.values()}))], env,
                            gone_ok=True).split())
        for job_id, (slurm_id, target, index) in list(pending.items()):
            if f"{slurm_id}_{index}" not in queued and slurm_id not in queued and not done(results, job_id):
                time.sleep(0.5)  # the task may have written its result just now
                if done(results, job_id):
                    continue
                out = results / "slurm" / f"{target.name}-{slurm_id}_{index}.out"
                tail = out.read_text(errors="replace").strip().splitlines()[-1:] if out.is_file() else []
                record_lost(results, job_id, f"Slurm task {slurm_id}_{index} ended without a result"
                            + (f": {tail[0]}" if tail else f" (no output in {out})"))
        if timeout is not None and time.monotonic() - started > timeout:
            raise EnvironmentProblem(f"the campaign's Slurm jobs did not finish in {timeout:g} s")
        time.sleep(POLL_SECONDS)
