"""Image paths: the read-only filesystem view protocol and symlink resolution inside a root.

``FsView`` is what COPY/ADD/USER resolution reads through: the build context (``DirView``),
a stage's or base image's stacked layers (``builder.store.rootview.RootView``). Paths given to a
view are absolute image paths (``/etc/passwd``); a view never follows symlinks itself, callers
resolve them with :func:`resolve_in_root` first, which never leaves the view's root.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO, Callable, Protocol

from ..errors import PybuildError
from .dockerignore import go_clean, go_match, has_magic

MAX_SYMLINKS = 40


class PathResolveError(PybuildError):
    """An image path cannot be resolved (symlink loop, escape attempt, bad component)."""


class FsView(Protocol):
    """Read access to a filesystem tree addressed by absolute image paths.

    ``lstat`` returns None when the path does not exist; no method follows a symlink in the
    last component, and intermediate components are expected to be real directories (resolve
    with :func:`resolve_in_root`). ``open`` returns a binary file the caller closes.
    ``host_path`` is the host file holding that path's content (for streaming), or None.
    """

    def lstat(self, path: str) -> os.stat_result | None: ...

    def readlink(self, path: str) -> str: ...

    def listdir(self, path: str) -> list[str]: ...

    def open(self, path: str) -> BinaryIO: ...

    def host_path(self, path: str) -> Path | None: ...


def split_path(path: str) -> list[str]:
    """Components of an image path, ``.`` and empty ones dropped (``..`` kept)."""
    return [c for c in path.split("/") if c and c != "."]


def normalize(path: str) -> str:
    """Lexically clean an image path to an absolute one; ``..`` never goes above ``/``."""
    out: list[str] = []
    for comp in split_path(path):
        if comp == "..":
            if out:
                out.pop()
        else:
            out.append(comp)
    return "/" + "/".join(out)


class DirView:
    """An :class:`FsView` over a plain host directory (the build context, tests).

    Image path ``/a/b`` is ``root/a/b``. A path whose intermediate component is a symlink on
    the host raises PathResolveError rather than being followed out of the root.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))
        self._root_str = str(self.root)
        self._checked_dirs: set[str] = {"/"}
        self._scans: dict[str, list[tuple[str, os.stat_result]]] = {}

    def _host(self, path: str) -> str:
        if path.startswith("/") and "//" not in path and "/." not in path and path != "/" \
                and not path.endswith("/"):
            image = path  # already clean: the common case while walking
        else:
            image = normalize(path)
        parent = image.rsplit("/", 1)[0] or "/"
        if parent not in self._checked_dirs:
            host_parent = self._root_str + parent
            if os.path.realpath(host_parent) != host_parent:
                # a component is a symlink: refuse instead of following it on the host
                raise PathResolveError(f"{path}: a parent directory is a symbolic link; "
                                       f"resolve it inside the root first")
            self._checked_dirs.add(parent)
        return self._root_str + image if image != "/" else self._root_str

    def lstat(self, path: str) -> os.stat_result | None:
        try:
            return os.lstat(self._host(path))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise PathResolveError(f"cannot stat {path}: {exc.strerror}") from None

    def readlink(self, path: str) -> str:
        try:
            return os.readlink(self._host(path))
        except OSError as exc:
            raise PathResolveError(f"cannot read link {path}: {exc.strerror}") from None

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(self._host(path)))
        except OSError as exc:
            raise PathResolveError(f"cannot list {path}: {exc.strerror}") from None

    def scan(self, path: str) -> list[tuple[str, os.stat_result]]:
        """``(name, lstat)`` of each entry of directory ``path``, sorted by name; remembered
        for the view's lifetime (a build reads its context as one snapshot: the cache key
        walk and the copy that follows see the same listing). PathResolveError if unreadable."""
        hit = self._scans.get(path)
        if hit is not None:
            return hit
        out: list[tuple[str, os.stat_result]] = []
        try:
            with os.scandir(self._host(path)) as it:
                for entry in it:
                    try:
                        out.append((entry.name, entry.stat(follow_symlinks=False)))
                    except FileNotFoundError:
                        continue  # removed while listing
        except OSError as exc:
            raise PathResolveError(f"cannot list {path}: {exc.strerror}") from None
        out.sort()
        self._scans[path] = out
        return out

    def open(self, path: str) -> BinaryIO:
        host = self._host(path)
        try:
            fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise PathResolveError(f"cannot open {path}: {exc.strerror}") from None
        return os.fdopen(fd, "rb")

    def host_path(self, path: str) -> Path | None:
        return Path(self._host(path))

    def host_str(self, path: str) -> str:
        """``host_path`` as a string, without building a Path (hot path of COPY)."""
        return self._host(path)


