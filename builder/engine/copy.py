"""COPY (and the non-archive part of ADD): sources + destination rules -> layer entries.

``copy_entries`` only decides *what* the layer holds; :func:`builder.layer.tar.write_layer`
sorts and writes it. File content is never read here: FILE entries carry the host path of the
source (``FsView.host_path``) and the tar writer streams it; heredoc bodies travel as ``data``.

Rules (Docker/BuildKit):

* A directory source copies its *contents* into the destination; a file source goes inside
  the destination when it ends with ``/`` (or ``/.``) or is an existing directory, otherwise
  it becomes that path. Several sources (arguments or wildcard matches) are copied one after
  another as BuildKit's file op does (fsutil ``copy.Copy`` per match, current BuildKit has no
  "must end with /" check): with a destination that is not a directory, each file source
  replaces the previous one (the last match wins); once a directory source has made the
  destination a directory, later file sources go inside it.
* A source with wildcards that matches nothing copies nothing (BuildKit's
  ``AllowEmptyWildcard``); a literal source that does not exist is SourceNotFoundError.
* Sources: context paths (ignore rules applied, ``..`` refused) or absolute paths of another
  stage/image (``--from``); wildcards use Go ``filepath.Match`` per component; a symlink
  named as a source is followed (inside its root), symlinks found inside directories are
  copied as symlinks; hard links among the copied files become HARDLINK entries.
* The destination is resolved inside the image root (``resolve_in_root`` on ``dest_view``):
  ``/app -> /srv`` lands in ``/srv``; no link leads outside the image.
* Parents: every directory above a copied path is part of the layer. Directories that exist
  in ``dest_view`` are emitted with their existing metadata (as an overlay diff would carry
  them); missing ones are created ``0755`` owned by the ``--chown`` owner or root (BuildKit
  chowns the directories its MkdirAll creates), mtime the time of the step (MkdirAll stamps
  them when made), clamped to ``mtime_clamp``. A directory source copied into a
  missing destination creates the destination the same way (not with the source dir's mode).
* Metadata: permission bits kept (``--chmod`` sets them on files and directories, not on
  symlinks: an octal mode replaces them, a symbolic one transforms each entry's own, see
  :mod:`builder.engine.chmod`); owner 0:0 from the context, the source's owner for ``--from``; ``--chown``
  wins; mtimes kept, clamped to ``mtime_clamp`` when given; xattrs kept for ``--from``
  (overlay's own ``trusted.overlay.*``/``user.overlay.*`` dropped).
* ``--exclude``: .dockerignore-language patterns matched against paths relative to each copied
  source (a top-level wildcard match is matched by its path relative to the wildcard's
  directory); with ``--parents``, relative to the pivot.
* ``--parents``: each match keeps its path relative to the context/root, or relative to the
  ``/./`` pivot when the source contains one (``a/./b/c`` -> ``dest/b/c``); its parent
  directories come with the source directories' metadata. The destination is a directory.
* Heredoc files (``COPY <<EOF /path``): mode 0644 unless ``--chmod``, owner as above, mtime the
  time of the step (BuildKit's Mkfile gets no created time), clamped to ``mtime_clamp``.

Errors: :class:`~builder.engine.context.CopyError` subclasses, without a span.
"""

from __future__ import annotations

import os
import posixpath
import stat
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

from ..layer.entries import Entry, EntryType
from .chmod import Chmod, as_chmod, parse_chmod
from .context import (BuildContext, CopyError, SourceNotFoundError, TreeDigest, check_inside,
                      not_found, walk_tree)
from .dockerignore import IgnoreMatcher, go_clean, has_magic
from .pathresolve import FsView, glob_view, host_str, normalize, resolve_in_root, split_path

if TYPE_CHECKING:
    from ..layer.tar import Record

HEREDOC_MODE = 0o644
_SKIPPED_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")


@dataclass(frozen=True, slots=True)
class _Item:
    """One matched source: ``path`` as matched in the source view, ``display`` for messages,
    ``ex_root`` the path --parents is relative to (the pivot), ``top_rel`` the name --exclude
    matches the item itself with (None: never excluded), ``desc_prefix`` what the paths
    below the item are prefixed with for --exclude (None: relative to the item)."""

    path: str
    display: str
    ex_root: str
    top_rel: str | None
    desc_prefix: str | None = None


def _rel_to(path: str, root: str) -> str:
    if root == "/":
        return path.lstrip("/")
    return path[len(root.rstrip("/")) + 1:]


