"""Content-addressed blobs under ``ROOT/blobs/<algorithm>/<hex>`` (the OCI layout's blob dir).

Write contract: every write goes to a temp file in ``ROOT/tmp`` (same file system), is hashed as
it is written, fsync'ed, then renamed into place and the directory fsync'ed. A digest (and size,
when given) mismatch raises StoreError and leaves nothing behind; so does any exception inside
:meth:`BlobStore.ingest`. Writing a blob that already exists is a no-op (content-addressed).
Blobs are never modified in place; readers may open them at any time.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from ..digest import Digest, small_hash
from ..errors import StoreError, no_space
from .stale import owned_prefix

CHUNK = 1 << 20
WRITEBACK_STEP = 1 << 20  # a blob's written bytes are handed to writeback in steps of this


def _sync_file_range(fd: int, offset: int, nbytes: int) -> bool:
    """sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE) through libc; False when
    it is unavailable or fails (then the commit's fsync does it all, as without it)."""
    global _SFR
    if _SFR is None:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.sync_file_range
            fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
            fn.restype = ctypes.c_int
            _SFR = fn
        except (OSError, AttributeError):
            _SFR = False
    if _SFR is False:
        return False
    return bool(_SFR(fd, offset, nbytes, 2) == 0)  # 2: SYNC_FILE_RANGE_WRITE


_SFR: Any = None  # the libc function once looked up; False when there is none


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it is durable (best effort on odd file systems)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class BlobWriter:
    """The object :meth:`BlobStore.ingest` yields. ``write`` hashes and stores bytes; after the
    ``with`` block exits cleanly ``digest`` and ``size`` describe the committed blob."""

    def __init__(self, fileobj: BinaryIO, algorithm: str) -> None:
        import hashlib  # a stream: OpenSSL's (not imported by a build that writes no blob)

        self._f = fileobj
        self._h = hashlib.new(algorithm)
        self._algorithm = algorithm
        self._n = 0
        self._synced = 0  # bytes handed to the kernel's writeback so far
        self._next_writeback = WRITEBACK_STEP
        self.digest: Digest | None = None
        self.size: int | None = None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.digest is not None:
            raise StoreError("blob writer is already committed")
        self._f.write(data)
        self._h.update(data)
        n = len(data) if not isinstance(data, memoryview) else data.nbytes
        self._n += n
        if self._n >= self._next_writeback:
            self._start_writeback()
        return n

    def _start_writeback(self) -> None:
        """Ask the kernel to start writing what is written so far (sync_file_range, WRITE
        only: nothing waits), so the fsync at commit finds little left to write; a large
        layer's commit then does not stall on all of it at once. Best effort. Steps of 1 MiB
        (were 8): a 3.5 MB layer blob's commit fsync, median of 12 on this machine, 6.3 -> 3.0 ms,
        the whole write 34.9 -> 28.5 ms; the end of a build waits for that commit."""
        start, self._next_writeback = self._synced, self._n + WRITEBACK_STEP
        self._f.flush()
        if _sync_file_range(self._f.fileno(), start, self._n - start):
            self._synced = self._n

    def flush(self) -> None:
        """No-op (data reaches disk at commit); present for compressor wrappers."""

    @property
    def written(self) -> int:
        return self._n

    def sha256_hexdigest(self) -> str | None:
        """sha256 hex of the bytes written so far when this writer hashes with sha256 (a
        producer that needs that digest need not hash its output a second time), else None."""
        return self._h.hexdigest() if self._algorithm == "sha256" else None

    def _computed(self) -> Digest:
        return Digest(self._algorithm, self._h.hexdigest())


class BlobStore:
    """Blobs of one store. ``root`` is the layout root; ``tmp_dir`` must be on the same fs."""

    def __init__(self, root: Path, tmp_dir: Path | None = None) -> None:
        self.root = Path(root)
        self.dir = self.root / "blobs"
        self.tmp_dir = Path(tmp_dir) if tmp_dir is not None else self.root / "tmp"
        # called with a digest an ingest found already stored (the store pins it in its lease)
        self.on_reuse: Callable[[Digest], None] | None = None

    def path(self, digest: Digest) -> Path:
        """Where the blob lives (whether or not it exists)."""
        return self.dir / digest.algorithm / digest.hex

    def has(self, digest: Digest) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: Digest) -> int:
        """Size in bytes; StoreError when missing."""
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is not in the store {self.root}") from None

    def open(self, digest: Digest) -> BinaryIO:
        """A binary reader of the blob; the caller closes it. StoreError when missing."""
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is not in the store {self.root}") from None

    def read_bytes(self, digest: Digest, *, limit: int = 16 << 20) -> bytes:
        """Whole small blob (manifests, configs); StoreError when missing or larger than ``limit``."""
        with self.open(digest) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise StoreError(f"blob {digest} is larger than {limit} bytes; refusing to read it whole")
        return data

    @contextmanager
    def ingest(self, expected: Digest | None = None, size: int | None = None) -> Iterator[BlobWriter]:
        """Write a blob. On clean exit: verify ``expected``/``size``, commit, set
        ``writer.digest``/``writer.size``. On exception or mismatch: temp removed, nothing stored
        (mismatch raises StoreError)."""
        algorithm = expected.algorithm if expected is not None else "sha256"
        try:
            import tempfile

            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=owned_prefix("blob"), dir=self.tmp_dir)
        except OSError as exc:
            raise no_space(exc, "writing a blob", self.root) or exc
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                writer = BlobWriter(f, algorithm)
                yield writer
                f.flush()
                os.fsync(f.fileno())
            got = writer._computed()
            if expected is not None and got != expected:
                raise StoreError(f"digest mismatch: expected {expected}, got {got}")
            if size is not None and writer.written != size:
                raise StoreError(f"size mismatch for {got}: expected {size} bytes, got {writer.written}")
            target = self.path(got)
            if target.exists() and self.on_reuse is not None:
                self.on_reuse(got)
            if target.exists():
                tmp.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(tmp, 0o644)
                os.replace(tmp, target)
                fsync_dir(target.parent)
            writer.digest, writer.size = got, writer.written
        except OSError as exc:
            full = no_space(exc, "writing a blob", self.root)
            if full is None:
                raise
            raise full from exc
        finally:
            if tmp.exists():
                tmp.unlink()

    def put_bytes(self, data: bytes, expected: Digest | None = None) -> Digest:
        """Store ``data``; returns its digest. Mismatch with ``expected`` raises StoreError."""
        if expected is None:
            expected = Digest.of_bytes(data)
        if self.has(expected):
            if Digest(expected.algorithm, small_hash(expected.algorithm, data).hexdigest()) != expected:
                raise StoreError(f"digest mismatch: expected {expected}")
            if self.on_reuse is not None:
                self.on_reuse(expected)
            if self.has(expected):
                return expected
        with self.ingest(expected, len(data)) as w:
            w.write(data)
        assert w.digest is not None
        return w.digest

    def put_stream(self, stream: BinaryIO, expected: Digest | None = None, size: int | None = None) -> Digest:
        """Copy ``stream`` (not closed) into the store in bounded chunks; verify and commit."""
        with self.ingest(expected, size) as w:
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                w.write(chunk)
        assert w.digest is not None
        return w.digest

    def delete(self, digest: Digest) -> int:
        """Remove a blob; returns the bytes freed (0 when it was not there)."""
        p = self.path(digest)
        try:
            n = p.stat().st_size
            p.unlink()
            return n
        except FileNotFoundError:
            return 0

    def __iter__(self) -> Iterator[Digest]:
        """Every stored blob's digest (order unspecified)."""
        if not self.dir.is_dir():
            return
        for algo_dir in self.dir.iterdir():
            if not algo_dir.is_dir():
                continue
            for p in algo_dir.iterdir():
                try:
                    yield Digest.parse(f"{algo_dir.name}:{p.name}")
                except ValueError:
                    continue

    def copy_to(self, digest: Digest, out: BinaryIO) -> int:
        """Stream a blob into ``out`` (not closed); returns the bytes copied."""
        with self.open(digest) as f:
            return copy_stream(f, out)


