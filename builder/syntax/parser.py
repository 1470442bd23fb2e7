"""The Dockerfile front end's entry points: text or file to a :class:`Dockerfile` AST.

``parse_text`` / ``parse_file`` do the syntax only (what BuildKit's ``parser.Parse`` does):
directives, logical lines, heredocs, keyword/flags/args per node. They raise
:class:`DockerfileError` (span and source attached) for any bad input, and nothing else.
Instruction-level validation is :func:`builder.syntax.typed.to_instructions`, and the
"only ARG before FROM" rule is :func:`check_structure`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from ..errors import DockerfileError, PybuildError
from ..source import SourceFile, Span
from .ast import Dockerfile, Heredoc, Node

if TYPE_CHECKING:  # pragma: no cover
    from .instructions import Instruction
    from .lines import LineReader, LogicalLine

__all__ = ["parse_text", "parse_file", "check_structure"]

EMPTY_FILE = "file with no instructions"


def _node_for(logical: LogicalLine, reader: LineReader, source: SourceFile) -> Node:
    from .lines import heredoc_words
    from .transform import build_node, can_contain_heredoc

    span = Span(logical.first_line, logical.col, logical.last_line, max(reader.line_length(logical.last_line), 1))
    node = build_node(logical.text, span, reader.escape, source, logical.locate)
    if not can_contain_heredoc(node):
        return node
    specs = heredoc_words(logical.text)
    if not specs:
        return node
    docs: list[Heredoc] = []
    end = logical.last_line
    for name, expand, chomp, fd in specs:
        content, end = reader.read_heredoc(name, chomp, logical.first_line)
        docs.append(Heredoc(name=name, content=content, expand=expand, chomp=chomp, fd=fd))
    heredocs = tuple(docs)
    span = Span(span.line, span.col, end, max(reader.line_length(end), 1))
    inner = node.inner
    if inner is not None:
        inner = Node(inner.keyword, inner.args, Span(inner.span.line, inner.span.col, span.end_line, span.end_col),
                     inner.flags, inner.json, heredocs, inner.original, inner.inner)
    return Node(node.keyword, node.args, span, node.flags, node.json, heredocs, node.original, inner)


def check_structure(instrs: Sequence["Instruction"], source: SourceFile | None = None) -> None:
    """See :func:`builder.syntax.typed.check_structure` (re-exported here, imported lazily to keep
    ``pybuild parse`` start-up small)."""
    from .typed import check_structure as check

    check(instrs, source)


def parse_text(text: str, name: str = "Dockerfile") -> Dockerfile:
    """Parse Dockerfile ``text`` (``name`` is used in error messages).

    A leading BOM is dropped. Empty lines inside a continuation are skipped and reported in
    ``Dockerfile.warnings`` (the library never prints). Raises DockerfileError (span and source attached) for bad
    directives, unterminated heredocs, nested JSON arrays, ENV/LABEL without values and files
    with no instructions.
    """
    from .lines import LineReader  # with the grammar's modules: not imported when the parse cache hits

    if text.startswith("\ufeff"):
        text = text[1:]
    source = SourceFile(name, text)
    try:
        reader = LineReader(source, text)
        nodes: list[Node] = []
        while (logical := reader.next()) is not None:
            nodes.append(_node_for(logical, reader, source))
    except DockerfileError as exc:
        raise exc.with_source(source)
    if not nodes:  # located at the end of the file, as BuildKit does
        raise DockerfileError(EMPTY_FILE, Span(max(reader.line_number, 1)), source)
    return Dockerfile(source=source, nodes=tuple(nodes), escape=reader.escape, directives=reader.directives,
                      warnings=tuple(reader.warnings))


def parse_file(path: str, *, cache: bool = True, name: str | None = None) -> Dockerfile:
    """Read and parse the Dockerfile at ``path`` (UTF-8; invalid bytes are kept as
    surrogate escapes). Raises PybuildError naming the path when it cannot be read, and
    DockerfileError for bad content. With ``cache``, a text parsed before comes from the parse
    cache (:mod:`builder.syntax.parsecache`) without running the grammar. ``name`` is what
    messages call the file (default ``path``; a Dockerfile read from stdin or fetched into a
    temp dir is shown by its name in the context)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise PybuildError(f"cannot read Dockerfile {path}: {exc.strerror or exc}") from None
    from . import parsecache

    text = data.decode("utf-8", "surrogateescape")
    shown = name or path
    df = parsecache.load(text, shown) if cache else None
    if df is None:
        df = parse_text(text, name=shown)
        if cache:
            parsecache.save(text, shown, df)
    return df
