"""Blob bodies on the wire: :class:`BlobReader` (a verifying, resuming download stream) and
the hashing upload body used by :class:`builder.registry.client.RegistryClient`.

Both hold at most one read buffer (1 MiB) of the blob; neither closes the caller's streams.
"""

from __future__ import annotations

import hashlib
import io
import re
from typing import TYPE_CHECKING, Any, BinaryIO, Iterator

from ..digest import Digest
from ..errors import RegistryError
from .locations import note_blob_location

if TYPE_CHECKING:  # pragma: no cover
    from .client import RegistryClient

READ_SIZE = 1 << 20


def redact(url: str) -> str:
    from .client import redact_url
    return redact_url(url)


def is_stream_error(exc: BaseException) -> bool:
    """True for the exceptions a dropped or truncated connection raises while reading."""
    import requests
    import urllib3.exceptions as ue
    return isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                            requests.exceptions.Timeout, ue.ProtocolError, ue.ReadTimeoutError,
                            ue.IncompleteRead, ConnectionError, TimeoutError))


class HashingBody:
    """An upload body of exactly ``length`` bytes read from ``stream``, hashed into ``hasher``.

    Iterable with ``len()`` so requests sends a Content-Length and streams 1 MiB pieces. When
    ``final_digest`` is given, the hash is checked before the last piece is yielded and a
    mismatch raises RegistryError, aborting the request so the registry commits nothing."""

    def __init__(self, stream: BinaryIO, length: int, hasher: Any, *, final_digest: Digest | None,
                 final_size: int, what: str) -> None:
        self._stream, self._length, self._hasher = stream, length, hasher
        self._final_digest, self._final_size, self._what = final_digest, final_size, what
        self.sent = 0

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        remaining = self._length
        while remaining > 0:
            piece = self._stream.read(min(READ_SIZE, remaining))
            if not piece:
                raise RegistryError(f"{self._what}: source stream ended {remaining} bytes early")
            remaining -= len(piece)
            self._hasher.update(piece)
            if remaining == 0 and self._final_digest is not None:
                got = Digest(self._final_digest.algorithm, self._hasher.hexdigest())
                if got != self._final_digest:
                    raise RegistryError(f"{self._what}: content is {got}, not {self._final_digest}; not uploaded")
            self.sent += len(piece)
            yield piece


def hasher_for(digest: Digest) -> Any:
    return hashlib.new(digest.algorithm)


class BlobReader(io.RawIOBase):
    """A readable stream of one blob that verifies as it goes.

    Reads hash the bytes; a dropped or truncated connection is resumed with ``Range`` (at most
    ``max_resumes`` times; a registry that ignores Range is re-read and the known prefix
    skipped). At the end, a size or digest mismatch raises RegistryError instead of EOF, so a
    consumer that reads to EOF never accepts corrupt bytes. ``close()`` releases the connection.
    """

    def __init__(self, client: RegistryClient, repository: str, digest: Digest, size: int | None,
                 max_resumes: int) -> None:
        super().__init__()
        self._client, self._repo, self._digest = client, repository, digest
        self._hasher = hasher_for(digest)
        self._pos = 0
        self._resumes = 0
        self._max_resumes = max_resumes
        self._done = False
        self._resp = client._get_blob(repository, digest, 0)
        length = self._resp.headers.get("Content-Length")
        self.size = size if size is not None else (int(length) if length and length.isdigit() else None)
        self.resumes = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all the rest when negative); ``b""`` only at a verified end."""
        if size is None or size < 0:
            return self.readall()
        return self._read_chunk(size)

    def readall(self) -> bytes:
        parts = []
        while piece := self._read_chunk(READ_SIZE):
            parts.append(piece)
        return b"".join(parts)

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        data = self._read_chunk(len(view))
        view[:len(data)] = data
        return len(data)

    def _read_chunk(self, size: int) -> bytes:
        if self._done or size == 0:
            return b""
        while True:
            try:
                data = self._resp.raw.read(size, decode_content=False)
            except Exception as e:  # noqa: BLE001 - classified
                if not is_stream_error(e):
                    raise
                self._resume(type(e).__name__)
                continue
            if data:
                self._hasher.update(data)
                self._pos += len(data)
                if self.size is not None and self._pos > self.size:
                    self._fail(f"is longer than {self.size} bytes")
                return data
            if self.size is not None and self._pos < self.size:
                self._resume("short body")
                continue
            self._finish()
            return b""

    def _resume(self, reason: str) -> None:
        self._resumes += 1
        self.resumes = self._resumes
        if self._resumes > self._max_resumes:
            self._fail(f"download kept failing ({reason}) after {self._pos} bytes")
        self._resp.close()
        self._client._sleep(self._resumes - 1)
        from .client import RegistryConnectionError
        try:
            resp = self._client._get_blob(self._repo, self._digest, self._pos)
        except RegistryConnectionError:
            self._resume(reason)  # counts as another failure, bounded above
            return
        if resp.status_code == 416:  # nothing beyond what we have: the blob is shorter than expected
            resp.close()
            self._fail(f"has {self._pos} bytes, expected {self.size}")
        if resp.status_code == 206:
            crange = resp.headers.get("Content-Range", "")
            m = re.match(r"bytes (\d+)-", crange)
            if not m or int(m.group(1)) != self._pos:
                resp.close()
                self._fail(f"registry answered Range {self._pos}- with {crange!r}")
        else:  # 200: the whole blob again; skip what we have
            skip = self._pos
            try:
                while skip:
                    piece = resp.raw.read(min(skip, READ_SIZE), decode_content=False)
                    if not piece:
                        break
                    skip -= len(piece)
            except Exception as e:  # noqa: BLE001
                if not is_stream_error(e):
                    raise
                skip = -1
            if skip:
                self._resp = resp
                self._resume("short body while skipping")
                return
        self._resp = resp

    def _fail(self, why: str) -> None:
        self._done = True
        self._resp.close()
        raise RegistryError(f"blob {self._digest} from {self._client.registry}/{self._repo} {why}",
                            method="GET", url=redact(self._client._url(f"/v2/{self._repo}/blobs/{self._digest}")))

    def _finish(self) -> None:
        got = Digest(self._digest.algorithm, self._hasher.hexdigest())
        if self.size is not None and self._pos != self.size:
            self._fail(f"has {self._pos} bytes, expected {self.size}")
        if got != self._digest:
            self._fail(f"has digest {got}")
        self._done = True
        self._resp.close()
        note_blob_location(self._client.registry, self._repo, self._digest)

    def close(self) -> None:
        if not self.closed:
            self._resp.close()
        super().close()
