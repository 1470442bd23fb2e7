"""Deterministic layer tar writing in one streaming pass: tar + compress + both digests.

:func:`write_layer` sorts the entries by name (parents come before children), writes ustar
headers (with PAX extended headers for long or non-ASCII names, big numbers and xattrs) itself,
copies file content (``os.readv`` straight into them) through a small pool of reused buffers
(the pool is the bounded queue: the producer waits for a free buffer). The producer hashes
each full buffer (the tar digest); a helper thread compresses it (gzip through
:mod:`builder.layer.gz`, ISA-L or zlib, both releasing the GIL; zstd hands it to its own native
worker), hashes and writes the output. Memory stays bounded
(``_BUFFERS`` x ``_BUF_SIZE`` plus zstd's own job buffers, about 100 MB with 2 workers)
whatever the layer size. Same entries, in any order, give the same bytes (for one gzip
backend/zstd version).

Choices: gzip is :class:`builder.layer.gz.GzipEncoder` (ISA-L when installed, else zlib; level
1 by default, close to ``gzip -1``; fixed header, 1 MiB blocks); zstd uses level 3 in multi-threaded mode with one
worker per spare core (zstd's multi-threaded output does not depend on the worker count or on
how input is fed), no content size and no checksum in the frame header. Entries given in layer
order (``presorted``) are written as they come, so a walk can feed the writer directly; a
producer that frames its members itself hands :func:`write_records` their header blocks and
content sources (:func:`plain_header` makes the common header, :func:`entry_records` any other).
"""

from __future__ import annotations

import hashlib
import os
import queue
import struct
import threading
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterable, Iterator, Protocol

from ..digest import Digest
from ..errors import PybuildError
from .compress import GZIP, UNCOMPRESSED, ZSTD, media_type_for
from .entries import Entry, EntryType

_BLOCK = 512
_BUF_SIZE = 1 << 20
_BUFFERS = 6
_HEADER = struct.Struct("100s8s8s8s12s12s8s1s100s6s2s32s32s8s8s155s12s")
_MAX_OCTAL7 = 0o7777777
_MAX_OCTAL11 = 0o77777777777
_ZERO_BLOCKS = bytes(2 * _BLOCK)
_ZERO_PAD = memoryview(_ZERO_BLOCKS)  # slices of it pad a member's content to a whole block
_MAGIC = b"ustar\x0000" + bytes(64)  # magic, version, empty uname/gname
_TAIL = bytes(167)  # prefix and padding
_CHK_BASE = sum(_MAGIC) + 8 * 0x20
_NO_DEVS = b"%07o\0%07o\0" % (0, 0)
# zstd workers: one core is left to the tar producer, at most 4 (any value >= 1 gives the same
# bytes). Measured on 2 cores, 208 MB: -1 ("all CPUs") 0.82 s and 163 MB RSS; 1 worker 0.62 s, 88 MB.
_ZSTD_THREADS = max(1, min(4, len(os.sched_getaffinity(0)) - 1))


class LayerError(PybuildError):
    """The entries cannot be written as a layer (missing source, file changed, bad hardlink)."""


@dataclass(frozen=True, slots=True)
class LayerInfo:
    """What :func:`write_layer` produced.

    ``digest``: sha256 of the bytes written to ``out`` (the blob); ``diff_id``: sha256 of the
    uncompressed tar; ``size``: bytes written to ``out``; ``media_type``: the OCI layer type.
    """

    digest: Digest
    diff_id: Digest
    size: int
    media_type: str
    compression: str


# ---------------------------------------------------------------------------------------------
# headers

def _octal(value: int, width: int) -> bytes:
    """``width``-byte NUL-terminated octal field."""
    return b"%0*o\0" % (width - 1, value)


def _pax_record(key: str, value: bytes) -> bytes:
    body = b" " + key.encode("utf-8") + b"=" + value + b"\n"
    n = len(body)
    length = n + len(str(n))
    if len(str(length)) != len(str(n)):
        length = n + len(str(length))
    return str(length).encode() + body


