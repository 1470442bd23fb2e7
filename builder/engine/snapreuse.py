"""A COPY's snapshot made from the previous run's: the engine side of
:mod:`builder.layer.linkunpack`.

:class:`Linking` follows one layer being written with an unpack (:func:`layers.store_records`):
it keys every regular-file record (header blocks + the content id the step's cache key hashed),
finds the snapshot the same step made last (:mod:`builder.store.lineage`, keyed by the step as
written and its context directory) and, when there is one with an index, feeds a
:class:`~builder.layer.linkunpack.SnapshotLinker` that links the unchanged files from it.
Whatever made the snapshot (the linker or GNU tar), the snapshot gets the index and becomes the
step's lineage, so the next run can link from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from ..digest import Digest

if TYPE_CHECKING:
    from ..layer.linkunpack import SnapshotLinker
    from ..layer.tar import Record
    from .session import BuildSession, StageSession


@dataclass(frozen=True, slots=True)
class Reuse:
    """What lets a layer's snapshot reuse an earlier one: ``lineage``, the step as written
    (same for every run of it, whatever the content); ``content(host file)``, the content
    digest the cache key used for that source file and the lstat it was hashed under (the
    linker links the file only while the writer finds it unchanged since; None: unknown,
    never linked)."""

    lineage: str
    content: Callable[[str], "tuple[str, os.stat_result] | None"]


class Linking:
    """The reuse state of one layer (see the module docstring). Use: :meth:`tap` the records,
    pass ``self`` as the writer's ``watch`` (:class:`builder.layer.tar.SourceWatch`),
    :meth:`begin` once the snapshot's temporary directory exists (returns the linker to use as
    the writer's tee, or None), then :meth:`extra` / :meth:`done` once the snapshot is adopted.

    A member's key names the content the cache key hashed, read before the writer reads the
    file again: the key stays in the index (and the linker links the member) only when the
    writer's ``fstat`` of the file once read (and, for a file larger than what is left of the
    writer's buffer, once opened) matches the lstat the content was hashed under: same device and inode, same ctime (any write, truncate or ``utime``
    sets it to the current time, so size and mtime need no comparing; as for the hash memo,
    only a rewrite within the file system's timestamp granularity could go unseen). A file
    rewritten in between is written from the stream and keeps no key: the next run does not
    link it either.
    """

    def __init__(self, session: StageSession | BuildSession, reuse: Reuse) -> None:
        from ..layer.linkunpack import INDEX_FILE, MAX_GENERATION, load_index
        from ..store.lineage import last_snapshot

        self.session = session
        self.reuse = reuse
        self.index: dict[bytes, bytes] = {}
        self.linker: SnapshotLinker | None = None
        self.base: Path | None = None
        self.base_index: dict[bytes, bytes] = {}
        self.generation = 0
        self._pending: tuple[bytes, os.stat_result] | None = None  # the member being read: name, hashed lstat
        last = last_snapshot(session.store.root, reuse.lineage)
        if last is not None:
            session.store.pin([str(last)])  # a prune running now keeps it while we link from it
            fs = session.snapshots.get(last)
            loaded = load_index(fs.parent / INDEX_FILE) if fs is not None else None
            if fs is not None and loaded is not None and loaded[1] < MAX_GENERATION:
                self.base, (self.base_index, self.generation) = fs, loaded

    def tap(self, records: Iterable[Record]) -> Iterator[Record]:
        """``records`` passed through, keyed (and handed to the linker once it runs)."""
        from ..layer.linkunpack import member_key

        index = self.index
        content = self.reuse.content
        for rec in records:
            if self._pending is not None:  # the writer did not say it read the last one
                self.source_read(-1, True)
            host = rec[2]
            got = content(host) if host is not None and rec[3] is None else None
            label = rec[4]
            name = (label if label[:1] != "/" and label[:2] != "./" else _clean(label)).encode("utf-8", "surrogateescape")
            key = None
            if got is not None:
                key = index[name] = member_key(rec[0], got[0])
                if rec[1]:
                    self._pending = (name, got[1])
            if self.linker is not None:
                self.linker.put(rec, key, name)
            yield rec
        if self._pending is not None:
            self.source_read(-1, True)

    def source_opened(self, fd: int) -> None:
        """SourceWatch: the writer opened the last record's file (``fd``), a large one."""
        pending = self._pending
        if pending is not None and not _unchanged(fd, pending[1]):
            self._changed(pending[0], False)

    def source_read(self, fd: int, streamed: bool) -> None:
        """SourceWatch: the writer read the last record's file (``fd``; -1: it did not say)."""
        pending = self._pending
        if pending is not None:
            self._pending = None
            if not _unchanged(fd, pending[1]):
                self._changed(pending[0], streamed)

    def _changed(self, name: bytes, streamed: bool) -> None:
        self._pending = None
        self.index.pop(name, None)
        if self.linker is not None:
            self.linker.changed(streamed)

    def begin(self, dest: Path, always: bool = False) -> SnapshotLinker | None:
        """A linker into ``dest`` when there is a base snapshot, or ``always`` (it then writes
        every file: the unpacker of a lazy layer, faster than extracting its tar); its staging
        directory is made beside ``dest``. None otherwise (the caller unpacks another way).
        The writer takes it as its tee (it is :attr:`linker` then)."""
        if self.base is None and not always:
            return None
        import tempfile

        from ..layer.linkunpack import SnapshotLinker

        stage = Path(tempfile.mkdtemp(prefix="stage-", dir=Path(dest).parent))
        self.linker = SnapshotLinker(dest, stage, self.base, self.base_index)
        return self.linker

    def extra(self) -> dict[str, bytes]:
        """The files to keep beside the new snapshot's ``fs`` (its index)."""
        from ..layer.linkunpack import INDEX_FILE, dump_index

        linked = self.linker is not None and self.linker.linked > 0
        return {INDEX_FILE: dump_index(self.index, self.generation + 1 if linked else 0)}

    def done(self, diff_id: Digest) -> None:
        """The snapshot of ``diff_id`` is in the store: the step's next run links from it."""
        from ..store.lineage import record_snapshot

        record_snapshot(self.session.store.root, self.reuse.lineage, diff_id)


def has_base(session: StageSession | BuildSession, reuse: Reuse) -> bool:
    """Whether the step has a last snapshot to link from (cheap: no index read)."""
    from ..store.lineage import last_snapshot

    last = last_snapshot(session.store.root, reuse.lineage)
    return last is not None and session.snapshots.get(last) is not None


def _unchanged(fd: int, then: os.stat_result) -> bool:
    """Whether the open file ``fd`` (-1: none) is the file ``then`` is the lstat of, unchanged
    since (same device, inode and ctime, see :class:`Linking`)."""
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return st.st_ctime_ns == then.st_ctime_ns and st.st_ino == then.st_ino and st.st_dev == then.st_dev


def _clean(label: str) -> str:
    name = label.strip("/")
    while name.startswith("./"):
        name = name[2:].lstrip("/")
    return name


__all__ = ["Reuse", "Linking", "has_base"]
