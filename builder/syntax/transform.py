"""One logical line to an AST :class:`~builder.syntax.ast.Node` (BuildKit's node layout).

The lark grammar (``grammar/dockerfile.lark``) splits the line into keyword, flag words and the
rest; the rest is then read according to the keyword (see the table in
``conformance/buildkit/README.md``): whitespace-split words, one string, a JSON array
(``grammar/json_array.lark``, with fallback to the shell form when the text is not valid JSON),
quote-aware words (``grammar/words.lark``) for ARG/ENV/LABEL, the HEALTHCHECK type word, or a
nested instruction for ONBUILD.

Raises :class:`DockerfileError` (with span) for a JSON array holding a non-string, ENV/LABEL
without a value, ENV/LABEL words without ``=``. Nothing else is validated here.
"""

from __future__ import annotations

import json
import re
from typing import Callable

from ..errors import DockerfileError
from ..source import SourceFile, Span
from . import grammar
from .ast import Node
from .lines import SPACES

_WS_SPLIT = re.compile(r"[\t\v\f\r ]+")
_SURROGATE = re.compile("[\ud800-\udfff]")

NESTED_JSON = "when using JSON array syntax, arrays must be comprised of strings only"

HEREDOC_KEYWORDS = frozenset({"run", "copy", "add"})


class _Fail(Exception):
    """Internal: a message and an offset into the logical line; converted by the caller."""

    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


def unquote_flag(raw: str, escape: str) -> str:
    """A flag word with quotes removed and escapes applied (BuildKit's flag word rules):
    quotes open/close without being kept, the escape character keeps the next character (also
    inside quotes), an escape character at the very end is dropped."""
    out: list[str] = []
    quote = ""
    i, n = 0, len(raw)
    while i < n:
        ch = raw[i]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape:
                if i + 1 < n:
                    i += 1
                    out.append(raw[i])
            else:
                out.append(ch)
        elif ch in "'\"":
            quote = ch
        elif ch == escape:
            if i + 1 < n:
                i += 1
                out.append(raw[i])
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def split_instruction(text: str, escape: str) -> tuple[str, list[tuple[str, int]], str, int]:
    """Split a logical line. Returns (keyword as written, [(flag, offset)], rest, rest offset).

    A flag word ``--`` ends the flags and is not returned.
    """
    stripped = text.rstrip(SPACES)
    lead = len(stripped) - len(stripped.lstrip(SPACES))
    stripped = stripped[lead:]
    from lark import Token, Tree

    tree = grammar.parser(grammar.INSTRUCTION, escape).parse(stripped)
    keyword = ""
    flags: list[tuple[str, int]] = []
    rest, rest_at = "", len(text)
    children = list(tree.children[0:1])
    if len(tree.children) > 1 and isinstance(tree.children[1], Tree):
        children.extend(tree.children[1].children)
    tokens = [t for t in children if isinstance(t, Token)]
    for tok in tokens:
        kind = tok.type
        if kind == "KEYWORD":
            keyword = str(tok)
        elif kind == "FLAG":
            value = unquote_flag(str(tok), escape)
            if value == "--":
                end = tok.end_pos or 0
                tail = stripped[end:]
                rest = tail.strip(SPACES)
                rest_at = lead + end + (len(tail) - len(tail.lstrip(SPACES)))
                break
            flags.append((value, lead + (tok.start_pos or 0)))
        elif kind == "REST":
            rest, rest_at = str(tok), lead + (tok.start_pos or 0)
    return keyword, flags, rest, rest_at


def parse_json_array(rest: str) -> list[str] | None:
    """The strings of a JSON array, or None when ``rest`` is not a valid JSON array.

    Raises _Fail(NESTED_JSON) for a valid array with a non-string element.
    """
    body = rest.lstrip(SPACES)
    if not body.startswith("["):
        return None
    from lark.exceptions import LarkError

    try:
        tree = grammar.parser(grammar.JSON_ARRAY).parse(body)
    except LarkError:
        return None
    values: list[str] = []
    for child in tree.children:
        if getattr(child, "type", None) != "STRING":
            raise _Fail(NESTED_JSON)
        s = json.loads(str(child))
        if _SURROGATE.search(s):  # Go replaces invalid UTF-16 (lone surrogates) with U+FFFD
            s = _SURROGATE.sub("\ufffd", s)
        values.append(s)
    return values


def split_words(rest: str, escape: str) -> list[str]:
    """Quote-aware words of ``rest`` (quotes and escapes kept), per ``grammar/words.lark``."""
    body = rest.strip(SPACES)
    if not body:
        return []
    tree = grammar.parser(grammar.WORDS, escape).parse(body)
    return [str(t) for t in tree.children]


