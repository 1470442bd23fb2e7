"""The OCI distribution API (v2) over ``requests``, one :class:`RegistryClient` per registry host.

Contracts:

* **Transport**: https by default; plain http for ``localhost``, ``127.0.0.1``, ``[::1]`` and
  hosts passed as ``insecure`` (or listed in ``$PYBUILD_INSECURE_REGISTRIES``, comma separated).
  TLS trust: ``/etc/docker/certs.d/<host>/ca.crt`` when present (plus ``client.cert`` /
  ``client.key``), else ``$REQUESTS_CA_BUNDLE`` or the system store.
* **Auth**: see :mod:`builder.registry.auth`. The ``Authorization`` header only goes to the
  registry host: redirects are followed by hand and a hop to another host (blob storage)
  carries no credentials.
* **Retries**: idempotent requests (GET, HEAD, manifest PUT, DELETE) are retried on 429, 5xx,
  connection resets and truncated bodies, at most ``retries`` tries with exponential backoff
  (``Retry-After`` seconds or date honoured, capped). Uploads restart from a fresh session when the source
  stream can seek back; otherwise the first failure is final.
* **Blobs** are streamed: :meth:`RegistryClient.open_blob` returns a reader that hashes while
  reading, resumes with ``Range`` after a dropped connection and raises
  :class:`RegistryError` at the end instead of returning EOF when the digest or size do not
  match. Uploads hash while sending and never commit (final PUT) bytes that do not match.
* **Errors**: :class:`builder.errors.RegistryError` with method, redacted URL, status and the
  distribution error codes; :class:`RegistryConnectionError` when the registry was unreachable.
  No ``requests`` exception escapes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterable, Mapping
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from ..digest import Digest
from ..errors import RegistryError
from ..oci import mediatypes as mt
from .auth import Authenticator, Credentials, erase_credentials, lookup_credentials, repository_scope, \
    store_credentials
from .blobio import BlobReader, HashingBody, hasher_for, is_stream_error
from .locations import BLOB_LOCATIONS, note_blob_location  # noqa: F401 - re-exported

if TYPE_CHECKING:  # pragma: no cover
    import requests

MANIFEST_ACCEPT = (mt.OCI_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST)
MAX_MANIFEST_SIZE = 4 << 20
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
_SENSITIVE_QUERY = re.compile(r"sig|token|key|secret|credential|password|auth", re.I)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
CERTS_DIR = Path("/etc/docker/certs.d")



def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait: delay-seconds or an HTTP-date (RFC 9110);
    None when absent or unreadable. A date in the past means 0."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))

class RegistryConnectionError(RegistryError):
    """The registry could not be reached or dropped the connection (after all retries)."""


def redact_url(url: str) -> str:
    """``url`` without userinfo and with signature/token query values replaced by ``REDACTED``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    netloc = parts.netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = [(k, "REDACTED" if _SENSITIVE_QUERY.search(k) else v)
                 for k, v in parse_qsl(query, keep_blank_values=True)]
        query = urlencode(pairs, safe=":/")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _host_only(registry: str) -> str:
    """``h:5000`` -> ``h``; ``[::1]:5000`` -> ``[::1]``."""
    if registry.startswith("["):
        return registry[:registry.index("]") + 1]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def is_insecure(registry: str, insecure: Iterable[str] = ()) -> bool:
    """True when ``registry`` is spoken to over plain http."""
    host = _host_only(registry)
    listed = {h.strip() for h in os.environ.get("PYBUILD_INSECURE_REGISTRIES", "").split(",") if h.strip()}
    listed.update(insecure)
    return host in _LOCAL_HOSTS or registry in listed or host in listed


# -------------------------------------------------------------------- error helpers

def _error_codes(body: bytes) -> tuple[tuple[str, ...], str]:
    """Distribution ``errors[].code`` and the first message from a response body."""
    try:
        data = json.loads(body)
        errors = data.get("errors") or []
        codes = tuple(str(e.get("code")) for e in errors if isinstance(e, dict) and e.get("code"))
        msg = next((str(e.get("message")) for e in errors if isinstance(e, dict) and e.get("message")), "")
        return codes, msg
    except (ValueError, AttributeError, TypeError):
        return (), ""


# -------------------------------------------------------------------- the client

