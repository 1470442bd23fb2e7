"""Layer compression: media types, detection and streaming decompression.

Compression names used across pybuild: ``"gzip"``, ``"zstd"``, ``"uncompressed"`` (the only
ones pybuild writes) plus ``"bzip2"`` and ``"xz"`` (read only, as Docker accepts them).
``zstandard`` is imported lazily, only when a zstd stream is actually opened.
"""

from __future__ import annotations

import io
from typing import BinaryIO

from ..errors import PybuildError

GZIP = "gzip"
ZSTD = "zstd"
UNCOMPRESSED = "uncompressed"
BZIP2 = "bzip2"
XZ = "xz"

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
_WRITE_MEDIA_TYPES: dict[str, str] = {
    UNCOMPRESSED: OCI_LAYER,
    GZIP: OCI_LAYER + "+gzip",
    ZSTD: OCI_LAYER + "+zstd",
}
_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
_DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar"
_OCI_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
_READ_MEDIA_TYPES: dict[str, str] = {
    OCI_LAYER: UNCOMPRESSED,
    OCI_LAYER + "+gzip": GZIP,
    OCI_LAYER + "+zstd": ZSTD,
    _OCI_NONDIST: UNCOMPRESSED,
    _OCI_NONDIST + "+gzip": GZIP,
    _OCI_NONDIST + "+zstd": ZSTD,
    _DOCKER_LAYER: UNCOMPRESSED,
    _DOCKER_LAYER + ".gzip": GZIP,
    _DOCKER_LAYER + ".zstd": ZSTD,
    _DOCKER_FOREIGN + ".gzip": GZIP,
}


class CompressionError(PybuildError):
    """An unknown compression or media type, or a corrupt compressed stream."""

    exit_code = 4


def media_type_for(compression: str) -> str:
    """The OCI layer media type pybuild writes for ``compression`` (gzip, zstd, uncompressed).

    Raises CompressionError for anything else.
    """
    try:
        return _WRITE_MEDIA_TYPES[compression]
    except KeyError:
        raise CompressionError(f"cannot write layers with compression {compression!r}") from None


def compression_for_media_type(media_type: str) -> str:
    """The compression of a layer blob of ``media_type`` (OCI and Docker layer types).

    Raises CompressionError for a media type that is not a layer tar.
    """
    try:
        return _READ_MEDIA_TYPES[media_type]
    except KeyError:
        raise CompressionError(f"unsupported layer media type {media_type!r}") from None


def detect_compression(first_bytes: bytes) -> str | None:
    """Sniff the compression from the first bytes of a blob (at least 6 bytes for xz).

    Returns "gzip", "zstd", "bzip2", "xz", or None for anything else (e.g. a plain tar).
    """
    if first_bytes.startswith(b"\x1f\x8b"):
        return GZIP
    if first_bytes.startswith(b"\x28\xb5\x2f\xfd"):
        return ZSTD
    if first_bytes.startswith(b"BZh"):
        return BZIP2
    if first_bytes.startswith(b"\xfd7zXZ\x00"):
        return XZ
    return None


class ReadThrough(io.RawIOBase):
    """A raw reader passing ``inner.read`` through; subclasses add checks or hashing in
    :meth:`_read`. Closing it leaves ``inner`` open unless ``owns`` (then it closes it)."""

    def __init__(self, inner: BinaryIO, *, owns: bool = False) -> None:
        self._inner = inner
        self._owns = owns

    def readable(self) -> bool:
        return True

    def _read(self, n: int) -> bytes:
        return self._inner.read(n)

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._read(len(b))
        n = len(data)
        b[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            try:
                if self._owns:
                    self._inner.close()
            finally:
                super().close()


class _GuardedReader(ReadThrough):
    """Turns decompressor exceptions into CompressionError. Closing it closes ``inner``."""

    def __init__(self, inner: BinaryIO, compression: str) -> None:
        super().__init__(inner, owns=True)
        self._compression = compression

    def _read(self, n: int) -> bytes:
        try:
            return self._inner.read(n)
        except (OSError, EOFError, ValueError) as exc:
            raise CompressionError(f"corrupt {self._compression} stream: {exc}") from exc
        except Exception as exc:  # zstandard.ZstdError, lzma.LZMAError, zlib.error, IsalError
            if type(exc).__name__ in ("ZstdError", "LZMAError", "error", "IsalError"):
                raise CompressionError(f"corrupt {self._compression} stream: {exc}") from exc
            raise


def open_decompressed(stream: BinaryIO, compression: str | None) -> BinaryIO:
    """A readable binary stream of the decompressed content of ``stream``.

    ``compression`` is "gzip", "zstd", "bzip2", "xz", "uncompressed"/None (passed through), or
    "auto" (sniffed from the first bytes; ``stream`` is wrapped in a BufferedReader if it
    cannot peek). Decompression errors surface as CompressionError on read. Closing the returned
    stream closes ``stream``. Reads are streamed: memory stays bounded.
    """
    if compression == "auto":
        if not hasattr(stream, "peek"):
            stream = io.BufferedReader(stream)  # type: ignore[type-var]
        compression = detect_compression(stream.peek(8)[:8]) or UNCOMPRESSED
    if compression in (None, UNCOMPRESSED):
        return stream
    if compression == GZIP:
        from .gz import open_reader

        inner: BinaryIO = open_reader(stream)
        owned = True
    elif compression == ZSTD:
        import zstandard

        inner = zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True,
                                                           closefd=True)
        owned = False
    elif compression == BZIP2:
        import bz2

        inner = bz2.BZ2File(stream, mode="rb")  # type: ignore[assignment]
        owned = True
    elif compression == XZ:
        import lzma

        inner = lzma.LZMAFile(stream, mode="rb")  # type: ignore[assignment]
        owned = True
    else:
        raise CompressionError(f"unknown compression {compression!r}")
    guarded = _GuardedReader(_ClosingPair(inner, stream) if owned else inner, compression)  # type: ignore[arg-type]
    return io.BufferedReader(guarded, buffer_size=1 << 20)


class _ClosingPair:
    """Reads from ``inner``; closing closes ``inner`` then ``outer`` (the raw stream)."""

    def __init__(self, inner: BinaryIO, outer: BinaryIO) -> None:
        self._inner = inner
        self._outer = outer

    def read(self, n: int = -1) -> bytes:
        return self._inner.read(n)

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._outer.close()


class HashingReader(ReadThrough):
    """Passes reads through from ``inner`` while hashing them (sha256).

    ``hexdigest()`` covers every byte read so far; call ``drain()`` first to include the rest.
    Closing this closes ``inner``.
    """

    def __init__(self, inner: BinaryIO) -> None:
        import hashlib

        super().__init__(inner, owns=True)
        self._hash = hashlib.sha256()
        self.count = 0

    def _read(self, n: int) -> bytes:
        data = self._inner.read(n)
        self._hash.update(data)
        self.count += len(data)
        return data

    def read(self, n: int = -1) -> bytes:
        return self._read(n)

    def drain(self) -> None:
        """Read (and hash) everything left."""
        while True:
            chunk = self.read(1 << 20)
            if not chunk:
                return

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
