"""Turn layer entries into a stored layer blob, with cache records.

One function both COPY-like steps and RUN use: entries in, :class:`LayerRef` out (or None when
there is nothing to write).
"""

from __future__ import annotations

from typing import Any, Iterable

from ..digest import Digest
from .state import LayerRef


def store_layer(session: Any, entries: Iterable[Any]) -> LayerRef:
    """Write ``entries`` as one layer into the store (tar + compression + hashing in one pass)."""
    from ..layer.tar import write_layer

    opts = session.opts
    with session.store.blobs.ingest() as w:
        info = write_layer(entries, w, compression=opts.compression, mtime_clamp=opts.source_date_epoch)
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


def cache_lookup(session: Any, key: str) -> "LayerRef | None | CacheMiss":
    """The layer recorded for ``key`` (None: the step made no layer), or MISS. A record whose
    blob has left the store is a miss."""
    rec = session.cache.get(key)
    if rec is None:
        return MISS
    layer = record_to_layer(rec.layer)
    if layer is not None and not session.store.blobs.has(layer.digest):
        return MISS
    return layer


def cache_store(session: Any, key: str, layer: LayerRef | None, created_by: str) -> None:
    import time

    from ..store.cache import CacheRecord

    session.cache.put(CacheRecord(key, layer_to_record(layer), {"created_by": created_by, "time": time.time()}))


def commit_step(session: Any, state: Any, step: Any, layer: LayerRef | None, key: str) -> Any:
    """``state`` plus ``layer`` (None: no layer) and the step's history entry."""
    from .image import timestamp
    from .state import STEP_COMMENT, History

    created = timestamp(session.opts.source_date_epoch)
    return state.with_layer(layer, History(step.created_by, layer is None, created, STEP_COMMENT), key)