class RegistryClient:
    """The distribution API of one registry host (``host[:port]``). Thread-safe for requests;
    one ``requests.Session`` per client. Close it (or use ``with``) to release connections.

    ``credentials``: explicit credentials, or None to look them up with
    :func:`builder.registry.auth.lookup_credentials` (``anonymous=True`` to skip that).
    ``chunk_size``: blobs larger than this go up in PATCH chunks of this size; smaller ones (or
    all, when None) in one streamed PUT. ``on_response`` is called with each response (method,
    url, status) and exists for request logs and tests.
    """

    def __init__(self, registry: str, *, insecure: bool | None = None, credentials: Credentials | None = None,
                 anonymous: bool = False, retries: int = 5, backoff: float = 0.25, max_backoff: float = 8.0,
                 timeout: tuple[float, float] = (10.0, 120.0), chunk_size: int | None = None,
                 certs_dir: Path = CERTS_DIR,
                 on_response: Callable[[str, str, int], None] | None = None) -> None:
        import requests  # lazy

        self.registry = registry
        self.insecure = is_insecure(registry) if insecure is None else insecure
        scheme = "http" if self.insecure else "https"
        self.base_url = f"{scheme}://{registry}"
        self.retries = max(1, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.chunk_size = chunk_size
        self.on_response = on_response
        self._netloc = urlsplit(self.base_url).netloc.lower()
        self._session = requests.Session()
        self._session.headers["User-Agent"] = "pybuild/0.1"
        # a no-op auth hook: requests must never add ~/.netrc credentials on its own (they
        # would follow redirects to storage hosts); the Authorization header is set per request in _send_once
        self._session.auth = _no_auth
        self._verify: bool | str = True
        self._cert: tuple[str, str] | None = None
        host_dir = certs_dir / registry
        if (host_dir / "ca.crt").is_file():
            self._verify = str(host_dir / "ca.crt")
        if (host_dir / "client.cert").is_file() and (host_dir / "client.key").is_file():
            self._cert = (str(host_dir / "client.cert"), str(host_dir / "client.key"))
        if credentials is None and not anonymous:
            credentials = lookup_credentials(registry)
        self.auth = Authenticator(registry, credentials, self._session, verify=self._verify,
                                  cert=self._cert, timeout=timeout)

    # ---------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Release pooled connections."""
        self._session.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- the request loop
    def _url(self, path_or_url: str) -> str:
        return path_or_url if "://" in path_or_url else self.base_url + path_or_url

    def _sleep(self, attempt: int, retry_after: str | None = None) -> None:
        delay = min(self.max_backoff, self.backoff * (2 ** attempt)) * (0.5 + random.random() / 2)
        wanted = retry_after_seconds(retry_after)
        if wanted is not None:
            delay = min(self.max_backoff, max(delay, wanted))
        time.sleep(delay)

    def _send_once(self, method: str, url: str, *, scopes: tuple[str, ...], headers: Mapping[str, str],
                   data: Any, stream: bool) -> "requests.Response":
        """One request plus its redirects (followed by hand, credentials only to our host)
        and one re-authentication after a 401. Raises requests exceptions as they come."""
        sent_auth: str | None = None
        reauthed = False
        hops = 0
        while True:
            h = dict(headers)
            if urlsplit(url).netloc.lower() == self._netloc:
                sent_auth = self.auth.header(scopes)
                if sent_auth:
                    h["Authorization"] = sent_auth
            else:
                sent_auth = None
            resp = self._session.request(method, url, headers=h, data=data, stream=stream,
                                         allow_redirects=False, verify=self._verify, cert=self._cert,
                                         timeout=self.timeout)
            if self.on_response is not None:
                self.on_response(method, redact_url(url), resp.status_code)
            if resp.status_code == 401 and not reauthed and urlsplit(url).netloc.lower() == self._netloc:
                reauthed = True
                if self.auth.on_unauthorized(resp.headers.get("WWW-Authenticate"), scopes, sent_auth) \
                        and (data is None or isinstance(data, (bytes, str))):
                    resp.close()
                    continue
                return resp
            if resp.status_code in _REDIRECTS and "Location" in resp.headers and hops < 10:
                hops += 1
                url = urljoin(url, resp.headers["Location"])
                resp.close()
                if resp.status_code == 303 or (method == "POST" and resp.status_code in (301, 302)):
                    method, data = "GET", None
                continue
            return resp

    def request(self, method: str, path_or_url: str, *, scopes: Iterable[str] = (),
                headers: Mapping[str, str] | None = None, data: Any = None, ok: Iterable[int] = (200,),
                idempotent: bool | None = None, stream: bool = False, read_limit: int | None = None,
                what: str = "") -> tuple["requests.Response", bytes]:
        """Send a request; return the response and, when ``read_limit`` is set, its body
        (read inside the retry loop so a truncated body is retried, response closed).
        Without ``read_limit`` the body is left unread (streamed) and the caller closes the
        response. Raises RegistryError for a status outside ``ok`` and
        RegistryConnectionError when the host is unreachable.

        ``idempotent`` defaults to True for GET/HEAD/DELETE; only idempotent requests (whose
        ``data`` must then be bytes or None) are retried. ``stream`` is accepted for clarity;
        responses are always streamed."""
        import requests  # lazy

        url = self._url(path_or_url)
        scope_t = tuple(scopes)
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "DELETE")
        tries = self.retries if idempotent else 1
        okset = frozenset(ok)
        last_exc: BaseException | None = None
        for attempt in range(tries):
            try:
                resp = self._send_once(method, url, scopes=scope_t, headers=headers or {}, data=data,
                                       stream=True)
            except requests.exceptions.InvalidURL as e:
                raise RegistryError(f"invalid registry URL: {e}", method=method, url=redact_url(url)) from None
            except requests.exceptions.SSLError as e:
                raise RegistryConnectionError(
                    f"TLS error talking to {self.registry} (add its CA to {CERTS_DIR}/{self.registry}/ca.crt "
                    f"or mark it insecure): {type(e).__name__}", method=method, url=redact_url(url)) from None
            except requests.RequestException as e:
                last_exc = e
                if attempt + 1 < tries:
                    self._sleep(attempt)
                    continue
                break
            status = resp.status_code
            if status in RETRY_STATUSES and attempt + 1 < tries:
                retry_after = resp.headers.get("Retry-After")
                resp.close()
                self._sleep(attempt, retry_after)
                continue
            if status not in okset:
                raise self._error_from(resp, method, url, what)
            if read_limit is None:
                return resp, b""
            try:
                body = self._read_limited(resp, read_limit, method, url)
            except RegistryError:
                resp.close()
                raise
            except Exception as e:  # noqa: BLE001 - classified below
                resp.close()
                if not is_stream_error(e):
                    raise
                last_exc = e
                if attempt + 1 < tries:
                    self._sleep(attempt)
                    continue
                break
            resp.close()
            return resp, body
        reason = type(last_exc).__name__ if last_exc is not None else "failed"
        raise RegistryConnectionError(
            f"{what or 'request'} at {self.registry} failed after {tries} tr{'y' if tries == 1 else 'ies'}: "
            f"{reason}", method=method, url=redact_url(url))

    @staticmethod
    def _read_limited(resp: "requests.Response", limit: int, method: str, url: str) -> bytes:
        buf = bytearray()
        for piece in resp.iter_content(65536):
            buf += piece
            if len(buf) > limit:
                raise RegistryError(f"response larger than {limit} bytes", method=method,
                                    url=redact_url(url), status=resp.status_code)
        return bytes(buf)

    def _error_from(self, resp: "requests.Response", method: str, url: str, what: str) -> RegistryError:
        """Build the RegistryError for an unexpected status; closes ``resp``."""
        try:
            body = b"" if method == "HEAD" else resp.raw.read(65536, decode_content=True) or b""
        except Exception:  # noqa: BLE001 - the body is only decoration
            body = b""
        finally:
            resp.close()
        codes, msg = _error_codes(body)
        status = resp.status_code
        if status == 401:
            who = self.auth.credentials
            if who is not None:
                text = f"registry {self.registry} rejected the credentials of user {who.username!r}"
            else:
                text = f"registry {self.registry} requires authentication (log in first)"
        elif status == 403:
            text = f"registry {self.registry} denied access"
        elif status == 404:
            text = f"{what or 'resource'} not found on {self.registry}"
        else:
            text = f"{what or 'request'} failed on {self.registry}"
        if msg:
            text += f" ({msg})"
        return RegistryError(text, method=method, url=redact_url(url), status=status, codes=codes)

    # ---------------------------------------------------------------- API: ping / catalog
    def ping(self) -> None:
        """``GET /v2/``: checks the registry speaks v2 and, with credentials, that they work.
        Raises RegistryError otherwise."""
        self.request("GET", "/v2/", read_limit=65536, what="API check")

    # ---------------------------------------------------------------- API: manifests
    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, Digest]:
        """Fetch a manifest or index by tag or digest: (raw bytes, media type, digest).

        Verifies the bytes against ``reference`` when it is a digest, else against the
        ``Docker-Content-Digest`` header when the registry sends a sha256 one. Bodies beyond
        4 MiB are refused."""
        path = f"/v2/{repository}/manifests/{reference}"
        want: Digest | None = None
        if reference.startswith(("sha256:", "sha512:")):
            try:
                want = Digest.parse(reference)
            except ValueError:
                raise RegistryError(f"invalid digest {reference!r}") from None
        for attempt in range(self.retries):
            resp, body = self.request("GET", path, scopes=(repository_scope(repository),),
                                      headers={"Accept": ", ".join(MANIFEST_ACCEPT)},
                                      read_limit=MAX_MANIFEST_SIZE, what=f"manifest {_shown(repository, reference)}")
            header = resp.headers.get("Docker-Content-Digest", "")
            check = want
            if check is None and header.startswith("sha256:"):
                try:
                    check = Digest.parse(header)
                except ValueError:
                    check = None
            algo = check.algorithm if check else "sha256"
            got = Digest(algo, hashlib.new(algo, body).hexdigest())
            if check is not None and got != check:
                if attempt + 1 < self.retries:
                    self._sleep(attempt)
                    continue
                raise RegistryError(f"manifest {repository}:{reference} from {self.registry} has digest {got}, "
                                    f"expected {check}", method="GET", url=redact_url(self._url(path)))
            media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
            if media_type not in MANIFEST_ACCEPT:
                media_type = _media_type_of(body) or media_type
            why = mt.contradiction(body, media_type)
            if why is not None:
                raise RegistryError(f"manifest {repository}:{reference} from {self.registry}: {why}",
                                    method="GET", url=redact_url(self._url(path)))
            return body, media_type, got
        raise AssertionError("unreachable")  # pragma: no cover

    def head_manifest(self, repository: str, reference: str) -> tuple[Digest, str, int] | None:
        """(digest, media type, size) of a manifest, or None when it does not exist."""
        path = f"/v2/{repository}/manifests/{reference}"
        resp, _ = self.request("HEAD", path, scopes=(repository_scope(repository),),
                               headers={"Accept": ", ".join(MANIFEST_ACCEPT)}, ok=(200, 404),
                               what=f"manifest {_shown(repository, reference)}")
        resp.close()
        if resp.status_code == 404:
            return None
        try:
            digest = Digest.parse(resp.headers.get("Docker-Content-Digest", ""))
        except ValueError:
            raise RegistryError(f"registry {self.registry} sent no valid Docker-Content-Digest",
                                method="HEAD", url=redact_url(self._url(path)), status=resp.status_code) from None
        return digest, resp.headers.get("Content-Type", "").split(";")[0], int(resp.headers.get("Content-Length", 0))

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> Digest:
        """PUT manifest bytes unchanged under a tag or their digest; returns their digest."""
        digest = Digest.of_bytes(data)
        path = f"/v2/{repository}/manifests/{reference}"
        resp, _ = self.request("PUT", path, scopes=(repository_scope(repository, push=True),),
                               headers={"Content-Type": media_type}, data=data, ok=(200, 201, 202),
                               idempotent=True, what=f"manifest upload {_shown(repository, reference)}")
        resp.close()
        header = resp.headers.get("Docker-Content-Digest")
        if header and header.startswith("sha256:") and header != str(digest):
            raise RegistryError(f"registry {self.registry} stored manifest as {header}, expected {digest}",
                                method="PUT", url=redact_url(self._url(path)), status=resp.status_code)
        return digest

    def delete_manifest(self, repository: str, digest: Digest) -> None:
        """DELETE a manifest by digest (the registry must allow deletes)."""
        resp, _ = self.request("DELETE", f"/v2/{repository}/manifests/{digest}",
                               scopes=(f"repository:{repository}:delete",), ok=(200, 202),
                               what=f"manifest delete {repository}@{digest}")
        resp.close()

    # ---------------------------------------------------------------- API: blobs
    def blob_size(self, repository: str, digest: Digest) -> int | None:
        """HEAD a blob: its size, or None when the repository does not have it."""
        resp, _ = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", scopes=(repository_scope(repository),),
                               ok=(200, 404), what=f"blob {digest.short}")
        resp.close()
        if resp.status_code == 404:
            return None
        try:
            return int(resp.headers.get("Content-Length", "-1"))
        except ValueError:
            return -1

    def has_blob(self, repository: str, digest: Digest) -> bool:
        return self.blob_size(repository, digest) is not None

    def open_blob(self, repository: str, digest: Digest, size: int | None = None,
                  max_resumes: int | None = None) -> BlobReader:
        """A verifying, resuming reader of a blob (see :class:`BlobReader`); caller closes it."""
        return BlobReader(self, repository, digest, size, self.retries if max_resumes is None else max_resumes)

    def _get_blob(self, repository: str, digest: Digest, offset: int) -> "requests.Response":
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        resp, _ = self.request("GET", f"/v2/{repository}/blobs/{digest}", scopes=(repository_scope(repository),),
                               headers=headers, ok=(200, 206, 416) if offset else (200,), stream=True,
                               what=f"blob {digest.short}")
        return resp

    def upload_blob(self, repository: str, digest: Digest, size: int, stream: BinaryIO,
                    mount_from: Iterable[str] = ()) -> str:
        """Make ``repository`` hold the blob. Returns how: ``"exists"``, ``"mounted"`` or
        ``"uploaded"``.

        HEAD first; then a cross-repo mount from each of ``mount_from`` (same registry) in
        turn; then POST + monolithic PUT (or PATCH chunks + PUT) streaming from ``stream``
        (never closed here), hashing as it goes; the final PUT is never sent for bytes that
        do not match ``digest``/``size``. A failed attempt restarts from a fresh session when
        ``stream`` is seekable."""
        what = f"blob {digest.short} to {self.registry}/{repository}"
        if self.has_blob(repository, digest):
            return "exists"
        sources = [r for r in dict.fromkeys(mount_from) if r != repository]
        start = stream.tell() if _seekable(stream) else None
        tries = self.retries if start is not None else 1
        for attempt in range(tries):
            try:
                location = None
                for src in sources:
                    location = self._start_upload(repository, digest, src, what)
                    if location is None:
                        return "mounted"
                    break  # a refused mount still opened a session: use it
                if location is None:
                    location = self._start_upload(repository, digest, None, what)
                    assert location is not None
                if self.chunk_size is None or size <= self.chunk_size:
                    self._put_monolithic(repository, location, digest, size, stream, what)
                else:
                    self._put_chunked(repository, location, digest, size, stream, what)
                return "uploaded"
            except RegistryError as e:
                transient = isinstance(e, RegistryConnectionError) or e.status in RETRY_STATUSES
                if not transient or attempt + 1 >= tries:
                    raise
                self._sleep(attempt)
                if self.has_blob(repository, digest):
                    return "exists"
                assert start is not None
                stream.seek(start)
        raise AssertionError("unreachable")  # pragma: no cover

    def _start_upload(self, repository: str, digest: Digest, mount_from: str | None, what: str) -> str | None:
        """POST an upload session (or a mount); returns its Location, or None when mounted."""
        scopes = [repository_scope(repository, push=True)]
        path = f"/v2/{repository}/blobs/uploads/"
        if mount_from:
            scopes.append(repository_scope(mount_from))
            path += "?" + urlencode({"mount": str(digest), "from": mount_from})
        resp, _ = self._guard(lambda: self.request("POST", path, scopes=scopes, ok=(201, 202), idempotent=False,
                                                   headers={"Content-Length": "0"}, what=what), "POST", path, what)
        resp.close()
        if resp.status_code == 201:
            return None
        loc = resp.headers.get("Location")
        if not loc:
            raise RegistryError(f"registry {self.registry} opened an upload without a Location",
                                method="POST", url=redact_url(self._url(path)), status=resp.status_code)
        return urljoin(self._url(path), str(loc))

    def _guard(self, fn: Callable[[], Any], method: str, url: str, what: str) -> Any:
        """Run one non-idempotent request, turning stray stream errors into RegistryConnectionError."""
        try:
            return fn()
        except RegistryError:
            raise
        except Exception as e:  # noqa: BLE001 - classified
            if is_stream_error(e):
                raise RegistryConnectionError(f"{what}: connection failed ({type(e).__name__})",
                                              method=method, url=redact_url(self._url(url))) from None
            raise

    def _put_monolithic(self, repository: str, location: str, digest: Digest, size: int, stream: BinaryIO,
                        what: str) -> None:
        body = HashingBody(stream, size, hasher_for(digest), final_digest=digest, final_size=size, what=what)
        url = _with_query(location, digest=str(digest))
        resp, _ = self._guard(lambda: self.request(
            "PUT", url, scopes=(repository_scope(repository, push=True),), data=body if size else b"",
            headers={"Content-Type": "application/octet-stream"}, ok=(201, 204), idempotent=False, what=what),
            "PUT", url, what)
        resp.close()

    def _put_chunked(self, repository: str, location: str, digest: Digest, size: int, stream: BinaryIO,
                     what: str) -> None:
        assert self.chunk_size is not None
        hasher = hasher_for(digest)
        scopes = (repository_scope(repository, push=True),)
        offset = 0
        while offset < size:
            n = min(self.chunk_size, size - offset)
            body = HashingBody(stream, n, hasher, final_digest=None, final_size=size, what=what)
            loc = location
            resp, _ = self._guard(lambda: self.request(  # called within this iteration  # noqa: B023
                "PATCH", loc, scopes=scopes, data=body, ok=(202,), idempotent=False, what=what,  # noqa: B023
                headers={"Content-Type": "application/octet-stream",
                         "Content-Range": f"{offset}-{offset + n - 1}"}), "PATCH", loc, what)  # noqa: B023
            resp.close()
            offset += n
            if resp.headers.get("Location"):
                location = urljoin(location, resp.headers["Location"])
        got = Digest(digest.algorithm, hasher.hexdigest())
        if got != digest:
            try:
                r, _ = self.request("DELETE", location, scopes=scopes, ok=(204, 404), what=what)
                r.close()
            except RegistryError:
                pass
            raise RegistryError(f"{what}: content is {got}, not {digest}; not uploaded")
        url = _with_query(location, digest=str(digest))
        resp, _ = self._guard(lambda: self.request("PUT", url, scopes=scopes, data=b"", ok=(201, 204),
                                                   idempotent=False, what=what), "PUT", url, what)
        resp.close()