def _split_ustar(name: bytes) -> tuple[bytes, bytes] | None:
    """(prefix, name) for a ustar header, or None when the path needs a PAX ``path``."""
    if len(name) <= 100:
        return b"", name
    if len(name) > 256:
        return None
    # the prefix is everything before some '/', at most 155 bytes; the rest at most 100
    idx = name.rfind(b"/", 0, 156)
    while idx > 0:
        if len(name) - idx - 1 <= 100:
            return name[:idx], name[idx + 1:]
        idx = -1  # a longer prefix is impossible (rfind found the last usable slash)
    return None


def plain_header(name: bytes, typeflag: bytes, mode: int, uid: int, gid: int, size: int, mtime: int,
                 linkname: bytes = b"", devmajor: int = 0, devminor: int = 0) -> bytes | None:
    """The one ustar block of a member that needs no PAX record, or None when it needs one (a
    name or link target over 100 bytes or not ASCII, an owner, size or mtime out of range).
    ``name`` as written (a directory's with its trailing ``/``); ``mode``: permission bits."""
    if (len(name) <= 100 and len(linkname) <= 100 and name.isascii() and linkname.isascii()
            and 0 <= uid <= _MAX_OCTAL7 and 0 <= gid <= _MAX_OCTAL7 and size <= _MAX_OCTAL11
            and 0 <= mtime <= _MAX_OCTAL11):
        nums = b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (mode & 0o7777, uid, gid, size, mtime)
        devs = b"%07o\0%07o\0" % (devmajor, devminor) if devmajor or devminor else _NO_DEVS
        # the checksum covers the header with its own field as 8 spaces; zero bytes add nothing
        chk = _CHK_BASE + sum(name) + sum(nums) + typeflag[0] + sum(linkname) + sum(devs)
        return (name.ljust(100, b"\0") + nums + b"%06o\0 " % chk + typeflag
                + linkname.ljust(100, b"\0") + _MAGIC + devs + _TAIL)
    return None


def _header_bytes(e: Entry, name: bytes, typeflag: bytes, size: int, mtime: int,
                  linkname: bytes) -> bytes:
    """One or more 512-byte blocks: an optional PAX header then the ustar header."""
    if not e.xattrs:
        plain = plain_header(name, typeflag, e.mode, e.uid, e.gid, size, mtime, linkname, e.devmajor, e.devminor)
        if plain is not None:
            return plain
    pax: list[tuple[str, bytes]] = []
    split = None
    try:
        name.decode("ascii")
        split = _split_ustar(name)
    except UnicodeDecodeError:
        pass
    binary = False
    if split is None:
        pax.append(("path", name))
        split = (b"", name[:100])
        binary = binary or not _is_utf8(name)
    if len(linkname) > 100 or not linkname.isascii():
        pax.append(("linkpath", linkname))
        binary = binary or not _is_utf8(linkname)
        linkname = linkname[:100]
    uid, gid = e.uid, e.gid
    if not 0 <= uid <= _MAX_OCTAL7:
        pax.append(("uid", str(uid).encode()))
        uid = 0
    if not 0 <= gid <= _MAX_OCTAL7:
        pax.append(("gid", str(gid).encode()))
        gid = 0
    if size > _MAX_OCTAL11:
        pax.append(("size", str(size).encode()))
        hsize = 0
    else:
        hsize = size
    if not 0 <= mtime <= _MAX_OCTAL11:
        pax.append(("mtime", str(mtime).encode()))
        hmtime = 0
    else:
        hmtime = mtime
    for key, value in e.xattrs:
        pax.append(("SCHILY.xattr." + key, value))
    out = b""
    if pax:
        if binary:
            pax.append(("hdrcharset", b"BINARY"))
        pax.sort()
        data = b"".join(_pax_record(k, v) for k, v in pax)
        out = _pack(b"PaxHeader", 0o644, 0, 0, len(data), 0, b"x", b"", 0, 0, b"")
        out += data + bytes(-len(data) % _BLOCK)
    devmajor, devminor = e.devmajor, e.devminor
    out += _pack(split[1], e.mode & 0o7777, uid, gid, hsize, hmtime, typeflag, linkname,
                 devmajor, devminor, split[0])
    return out


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _pack(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, typeflag: bytes,
          linkname: bytes, devmajor: int, devminor: int, prefix: bytes) -> bytes:
    hdr = _HEADER.pack(name, _octal(mode, 8), _octal(uid, 8), _octal(gid, 8), _octal(size, 12),
                       _octal(mtime, 12), b"        ", typeflag, linkname, b"ustar\0", b"00",
                       b"", b"", _octal(devmajor, 8), _octal(devminor, 8), prefix, b"")
    chk = b"%06o\0 " % sum(hdr)
    return hdr[:148] + chk + hdr[156:]


