"""Leases: what a running pybuild process needs from the store, so prune never takes it.

A process that reads or writes images (build, pull, push, export) opens one :class:`Lease`
for the store: a file ``root/leases/<pid>-<random>`` that it keeps ``flock``-ed for its
lifetime. Its first line is the time the lease began; every further line is a digest the
process *pinned* (a blob digest or a layer diff_id it is about to use).

Contract with the garbage collector (``Store.gc`` / ``prune``), which holds ``root/gc.lock``
exclusively while it decides and deletes:

* everything pinned by a live lease is kept (blob digests are followed like tags);
* every blob, snapshot and cache record newer than the oldest live lease's start is kept
  (what a running build wrote itself and has not tagged yet);
* :meth:`Lease.pin` appends under ``gc.lock`` shared, so after ``pin`` returns, either the
  collector saw the pin or it had already finished: the caller then checks that what it
  pinned is still present (and treats it as missing otherwise).

A lease whose file is not locked belongs to a dead process: :func:`sweep_leases` removes it.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreError
from .lock import FileLock

LEASE_DIR = "leases"
GC_LOCK = "gc.lock"


def gc_lock(root: Path, *, shared: bool = False) -> FileLock:
    """The collector's lock of store ``root`` (exclusive: gc; shared: pinning)."""
    return FileLock(Path(root) / GC_LOCK, shared=shared)


class Lease:
    """One process's lease on the store ``root``. Closed by :meth:`close` (or ``with``);
    a SIGKILLed owner's lease becomes stale and is removed by the next sweep."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        d = self.root / LEASE_DIR
        self.started = time.time()
        self._pinned: set[str] = set()
        name = f"{os.getpid()}-{os.urandom(4).hex()}"
        self.path = d / name
        fd = -1
        try:
            d.mkdir(parents=True, exist_ok=True)
            # made under a dot name and renamed once locked: a sweep never sees it unlocked
            fd = os.open(d / ("." + name), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_APPEND, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, f"{self.started!r}\n".encode())
            os.rename(d / ("." + name), self.path)
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
            raise StoreError(f"cannot create a lease in {d}: {exc.strerror}") from exc
        self._fd: int | None = fd

    def pin(self, items: Iterable[str]) -> None:
        """Record ``items`` (digests / diff_ids) as needed by this process; see the module
        contract: afterwards the caller must check they are still present."""
        new = [i for i in items if i and i not in self._pinned]
        if not new or self._fd is None:
            return
        with gc_lock(self.root, shared=True):
            os.write(self._fd, ("\n".join(new) + "\n").encode())
        self._pinned.update(new)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(fd)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class LiveLeases:
    """What live leases protect: pinned items and the oldest start time (None: no lease)."""

    pinned: frozenset[str]
    oldest: float | None

    def protects_time(self, mtime: float) -> bool:
        """Whether something last changed at ``mtime`` may belong to a running process."""
        return self.oldest is not None and mtime >= self.oldest - 2.0


def _held(path: Path) -> tuple[bool, bytes]:
    """(whether a live process holds the lease file, its content)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False, b""
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            held = True
        else:
            held = False
        data = b""
        if held:
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read(64 << 20)
        return held, data
    finally:
        os.close(fd)


def live_leases(root: Path) -> LiveLeases:
    """Read every live lease of ``root`` (call under ``gc_lock`` exclusive to act on it)."""
    pinned: set[str] = set()
    oldest: float | None = None
    d = Path(root) / LEASE_DIR
    try:
        names = os.listdir(d)
    except OSError:
        return LiveLeases(frozenset(), None)
    for name in names:
        if name.startswith("."):
            continue  # not renamed yet: its owner has pinned nothing so far
        held, data = _held(d / name)
        if not held:
            continue
        lines = data.decode("ascii", "replace").splitlines()
        try:
            start = float(lines[0]) if lines else time.time()
        except ValueError:
            start = 0.0
        oldest = start if oldest is None else min(oldest, start)
        pinned.update(line.strip() for line in lines[1:] if line.strip())
    return LiveLeases(frozenset(pinned), oldest)


def stale_leases(root: Path) -> list[Path]:
    """Lease files no live process holds."""
    d = Path(root) / LEASE_DIR
    try:
        names = os.listdir(d)
    except OSError:
        return []
    now = time.time()
    out = []
    for n in names:
        if n.startswith("."):  # being created: stale only when old and unlocked
            try:
                if now - os.lstat(d / n).st_mtime < 60:
                    continue
            except FileNotFoundError:
                continue
        if not _held(d / n)[0]:
            out.append(d / n)
    return out


def sweep_leases(root: Path) -> int:
    """Remove stale lease files; returns how many."""
    n = 0
    for p in stale_leases(root):
        try:
            p.unlink()
            n += 1
        except FileNotFoundError:
            continue
    return n


__all__ = ["GC_LOCK", "LEASE_DIR", "Lease", "LiveLeases", "gc_lock", "live_leases", "stale_leases",
           "sweep_leases"]
