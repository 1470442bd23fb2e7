"""BuildSession: what every step handler may use during one build.

Owns the temp directory of the build (removed by :meth:`close`), the lazily opened build
context, the snapshot store and the cache records. Handlers never print; they emit events.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .events import EventSink, Message
from .options import BuildOptions
from .state import ImageState, LayerRef


@dataclass
class StageResult:
    """A finished stage: its final state (for COPY --from / FROM stage / the target) and its
    variable scope (a stage built FROM this one inherits it)."""

    index: int
    name: str | None
    state: ImageState
    scope: Any = None


class BuildSession:
    def __init__(self, opts: BuildOptions, store: Any, on_event: EventSink) -> None:
        from ..store.cache import CacheStore
        from ..store.snapshots import Snapshots

        self.opts = opts
        self.store = store
        self.emit = on_event
        self.cancel = threading.Event()
        self.cache = CacheStore(store.root)
        self.snapshots = Snapshots(store.root / "snapshots")
        self.stages: dict[int, StageResult] = {}
        tmp_parent = store.root / "tmp"
        tmp_parent.mkdir(parents=True, exist_ok=True)
        from ..store.stale import owned_prefix

        self.tmp = Path(tempfile.mkdtemp(prefix=owned_prefix("build"), dir=tmp_parent))
        self._context: Any = None
        self._flattened: dict[str, Path] = {}
        self._warned: set[str] = set()
        self.platform: Any = None  # set by the build once the target platform is known
        # unpack new COPY layers while writing them (set per stage: only when a RUN follows)
        self.unpack_layers = False
        self.remote_caches: list[Any] = []  # --cache-from sources (builder.engine.remotecache.LazyCache)
        self.used_keys: list[str] = []  # cache keys hit or stored by this build, in order (for --cache-to)
        self.misses: list[str] = []  # keys of steps built (not cached) by this build, in order
        self.remote_notes: dict[str, list[str]] = {}  # key -> what --cache-from sources lacked
        # cache mount id -> MountSpec used by this build's RUNs; None unless a --cache-to exports mounts
        self.cache_mounts: dict[str, Any] | None = None
        from .named import NamedContexts

        self.named = NamedContexts(opts.named_contexts)
        self._images: dict[str, Any] = {}
        self.git_checkouts: dict[Any, Any] = {}  # ADD GITURL sources fetched (builder.engine.gitsource)
        # lazy layers (see builder.engine.layers): whether the stage being built makes them,
        # the cache keys naming each lazy layer, the blobs made for them so far
        self.lazy_layers = False
        self.lazy_keys: dict[Any, list[str]] = {}
        self.materialized: dict[Any, LayerRef] = {}

    # -- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        """Remove the build's temp directory (mounts are released by their owners first)."""
        shutil.rmtree(self.tmp, ignore_errors=True)

    def note(self, text: str) -> None:
        self.emit(Message("info", text))

    def warn_once(self, text: str) -> None:
        if text not in self._warned:
            self._warned.add(text)
            self.emit(Message("warning", text))

    # -- build context ----------------------------------------------------------------------
    @property
    def context(self) -> Any:
        if self._context is None:
            from .context import BuildContext
            from .dockerignore import load_ignore

            self._context = BuildContext(self.opts.context, load_ignore(self.opts.context, self.opts.dockerfile))
        return self._context

    # -- named contexts and images ---------------------------------------------------------------
    def named_context(self, name: str) -> Any | None:
        """The ``--build-context`` that replaces ``name`` (an image name), or None."""
        return self.named.lookup(name)

    def named_build_context(self, item: Any) -> Any:
        """The BuildContext of a directory named context."""
        return self.named.build_context(item)

    def resolve_image(self, ref_text: str, platform: Any = None) -> Any:
        """The stored base image ``ref_text`` names, after named-context substitution (an image
        named context; a directory one raises DockerfileError here). Resolved once per build."""
        plat = platform if platform is not None else self.platform
        key = f"{ref_text}\0{plat}"
        if key not in self._images:
            from .base import resolve_base

            named = self.named_context(ref_text)
            target = ref_text
            if named is not None:
                if named.image is None:
                    from ..errors import DockerfileError

                    raise DockerfileError(f"build context {named.name!r} is a directory, not an image")
                target = named.image
            self._images[key] = resolve_base(target, store=self.store, platform=plat, pull=self.opts.pull,
                                             insecure=self.opts.insecure_registries, notify=self.note,
                                             on_progress=self.emit)
        return self._images[key]

    # -- layers on disk ---------------------------------------------------------------------
    def _open_blob(self, layer: LayerRef):
        def open_blob() -> Any:
            if layer.digest is None:
                from ..errors import StoreError

                raise StoreError(f"the snapshot of lazy layer {layer.diff_id} is gone (the store was pruned)")
            return self.store.blobs.open(layer.digest)

        return open_blob

    def lowerdirs(self, state: ImageState) -> list[Path]:
        """Unpacked layer directories of ``state``, top-most first (unpacking once per layer)."""
        from ..layer.compress import compression_for_media_type

        self.store.pin([str(x) for l in state.layers for x in (l.digest, l.diff_id) if x is not None])
        dirs = [self.snapshots.ensure(l.diff_id, self._open_blob(l),
                                      compression_for_media_type(l.media_type) if l.digest is not None else None)
                for l in state.layers]
        dirs.reverse()
        return dirs

    def view(self, state: ImageState) -> Any:
        from ..store.rootview import RootView

        return RootView(self.lowerdirs(state))

    def flatten(self, state: ImageState) -> Path:
        """A plain directory holding ``state``'s root filesystem (layers applied in order),
        made once per build and removed with the build's temp dir. Used by bind mounts."""
        from ..layer.compress import compression_for_media_type
        from ..layer.extract import extract_layers

        key = ",".join(str(l.diff_id) for l in state.layers)
        if key not in self._flattened:
            from .layers import materialize_state

            state = materialize_state(self, state)
            dest = self.tmp / f"flat-{len(self._flattened)}"
            dest.mkdir()
            streams = [(self.store.blobs.open(l.digest), compression_for_media_type(l.media_type))
                       for l in state.layers]
            try:
                extract_layers(streams, dest)
            finally:
                for f, _ in streams:
                    f.close()
            self._flattened[key] = dest
        return self._flattened[key]
