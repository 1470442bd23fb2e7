"""Lowering one stage: a state machine walking its instructions and yielding expanded steps.

``StageLowering(stage, graph, base_config, build_args)`` keeps BuildKit's per-stage state: the
image config (:class:`ImageConfigState`), the process environment of RUN (image ENV plus the
ARG values, later instructions overriding earlier ones as in BuildKit's LLB state), the ARGs
declared in the stage (for ``RUN |N A=1 ...`` history strings) and whether CMD was set in the
stage. ``steps()`` is a generator; every error is a :class:`builder.errors.DockerfileError` at the
instruction's span. The library never prints.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import DockerfileError
from ..source import Span
from ..syntax.ast import Heredoc
from ..syntax.instructions import (Arg, Command, Copy, From, Healthcheck, Instruction, KeyValues, Onbuild,
                                   Single, Words)
from . import gofmt
from .expander import Expander
from .graph import PROXY_ARGS, BuildGraph, Stage, is_proxy_arg
from .mounts import MountSpec, parse_mount
from .state import DEFAULT_PATH, HealthConfig, ImageConfigState
from .steps import ConfigStep, CopyStep, InlineFile, RunStep, Step

# patterns of rarely used forms (heredocs, symbolic --chmod): compiled by re on first use, not
# at every start (~0.35 ms)
_HEREDOC_ONLY = r"^(\d*)<<(-?)\s*(['\"]?)([^'\"\s<>]+)\3\s*$"
_HEREDOC_SOURCE = r"^<<(-?)(['\"]?)([^'\"\s]+)\2$"
_SYMBOLIC_MODE = (r"[ugoa]*[-+=]([rwxXst]*|[ugo])([-+=]([rwxXst]*|[ugo]))*"
                  r"(,[ugoa]*[-+=]([rwxXst]*|[ugo])([-+=]([rwxXst]*|[ugo]))*)*")
_SIGNALS = {
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL", "PIPE",
    "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP", "TTIN", "TTOU",
    "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "RTMIN", "RTMAX",
    *(f"RTMIN+{i}" for i in range(1, 16)), *(f"RTMAX-{i}" for i in range(1, 15)),
}
NETWORK_MODES = ("default", "none", "host")
SECURITY_MODES = ("sandbox", "insecure")


@dataclass(frozen=True, slots=True)
class StageScope:
    """The variable scope at a point of a stage (what a stage built FROM this one inherits).

    ``run_env``: the environment RUN sees and expansion uses (image ENV + ARG values).
    ``arg_names``: names whose current ``run_env`` value came from an ARG.
    ``declared_args``: the ARGs declared so far, in order, value None when unset.
    """

    run_env: tuple[tuple[str, str], ...] = ()
    arg_names: frozenset[str] = frozenset()
    declared_args: tuple[tuple[str, str | None], ...] = ()


def onbuild_triggers(base_config: ImageConfigState | Mapping[str, Any] | None) -> list[str]:
    """The ONBUILD trigger texts of a base image config (to parse and lower right after FROM)."""
    if base_config is None:
        return []
    if isinstance(base_config, ImageConfigState):
        return list(base_config.onbuild)
    return list(ImageConfigState.from_config(base_config).onbuild)


def normalize_workdir(current: str, requested: str) -> str:
    """BuildKit's NormalizeWorkdir: join a relative path to ``current`` and clean it."""
    if not requested.startswith("/"):
        requested = posixpath.join("/", current or "/", requested)
    return _clean(requested)


def resolve_dest(workdir: str, dest: str) -> str:
    """A COPY destination made absolute against ``workdir``; a trailing ``/`` (or ``/.``) is kept."""
    if dest in ("", "."):
        dest = "./"
    keep_slash = dest.endswith("/") or dest.endswith("/.")
    full = dest if dest.startswith("/") else posixpath.join("/", workdir or "/", dest)
    cleaned = _clean(full)
    if keep_slash and not cleaned.endswith("/"):
        cleaned += "/"
    return cleaned


