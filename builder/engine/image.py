"""Assemble the final image of a stage: config JSON, manifest JSON, written to the store.

The JSON is produced once, deterministically (fixed key order, compact separators): the same
state and ``created`` give the same bytes, hence the same digests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..digest import Digest
from ..oci import mediatypes as mt
from .state import ImageState

if TYPE_CHECKING:
    from ..store.layout import Store

MANIFEST_MEDIA_TYPE = mt.OCI_MANIFEST
CONFIG_MEDIA_TYPE = mt.OCI_CONFIG


@dataclass(frozen=True, slots=True)
class WrittenImage:
    """An image manifest and its config as stored: digests, size and the exact bytes."""

    manifest_digest: Digest
    manifest_size: int
    config_digest: Digest
    manifest_bytes: bytes
    config_bytes: bytes

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": MANIFEST_MEDIA_TYPE, "digest": str(self.manifest_digest), "size": self.manifest_size}


def timestamp(epoch: float | None) -> str:
    """RFC 3339 UTC like BuildKit: whole seconds print without a fraction, others with
    nanoseconds. None means now."""
    import time  # not datetime: ~1 ms of a cached build's start

    if epoch is None:
        epoch = time.time()
    whole = int(epoch)
    t = time.gmtime(whole)
    text = f"{t.tm_year}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    if epoch == whole:
        return text + "Z"
    nanos = int(round((epoch - whole) * 1e9))
    return f"{text}.{min(nanos, 999_999_999):09d}Z"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def config_json(state: ImageState, created: str) -> bytes:
    """The image config (OCI image config with Docker's container-config fields)."""
    plat = state.platform
    out: dict[str, Any] = {}
    out["created"] = created
    if state.author:
        out["author"] = state.author
    out["architecture"] = plat.architecture
    out["os"] = plat.os
    for k, v in state.extra:
        if k not in out:
            out[k] = v
    if getattr(plat, "variant", None):
        out["variant"] = plat.variant
    out["config"] = state.config.to_config()
    out["rootfs"] = {"type": "layers", "diff_ids": [str(layer.diff_id) for layer in state.layers]}
    out["history"] = [h.to_json() for h in state.history]
    return _dumps(out)


def manifest_json(config_digest: Digest, config_size: int, state: ImageState,
                  annotations: dict[str, str] | None = None) -> bytes:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": str(config_digest), "size": config_size},
        "layers": [layer.descriptor() for layer in state.layers],
    }
    if annotations:
        doc["annotations"] = dict(sorted(annotations.items()))
    return _dumps(doc)


EMPTY_LAYER_HISTORY = "pybuild: empty layer (an OCI image manifest lists at least one layer)"


def with_empty_layer(store: Store, state: ImageState, created: str) -> ImageState:
    """``state`` itself when it has layers; else ``state`` with one empty layer (a gzip'd tar
    holding only its end-of-archive blocks, always the same blob) written into ``store`` and
    a history entry for it placed first. The OCI image-manifest schema requires at least one
    layer (``minItems: 1``); BuildKit would write ``"layers": []`` for a metadata-only image."""
    if state.layers:
        return state
    import io
    from dataclasses import replace

    from ..layer.tar import write_layer
    from .state import History, LayerRef

    buf = io.BytesIO()
    info = write_layer([], buf, compression="gzip")
    store.blobs.put_bytes(buf.getvalue())
    layer = LayerRef(digest=Digest.parse(str(info.digest)), diff_id=Digest.parse(str(info.diff_id)),
                     size=info.size, media_type=info.media_type)
    first = History(created_by=EMPTY_LAYER_HISTORY, created=created)
    return replace(state, layers=(layer,), history=(first,) + state.history)


def write_image(store: Store, state: ImageState, created: str,
                annotations: dict[str, str] | None = None) -> WrittenImage:
    """Write config and manifest blobs into ``store``; layers must already be there (an image
    without any gets the empty layer of :func:`with_empty_layer`). ``annotations`` go into the
    manifest (``--annotation``)."""
    state = with_empty_layer(store, state, created)
    cfg = config_json(state, created)
    cfg_digest = store.blobs.put_bytes(cfg)
    man = manifest_json(cfg_digest, len(cfg), state, annotations)
    man_digest = store.blobs.put_bytes(man)
    return WrittenImage(man_digest, len(man), cfg_digest, man, cfg)


INDEX_MEDIA_TYPE = mt.OCI_INDEX


@dataclass(frozen=True, slots=True)
class WrittenIndex:
    """An OCI image index written into the store (one manifest per platform)."""

    digest: Digest
    size: int
    data: bytes


def index_json(images: list[tuple[WrittenImage, Any]], annotations: dict[str, str] | None = None,
               descriptor_annotations: list[dict[str, str]] | None = None) -> bytes:
    """An OCI image index naming each ``(image, platform)`` in the given order, each entry
    with its platform (``architecture``, ``os``, ``variant`` when there is one) and, from
    ``descriptor_annotations`` (one dict per image, same order), its descriptor's annotations;
    and the index's ``annotations`` when given."""
    manifests = []
    for i, (written, plat) in enumerate(images):
        p: dict[str, Any] = {"architecture": plat.architecture, "os": plat.os}
        if getattr(plat, "variant", ""):
            p["variant"] = plat.variant
        entry: dict[str, Any] = {**written.descriptor(), "platform": p}
        extra = descriptor_annotations[i] if descriptor_annotations else None
        if extra:
            entry["annotations"] = dict(sorted(extra.items()))
        manifests.append(entry)
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": manifests}
    if annotations:
        doc["annotations"] = dict(sorted(annotations.items()))
    return _dumps(doc)


def write_index(store: Store, images: list[tuple[WrittenImage, Any]],
                annotations: dict[str, str] | None = None,
                descriptor_annotations: list[dict[str, str]] | None = None) -> WrittenIndex:
    """Write :func:`index_json` of ``images`` (already in ``store``) into ``store``."""
    data = index_json(images, annotations, descriptor_annotations)
    digest = store.blobs.put_bytes(data)
    return WrittenIndex(digest, len(data), data)
