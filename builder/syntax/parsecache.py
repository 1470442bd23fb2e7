"""Parsed Dockerfiles remembered on disk, so that building an unchanged Dockerfile again does
not import lark nor run the grammar (about 30 ms of every build on the reference machine).

An entry is the :class:`~builder.syntax.ast.Dockerfile` of one text under one name, written
with ``marshal`` as lists and tuples of plain values (:func:`_encode`; not pickle: no ~1 ms
import, and nothing in the file can run code when read), kept in the same user cache
directory as lark's compiled tables
(:func:`builder.syntax.grammar.cache_dir`), in a file named after a digest of the text, the
name, pybuild's version and the identity (size, mtime) of the front end's own source and
grammar files: editing the parser or the grammar retires every entry. Only successful parses
are kept; a missing, unreadable or corrupt entry is a miss, and a failed write is ignored (it
is only a cache). Nothing here raises.
"""

from __future__ import annotations

import marshal
import os
from dataclasses import fields
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..source import SourceFile, Span
from .ast import Dockerfile, Heredoc, Node

_FORMAT = b"pybuild-parse-v2"


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
        data = marshal.loads(path.read_bytes())
        df = _decode(data[1]) if data[0] == _FORMAT else None
    except Exception:  # missing, unreadable, or written by something else: a miss
        return None
    if not isinstance(df, Dockerfile) or df.source.text != text or df.source.name != name:
        return None
    return df


_TYPES: dict[str, type[Any]] = {t.__name__: t for t in (Dockerfile, Node, Heredoc, Span, SourceFile)}
_FIELDS: dict[str, tuple[str, ...]] = {name: tuple(f.name for f in fields(t)) for name, t in _TYPES.items()}


def _encode(value: Any) -> Any:
    """``value`` (the tree's dataclasses, tuples, str, int, bool, None) as what marshal writes: a
    dataclass becomes the list ``[class name, *field values]`` (every field, whatever the class
    grows), a tuple stays a tuple. Raises TypeError for anything else."""
    name = type(value).__name__
    if _TYPES.get(name) is type(value):
        return [name, *(_encode(getattr(value, f)) for f in _FIELDS[name])]
    if type(value) is tuple:
        return tuple(_encode(v) for v in value)
    if value is None or type(value) in (str, int, bool):
        return value
    raise TypeError(f"a {name} cannot be kept in the parse cache")


def _decode(value: Any) -> Any:
    if type(value) is list:
        name = value[0]
        return _TYPES[name](**dict(zip(_FIELDS[name], (_decode(v) for v in value[1:]), strict=True)))
    if type(value) is tuple:
        return tuple(_decode(v) for v in value)
    return value


def save(text: str, name: str, df: Dockerfile) -> None:
    """Remember ``df`` as the parse of ``text`` under ``name`` (atomically, by
    :func:`builder.atomicfile.write_atomic`: never written through a symlink someone left in
    the cache directory; errors ignored). The file is 0600: a per-user cache."""
    path = _entry(text, name)
    if path is None:
        return
    from ..atomicfile import write_atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, marshal.dumps((_FORMAT, _encode(df))), mode=0o600)
    except Exception:
        pass
