"""Render build events for a terminal or a log (used only by the CLI).

Modes: ``plain`` (one line per finished step, step output prefixed with ``|``), ``quiet``
(warnings only), ``rawjson`` (one JSON object per event), ``tty`` (the live view of
:mod:`builder.render_live`, on stderr, when it is a terminal that can draw; else ``plain``).
``auto`` is ``tty`` when stdout and stderr are both terminals, else ``plain``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import TextIO

from .events import Event, EventSink, ImageWritten, Message, StepFinished, StepOutput


def _can_draw(stream: TextIO) -> bool:
    """A terminal that understands cursor movement (not ``TERM=dumb``, not unset)."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and os.environ.get("TERM", "dumb") not in ("dumb", "unknown", "")


def resolve_mode(mode: str, out: TextIO | None = None, stdout: TextIO | None = None) -> str:
    """The mode actually used for ``--progress=mode``: ``auto`` and ``tty`` become ``plain``
    when ``out`` (stderr) cannot draw; ``auto`` also when ``stdout`` is not a terminal (piped
    output or ``--output dest=-``)."""
    out = out or sys.stderr
    if mode not in ("auto", "tty"):
        return mode
    if not _can_draw(out):
        return "plain"
    if mode == "auto" and not _isatty(stdout or sys.stdout):
        return "plain"
    return "tty"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def make_renderer(mode: str, out: TextIO | None = None) -> Iterator[EventSink]:
    """The event sink for ``--progress=mode`` (auto, tty, plain, quiet, rawjson), writing to
    ``out`` (stderr by default). The live view (``tty``) is imported only when used; it draws
    until the ``with`` block ends, then leaves its final screen."""
    mode = resolve_mode(mode, out)
    if mode != "tty":
        yield Renderer(mode, out)
        return
    from .render_live import LiveRenderer

    with LiveRenderer(out or sys.stderr) as live:
        yield live


class Renderer:
    """A callable event sink writing to ``out`` (stderr by default). Never raises."""

    def __init__(self, mode: str = "plain", out: TextIO | None = None) -> None:
        mode = "plain" if mode in ("auto", "tty") else mode
        self.mode = mode
        self.out = out or sys.stderr

    def __call__(self, event: Event) -> None:
        try:
            if self.mode == "rawjson":
                self._rawjson(event)
            elif self.mode == "quiet":
                self._quiet(event)
            else:
                self._plain(event)
            self.out.flush()
        except (OSError, ValueError):
            pass

    def _quiet(self, event: Event) -> None:
        if isinstance(event, Message) and event.level == "warning":
            print(f"warning: {event.text}", file=self.out)

    def _rawjson(self, event: Event) -> None:
        data = asdict(event)
        if isinstance(event, StepOutput):
            data["line"] = event.line.decode("utf-8", "replace")
        data["type"] = type(event).__name__
        print(json.dumps(data), file=self.out)

    def _plain(self, event: Event) -> None:
        if isinstance(event, StepFinished):
            name = event.stage_name or "stage"
            if event.platform:
                name = f"{event.platform} {name}"
            tail = "CACHED" if event.cached else f"{event.seconds:.1f}s"
            print(f"[{name} {event.stage}/{event.stages}] {event.text}  {tail}", file=self.out)
            if event.miss_reason:
                print(f"  cache miss: {event.miss_reason}", file=self.out)
        elif isinstance(event, StepOutput):
            # stages run concurrently: a line names its stage (and platform) when it has one
            who = " ".join(w for w in (event.platform, event.stage_name) if w)
            lead = f"  {who} | " if who else "  | "
            print(f"{lead}{event.line.decode('utf-8', 'replace').rstrip()}", file=self.out)
        elif isinstance(event, Message):
            prefix = "warning: " if event.level == "warning" else ""
            print(f"{prefix}{event.text}", file=self.out)
        elif isinstance(event, ImageWritten):
            names = ", ".join(event.tags)
            print(f"writing image {event.image_id or event.digest}" + (f" ({names})" if names else ""), file=self.out)
