"""The stage graph: meta ARGs, stages, ``--target`` and the stages the target needs.

:func:`build_graph` follows BuildKit's dockerfile2llb: meta ARGs (before the first FROM) are
expanded in order over the predefined platform ARGs and overridden by build args; FROM's image
and ``--platform`` are expanded with them; stage names are case-insensitive; ``COPY --from`` and
``RUN --mount=from=`` name a stage (by name or index) or else an image. Every error is a
:class:`builder.errors.DockerfileError` carrying the offending instruction's span (the
"target not found" error has none).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import DockerfileError, UsageError
from ..source import Span
from ..syntax.ast import Node
from ..syntax.instructions import Arg, Command, Copy, From, Instruction, Onbuild
from .expander import Expander
from .mounts import mount_from
from .platform import Platform

SCRATCH = "scratch"
PROXY_ARGS = frozenset({"HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY"})
# build args BuildKit consumes itself: never reported as unused
_BUILTIN_ARGS = frozenset({"SOURCE_DATE_EPOCH", "BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE",
                           "BUILDKIT_INLINE_CACHE", "BUILDKIT_MULTI_PLATFORM", "BUILDKIT_CACHE_MOUNT_NS",
                           "BUILDKIT_CONTEXT_KEEP_GIT_DIR", "BUILDKIT_SYNTAX"})
_INDEX = re.compile(r"[+-]?\d+")


def is_proxy_arg(name: str) -> bool:
    """True for HTTP_PROXY/HTTPS_PROXY/FTP_PROXY/NO_PROXY/ALL_PROXY in any letter case."""
    return name.upper() in PROXY_ARGS


@dataclass(frozen=True, slots=True)
class StageRef:
    """A FROM naming an earlier stage (by its index)."""

    index: int


@dataclass(frozen=True, slots=True)
class Stage:
    """One build stage.

    ``base`` is the expanded image reference, ``"scratch"`` or a :class:`StageRef`.
    ``platform`` is the stage's platform (``--platform``, else the base stage's, else the target).
    ``deps`` are the indexes of the stages it needs (its base stage, COPY --from, mount from),
    ``image_refs`` the images named by ``--from`` / ``from=`` that are not stages.
    ``used_meta_args`` are the global ARGs FROM's expansion used.
    """

    index: int
    name: str | None
    base: str | StageRef
    platform: Platform
    from_instr: From
    instructions: tuple[Instruction, ...]
    deps: tuple[int, ...] = ()
    image_refs: tuple[str, ...] = ()
    used_meta_args: tuple[str, ...] = ()

    @property
    def node(self) -> Node:
        """The FROM instruction's node (span, original text)."""
        return self.from_instr.node

    @property
    def display_name(self) -> str:
        return self.name if self.name else f"stage-{self.index}"


@dataclass(frozen=True, slots=True)
class BuildGraph:
    """The result of :func:`build_graph`.

    ``meta_args`` are the meta ARGs after expansion and build-arg overrides (value None when
    neither a default nor a build arg gives one). ``global_args`` is the scope a stage's
    ``ARG NAME`` (without default) inherits from: predefined platform ARGs plus meta ARGs with a
    value. ``build_order`` lists the indexes of the stages the target needs, dependencies first.
    ``warnings``: BuildKit's lint findings as (span, text), e.g. ``DuplicateStageName``.

    Stage names may repeat (BuildKit warns, does not fail): ``FROM name`` means the last stage
    of that name defined before it; ``--from=name``, ``--mount from=name`` and ``--target``
    mean the last one in the file (a reference placed before it is then an error, as in
    BuildKit's dependency graph, which resolves names once every stage is known).
    """

    meta_args: tuple[tuple[str, str | None], ...]
    global_args: tuple[tuple[str, str], ...]
    stages: tuple[Stage, ...]
    target: int
    build_order: tuple[int, ...]
    unused_build_args: tuple[str, ...]
    escape: str = "\\"
    build_args: tuple[tuple[str, str], ...] = ()
    warnings: tuple[tuple[Span | None, str], ...] = ()

    @property
    def needed(self) -> tuple[int, ...]:
        """Alias of ``build_order``."""
        return self.build_order

    def base_chain(self, index: int) -> tuple[int, ...]:
        """``index`` and the stages it is built FROM, nearest first: the stages whose layers
        end up in ``index``'s image."""
        chain: list[int] = []
        idx: int | None = index
        while idx is not None and idx not in chain:
            chain.append(idx)
            base = self.stages[idx].base
            idx = base.index if isinstance(base, StageRef) else None
        return tuple(chain)

    def global_dict(self) -> dict[str, str]:
        """``global_args`` as a dict (what ``ARG NAME`` without a default inherits)."""
        return dict(self.global_args)

    def stage_index(self, name: str) -> int | None:
        """The index of the stage named ``name`` (case-insensitive), or None."""
        low = name.lower()
        for st in reversed(self.stages):
            if st.name == low:
                return st.index
        return None

    def resolve_source(self, value: str, current: int, span: Span | None, *,
                       allow_index: bool = True) -> tuple[int | None, str | None]:
        """Resolve a ``--from`` value used in stage ``current``: ``(stage_index, None)`` or
        ``(None, image_ref)``. Raises DockerfileError for an index out of range, the current
        stage (a cycle) or a later stage."""
        return _resolve([(s.index, s.name) for s in self.stages], value, current, span, allow_index)


