"""AST nodes to typed instructions (:mod:`builder.syntax.instructions`), with validation.

Checked here, per instruction: the keyword is known (else "unknown instruction: X (did you mean
Y?)"), argument counts, flags (known to the instruction, values, repetition), HEALTHCHECK
durations and retries, EXPOSE port syntax when no variable is involved, SHELL in JSON form,
ONBUILD triggers. Values stay unexpanded. Every error is a :class:`DockerfileError` carrying the
node's span (the flag's column for flag errors); the caller attaches the source.

ARG with several names (``ARG a b=c``) yields one :class:`Arg` per name from
:func:`to_instructions`; :func:`to_instruction` returns the first of them.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

from ..errors import DockerfileError
from ..source import SourceFile, Span
from .ast import Dockerfile, Node
from .instructions import (Arg, Command, Copy, From, Healthcheck, Instruction, KeyValues, Onbuild, Single,
                           Words)

KEYWORDS = ("ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
            "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR")

# flag name -> (kind, repeatable); kind is "str" or "bool"
_FLAGS: dict[str, dict[str, tuple[str, bool]]] = {
    "FROM": {"platform": ("str", False)},
    "RUN": {"mount": ("str", True), "network": ("str", False), "security": ("str", False)},
    "COPY": {"from": ("str", False), "chown": ("str", False), "chmod": ("str", False), "link": ("bool", False),
             "parents": ("bool", False), "exclude": ("str", True)},
    "ADD": {"chown": ("str", False), "chmod": ("str", False), "link": ("bool", False), "checksum": ("str", False),
            "keep-git-dir": ("bool", False), "exclude": ("str", True), "parents": ("bool", False)},
    "HEALTHCHECK": {"interval": ("str", False), "timeout": ("str", False), "start-period": ("str", False),
                    "start-interval": ("str", False), "retries": ("str", False)},
}
_ALL_FLAGS = sorted({name for table in _FLAGS.values() for name in table})

_STAGE_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$")
# HEALTHCHECK durations and EXPOSE ranges: compiled by re on first use, not at every start
_DURATION_PART = r"([0-9]*(?:\.[0-9]*)?)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)"
_UNIT_NS = {"ns": 1, "us": 1000, "\u00b5s": 1000, "\u03bcs": 1000, "ms": 1_000_000, "s": 1_000_000_000,
            "m": 60_000_000_000, "h": 3_600_000_000_000}
_MAX_DURATION = 2**63 - 1
_PORT_RE = r"^(\d+)(?:-(\d+))?$"


class _Flags:
    """Parsed flags of one node: name -> list of values (bools as "true"/"false")."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.values: dict[str, list[str]] = {}
        allowed = _FLAGS.get(node.keyword, {})
        for raw in node.flags:
            body = raw[2:]
            name, eq, value = body.partition("=")
            span = _flag_span(node, raw)
            if name not in allowed:
                if name in _ALL_FLAGS:
                    takers = [k for k, t in _FLAGS.items() if name in t]
                    raise DockerfileError(f"flag --{name} is not allowed on {node.keyword}"
                                          f" (it belongs to {', '.join(takers)})", span)
                hint = _did_you_mean(name, list(allowed))
                raise DockerfileError(f"unknown flag: --{name}" + (f" (did you mean --{hint}?)" if hint else "")
                                      + ("" if allowed else f"; {node.keyword} takes no flags"), span)
            kind, repeatable = allowed[name]
            if kind == "bool":
                if not eq:
                    value = "true"
                elif value.lower() in ("true", "false"):
                    value = value.lower()
                else:
                    raise DockerfileError(f"expecting boolean value for flag --{name}, not: {value}", span)
            elif not eq:
                raise DockerfileError(f"missing a value on flag: --{name}", span)
            if name in self.values and not repeatable:
                raise DockerfileError(f"duplicate flag specified: --{name}", span)
            self.values.setdefault(name, []).append(value)

    def value(self, name: str) -> str | None:
        vals = self.values.get(name)
        return vals[-1] if vals else None

    def on(self, name: str) -> bool:
        return self.value(name) == "true"

    def every(self, name: str) -> tuple[str, ...]:
        return tuple(self.values.get(name, ()))

    def span(self, name: str) -> Span:
        for raw in self.node.flags:
            if raw[2:].partition("=")[0] == name:
                return _flag_span(self.node, raw)
        return self.node.span