def _wildcard_base(pattern: str) -> str:
    """The directory part of an absolute pattern before its first wildcard component."""
    base: list[str] = []
    for comp in split_path(pattern):
        if has_magic(comp):
            break
        base.append(comp)
    return normalize("/" + "/".join(base))


class _Emitter:
    """Collects entries by layer name (a later source replaces an earlier same-name entry)."""

    def __init__(self, *, dest_view: FsView, chown: tuple[int, int] | None, chmod: Chmod | None,
                 keep_owner: bool, keep_xattrs: bool, mtime_clamp: int | None,
                 streaming: bool = False) -> None:
        self.dest_view = dest_view
        self.streaming = streaming  # entries are handed out, not kept (no source replaces another)
        self.chown = chown
        self.chmod = chmod
        self.keep_owner = keep_owner
        self.keep_xattrs = keep_xattrs
        self.clamp = mtime_clamp
        # what BuildKit's file op creates itself (missing parents, heredoc files) gets the
        # time it is made, as fsutil's MkdirAll / Mkfile do (clamped by SOURCE_DATE_EPOCH)
        self.now = self._mtime(time.time())
        self.stamped = False  # an entry carries the time it was made (unclamped): no two runs give the same layer
        self.entries: dict[str, Entry] = {}
        self.inodes: dict[tuple[int, int], str] = {}

    def _mtime(self, mtime: float) -> int:
        value = max(int(mtime), 0)
        return min(value, self.clamp) if self.clamp is not None else value

    def put(self, entry: Entry) -> None:
        self.entries[entry.name] = entry

    def ensure_parents(self, image_path: str, *, include_self: bool = False) -> None:
        """Emit every directory above ``image_path`` (and itself when ``include_self``):
        existing ones of ``dest_view`` with their metadata (owner, mode, mtime, xattrs: an
        entry carrying less would hide the lower layer's directory once stacked), missing
        ones 0755."""
        comps = split_path(image_path)
        upto = len(comps) if include_self else len(comps) - 1
        for i in range(1, upto + 1):
            name = "/".join(comps[:i])
            known = self.entries.get(name)
            if known is not None:
                if known.type is not EntryType.DIR:
                    raise CopyError(f"cannot copy to non-directory: /{name}")
                continue
            st = self.dest_view.lstat("/" + name)
            if st is not None:
                if not stat.S_ISDIR(st.st_mode):
                    raise CopyError(f"cannot copy to non-directory: /{name}")
                self.put(Entry(name=name, type=EntryType.DIR, mode=stat.S_IMODE(st.st_mode),
                               uid=st.st_uid, gid=st.st_gid, mtime=self._mtime(st.st_mtime),
                               xattrs=self._xattrs(self.dest_view, "/" + name)))
            else:
                uid, gid = self.chown if self.chown is not None else (0, 0)
                self.put(Entry(name=name, type=EntryType.DIR, mode=0o755, uid=uid, gid=gid,
                               mtime=self.now))
                self.stamped = self.stamped or self.clamp is None

    def source_entry(self, view: FsView, path: str, st: os.stat_result, target: str) -> None:
        """Emit the entry for source ``path`` (lstat ``st``) at image path ``target``."""
        entry = self.make_entry(view, path, st, target)
        if entry is not None:
            self.put(entry)

    def make_entry(self, view: FsView, path: str, st: os.stat_result, target: str,
                   host: str | None = None) -> Entry | None:
        """The entry for source ``path`` (lstat ``st``) at image path ``target``; None for the
        image root and for sockets (a tar cannot hold them, BuildKit's sender skips them).
        ``host``: the source's host file when the caller knows it."""
        name = target.strip("/")
        if not name:
            return None  # the image root itself is never a layer member
        mode = st.st_mode
        perm = mode & 0o7777
        if self.chmod is not None and not stat.S_ISLNK(mode):
            perm = self.chmod.apply(perm, stat.S_ISDIR(mode))
        if self.chown is not None:
            uid, gid = self.chown
        elif self.keep_owner:
            uid, gid = st.st_uid, st.st_gid
        else:
            uid = gid = 0
        mtime = self._mtime(st.st_mtime)
        xattrs = self._xattrs(view, path) if self.keep_xattrs and not stat.S_ISLNK(mode) else ()
        if stat.S_ISREG(mode):
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                first = self.inodes.get(key)
                if first is not None and first != name and (self.streaming or first in self.entries):
                    return Entry(name, EntryType.HARDLINK, perm, uid, gid, mtime, linkname=first, xattrs=xattrs)
                self.inodes[key] = name
            if host is None:
                host = host_str(view, path)
            if host is None:
                raise CopyError(f"no content available for {path}")
            return Entry(name, EntryType.FILE, perm, uid, gid, mtime, st.st_size, xattrs=xattrs, source=host)
        if stat.S_ISDIR(mode):
            return Entry(name, EntryType.DIR, perm, uid, gid, mtime, xattrs=xattrs)
        if stat.S_ISLNK(mode):
            return Entry(name, EntryType.SYMLINK, perm, uid, gid, mtime, linkname=view.readlink(path), xattrs=xattrs)
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            kind = EntryType.CHAR if stat.S_ISCHR(mode) else EntryType.BLOCK
            return Entry(name, kind, perm, uid, gid, mtime, devmajor=os.major(st.st_rdev),
                         devminor=os.minor(st.st_rdev), xattrs=xattrs)
        if stat.S_ISFIFO(mode):
            return Entry(name, EntryType.FIFO, perm, uid, gid, mtime, xattrs=xattrs)
        return None

    @staticmethod
    def _xattrs(view: FsView, path: str) -> tuple[tuple[str, bytes], ...]:
        host = host_str(view, path)
        if host is None:
            return ()
        try:
            names = os.listxattr(host, follow_symlinks=False)
        except OSError:
            return ()
        out = []
        for key in sorted(names):
            if key.startswith(_SKIPPED_XATTR_PREFIXES):
                continue
            try:
                out.append((key, os.getxattr(host, key, follow_symlinks=False)))
            except OSError:
                continue
        return tuple(out)


