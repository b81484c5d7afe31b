"""The sha256 of a Python package's files, from a package index's simple API (PEP 503 HTML or
PEP 691 JSON): what pip's hash-checking mode needs. The network edge of the lock."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from html.parser import HTMLParser
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

import requests
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

ACCEPT = ("application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
          "text/html;q=0.1")
MAX_PAGE = 64 * 1024 * 1024


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.hrefs.append(href)


def files_of_page(body: bytes, content_type: str, page_url: str) -> list[tuple[str, str | None]]:
    """(filename, sha256 hex or None) of every file a simple-API project page lists."""
    if "json" in content_type:
        data = json.loads(body)
        return [(f.get("filename", ""), (f.get("hashes") or {}).get("sha256"))
                for f in data.get("files") or [] if isinstance(f, dict)]
    parser = _Anchors()
    parser.feed(body.decode("utf-8", "replace"))
    out = []
    for href in parser.hrefs:
        url, fragment = urldefrag(urljoin(page_url, href))
        name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
        algo, _, value = fragment.partition("=")
        out.append((name, value.lower() if algo == "sha256" and value else None))
    return out


def _release_of(filename: str) -> tuple[str, Version] | None:
    try:
        if filename.endswith(".whl"):
            name, version, _build, _tags = parse_wheel_filename(filename)
            return name, version
        name, version = parse_sdist_filename(filename)
        return name, version
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None


def hash_lookup(index_url: str, extra_index_urls: Sequence[str] = (),
                session: requests.Session | None = None, timeout: float = 30.0
                ) -> Callable[[str, str], tuple[str, ...] | str]:
    """A ``(name, version) -> ("sha256:HEX", ...)`` function over the indexes (every file of
    that release, as pip-compile's --generate-hashes lists them), or a reason string when the
    release is not there or no index answered."""
    http = session or requests.Session()

    def lookup(name: str, version: str) -> tuple[str, ...] | str:
        try:
            wanted = Version(version)
        except InvalidVersion:
            return f"version {version!r} is not a PEP 440 version"
        problems = []
        hashes: set[str] = set()
        for index in (index_url, *extra_index_urls):
            page = f"{index.rstrip('/')}/{canonicalize_name(name)}/"
            try:
                response = http.get(page, headers={"Accept": ACCEPT}, timeout=timeout, stream=True)
                if response.status_code == 404:
                    continue
                response.raise_for_status()
                body = response.raw.read(MAX_PAGE + 1, decode_content=True)
            except requests.RequestException as err:
                problems.append(f"{index}: {type(err).__name__}")
                continue
            if len(body) > MAX_PAGE:
                problems.append(f"{index}: the project page is larger than {MAX_PAGE} bytes")
                continue
            for filename, digest in files_of_page(body, response.headers.get("Content-Type", ""), page):
                release = _release_of(filename)
                if release and release[0] == canonicalize_name(name) and release[1] == wanted and digest:
                    hashes.add(f"sha256:{digest}")
        if hashes:
            return tuple(sorted(hashes))
        if problems:
            return "no index answered (" + "; ".join(problems) + ")"
        given = ", ".join((index_url, *extra_index_urls))
        return f"{name} {version} is in none of the indexes given ({given})"

    return lookup


def apt_versions(sources: Sequence[str], session: requests.Session | None = None,
                 timeout: float = 30.0, arch: str = "amd64") -> tuple[dict[str, set[str]], list[str]]:
    """Package -> versions the apt ``sources`` lines offer (flat ``URL ./`` repositories and
    ``URL SUITE COMPONENT…`` archives, from their ``Packages``/``Packages.gz``), and the lines
    that could not be read (their packages are then not checked)."""
    import gzip

    http = session or requests.Session()
    offered: dict[str, set[str]] = {}
    unread: list[str] = []
    for line in sources:
        words = [w for w in line.split() if not (w.startswith("[") or w.endswith("]") or "=" in w)]
        if len(words) < 3 or words[0] != "deb":
            unread.append(line)
            continue
        url, suite, components = words[1].rstrip("/") + "/", words[2], words[3:]
        pages = ([f"{url}{suite.strip('/')}/Packages".replace("/./", "/")] if suite.endswith("/") else
                 [f"{url}dists/{suite}/{c}/binary-{arch}/Packages" for c in components])
        for page in pages:
            body = None
            for candidate, unpack in ((page + ".gz", gzip.decompress), (page, lambda b: b)):
                try:
                    response = http.get(candidate, timeout=timeout)
                    if response.status_code == 200 and len(response.content) < MAX_PAGE:
                        body = unpack(response.content)
                        break
                except (requests.RequestException, OSError, EOFError):
                    continue
            if body is None:
                unread.append(line)
                break
            name = None
            for text in body.decode("utf-8", "replace").splitlines():
                if text.startswith("Package:"):
                    name = text.split(":", 1)[1].strip()
                elif text.startswith("Version:") and name:
                    offered.setdefault(name, set()).add(text.split(":", 1)[1].strip())
    return offered, sorted(set(unread))
