"""A context given as a byte stream (stdin, a downloaded file): tar (plain, gzip, bzip2, xz,
zstd) or a lone Dockerfile, with Docker's rule: a stream that starts like a compressed file or
a tar header is a context archive; anything else is a Dockerfile and the context is empty.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

from ..errors import UsageError

MAX_DOCKERFILE = 16 << 20


class _Prefixed(io.RawIOBase):
    """``head`` then the rest of ``rest`` (not closed here)."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buf))
        buf[:len(data)] = data
        return len(data)


def is_archive_head(head: bytes) -> bool:
    """Docker's test on a stream's first 512 bytes: compressed, or a tar header."""
    from ..engine.archive import _is_tar_header, detect_compression

    return detect_compression(head[:8]) is not None or _is_tar_header(head)


def unpack_stream(stream: BinaryIO, dest: Path, dockerfile: Path, what: str) -> bool:
    """Read ``stream`` to its end: an archive is extracted into the new directory ``dest``
    (True); otherwise ``dest`` is made empty and the bytes are written to ``dockerfile``
    (outside ``dest``) (False). ``what``
    names the input in errors (``stdin``, a redacted URL). Ownership is not kept (COPY from a
    context writes 0:0). Raises UsageError for a corrupt archive or an oversized Dockerfile;
    the caller removes ``dest`` on error."""
    from ..engine.archive import _read_exact

    dest.mkdir(parents=True)
    head = _read_exact(stream, 512)
    if head and is_archive_head(head):
        from ..errors import PybuildError
        from ..layer.extract import extract_layer

        try:
            extract_layer(io.BufferedReader(_Prefixed(head, stream), 1 << 20), dest, mode="flatten",
                          compression="auto", same_owner=False)
        except PybuildError as exc:
            raise UsageError(f"context from {what}: {exc.render()}") from None
        return True
    rest = stream.read(MAX_DOCKERFILE + 1 - len(head))
    if len(head) + len(rest) > MAX_DOCKERFILE:
        raise UsageError(f"Dockerfile from {what} is larger than {MAX_DOCKERFILE >> 20} MiB")
    dockerfile.parent.mkdir(parents=True, exist_ok=True)
    dockerfile.write_bytes(head + rest)
    return False
