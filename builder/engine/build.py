"""The build: parse, plan one stage graph per target platform, build every needed stage step
by step, write each platform's image (and, for several platforms, the OCI index naming them).

Traversal lives here; each step kind has its own handler module (step_run, step_copy,
step_config). Stages of every platform form one graph run by builder.engine.scheduler (up to
``--jobs`` at once, each stage seeing the build through its own StageSession); a failing
stage cancels the others. Cleanup is guaranteed: the build's temp dir goes in ``finally``;
tags are only written after every stage of every platform succeeded, so a failed build
changes no tag.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..errors import DockerfileError, Interrupted, PybuildError
from .events import EventSink, ImageWritten, StepFinished, StepStarted
from .options import BuildOptions
from .session import BuildSession, StageResult, StageSession
from .state import ImageState

if TYPE_CHECKING:
    from ..plan.steps import CopyStep, Step
    from ..outputspec import OutputSpec
    from ..plan.graph import BuildGraph
    from ..platform import Platform
    from ..syntax.ast import Dockerfile
    from ..store.layout import Store


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What a build produced: the pushed/stored manifest (or index) and the tags given to it."""

    digest: str                 # manifest digest (the index's in a multi-platform build)
    config_digest: str          # the config of the first platform's image
    tags: tuple[str, ...]
    manifest_size: int
    media_type: str = "application/vnd.oci.image.manifest.v1+json"

    @property
    def image_id(self) -> str:
        """What ``-q`` prints and ``--iidfile`` holds: the image ID, i.e. the config digest
        (what ``docker images`` shows after ``docker load``), as buildx's getImageID prefers
        the exporter's config digest; the index digest for a multi-platform build, which
        has no single config."""
        if "index" in self.media_type or "manifest.list" in self.media_type:
            return self.digest
        return self.config_digest

    def metadata(self) -> dict[str, Any]:
        """``--metadata-file`` content, with buildx's key names."""
        out: dict[str, Any] = {
            "containerimage.digest": self.digest,
            "containerimage.config.digest": self.config_digest,
            "containerimage.descriptor": {"mediaType": self.media_type,
                                          "digest": self.digest, "size": self.manifest_size},
        }
        if self.tags:
            out["image.name"] = ",".join(self.tags)
        return out


def run_build(opts: BuildOptions, store: Store, on_event: EventSink) -> BuildResult:
    """Build per ``opts`` into ``store``. Raises PybuildError subclasses; on any failure no tag
    changes and the build's temporary files are removed."""
    from ..syntax.parser import parse_file

    df = parse_file(str(opts.dockerfile), name=opts.dockerfile_name)
    early = opts.no_cache and any(n.keyword == "RUN" for n in df.nodes)
    if early:  # its RUN steps will run: their first sandbox init starts while the build is planned
        from ..sandbox.spare import start_early
        from .limits import step_limits

        start_early(step_limits(opts.limits))
    try:
        return _build(df, opts, store, on_event)
    except DockerfileError as exc:
        raise exc.with_source(df.source)
    finally:
        if early:
            from ..sandbox.spare import take_early

            unused = take_early()  # the build failed before its session took it
            if unused is not None:
                unused.close()


@dataclass
class PlatformBuild:
    """One platform's part of a build: its stage graph, finished stages, imported caches and
    the cache keys each stage used (for ``--cache-to``)."""

    platform: Platform
    graph: BuildGraph
    label: str                                    # "" in a single-platform build
    stages: dict[int, StageResult] = field(default_factory=dict)
    stage_keys: dict[int, list[str]] = field(default_factory=dict)
    remote_caches: list[Any] = field(default_factory=list)


