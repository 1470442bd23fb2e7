""".dockerignore parsing and matching, with the pattern language shared by COPY sources.

Facts followed (moby/patternmatcher, BuildKit's context sender):

* Reading (``parse_ignore_text``): a UTF-8 BOM on the first line is dropped; a line whose
  first character is ``#`` is a comment; lines are stripped of surrounding white space and
  blank ones dropped; a leading ``!`` marks an exception (white space after it is stripped);
  the rest is ``path.Clean``-ed (so ``./`` and ``a/../`` disappear) and one leading ``/`` is
  removed.
* Matching (``IgnoreMatcher.matches``): patterns are tried in order; an inclusion pattern is
  only tried while the path is not excluded and an exception only while it is. A pattern
  applies when it matches the path itself or one of its parent directories; the last one that
  applies wins. ``*`` and ``?`` never match ``/``; ``**`` matches any number of directories
  (``**/`` may match none); ``[...]`` classes have ranges and ``^`` negation; ``\\`` escapes.
* Walking (``IgnoreMatcher.may_contain_exceptions``): an excluded directory is skipped entirely
  unless some exception could match inside it. When every exception is a plain prefix (no
  wildcard once a trailing ``/**`` or ``/*`` is removed) only exceptions lying under the
  directory keep it open; as soon as one exception has a wildcard every excluded directory is
  descended into.

``go_match`` is Go's ``filepath.Match`` (used for COPY source wildcards).

Errors: malformed patterns raise :class:`BadPatternError` (a :class:`PybuildError`).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PybuildError

_BOM = "\ufeff"
_WILDCARD_CHARS = "*[]?^\\"


class BadPatternError(PybuildError):
    """A pattern (.dockerignore line, ``--exclude`` value or COPY source) is malformed."""


def go_clean(path: str) -> str:
    """Go's ``path.Clean``: lexical normalisation; ``""`` becomes ``"."``, ``//x`` becomes ``/x``."""
    if path == "":
        return "."
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def has_magic(pattern: str) -> bool:
    """True when ``pattern`` holds an unescaped ``*``, ``?`` or ``[`` (a COPY wildcard)."""
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "*?[":
            return True
        i += 1
    return False


# ---------------------------------------------------------------------------------------------
# Go filepath.Match


def _parse_class(pattern: str, i: int) -> tuple[str, int]:
    """Translate the class starting after ``[`` at ``pattern[i]`` to a Python regex class.

    Returns (regex, index after ``]``). Raises BadPatternError like Go's ErrBadPattern. A range
    whose ends are reversed (``[b-a]``) is valid in Go and matches nothing.
    """
    out: list[str] = []
    negated = i < len(pattern) and pattern[i] == "^"
    if negated:
        i += 1
    first = True
    while True:
        if i >= len(pattern):
            raise BadPatternError(f"syntax error in pattern {pattern!r}: unterminated [")
        if pattern[i] == "]" and not first:
            i += 1
            break
        lo, i = _class_char(pattern, i)
        if i < len(pattern) and pattern[i] == "-":
            hi, i = _class_char(pattern, i + 1)
            if lo <= hi:  # Go: lo <= r && r <= hi; reversed ends match nothing
                out.append(re.escape(lo) + "-" + re.escape(hi))
        else:
            out.append(re.escape(lo))
        first = False
    if not out:  # only reversed ranges: nothing matches (negated: any one character does)
        return ("[\\s\\S]" if negated else "(?!)"), i
    return "[" + ("^" if negated else "") + "".join(out) + "]", i


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    if i >= len(pattern):
        raise BadPatternError(f"syntax error in pattern {pattern!r}: unterminated [")
    ch = pattern[i]
    if ch in "-]":
        raise BadPatternError(f"syntax error in pattern {pattern!r}: unexpected {ch!r} in class")
    if ch == "\\":
        i += 1
        if i >= len(pattern):
            raise BadPatternError(f"syntax error in pattern {pattern!r}: trailing backslash")
        ch = pattern[i]
    return ch, i + 1


def _translate(pattern: str, *, double_star: bool) -> str:
    """Translate a pattern to a Python regex body (no anchors).

    ``double_star``: treat ``**`` like patternmatcher does (any number of directories);
    otherwise (plain filepath.Match) ``**`` is two stars, each not crossing ``/``.
    """
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if double_star and i + 1 < n and pattern[i + 1] == "*":
                i += 2
                if i < n and pattern[i] == "/":
                    i += 1
                out.append(".*" if i >= n else "(?:.*/)?")
                continue
            out.append("[^/]*")
            i += 1
        elif ch == "?":
            out.append("[^/]")
            i += 1
        elif ch == "[":
            cls, i = _parse_class(pattern, i + 1)
            out.append(cls)
        elif ch == "\\":
            if i + 1 >= n:
                raise BadPatternError(f"syntax error in pattern {pattern!r}: trailing backslash")
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(ch))
            i += 1
    return "".join(out)


_MATCH_CACHE: dict[str, re.Pattern[str]] = {}


