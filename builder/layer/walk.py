"""Entry constructors and a directory walker producing layer entries.

The walker never follows symlinks, reads xattrs without following them, and reports files
sharing an inode as HARDLINK entries (``builder.layer.tar`` re-roots each group on the member
that sorts first, so the walk order does not matter).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import PybuildError
from .entries import Entry, EntryType


class WalkError(PybuildError):
    """A directory could not be walked (unreadable directory, unsupported file type)."""


def dir_entry(name: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0, mtime: int = 0) -> Entry:
    """A directory entry."""
    return Entry(name=name, type=EntryType.DIR, mode=mode, uid=uid, gid=gid, mtime=mtime)


def file_entry(name: str, data: bytes, *, mode: int = 0o644, uid: int = 0, gid: int = 0,
               mtime: int = 0) -> Entry:
    """A regular file whose content is ``data``."""
    return Entry(name=name, type=EntryType.FILE, mode=mode, uid=uid, gid=gid, mtime=mtime,
                 size=len(data), data=data)


def symlink_entry(name: str, target: str, *, uid: int = 0, gid: int = 0, mtime: int = 0) -> Entry:
    """A symbolic link to ``target``."""
    return Entry(name=name, type=EntryType.SYMLINK, mode=0o777, uid=uid, gid=gid, mtime=mtime,
                 linkname=target)


def layer_xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    """Xattrs of host ``path`` (not followed), sorted, without overlay's private ones (which
    never reach a layer); unreadable ones are skipped."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    out = []
    for n in names:
        # overlay's private attributes never reach a layer
        if n.startswith(("trusted.overlay.", "user.overlay.")):
            continue
        try:
            out.append((n, os.getxattr(path, n, follow_symlinks=False)))
        except OSError:
            continue
    return tuple(sorted(out))


def set_xattrs(target: int | str, xattrs: Iterable[tuple[str, bytes]]) -> int:
    """Set ``xattrs`` on ``target`` (an open fd, or a path whose last component is not
    followed) as an unpacked layer member gets them; one that cannot be set is skipped.
    Returns how many were skipped."""
    skipped = 0
    for key, value in xattrs:
        try:
            if isinstance(target, int):
                os.setxattr(target, key, value)
            else:
                os.setxattr(target, key, value, follow_symlinks=False)
        except OSError:
            skipped += 1
    return skipped


def entry_from_stat(name: str, path: str, st: os.stat_result, *, xattrs: bool = True) -> Entry:
    """The entry for host file ``path`` (already lstat'ed as ``st``) named ``name`` in the layer.

    Raises WalkError for sockets (which a tar cannot hold).
    """
    m = st.st_mode
    xa = layer_xattrs(path) if xattrs else ()
    if stat.S_ISREG(m):
        return Entry(name, EntryType.FILE, m & 0o7777, st.st_uid, st.st_gid, int(st.st_mtime), st.st_size,
                     xattrs=xa, source=path)
    common = dict(mode=stat.S_IMODE(m), uid=st.st_uid, gid=st.st_gid, mtime=int(st.st_mtime), xattrs=xa)
    if stat.S_ISDIR(m):
        return Entry(name=name, type=EntryType.DIR, **common)  # type: ignore[arg-type]
    if stat.S_ISLNK(m):
        return Entry(name=name, type=EntryType.SYMLINK, linkname=os.readlink(path), **common)  # type: ignore[arg-type]
    if stat.S_ISCHR(m) or stat.S_ISBLK(m):
        return Entry(name=name, type=EntryType.CHAR if stat.S_ISCHR(m) else EntryType.BLOCK,
                     devmajor=os.major(st.st_rdev), devminor=os.minor(st.st_rdev), **common)  # type: ignore[arg-type]
    if stat.S_ISFIFO(m):
        return Entry(name=name, type=EntryType.FIFO, **common)  # type: ignore[arg-type]
    raise WalkError(f"{path}: cannot put a socket or unknown file type in a layer")


def entries_from_dir(root: Path | str, prefix: str = "", *, include_root: bool = True,
                     xattrs: bool = True) -> Iterator[Entry]:
    """Yield an entry for everything under ``root``, named ``prefix/relative/path``.

    ``include_root``: also yield ``root`` itself as a directory named ``prefix`` (only when
    ``prefix`` is not empty; the layer root has no entry). Symlinks are never followed; files
    with the same inode after the first become HARDLINK entries. Sockets are skipped. Raises
    WalkError when a directory cannot be read.
    """
    root = os.fspath(root)
    prefix = prefix.strip("/")
    seen: dict[tuple[int, int], str] = {}
    if include_root and prefix:
        yield entry_from_stat(prefix, root, os.lstat(root), xattrs=xattrs)
    stack = [(root, prefix)]
    while stack:
        host, name = stack.pop()
        try:
            it = os.scandir(host)
        except OSError as exc:
            raise WalkError(f"cannot read directory {host}: {exc.strerror}") from exc
        with it:
            for de in it:
                path = de.path
                child = f"{name}/{de.name}" if name else de.name
                st = de.stat(follow_symlinks=False)
                if stat.S_ISSOCK(st.st_mode):
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    first = seen.get(key)
                    if first is not None:
                        yield Entry(name=child, type=EntryType.HARDLINK, mode=stat.S_IMODE(st.st_mode),
                                    uid=st.st_uid, gid=st.st_gid, mtime=int(st.st_mtime), linkname=first)
                        continue
                    seen[key] = child
                yield entry_from_stat(child, path, st, xattrs=xattrs)
                if stat.S_ISDIR(st.st_mode):
                    stack.append((path, child))
