"""ADD of an http(s) URL: download to a scratch file, verify, emit one FILE entry.

Docker/BuildKit rules: the file name is the last component of the URL path
(``__unnamed__`` when there is none); a destination ending with ``/`` (or an existing
directory) receives ``dest/<name>``, otherwise the file is written at ``dest``; mode 0600
unless ``--chmod``; owner 0:0 unless ``--chown``; mtime from ``Last-Modified`` when the
server sends one (0 otherwise); the content is never extracted. ``--checksum=<algo>:<hex>``
(sha256, sha384, sha512) is verified while downloading.

The downloaded file lives under the caller's ``scratch`` directory; **the caller deletes it**
(``Download.path``) once the layer is written. On error it is removed here.
Errors: :class:`FetchError` naming the URL (credentials redacted).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
import tempfile
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from ..layer.entries import Entry, EntryType
from .chmod import Chmod, as_chmod
from .context import CopyError
from .pathresolve import FsView, normalize, resolve_in_root

UNNAMED = "__unnamed__"
URL_FILE_MODE = 0o600
_CHUNK = 1 << 20
_ALGOS = {"sha256": 64, "sha384": 96, "sha512": 128}


class FetchError(CopyError):
    """Downloading an ADD URL failed or its checksum did not match."""


@dataclass(frozen=True, slots=True)
class Download:
    """A downloaded URL: ``path`` (caller deletes), its file ``name``, ``size``,
    ``mtime`` from Last-Modified (None when absent) and the ``sha256:`` digest of the body."""

    path: Path
    name: str
    size: int
    mtime: int | None
    digest: str


def is_url(source: str) -> bool:
    """True for ``http://`` and ``https://`` sources (the only URLs ADD fetches)."""
    return source.startswith(("http://", "https://"))


def redact(url: str) -> str:
    """The URL with any user:password removed (for messages)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def url_filename(url: str) -> str:
    """The file name ADD gives a URL: its path's last component, or ``__unnamed__``."""
    base = posixpath.basename(unquote(urlsplit(url).path))
    return base if base not in ("", ".", "/", "..") else UNNAMED


def parse_checksum(checksum: str) -> tuple[str, str]:
    """``sha256:<hex>`` -> (algorithm, lower-case hex); FetchError when malformed."""
    algo, sep, hexpart = checksum.strip().partition(":")
    algo = algo.lower()
    hexpart = hexpart.lower()
    if not sep or algo not in _ALGOS or len(hexpart) != _ALGOS[algo] \
            or any(c not in "0123456789abcdef" for c in hexpart):
        raise FetchError(f"invalid checksum {checksum!r}: expected sha256:<64 hex digits>")
    return algo, hexpart


def fetch_url(url: str, scratch: Path, *, checksum: str | None = None,
              timeout: float = 60.0) -> Download:
    """Download ``url`` into a new file under ``scratch``, streaming and hashing it.

    Raises FetchError on a non-2xx status, a network error, or a checksum mismatch (naming
    the URL, the expected and the actual digest). The caller deletes ``Download.path``.
    """
    import requests  # heavy: imported only when a URL is really added

    shown = redact(url)
    expected = parse_checksum(checksum) if checksum else None
    scratch.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="url-", dir=scratch)
    path = Path(tmp)
    try:
        sha = hashlib.sha256()
        check = hashlib.new(expected[0]) if expected and expected[0] != "sha256" else None
        size = 0
        try:
            with requests.get(url, stream=True, timeout=timeout) as resp:
                if not 200 <= resp.status_code < 300:
                    raise FetchError(f"failed to fetch {shown}: HTTP {resp.status_code} "
                                     f"{resp.reason or ''}".rstrip())
                last_modified = resp.headers.get("Last-Modified")
                with os.fdopen(fd, "wb") as out:
                    fd = -1
                    for chunk in resp.iter_content(chunk_size=_CHUNK):
                        if not chunk:
                            continue
                        out.write(chunk)
                        sha.update(chunk)
                        if check is not None:
                            check.update(chunk)
                        size += len(chunk)
        except requests.RequestException as exc:
            raise FetchError(f"failed to fetch {shown}: {exc.__class__.__name__}: {exc}") from None
        if expected is not None:
            actual = (check or sha).hexdigest()
            if actual != expected[1]:
                raise FetchError(f"checksum mismatch for {shown}: expected "
                                 f"{expected[0]}:{expected[1]}, got {expected[0]}:{actual}")
        return Download(path=path, name=url_filename(url), size=size,
                        mtime=_http_time(last_modified), digest="sha256:" + sha.hexdigest())
    except BaseException:
        if fd >= 0:
            os.close(fd)
        path.unlink(missing_ok=True)
        raise


def _http_time(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return max(int(parsedate_to_datetime(value).timestamp()), 0)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def url_entries(download: Download, dest: str, *, dest_view: FsView,
                chown: tuple[int, int] | None = None, chmod: Chmod | int | None = None,
                mtime_clamp: int | None = None) -> list[Entry]:
    """Entries placing a downloaded file at ``dest`` (see the module rules), with the
    destination's parent directories (existing ones with their metadata, missing ones 0755)."""
    from .copy import _Emitter

    dest_real = resolve_in_root(dest_view, normalize(dest), follow_last=True)
    st = dest_view.lstat(dest_real)
    into_dir = dest.endswith("/") or dest.endswith("/.") or (st is not None and stat.S_ISDIR(st.st_mode))
    target = posixpath.join(dest_real, download.name) if into_dir else dest_real
    emit = _Emitter(dest_view=dest_view, chown=chown, chmod=None, keep_owner=False,
                    keep_xattrs=False, mtime_clamp=mtime_clamp)
    emit.ensure_parents(target)
    uid, gid = chown if chown is not None else (0, 0)
    mtime = download.mtime or 0
    if mtime_clamp is not None:
        mtime = min(mtime, mtime_clamp)
    spec = as_chmod(chmod)
    emit.put(Entry(name=target.strip("/"), type=EntryType.FILE,
                   mode=spec.apply(URL_FILE_MODE, False) if spec is not None else URL_FILE_MODE, uid=uid, gid=gid,
                   mtime=mtime, size=download.size, source=str(download.path)))
    return list(emit.entries.values())
