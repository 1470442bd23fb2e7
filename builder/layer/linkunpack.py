"""Unpack a layer being written into a snapshot directory, taking unchanged files from an
earlier snapshot by hard link.

A COPY that runs again (``--no-cache``, or one context file changed) writes a layer whose
members are almost all those of the snapshot the previous run of the same step left. Making
the snapshot by extracting the tar again creates every file anew (20,000 files: seconds of
kernel time); linking the unchanged ones costs one ``link()`` each.

Identity of a member: its tar header blocks (name, type, mode, owner, mtime, size, link
target, xattrs: everything the snapshot's inode carries) plus the content id the producer
gives for its content (the sha256 the step's cache key hashed). That id was computed before
the writer reads the file: a file rewritten in between (same size: an editor saving during a
build) would give a layer of the new bytes and a linked file of the old ones. So a member is
linked only when the producer says the file the writer read was the one its content id was
hashed from, unchanged (:class:`builder.engine.snapreuse.Linking` compares the writer's
``fstat`` with the hash's lstat, see :class:`builder.layer.tar.SourceWatch`); otherwise it is
written from the stream (found before any of its bytes reached the tee) or the snapshot is
dropped (a large file changed while it was read: the stream's bytes of it are gone). A
snapshot made by
:func:`builder.engine.layers._store` keeps ``{name: member key}`` of its regular files
(:data:`INDEX_FILE` beside ``fs``, see :func:`dump_index`); a later unpack links ``base/name``
when the new member has the same key, and writes the file from the tar stream otherwise. The
two snapshots then share those inodes: snapshots are never modified once published (overlay
mounts them read-only; a RUN's changes go to its own upper dir, copied up), so sharing is
invisible but for the link count, as in BuildKit's hard-linking merge snapshots.

:class:`SnapshotLinker` is fed two ways while the layer is written: the records
(:func:`builder.layer.tar.write_records`) through :meth:`SnapshotLinker.put` as the producer
frames them (it decides there which files are linked), and the tar stream as the writer's
``tee``, from which it keeps only the content of the files it cannot link (in a staging
directory: a written file holds exactly the layer's bytes). Once the layer is written,
:meth:`SnapshotLinker.finish` makes the snapshot in one pass without other threads competing
for the interpreter (20,000 links take ~0.1 s). It handles what a layer of pybuild's own
writer holds (directories listed before their contents, files, symlinks, hardlinks to earlier
members, fifos and devices as root); anything else (a whiteout name, a directory the layer
does not list) stops it with :class:`LinkUnpackError` and the caller drops the snapshot.
Root only (owners are set).
"""

from __future__ import annotations

import collections
import hashlib
import marshal
import os
import stat
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import PybuildError

if TYPE_CHECKING:
    from .tar import Record

# the last member put, linked: (index, header blocks, content start, size)
_Last = tuple[int, bytes, int, int]

INDEX_FILE = "links"       # beside a snapshot's fs dir: its regular files' member keys
_INDEX_VERSION = 1
MAX_GENERATION = 10_000    # snapshots linked one from another; keeps link counts far below ext4's 65,000
_BLOCK = 512
_OPEN_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_SKIPPED_XATTRS = (b"trusted.overlay.", b"user.overlay.")
_blake2b = hashlib.blake2b


class LinkUnpackError(PybuildError):
    """The layer holds something the linker does not unpack (the snapshot is dropped)."""


def member_key(hdr: bytes, content_id: str) -> bytes:
    """The identity of a regular-file member: its header blocks and its content id."""
    h = _blake2b(hdr, digest_size=16)
    h.update(content_id.encode())
    return bytes(h.digest())


def dump_index(index: dict[bytes, bytes], generation: int) -> bytes:
    """The bytes of a snapshot's :data:`INDEX_FILE`."""
    return marshal.dumps((_INDEX_VERSION, generation, index))


def load_index(path: Path) -> tuple[dict[bytes, bytes], int] | None:
    """``(index, generation)`` from an :data:`INDEX_FILE`; None when missing, unreadable,
    foreign or of another version (the snapshot is then not used as a base)."""
    try:
        version, generation, index = marshal.loads(path.read_bytes())
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if version != _INDEX_VERSION or type(generation) is not int or type(index) is not dict:
        return None
    return index, generation