def _resolve(names: Sequence[tuple[int, str | None]], value: str, current: int, span: Span | None,
             allow_index: bool) -> tuple[int | None, str | None]:
    found, image = _lookup(names, value, span, allow_index)
    if found is None:
        return None, image
    cur_name = names[current][1] or f"stage-{current}"
    if found == current:
        raise DockerfileError(f"circular dependency detected on stage: {cur_name}", span)
    if found > current:
        raise DockerfileError(f'cannot copy from stage "{value}", it needs to be defined before current '
                              f'stage "{cur_name}"', span)
    return found, None


def check_from_value(value: str, expander: Expander, span: Span) -> None:
    """BuildKit refuses variables (and quoting) in ``COPY --from``."""
    if any(c in value for c in "$'\"") or expander.escape in value:
        raise DockerfileError("variable expansion is not supported for --from, define a new stage with "
                              "FROM using ARG from global scope as a workaround", span)


def _stage_refs(instr: Instruction) -> list[tuple[str, bool]]:
    """The ``--from`` values an instruction names, with whether an index is allowed."""
    if isinstance(instr, Onbuild):
        return []
    if isinstance(instr, Copy) and instr.from_:
        return [(instr.from_, True)]
    if isinstance(instr, Command) and instr.kind == "RUN":
        out = []
        for raw in instr.mounts:
            src = mount_from(raw)
            if src and "$" not in src:
                out.append((src, True))
        return out
    return []


def trigger_dependencies(graph: BuildGraph, index: int, triggers: Sequence[Instruction]) -> tuple[int, ...]:
    """The stages that the base image's ONBUILD ``triggers`` of stage ``index`` name with
    ``COPY --from`` / ``RUN --mount=from=``, as BuildKit adds them to the graph. The engine builds
    those (and their own needs) before the stage. Raises DockerfileError at the FROM for a bad
    reference (a later stage, the stage itself, an index out of range)."""
    span = graph.stages[index].from_instr.node.span
    names = [(s.index, s.name) for s in graph.stages]
    deps: list[int] = []
    expander = Expander(graph.escape)
    for ins in triggers:
        if isinstance(ins, Copy) and ins.from_:
            check_from_value(ins.from_, expander, span)
        for value, allow_index in _stage_refs(ins):
            idx, _ = _resolve(names, value, index, span, allow_index)
            if idx is not None and idx not in deps:
                deps.append(idx)
    return tuple(deps)