def _expand(sources: Sequence[str], *, src_view: FsView, context: BuildContext | None,
            src_is_context: bool, parents: bool) -> list[_Item]:
    items: list[_Item] = []
    seen: set[str] = set()
    for src in sources:
        if parents:
            head, sep, tail = src.partition("/./")
            pivot_src = head if sep else ""
            pattern = (head + "/" + tail) if sep else src
        else:
            pivot_src, pattern = "", src
        if src_is_context:
            rel = check_inside(pattern)
            pivot = "/" + check_inside(pivot_src) if pivot_src else "/"
            pivot = normalize(pivot)
            if context is not None:
                paths = ["/" + p if p != "." else "/"
                         for p in context.match_sources(pattern, allow_empty_wildcard=True)]
            else:
                paths = glob_view(src_view, "/" + rel)
        else:
            pivot = normalize("/" + pivot_src) if pivot_src else "/"
            paths = glob_view(src_view, "/" + pattern)
        magic = has_magic(pattern)
        if not paths:
            if magic:
                continue  # BuildKit's AllowEmptyWildcard: a wildcard matching nothing copies nothing
            raise not_found(src)
        base = _wildcard_base("/" + go_clean(pattern).lstrip("/")) if magic else None
        for path in paths:
            if path in seen:
                continue
            seen.add(path)
            display = path.lstrip("/") or "."
            if parents:
                if path != pivot and not path.startswith(pivot.rstrip("/") + "/"):
                    raise CopyError(f"{src}: source is outside its --parents pivot")
                parent_rel = _rel_to(path, pivot) or None
                items.append(_Item(path, display, pivot, parent_rel, parent_rel))
            else:
                top_rel = _rel_to(path, base) if base is not None else None
                items.append(_Item(path, display, path, top_rel or None))
    return items


def _make_hidden(item: _Item, real_top: str, excludes: IgnoreMatcher | None,
                 ctx_hidden: Callable[[str], bool] | None) -> Callable[[str], bool] | None:
    if not excludes:
        return ctx_hidden
    prefix = real_top.rstrip("/") + "/"

    def hidden(path: str) -> bool:
        if ctx_hidden is not None and ctx_hidden(path):
            return True
        if not excludes:
            return False
        if path == real_top:
            return item.top_rel is not None and excludes.matches(item.top_rel)
        below = path[len(prefix):] if real_top != "/" else path.lstrip("/")
        rel = (item.desc_prefix + "/" + below) if item.desc_prefix else below
        return excludes.matches(rel)
    return hidden