def copy_stream(src: BinaryIO, dst: BinaryIO) -> int:
    """Copy ``src`` to ``dst`` in bounded chunks; returns bytes copied. Closes neither."""
    n = 0
    while True:
        chunk = src.read(CHUNK)
        if not chunk:
            return n
        dst.write(chunk)
        n += len(chunk)


__all__ = ["BlobStore", "BlobWriter", "CHUNK", "fsync_dir", "copy_stream"]


class VerifyingReader:
    """Wraps a readable stream, hashing and counting what is read through it.

    :meth:`verify` raises StoreError when the bytes read differ from ``expected``/``size``.
    ``limit``: reading more than ``size`` bytes raises at once (a server sending too much).
    The wrapped stream is not closed here."""

    def __init__(self, stream: BinaryIO, expected: Digest, size: int | None = None) -> None:
        import hashlib

        self._s = stream
        self.expected = expected
        self.expected_size = size
        self._h = hashlib.new(expected.algorithm)
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self._s.read(n if n is not None else -1)
        if data:
            self._h.update(data)
            self.count += len(data)
            if self.expected_size is not None and self.count > self.expected_size:
                raise StoreError(f"blob {self.expected}: more than the expected {self.expected_size} bytes")
        return data

    def readable(self) -> bool:
        return True

    def verify(self) -> None:
        got = Digest(self.expected.algorithm, self._h.hexdigest())
        if self.expected_size is not None and self.count != self.expected_size:
            raise StoreError(f"blob {self.expected}: expected {self.expected_size} bytes, got {self.count}")
        if got != self.expected:
            raise StoreError(f"digest mismatch: expected {self.expected}, got {got}")

    def drain(self) -> None:
        """Read to the end (so verify() sees every byte)."""
        while self.read(CHUNK):
            pass


__all__ += ["VerifyingReader"]
