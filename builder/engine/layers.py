"""Turn layer entries into a stored layer, with cache records.

One function both COPY-like steps and RUN use: entries in, :class:`LayerRef` out (or None when
there is nothing to write; :func:`commit_step` then gives a layer step the empty layer).

Lazy layers: a step whose layer no output may need (a stage that is not the target nor one the
target is FROM) keeps only its snapshot (the unpacked overlay-format directory, which the next
step stacks as a lower dir anyway) and its diff_id (the sha256 of the tar, hashed as the tar is
streamed and then dropped); its cache record names ``{"diff_id"}`` alone. :func:`materialize`
makes the blob from the snapshot when an output first needs it (the target image's manifest,
a cache export) and rewrites the records to name it. Cache keys chain on diff_ids, never on
blob digests, so they are the same whichever way a layer was made.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from ..digest import Digest
from ..events import BlobProgress
from .state import ImageState, LayerRef

if TYPE_CHECKING:
    from ..layer.linkunpack import SnapshotLinker
    from .session import BuildSession, StageSession
    from .snapreuse import Linking, Reuse


def store_layer(session: StageSession | BuildSession, entries: Iterable[Any], *, unpack: bool = False, lazy: bool = False,
                presorted: bool = False, reuse: Reuse | None = None) -> LayerRef:
    """Write ``entries`` as one layer into the store (tar + compression + hashing in one pass).

    ``unpack``: also unpack the layer into the snapshot store while it is written (the tar
    stream is teed to an extractor thread), so a following RUN need not decompress and
    extract it again. A failure of that side path only costs the snapshot, never the layer.

    ``lazy``: make no blob: the tar is only hashed (its diff_id) and unpacked into the snapshot
    store; the result is a lazy :class:`LayerRef` (no digest) that :func:`materialize` turns
    into a blob when an output first needs it. StoreError when the snapshot cannot be made
    (without a blob it is the layer). ``presorted``: as for ``write_layer``. ``reuse``: as
    for :func:`store_records`."""
    from ..layer.tar import write_layer

    opts = session.opts
    if reuse is not None and (unpack or lazy):
        from ..layer.tar import entry_records, layer_order

        return store_records(session, entry_records(layer_order(entries), opts.source_date_epoch), unpack=unpack,
                             lazy=lazy, reuse=reuse)
    compression = "uncompressed" if lazy else opts.compression
    watch = _Marked()
    entries = watch.names(entries, lambda e: str(e.name))
    return _store(session, lambda out, tee: write_layer(
        entries, out, compression=compression, level=opts.compression_level,
        mtime_clamp=opts.source_date_epoch, tee=tee, presorted=presorted), unpack or lazy, lazy, watch)


def store_records(session: StageSession | BuildSession, records: Iterable[Any], *, unpack: bool = False, lazy: bool = False,
                  reuse: Reuse | None = None) -> LayerRef:
    """:func:`store_layer` for members already framed as tar records (``write_records``; the
    producer applies the build's mtime clamp itself). ``reuse``: an eager unpack (as root) may
    link unchanged files from the snapshot the same step made last (:mod:`.snapreuse`)."""
    from ..layer.tar import write_records

    compression = "uncompressed" if lazy else session.opts.compression
    level = session.opts.compression_level
    watch = _Marked()
    records = watch.names(records, lambda r: str(r[4]))
    linking = None
    if reuse is not None and (unpack or lazy) and _gnu_tar() is not None:
        from .snapreuse import Linking

        linking = Linking(session, reuse)
        records = linking.tap(records)
    return _store(session, lambda out, tee: write_records(
        records, out, compression=compression, level=level, tee=tee,
        watch=linking), unpack or lazy, lazy, watch, linking)


def store_copy_layer(session: StageSession | BuildSession, entries: list[Any], *, unpack: bool, lazy: bool,
                     avoid: tuple[str, ...] = (), reuse: Reuse | None = None) -> LayerRef:
    """:func:`store_layer` for a COPY/ADD's ``entries``, whose snapshot (wanted when
    ``unpack`` or ``lazy``) is first put down from the members' sources when they allow it
    (:func:`builder.layer.linksnap.link_snapshot`: files of immutable snapshots, hard-linked;
    ``avoid``: the snapshot dirs of the image the layer goes on, whose files are copied instead)
    rather than by unpacking the tar as it is written. The tar is then only hashed (``lazy``)
    or, in a stage whose RUN layers get background blobs, framed and hashed now and compressed
    and committed in the background (:func:`store_layer_soon`). Otherwise (and always with
    ``PYBUILD_LAZY_LAYERS=off``, the comparison switch), as :func:`store_layer` (with
    ``reuse``: see :func:`store_records`). Raises as :func:`store_layer`."""
    import os

    if (unpack or lazy) and os.geteuid() == 0 and entries \
            and os.environ.get("PYBUILD_LAZY_LAYERS", "auto").lower() != "off":
        import shutil
        import tempfile
        from pathlib import Path

        from ..layer.linksnap import link_snapshot, linkable
        from ..layer.tar import layer_order

        ordered = layer_order(entries)
        immutable = str(session.snapshots.dir) + "/"
        if linkable(ordered, immutable=immutable):
            dest = Path(tempfile.mkdtemp(prefix="snap-", dir=session.tmp))
            # (measured: putting it down in a thread beside the tar writer was slower: both
            # are Python loops around syscalls)
            try:
                made = link_snapshot(ordered, str(dest), immutable=immutable, avoid=avoid,
                                     mtime_clamp=session.opts.source_date_epoch)
            except OSError:
                made = False
            if made:
                presorted = [e for _, e in ordered]
                if lazy:
                    layer = hash_only(session, presorted, presorted=True)
                elif getattr(session, "background_blobs", False):
                    layer = store_layer_soon(session, presorted, presorted=True)
                else:
                    layer = store_layer(session, presorted, presorted=True)
                try:
                    session.snapshots.adopt(layer.diff_id, dest)
                    return layer
                except Exception as exc:
                    shutil.rmtree(dest, ignore_errors=True)
                    if lazy:  # without a blob, the snapshot is the layer
                        from ..errors import StoreError

                        raise StoreError(f"cannot keep layer {layer.diff_id} in the snapshot store: {exc}") from exc
                    return materialize(session, layer) if layer.digest is None else layer
            shutil.rmtree(dest, ignore_errors=True)
    return store_layer(session, entries, unpack=unpack, lazy=lazy, reuse=reuse)


def whiteout_named(names: Iterable[str]) -> bool:
    """Whether any of the layer paths ``names`` is named like a whiteout (``.wh.*``): such a
    member becomes a whiteout when unpacked, so its layer cannot be kept as a snapshot alone."""
    return any(str(n).rsplit("/", 1)[-1].startswith(".wh.") for n in names)


class _Marked:
    """Watches the member names going into a layer for whiteout-looking ones (``.wh.*``),
    which the fast unpacker (GNU tar) would create as plain files where pybuild's extractor
    makes whiteouts: a layer holding one gets no snapshot from it."""

    def __init__(self) -> None:
        self.seen = False

    def names(self, items: Iterable[Any], name: Callable[[Any], str]) -> Iterator[Any]:
        for item in items:
            if not self.seen:
                label = name(item)
                if ".wh." in label and whiteout_named((label,)):  # (the substring test first: cheap)
                    self.seen = True
            yield item


def hash_only(session: StageSession | BuildSession, entries: Iterable[Any], *, presorted: bool = False) -> LayerRef:
    """The lazy LayerRef of ``entries`` whose snapshot the caller provides (RUN adopts its
    upper dir): the tar is made only to be hashed (its diff_id), nothing is written.
    ``presorted``: as for ``write_layer``."""
    from ..layer.tar import Discard, write_layer

    info = write_layer(entries, Discard(), compression="uncompressed",
                       mtime_clamp=session.opts.source_date_epoch, presorted=presorted)
    return LayerRef(digest=None, diff_id=Digest.parse(str(info.diff_id)), size=0, media_type="")


def hash_records(session: StageSession | BuildSession, records: Iterable[Any]) -> LayerRef:
    """:func:`hash_only` for members already framed as tar records in layer order
    (``builder.layer.whiteout.upper_records``)."""
    from ..layer.tar import Discard, write_records

    info = write_records(records, Discard(), compression="uncompressed")
    return LayerRef(digest=None, diff_id=Digest.parse(str(info.diff_id)), size=0, media_type="")


LAYER_PROGRESS_FROM = 8 << 20   # a layer reports its bytes once it is this large
LAYER_PROGRESS_EVERY = 4 << 20


class _Reporting:
    """The layer writer's output, forwarded (every attribute) to ``inner``; the bytes written
    are reported as ``BlobProgress`` (action ``layer``, total 0: not known before the end) once
    the layer passes :data:`LAYER_PROGRESS_FROM`, then every :data:`LAYER_PROGRESS_EVERY`;
    :meth:`finish` sends the last report. Small layers send nothing."""

    _ids = itertools.count(1)

    def __init__(self, inner: Any, emit: Callable[[BlobProgress], None]) -> None:
        self._inner = inner
        self._emit = emit
        self._id = f"layer-{next(self._ids)}"
        self.done = 0
        self._next = LAYER_PROGRESS_FROM

    def write(self, data: Any) -> Any:
        n = self._inner.write(data)
        self.done += len(data)
        if self.done >= self._next:
            self._next = self.done + LAYER_PROGRESS_EVERY
            self._emit(BlobProgress("layer", self._id, "", self.done, 0))
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def finish(self) -> None:
        if self._next > LAYER_PROGRESS_FROM:  # reported at least once
            self._emit(BlobProgress("layer", self._id, "", self.done, self.done, finished=True))


def _gnu_tar() -> str | None:
    """GNU tar, when pybuild runs as root (it then restores owners, modes, times and xattrs
    exactly as pybuild's extractor does, in C, without taking the GIL from the tar writer)."""
    import os
    import shutil

    return shutil.which("tar") if os.geteuid() == 0 else None


def _write_reported(session: StageSession | BuildSession, write: Callable[[Any, Any], Any], tee: Any,
                    lazy: bool) -> Any:
    """``write(out, tee)`` where ``out`` is a new store blob (committed when ``write`` returns)
    or, for a ``lazy`` layer, a sink that keeps nothing; either way the bytes are reported as
    :class:`_Reporting` progress. Returns what ``write`` returned; its exceptions propagate
    (an unfinished blob is discarded by the store's ingest)."""
    if lazy:
        from ..layer.tar import Discard

        out = _Reporting(Discard(), session.emit)
        info = write(out, tee)
    else:
        with session.store.blobs.ingest() as w:
            out = _Reporting(w, session.emit)
            info = write(out, tee)
    out.finish()
    return info


def _store(session: StageSession | BuildSession, write: Callable[[Any, Any], Any], unpack: bool, lazy: bool = False,
           watch: _Marked | None = None, linking: Linking | None = None) -> LayerRef:
    """Run ``write(blob_writer, tee)`` into a new store blob (tee None unless ``unpack``); with
    ``lazy``, into nothing, the tee being the only output (StoreError if it fails).

    The tee goes to pybuild's extractor (a thread) for a lazy layer, whose snapshot is the
    layer; for an eager one, whose snapshot only saves the next RUN an extraction, to the
    ``linking`` linker when it has a snapshot to link from, else to GNU tar when it can be used
    (``_gnu_tar``), unless ``watch`` saw a whiteout-like name."""
    if not unpack:
        return _layer_ref(_write_reported(session, write, None, False))
    import os
    import shutil
    import tempfile
    import threading
    from pathlib import Path

    from ..layer.extract import extract_layer

    dest = Path(tempfile.mkdtemp(prefix="snap-", dir=session.tmp))
    linker = linking.begin(dest, always=lazy) if linking is not None else None
    if linker is not None:
        return _store_linked(session, write, dest, linker, linking, lazy)  # type: ignore[arg-type]
    rfd, wfd = os.pipe()
    try:
        import fcntl

        fcntl.fcntl(wfd, 1031, 1 << 20)  # F_SETPIPE_SZ: 1 MiB of slack between the two sides
    except OSError:
        pass
    reader, writer = os.fdopen(rfd, "rb"), os.fdopen(wfd, "wb", buffering=0)
    outcome: dict[str, Any] = {}

    def unpack_stream() -> None:
        try:
            extract_layer(reader, dest, mode="overlay", compression=None)
            outcome["ok"] = True
        except BaseException as exc:  # reported by leaving the snapshot out
            outcome["error"] = exc
        finally:
            reader.close()

    tar = None if lazy else _gnu_tar()
    proc = None
    if tar is not None:
        import subprocess

        try:
            proc = subprocess.Popen([tar, "-x", "-f", "-", "-C", str(dest), "--numeric-owner", "--same-owner",
                                     "--preserve-permissions", "--xattrs", "--xattrs-include=*"],
                                    stdin=reader, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    close_fds=True)
        except OSError:
            proc = None
        reader.close()
        if proc is None:
            reader = None  # type: ignore[assignment]  # closed: a fresh pipe is made below
    if proc is None:
        if reader is None:
            rfd, wfd2 = os.pipe()  # tar could not start: a fresh pipe for the extractor
            writer.close()
            reader, writer = os.fdopen(rfd, "rb"), os.fdopen(wfd2, "wb", buffering=0)
        thread = threading.Thread(target=unpack_stream, name="layer-unpack", daemon=True)
        thread.start()
    try:
        info = _write_reported(session, write, writer, lazy)
    finally:
        writer.close()
        if proc is not None:
            rc = proc.wait()
            if rc == 0 and not (watch is not None and watch.seen):
                outcome["ok"] = True
            else:
                outcome["error"] = f"tar exited {rc}" if rc else "a whiteout-like name"
        else:
            thread.join()
    layer = _layer_ref(info, lazy)
    error: Any = outcome.get("error")
    if outcome.get("ok"):
        try:
            session.snapshots.adopt(layer.diff_id, dest, linking.extra() if linking is not None else None)
            if linking is not None:
                linking.done(layer.diff_id)
            return layer
        except Exception as exc:
            error = exc
    shutil.rmtree(dest, ignore_errors=True)
    if lazy:
        from ..errors import StoreError

        raise StoreError(f"cannot unpack layer {layer.diff_id} into the snapshot store: {error}")
    return layer


def _store_linked(session: StageSession | BuildSession, write: Callable[[Any, Any], Any], dest: Any,
                  linker: SnapshotLinker, linking: Linking, lazy: bool = False) -> LayerRef:
    """:func:`_store` of a layer whose snapshot ``linker`` makes in ``dest`` (linking from the
    step's previous snapshot). A failure of the linker only costs the snapshot of an eager
    layer; for a ``lazy`` one (no blob: the snapshot is the layer) it raises StoreError."""
    import shutil

    try:
        info = _write_reported(session, write, linker, lazy)
    finally:
        linker.close()
    layer = _layer_ref(info, lazy)
    try:
        if session.snapshots.get(layer.diff_id) is None:
            linker.finish()
            session.snapshots.adopt(layer.diff_id, dest, linking.extra())
        linking.done(layer.diff_id)
    except Exception as exc:  # eager: the snapshot is dropped, a RUN unpacks the blob instead
        if lazy:
            from ..errors import StoreError

            raise StoreError(f"cannot unpack layer {layer.diff_id} into the snapshot store: {exc}") from exc
    finally:
        shutil.rmtree(linker.stage.decode("utf-8", "surrogateescape"), ignore_errors=True)
        shutil.rmtree(dest, ignore_errors=True)
    return layer


def _layer_ref(info: Any, lazy: bool = False) -> LayerRef:
    diff_id = Digest.parse(str(info.diff_id))
    if lazy:
        return LayerRef(digest=None, diff_id=diff_id, size=0, media_type="")
    return LayerRef(digest=Digest.parse(str(info.digest)), diff_id=diff_id, size=info.size, media_type=info.media_type)


def empty_layer(session: Any) -> LayerRef:
    """The layer of a RUN, COPY, ADD or WORKDIR (other than ``/``) that changed nothing: a tar
    holding only its end-of-archive blocks (diff_id sha256:5f70bf18...). BuildKit keeps such a
    layer in the image, its history entry not marked empty_layer: the Dockerfile frontend
    commits these instructions ``withLayer`` (dockerfile2llb/convert.go commitToHistory) and
    every op's snapshot is one layer of the chain, empty diff or not."""
    return store_layer(session, [])


def record_to_layer(layer: dict[str, Any] | None) -> LayerRef | None:
    """The LayerRef of a cache record's layer; lazy (no digest) when the record names none."""
    if layer is None:
        return None
    if not layer.get("digest"):
        return LayerRef(None, Digest.parse(layer["diff_id"]), 0, "")
    return LayerRef(Digest.parse(layer["digest"]), Digest.parse(layer["diff_id"]), int(layer["size"]),
                    layer["media_type"])


def layer_to_record(layer: LayerRef | None) -> dict[str, Any] | None:
    """A cache record's layer: ``{"digest","diff_id","size","media_type"}``, or ``{"diff_id"}``
    alone for a lazy layer (its snapshot is the layer until a blob is made)."""
    if layer is None:
        return None
    if layer.digest is None:
        return {"diff_id": str(layer.diff_id)}
    return {"digest": str(layer.digest), "diff_id": str(layer.diff_id), "size": layer.size,
            "media_type": layer.media_type}


def materialize(session: StageSession | BuildSession, layer: LayerRef) -> LayerRef:
    """``layer`` with a blob: itself when it has one; else the blob is made from its snapshot
    (the overlay-format directory, walked as a RUN's upper dir is: same entries, same tar) in
    the build's compression, its diff_id checked against the recorded one (or the blob
    :func:`store_layer_soon` started is waited for). :func:`record_blobs` later rewrites the
    build's cache records to name it. Raises StoreError when the snapshot is gone or no longer
    gives the same tar. Thread-safe (stages may run in threads): two callers of one layer may
    both make the blob, which is content-addressed: the same bytes land once."""
    if layer.digest is not None:
        return layer
    done: LayerRef | None
    with session.lock:
        done = session.materialized.get(layer.diff_id)
        job = session.blob_jobs.get(layer.diff_id) if done is None else None
    if done is None:
        done = _make_blob(session, layer) if job is None else job.result()
        assert isinstance(done, LayerRef)
        with session.lock:
            session.materialized[layer.diff_id] = done
            session.blob_jobs.pop(layer.diff_id, None)
    return done


_PENDING_LIMIT = 4  # layers whose blob is still being finished (each holds a few MiB of buffers)


def store_layer_soon(session: StageSession | BuildSession, entries: Iterable[Any], *,
                     presorted: bool = False) -> LayerRef:
    """:func:`store_layer` whose end runs in the background: returns a lazy LayerRef (its
    diff_id) once every member is framed, hashed and read, while a helper thread still
    compresses and writes the blob; the build's background worker then commits it (fsync,
    rename) and :func:`materialize` collects it. Once this returns no source file is read
    again (a RUN's upper dir may be adopted as the snapshot). At most ``_PENDING_LIMIT`` are
    pending: a further one waits for the oldest. ``presorted``: as for ``write_layer``."""
    from ..layer.tar import write_layer_detached

    opts = session.opts
    return _soon(session, lambda w: write_layer_detached(
        entries, w, compression=opts.compression, level=opts.compression_level,
        mtime_clamp=opts.source_date_epoch, presorted=presorted))


def store_records_soon(session: StageSession | BuildSession, records: Iterable[Any]) -> LayerRef:
    """:func:`store_layer_soon` for members already framed as tar records in layer order
    (``builder.layer.whiteout.upper_records``, which applies the build's mtime clamp)."""
    from ..layer.tar import write_records_detached

    opts = session.opts
    return _soon(session, lambda w: write_records_detached(records, w, compression=opts.compression,
                                                           level=opts.compression_level))


def _soon(session: StageSession | BuildSession, start: Callable[[Any], tuple[Any, Callable[[], Any]]]) -> LayerRef:
    """``start(blob_writer) -> (diff_id, finish)`` into a new store blob, its ``finish`` and
    commit handed to the background worker (see :func:`store_layer_soon`)."""
    import sys

    with session.lock:
        pending = list(session.blob_jobs.values())
    if len(pending) >= _PENDING_LIMIT:
        pending[0].result()
    ingest = session.store.blobs.ingest()
    w = ingest.__enter__()
    try:
        diff_id, finish = start(w)
    except BaseException:
        if not ingest.__exit__(*sys.exc_info()):
            raise
        raise

    def complete() -> LayerRef:
        try:
            info = finish()
        except BaseException:
            ingest.__exit__(*sys.exc_info())  # the temporary blob is removed
            raise
        ingest.__exit__(None, None, None)     # verified, fsynced, renamed into place
        return _layer_ref(info)

    layer = LayerRef(digest=None, diff_id=Digest.parse(str(diff_id)), size=0, media_type="")
    with session.lock:
        if layer.diff_id not in session.blob_jobs and layer.diff_id not in session.materialized:
            session.blob_jobs[layer.diff_id] = session.blob_executor().submit(complete)
            return layer
    complete()  # the same layer is already on its way: finish this copy here (same bytes)
    return layer


def record_blobs(session: StageSession | BuildSession) -> None:
    """Rewrite every cache record this build used or made that names a lazy layer whose blob
    now exists, so later builds find the blob (records are atomic files; a crash before this
    leaves valid lazy records). Called once all stages are done."""
    from ..store.cache import CacheRecord

    for diff_id, keys in list(session.lazy_keys.items()):
        done = session.materialized.get(diff_id)
        if done is None:
            continue
        for key in keys:
            rec = session.cache.get(key)
            if rec is not None and rec.layer is not None and not rec.layer.get("digest"):
                session.cache.put(CacheRecord(key, layer_to_record(done), rec.extra))
        del session.lazy_keys[diff_id]


def _make_blob(session: StageSession | BuildSession, layer: LayerRef) -> LayerRef:
    from ..errors import StoreError
    from ..layer.tar import write_layer, write_records
    from ..layer.whiteout import NameClash, upper_entries, upper_records

    fs = session.snapshots.get(layer.diff_id)
    if fs is None:
        raise StoreError(f"layer {layer.diff_id} has neither a blob nor an unpacked snapshot (was the store pruned "
                         "during the build?)")
    opts = session.opts

    def check(info: Any) -> None:
        if str(info.diff_id) != str(layer.diff_id):
            raise StoreError(f"snapshot of layer {layer.diff_id} gives a different tar ({info.diff_id}): "
                             "it changed after it was made")

    try:
        with session.store.blobs.ingest() as w:
            info = write_records(upper_records(fs, mtime_clamp=opts.source_date_epoch), w,
                                 compression=opts.compression, level=opts.compression_level)
            check(info)
    except NameClash:  # two members with one name: the last one wins, as upper_entries has it
        with session.store.blobs.ingest() as w:
            info = write_layer(upper_entries(fs), w, compression=opts.compression, level=opts.compression_level,
                               mtime_clamp=opts.source_date_epoch)
            check(info)
    return _layer_ref(info)


def materialize_state(session: StageSession | BuildSession, state: ImageState) -> ImageState:
    """``state`` with every lazy layer given its blob (:func:`materialize`)."""
    if all(layer.digest is not None for layer in state.layers):
        return state
    from dataclasses import replace

    return replace(state, layers=tuple(materialize(session, layer) for layer in state.layers))


def _note_lazy(session: StageSession | BuildSession, key: str, layer: LayerRef | None) -> None:
    if layer is not None and layer.digest is None:
        with session.lock:
            session.lazy_keys.setdefault(layer.diff_id, []).append(key)


class CacheMiss:
    """Returned by :func:`cache_lookup` when no usable record exists."""


MISS = CacheMiss()


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What a step produced: its layer (None: no layer) and when it was first built. Reusing
    the recorded time on a cache hit keeps a fully cached rebuild's image digest unchanged."""

    layer: LayerRef | None
    created: float


def cache_lookup(session: StageSession | BuildSession, key: str) -> "StepOutcome | CacheMiss":
    """The outcome recorded for ``key``, or MISS. A record whose blob left the store is a miss;
    so is a lazy record (no blob yet) whose snapshot is gone.
    After a local miss, the imported caches (``session.remote_caches``) are asked: a hit there
    pulls the layer blob (digest verified) and saves the record locally. A hit appends ``key``
    to ``session.used_keys`` (for ``--cache-to``)."""
    rec = session.cache.get(key)
    layer = record_to_layer(rec.layer) if rec is not None else None
    if layer is not None:  # a prune running now keeps what this build is about to reuse
        session.store.pin([str(x) for x in (layer.digest, layer.diff_id) if x is not None])
    if rec is None or (layer is not None and not _present(session, layer)):
        if not getattr(session, "remote_caches", None):
            return MISS
        from .remotecache import lookup_remote

        rec = lookup_remote(session, key)
        if rec is None:
            return MISS
        layer = record_to_layer(rec.layer)
    if hasattr(session, "used_keys"):
        session.used_keys.append(key)
    _note_lazy(session, key, layer)
    return StepOutcome(layer, float(rec.extra.get("time", 0.0)))


def _present(session: StageSession | BuildSession, layer: LayerRef) -> bool:
    if layer.digest is not None:
        return bool(session.store.blobs.has(layer.digest))
    return session.snapshots.get(layer.diff_id) is not None


def cache_store(session: StageSession | BuildSession, key: str, layer: LayerRef | None, created_by: str, *,
                counted: bool = False) -> StepOutcome:
    """Record a freshly built step; returns its outcome (created now). ``counted``: the step
    was already noted as built (:func:`note_built`)."""
    import time

    from ..store.cache import CacheRecord

    now = time.time()
    session.cache.put(CacheRecord(key, layer_to_record(layer), {"created_by": created_by, "time": now}))
    if not counted:
        note_built(session, key)
    _note_lazy(session, key, layer)
    return StepOutcome(layer, now)


def note_built(session: StageSession | BuildSession, key: str) -> None:
    """Count the step of ``key`` as built by this stage (its used keys and its misses)."""
    if hasattr(session, "used_keys"):
        session.used_keys.append(key)
    if hasattr(session, "misses"):
        session.misses.append(key)


def commit_step(session: StageSession | BuildSession, state: ImageState, step: Any, outcome: StepOutcome, key: str) -> ImageState:
    """``state`` plus the outcome's layer and the step's history entry. History times are
    SOURCE_DATE_EPOCH when set, else when the step was first built."""
    from dataclasses import replace

    from .image import timestamp
    from .state import STEP_COMMENT, History

    from .cachekey import step_key

    epoch = session.opts.source_date_epoch
    created = timestamp(epoch if epoch is not None else outcome.created)
    # The chain continues from what the step produced: a step that was re-run (--no-cache,
    # --no-cache-filter) and made different content changes every key after it, including
    # the key COPY --from uses for this stage. A cache hit yields the same diff_id, so fully
    # cached rebuilds are unaffected.
    if outcome.layer is not None:
        key = step_key(key, "OUT", str(outcome.layer.diff_id))
    layer = outcome.layer
    if layer is None and getattr(step, "makes_layer", True):
        layer = empty_layer(session)
    new = state.with_layer(layer, History(step.created_by, layer is None, created, STEP_COMMENT), key)
    return replace(new, clock=max(state.clock, outcome.created))
