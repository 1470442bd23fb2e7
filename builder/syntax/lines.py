"""Physical lines to logical instructions.

What happens here (BuildKit's line handling):

- a UTF-8 BOM at the start of the text is dropped by the caller (:mod:`builder.syntax.parser`);
  lines end at ``\\n`` and one ``\\r`` before it is dropped;
- parser directives (``# syntax=``, ``# escape=``, ``# check=``; key case-insensitive, blanks
  around ``=`` allowed) are read from the leading block of ``#`` lines only: the first line that
  is not a known directive ends the block. A repeated directive or an escape value other than a
  backslash or a backtick raises :class:`DockerfileError`;
- comment lines (first non-blank character ``#``) are dropped, also inside continuations;
- a line whose last non-blank character is an unescaped escape character continues on the next
  line: the escape character (and the blanks after it) are removed and the lines are joined with
  nothing in between; blank lines inside a continuation are skipped; a continuation may end at
  EOF. The first line of an instruction loses its leading whitespace;
- heredoc bodies are read on request (:meth:`LineReader.read_heredoc`), because only the caller
  knows whether the instruction can take heredocs; :func:`heredoc_words` finds the markers
  (``[n]<<[-]NAME``) in an instruction's text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import DockerfileError
from ..source import SourceFile, Span

#: Whitespace for trimming: Go's unicode.IsSpace (which BuildKit uses) plus U+001C..U+001F, so
#: that it is exactly the set of Python's ``\s`` that the grammars use.
SPACES = "\t\n\v\f\r \x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007" \
         "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"

DIRECTIVE_KEYS = ("syntax", "escape", "check")
_DIRECTIVE_RE = re.compile(r"^#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*$")
_SHELL_BLANKS = " \t\n"


@dataclass(frozen=True, slots=True)
class LogicalLine:
    """One logical instruction line.

    ``text`` is the joined text (first line without leading whitespace, continuation escapes
    removed). ``first_line``/``last_line`` are the 1-based physical lines it covers (comment and
    blank lines inside the continuation included). ``segments`` maps offsets in ``text`` to
    positions: ``(offset, physical line, column of that offset)`` for each joined piece.
    """

    text: str
    first_line: int
    last_line: int
    segments: tuple[tuple[int, int, int], ...]

    @property
    def col(self) -> int:
        """1-based column of the first character of ``text`` on ``first_line``."""
        return self.segments[0][2] if self.segments else 1

    def locate(self, offset: int) -> tuple[int, int]:
        """The (physical line, column) of character ``offset`` of ``text``."""
        line, col = self.first_line, self.col
        for start, seg_line, seg_col in self.segments:
            if start > offset:
                break
            line, col = seg_line, seg_col + (offset - start)
        return line, col


def _split_lines(text: str) -> list[str]:
    """Physical lines without terminators (one trailing CR dropped)."""
    parts = text.split("\n")
    if parts and parts[-1] == "":
        parts.pop()
    return [p[:-1] if p.endswith("\r") else p for p in parts]


def is_comment(line: str) -> bool:
    """True for a line whose first non-blank character is ``#``."""
    return line.lstrip(SPACES).startswith("#")


def trim_continuation(line: str, escape: str) -> tuple[str, bool]:
    """Remove a continuation escape. Returns (text, continues).

    The line continues when, after trailing blanks (space, tab), it ends with an escape
    character that is not itself preceded by an escape character (BuildKit's rule: an escaped
    escape ``\\\\`` at the end is not a continuation, and neither is ``\\\\\\``).
    """
    body = line.rstrip(" \t")
    if not body.endswith(escape):
        return line, False
    if len(body) > 1 and body[-2] == escape:
        return line, False
    return body[:-1], True


