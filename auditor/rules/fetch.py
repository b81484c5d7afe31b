"""Reading a file or an http(s) URL for rule packs and release notes: bounded, one-line errors."""

from __future__ import annotations

from pathlib import Path

from auditor.errors import EnvironmentProblem, InputError

MAX_BYTES = 32 * 1024 * 1024  # release-notes pages are a few MB at most
TIMEOUT = 30.0


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def fetch_bytes(url: str, max_bytes: int = MAX_BYTES) -> bytes:
    """The body of ``url`` (a GET following redirects), refused beyond ``max_bytes``."""
    import requests  # here: most audits fetch nothing, and importing it costs 60 ms

    try:
        with requests.get(url, stream=True, timeout=TIMEOUT) as response:
            if response.status_code != 200:
                raise InputError(f"cannot fetch {url}: HTTP {response.status_code}")
            chunks, size = [], 0
            for chunk in response.iter_content(64 * 1024):
                size += len(chunk)
                if size > max_bytes:
                    raise InputError(f"cannot fetch {url}: larger than {max_bytes} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except requests.RequestException as err:
        raise EnvironmentProblem(f"cannot fetch {url}: {err.__class__.__name__}: {err}") from None


def read_source(source: str, max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes of a local file or an http(s) URL."""
    if is_url(source):
        return fetch_bytes(source, max_bytes)
    path = Path(source)
    try:
        if path.stat().st_size > max_bytes:
            raise InputError(f"{source}: larger than {max_bytes} bytes")
        return path.read_bytes()
    except IsADirectoryError:
        raise InputError(f"{source}: is a directory, expected a file") from None
    except FileNotFoundError:
        raise InputError(f"{source}: no such file") from None
    except OSError as err:
        raise InputError(f"cannot read {source}: {err.strerror or err}") from None
