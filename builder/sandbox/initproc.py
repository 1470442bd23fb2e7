"""Start the sandbox init (:mod:`builder.sandbox.init`) up to the point where it waits for its
config: :func:`start` returns a :class:`Started`.

The init is a fresh interpreter (``python -S -s -B -c``; never ``os.fork`` of this, possibly
threaded, process) with three pipes: config (the runner writes it, then closes its end),
status and go (see :mod:`builder.sandbox.init` for the protocol). It blocks reading its
config; EOF there (the config end closed unwritten, or this process died) makes it exit
quietly. When a :class:`builder.sandbox.cgroups.StepCgroup` is given, the init is attached to
it before :func:`start` returns, so before it can start anything. Nothing in the init depends
on the step until it has read its config: an init may be started ahead of its step (a *spare*,
:mod:`builder.sandbox.spare`).

Who closes what: the :class:`Started` owns the process and this side's ends of the pipes until
the runner's supervisor takes them over (it writes and closes ``cfg_w``, reads ``st_r`` to
EOF, waits for the process). :meth:`Started.discard` ends an init that will not run a step (or
whose step failed to start): kill, reap, close the pipes still open. The cgroup belongs to the
caller (``close`` it after the step).

Errors: :class:`builder.errors.HostError` when the interpreter cannot be started or explicitly
requested limits cannot be applied (the attach failed); nothing is left running then.
"""

from __future__ import annotations

import os
import select
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from ..errors import HostError

if TYPE_CHECKING:
    from .cgroups import StepCgroup

PKG_ROOT = str(Path(__file__).resolve().parent.parent.parent)
_CODE = "from builder.sandbox.init import main; main()"
_SERVE = "from builder.sandbox.init import serve; serve()"
_tmp_base: str | None = None


class InitProc(Protocol):
    """What the runner uses of an init process: a :class:`subprocess.Popen` or a
    :class:`Forked` one."""

    @property
    def pid(self) -> int: ...

    @property
    def stdin(self) -> IO[bytes] | None: ...

    @property
    def stdout(self) -> IO[bytes] | None: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...