def _whitespace_words(rest: str) -> list[str]:
    return [w for w in _WS_SPLIT.split(rest) if w] if rest else []


def _name_values(rest: str, key: str, escape: str) -> list[str]:
    words = split_words(rest, escape)
    if not words:
        return []
    if "=" not in words[0]:
        parts = _WS_SPLIT.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise _Fail(f"{key} must have two arguments")
        return [parts[0], parts[1], ""]
    out: list[str] = []
    for word in words:
        if "=" not in word:
            raise _Fail(f"Syntax error - can't find = in {_go_quote(word)}. Must be of the form: name=value",
                        max(rest.find(word), 0))
        k, v = word.split("=", 1)
        out += [k, v, "="]
    return out


def _go_quote(s: str) -> str:
    from .dump import go_quote

    return go_quote(s)


def _args_for(keyword: str, rest: str, escape: str) -> tuple[list[str], bool]:
    """The args of a known, non-ONBUILD instruction and whether they came from JSON."""
    if keyword in ("from", "expose"):
        return _whitespace_words(rest), False
    if keyword in ("add", "copy", "volume"):
        values = parse_json_array(rest)
        if values is not None:
            return values, True
        return _whitespace_words(rest), False
    if keyword in ("run", "cmd", "entrypoint", "shell"):
        if not rest:
            return [], False
        values = parse_json_array(rest)
        if values is not None:
            return values, True
        return [rest], False
    if keyword in ("maintainer", "user", "workdir", "stopsignal"):
        return ([rest] if rest else []), False
    if keyword == "arg":
        return split_words(rest, escape), False
    if keyword in ("env", "label"):
        return _name_values(rest, keyword.upper(), escape), False
    if keyword == "healthcheck":
        if not rest:
            return [], False
        sep = 0
        while sep < len(rest) and rest[sep] not in SPACES:
            sep += 1
        typ = rest[:sep]
        tail = rest[sep:].lstrip(SPACES)
        if not tail:
            return [typ], False
        values = parse_json_array(tail)
        if values is not None:
            return [typ, *values], True
        return [typ, tail], False
    return [""], False  # unknown instruction: BuildKit keeps one empty argument


#: ONBUILD may nest (BuildKit parses ``ONBUILD ONBUILD x`` and rejects it later); deeper than
#: this is refused at parse time so that no recursion limit is ever reached.
MAX_NESTING = 8


def build_node(text: str, span: Span, escape: str, source: SourceFile | None = None,
               locate: Callable[[int], tuple[int, int]] | None = None, depth: int = 0) -> Node:
    """The Node for one logical line ``text`` covering ``span``.

    ``locate(offset) -> (line, col)`` maps offsets of ``text`` to positions for errors (default:
    same line as ``span``, columns counted from ``span.col``). Raises DockerfileError.
    """
    if depth > MAX_NESTING:
        raise DockerfileError(f"ONBUILD nested more than {MAX_NESTING} levels deep", span, source)
    loc: Callable[[int], tuple[int, int]] = locate or (lambda offset: (span.line, span.col + offset))
    try:
        keyword, flags, rest, rest_at = split_instruction(text, escape)
    except Exception as exc:  # the grammar accepts every line; anything else is a bug made visible
        from lark.exceptions import LarkError

        if not isinstance(exc, LarkError):
            raise
        raise DockerfileError(f"cannot parse instruction: {exc}", span, source) from None
    lower = keyword.lower()
    inner: Node | None = None
    try:
        if lower == "onbuild":
            args: list[str] = []
            is_json = False
            if rest:
                line, col = loc(rest_at)
                inner_span = Span(line, col, span.end_line, span.end_col)
                inner = build_node(rest, inner_span, escape, source, lambda off: loc(rest_at + off), depth + 1)
        else:
            args, is_json = _args_for(lower, rest, escape)
    except _Fail as fail:
        line, col = loc(rest_at + fail.offset)
        raise DockerfileError(fail.message, Span(line, col, span.end_line, span.end_col), source) from None
    return Node(keyword=keyword.upper(), args=tuple(args), span=span, flags=tuple(f for f, _ in flags),
                json=is_json, original=text.strip(SPACES), inner=inner)


def can_contain_heredoc(node: Node) -> bool:
    """RUN/COPY/ADD in shell form, also as the trigger of ONBUILD."""
    if node.keyword == "ONBUILD" and node.inner is not None:
        node = node.inner
    return node.keyword.lower() in HEREDOC_KEYWORDS and not node.json

