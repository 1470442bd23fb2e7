"""Helpers for the plan tests: Dockerfile text to a graph and lowered steps (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from builder.plan.graph import BuildGraph, StageRef, build_graph
from builder.plan.lower import StageLowering
from builder.plan.platform import Platform
from builder.plan.state import ImageConfigState
from builder.syntax.parser import parse_text
from builder.syntax.typed import to_instructions

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")


def graph_of(text: str, *, build_args: Mapping[str, str] | None = None, target: str | None = None,
             platform: Platform = AMD64, build_platform: Platform = AMD64) -> BuildGraph:
    df = parse_text(text)
    return build_graph(to_instructions(df), build_args=dict(build_args or {}), target=target,
                       platform=platform, build_platform=build_platform, escape=df.escape)


def lower_all(text: str, *, build_args: Mapping[str, str] | None = None, target: str | None = None,
              base_configs: Mapping[int, Mapping[str, Any] | None] | None = None) -> dict[int, tuple[list[Any], StageLowering]]:
    """Lower every needed stage; a stage FROM an earlier stage gets that stage's final state
    and scope, an image stage gets ``base_configs[index]`` (default: no config)."""
    graph = graph_of(text, build_args=build_args, target=target)
    out: dict[int, tuple[list[Any], StageLowering]] = {}
    for idx in graph.build_order:
        stage = graph.stages[idx]
        if isinstance(stage.base, StageRef):
            _, parent = out[stage.base.index]
            low = StageLowering(stage, graph, parent.state, build_args or {}, base_scope=parent.scope)
        else:
            cfg = (base_configs or {}).get(idx)
            low = StageLowering(stage, graph, cfg, build_args or {})
        out[idx] = (list(low.steps()), low)
    return out


def steps_of(text: str, **kw: Any) -> list[Any]:
    """The steps of the target stage."""
    lowered = lower_all(text, **kw)
    graph = graph_of(text, build_args=kw.get("build_args"), target=kw.get("target"))
    return lowered[graph.target][0]


def final_state(text: str, **kw: Any) -> ImageConfigState:
    lowered = lower_all(text, **kw)
    graph = graph_of(text, build_args=kw.get("build_args"), target=kw.get("target"))
    return lowered[graph.target][1].state
