"""One call run on a thread of its own, its result collected later.

:func:`in_background` starts the thread at once with ``_thread.start_new_thread`` (which,
unlike ``threading.Thread.start``, does not wait for the thread to be scheduled: on a busy
host that wait is milliseconds of the caller's path). The returned call waits for the result
and returns it or raises the exception the call raised; it may be called any number of times,
from any thread. The thread is not a daemon of ``threading``'s: nothing waits for it at exit.
"""

from __future__ import annotations

import _thread
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def in_background(fn: Callable[[], T]) -> Callable[[], T]:
    """Run ``fn`` on a new thread at once; the returned call waits for its result (or raises
    its exception)."""
    done = _thread.allocate_lock()
    done.acquire()
    box: list[tuple[bool, object]] = []

    def run() -> None:
        try:
            box.append((True, fn()))
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box.append((False, e))
        finally:
            done.release()

    _thread.start_new_thread(run, ())

    def result() -> T:
        with done:
            ok, value = box[0]
        if not ok:
            raise value  # type: ignore[misc]
        return value  # type: ignore[return-value]

    return result


__all__ = ["in_background"]