def _build(df: Dockerfile, opts: BuildOptions, store: Store, on_event: EventSink) -> BuildResult:
    from ..oci.reference import parse_reference
    from ..platform import host_platform, parse_platforms
    from ..syntax.typed import to_instructions
    from .plan_adapter import make_graph

    instrs = to_instructions(df)
    platforms = parse_platforms(opts.platform) or (host_platform(),)
    multi = len(platforms) > 1
    builds = [PlatformBuild(p, make_graph(df, instrs, opts, p), str(p) if multi else "") for p in platforms]
    tags = tuple(str(parse_reference(t)) for t in opts.tags)
    outputs = _parse_outputs(opts)
    if multi:
        from ..transfer import check_multi_platform_output

        for out in outputs:
            check_multi_platform_output(out)
    wanted = {o.compression for o in outputs if o.compression}
    if len(wanted) == 1:
        # write layers in the requested compression once, instead of recompressing on export
        opts = replace(opts, compression=wanted.pop())
    levels = {o.compression_level for o in outputs
              if o.compression_level is not None and (o.compression or "gzip") == opts.compression}
    if len(levels) == 1:
        # new layers are made at the asked level (buildx: compression-level applies to the
        # blobs the export creates; existing ones are kept unless force-compression)
        opts = replace(opts, compression_level=levels.pop())
        if opts.compression == "gzip":
            from ..layer.gz import backend_level

            backend_level(opts.compression_level)  # a bad level fails before any step runs
    for pb in builds:
        _preflight_emulation(pb, opts)
        manifest_annotations(opts.annotations, pb.platform, multi=multi)  # bad values fail before any step
    session = BuildSession(opts, store, on_event)
    for pb in builds:
        for span, text in pb.graph.warnings:
            where = f"{opts.dockerfile.name}:{span.line}: " if span is not None else ""
            session.warn_once(where + text)
    remotecache = _cache_module(opts)  # --cache-from / --cache-to (issue 6)
    from .context import close_hash_memo, memo_path, open_hash_memo

    open_hash_memo(memo_path(store.root, opts.context), [opts.context])
    try:
        cache_exports = remotecache.export_specs(opts)
        if any(spec.mounts for spec in cache_exports):
            session.cache_mounts = {}
        for pb in builds:
            pb.remote_caches = remotecache.import_caches(session, pb.platform)
            session.remote_caches.extend(pb.remote_caches)
        _build_stages(session, builds, df)
        images = [_write_platform_image(session, pb, cache_exports) for pb in builds]
        for name in session.named.unused():
            session.warn_once(f"build context {name!r} was given with --build-context but is not used "
                              f"by the Dockerfile")
        from .image import INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, write_index

        first = images[0][0]
        if multi:
            index = write_index(store, [(w, pb.platform) for (w, _), pb in zip(images, builds, strict=True)],
                                index_annotations(opts.annotations),
                                [manifest_annotations(opts.annotations, pb.platform, multi=True,
                                                      level="manifest-descriptor") for pb in builds])
            media, top_digest, top_size = INDEX_MEDIA_TYPE, str(index.digest), index.size
        else:
            media, top_digest, top_size = MANIFEST_MEDIA_TYPE, str(first.manifest_digest), first.manifest_size
        for t in tags:
            store.tag_digest(t, media, top_digest, top_size)
        result = BuildResult(top_digest, str(first.config_digest), tags, top_size, media)
        for out in outputs:
            _export(store, top_digest, out, tags, session, [final for _, final in images])
        stage_keys = [(pb.graph, pb.stage_keys) for pb in builds]
        remotecache.export_caches(session, cache_exports, stage_keys)
        from .layers import record_blobs

        record_blobs(session)  # records of lazy layers that got a blob now name it
        on_event(ImageWritten(result.digest, result.config_digest, tags, result.image_id))
        return result
    finally:
        for pb in builds:
            remotecache.close_caches(pb.remote_caches)
        close_hash_memo()
        session.close()