# ---------------------------------------------------------------------------------------------
# ordering and hardlink normalisation

def _encode(name: str) -> bytes:
    return os.fsencode(name)


def _norm(name: str) -> str:
    """Layer path without leading ``/`` or ``./`` and trailing ``/``; LayerError on ``..``."""
    name = name.strip("/")
    while name.startswith("./"):
        name = name[2:].lstrip("/")
    if ".." in name and ".." in name.split("/"):
        raise LayerError(f"layer entry {name!r}: '..' is not allowed in a layer path")
    return name


def _order(entries: Iterable[Entry]) -> list[tuple[bytes, Entry]]:
    """Entries keyed by encoded name, sorted bytewise, last duplicate wins.

    Hardlink groups are normalised so that the member sorting first carries the content and
    the others link to it (a tar reader must meet the target before the link).
    """
    by_name: dict[bytes, Entry] = {}
    for e in entries:
        name = _norm(e.name)
        if not name or name == ".":
            continue
        by_name[_encode(name)] = e
    groups: dict[bytes, list[bytes]] = {}
    for key, e in by_name.items():
        if e.type is EntryType.HARDLINK:
            target = _encode(_norm(e.linkname))
            # follow chains (a link to a link) to the real member
            seen = {key}
            while target in by_name and by_name[target].type is EntryType.HARDLINK and target not in seen:
                seen.add(target)
                target = _encode(_norm(by_name[target].linkname))
            if target not in by_name or by_name[target].type is EntryType.HARDLINK:
                raise LayerError(f"hardlink {e.name!r} points to {e.linkname!r}, which is not in the layer")
            if by_name[target].type is EntryType.DIR:
                raise LayerError(f"hardlink {e.name!r} points to the directory {e.linkname!r}")
            groups.setdefault(target, []).append(key)
    for target, links in groups.items():
        first = min(links)
        if first < target:
            content = by_name[target]
            by_name[first] = _replace_name(content, os.fsdecode(first))
            first_str = os.fsdecode(first)
            for other in [target] + links:
                if other != first:
                    by_name[other] = _hardlink(by_name[other] if other != target else content,
                                               os.fsdecode(other), first_str)
        else:
            target_str = os.fsdecode(target)
            for other in links:
                by_name[other] = _hardlink(by_name[other], os.fsdecode(other), target_str)
    return sorted(by_name.items())


def layer_order(entries: Iterable[Entry]) -> list[tuple[bytes, Entry]]:
    """The members ``entries`` become, in the order :func:`write_layer` writes them:
    ``(encoded name, entry)`` sorted bytewise, last duplicate winning, hard links re-rooted on
    the member sorting first. Their entries, given back with ``presorted=True``, make the
    same tar. LayerError as :func:`write_layer` raises it."""
    return _order(entries)


