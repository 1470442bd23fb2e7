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
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from .walk import layer_xattrs
from .entries import Entry, EntryType

if TYPE_CHECKING:
    from .tar import Record

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


class NameClash(Exception):
    """Two members of an upper dir would get one layer name (a file literally named
    ``.wh.x`` beside the whiteout of ``x``): :func:`upper_records` cannot stream that layer;
    the caller writes it from :func:`upper_entries`, whose last duplicate wins."""


_WH, _DIR, _FILE, _LINK, _DEV, _FIFO, _MARK, _CONTENTS = range(8)


def upper_records(upper: Path, *, mtime_clamp: int | None = None, userxattr: bool = False) -> Iterator[Record]:
    """The tar records (:data:`builder.layer.tar.Record`) of the layer of upper dir ``upper``,
    in layer order: the members :func:`upper_entries` gives, framed as ``write_layer(...,
    mtime_clamp=mtime_clamp)`` frames them, without making an Entry per member or sorting
    them all (each directory's listing is sorted as it is walked). Hand them to
    ``write_records``: the same tar, byte for byte. Image ids are host ids (no id map).
    Raises NameClash (possibly after some records were given) and OSError as upper_entries."""
    from .tar import entry_records, plain_header

    xns = "user.overlay." if userxattr else "trusted.overlay."
    fsencode = _fsencode
    listxattr = os.listxattr
    first_name: dict[tuple[int, int], str] = {}  # the first (smallest) name of a multi-link file
    # (kind, rel name, host path, lstat): a member, or the listing of a directory
    stack: list[tuple[int, str, str, os.stat_result | None]] = [(_CONTENTS, "", os.fspath(upper), None)]

    def framed(name: str, kind: EntryType, st: os.stat_result, *, size: int = 0, source: str | None = None,
               linkname: str = "", xattrs: tuple[tuple[str, bytes], ...] = ()) -> Record:
        mtime = int(st.st_mtime)
        if mtime_clamp is not None and mtime > mtime_clamp:
            mtime = mtime_clamp
        encoded = fsencode(name)
        major = minor = 0
        if kind is EntryType.CHAR or kind is EntryType.BLOCK:
            major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        if not xattrs:
            hdr = plain_header(encoded + b"/" if kind is EntryType.DIR else encoded, _FLAGS[kind],
                               stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, size, mtime, fsencode(linkname),
                               major, minor)
            if hdr is not None:
                return hdr, size, source, None, name
        entry = Entry(name=name, type=kind, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                      mtime=mtime, size=size, linkname=linkname, xattrs=xattrs, source=source,
                      devmajor=major, devminor=minor)
        return next(entry_records([(encoded, entry)]))

    while stack:
        kind, rel, host, st = stack.pop()
        if kind == _CONTENTS:
            stack.extend(reversed(_listing(host, rel, xns, st)))
        elif kind == _DIR:
            assert st is not None
            yield framed(rel, EntryType.DIR, st, xattrs=layer_xattrs(host))
        elif kind == _FILE:
            assert st is not None
            if st.st_nlink == 1 and not listxattr(host, follow_symlinks=False):
                # the common member, framed here (what framed() does for it, without the call)
                mtime = int(st.st_mtime)
                if mtime_clamp is not None and mtime > mtime_clamp:
                    mtime = mtime_clamp
                hdr = plain_header(fsencode(rel), b"0", st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_size,
                                   mtime)
                if hdr is not None:
                    yield hdr, st.st_size, host, None, rel
                    continue
            if st.st_nlink > 1:
                first = first_name.setdefault((st.st_dev, st.st_ino), rel)
                if first != rel:
                    yield framed(rel, EntryType.HARDLINK, st, linkname=first, xattrs=layer_xattrs(host))
                    continue
            yield framed(rel, EntryType.FILE, st, size=st.st_size, source=host, xattrs=layer_xattrs(host))
        elif kind == _WH or kind == _MARK:
            assert st is not None
            # an empty member (a deletion, or an opaque marker), framed here as for a file
            mtime = int(st.st_mtime)
            if mtime_clamp is not None and mtime > mtime_clamp:
                mtime = mtime_clamp
            hdr = plain_header(fsencode(rel), b"0", st.st_mode & 0o7777, st.st_uid, st.st_gid, 0, mtime)
            if hdr is not None:
                yield hdr, 0, None, None, rel
                continue
            yield framed(rel, EntryType.FILE, st)
        elif kind == _LINK:
            assert st is not None
            yield framed(rel, EntryType.SYMLINK, st, linkname=os.readlink(host), xattrs=layer_xattrs(host))
        elif kind == _DEV:
            assert st is not None
            yield framed(rel, EntryType.CHAR if stat.S_ISCHR(st.st_mode) else EntryType.BLOCK, st,
                         xattrs=layer_xattrs(host))
        else:
            assert st is not None
            yield framed(rel, EntryType.FIFO, st, xattrs=layer_xattrs(host))


