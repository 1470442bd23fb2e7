"""Recognising and removing what a dead pybuild process left in a store.

Every temporary entry a process makes inside the store carries its PID in its name
(``<kind>-<pid>-<random>``: ``root/tmp/blob-123-x``, ``root/tmp/build-123-x``,
``root/snapshots/tmp-123-x``), so its owner's liveness can be tested without any registry.
A PID that is alive (or reused) keeps its entries: cleanup only ever errs on the safe side.

:func:`sweep` is what a command calls before it starts (cheap: two small directory listings);
``pybuild store check`` reports the same things as problems and ``--repair`` removes them.
Nothing here raises for a missing directory; OSErrors of the removal itself propagate.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..owners import alive, owned_prefix, owner_pid


@dataclass(frozen=True, slots=True)
class StaleEntry:
    """A temporary file or directory whose owner is gone; ``kind`` is "temp" or "mount"."""

    path: Path
    kind: str
    pid: int | None


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mounts_under(root: Path) -> list[Path]:
    """Mount points at or below ``root`` in this mount namespace, deepest first."""
    root_s = os.path.realpath(root)
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = _unescape(line.split()[4])
                if point == root_s:
                    continue
                if point.startswith(root_s + "/"):
                    found.append(Path(point))
    except OSError:
        return []
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


UNOWNED_AGE = 3600.0  # a temp entry without a PID in its name is stale only when this old


def _temp_dirs(root: Path) -> list[tuple[Path, str | None]]:
    """(directory, prefix its temp entries have; None: every entry is temporary)."""
    return [(root / "tmp", None), (root / "snapshots", "tmp-"), (root / "cache" / "filehash", "w-"),
            (root / "cache" / "mounts", "seed-")]  # (cache records write their temps in tmp/)


def stale_entries(root: Path, *, unowned_age: float = UNOWNED_AGE) -> Iterator[StaleEntry]:
    """Temp entries of dead processes (``root/tmp/*``, ``root/snapshots/tmp-*``, half-written
    ``w-*`` hash memos, ``seed-*`` cache-mount copies) and every mount below the store whose owning entry is
    stale or that no live entry owns. An entry without a PID counts once ``unowned_age`` old."""
    import time

    dead_roots: list[Path] = []
    now = time.time()
    for d, prefix in _temp_dirs(root):
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            if prefix is not None and not name.startswith(prefix):
                continue
            pid = owner_pid(name)
            if pid is None:
                try:
                    if now - os.lstat(d / name).st_mtime < unowned_age:
                        continue
                except FileNotFoundError:
                    continue
            elif alive(pid):
                continue
            dead_roots.append(d / name)
            yield StaleEntry(d / name, "temp", pid)
    for point in mounts_under(root):
        owner = next((r for r in dead_roots if point == r or r in point.parents), None)
        if owner is not None:
            yield StaleEntry(point, "mount", owner_pid(owner.name))
            continue
        rel = point.relative_to(os.path.realpath(root))
        top = rel.parts[:2]
        pid = owner_pid(top[1]) if len(top) == 2 and top[0] in ("tmp", "snapshots") else None
        if pid is None or not alive(pid):
            yield StaleEntry(point, "mount", pid)


def remove(entry: StaleEntry) -> None:
    """Unmount (lazily) or delete one stale entry; missing is fine."""
    if entry.kind == "mount":
        from ..sandbox import namespaces as ns

        try:
            ns.umount2(str(entry.path), ns.MNT_DETACH)
        except OSError:
            pass
        return
    rmtree(entry.path)


def rmtree(path: Path) -> None:
    """Remove a file or directory tree even when it holds read-only directories; never
    descends into a mount point (those are unmounted first by :func:`sweep`)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return

    def onerror(func, p, exc_info):  # type: ignore[no-untyped-def]
        try:
            parent = os.path.dirname(p)
            os.chmod(parent, stat.S_IMODE(os.lstat(parent).st_mode) | 0o700)
            func(p)
        except OSError:
            pass

    import shutil

    shutil.rmtree(path, onerror=onerror)


def sweep(root: Path) -> list[StaleEntry]:
    """Remove the stale entries of the store ``root`` that a dead process provably left (mounts
    first); returns what went. A mount no entry of ours owns is left for ``store check
    --repair`` (someone may have mounted it there on purpose). Also drops the lease files of
    dead processes (:mod:`builder.store.lease`)."""
    from .lease import sweep_leases

    entries = [e for e in stale_entries(root) if e.kind != "mount" or e.pid is not None]
    for e in sorted(entries, key=lambda e: e.kind != "mount"):
        if e.kind == "temp" and any(m == e.path or e.path in m.parents for m in mounts_under(e.path.parent)):
            continue  # a mount we could not release: never delete through it
        remove(e)
    sweep_leases(root)
    return entries


__all__ = ["StaleEntry", "alive", "mounts_under", "owned_prefix", "owner_pid", "remove", "rmtree",
           "stale_entries", "sweep"]
