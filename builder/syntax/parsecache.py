"""Parsed Dockerfiles remembered on disk, so that building an unchanged Dockerfile again does
not import lark nor run the grammar (about 30 ms of every build on the reference machine).

An entry is the pickled :class:`~builder.syntax.ast.Dockerfile` of one text under one name,
kept in the same user cache directory as lark's compiled tables
(:func:`builder.syntax.grammar.cache_dir`), in a file named after a digest of the text, the
name, pybuild's version and the identity (size, mtime) of the front end's own source and
grammar files: editing the parser or the grammar retires every entry. Only successful parses
are kept; a missing, unreadable or corrupt entry is a miss, and a failed write is ignored (it
is only a cache). Nothing here raises.
"""

from __future__ import annotations

import os
import pickle
from functools import lru_cache
from pathlib import Path

from .ast import Dockerfile

_FORMAT = b"pybuild-parse-v1"


@lru_cache(maxsize=1)
def _front_end_identity() -> bytes:
    """Version plus (name, size, mtime) of every file of the syntax package and the grammars."""
    from .. import __version__

    parts = [_FORMAT, str(__version__).encode()]
    here = Path(__file__).resolve().parent
    dirs = [here]
    try:
        import builder.grammar as grammar_pkg  # type: ignore[import-not-found, unused-ignore]  # data (grammar/)

        dirs.append(Path(grammar_pkg.__file__).resolve().parent)
    except (ImportError, TypeError):
        pass
    for directory in dirs:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name.endswith((".py", ".lark")) and entry.is_file():
                st = entry.stat()
                parts.append(f"{directory.name}/{entry.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return b"\0".join(parts)


def _entry(text: str, name: str) -> Path | None:
    from .grammar import cache_dir

    directory = cache_dir()
    if directory is None:
        return None
    from ..digest import small_hash

    h = small_hash("sha256", _front_end_identity())
    h.update(b"\0" + name.encode("utf-8", "surrogateescape") + b"\0")
    h.update(text.encode("utf-8", "surrogateescape"))
    return directory / "parsed" / h.hexdigest()[:40]


def load(text: str, name: str) -> Dockerfile | None:
    """The remembered parse of ``text`` under ``name``, or None."""
    path = _entry(text, name)
    if path is None:
        return None
    try:
        data = path.read_bytes()
        df = pickle.loads(data)
    except Exception:  # missing, unreadable, or written by something else: a miss
        return None
    if not isinstance(df, Dockerfile) or df.source.text != text or df.source.name != name:
        return None
    return df


def save(text: str, name: str, df: Dockerfile) -> None:
    """Remember ``df`` as the parse of ``text`` under ``name`` (atomically; errors ignored)."""
    path = _entry(text, name)
    if path is None:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(pickle.dumps(df, protocol=pickle.HIGHEST_PROTOCOL))
        os.replace(tmp, path)
    except Exception:
        try:
            tmp.unlink()
        except OSError:
            pass
