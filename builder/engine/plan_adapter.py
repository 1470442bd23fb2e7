"""The engine's use of the plan layer: the stage graph, a stage's starting state, its steps."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Iterator

from ..errors import DockerfileError
from .cachekey import base_key, step_key
from .options import BuildOptions
from .state import ImageState

if TYPE_CHECKING:
    from ..plan.graph import BuildGraph
    from ..platform import Platform
    from ..syntax.ast import Dockerfile
    from .session import StageSession


def make_graph(df: Dockerfile, instrs: Any, opts: BuildOptions, platform: Platform) -> BuildGraph:
    from ..plan.graph import build_graph
    from ..plan.platform import host_platform

    return build_graph(instrs, build_args=dict(opts.build_args), target=opts.target, platform=platform,
                       build_platform=host_platform(), escape=df.escape)


def start_stage(session: StageSession, graph: BuildGraph, index: int) -> tuple[ImageState, Any, tuple[str, ...]]:
    """The stage's starting image state, its StageLowering (not yet iterated) and the base
    image's ONBUILD triggers (run right after FROM, not inherited further). A stage whose name
    is a named context's is that context alone: no instruction of its own runs."""
    from ..plan.graph import StageRef
    from ..plan.lower import StageLowering, onbuild_triggers

    stage = graph.stages[index]
    if stage.name and session.named_context(stage.name) is not None:
        # a named context named like the stage replaces the whole stage (BuildKit)
        stage = replace(stage, base=stage.name, instructions=())
    build_args = dict(graph.build_args)
    if isinstance(stage.base, StageRef):
        parent = session.stages[stage.base.index]
        lowering = StageLowering(stage, graph, parent.state.config, build_args, base_scope=parent.scope)
        state = replace(parent.state, config=lowering.state,
                        cache_key=step_key(parent.state.cache_key, "FROM-STAGE", str(stage.platform)))
        return state, lowering, tuple(onbuild_triggers(parent.state.config))
    named = session.named_context(stage.base)
    if named is not None and named.path is not None:
        lowering = StageLowering(stage, graph, None, build_args)
        return _directory_base(session, stage, named, lowering.state), lowering, ()
    base = session.resolve_image(stage.base, stage.platform)
    base_cfg = base.config.get("config") if base.config else None
    lowering = StageLowering(stage, graph, base_cfg, build_args)
    extra = tuple((k, v) for k, v in base.config.items()
                  if k in ("os.version", "os.features") and v)
    state = ImageState(layers=base.layers, history=base.history, config=lowering.state, platform=stage.platform,
                       cache_key=base_key(base.manifest_digest, str(stage.platform)),
                       base_digest=base.manifest_digest, author=base.config.get("author") if base.config else None,
                       extra=extra, inherited=len(base.layers))
    return state, lowering, tuple(onbuild_triggers(base_cfg))


def stage_steps(df: Dockerfile, lowering: Any, base_onbuild: tuple[str, ...]) -> Iterator[Any]:
    """The base image's ONBUILD triggers (parsed here), then the stage's own steps."""
    triggers: list[Any] = []
    if base_onbuild:
        from ..syntax.parser import parse_text
        from ..syntax.typed import to_instructions

        for text in base_onbuild:
            try:
                trig_df = parse_text(text + "\n", name=f"{df.source.name} (ONBUILD)")
                triggers.extend(to_instructions(trig_df))
            except DockerfileError as exc:
                exc.span = lowering.stage.node.span
                exc.source = df.source
                raise
    yield from lowering.steps(triggers)


def _directory_base(session: StageSession, stage: Any, named: Any, config: Any) -> ImageState:
    """``FROM NAME`` where NAME is a directory named context: an image of one layer holding the
    directory (its .dockerignore applied, owners 0:0), no config, as BuildKit's local source.
    The layer is cached by the directory's content digest."""
    from .copy import copy_entries
    from .layers import CacheMiss, cache_lookup, cache_store
    from .state import History

    ctx = session.named_build_context(named)
    digest = ctx.content_digest(ctx.match_sources("."), owners=False)
    key = base_key("context:" + digest, str(stage.platform))
    empty = ImageState(layers=(), history=(), config=None, platform=stage.platform, cache_key=key)
    hit = cache_lookup(session, key)
    if isinstance(hit, CacheMiss):
        from .layers import store_layer

        entries = copy_entries(sources=["."], dest="/", src_view=ctx.view, src_is_context=True, context=ctx,
                               dest_view=session.view(empty), chown=None, chmod=None, excludes=[], parents=False,
                               heredocs=[], mtime_clamp=session.opts.source_date_epoch)
        layer = store_layer(session, entries) if entries else None
        hit = cache_store(session, key, layer, f"context {named.name}")
    layers = (hit.layer,) if hit.layer is not None else ()
    history = tuple(History(created_by="") for _ in layers)
    return replace(empty, layers=layers, history=history, config=config, inherited=len(layers))