def _flag_span(node: Node, raw: str) -> Span:
    """Where flag ``raw`` is (its column when the instruction sits on one line)."""
    return _text_span(node, raw.partition("=")[0], len(raw))


def _text_span(node: Node, needle: str, length: int = 0) -> Span:
    """The span of the first ``needle`` in the node's text when the node is on one line; the
    node's span otherwise."""
    at = node.original.find(needle)
    span = node.span
    if at < 0 or span.end_line != span.line:
        return span
    return Span(span.line, span.col + at, span.line, span.col + at + max(length, len(needle)) - 1)


def _did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    import difflib

    matches = difflib.get_close_matches(word.lower(), [c.lower() for c in choices], n=1, cutoff=0.6)
    if not matches:
        return None
    for c in choices:
        if c.lower() == matches[0]:
            return c
    return None


def _err(node: Node, message: str) -> DockerfileError:
    return DockerfileError(message, node.span)


def parse_duration(text: str) -> int:
    """Go's ``time.ParseDuration`` in nanoseconds. Raises ValueError with Go's message."""
    from fractions import Fraction

    s = text
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    sign = 1
    if s[0] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    total = Fraction(0)
    pos = 0
    while pos < len(s):
        match = re.compile(_DURATION_PART).match(s, pos)  # re's cache: compiled once
        if match is None:
            if re.match(r"[0-9.]+$", s[pos:]):
                raise ValueError(f'time: missing unit in duration "{text}"')
            raise ValueError(f'time: invalid duration "{text}"')
        number, unit = match.groups()
        if number in ("", "."):
            raise ValueError(f'time: invalid duration "{text}"')
        total += Fraction(number) * _UNIT_NS[unit]
        pos = match.end()
    value = int(total)  # Go truncates fractions of a nanosecond
    if value > _MAX_DURATION:
        raise ValueError(f'time: invalid duration "{text}"')
    return sign * value


def _duration_flag(flags: _Flags, name: str) -> int | None:
    value = flags.value(name)
    if value is None or value == "":
        return None
    try:
        ns = parse_duration(value)
    except ValueError as exc:
        raise DockerfileError(f"invalid --{name} {value!r}: {exc} (use a Go duration such as 30s, 1m30s, 500ms)",
                              flags.span(name)) from None
    if ns == 0:
        return 0
    if ns < 1_000_000:
        raise DockerfileError(f"--{name} {value!r} cannot be less than 1ms (use 0 for the default)",
                              flags.span(name))
    return ns


def _check_expose(node: Node, word: str) -> None:
    if "$" in word:
        return  # needs expansion: checked after the plan expands it
    spec = word.rsplit(":", 1)[-1]  # an ip:hostport: prefix is tolerated
    port, slash, proto = spec.partition("/")
    if slash:
        if proto.lower() not in ("tcp", "udp", "sctp"):
            raise DockerfileError(f"invalid protocol {proto!r} in EXPOSE {word}: must be tcp, udp or sctp", _text_span(node, word))
        if not port:
            raise DockerfileError(f"invalid port in EXPOSE {word}: no port number before /{proto}", _text_span(node, word))
    match = re.match(_PORT_RE, port)
    if match is None:
        raise DockerfileError(f"invalid port {port!r} in EXPOSE: expected a number or a range like 8000-8010", _text_span(node, word))
    low = int(match.group(1))
    high = int(match.group(2)) if match.group(2) else low
    if low > 65535 or high > 65535 or high < low:
        raise DockerfileError(f"invalid port range {port!r} in EXPOSE: ports are 0-65535, low-high", _text_span(node, word))


def _require(node: Node, ok: bool, message: str) -> None:
    if not ok:
        raise _err(node, message)


def _at_least_one(node: Node) -> None:
    _require(node, len(node.args) > 0, f"{node.keyword} requires at least one argument")


def _exactly_one(node: Node) -> None:
    _require(node, len(node.args) == 1, f"{node.keyword} requires exactly one argument")


