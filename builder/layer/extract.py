"""Safe streaming extraction of layer tars into a directory.

Every path is resolved inside ``dest`` by walking it one component at a time with directory
file descriptors (``O_NOFOLLOW``): a symlink met in a *parent* component is resolved as if
``dest`` were ``/`` (chroot semantics, like containerd), so nothing can be written outside
``dest``; the last component is never followed (it is replaced). Member names with ``..`` are
refused; a leading ``/`` is stripped.

Modes: ``"overlay"`` keeps the layer as an overlay lower dir (whiteouts become 0/0 character
devices, ``.wh..wh..opq`` becomes the ``trusted.overlay.opaque=y`` xattr, or
``user.overlay.opaque`` with ``userxattr=True``); ``"flatten"`` applies whiteouts by deleting
what earlier layers put in ``dest``.

On any error the extraction stops and ``dest`` is left partially written: the caller removes it.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Iterable, Literal

from ..digest import Digest
from ..errors import HostError, PybuildError, no_space
from .compress import CompressionError, HashingReader, ReadThrough, open_decompressed
from .walk import set_xattrs

if TYPE_CHECKING:
    import tarfile

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
DEFAULT_SIZE_LIMIT = 64 << 30
_MAX_HOPS = 40
_CHUNK = 1 << 20
_DIRFLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class ExtractError(PybuildError):
    """A layer could not be extracted (corrupt archive, conflicting members, I/O error)."""

    exit_code = 4


class UnsafeArchiveError(ExtractError):
    """A layer member tried to escape the destination or is otherwise hostile. Names the member."""


class SizeLimitError(ExtractError):
    """The layer's content exceeds the size limit given to the extractor."""


@dataclass(slots=True)
class ExtractStats:
    """Counts of what an extraction did. ``diff_id`` is the sha256 of the uncompressed tar.
    ``implied``: directories the layer does not list but had to be created for its members
    (0755, root), as paths relative to ``dest``, sorted; only in ``"overlay"`` mode, where such
    a directory would hide a lower layer's own (see :meth:`Snapshots.stack`)."""

    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    devices: int = 0
    fifos: int = 0
    whiteouts: int = 0
    opaques: int = 0
    devices_skipped: int = 0
    xattrs_skipped: int = 0
    bytes: int = 0
    diff_id: Digest | None = None
    implied: list[str] = field(default_factory=list)
    _dirs: list[tuple[str, int, int]] = field(default_factory=list, repr=False)


def _is_root() -> bool:
    return os.geteuid() == 0


def _clean_name(raw: str) -> list[str]:
    """Member name to components; raises UnsafeArchiveError for ``..``. [] is the root."""
    parts = []
    for comp in raw.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            raise UnsafeArchiveError(f"layer member {raw!r}: '..' in a path is not allowed")
        if "\0" in comp:
            raise UnsafeArchiveError(f"layer member {raw!r}: NUL in a path")
        parts.append(comp)
    return parts