def _make_descend(item: _Item, real_top: str, excludes: IgnoreMatcher | None,
                  ctx_descend: Callable[[str], bool] | None) -> Callable[[str], bool] | None:
    """Whether a hidden directory must still be walked: a .dockerignore exception or an
    ``--exclude`` exception (``!pattern``) may re-include something inside it."""
    if not (excludes and excludes.has_exceptions):
        return ctx_descend
    prefix = real_top.rstrip("/") + "/"

    def descend(path: str) -> bool:
        if ctx_descend is not None and ctx_descend(path):
            return True
        if path == real_top:
            rel = item.top_rel or ""
        else:
            below = path[len(prefix):] if real_top != "/" else path.lstrip("/")
            rel = (item.desc_prefix + "/" + below) if item.desc_prefix else below
        return excludes.may_contain_exceptions(rel) if rel else True
    return descend


def copy_entries(*, sources: Sequence[str], dest: str, src_view: FsView, src_is_context: bool,
                 context: BuildContext | None, dest_view: FsView,
                 chown: tuple[int, int] | None = None, chmod: Chmod | int | None = None,
                 excludes: Sequence[str] = (), parents: bool = False,
                 heredocs: Sequence[tuple[str, str | bytes]] = (),
                 mtime_clamp: int | None = None) -> list[Entry]:
    """Entries of the layer a COPY produces (see the module docstring for the rules).

    ``sources``: expanded source words (patterns allowed; ``<<NAME`` words are heredoc
    placeholders and ignored here); context-relative when ``src_is_context`` (``context``
    then supplies ignore rules and matching), else absolute paths of ``src_view``.
    ``dest``: absolute image path, a trailing ``/`` meaning "directory". ``heredocs``:
    (file name, body) pairs. Returns unsorted entries, at most one per layer name.
    Raises CopyError / SourceNotFoundError (no span attached).
    """
    chmod = as_chmod(chmod)
    file_sources = [s for s in sources if not s.startswith("<<")]
    ex = IgnoreMatcher(excludes) if excludes else None
    items = _expand(file_sources, src_view=src_view, context=context,
                    src_is_context=src_is_context, parents=parents)

    dest_real, dest_is_dir = _destination(dest, dest_view, parents)
    emit = _Emitter(dest_view=dest_view, chown=chown, chmod=chmod,
                    keep_owner=not src_is_context, keep_xattrs=not src_is_context,
                    mtime_clamp=mtime_clamp)
    ctx_hidden = context.hide if (src_is_context and context is not None) else None
    ctx_descend = context.descend_hidden if (src_is_context and context is not None) else None

    for item in items:
        real, st, is_dir, target = _place(emit, item, src_view, dest_view, dest_real,
                                          dest_is_dir or _made_dir(emit, dest_real), parents)
        hidden = _make_hidden(item, real, ex, ctx_hidden)
        descend = _make_descend(item, real, ex, ctx_descend)
        for path, pst in walk_tree(src_view, real, st, hidden=hidden, descend_hidden=descend):
            if path == real:
                if is_dir and not parents:
                    continue  # a directory source contributes its contents only
                emit.source_entry(src_view, path, pst, target)
                continue
            below = path[len(real.rstrip("/")) + 1:]
            emit.source_entry(src_view, path, pst, posixpath.join(target, below))

    for name, body in heredocs:
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        target = posixpath.join(dest_real, name) if dest_is_dir or _made_dir(emit, dest_real) else dest_real
        emit.ensure_parents(target)
        uid, gid = chown if chown is not None else (0, 0)
        emit.put(Entry(name=target.strip("/"), type=EntryType.FILE,
                       mode=chmod.apply(HEREDOC_MODE, False) if chmod is not None else HEREDOC_MODE, uid=uid, gid=gid,
                       mtime=emit.now, size=len(data), data=data))
    return list(emit.entries.values())


def _made_dir(emit: _Emitter, path: str) -> bool:
    """Whether an earlier source of the same COPY made ``path`` a directory (BuildKit copies
    the sources one after another, each seeing what the previous ones wrote)."""
    entry = emit.entries.get(path.strip("/"))
    return entry is not None and entry.type is EntryType.DIR


def _destination(dest: str, dest_view: FsView, parents: bool) -> tuple[str, bool]:
    """The destination resolved inside the image root, and whether it is a directory (by
    its spelling, ``--parents``, or because one exists there)."""
    dir_syntax = dest.endswith("/") or dest.endswith("/.") or dest in ("", ".")
    dest_real = resolve_in_root(dest_view, normalize(dest), follow_last=True)
    dst_st = dest_view.lstat(dest_real)
    return dest_real, dir_syntax or parents or (dst_st is not None and stat.S_ISDIR(dst_st.st_mode))


