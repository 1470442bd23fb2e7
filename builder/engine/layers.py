"""Turn layer entries into a stored layer blob, with cache records.

One function both COPY-like steps and RUN use: entries in, :class:`LayerRef` out (or None when
there is nothing to write).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ..digest import Digest
from .state import LayerRef


def store_layer(session: Any, entries: Iterable[Any], *, unpack: bool = False) -> LayerRef:
    """Write ``entries`` as one layer into the store (tar + compression + hashing in one pass).

    ``unpack``: also unpack the layer into the snapshot store while it is written (the tar
    stream is teed to an extractor thread), so a following RUN need not decompress and
    extract it again. A failure of that side path only costs the snapshot, never the layer."""
    from ..layer.tar import write_layer

    opts = session.opts
    return _store(session, lambda out, tee: write_layer(
        entries, out, compression=opts.compression, level=opts.compression_level,
        mtime_clamp=opts.source_date_epoch, tee=tee), unpack)


def store_records(session: Any, records: Iterable[Any], *, unpack: bool = False) -> LayerRef:
    """:func:`store_layer` for members already framed as tar records (``write_records``; the
    producer applies the build's mtime clamp itself)."""
    from ..layer.tar import write_records

    compression, level = session.opts.compression, session.opts.compression_level
    return _store(session, lambda out, tee: write_records(records, out, compression=compression, level=level,
                                                          tee=tee), unpack)


def _store(session: Any, write: Callable[[Any, Any], Any], unpack: bool) -> LayerRef:
    """Run ``write(blob_writer, tee)`` into a new store blob (tee None unless ``unpack``)."""
    if not unpack:
        with session.store.blobs.ingest() as w:
            info = write(w, None)
        return _layer_ref(info)
    import os
    import shutil
    import tempfile
    import threading
    from pathlib import Path

    from ..layer.extract import extract_layer

    dest = Path(tempfile.mkdtemp(prefix="snap-", dir=session.tmp))
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

    thread = threading.Thread(target=unpack_stream, name="layer-unpack", daemon=True)
    thread.start()
    try:
        with session.store.blobs.ingest() as w:
            info = write(w, writer)
    finally:
        writer.close()
        thread.join()
    layer = _layer_ref(info)
    if outcome.get("ok"):
        try:
            session.snapshots.adopt(layer.diff_id, dest)
            return layer
        except Exception:
            pass
    shutil.rmtree(dest, ignore_errors=True)
    return layer


def _layer_ref(info: Any) -> LayerRef:
    return LayerRef(digest=Digest.parse(str(info.digest)), diff_id=Digest.parse(str(info.diff_id)),
                    size=info.size, media_type=info.media_type)


def record_to_layer(layer: dict[str, Any] | None) -> LayerRef | None:
    if layer is None:
        return None
    return LayerRef(Digest.parse(layer["digest"]), Digest.parse(layer["diff_id"]), int(layer["size"]),
                    layer["media_type"])


def layer_to_record(layer: LayerRef | None) -> dict[str, Any] | None:
    if layer is None:
        return None
    return {"digest": str(layer.digest), "diff_id": str(layer.diff_id), "size": layer.size,
            "media_type": layer.media_type}


class CacheMiss:
    """Returned by :func:`cache_lookup` when no usable record exists."""


MISS = CacheMiss()


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What a step produced: its layer (None: no layer) and when it was first built. Reusing
    the recorded time on a cache hit keeps a fully cached rebuild's image digest unchanged."""

    layer: LayerRef | None
    created: float


def cache_lookup(session: Any, key: str) -> "StepOutcome | CacheMiss":
    """The outcome recorded for ``key``, or MISS. A record whose blob left the store is a miss.
    After a local miss, the imported caches (``session.remote_caches``) are asked: a hit there
    pulls the layer blob (digest verified) and saves the record locally. A hit appends ``key``
    to ``session.used_keys`` (for ``--cache-to``)."""
    rec = session.cache.get(key)
    layer = record_to_layer(rec.layer) if rec is not None else None
    if layer is not None:  # a prune running now keeps what this build is about to reuse
        session.store.pin([str(layer.digest), str(layer.diff_id)])
    if rec is None or (layer is not None and not session.store.blobs.has(layer.digest)):
        if not getattr(session, "remote_caches", None):
            return MISS
        from .remotecache import lookup_remote

        rec = lookup_remote(session, key)
        if rec is None:
            return MISS
        layer = record_to_layer(rec.layer)
    if hasattr(session, "used_keys"):
        session.used_keys.append(key)
    return StepOutcome(layer, float(rec.extra.get("time", 0.0)))


def cache_store(session: Any, key: str, layer: LayerRef | None, created_by: str) -> StepOutcome:
    """Record a freshly built step; returns its outcome (created now)."""
    import time

    from ..store.cache import CacheRecord

    now = time.time()
    session.cache.put(CacheRecord(key, layer_to_record(layer), {"created_by": created_by, "time": now}))
    if hasattr(session, "used_keys"):
        session.used_keys.append(key)
    if hasattr(session, "misses"):
        session.misses.append(key)
    return StepOutcome(layer, now)


def commit_step(session: Any, state: Any, step: Any, outcome: StepOutcome, key: str) -> Any:
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
    new = state.with_layer(outcome.layer, History(step.created_by, outcome.layer is None, created, STEP_COMMENT),
                           key)
    return replace(new, clock=max(state.clock, outcome.created))
