"""BuildSession: what every step handler may use during one build; StageSession: the same
as one stage of one platform sees it.

The BuildSession owns the temp directory of the build (removed by :meth:`close`), the lazily
opened build context, the snapshot store and the cache records; it is shared by every stage
and platform and safe to use from several threads (its lazily made parts are made under a
lock). A StageSession adds what belongs to one stage alone (its platform, the keys it used,
whether its COPY layers are unpacked) and labels the events it emits with the stage and, in a
multi-platform build, the platform. Handlers never print; they emit events.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO

from .events import Event, EventSink, Message, StepFinished, StepOutput, StepStarted
from .options import BuildOptions
from .state import ImageState, LayerRef

if TYPE_CHECKING:
    from ..platform import Platform
    from ..sandbox.spare import Spares
    from ..store.rootview import RootView
    from .base import BaseImage
    from .context import BuildContext
    from ..store.cache import CacheStore
    from ..store.snapshots import Snapshots
    from ..store.layout import Store


@dataclass
class StageResult:
    """A finished stage: its final state (for COPY --from / FROM stage / the target) and its
    variable scope (a stage built FROM this one inherits it)."""

    index: int
    name: str | None
    state: ImageState
    scope: Any = None


class BuildSession:
    def __init__(self, opts: BuildOptions, store: Store, on_event: EventSink) -> None:
        from ..store.cache import CacheStore
        from ..store.snapshots import Snapshots

        self.opts = opts
        self.store = store
        self._sink = on_event
        self._emit_lock = threading.Lock()
        self.cancel = threading.Event()
        self.cache = CacheStore(store.root)
        self.snapshots = Snapshots(store.root / "snapshots", deferred_deletes=True)
        tmp_parent = store.root / "tmp"
        tmp_parent.mkdir(parents=True, exist_ok=True)
        from ..owners import make_owned_dir

        self.tmp = Path(make_owned_dir(tmp_parent, "build"))
        self._context: BuildContext | None = None
        self._flattened: dict[str, Path] = {}
        self._warned: set[str] = set()
        self.remote_notes: dict[str, list[str]] = {}  # key -> what --cache-from sources lacked
        self.remote_caches: list[Any] = []  # every platform's --cache-from sources (exports consult them)
        # cache mount id -> MountSpec used by this build's RUNs; None unless a --cache-to exports mounts
        self.cache_mounts: dict[str, Any] | None = None
        from .named import NamedContexts

        self.named = NamedContexts(opts.named_contexts)
        self._images: dict[str, BaseImage] = {}
        self.git_checkouts: dict[Any, Any] = {}  # ADD GITURL sources fetched (builder.engine.gitsource)
        # lazy layers (see builder.engine.layers): the cache keys naming each lazy layer, the
        # blobs made for them so far (whether a stage makes them is the StageSession's), the
        # blobs being made by the background worker (diff_id -> Future)
        self.lazy_keys: dict[Any, list[str]] = {}
        self.materialized: dict[Any, LayerRef] = {}
        self.blob_jobs: dict[Any, Any] = {}
        self.blob_worker: Any = None
        self._lock = threading.RLock()  # guards the lazily made parts and the emit sink
        self._key_locks: dict[str, threading.Lock] = {}
        self._spares: Spares | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        """End the spare sandbox init (if a RUN started one), wait for the layer blobs being
        finished and the redundant snapshot dirs being deleted in the background, then remove the build's temp directory (mounts are
        released by their owners first)."""
        if self._spares is not None:
            self._spares.close()
        if self.blob_worker is not None:
            self.blob_worker.shutdown(wait=True)  # pending blobs are finished (their data is read)
        self.snapshots.close()  # redundant upper dirs still being deleted in the background
        try:
            os.rmdir(self.tmp)  # a build whose steps were all cached left nothing in it
        except OSError:
            import shutil

            shutil.rmtree(self.tmp, ignore_errors=True)

    @property
    def spares(self) -> Spares:
        """The build's spare sandbox inits (:mod:`builder.sandbox.spare`; made on first use,
        ended by :meth:`close`)."""
        if self._spares is None:
            with self._lock:
                if self._spares is None:
                    from ..sandbox.spare import Spares, take_early

                    self._spares = take_early() or Spares()
        return self._spares

    def key_lock(self, key: str) -> threading.Lock:
        """The lock of one thing made once per build (an image resolved, a layer's blob, a
        flattened root): concurrent stages asking for the same ``key`` wait for the first."""
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def emit(self, event: Event) -> None:
        """Hand ``event`` to the build's sink, one event at a time (stages run in threads)."""
        with self._emit_lock:
            self._sink(event)

    @property
    def lock(self) -> threading.RLock:
        """The build's lock for its lazily made shared parts (lazy layers' blobs included)."""
        return self._lock

    def blob_executor(self) -> Any:
        """The one worker thread making layer blobs in the background (made on first use;
        :meth:`close` waits for its running job). Call with :attr:`lock` held."""
        if self.blob_worker is None:
            from .blobworker import BlobWorker

            self.blob_worker = BlobWorker()
        return self.blob_worker

    def note(self, text: str) -> None:
        self.emit(Message("info", text))

    def warn_once(self, text: str) -> None:
        with self._lock:
            if text in self._warned:
                return
            self._warned.add(text)
        self.emit(Message("warning", text))

    # -- build context ----------------------------------------------------------------------
    @property
    def context(self) -> BuildContext:
        if self._context is None:
            with self._lock:
                if self._context is None:
                    from .context import BuildContext
                    from .dockerignore import load_ignore

                    self._context = BuildContext(self.opts.context,
                                                 load_ignore(self.opts.context, self.opts.dockerfile))
        return self._context

    # -- named contexts and images ---------------------------------------------------------------
    def named_context(self, name: str) -> Any | None:
        """The ``--build-context`` that replaces ``name`` (an image name), or None."""
        return self.named.lookup(name)

    def named_build_context(self, item: Any) -> Any:
        """The BuildContext of a directory named context."""
        return self.named.build_context(item)

    def resolve_image(self, ref_text: str, platform: Platform) -> BaseImage:
        """The stored base image ``ref_text`` names for ``platform``, after named-context
        substitution (an image named context; a directory one raises DockerfileError here).
        Resolved once per build and platform (stages asking at once wait for the first)."""
        key = f"{ref_text}\0{platform}"
        with self.key_lock("image\0" + key):
            return self._resolve_image_locked(ref_text, platform, key)

    def _resolve_image_locked(self, ref_text: str, plat: Platform, key: str) -> BaseImage:
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
    def _open_blob(self, layer: LayerRef) -> Callable[[], BinaryIO]:
        def open_blob() -> BinaryIO:
            if layer.digest is None:
                from ..errors import StoreError

                raise StoreError(f"the snapshot of lazy layer {layer.diff_id} is gone (the store was pruned)")
            stream: BinaryIO = self.store.blobs.open(layer.digest)
            return stream

        return open_blob

    def lowerdirs(self, state: ImageState) -> list[Path]:
        """Unpacked layer directories of ``state``, top-most first (unpacking once per layer)."""
        from ..layer.compress import compression_for_media_type

        self.store.pin([str(x) for layer in state.layers for x in (layer.digest, layer.diff_id) if x is not None])
        dirs = [self.snapshots.ensure(layer.diff_id, self._open_blob(layer),
                                      compression_for_media_type(layer.media_type) if layer.digest is not None else None)
                for layer in state.layers]
        return self.snapshots.stack([layer.diff_id for layer in state.layers], dirs)  # implied dirs fixed up

    def view(self, state: ImageState) -> RootView:
        from ..store.rootview import RootView

        return RootView(self.lowerdirs(state))

    def flatten(self, state: ImageState) -> Path:
        """A plain directory holding ``state``'s root filesystem (layers applied in order),
        made once per build and removed with the build's temp dir. Used by bind mounts."""
        key = ",".join(str(layer.diff_id) for layer in state.layers)
        with self.key_lock("flat\0" + key):  # a second stage asking waits and reuses it
            return self._flatten_locked(key, state)

    def _flatten_locked(self, key: str, state: ImageState) -> Path:
        from ..layer.compress import compression_for_media_type
        from ..layer.extract import extract_layers

        if key not in self._flattened:
            from .layers import materialize_state

            state = materialize_state(self, state)
            import tempfile

            dest = Path(tempfile.mkdtemp(prefix="flat-", dir=self.tmp))
            streams = [(self.store.blobs.open(layer.blob()), compression_for_media_type(layer.media_type))
                       for layer in state.layers]
            try:
                extract_layers(streams, dest)
            finally:
                for f, _ in streams:
                    f.close()
            self._flattened[key] = dest
        return self._flattened[key]