def manifest_annotations(values: tuple[str, ...], platform: Platform, *, multi: bool = False,
                         level: str = "manifest") -> dict[str, str]:
    """The annotations of ``--annotation`` values (buildx syntax) at ``level`` ("manifest":
    the image manifest; "manifest-descriptor": its descriptor in a multi-platform index) for
    ``platform``. One platform makes no index: ``index:``/``index-descriptor:`` and
    ``manifest-descriptor:`` are refused (BuildKit refuses the first two and puts the last on
    its OCI exporter's index.json entry, which we do not yet); with several, ``index:`` ones go
    to :func:`index_annotations`; ``index-descriptor:`` is not supported (UsageError)."""
    if not values:
        return {}
    from ..errors import UsageError
    from ..inputs.flags import parse_annotation
    from ..plan.platform import Platform

    out: dict[str, str] = {}
    for value in values:
        ann = parse_annotation(value)
        for lv in ann.levels:
            if lv in ("index", "index-descriptor") and not multi:
                raise UsageError(f"--annotation {value!r}: index annotations not supported for single platform export")
            if lv == "index-descriptor" or (lv == "manifest-descriptor" and not multi):
                # BuildKit writes these on the OCI layout's index.json entry, which ours lacks a way to carry
                where = "an OCI layout's index.json entry" if lv == "index-descriptor" else \
                    "the descriptor of a single-platform image"
                raise UsageError(f"--annotation {value!r}: {lv} annotations on {where} are not supported yet")
        if level not in ann.levels:
            continue
        if ann.platform is not None:
            try:
                wanted = Platform.parse(ann.platform)
            except UsageError:
                raise UsageError(f"--annotation {value!r}: invalid platform {ann.platform!r}") from None
            if str(wanted) != str(platform):
                continue
        out[ann.key] = ann.value
    return out


def _lazy_stage(in_image: bool) -> bool:
    """Whether a stage's new layers are lazy (snapshot and diff_id now, blob when first
    needed): those of stages outside the target image's FROM chain, which only other stages
    read. ``PYBUILD_LAZY_LAYERS=all`` makes every stage lazy (the image's blobs are then all
    made from snapshots at the end), ``=off`` none: both for tests and comparisons. Only as
    root."""
    import os

    if os.geteuid() != 0:
        return False  # unprivileged extraction cannot keep owners: the snapshot would not give the tar back
    mode = os.environ.get("PYBUILD_LAZY_LAYERS", "auto").lower()
    if mode == "all":
        return True
    if mode == "off":
        return False
    return not in_image


class _NoCaches:
    """Stands in for :mod:`builder.engine.remotecache` in a build without ``--cache-from`` or
    ``--cache-to``, so that such a build (a fully cached rebuild above all) does not load it."""

    @staticmethod
    def export_specs(opts: BuildOptions) -> list[Any]:
        return []

    @staticmethod
    def import_caches(session: StageSession | BuildSession, platform: Any) -> list[Any]:
        return []

    @staticmethod
    def inline_records(*args: Any) -> None:
        return None

    @staticmethod
    def with_inline_cache(state: ImageState, records: None) -> ImageState:
        from .state import INLINE_FIELD

        if not any(k == INLINE_FIELD for k, _ in state.extra):
            return state
        from .remotecache import with_inline_cache  # a base image's inline cache is dropped

        return with_inline_cache(state, None)

    @staticmethod
    def export_caches(*args: Any) -> None:
        return None

    @staticmethod
    def close_caches(caches: list[Any]) -> None:
        return None


def _cache_module(opts: BuildOptions) -> Any:
    """:mod:`builder.engine.remotecache`, or :class:`_NoCaches` when no cache is imported or
    exported."""
    if not opts.cache_from and not opts.cache_to:
        return _NoCaches
    from . import remotecache

    return remotecache


def _background_blobs() -> bool:
    """Whether a RUN layer of the target image gets its blob from the background worker
    (snapshot and diff_id first, the blob overlapping the next steps): as root, unless
    ``PYBUILD_LAZY_LAYERS=off`` (everything written at once, as before lazy layers)."""
    import os

    return os.geteuid() == 0 and os.environ.get("PYBUILD_LAZY_LAYERS", "auto").lower() != "off"


def index_annotations(values: tuple[str, ...]) -> dict[str, str]:
    """The ``index:`` annotations of ``--annotation`` values (a multi-platform build's index)."""
    from ..inputs.flags import parse_annotation

    return {a.key: a.value for a in map(parse_annotation, values) if "index" in a.levels}


