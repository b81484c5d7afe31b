"""Registry credentials and authentication challenges.

Credentials are looked up the way ``docker`` and ``podman`` store them:

- ``$REGISTRY_AUTH_FILE`` (podman, skopeo), then ``$DOCKER_CONFIG/config.json`` or
  ``~/.docker/config.json``, then ``${XDG_RUNTIME_DIR}/containers/auth.json`` and
  ``~/.config/containers/auth.json``; the first file that knows the registry wins.
- In a Docker config, ``credHelpers[host]`` names a credential helper for that host, else
  ``credsStore`` names one for every host; a helper is ``docker-credential-<name> get`` with the
  server on stdin and ``{"Username": …, "Secret": …}`` on stdout (a ``<token>`` username means the
  secret is an identity token).
- Otherwise ``auths[key]`` holds ``auth`` (base64 of ``user:password``), or ``username`` and
  ``password``, and possibly ``identitytoken``. Keys may carry a scheme and a path
  (``https://index.docker.io/v1/``); podman's keys may name a repository (``host/namespace``).

``WWW-Authenticate`` challenges (RFC 7235) are parsed by :func:`parse_challenges`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.errors import AuthError, EnvironmentProblem
from auditor.reference import DOCKER_HUB, DOCKER_HUB_API

# The key Docker Hub credentials are stored under, and what its helpers are asked for.
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_ALIASES = frozenset({DOCKER_HUB, "index.docker.io", DOCKER_HUB_API})
_HELPER_TIMEOUT = 30
_IDENTITY_TOKEN_USER = "<token>"


@dataclass(frozen=True)
class Credentials:
    """What a user gave for one registry, and where it came from (for error messages)."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)
    origin: str = ""

    @property
    def has_password(self) -> bool:
        return bool(self.username) and self.password is not None


# -- where credentials live ------------------------------------------------------------------

def docker_config_path() -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    directory = os.environ.get("DOCKER_CONFIG")
    if directory:
        return Path(directory) / "config.json"
    return Path(os.path.expanduser("~")) / ".docker" / "config.json"


def credential_files() -> list[Path]:
    """Every file credentials are looked up in, in order of precedence."""
    files: list[Path] = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    files.append(docker_config_path())
    if os.environ.get("XDG_RUNTIME_DIR"):
        files.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    files.append(Path(os.path.expanduser("~")) / ".config" / "containers" / "auth.json")
    unique: list[Path] = []
    for path in files:
        if path not in unique:
            unique.append(path)
    return unique


def find_credentials(registry: str, repository: str | None = None) -> Credentials | None:
    """The credentials stored for ``registry`` (``host[:port]``), or None if there are none."""
    for path in credential_files():
        config = _load_config(path)
        if config is None:
            continue
        found = credentials_from_config(config, registry, repository, str(path))
        if found is not None:
            return found
    return None


def credentials_from_config(config: dict[str, Any], registry: str, repository: str | None,
                            origin: str) -> Credentials | None:
    """Credentials for ``registry`` from one parsed config file (Docker or podman form)."""
    helpers = config.get("credHelpers")
    if isinstance(helpers, dict):
        for key in _host_keys(registry):
            if isinstance(helpers.get(key), str) and helpers[key]:
                return run_credential_helper(helpers[key], registry, origin)
    entry = _auth_entry(config.get("auths"), registry, repository)
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        from_store = run_credential_helper(store, registry, origin)
        if from_store is not None:
            return from_store
    if entry is None:
        return None
    return _decode_auth_entry(entry, registry, origin)


# -- config files ----------------------------------------------------------------------------

