"""BuildKit's shell-word expansion (the ``shell.Lex`` of the Dockerfile frontend).

Contract (implemented below):

- ``ShellLex(escape="\\\\")``: the escape token is ``\\`` or a backtick.
- ``process_word(word, env) -> str``: expand one word; quotes are processed and removed,
  no word splitting. Raises :class:`builder.errors.ExpansionError` on bad syntax.
- ``process_words(word, env) -> list[str]``: expand then split on unquoted whitespace.
- ``process_word_with_matches(word, env) -> tuple[str, frozenset[str]]``: also the names of
  the variables that were looked up and found in ``env`` (used to know which ARGs a step used).

Behaviour follows BuildKit's ``frontend/dockerfile/shell/lex.go`` (checked against its
``envVarTest``/``wordsTest`` vectors and the inline tables of its ``lex_test.go``):

- Outside quotes the escape token escapes any character (an escaped blank does not split
  words); a trailing lone escape is dropped. Single quotes are literal. Inside double quotes
  the escape token escapes only ``"``, ``$`` and itself; before anything else it stays.
- ``$NAME``, ``${NAME}``; names are a letter or ``_`` followed by letters, digits or ``_``
  (Unicode letters and decimal digits count, as in Go's ``unicode.IsLetter``/``IsDigit``).
  ``$`` followed by digits reads all the digits (``$001``); ``$@ $* $# $? $- $$ $! $0`` are
  special parameters. None of those is ever set in a Dockerfile, so they expand to empty
  (unless ``env`` really has such a key). A ``$`` that cannot start a name stays literal.
- Modifiers ``:-  -  :+  +  :?  ?  #  ##  %  %%  /p/r  //p/r``. The word of a modifier is
  expanded eagerly, before the variable is tested (so an error inside it is raised even when
  the word is not used, and variables it names count as looked up), exactly as BuildKit.
- Patterns (``#``, ``%``, ``/``) are read with escapes kept, then read as a glob: ``*`` any
  string, ``?`` any character, ``\\*`` ``\\?`` ``\\\\`` literal, ``\\}`` ``\\/`` stand for ``}``
  ``/``; any other backslash escape is an error. Brackets are literal characters (BuildKit has
  no bracket expressions). ``#``/``%`` remove the shortest, ``##``/``%%`` the longest matching
  prefix/suffix; ``/`` replaces the leftmost-longest match, ``//`` every non-overlapping match
  (an empty match right after a previous match is skipped, as Go's ``ReplaceAllString``).
  The replacement is inserted literally, with escapes kept (``${F//\\//\\/}`` turns ``/`` into
  ``\\/``).
- Word splitting (``process_words``): unquoted whitespace, including whitespace produced by
  an unquoted ``$`` expansion (even one whose modifier word was quoted), separates words;
  quoted text and escaped characters never split; empty words are dropped.

Deliberate differences from BuildKit, all on inputs that are errors or nonsense there:
``${+x}``-style substitutions with an empty name are a "bad substitution" error (BuildKit
silently looks up the empty name); an unterminated ``${NAME`` reports "missing '}'" rather
than "unsupported modifier"; ``//`` inserts its replacement literally where Go would expand
``$1``/``$$`` template references coming from variable values; nesting is limited to
``MAX_DEPTH`` levels so hostile input cannot exhaust the Python stack.

Errors are :class:`ExpansionError` without a span (the caller attaches it), worded like
BuildKit: ``failed to process "<word>": <reason>``. ``${X?msg}`` gives ``X: msg`` as the reason
(``X: is not allowed to be unset`` / ``X: is not allowed to be empty`` without a message).

The lexer holds no per-call state: one instance may be shared, also between threads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ExpansionError

__all__ = ["ShellLex", "Expansion", "MAX_DEPTH"]

#: How deeply ``${...}`` substitutions may nest before the word is rejected.
MAX_DEPTH = 64

# Go's unicode.IsSpace (the Unicode White_Space property); Python's str.isspace() differs
# (it also accepts U+001C..U+001F), so the set is spelled out.
_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)
_SPECIAL_PARAMS = frozenset("@*#?-$!0")
_MODIFIERS = frozenset("+-?#%")

_PLAIN_RUNS: dict[tuple[str, str | None, bool], re.Pattern[str]] = {}


def _plain_run(esc: str, stop: str | None, quotes: bool) -> re.Pattern[str]:
    """A regex matching a run of characters with no meaning in this context (compiled once)."""
    key = (esc, stop, quotes)
    pattern = _PLAIN_RUNS.get(key)
    if pattern is None:
        special = "$" + esc + (stop or "") + ("'\"" if quotes else "")
        pattern = _PLAIN_RUNS[key] = re.compile("[^" + re.escape(special) + "]*")
    return pattern


# Glob tokens other than literal characters (which are one-character strings).
_STAR = 0
_ANY = 1


@dataclass(frozen=True, slots=True)
class Expansion:
    """Everything one expansion produced.

    ``result``: the expanded word (quotes removed, no splitting); ``words``: the same text split
    as :meth:`ShellLex.process_words` does; ``matched``/``unmatched``: names looked up that
    were / were not present in the environment.
    """

    result: str
    words: tuple[str, ...]
    matched: frozenset[str]
    unmatched: frozenset[str]


class _Fail(Exception):
    """Internal: a reason for failure; turned into ExpansionError at the public boundary."""


class _Words:
    """BuildKit's word splitter state: text is fed as splittable or as raw (never splits)."""

    __slots__ = ("words", "word", "in_word")

    def __init__(self) -> None:
        self.words: list[str] = []
        self.word = ""
        self.in_word = False

    def add_text(self, text: str) -> None:
        """Feed unquoted text: whitespace ends the current word, other characters extend it."""
        for ch in text:
            if ch in _SPACE:
                # A word opened by an empty quoted string ("") is not ended by a blank.
                if self.in_word and self.word:
                    self.words.append(self.word)
                    self.word = ""
                    self.in_word = False
            else:
                self.word += ch
                self.in_word = True

    def add_raw(self, text: str) -> None:
        """Feed quoted or escaped text: it joins the current word whatever it contains."""
        self.word += text
        self.in_word = True

    def finish(self) -> tuple[str, ...]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return tuple(self.words)


