"""Pytest plugin: real registries on loopback, started once per session and stopped by pid.

List it in ``pytest_plugins`` (or run ``pytest -p tests.registry_fixtures``). Tests that use these
fixtures carry ``pytest.mark.registry``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.registry_server import RegistryServer, start_registry


def _serve(tmp_path_factory: pytest.TempPathFactory, mode: str) -> Iterator[RegistryServer]:
    server = start_registry(tmp_path_factory.mktemp(f"registry-{mode}"), mode)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """An anonymous registry: anyone pulls and pushes."""
    yield from _serve(tmp_path_factory, "anonymous")


@pytest.fixture(scope="session")
def registry_basic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry with htpasswd Basic auth; user ``alice``, password ``s3cret``."""
    yield from _serve(tmp_path_factory, "basic")


@pytest.fixture(scope="session")
def registry_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry with bearer-token auth; the token server issues tokens to ``alice`` only."""
    yield from _serve(tmp_path_factory, "token")


class CredentialStore:
    """A Docker config directory of a test's own; nothing of the user's is read."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "config.json"

    def write(self, config: dict[str, Any]) -> None:
        self.path.write_text(json.dumps(config))

    def login(self, host: str, user: str, password: str) -> None:
        """What ``docker login`` writes without a credential store."""
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.write({"auths": {host: {"auth": auth}}})


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CredentialStore:
    """Point every credential lookup (Docker's and podman's) at an empty directory of the test."""
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("DOCKER_CONFIG", str(home / ".docker"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    return CredentialStore(home / ".docker")
