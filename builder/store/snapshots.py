"""Unpacked layers kept once in the store, ready to be stacked as overlay lower dirs.

Layout under ``<store root>/snapshots``::

    <key>/fs          the layer's files in overlay format (0/0 char whiteouts, opaque xattrs)
    <key>/diff_id     the full diff_id, "sha256:<hex>"
    <key>/implied     (only when there are some) directories the layer's tar does not list but
                      its members need: created 0755 root by the extraction, one path a line
    fixups/<chain>/fs directories only: the implied ones of one layer *on a given lower chain*,
                      with the attributes the lower layers give them (see :meth:`stack`)
    tmp-<pid>-<rand>  work in progress (extraction, adoption, removal)

``<key>`` is the first 12 hex digits of the diff_id (longer only on a collision), so a lower dir
is ``<root>/snapshots/0123456789ab/fs``. Overlay's mount option string is limited to one page;
callers stacking many layers should ``chdir`` to :attr:`Snapshots.dir` (in the mounting
process) and pass ``lowerdirs(..., relative=True)`` (``0123456789ab/fs``: 16 bytes a layer,
about 250 layers a page) instead of absolute paths.

A snapshot directory appears only by an atomic ``rename`` of a finished temporary directory, so
its existence is the completion marker and concurrent ``ensure`` calls are safe: the loser of
the rename race discards its copy and uses the winner's. ``remove`` renames away before
deleting, so a half-deleted snapshot is never visible.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path
from typing import BinaryIO, Callable

from ..digest import Digest, small_hash
from ..errors import NoSpaceError, StoreError, no_space
from ..owners import alive, owned_prefix, owner_pid

_KEY_LENGTHS = (12, 24, 64)


class Snapshots:
    """The snapshot store at ``root/snapshots`` (created on first use).

    ``root`` is the store root; a path already named ``snapshots`` is taken as the snapshot
    directory itself (so ``Snapshots(store.root)`` and ``Snapshots(store.root / "snapshots")``
    name the same store).
    """

    def __init__(self, root: Path, *, size_limit: int | None = None, userxattr: bool = False,
                 deferred_deletes: bool = False) -> None:
        root = Path(root)
        self.dir = root if root.name == "snapshots" else root / "snapshots"
        self.size_limit = size_limit  # None: extract_layer's default (64 GiB)
        self.userxattr = userxattr
        self._implied: dict[str, tuple[str, ...]] = {}
        self._deferred = deferred_deletes
        self._reaper: _Reaper | None = None
        self._reaper_lock = threading.Lock()

    def close(self) -> None:
        """Wait until the directories :meth:`adopt` deleted in the background are gone (with
        ``deferred_deletes``; a no-op otherwise). The owner (a build) calls it at its end, so no
        temp dir outlives it; a killed process leaves ``tmp-PID-*`` dirs the stale sweep removes."""
        with self._reaper_lock:
            reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.close()

    def _discard(self, path: Path) -> None:
        """Delete ``path`` (on the store's file system): with ``deferred_deletes`` it is renamed
        to a doomed temp name at once and removed on a background thread (see :meth:`close`)."""
        if self._deferred:
            doomed = self._tmp_name()
            try:
                os.rename(path, doomed)
            except OSError:
                pass  # e.g. another file system: deleted here
            else:
                with self._reaper_lock:
                    if self._reaper is None:
                        self._reaper = _Reaper()
                    self._reaper.submit(doomed)
                return
        _rmtree(path)

    # -- lookup
    def _find(self, diff_id: Digest) -> Path | None:
        """The snapshot directory of ``diff_id`` (not ``fs``), or None."""
        want = str(diff_id)
        for n in _KEY_LENGTHS:
            d = self.dir / diff_id.hex[:n]
            try:
                have = (d / "diff_id").read_text().strip()
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise StoreError(f"snapshot {d}: cannot read its diff_id: {exc.strerror}") from exc
            if have == want:
                return d
        return None

    def get(self, diff_id: Digest) -> Path | None:
        """The ``fs`` directory of an existing snapshot, or None."""
        d = self._find(diff_id)
        return d / "fs" if d is not None else None

    def _tmp_name(self) -> Path:
        """A new work-in-progress name (``tmp-PID-RAND``: the stale sweep removes it once PID is gone)."""
        return self.dir / f"{owned_prefix('tmp')}{os.urandom(4).hex()}"

    def _tmp(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        t = self._tmp_name()
        t.mkdir()
        return t

    def _publish(self, tmp: Path, diff_id: Digest) -> Path:
        """Rename the finished ``tmp`` into place; returns the ``fs`` dir that won.

        Names are tried shortest first and the rename itself decides (no look-then-rename):
        a name taken by the same diff_id means another writer won (``tmp`` is removed and its
        snapshot returned), a name taken by another diff_id (a prefix clash) moves on to the
        next length. A name whose owner is mid-removal (no ``diff_id`` file) is tried again."""
        (tmp / "diff_id").write_text(str(diff_id) + "\n")
        want = str(diff_id)
        for n in _KEY_LENGTHS:
            target = self.dir / diff_id.hex[:n]
            for _ in range(3):
                try:
                    os.rename(tmp, target)
                    return target / "fs"
                except OSError as exc:
                    if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        _rmtree(tmp)
                        raise StoreError(f"cannot publish snapshot {target}: {exc.strerror}") from exc
                try:
                    have = (target / "diff_id").read_text().strip()
                except FileNotFoundError:
                    continue  # being removed (or renamed away): try the name again
                except OSError as exc:
                    _rmtree(tmp)
                    raise StoreError(f"snapshot {target}: cannot read its diff_id: {exc.strerror}") from exc
                if have == want:
                    _rmtree(tmp)
                    return target / "fs"
                break  # another layer's snapshot: the next, longer name
        _rmtree(tmp)
        raise StoreError(f"snapshot store {self.dir}: could not publish {diff_id}")

    # -- public
    def ensure(self, diff_id: Digest, open_blob: Callable[[], BinaryIO], compression: str | None) -> Path:
        """The ``fs`` dir of ``diff_id``, unpacking the layer first if it is not there yet.

        ``open_blob()`` opens the (compressed) blob; it is called at most once and the stream
        is closed here. ``compression`` as for extract_layer (None or "auto": sniffed). The
        uncompressed stream must hash to ``diff_id`` or StoreError is raised and nothing is
        kept. Extraction errors (UnsafeArchiveError, SizeLimitError, HostError...) propagate
        after the temporary directory is removed. Idempotent and safe to call concurrently.
        """
        found = self.get(diff_id)
        if found is not None:
            return found
        from ..layer.extract import DEFAULT_SIZE_LIMIT, extract_layer  # not for a cached build

        limit = DEFAULT_SIZE_LIMIT if self.size_limit is None else self.size_limit
        try:
            tmp = self._tmp()
        except OSError as exc:
            raise no_space(exc, f"unpacking layer {diff_id}", self.dir) or exc
        try:
            fs = tmp / "fs"
            fs.mkdir()
            with open_blob() as blob:
                stats = extract_layer(blob, fs, mode="overlay", size_limit=limit,
                                      compression=compression or "auto", userxattr=self.userxattr)
            if stats.diff_id != diff_id:
                raise StoreError(f"layer content does not match its diff_id: expected {diff_id}, "
                                 f"got {stats.diff_id}")
            if stats.implied:
                (tmp / "implied").write_text("".join(p + "\n" for p in stats.implied))
        except NoSpaceError as exc:
            _rmtree(tmp)
            raise NoSpaceError(f"{exc.args[0]} (layer {diff_id})") from exc
        except OSError as exc:
            _rmtree(tmp)
            raise no_space(exc, f"unpacking layer {diff_id}", self.dir) or exc
        except BaseException:
            _rmtree(tmp)
            raise
        try:
            return self._publish(tmp, diff_id)
        except OSError as exc:
            _rmtree(tmp)
            raise no_space(exc, f"unpacking layer {diff_id}", self.dir) or exc

    def implied(self, fs: Path) -> tuple[str, ...]:
        """The implied directories recorded for the snapshot whose ``fs`` dir is ``fs``."""
        key = os.fspath(fs)
        found = self._implied.get(key)
        if found is None:
            try:
                text = (Path(fs).parent / "implied").read_text()
            except FileNotFoundError:
                text = ""
            except OSError as exc:
                raise StoreError(f"snapshot {Path(fs).parent}: cannot read its implied dirs: {exc.strerror}") from exc
            found = tuple(line for line in text.split("\n") if line)
            self._implied[key] = found
        return found

    def stack(self, diff_ids: list[Digest], fs_dirs: list[Path]) -> list[Path]:
        """The lower dirs of an image whose layers (bottom first) are ``diff_ids``, unpacked at
        ``fs_dirs`` (same order): top-most first, ready for ``lowerdir=``.

        A layer that names ``a/b`` but not ``a`` got a plain 0755 root ``a`` when unpacked;
        stacked as is, it would hide the owner, mode and xattrs of the ``a`` of the layers
        below (overlay takes a directory's attributes from its top-most copy). containerd
        gives such a directory the lower layers' attributes when it applies the layer (its
        ``mkparent`` copies them from the parent snapshots); a snapshot here is shared by every
        chain the layer appears in, so instead a *fixup* dir is stacked right above it, holding
        those directories (and their ancestors, as that layer has them) with the attributes
        the layers below give them. A fixup is made once per chain and kept.
        Raises StoreError when a fixup cannot be published."""
        out: list[Path] = []  # bottom first while building
        chain = small_hash()
        for diff_id, fs in zip(diff_ids, fs_dirs, strict=True):
            chain.update(str(diff_id).encode() + b"\n")
            implied = self.implied(fs)
            fix = self._fixup(chain.hexdigest()[:32], diff_id, fs, implied, out[::-1]) if implied else None
            out.append(fs)
            if fix is not None:
                out.append(fix)
        out.reverse()
        return out

    def _fixup(self, key: str, diff_id: Digest, fs: Path, implied: tuple[str, ...], below: list[Path]) -> Path:
        """The fixup dir of layer ``diff_id`` (at ``fs``) on the lower dirs ``below`` (top-most
        first). Its ``layer`` file names the layer: :meth:`remove` takes it away with it."""
        from .rootview import RootView

        done = self.dir / "fixups" / key
        if (done / "fs").is_dir():
            return done / "fs"
        lower = RootView(below)
        wanted: dict[str, bool] = {}  # path -> implied (else the layer lists it itself)
        for path in implied:
            parts = path.split("/")
            for i in range(1, len(parts)):
                wanted.setdefault("/".join(parts[:i]), False)
            wanted[path] = True
        tmp = self._tmp()
        try:
            root = tmp / "fs"
            root.mkdir()
            made: list[tuple[Path, os.stat_result]] = []
            for path in sorted(wanted, key=lambda p: (p.count("/"), p)):
                here = fs / path
                own = _lstat(here)
                if own is None or not stat.S_ISDIR(own.st_mode) or not (root / path).parent.is_dir():
                    continue  # gone or replaced inside the layer
                src, st = here, own
                if wanted[path]:
                    below_st = lower.lstat("/" + path)
                    host = lower.host_path("/" + path) if below_st is not None else None
                    if below_st is not None and stat.S_ISDIR(below_st.st_mode) and host is not None:
                        src, st = Path(host), below_st
                _copy_dir_attrs(src, st, root / path)
                made.append((root / path, st))
            for made_path, st in reversed(made):  # children written: now the times
                os.utime(made_path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
            (tmp / "layer").write_text(str(diff_id) + "\n")
            done.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, done)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise StoreError(f"cannot publish snapshot fixup {done}: {exc.strerror}") from exc
                _rmtree(tmp)  # another build made the same one
        except BaseException:
            _rmtree(tmp)
            raise
        return done / "fs"

    def adopt(self, diff_id: Digest, path: Path, extra: dict[str, bytes] | None = None) -> Path:
        """Move the overlay-format directory ``path`` into the store as ``diff_id``'s snapshot.

        ``path`` must be on the store's filesystem (it is renamed, not copied) and is consumed:
        afterwards it no longer exists (if the snapshot already existed, ``path`` is deleted:
        with ``deferred_deletes``, renamed away and deleted in the background until :meth:`close`).
        ``extra``: files written beside ``fs`` (name -> content, e.g. the linker's index), only
        when this call makes the snapshot.
        Returns the snapshot's ``fs`` dir. Raises StoreError when ``path`` cannot be moved.
        """
        path = Path(path)
        if not path.is_dir() or path.is_symlink():
            raise StoreError(f"cannot adopt {path} as snapshot {diff_id}: not a directory")
        if self.get(diff_id) is not None:
            self._discard(path)
            return self.get(diff_id)  # type: ignore[return-value]
        tmp = self._tmp()
        try:
            os.rename(path, tmp / "fs")
        except OSError as exc:
            _rmtree(tmp)
            hint = " (it is on another filesystem)" if exc.errno == errno.EXDEV else ""
            raise StoreError(f"cannot adopt {path} as snapshot {diff_id}{hint}: {exc.strerror}") from exc
        try:
            for name, data in (extra or {}).items():
                (tmp / name).write_bytes(data)
        except OSError as exc:
            _rmtree(tmp)
            raise StoreError(f"cannot adopt {path} as snapshot {diff_id}: {exc.strerror}") from exc
        return self._publish(tmp, diff_id)

    def lowerdirs(self, diff_ids: list[Digest], *, relative: bool = False) -> list[Path]:
        """The ``fs`` dirs of ``diff_ids`` (given bottom layer first, as in an image config),
        returned top-most first, ready for ``lowerdir=a:b:c``.

        ``relative=True`` gives paths relative to :attr:`dir` (mount from that cwd).
        Raises StoreError when a snapshot is missing.
        """
        out = []
        for diff_id in reversed(diff_ids):
            d = self._find(diff_id)
            if d is None:
                raise StoreError(f"no snapshot for layer {diff_id}")
            out.append(Path(d.name) / "fs" if relative else d / "fs")
        return out

    def remove(self, diff_id: Digest) -> bool:
        """Delete the snapshot of ``diff_id``; False when there was none.

        The caller makes sure no mount uses it.
        """
        d = self._find(diff_id)
        if d is None:
            return False
        self.dir.mkdir(parents=True, exist_ok=True)
        doomed = self._tmp_name()
        try:
            os.rename(d, doomed)
        except FileNotFoundError:
            return False
        _rmtree(doomed)
        self._remove_fixups(diff_id)
        return True

    def _remove_fixups(self, diff_id: Digest) -> None:
        """Delete the fixup dirs made for layer ``diff_id`` (renamed away first)."""
        fixups = self.dir / "fixups"
        if not fixups.is_dir():
            return
        for d in fixups.iterdir():
            try:
                if (d / "layer").read_text().strip() != str(diff_id):
                    continue
            except OSError:
                continue
            doomed = self._tmp_name()
            try:
                os.rename(d, doomed)
            except FileNotFoundError:
                continue
            _rmtree(doomed)

    def list(self) -> list[Digest]:
        """The diff_ids of every complete snapshot, sorted."""
        out: list[Digest] = []
        if not self.dir.is_dir():
            return out
        for d in self.dir.iterdir():
            if d.name.startswith("tmp-"):
                continue
            try:
                out.append(Digest.parse((d / "diff_id").read_text().strip()))
            except (OSError, ValueError):
                continue
        return sorted(out)

    def usage(self) -> int:
        """Bytes used by all snapshots (allocated blocks, each inode counted once)."""
        seen: set[tuple[int, int]] = set()
        total = 0
        if not self.dir.is_dir():
            return 0
        for dirpath, dirnames, filenames in os.walk(self.dir):
            for name in dirnames + filenames:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
                total += st.st_blocks * 512
        return total

    def prune_temp(self) -> int:
        """Delete temporary dirs left by processes that no longer exist; returns how many."""
        n = 0
        if not self.dir.is_dir():
            return 0
        for d in self.dir.iterdir():
            if not d.name.startswith("tmp-"):
                continue
            pid = owner_pid(d.name)
            if pid is None or alive(pid):
                continue
            _rmtree(d)
            n += 1
        return n


_OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _copy_dir_attrs(src: Path, st: os.stat_result, dest: Path) -> None:
    """Make directory ``dest`` with the owner and mode of ``st`` and the xattrs of ``src``
    (overlay's own left out); the caller sets its times once its children exist."""
    os.mkdir(dest, 0o700)
    if os.geteuid() == 0:
        os.lchown(dest, st.st_uid, st.st_gid)
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        names = []
    for name in names:
        if name.startswith(_OVERLAY_XATTR_PREFIXES):
            continue
        try:
            os.setxattr(dest, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
        except OSError:
            continue
    os.chmod(dest, stat.S_IMODE(st.st_mode))



class _Reaper:
    """One daemon thread deleting doomed directories in order; :meth:`close` waits for all."""

    def __init__(self) -> None:
        import queue

        self._queue: queue.SimpleQueue[Path | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="snapshot-reaper", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (path := self._queue.get()) is not None:
            _rmtree(path)

    def submit(self, path: Path) -> None:
        self._queue.put(path)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()


def _rmtree(path: Path) -> None:
    """Remove ``path`` even when it holds read-only directories; missing is fine."""
    def onerror(func, p, exc_info):  # type: ignore[no-untyped-def]
        try:
            parent = os.path.dirname(p)
            st = os.lstat(parent)
            os.chmod(parent, stat.S_IMODE(st.st_mode) | 0o700)
            func(p)
        except OSError:
            pass

    import shutil

    try:
        shutil.rmtree(path, onerror=onerror)
    except FileNotFoundError:
        pass