class _Member:
    __slots__ = ("name", "kind", "mode", "uid", "gid", "size", "mtime", "linkname", "xattrs", "dev")

    def __init__(self, hdr: bytes) -> None:
        ustar = hdr[-_BLOCK:]
        pax: dict[bytes, bytes] = {}
        if len(hdr) > _BLOCK:
            if hdr[156:157] != b"x":
                raise LinkUnpackError("unexpected tar header before a member")
            _parse_pax(hdr[_BLOCK:_BLOCK + _num(hdr[124:136])], pax)
        name = ustar[:100].split(b"\0", 1)[0]
        prefix = ustar[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
        self.name = pax.get(b"path", name).rstrip(b"/")
        self.kind = ustar[156:157] or b"0"
        self.mode = _num(ustar[100:108])
        self.uid = int(pax[b"uid"]) if b"uid" in pax else _num(ustar[108:116])
        self.gid = int(pax[b"gid"]) if b"gid" in pax else _num(ustar[116:124])
        self.size = int(pax[b"size"]) if b"size" in pax else _num(ustar[124:136])
        self.mtime = int(pax[b"mtime"]) if b"mtime" in pax else _num(ustar[136:148])
        self.linkname = pax.get(b"linkpath", ustar[157:257].split(b"\0", 1)[0])
        self.dev = (_num(ustar[329:337]), _num(ustar[337:345]))
        self.xattrs = [(k[len(b"SCHILY.xattr."):], v) for k, v in sorted(pax.items())
                       if k.startswith(b"SCHILY.xattr.") and not k[len(b"SCHILY.xattr."):].startswith(_SKIPPED_XATTRS)]


def _names(hdr: bytes, name: bytes) -> bool:
    """Whether the header blocks ``hdr`` are those of a member named ``name``."""
    if len(hdr) == _BLOCK and not hdr[345] and hdr[:100].split(b"\0", 1)[0] == name:
        return True  # a plain header (no prefix field): the common case, without parsing
    return _Member(hdr).name == name


def _num(field: bytes) -> int:
    digits = field.strip(b"\0 ")
    return int(digits, 8) if digits else 0


def _parse_pax(data: bytes, out: dict[bytes, bytes]) -> None:
    pos = 0
    while pos < len(data):
        sp = data.index(b" ", pos)
        length = int(data[pos:sp])
        key, _, value = data[sp + 1:pos + length - 1].partition(b"=")
        out[key] = value
        pos += length


class SnapshotLinker:
    """Unpacks the layer being written into ``dest`` (an empty directory), linking from
    ``base`` (the ``fs`` dir of an earlier snapshot whose index is ``base_index``; None with an
    empty index: every file is written, the linker is then a plain unpacker); ``stage``
    (an empty directory on the same file system) holds the content of the files that are not
    linked while the layer is written.

    Wiring: :meth:`put` each record (in the producer's thread) before the writer gets it, call
    :meth:`changed` when the writer finds its file is not what its key names, pass ``self`` as
    the writer's tee (written from the writer's helper thread:
    only the bytes of files that cannot be linked are kept, straight into ``stage``); once the writer has
    returned, :meth:`finish` (in any one thread) makes the snapshot: directories, links,
    staged files renamed into place, the rest created, then directory modes and times. It
    raises LinkUnpackError (something the linker does not unpack, or the stream fell short)
    or OSError; ``dest`` is then partial (the caller removes it). Nothing here ever raises
    into the writer."""

    def __init__(self, dest: Path, stage: Path, base: Path | None, base_index: dict[bytes, bytes]) -> None:
        self.dest = os.fsencode(dest) + b"/"
        self.stage = os.fsencode(stage) + b"/"
        self.base = os.fsencode(base) + b"/" if base is not None else b"/nonexistent/"
        self.base_index = base_index
        self.linked = 0
        self.error: BaseException | None = None
        # members in order: (name, None) for a file to link, (header blocks, staged file number) else
        self._members: list[tuple[bytes, int | None]] = []
        self._offset = 0              # where the next member starts in the tar stream
        self._ranges: collections.deque[tuple[int, int, int]] = collections.deque()  # (start, end, staged n)
        self._lock = threading.Lock()  # guards _ranges between the two threads
        self._pos = 0                 # stream bytes the tee has seen
        self._fd = -1                 # the staged file being written
        self._fd_end = 0
        self._fd_at = 0
        self._last: _Last | None = None  # the last member put, if linked

    # -- the producer's side
    def put(self, record: Record, key: bytes | None, name: bytes) -> None:
        """The next record (:data:`builder.layer.tar.Record`) as the producer frames it, with
        its member key (:func:`member_key`; None: never linked) and its layer name. A member
        its key links is linked unless :meth:`changed` is called before the next record."""
        hdr, size = record[0], record[1]
        start = self._offset + len(hdr)
        self._offset = start + size + (-size % _BLOCK)
        n = len(self._members)
        if key is not None and self.base_index.get(name) == key and _names(hdr, name):
            self._last = (n, hdr, start, size)
            self._members.append((name, None))
            return
        self._last = None
        self._stage(hdr, start, size, n)
        self._members.append((hdr, n))

    def _stage(self, hdr: bytes, start: int, size: int, n: int) -> None:
        if size:
            with self._lock:
                self._ranges.append((start, start + size, n))

    def changed(self, streamed: bool) -> None:
        """The source file of the last member :meth:`put` is not the content its key names
        (the producer found it changed since it was hashed): unless some of its bytes already
        went to the tee (``streamed``), they are staged from the stream instead of linked;
        else a linked member fails the snapshot (its bytes in the layer were not kept)."""
        last, self._last = self._last, None
        if last is None:
            return
        n, hdr, start, size = last
        if streamed:
            if self.error is None:
                self.error = LinkUnpackError(f"layer member {os.fsdecode(self._members[n][0])!r}: "
                                             "its source file changed while it was read")
            return
        self._members[n] = (hdr, n)
        self._stage(hdr, start, size, n)

    # -- the writer's helper thread: the tee
    def write(self, data: bytes | bytearray | memoryview) -> int:
        """A chunk of the tar stream: the parts that belong to staged files are written."""
        n = len(data)
        if self.error is not None:
            return n
        try:
            self._take(memoryview(data), self._pos)
        except BaseException as exc:
            self.error = exc
        self._pos += n
        return n

    def _take(self, chunk: memoryview, pos: int) -> None:
        end = pos + len(chunk)
        while True:
            if self._fd < 0:
                with self._lock:
                    if not self._ranges or self._ranges[0][0] >= end:
                        return
                    start, stop, n = self._ranges.popleft()
                self._fd = os.open(self.stage + b"%d" % n, _OPEN_NEW, 0o600)
                self._fd_end = stop
                self._fd_at = start
            lo = max(self._fd_at, pos)
            hi = min(self._fd_end, end)
            if lo < hi:
                piece = chunk[lo - pos:hi - pos]
                while piece:
                    piece = piece[os.write(self._fd, piece):]
                self._fd_at = hi
            if self._fd_at < self._fd_end:
                return  # continues in the next chunk
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        """Close the staged file being written, if any (idempotent; :meth:`finish` calls it)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- the snapshot
    def finish(self) -> int:
        """Make the snapshot in ``dest`` (see the class docstring); returns how many files
        were linked."""
        self.close()
        if self.error is not None:
            raise self.error
        if self._ranges:
            raise LinkUnpackError("the tar stream ended before its members")
        dirs: dict[bytes, tuple[int, int]] = {b"": (0, 0)}  # name -> (mode, mtime); "" the root
        made: set[bytes] = set()
        dest, base = self.dest, self.base
        link = os.link
        for item, n in self._members:
            if n is None:
                parent = item.rpartition(b"/")[0]
                if parent not in dirs:
                    raise LinkUnpackError(f"layer member {os.fsdecode(item)!r}: not unpacked by the linker")
                link(base + item, dest + item, follow_symlinks=False)
                made.add(item)
                continue
            self._member(_Member(item), n, dirs, made)
        self.linked = sum(1 for _, n in self._members if n is None)
        del dirs[b""]
        for name in sorted(dirs, key=lambda d: d.count(b"/"), reverse=True):
            mode, mtime = dirs[name]
            os.chmod(dest + name, mode & 0o7777)
            os.utime(dest + name, ns=(mtime * 1_000_000_000,) * 2)
        return self.linked

    def _member(self, m: _Member, n: int, dirs: dict[bytes, tuple[int, int]], made: set[bytes]) -> None:
        name = m.name
        parent, _, base = name.rpartition(b"/")
        if not name or base.startswith(b".wh.") or parent not in dirs:
            raise LinkUnpackError(f"layer member {os.fsdecode(name)!r}: not unpacked by the linker")
        path = self.dest + name
        kind = m.kind
        if kind == b"0" or kind == b"7":
            staged = self.stage + b"%d" % n
            if m.size:
                st = os.lstat(staged)
                if st.st_size != m.size:
                    raise LinkUnpackError(f"layer member {os.fsdecode(name)!r}: the tar stream fell short")
            else:
                os.close(os.open(staged, _OPEN_NEW, 0o600))
            os.chown(staged, m.uid, m.gid)
            os.chmod(staged, m.mode & 0o7777)
            for k, v in m.xattrs:
                os.setxattr(staged, k, v)
            os.utime(staged, ns=(m.mtime * 1_000_000_000,) * 2)
            os.rename(staged, path)
            made.add(name)
            return
        if kind == b"5":
            os.mkdir(path, 0o700)
            os.chown(path, m.uid, m.gid)
            for k, v in m.xattrs:
                os.setxattr(path, k, v)
            dirs[name] = (m.mode, m.mtime)
            return
        if kind == b"1":
            if m.linkname not in made:
                raise LinkUnpackError(f"layer member {os.fsdecode(name)!r}: hardlink to an unknown member")
            os.link(self.dest + m.linkname, path, follow_symlinks=False)
            made.add(name)
            return
        if kind == b"2":
            os.symlink(m.linkname, path)
        elif kind == b"6":
            os.mkfifo(path, 0o600)
        elif kind in (b"3", b"4"):
            os.mknod(path, (stat.S_IFCHR if kind == b"3" else stat.S_IFBLK) | 0o600, os.makedev(*m.dev))
        else:
            raise LinkUnpackError(f"layer member {os.fsdecode(name)!r}: unsupported tar type {kind!r}")
        os.chown(path, m.uid, m.gid, follow_symlinks=False)
        if kind != b"2":
            os.chmod(path, m.mode & 0o7777)
        for k, v in m.xattrs:
            os.setxattr(path, k, v, follow_symlinks=False)
        os.utime(path, ns=(m.mtime * 1_000_000_000,) * 2, follow_symlinks=False)
        made.add(name)


__all__ = ["SnapshotLinker", "LinkUnpackError", "member_key", "dump_index", "load_index", "INDEX_FILE",
           "MAX_GENERATION"]
