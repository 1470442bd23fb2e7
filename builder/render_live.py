"""The live terminal view of ``--progress=tty`` (and ``auto`` on a terminal), drawn with rich.

Imported only by :func:`builder.render.make_renderer` when stderr is a terminal that can draw,
so that plain, piped and fully cached runs never pay for rich.

What it shows: each finished step collapsed to one line (``CACHED`` or its time, and the cache
miss reason when known) printed above the live area, where it stays; in the live area, every
running step with its timer and its last few output lines, and a byte bar with the speed for
every blob being pulled, pushed or exported; a final summary line. The live area is redrawn at
most ``REFRESH`` times a second by rich's refresh thread, at the terminal's current width (a
resize takes effect on the next redraw); long lines are cut, never wrapped.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import TextIO

from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .events import BlobProgress, Event, ImageWritten, Message, StepFinished, StepOutput, StepStarted

REFRESH = 8          # redraws per second, at most
TAIL = 5             # output lines shown under a running step


@dataclass
class _Step:
    """A step on the live view: its label, text, start time and last output lines."""

    label: str
    text: str
    started: float
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL))


@dataclass
class _Blob:
    """A blob transfer on the live view: what is done to which digest, its size and start."""

    action: str
    digest: str
    total: int
    started: float
    done: int = 0


def _who(platform: str, stage_name: str) -> str:
    """``linux/arm64 build`` (the platform only in a multi-platform build), ``stage`` unnamed."""
    name = stage_name or "stage"
    return f"{platform} {name}" if platform else name


def _blob_label(action: str, digest: str) -> str:
    """``push 3f2a9c1b0d4e`` (a digest's first 12 hex digits); a layer being written has no
    digest yet: ``layer``."""
    hexpart = digest.partition(":")[2]
    return f"{action} {hexpart[:12]}" if hexpart else action


def fit(head: str, tail: str, width: int, *, style: str = "", tail_style: str = "") -> Text:
    """``head  tail`` in ``width`` cells: ``head`` is cut (with an ellipsis) so that ``tail``
    (a time, CACHED) always shows."""
    line = Text(head, style=style)
    line.truncate(max(width - cell_len(tail) - 2, 8), overflow="ellipsis")
    line.append("  ")
    line.append(tail, style=tail_style)
    return line


def human_bytes(n: float) -> str:
    """``512B``, ``1.2kB``, ``34.5MB`` (powers of 1000, as docker prints)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}GB"


