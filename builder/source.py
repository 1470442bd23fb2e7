"""Source positions: where a piece of a Dockerfile came from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    """A 1-based, inclusive range of a source file.

    ``line``/``col`` is the first character, ``end_line``/``end_col`` the last one.
    ``col`` and ``end_col`` are 1-based character columns on their physical lines.
    """

    line: int
    col: int = 1
    end_line: int = 0
    end_col: int = 0

    def __post_init__(self) -> None:
        if self.end_line == 0:
            object.__setattr__(self, "end_line", self.line)

    def to(self, other: "Span") -> "Span":
        """The span from the start of ``self`` to the end of ``other``."""
        return Span(self.line, self.col, other.end_line, other.end_col)


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A named text with its physical lines (line terminators removed)."""

    name: str
    text: str

    @property
    def lines(self) -> list[str]:
        return self.text.replace("\r\n", "\n").split("\n")

    def line_text(self, line: int) -> str:
        """The physical line ``line`` (1-based), or ``""`` when out of range."""
        lines = self.lines
        return lines[line - 1] if 1 <= line <= len(lines) else ""