def _from(node: Node, flags: _Flags) -> From:
    args = node.args
    if not (len(args) == 1 or (len(args) == 3 and args[1].upper() == "AS")):
        raise _err(node, "FROM requires either one or three arguments (FROM image [AS name])")
    name = None
    if len(args) == 3:
        name = args[2].lower()
        if not _STAGE_NAME.match(name):
            raise _err(node, f"invalid name for build stage: {args[2]!r}, name can't start with a number"
                             " or contain symbols")
    return From(node, image=args[0], stage_name=name, platform=flags.value("platform"))


def _args(node: Node) -> list[Arg]:
    _at_least_one(node)
    out = []
    for word in node.args:
        name, eq, default = word.partition("=")
        if not name:
            raise _err(node, f"ARG names can not be blank: {word!r}")
        out.append(Arg(node, name=name, default=default if eq else None))
    return out


def _key_values(node: Node) -> KeyValues:
    _at_least_one(node)
    if len(node.args) % 3:
        raise _err(node, f"Bad input to {node.keyword}, too many arguments")
    pairs = []
    for i in range(0, len(node.args), 3):
        key = node.args[i]
        if not key:
            raise _err(node, f"{node.keyword} names can not be blank")
        pairs.append((key, node.args[i + 1]))
    return KeyValues(node, kind=node.keyword, pairs=tuple(pairs))


def _command(node: Node, flags: _Flags) -> Command:
    kind = node.keyword
    if kind == "RUN" and node.json:
        _at_least_one(node)  # an empty shell-form RUN is ``/bin/sh -c ""`` (BuildKit runs it)
    if kind == "SHELL":
        _at_least_one(node)
        _require(node, node.json, "SHELL requires the arguments to be in JSON form")
    if node.json:
        args = node.args
    else:
        args = (" ".join(node.args),)
    network = flags.value("network")
    if network is not None and "$" not in network and network not in ("default", "none", "host"):
        raise DockerfileError(f"network mode {network!r} not supported (default, none or host)",
                              flags.span("network"))
    security = flags.value("security")
    if security is not None and "$" not in security and security not in ("sandbox", "insecure"):
        raise DockerfileError(f"security mode {security!r} not supported (sandbox or insecure)",
                              flags.span("security"))
    return Command(node, kind=kind, args=tuple(args), exec_form=node.json, heredocs=node.heredocs,
                   mounts=flags.every("mount"), network=network, security=security)


def _copy(node: Node, flags: _Flags) -> Copy:
    kind = node.keyword
    if len(node.args) < 2:
        raise _err(node, f"{kind} requires at least two arguments, but only {len(node.args)} "
                         f"{'was' if len(node.args) == 1 else 'were'} provided. Destination could not be determined.")
    sources = node.args[:-1]
    if node.heredocs and not node.json:
        sources = tuple(_heredoc_source(node, s) for s in sources)
    return Copy(node, kind=kind, sources=sources, dest=node.args[-1], exec_form=node.json,
                heredocs=node.heredocs, from_=flags.value("from"), chown=flags.value("chown"),
                chmod=flags.value("chmod"), link=flags.on("link"), parents=flags.on("parents"),
                excludes=flags.every("exclude"), checksum=flags.value("checksum"),
                keep_git_dir=flags.on("keep-git-dir"))


def _heredoc_source(node: Node, arg: str) -> str:
    """``<<NAME`` for a source word that is one of the node's heredoc markers (``<<-"EOF"``,
    ``3<<EOF``...), the word unchanged otherwise."""
    from .lines import heredoc_words

    found = heredoc_words(arg)
    if len(found) == 1 and any(h.name == found[0][0] for h in node.heredocs):
        return "<<" + found[0][0]
    return arg


