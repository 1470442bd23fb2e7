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
    (same for every run of it, whatever the content); ``content_id(host file)``, the content
    digest the cache key used for that source file (None: unknown, never linked)."""

    lineage: str
    content_id: Callable[[str], "str | None"]


class Linking:
    """The reuse state of one layer (see the module docstring). Use: :meth:`tap` the records,
    :meth:`begin` once the snapshot's temporary directory exists (returns the linker to use as
    the writer's tee, or None), then :meth:`extra` / :meth:`done` once the snapshot is adopted.
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
        content_id = self.reuse.content_id
        for rec in records:
            host = rec[2]
            cid = content_id(host) if host is not None and rec[3] is None else None
            key = member_key(rec[0], cid) if cid is not None else None
            label = rec[4]
            name = (label if label[:1] != "/" and label[:2] != "./" else _clean(label)).encode("utf-8", "surrogateescape")
            if key is not None:
                index[name] = key
            if self.linker is not None:
                self.linker.put(rec, key, name)
            yield rec

    def begin(self, dest: Path, always: bool = False) -> SnapshotLinker | None:
        """A linker into ``dest`` when there is a base snapshot, or ``always`` (it then writes
        every file: the unpacker of a lazy layer, faster than extracting its tar); its staging
        directory is made beside ``dest``. None otherwise (the caller unpacks another way)."""
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


def _clean(label: str) -> str:
    name = label.strip("/")
    while name.startswith("./"):
        name = name[2:].lstrip("/")
    return name


__all__ = ["Reuse", "Linking", "has_base"]
