"""Replace a file's content atomically, through a temp file nobody else can have prepared.

:func:`write_atomic` is the one way pybuild rewrites a small file whole (the store's records
and indexes through :func:`builder.store.layout.write_file_atomic`, the parse cache, the code
cache): the temp file has a random name and is created exclusively without following a
symlink (``O_EXCL | O_NOFOLLOW``), so a name or a symlink left in the directory (a cache under
a user's home written by root under ``sudo -E``) is never written through; readers see the old
content or the new, never a part. Light: no ``tempfile`` (and with it shutil and random: ~3 ms
of a command's start; see :func:`builder.owners.make_owned_dir`).
"""

from __future__ import annotations

import os

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_atomic(path: str | os.PathLike[str], data: bytes, *, tmp_dir: str | os.PathLike[str] | None = None,
                 prefix: str | None = None, suffix: str = ".tmp", mode: int = 0o644, durable: bool = False,
                 unlink_first: bool = False) -> None:
    """Write ``data`` to a new temp file in ``tmp_dir`` (default: ``path``'s directory; same
    file system; it must exist) named ``prefix`` (default ``.<name>.``), random hex and
    ``suffix``, of ``mode``, fsynced when ``durable``, and rename it over ``path``;
    ``unlink_first`` removes ``path`` just before (see ``write_file_atomic``). OSError
    propagates; the temp file never survives. The caller fsyncs the directory if it must."""
    path = os.fspath(path)
    folder = os.fspath(tmp_dir) if tmp_dir is not None else os.path.dirname(path) or "."
    head = os.path.join(folder, prefix if prefix is not None else f".{os.path.basename(path)}.")
    while True:
        tmp = f"{head}{os.urandom(6).hex()}{suffix}"
        try:
            fd = os.open(tmp, _CREATE, 0o600)
        except FileExistsError:
            continue
        break
    try:
        with open(fd, "wb") as f:
            os.fchmod(fd, mode)
            f.write(data)
            if durable:
                f.flush()
                os.fsync(fd)
        if unlink_first:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


__all__ = ["write_atomic"]
