"""Run tasks that form a graph: every task whose dependencies are done runs, up to ``jobs`` at once.

The build uses it for stages (of every platform): threads suffice, since the heavy work runs in
sandbox processes and in compressors and hashers that release the GIL.

Contract of :func:`run_graph`:

- a task starts only after each of its dependencies (keys of the mapping; other keys are
  ignored) has finished successfully, in a worker thread; at most ``jobs`` run at once;
- when a task fails, ``cancel`` is set (running tasks are expected to notice it and stop
  early: a RUN step kills its process, a stage checks it between steps), no further task
  starts, and once every running task has ended the first failure is raised (a failure that
  is only the consequence of the cancel, :class:`builder.errors.Interrupted`, loses against
  a real one);
- an exception in the calling thread while it waits (KeyboardInterrupt from Ctrl-C or
  SIGTERM) sets ``cancel`` too, waits for the running tasks, then propagates;
- a single task, or ``jobs`` 1, still runs in a worker thread: one code path. Each task gets
  its own thread (named ``{name}_{n}``), started when it may run and joined before
  :func:`run_graph` returns or raises; no thread pool (``concurrent.futures`` and the
  ``logging`` it imports cost ~3 ms of every command's start, and a build has a few tasks).

Raises ValueError for a dependency cycle (the plan never makes one).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Task(Generic[K, R]):
    """One unit of work: the keys it waits for and the callable doing it."""

    deps: tuple[K, ...]
    run: Callable[[], R]


def run_graph(tasks: Mapping[K, Task[K, R]], jobs: int, cancel: threading.Event,
              *, name: str = "stage") -> dict[K, R]:
    """Run ``tasks`` (see the module contract); returns each task's result by key."""
    from ..errors import Interrupted

    jobs = max(1, jobs)
    waiting = {k: {d for d in t.deps if d in tasks and d != k} for k, t in tasks.items()}
    results: dict[K, R] = {}
    running: set[K] = set()
    threads: list[threading.Thread] = []
    # finished tasks arrive here (put by the worker); the calling thread blocks only in get(),
    # where a signal's KeyboardInterrupt leaves no lock held
    finished: queue.SimpleQueue[tuple[K, _Outcome[R]]] = queue.SimpleQueue()
    failure: BaseException | None = None
    try:
        while waiting or running:
            if failure is None and not cancel.is_set():
                for key in [k for k, deps in waiting.items() if not deps]:
                    if len(running) >= jobs:
                        break
                    del waiting[key]
                    worker = threading.Thread(target=_work, args=(finished, key, tasks[key].run),
                                              name=f"{name}_{len(threads)}")
                    threads.append(worker)
                    worker.start()
                    running.add(key)
            if not running:
                if waiting and failure is None and not cancel.is_set():
                    raise ValueError(f"dependency cycle among {sorted(map(str, waiting))}")
                break
            key, outcome = finished.get()
            running.discard(key)
            if outcome.error is None:
                results[key] = cast(R, outcome.value)  # a value when there is no error
                for deps in waiting.values():
                    deps.discard(key)
                continue
            cancel.set()
            exc = outcome.error
            if failure is None or (isinstance(failure, Interrupted) and not isinstance(exc, Interrupted)):
                failure = exc
    except BaseException:
        cancel.set()
        while running:  # every started task ends before the caller cleans up
            running.discard(finished.get()[0])
        raise
    finally:
        for worker in threads:  # each has put its outcome: only its last instructions remain
            worker.join()
    if failure is not None:
        raise failure
    if waiting:  # cancelled from outside before these could start
        raise Interrupted("build cancelled")
    return results


class _Outcome(Generic[R]):
    """What a task ended with: its value, or the exception it raised (any BaseException)."""

    __slots__ = ("value", "error")

    def __init__(self, value: R | None, error: BaseException | None) -> None:
        self.value = value
        self.error = error


def _work(finished: queue.SimpleQueue[tuple[K, _Outcome[R]]], key: K, run: Callable[[], R]) -> None:
    """A worker thread's body: run the task, hand its outcome to the scheduling thread."""
    try:
        outcome: _Outcome[R] = _Outcome(run(), None)
    except BaseException as exc:  # noqa: BLE001 - raised again by run_graph in the caller
        outcome = _Outcome(None, exc)
    finished.put((key, outcome))
