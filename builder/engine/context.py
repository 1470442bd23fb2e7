"""The build context: a host directory seen through its .dockerignore.

``BuildContext`` answers three questions for COPY/ADD and the cache: which context paths a
source pattern names (``match_sources``), what lies under a path (``walk``), and a stable
digest of sources (``content_digest``). Ignored files are invisible to all three: they
never reach a layer nor a cache key.

Errors are :class:`CopyError` (a DockerfileError without a span: the engine attaches the
instruction's span with ``err.span = ...`` / ``with_source``).
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..errors import DockerfileError
from .dockerignore import IgnoreMatcher, go_clean, has_magic
from .pathresolve import DirView, FsView, glob_view, host_str, resolve_in_root

_CHUNK = 1 << 20


class CopyError(DockerfileError):
    """COPY/ADD cannot be done as written (bad source, bad destination, bad archive...)."""


class SourceNotFoundError(CopyError):
    """A COPY/ADD source names nothing (missing, ignored, or a wildcard matching nothing)."""


class OutsideContextError(CopyError):
    """Kept for callers catching it; no longer raised: ``../x`` is clamped to the context
    root, as BuildKit does (see :func:`check_inside`)."""


def not_found(source: str) -> SourceNotFoundError:
    """BuildKit-style "not found" error naming ``source``."""
    shown = "/" + source.lstrip("/")
    return SourceNotFoundError(f'failed to compute cache key: "{shown}": not found '
                               f'(COPY failed: no source files were specified)')


def check_inside(source: str) -> str:
    """Clean a context source into a path relative to the context root (``.`` for the root).

    ``..`` cannot climb out: as in BuildKit, a source such as ``../x`` is taken from the
    context root ("automatically removes any parent directory navigation", Dockerfile
    reference, COPY/ADD), so ``../x`` is ``x``. Never raises.
    """
    return go_clean("/" + source.strip()).lstrip("/") or "."


def walk_tree(view: FsView, top: str, st: os.stat_result, *,
              hidden: Callable[[str], bool] | None = None,
              descend_hidden: Callable[[str], bool] | None = None,
              ) -> Iterator[tuple[str, os.stat_result]]:
    """Walk ``top`` (an image path of ``view`` whose lstat is ``st``), ``top`` first, in
    layer order: the order of the tar a layer writer sorts by path bytes. A directory ``d``
    sits at its own name and its contents right after ``d/``, so a sibling ``d-x`` or ``d.x``
    (bytes below ``/``) comes between ``d`` and ``d/a``. Symlinks are not followed.

    ``hidden(path)`` hides a path; a hidden directory is still entered when
    ``descend_hidden(path)`` is true and is then yielded just before its first visible
    descendant (so every yielded path has its parents yielded earlier, like BuildKit's sender;
    only then can the order differ from layer order). Directory listings come from
    ``view.scan(path)`` when the view has it (``(name, lstat)`` pairs), else from ``listdir``
    and ``lstat``; either is sorted by name.
    """
    scan = getattr(view, "scan", None)
    is_dir_mode = stat.S_ISDIR
    fsencode = os.fsencode
    # hidden directories entered but not yet yielded, with their depth
    pending: list[tuple[str, os.stat_result, int]] = []
    # (path, lstat, depth, contents?): an entry itself, or the contents of a directory
    stack: list[tuple[str, os.stat_result, int, bool]] = [(top, st, 0, True), (top, st, 0, False)] \
        if is_dir_mode(st.st_mode) else [(top, st, 0, False)]
    while stack:
        path, pst, depth, contents = stack.pop()
        while pending and pending[-1][2] >= depth:
            pending.pop()  # a hidden directory whose subtree showed nothing
        is_hidden = hidden is not None and hidden(path)
        if not contents:
            if is_hidden:
                continue  # a directory's own decision is made again at its contents
            if pending:
                for ppath, ppst, _ in pending:
                    yield ppath, ppst
                pending.clear()
            yield path, pst
            continue
        if is_hidden:
            if descend_hidden is None or not descend_hidden(path):
                continue
            pending.append((path, pst, depth))
        base = path.rstrip("/") + "/"
        if scan is not None:
            children = scan(path)
        else:
            children = []
            for name in view.listdir(path):
                cst = view.lstat(base + name)
                if cst is not None:
                    children.append((name, cst))
        depth += 1
        if all(name.isascii() for name, _ in children):
            # str order is byte order; a listing without directories is already in layer order
            slots: list[tuple[Any, str, os.stat_result, bool]] = []
            dirs = False
            for name, cst in children:
                slots.append((name, name, cst, False))
                if is_dir_mode(cst.st_mode):
                    slots.append((name + "/", name, cst, True))
                    dirs = True
            if dirs:
                slots.sort(key=_slot_key)
        else:
            slots = []
            for name, cst in children:
                key = fsencode(name)
                slots.append((key, name, cst, False))
                if is_dir_mode(cst.st_mode):
                    slots.append((key + b"/", name, cst, True))
            slots.sort(key=_slot_key)
        for _key, name, cst, sub in reversed(slots):
            stack.append((base + name, cst, depth, sub))


def _slot_key(slot: tuple[Any, str, os.stat_result, bool]) -> Any:
    return slot[0]


# (host path, size, mtime_ns, inode, ctime_ns) -> sha256 hex; process-lifetime memo
_HASH_CACHE: dict[tuple[str, int, int, int, int], str] = {}
_HASH_LOCK = threading.Lock()


class HashMemo:
    """The persistent content-hash memo of one build context (see :func:`memo_path`).

    Maps an absolute host path to ``(size, mtime_ns, ino, ctime_ns, sha256 hex)``; an entry
    is used only when all four stat fields still match, so a touched or rewritten file is
    hashed again (its digest, hence any cache key, is unchanged when the bytes are). Only
    files under ``roots`` (the build context) are remembered. Loaded lazily on the first
    lookup; :meth:`save` writes it atomically when something changed (a lost concurrent
    update only costs a re-hash). Stored with ``marshal`` (twice as fast to load as JSON: a
    20,000-file context's memo is read by every build of it); the store is the user's own, as
    trusted as its blobs. A corrupt, foreign or unreadable file counts as empty.
    """

    VERSION = 2
    MAX_ENTRIES = 400_000

    def __init__(self, path: Path, roots: Sequence[str | Path] = ()) -> None:
        self.path = Path(path)
        self.roots = tuple(os.path.join(os.path.abspath(r), "") for r in roots)
        self._files: dict[str, tuple[Any, ...]] | None = None
        self._dirty = False

    def _load(self) -> dict[str, tuple[Any, ...]]:
        if self._files is None:
            import marshal

            try:
                version, files = marshal.loads(self.path.read_bytes())
                self._files = files if version == self.VERSION and isinstance(files, dict) else {}
            except (OSError, ValueError, EOFError, TypeError):
                self._files = {}
        return self._files

    def _wanted(self, abspath: str) -> bool:
        return abspath.startswith(self.roots)

    def get(self, abspath: str, st: os.stat_result) -> str | None:
        if not abspath.startswith(self.roots):
            return None
        files = self._files if self._files is not None else self._load()
        e = files.get(abspath)
        if (type(e) is tuple and len(e) == 5 and e[0] == st.st_size and e[1] == st.st_mtime_ns
                and e[2] == st.st_ino and e[3] == st.st_ctime_ns and type(e[4]) is str):
            return e[4]
        return None

    RACY_NS = 2_000_000_000

    def put(self, abspath: str, st: os.stat_result, digest: str) -> None:
        """Remember a digest, unless the file changed in the last 2 s: a rewrite within the
        filesystem's timestamp granularity could then keep all four stat fields ("racy git")."""
        import time

        if self._wanted(abspath) and time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > self.RACY_NS:
            self._load()[abspath] = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, digest)
            self._dirty = True

    def save(self) -> None:
        """Write the memo if it changed; OSError is ignored (it is only a memo)."""
        if not self._dirty or self._files is None:
            return
        import marshal

        from ..store.layout import write_file_atomic

        files = self._files
        if len(files) > self.MAX_ENTRIES:  # keep the newest insertions
            files = dict(list(files.items())[-self.MAX_ENTRIES:])
        try:
            write_file_atomic(self.path, marshal.dumps((self.VERSION, files)), self.path.parent, durable=False)
        except OSError:
            return
        self._dirty = False