def _preflight_emulation(pb: PlatformBuild, opts: BuildOptions) -> None:
    """Fail before any step runs when a needed stage of a foreign platform has a RUN that no
    binfmt_misc handler could run (handlers needing their interpreter inside the image are
    given the benefit of the doubt here; the step checks again with the image at hand)."""
    from ..platform import host_platform

    host = host_platform()
    for idx in pb.graph.needed:
        stage = pb.graph.stages[idx]
        run = next((i for i in stage.instructions if getattr(i, "kind", "") == "RUN"), None)
        if run is None or stage.platform.architecture == host.architecture:
            continue  # (a host-architecture RUN needs no emulation: binfmt is not even loaded)
        from ..errors import HostError
        from ..sandbox.binfmt import emulation_error, emulation_problem

        problem = emulation_problem(stage.platform.architecture, host.architecture, exists_in_root=lambda _p: True)
        if problem is not None:
            text = " ".join(run.node.original.split())
            raise HostError(emulation_error(f"{opts.dockerfile.name}:{run.node.span.line}: {text}", stage.platform,
                                            host, problem, stage.platform.architecture))


def _build_stages(session: BuildSession, builds: list[PlatformBuild], df: Dockerfile) -> None:
    """Build the stages each platform's target needs into ``pb.stages``: one graph over every
    platform, a stage starting once the stages it reads are done, up to ``--jobs`` at once
    (builder.engine.scheduler). A failure stops the others and is raised."""
    from .scheduler import Task, run_graph

    tasks: dict[tuple[int, int], Task[tuple[int, int], None]] = {}
    for p, pb in enumerate(builds):
        needed = list(pb.graph.needed)
        in_image = set(pb.graph.base_chain(pb.graph.target))
        for n, idx in enumerate(needed, 1):
            deps = tuple((p, d) for d in pb.graph.stages[idx].deps)
            tasks[(p, idx)] = Task(deps, functools.partial(_build_stage, session, pb, df, idx, n, len(needed),
                                                           idx in in_image))
    run_graph(tasks, session.opts.jobs or os.cpu_count() or 1, session.cancel)


def _build_stage(session: BuildSession, pb: PlatformBuild, df: Dockerfile, idx: int, number: int, count: int,
                 in_image: bool) -> None:
    """Build stage ``idx`` of ``pb`` (its dependencies are done) and record its result."""
    stage = pb.graph.stages[idx]
    view = StageSession(session, stage.platform, pb.stages, pb.remote_caches,
                        stage_name=stage.name or "", platform_label=pb.label)
    view.lazy_layers = _lazy_stage(in_image)
    view.background_blobs = not view.lazy_layers and _background_blobs()
    result = StageBuilder(view, pb.graph, df, idx, number, count).run()
    pb.stage_keys[idx] = view.used_keys
    pb.stages[idx] = result  # read only by stages that start after this one ended


def _write_platform_image(session: BuildSession, pb: PlatformBuild, cache_exports: list[Any]) -> tuple[Any, ImageState]:
    """Write ``pb``'s target image (inline cache records and ``--label`` applied) into the
    store; returns it and its final state."""
    from .image import timestamp, write_image
    from .layers import materialize_state

    opts = session.opts
    remotecache = _cache_module(opts)
    # the image's layers need blobs (a cache hit may have brought a lazy one)
    target_state = materialize_state(session, pb.stages[pb.graph.target].state)
    final = remotecache.with_inline_cache(target_state,
                                          remotecache.inline_records(session, cache_exports, pb.graph, pb.stage_keys))
    if opts.labels:
        cfg = final.config
        for k, v in opts.labels:
            cfg = cfg.with_label(k, v)
        final = replace(final, config=cfg)
    epoch = opts.source_date_epoch
    written = write_image(session.store, final, timestamp(epoch if epoch is not None else (final.clock or None)),
                          manifest_annotations(opts.annotations, pb.platform, multi=bool(pb.label)))
    return written, final


