"""Unpacked layers kept once in the store, ready to be stacked as overlay lower dirs.

Layout under ``<store root>/snapshots``::

    <key>/fs          the layer's files in overlay format (0/0 char whiteouts, opaque xattrs)
    <key>/diff_id     the full diff_id, "sha256:<hex>"
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
import shutil
import stat
from pathlib import Path
from typing import BinaryIO, Callable

from ..digest import Digest
from ..errors import NoSpaceError, StoreError, no_space

_KEY_LENGTHS = (12, 24, 64)


class Snapshots:
    """The snapshot store at ``root/snapshots`` (created on first use).

    ``root`` is the store root; a path already named ``snapshots`` is taken as the snapshot
    directory itself (so ``Snapshots(store.root)`` and ``Snapshots(store.root / "snapshots")``
    name the same store).
    """

    def __init__(self, root: Path, *, size_limit: int | None = None, userxattr: bool = False) -> None:
        root = Path(root)
        self.dir = root if root.name == "snapshots" else root / "snapshots"
        self.size_limit = size_limit  # None: extract_layer's default (64 GiB)
        self.userxattr = userxattr

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

    def _free_key(self, diff_id: Digest) -> Path:
        for n in _KEY_LENGTHS:
            d = self.dir / diff_id.hex[:n]
            if not d.exists():
                return d
        raise StoreError(f"snapshot store {self.dir}: no free name for {diff_id}")

    def get(self, diff_id: Digest) -> Path | None:
        """The ``fs`` directory of an existing snapshot, or None."""
        d = self._find(diff_id)
        return d / "fs" if d is not None else None

    def _tmp(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        t = self.dir / f"tmp-{os.getpid()}-{os.urandom(4).hex()}"
        t.mkdir()
        return t

    def _publish(self, tmp: Path, diff_id: Digest) -> Path:
        """Rename the finished ``tmp`` into place; returns the ``fs`` dir that won."""
        (tmp / "diff_id").write_text(str(diff_id) + "\n")
        for _ in range(len(_KEY_LENGTHS) + 1):
            existing = self._find(diff_id)
            if existing is not None:
                _rmtree(tmp)
                return existing / "fs"
            target = self._free_key(diff_id)
            try:
                os.rename(tmp, target)
                return target / "fs"
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    _rmtree(tmp)
                    raise StoreError(f"cannot publish snapshot {target}: {exc.strerror}") from exc
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

    def adopt(self, diff_id: Digest, path: Path) -> Path:
        """Move the overlay-format directory ``path`` into the store as ``diff_id``'s snapshot.

        ``path`` must be on the store's filesystem (it is renamed, not copied) and is consumed:
        afterwards it no longer exists (if the snapshot already existed, ``path`` is deleted).
        Returns the snapshot's ``fs`` dir. Raises StoreError when ``path`` cannot be moved.
        """
        path = Path(path)
        if not path.is_dir() or path.is_symlink():
            raise StoreError(f"cannot adopt {path} as snapshot {diff_id}: not a directory")
        if self.get(diff_id) is not None:
            _rmtree(path)
            return self.get(diff_id)  # type: ignore[return-value]
        tmp = self._tmp()
        try:
            os.rename(path, tmp / "fs")
        except OSError as exc:
            _rmtree(tmp)
            hint = " (it is on another filesystem)" if exc.errno == errno.EXDEV else ""
            raise StoreError(f"cannot adopt {path} as snapshot {diff_id}{hint}: {exc.strerror}") from exc
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
        doomed = self.dir / f"tmp-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            os.rename(d, doomed)
        except FileNotFoundError:
            return False
        _rmtree(doomed)
        return True

    def list(self) -> list[Digest]:
        """The diff_ids of every complete snapshot, sorted."""
        out = []
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
            try:
                pid = int(d.name.split("-")[1])
            except (IndexError, ValueError):
                continue
            if pid == os.getpid() or _alive(pid):
                continue
            _rmtree(d)
            n += 1
        return n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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

    try:
        shutil.rmtree(path, onerror=onerror)
    except FileNotFoundError:
        pass