def _no_auth(request: Any) -> Any:
    return request


def _seekable(stream: BinaryIO) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    q = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(q), ""))


def _media_type_of(body: bytes) -> str | None:
    """The ``mediaType`` field of a manifest, or a guess from its shape."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("mediaType"), str):
        return str(data["mediaType"])
    if "manifests" in data:
        return mt.OCI_INDEX
    if "layers" in data:
        return mt.OCI_MANIFEST
    return None


# -------------------------------------------------------------------- login / logout

def login(registry: str, username: str, password: str, *, insecure: bool | None = None,
          config_path: Path | None = None) -> Path | None:
    """Check the credentials against ``registry`` (``GET /v2/``, fetching a token when asked)
    and store them (see :func:`builder.registry.auth.store_credentials`). Raises RegistryError
    naming the registry when they are refused; nothing is stored then."""
    creds = Credentials(username, password)
    with RegistryClient(registry, insecure=insecure, credentials=creds) as client:
        client.ping()
        if client.auth.scheme == "bearer":
            client.auth.header(())  # the token server must accept them too
    return store_credentials(registry, creds, config_path)


def logout(registry: str, *, config_path: Path | None = None) -> bool:
    """Forget stored credentials for ``registry``; True when some were removed."""
    return erase_credentials(registry, config_path)


def _shown(repository: str, reference: str) -> str:
    """``repo:tag`` or ``repo@sha256:...`` as a reference is written."""
    return f"{repository}{'@' if ':' in reference else ':'}{reference}"