class _Tree:
    """Resolves and opens paths inside ``dest`` without ever leaving it."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.root_fd = os.open(dest, _DIRFLAGS)
        self._cache_key: tuple[str, ...] | None = None
        self._cache_fd = -1
        self.created: set[str] = set()  # directories made for members' paths (resolved names)

    def close(self) -> None:
        self.invalidate()
        os.close(self.root_fd)

    def invalidate(self) -> None:
        if self._cache_fd >= 0 and self._cache_fd != self.root_fd:
            os.close(self._cache_fd)
        self._cache_fd = -1
        self._cache_key = None

    def open_dir(self, parts: list[str], member: str, *, create: bool) -> int:
        """An fd (owned by the tree's cache, do not close) of directory ``parts`` inside dest.

        Symlinks in ``parts`` are resolved inside dest; missing directories are created (0755)
        when ``create``, else FileNotFoundError. Raises ExtractError when a component is not a
        directory, UnsafeArchiveError on symlink loops.
        """
        key = tuple(parts)
        if key == self._cache_key:
            return self._cache_fd
        self.invalidate()
        fd = self._walk(parts, member, create)
        self._cache_key, self._cache_fd = key, fd
        return fd

    def _walk(self, parts: list[str], member: str, create: bool) -> int:
        todo = list(reversed(parts))
        stack: list[int] = []  # fds of the directories walked, root excluded
        names: list[str] = []  # their names, from the root
        hops = 0
        cur = self.root_fd
        try:
            while todo:
                comp = todo.pop()
                if comp in ("", "."):
                    continue
                if comp == "..":
                    if stack:
                        os.close(stack.pop())
                        names.pop()
                    cur = stack[-1] if stack else self.root_fd
                    continue
                try:
                    st = os.stat(comp, dir_fd=cur, follow_symlinks=False)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(comp, 0o755, dir_fd=cur)
                    self.created.add("/".join(names + [comp]))
                    st = os.stat(comp, dir_fd=cur, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    hops += 1
                    if hops > _MAX_HOPS:
                        raise UnsafeArchiveError(f"layer member {member!r}: too many symlinks in its path")
                    target = os.readlink(comp, dir_fd=cur)
                    if target.startswith("/"):
                        while stack:
                            os.close(stack.pop())
                        names.clear()
                        cur = self.root_fd
                    todo.extend(reversed([c for c in target.split("/") if c]))
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    raise ExtractError(f"layer member {member!r}: {comp!r} in its path is not a directory")
                nfd = os.open(comp, _DIRFLAGS, dir_fd=cur)
                stack.append(nfd)
                names.append(comp)
                cur = nfd
        except BaseException:
            for fd in stack:
                os.close(fd)
            raise
        result = stack.pop() if stack else self.root_fd
        for fd in stack:
            os.close(fd)
        return result


def _remove_at(dir_fd: int, name: str) -> None:
    """Remove ``name`` in ``dir_fd`` whatever it is (directories recursively); missing is fine."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def _proc_path(dir_fd: int, name: str) -> str:
    return f"/proc/self/fd/{dir_fd}/{name}"


def _set_xattrs(target: int | str, xattrs: dict[str, bytes], stats: ExtractStats) -> None:
    stats.xattrs_skipped += set_xattrs(target, xattrs.items())


def _member_xattrs(member: tarfile.TarInfo) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            name = key[len("SCHILY.xattr."):]
            if name.startswith(("trusted.overlay.", "user.overlay.")):
                continue  # never let a layer forge overlay metadata
            out[name] = value.encode("utf-8", "surrogateescape")
    return out


class _Extractor:
    def __init__(self, dest: Path, mode: str, size_limit: int, same_owner: bool, userxattr: bool,
                 stats: ExtractStats) -> None:
        self.tree = _Tree(dest)
        self.mode = mode
        self.size_limit = size_limit
        self.same_owner = same_owner
        self.is_root = _is_root()
        self.opaque_xattr = "user.overlay.opaque" if userxattr else "trusted.overlay.opaque"
        self.stats = stats
        self.written: set[tuple[str, ...]] = set()  # paths this layer put down (flatten opaques)

    # -- helpers
    def _parent(self, parts: list[str], member: str) -> tuple[int, str]:
        return self.tree.open_dir(parts[:-1], member, create=True), parts[-1]

    def _clear(self, dir_fd: int, name: str, keep_dir: bool) -> bool:
        """Make room for a new member; returns True when an existing directory is kept."""
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if keep_dir and stat.S_ISDIR(st.st_mode):
            return True
        if stat.S_ISDIR(st.st_mode):
            # the tree's cached fd is this member's parent: removing a child leaves it valid
            shutil.rmtree(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)
        return False

    def _owner(self, dir_fd: int, name: str, m: tarfile.TarInfo) -> None:
        if self.same_owner:
            os.chown(name, m.uid, m.gid, dir_fd=dir_fd, follow_symlinks=False)

    # -- members
    def member(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        raw = m.name
        parts = _clean_name(raw)
        if not parts:
            if m.isdir():
                self.stats._dirs.append(("", m.mode, int(m.mtime)))
                return
            raise UnsafeArchiveError(f"layer member {raw!r}: only a directory may name the root")
        base = parts[-1]
        for comp in parts[:-1]:
            if comp.startswith(WHITEOUT_PREFIX):
                raise UnsafeArchiveError(f"layer member {raw!r}: a whiteout name cannot be a directory")
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parts, raw, m)
            return
        if self.mode == "flatten":
            self.written.add(tuple(parts))
        if m.isreg():
            self._file(tf, parts, raw, m)
        elif m.isdir():
            self._dir(parts, raw, m)
        elif m.issym():
            dfd, name = self._parent(parts, raw)
            self._clear(dfd, name, False)
            os.symlink(m.linkname, name, dir_fd=dfd)
            self._owner(dfd, name, m)
            _set_xattrs(_proc_path(dfd, name), _member_xattrs(m), self.stats)
            os.utime(name, ns=(int(m.mtime * 1e9),) * 2, dir_fd=dfd, follow_symlinks=False)
            self.stats.symlinks += 1
        elif m.islnk():
            self._hardlink(parts, raw, m)
        elif m.ischr() or m.isblk() or m.isfifo():
            self._special(parts, raw, m)
        else:
            raise ExtractError(f"layer member {raw!r}: unsupported tar type {m.type!r}")

    def _file(self, tf: tarfile.TarFile, parts: list[str], raw: str, m: tarfile.TarInfo) -> None:
        if self.stats.bytes + m.size > self.size_limit:
            raise SizeLimitError(f"layer member {raw!r}: layer content exceeds the limit of "
                                 f"{self.size_limit} bytes")
        dfd, name = self._parent(parts, raw)
        self._clear(dfd, name, False)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dfd)
        try:
            src = tf.extractfile(m)
            left = m.size
            if src is not None:
                while left:
                    chunk = src.read(min(left, _CHUNK))
                    if not chunk:
                        raise ExtractError(f"layer member {raw!r}: archive truncated")
                    view = memoryview(chunk)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                    left -= len(chunk)
            self.stats.bytes += m.size
            if self.same_owner:
                os.fchown(fd, m.uid, m.gid)
            os.fchmod(fd, m.mode & 0o7777)
            _set_xattrs(fd, _member_xattrs(m), self.stats)
            os.utime(fd, ns=(int(m.mtime * 1e9),) * 2)
        finally:
            os.close(fd)
        self.stats.files += 1

    def _dir(self, parts: list[str], raw: str, m: tarfile.TarInfo) -> None:
        dfd, name = self._parent(parts, raw)
        if not self._clear(dfd, name, True):
            os.mkdir(name, 0o700, dir_fd=dfd)
        self._owner(dfd, name, m)
        xattrs = _member_xattrs(m)
        if xattrs:
            _set_xattrs(_proc_path(dfd, name), xattrs, self.stats)
        self.stats._dirs.append(("/".join(parts), m.mode, int(m.mtime)))
        self.stats.dirs += 1

    def _hardlink(self, parts: list[str], raw: str, m: tarfile.TarInfo) -> None:
        tparts = _clean_name(m.linkname)
        if not tparts:
            raise UnsafeArchiveError(f"layer member {raw!r}: hardlink to the root directory")
        try:
            tdir = self.tree._walk(tparts[:-1], raw, False)
        except FileNotFoundError:
            raise UnsafeArchiveError(f"layer member {raw!r}: hardlink target {m.linkname!r} does not exist") from None
        try:
            try:
                tst = os.stat(tparts[-1], dir_fd=tdir, follow_symlinks=False)
            except FileNotFoundError:
                raise UnsafeArchiveError(f"layer member {raw!r}: hardlink target {m.linkname!r} does not exist") from None
            if stat.S_ISDIR(tst.st_mode):
                raise UnsafeArchiveError(f"layer member {raw!r}: hardlink to directory {m.linkname!r}")
            if tparts == parts:
                return
            dfd, name = self._parent(parts, raw)
            self._clear(dfd, name, False)
            os.link(tparts[-1], name, src_dir_fd=tdir, dst_dir_fd=dfd, follow_symlinks=False)
        finally:
            if tdir != self.tree.root_fd:
                os.close(tdir)
        self.stats.hardlinks += 1

    def _special(self, parts: list[str], raw: str, m: tarfile.TarInfo) -> None:
        if not m.isfifo() and not self.is_root:
            self.stats.devices_skipped += 1
            return
        dfd, name = self._parent(parts, raw)
        self._clear(dfd, name, False)
        if m.isfifo():
            os.mkfifo(name, 0o600, dir_fd=dfd)
            self.stats.fifos += 1
        else:
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            os.mknod(name, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=dfd)
            self.stats.devices += 1
        self._owner(dfd, name, m)
        os.chmod(name, m.mode & 0o7777, dir_fd=dfd)  # just created: not a symlink
        _set_xattrs(_proc_path(dfd, name), _member_xattrs(m), self.stats)
        os.utime(name, ns=(int(m.mtime * 1e9),) * 2, dir_fd=dfd, follow_symlinks=False)

    def _whiteout(self, parts: list[str], raw: str, m: tarfile.TarInfo) -> None:
        base = parts[-1]
        parent = parts[:-1]
        if base == OPAQUE:
            if not parent:
                raise UnsafeArchiveError(f"layer member {raw!r}: the root directory cannot be made opaque")
            self.stats.opaques += 1
            if self.mode == "overlay":
                dfd = self.tree.open_dir(parent, raw, create=True)
                try:
                    os.setxattr(dfd, self.opaque_xattr, b"y")
                except OSError as exc:
                    raise HostError(f"layer member {raw!r}: cannot set {self.opaque_xattr} "
                                    f"({exc.strerror}); overlay snapshots need root or userxattr") from exc
            else:
                self._opaque_flatten(parent, raw)
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return  # other AUFS metadata (.wh..wh.plnk ...): ignored as containerd does
        victim = base[len(WHITEOUT_PREFIX):]
        if victim in ("", ".", "..") or "/" in victim:
            raise UnsafeArchiveError(f"layer member {raw!r}: invalid whiteout name")
        self.stats.whiteouts += 1
        if self.mode == "flatten" and tuple(parent + [victim]) in self.written:
            return  # a whiteout only hides what earlier layers put there
        if self.mode == "overlay":
            dfd = self.tree.open_dir(parent, raw, create=True)
            self._clear(dfd, victim, False)
            try:
                os.mknod(victim, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=dfd)
            except PermissionError as exc:
                raise HostError(f"layer member {raw!r}: cannot create an overlay whiteout (needs "
                                f"CAP_MKNOD): {exc.strerror}") from exc
            if self.same_owner:
                os.chown(victim, m.uid, m.gid, dir_fd=dfd, follow_symlinks=False)
            return
        try:
            dfd = self.tree.open_dir(parent, raw, create=False)
        except (FileNotFoundError, ExtractError):
            return  # nothing there to delete
        _remove_at(dfd, victim)
        self.tree.invalidate()

    def _opaque_flatten(self, parent: list[str], raw: str) -> None:
        try:
            dfd = self.tree.open_dir(parent, raw, create=False)
        except (FileNotFoundError, ExtractError):
            return
        self._prune(dfd, tuple(parent))
        self.tree.invalidate()

    def _prune(self, dfd: int, prefix: tuple[str, ...]) -> None:
        """Remove everything under ``dfd`` that this layer did not write."""
        for name in os.listdir(dfd):
            path = prefix + (name,)
            if path not in self.written:
                _remove_at(dfd, name)
                continue
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                sub = os.open(name, _DIRFLAGS, dir_fd=dfd)
                try:
                    self._prune(sub, path)
                finally:
                    os.close(sub)

    def finish(self) -> None:
        """Directory modes and mtimes, deepest first (after their children were written);
        the implied directories (made for a path, never listed) into ``stats.implied``."""
        self.tree.invalidate()
        if self.mode == "overlay":
            listed = {path for path, _mode, _mtime in self.stats._dirs}
            self.stats.implied = sorted(self.tree.created - listed)
        for path, mode, mtime in sorted(self.stats._dirs, key=lambda d: d[0].count("/") + (d[0] != ""),
                                        reverse=True):
            parts = path.split("/") if path else []
            try:
                if parts:
                    pfd = self.tree._walk(parts[:-1], path, False)
                    try:
                        # never through a symlink that replaced the directory later
                        fd = os.open(parts[-1], _DIRFLAGS, dir_fd=pfd)
                    finally:
                        if pfd != self.tree.root_fd:
                            os.close(pfd)
                else:
                    fd = os.dup(self.tree.root_fd)
            except (OSError, ExtractError):
                continue  # removed by a whiteout or replaced by a non-directory
            try:
                os.fchmod(fd, mode & 0o7777)
                os.utime(fd, ns=(mtime * 1_000_000_000,) * 2)
            finally:
                if fd != self.tree.root_fd:
                    os.close(fd)
        self.stats._dirs.clear()


