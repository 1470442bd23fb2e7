"""A COPY layer's snapshot put down from its sources instead of unpacked from its tar.

A layer copied out of another stage or image (``COPY --from``) takes its files from snapshots,
which never change once made. Such a file whose tar member carries exactly the source's
metadata (permission bits, owner, size, whole-second mtime after the clamp, xattrs) becomes a
hard link to the source inode: the unpacked tar would have given a file with the same content
and attributes, and :func:`builder.layer.whiteout.upper_entries` reads the same member back
from either. Any other file (``--chown``/``--chmod``, a clamped mtime, a source linked once
already) is copied from its immutable source with the member's metadata. Directories and
symlinks are made as the extractor makes them (owner, xattrs, mode and mtime, directories
finished deepest first). So the snapshot is the one unpacking the tar would give.

No root may ever show one inode under two names from two layers: the commands of a later RUN
(``tar``, ``cp -a``, ``du``) and a COPY out of that image would see a hard link that unpacking
the tars does not make (a different layer, a different digest). Snapshots are shared by
diff_id, so which roots a snapshot will be part of is not known here. Hence a file is linked
only when its source has no other name (``st_nlink`` 1: not a hard link within its own
snapshot, not linked into another snapshot already) and the member's name is the source's own
path in its snapshot: the two snapshots sharing the inode then show it at the same path, and
any root that holds both shows one of them. A source inside ``avoid`` (a snapshot of the image
the layer goes on) is copied too.

Whatever cannot be put down this way (a file from the build context or another mutable place,
a device or FIFO, a whiteout-like name, a member whose parent directory the layer does not
list) makes :func:`link_snapshot` return False; the caller then unpacks the tar as before.
Only for root (owners are set).
"""

from __future__ import annotations

import os
import stat

from .entries import Entry, EntryType
from .walk import set_xattrs

_OVERLAY_PRIVATE = ("trusted.overlay.", "user.overlay.")


_KINDS = (EntryType.DIR, EntryType.FILE, EntryType.HARDLINK, EntryType.SYMLINK)


def linkable(ordered: list[tuple[bytes, Entry]], *, immutable: str) -> bool:
    """Whether :func:`link_snapshot` can put down the members ``ordered`` (see there): every
    file read from under ``immutable``, only directories, files, hard links and symlinks, no
    whiteout-like name, every parent directory listed before its members."""
    dirs: set[str] = set()
    for _key, e in ordered:
        if e.type not in _KINDS:
            return False  # devices and FIFOs: rare, left to the extractor
        if e.type is EntryType.FILE and e.data is None and e.source is not None \
                and not e.source.startswith(immutable):
            return False  # read from a place that may change: only the tar's bytes are certain
        name = e.name.strip("/")
        parent, _, base = name.rpartition("/")
        if base.startswith(".wh.") or (parent and parent not in dirs):
            return False
        if e.type is EntryType.DIR:
            dirs.add(name)
    return True


def link_snapshot(ordered: list[tuple[bytes, Entry]], dest: str, *, immutable: str, avoid: tuple[str, ...] = (),
                  mtime_clamp: int | None = None) -> bool:
    """Put down the members ``ordered`` (the layer's ``(encoded name, entry)`` pairs in tar
    order, hard links re-rooted, as ``builder.layer.tar`` orders them) in the empty directory
    ``dest`` as an overlay-format snapshot. ``immutable``: the directory prefix (with its
    trailing ``/``) of sources that never change (the snapshot store); ``avoid``: prefixes of
    snapshots whose files must be copied rather than linked. Returns False when the members
    are not :func:`linkable` (checked first: nothing is made) or a source no longer has its
    member's size (``dest`` then holds a partial tree the caller removes); OSError
    propagates."""
    if not linkable(ordered, immutable=immutable):
        return False
    done: list[tuple[str, int, int]] = []  # directories: path, mode, mtime (finished at the end)
    linked: set[tuple[int, int]] = set()  # source inodes already given a name here
    for _key, e in ordered:
        path = dest + "/" + e.name.strip("/")
        mtime = e.mtime if mtime_clamp is None else min(e.mtime, mtime_clamp)
        kind = e.type
        if kind is EntryType.DIR:
            os.mkdir(path, 0o700)
            os.chown(path, e.uid, e.gid, follow_symlinks=False)
            set_xattrs(path, e.xattrs)
            done.append((path, e.mode, mtime))
        elif kind is EntryType.FILE:
            if not _linked(e, path, mtime, immutable, avoid, linked):
                if not _copied(e, path, mtime):
                    return False
        elif kind is EntryType.HARDLINK:
            os.link(dest + "/" + e.linkname.strip("/"), path, follow_symlinks=False)
        else:  # a symlink (linkable() let nothing else through)
            os.symlink(e.linkname, path)
            os.chown(path, e.uid, e.gid, follow_symlinks=False)
            set_xattrs(path, e.xattrs)
            os.utime(path, ns=(mtime * 1_000_000_000,) * 2, follow_symlinks=False)
    for path, mode, mtime in reversed(done):  # deepest last in tar order: finished first
        os.chmod(path, mode & 0o7777)
        os.utime(path, ns=(mtime * 1_000_000_000,) * 2)
    return True


def _linked(e: Entry, path: str, mtime: int, immutable: str, avoid: tuple[str, ...],
            linked: set[tuple[int, int]]) -> bool:
    """Link ``path`` to ``e``'s source when that gives the member exactly and the inode is
    then seen at one path only (see the module doc); False otherwise."""
    src = e.source
    if src is None or e.data is not None or src.startswith(avoid) or not _same_path(src, e.name, immutable):
        return False
    st = os.lstat(src)
    key = (st.st_dev, st.st_ino)
    if (not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or key in linked or st.st_size != e.size
            or stat.S_IMODE(st.st_mode) != e.mode or st.st_uid != e.uid or st.st_gid != e.gid
            or int(st.st_mtime) != mtime):
        return False
    names = os.listxattr(src, follow_symlinks=False)
    if any(n.startswith(_OVERLAY_PRIVATE) for n in names) or sorted(names) != [k for k, _ in e.xattrs]:
        return False
    try:
        os.link(src, path, follow_symlinks=False)
    except OSError:
        return False  # too many links, another file system: copied instead
    linked.add(key)
    return True


def _same_path(src: str, name: str, immutable: str) -> bool:
    """Whether ``src`` (under ``immutable``: ``<key>/fs/<path>``) is ``name`` in its snapshot."""
    key_fs, sep, rel = src[len(immutable):].partition("/fs/")
    return bool(sep) and "/" not in key_fs and rel == name.strip("/")


def _copied(e: Entry, path: str, mtime: int) -> bool:
    """Write ``path`` as the member ``e`` (content from ``data`` or the first ``size`` bytes of
    its immutable source, as the tar holds them); False when the source is shorter."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        if e.data is not None:
            view = memoryview(e.data)
            written = 0
            while written < len(view):
                written += os.write(fd, view[written:])
        elif e.size:
            if e.source is None:
                return False
            src = os.open(e.source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                left = e.size
                while left:
                    n = os.copy_file_range(src, fd, left)
                    if n == 0:
                        return False
                    left -= n
            finally:
                os.close(src)
        os.fchown(fd, e.uid, e.gid)
        os.fchmod(fd, e.mode & 0o7777)
        set_xattrs(fd, e.xattrs)
        os.utime(fd, ns=(mtime * 1_000_000_000,) * 2)
    finally:
        os.close(fd)
    return True
