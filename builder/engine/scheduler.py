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
- a single task, or ``jobs`` 1, still runs in a worker thread: one code path.

Raises ValueError for a dependency cycle (the plan never makes one).
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

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
    running: dict[K, Future[R]] = {}
    # finished tasks arrive here (put by the worker); the calling thread blocks only in get(),
    # where a signal's KeyboardInterrupt leaves no lock held (concurrent.futures.wait could)
    finished: queue.SimpleQueue[tuple[K, Future[R]]] = queue.SimpleQueue()
    failure: BaseException | None = None
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix=name) as pool:
        try:
            while waiting or running:
                if failure is None and not cancel.is_set():
                    for key in [k for k, deps in waiting.items() if not deps]:
                        if len(running) >= jobs:
                            break
                        del waiting[key]
                        fut = pool.submit(tasks[key].run)
                        running[key] = fut
                        fut.add_done_callback(functools.partial(_report, finished, key))
                if not running:
                    if waiting and failure is None and not cancel.is_set():
                        raise ValueError(f"dependency cycle among {sorted(map(str, waiting))}")
                    break
                key, fut = finished.get()
                del running[key]
                exc = fut.exception()
                if exc is None:
                    results[key] = fut.result()
                    for deps in waiting.values():
                        deps.discard(key)
                    continue
                cancel.set()
                if failure is None or (isinstance(failure, Interrupted) and not isinstance(exc, Interrupted)):
                    failure = exc
        except BaseException:
            cancel.set()
            while running:  # every started task ends before the caller cleans up
                running.pop(finished.get()[0], None)
            raise
    if failure is not None:
        raise failure
    if waiting:  # cancelled from outside before these could start
        raise Interrupted("build cancelled")
    return results


def _report(finished: queue.SimpleQueue[tuple[K, Future[R]]], key: K, fut: Future[R]) -> None:
    """A done-callback: hand the finished task to the scheduling thread."""
    finished.put((key, fut))
