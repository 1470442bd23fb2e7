"""The engine's use of the plan layer: the stage graph, a stage's starting state, its steps."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterator

from ..errors import DockerfileError
from .cachekey import base_key, step_key
from .options import BuildOptions
from .state import ImageState


def make_graph(df: Any, instrs: Any, opts: BuildOptions, platform: Any) -> Any:
    from ..plan.graph import build_graph
    from ..plan.platform import host_platform

    return build_graph(instrs, build_args=dict(opts.build_args), target=opts.target, platform=platform,
                       build_platform=host_platform(), escape=df.escape)


def start_stage(session: Any, graph: Any, index: int) -> tuple[ImageState, Any, tuple[str, ...]]:
    """The stage's starting image state, its StageLowering (not yet iterated) and the base
    image's ONBUILD triggers (run right after FROM, not inherited further)."""
    from ..plan.graph import StageRef
    from ..plan.lower import StageLowering, onbuild_triggers

    stage = graph.stages[index]
    build_args = dict(graph.build_args)
    if isinstance(stage.base, StageRef):
        parent = session.stages[stage.base.index]
        lowering = StageLowering(stage, graph, parent.state.config, build_args, base_scope=parent.scope)
        state = replace(parent.state, config=lowering.state,
                        cache_key=step_key(parent.state.cache_key, "FROM-STAGE", str(stage.platform)))
        return state, lowering, tuple(onbuild_triggers(parent.state.config))
    from .base import resolve_base

    base = resolve_base(stage.base, store=session.store, platform=stage.platform, pull=session.opts.pull,
                        insecure=session.opts.insecure_registries, notify=session.note)
    base_cfg = base.config.get("config") if base.config else None
    lowering = StageLowering(stage, graph, base_cfg, build_args)
    extra = tuple((k, v) for k, v in base.config.items()
                  if k in ("os.version", "os.features") and v)
    state = ImageState(layers=base.layers, history=base.history, config=lowering.state, platform=stage.platform,
                       cache_key=base_key(base.manifest_digest, str(stage.platform)),
                       base_digest=base.manifest_digest, author=base.config.get("author") if base.config else None,
                       extra=extra, inherited=len(base.layers))
    return state, lowering, tuple(onbuild_triggers(base_cfg))


def stage_steps(df: Any, lowering: Any, base_onbuild: tuple[str, ...]) -> Iterator[Any]:
    """The base image's ONBUILD triggers (parsed here), then the stage's own steps."""
    triggers = []
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