class _Run:
    """One expansion of one word: a cursor over the text plus the lookups made so far."""

    __slots__ = ("text", "n", "i", "env", "esc", "quotes", "matched", "unmatched", "depth")

    def __init__(self, text: str, env: Mapping[str, str], esc: str, quotes: bool) -> None:
        self.text = text
        self.n = len(text)
        self.i = 0
        self.env = env
        self.esc = esc
        self.quotes = quotes
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()
        self.depth = 0

    # -- environment --------------------------------------------------------------------

    def lookup(self, name: str) -> tuple[str, bool]:
        """The value of ``name`` and whether it is set; records the lookup."""
        try:
            value = self.env[name]
        except KeyError:
            self.unmatched.add(name)
            return "", False
        self.matched.add(name)
        return value, True

    # -- scanning -----------------------------------------------------------------------

    def until(self, stop: str | None, raw: bool, words: _Words | None) -> str:
        """Expand from the cursor up to ``stop`` (consumed) or, if ``stop`` is None, the end.

        ``raw`` keeps escape tokens in the output (used for patterns and replacements).
        Raises _Fail if ``stop`` is never found.
        """
        text, n, esc, quotes = self.text, self.n, self.esc, self.quotes
        out: list[str] = []
        while self.i < n:
            ch = text[self.i]
            if ch == stop:
                self.i += 1
                return "".join(out)
            if ch == "$":
                value = self.dollar(raw)
                out.append(value)
                if words is not None:
                    words.add_text(value)
            elif quotes and ch == "'":
                value = self.single_quoted()
                out.append(value)
                if words is not None:
                    words.add_raw(value)
            elif quotes and ch == '"':
                value = self.double_quoted(raw)
                out.append(value)
                if words is not None:
                    words.add_raw(value)
            elif ch == esc:
                self.i += 1
                if raw:
                    out.append(ch)
                    if words is not None:
                        words.add_raw(ch)
                if self.i >= n:
                    break  # a lone escape at the very end is dropped
                ch = text[self.i]
                self.i += 1
                out.append(ch)
                if words is not None:
                    words.add_raw(ch)
            else:
                # A run of ordinary characters in one slice.
                start = self.i
                match = _plain_run(esc, stop, quotes).match(text, start + 1)
                j = match.end() if match is not None else start + 1
                self.i = j
                chunk = text[start:j]
                out.append(chunk)
                if words is not None:
                    words.add_text(chunk)
        if stop is not None:
            raise _Fail(f"unexpected end of statement while looking for matching {stop}")
        return "".join(out)

    def single_quoted(self) -> str:
        """Cursor on ``'``: everything up to the next ``'`` verbatim."""
        end = self.text.find("'", self.i + 1)
        if end < 0:
            raise _Fail("unexpected end of statement while looking for matching single-quote")
        value = self.text[self.i + 1:end]
        self.i = end + 1
        return value

    def double_quoted(self, raw: bool) -> str:
        """Cursor on ``"``: expand ``$`` and the escapes of ``"``, ``$`` and the escape token."""
        text, n, esc = self.text, self.n, self.esc
        self.i += 1
        out: list[str] = []
        while True:
            if self.i >= n:
                raise _Fail("unexpected end of statement while looking for matching double-quote")
            ch = text[self.i]
            if ch == '"':
                self.i += 1
                return "".join(out)
            if ch == "$":
                out.append(self.dollar(raw))
                continue
            self.i += 1
            if ch == esc:
                if raw:
                    out.append(ch)
                if self.i >= n:
                    continue  # reported as an unterminated quote by the next turn
                nxt = text[self.i]
                if nxt == '"' or nxt == "$" or nxt == esc:
                    ch = nxt
                    self.i += 1
            out.append(ch)

    def name(self) -> str:
        """Read a parameter name at the cursor ('' if none starts here)."""
        text, n = self.text, self.n
        start = self.i
        if start >= n:
            return ""
        ch = text[start]
        if ch.isdecimal():
            j = start + 1
            while j < n and text[j].isdecimal():
                j += 1
            self.i = j
            return text[start:j]
        if ch in _SPECIAL_PARAMS:
            self.i = start + 1
            return ch
        j = start
        while j < n:
            c = text[j]
            if not (c == "_" or c.isalpha() or c.isdecimal()):
                break
            j += 1
        self.i = j
        return text[start:j]

    def dollar(self, raw: bool) -> str:
        """Cursor on ``$``: expand ``$NAME`` or ``${...}``."""
        text, n = self.text, self.n
        self.i += 1
        if self.i >= n or text[self.i] != "{":
            name = self.name()
            if not name:
                return "$"
            return self.lookup(name)[0]

        self.i += 1
        if self.i >= n:
            raise _Fail("syntax error: missing '}'")
        if text[self.i] in "{}:":
            raise _Fail("syntax error: bad substitution")
        name = self.name()
        if self.i >= n:
            raise _Fail("syntax error: missing '}'")
        if not name:
            raise _Fail("syntax error: bad substitution")
        op = text[self.i]
        self.i += 1
        if op == "}":
            return self.lookup(name)[0]

        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Fail(f"substitutions nested deeper than {MAX_DEPTH} levels")
        try:
            if op == "/":
                return self.replace(name)
            return self.modifier(name, op, raw)
        finally:
            self.depth -= 1

    def modifier(self, name: str, op: str, raw: bool) -> str:
        """After ``${NAME`` and ``op`` (one of ``: + - ? # %``): read the word, apply."""
        null_is_unset = False
        spelled = op
        if op == ":":
            null_is_unset = True
            if self.i >= self.n:
                raise _Fail("syntax error: missing '}'")
            op = self.text[self.i]
            self.i += 1
            spelled += op
        elif op not in _MODIFIERS:
            raise _Fail(f"unsupported modifier ({spelled}) in substitution")

        word = self.word_until("}", op == "#" or op == "%", "syntax error: missing '}'")
        value, is_set = self.lookup(name)
        empty = not is_set or (null_is_unset and value == "")

        if op == "-":
            return word if empty else value
        if op == "+":
            return "" if empty else word
        if op == "?":
            if not is_set:
                raise _Fail(f"{name}: {word or 'is not allowed to be unset'}")
            if empty:
                raise _Fail(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if op == "#" or op == "%":
            longest = word[:1] == op
            if longest:
                word = word[1:]
            tokens = _compile_glob(word)
            if op == "#":
                end = _match_prefix(tokens, value, 0, longest)
                return value if end is None else value[end:]
            rev = value[::-1]
            end = _match_prefix(tokens[::-1], rev, 0, longest)
            return value if end is None else rev[end:][::-1]
        raise _Fail(f"unsupported modifier ({spelled}) in substitution")

    def replace(self, name: str) -> str:
        """After ``${NAME/``: ``pattern/replacement}`` (one more ``/`` first means all)."""
        every = self.i < self.n and self.text[self.i] == "/"
        if every:
            self.i += 1
        pattern = self.word_until("/", True, "syntax error: missing '/' in ${}")
        replacement = self.word_until("}", True, "syntax error: missing '}'")
        value, _ = self.lookup(name)
        tokens = _compile_glob(pattern)
        if every:
            return _replace_all(tokens, value, replacement)
        span = _search(tokens, value, 0)
        if span is None:
            return value
        return value[:span[0]] + replacement + value[span[1]:]

    def word_until(self, stop: str, raw: bool, at_eof: str) -> str:
        """Expand a modifier's word up to ``stop``; a failure at the end reads as ``at_eof``."""
        try:
            return self.until(stop, raw, None)
        except _Fail:
            if self.i >= self.n:
                raise _Fail(at_eof) from None
            raise


# -- glob patterns ---------------------------------------------------------------------------


def _compile_glob(pattern: str) -> tuple[str | int, ...]:
    """Turn a raw pattern into tokens: one-character literals, _STAR and _ANY."""
    tokens: list[str | int] = []
    j, n = 0, len(pattern)
    while j < n:
        ch = pattern[j]
        j += 1
        if ch == "*":
            if not tokens or tokens[-1] != _STAR:  # ** is *
                tokens.append(_STAR)
        elif ch == "?":
            tokens.append(_ANY)
        elif ch == "\\":
            nxt = pattern[j] if j < n else ""
            if nxt == "}" or nxt == "/":
                continue  # the escape only kept it from ending the ${}; the char is literal
            if nxt not in ("*", "?", "\\"):  # also a lone backslash at the end
                shown = "\\" + nxt if nxt else "\\ at end"
                raise _Fail(f"invalid pattern ({pattern}) in substitution: invalid escape '{shown}'")
            tokens.append(nxt)
            j += 1
        else:
            tokens.append(ch)
    return tuple(tokens)


def _match_prefix(tokens: tuple[str | int, ...], value: str, start: int, longest: bool) -> int | None:
    """End index of the shortest (or longest) match of ``tokens`` at ``value[start:]``, or None.

    A small NFA simulation: states are token indices; a _STAR state loops on any character and
    may be skipped. O(len(value) * len(tokens)), no backtracking.
    """
    m = len(tokens)
    literal = _literal(tokens)
    if literal is not None:
        return start + len(literal) if value.startswith(literal, start) else None
    states = _closure((0,), tokens)
    best: int | None = start if m in states else None
    if best is not None and not longest:
        return best
    for pos in range(start, len(value)):
        ch = value[pos]
        nxt: set[int] = set()
        for k in states:
            if k == m:
                continue
            tok = tokens[k]
            if tok == _STAR:
                nxt.add(k)
            elif tok == _ANY or tok == ch:
                nxt.add(k + 1)
        if not nxt:
            break
        states = _closure(nxt, tokens)
        if m in states:
            best = pos + 1
            if not longest:
                return best
    return best


def _closure(states: tuple[int, ...] | set[int], tokens: tuple[str | int, ...]) -> set[int]:
    """Add to ``states`` every state reachable by skipping stars (matching them empty)."""
    out = set(states)
    m = len(tokens)
    for k in states:
        while k < m and tokens[k] == _STAR:
            k += 1
            out.add(k)
    return out


def _literal(tokens: tuple[str | int, ...]) -> str | None:
    """The pattern as a plain string when it has no wildcard, else None."""
    if _STAR in tokens or _ANY in tokens:
        return None
    return "".join(tokens)  # type: ignore[arg-type]  # only str tokens remain


def _search(tokens: tuple[str | int, ...], value: str, start: int) -> tuple[int, int] | None:
    """The leftmost match at or after ``start``, longest at that position, or None."""
    literal = _literal(tokens)
    if literal is not None:
        pos = value.find(literal, start)
        return None if pos < 0 else (pos, pos + len(literal))
    for pos in range(start, len(value) + 1):
        end = _match_prefix(tokens, value, pos, True)
        if end is not None:
            return pos, end
    return None


def _replace_all(tokens: tuple[str | int, ...], value: str, replacement: str) -> str:
    """Replace every non-overlapping match, left to right, as Go's ReplaceAllString does.

    After each match the search moves on by at least one character; an empty match that
    touches the end of the previous match is not replaced (so ``*`` replaces once).
    """
    out: list[str] = []
    search = 0
    last_end = 0
    n = len(value)
    while search <= n:
        span = _search(tokens, value, search)
        if span is None:
            break
        a, b = span
        out.append(value[last_end:a])
        if b > last_end or a == 0:
            out.append(replacement)
        last_end = b
        search = b if b > search else search + 1
    out.append(value[last_end:])
    return "".join(out)


def _quote(word: str) -> str:
    """A word shown in an error message, double-quoted like Go's %q for plain text."""
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class ShellLex:
    """Expands Dockerfile words the way BuildKit does. Stateless between calls; thread-safe.

    ``escape`` is the Dockerfile's escape token (``\\`` or a backtick); anything else raises
    ValueError (a caller bug: the parser validates the ``# escape=`` directive).
    ``process_quotes=False`` treats quotes as ordinary characters (BuildKit's
    ``SkipProcessQuotes``, used when expanding the body of a heredoc); escapes and ``$`` still
    work.

    Every method raises :class:`ExpansionError` (no span; the caller attaches one) for bad
    syntax or a failed ``${X?msg}``; nothing else escapes for any ``str`` input.
    """

    __slots__ = ("escape", "process_quotes")

    def __init__(self, escape: str = "\\", *, process_quotes: bool = True) -> None:
        if escape not in ("\\", "`"):
            raise ValueError(f"escape token must be a backslash or a backtick, not {escape!r}")
        self.escape = escape
        self.process_quotes = process_quotes

    def expand(self, word: str, env: Mapping[str, str], *, split: bool = True) -> Expansion:
        """Expand ``word`` once and return everything: result, words, matched/unmatched names.

        With ``split=False`` the ``words`` field is left empty (saves the splitting work).
        """
        if _plain_run(self.escape, None, self.process_quotes).fullmatch(word):
            # Nothing to expand (the common case): skip the scanner.
            if not split:
                return Expansion(word, (), frozenset(), frozenset())
            plain = _Words()
            plain.add_text(word)
            return Expansion(word, plain.finish(), frozenset(), frozenset())
        run = _Run(word, env, self.escape, self.process_quotes)
        words = _Words() if split else None
        try:
            result = run.until(None, False, words)
        except _Fail as exc:
            raise ExpansionError(f"failed to process {_quote(word)}: {exc}") from None
        return Expansion(
            result=result,
            words=words.finish() if words is not None else (),
            matched=frozenset(run.matched),
            unmatched=frozenset(run.unmatched),
        )

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """Expand one word: quotes processed and removed, no splitting."""
        return self.expand(word, env, split=False).result

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """Expand then split on unquoted whitespace (also whitespace from unquoted ``$``).

        Empty words are dropped, so ``""`` alone gives ``[]``.
        """
        return list(self.expand(word, env).words)

    def process_word_with_matches(self, word: str, env: Mapping[str, str]) -> tuple[str, frozenset[str]]:
        """Like :meth:`process_word`, plus the names looked up that are present in ``env``."""
        exp = self.expand(word, env, split=False)
        return exp.result, exp.matched