def host_str(view: FsView, path: str) -> str | None:
    """The host file of ``path`` as a string: ``view.host_str`` when the view has it
    (DirView), else ``str(view.host_path(path))``; None when the view has no host file."""
    fast = getattr(view, "host_str", None)
    if fast is not None:
        found: str | None = fast(path)
        return found
    host = view.host_path(path)
    return None if host is None else str(host)


def resolve_in_root(view: FsView, path: str, *, follow_last: bool = True) -> str:
    """Resolve ``path`` following the view's own symlinks, never leaving its root.

    Absolute link targets restart at the view's root; ``..`` stops at ``/``. Missing
    components are kept lexically (the result may not exist). ``follow_last=False`` leaves a
    symlink in the last component unresolved. Raises PathResolveError after
    ``MAX_SYMLINKS`` (40) links. Returns a clean absolute path.
    """
    pending = split_path(path)
    pending.reverse()  # a stack: next component at the end
    resolved: list[str] = []
    links = 0
    while pending:
        comp = pending.pop()
        if comp == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = "/" + "/".join(resolved + [comp])
        is_last = not pending
        st = view.lstat(candidate)
        if st is not None and stat.S_ISLNK(st.st_mode) and (follow_last or not is_last):
            links += 1
            if links > MAX_SYMLINKS:
                raise PathResolveError(f"{path}: too many levels of symbolic links")
            target = view.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = split_path(target)
            parts.reverse()
            pending.extend(parts)
            continue
        resolved.append(comp)
    return "/" + "/".join(resolved)


def glob_view(view: FsView, pattern: str, *,
              present: Callable[[str, os.stat_result], bool] | None = None) -> list[str]:
    """Expand a COPY source pattern (Go ``filepath.Match`` per component) against ``view``.

    ``pattern`` is an image path (relative ones are taken from ``/``); components without
    wildcards are followed as written (symlinks in them resolved inside the root), wildcard
    components are matched against directory listings. ``present(path, st)`` may hide entries
    (ignored context files). Returns sorted absolute paths, possibly empty. A pattern without
    wildcards returns itself cleaned when it exists (after resolving parents), else ``[]``.
    Raises BadPatternError for a malformed pattern.
    """
    comps = split_path(go_clean("/" + pattern))
    if not has_magic(pattern):
        clean = normalize("/" + _unescape(pattern))
        real = resolve_in_root(view, clean, follow_last=False)
        st = view.lstat(real)
        if st is None or (present is not None and not present(real, st)):
            return []
        return [clean]
    results: list[str] = ["/"]
    for comp in comps:
        nxt: list[str] = []
        for base in results:
            real_base = resolve_in_root(view, base)
            bst = view.lstat(real_base)
            if bst is None or not stat.S_ISDIR(bst.st_mode):
                continue
            if has_magic(comp):
                for name in view.listdir(real_base):
                    if go_match(comp, name):
                        nxt.append(_join(base, name))
            else:
                literal = _unescape(comp)
                if comp == "..":
                    nxt.append(normalize(base + "/.."))
                else:
                    nxt.append(_join(base, literal))
        results = nxt
        if not results:
            return []
    out: list[str] = []
    for p in results:
        real = resolve_in_root(view, p, follow_last=False)
        st = view.lstat(real)
        if st is None:
            continue
        if present is not None and not present(real, st):
            continue
        out.append(p)
    return sorted(set(out))


def _join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def _unescape(comp: str) -> str:
    out = []
    i = 0
    while i < len(comp):
        if comp[i] == "\\" and i + 1 < len(comp):
            out.append(comp[i + 1])
            i += 2
        else:
            out.append(comp[i])
            i += 1
    return "".join(out)