def _parse_outputs(opts: BuildOptions) -> list[Any]:
    if not opts.outputs:
        return []
    from ..outputspec import check_dest, parse_output

    outputs = [parse_output(o) if isinstance(o, str) else o for o in opts.outputs]
    for out in outputs:
        check_dest(out)
    return outputs


def _export(store: Store, digest: str, output: OutputSpec, tags: tuple[str, ...], session: BuildSession,
            finals: list[ImageState]) -> None:
    """Write one ``--output`` of the image (or index) ``digest``. ``compression=`` applies to
    the layers this build made; those inherited from the base image keep theirs unless
    ``force-compression`` (BuildKit's rule). An image-store output that would change nothing
    (the build already stored and tagged the image) is skipped without loading the exporter."""
    if output.compression is not None and not output.force_compression:
        from ..oci.mediatypes import layer_compression

        if all(layer_compression(layer.media_type) == output.compression
               for final in finals for layer in final.layers[final.inherited:]):
            output = replace(output, compression=None)
    if output.type == "image" and output.compression is None and not output.push and not output.names:
        return
    from ..transfer import export_image, progress_sink

    export_image(store, digest, output, tags=tags, keep_layers=min(f.inherited for f in finals),
                 insecure=session.opts.insecure_registries, stdout=session.opts.stdout,
                 on_event=progress_sink(session.emit, "push" if output.push else "export"))