def _load_config(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise EnvironmentProblem(f"cannot read credentials file {path}: {err}") from None
    if not text.strip():
        return None
    try:
        config = json.loads(text)
    except ValueError as err:
        raise AuthError(f"credentials file {path} is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise AuthError(f"credentials file {path} is not a JSON object")
    return config


def normalize_config_key(key: str) -> str:
    """``https://host:port/v1/`` → ``host:port``; podman's ``host/namespace`` keeps its path."""
    key = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", "", key.strip())
    key = re.sub(r"/v[12]/?$", "", key).rstrip("/")
    host, sep, path = key.partition("/")
    if host in _DOCKER_HUB_ALIASES:
        host = DOCKER_HUB
    return f"{host}{sep}{path}"


def _host_keys(registry: str) -> list[str]:
    """How ``registry`` may be spelled as a key of ``credHelpers``."""
    if registry in _DOCKER_HUB_ALIASES:
        return [DOCKER_HUB_CONFIG_KEY, DOCKER_HUB, "index.docker.io", DOCKER_HUB_API]
    return [registry, f"https://{registry}", f"http://{registry}"]


def _auth_entry(auths: Any, registry: str, repository: str | None) -> dict[str, Any] | None:
    """The ``auths`` entry for the most specific key matching ``registry[/repository]``."""
    if not isinstance(auths, dict):
        return None
    host = DOCKER_HUB if registry in _DOCKER_HUB_ALIASES else registry
    wanted = [host]
    if repository:
        parts = repository.split("/")
        wanted = [f"{host}/{'/'.join(parts[:n])}" for n in range(len(parts), 0, -1)] + [host]
    entries = {normalize_config_key(k): v for k, v in auths.items()
               if isinstance(k, str) and isinstance(v, dict)}
    for key in wanted:
        if key in entries:
            return entries[key]
    return None


def _decode_auth_entry(entry: dict[str, Any], registry: str, origin: str) -> Credentials | None:
    username, password = entry.get("username"), entry.get("password")
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=False).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthError(f"the credentials for {registry} in {origin} are not valid base64 "
                            "of user:password") from None
        if ":" not in decoded:
            raise AuthError(f"the credentials for {registry} in {origin} are not user:password")
        username, password = decoded.split(":", 1)
    token = entry.get("identitytoken")
    token = token if isinstance(token, str) and token else None
    if not (isinstance(username, str) and username) and token is None:
        return None  # an empty placeholder (credsStore keeps the real ones)
    return Credentials(username if isinstance(username, str) and username else None,
                       password if isinstance(password, str) else None, token, origin)


# -- credential helpers ----------------------------------------------------------------------

def run_credential_helper(name: str, registry: str, origin: str | None = None
                          ) -> Credentials | None:
    """Ask ``docker-credential-<name>`` for the credentials of ``registry``.

    ``origin`` is the config file that named the helper, for the error message.
    """
    program = f"docker-credential-{name}"
    executable = shutil.which(program)
    if executable is None:
        raise EnvironmentProblem(f"credential helper {program} (named in "
                                 f"{origin or docker_config_path()}) is not on PATH")
    server = DOCKER_HUB_CONFIG_KEY if registry in _DOCKER_HUB_ALIASES else registry
    try:
        done = subprocess.run([executable, "get"], input=server.encode(), capture_output=True,
                              timeout=_HELPER_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise EnvironmentProblem(
            f"credential helper {program} did not answer within {_HELPER_TIMEOUT} s") from None
    except OSError as err:
        raise EnvironmentProblem(f"cannot run credential helper {program}: {err}") from None
    output = done.stdout.decode("utf-8", "replace").strip()
    if done.returncode != 0:
        message = (output or done.stderr.decode("utf-8", "replace")).strip()
        if "credentials not found" in message.lower():
            return None
        first_line = message.splitlines()[0] if message else f"exit status {done.returncode}"
        raise AuthError(f"credential helper {program} failed for {registry}: {first_line}")
    return _parse_helper_output(output, program, registry)


def _parse_helper_output(output: str, program: str, registry: str) -> Credentials | None:
    try:
        answer = json.loads(output)
    except ValueError:
        raise AuthError(f"credential helper {program} gave no JSON for {registry}") from None
    if not isinstance(answer, dict):
        raise AuthError(f"credential helper {program} gave no JSON object for {registry}")
    username, secret = answer.get("Username"), answer.get("Secret")
    if not isinstance(secret, str) or not secret:
        return None
    if username == _IDENTITY_TOKEN_USER:
        return Credentials(None, None, secret, program)
    return Credentials(username if isinstance(username, str) else None, secret, None, program)


# -- WWW-Authenticate ------------------------------------------------------------------------

@dataclass(frozen=True)
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header: a scheme and its parameters."""

    scheme: str  # lower case: "basic", "bearer"
    params: dict[str, str]

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.params.get(name.lower(), default)


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PARAM_RE = re.compile(rf'\s*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|({_TOKEN}=*))\s*')
_SCHEME_RE = re.compile(rf"\s*({_TOKEN})(?:\s+|$)")


def parse_challenges(header: str) -> list[Challenge]:
    """Parse ``Basic realm="x"`` or ``Bearer realm="…",service="…",scope="a,b"`` (and lists)."""
    challenges: list[Challenge] = []
    pos, text = 0, header or ""
    while pos < len(text):
        while pos < len(text) and text[pos] in ", \t":
            pos += 1
        scheme = _SCHEME_RE.match(text, pos)
        if not scheme:
            break
        pos = scheme.end()
        params: dict[str, str] = {}
        while pos < len(text):
            param = _PARAM_RE.match(text, pos)
            if not param:
                break
            value = param.group(2)
            value = re.sub(r"\\(.)", r"\1", value) if value is not None else param.group(3)
            params[param.group(1).lower()] = value
            pos = param.end()
            if pos < len(text) and text[pos] == ",":
                pos += 1
        challenges.append(Challenge(scheme.group(1).lower(), params))
    return challenges


def basic_authorization(username: str, password: str) -> str:
    """The value of an ``Authorization`` header for HTTP Basic."""
    raw = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")