def memo_path(store_root: Path, context: str | Path) -> Path:
    """Where the store keeps the hash memo of the build context at ``context``: one file per
    context directory, so a build reads only the digests of its own context's files."""
    from ..digest import small_hash

    name = small_hash("sha256", os.fsencode(os.path.abspath(context))).hexdigest()[:32]
    return Path(store_root) / "cache" / MEMO_DIR / name


MEMO_DIR = "filehash"  # under <store>/cache


_MEMO: HashMemo | None = None


def open_hash_memo(path: Path, roots: Sequence[str | Path]) -> HashMemo:
    """Use a persistent memo at ``path`` for files under ``roots`` (until
    :func:`close_hash_memo`, which saves it)."""
    global _MEMO
    with _HASH_LOCK:
        _MEMO = HashMemo(path, roots)
        return _MEMO


def close_hash_memo() -> None:
    """Save and detach the persistent memo (no-op without one)."""
    global _MEMO
    with _HASH_LOCK:
        memo, _MEMO = _MEMO, None
    if memo is not None:
        memo.save()


def file_sha256(host: str, st: os.stat_result) -> str:
    """sha256 hex of a host file's content, streamed; memoised per (path, size, mtime, inode,
    ctime) for the process and, when :func:`open_hash_memo` was called, across processes."""
    key = (host, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
    hit = _HASH_CACHE.get(key)  # a lookup needs no lock: one dict operation is atomic
    if hit is not None:
        return hit
    memo = _MEMO
    if memo is not None:
        with _HASH_LOCK:
            hit = memo.get(host if host.startswith("/") and "/." not in host else os.path.abspath(host), st)
            if hit is not None:
                _HASH_CACHE[key] = hit
                return hit
    import hashlib  # a file's content: OpenSSL's

    h = hashlib.sha256()
    try:
        with open(host, "rb", buffering=0) as f:
            while True:
                chunk = f.read(_CHUNK)
                if not chunk:
                    break
                h.update(chunk)
    except OSError as exc:
        raise CopyError(f"cannot read {host}: {exc.strerror}") from None
    digest = h.hexdigest()
    with _HASH_LOCK:
        _HASH_CACHE[key] = digest
        if memo is not None:
            memo.put(os.path.abspath(host), st, digest)
    return digest


def _type_char(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "f"
    if stat.S_ISDIR(mode):
        return "d"
    if stat.S_ISLNK(mode):
        return "l"
    if stat.S_ISCHR(mode):
        return "c"
    if stat.S_ISBLK(mode):
        return "b"
    if stat.S_ISFIFO(mode):
        return "p"
    return "s"


class TreeDigest:
    """The running digest of walked trees, fed entry by entry in walk order.

    Hashes relative names, types, permission bits, owners (when ``owners``), symlink targets,
    device numbers and file contents (:func:`file_sha256`), never mtimes. ``keep_files``:
    :attr:`files` maps each regular file's host path to its content digest and the lstat it
    was hashed under (the memo's key); ``keep_lines``:
    :attr:`kept_lines` holds every line hashed. :meth:`add` one
    walked ``(path, lstat)`` under its display name, :meth:`end_tree` after each top,
    :meth:`hexdigest` at the end. CopyError when a file's content cannot be read.
    """

    __slots__ = ("_view", "_owners", "_hash", "_lines", "_host_of", "files", "kept_lines")

    def __init__(self, view: FsView, *, owners: bool = True, keep_files: bool = False, keep_lines: bool = False) -> None:
        self._view = view
        self._owners = owners
        # with keep_files: host file -> (the content digest hashed for it, its lstat then): the
        # snapshot linker's content ids, trusted only while the file still has that stat
        self.files: dict[str, tuple[str, os.stat_result]] | None = {} if keep_files else None
        # with keep_lines: every line hashed, in order (a cache miss's explanation lists them)
        self.kept_lines: list[str] | None = [] if keep_lines else None
        import hashlib  # one line per file of the tree: OpenSSL's

        self._hash = hashlib.sha256(b"pybuild-tree-v2\0")
        self._lines: list[str] = []
        self._host_of = getattr(view, "host_str", None) or (lambda p: host_str(view, p))

    def add(self, path: str, name: str, pst: os.stat_result, host: str | None = None) -> None:
        """Add walked ``path`` (lstat ``pst``) as ``name``; ``host``: its host file when the
        caller knows it (else the view is asked)."""
        mode = pst.st_mode
        lines = self._lines
        if stat.S_ISREG(mode):  # the common case, without the generic record building
            if host is None:
                host = self._host_of(path)
            if host is None:
                raise CopyError(f"no content available for {path}")
            sha = file_sha256(host, pst)
            if self.files is not None:
                self.files[host] = (sha, pst)
            if self._owners:
                lines.append(f"f\0{name}\0{mode & 0o7777:o}\0{pst.st_uid}\0{pst.st_gid}\0"
                             f"{pst.st_size}\0{sha}\n")
            else:
                lines.append(f"f\0{name}\0{mode & 0o7777:o}\0{pst.st_size}\0{sha}\n")
        else:
            kind = _type_char(mode)
            rec = [kind, name, "%o" % stat.S_IMODE(mode)]
            if self._owners:
                rec += [str(pst.st_uid), str(pst.st_gid)]
            if kind == "l":
                rec.append(self._view.readlink(path))
            elif kind in "cb":
                rec.append(f"{os.major(pst.st_rdev)},{os.minor(pst.st_rdev)}")
            lines.append("\0".join(rec) + "\n")
        if len(lines) >= 512:
            self._flush()

    def _flush(self) -> None:
        self._hash.update("".join(self._lines).encode("utf-8", "surrogateescape"))
        if self.kept_lines is not None:
            self.kept_lines.extend(self._lines)
        self._lines.clear()

    def end_tree(self) -> None:
        self._flush()
        self._hash.update(b"\1")

    def hexdigest(self) -> str:
        """``sha256:<hex>`` of everything added (call after the last :meth:`end_tree`)."""
        return "sha256:" + self._hash.hexdigest()


def tree_digest(view: FsView, items: Iterable[tuple[str, str]], *, owners: bool = True,
                hidden: Callable[[str], bool] | None = None,
                descend_hidden: Callable[[str], bool] | None = None,
                excludes: IgnoreMatcher | None = None, into: TreeDigest | None = None) -> str:
    """Digest of trees of ``view`` (see :class:`TreeDigest`): ``items`` are (display name,
    image path) pairs; a top symlink is followed (as COPY does). ``excludes`` is matched
    against paths relative to each top. SourceNotFoundError for a missing top. ``into``: a
    fresh TreeDigest (or subclass) to feed instead of a new one.
    """
    digest = into if into is not None else TreeDigest(view, owners=owners)
    for display, top in items:
        real = resolve_in_root(view, top)
        st = view.lstat(real)
        if st is None:
            raise not_found(display)
        hide = _combine_hidden(real, hidden, excludes)
        cut = len(real)
        add = digest.add
        for path, pst in walk_tree(view, real, st, hidden=hide, descend_hidden=descend_hidden):
            add(path, display + path[cut:] if path != real else display, pst)
        digest.end_tree()
    return digest.hexdigest()


def _combine_hidden(top: str, hidden: Callable[[str], bool] | None,
                    excludes: IgnoreMatcher | None) -> Callable[[str], bool] | None:
    if not excludes:
        return hidden
    prefix = top.rstrip("/") + "/"

    def hide(path: str) -> bool:
        if hidden is not None and hidden(path):
            return True
        if path == top:
            return False
        return excludes.matches(path[len(prefix):])
    return hide


class BuildContext:
    """A build context directory with its ignore rules.

    ``root`` is the host directory; ``ignore`` the compiled .dockerignore (see
    :func:`builder.engine.dockerignore.load_ignore`). ``view`` is a :class:`DirView` of it
    (image path ``/x`` is context path ``x``). Context paths passed in and returned are
    relative, ``/``-separated, without leading ``./`` (``.`` is the root).
    """

    def __init__(self, root: Path, ignore: IgnoreMatcher | None = None) -> None:
        self.root = Path(root)
        self.ignore = ignore if ignore is not None else IgnoreMatcher()
        self.view = DirView(self.root)

    # -- ignore rules, on image paths of self.view
    def is_ignored(self, rel: str) -> bool:
        """True when the context path ``rel`` is excluded by .dockerignore."""
        rel = rel.strip("/")
        if rel in ("", "."):
            return False
        return self.ignore.matches(rel)

    def hidden(self, path: str) -> bool:
        """``is_ignored`` for an image path of ``view`` (``/a/b``)."""
        return self.is_ignored(path)

    @property
    def hide(self) -> Callable[[str], bool] | None:
        """:meth:`hidden`, or None when nothing is ignored (walks then skip the check)."""
        return self.hidden if self.ignore else None

    def descend_hidden(self, path: str) -> bool:
        """Whether an ignored directory must be entered (an exception may match inside)."""
        return self.ignore.may_contain_exceptions(path.strip("/"))

    def _present(self, path: str, st: os.stat_result) -> bool:
        if not self.hidden(path):
            return True
        if stat.S_ISDIR(st.st_mode) and self.descend_hidden(path):
            return any(True for _ in walk_tree(self.view, path, st, hidden=self.hidden,
                                               descend_hidden=self.descend_hidden))
        return False

    def match_sources(self, pattern: str, *, allow_empty_wildcard: bool = False) -> list[str]:
        """Context paths named by a COPY source ``pattern`` (Go filepath.Match per component).

        ``../`` is clamped to the context root. Raises SourceNotFoundError (naming the
        source) when nothing visible matches, except that a pattern with wildcards matching
        nothing gives ``[]`` when ``allow_empty_wildcard`` (BuildKit's COPY/ADD set
        ``AllowEmptyWildcard``). Sorted; a non-wildcard source gives itself.
        """
        rel = check_inside(pattern)
        if rel == ".":
            return ["."]
        found = glob_view(self.view, "/" + rel, present=self._present)
        if not found:
            if allow_empty_wildcard and has_magic(rel):
                return []
            raise not_found(pattern)
        return [p.lstrip("/") for p in found]

    def stat(self, rel: str, *, follow: bool = True) -> os.stat_result | None:
        """lstat of a context path (following its symlinks inside the context when
        ``follow``); None when missing or ignored."""
        rel = check_inside(rel)
        path = resolve_in_root(self.view, "/" + rel, follow_last=follow)
        st = self.view.lstat(path)
        if st is None or not self._present(path, st):
            return None
        return st

    def walk(self, rel: str = ".") -> Iterator[tuple[str, os.stat_result]]:
        """(context path, lstat) for ``rel`` and everything under it, pre-order, names sorted,
        ignored entries skipped (an ignored directory appears only when an exception pattern
        re-includes something inside it, just before that content). Symlinks not followed.
        Raises SourceNotFoundError when ``rel`` is missing or ignored.
        """
        rel = check_inside(rel)
        top = "/" if rel == "." else "/" + rel
        st = self.view.lstat(top)
        if st is None:
            raise not_found(rel)
        any_yielded = False
        for path, pst in walk_tree(self.view, top, st, hidden=self.hidden,
                                   descend_hidden=self.descend_hidden):
            any_yielded = True
            yield (path.lstrip("/") or "."), pst
        if not any_yielded:
            raise not_found(rel)

    def content_digest(self, rel_paths: Sequence[str], *, excludes: Sequence[str] = (),
                       owners: bool = True, into: TreeDigest | None = None) -> str:
        """Stable ``sha256:`` digest of the given context paths (as returned by
        ``match_sources``; top-level symlinks followed): relative names, types, modes,
        uid/gid (when ``owners``), symlink targets and file contents (streamed; memoised per
        file identity for the process), never mtimes. Ignored files do not contribute.
        ``excludes``: COPY ``--exclude`` patterns, matched relative to each source.
        """
        items = []
        for rel in rel_paths:
            clean = check_inside(rel)
            items.append((clean, "/" if clean == "." else "/" + clean))
        ex = IgnoreMatcher(excludes) if excludes else None
        return tree_digest(self.view, items, owners=owners, hidden=self.hide,
                           descend_hidden=self.descend_hidden, excludes=ex, into=into)


def expand_context_sources(context: BuildContext, sources: Sequence[str]) -> list[str]:
    """Every source pattern expanded with ``match_sources``, order kept, duplicates dropped."""
    out: list[str] = []
    for src in sources:
        for rel in context.match_sources(src):
            if rel not in out:
                out.append(rel)
    return out


__all__ = [
    "BuildContext", "CopyError", "SourceNotFoundError", "OutsideContextError", "walk_tree",
    "tree_digest", "TreeDigest", "file_sha256", "HashMemo", "open_hash_memo", "close_hash_memo", "check_inside", "not_found", "expand_context_sources",
]
