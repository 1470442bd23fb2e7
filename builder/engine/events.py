"""The build events, defined in :mod:`builder.events` (the base layer, so that transfers can
emit them too); re-exported here for the engine's modules."""

from ..events import (
                      BlobProgress,
                      Event,
                      EventSink,
                      ImageWritten,
                      Message,
                      StepFinished,
                      StepOutput,
                      StepStarted,
                      discard,
)

__all__ = ["BlobProgress", "Event", "EventSink", "ImageWritten", "Message", "StepFinished", "StepOutput",
           "StepStarted", "discard"]
