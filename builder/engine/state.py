"""The image a stage is building, as a frozen value passed from step to step."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..digest import Digest


@dataclass(frozen=True, slots=True)
class LayerRef:
    """One layer of an image: both digests explicit (compressed blob vs uncompressed tar).

    A lazy layer (``digest`` None, ``size`` 0, ``media_type`` "") has no blob yet: its
    snapshot in the store is the layer until :func:`builder.engine.layers.materialize` makes
    one."""

    digest: Digest | None
    diff_id: Digest
    size: int
    media_type: str

    def descriptor(self) -> dict[str, Any]:
        """The manifest descriptor; ValueError for a lazy layer (materialize it first)."""
        if self.digest is None:
            raise ValueError(f"layer {self.diff_id} has no blob yet")
        return {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}

    def blob(self) -> Digest:
        """The blob's digest; ValueError for a lazy layer (materialize it first)."""
        if self.digest is None:
            raise ValueError(f"layer {self.diff_id} has no blob yet")
        return self.digest


STEP_COMMENT = "buildkit.dockerfile.v0"  # what BuildKit writes in each step's history comment
INLINE_FIELD = "pybuild.cache.v1"  # the image config field of an inline cache (builder.engine.remotecache)


@dataclass(frozen=True, slots=True)
class History:
    """One entry of an image config's ``history`` (``empty_layer``: the step made no layer)."""

    created_by: str
    empty_layer: bool = False
    created: str | None = None
    comment: str | None = None
    author: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.created:
            out["created"] = self.created
        if self.author:
            out["author"] = self.author
        out["created_by"] = self.created_by
        if self.comment:
            out["comment"] = self.comment
        if self.empty_layer:
            out["empty_layer"] = True
        return out

    @classmethod
    def from_json(cls, h: dict[str, Any]) -> "History":
        return cls(created_by=h.get("created_by", ""), empty_layer=bool(h.get("empty_layer", False)),
                   created=h.get("created"), comment=h.get("comment"), author=h.get("author"))


@dataclass(frozen=True, slots=True)
class ImageState:
    """Layers (bottom first), history, the runtime config and the cache key so far.

    ``config`` is a :class:`builder.plan.state.ImageConfigState`; ``extra`` keeps top-level
    config fields of the base image we do not model (e.g. ``os.version``), copied through.
    ``base_digest`` is the manifest digest of the FROM image ("" for scratch).
    ``clock`` is the creation time (epoch seconds) of the newest step; the image's ``created``.
    """

    layers: tuple[LayerRef, ...]
    history: tuple[History, ...]
    config: Any
    platform: Any
    cache_key: str
    base_digest: str = ""
    author: str | None = None
    extra: tuple[tuple[str, Any], ...] = field(default=())
    clock: float = 0.0              # when the newest step of this image was first built
    inherited: int = 0              # how many of ``layers`` come from the base image (FROM)

    def with_layer(self, layer: LayerRef | None, history: History, cache_key: str) -> "ImageState":
        layers = self.layers + ((layer,) if layer is not None else ())
        return replace(self, layers=layers, history=self.history + (history,), cache_key=cache_key)
