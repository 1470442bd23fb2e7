"""The sandbox init, started by the runner as a fresh interpreter
(``python -S -s -B -c "from builder.sandbox.init import main; main()" CFG STATUS GO``) or
forked by the fork server :func:`serve` (``... serve()" SOCK``; see
:class:`builder.sandbox.initproc.Forker`).

Protocol (the runner is the only client):

- ``argv[1]``: fd of the config, a :mod:`marshal`-ed dict (read to EOF, then closed). The init
  may be started long before its step (a spare, :mod:`builder.sandbox.spare`): it only waits
  here, and EOF without a config (the runner dropped it, or died) makes it exit (125).
- ``argv[2]``: fd of the status pipe; the outer and PID 1 write messages (a little-endian u32
  length, then a marshal-ed dict; never concurrently: PID 1 waits for the outer's go):
  ``{"pid": N}`` (host pid of PID 1), ``{"stubs": [...], "fresh": [...]}`` (see
  :mod:`builder.sandbox.rootfs`), ``{"error": "..."}`` (setup failed; exit status 125),
  ``{"exit": N, "signal": S|None}`` (the command ended; N is 128+S when killed by signal S).
  The outer closes its output (fds 0/1/2) before it sends ``exit`` and the status pipe after,
  so the runner sees EOF on both at once; every mount of the step is gone by then, unless the
  config asked for ``early_exit``: then the outer holds the step's mount namespace (an fd of
  it, taken once PID 1 has made it) until it has closed the status pipe, and only then lets it
  go and exits. Tearing the mounts down takes a few ms (and, on kernels without overlay's
  ``volatile``, the sync of the upper's file system: 10-30 ms here); the runner reads the upper
  dir meanwhile and waits for the outer's exit before it moves, changes or mounts it again.
- ``argv[3]``: fd of the go pipe. As root the outer waits there, before the config, for one
  byte ``a``: the runner has attached it to the step's cgroup (or there is none); it then forks
  PID 1 at once, which makes its mount, UTS and IPC namespaces and waits for the config (the
  outer hands it on), so that work is done by the time a spare's step comes. Rootless, after
  unsharing the user namespace (once the config is there) the outer sends ``{"mapme": 1}`` and
  waits for one byte ``g`` there, once the runner wrote its maps.
- fds 0/1/2: the command's stdin and combined output.

Process structure: this process (the *outer*, outside the new PID namespace) unshares the
PID namespace (and, rootless, first the user namespace) and forks once (as root before the
config, see ``argv[3]``). The child is PID 1 of the new PID namespace: it unshares the
mount/UTS/IPC(/net) namespaces (so only the step's
processes are in them, never the outer), makes ``/`` private, mounts the root, pivots into it,
drops privileges and execs the command, so the command itself is PID 1 as in Docker/BuildKit
(``echo $$`` prints 1, orphans are reparented to it, a signal it has no handler for is
ignored). When PID 1 exits the kernel kills everything left in the namespace, and the mount
namespace (with every mount of the step) goes with the last of them, before PID 1 can be
reaped. The outer forwards SIGTERM/SIGINT to PID 1, reaps it and reports its status; its own
exit then holds nothing of the step (the runner need not wait for it). Both use
PR_SET_PDEATHSIG=SIGKILL (the outer before it waits for its config), so a killed runner takes
the step down with it. Keep this module (and what it imports) tiny: no pydantic, lark or
requests.
"""

from __future__ import annotations

import marshal
import os
import resource  # noqa: F401 - imported before the new root hides the host's lib-dynload (rlimits)
import struct
import sys

from . import namespaces as ns
from . import rootfs  # imported before the config is read (an init started ahead has them ready)
from .netns import loopback_up  # (an import in PID 1 after the config took 0.7-1.3 ms of each RUN)
from .caps import apply_default_caps, last_cap

MYPY = False
if MYPY:  # for the type checker only: the init starts every RUN and imports no more than it needs
    import signal
    from typing import Any
else:  # the C module: "signal" wraps it in enums (enum costs ~3 ms, 40% of the init's imports)
    import _signal as signal

STATUS_FD = -1  # set from argv[2]
SETUP_FAILED = 125


