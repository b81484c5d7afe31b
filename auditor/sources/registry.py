"""Images in a registry, through the OCI Distribution API (v2) over ``requests``.

The client starts anonymous; on a 401 it reads the challenge and answers it with HTTP Basic or a
bearer token from the challenge's realm (``repository:NAME:pull``), using the credentials Docker
or podman stored (:mod:`auditor.sources.auth`). Tokens are cached per scope. Transient failures
(429, 502, 503, 504, connection errors) are retried a few times with exponential backoff and
``Retry-After``, bounded so that a registry that is down fails within seconds. Blob downloads
resume with ``Range`` and follow redirects to blob storage without sending the registry's
credentials to another host.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import urlencode, urljoin, urlsplit

import requests
import urllib3

from auditor import mediatypes as mt
from auditor.digest import verify_bytes
from auditor.errors import (
    AuditorError,
    AuthError,
    EnvironmentProblem,
    InputError,
    NotFoundError,
)
from auditor.model import Descriptor
from auditor.reference import DOCKER_HUB, DOCKER_HUB_API, ImageRef
from auditor.sources.auth import (
    Challenge,
    Credentials,
    basic_authorization,
    find_credentials,
    parse_challenges,
)
from auditor.sources.base import MAX_MANIFEST_BYTES, Root, Source, read_span

RETRY_STATUSES = frozenset({429, 502, 503, 504})
BACKOFF_BASE = 0.1  # seconds; doubles on each retry
MAX_RETRY_AFTER = 10.0  # seconds; a longer Retry-After is cut to this
MAX_REDIRECTS = 5
MAX_CONNECT_TIMEOUT = 10.0  # seconds; a host that takes longer to accept is down, not slow
MAX_TAG_PAGES = 1000
ERROR_BODY_LIMIT = 64 << 10  # bytes of an error body worth reading
_LOGIN_HINT = "log in with docker login / podman login or check ~/.docker/config.json"


def api_host(registry: str) -> str:
    """The host the API of ``registry`` answers on (Docker Hub's differs from its name)."""
    return DOCKER_HUB_API if registry == DOCKER_HUB else registry


def is_loopback(registry: str) -> bool:
    """Whether ``host[:port]`` is this machine: localhost, 127.0.0.0/8 or ::1."""
    host = registry
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Authorization(requests.auth.AuthBase):
    """Sets exactly our ``Authorization`` header (or none), so ``~/.netrc`` never adds one."""

    def __init__(self, value: str | None) -> None:
        self.value = value

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.pop("Authorization", None)
        if self.value:
            request.headers["Authorization"] = self.value
        return request


@dataclass(frozen=True)
class RegistryErrorDetail:
    code: str | None
    message: str | None


class RegistryClient:
    """Authenticated, retrying requests to one registry. Shared by the source and list_tags."""

    def __init__(self, registry: str, insecure: bool = False,
                 session: requests.Session | None = None, timeout: float = 30,
                 retries: int = 4) -> None:
        self.registry = registry
        self.host = api_host(registry)
        self.insecure = insecure
        if insecure:  # asked for: unverified TLS is no news (once for the process; a
            # catch_warnings around each request would race between threads reading layers)
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        self.session = session or requests.Session()
        self._own_session = session is None
        self.timeout = timeout
        self.retries = max(0, retries)
        self.scheme = "http" if is_loopback(self.host) else "https"
        self._scheme_settled = self.scheme == "http"  # https until the registry first answers
        self._authorization: dict[str, str] = {}  # scope ("" for Basic) -> header value
        self._credentials: dict[str, Credentials | None] = {}  # by repository

    # -- requests ------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}{path}"

    def get(self, path: str, scope: str, headers: Mapping[str, str] | None = None,
            stream: bool = False) -> requests.Response:
        """GET ``path`` (or an absolute URL), answering an auth challenge once if needed."""
        url = path if "://" in path else self.url(path)
        response = self._send(url, self._authorization.get(scope) or self._authorization.get(""),
                              headers, stream)
        if response.status_code != 401:
            return response
        challenge = self._challenge(response)
        response.close()
        authorization = self._authorize(challenge, scope)
        response = self._send(url, authorization, headers, stream)
        if response.status_code == 401:
            response.close()
            raise self._refused(scope)
        return response

    def _send(self, url: str, authorization: str | None, headers: Mapping[str, str] | None,
              stream: bool) -> requests.Response:
        """One GET with retries on transient failures, following redirects by hand."""
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._follow(url, authorization, headers, stream)
            except requests.exceptions.SSLError as err:
                if self.insecure and not self._scheme_settled and url.startswith("https://"):
                    # Like docker with an insecure registry: no TLS there, so speak plain HTTP.
                    self.scheme, self._scheme_settled = "http", True
                    url = "http://" + url[len("https://"):]
                    continue
                raise EnvironmentProblem(
                    f"TLS error talking to registry {self.registry}: {_short_reason(err)}"
                ) from None
            except requests.exceptions.ConnectTimeout:
                raise EnvironmentProblem(
                    f"registry {self.registry} is not reachable: no answer within "
                    f"{self._connect_timeout():g} s") from None
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as err:
                if last:
                    raise EnvironmentProblem(
                        f"registry {self.registry} is not reachable: {_short_reason(err)}"
                    ) from None
                time.sleep(_backoff(attempt))
                continue
            except requests.exceptions.RequestException as err:
                raise EnvironmentProblem(
                    f"request to registry {self.registry} failed: {_short_reason(err)}") from None
            self._scheme_settled = True
            if _waited_to_retry(response, attempt, last):
                continue
            return response
        raise AssertionError("unreachable")

    def _connect_timeout(self) -> float:
        return min(self.timeout, MAX_CONNECT_TIMEOUT)

    def _follow(self, url: str, authorization: str | None, headers: Mapping[str, str] | None,
                stream: bool) -> requests.Response:
        origin = _origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            same_origin = _origin(url) == origin
            response = self.session.get(
                url, headers=dict(headers or {}), stream=stream,
                timeout=(self._connect_timeout(), self.timeout),
                allow_redirects=False, verify=not self.insecure,
                auth=_Authorization(authorization if same_origin else None))
            if not response.is_redirect or "location" not in response.headers:
                return response
            url = urljoin(url, response.headers["location"])
            response.close()
        raise EnvironmentProblem(f"registry {self.registry} redirected more than "
                                 f"{MAX_REDIRECTS} times")

    # -- authentication ------------------------------------------------------------------
    def credentials(self, scope: str = "") -> Credentials | None:
        """The stored credentials for the repository of ``scope`` (looked up once)."""
        repository = _scope_repository(scope)
        if repository not in self._credentials:
            self._credentials[repository] = find_credentials(self.registry, repository or None)
        return self._credentials[repository]

    def _challenge(self, response: requests.Response) -> Challenge:
        challenges = parse_challenges(response.headers.get("www-authenticate", ""))
        for scheme in ("bearer", "basic"):
            for challenge in challenges:
                if challenge.scheme == scheme:
                    return challenge
        raise AuthError(f"registry {self.registry} asks for authentication this client does not "
                        f"support ({response.headers.get('www-authenticate') or 'no challenge'})")

    def _authorize(self, challenge: Challenge, scope: str) -> str:
        credentials = self.credentials(scope)
        if challenge.scheme == "basic":
            if credentials is None or not credentials.has_password:
                raise self._refused(scope)
            value = basic_authorization(credentials.username or "", credentials.password or "")
            self._authorization[""] = value
            return value
        token = self._fetch_token(challenge, scope, credentials)
        self._authorization[scope] = f"Bearer {token}"
        return self._authorization[scope]

    def _fetch_token(self, challenge: Challenge, scope: str,
                     credentials: Credentials | None) -> str:
        realm = challenge.get("realm")
        if not realm:
            raise AuthError(f"registry {self.registry} sent a bearer challenge without a realm")
        service = challenge.get("service")
        if credentials is not None and credentials.identity_token:
            response = self._token_by_refresh(realm, service, scope, credentials.identity_token)
        else:
            query = {k: v for k, v in (("service", service), ("scope", scope)) if v}
            basic = (basic_authorization(credentials.username or "", credentials.password or "")
                     if credentials is not None and credentials.has_password else None)
            response = self._token_request("GET", _with_query(realm, query), basic)
        if response.status_code in (401, 403):
            response.close()
            raise self._refused(scope)
        if response.status_code != 200:
            detail = _error_detail(response)
            response.close()
            raise AuthError(f"token server {_origin(realm)} of registry {self.registry} answered "
                            f"{response.status_code}{_describe(detail)}")
        return _token_from(response, self.registry)

    def _token_by_refresh(self, realm: str, service: str | None, scope: str,
                          refresh_token: str) -> requests.Response:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token,
                "client_id": "auditor", "scope": scope}
        if service:
            form["service"] = service
        return self._token_request("POST", realm, None, form)

    def _token_request(self, method: str, url: str, authorization: str | None,
                       form: Mapping[str, str] | None = None) -> requests.Response:
        for attempt in range(self.retries + 1):
            try:
                response = self.session.request(
                    method, url, data=form, timeout=(self._connect_timeout(), self.timeout),
                    verify=not self.insecure, auth=_Authorization(authorization))
            except requests.exceptions.RequestException as err:
                if attempt == self.retries or isinstance(
                        err, requests.exceptions.SSLError | requests.exceptions.ConnectTimeout):
                    raise EnvironmentProblem(
                        f"token server {_origin(url)} of registry {self.registry} is not "
                        f"reachable: {_short_reason(err)}") from None
                time.sleep(_backoff(attempt))
                continue
            if _waited_to_retry(response, attempt, attempt == self.retries):
                continue
            return response
        raise AssertionError("unreachable")

    def _refused(self, scope: str) -> AuthError:
        credentials = self.credentials(scope)
        repository = _scope_repository(scope)
        what = f"{self.registry}/{repository}" if repository else f"registry {self.registry}"
        if credentials is None:
            return AuthError(f"{what} requires authentication; {_LOGIN_HINT}")
        origin = f" (from {credentials.origin})" if credentials.origin else ""
        return AuthError(f"registry {self.registry} refused the credentials{origin} for "
                         f"{repository or 'its API'}; check them or log in again")

    def close(self) -> None:
        if self._own_session:
            self.session.close()