class LiveRenderer:
    """An event sink drawing the live view on ``out``; use as a context manager: when the
    block ends the live area is cleared, leaving the collapsed lines, any step still running
    (marked ERROR: the build failed; the CLI then prints the error with the step's last lines)
    and the summary. Thread-safe; never
    raises from ``__call__``."""

    def __init__(self, out: TextIO) -> None:
        # COLUMNS/LINES would pin the width (rich prefers them to the terminal's size): dropped,
        # so that every redraw uses the terminal's current width and a resize takes effect
        environ = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        self.console = Console(file=out, highlight=False, markup=False, emoji=False, soft_wrap=False,
                               _environ=environ)
        self._lock = threading.Lock()
        self._steps: dict[tuple[str, int, int], _Step] = {}
        self._blobs: dict[tuple[str, str], _Blob] = {}
        self._started = time.monotonic()
        self._count = 0
        self._cached = 0
        self._moved: dict[str, int] = {}
        self._image: ImageWritten | None = None
        self._pending: list[RenderableType] = []
        self._frame: list[int] = []   # cells of each line of the last frame drawn
        self._frame_width = 0
        self._live = Live(console=self.console, get_renderable=self._render, refresh_per_second=REFRESH,
                          transient=True, redirect_stdout=False, redirect_stderr=False)

    # -- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> LiveRenderer:
        self._live.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._live.stop()
        with self._lock:
            for step in self._steps.values():  # a failed or interrupted build: what was running
                self._print(fit(f"{step.label} {step.text}", "ERROR", self.console.size.width, tail_style="red"))
            self._steps.clear()
            if exc_type is None:
                for line in self._summary():
                    self._print(line)
        self._flush()

    def _print(self, renderable: RenderableType) -> None:
        """Queue a line for above the live area (it scrolls with the terminal and stays);
        :meth:`_flush` prints it, outside the lock (rich's refresh thread takes the lock to draw)."""
        self._pending.append(renderable)

    def _flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        with self._live._lock:  # rich's own (reentrant) lock: no redraw in between
            self._fit_previous_frame()
            for renderable in pending:
                self.console.print(renderable, no_wrap=True, overflow="ellipsis", crop=True)

    def _fit_previous_frame(self) -> None:
        """After the terminal got narrower, it re-wrapped the last frame's lines onto more rows
        than rich drew: tell rich how many rows to erase, so no stale line stays behind."""
        width = self.console.size.width
        if width >= self._frame_width or not self._frame:
            return
        rows = sum(max(1, -(-cells // width)) for cells in self._frame)
        live_render = getattr(self._live, "_live_render", None)  # rich's internals: optional
        shape = getattr(live_render, "_shape", None)
        if live_render is not None and isinstance(shape, tuple):
            live_render._shape = (width, max(rows, shape[1]))
        self._frame_width = width

    # -- events -------------------------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        try:
            with self._lock:
                self._handle(event)
            if self._pending:
                self._flush()
        except (OSError, ValueError):
            pass

    def _handle(self, event: Event) -> None:
        now = time.monotonic()
        if isinstance(event, StepStarted):
            label = f"[{_who(event.platform, event.stage_name)} {event.stage}/{event.stages}]"
            self._steps[event.platform, event.stage, event.step] = _Step(label, event.text, now)
        elif isinstance(event, StepOutput):  # stage numbers repeat per platform: the platform tells them apart
            step = self._steps.get((event.platform, event.stage, event.step))
            if step is not None:
                step.tail.append(event.line.decode("utf-8", "replace").rstrip().replace("\t", "    "))
        elif isinstance(event, StepFinished):
            self._steps.pop((event.platform, event.stage, event.step), None)
            self._count += 1
            self._cached += event.cached
            self._print(fit(f"[{_who(event.platform, event.stage_name)} {event.stage}/{event.stages}] {event.text}",
                            "CACHED" if event.cached else f"{event.seconds:.1f}s", self.console.size.width,
                            tail_style="cyan" if event.cached else "green"))
            if event.miss_reason:
                self._print(Text(f"  cache miss: {event.miss_reason}", style="dim"))
        elif isinstance(event, BlobProgress):
            self._blob(event, now)
        elif isinstance(event, Message):
            self._print(Text(f"warning: {event.text}", style="yellow") if event.level == "warning"
                        else Text(event.text))
        elif isinstance(event, ImageWritten):
            self._image = event

    def _blob(self, event: BlobProgress, now: float) -> None:
        key = (event.action, event.digest)
        blob = self._blobs.get(key)
        if blob is None:
            blob = self._blobs[key] = _Blob(event.action, event.digest, event.total, now)
        blob.done = event.done
        if not event.finished:
            return
        del self._blobs[key]
        what = _blob_label(event.action, event.digest)
        if event.skipped:
            self._print(Text(f"{what}  exists", style="dim"))
            return
        self._moved[event.action] = self._moved.get(event.action, 0) + event.total
        took = max(now - blob.started, 1e-3)
        self._print(Text(f"{what}  {human_bytes(event.total)}  {took:.1f}s"))

    # -- drawing ------------------------------------------------------------------------------
    def _render(self) -> RenderableType:
        """The live area: running steps with timers and tails, then the blob bars."""
        self._fit_previous_frame()
        with self._lock:
            now = time.monotonic()
            width = self.console.size.width
            lines: list[Text] = []
            for step in self._steps.values():
                lines.append(fit(f"=> {step.label} {step.text}", f"{now - step.started:.1f}s", width,
                                 style="bold", tail_style="blue"))
                for out in step.tail:
                    tail = Text(f"   {out}", style="dim")
                    tail.truncate(width, overflow="ellipsis")
                    lines.append(tail)
            self._frame = [cell_len(line.plain) for line in lines] + [width] * len(self._blobs)
            self._frame_width = width
            if self._blobs:
                return Group(*lines, self._bars(now, width))
            return Group(*lines)

    def _bars(self, now: float, width: int) -> Table:
        table = Table.grid(padding=(0, 1))
        table.add_column(no_wrap=True)
        table.add_column(width=max(10, min(40, width - 60)))
        table.add_column(no_wrap=True, justify="right")
        for blob in self._blobs.values():
            speed = blob.done / max(now - blob.started, 1e-3)
            size = f"{human_bytes(blob.done)}/{human_bytes(blob.total)}" if blob.total else human_bytes(blob.done)
            table.add_row(
                Text(_blob_label(blob.action, blob.digest)),
                # a layer being written does not know its size yet: a pulsing bar
                ProgressBar(total=blob.total or None, completed=blob.done, pulse=not blob.total,
                            animation_time=now),
                Text(f"{size}  {human_bytes(speed)}/s"),
            )
        return table

    def _summary(self) -> list[Text]:
        took = time.monotonic() - self._started
        text = Text(f"built in {took:.1f}s: {self._count} steps, {self._cached} cached" if self._count
                    else f"done in {took:.1f}s")
        for action, size in sorted(self._moved.items()):
            text.append(f"; {action} {human_bytes(size)}")
        lines = [text]
        if self._image is not None:
            lines.append(Text(f"writing image {self._image.image_id or self._image.digest}"))
            lines += [Text(f"naming to {name}") for name in self._image.tags]
        return lines
