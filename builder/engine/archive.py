"""ADD of a local archive: detect a tar by content, extract it safely into layer entries.

Detection looks at bytes, never at the name: gzip (``1f 8b``), bzip2 (``BZh``), xz
(``fd 37 7a 58 5a 00``), zstd (``28 b5 2f fd``) or none, then the first 512 bytes of the
decompressed stream must be a tar header with a valid checksum. Anything else (including a
compressed file that is not a tar) is copied as is by the caller (:func:`add_local_entries`
does both).

Extraction streams the archive once (``tarfile`` in stream mode over a decompressing reader).
Regular members up to ``INLINE_LIMIT`` bytes travel as ``Entry.data``; larger ones are
written to files in a temporary directory created under the caller's ``scratch`` dir, and
their entries reference those files. **The caller owns that directory** (``Extracted.temp_dir``)
and deletes it (``shutil.rmtree``) once the layer has been written; on error it is removed
here before raising.

Refused (``ArchiveError``, naming the archive and member): names that climb above the
destination with ``..``, members placed under a symlink extracted from the same archive,
hard links to a member not extracted before. Absolute member names are taken relative to the
destination (as tar does). The archive's ownership, modes, mtimes (clamped when asked),
device numbers and ``SCHILY.xattr.*`` records are kept; ``--chown`` does not apply to
extracted content.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO, Sequence, TypedDict

from ..layer.entries import Entry, EntryType
from .chmod import Chmod
from .context import BuildContext, CopyError
from .pathresolve import FsView, normalize, resolve_in_root

INLINE_LIMIT = 64 * 1024
_CHUNK = 1 << 20

_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)


class ArchiveError(CopyError):
    """An archive given to ADD is corrupt or holds a hostile member."""



class _Common(TypedDict):
    """What every entry made from an archive member carries."""

    name: str
    mode: int
    uid: int
    gid: int
    mtime: int
    xattrs: tuple[tuple[str, bytes], ...]

def detect_compression(head: bytes) -> str | None:
    """Compression of a stream from its first bytes: gzip, bzip2, xz, zstd or None."""
    for magic, name in _MAGICS:
        if head.startswith(magic):
            return name
    return None


def _decompressing_reader(raw: BinaryIO, compression: str | None) -> BinaryIO:
    """A reader of the decompressed bytes of ``raw`` (closing it does not close ``raw``)."""
    if compression is None:
        return raw
    if compression == "gzip":
        from ..layer.gz import open_reader
        return open_reader(raw)
    if compression == "bzip2":
        import bz2
        return bz2.BZ2File(raw, mode="rb")  # type: ignore[return-value]
    if compression == "xz":
        import lzma
        return lzma.LZMAFile(raw, mode="rb")  # type: ignore[return-value]
    if compression == "zstd":
        import zstandard
        return zstandard.ZstdDecompressor().stream_reader(raw, closefd=False)
    raise ValueError(compression)


def _is_tar_header(block: bytes) -> bool:
    if len(block) < 512:
        return False
    block = block[:512]
    if block[257:262] == b"ustar":
        return True
    field_ = block[148:156].split(b"\0", 1)[0].strip()
    try:
        stored = int(field_ or b"-1", 8)
    except ValueError:
        return False
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    return stored == unsigned and any(block[:100])


def is_archive(path: Path) -> str | None:
    """Whether the host file ``path`` is a (possibly compressed) tar: returns the compression
    name (``"none"`` for a plain tar) or None when it is not an archive. Never raises for bad
    content; OSError propagates for an unreadable file."""
    with open(path, "rb") as raw:
        head = raw.read(8)
        raw.seek(0)
        compression = detect_compression(head)
        try:
            reader = _decompressing_reader(raw, compression)
            try:
                block = _read_exact(reader, 512)
            finally:
                if reader is not raw:
                    reader.close()
        except Exception:  # corrupt compressed data: not an archive, copied as is
            return None
    if not _is_tar_header(block):
        return None
    return compression or "none"


def _read_exact(reader: IO[bytes], n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = reader.read(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


@dataclass
class Extracted:
    """Entries of an extracted archive and the temp dir holding large members' content.

    ``temp_dir`` (None when nothing needed one) belongs to the caller, who removes it after
    the layer is written.
    """

    entries: list[Entry] = field(default_factory=list)
    temp_dir: Path | None = None


def _member_name(archive: str, name: str) -> str:
    """The member's path relative to the destination; refuses ``..`` escapes."""
    parts: list[str] = []
    for comp in name.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not parts:
                raise ArchiveError(f"{archive}: member {name!r} escapes the destination")
            parts.pop()
            continue
        parts.append(comp)
    return "/".join(parts)