class RegistrySource(Source):
    """An image in a registry, named by tag or digest."""

    def __init__(self, ref: ImageRef, insecure: bool = False,
                 session: requests.Session | None = None, timeout: float = 30,
                 retries: int = 4, keep_layers: bool = True) -> None:
        super().__init__(ref)
        # Kept, a layer download resumes after a cut and serves a pass with other catalogers;
        # streamed, it costs no disk and no write (per-layer results are cached either way).
        self.cache_blobs = keep_layers
        self.remote = True  # a layer kept by an earlier run is read from the cache, whatever this one keeps
        if ref.registry is None or ref.repository is None:
            raise InputError(f"{ref.original} is not a registry reference")
        self.repository = ref.repository
        self.client = RegistryClient(ref.registry, insecure, session, timeout, retries)
        self.scope = f"repository:{ref.repository}:pull"

    def root(self) -> Root:
        reference = self.ref.digest or self.ref.tag or "latest"
        response = self._get_manifest(reference)
        data = _read_bounded(response, MAX_MANIFEST_BYTES, f"manifest of {self.ref.original}")
        content_type = response.headers.get("content-type")
        if self.ref.digest:
            return Root(data, content_type, digest=self.ref.digest)
        header = response.headers.get("docker-content-digest") or None
        if header:
            verify_bytes(data, header, f"manifest of {self.ref.original} (Docker-Content-Digest)")
        return Root(data, content_type, digest=header)

    def manifest(self, descriptor: Descriptor) -> bytes:
        accept = mt.MANIFEST_ACCEPT
        if descriptor.media_type and descriptor.media_type not in accept:
            accept = f"{descriptor.media_type}, {accept}"
        response = self._get_manifest(descriptor.digest, accept)
        return _read_bounded(response, MAX_MANIFEST_BYTES, f"manifest {descriptor.digest}")

    def blob(self, descriptor: Descriptor, offset: int = 0) -> tuple[BinaryIO, int]:
        path = f"/v2/{self.repository}/blobs/{descriptor.digest}"
        headers = {"Accept-Encoding": "identity"}
        if offset > 0:
            headers["Range"] = f"bytes={offset}-"
        response = self.client.get(path, self.scope, headers, stream=True)
        if response.status_code == 416 and offset > 0:
            response.close()  # the partial download is no prefix of this blob: start over
            return self.blob(descriptor, 0)
        if response.status_code == 404:
            response.close()
            raise NotFoundError(f"blob {descriptor.digest} not found in {self._where()}")
        if response.status_code not in (200, 206):
            raise self._error(response, f"blob {descriptor.digest}")
        start = _range_start(response) if response.status_code == 206 else 0
        if start not in (0, offset):
            response.close()
            return self.blob(descriptor, 0)
        return _ResponseStream(response, descriptor.digest, self.client.registry), start

    def blob_range(self, descriptor: Descriptor, start: int, end: int) -> bytes:
        """One ``Range`` request. A registry (or the storage it redirects to) that answers a
        range with the whole blob is read on to the range: correct, but slow."""
        path = f"/v2/{self.repository}/blobs/{descriptor.digest}"
        headers = {"Accept-Encoding": "identity", "Range": f"bytes={start}-{end - 1}"}
        response = self.client.get(path, self.scope, headers, stream=True)
        if response.status_code == 404:
            response.close()
            raise NotFoundError(f"blob {descriptor.digest} not found in {self._where()}")
        if response.status_code not in (200, 206):
            raise self._error(response, f"bytes {start}-{end - 1} of blob {descriptor.digest}")
        stream = _ResponseStream(response, descriptor.digest, self.client.registry)
        try:
            at = _range_start(response) if response.status_code == 206 else 0
            if at not in (0, start):
                raise EnvironmentProblem(f"registry {self.client.registry} answered bytes from "
                                         f"{at} when asked for {start} of blob {descriptor.digest}")
            return read_span(stream, at, start, end)
        finally:
            stream.close()

    def facts(self) -> dict[str, Any]:
        return {"registry": self.client.registry, "repository": self.repository}

    def close(self) -> None:
        self.client.close()

    # -- helpers -------------------------------------------------------------------------
    def _get_manifest(self, reference: str, accept: str = mt.MANIFEST_ACCEPT) -> requests.Response:
        path = f"/v2/{self.repository}/manifests/{reference}"
        response = self.client.get(path, self.scope, {"Accept": accept}, stream=True)
        if response.status_code == 200:
            return response
        if response.status_code == 404:
            detail = _error_detail(response)
            response.close()
            raise self._not_found(reference, detail)
        raise self._error(response, f"manifest {reference}")

    def _not_found(self, reference: str, detail: RegistryErrorDetail) -> NotFoundError:
        kind = "digest" if ":" in reference else "tag"
        if detail.code == "NAME_UNKNOWN":
            return NotFoundError(f"repository {self.repository} not found on {self.client.registry}"
                                 f" (NAME_UNKNOWN)")
        code = f" ({detail.code})" if detail.code else ""
        return NotFoundError(f"{kind} {reference} not found in {self._where()}{code}")

    def _where(self) -> str:
        return f"repository {self.repository} on {self.client.registry}"

    def _error(self, response: requests.Response, what: str) -> AuditorError:
        detail = _error_detail(response)
        response.close()
        status = response.status_code
        if status == 403:
            return AuthError(f"registry {self.client.registry} denied access to {what} in "
                             f"{self.repository}{_describe(detail)}")
        message = (f"registry {self.client.registry} answered {status} for {what} in "
                   f"{self.repository}{_describe(detail)}")
        return EnvironmentProblem(message) if status >= 500 else InputError(message)


