"""Standard modules whose import is deferred until something uses them.

``dataclasses`` imports ``inspect`` (and with it ``ast``, ``dis``, ``tokenize``, ``linecache``:
~5 ms, the largest standard import of a fully cached rebuild) only to write a ``__doc__`` for a
class without a docstring; every dataclass of pybuild has one. :func:`defer` puts a module
object for ``name`` into ``sys.modules`` whose code has not run yet: ``import name`` finds it
(its ``__spec__`` is there, so the import system never looks further), and the first access to
any other attribute runs the module's code in that same object, which from then on is the
ordinary module (one object, so every holder sees the same thing). This is what
``importlib.util.LazyLoader`` does, except that LazyLoader also loads on the import system's own
``__spec__`` check and so on the first ``import``.

Only the CLI defers (builder.cli, before importing dataclasses): a program that imports the
library keeps Python's normal behaviour. The first use may come from any thread: the code runs
once, under a lock; a thread asking for a name not yet defined meanwhile waits for it. An
error of the module's code is raised at the first use and the module stays deferred (the next
use runs it again).
"""

from __future__ import annotations

import sys
import threading
import types
from importlib.util import find_spec, module_from_spec

_LOCK = threading.RLock()  # re-entrant: a module's own code may touch the module while it runs
_running: set[str] = set()  # modules whose code is running now (under _LOCK)


class _Deferred(types.ModuleType):
    def __getattr__(self, name: str) -> object:
        with _LOCK:
            if type(self) is _Deferred and self.__name__ not in _running:
                spec = self.__spec__
                assert spec is not None and spec.loader is not None
                _running.add(self.__name__)
                try:
                    spec.loader.exec_module(self)
                finally:
                    _running.discard(self.__name__)
                self.__class__ = types.ModuleType  # type: ignore[assignment]  # loaded: a plain module from now on
        # the module's own lookup (its names, a PEP 562 __getattr__), never this method again
        return types.ModuleType.__getattribute__(self, name)


def defer(name: str) -> None:
    """Defer the top-level source module ``name`` (no-op when it is imported already or cannot
    be found, or is not a plain source/bytecode module)."""
    if name in sys.modules or "." in name:
        return
    spec = find_spec(name)
    if spec is None or spec.loader is None or not spec.has_location or spec.submodule_search_locations is not None:
        return
    module = module_from_spec(spec)
    module.__class__ = _Deferred
    sys.modules[name] = module


def is_loaded(name: str) -> bool:
    """Whether ``name`` is imported and its code has run (not merely deferred)."""
    module = sys.modules.get(name)
    return module is not None and type(module) is not _Deferred
