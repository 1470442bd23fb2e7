"""The Dockerfile front end's entry points: text or file to a :class:`Dockerfile` AST.

``parse_text`` / ``parse_file`` do the syntax only (what BuildKit's ``parser.Parse`` does):
directives, logical lines, heredocs, keyword/flags/args per node. They raise
:class:`DockerfileError` (span and source attached) for any bad input, and nothing else.
Instruction-level validation is :func:`builder.syntax.typed.to_instructions`, and the
"only ARG before FROM" rule is :func:`check_structure`.
"""

from __future__ import annotations

import re

from ..errors import DockerfileError, PybuildError
from ..source import SourceFile, Span
from .ast import Dockerfile, Heredoc, Node
from .lines import LineReader, LogicalLine
from .transform import build_node, can_contain_heredoc

__all__ = ["parse_text", "parse_file", "check_structure", "heredoc_words"]

_HEREDOC_WORD = re.compile(r"^(\d*)<<(-?)\s*([^<]*)$")
_SHELL_BLANKS = " \t\n"
EMPTY_FILE = "file with no instructions"


def _shell_words(text: str) -> list[str]:
    """Split on unquoted blanks, keeping quotes and backslash escapes as written."""
    words: list[str] = []
    cur: list[str] = []
    in_word = False
    quote = ""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
            elif ch == "\\" and quote == '"' and i + 1 < n:
                i += 1
                cur.append(text[i])
        elif ch == "<" and text.startswith("<<", i):
            # BuildKit's lexer keeps blanks after "<<" in the word ("<< EOF" is a heredoc)
            in_word = True
            cur.append("<<")
            i += 2
            while i < n and text[i] in _SHELL_BLANKS:
                cur.append(text[i])
                i += 1
            continue
        elif ch in _SHELL_BLANKS:
            if in_word:
                words.append("".join(cur))
                cur, in_word = [], False
        else:
            in_word = True
            cur.append(ch)
            if ch in "'\"":
                quote = ch
            elif ch == "\\" and i + 1 < n:
                i += 1
                cur.append(text[i])
        i += 1
    if in_word:
        words.append("".join(cur))
    return words


def _unquote_shell(word: str) -> str:
    """Remove shell quotes and backslash escapes (no expansion)."""
    out: list[str] = []
    quote = ""
    i, n = 0, len(word)
    while i < n:
        ch = word[i]
        if quote == "'":
            if ch == "'":
                quote = ""
            else:
                out.append(ch)
        elif quote == '"':
            if ch == '"':
                quote = ""
            elif ch == "\\" and i + 1 < n and word[i + 1] in '"\\$`':
                i += 1
                out.append(word[i])
            else:
                out.append(ch)
        elif ch in "'\"":
            quote = ch
        elif ch == "\\" and i + 1 < n:
            i += 1
            out.append(word[i])
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def heredoc_words(text: str) -> list[tuple[str, bool, bool, int | None]]:
    """The heredocs a RUN/COPY/ADD line starts, in order: (name, expand, chomp, fd).

    A word ``[n]<<[-]NAME`` starts one (blanks after ``<<`` allowed); NAME may be quoted, in whole
    or in part (then ``expand`` is False; an escaped quote does not count). An empty NAME is not
    a heredoc. Variables are not expanded (``<<$EOF`` ends at a line ``$EOF``).
    """
    found: list[tuple[str, bool, bool, int | None]] = []
    if "<<" not in text:
        return found
    for word in _shell_words(text):
        match = _HEREDOC_WORD.match(word)
        if match is None or not match.group(3):
            continue
        raw = match.group(3)
        name = _unquote_shell(raw)
        if not name:
            continue
        expand = raw.count("'") + raw.count('"') == name.count("'") + name.count('"')
        fd = int(match.group(1)) if match.group(1) else None
        found.append((name, expand, match.group(2) == "-", fd))
    return found


def _node_for(logical: LogicalLine, reader: LineReader, source: SourceFile) -> Node:
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


def check_structure(instrs, source: SourceFile | None = None) -> None:  # type: ignore[no-untyped-def]
    """See :func:`builder.syntax.typed.check_structure` (re-exported here, imported lazily to keep
    ``pybuild parse`` start-up small)."""
    from .typed import check_structure as check

    check(instrs, source)


def parse_text(text: str, name: str = "Dockerfile") -> Dockerfile:
    """Parse Dockerfile ``text`` (``name`` is used in error messages).

    A leading BOM is dropped. Raises DockerfileError (span and source attached) for bad
    directives, unterminated heredocs, nested JSON arrays, ENV/LABEL without values and files
    with no instructions.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    source = SourceFile(name, text)
    reader: LineReader | None = None
    try:
        reader = LineReader(source, text)
        nodes: list[Node] = []
        while (logical := reader.next()) is not None:
            nodes.append(_node_for(logical, reader, source))
    except DockerfileError as exc:
        raise exc.with_source(source)
    except RecursionError:
        raise DockerfileError("instruction nested too deeply", Span(max(reader.line_number if reader else 1, 1)), source) from None
    if not nodes:
        raise DockerfileError(EMPTY_FILE, None, source)
    assert reader is not None
    return Dockerfile(source=source, nodes=tuple(nodes), escape=reader.escape, directives=reader.directives)


def parse_file(path: str) -> Dockerfile:
    """Read and parse the Dockerfile at ``path`` (UTF-8; invalid bytes are kept as
    surrogate escapes). Raises PybuildError naming the path when it cannot be read, and
    DockerfileError for bad content."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise PybuildError(f"cannot read Dockerfile {path}: {exc.strerror or exc}") from None
    return parse_text(data.decode("utf-8", "surrogateescape"), name=path)
