"""A spare sandbox init, started ahead for the next RUN step of a build.

Starting an init costs a fresh interpreter (~10 ms of CPU) and, with the default pids limit,
a cgroup made and attached (the attach waits for an RCU grace period on cgroup v1 hosts: 7-15
ms). A :class:`Spares` (one per build) keeps at most one init that already did both and waits
for its config (as root with its PID 1 forked and in its own namespaces, see
:mod:`builder.sandbox.init`), so the next RUN only writes its config. Spares are forked from the build's
fork server (:class:`builder.sandbox.initproc.Forker`, one interpreter started with the first
spare), ~1 ms each instead of a new interpreter; if it cannot run, spares are fresh
interpreters. Spares are asked for (:meth:`Spares.prepare`) only by a RUN that runs and, ahead
of one, by a stage built without the cache or a step that missed it
(:func:`builder.engine.step_run.prepare_spare`), so a fully cached build starts neither.

Rules:

- a spare is used only for a step whose limits (and the host's cgroup layout) are the ones it
  was started with, and whose stdin is /dev/null (see :func:`builder.sandbox.runner.run`);
- spares are started by one process-wide daemon thread (a plain ``_thread``: starting it
  does not wait for it to be scheduled, which a busy host makes slow): an init's parent-death signal
  (``PR_SET_PDEATHSIG``) follows the *thread* that started it, so that thread must live as long
  as this process. The init also exits on EOF of its config pipe, so a builder that dies takes
  its spare with it either way;
- a finished step's cgroup is removed on the keeper thread too (:meth:`Spares.release`): its
  rmdir needs the kernel's cgroup mutex, which a spare's attach holds for a grace period; and
  its init, which is exiting once it reported the step's status, is reaped there
  (:meth:`Spares.reap`);
- :meth:`Spares.close` (the end of the build; also at process exit) waits for a spare being
  started and for those jobs, then kills the spare, removes its cgroup and ends the fork
  server. After ``close`` nothing is started any more.

Thread-safe. Never raises: a spare that cannot be made is simply not there (the step then
starts its own init and reports the real error).
"""

from __future__ import annotations

import _thread
import atexit
import queue
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..background import in_background

if TYPE_CHECKING:
    from .cgroups import StepCgroup
    from .initproc import Forker, Started
    from .spec import ResourceLimits

_jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
_keeper_started = False
_keeper_lock = threading.Lock()
_open: weakref.WeakSet[Spares] = weakref.WeakSet()


def _keep() -> None:
    while True:
        job = _jobs.get()
        try:
            job()
        except BaseException:  # noqa: BLE001 - jobs report through their Spares; the keeper goes on
            pass


def _submit(job: Callable[[], None]) -> None:
    """Run ``job`` on the keeper thread (started on first use; it never ends)."""
    global _keeper_started
    with _keeper_lock:
        if not _keeper_started:
            _keeper_started = True
            _thread.start_new_thread(_keep, ())  # does not wait for the thread to run (as Thread.start does)
    _jobs.put(job)


def _key(limits: ResourceLimits | None) -> tuple[object, ...]:
    """What a spare must match: the step's limits and the cgroup layout they were applied in."""
    if limits is None or not limits.any():
        return (None,)
    from .cgroups import layout

    return (limits, id(layout()))


