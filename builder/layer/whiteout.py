"""Overlay upper dir -> OCI layer entries (whiteouts converted).

Overlay records a deletion as a character device 0/0 (or, on newer kernels, an empty file with
the ``overlay.whiteout`` xattr) and a directory that hides the lower one by the xattr
``trusted.overlay.opaque=y`` (``user.overlay.opaque`` with ``userxattr``). The OCI image spec
expresses both as empty regular files: ``dir/.wh.NAME`` and ``dir/.wh..wh..opq``. Like Docker's
overlay2 differ we give a whiteout the permission bits, owner and mtime of the overlay node
(normally mode 0), and the opaque marker those of its directory; this keeps layers
deterministic for a given upper dir.

Only ``builder.layer.entries.Entry`` values come out; nothing is read beyond metadata
(``source`` points at the host file for regular files; the tar writer opens it).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypedDict

from .walk import layer_xattrs
from .entries import Entry, EntryType

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"


class _Owner(TypedDict):
    """The metadata every entry of the upper dir carries (ids mapped back to the image's)."""

    mode: int
    uid: int
    gid: int
    mtime: int


def _norm_drop(drop: Iterable[str]) -> set[str]:
    return {p.strip("/") for p in drop if p.strip("/")}


def _dropped(rel: str, drop: set[str]) -> bool:
    if not drop:
        return False
    if rel in drop:
        return True
    parts = rel.split("/")
    return any("/".join(parts[:i]) in drop for i in range(1, len(parts)))


def _getx(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


IdMap = tuple[tuple[int, int, int], ...]


def _translate(idmap: IdMap, host_id: int) -> int:
    if not idmap:
        return host_id
    for c, h, n in idmap:
        if h <= host_id < h + n:
            return c + host_id - h
    return 65534  # unmapped: the kernel's overflow id


def upper_entries(upper: Path, *, drop: Iterable[str] = frozenset(), userxattr: bool = False,
                  uidmap: IdMap = (), gidmap: IdMap = ()) -> Iterator[Entry]:
    """The layer entries of overlay upper dir ``upper``, in no particular order.

    ``drop``: layer paths (relative, e.g. ``"etc/hosts"``) left out together with everything
    under them (the sandbox's mount-point stubs). ``userxattr``: the upper dir was used with the
    ``userxattr`` mount option (``user.overlay.*`` instead of ``trusted.overlay.*``).
    ``uidmap``/``gidmap``: ``(container_start, host_start, count)`` triples of a rootless run
    (:class:`builder.sandbox.spec.RunResult`); owners are translated from host to image ids.
    Regular files with several links inside ``upper`` come out once as FILE (the first name in
    sorted order) and as HARDLINK entries for the other names. Sockets are skipped (they cannot
    be archived). Raises ``OSError`` if ``upper`` cannot be read.
    """
    xns = "user.overlay." if userxattr else "trusted.overlay."
    drops = _norm_drop(drop)
    links: dict[tuple[int, int], list[tuple[str, str, os.stat_result]]] = {}
    stack: list[tuple[str, str]] = [(os.fspath(upper), "")]
    while stack:
        host_dir, rel_dir = stack.pop()
        with os.scandir(host_dir) as it:
            children = list(it)
        for de in children:
            rel = f"{rel_dir}/{de.name}" if rel_dir else de.name
            if _dropped(rel, drops):
                continue
            st = de.stat(follow_symlinks=False)
            mode = st.st_mode
            common = _Owner(mode=stat.S_IMODE(mode), uid=_translate(uidmap, st.st_uid),
                            gid=_translate(gidmap, st.st_gid), mtime=int(st.st_mtime))
            if stat.S_ISCHR(mode) and st.st_rdev == 0:
                yield Entry(name=_wh(rel_dir, de.name), type=EntryType.FILE, **common)
                continue
            if stat.S_ISDIR(mode):
                yield Entry(name=rel, type=EntryType.DIR, xattrs=layer_xattrs(de.path), **common)
                if _getx(de.path, xns + "opaque") == b"y":
                    yield Entry(name=f"{rel}/{OPAQUE_MARKER}", type=EntryType.FILE, **common)
                stack.append((de.path, rel))
            elif stat.S_ISREG(mode):
                if st.st_size == 0 and _getx(de.path, xns + "whiteout") is not None:
                    yield Entry(name=_wh(rel_dir, de.name), type=EntryType.FILE, **common)
                elif st.st_nlink > 1:
                    links.setdefault((st.st_dev, st.st_ino), []).append((rel, de.path, st))
                else:
                    yield Entry(name=rel, type=EntryType.FILE, size=st.st_size, source=de.path,
                                xattrs=layer_xattrs(de.path), **common)
            elif stat.S_ISLNK(mode):
                yield Entry(name=rel, type=EntryType.SYMLINK, linkname=os.readlink(de.path),
                            xattrs=layer_xattrs(de.path), **common)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                yield Entry(name=rel, type=EntryType.CHAR if stat.S_ISCHR(mode) else EntryType.BLOCK,
                            devmajor=os.major(st.st_rdev), devminor=os.minor(st.st_rdev),
                            xattrs=layer_xattrs(de.path), **common)
            elif stat.S_ISFIFO(mode):
                yield Entry(name=rel, type=EntryType.FIFO, xattrs=layer_xattrs(de.path), **common)
    for group in links.values():
        group.sort(key=lambda g: g[0])
        first, path, st = group[0]
        common = _Owner(mode=stat.S_IMODE(st.st_mode), uid=_translate(uidmap, st.st_uid),
                        gid=_translate(gidmap, st.st_gid), mtime=int(st.st_mtime))
        xattrs = layer_xattrs(path)
        yield Entry(name=first, type=EntryType.FILE, size=st.st_size, source=path, xattrs=xattrs, **common)
        for rel, _, _ in group[1:]:
            yield Entry(name=rel, type=EntryType.HARDLINK, linkname=first, xattrs=xattrs, **common)


def _wh(rel_dir: str, name: str) -> str:
    return f"{rel_dir}/{WHITEOUT_PREFIX}{name}" if rel_dir else f"{WHITEOUT_PREFIX}{name}"


def upper_is_empty(upper: Path, drop: Iterable[str] = frozenset(), *, userxattr: bool = False) -> bool:
    """True when ``upper`` yields no entry at all (a RUN that changed nothing adds no layer)."""
    return next(iter(upper_entries(upper, drop=drop, userxattr=userxattr)), None) is None
