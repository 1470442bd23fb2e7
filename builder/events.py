"""Events: the library reports progress through these typed, frozen values; only the CLI
renders them (the library never prints).

An :data:`EventSink` is any callable taking one :data:`Event`. Sinks must not raise (an
exception from a sink propagates and fails the operation that emitted the event). Events may
be sent from worker threads (blob copies, parallel stages); the public API (:mod:`builder.api`)
wraps the caller's sink with :func:`serialized`, so it is called by one thread at a time.

Order within one build: every step sends ``StepStarted``, then any ``StepOutput`` lines, then
``StepFinished`` (a failed step sends no ``StepFinished``); ``Message`` may come at any time;
``BlobProgress`` comes while blobs move (exports and pushes after the last step, pulls of base
images inside a ``FROM`` step); ``ImageWritten`` comes last. Steps of independent stages may
interleave when stages run in parallel: match them by ``(stage, step)``.

Kept in the base layer (no imports from the rest of builder), so that every layer may emit them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StepStarted:
    """A step began (``step`` 0 is the stage's ``FROM``)."""

    stage: int          # 1-based index among the stages being built
    stages: int
    step: int           # 1-based index within the stage (0 = FROM)
    steps: int
    text: str           # e.g. "COPY . /app"
    stage_name: str = ""
    platform: str = ""  # the stage's platform in a multi-platform build, else ""


@dataclass(frozen=True, slots=True)
class StepFinished:
    """A step ended successfully. ``cached``: its result came from the build cache.
    ``miss_reason``: why the cache was not used ("" when cached or not known)."""

    stage: int
    stages: int
    step: int
    text: str
    seconds: float
    cached: bool = False
    stage_name: str = ""
    miss_reason: str = ""
    platform: str = ""


@dataclass(frozen=True, slots=True)
class StepOutput:
    """One line of a running step's output (stdout and stderr interleaved), newline included
    when the process wrote one."""

    stage: int
    step: int
    line: bytes
    stage_name: str = ""
    platform: str = ""


@dataclass(frozen=True, slots=True)
class Message:
    """A note for the user; ``level`` is ``"info"`` or ``"warning"`` (a warning: the build goes
    on, but something may not be what the user meant)."""

    level: str
    text: str


@dataclass(frozen=True, slots=True)
class BlobProgress:
    """Bytes of one blob moving: ``action`` is ``pull``, ``push``, ``export`` or ``copy``.
    Sent when the copy starts (``done`` 0), as it goes (at most about 100 times per blob) and
    when it ends (``done == total``, ``finished`` True). ``skipped``: the destination already
    had the blob, nothing was sent.

    ``action`` ``layer``: a large layer being written by a step (COPY, ADD, RUN) — ``digest``
    is then a name for it (``layer-N``, the digest is not known yet), ``total`` 0 until the
    finished report; layers under 8 MiB send none."""

    action: str
    digest: str
    media_type: str
    done: int
    total: int
    finished: bool = False
    skipped: bool = False


@dataclass(frozen=True, slots=True)
class ImageWritten:
    """The build's image is in the store (and every output is written)."""

    digest: str         # manifest digest
    config_digest: str
    tags: tuple[str, ...]
    image_id: str = ""  # what -q prints and `pybuild images` shows: the config digest (the index's for several platforms)


Event = StepStarted | StepFinished | StepOutput | Message | BlobProgress | ImageWritten
EventSink = Callable[[Event], None]


def discard(_event: Event) -> None:
    """A sink that ignores everything."""


def serialized(sink: EventSink) -> EventSink:
    """``sink`` behind a lock: never entered by two threads at once."""
    import threading

    lock = threading.Lock()

    def call(event: Event) -> None:
        with lock:
            sink(event)
    return call


__all__ = ["BlobProgress", "Event", "EventSink", "ImageWritten", "Message", "StepFinished", "StepOutput",
           "StepStarted", "discard", "serialized"]
