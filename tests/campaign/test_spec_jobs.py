"""Campaign files, the jobs they expand to, the job runner and the local backend (real auditor
runs on small OCI layouts), and the Slurm script a target gets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from auditor.campaign.backends import run_local, slurm_script
from auditor.campaign.jobs import prepare_results, run_job
from auditor.campaign.spec import Target, audit_jobs, parse_campaign, probe_jobs
from auditor.errors import InputError
from auditor.testing import LayerBuilder, build_oci_layout

CAMPAIGN = """\
campaign: 1
name: seed-study
images:
  - {name: torch, reference: "docker-daemon:localhost/torch@sha256:%s"}
  - {name: numpy, reference: "docker-daemon:localhost/numpy:t"}
probe: {repeats: 3, vary: ["threads=1,2"], models: [torch.bilstm, numpy.mlp]}
targets:
  - {name: cpu-a}
  - {name: a100, gpu: true, gres: "gpu:a100:1", constraint: ampere}
backend: {kind: slurm, partition: debug, time: "00:30:00"}
""" % ("a" * 64)


def test_a_campaign_expands_to_one_probe_job_per_target_and_image() -> None:
    campaign = parse_campaign(CAMPAIGN, "c.yaml")
    jobs = probe_jobs(campaign)
    assert [j.job_id for j in jobs] == ["cpu-a--torch", "cpu-a--numpy", "a100--torch", "a100--numpy"]
    assert jobs[0].args == ("probe", f"docker-daemon:localhost/torch@sha256:{'a' * 64}", "--repeats", "3",
                            "--seed", "0", "--timeout", "600", "--vary", "threads=1,2",
                            "--models", "torch.bilstm,numpy.mlp", "--no-crosscheck")
    assert jobs[2].args[-1] == "--gpu" and jobs[0].args[-1] != "--gpu"
    assert jobs[2].spec()["target"] == "a100"


@pytest.mark.parametrize(("text", "says"), [
    ("campaign: 1\nname: x\nimages: []\ntargets: [{name: a}]\n", "c.yaml:3: images: [] should be non-empty"),
    ("campaign: 2\nname: x\nimages: [{name: a, reference: r}]\ntargets: [{name: a}]\n", "c.yaml:1: campaign"),
    ("campaign: 1\nname: x\nimages: [{name: a, reference: r}, {name: a, reference: s}]\n"
     "targets: [{name: t}]\n", "images named twice: a"),
    ("campaign: 1\nname: x\nimages: [{name: a, reference: r}]\ntargets: [{name: t, gres: 'a b'}]\n",
     "c.yaml:4: targets/0/gres"),
    ("campaign: 1\nname: x\nname: y\n", "c.yaml:3: duplicate key 'name'"),
])
def test_a_bad_campaign_file_is_one_line_with_its_line(text: str, says: str) -> None:
    with pytest.raises(InputError) as raised:
        parse_campaign(text, "c.yaml")
    assert says in str(raised.value) and "\n" not in str(raised.value)


def test_slurm_script_of_a_target(tmp_path: Path) -> None:
    target = Target("a100", gpu=True, constraint="ampere", gres="gpu:a100:1")
    script = slurm_script(tmp_path, target, ["a100--torch", "a100--numpy"],
                          ["/venv/bin/python", "-m", "auditor"], "seed-study",
                          {"partition": "debug", "time": "00:30:00"})
    assert script.splitlines()[:8] == [
        "#!/bin/sh", "#SBATCH --job-name=auditor-seed-study-a100", "#SBATCH --array=0-1",
        f"#SBATCH --output={tmp_path}/slurm/a100-%A_%a.out", "#SBATCH --partition=debug",
        "#SBATCH --constraint=ampere", "#SBATCH --gres=gpu:a100:1", "#SBATCH --time=00:30:00"]
    assert script.rstrip().endswith(f'exec /venv/bin/python -m auditor campaign job {tmp_path} "$JOB"')


def small_images(tmp_path: Path, count: int) -> list[tuple[str, str]]:
    images = []
    for i in range(count):
        layer = LayerBuilder().file("etc/os-release", f"ID=debian\nVERSION_ID=\"12\"\n# {i}\n")
        if i % 2:
            layer = layer.file("usr/lib/x86_64-linux-gnu/libopenblas.so.0", b"\x7fELF" + bytes(60))
        build_oci_layout(tmp_path / "layout", [layer], tag=f"img{i}",
                         config={"config": {"Env": [f"OMP_NUM_THREADS={i + 1}"]}})
        images.append((f"img{i}", f"oci:{tmp_path / 'layout'}:img{i}"))
    return images


def test_a_job_runs_auditor_and_records_what_happened(tmp_path: Path) -> None:
    results = tmp_path / "results"
    jobs = audit_jobs([*small_images(tmp_path, 1), ("missing", f"oci:{tmp_path}/nowhere:t")])
    prepare_results(results, {"name": "t"}, jobs, force=False)
    auditor = [sys.executable, "-m", "auditor"]
    good = run_job(results, jobs[0].job_id, auditor)
    assert good["error"] is None and good["exit_code"] == 0 and good["kind"] == "audit"
    report = json.loads((results / "jobs" / jobs[0].job_id / "report.json").read_text())
    assert report["reference"]["canonical"].endswith(":img0")
    bad = run_job(results, jobs[1].job_id, auditor)
    assert bad["exit_code"] == 2 and bad["error"].startswith("auditor: error: ")
    assert json.loads((results / "jobs" / jobs[1].job_id / "job.json").read_text()) == bad
    with pytest.raises(InputError, match="holds a campaign's results already"):
        prepare_results(results, {"name": "t"}, jobs, force=False)


def test_local_backend_runs_a_fleet_of_five_audits(tmp_path: Path) -> None:
    results = tmp_path / "results"
    jobs = audit_jobs(small_images(tmp_path, 5))
    prepare_results(results, {"name": "fleet"}, jobs, force=False)
    seen: list[str] = []
    run_local(results, jobs, [sys.executable, "-m", "auditor"], parallel=2, progress=seen.append)
    assert sorted(seen) == sorted(j.job_id for j in jobs)
    for job in jobs:
        record = json.loads((results / "jobs" / job.job_id / "job.json").read_text())
        assert record["error"] is None, record
        assert (results / "jobs" / job.job_id / "report.json").is_file()


def test_campaign_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    import subprocess

    (tmp_path / "bad.yaml").write_text("campaign: 1\nname: x\nimages: []\ntargets: [{name: a}]\n")
    (tmp_path / "empty").mkdir()
    cases = [
        (["run", str(tmp_path / "bad.yaml"), "-o", str(tmp_path / "r")], 2, "bad.yaml:3: images"),
        (["run", str(tmp_path / "bad.yaml"), "-o", str(tmp_path / "r"), "--dry-run"], 2, "bad.yaml:3"),
        (["report", str(tmp_path / "empty")], 2, "no jobs/ folder: not a campaign's results"),
        (["audit", "-o", str(tmp_path / "r")], 2, "give --images FILE or --repo REGISTRY/NAME"),
    ]
    for args, code, says in cases:
        proc = subprocess.run([sys.executable, "-m", "auditor", "campaign", *args], capture_output=True,
                              text=True, timeout=120, check=False)
        assert proc.returncode == code and says in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "r").exists()  # nothing written for bad input