class StageBuilder:
    """Builds one stage: resolves its base, then applies each lowered step in order."""

    def __init__(self, session: StageSession, graph: BuildGraph, df: Dockerfile, index: int, number: int, count: int) -> None:
        self.session = session
        self.graph = graph
        self.df = df
        self.index = index
        self.number = number
        self.count = count
        self.stage = graph.stages[index]
        opts = session.opts
        name = (self.stage.name or "").lower()
        self.use_cache = not opts.no_cache and not (
            name and name in {f.lower() for f in opts.no_cache_filter}
            or str(index) in opts.no_cache_filter)

    def run(self) -> StageResult:
        from ..plan.steps import RunStep
        from .plan_adapter import stage_steps, start_stage

        t0 = time.monotonic()
        start_text = _step_text(self.stage.from_instr)
        emit = self.session.emit
        emit(StepStarted(self.number, self.count, 0, 0, start_text, self.stage.name or ""))
        kinds = [getattr(i, "kind", "") for i in self.stage.instructions]
        if not self.use_cache and "RUN" in kinds:  # its RUN steps will run: start an init now
            from .step_run import prepare_spare

            prepare_spare(self.session)
        try:
            state, lowering, base_onbuild = start_stage(self.session, self.graph, self.index)
        except DockerfileError as exc:
            if exc.span is None:
                exc.span = self.stage.node.span
            raise
        except PybuildError as exc:
            raise DockerfileError(exc.render(), self.stage.node.span) from exc
        emit(StepFinished(self.number, self.count, 0, start_text, time.monotonic() - t0, False, self.stage.name or ""))
        # unpack new COPY layers as they are written when a later step reads the stage's file
        # system: a RUN stacks them, a second COPY/ADD resolves its destination in them
        self.session.unpack_layers = "RUN" in kinds or sum(k in ("COPY", "ADD") for k in kinds) > 1
        runs_ahead = kinds.count("RUN")
        from .step_run import discard_pending, finish_pending

        try:
            for step_no, step in enumerate(stage_steps(self.df, lowering, base_onbuild), 1):
                if self.session.cancel.is_set():  # another stage failed (or the build was interrupted)
                    raise Interrupted(f"stage {self.stage.display_name} stopped: the build is being cancelled")
                misses = len(self.session.misses)
                is_run = isinstance(step, RunStep)
                runs_ahead -= is_run
                self.session.runs_after = runs_ahead  # none: a RUN starts no spare for a next one
                state = self._apply(state, step, step_no)
                if not is_run and runs_ahead > 0 and len(self.session.misses) > misses:
                    from .step_run import prepare_spare

                    prepare_spare(self.session)  # a RUN after a miss runs: its sandbox init starts now
            state = finish_pending(self.session, state)  # the last RUN's layer, if still being framed
        except BaseException:
            discard_pending(self.session)
            raise
        return StageResult(self.index, self.stage.name, state, lowering.scope)

    def _apply(self, state: ImageState, step: Step, step_no: int) -> ImageState:
        from .dockerignore import BadPatternError
        from .step_config import apply_config
        from ..plan.steps import CopyStep, RunStep
        from .step_copy import apply_copy
        from .step_run import apply_run

        text = _step_text(step)
        emit = self.session.emit
        emit(StepStarted(self.number, self.count, step_no, 0, text, self.stage.name or ""))
        t0 = time.monotonic()
        from .step_run import finish_pending

        misses = len(self.session.misses)
        try:
            if not isinstance(step, RunStep):
                state = finish_pending(self.session, state)  # a RUN's layer still being framed
            before = state
            if isinstance(step, RunStep):  # dispatch by step type (DESIGN.md)
                state, cached = apply_run(self.session, state, step, stage_no=self.number, step_no=step_no,
                                          use_cache=self.use_cache)
                if self.session.pending_run is not None:
                    before = state  # the step is pending: the state returned is the one it ran on
            elif isinstance(step, CopyStep):
                src_state, src_view, src_ctx = self._copy_source(step)
                state, cached = apply_copy(self.session, state, step, source_state=src_state, source_view=src_view,
                                           use_cache=self.use_cache, context=src_ctx)
            else:
                state, cached = apply_config(self.session, state, step, use_cache=self.use_cache)
        except DockerfileError as exc:
            if exc.span is None:
                exc.span = step.node.span
            raise
        except BadPatternError as exc:  # a source or .dockerignore pattern Go would refuse
            raise DockerfileError(exc.render(), step.node.span) from exc
        seconds = time.monotonic() - t0
        why = self._why(step, step_no, before) if len(self.session.misses) > misses else ""
        emit(StepFinished(self.number, self.count, step_no, text, seconds, cached, self.stage.name or "", why))
        return state

    def _why(self, step: Step, step_no: int, before: ImageState) -> str:
        """Why the step just built missed the cache (only called after a miss)."""
        from .explain import dockerfile_name, explain_miss, position_id

        opts = self.session.opts
        forced = None
        if opts.no_cache:
            forced = "--no-cache"
        elif not self.use_cache:
            forced = f"--no-cache-filter {self.stage.name or self.index}"
        position = position_id(dockerfile_name(opts), self.stage.name or str(self.index), step_no,
                               str(before.platform))
        try:
            return explain_miss(self.session, step, key=self.session.misses[-1], position=position,
                                parent=before, step_no=step_no, forced=forced)
        except Exception as exc:  # noqa: BLE001 - an explanation must never fail a build
            return f"(no explanation: {type(exc).__name__})"

    def _copy_source(self, step: CopyStep) -> tuple[ImageState | None, Any, Any]:
        """For COPY --from: the source stage's (or image's) state and a view of its filesystem,
        or for a directory named context its BuildContext."""
        from_stage = getattr(step, "from_stage", None)
        if from_stage is not None:
            st = self.session.stages[from_stage].state
            return st, self.session.view(st), None
        from_image = getattr(step, "from_image", None)
        if from_image:
            named = self.session.named_context(from_image)
            if named is not None and named.path is not None:
                return None, None, self.session.named_build_context(named)
            base = self.session.resolve_image(from_image)
            st = ImageState(layers=base.layers, history=(), config=None, platform=self.session.platform,
                            cache_key="image:" + base.manifest_digest)
            return st, self.session.view(st), None
        return None, None, None


def _step_text(step: Any) -> str:
    node = getattr(step, "node", None)
    text = getattr(node, "original", "") or getattr(step, "created_by", "")
    text = " ".join(text.split())
    if "@" in text:
        from ..inputs.urls import redact_text

        text = redact_text(text)
    return text if len(text) <= 100 else text[:97] + "..."