def _clean(path: str) -> str:
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def run_command_string(args: Sequence[str], declared: Sequence[tuple[str, str | None]],
                       env: Mapping[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
    """BuildKit's ``runCommandString``: ``|N K=V ... argv`` and the (K, V) pairs it used."""
    pairs: dict[str, str] = {}
    for key, value in declared:
        pairs[key] = env[key] if key in env else (value or "")
    used = tuple(pairs.items())
    parts = ([f"|{len(used)}"] + [f"{k}={v}" for k, v in used]) if used else []
    return " ".join(parts + list(args)), used


def _parse_ports(spec: str, span: Span) -> list[str]:
    """EXPOSE port spec ``[ip:][hostPort:]port[-port][/proto]`` to ``port/proto`` entries."""
    parts = spec.split(":")
    container = parts[-1]
    host = parts[-2] if len(parts) >= 2 else ""
    port, _, proto = container.partition("/")
    if not port:
        raise DockerfileError(f"no port specified: {container}<empty>", span)
    proto = proto.lower() or "tcp"
    if proto not in ("tcp", "udp", "sctp"):
        raise DockerfileError(f"invalid proto: {proto}", span)

    def port_range(text: str) -> tuple[int, int] | None:
        pieces = text.split("-")
        if len(pieces) > 2 or not all(p.isascii() and p.isdigit() for p in pieces):
            return None
        start, end = int(pieces[0]), int(pieces[-1])
        if start > 65535 or end > 65535 or end < start:
            return None
        return start, end

    rng = port_range(port)
    if rng is None:
        raise DockerfileError(f"invalid containerPort: {port}", span)
    if host:
        hrng = port_range(host)
        if hrng is None:
            raise DockerfileError(f"invalid hostPort: {host}", span)
        if rng[1] - rng[0] != hrng[1] - hrng[0] and rng[0] != rng[1]:
            raise DockerfileError(f"invalid ranges specified for container and host Ports: {port} and {host}", span)
    return [f"{p}/{proto}" for p in range(rng[0], rng[1] + 1)]


def _validate_chmod(value: str, span: Span) -> None:
    if value.isascii() and value.isdigit():
        if not re.fullmatch(r"[0-7]+", value) or int(value, 8) > 0o7777:
            raise DockerfileError(f"invalid chmod parameter: '{value}'. it should be octal string and between "
                                  "0 and 07777", span)
        return
    if not re.fullmatch(_SYMBOLIC_MODE, value):
        raise DockerfileError(f"invalid chmod parameter: '{value}'", span)


def _validate_signal(value: str, span: Span) -> None:
    if re.fullmatch(r"[+-]?\d+", value):
        if int(value) == 0:
            raise DockerfileError(f"Invalid signal: {value}", span)
        return
    name = value.upper()
    if name.startswith("SIG"):
        name = name[3:]
    if name not in _SIGNALS:
        raise DockerfileError(f"Invalid signal: {value}", span)


def _merge_args(steps: Iterator[Step]) -> Iterator[Step]:
    """One history entry per ARG instruction: ``ARG a b=c`` arrives as one typed Arg per name
    (same node); BuildKit writes ``ARG a b=c`` once."""
    pending: ConfigStep | None = None
    for step in steps:
        if isinstance(step, ConfigStep) and step.kind == "ARG":
            if pending is not None and pending.node is step.node:
                pending = replace(pending, created_by=pending.created_by + " " + step.created_by[4:],
                                  used_args=tuple(sorted(set(pending.used_args) | set(step.used_args))))
                continue
            if pending is not None:
                yield pending
            pending = step
            continue
        if pending is not None:
            yield pending
            pending = None
        yield step
    if pending is not None:
        yield pending


class StageLowering:
    """Lowers one stage's instructions to steps, BuildKit's dispatch rules.

    ``base_config``: the base's config — an ImageConfigState (a base stage's final state), a
    Docker ``config`` mapping, or None for scratch. ``base_scope``: when the stage is built FROM
    another stage, that stage's final :attr:`scope` (its ARG values and declared ARGs carry over).
    ``build_args``: the ``--build-arg`` values. After ``steps()`` is exhausted, :attr:`state` and
    :attr:`scope` hold the stage's final config and scope.
    """

    def __init__(self, stage: Stage, graph: BuildGraph, base_config: ImageConfigState | Mapping[str, Any] | None,
                 build_args: Mapping[str, str], *, base_scope: StageScope | None = None) -> None:
        self.stage = stage
        self.graph = graph
        self.build_args = dict(build_args)
        self.expander = Expander(graph.escape)
        if isinstance(base_config, ImageConfigState):
            state = base_config
        else:
            state = ImageConfigState.from_config(base_config)
        if not any(k == "PATH" for k, _ in state.env):
            state = state.with_env("PATH", DEFAULT_PATH)
        if state.working_dir:
            state = replace(state, working_dir=normalize_workdir("/", state.working_dir))
        # ONBUILD triggers never carry over past FROM
        self.state: ImageConfigState = replace(state, onbuild=())
        if base_scope is not None:
            self._env: dict[str, str] = dict(base_scope.run_env)
            self._arg_names: set[str] = set(base_scope.arg_names)
            self._declared: list[tuple[str, str | None]] = list(base_scope.declared_args)
        else:
            self._env = dict(self.state.env)
            self._arg_names = set()
            self._declared = []
        self._cmd_set = False
        self._ssh_count = 0
        self._globals = graph.global_dict()

    # ---- public ------------------------------------------------------------------------------
    @property
    def scope(self) -> StageScope:
        return StageScope(run_env=tuple(self._env.items()), arg_names=frozenset(self._arg_names),
                          declared_args=tuple(self._declared))

    def proxy_env(self) -> tuple[tuple[str, str], ...]:
        """Proxy build args as RUN receives them (upper and lower case forms), sorted."""
        out: dict[str, str] = {}
        for key in sorted(self.build_args):
            if is_proxy_arg(key):
                out[key.upper()] = self.build_args[key]
                out[key.lower()] = self.build_args[key]
        return tuple(sorted(out.items()))

    def steps(self, triggers: Sequence[Instruction] = ()) -> Iterator[Step]:
        """Yield the stage's steps: first the base image's ONBUILD ``triggers`` (already parsed
        by the caller; errors in them are reported at the FROM line), then the instructions."""
        yield from _merge_args(self._trigger_steps(triggers))
        yield from _merge_args(step for ins in self.stage.instructions for step in self.lower(ins))

    def _trigger_steps(self, triggers: Sequence[Instruction]) -> Iterator[Step]:
        for ins in triggers:
            try:
                yield from self.lower(ins)
            except DockerfileError as exc:
                exc.span = self.stage.from_instr.node.span
                exc.message = f"ONBUILD {ins.node.original or ins.node.keyword}: {exc.message}"
                exc.args = (exc.message,)
                raise

    def lower(self, ins: Instruction) -> Iterator[Step]:
        """Lower one instruction (zero or one step) and advance the state."""
        if isinstance(ins, Arg):
            yield self._arg(ins)
        elif isinstance(ins, KeyValues):
            yield self._env_or_label(ins)
        elif isinstance(ins, Command):
            if ins.kind == "RUN":
                yield self._run(ins)
            else:
                yield self._cmd_like(ins)
        elif isinstance(ins, Copy):
            yield self._copy(ins)
        elif isinstance(ins, Single):
            yield self._single(ins)
        elif isinstance(ins, Words):
            yield self._words(ins)
        elif isinstance(ins, Healthcheck):
            yield self._healthcheck(ins)
        elif isinstance(ins, Onbuild):
            self.state = replace(self.state, onbuild=self.state.onbuild + (ins.expression,))
            yield ConfigStep(node=ins.node, kind="ONBUILD", state=self.state,
                             created_by="ONBUILD " + ins.expression, records_history=False)
        elif isinstance(ins, From):
            raise DockerfileError("FROM cannot be lowered inside a stage", ins.node.span)
        else:
            raise DockerfileError(f"unsupported instruction {type(ins).__name__}", None)

    # ---- helpers ---------------------------------------------------------------------------
    def _word(self, word: str, span: Span, used: set[str]) -> str:
        value, matches = self.expander.word(word, self._env, span)
        used |= matches
        return value

    def _used(self, names: set[str]) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((n, self._env[n]) for n in names if n in self._arg_names and n in self._env))

    # ---- instructions ----------------------------------------------------------------------
    def _arg(self, ins: Arg) -> ConfigStep:
        span = ins.node.span
        used: set[str] = set()
        value: str | None = ins.default
        if ins.name in self.build_args:
            value = self.build_args[ins.name]
        elif ins.default is not None:
            value = self._word(ins.default, span, used)
        elif ins.name in self._globals:
            value = self._globals[ins.name]
        step_used = self._used(used)
        if value is not None:
            self._env[ins.name] = value
            self._arg_names.add(ins.name)
        self._declared.append((ins.name, value))
        text = ins.name if value is None else f"{ins.name}={value}"
        return ConfigStep(node=ins.node, kind="ARG", state=self.state, created_by="ARG " + text,
                          used_args=step_used)

    def _env_or_label(self, ins: KeyValues) -> ConfigStep:
        span = ins.node.span
        used: set[str] = set()
        pairs = [(self._word(k, span, used), self._word(v, span, used)) for k, v in ins.pairs]
        step_used = self._used(used)
        state = self.state
        for key, value in pairs:
            if not key:
                raise DockerfileError(f"{ins.kind} names can not be blank", span)
            if ins.kind == "ENV":
                state = state.with_env(key, value)
                self._env[key] = value
                self._arg_names.discard(key)
            else:
                state = state.with_label(key, value)
        self.state = state
        created = ins.kind + "".join(f" {k}={v}" for k, v in pairs)
        return ConfigStep(node=ins.node, kind=ins.kind, state=state, created_by=created, used_args=step_used)

    def _shell_args(self, ins: Command) -> tuple[str, ...]:
        if ins.exec_form:
            return tuple(ins.args)
        return self.state.effective_shell + (" ".join(ins.args),)

    def _cmd_like(self, ins: Command) -> ConfigStep:
        if ins.kind == "CMD":
            args = self._shell_args(ins)
            self.state = replace(self.state, cmd=args, args_escaped=True)
            self._cmd_set = True
            created = "CMD " + gofmt.quote_list(args)
        elif ins.kind == "ENTRYPOINT":
            args = self._shell_args(ins)
            self.state = replace(self.state, entrypoint=args, cmd=self.state.cmd if self._cmd_set else None)
            created = "ENTRYPOINT " + gofmt.quote_list(args)
        elif ins.kind == "SHELL":
            if not ins.exec_form:
                raise DockerfileError("SHELL requires the arguments to be in JSON form", ins.node.span)
            if not ins.args:
                raise DockerfileError("SHELL requires at least one argument", ins.node.span)
            self.state = replace(self.state, shell=tuple(ins.args))
            created = "SHELL " + gofmt.value_list(ins.args)
        else:
            raise DockerfileError(f"unknown command {ins.kind}", ins.node.span)
        return ConfigStep(node=ins.node, kind=ins.kind, state=self.state, created_by=created)

    def _healthcheck(self, ins: Healthcheck) -> ConfigStep:
        test = ins.test if ins.test is not None else ("NONE",)
        hc = HealthConfig(test=tuple(test), interval=ins.interval or 0, timeout=ins.timeout or 0,
                          start_period=ins.start_period or 0, start_interval=ins.start_interval or 0,
                          retries=ins.retries or 0)
        self.state = replace(self.state, healthcheck=hc)
        # BuildKit: fmt.Sprintf("HEALTHCHECK %q", config) of a *HealthcheckConfig
        fields = [gofmt.quote_list(hc.test)] + [gofmt.quote(gofmt.duration(v)) for v in (
            hc.interval, hc.timeout, hc.start_period, hc.start_interval)] + [gofmt.quote_rune(hc.retries)]
        created = "HEALTHCHECK &{" + " ".join(fields) + "}"
        return ConfigStep(node=ins.node, kind="HEALTHCHECK", state=self.state, created_by=created)

    def _single(self, ins: Single) -> ConfigStep:
        span = ins.node.span
        used: set[str] = set()
        kind = ins.kind
        if kind == "MAINTAINER":
            self.state = replace(self.state, author=ins.value)
            return ConfigStep(node=ins.node, kind=kind, state=self.state, created_by="MAINTAINER " + ins.value)
        value = self._word(ins.value, span, used)
        step_used = self._used(used)
        if kind == "WORKDIR":
            if not value:
                raise DockerfileError("normalizing workdir: cannot normalize nothing", span)
            wd = normalize_workdir(self.state.working_dir, value)
            self.state = replace(self.state, working_dir=wd)
            return ConfigStep(node=ins.node, kind=kind, state=self.state, created_by="WORKDIR " + wd,
                              workdir_to_create=None if wd == "/" else wd, used_args=step_used)
        if kind == "USER":
            if not value:
                raise DockerfileError("USER requires a non-empty value", span)
            self.state = replace(self.state, user=value)
            return ConfigStep(node=ins.node, kind=kind, state=self.state, created_by="USER " + value,
                              used_args=step_used)
        if kind == "STOPSIGNAL":
            _validate_signal(value, span)
            self.state = replace(self.state, stop_signal=value)
            return ConfigStep(node=ins.node, kind=kind, state=self.state, created_by="STOPSIGNAL " + value,
                              used_args=step_used)
        raise DockerfileError(f"unknown instruction {kind}", span)

    def _words(self, ins: Words) -> ConfigStep:
        span = ins.node.span
        used: set[str] = set()
        if ins.kind == "EXPOSE":
            specs: list[str] = []
            for word in ins.values:
                values, matches = self.expander.words(word, self._env, span)
                used |= matches
                specs.extend(values)
            ports: list[str] = []
            for spec in specs:
                ports.extend(_parse_ports(spec, span))
            self.state = self.state.with_ports(tuple(ports))
            return ConfigStep(node=ins.node, kind="EXPOSE", state=self.state,
                              created_by="EXPOSE " + gofmt.value_list(ports), used_args=self._used(used))
        if ins.kind == "VOLUME":
            vols = [self._word(w, span, used) for w in ins.values]
            if any(v == "" for v in vols):
                raise DockerfileError("VOLUME specified can not be an empty string", span)
            self.state = self.state.with_volumes(tuple(vols))
            return ConfigStep(node=ins.node, kind="VOLUME", state=self.state,
                              created_by="VOLUME " + gofmt.value_list(vols), used_args=self._used(used))
        raise DockerfileError(f"unknown instruction {ins.kind}", span)

    def _run(self, ins: Command) -> RunStep:
        span = ins.node.span
        used: set[str] = set()
        mounts: list[MountSpec] = []
        for raw in ins.mounts:
            spec = parse_mount(raw, expand=lambda w: self._word(w, span, used),
                               workdir=self.state.working_dir, span=span, ssh_index=self._ssh_count)
            if spec.type == "ssh":
                self._ssh_count += 1
            if spec.from_ and spec.type != "tmpfs":
                idx, image = self.graph.resolve_source(spec.from_, self.stage.index, span)
                spec = replace(spec, from_stage=idx, from_image=image)
            mounts.append(spec)
        network = ins.network or "default"
        if network not in NETWORK_MODES:
            raise DockerfileError(f"unsupported network mode {network!r}", span)
        security = ins.security or "sandbox"
        if security not in SECURITY_MODES:
            raise DockerfileError(f"unsupported security mode {security!r}", span)

        files: tuple[InlineFile, ...] = ()
        if ins.exec_form:
            if ins.heredocs:
                raise DockerfileError("heredocs are not supported with the exec form of RUN", span)
            argv = tuple(ins.args)
        else:
            cmd = " ".join(ins.args)
            if ins.heredocs:
                only = re.match(_HEREDOC_ONLY, cmd)
                if only and len(ins.heredocs) >= 1:
                    doc = ins.heredocs[0]
                    if doc.content.startswith("#!"):
                        target = posixpath.join("/dev/pipes/", doc.name)
                        files = (InlineFile(target, doc.content, 0o755),)
                        cmd = target
                    else:
                        cmd = doc.content
                else:
                    cmd = cmd + "".join("\n" + h.content + h.name for h in ins.heredocs)
            argv = self.state.effective_shell + (cmd,)
        text, run_used = run_command_string(argv, self._declared, self._env)
        return RunStep(node=ins.node, argv=argv, env=tuple(self._env.items()), user=self.state.user,
                       workdir=self.state.working_dir or "/", network=network, security=security,
                       mounts=tuple(mounts), heredocs=tuple(ins.heredocs), created_by=f"RUN {text} # buildkit",
                       used_args=tuple(sorted(set(run_used) | set(self._used(used)))),
                       proxy_env=self.proxy_env(), files=files, shell_form=not ins.exec_form)

    def _copy(self, ins: Copy) -> CopyStep:
        span = ins.node.span
        used: set[str] = set()
        docs = {h.name: h for h in ins.heredocs}
        paths: list[str] = []
        contents: list[Heredoc] = []
        for src in ins.sources:
            m = re.match(_HEREDOC_SOURCE, src)
            if m and m.group(3) in docs:
                doc = docs[m.group(3)]
                if doc.expand:
                    content, matches = self.expander.raw(doc.content, self._env, span)
                    used |= matches
                    doc = replace(doc, content=content)
                contents.append(doc)
                continue
            paths.append(self._word(src, span, used))
        dest_raw = self._word(ins.dest, span, used)
        chown = self._word(ins.chown, span, used) if ins.chown else None
        chmod = self._word(ins.chmod, span, used) if ins.chmod else None
        if chmod:
            _validate_chmod(chmod, span)
        checksum = self._word(ins.checksum, span, used) if ins.checksum else None
        excludes = tuple(self._word(e, span, used) for e in ins.excludes)
        for p in paths:
            is_url = p.startswith(("http://", "https://"))
            if ins.kind == "COPY" and is_url:
                raise DockerfileError("source can't be a URL for COPY", span)
        if checksum:
            if ins.kind != "ADD":
                raise DockerfileError("checksum can't be specified for COPY", span)
            if len(paths) != 1 or contents:
                raise DockerfileError("checksum can't be specified for multiple sources", span)
            from ..inputs.urls import is_git_url

            if not (paths[0].startswith(("http://", "https://")) or is_git_url(paths[0])):
                raise DockerfileError("checksum requires HTTP(S) or Git sources", span)
        from_stage = from_image = None
        if ins.from_:
            from .graph import check_from_value

            check_from_value(ins.from_, self.expander, span)
            from_stage, from_image = self.graph.resolve_source(ins.from_, self.stage.index, span)
        if not paths and not contents:
            raise DockerfileError(f"{ins.kind} requires at least two arguments", span)

        created = [ins.kind]
        if ins.parents:
            created.append("--parents")
        if chown:
            created.append("--chown=" + chown)
        if chmod:
            created.append("--chmod=" + chmod)
        if any("@" in p for p in paths):  # URL credentials never in history
            from ..inputs.urls import redact

            paths_shown = [redact(p) for p in paths]
        else:
            paths_shown = paths
        created.extend(paths_shown)
        created.extend("<<" + h.name for h in contents)
        created.append(dest_raw)
        return CopyStep(node=ins.node, kind=ins.kind, sources=tuple(paths) + tuple(contents),
                        dest=resolve_dest(self.state.working_dir, dest_raw), created_by=" ".join(created) + " # buildkit",
                        from_stage=from_stage, from_image=from_image, chown=chown, chmod=chmod, link=ins.link,
                        parents=ins.parents, excludes=excludes, checksum=checksum, keep_git_dir=ins.keep_git_dir,
                        user=self.state.user, used_args=self._used(used))


__all__ = ["StageLowering", "StageScope", "onbuild_triggers", "normalize_workdir", "resolve_dest",
           "run_command_string", "PROXY_ARGS"]