class _ResponseStream:
    """A blob's bytes as a raw stream; transport failures become one-line errors."""

    def __init__(self, response: requests.Response, digest: str, registry: str) -> None:
        self._response = response
        self._digest = digest
        self._registry = registry

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all that is left if ``n`` < 0); fewer only at the end."""
        try:
            if n is None or n < 0:
                return self._response.raw.read()
            data = self._response.raw.read(n)
            while data and len(data) < n:
                more = self._response.raw.read(n - len(data))
                if not more:
                    break
                data += more
            return data
        except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException,
                OSError) as err:
            raise EnvironmentProblem(
                f"download of blob {self._digest} from {self._registry} was interrupted "
                f"({_short_reason(err)}); run again to resume") from None

    def close(self) -> None:
        self._response.close()


def list_tags(ref: ImageRef, insecure: bool = False, session: requests.Session | None = None,
              timeout: float = 30, retries: int = 4, page_size: int | None = None) -> list[str]:
    """Every tag of ``ref``'s repository, following ``Link`` pagination.

    ``page_size`` asks for pages of that many tags (``?n=``); the registry may choose its own.
    """
    if ref.registry is None or ref.repository is None:
        raise InputError(f"{ref.original} is not a registry reference")
    client = RegistryClient(ref.registry, insecure, session, timeout, retries)
    try:
        return list(_tag_pages(client, ref.repository, page_size))
    finally:
        client.close()


def _tag_pages(client: RegistryClient, repository: str, page_size: int | None) -> Iterator[str]:
    scope = f"repository:{repository}:pull"
    path: str | None = f"/v2/{repository}/tags/list"
    if page_size:
        path += f"?n={int(page_size)}"
    for _ in range(MAX_TAG_PAGES):
        if path is None:
            return
        response = client.get(path, scope, {"Accept": "application/json"})
        if response.status_code == 404:
            raise NotFoundError(f"repository {repository} not found on {client.registry}")
        if response.status_code != 200:
            detail = _error_detail(response)
            raise InputError(f"registry {client.registry} answered {response.status_code} "
                             f"listing tags of {repository}{_describe(detail)}")
        try:
            tags = response.json().get("tags") or []
        except (ValueError, AttributeError):
            raise InputError(f"registry {client.registry} sent an unreadable tag list for "
                             f"{repository}") from None
        yield from (t for t in tags if isinstance(t, str))
        path = _next_link(response.headers.get("link"), response.url)
    raise InputError(f"registry {client.registry} sent more than {MAX_TAG_PAGES} pages of tags")


# -- small helpers ---------------------------------------------------------------------------

def _read_bounded(response: requests.Response, limit: int, what: str) -> bytes:
    try:
        declared = int(response.headers.get("content-length", "0"))
    except ValueError:
        declared = 0
    if declared > limit:
        response.close()
        raise InputError(f"{what} is larger than {limit} bytes")
    chunks, total = [], 0
    try:
        for chunk in response.iter_content(64 << 10):
            total += len(chunk)
            if total > limit:
                raise InputError(f"{what} is larger than {limit} bytes")
            chunks.append(chunk)
    except requests.exceptions.RequestException as err:
        raise EnvironmentProblem(f"download of {what} was interrupted: {_short_reason(err)}"
                                 ) from None
    finally:
        response.close()
    return b"".join(chunks)


def _error_detail(response: requests.Response) -> RegistryErrorDetail:
    """The first entry of the registry's ``{"errors": [{"code", "message"}]}`` body, if any."""
    try:
        body = bytearray()
        for chunk in response.iter_content(16 << 10):
            body += chunk
            if len(body) >= ERROR_BODY_LIMIT:
                break
        errors = json.loads(bytes(body)).get("errors")
        first = errors[0] if isinstance(errors, list) and errors else {}
        code, message = first.get("code"), first.get("message")
        return RegistryErrorDetail(code if isinstance(code, str) else None,
                                   message if isinstance(message, str) else None)
    except (ValueError, AttributeError, TypeError, requests.exceptions.RequestException):
        return RegistryErrorDetail(None, None)