def go_match(pattern: str, name: str) -> bool:
    """Go's ``filepath.Match(pattern, name)``: the whole name must match; ``*``/``?`` do not
    match ``/``. Raises BadPatternError for a malformed pattern (even when ``name`` is empty)."""
    rx = _MATCH_CACHE.get(pattern)
    if rx is None:
        rx = re.compile(_translate(pattern, double_star=False) + r"\Z", re.DOTALL)
        if len(_MATCH_CACHE) < 4096:
            _MATCH_CACHE[pattern] = rx
    return rx.match(name) is not None


# ---------------------------------------------------------------------------------------------
# .dockerignore


def parse_ignore_text(text: str) -> list[str]:
    """The patterns of a .dockerignore body, cleaned; exceptions keep their leading ``!``."""
    patterns: list[str] = []
    for lineno, raw in enumerate(text.splitlines()):
        line = raw[1:] if lineno == 0 and raw.startswith(_BOM) else raw
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        invert = line.startswith("!")
        if invert:
            line = line[1:].strip()
        if line:
            line = go_clean(line)
            if len(line) > 1 and line.startswith("/"):
                line = line[1:]
        patterns.append("!" + line if invert else line)
    return patterns


@dataclass(frozen=True, slots=True)
class IgnorePattern:
    """One compiled pattern. ``text`` is cleaned, without the ``!``."""

    text: str
    exclusion: bool
    regex: re.Pattern[str] = field(compare=False, repr=False)

    def match(self, path: str) -> bool:
        return self.regex.match(path) is not None


def _strip_trailing_glob(text: str) -> str:
    text = text.removesuffix("/**")
    text = text.removesuffix("/*")
    return text


class IgnoreMatcher:
    """A list of .dockerignore-style patterns (``!`` for exceptions), last match wins.

    Paths given to the methods are context-relative, ``/``-separated, without leading ``./``.
    Construction raises BadPatternError for a malformed pattern or a lone ``!``.
    """

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        compiled: list[IgnorePattern] = []
        for raw in patterns:
            p = raw.strip()
            if not p:
                continue
            exclusion = p.startswith("!")
            if exclusion:
                p = p[1:].strip()
                if not p:
                    raise BadPatternError('illegal exclusion pattern: "!"')
            p = go_clean(p)
            if len(p) > 1 and p.startswith("/"):
                p = p[1:]
            regex = re.compile(_translate(p, double_star=True) + r"\Z", re.DOTALL)
            compiled.append(IgnorePattern(p, exclusion, regex))
        self.patterns: tuple[IgnorePattern, ...] = tuple(compiled)
        self.has_exceptions = any(p.exclusion for p in compiled)
        self._only_prefix_exceptions = not any(
            p.exclusion and any(c in _strip_trailing_glob(p.text) for c in _WILDCARD_CHARS)
            for p in compiled)

    @classmethod
    def from_text(cls, text: str) -> IgnoreMatcher:
        return cls(parse_ignore_text(text))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, path: str) -> bool:
        """True when ``path`` is excluded (the pattern applies to it or to a parent directory)."""
        if not self.patterns:
            return False
        path = go_clean(path)
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts) - 1)]
        matched = False
        for pat in self.patterns:
            if pat.exclusion != matched:
                continue
            hit = pat.match(path) or any(pat.match(pre) for pre in prefixes)
            if hit:
                matched = not pat.exclusion
        return matched

    def may_contain_exceptions(self, directory: str) -> bool:
        """Whether an excluded ``directory`` must still be walked because an exception pattern
        could re-include something inside it."""
        if not self.has_exceptions:
            return False
        if not self._only_prefix_exceptions:
            return True
        dir_slash = go_clean(directory) + "/"
        return any(p.exclusion and (p.text + "/").startswith(dir_slash) for p in self.patterns)


def find_ignore_file(context: Path, dockerfile: Path | None = None) -> Path | None:
    """The ignore file that applies: ``<dockerfile name>.dockerignore`` beside the Dockerfile
    wins over ``<context>/.dockerignore``; None when neither exists."""
    if dockerfile is not None:
        specific = dockerfile.parent / (dockerfile.name + ".dockerignore")
        if specific.is_file():
            return specific
    generic = context / ".dockerignore"
    return generic if generic.is_file() else None


def load_ignore(context: Path, dockerfile: Path | None = None) -> IgnoreMatcher:
    """Read and compile the applicable ignore file (see ``find_ignore_file``).

    The Dockerfile and the ignore file themselves are read by the builder directly, whatever
    the patterns say; the matcher only decides what COPY/ADD can see of the context.
    Raises BadPatternError (naming the file) for a malformed pattern, PybuildError when the
    file cannot be read.
    """
    path = find_ignore_file(context, dockerfile)
    if path is None:
        return IgnoreMatcher()
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise PybuildError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return IgnoreMatcher.from_text(text)
    except BadPatternError as exc:
        raise BadPatternError(f"{path}: {exc}") from None


def compile_excludes(patterns: Sequence[str]) -> IgnoreMatcher:
    """An IgnoreMatcher for COPY ``--exclude`` values (same language as .dockerignore)."""
    return IgnoreMatcher(patterns)