def extract_layer(stream: BinaryIO, dest: Path, *, mode: Literal["overlay", "flatten"] = "flatten",
                  size_limit: int = DEFAULT_SIZE_LIMIT, compression: str | None = "auto",
                  same_owner: bool | None = None, userxattr: bool = False,
                  expect_diff_id: Digest | None = None) -> ExtractStats:
    """Extract one layer blob read from ``stream`` into the existing directory ``dest``.

    ``compression``: "auto" (sniffed), "gzip", "zstd", "bzip2", "xz", "uncompressed"/None.
    ``size_limit``: maximum total bytes of file content; SizeLimitError before writing past it.
    ``same_owner``: apply tar uid/gid with lchown (default: when running as root).
    Device nodes are skipped (counted in ``devices_skipped``) when not root. ``stream`` is read
    to its end but not closed. The uncompressed tar is hashed: ``stats.diff_id``; with
    ``expect_diff_id`` a mismatch raises ExtractError (after extraction).

    Raises UnsafeArchiveError for hostile members (``..``, hostile whiteouts, hardlinks to
    missing targets), SizeLimitError, ExtractError for corrupt archives and I/O failures,
    HostError when overlay mode cannot create whiteouts/opaque xattrs. On error ``dest`` holds
    a partial extraction: the caller removes it.
    """
    if mode not in ("overlay", "flatten"):
        raise ExtractError(f"unknown extraction mode {mode!r}")
    stats = ExtractStats()
    import tarfile  # imported here: a fully cached build never extracts

    if same_owner is None:
        same_owner = _is_root()
    plain = open_decompressed(io.BufferedReader(ReadThrough(stream), 1 << 20), compression)
    hashed = HashingReader(plain)
    ex = _Extractor(Path(dest), mode, size_limit, same_owner, userxattr, stats)
    try:
        try:
            tf = tarfile.open(fileobj=hashed, mode="r|", encoding="utf-8", errors="surrogateescape")
            while True:
                m = tf.next()
                if m is None:
                    break
                ex.member(tf, m)
                tf.members.clear()  # type: ignore[attr-defined]  # stream mode: memory flat whatever the count
            hashed.drain()
        except (tarfile.TarError, EOFError) as exc:
            raise ExtractError(f"corrupt layer tar: {exc}") from exc
        except CompressionError as exc:
            raise ExtractError(f"corrupt layer: {exc}") from exc
        except PybuildError:
            raise
        except OSError as exc:
            full = no_space(exc, "unpacking a layer", dest)
            if full is not None:
                raise full from exc
            raise ExtractError(f"cannot extract layer into {dest}: {exc}") from exc
        ex.finish()
    finally:
        ex.tree.close()
        hashed.close()
    stats.diff_id = Digest("sha256", hashed.hexdigest())
    if expect_diff_id is not None and stats.diff_id != expect_diff_id:
        raise ExtractError(f"layer diff_id mismatch: expected {expect_diff_id}, got {stats.diff_id}")
    return stats


def extract_layers(blob_streams: Iterable[tuple[BinaryIO, str | None]], dest: Path, *,
                   size_limit: int = DEFAULT_SIZE_LIMIT, same_owner: bool | None = None) -> ExtractStats:
    """Flatten layers (bottom first) into ``dest``, applying whiteouts by deletion.

    Each ``(stream, compression)`` is extracted with :func:`extract_layer` in flatten mode;
    streams are not closed here. ``size_limit`` applies to the total over all layers. Returns
    the summed counts (``diff_id`` is that of the last layer). Same errors as extract_layer;
    on error the caller removes ``dest``.
    """
    total = ExtractStats()
    for stream, compression in blob_streams:
        s = extract_layer(stream, dest, mode="flatten", size_limit=size_limit - total.bytes,
                          compression=compression or "auto", same_owner=same_owner)
        for f in ("files", "dirs", "symlinks", "hardlinks", "devices", "fifos", "whiteouts",
                  "opaques", "devices_skipped", "xattrs_skipped", "bytes"):
            setattr(total, f, getattr(total, f) + getattr(s, f))
        total.diff_id = s.diff_id
    return total
