"""A whole campaign on real parts: `auditor campaign run` submits the probe of Debian's numpy and
torch images (threads=1,2, 3 repeats) to a real one-node Slurm cluster as an sbatch array; the
jobs start containers through the podman engine on the node; the aggregated report (matrix,
Markdown, HTML with plots) carries the verdicts the probe's own tests established."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.engine_fixtures import Engine
from tests.probe.test_payload import NUMPY_PACKAGES, TORCH_PACKAGES, load_debian

ROOT = Path(__file__).resolve().parents[2]
REPORT_SCHEMA = json.loads((ROOT / "auditor/schemas/campaign-report.schema.json").read_text())
pytestmark = [pytest.mark.slow, pytest.mark.engine, pytest.mark.slurm]

CAMPAIGN = """\
campaign: 1
name: debian-cpu
images:
  - {name: numpy, reference: "docker-daemon:localhost/auditor-probe-numpy:t"}
  - {name: torch, reference: "docker-daemon:localhost/auditor-probe-torch-openblas:t"}
probe: {repeats: 3, vary: ["threads=1,2"], timeout: 600}
targets:
  - {name: cpu-node}
backend: {kind: slurm}
"""


def test_a_probe_campaign_runs_through_slurm_and_is_aggregated(
        engine: Engine, slurm: Any, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    load_debian(engine, tmp_path_factory, NUMPY_PACKAGES, "numpy")
    load_debian(engine, tmp_path_factory, TORCH_PACKAGES, "torch-openblas")
    (tmp_path / "campaign.yaml").write_text(CAMPAIGN)
    results = tmp_path / "results"
    env = {**os.environ, **slurm.env, "DOCKER_HOST": engine.base_url, "COLUMNS": "200"}
    command = [sys.executable, "-m", "auditor", "campaign", "run", str(tmp_path / "campaign.yaml"),
               "-o", str(results), "--partition", slurm.partition]
    proc = subprocess.run(command,
                          capture_output=True, text=True, env=env, timeout=1800, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "campaign: 2 jobs (2 ok, 0 partial, 0 failed)" in proc.stderr
    assert sorted(p.name for p in (results / "slurm").glob("*.sh")) == ["cpu-node.sh"]
    document = json.loads((results / "report.json").read_text())
    jsonschema.validate(document, REPORT_SCHEMA)
    assert document["backend"] == "slurm" and document["counts"]["runs"] == 12
    for job in document["jobs"]:
        assert job["host"], job  # each job recorded the node it ran on
    cells = {cell["image"]: cell for cell in document["matrix"]}
    # what the probe tests established: Debian's numpy models repeat bit for bit under any thread
    # count; torch's BiLSTM diverges between 1 and 2 threads, and the variation explains it
    assert set(cells["numpy"]["verdicts"].values()) == {"identical"}, cells["numpy"]
    assert cells["torch"]["verdicts"]["torch.bilstm"] == "diverged"
    models = {m["name"]: m for m in document["models"]}
    assert models["torch.bilstm"]["explained_by"] == ["variation"]
    # across the campaign: NumPy's RNN differs between the images (reference BLAS vs OpenBLAS)
    assert models["numpy.rnn"]["explained_by"] == ["software"]
    html = (results / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(document["models"])
    markdown = (results / "report.md").read_text()
    assert "| `cpu-node` | ok: 6/6 runs ok; all identical |" in markdown
    assert len(list((results / "plots").glob("*.png"))) == len(document["models"])
