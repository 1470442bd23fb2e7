"""Compiled code of the methods ``dataclasses`` generates, kept across runs like bytecode.

Python 3.11 and 3.12 compile each generated method (``__init__``, ``__repr__``, ``__eq__``,
``__hash__``, ``__setattr__``, ``__delattr__``) of every dataclass from source text with
``exec``: 0.3-0.4 ms a class here, about 20 ms of a fully cached rebuild (57 classes, ~330
compiles) -- the largest single cost after the interpreter's own start. The text depends only on
the class's field names and options (defaults, types and the class itself reach the code as
arguments, never as text), so the code compiled from it can be kept, as a ``.pyc`` keeps a
module's.

:func:`install` puts :func:`_exec` into the ``dataclasses`` module's namespace, where it shadows
the builtin ``exec`` for that module only. Given the source text of a method of one of pybuild's
own classes (the ``globals`` it runs in are those of a ``builder`` module) it runs the code
object compiled from exactly that text, from the file :func:`cache_file` when there, else
compiled now (as ``exec`` would: no inherited ``__future__`` flags, file name ``<string>``) and remembered. Anything else
goes to the builtin unchanged. The behaviour of every class is therefore the same with or
without the cache; only the compile is skipped. (Python 3.13 batches these compiles; the hook
still applies, since its dataclasses also ``exec`` a text with explicit globals.)

The cache file lives beside the package's bytecode (``importlib.util.cache_from_source``, so
``PYTHONPYCACHEPREFIX`` is honoured) and is named for the interpreter (cache tag and the
bytecode magic number). It is a marshal of ``(magic, {text: marshalled code})``, read once on
the first dataclass created and entry by entry on use; an unreadable, foreign or corrupt file
counts as empty. It is (re)written at interpreter exit only when something was compiled, and
never when bytecode writing is off (``-B``, ``PYTHONDONTWRITEBYTECODE``); the write is a new
temp file of a random name (created exclusively, never through a symlink) renamed into place
(concurrent commands: the last rename wins, each file whole), and failures (read-only install,
full disk) are ignored. The file is trusted as the ``.pyc`` files beside it are: whoever can
write that directory can change the package's code anyway. The file keeps the union of what it held
and what this process compiled, up to :data:`MAX_ENTRIES`, past which it keeps only what this
process used. (Reading it is most of its cost, ~0.6 ms per MB here: other packages' classes,
e.g. a test suite's, are left out so that it stays about pybuild's ~0.4 MB.)

Threads: classes may be created in worker threads (modules imported lazily inside a stage);
the dict operations are atomic under the GIL and the one-time load is idempotent, so a race
costs at most a compile.
"""

from __future__ import annotations

import marshal
import os
import sys
from importlib.util import MAGIC_NUMBER, cache_from_source
from types import CodeType
from typing import Mapping

MAX_ENTRIES = 2048   # pybuild has ~110 dataclasses, ~6 methods each

_stored_entries: dict[str, bytes] | None = None   # the file's entries (read on first use)
_compiled: dict[str, CodeType] = {}        # this process's code objects by text
_used: dict[str, None] = {}                # texts this process ran, in order (a stable file)
_added: list[str] = []                     # texts compiled by this process (not in the file)


def cache_file() -> str | None:
    """The cache's path for this interpreter, or None when there is no place for bytecode."""
    if sys.implementation.cache_tag is None:
        return None
    try:
        pyc = cache_from_source(__file__)
    except (NotImplementedError, ValueError):
        return None
    name = f"dataclass-code-2.{sys.implementation.cache_tag}.bin"  # format 2: builder classes only
    return os.path.join(os.path.dirname(pyc), name)


def _stored() -> dict[str, bytes]:
    global _stored_entries
    if _stored_entries is None:
        _stored_entries = _read(cache_file())
    return _stored_entries


def _read(path: str | None) -> dict[str, bytes]:
    if path is None:
        return {}
    try:
        with open(path, "rb") as f:
            data = marshal.loads(f.read())
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    if not (isinstance(data, tuple) and len(data) == 2 and data[0] == MAGIC_NUMBER and isinstance(data[1], dict)):
        return {}
    entries: dict[str, bytes] = data[1]
    return entries


def _code(text: str) -> CodeType:
    code = _compiled.get(text)
    if code is not None:
        return code
    blob = _stored().get(text)
    if blob is not None:
        try:
            loaded = marshal.loads(blob)
        except (EOFError, ValueError, TypeError):
            loaded = None
        if isinstance(loaded, CodeType):
            code = loaded
    if code is None:
        code = compile(text, "<string>", "exec", dont_inherit=True)
        if not _added:
            import atexit

            atexit.register(save)
        _added.append(text)
    _compiled[text] = code
    _used[text] = None
    return code


def _exec(source: str | bytes | CodeType, globals: dict[str, object] | None = None,
          locals: Mapping[str, object] | None = None) -> None:
    """``exec`` for the dataclasses module: the same effect, compiled text taken from the cache."""
    import builtins

    if globals is None:   # what exec(text) called from the dataclasses module would use
        import dataclasses

        globals = dataclasses.__dict__
    if type(source) is str:
        name = globals.get("__name__")   # dataclasses passes the class's module's namespace
        if isinstance(name, str) and (name == "builder" or name.startswith("builder.")):
            source = _code(source)
        else:   # another package's class (a test suite's, a program's): compiled, not kept
            source = compile(source, "<string>", "exec", dont_inherit=True)  # not with our __future__
    builtins.exec(source, globals, locals)


def install() -> None:
    """Route the dataclasses module's ``exec`` through the cache (idempotent). Imports
    ``dataclasses``: call it where dataclasses are about to be made anyway."""
    import dataclasses

    dataclasses.exec = _exec  # type: ignore[attr-defined]


def save() -> None:
    """Write the cache file if this process compiled something (run at exit); never raises."""
    path = cache_file()
    if not _added or path is None or sys.dont_write_bytecode:
        return
    entries = dict(_stored())
    for text in _used:
        if text not in entries:
            entries[text] = marshal.dumps(_compiled[text])
    if len(entries) > MAX_ENTRIES:
        entries = {text: entries[text] for text in _used}
    from .atomicfile import write_atomic

    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomic(path, marshal.dumps((MAGIC_NUMBER, entries)))
    except OSError:
        pass
    _added.clear()
