"""builder.engine.scheduler: order, the --jobs bound, overlap and failure (threads only, no root).

No test here measures time: overlap is proven by a barrier the tasks can only pass together,
the bound by a counter of tasks inside their bodies at once.
"""

from __future__ import annotations

import threading

import pytest

from builder.engine.scheduler import Task, run_graph
from builder.errors import Interrupted

WAIT = 30  # seconds a task waits for a partner before it gives up (only reached on a bug)


class Gauge:
    """Counts the tasks inside their bodies at once and remembers the most."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.lock = threading.Lock()
        self.order: list[str] = []

    def enter(self, name: str) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.order.append(name)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


def test_dependencies_run_first_and_results_come_back() -> None:
    gauge = Gauge()

    def task(name: str) -> str:
        gauge.enter(name)
        gauge.leave()
        return name.upper()

    tasks = {"final": Task(("a", "b"), lambda: task("final")), "a": Task((), lambda: task("a")),
             "b": Task(("a",), lambda: task("b")), "other": Task(("missing",), lambda: task("other"))}
    got = run_graph(tasks, 4, threading.Event())
    assert got == {"final": "FINAL", "a": "A", "b": "B", "other": "OTHER"}
    assert gauge.order.index("a") < gauge.order.index("b") < gauge.order.index("final")


def test_independent_tasks_overlap_up_to_jobs() -> None:
    gauge = Gauge()
    pair = threading.Barrier(2, timeout=WAIT)  # passable only by two tasks running at once

    def task(name: str) -> None:
        gauge.enter(name)
        try:
            pair.wait()
        finally:
            gauge.leave()

    run_graph({n: Task((), lambda n=n: task(n)) for n in "abcd"}, 2, threading.Event())
    assert gauge.most == 2


def test_one_job_runs_one_at_a_time() -> None:
    gauge = Gauge()

    def task(name: str) -> None:
        gauge.enter(name)
        gauge.leave()

    run_graph({n: Task((), lambda n=n: task(n)) for n in "abcdef"}, 1, threading.Event())
    assert gauge.most == 1 and sorted(gauge.order) == list("abcdef")


def test_a_failure_cancels_the_others_and_is_raised() -> None:
    cancel = threading.Event()
    started = threading.Event()
    saw_cancel: list[bool] = []
    ran: list[str] = []

    def slow() -> None:
        started.set()
        saw_cancel.append(cancel.wait(WAIT))  # a stage notices the cancel between steps
        raise Interrupted("stopped")

    def bad() -> None:
        assert started.wait(WAIT)
        raise ValueError("stage failed")

    tasks = {"slow": Task((), slow), "bad": Task((), bad), "after": Task(("bad",), lambda: ran.append("after"))}
    with pytest.raises(ValueError, match="stage failed"):  # the real failure, not the cancel
        run_graph(tasks, 3, cancel)
    assert saw_cancel == [True]
    assert ran == []  # a task whose input failed never starts


def test_a_cycle_is_an_error() -> None:
    with pytest.raises(ValueError, match="cycle"):
        run_graph({"a": Task(("b",), lambda: None), "b": Task(("a",), lambda: None)}, 2, threading.Event())