def _status(msg: dict[str, Any]) -> None:
    data = marshal.dumps(msg)
    frame = struct.pack("<I", len(data)) + data
    try:
        while frame:
            frame = frame[os.write(STATUS_FD, frame):]
    except OSError:
        pass


def _close_from(low: int) -> None:
    libc = ns.libc()
    try:
        if libc.close_range(low, 0xFFFFFFFF, 0) == 0:
            return
    except AttributeError:
        pass
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd >= low:
            try:
                os.close(fd)
            except OSError:
                pass


def _fail(msg: str) -> None:
    """Report a setup failure (a host problem) and die. Never returns."""
    _status({"error": msg})
    os._exit(SETUP_FAILED)


def _user_error(msg: str, code: int) -> None:
    """Report a failure of the step itself on its output and die with ``code``."""
    os.write(2, f"pybuild sandbox: {msg}\n".encode(errors="replace"))
    os._exit(code)


def _pid1_namespaces(alive_r: int, ns_w: int, flags: int) -> None:
    """The first steps of PID 1: parent-death signal, the outer's go (``g`` on ``alive_r``),
    default signal dispositions, a session of its own, then its own ``flags`` namespaces (mount,
    UTS, IPC; net with ``--network none``) and a private ``/``; ``n`` on ``ns_w`` (unless -1)
    once the mount namespace exists. Raises what fails (the caller reports it)."""
    ns.prctl(ns.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.read(alive_r, 1) != b"g":
        os._exit(SETUP_FAILED)  # the outer died before PDEATHSIG was armed
    os.close(alive_r)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)  # Python ignores SIGPIPE/SIGXFSZ; exec keeps ignores
    os.setsid()
    ns.unshare(flags)  # the step's own mounts, hostname, IPC (net)
    if ns_w >= 0:
        os.write(ns_w, b"n")  # the outer holds the mount namespace from now on
        os.close(ns_w)
    ns.mount(None, "/", None, ns.MS_REC | ns.MS_PRIVATE)


def _child(cfg: dict[str, Any], alive_r: int, ns_w: int = -1) -> None:
    """PID 1 of the step's PID namespace, forked once the config is there: its namespaces,
    then :func:`_root_and_exec` (``ns_w``: where to say ``n`` once its mount namespace exists;
    -1: nobody asks). Never returns."""
    try:
        _pid1_namespaces(alive_r, ns_w, cfg["flags"] & ~ns.CLONE_NEWPID)
    except BaseException as e:  # noqa: BLE001
        _fail(f"{type(e).__name__}: {e}")
    _root_and_exec(cfg)


# made before the config by PID 1 forked ahead (:func:`_pid1_ahead`); the network namespace
# only once the config says --network none (a host-network step has none of its own)
_AHEAD = ns.CLONE_NEWNS | ns.CLONE_NEWUTS | ns.CLONE_NEWIPC


def _child_ahead(alive_r: int, ns_w: int, cfg_r: int) -> None:
    """PID 1 forked before the config (:func:`_pid1_ahead`): its mount, UTS and IPC namespaces
    made, then the config read from ``cfg_r`` (EOF without one: the step is not coming, exit),
    its network namespace if the step asks for one, then :func:`_root_and_exec`. Never
    returns."""
    try:
        _pid1_namespaces(alive_r, ns_w, _AHEAD)
    except BaseException as e:  # noqa: BLE001
        _fail(f"{type(e).__name__}: {e}")
    try:
        with os.fdopen(cfg_r, "rb") as f:
            cfg = marshal.loads(f.read())
    except BaseException:  # noqa: BLE001 - the outer is gone (a spare that was not needed)
        os._exit(SETUP_FAILED)
    try:
        rest = cfg["flags"] & ~(ns.CLONE_NEWPID | _AHEAD)
        if rest:
            ns.unshare(rest)
    except BaseException as e:  # noqa: BLE001
        _fail(f"{type(e).__name__}: {e}")
    _root_and_exec(cfg)


