"""Word expansion for the plan layer: a thin adapter over :mod:`builder.syntax.expand`.

Every method takes the instruction's span and re-raises expansion failures as
:class:`builder.errors.ExpansionError` carrying that span. ``raw`` implements BuildKit's
heredoc expansion (``SkipProcessQuotes``): variables are substituted, quotes and escapes are
kept as written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import DockerfileError, ExpansionError
from ..source import Span


class Expander:
    """Expands words with BuildKit's shell lexer for one escape character.

    Lexers are created lazily on first use (the syntax layer is imported then).
    """

    def __init__(self, escape: str = "\\") -> None:
        self.escape = escape
        self._lex: Any = None
        self._raw: Any = None

    def _shell(self) -> Any:
        if self._lex is None:
            from ..syntax.expand import ShellLex  # the syntax layer's lexer

            self._lex = ShellLex(self.escape)
        return self._lex

    @staticmethod
    def _fail(exc: Exception, span: Span | None) -> DockerfileError:
        if isinstance(exc, DockerfileError):
            if exc.span is None:
                exc.span = span
            return exc
        return ExpansionError(str(exc) or type(exc).__name__, span)

    def word(self, word: str, env: Mapping[str, str], span: Span | None) -> tuple[str, frozenset[str]]:
        """Expand one word (quotes removed, no splitting); also the names found in ``env``."""
        try:
            value, matches = self._shell().process_word_with_matches(word, dict(env))
        except (DockerfileError, ValueError, KeyError, IndexError) as exc:
            raise self._fail(exc, span) from None
        return value, frozenset(matches)

    def words(self, word: str, env: Mapping[str, str], span: Span | None) -> tuple[list[str], frozenset[str]]:
        """Expand then split on unquoted whitespace; also the names found in ``env``."""
        lex = self._shell()
        try:
            exp = lex.expand(word, dict(env))
        except (DockerfileError, ValueError, KeyError, IndexError) as exc:
            raise self._fail(exc, span) from None
        return list(exp.words), frozenset(exp.matched)

    def raw(self, text: str, env: Mapping[str, str], span: Span | None) -> tuple[str, frozenset[str]]:
        """Heredoc expansion: ``$X``/``${X}``/``${X:-w}``... substituted, quotes and escapes kept."""
        if self._raw is None:
            from ..syntax.expand import ShellLex

            # BuildKit expands heredoc bodies with a backslash lexer whatever the escape directive
            self._raw = ShellLex("\\", process_quotes=False)
        try:
            value, matches = self._raw.process_word_with_matches(text, dict(env))
        except (DockerfileError, ValueError, KeyError, IndexError) as exc:
            raise self._fail(exc, span) from None
        return value, frozenset(matches)