def _place(emit: _Emitter, item: _Item, src_view: FsView, dest_view: FsView, dest_real: str,
           dest_is_dir: bool, parents: bool) -> tuple[str, os.stat_result, bool, str]:
    """Where one matched source goes: ``(real source path, its lstat, is a directory, image
    path it lands at)``; the directories above the landing place are emitted."""
    real = resolve_in_root(src_view, item.path, follow_last=True)
    st = src_view.lstat(real)
    if st is None:
        raise not_found(item.display)
    is_dir = stat.S_ISDIR(st.st_mode)
    if parents:
        rel = item.top_rel or ""
        target = posixpath.join(dest_real, rel) if rel else dest_real
        emit.ensure_parents(dest_real, include_self=True)
        _emit_source_parents(emit, src_view, item.ex_root, rel, dest_real)
    elif is_dir:
        target = dest_real
        emit.ensure_parents(dest_real, include_self=True)
    else:
        base = posixpath.basename(item.path.rstrip("/")) or item.display
        target = posixpath.join(dest_real, base) if dest_is_dir else dest_real
        emit.ensure_parents(target)
        existing = dest_view.lstat(target) if target != "/" else None
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            raise CopyError(f"cannot replace directory {target} with file {item.display}")
    return real, st, is_dir, target


class SingleSourceCopy:
    """COPY of one source from the build context, without ``--parents``, ``--exclude`` or
    heredocs, under ignore rules without exceptions: its entries can be produced in layer
    order while the context is walked, so the tar writer takes them as they come.

    :meth:`find` matches the source (SourceNotFoundError as
    :func:`copy_entries` raises them; :class:`NotSingleSource` when it cannot be streamed);
    the constructor places the match (CopyError). :meth:`walk` is the walk of the source, the
    same one :meth:`BuildContext.content_digest` hashes; :meth:`entries` turns what it gave
    into the same entries :func:`copy_entries` gives, in layer order.
    """

    @staticmethod
    def find(context: BuildContext, source: str) -> _Item:
        """The one match of ``source`` in ``context``; NotSingleSource otherwise."""
        if context.ignore.has_exceptions or source.startswith("<<"):
            raise NotSingleSource(source)
        items = _expand([source], src_view=context.view, context=context, src_is_context=True, parents=False)
        if len(items) != 1:
            raise NotSingleSource(source)
        return items[0]

    def __init__(self, *, match: _Item, dest: str, context: BuildContext, dest_view: FsView,
                 chown: tuple[int, int] | None = None, chmod: Chmod | int | None = None,
                 mtime_clamp: int | None = None) -> None:
        self.context = context
        self.view = context.view
        self.item = match
        dest_real, dest_is_dir = _destination(dest, dest_view, False)
        self._emit = _Emitter(dest_view=dest_view, chown=chown, chmod=as_chmod(chmod), keep_owner=False,
                              keep_xattrs=False, mtime_clamp=mtime_clamp, streaming=True)
        self.real, self.st, self.is_dir, self.target = _place(self._emit, self.item, self.view, dest_view,
                                                              dest_real, dest_is_dir, False)
        self._parents = list(self._emit.entries.values())  # ancestors, each a prefix of the next

    @property
    def stamps_now(self) -> bool:
        """Whether the layer holds a directory this COPY makes with the current time (no
        SOURCE_DATE_EPOCH): each run then gives a new layer, never the last run's."""
        return self._emit.stamped

    def walk(self, digest: TreeDigest | None = None) -> Iterator[tuple[str, os.stat_result, str | None]]:
        """``(path, lstat, host file or None)`` of the source and everything under it, in
        layer order (the host file is given for regular files). Each is also added to
        ``digest``, which then equals the context's ``content_digest`` of the source (owners
        left out) once the walk is exhausted."""
        # The walk enters only real directories (a symlink is never descended) below a top
        # resolved inside the context, so a walked path's host file is the root plus the path.
        root = self.view.host_str("/")
        real, display = self.real, self.item.display
        add = digest.add if digest is not None else None
        cut = len(real)
        is_reg = stat.S_ISREG
        for path, pst in walk_tree(self.view, real, self.st, hidden=self.context.hide,
                                   descend_hidden=self.context.descend_hidden):
            host = root + path if is_reg(pst.st_mode) else None  # a file is never "/" itself
            if add is not None:
                add(path, display + path[cut:] if path != real else display, pst, host)
            yield path, pst, host
        if digest is not None:
            digest.end_tree()

    def entries(self, walked: Iterable[tuple[str, os.stat_result, str | None]]) -> Iterator[Entry]:
        """The layer's entries, in layer order, from what :meth:`walk` gave."""
        yield from self._parents
        real, target, view = self.real, self.target, self.view
        cut = len(real.rstrip("/")) + 1
        prefix = target.rstrip("/") + "/"
        make = self._emit.make_entry
        for path, pst, host in walked:
            if path == real:
                if self.is_dir:
                    continue  # a directory source contributes its contents only
                entry = make(view, path, pst, target, host)
            else:
                entry = make(view, path, pst, prefix + path[cut:], host)
            if entry is not None:
                yield entry

    def records(self, walked: Iterable[tuple[str, os.stat_result, str | None]],
                layer_clamp: int | None = None) -> Iterator[Record]:
        """What :meth:`entries` gives, as the tar writer's records (``write_records``), with
        the writer's own ``mtime_clamp`` = ``layer_clamp`` applied: the same layer bytes as
        ``write_layer(entries(walked), presorted=True, mtime_clamp=layer_clamp)``. The common
        members, plain files and directories, are framed here without an :class:`Entry`;
        the others (links, special files, names needing PAX) go through theirs. LayerError
        for a member out of layer order."""
        from ..layer.tar import LayerError, entry_records, plain_header

        emit = self._emit
        clamps = [c for c in (emit.clamp, layer_clamp) if c is not None]
        clamp = min(clamps) if clamps else None
        chmod, make = emit.chmod, emit.make_entry
        uid, gid = emit.chown if emit.chown is not None else (0, 0)
        real, target, view = self.real, self.target, self.view
        cut = len(real.rstrip("/")) + 1
        prefix = target.rstrip("/") + "/"
        base = prefix.lstrip("/")  # the layer name of what lies under the target, up to its "/"
        is_dir, is_reg = stat.S_ISDIR, stat.S_ISREG
        prev = b""

        def in_order(name: str) -> bytes:
            nonlocal prev
            key = name.encode("utf-8", "surrogateescape")  # os.fsencode, without its checks
            if key <= prev:
                raise LayerError(f"layer entry {name!r} is out of order (after {os.fsdecode(prev)!r})")
            prev = key
            return key

        for e in self._parents:
            yield from entry_records(((in_order(e.name), e),), layer_clamp)
        for path, pst, host in walked:
            if path == real:
                if self.is_dir:
                    continue  # a directory source contributes its contents only
                entry = make(view, path, pst, target, host)
                if entry is not None:
                    yield from entry_records(((in_order(entry.name), entry),), layer_clamp)
                continue
            name = base + path[cut:]
            key = in_order(name)
            mode = pst.st_mode
            if is_reg(mode) and pst.st_nlink == 1 or is_dir(mode):
                isdir = is_dir(mode)
                perm = mode & 0o7777 if chmod is None else chmod.apply(mode & 0o7777, isdir)
                mtime = max(int(pst.st_mtime), 0)
                if clamp is not None and mtime > clamp:
                    mtime = clamp
                if isdir:
                    hdr = plain_header(key + b"/", b"5", perm, uid, gid, 0, mtime)
                    record: tuple[bytes | None, int, str | None, None, str] = (hdr, 0, None, None, name)
                else:
                    hdr = plain_header(key, b"0", perm, uid, gid, pst.st_size, mtime)
                    record = (hdr, pst.st_size, host, None, name)
                if hdr is not None:
                    yield record  # type: ignore[misc]
                    continue
            entry = make(view, path, pst, prefix + path[cut:], host)
            if entry is not None:
                yield from entry_records(((key, entry),), layer_clamp)


class NotSingleSource(Exception):
    """The source is not one a :class:`SingleSourceCopy` can stream (the general path applies)."""


def _emit_source_parents(emit: _Emitter, view: FsView, pivot: str, rel: str, dest_real: str) -> None:
    """For --parents: the directories between the pivot and a match, with source metadata."""
    comps = split_path(rel)
    for i in range(1, len(comps)):
        sub = "/".join(comps[:i])
        target = posixpath.join(dest_real, sub)
        if target.strip("/") in emit.entries:
            continue
        src = resolve_in_root(view, posixpath.join(pivot, sub))
        st = view.lstat(src)
        if st is None or not stat.S_ISDIR(st.st_mode):
            raise CopyError(f"{sub} is not a directory")
        emit.source_entry(view, src, st, target)


__all__ = ["copy_entries", "SingleSourceCopy", "NotSingleSource", "parse_chmod", "CopyError", "SourceNotFoundError"]