def _root_and_exec(cfg: dict[str, Any]) -> None:
    """The rest of PID 1, in its namespaces: hostname, loopback, the root mounted, populated
    and entered, working dir, limits, privileges dropped, then exec. Never returns."""
    stubs = None
    try:
        ns.sethostname(cfg["hostname"])
        if cfg["network"] == "none":
            loopback_up()
        top_cap = last_cap()
        tmp = cfg["tmp"]
        os.chdir(tmp)  # short relative names keep the overlay option string small
        root = os.path.join(tmp, "root")
        if cfg.get("overlay") is not None:
            try:
                ns.mount("overlay", "root", "overlay", 0, cfg["overlay"])
            except OSError as e:  # the runner may re-probe the options (a persisted probe) and retry
                _status({"error": f"overlay mount: {type(e).__name__}: {e}", "overlay": 1})
                os._exit(SETUP_FAILED)
        else:
            rootfs.bind(cfg["bindroot"], root, False)
        stubs = rootfs.Stubs(cfg.get("upper"))
        rootfs.populate(root, cfg["mounts"], stubs, cfg.get("shm_size"))
        _status({"stubs": stubs.created, "fresh": stubs.fresh})
        rootfs.enter(root)
    except BaseException as e:  # noqa: BLE001 - any setup failure is reported, never run unconfined
        if stubs is not None:
            _status({"stubs": stubs.created, "fresh": stubs.fresh})
        _fail(f"{type(e).__name__}: {e}")
    cwd = cfg["cwd"]
    try:
        if not os.path.isdir(cwd):
            os.makedirs(cwd, 0o755, exist_ok=True)  # as root, like Docker's WORKDIR
        os.chdir(cwd)
    except OSError as e:
        _user_error(f"working directory {cwd}: {e.strerror}", SETUP_FAILED)
    try:
        if cfg.get("rlimits"):
            for name, soft, hard in cfg["rlimits"]:
                inf = resource.RLIM_INFINITY
                resource.setrlimit(getattr(resource, name), (inf if soft == -1 else soft, inf if hard == -1 else hard))
    except (ValueError, OSError) as e:
        _user_error(f"--ulimit: {e}", SETUP_FAILED)
    try:
        apply_default_caps(top=top_cap)
        if not cfg.get("nogroups"):
            os.setgroups(cfg["groups"])
        os.setgid(cfg["gid"])
        os.setuid(cfg["uid"])
        ns.prctl(ns.PR_SET_NO_NEW_PRIVS, 1)
    except BaseException as e:  # noqa: BLE001
        _fail(f"{type(e).__name__}: {e}")
    env = dict(cfg["env"])
    _close_from(3)
    try:
        _exec(cfg["argv"], env)
    except OSError as e:
        code = 126 if e.errno in (13, 8, 21) else 127  # EACCES, ENOEXEC, EISDIR
        _user_error(f"exec {cfg['argv'][0]!r}: {e.strerror}", code)
    except BaseException as e:  # noqa: BLE001 - never a traceback from the sandbox
        _user_error(f"exec {cfg['argv'][0]!r}: {type(e).__name__}: {e}", 127)
    os._exit(127)


def _exec(argv: list[str], env: dict[str, str]) -> None:
    """execvp with the ``PATH`` of ``env``, resolved in the current (new) root. Written out
    because ``os.execvpe`` imports modules lazily, and the host's stdlib is gone after
    pivot_root. Raises the most telling ``OSError`` (EACCES over ENOENT, as execvp does)."""
    name = argv[0]
    if "/" in name:
        os.execve(name, argv, env)
    path = env.get("PATH")
    dirs = (path if path is not None else "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").split(":")
    saved: OSError | None = None
    for d in dirs:
        try:
            os.execve(os.path.join(d or ".", name), argv, env)
        except OSError as e:
            if saved is None or (e.errno == 13 and saved.errno != 13):  # EACCES wins, else the first
                saved = e
    raise saved or FileNotFoundError(2, "No such file or directory")


def main() -> None:
    """The outer process (pipe fds from ``sys.argv``): see :func:`outer`. Never returns."""
    outer(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))


