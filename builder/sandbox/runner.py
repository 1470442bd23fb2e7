"""The public entry of the sandbox: :func:`run` a :class:`ProcessSpec`, get a :class:`RunResult`.

How it works: :func:`run` makes a private temp dir (short symlinks to the lower/upper/work dirs
so the overlay option string stays far below one page, the /etc/hosts, /etc/resolv.conf and
(unless ``etc_hostname`` is off) /etc/hostname files, extra files) and hands the config on a
pipe to :mod:`builder.sandbox.init`, a fresh interpreter started by
:mod:`builder.sandbox.initproc` (and attached to the step's cgroup): either one started for
this step, or the build's spare started ahead (:mod:`builder.sandbox.spare`). The
init unshares mount/PID/UTS/IPC(/net) namespaces and mounts everything inside its own private
mount namespace, so every mount disappears with the namespace: nothing is ever mounted on the
host, and killing the init is a complete unmount. The runner streams the output, honours
``cancel`` (SIGKILL of the init) and always removes its temp dir and the mount-point stubs the
init had to create in the upper dir, also on exceptions and KeyboardInterrupt.

Mount points: /proc, /dev, /sys and every mount target come from a tiny *skeleton* directory
stacked as the bottom-most overlay layer, so they exist in the merged root without ever being
created in the upper dir. Only when the image hides the skeleton (a target behind a symlink,
an opaque directory) does the init create a stub in the upper dir; :func:`remove_stubs`
removes those afterwards. Either way the upper dir holds exactly what the command changed.

Without root (rootless): the init first unshares a user namespace and the runner writes its id
maps from outside (``newuidmap``/``newgidmap`` with the user's /etc/subuid and /etc/subgid
ranges, else a single-id map with a warning); overlay is mounted with ``userxattr``. The
result then carries ``userxattr`` and the id maps for :func:`builder.layer.whiteout.upper_entries`.

Errors: :class:`builder.errors.HostError` when the host cannot sandbox (no overlay and no root
for the copy fallback, no user namespaces, a setup step the kernel refuses) or the spec is
unusable (a missing bind source, a mount target of the wrong type, a uid outside the rootless
id map). A command that fails is *not* an error: its status is in the result (127/126 when it
cannot be executed, with a message on its output).
"""

from __future__ import annotations

import marshal
import os
import select
import selectors
import signal
import stat
import struct
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import HostError
from ..owners import make_owned_dir
from . import namespaces as ns
from .initproc import temp_base
from .probe import forget, probe_host
from .resolvconf import resolv_conf
from .spec import HostCaps, ProcessSpec, RunResult

if TYPE_CHECKING:
    from collections.abc import Callable

    from .initproc import InitProc, Started
    from .spare import Spares
    from .userns import MapPlan

__all__ = ["run", "probe_host", "HostCaps", "ProcessSpec", "RunResult"]

_PAGE = 4096
WATCH_AFTER = 0.25  # seconds a step runs before its pids watcher starts (cgroups.PIDS_GRACE)
_CHUNK = 65536
_copy_note_given = False


