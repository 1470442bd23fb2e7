"""Loading the lark grammars of the Dockerfile front end, once per process.

The grammar files live in the top-level ``grammar/`` directory, shipped as the package
``builder.grammar``. They are found with :func:`importlib.resources.files` after an install and
from the source tree otherwise. ``@E@`` in a grammar stands for the escape character (backslash
or backtick): there is one compiled parser per (grammar, escape character).

Compiled LALR tables are cached on disk by lark (``cache=``) under ``$XDG_CACHE_HOME/pybuild``
or ``~/.cache/pybuild``, in a file named after the hash of the grammar text and the lark
version; when that directory cannot be written, parsers are compiled in memory without a
cache, silently. Nothing here raises for bad Dockerfile input; a missing grammar file is a
packaging bug and raises :class:`builder.errors.PybuildError`.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import PybuildError

if TYPE_CHECKING:  # pragma: no cover
    from lark import Lark

#: Regex atoms that replace ``@E@`` for each allowed escape character.
_ESCAPE_ATOMS = {"\\": "\\\\", "`": "`"}

#: (grammar file, start rule, lexer). The instruction grammar needs lark's contextual lexer
#: (KEYWORD, FLAG and REST overlap); the other two have disjoint terminals, and the basic lexer
#: compiles one scanner instead of one per parser state (start-up time).
INSTRUCTION = ("dockerfile.lark", "instruction", "contextual")
WORDS = ("words.lark", "words", "basic")
JSON_ARRAY = ("json_array.lark", "array", "basic")


def grammar_text(filename: str) -> str:
    """The text of ``grammar/<filename>``. Raises PybuildError when it cannot be found."""
    try:
        from importlib.resources import files

        return files("builder.grammar").joinpath(filename).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError, OSError):
        pass
    path = Path(__file__).resolve().parents[2] / "grammar" / filename
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PybuildError(f"grammar file {filename} not found (looked in builder.grammar and {path})") from exc


def cache_dir() -> Path | None:
    """A writable cache directory, or None."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base) / "pybuild"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


def _import_lark() -> tuple[type, str]:
    """Import lark without letting it import the optional ``regex`` module (about 11 ms of
    start-up on the reference machine; we never ask lark for ``regex=True``)."""
    import sys

    blocked = "lark" not in sys.modules and "regex" not in sys.modules
    if blocked:
        sys.modules["regex"] = None  # type: ignore[assignment]  # makes "import regex" fail
    try:
        import lark
    finally:
        if blocked:
            del sys.modules["regex"]
    return lark.Lark, lark.__version__


@lru_cache(maxsize=None)
def parser(which: tuple[str, str, str], escape: str = "\\") -> "Lark":
    """The compiled LALR parser for ``which`` (INSTRUCTION, WORDS or JSON_ARRAY) with ``@E@``
    bound to ``escape`` (a backslash or a backtick). Built once per process, tables loaded from
    the on-disk cache when present."""
    lark_class, lark_version = _import_lark()

    filename, start, lexer = which
    text = grammar_text(filename).replace("@E@", _ESCAPE_ATOMS[escape])
    cache: str | bool = False
    directory = cache_dir()
    if directory is not None:
        from ..digest import small_hash

        key = small_hash("sha256", f"{lark_version}\0{start}\0{lexer}\0{text}".encode()).hexdigest()[:24]
        cache = str(directory / f"lark-{filename.removesuffix('.lark')}-{key}.cache")
    made: Lark = lark_class(text, parser="lalr", lexer=lexer, start=start, cache=cache, maybe_placeholders=False)
    return made