def _in_given_order(entries: Iterable[Entry]) -> Iterator[tuple[bytes, Entry]]:
    """``(encoded name, entry)`` as given, checking that names strictly increase (the order
    :func:`_order` would produce); LayerError otherwise."""
    prev = b""
    for e in entries:
        name = _norm(e.name)
        if not name or name == ".":
            continue
        key = _encode(name)
        if key <= prev:
            raise LayerError(f"layer entry {e.name!r} is out of order (after {os.fsdecode(prev)!r})")
        prev = key
        yield key, e


def _replace_name(e: Entry, name: str) -> Entry:
    return Entry(name=name, type=e.type, mode=e.mode, uid=e.uid, gid=e.gid, mtime=e.mtime,
                 size=e.size, linkname=e.linkname, devmajor=e.devmajor, devminor=e.devminor,
                 xattrs=e.xattrs, source=e.source, data=e.data)


def _hardlink(e: Entry, name: str, target: str) -> Entry:
    return Entry(name=name, type=EntryType.HARDLINK, mode=e.mode, uid=e.uid, gid=e.gid,
                 mtime=e.mtime, linkname=target, xattrs=e.xattrs)


# ---------------------------------------------------------------------------------------------
# the sink: a compressor thread fed with filled buffers

class LayerOutput(Protocol):
    """Where a layer is written: anything with ``write(bytes)`` (a store BlobWriter, a file).
    A ``sha256_hexdigest()`` method, when present, is used instead of hashing again."""

    def write(self, data: bytes | memoryview, /) -> object: ...


class Discard:
    """A layer output that keeps nothing (a layer written only for its diff_id, or only to be
    unpacked through the tee). Given uncompressed and without a tee, the writer frames and
    hashes such a layer without a helper thread."""

    def write(self, data: bytes | memoryview, /) -> int:
        return len(data)


