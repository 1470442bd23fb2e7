"""The positioned parse tree: one :class:`Node` per logical instruction.

This is the layer BuildKit's ``parser`` package produces: words are split the way the
dump format (``parser/testfiles/*/result``) shows them, nothing is expanded, flags are not
validated. :mod:`builder.syntax.instructions` turns nodes into typed instructions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..source import SourceFile, Span


@dataclass(frozen=True, slots=True)
class Heredoc:
    """A heredoc attached to a RUN/COPY/ADD instruction.

    ``name`` is the delimiter word without quotes; ``expand`` is False when the delimiter was
    quoted (``<<'EOF'`` / ``<<"EOF"``); ``chomp`` is True for ``<<-`` (leading tabs removed from
    the body); ``fd`` is the file descriptor prefix (``3<<EOF``) or None. ``content`` is the body
    including its final newline, with tabs already stripped when ``chomp``.
    """

    name: str
    content: str
    expand: bool = True
    chomp: bool = False
    fd: int | None = None


@dataclass(frozen=True, slots=True)
class Node:
    """One logical instruction as parsed.

    ``keyword`` is upper-cased (``FROM``); ``flags`` are the leading ``--x`` words with quotes
    removed (``"--chown=a b"``), exactly as BuildKit's dump prints them; ``args`` are the
    argument strings as the dump prints them; ``json`` is True when the arguments came from a
    JSON array (exec form). ``original`` is the logical line as written (continuations joined,
    heredoc bodies excluded). ``inner`` is the nested instruction of ONBUILD. ``span`` runs from
    the first physical line to the last (heredoc bodies included).
    """

    keyword: str
    args: tuple[str, ...]
    span: Span
    flags: tuple[str, ...] = ()
    json: bool = False
    heredocs: tuple[Heredoc, ...] = ()
    original: str = ""
    inner: "Node | None" = None


@dataclass(frozen=True, slots=True)
class Dockerfile:
    """A parsed Dockerfile: directives, the escape character and the nodes in source order."""

    source: SourceFile
    nodes: tuple[Node, ...]
    escape: str = "\\"
    directives: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = field(default=())
