"""pybuild: a daemonless Dockerfile build engine producing OCI images.

The public API (see the README and :mod:`builder.api`)::

    from builder import build, push, pull, run, images, inspect, prune, open_store
    from builder import events, PybuildError

The library never prints; :mod:`builder.cli` is the only module that writes to a terminal.
Names are loaded on first use, so ``import builder`` stays cheap.
"""

from __future__ import annotations

# not ``typing.TYPE_CHECKING``: importing typing costs ~8 ms, and every RUN step's sandbox init
# (a fresh interpreter importing builder.sandbox.init) goes through this file; type checkers
# treat any name TYPE_CHECKING the same way
TYPE_CHECKING = False

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .api import (
        ImageDetails,
        ImageRow,
        build,
        build_with,
        check_store,
        disk_usage,
        history,
        images,
        inspect,
        login,
        logout,
        open_store,
        parse_size,
        prune,
        pull,
        push,
        run,
        tag,
        untag,
    )
    from .engine.build import BuildResult
    from .engine.options import BuildOptions, SecretSource
    from .errors import (
        DockerfileError,
        HostError,
        PybuildError,
        ReferenceError_,
        RegistryError,
        StepFailed,
        StoreError,
        UsageError,
    )
    from .events import (
        BlobProgress,
        Event,
        EventSink,
        ImageWritten,
        Message,
        StepFinished,
        StepOutput,
        StepStarted,
    )
    from .outputspec import OutputSpec
    from .store.layout import Store

_LAZY = {
    **dict.fromkeys(("ImageDetails", "ImageRow", "build", "build_with", "check_store", "disk_usage", "history",
                     "images", "inspect", "login", "logout", "open_store", "parse_size", "prune", "pull", "push",
                     "run", "tag", "untag"), "api"),
    "BuildResult": "engine.build",
    "BuildOptions": "engine.options",
    "SecretSource": "engine.options",
    **dict.fromkeys(("DockerfileError", "HostError", "PybuildError", "ReferenceError_", "RegistryError",
                     "StepFailed", "StoreError", "UsageError"), "errors"),
    **dict.fromkeys(("BlobProgress", "Event", "EventSink", "ImageWritten", "Message", "StepFinished",
                     "StepOutput", "StepStarted"), "events"),
    "OutputSpec": "outputspec",
    "Store": "store.layout",
}

__all__ = [
    "BlobProgress", "BuildOptions", "BuildResult", "DockerfileError", "Event", "EventSink", "HostError",
    "ImageDetails", "ImageRow", "ImageWritten", "Message", "OutputSpec", "PybuildError", "ReferenceError_",
    "RegistryError", "SecretSource", "StepFailed", "StepFinished", "StepOutput", "StepStarted", "Store",
    "StoreError", "UsageError", "__version__", "build", "build_with", "check_store", "disk_usage", "history",
    "images", "inspect", "login", "logout", "open_store", "parse_size", "prune", "pull", "push", "run", "tag",
    "untag",
]


def __getattr__(name: str) -> object:
    """Load a public name from its module on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'builder' has no attribute {name!r}")
    from importlib import import_module

    value: object = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