def _healthcheck(node: Node, flags: _Flags) -> Healthcheck:
    _at_least_one(node)
    typ = node.args[0].upper()
    rest = node.args[1:]
    if typ == "NONE":
        _require(node, not rest, "HEALTHCHECK NONE takes no arguments")
        return Healthcheck(node, test=None)
    if typ != "CMD":
        raise _err(node, f"Unknown type {node.args[0]!r} in HEALTHCHECK (try CMD)")
    if node.json:
        test: tuple[str, ...] = ("CMD", *rest)
        _require(node, bool(rest), "Missing command after HEALTHCHECK CMD")
    else:
        _require(node, bool(rest) and rest[0] != "", "Missing command after HEALTHCHECK CMD")
        test = ("CMD-SHELL", " ".join(rest))
    retries: int | None = None
    raw = flags.value("retries")
    if raw is not None and raw != "":
        try:
            retries = int(raw, 10)
            if retries >= 2**31:
                raise ValueError
        except ValueError:
            raise DockerfileError(f"invalid --retries {raw!r}: expected an integer", flags.span("retries")) from None
        if retries < 0:
            raise DockerfileError(f"--retries cannot be negative ({retries})", flags.span("retries"))
    return Healthcheck(node, test=test, interval=_duration_flag(flags, "interval"),
                       timeout=_duration_flag(flags, "timeout"),
                       start_period=_duration_flag(flags, "start-period"),
                       start_interval=_duration_flag(flags, "start-interval"), retries=retries)


def _onbuild(node: Node) -> Onbuild:
    inner = node.inner
    _require(node, inner is not None, "ONBUILD requires at least one argument")
    assert inner is not None
    if inner.keyword == "ONBUILD":
        raise _err(node, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if inner.keyword in ("FROM", "MAINTAINER"):
        raise _err(node, f"{inner.keyword} isn't allowed as an ONBUILD trigger")
    expression = re.sub(r"(?i)^\s*ONBUILD\s*", "", node.original)
    return Onbuild(node, expression=expression, inner=_convert(inner)[0])


def _convert(node: Node) -> list[Instruction]:
    kind = node.keyword
    if kind not in KEYWORDS:
        hint = _did_you_mean(kind, KEYWORDS)
        raise _err(node, f"unknown instruction: {kind}" + (f" (did you mean {hint}?)" if hint else ""))
    flags = _Flags(node)
    if kind == "FROM":
        return [_from(node, flags)]
    if kind == "ARG":
        return list(_args(node))
    if kind in ("ENV", "LABEL"):
        return [_key_values(node)]
    if kind in ("RUN", "CMD", "ENTRYPOINT", "SHELL"):
        return [_command(node, flags)]
    if kind in ("COPY", "ADD"):
        return [_copy(node, flags)]
    if kind in ("WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER"):
        _exactly_one(node)
        return [Single(node, kind=kind, value=node.args[0])]
    if kind in ("EXPOSE", "VOLUME"):
        _at_least_one(node)
        for word in node.args:
            if kind == "EXPOSE":
                _check_expose(node, word)
            elif not word.strip():
                raise _err(node, "VOLUME specified can not be an empty string")
        return [Words(node, kind=kind, values=node.args)]
    if kind == "HEALTHCHECK":
        return [_healthcheck(node, flags)]
    return [_onbuild(node)]


def to_instruction(node: Node) -> Instruction:
    """The typed instruction for ``node``. Raises DockerfileError (span of the node or flag;
    no source attached) when the instruction is invalid."""
    return _convert(node)[0]


def to_instructions(df: Dockerfile) -> tuple[Instruction, ...]:
    """All typed instructions of ``df`` in order (several for a multi-name ARG). Raises
    DockerfileError with ``df.source`` attached."""
    out: list[Instruction] = []
    try:
        for node in df.nodes:
            out.extend(_convert(node))
    except DockerfileError as exc:
        raise exc.with_source(df.source)
    return tuple(out)


def check_structure(instrs: Sequence[Instruction], source: SourceFile | None = None) -> None:
    """The file-level rules: at least one instruction, and nothing but ARG before the first
    FROM. Raises DockerfileError at the offending instruction (with ``source`` attached)."""
    if not instrs:
        raise DockerfileError("file with no instructions", None, source)
    for ins in instrs:
        if isinstance(ins, From):
            return
        if not isinstance(ins, Arg):
            raise DockerfileError(f"{ins.node.keyword} is not allowed before FROM: only ARG may come before the"
                                  " first FROM", ins.node.span, source)
    raise DockerfileError("no FROM instruction: a Dockerfile needs at least one build stage",
                          instrs[-1].node.span, source)