def _hosts(hostname: str, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    text = f"127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    return (text + "".join(f"{ip}\t{name}\n" for name, ip in extra)).encode()


def write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` (it must not exist) with ``data``; ``mode`` as masked by the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _skeleton(sk: Path, targets: list[tuple[str, bool]]) -> None:
    """Make the bottom overlay layer holding every mount target (dir or empty file), so the
    mount points exist in the merged root without ever being created in the upper dir. A target
    that clashes with another (file where a directory is needed) is left out; the init then
    falls back to a stub in the upper dir, which :func:`remove_stubs` removes."""
    sk.mkdir(mode=0o755)
    for target, is_dir in targets:
        parts = [p for p in target.split("/") if p not in ("", ".")]
        if not parts or ".." in parts:
            continue
        cur = sk
        ok = True
        for comp in parts[:-1]:
            cur = cur / comp
            if not cur.exists():
                cur.mkdir(mode=0o755)
            elif cur.is_symlink() or not cur.is_dir():
                ok = False
                break
        leaf = cur / parts[-1]
        if not ok or os.path.lexists(leaf):
            continue
        if is_dir:
            leaf.mkdir(mode=0o755)
        else:
            os.close(os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))


def _check_target(path: str, what: str) -> str:
    if not path.startswith("/"):
        raise HostError(f"sandbox: {what} {path!r} is not an absolute path")
    return path


def _prepare(spec: ProcessSpec, tmp: Path, caps: HostCaps, bindroot: Path | None) -> dict[str, Any]:
    """Fill ``tmp`` and return the init config."""
    hostname = spec.hostname or os.urandom(6).hex()
    (tmp / "root").mkdir()
    mounts: list[dict[str, Any]] = []
    files = tmp / "f"
    files.mkdir()
    etc = [("hosts", _hosts(hostname, spec.extra_hosts)), ("resolv.conf", resolv_conf(spec.network))]
    if spec.etc_hostname:
        etc.append(("hostname", (hostname + "\n").encode()))
    for name, data in etc:
        write_new_file(files / name, data, 0o644)
        mounts.append({"kind": "bind", "target": "/etc/" + name, "src": str(files / name), "ro": False})
    for m in spec.mounts:
        _check_target(m.target, "mount target")
        if m.kind == "tmpfs":
            mounts.append({"kind": "tmpfs", "target": m.target, "size": m.size})
        else:
            if m.source is None or not os.path.exists(m.source):
                raise HostError(f"sandbox: bind mount source {m.source} for {m.target} does not exist")
            mounts.append({"kind": "bind", "target": m.target, "src": os.path.abspath(m.source), "ro": m.readonly})
    for i, (target, content) in enumerate(spec.extra_files):
        _check_target(target, "extra file")
        if isinstance(content, (bytes, bytearray, memoryview)):
            src = files / f"x{i}"
            write_new_file(src, bytes(content), 0o400)
        else:
            src = Path(content)
            if not src.is_file():
                raise HostError(f"sandbox: extra file source {src} for {target} is not a file")
        mounts.append({"kind": "bind", "target": target, "src": str(src.resolve()), "ro": True})

    cfg: dict[str, Any] = {
        "ppid": os.getpid(),
        "flags": ns.CLONE_NEWNS | ns.CLONE_NEWUTS | ns.CLONE_NEWIPC | ns.CLONE_NEWPID
        | (ns.CLONE_NEWNET if spec.network == "none" else 0),
        "network": spec.network,
        "hostname": hostname,
        "tmp": str(tmp),
        "mounts": mounts,
        "argv": list(spec.argv),
        "env": [list(kv) for kv in spec.env],
        "cwd": _check_target(spec.cwd, "working directory"),
        "uid": spec.uid,
        "gid": spec.gid,
        "groups": list(spec.groups),
        "shm_size": spec.shm_size,
        "rlimits": [list(r) for r in spec.rlimits],
    }
    if bindroot is not None:
        cfg["bindroot"] = str(bindroot)
        cfg["upper"] = None
        return cfg
    lower_names = []
    if spec.lowerdirs:
        (tmp / "l").mkdir()
        for i, d in enumerate(spec.lowerdirs):
            if not os.path.isdir(d):
                raise HostError(f"sandbox: lower dir {d} does not exist")
            os.symlink(os.path.abspath(d), tmp / "l" / str(i))
            lower_names.append(f"l/{i}")
    targets = [("/proc", True), ("/dev", True), ("/sys", True)]
    targets += [(m["target"], m["kind"] == "tmpfs" or os.path.isdir(m["src"])) for m in mounts]
    _skeleton(tmp / "s", targets)
    lower_names.append("s")  # bottom-most: the image always wins over the skeleton
    os.symlink(os.path.abspath(spec.upperdir), tmp / "u")
    os.symlink(os.path.abspath(spec.workdir), tmp / "w")
    opts = f"lowerdir={':'.join(lower_names)},upperdir=u,workdir=w"
    if caps.overlay_options:
        opts += "," + caps.overlay_options
    if len(opts) >= _PAGE:
        raise HostError(f"sandbox: {len(spec.lowerdirs)} lower dirs do not fit in one overlay mount")
    cfg["overlay"] = opts
    cfg["upper"] = os.path.abspath(spec.upperdir)
    return cfg


class _Lines:
    """Splits a byte stream into lines for ``on_output``; flushes 64 KiB chunks of long lines."""

    def __init__(self, sink) -> None:  # type: ignore[no-untyped-def]
        self.sink = sink
        self.buf = b""

    def feed(self, data: bytes) -> None:
        self.buf += data
        while self.buf:
            nl = self.buf.find(b"\n", 0, _CHUNK)
            if nl >= 0:
                cut = nl + 1
            elif len(self.buf) >= _CHUNK:
                cut = _CHUNK
            else:
                break
            line, self.buf = self.buf[:cut], self.buf[cut:]
            self._emit(line)

    def close(self) -> None:
        if self.buf:
            self._emit(self.buf)
            self.buf = b""

    def _emit(self, line: bytes) -> None:
        if self.sink is not None:
            self.sink(line)


def _feed_stdin(pipe, data: bytes) -> None:  # type: ignore[no-untyped-def]
    try:
        view = memoryview(data)
        while view:
            n = os.write(pipe.fileno(), view[:_CHUNK])
            view = view[n:]
    except OSError:
        pass  # the command stopped reading: like a shell pipeline, that is its business
    finally:
        try:
            pipe.close()
        except OSError:
            pass


class _Pid1:
    """PID 1 of the step, held by a pidfd (no pid-reuse race): kill it, wait until it is gone.

    PID 1 becomes waitable-gone only after the kernel killed and reaped every other process of
    its namespace, so :meth:`wait_gone` means "nothing of the step is left"."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.pid = 0

    def attach(self, pid: int) -> None:
        self.pid = pid
        try:
            self.fd = os.pidfd_open(pid)
        except (OSError, AttributeError):
            self.fd = None

    def kill(self) -> None:
        try:
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, signal.SIGKILL)
            elif self.pid:
                os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass

    def wait_gone(self, limit: float = 30.0) -> None:
        if self.fd is not None:
            try:
                select.select([self.fd], [], [], limit)
            finally:
                os.close(self.fd)
                self.fd = None


def _kill(proc: "InitProc") -> None:
    try:
        proc.send_signal(signal.SIGKILL)  # never a reused pid: Popen knows, a Forked has a pidfd
    except OSError:
        pass


def _supervise(spec: ProcessSpec, cfg: dict[str, Any], init: "Started", cancel: threading.Event | None,
               status: dict[str, Any], plan: "MapPlan | None" = None,
               reap: "Callable[[Started], threading.Event] | None" = None) -> None:
    """Run the step on ``init`` (started, attached to its cgroup, waiting for its config):
    send the config, relay output, wait. Merges the init's messages into ``status`` as they
    arrive (so the caller sees the stubs even when this raises) and sets ``cancelled`` and
    ``init_status``. On any exception (KeyboardInterrupt, an ``on_output`` that raises) the
    step is killed and waited for before the exception propagates. Rootless (``plan``): the
    init asks for its id maps (``mapme``) and waits on the go pipe until they are written.
    Closes the init's pipes and reaps it, always; with ``reap``, a step that reported its
    exit status hands its exiting init to ``reap`` instead of waiting here (``status["gone"]``:
    the event ``reap`` sets once the init is gone)."""
    proc, cgroup = init.proc, init.cgroup
    # the pids watcher (a thread) only for a step that runs a while: most end much sooner
    watch_at = time.monotonic() + WATCH_AFTER if cgroup is not None and cgroup.dirs else None
    status["cancelled"] = False
    pid1 = _Pid1()
    feeder: threading.Thread | None = None
    lines = _Lines(spec.on_output)
    sel = selectors.DefaultSelector()
    try:
        try:
            raw = marshal.dumps(cfg)
            view = memoryview(raw)
            while view:
                view = view[os.write(init.cfg_w, view):]
        except OSError:
            pass  # the init died early; its status says why
        finally:
            init.close_fd("cfg_w")
        if spec.stdin is not None:
            feeder = threading.Thread(target=_feed_stdin, args=(proc.stdin, spec.stdin), daemon=True)
            feeder.start()
        assert proc.stdout is not None
        out_fd = proc.stdout.fileno()
        sel.register(out_fd, selectors.EVENT_READ, "out")
        sel.register(init.st_r, selectors.EVENT_READ, "st")
        st_buf = b""
        open_fds = 2
        while open_fds:
            if cancel is not None and cancel.is_set() and not status["cancelled"]:
                status["cancelled"] = True
                pid1.kill()
                _kill(proc)
            timeout = 0.05 if cancel is not None else None
            if watch_at is not None:
                left = watch_at - time.monotonic()
                if left <= 0:
                    assert cgroup is not None
                    cgroup.watch(cgroup.kill_all)
                    watch_at = None
                else:
                    timeout = left if timeout is None else min(timeout, left)
            for key, _ in sel.select(timeout):
                data = os.read(key.fd, _CHUNK)
                if not data:
                    sel.unregister(key.fd)
                    open_fds -= 1
                    continue
                if key.data == "out":
                    lines.feed(data)
                    continue
                st_buf += data
                while len(st_buf) >= 4:
                    size = struct.unpack_from("<I", st_buf)[0]
                    if len(st_buf) < 4 + size:
                        break
                    try:
                        msg = marshal.loads(st_buf[4:4 + size])
                    except (ValueError, EOFError, TypeError):
                        msg = {}
                    st_buf = st_buf[4 + size:]
                    if isinstance(msg, dict):
                        status.update(msg)
                        if "pid" in msg and not pid1.pid:
                            pid1.attach(msg["pid"])
                        if "mapme" in msg and plan is not None:
                            from .userns import write_maps
                            write_maps(proc.pid, plan)
                            os.write(init.go_w, b"g")
        lines.close()
        if reap is not None and "exit" in status:
            # exiting; with early_exit still unmounting the step's root (see builder.sandbox.init)
            status["gone"] = reap(init)
        else:
            proc.wait()
    except BaseException:
        pid1.kill()
        _kill(proc)
        proc.wait()
        raise
    finally:
        pid1.wait_gone()
        sel.close()
        if feeder is not None:
            feeder.join(timeout=5)
        init.discard()  # reaped already: closes the pipes
    status["init_status"] = status.get("init_exit", proc.returncode)


def _same_meta(a: os.stat_result, b: os.stat_result) -> bool:
    return (stat.S_IMODE(a.st_mode) == stat.S_IMODE(b.st_mode) and a.st_uid == b.st_uid
            and a.st_gid == b.st_gid)


def remove_stubs(upper: Path, lowers: tuple[Path, ...], created: list[str], fresh: list[str]) -> None:
    """Remove the init's mount-point stubs from ``upper`` (see :mod:`builder.sandbox.rootfs`).

    A stub is removed only if it is still an empty file or directory; a directory copied up or
    created only to hold stubs is removed when it is empty, not opaque and has the metadata of
    the lower directory it shadows. Never raises for what it cannot remove.
    """
    for rel in reversed(created):
        p = os.path.join(upper, rel)
        try:
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode) and st.st_size == 0:
                os.unlink(p)
            elif stat.S_ISDIR(st.st_mode):
                os.rmdir(p)
        except OSError:
            pass
    for rel in sorted(fresh, key=lambda r: r.count("/"), reverse=True):
        p = os.path.join(upper, rel)
        try:
            st = os.lstat(p)
            if not stat.S_ISDIR(st.st_mode) or os.listdir(p):
                continue
            if any(x.endswith("overlay.opaque") for x in os.listxattr(p, follow_symlinks=False)):
                continue
            for low in lowers:
                lp = os.path.join(low, rel)
                if os.path.lexists(lp):
                    if stat.S_ISDIR(os.lstat(lp).st_mode) and _same_meta(os.lstat(lp), st):
                        os.rmdir(p)
                    break
            else:
                os.rmdir(p)
        except OSError:
            pass


def run(spec: ProcessSpec, *, cancel: threading.Event | None = None, force_copy: bool = False,
        spares: "Spares | None" = None, early_exit: bool = False,
        before_start: "Callable[[], object] | None" = None, spare_ahead: bool = True) -> RunResult:
    """Run ``spec`` in a fresh sandbox and wait for it (no timeout; see ``cancel``).

    ``cancel``: when set, the step is killed (SIGKILL of its init, which kills its PID
    namespace) and the result has ``cancelled=True``. ``force_copy``: use the copy-based
    fallback (:mod:`builder.sandbox.copydiff`) even when overlay works; it is also used when
    the probe finds no usable overlay, with a note in the result (root only). Either way
    ``spec.upperdir`` ends up in overlay format. ``spares``: the build's spare inits
    (:mod:`builder.sandbox.spare`): the step takes a matching one instead of starting its own
    (not when it has stdin), and has the next one started in the background (unless
    ``spare_ahead`` is False: the caller knows no RUN follows). ``early_exit``
    (with ``spares``, over overlay): return as soon as the command's processes are gone, while
    the overlay is still being unmounted (see :mod:`builder.sandbox.init`); the result's
    ``teardown`` then waits for that, and the caller must call it before it moves, changes or
    removes the upper dir (reading it is fine). Otherwise every mount is gone on return.
    ``before_start`` is called once the sandbox is prepared, right before its root is mounted
    (e.g. to wait until no other overlay has a lower dir as its upper dir).
    Thread-safe: steps may run concurrently from several threads. Raises :class:`HostError`
    (see module doc); any exception (including KeyboardInterrupt) kills the step and cleans up
    (waiting for the teardown) before it propagates.
    """
    if not spec.argv:
        raise HostError("sandbox: empty argv")
    try:
        return _run_once(spec, cancel, force_copy, spares, early_exit, before_start, spare_ahead)
    except _StaleProbe:  # the persisted overlay options failed: probed again, one more try
        return _run_once(spec, cancel, force_copy, spares, early_exit, before_start, spare_ahead)


class _StaleProbe(HostError):
    """The overlay mount failed with options from the persisted probe (which is now forgotten)."""


def _run_once(spec: ProcessSpec, cancel: threading.Event | None, force_copy: bool,
              spares: "Spares | None", early_exit: bool = False,
              before_start: "Callable[[], object] | None" = None, spare_ahead: bool = True) -> RunResult:
    """One attempt of :func:`run` (same contract); raises :class:`_StaleProbe` when the overlay
    mount failed with persisted probe options, before the command ran."""
    global _copy_note_given
    use_spare = spares is not None and spec.stdin is None
    if use_spare:
        assert spares is not None
        spares.prepare(spec.limits)  # unless one is there: it starts while the host is probed
    caps = probe_host(Path(spec.upperdir).parent)
    plan = None
    warnings: list[str] = []
    if not caps.root:
        if not caps.overlay or force_copy:
            raise HostError(f"sandbox: cannot run a rootless step: {caps.reason or 'no copy fallback without root'}")
        from .userns import mapped, plan_maps
        plan = plan_maps()
        if plan.warning:
            warnings.append(plan.warning)
        if not mapped(plan.uidmap, spec.uid) or not mapped(plan.gidmap, spec.gid):
            raise HostError(f"sandbox: uid {spec.uid} / gid {spec.gid} does not exist in the rootless "
                            f"user namespace ({plan.warning or 'outside the subordinate id range'})")
    notes: list[str] = []
    use_copy = force_copy or not caps.overlay
    if use_copy and not force_copy and not _copy_note_given:
        _copy_note_given = True
        notes.append(f"overlay is not usable ({caps.reason}); using the copy-based fallback")
    _sweep_stale(temp_base())
    from . import cgroups
    from .initproc import start

    init = spares.take(spec.limits) if use_spare and spares is not None else None
    if init is not None:
        cgroup = init.cgroup
    else:
        cgroup = cgroups.for_limits(spec.limits)
        if cgroup is not None:
            sweep_cgroups()
            try:
                cgroup.create()
            except HostError:
                if spec.limits is not None and spec.limits.explicit:
                    raise
                cgroup = None  # only defaults were asked for: a host that refuses runs without them
    if spares is not None and spare_ahead:
        spares.prepare(spec.limits)  # for the next RUN, while this one runs
    tmp: Path | None = None
    copy_state = None
    status: dict[str, Any] = {}
    handed = False
    try:
        if init is None:
            init = start(stdin=spec.stdin is not None, cgroup=cgroup, cwd=temp_base())  # starts while we prepare
        tmp = Path(make_owned_dir(temp_base(), "pbsb"))  # pbsb-PID-RAND: _sweep_stale finds it
        bindroot = None
        if use_copy:
            from . import copydiff
            copy_state = copydiff.prepare(spec.lowerdirs, Path(spec.upperdir), Path(spec.workdir))
            bindroot = copy_state.root
        cfg = _prepare(spec, tmp, caps, bindroot)
        cfg["ppid"] = init.parent  # what the init checks: this process, or the fork server
        early = early_exit and spares is not None and not use_copy
        if early:
            cfg["early_exit"] = True  # see builder.sandbox.init: _supervise hands us its teardown
        if before_start is not None:
            before_start()
        if plan is not None:
            cfg["userns"] = True
            cfg["nogroups"] = not plan.helpers
        _supervise(spec, cfg, init, cancel, status, plan, spares.reap if spares is not None else None)
        extra: dict[str, Any] = {} if plan is None else {"userxattr": True, "uidmap": plan.uidmap, "gidmap": plan.gidmap}
        breach = cgroup.breach() if cgroup is not None else None
        if breach is not None and status.get("exit", 1) != 0:
            extra["limit"] = cgroup.describe(breach)  # type: ignore[union-attr]
        if status["cancelled"]:
            return RunResult(exit_code=137, signal=signal.SIGKILL, cancelled=True, notes=tuple(notes),
                             warnings=tuple(warnings), **extra)
        if "error" in status:
            if status.get("overlay") and forget(Path(spec.upperdir).parent):
                raise _StaleProbe(f"sandbox setup failed: {status['error']}")
            raise HostError(f"sandbox setup failed: {status['error']}")
        if "exit" not in status:
            if "limit" in extra:  # e.g. --pids-limit 1: the init could not even start the command
                return RunResult(exit_code=int(status.get("init_status") or 1), notes=tuple(notes),
                                 warnings=tuple(warnings), **extra)
            raise HostError(f"sandbox init ended without a status (exit status {status.get('init_status')})")
        if copy_state is not None:
            from . import copydiff
            # stubs are plain empty files/dirs now: remove them unless the command put
            # something inside (then the directory is a real change, as with overlay)
            remove_stubs(copy_state.root, (), list(status.get("stubs", ())), [])
            copydiff.finish(copy_state)
        gone = status.get("gone")
        if gone is not None and not (status.get("stubs") or status.get("fresh")):
            handed = True  # the caller waits for the teardown (RunResult.teardown)
            extra["teardown"] = gone.wait
        return RunResult(exit_code=status["exit"], signal=status.get("signal"), notes=tuple(notes),
                         warnings=tuple(warnings), **extra)
    finally:
        if not handed and status.get("gone") is not None:
            status["gone"].wait()  # every mount of the step gone before anything is removed
        if init is not None:
            init.discard()  # a no-op once supervised; else the step never started: end its init
        if cgroup is not None:
            if spares is not None:
                spares.release(cgroup)  # off this thread: its rmdir may wait for a spare's attach
            else:
                cgroup.close()
        if copy_state is not None:
            from . import copydiff
            copydiff.discard(copy_state)
        elif status.get("stubs") or status.get("fresh"):
            remove_stubs(Path(spec.upperdir), tuple(Path(p) for p in spec.lowerdirs),
                         list(status.get("stubs", ())), list(status.get("fresh", ())))
        if tmp is not None:
            if handed and spares is not None:
                spares.later(lambda: _remove_tmp(tmp))  # after the init is reaped (the keeper's order)
            else:
                _remove_tmp(tmp)


_swept: set[str] = set()
_cgroups_swept = False


def sweep_cgroups() -> None:
    """Once per process: remove step cgroups left by dead builders."""
    global _cgroups_swept
    if not _cgroups_swept:
        _cgroups_swept = True
        from .cgroups import sweep

        sweep()


def _sweep_stale(base: str) -> None:
    """Once per process and base dir: remove temp dirs left by runners that were killed
    (``pbsb-PID-*`` whose PID is gone; their mounts died with their namespaces)."""
    if base in _swept:
        return
    _swept.add(base)
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        parts = name.split("-")
        if len(parts) < 3 or parts[0] != "pbsb" or not parts[1].isdigit():
            continue
        try:
            os.kill(int(parts[1]), 0)
            continue  # alive (or pid reused): leave it
        except ProcessLookupError:
            pass
        except OSError:
            continue
        _remove_tmp(Path(base) / name)


def _remove_tmp(tmp: Path) -> None:
    """Remove the runner's temp dir without ever descending into a mount or following links."""
    root = tmp / "root"
    if os.path.ismount(root):  # cannot happen (mounts live in the init's namespace); be safe
        try:
            ns.umount2(str(root), ns.MNT_DETACH)
        except OSError:
            return
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
