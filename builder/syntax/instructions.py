"""Typed instructions: what each Dockerfile instruction means, still unexpanded.

Produced from :class:`~builder.syntax.ast.Node` by :func:`builder.syntax.typed.to_instruction`
(which validates flags, argument counts, durations). Values are kept as written: variable
expansion needs the ARG/ENV scope and happens in :mod:`builder.plan`.
Every instruction carries its ``node`` (span, original text) for errors and history.
"""

from __future__ import annotations

from dataclasses import dataclass

from .ast import Heredoc, Node


@dataclass(frozen=True, slots=True)
class From:
    """FROM: the image (or stage) a stage starts from, its name and platform, as written."""

    node: Node
    image: str                      # unexpanded, e.g. "${BASE}:latest" or "scratch"
    stage_name: str | None = None   # lower-cased; None when no AS
    platform: str | None = None     # --platform value, unexpanded


@dataclass(frozen=True, slots=True)
class Arg:
    """ARG: a build argument's name and default, as written."""

    node: Node
    name: str
    default: str | None = None      # unexpanded; None when no "="


@dataclass(frozen=True, slots=True)
class KeyValues:
    """ENV or LABEL: pairs of (key, value), both still unexpanded and quoted as written."""

    node: Node
    kind: str                       # "ENV" or "LABEL"
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Command:
    """RUN, CMD, ENTRYPOINT or SHELL arguments.

    ``exec_form`` True: ``args`` is the JSON array. False: ``args`` is one shell string.
    For SHELL, exec form is required.
    """

    node: Node
    kind: str                       # "RUN", "CMD", "ENTRYPOINT", "SHELL"
    args: tuple[str, ...]
    exec_form: bool
    heredocs: tuple[Heredoc, ...] = ()
    # RUN only: raw --mount values, --network, --security
    mounts: tuple[str, ...] = ()
    network: str | None = None
    security: str | None = None


@dataclass(frozen=True, slots=True)
class Copy:
    """COPY or ADD. ``sources`` and ``dest`` are unexpanded; heredoc sources are in ``heredocs``
    and appear in ``sources`` as ``<<NAME``."""

    node: Node
    kind: str                       # "COPY" or "ADD"
    sources: tuple[str, ...]
    dest: str
    exec_form: bool = False
    heredocs: tuple[Heredoc, ...] = ()
    from_: str | None = None
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    parents: bool = False
    excludes: tuple[str, ...] = ()
    checksum: str | None = None     # ADD only
    keep_git_dir: bool = False      # ADD only


@dataclass(frozen=True, slots=True)
class Single:
    """WORKDIR, USER, STOPSIGNAL, MAINTAINER: one unexpanded string."""

    node: Node
    kind: str
    value: str


@dataclass(frozen=True, slots=True)
class Words:
    """EXPOSE or VOLUME: a list of unexpanded words."""

    node: Node
    kind: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Healthcheck:
    """HEALTHCHECK. ``test`` is None for NONE; otherwise Docker's Test array:
    ``("CMD", *argv)`` for exec form or ``("CMD-SHELL", cmd)`` for shell form.
    Durations in nanoseconds, None when not given."""

    node: Node
    test: tuple[str, ...] | None
    interval: int | None = None
    timeout: int | None = None
    start_period: int | None = None
    start_interval: int | None = None
    retries: int | None = None


@dataclass(frozen=True, slots=True)
class Onbuild:
    """ONBUILD: ``expression`` is the trigger's text as stored in the image config."""

    node: Node
    expression: str
    inner: "Instruction"


Instruction = From | Arg | KeyValues | Command | Copy | Single | Words | Healthcheck | Onbuild