def _describe(detail: RegistryErrorDetail) -> str:
    parts = [p for p in (detail.code, detail.message) if p]
    return f": {': '.join(parts)}" if parts else ""


def _token_from(response: requests.Response, registry: str) -> str:
    try:
        body = response.json()
    except ValueError:
        raise AuthError(f"the token server of registry {registry} sent no JSON") from None
    finally:
        response.close()
    token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise AuthError(f"the token server of registry {registry} sent no token")
    return token


def _scope_repository(scope: str) -> str:
    """``repository:NAME:pull`` → ``NAME``; anything else → ``""``."""
    kind, _, rest = scope.partition(":")
    return rest.rpartition(":")[0] if kind == "repository" else ""


def _range_start(response: requests.Response) -> int:
    match = re.match(r"\s*bytes\s+(\d+)-", response.headers.get("content-range", ""))
    return int(match.group(1)) if match else -1


def _next_link(header: str | None, base: str) -> str | None:
    for part in (header or "").split(","):
        match = re.match(r'\s*<([^>]*)>\s*;(.*)', part)
        if match and re.search(r'rel="?next"?', match.group(2)):
            return urljoin(base, match.group(1))
    return None


def _with_query(url: str, query: Mapping[str, str]) -> str:
    if not query:
        return url
    return f"{url}{'&' if '?' in url else '?'}{urlencode(query)}"


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def _waited_to_retry(response: requests.Response, attempt: int, last: bool) -> bool:
    """For a transient status (429, 5xx) short of the last attempt: close the response, wait
    (Retry-After, else exponential backoff) and say so; the caller then tries again."""
    if response.status_code not in RETRY_STATUSES or last:
        return False
    delay = _retry_after(response) or _backoff(attempt)
    response.close()
    time.sleep(delay)
    return True


def _backoff(attempt: int) -> float:
    return BACKOFF_BASE * (2 ** attempt)


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    return None


def _short_reason(err: BaseException) -> str:
    """The root cause of a requests/urllib3 error in a few words, not its nested repr."""
    text = str(err)
    errno = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if errno:
        return errno.group(1).strip()
    if isinstance(err, requests.exceptions.Timeout) or "timed out" in text.lower():
        return "timed out"
    if isinstance(err, requests.exceptions.SSLError):
        ssl_reason = re.search(r"\[SSL[^\]]*\] ([^'\")(]+)", text)
        if ssl_reason:
            return ssl_reason.group(1).strip()
    cause = err.__cause__ or err.__context__
    if cause is not None and str(cause) and cause is not err and len(text) > 200:
        return _short_reason(cause)
    return text[:200] or err.__class__.__name__