_FLAGS = {t: t.value.encode() for t in EntryType}
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


def _fsencode(name: str) -> bytes:
    """``os.fsencode`` for a str (the same bytes, without its type checks: a walk calls it a
    few times per member)."""
    return name.encode(_FS_ENCODING, _FS_ERRORS)


def _listing(host_dir: str, rel_dir: str, xns: str,
             dir_st: os.stat_result | None) -> list[tuple[int, str, str, os.stat_result | None]]:
    """The members of one upper directory in layer order (a subdirectory's listing right after
    its own ``name/`` key), with the opaque marker when ``dir_st`` (its lstat; None for the
    root) belongs to an opaque directory. NameClash when two would get one name."""
    slots: list[tuple[bytes, tuple[int, str, str, os.stat_result | None]]] = []
    prefix = rel_dir + "/" if rel_dir else ""
    if dir_st is not None and _getx(host_dir, xns + "opaque") == b"y":
        slots.append((OPAQUE_MARKER.encode(), (_MARK, prefix + OPAQUE_MARKER, host_dir, dir_st)))
    with os.scandir(host_dir) as it:
        for de in it:
            st = de.stat(follow_symlinks=False)
            mode = st.st_mode
            name = de.name
            if stat.S_ISCHR(mode) and st.st_rdev == 0:
                kind, name = _WH, WHITEOUT_PREFIX + name
            elif stat.S_ISDIR(mode):
                kind = _DIR
                slots.append((_fsencode(name) + b"/", (_CONTENTS, prefix + name, de.path, st)))
            elif stat.S_ISREG(mode):
                if st.st_size == 0 and _getx(de.path, xns + "whiteout") is not None:
                    kind, name = _WH, WHITEOUT_PREFIX + name
                else:
                    kind = _FILE
            elif stat.S_ISLNK(mode):
                kind = _LINK
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                kind = _DEV
            elif stat.S_ISFIFO(mode):
                kind = _FIFO
            else:
                continue  # a socket cannot be archived
            slots.append((_fsencode(name), (kind, prefix + name, de.path, st)))
    slots.sort(key=_slot_key)
    for i in range(1, len(slots)):
        if slots[i][0] == slots[i - 1][0]:
            raise NameClash(f"{host_dir}: two members named {os.fsdecode(slots[i][0])!r}")
    return [item for _key, item in slots]


def _slot_key(slot: tuple[bytes, object]) -> bytes:
    return slot[0]


def _wh(rel_dir: str, name: str) -> str:
    return f"{rel_dir}/{WHITEOUT_PREFIX}{name}" if rel_dir else f"{WHITEOUT_PREFIX}{name}"


def upper_is_empty(upper: Path, drop: Iterable[str] = frozenset(), *, userxattr: bool = False) -> bool:
    """True when ``upper`` yields no entry at all (a RUN that changed nothing adds no layer)."""
    return next(iter(upper_entries(upper, drop=drop, userxattr=userxattr)), None) is None
