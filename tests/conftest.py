"""Shared fixtures. Services (registry, engine) live in their own plugin modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor.sources.cache import BlobCache

pytest_plugins = [
    "tests.registry_fixtures",
    "tests.engine_fixtures",
    "tests.lock_fixtures",
    "tests.slurm_fixtures",
]


@pytest.fixture
def cache(tmp_path: Path) -> BlobCache:
    return BlobCache(tmp_path / "cache")


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never touch the user's cache or credentials unless they set them up themselves."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("DOCKER_CONFIG", str(home / ".docker"))
    monkeypatch.delenv("AUDITOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
