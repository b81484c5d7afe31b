"""Building a recipe with the engine (``docker`` SDK: Docker or podman's compatible API)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from auditor.errors import EXIT_FINDINGS, AuditorError

LOG_TAIL = 25


class BuildFailed(AuditorError):
    """The recipe did not build; the message ends with the build log's last lines."""

    exit_code = EXIT_FINDINGS


def build_recipe(directory: Path, engine_host: str | None, network: str | None) -> str:
    """Build ``directory``'s Dockerfile.lock; the tag of the image (named after the recipe's
    content, so the same recipe gets the same tag)."""
    import docker.errors

    from auditor.sources.engine import connect_engine

    digest = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    tag = f"localhost/auditor-lock-verify:{digest.hexdigest()[:12]}"
    client, _host = connect_engine("docker", engine_host)
    try:
        client.images.build(path=str(directory), dockerfile="Dockerfile.lock", tag=tag, rm=True,
                            forcerm=True, pull=False, network_mode=network)
    except docker.errors.BuildError as err:
        lines = [str(chunk.get("stream") or chunk.get("error") or "").rstrip()
                 for chunk in err.build_log if isinstance(chunk, dict)]
        tail = [line for text in lines for line in text.splitlines() if line.strip()][-LOG_TAIL:]
        raise BuildFailed(f"the recipe in {directory} did not build: {err.msg}\n"
                          + "\n".join(f"  | {line}" for line in tail)) from None
    except docker.errors.APIError as err:
        raise BuildFailed(f"the engine refused the build of {directory}: {err.explanation or err}") from None
    return tag
