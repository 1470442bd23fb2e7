"""gzip for every layer pybuild writes or reads: ISA-L (PyPI ``isal``) when it can be imported,
zlib otherwise. The one place that knows which.

Backend detection (:func:`backend`, decided once per process, on first use): ``isal`` when
``from isal import isal_zlib, igzip`` works and ``isal_zlib`` has ``_ParallelCompress`` (the
GIL-free block compressor, isal >= 1.5); ``zlib`` when the import fails (no wheel for this
platform, a build without the C extension). ``PYBUILD_GZIP=zlib`` in the environment forces
zlib (for comparisons and tests).

Output format (both backends): one gzip member with a fixed 10-byte header (no name, mtime 0,
XFL 4 for the fast levels / 2 for level 9 / 0 otherwise, OS 255); the input is cut into
:data:`BLOCK`-byte blocks, each deflated on its own with the previous 32 KiB as its
dictionary and ended with a sync flush (as pigz does), then an empty final block and the
CRC-32/size trailer. The bytes therefore depend only on the input, the level and the backend:
not on how the input is split between calls nor on how many threads compress. The two
backends give different bytes (different digests) for the same input; each is deterministic.

Levels (buildx ``compression-level``, gzip's 0-9; None or -1 = pybuild's default, 1): zlib
uses them as they are. ISA-L has levels 0-3 and they are mapped: 0 -> 0, 1-3 -> 1, 4-6 -> 2,
7-9 -> 3 (ISA-L's 1 is about ``gzip -1``'s size, its 3 about ``gzip -6``'s; its level 0 is a
fixed-table code that grows incompressible data by ~20%, the nearest thing to gzip's "store").
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO, Callable, Protocol, Union

from ..errors import PybuildError

Buffer = Union[bytes, bytearray, memoryview]

BLOCK = 1 << 20            # input bytes per independent deflate block
_WINDOW = 32768            # deflate's dictionary size
_FINAL = b"\x03\x00"       # an empty final block (fixed Huffman)
DEFAULT_LEVEL = 1

_backend: str | None = None


class GzipLevelError(PybuildError):
    """A gzip compression level outside -1..9."""

    exit_code = 2


def backend() -> str:
    """``"isal"`` or ``"zlib"`` (see the module docstring); decided once per process."""
    global _backend
    if _backend is None:
        _backend = "zlib"
        if os.environ.get("PYBUILD_GZIP", "").lower() != "zlib":
            try:
                from isal import igzip, isal_zlib  # noqa: F401

                if hasattr(isal_zlib, "_ParallelCompress"):
                    _backend = "isal"
            except ImportError:
                pass
    return _backend


def backend_level(level: int | None) -> int:
    """The backend's level for a buildx gzip ``level`` (0-9; None or -1: the default).
    Raises GzipLevelError outside -1..9."""
    if level is None or level == -1:
        level = DEFAULT_LEVEL
    if not 0 <= level <= 9:
        raise GzipLevelError(f"compression-level={level}: gzip levels are 0-9")
    if backend() == "zlib":
        return level
    return 0 if level == 0 else 1 if level <= 3 else 2 if level <= 6 else 3


_BlockCompressor = Callable[[Buffer, Buffer], "tuple[bytes, int | None]"]


def block_compressor(level: int | None = None) -> _BlockCompressor:
    """A function ``(block, zdict) -> (deflate bytes ending in a sync flush, crc)`` for one
    :data:`BLOCK` (or shorter, final) piece, ``zdict`` being the previous 32 KiB (empty for the
    first). ``crc`` is the block's CRC-32 with isal, None with zlib (the caller chains
    ``zlib.crc32`` itself: zlib has no public crc32_combine). Each returned function owns its
    buffers: use one per thread. The isal one releases the GIL while it works."""
    lvl = backend_level(level)
    if backend() == "isal":
        from isal import isal_zlib

        pc = isal_zlib._ParallelCompress(2 * BLOCK + 500, lvl)  # level 0 never stores: up to 2x
        compress_and_crc: _BlockCompressor = pc.compress_and_crc
        return compress_and_crc
    import zlib

    def compress(block: Buffer, zdict: Buffer) -> tuple[bytes, int | None]:
        if len(memoryview(zdict)):
            c = zlib.compressobj(lvl, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, zdict)
        else:
            c = zlib.compressobj(lvl, zlib.DEFLATED, -15, 9)
        return c.compress(block) + c.flush(zlib.Z_SYNC_FLUSH), None

    return compress


def header(level: int | None) -> bytes:
    """The fixed 10-byte gzip header for ``level`` (buildx 0-9 / None)."""
    lvl = DEFAULT_LEVEL if level is None or level == -1 else level
    xfl = 4 if lvl <= 1 else 2 if lvl == 9 else 0
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + bytes((xfl, 255))


class GzipEncoder:
    """Incremental deterministic gzip (see the module docstring for the format).

    ``compress(data)`` returns the output ready so far (possibly empty); ``flush()`` ends the
    member and returns the rest; the encoder is then spent. Input handed over in whole
    :data:`BLOCK` pieces (the layer writer's buffers) is compressed without being copied.
    Not thread-safe: one producer."""

    def __init__(self, level: int | None = None) -> None:
        self._compress = block_compressor(level)
        self._combine: Callable[[int, int, int], int] | None = None
        if backend() == "isal":
            from isal import isal_zlib

            self._combine = isal_zlib.crc32_combine
        self._head = header(level)
        self._pending = bytearray()
        self._prev: bytes | memoryview = b""
        self._crc = 0
        self._len = 0

    def _block(self, block: bytes | memoryview) -> bytes:
        zdict = memoryview(self._prev)[-_WINDOW:]
        out, crc = self._compress(block, zdict)
        if crc is not None and self._combine is not None:
            self._crc = self._combine(self._crc, crc, len(block))
        else:
            import zlib

            self._crc = zlib.crc32(block, self._crc)
        self._len += len(block)
        # keep only the window: the caller may reuse its buffer once we return
        self._prev = bytes(memoryview(block)[-_WINDOW:])
        if self._head:
            out, self._head = self._head + out, b""
        return out

    def compress(self, data: Buffer) -> bytes:
        mv = memoryview(data).cast("B")
        outs: list[bytes] = []
        if self._pending:
            take = min(BLOCK - len(self._pending), len(mv))
            self._pending += mv[:take]
            mv = mv[take:]
            if len(self._pending) == BLOCK:
                outs.append(self._block(bytes(self._pending)))
                self._pending.clear()
        while len(mv) >= BLOCK:
            outs.append(self._block(mv[:BLOCK]))
            mv = mv[BLOCK:]
        if len(mv):
            self._pending += mv
        return b"".join(outs)

    def flush(self) -> bytes:
        out = self._block(bytes(self._pending)) if self._pending else b""
        self._pending.clear()
        tail = self._head + out + _FINAL + struct.pack("<II", self._crc & 0xFFFFFFFF, self._len & 0xFFFFFFFF)
        self._head = b""
        return tail


class _Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


class GzipWriter:
    """A write-only stream compressing into ``sink`` (anything with ``write``) through a
    :class:`GzipEncoder`. ``close()`` writes the end of the member; ``sink`` is not closed."""

    def __init__(self, sink: "_Writable", level: int | None = None) -> None:
        self._sink: Callable[[bytes], object] = sink.write
        self._enc = GzipEncoder(level)
        self.closed = False

    def write(self, data: Buffer) -> int:
        out = self._enc.compress(data)
        if out:
            self._sink(out)
        return len(memoryview(data))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._sink(self._enc.flush())


def open_reader(stream: BinaryIO) -> BinaryIO:
    """A reader of the decompressed content of the gzip stream ``stream`` (several members
    are read one after the other). Closing it does not close ``stream``. Corrupt input raises
    on read: OSError (gzip.BadGzipFile), EOFError (truncated), zlib.error or isal's
    IsalError."""
    if backend() == "isal":
        from isal import igzip

        return igzip.IGzipFile(fileobj=stream, mode="rb")  # type: ignore[no-untyped-call,return-value]
    import gzip

    return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]


def is_corrupt_error(exc: BaseException) -> bool:
    """True for the exceptions :func:`open_reader`'s readers raise on corrupt input."""
    if isinstance(exc, (OSError, EOFError)):
        return True
    return type(exc).__name__ in ("error", "IsalError")