class _Sink:
    """Owns the buffer pool and the helper thread.

    ``take()`` gives an empty buffer (bytearray of _BUF_SIZE), ``give(buf, n)`` hands over its
    first ``n`` bytes; ``finish()`` flushes and joins, re-raising any error of the thread.

    ``give`` hashes the tar (diff_id) in the producer's thread. The helper thread feeds the
    compressor (gzip; or zstd, whose own native worker does the compressing), hashes and writes
    the output, then recycles the buffer. Measured on 2 cores: hashing the tar on the helper
    thread left it the bottleneck, with the producer waiting for buffers.
    """

    def __init__(self, out: LayerOutput, compression: str, level: int | None, tee: BinaryIO | None = None) -> None:
        self.out = out
        self.tee = tee
        self.tee_error: BaseException | None = None
        self.compression = compression
        self.diff = hashlib.sha256()
        self.blob = hashlib.sha256()
        # an output that already hashes what it is given (a store BlobWriter) is not hashed twice
        probe = getattr(out, "sha256_hexdigest", None)
        self.out_digest: Callable[[], str | None] | None = (
            probe if probe is not None and probe() is not None else None)
        self.size = 0
        self.error: BaseException | None = None
        # buffers are made as the producer first needs them (a small layer needs one: zeroing
        # all of them would cost a few ms per layer), then recycled through _free
        self._free: queue.Queue[bytearray] = queue.Queue()
        self._made = 0
        self._full: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        self._compress, self._flush = self._make_compressor(level)
        # nothing to compress, tee or keep: the producer's hashing is all there is to do
        self._inline = compression == UNCOMPRESSED and tee is None and isinstance(out, Discard)
        self._thread = threading.Thread(target=self._run, name="layer-compress", daemon=True)
        if not self._inline:
            self._thread.start()

    def _make_compressor(self, level: int | None) -> tuple[Callable[[memoryview], bytes],
                                                           Callable[[], bytes]]:
        if self.compression == UNCOMPRESSED:
            return bytes, lambda: b""
        if self.compression == GZIP:
            from .gz import GzipEncoder

            enc = GzipEncoder(level)
            return enc.compress, enc.flush
        if self.compression == ZSTD:
            import zstandard

            zc = zstandard.ZstdCompressor(level=3 if level is None else level, threads=_ZSTD_THREADS,
                                          write_checksum=False, write_content_size=False)
            zobj = zc.compressobj()
            return zobj.compress, zobj.flush
        raise LayerError(f"unknown compression {self.compression!r}")

    def _emit(self, data: bytes) -> None:
        if data:
            if self.out_digest is None:
                self.blob.update(data)
            self.out.write(data)
            self.size += len(data)

    def blob_hexdigest(self) -> str:
        """sha256 hex of everything written to ``out``."""
        if self.compression == UNCOMPRESSED:
            return self.diff.hexdigest()
        got = self.out_digest() if self.out_digest is not None else None
        return got if got is not None else self.blob.hexdigest()

    def _process(self, buf: bytearray, n: int) -> None:
        """Hash, compress and write the first ``n`` bytes of ``buf``; then recycle ``buf``."""
        mv = memoryview(buf)[:n]
        try:
            if self.tee is not None:
                try:
                    self.tee.write(mv)
                except BaseException as exc:  # the tee's failure never fails the layer
                    self.tee_error, self.tee = exc, None
            if self.compression == UNCOMPRESSED:
                self.out.write(mv)
                self.size += n
            else:
                self._emit(self._compress(mv))
        finally:
            mv.release()
        self._free.put(buf)

    def _run(self) -> None:
        try:
            while True:
                item = self._full.get()
                if item is None:
                    break
                self._process(*item)
            self._emit(self._flush())
        except BaseException as exc:  # handed to the producer thread
            self.error = exc
            # unblock a producer waiting for a buffer (it re-raises the error when woken)
            for _ in range(_BUFFERS):
                self._free.put(bytearray())

    def take(self) -> bytearray:
        if self._made < _BUFFERS and self._free.empty():
            self._made += 1
            buf = bytearray(_BUF_SIZE)
        else:
            buf = self._free.get()
        if self.error is not None:
            raise self.error
        return buf

    def give(self, buf: bytearray, n: int) -> None:
        if self.error is not None:
            raise self.error
        # the tar digest is taken here, in the producer's thread (hashlib drops the GIL): the
        # helper thread then only feeds the compressor and writes, and the two stay balanced
        with memoryview(buf) as mv:
            self.diff.update(mv[:n])
        if self._inline:
            self.size += n
            self._free.put(buf)
            return
        self._full.put((buf, n))

    def finish(self) -> None:
        if self._inline:
            return
        self._full.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        if self._inline:
            return
        self._full.put(None)
        self._thread.join()


# ---------------------------------------------------------------------------------------------

_TYPEFLAGS = {t: t.value.encode() for t in EntryType}


def write_layer(entries: Iterable[Entry], out: LayerOutput, *, compression: str = GZIP,
                mtime_clamp: int | None = None, level: int | None = None,
                tee: BinaryIO | None = None, presorted: bool = False) -> LayerInfo:
    """Write ``entries`` as a layer tar to ``out``, compressed, and return its digests.

    ``compression``: "gzip" (buildx level, default 1; see :mod:`builder.layer.gz`), "zstd"
    (default level 3, all cores) or
    "uncompressed". ``mtime_clamp``: every mtime becomes ``min(mtime, mtime_clamp)``.
    Entries are sorted by name (duplicates: the last one given wins); a hardlink group is
    re-rooted on its first member by name. File content is read from ``entry.source`` (opened
    with O_NOFOLLOW and closed here) or taken from ``entry.data``; a source shorter than ``entry.size`` raises LayerError (it changed
    while being archived); extra bytes beyond ``size`` are ignored. ``out`` is written
    from a helper thread and is neither flushed nor closed here; when it has
    ``sha256_hexdigest()`` returning a digest (the store's BlobWriter), the blob digest is
    taken from it instead of hashing the output twice. Raises LayerError on bad
    entries or unreadable sources; errors of ``out.write`` propagate.

    ``tee``: also receives the uncompressed tar stream, from the helper thread (e.g. a pipe to
    an extractor unpacking the layer while it is written). It is not closed here; if writing to
    it fails, teeing stops and the layer is still written.

    ``presorted``: the entries already come in layer order (names strictly increasing as
    bytes, hardlinks after their targets), e.g. straight from a walk; they are then written
    as they come, without being gathered first, and LayerError is raised for one out of order.
    """
    ordered = _in_given_order(entries) if presorted else _order(entries)
    return write_records(entry_records(ordered, mtime_clamp), out, compression=compression, level=level, tee=tee)