def read_directives(lines: list[str], source: SourceFile) -> tuple[tuple[tuple[str, str], ...], str]:
    """Parse the leading directive block. Returns (directives in order, escape character).

    Raises DockerfileError for a repeated directive or an invalid escape value.
    """
    found: list[tuple[str, str]] = []
    escape = "\\"
    for number, raw in enumerate(lines, start=1):
        line = raw.lstrip(SPACES)
        match = _DIRECTIVE_RE.match(line)
        if match is None:
            break
        key = match.group(1).lower()
        if key not in DIRECTIVE_KEYS:
            break
        value = match.group(2)
        col = len(raw) - len(line) + 1
        if any(k == key for k, _ in found):
            raise DockerfileError(f"only one {key} parser directive can be used",
                                  Span(number, col, number, len(raw)), source)
        if key == "escape":
            if value not in ("\\", "`"):
                vcol = raw.rfind(value) + 1
                raise DockerfileError(f"invalid escape token '{value}' does not match ` or \\",
                                      Span(number, vcol, number, len(raw)), source)
            escape = value
        found.append((key, value))
    return tuple(found), escape


class LineReader:
    """Reads logical lines from a source file, in order.

    ``directives`` and ``escape`` are known once the reader is built (the constructor raises
    DockerfileError for bad directives). Call :meth:`next` until it returns None; after a line
    that starts heredocs, call :meth:`read_heredoc` once per heredoc, in order.
    """

    def __init__(self, source: SourceFile, text: str) -> None:
        self.source = source
        self._lines = _split_lines(text)
        self.directives, self.escape = read_directives(self._lines, source)
        self._pos = 0  # index of the next physical line to read
        self.warnings: list[str] = []  # non-fatal findings, in order

    @property
    def line_number(self) -> int:
        """The 1-based number of the last physical line consumed (0 before any)."""
        return self._pos

    def line_length(self, line: int) -> int:
        """Length of physical line ``line`` (1-based), 0 when out of range."""
        return len(self._lines[line - 1]) if 1 <= line <= len(self._lines) else 0

    def next(self) -> LogicalLine | None:
        """The next logical line, or None at the end of the file."""
        lines, escape = self._lines, self.escape
        n = len(lines)
        while self._pos < n:
            raw = lines[self._pos]
            self._pos += 1
            first = self._pos
            stripped = raw.lstrip(SPACES)
            if stripped.startswith("#"):
                continue
            text, continues = trim_continuation(stripped, escape)
            if not continues and not text.strip(SPACES):
                continue
            parts = [text]
            segments = [(0, first, len(raw) - len(stripped) + 1)]
            offset = len(text)
            while continues and self._pos < n:
                raw = lines[self._pos]
                self._pos += 1
                if is_comment(raw):
                    continue
                if not raw.strip(SPACES):
                    self.warnings.append(f"{self.source.name}:{self._pos}: empty continuation line in the "
                                         f"instruction starting on line {first} (BuildKit warns it will "
                                         "become an error)")
                    continue
                text, continues = trim_continuation(raw, escape)
                segments.append((offset, self._pos, 1))
                parts.append(text)
                offset += len(text)
            joined = "".join(parts)
            if not joined.strip(SPACES):
                continue
            return LogicalLine(joined, first, self._pos, tuple(segments))
        return None

    def read_heredoc(self, name: str, chomp: bool, start_line: int) -> tuple[str, int]:
        """Consume a heredoc body up to the line equal to ``name`` (leading tabs ignored when
        ``chomp``). Returns (content, line number of the terminator).

        ``content`` is the body with ``\n`` after each line (CRLF read as LF; "" for an empty
        body), leading tabs removed from each line when ``chomp``. Raises
        DockerfileError "unterminated heredoc" at ``start_line`` when the file ends first.
        """
        lines = self._lines
        body: list[str] = []
        while self._pos < len(lines):
            raw = lines[self._pos]
            self._pos += 1
            candidate = raw.lstrip("\t") if chomp else raw
            if candidate == name:
                return self._join_body(body), self._pos
            body.append(candidate)
        raise DockerfileError(f"unterminated heredoc {name}: no line {name!r} before the end of the file",
                              Span(start_line, 1, self._pos or start_line, 0), self.source)

    def _join_body(self, body: list[str]) -> str:
        if not body:
            return ""
        return "\n".join(body) + "\n"


# --- heredoc markers -------------------------------------------------------------------------

_HEREDOC_WORD = re.compile(r"^(\d*)<<(-?)\s*([^<]*)$")


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