def archive_entries(archive: Path, dest: str, *, dest_view: FsView, scratch: Path,
                    mtime_clamp: int | None = None, display: str | None = None) -> Extracted:
    """Extract the tar ``archive`` (compression detected by content) under image dir ``dest``.

    ``dest`` is resolved inside the image root; it and its missing parents are emitted as
    directories (existing ones with their metadata). Returns the entries (unsorted) and the
    temp dir the caller must delete. Raises ArchiveError for corrupt or hostile archives.
    """
    from .copy import _Emitter  # shared parent-directory logic

    shown = display or archive.name
    dest_real = resolve_in_root(dest_view, normalize(dest), follow_last=True)
    emit = _Emitter(dest_view=dest_view, chown=None, chmod=None, keep_owner=True,
                    keep_xattrs=True, mtime_clamp=mtime_clamp)
    emit.ensure_parents(dest_real, include_self=True)
    prefix = dest_real.strip("/")
    result = Extracted()
    symlinks: set[str] = set()
    seen: set[str] = set()
    counter = 0

    def layer_name(rel: str) -> str:
        return f"{prefix}/{rel}" if prefix else rel

    def clamp(t: float) -> int:
        v = max(int(t), 0)
        return min(v, mtime_clamp) if mtime_clamp is not None else v

    try:
        with open(archive, "rb") as raw:
            compression = detect_compression(raw.read(8))
            raw.seek(0)
            reader = _decompressing_reader(raw, compression)
            try:
                with tarfile.open(fileobj=reader, mode="r|") as tar:
                    for member in tar:
                        rel = _member_name(shown, member.name)
                        if not rel:
                            continue
                        comps = rel.split("/")
                        for i in range(1, len(comps)):
                            if "/".join(comps[:i]) in symlinks:
                                raise ArchiveError(f"{shown}: member {member.name!r} lies under a "
                                                   f"symbolic link of the archive")
                        name = layer_name(rel)
                        # parents the archive does not list: the image's own directory when
                        # there is one (never hide its metadata), else 0755 root
                        emit.ensure_parents(name)
                        xattrs = tuple(sorted(
                            (k[len("SCHILY.xattr."):], v.encode("utf-8", "surrogateescape"))
                            for k, v in member.pax_headers.items() if k.startswith("SCHILY.xattr.")))
                        common = _Common(name=name, mode=member.mode & 0o7777, uid=member.uid,
                                         gid=member.gid, mtime=clamp(member.mtime), xattrs=xattrs)
                        symlinks.discard(rel)
                        if member.isreg():
                            size = member.size
                            src = tar.extractfile(member)
                            assert src is not None
                            if size <= INLINE_LIMIT:
                                data = _read_exact(src, size)
                                if len(data) != size:
                                    raise ArchiveError(f"{shown}: member {member.name!r} is truncated")
                                emit.put(Entry(type=EntryType.FILE, size=size, data=data, **common))
                            else:
                                if result.temp_dir is None:
                                    scratch.mkdir(parents=True, exist_ok=True)
                                    result.temp_dir = Path(tempfile.mkdtemp(prefix="add-", dir=scratch))
                                counter += 1
                                host = result.temp_dir / str(counter)
                                _copy_stream(src, host, size, shown, member.name)
                                emit.put(Entry(type=EntryType.FILE, size=size, source=str(host), **common))
                        elif member.isdir():
                            emit.put(Entry(type=EntryType.DIR, **common))
                        elif member.issym():
                            symlinks.add(rel)
                            emit.put(Entry(type=EntryType.SYMLINK, linkname=member.linkname, **common))
                        elif member.islnk():
                            target_rel = _member_name(shown, member.linkname)
                            target = layer_name(target_rel)
                            if not target_rel or target_rel not in seen or target == name:
                                raise ArchiveError(f"{shown}: hard link {member.name!r} -> "
                                                   f"{member.linkname!r} points outside the archive")
                            emit.put(Entry(type=EntryType.HARDLINK, linkname=target, **common))
                        elif member.ischr() or member.isblk():
                            kind = EntryType.CHAR if member.ischr() else EntryType.BLOCK
                            emit.put(Entry(type=kind, devmajor=member.devmajor,
                                           devminor=member.devminor, **common))
                        elif member.isfifo():
                            emit.put(Entry(type=EntryType.FIFO, **common))
                        else:
                            continue
                        seen.add(rel)
            finally:
                if reader is not raw:
                    reader.close()
    except ArchiveError:
        _cleanup(result)
        raise
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        _cleanup(result)
        raise ArchiveError(f"{shown}: cannot extract archive: {exc}") from None
    except Exception as exc:  # zstandard.ZstdError and other decoder errors
        _cleanup(result)
        raise ArchiveError(f"{shown}: cannot extract archive: {exc}") from None
    result.entries = list(emit.entries.values())
    return result