class SourceWatch(Protocol):
    """Told, in the producer's thread, about each host file a record names, with the file's
    descriptor (to ``fstat``, never to read or close): :meth:`source_read` once its content
    is read (before it is closed), ``streamed`` telling whether some of its bytes were already
    handed on (to the compressor and the tee); only then was :meth:`source_opened` called
    first, once the file was open, before any of its bytes was handed on. It learns which
    bytes the layer really holds (the snapshot linker links a file only when they are those
    its content id names) in time to keep them. What it raises aborts the write."""

    def source_opened(self, fd: int) -> None: ...

    def source_read(self, fd: int, streamed: bool) -> None: ...


# a tar member ready to be written: its header block(s), its content size, where the content
# comes from (a host file opened here, or bytes; neither for no content) and its layer name
Record = tuple[bytes, int, "str | None", "bytes | None", str]


def entry_records(ordered: Iterable[tuple[bytes, Entry]], mtime_clamp: int | None = None) -> Iterator[Record]:
    """The records of ``(encoded name, entry)`` pairs, in the order given; ``mtime_clamp`` as
    for :func:`write_layer`."""
    for name, e in ordered:
        mtime = e.mtime if mtime_clamp is None else min(e.mtime, mtime_clamp)
        etype = e.type
        size = 0
        linkname = b""
        hname = name
        if etype is EntryType.FILE:
            size = e.size if e.data is None else len(e.data)
        elif etype is EntryType.DIR:
            hname = name + b"/"
        elif etype is EntryType.SYMLINK or etype is EntryType.HARDLINK:
            linkname = _encode(e.linkname)
        if size and e.data is None and e.source is None:
            raise LayerError(f"layer entry {e.name!r}: a file of {size} bytes has no content source")
        yield _header_bytes(e, hname, _TYPEFLAGS[etype], size, mtime, linkname), size, e.source, e.data, e.name


def write_records(records: Iterable[Record], out: LayerOutput, *, compression: str = GZIP,
                  level: int | None = None, tee: BinaryIO | None = None,
                  watch: SourceWatch | None = None) -> LayerInfo:
    """Write ``records`` (members already in layer order, see :data:`Record`) as a layer tar to
    ``out``: what :func:`write_layer` does once its entries are ordered and framed, for callers
    that frame members themselves (the streamed COPY). ``compression``, ``level``, ``tee`` and
    ``out`` as for :func:`write_layer`; a source file that is shorter than its record's size or
    unreadable raises LayerError. ``watch``: told about each source file read (see
    :class:`SourceWatch`)."""
    return write_records_detached(records, out, compression=compression, level=level, tee=tee, watch=watch)[1]()


def write_layer_detached(entries: Iterable[Entry], out: LayerOutput, *, compression: str = GZIP,
                         mtime_clamp: int | None = None, level: int | None = None,
                         presorted: bool = False) -> tuple[Digest, Callable[[], LayerInfo]]:
    """:func:`write_layer` in two halves: returns as soon as every member is framed and read
    (the tar's digest, the diff_id, is then known and no source file is read any more) with a
    ``finish()`` that waits for the helper thread to compress and write the rest to ``out``
    and returns the LayerInfo (or raises its error). Call ``finish()`` exactly once, from any
    thread; until then ``out`` is being written. ``presorted`` as for :func:`write_layer`."""
    ordered = _in_given_order(entries) if presorted else _order(entries)
    return write_records_detached(entry_records(ordered, mtime_clamp), out, compression=compression,
                                  level=level)


