"""Pytest plugin: a real one-node Slurm cluster (slurmctld + slurmd + munged), once per session.

List it in ``pytest_plugins`` (or run ``pytest -p tests.slurm_fixtures``). Tests that use
``slurm`` carry ``pytest.mark.slurm``. Everything the cluster writes is under a session temporary
directory; its daemons are stopped by process id at the end of the session.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fixtures.slurm_cluster import SlurmCluster, start_slurm_cluster


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A one-node cluster; give ``slurm.env`` to ``sbatch``/``squeue``/``scontrol``/``scancel``."""
    cluster = start_slurm_cluster(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster
    finally:
        cluster.stop()