def outer(cfg_fd: int, status_fd: int, go_fd: int) -> None:
    """The outer process: wait for the config, namespaces, then relay PID 1's status. Never
    returns."""
    global STATUS_FD
    STATUS_FD = status_fd
    ahead: tuple[int, int, int] | None = None
    try:
        ns.prctl(ns.PR_SET_PDEATHSIG, signal.SIGKILL)  # before the wait: a spare may wait long
        if os.geteuid() == 0:
            ahead = _pid1_ahead(go_fd)
        with os.fdopen(cfg_fd, "rb") as f:
            raw = f.read()
    except BaseException:  # noqa: BLE001 - killed while waiting (a spare that is not needed)
        os._exit(SETUP_FAILED)
    try:
        cfg = marshal.loads(raw)
    except (EOFError, ValueError, TypeError):
        os._exit(SETUP_FAILED)  # EOF without a (whole) config: the runner dropped us (or died)
    if ahead is not None:
        pid, mnt_fd = _hand_over(cfg, raw, *ahead)
    else:
        pid, mnt_fd = _fork_pid1(cfg, go_fd)
    _relay(pid, mnt_fd)


def _pid1_ahead(go_fd: int) -> tuple[int, int, int]:
    """As root, before the config: once the runner says this process is attached to the step's
    cgroup (``a`` on the go pipe; EOF: exit), unshare the PID namespace and fork PID 1, which
    makes its namespaces and waits for the config (:func:`_child_ahead`): 2-3 ms of each RUN
    that no longer follow the config. Returns (PID 1's pid, the pipe to send it the config,
    an fd of its mount namespace or -1)."""
    if os.read(go_fd, 1) != b"a":
        os._exit(SETUP_FAILED)
    os.close(go_fd)
    try:
        ns.unshare(ns.CLONE_NEWPID)
    except BaseException as e:  # noqa: BLE001
        _status({"error": f"{type(e).__name__}: {e}"})
        os._exit(SETUP_FAILED)
    alive_r, alive_w = os.pipe()  # "g": go on; EOF: this process is gone
    ns_r, ns_w = os.pipe()  # "n": PID 1 has its mount namespace
    cfg_r, cfg_w = os.pipe()
    pid = _fork()
    if pid == 0:
        for fd in (alive_w, ns_r, cfg_w):
            os.close(fd)
        _child_ahead(alive_r, ns_w, cfg_r)
    os.close(alive_r)
    os.close(cfg_r)
    _status({"pid": pid})
    os.write(alive_w, b"g")  # PID 1 may go on (and write to the status pipe) only now
    return pid, cfg_w, _hold_mount_namespace(pid, ns_r, ns_w)


def _hand_over(cfg: dict[str, Any], raw: bytes, pid: int, cfg_w: int, mnt_fd: int) -> tuple[int, int]:
    """The config to PID 1 forked ahead; (its pid, the mount namespace fd the outer keeps:
    only with ``early_exit``, else -1: the step's mounts then go with its processes)."""
    if os.getppid() != cfg["ppid"] or cfg.get("userns"):
        os._exit(SETUP_FAILED)  # the runner is already gone (or a rootless config: not for this path)
    if not cfg.get("early_exit") and mnt_fd >= 0:
        os.close(mnt_fd)
        mnt_fd = -1
    try:
        view = memoryview(raw)
        while view:
            view = view[os.write(cfg_w, view):]
    except OSError:
        pass  # PID 1 died; its status says why
    os.close(cfg_w)
    return pid, mnt_fd


def _fork() -> int:
    """os.fork(); a failure (e.g. --pids-limit 1) is reported (the runner names the limit)
    and ends this process."""
    try:
        return os.fork()
    except OSError as e:  # never a traceback
        os.write(2, f"pybuild sandbox: cannot start the command: {e.strerror}\n".encode())
        _status({"init_exit": SETUP_FAILED})  # a forked init's parent is not the runner
        os._exit(SETUP_FAILED)