class StageSession:
    """One stage of one platform's view of the build: the shared :class:`BuildSession`'s parts
    plus ``platform`` (the stage's), ``stages`` (the finished stages of this platform, by
    index: written by the scheduler only), ``remote_caches`` (this platform's imported caches),
    ``used_keys`` (cache keys this stage hit or stored, in order), ``misses``, ``unpack_layers``,
    ``lazy_layers`` and ``runs_after`` (the stage's RUN steps after the one being applied).
    Events emitted through it carry the stage name and ``platform_label`` ("" in a
    single-platform build)."""

    def __init__(self, shared: BuildSession, platform: Platform, stages: dict[int, StageResult],
                 remote_caches: list[Any], *, stage_name: str = "", platform_label: str = "") -> None:
        self.shared = shared
        self.platform = platform
        self.stages = stages
        self.remote_caches = remote_caches
        self.stage_name = stage_name
        self.platform_label = platform_label
        self.used_keys: list[str] = []
        self.misses: list[str] = []  # keys of this stage's steps that were built (not cached), in order
        # key -> (context path, TreeDigest lines) a built COPY hashed, for its miss explanation
        self.walked: dict[str, tuple[str, list[str]]] = {}
        self.unpack_layers = False
        self.lazy_layers = False  # whether this stage's new layers are lazy (builder.engine.layers)
        self.background_blobs = False  # whether its RUN layers' blobs are made by the background worker
        self.pending_run: Any = None  # a RUN whose layer is being framed (builder.engine.step_run.PendingRun)
        self.runs_after = 1  # RUN steps of this stage after the current one (set by the stage's loop)

    # -- the shared parts -----------------------------------------------------------------
    @property
    def opts(self) -> BuildOptions:
        return self.shared.opts

    @property
    def store(self) -> Store:
        return self.shared.store

    @property
    def cancel(self) -> threading.Event:
        return self.shared.cancel

    @property
    def cache(self) -> CacheStore:
        return self.shared.cache

    @property
    def snapshots(self) -> Snapshots:
        return self.shared.snapshots

    @property
    def spares(self) -> Spares:
        return self.shared.spares

    @property
    def tmp(self) -> Path:
        return self.shared.tmp

    @property
    def context(self) -> BuildContext:
        return self.shared.context

    @property
    def git_checkouts(self) -> dict[Any, Any]:
        return self.shared.git_checkouts

    @property
    def remote_notes(self) -> dict[str, list[str]]:
        return self.shared.remote_notes

    @property
    def cache_mounts(self) -> dict[str, Any] | None:
        return self.shared.cache_mounts

    @property
    def lazy_keys(self) -> dict[Any, list[str]]:
        return self.shared.lazy_keys

    @property
    def materialized(self) -> dict[Any, LayerRef]:
        return self.shared.materialized

    @property
    def blob_jobs(self) -> dict[Any, Any]:
        return self.shared.blob_jobs

    @property
    def lock(self) -> threading.RLock:
        return self.shared.lock

    def blob_executor(self) -> Any:
        return self.shared.blob_executor()

    def named_context(self, name: str) -> Any | None:
        return self.shared.named_context(name)

    def named_build_context(self, item: Any) -> Any:
        return self.shared.named_build_context(item)

    def resolve_image(self, ref_text: str, platform: Platform | None = None) -> BaseImage:
        """:meth:`BuildSession.resolve_image` for ``platform`` (default: this stage's). A pull or
        store failure becomes a DockerfileError (no span: the step that asked, FROM, COPY --from
        or RUN --mount from=, sets its own line), as it is for FROM; a full disk stays itself."""
        from ..errors import DockerfileError, NoSpaceError, ReferenceError_, RegistryError, StoreError

        try:
            return self.shared.resolve_image(ref_text, platform if platform is not None else self.platform)
        except NoSpaceError:
            raise
        except (RegistryError, ReferenceError_, StoreError) as exc:
            raise DockerfileError(exc.render()) from exc

    def key_lock(self, key: str) -> threading.Lock:
        return self.shared.key_lock(key)

    def note(self, text: str) -> None:
        self.shared.note(text)

    def warn_once(self, text: str) -> None:
        self.shared.warn_once(text)

    def lowerdirs(self, state: ImageState) -> list[Path]:
        return self.shared.lowerdirs(state)

    def view(self, state: ImageState) -> RootView:
        return self.shared.view(state)

    def flatten(self, state: ImageState) -> Path:
        return self.shared.flatten(state)

    def emit(self, event: Event) -> None:
        """Send ``event`` on, labelled with this stage (and platform)."""
        if isinstance(event, (StepStarted, StepFinished, StepOutput)):
            event = replace(event, stage_name=event.stage_name or self.stage_name,
                            platform=event.platform or self.platform_label)
        self.shared.emit(event)
