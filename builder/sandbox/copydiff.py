"""Copy-based fallback for hosts without a usable overlayfs.

:func:`prepare` flattens the (overlay-format) lower dirs into a private root directory under
the step's ``workdir`` (copies, never hardlinks: an in-place write must not reach a lower dir)
and records a manifest of every path. The sandbox runs in that directory (bind-mounted as the
new root). :func:`finish` diffs the directory against the manifest and writes the changes into
``upperdir`` *in overlay format* (deletions as 0/0 character devices, replaced directories
marked ``trusted.overlay.opaque=y``), so the rest of the pipeline cannot tell the difference.
:func:`discard` removes the private root; call it in a ``finally``.

Change detection per path: file type, permission bits, owner, size, mtime_ns, ctime_ns, inode
and xattrs for non-directories (ctime catches writes that restore the mtime); type, bits,
owner and xattrs for directories (a directory whose only change is its mtime is not a change
by itself; overlay copies it up only because a child changed, and so do we). Directory
identity (was it removed and re-created, or renamed?) cannot rely on inode numbers, which
ext4 reuses at once: :func:`prepare` tags every directory with the xattr ``trusted.pybuild.cd``
= its own path; a directory without the right tag is new and becomes opaque in the upper dir.
Raises ``OSError`` on I/O failure.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..layer.walk import layer_xattrs

_MARK = "trusted.pybuild.cd"  # on every directory of the prepared root: its own path
_OVL = ("trusted.overlay.", "user.overlay.", _MARK)


def _xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    """A file's layer xattrs without this module's own marker."""
    return tuple(x for x in layer_xattrs(path) if not x[0].startswith(_MARK))
_OPAQUE = "trusted.overlay.opaque"

Meta = tuple[Any, ...]  # (fmt, mode, uid, gid, size, mtime_ns, ctime_ns, ino, xattrs)


@dataclass
class CopyState:
    """What :func:`prepare` made: the private ``root``, the ``manifest`` and the target upper."""

    root: Path
    upper: Path
    base: Path
    manifest: dict[str, Meta] = field(default_factory=dict)


def _meta(path: str, st: os.stat_result) -> Meta:
    fmt = stat.S_IFMT(st.st_mode)
    if fmt == stat.S_IFDIR:
        return (fmt, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, 0, 0, 0, 0, _xattrs(path))
    return (fmt, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns,
            st.st_ctime_ns, st.st_ino, _xattrs(path))


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _set_meta(dst: str, st: os.stat_result, xattrs: Iterable[tuple[str, bytes]], is_link: bool) -> None:
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    if not is_link:
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    for n, v in xattrs:
        try:
            os.setxattr(dst, n, v, follow_symlinks=False)
        except OSError:
            pass
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _copy_node(src: str, dst: str, st: os.stat_result, link_ok: bool) -> None:
    """Create ``dst`` as a copy of non-directory ``src`` (hardlink if ``link_ok``)."""
    mode = st.st_mode
    if stat.S_ISREG(mode):
        if link_ok:
            try:
                os.link(src, dst)
                return
            except OSError:
                pass
        shutil.copyfile(src, dst, follow_symlinks=False)
        _set_meta(dst, st, _xattrs(src), False)
    elif stat.S_ISLNK(mode):
        os.symlink(os.readlink(src), dst)
        _set_meta(dst, st, _xattrs(src), True)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
        os.mknod(dst, mode, st.st_rdev)
        _set_meta(dst, st, _xattrs(src), False)
    # sockets are skipped


def _flatten_one(lower: str, root: str, dir_times: list[tuple[str, os.stat_result]]) -> None:
    stack = [("", lower)]
    while stack:
        rel_dir, host_dir = stack.pop()
        with os.scandir(host_dir) as it:
            children = list(it)
        for de in children:
            rel = f"{rel_dir}/{de.name}" if rel_dir else de.name
            dst = os.path.join(root, rel)
            st = de.stat(follow_symlinks=False)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                _remove(dst)  # whiteout
                continue
            if stat.S_ISDIR(st.st_mode):
                opaque = False
                try:
                    opaque = os.getxattr(de.path, _OPAQUE, follow_symlinks=False) == b"y"
                except OSError:
                    pass
                if os.path.lexists(dst) and (opaque or not os.path.isdir(dst) or os.path.islink(dst)):
                    _remove(dst)
                if not os.path.lexists(dst):
                    os.mkdir(dst, 0o700)
                _set_meta(dst, st, _xattrs(de.path), False)
                dir_times.append((dst, st))
                stack.append((rel, de.path))
                continue
            _remove(dst)
            _copy_node(de.path, dst, st, link_ok=False)


def prepare(lowerdirs: tuple[Path, ...], upperdir: Path, workdir: Path) -> CopyState:
    """Flatten ``lowerdirs`` (top-most first) into a private root under ``workdir``."""
    base = Path(tempfile.mkdtemp(prefix="cd-", dir=workdir))
    root = base / "root"
    root.mkdir(mode=0o755)
    state = CopyState(root=root, upper=Path(upperdir), base=base)
    try:
        dir_times: list[tuple[str, os.stat_result]] = []
        for lower in reversed(lowerdirs):
            _flatten_one(os.fspath(lower), os.fspath(root), dir_times)
        for dst, st in reversed(dir_times):
            try:
                os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
            except FileNotFoundError:
                pass  # removed by a higher layer
        state.manifest = _scan(os.fspath(root), mark=True)
    except BaseException:
        discard(state)
        raise
    return state


def _scan(root: str, mark: bool) -> dict[str, Meta]:
    """Manifest of ``root``; with ``mark``, tag each directory with its path (:data:`_MARK`)."""
    out: dict[str, Meta] = {}
    stack = [("", root)]
    while stack:
        rel_dir, host_dir = stack.pop()
        with os.scandir(host_dir) as it:
            for de in it:
                rel = f"{rel_dir}/{de.name}" if rel_dir else de.name
                st = de.stat(follow_symlinks=False)
                out[rel] = _meta(de.path, st)
                if stat.S_ISDIR(st.st_mode):
                    if mark:
                        os.setxattr(de.path, _MARK, rel.encode(), follow_symlinks=False)
                    stack.append((rel, de.path))
    return out


def _under(rel: str, prefixes: set[str]) -> bool:
    parts = rel.split("/")
    return any("/".join(parts[:i]) in prefixes for i in range(1, len(parts) + 1))


def finish(state: CopyState, *, drop: Iterable[str] = ()) -> None:
    """Write the differences between ``state.root`` and its manifest into ``state.upper``.

    ``drop``: root-relative paths (the sandbox's stubs) ignored with everything below them.
    """
    root, upper = os.fspath(state.root), os.fspath(state.upper)
    drops = {d.strip("/") for d in drop if d.strip("/")}
    manifest = state.manifest
    present: set[str] = set()
    made: set[str] = set()  # dirs already created in upper
    dir_times: list[tuple[str, os.stat_result]] = []

    def ensure_parents(rel: str) -> None:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d in made:
                continue
            up = os.path.join(upper, d)
            if not os.path.isdir(up):
                st = os.lstat(os.path.join(root, d))
                os.mkdir(up, 0o700)
                _set_meta(up, st, _xattrs(os.path.join(root, d)), False)
                dir_times.append((up, st))
            made.add(d)

    stack: list[tuple[str, str, bool]] = [("", root, False)]  # (rel, host, inside a new dir)
    while stack:
        rel_dir, host_dir, fresh = stack.pop()
        with os.scandir(host_dir) as it:
            children = list(it)
        for de in children:
            rel = f"{rel_dir}/{de.name}" if rel_dir else de.name
            if drops and _under(rel, drops):
                continue
            present.add(rel)
            st = de.stat(follow_symlinks=False)
            old = manifest.get(rel)
            now = None if fresh else _meta(de.path, st)
            if stat.S_ISDIR(st.st_mode):
                new_dir = fresh or old is None or old[0] != stat.S_IFDIR or _mark(de.path) != rel
                if new_dir or now != old:
                    ensure_parents(rel)
                    up = os.path.join(upper, rel)
                    if not os.path.isdir(up):
                        os.mkdir(up, 0o700)
                    _set_meta(up, st, _xattrs(de.path), False)
                    if new_dir and not fresh and old is not None:
                        os.setxattr(up, _OPAQUE, b"y", follow_symlinks=False)
                    made.add(rel)
                    dir_times.append((up, st))
                stack.append((rel, de.path, new_dir))
                continue
            if not fresh and now == old:
                continue
            ensure_parents(rel)
            _copy_node(de.path, os.path.join(upper, rel), st, link_ok=True)
    for rel in sorted(manifest):
        if rel in present or _under(rel, drops):
            continue
        parent = rel.rpartition("/")[0]
        if parent and parent not in present:
            continue  # the parent is gone: its own whiteout covers this
        if parent:
            ph = os.path.join(root, parent)
            if os.path.islink(ph) or not os.path.isdir(ph):
                continue  # the parent is no longer a directory: the new node hides it
            if _is_new_dir(parent, upper):
                continue  # an opaque directory hides it already
        ensure_parents(rel)
        os.mknod(os.path.join(upper, rel), stat.S_IFCHR | 0o000, 0)
    for up, st in reversed(dir_times):
        try:
            os.utime(up, ns=(st.st_atime_ns, st.st_mtime_ns))
        except OSError:
            pass


def _mark(path: str) -> str | None:
    try:
        return os.getxattr(path, _MARK, follow_symlinks=False).decode()
    except OSError:
        return None


def _is_new_dir(rel: str, upper: str) -> bool:
    try:
        return os.getxattr(os.path.join(upper, rel), _OPAQUE, follow_symlinks=False) == b"y"
    except OSError:
        return False


def discard(state: CopyState) -> None:
    """Remove the private root (never raises)."""
    shutil.rmtree(state.base, ignore_errors=True)