def _fork_pid1(cfg: dict[str, Any], go_fd: int) -> tuple[int, int]:
    """Without root: PID 1 forked once the config is there (the user namespace and its id maps
    first). Returns (its pid, the mount namespace fd held with ``early_exit``, else -1)."""
    try:
        if os.getppid() != cfg["ppid"]:
            os._exit(SETUP_FAILED)  # the runner is already gone
        if cfg.get("userns"):
            ns.unshare(ns.CLONE_NEWUSER)
            _status({"mapme": 1})  # the runner writes our uid/gid maps from outside
            if os.read(go_fd, 1) != b"g":
                os._exit(SETUP_FAILED)
        os.close(go_fd)
        ns.unshare(ns.CLONE_NEWPID)  # for the child; the other namespaces are the child's alone
    except BaseException as e:  # noqa: BLE001
        _status({"error": f"{type(e).__name__}: {e}"})
        os._exit(SETUP_FAILED)
    alive_r, alive_w = os.pipe()  # "g": go on; EOF: this process is gone
    ns_r, ns_w = os.pipe() if cfg.get("early_exit") else (-1, -1)  # "n": PID 1 has its mount namespace
    pid = _fork()
    if pid == 0:
        os.close(alive_w)
        if ns_r >= 0:
            os.close(ns_r)
        _child(cfg, alive_r, ns_w)
    os.close(alive_r)
    _status({"pid": pid})
    os.write(alive_w, b"g")  # PID 1 may go on (and write to the status pipe) only now
    return pid, _hold_mount_namespace(pid, ns_r, ns_w) if ns_r >= 0 else -1


def _relay(pid: int, mnt_fd: int) -> None:
    """The outer once PID 1 runs: forward SIGTERM/SIGINT to it, reap it, report its status and
    end (see the module doc for ``mnt_fd``, the held mount namespace). Never returns."""

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except OSError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        sig: int | None = signum
        code = 128 + signum
    else:
        sig, code = None, os.waitstatus_to_exitcode(status)
    for fd in (0, 1, 2):  # the step's processes are all gone: EOF for the runner now
        os.close(fd)
    _status({"exit": code, "signal": sig})
    os.close(STATUS_FD)
    if mnt_fd >= 0:
        os.close(mnt_fd)  # the last reference: the step's mounts go now (a non-volatile overlay's sync included)
    os._exit(0)


def _hold_mount_namespace(pid: int, ns_r: int, ns_w: int) -> int:
    """An fd of PID 1's mount namespace once PID 1 has made it (it writes ``n`` on ``ns_w``
    right after its unshare), or -1 (PID 1 failed before that: nothing to hold). Closes both
    pipe ends."""
    os.close(ns_w)
    try:
        made = os.read(ns_r, 1) == b"n"
    finally:
        os.close(ns_r)
    if not made:
        return -1
    try:
        return os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1  # PID 1 already gone: its mounts went with it


def serve() -> None:
    """The fork server (``python ... -c "...; serve()" SOCK``, see
    :class:`builder.sandbox.initproc.Forker`): for each request on the unix socket SOCK (one
    byte with the fds config-read, status-write, go-read and output-write), fork an outer that
    waits for its config (:func:`outer`; stdin /dev/null, its own session) and answer with its
    pid (``<i``) and a pidfd. Children are reaped by the kernel (SIGCHLD ignored). Exits on
    EOF of SOCK; dies with the thread that started it (PR_SET_PDEATHSIG). Never returns."""
    import socket

    ns.prctl(ns.PR_SET_PDEATHSIG, signal.SIGKILL)
    sock = socket.socket(fileno=int(sys.argv[1]))
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 16, 4)
        except OSError:
            os._exit(0)
        if not msg or len(fds) != 4:
            os._exit(0)
        cfg_r, st_w, go_r, out_w = fds
        try:
            pid = os.fork()
        except OSError:
            pid = -1
        if pid == 0:
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                sock.close()
                os.setsid()
                devnull = os.open(os.devnull, os.O_RDWR)
                os.dup2(devnull, 0)
                os.dup2(out_w, 1)
                os.dup2(out_w, 2)
                os.close(devnull)
                os.close(out_w)
                outer(cfg_r, st_w, go_r)
            finally:
                os._exit(SETUP_FAILED)
        for fd in fds:
            os.close(fd)
        pidfd = []
        if pid > 0:
            try:
                pidfd = [os.pidfd_open(pid)]
            except OSError:
                os.kill(pid, signal.SIGKILL)
                pid = -1
        try:
            socket.send_fds(sock, [struct.pack("<i", pid)], pidfd)
        except OSError:
            os._exit(0)
        for fd in pidfd:
            os.close(fd)


if __name__ == "__main__":
    main()
    sys.exit(SETUP_FAILED)