class Forked:
    """An init forked by a :class:`Forker` (not this process's child): held by a pidfd, so
    signals never reach a reused pid. Its exit status is not known here (``returncode`` is
    -1 once it is gone; the init reports what matters on its status pipe)."""

    def __init__(self, pid: int, pidfd: int, stdout: IO[bytes]) -> None:
        self.pid = pid
        self.stdin: IO[bytes] | None = None
        self.stdout: IO[bytes] | None = stdout
        self.returncode: int | None = None
        self._pidfd = pidfd

    def _gone(self, timeout: float | None) -> bool:
        if self._pidfd < 0:
            return True
        if not select.select([self._pidfd], [], [], timeout)[0]:
            return False
        os.close(self._pidfd)
        self._pidfd = -1
        self.returncode = -1
        return True

    def poll(self) -> int | None:
        """None while the init runs, else -1 (the pidfd is closed then)."""
        self._gone(0)
        return self.returncode

    def wait(self) -> int | None:
        """Wait until the init has exited (it is reaped by the kernel: the fork server ignores
        SIGCHLD); -1. Closes the pidfd."""
        self._gone(None)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal the init through its pidfd; nothing once it is known gone (never a reused pid)."""
        if self._pidfd >= 0:
            try:
                signal.pidfd_send_signal(self._pidfd, sig)
            except ProcessLookupError:
                pass


class Started:
    """One init process waiting for its config. ``proc``: the process (stdout: the step's
    combined output; stdin: a pipe when started with ``stdin=True``, else /dev/null);
    ``cfg_w``/``st_r``/``go_w``: this side's pipe ends (-1 once closed); ``cgroup``: the step
    cgroup it was attached to (None: no limits, or defaults the host refused); ``parent``: the
    pid of its parent (this process, or a :class:`Forker`), which the init checks."""

    def __init__(self, proc: InitProc, cfg_w: int, st_r: int, go_w: int,
                 cgroup: StepCgroup | None, parent: int) -> None:
        self.proc = proc
        self.parent = parent
        self.cfg_w = cfg_w
        self.st_r = st_r
        self.go_w = go_w
        self.cgroup = cgroup
        self.reaping = False  # handed to a reaper: never killed or waited for here

    def close_fd(self, name: str) -> None:
        """Close one of ``cfg_w``/``st_r``/``go_w`` (once)."""
        fd = getattr(self, name)
        if fd >= 0:
            setattr(self, name, -1)
            os.close(fd)

    def alive(self) -> bool:
        """Whether the init is still running (a spare killed from outside is not)."""
        return self.proc.poll() is None

    def close_pipes(self) -> None:
        """Close this side's pipe ends and the process's stdin/stdout streams (once)."""
        for name in ("cfg_w", "st_r", "go_w"):
            self.close_fd(name)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass

    def discard(self) -> None:
        """Kill and reap the init (if it still runs; not when it was handed to a reaper, see
        :meth:`builder.sandbox.spare.Spares.reap`) and close every pipe still open.
        Idempotent; never raises for a process that is already gone."""
        if not self.reaping and self.proc.returncode is None:
            try:
                self.proc.send_signal(signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait()
        self.close_pipes()


def temp_base() -> str:
    """Where inits start and the runner makes its per-step temp dirs: ``$PYBUILD_SANDBOX_TMPDIR``,
    else ``/dev/shm`` when it is a writable tmpfs (small files there cost nothing to create and
    remove), else the default temp dir. Computed once."""
    global _tmp_base
    if _tmp_base is None:
        chosen = os.environ.get("PYBUILD_SANDBOX_TMPDIR")
        base = chosen or None
        if chosen is None:
            try:
                with open("/proc/self/mounts") as f:
                    tmpfs = {line.split()[1] for line in f if line.split()[2:3] == ["tmpfs"]}
            except OSError:
                tmpfs = set()
            if "/dev/shm" in tmpfs and os.access("/dev/shm", os.W_OK | os.X_OK):
                base = "/dev/shm"
        if base is None:
            import tempfile  # only here: its import is a few ms of a build's start

            base = tempfile.gettempdir()
        _tmp_base = base
    return _tmp_base


def start(*, stdin: bool, cgroup: StepCgroup | None, cwd: str, attach_later: bool = False) -> Started:
    """Start an init in ``cwd`` (the runner's temp base: what the leftover checks look for)
    and attach it to ``cgroup`` (see the module doc). With ``stdin`` its stdin is a pipe
    (``proc.stdin``), else /dev/null. A failed attach of default limits
    abandons the cgroup (the step runs without them, as a host that refuses them would);
    of explicit limits it raises HostError after killing the init. ``attach_later``: the
    caller sets its cgroup and calls :func:`attach` itself (an init that is not attached
    does not start its PID 1)."""
    cfg_r, cfg_w = os.pipe()
    st_r, st_w = os.pipe()
    go_r, go_w = os.pipe()
    env = {"PYTHONPATH": PKG_ROOT, "PATH": os.defpath, "LC_ALL": "C.UTF-8"}
    argv = [sys.executable, "-S", "-s", "-B", "-c", _CODE, str(cfg_r), str(st_w), str(go_r)]
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, pass_fds=(cfg_r, st_w, go_r),
            cwd=cwd, env=env, start_new_session=True)
    except OSError as e:
        for fd in (cfg_w, st_r, go_w):
            os.close(fd)
        raise HostError(f"sandbox: cannot start the init ({sys.executable}): {e}") from e
    finally:
        for fd in (cfg_r, st_w, go_r):
            os.close(fd)
    started = Started(proc, cfg_w, st_r, go_w, cgroup, os.getpid())
    return started if attach_later else attach(started)


def attach(started: Started) -> Started:
    """Attach ``started`` to its cgroup (if any), then, as root, tell it so (``a`` on its go
    pipe: it forks its PID 1, which inherits the cgroup, only now; see
    :mod:`builder.sandbox.init`); see :func:`start` for failures."""
    cgroup = started.cgroup
    if cgroup is not None:
        try:
            cgroup.attach(started.proc.pid)
        except HostError:
            if cgroup.limits.explicit:
                started.discard()
                raise
            cgroup.abandon()  # defaults only: run without them
        except BaseException:
            started.discard()
            raise
    if os.geteuid() == 0:
        try:
            os.write(started.go_w, b"a")
        except OSError:
            pass  # the init is gone: the step finds out when it sends the config
    return started


class Forker:
    """A fork server (:func:`builder.sandbox.init.serve`, a fresh interpreter started once):
    :meth:`spawn` forks an init from it in ~1 ms instead of starting an interpreter (~10 ms of
    CPU). Its inits wait for their config like :func:`start`'s; stdin is /dev/null. Used by
    one thread at a time (the spare keeper, whose lifetime its parent-death signal follows).
    :meth:`close` ends the server (its inits that still wait die with it: PR_SET_PDEATHSIG).
    Raises OSError when the server cannot be started or has gone."""

    def __init__(self, cwd: str) -> None:
        import socket

        self._socket = socket
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {"PYTHONPATH": PKG_ROOT, "PATH": os.defpath, "LC_ALL": "C.UTF-8"}
        argv = [sys.executable, "-S", "-s", "-B", "-c", _SERVE, str(theirs.fileno())]
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, pass_fds=(theirs.fileno(),), cwd=cwd,
                                         env=env, start_new_session=True)
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self.sock = mine

    def spawn(self, cgroup: StepCgroup | None) -> Started:
        """A new init attached to ``cgroup`` (see :func:`attach`)."""
        cfg_r, cfg_w = os.pipe()
        st_r, st_w = os.pipe()
        go_r, go_w = os.pipe()
        out_r, out_w = os.pipe()
        try:
            self._socket.send_fds(self.sock, [b"f"], [cfg_r, st_w, go_r, out_w])
            msg, fds, _, _ = self._socket.recv_fds(self.sock, 16, 1)
        except BaseException:
            for fd in (cfg_w, st_r, go_w, out_r):
                os.close(fd)
            raise
        finally:
            for fd in (cfg_r, st_w, go_r, out_w):
                os.close(fd)
        pid = struct.unpack("<i", msg)[0] if len(msg) == 4 else -1
        if pid <= 0 or len(fds) != 1:
            for fd in (cfg_w, st_r, go_w, out_r, *fds):
                os.close(fd)
            raise OSError(f"sandbox fork server: no init ({msg!r})")
        proc = Forked(pid, fds[0], os.fdopen(out_r, "rb", buffering=0))
        return attach(Started(proc, cfg_w, st_r, go_w, cgroup, self.proc.pid))

    def close(self) -> None:
        """End the server and reap it. Idempotent."""
        self.sock.close()
        self.proc.wait()


__all__ = ["Forked", "Forker", "InitProc", "PKG_ROOT", "Started", "attach", "start", "temp_base"]