def write_records_detached(records: Iterable[Record], out: LayerOutput, *, compression: str = GZIP,
                           level: int | None = None,
                           tee: BinaryIO | None = None,
                           watch: SourceWatch | None = None) -> tuple[Digest, Callable[[], LayerInfo]]:
    """:func:`write_records` in two halves, as :func:`write_layer_detached`."""
    media_type = media_type_for(compression)
    sink = _Sink(out, compression, level, tee)
    produced = False
    try:
        buf = sink.take()
        mv = memoryview(buf)
        pos = 0
        for hdr, size, source, data, label in records:
            # header
            hl = len(hdr)
            if pos + hl > _BUF_SIZE:
                sink.give(buf, pos)
                buf = sink.take()
                mv = memoryview(buf)
                pos = 0
            mv[pos:pos + hl] = hdr
            pos += hl
            if size == 0:
                continue
            # content
            if data is not None:
                content = memoryview(data)
                off = 0
                while off < size:
                    if pos == _BUF_SIZE:
                        sink.give(buf, pos)
                        buf = sink.take()
                        mv = memoryview(buf)
                        pos = 0
                    n = min(size - off, _BUF_SIZE - pos)
                    mv[pos:pos + n] = content[off:off + n]
                    pos += n
                    off += n
            else:
                try:
                    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)  # type: ignore[arg-type]
                except OSError as exc:
                    raise LayerError(f"cannot read {source!r} for layer entry {label!r}: {exc.strerror}") from exc
                try:
                    # the content fits in this buffer: none of it is handed on before source_read
                    streamed = pos + size > _BUF_SIZE
                    if streamed and watch is not None:
                        watch.source_opened(fd)
                    left = size
                    while left:
                        if pos == _BUF_SIZE:
                            sink.give(buf, pos)
                            buf = sink.take()
                            mv = memoryview(buf)
                            pos = 0
                        want = min(left, _BUF_SIZE - pos)
                        try:
                            got = os.readv(fd, [mv[pos:pos + want]])
                        except OSError as exc:
                            raise LayerError(f"cannot read {source!r} for layer entry {label!r}: "
                                             f"{exc.strerror}") from exc
                        if got == 0:
                            raise LayerError(f"{source!r} shrank while being archived as {label!r}: "
                                             f"expected {size} bytes, got {size - left}")
                        pos += got
                        left -= got
                    if watch is not None:
                        watch.source_read(fd, streamed)
                finally:
                    os.close(fd)
            pad = -size % _BLOCK
            if pad:
                if pos + pad > _BUF_SIZE:
                    sink.give(buf, pos)
                    buf = sink.take()
                    mv = memoryview(buf)
                    pos = 0
                mv[pos:pos + pad] = _ZERO_PAD[:pad]
                pos += pad
        # end of archive: two zero blocks
        if pos + len(_ZERO_BLOCKS) > _BUF_SIZE:
            sink.give(buf, pos)
            buf = sink.take()
            mv = memoryview(buf)
            pos = 0
        mv[pos:pos + len(_ZERO_BLOCKS)] = _ZERO_BLOCKS
        pos += len(_ZERO_BLOCKS)
        mv.release()
        sink.give(buf, pos)
        produced = True
    finally:
        if not produced:
            sink.abort()
    diff_id = Digest("sha256", sink.diff.hexdigest())

    def finish() -> LayerInfo:
        sink.finish()
        return LayerInfo(digest=Digest("sha256", sink.blob_hexdigest()), diff_id=diff_id,
                         size=sink.size, media_type=media_type, compression=compression)

    return diff_id, finish
