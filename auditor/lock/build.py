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
        # the engine streams output in pieces that split lines: join them before taking the tail
        text = "".join(str(chunk.get("stream") or "") for chunk in err.build_log if isinstance(chunk, dict))
        tail = [line for line in text.splitlines() if line.strip()][-LOG_TAIL:]
        reason = " ".join(str(err.msg).split())
        reason = reason if len(reason) <= 160 else reason[:80] + " … " + reason[-70:]
        raise BuildFailed(f"the recipe in {directory} did not build ({reason}); the build log's last "
                          "lines:\n" + "\n".join(f"  | {line}" for line in tail)) from None
    except docker.errors.APIError as err:
        raise BuildFailed(f"the engine refused the build of {directory}: {err.explanation or err}") from None
    return tag