def build_graph(instrs: Sequence[Instruction], *, build_args: Mapping[str, str], target: str | None,
                platform: Platform, build_platform: Platform, escape: str = "\\") -> BuildGraph:
    """Split ``instrs`` into stages and compute what ``target`` needs. See the module docstring."""
    expander = Expander(escape)
    predefined: dict[str, str] = {}
    predefined.update(build_platform.args("BUILD"))
    predefined.update(platform.args("TARGET"))

    # ---- meta ARGs ------------------------------------------------------------------------
    pos = 0
    meta: list[tuple[str, str | None]] = []
    scope = dict(predefined)
    while pos < len(instrs) and not isinstance(instrs[pos], From):
        ins = instrs[pos]
        if not isinstance(ins, Arg):
            raise DockerfileError("no build stage in current context", ins.node.span)
        if ins.name in build_args:
            value: str | None = build_args[ins.name]
        elif ins.default is not None:
            value, _ = expander.word(ins.default, scope, ins.node.span)
        else:
            value = None
        meta.append((ins.name, value))
        if value is not None:
            scope[ins.name] = value
        pos += 1
    if pos >= len(instrs):
        span = instrs[-1].node.span if instrs else None
        raise DockerfileError("dockerfile contains no stages to build", span)
    global_scope = scope

    # ---- stages ---------------------------------------------------------------------------
    raw_stages: list[tuple[From, list[Instruction]]] = []
    for ins in instrs[pos:]:
        if isinstance(ins, From):
            raw_stages.append((ins, []))
        else:
            raw_stages[-1][1].append(ins)

    seen: dict[str, int] = {}
    warnings: list[tuple[Span | None, str]] = []
    partial: list[Stage] = []
    for index, (frm, body) in enumerate(raw_stages):
        span = frm.node.span
        name = frm.stage_name.lower() if frm.stage_name else None
        if name is not None:
            if name in seen:  # BuildKit's lint rule DuplicateStageName: a warning
                warnings.append((span, f"DuplicateStageName: Duplicate stage name \"{frm.stage_name}\", "
                                       "stage names should be unique"))
            seen[name] = index
        image, used = expander.word(frm.image, global_scope, span)
        if not image:
            raise DockerfileError(f"base name ({frm.image}) should not be blank", span)
        used_set = set(used)
        base: str | StageRef
        base_idx = next((s.index for s in reversed(partial) if s.name is not None and s.name == image.lower()),
                        None)  # the latest stage of that name so far
        if base_idx is not None:
            base = StageRef(base_idx)
        elif image.lower() == SCRATCH:
            base = SCRATCH
        else:
            base = image
        st_platform = platform
        if frm.platform:
            pval, pused = expander.word(frm.platform, global_scope, span)
            used_set |= pused
            if not pval:
                raise DockerfileError(f"empty platform value from expression {frm.platform}", span)
            try:
                st_platform = Platform.parse(pval)
            except UsageError as exc:
                raise DockerfileError(f"failed to parse platform {frm.platform}: {exc}", span) from None
        if isinstance(base, StageRef):
            st_platform = partial[base.index].platform
        partial.append(Stage(index=index, name=name, base=base, platform=st_platform, from_instr=frm,
                             instructions=tuple(body),
                             used_meta_args=tuple(sorted(used_set))))

    # ---- dependencies ---------------------------------------------------------------------
    names = [(s.index, s.name) for s in partial]
    edges: dict[int, list[tuple[int, Instruction | From]]] = {s.index: [] for s in partial}
    stages: list[Stage] = []
    for st in partial:
        deps: list[int] = []
        images: list[str] = []
        if isinstance(st.base, StageRef):
            deps.append(st.base.index)
            edges[st.index].append((st.base.index, st.from_instr))
        for ins in st.instructions:
            if isinstance(ins, Copy) and ins.from_:
                check_from_value(ins.from_, expander, ins.node.span)
            for value, allow_index in _stage_refs(ins):
                idx, img = _lookup(names, value, ins.node.span, allow_index)
                if idx is not None:
                    edges[st.index].append((idx, ins))
                    if idx not in deps:
                        deps.append(idx)
                elif img is not None and img not in images:
                    images.append(img)
        stages.append(Stage(index=st.index, name=st.name, base=st.base, platform=st.platform,
                            from_instr=st.from_instr, instructions=st.instructions, deps=tuple(deps),
                            image_refs=tuple(images), used_meta_args=st.used_meta_args))
    _check_cycles(stages, edges)

    # ---- target ---------------------------------------------------------------------------
    if target:
        tidx = next((s.index for s in reversed(stages) if s.name == target.lower()), None)
        if tidx is None:
            raise DockerfileError(f'target stage "{target}" could not be found')
    else:
        tidx = len(stages) - 1
    needed: set[int] = set()
    todo = [tidx]
    while todo:
        i = todo.pop()
        if i in needed:
            continue
        needed.add(i)
        todo.extend(stages[i].deps)
    order = tuple(sorted(needed))
    for i in order:  # a needed stage may only use stages defined before it
        for dep, ins in edges[i]:
            if dep > i:
                shown = names[dep][1] or str(dep)
                _resolve(names, shown, i, ins.node.span, True)

    # ---- unused build args ----------------------------------------------------------------
    declared = {n for n, _ in meta}
    for i in order:
        declared |= {ins.name for ins in stages[i].instructions if isinstance(ins, Arg)}
    unused = tuple(sorted(k for k in build_args
                          if k not in declared and not is_proxy_arg(k) and k not in _BUILTIN_ARGS))

    global_args = tuple(global_scope.items())
    return BuildGraph(meta_args=tuple(meta), global_args=global_args, stages=tuple(stages), target=tidx,
                      build_order=order, unused_build_args=unused, escape=escape,
                      build_args=tuple(build_args.items()), warnings=tuple(warnings))


def _lookup(names: Sequence[tuple[int, str | None]], value: str, span: Span | None,
            allow_index: bool) -> tuple[int | None, str | None]:
    if allow_index and _INDEX.fullmatch(value):
        idx = int(value)
        if idx < 0 or idx >= len(names):
            raise DockerfileError(f"invalid stage index {idx}", span)
        return idx, None
    low = value.lower()
    found = next((i for i, n in reversed(names) if n == low), None)  # a repeated name: the last
    return (found, None) if found is not None else (None, value)


def _check_cycles(stages: Sequence[Stage], edges: Mapping[int, list[tuple[int, Instruction | From]]]) -> None:
    """Raise at the instruction that closes the first cycle found (stages visited in order)."""
    state: dict[int, int] = {}  # 1 = on the stack, 2 = done

    def visit(i: int) -> None:
        state[i] = 1
        for dep, ins in edges[i]:
            if state.get(dep) == 1:
                raise DockerfileError(f"circular dependency detected on stage: {stages[dep].display_name}",
                                      ins.node.span)
            if dep not in state:
                visit(dep)
        state[i] = 2

    for st in stages:
        if st.index not in state:
            visit(st.index)
