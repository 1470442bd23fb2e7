"""Render build events for a terminal or a log (used only by the CLI).

Modes: ``plain`` and ``tty`` (one line per finished step, step output prefixed with ``|``),
``quiet`` (warnings only), ``rawjson`` (one JSON object per event).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import TextIO

from .engine.events import Event, ImageWritten, Message, StepFinished, StepOutput


class Renderer:
    """A callable event sink writing to ``out`` (stderr by default). Never raises."""

    def __init__(self, mode: str = "plain", out: TextIO | None = None) -> None:
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
            tail = "CACHED" if event.cached else f"{event.seconds:.1f}s"
            print(f"[{name} {event.stage}/{event.stages}] {event.text}  {tail}", file=self.out)
        elif isinstance(event, StepOutput):
            print(f"  | {event.line.decode('utf-8', 'replace').rstrip()}", file=self.out)
        elif isinstance(event, Message):
            prefix = "warning: " if event.level == "warning" else ""
            print(f"{prefix}{event.text}", file=self.out)
        elif isinstance(event, ImageWritten):
            names = ", ".join(event.tags)
            print(f"writing image {event.digest}" + (f" ({names})" if names else ""), file=self.out)