def _copy_stream(src: IO[bytes], host: Path, size: int, shown: str, member: str) -> None:
    left = size
    with open(host, "wb") as out:
        while left > 0:
            chunk = src.read(min(_CHUNK, left))
            if not chunk:
                raise ArchiveError(f"{shown}: member {member!r} is truncated")
            out.write(chunk)
            left -= len(chunk)


def _cleanup(result: Extracted) -> None:
    if result.temp_dir is not None:
        shutil.rmtree(result.temp_dir, ignore_errors=True)
        result.temp_dir = None


def add_local_entries(*, sources: Sequence[str], dest: str, src_view: FsView,
                      src_is_context: bool, context: BuildContext | None, dest_view: FsView,
                      scratch: Path, chown: tuple[int, int] | None = None,
                      chmod: Chmod | int | None = None, excludes: Sequence[str] = (),
                      mtime_clamp: int | None = None) -> Extracted:
    """ADD of local sources (no URLs): every matched source that is a regular file holding a
    tar (by content) is extracted into ``dest`` (taken as a directory); all other sources are
    copied with COPY's rules (:func:`builder.engine.copy.copy_entries`).

    Returns the merged entries (a later one wins on the same name) and the temp dir the caller
    deletes after writing the layer (None when unused; on error nothing is left behind).
    Raises CopyError subclasses.
    """
    from .copy import _expand, copy_entries

    items = _expand([s for s in sources if not s.startswith("<<")], src_view=src_view,
                    context=context, src_is_context=src_is_context, parents=False)
    archives: list[tuple[str, Path]] = []
    plain: list[str] = []
    for item in items:
        real = resolve_in_root(src_view, item.path)
        st = src_view.lstat(real)
        host = src_view.host_path(real) if st is not None and stat.S_ISREG(st.st_mode) else None
        if host is not None and is_archive(host):
            archives.append((item.display, host))
        else:
            plain.append(item.display if src_is_context else item.path)
    merged: dict[str, Entry] = {}
    if plain:
        # an archive is always extracted into ``dest`` as a directory: the plain sources then
        # go inside it (BuildKit: an archive before them makes it one; after them it fails)
        plain_dest = dest.rstrip("/") + "/" if archives else dest
        for e in copy_entries(sources=[_escape(p) for p in plain], dest=plain_dest, src_view=src_view,
                              src_is_context=src_is_context, context=context,
                              dest_view=dest_view, chown=chown, chmod=chmod, excludes=excludes,
                              mtime_clamp=mtime_clamp):
            merged[e.name] = e
    if not archives:
        return Extracted(list(merged.values()), None)
    scratch.mkdir(parents=True, exist_ok=True)
    own = Path(tempfile.mkdtemp(prefix="add-", dir=scratch))
    try:
        for display, host in archives:
            ext = archive_entries(host, dest, dest_view=dest_view, scratch=own,
                                  mtime_clamp=mtime_clamp, display=display)
            for e in ext.entries:
                merged[e.name] = e
    except BaseException:
        shutil.rmtree(own, ignore_errors=True)
        raise
    return Extracted(list(merged.values()), own)


