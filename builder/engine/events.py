"""Build events: the library reports progress through these; the CLI renders them.

An ``EventSink`` is any callable taking one event. Sinks must not raise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union


@dataclass(frozen=True, slots=True)
class StepStarted:
    stage: int          # 1-based index among the stages being built
    stages: int
    step: int           # 1-based index within the stage (0 = FROM)
    steps: int
    text: str           # e.g. "COPY . /app"
    stage_name: str = ""


@dataclass(frozen=True, slots=True)
class StepFinished:
    stage: int
    stages: int
    step: int
    text: str
    seconds: float
    cached: bool = False
    stage_name: str = ""


@dataclass(frozen=True, slots=True)
class StepOutput:
    stage: int
    step: int
    line: bytes


@dataclass(frozen=True, slots=True)
class Message:
    level: str          # "info" | "warning"
    text: str


@dataclass(frozen=True, slots=True)
class ImageWritten:
    digest: str         # manifest digest
    config_digest: str
    tags: tuple[str, ...]


Event = Union[StepStarted, StepFinished, StepOutput, Message, ImageWritten]
EventSink = Callable[[Event], None]


def discard(_event: Event) -> None:
    """A sink that ignores everything."""