class Spares:
    """At most one spare init for the RUN steps of one build (see the module doc)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._spare: Started | None = None
        self._spare_key: tuple[object, ...] = ()
        self._making: tuple[object, ...] | None = None  # key of the spare being started
        self._pending = 0  # jobs of finished steps on the keeper (cgroups removed, inits reaped)
        self._closed = False
        self._forker: Forker | None = None  # made and used on the keeper thread only
        self._no_forker = False
        self._probed = False
        _open.add(self)

    def take(self, limits: ResourceLimits | None) -> Started | None:
        """The spare for a step with ``limits`` (waiting for one being started for them), or
        None. A spare that does not match or died is discarded. The caller owns the result
        (its process and its cgroup)."""
        key = _key(limits)
        with self._cond:
            while self._making == key:
                self._cond.wait()
            spare, spare_key, self._spare = self._spare, self._spare_key, None
        if spare is None:
            return None
        if spare_key != key or not spare.alive():
            _discard(spare)
            return None
        return spare

    def prepare(self, limits: ResourceLimits | None, probe: Path | None = None, *, begin_here: bool = False) -> None:
        """Start a spare for a next step with ``limits`` in the background, unless one is
        there or being started (or the build is over). ``probe``: a directory on the file
        system of the upper dirs to come; the host probe (:func:`builder.sandbox.probe.probe_host`,
        once per file system, a mount and umount) runs there first, also in the background.
        ``begin_here``: the first spare is begun in this thread before this returns (its
        cgroup made, its interpreter started, its attach on a thread of its own: ~2 ms and the
        imports of ``subprocess`` and the cgroup module), the fork server in the background:
        the keeper thread would get there only after its imports, which share the interpreter
        with this thread's (~25 ms later at the start of a build here)."""
        key = _key(limits)
        with self._cond:
            if self._closed:
                return
            if probe is not None and not self._probed:
                self._probed = True
                from .probe import probe_host

                # on a thread of its own: it waits for the kernel (umount) as the attach does
                self._later(lambda: probe_host(probe), own_thread=True)
            if self._spare is not None or self._making is not None:
                return
            self._making = key
            first = self._forker is None and not self._no_forker
        begun = _begin(limits) if begin_here and first else None
        _submit(lambda: self._make(key, limits, begun))

    def _make(self, key: tuple[object, ...], limits: ResourceLimits | None,
              begun: Callable[[], Started | None] | None = None) -> None:
        spare: Started | None = None
        try:
            spare = self._start(limits, begun)
        except BaseException:  # noqa: BLE001 - no spare then; the step starts its own init
            spare = None
        with self._cond:
            self._making = None
            if not self._closed and spare is not None:
                self._spare, self._spare_key, spare = spare, key, None
            self._cond.notify_all()
        if spare is not None:  # closed meanwhile
            _discard(spare)
        if key != (None,):  # cgroups are used: those of dead builders go, after the spare is ready
            from .runner import sweep_cgroups

            self._later(sweep_cgroups)  # on the keeper, next; close() waits for it

    def release(self, cgroup: StepCgroup) -> None:
        """Close a finished step's ``cgroup`` (:meth:`StepCgroup.close`) on the keeper thread,
        after the spare being started; :meth:`close` waits for it. After :meth:`close`: at once."""
        self._later(cgroup.close)

    def reap(self, init: Started) -> threading.Event:
        """Wait for a finished step's init (its outer process, exiting: it holds nothing of
        the step any more, or only its mounts, being unmounted) on the keeper thread;
        :meth:`close` waits for it. Closes this side's pipes now; the caller no longer owns
        ``init``. Returns an event set once the init is gone."""
        init.reaping = True
        init.close_pipes()
        gone = threading.Event()

        def wait() -> None:
            try:
                init.proc.wait()
            finally:
                gone.set()
        self._later(wait)
        return gone

    def later(self, job: Callable[[], object]) -> None:
        """Run ``job`` on the keeper thread after the jobs handed over before it (a step's
        init reaped, its cgroup removed); :meth:`close` waits for it. After :meth:`close`: at
        once, here."""
        self._later(job)

    def _later(self, job: Callable[[], object], own_thread: bool = False) -> None:
        """Run ``job`` on the keeper (or ``own_thread``); :meth:`close` waits for it."""
        with self._cond:
            closed = self._closed
            if not closed:
                self._pending += 1
        if closed:
            job()
            return

        def run() -> None:
            try:
                job()
            except BaseException:  # noqa: BLE001 - best effort (the step does the real thing)
                pass
            finally:
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()

        if own_thread:
            _thread.start_new_thread(run, ())
        else:
            _submit(run)

    def _start(self, limits: ResourceLimits | None,
               begun: Callable[[], Started | None] | None = None) -> Started | None:
        """An init attached to a new cgroup for ``limits`` (as the runner would start it),
        forked from the build's fork server. The first spare is a fresh interpreter (see
        :func:`_begin`; ``begun``: started so already, owned from here on), attached while the
        server is started here and both start up (the server's start-up and then a fork and an
        attach would add up); so is any spare when the server cannot run."""
        from .initproc import Forker, start, temp_base

        if self._forker is None and not self._no_forker:
            if begun is None:
                begun = _begin(limits)
                if begun is None:
                    return None
            try:
                self._forker = Forker(temp_base())
            except OSError:
                self._no_forker = True
            except BaseException:
                _discard_begun(begun)
                raise
            return begun()
        if begun is not None:  # (never: only the first spare is begun ahead)
            _discard_begun(begun)
        usable, cgroup = _made_cgroup(limits)
        if not usable:
            return None
        try:
            if self._forker is not None:
                try:
                    return self._forker.spawn(cgroup)
                except OSError:
                    self._forker.close()
                    self._forker, self._no_forker = None, True
            return start(stdin=False, cgroup=cgroup, cwd=temp_base())
        except BaseException:
            if cgroup is not None:
                cgroup.close()
            raise

    def close(self) -> None:
        """Wait for a spare being started and the step cgroups being removed, kill the spare
        and remove its cgroup; start no more. Idempotent."""
        with self._cond:
            self._closed = True
            while self._making is not None or self._pending:
                self._cond.wait()
            spare, self._spare = self._spare, None
        if spare is not None:
            _discard(spare)
        if self._forker is not None:
            self._forker.close()
            self._forker = None
        _open.discard(self)