def _dest_now(dest: str, dest_view: FsView, merged: dict[str, Entry]) -> str:
    """``dest`` spelled as a directory when an earlier source of the instruction made it one
    (BuildKit copies the sources in turn, each seeing what the previous wrote)."""
    entry = merged.get(resolve_in_root(dest_view, normalize(dest)).strip("/"))
    if entry is not None and entry.type is EntryType.DIR:
        return dest.rstrip("/") + "/"
    return dest


def _escape(path: str) -> str:
    """Escape wildcard characters of an already matched path so it is taken literally."""
    return "".join("\\" + ch if ch in "*?[\\" else ch for ch in path)


def add_entries(*, sources: Sequence[str], dest: str, src_view: FsView, src_is_context: bool,
                context: BuildContext | None, dest_view: FsView, scratch: Path,
                chown: tuple[int, int] | None = None, chmod: Chmod | int | None = None,
                excludes: Sequence[str] = (), checksum: str | None = None,
                heredocs: Sequence[tuple[str, str | bytes]] = (),
                mtime_clamp: int | None = None) -> Extracted:
    """A whole ADD instruction: http(s) URLs are downloaded (never extracted, ``checksum``
    verified), local tars extracted, other local sources and heredocs copied like COPY.

    Everything temporary (downloads, large archive members) lives in one new directory under
    ``scratch``, returned as ``Extracted.temp_dir``: the caller deletes it after writing the
    layer; on error it is already gone. Raises CopyError subclasses (FetchError, ArchiveError,
    SourceNotFoundError...).
    """
    from .copy import copy_entries
    from .fetch import fetch_url, is_url, url_entries

    urls = [s for s in sources if is_url(s)]
    local = [s for s in sources if not is_url(s) and not s.startswith("<<")]
    if checksum and (local or heredocs or len(urls) != 1):
        raise CopyError("ADD --checksum needs exactly one http(s) source")
    scratch.mkdir(parents=True, exist_ok=True)
    own = Path(tempfile.mkdtemp(prefix="add-", dir=scratch))
    merged: dict[str, Entry] = {}
    try:
        if local:
            ext = add_local_entries(sources=local, dest=dest, src_view=src_view,
                                    src_is_context=src_is_context, context=context,
                                    dest_view=dest_view, scratch=own, chown=chown, chmod=chmod,
                                    excludes=excludes, mtime_clamp=mtime_clamp)
            merged.update((e.name, e) for e in ext.entries)
        if heredocs:
            for e in copy_entries(sources=[], dest=_dest_now(dest, dest_view, merged), src_view=src_view,
                                  src_is_context=src_is_context, context=context,
                                  dest_view=dest_view, chown=chown, chmod=chmod,
                                  heredocs=heredocs, mtime_clamp=mtime_clamp):
                merged[e.name] = e
        for url in urls:
            download = fetch_url(url, own, checksum=checksum)
            for e in url_entries(download, _dest_now(dest, dest_view, merged), dest_view=dest_view, chown=chown, chmod=chmod,
                                 mtime_clamp=mtime_clamp):
                merged[e.name] = e
    except BaseException:
        shutil.rmtree(own, ignore_errors=True)
        raise
    return Extracted(list(merged.values()), own)
