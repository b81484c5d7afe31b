"""The results directory of a campaign and the one thing every backend runs on a worker:
``auditor campaign job RESULTS JOB_ID``, which runs the job's auditor command and records what
happened in ``jobs/<id>/job.json`` (written last, atomically: its presence means "done")."""

from __future__ import annotations

import datetime
import json
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from auditor.campaign.spec import JOB_SCHEMA, Job
from auditor.errors import InputError
from auditor.report.outputs import open_output

STDERR_TAIL = 4000


def default_auditor() -> list[str]:
    """How a worker runs auditor: this interpreter's ``-m auditor`` (a shared file system is
    assumed; campaign files may give another command)."""
    return [sys.executable, "-m", "auditor"]


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_json(path: Path, data: Any) -> None:
    """Atomically (temporary file + rename), so a reader never sees half a file."""
    with open_output(path) as out:
        out.write(json.dumps(data, indent=1) + "\n")


def prepare_results(results: Path, campaign: dict[str, Any], jobs: Sequence[Job], force: bool) -> None:
    """``campaign.json`` and one ``jobs/<id>/spec.json`` per job; an existing campaign's
    results are replaced only with ``force``."""
    if (results / "jobs").exists() and any((results / "jobs").iterdir()) and not force:
        raise InputError(f"{results}: holds a campaign's results already; give --force to run again "
                         "(or `auditor campaign report` to aggregate them)")
    (results / "jobs").mkdir(parents=True, exist_ok=True)
    write_json(results / "campaign.json", campaign)
    for job in jobs:
        folder = results / "jobs" / job.job_id
        folder.mkdir(exist_ok=True)
        for stale in ("job.json", "report.json", "stderr.txt"):
            (folder / stale).unlink(missing_ok=True)
        write_json(folder / "spec.json", job.spec())


def done(results: Path, job_id: str) -> bool:
    return (results / "jobs" / job_id / "job.json").is_file()


def run_job(results: Path, job_id: str, auditor: Sequence[str] | None = None,
            timeout: float | None = None) -> dict[str, Any]:
    """Run one job here and record it; returns the job.json document."""
    folder = results / "jobs" / job_id
    try:
        spec = json.loads((folder / "spec.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"{folder}: no job spec ({err})") from None
    if spec.get("schema") != JOB_SCHEMA:
        raise InputError(f"{folder / 'spec.json'}: not a {JOB_SCHEMA} spec")
    command = [*(auditor or default_auditor()), *spec["args"], "-o", f"json={folder / 'report.json'}"]
    started, error, code = now(), None, None
    try:
        with open(folder / "stderr.txt", "wb") as stderr:
            done_process = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=stderr, timeout=timeout, check=False)
        code = done_process.returncode
    except subprocess.TimeoutExpired:
        error = f"timed out after {timeout:g} s"
    except OSError as err:
        error = f"cannot run {command[0]}: {err}"
    if error is None and code not in (0, 1):  # 1: a gate (findings, divergence); the report exists
        error = last_line(folder / "stderr.txt") or f"exit code {code}"
    if error is None and not (folder / "report.json").is_file():
        error = last_line(folder / "stderr.txt") or "no report was written"
    record = {"schema": JOB_SCHEMA, "job_id": spec["job_id"], "kind": spec["kind"], "target": spec["target"],
              "image": spec["image"], "host": socket.gethostname(), "exit_code": code, "error": error,
              "started": started, "finished": now(), "command": command}
    write_json(folder / "job.json", record)
    return record


def record_lost(results: Path, job_id: str, error: str) -> None:
    """A job whose worker ended without recording it (killed, never started): said, with why."""
    spec = json.loads((results / "jobs" / job_id / "spec.json").read_text(encoding="utf-8"))
    write_json(results / "jobs" / job_id / "job.json", {
        "schema": JOB_SCHEMA, "job_id": job_id, "kind": spec["kind"], "target": spec["target"],
        "image": spec["image"], "host": None, "exit_code": None, "error": error, "started": None,
        "finished": now(), "command": []})


def last_line(path: Path) -> str | None:
    """The last non-empty line of a (job's stderr) file, read from its tail; None if none."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - STDERR_TAIL))
            text = f.read().decode("utf-8", "replace")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
    except OSError:
        return None
    return lines[-1] if lines else None
