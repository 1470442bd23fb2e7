"""A read-only merged view over overlay-format layer directories, without mounting.

Semantics follow overlayfs: layers are searched top-most first; a 0/0 character device hides
the same name in lower layers (whiteout); a directory with ``trusted.overlay.opaque=y`` (or
``user.overlay.opaque=y``) hides the lower layers' content below it; a non-directory in an
upper layer hides everything at and below its path in lower layers. Symlinks are never
followed, neither in image paths nor on the host: the caller resolves image symlinks itself.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from ..errors import PybuildError

_OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")


class RootViewError(PybuildError):
    """A path of the view is missing or of the wrong type for the operation. Names the path."""


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str) -> bool:
    for name in _OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def _parts(path: str) -> list[str]:
    out: list[str] = []
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if out:
                out.pop()
            continue
        out.append(comp)
    return out


class RootView:
    """Merged read-only view of ``lowerdirs`` (top-most first). Paths are absolute image paths;
    ``..`` is resolved lexically and never climbs above ``/``. Nothing here follows symlinks."""

    def __init__(self, lowerdirs: list[Path]) -> None:
        self.layers = [os.fspath(p) for p in lowerdirs]
        # what each host directory on a looked-up path is: the layers never change while a
        # view is in use (snapshots are immutable), so each is lstat'ed and xattr-probed once
        self._parents: dict[str, int] = {}
        # what :meth:`scan` found for the children of the directories it listed (host path and
        # lstat of the top-most copy), so a walk's later lookups of them cost no syscall;
        # bounded: when full it starts again (a lookup that misses it looks the layers up)
        self._found: dict[str, tuple[str, os.stat_result]] = {}

    _MISSING, _DIR, _OPAQUE, _NONDIR = 0, 1, 2, 3

    def _parent(self, host: str) -> int:
        """What ``host`` (a path component above the one looked up) is in its layer."""
        kind = self._parents.get(host)
        if kind is None:
            try:
                st = os.lstat(host)
            except (FileNotFoundError, NotADirectoryError):
                kind = self._MISSING
            else:
                if not stat.S_ISDIR(st.st_mode):
                    kind = self._NONDIR
                else:
                    kind = self._OPAQUE if _is_opaque(host) else self._DIR
            self._parents[host] = kind
        return kind

    def _lookup(self, path: str) -> tuple[str, os.stat_result] | None:
        """(host path, lstat) of ``path`` in the top-most layer holding it, or None."""
        found = self._found.get(path)
        if found is not None:
            return found
        parts = _parts(path)
        last = len(parts) - 1
        for layer in self.layers:
            host = layer
            stop_below = False  # an opaque dir on the way hides the lower layers
            hidden = False
            for i, comp in enumerate(parts):
                host = host + "/" + comp
                if i == last:
                    try:
                        st = os.lstat(host)
                    except (FileNotFoundError, NotADirectoryError):
                        break
                    return None if _is_whiteout(st) else (host, st)
                kind = self._parent(host)
                if kind == self._MISSING:
                    break
                if kind == self._NONDIR:
                    hidden = True  # a whiteout or a non-directory hides everything below
                    break
                if kind == self._OPAQUE:
                    stop_below = True
            else:
                # parts is empty: the root itself
                return host, os.lstat(host)
            if hidden or stop_below:
                return None
        return None

    def lstat(self, path: str) -> os.stat_result | None:
        """The lstat of ``path`` in the merged view, or None when it does not exist."""
        found = self._lookup(path)
        return found[1] if found else None

    def host_path(self, path: str) -> Path | None:
        """The host file backing ``path`` (in the top-most layer holding it), or None."""
        found = self._lookup(path)
        return Path(found[0]) if found else None

    def host_str(self, path: str) -> str | None:
        """``host_path`` as a string, without building a Path (hot path of COPY)."""
        found = self._lookup(path)
        return found[0] if found else None

    def readlink(self, path: str) -> str:
        """The target of the symlink ``path``. Raises RootViewError if it is not a symlink."""
        found = self._lookup(path)
        if found is None or not stat.S_ISLNK(found[1].st_mode):
            raise RootViewError(f"{path}: not a symbolic link in the image")
        return os.readlink(found[0])

    def open(self, path: str) -> BinaryIO:
        """Open the regular file ``path`` for reading (the caller closes it).

        Raises RootViewError when ``path`` is missing or not a regular file.
        """
        found = self._lookup(path)
        if found is None:
            raise RootViewError(f"{path}: no such file in the image")
        if not stat.S_ISREG(found[1].st_mode):
            raise RootViewError(f"{path}: not a regular file in the image")
        try:
            fd = os.open(found[0], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise RootViewError(f"{path}: cannot open {found[0]}: {exc.strerror}") from exc
        return os.fdopen(fd, "rb")

    def listdir(self, path: str) -> list[str]:
        """The sorted names in directory ``path`` of the merged view.

        Raises RootViewError when ``path`` is missing or not a directory.
        """
        return sorted(self._merged(path))

    _FOUND_LIMIT = 1 << 16  # entries :meth:`scan` remembers (a few MB at most)

    def scan(self, path: str) -> list[tuple[str, os.stat_result]]:
        """``(name, lstat)`` of each entry of directory ``path`` of the merged view (the lstat
        of its top-most copy, as :meth:`lstat` gives it), sorted by name; the host paths are
        remembered for the lookups that follow (a walk reads each entry's xattrs and content).
        Raises RootViewError when ``path`` is missing or not a directory."""
        merged = self._merged(path)
        if len(self._found) + len(merged) > self._FOUND_LIMIT:
            self._found.clear()
        base = "/" + "/".join(_parts(path))
        base = base if base != "/" else ""
        out = []
        for name in sorted(merged):
            host, st = merged[name]
            self._found[base + "/" + name] = (host, st)
            out.append((name, st))
        return out

    def _merged(self, path: str) -> dict[str, tuple[str, os.stat_result]]:
        """name -> (host path, lstat) of the top-most copy of each entry of directory ``path``
        in the merged view (whiteouts and what they hide left out)."""
        parts = _parts(path)
        found = self._lookup(path)
        if found is None:
            raise RootViewError(f"{path}: no such directory in the image")
        if not stat.S_ISDIR(found[1].st_mode):
            raise RootViewError(f"{path}: not a directory in the image")
        names: dict[str, tuple[str, os.stat_result]] = {}
        masked: set[str] = set()
        for layer in self.layers:
            host = layer
            blocked = False
            opaque_above = False
            st: os.stat_result | None = None
            for comp in parts:
                host = host + "/" + comp
                try:
                    here = os.lstat(host)
                except (FileNotFoundError, NotADirectoryError):
                    st = None
                    break
                st = here
                if not stat.S_ISDIR(here.st_mode):
                    blocked = True
                    break
            else:
                st = os.lstat(host)
            if blocked:
                break  # a non-directory here hides this path in every lower layer
            if st is not None:
                try:
                    entries = list(os.scandir(host))
                except OSError as exc:
                    raise RootViewError(f"{path}: cannot read {host}: {exc.strerror}") from exc
                for de in entries:
                    if de.name in names or de.name in masked:
                        continue
                    est = de.stat(follow_symlinks=False)
                    if _is_whiteout(est):
                        masked.add(de.name)
                    else:
                        names[de.name] = (de.path, est)
                if _is_opaque(host):
                    break
            # an opaque directory on the way (above ``path``) also stops the search
            h = layer
            for comp in parts[:-1] if parts else []:
                h = h + "/" + comp
                if os.path.isdir(h) and not os.path.islink(h) and _is_opaque(h):
                    opaque_above = True
                    break
            if opaque_above:
                break
        return names