_early: Spares | None = None
_early_lock = threading.Lock()


def start_early(limits: ResourceLimits | None) -> None:
    """Start a spare for ``limits`` now, before the build that will run RUN steps has its
    session (the first spare's cgroup attach waits for the kernel, 10-20 ms here: it then
    overlaps with parsing and planning). The next :func:`take_early` gets the :class:`Spares`
    holding it; if none does, it is closed at process exit like any other."""
    global _early
    with _early_lock:
        if _early is None:
            _early = Spares()
            _early.prepare(limits, begin_here=True)


def take_early() -> Spares | None:
    """The :class:`Spares` that :func:`start_early` made (then owned by the caller, who closes
    it), or None."""
    global _early
    with _early_lock:
        spares, _early = _early, None
    return spares


def _begin(limits: ResourceLimits | None) -> Callable[[], Started | None] | None:
    """Begin a fresh init in this thread: its cgroup for ``limits`` made, the interpreter
    started, its attach begun on a thread of its own (the attach waits for the kernel).
    Returns the call that waits for the attached init (None: explicit limits whose cgroup
    could not be made, the step then fails with the real error; raises as
    :func:`builder.sandbox.initproc.attach`, the init and its cgroup gone), or None when no
    init could be started."""
    try:
        from .initproc import attach, start, temp_base

        usable, cgroup = _made_cgroup(limits)
        if not usable:
            return lambda: None
        try:
            spare = start(stdin=False, cgroup=None, cwd=temp_base(), attach_later=True)
        except BaseException:
            if cgroup is not None:
                cgroup.close()
            raise
    except Exception:  # noqa: BLE001 - no early spare then
        return None
    spare.cgroup = cgroup

    def attached() -> Started:
        try:
            return attach(spare)
        except BaseException:  # the spare is discarded; its cgroup goes too
            if cgroup is not None:
                cgroup.close()
            raise
    return in_background(attached)


def _made_cgroup(limits: ResourceLimits | None) -> tuple[bool, StepCgroup | None]:
    """The cgroup a spare for ``limits`` is attached to, made (None: no limits, or only
    defaults, which this host refuses: the spare runs without them); ``(False, None)`` when
    explicit limits cannot be applied: no spare then, the step fails with the real error."""
    from . import cgroups

    cgroup = cgroups.for_limits(limits)
    if cgroup is not None:
        try:
            cgroup.create()
        except Exception:
            if limits is not None and limits.explicit:
                return False, None
            cgroup = None
    return True, cgroup


def _discard_begun(begun: Callable[[], Started | None]) -> None:
    """Wait for a begun spare's attach and discard the spare (if there is one)."""
    try:
        spare = begun()
    except BaseException:  # noqa: BLE001 - the attach discarded it
        return
    if spare is not None:
        _discard(spare)


def _discard(spare: Started) -> None:
    spare.discard()
    if spare.cgroup is not None:
        spare.cgroup.close()


@atexit.register
def _close_all() -> None:
    for spares in list(_open):
        spares.close()


__all__ = ["Spares", "start_early", "take_early"]
