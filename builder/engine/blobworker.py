"""The build's one background thread finishing layer blobs (compress, fsync, rename), in the
order they were submitted.

What ``ThreadPoolExecutor(max_workers=1)`` gave the build, without importing
``concurrent.futures`` (and ``logging`` with it, ~6 ms of a ``--no-cache`` build): ``submit``
returns a :class:`Job` whose ``result()`` waits and returns or raises; ``shutdown()`` lets
every submitted job finish, then ends the thread. The thread is a daemon: a process that
never calls ``shutdown`` is not kept alive by it (the build session always calls it).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Job(Generic[T]):
    """One submitted call; :meth:`result` waits for it."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._done = threading.Event()
        self._value: T | None = None
        self._error: BaseException | None = None

    def run(self) -> None:
        """Call the function (once, on the worker); its value or exception goes to
        :meth:`result`. Never raises."""
        try:
            self._value = self._fn()
        except BaseException as exc:  # handed to whoever waits for the result
            self._error = exc
        finally:
            self._done.set()

    def result(self) -> T:
        """The call's return value once it ran; re-raises what it raised."""
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # set when no error was raised


class BlobWorker:
    """One daemon thread running submitted calls in order."""

    def __init__(self, name: str = "layer-blob") -> None:
        self._jobs: queue.SimpleQueue[Job[object] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job.run()

    def submit(self, fn: Callable[[], T]) -> Job[T]:
        """Queue ``fn`` behind the calls submitted before; its :class:`Job` (the caller waits
        with ``result()`` or not at all). Not after :meth:`shutdown` (it would never run)."""
        job = Job(fn)
        self._jobs.put(job)  # type: ignore[arg-type]  # the queue holds jobs of any result type
        return job

    def shutdown(self, wait: bool = True) -> None:
        """Let the submitted calls finish, then end the thread (joined when ``wait``)."""
        self._jobs.put(None)
        if wait:
            self._thread.join()
